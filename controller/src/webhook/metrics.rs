//! The webhook's metrics, in their own struct; [`WebhookMetrics::register`] adds them to the
//! process registry (the `/metrics` endpoint of the admin server).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::envvars::Outcome;

/// Labels of an admission review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `patched`, `unchanged`, `ignored`, `unreadable`, `bad_request`, `too_large`.
    pub outcome: String,
    /// `policy`, `namespace-label`, `default`, or `none` (not a pod CREATE / not decided).
    pub source: String,
    /// `true` for dry-run requests.
    pub dry_run: String,
}

/// Webhook metrics (`epslice_webhook_*`).
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    /// Reviews answered.
    pub admissions: Family<AdmissionLabels, Counter>,
    /// Time to answer a review (body read to response built), seconds.
    pub duration: Histogram,
    /// Env entries added, summed over containers and pods.
    pub injected_vars: Counter,
    /// `notAfter` of the serving certificate, Unix seconds (0 before one is loaded).
    pub certificate_expiry: Gauge<i64, AtomicI64>,
    /// Serving certificates loaded (the first one and every rotation or file change).
    pub certificate_loads: Counter,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self {
            admissions: Family::default(),
            // 50 µs to ~1.6 s.
            duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            injected_vars: Counter::default(),
            certificate_expiry: Gauge::default(),
            certificate_loads: Counter::default(),
        }
    }
}

/// The label value of an outcome.
pub fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::TooLarge => "too_large",
        Outcome::BadRequest => "bad_request",
        Outcome::Ignored => "ignored",
        Outcome::Unreadable => "unreadable",
        Outcome::Unchanged => "unchanged",
        Outcome::Patched => "patched",
    }
}

impl WebhookMetrics {
    /// Adds the metrics to `registry` under the prefix `epslice_webhook`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("epslice_webhook");
        r.register("admissions", "Admission reviews answered, by outcome and decision source", self.admissions.clone());
        r.register("admission_duration_seconds", "Time to answer an admission review", self.duration.clone());
        r.register("injected_vars", "Environment entries added to pods", self.injected_vars.clone());
        r.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate (Unix seconds)",
            self.certificate_expiry.clone(),
        );
        r.register("certificate_loads", "Serving certificates loaded", self.certificate_loads.clone());
    }

    /// Records one answered review.
    pub fn observe(&self, outcome: Outcome, source: &str, dry_run: bool, injected: usize, seconds: f64) {
        let labels = AdmissionLabels {
            outcome: outcome_label(outcome).to_owned(),
            source: source.to_owned(),
            dry_run: dry_run.to_string(),
        };
        self.admissions.get_or_create(&labels).inc();
        self.duration.observe(seconds);
        self.injected_vars.inc_by(u64::try_from(injected).unwrap_or(u64::MAX));
    }

    /// Records a certificate (re)load.
    pub fn certificate_loaded(&self, not_after: Option<i64>) {
        self.certificate_loads.inc();
        self.certificate_expiry.set(not_after.unwrap_or(0));
    }

    /// The OpenMetrics text of these metrics alone (tests, debugging).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
