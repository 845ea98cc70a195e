//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz` (plain HTTP, its own port).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

/// Readiness: every named check must be true.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: std::sync::Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
}

impl Readiness {
    /// Adds a check, initially false; set the returned flag when it passes.
    pub fn check(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).push((name, flag.clone()));
        flag
    }

    /// Adds a check driven by a flag someone else owns (e.g. a cache's watch health).
    pub fn register(&self, name: &'static str, flag: Arc<AtomicBool>) {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).push((name, flag));
    }

    /// Whether there is a check and every check passes (what a caller that started the
    /// controllers itself waits for: before the first check is registered nothing is known).
    pub fn is_ready(&self) -> bool {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        !checks.is_empty() && checks.iter().all(|(_, f)| f.load(Ordering::Relaxed))
    }

    /// The names of the failing checks.
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Relaxed))
            .map(|(n, _)| *n)
            .collect()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

/// The admin router.
pub fn router(metrics: Arc<Metrics>, ready: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready })
}

async fn serve_metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let failing = s.ready.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ok".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}", failing.join(", ")))
    }
}

/// Serves the admin router on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server (metrics, healthz, readyz) listening");
    axum::serve(listener, router(metrics, ready)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(r: Router, path: &str) -> (StatusCode, String) {
        let resp = r.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_follows_checks_and_metrics_are_served() {
        let ready = Arc::new(Readiness::default());
        let caches = ready.check("caches");
        let r = router(Arc::new(Metrics::default()), ready.clone());
        let (code, body) = get(r.clone(), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("caches"));
        caches.store(true, Ordering::Relaxed);
        assert_eq!(get(r.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(r.clone(), "/healthz").await, (StatusCode::OK, "ok".into()));
        let (code, body) = get(r, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("endpoint_slice_controller_endpoints_desired"), "{body}");
    }

    #[test]
    fn ready_needs_a_check_and_every_check_passing() {
        let r = Readiness::default();
        assert!(!r.is_ready(), "nothing registered yet");
        let a = r.check("a");
        assert!(!r.is_ready());
        assert_eq!(r.failing(), vec!["a"]);
        a.store(true, Ordering::Relaxed);
        assert!(r.is_ready());
        let b = Arc::new(AtomicBool::new(false));
        r.register("b", b.clone());
        assert_eq!((r.is_ready(), r.failing()), (false, vec!["b"]));
        b.store(true, Ordering::Relaxed);
        assert!(r.is_ready());
    }
}
