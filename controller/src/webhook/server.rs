//! The HTTPS server: `POST /mutate` (AdmissionReview in, AdmissionReview out, via
//! [`crate::envvars::review`]), plus `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;

use super::metrics::WebhookMetrics;
use crate::envpolicy::{ClusterView, DefaultMode, decide};
use crate::envvars::{Decision, GenerationMemo, Outcome, ReviewConfig, review_memo};
use crate::runtime::admin::Readiness;

/// What the handler reads: the cluster snapshot and whether it is complete.
pub trait View: ClusterView + Send + Sync + 'static {
    /// Whether every cache completed its first list.
    fn is_synced(&self) -> bool;
}

impl View for super::state::Caches {
    fn is_synced(&self) -> bool {
        super::state::Caches::is_synced(self)
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Cluster snapshot.
    pub view: Arc<dyn View>,
    /// Limits and patch options.
    pub config: Arc<ReviewConfig>,
    /// For pods without policy or namespace label.
    pub default_mode: DefaultMode,
    /// Metrics.
    pub metrics: Arc<WebhookMetrics>,
    /// Readiness (served on `/readyz`).
    pub ready: Arc<Readiness>,
    /// Variables generated per set of cached Services, reused across reviews.
    pub memo: Arc<GenerationMemo>,
}

/// The webhook router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let failing = s.ready.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}", failing.join(", ")))
    }
}

fn json(status: u16, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn status_body(code: u16, reason: &str, message: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn mutate(State(s): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let limit = s.config.max_body_bytes;
    let too_large = |s: &AppState| {
        s.metrics.observe(Outcome::TooLarge, "none", false, 0, start.elapsed().as_secs_f64());
        let msg = format!("request body exceeds the limit of {limit} bytes");
        json(413, status_body(413, "RequestEntityTooLarge", &msg))
    };
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(&s);
    }
    let bytes = match http_body_util::Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(&s),
        Err(e) => {
            s.metrics.observe(Outcome::BadRequest, "none", false, 0, start.elapsed().as_secs_f64());
            return json(400, status_body(400, "BadRequest", &format!("reading the body: {e}")));
        }
    };
    let mut source = "none";
    let reviewed = review_memo(&bytes, &s.config, &s.memo, |req| {
        if !s.view.is_synced() {
            let mut d = Decision::off();
            d.warnings.push("epslice webhook caches not synced yet: no service env vars injected".to_owned());
            return d;
        }
        let (d, src) = decide(req.namespace, req.labels, &*s.view, s.default_mode);
        source = src.kind();
        d
    });
    let elapsed = start.elapsed().as_secs_f64();
    s.metrics.observe(reviewed.outcome, source, reviewed.dry_run, reviewed.injected, elapsed);
    tracing::debug!(outcome = ?reviewed.outcome, source, dry_run = reviewed.dry_run, injected = reviewed.injected, seconds = elapsed, "admission review");
    json(reviewed.status, reviewed.body)
}

/// Serves `router` over TLS on `listener` until `stop` turns true, then lets connections in
/// flight finish (up to 10 s). Handshakes and request headers must complete within 10 s.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let addr = listener.local_addr().map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string());
    tracing::info!(%addr, "webhook listening (HTTPS)");
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::webhook::stopped(&mut stop) => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("webhook connections still open after 10s; closing");
    }
}
