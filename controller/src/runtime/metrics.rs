//! Prometheus metrics with upstream's names (kube-controller-manager's endpoint controllers).
//!
//! Served in the OpenMetrics text format, which appends `_total` to counter names:
//! upstream's `endpoint_slice_controller_changes` is exposed as
//! `endpoint_slice_controller_changes_total` (the name upstream itself moves to in 1.38), and
//! likewise `…_syncs` → `…_syncs_total`. Gauges and histograms keep their names exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

/// `operation` label of `…_changes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// create, update or delete.
    pub operation: String,
}

/// `result` label of `…_syncs`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// success, stale or error.
    pub result: String,
}

/// `topology` and `traffic_distribution` labels of `…_endpointslices_changed_per_sync`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SliceChangeLabels {
    /// Auto or Disabled.
    pub topology: String,
    /// The Service's trafficDistribution, or empty.
    pub traffic_distribution: String,
}

/// `traffic_distribution` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficDistributionLabels {
    /// The trafficDistribution value.
    pub traffic_distribution: String,
}

/// `name` label of the workqueue metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue name (`endpoint_slice`, `endpoint`, `endpoint_slice_mirroring`).
    pub name: String,
}

/// `kind` label of the competing-writer metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriterLabels {
    /// The field manager that wrote an object we manage.
    pub manager: String,
}

/// `name` label of `leader_election_master_status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaderLabels {
    /// The Lease name.
    pub name: String,
}

/// EndpointSlice controller metrics (subsystem `endpoint_slice_controller`).
#[derive(Debug, Clone)]
pub struct EndpointSliceMetrics {
    /// Endpoints added per sync.
    pub endpoints_added_per_sync: Histogram,
    /// Endpoints removed per sync.
    pub endpoints_removed_per_sync: Histogram,
    /// Desired endpoints, summed over Services.
    pub endpoints_desired: Gauge,
    /// Actual slices, placeholders included.
    pub num_endpoint_slices: Gauge,
    /// Desired slices.
    pub desired_endpoint_slices: Gauge,
    /// Slice writes by operation.
    pub changes: Family<OperationLabels, Counter>,
    /// Slices changed per sync.
    pub endpointslices_changed_per_sync: Family<SliceChangeLabels, Histogram>,
    /// Syncs by result.
    pub syncs: Family<ResultLabels, Counter>,
    /// Services by trafficDistribution.
    pub services_count_by_traffic_distribution: Family<TrafficDistributionLabels, Gauge>,
    /// epslice only: writes to slices carrying our managed-by label by another field manager.
    pub foreign_writes: Family<WriterLabels, Counter>,
}

fn per_sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(2.0, 2.0, 15))
}

fn default_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl EndpointSliceMetrics {
    fn new() -> Self {
        EndpointSliceMetrics {
            endpoints_added_per_sync: per_sync_histogram(),
            endpoints_removed_per_sync: per_sync_histogram(),
            endpoints_desired: Gauge::default(),
            num_endpoint_slices: Gauge::default(),
            desired_endpoint_slices: Gauge::default(),
            changes: Family::default(),
            endpointslices_changed_per_sync: Family::new_with_constructor(default_histogram),
            syncs: Family::default(),
            services_count_by_traffic_distribution: Family::default(),
            foreign_writes: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        let s = r.sub_registry_with_prefix("endpoint_slice_controller");
        s.register(
            "endpoints_added_per_sync",
            "Number of endpoints added on each Service sync",
            self.endpoints_added_per_sync.clone(),
        );
        s.register(
            "endpoints_removed_per_sync",
            "Number of endpoints removed on each Service sync",
            self.endpoints_removed_per_sync.clone(),
        );
        s.register("endpoints_desired", "Number of endpoints desired", self.endpoints_desired.clone());
        s.register("num_endpoint_slices", "Number of EndpointSlices", self.num_endpoint_slices.clone());
        s.register(
            "desired_endpoint_slices",
            "Number of EndpointSlices that would exist with perfect endpoint allocation",
            self.desired_endpoint_slices.clone(),
        );
        s.register("changes", "Number of EndpointSlice changes", self.changes.clone());
        s.register(
            "endpointslices_changed_per_sync",
            "Number of EndpointSlices changed on each Service sync",
            self.endpointslices_changed_per_sync.clone(),
        );
        s.register("syncs", "Number of EndpointSlice syncs", self.syncs.clone());
        s.register(
            "services_count_by_traffic_distribution",
            "Number of Services using some specific trafficDistribution",
            self.services_count_by_traffic_distribution.clone(),
        );
        s.register(
            "foreign_writes",
            "Writes to EndpointSlices carrying our managed-by label by another field manager (a second controller?)",
            self.foreign_writes.clone(),
        );
    }
}

/// Endpoints controller metrics. Upstream's Endpoints controller exports only workqueue metrics;
/// these are epslice's own (prefix `epslice_endpoints_controller`).
#[derive(Debug, Clone)]
pub struct EndpointsMetrics {
    /// Endpoints writes by operation.
    pub changes: Family<OperationLabels, Counter>,
    /// Syncs by result.
    pub syncs: Family<ResultLabels, Counter>,
    /// How long each sync waited for the same Service's EndpointSlice sync first
    /// (`--endpoints-wait-for-slices`).
    pub slices_first_wait: Histogram,
}

impl Default for EndpointsMetrics {
    fn default() -> Self {
        EndpointsMetrics {
            changes: Family::default(),
            syncs: Family::default(),
            // 0 (no wait), then 0.5 ms to ≈1 s.
            slices_first_wait: Histogram::new(std::iter::once(0.0).chain(exponential_buckets(0.0005, 2.0, 12))),
        }
    }
}

impl EndpointsMetrics {
    fn register(&self, r: &mut Registry) {
        let s = r.sub_registry_with_prefix("epslice_endpoints_controller");
        s.register("changes", "Number of Endpoints writes", self.changes.clone());
        s.register("syncs", "Number of Endpoints syncs", self.syncs.clone());
        s.register(
            "slices_first_wait_seconds",
            "How long an Endpoints sync waited for the same Service's running or next EndpointSlice sync (--endpoints-wait-for-slices)",
            self.slices_first_wait.clone(),
        );
    }
}

/// Mirroring controller metrics (subsystem `endpoint_slice_mirroring_controller`).
#[derive(Debug, Clone)]
pub struct MirroringMetrics {
    /// Endpoints added per sync.
    pub endpoints_added_per_sync: Histogram,
    /// Endpoints updated per sync.
    pub endpoints_updated_per_sync: Histogram,
    /// Endpoints removed per sync.
    pub endpoints_removed_per_sync: Histogram,
    /// Addresses skipped per sync (invalid or over the per-subset maximum).
    pub addresses_skipped_per_sync: Histogram,
    /// Sync duration in seconds.
    pub endpoints_sync_duration: Histogram,
    /// Desired endpoints.
    pub endpoints_desired: Gauge,
    /// Actual slices.
    pub num_endpoint_slices: Gauge,
    /// Desired slices.
    pub desired_endpoint_slices: Gauge,
    /// Slice writes by operation.
    pub changes: Family<OperationLabels, Counter>,
}

impl MirroringMetrics {
    fn new() -> Self {
        MirroringMetrics {
            endpoints_added_per_sync: per_sync_histogram(),
            endpoints_updated_per_sync: per_sync_histogram(),
            endpoints_removed_per_sync: per_sync_histogram(),
            addresses_skipped_per_sync: per_sync_histogram(),
            endpoints_sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            endpoints_desired: Gauge::default(),
            num_endpoint_slices: Gauge::default(),
            desired_endpoint_slices: Gauge::default(),
            changes: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        let s = r.sub_registry_with_prefix("endpoint_slice_mirroring_controller");
        s.register(
            "endpoints_added_per_sync",
            "Number of endpoints added on each Endpoints sync",
            self.endpoints_added_per_sync.clone(),
        );
        s.register(
            "endpoints_updated_per_sync",
            "Number of endpoints updated on each Endpoints sync",
            self.endpoints_updated_per_sync.clone(),
        );
        s.register(
            "endpoints_removed_per_sync",
            "Number of endpoints removed on each Endpoints sync",
            self.endpoints_removed_per_sync.clone(),
        );
        s.register(
            "addresses_skipped_per_sync",
            "Number of addresses skipped on each Endpoints sync due to being invalid or exceeding MaxEndpointsPerSubset",
            self.addresses_skipped_per_sync.clone(),
        );
        s.register(
            "endpoints_sync_duration",
            "Duration of syncEndpoints() in seconds",
            self.endpoints_sync_duration.clone(),
        );
        s.register("endpoints_desired", "Number of endpoints desired", self.endpoints_desired.clone());
        s.register("num_endpoint_slices", "Number of EndpointSlices", self.num_endpoint_slices.clone());
        s.register(
            "desired_endpoint_slices",
            "Number of EndpointSlices that would exist with perfect endpoint allocation",
            self.desired_endpoint_slices.clone(),
        );
        s.register("changes", "Number of EndpointSlice changes", self.changes.clone());
    }
}

/// Work queue metrics (`workqueue_*{name}`), as client-go exposes them.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    /// Keys waiting.
    pub depth: Family<QueueLabels, Gauge>,
    /// Keys added.
    pub adds: Family<QueueLabels, Counter>,
    /// Retries (rate-limited re-adds).
    pub retries: Family<QueueLabels, Counter>,
    /// How long a key waited before a worker took it (from its add, or the end of its delay).
    pub queue_duration: Family<QueueLabels, Histogram>,
    /// How long a worker spent on a key (the sync, its writes included).
    pub work_duration: Family<QueueLabels, Histogram>,
    /// Syncs in progress: `workqueue_unfinished_work_seconds` and
    /// `workqueue_longest_running_processor_seconds`.
    pub in_flight: InFlight,
}

/// The syncs in progress per queue, read at each scrape into client-go's
/// `workqueue_unfinished_work_seconds{name}` (the seconds all running syncs have taken so far:
/// its rate is the number of stuck workers) and `workqueue_longest_running_processor_seconds{name}`.
/// client-go samples them every 500 ms; computing them at the scrape is exact.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<InFlightState>>);

#[derive(Debug, Default)]
struct InFlightState {
    /// Every queue name seen, so that an idle queue reports 0 as client-go's does.
    names: BTreeSet<&'static str>,
    next: u64,
    started: BTreeMap<u64, (&'static str, Instant)>,
}

/// One sync in progress; it ends when dropped (finished, failed, cancelled or panicked).
#[derive(Debug)]
#[must_use = "the sync counts as running until this is dropped"]
pub struct Running {
    in_flight: InFlight,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.in_flight.lock().started.remove(&self.id);
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `queue` report zeros until it runs something.
    pub fn register(&self, queue: &'static str) {
        self.lock().names.insert(queue);
    }

    /// A sync of `queue` starts now.
    pub fn start(&self, queue: &'static str) -> Running {
        let mut s = self.lock();
        s.names.insert(queue);
        s.next += 1;
        let id = s.next;
        s.started.insert(id, (queue, Instant::now()));
        Running { in_flight: self.clone(), id }
    }

    /// Per queue: (seconds of all running syncs so far, seconds of the longest running one).
    pub fn snapshot(&self) -> BTreeMap<&'static str, (f64, f64)> {
        let now = Instant::now();
        let s = self.lock();
        let mut per: BTreeMap<&'static str, (f64, f64)> = s.names.iter().map(|n| (*n, (0.0, 0.0))).collect();
        for (name, started) in s.started.values() {
            let secs = now.saturating_duration_since(*started).as_secs_f64();
            let e = per.entry(name).or_default();
            e.0 += secs;
            e.1 = e.1.max(secs);
        }
        per
    }
}

impl Collector for InFlight {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per = self.snapshot();
        let unfinished: Vec<(&str, f64)> = per.iter().map(|(q, v)| (*q, v.0)).collect();
        let longest: Vec<(&str, f64)> = per.iter().map(|(q, v)| (*q, v.1)).collect();
        for (name, help, values) in [
            (
                "unfinished_work_seconds",
                "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate at which this increases.",
                unfinished,
            ),
            (
                "longest_running_processor_seconds",
                "How many seconds has the longest running processor for workqueue been running.",
                longest,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (queue, value) in values {
                let labels = QueueLabels { name: queue.to_owned() };
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// client-go's workqueue latency buckets: 10 ns to 10 s, ×10.
fn queue_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-8, 10.0, 10))
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics {
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queue_duration: Family::new_with_constructor(queue_histogram),
            work_duration: Family::new_with_constructor(queue_histogram),
            in_flight: InFlight::default(),
        }
    }
}

/// All metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// EndpointSlice controller.
    pub endpointslice: EndpointSliceMetrics,
    /// Endpoints controller.
    pub endpoints: EndpointsMetrics,
    /// Mirroring controller.
    pub mirroring: MirroringMetrics,
    /// Work queues.
    pub queue: QueueMetrics,
    /// `leader_election_master_status{name}` (client-go's gauge): 1 while this replica writes
    /// (holds the Lease, or runs without leader election), else 0.
    pub leader: Family<LeaderLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let endpointslice = EndpointSliceMetrics::new();
        endpointslice.register(&mut registry);
        let endpoints = EndpointsMetrics::default();
        endpoints.register(&mut registry);
        let mirroring = MirroringMetrics::new();
        mirroring.register(&mut registry);
        let queue = QueueMetrics::default();
        let w = registry.sub_registry_with_prefix("workqueue");
        w.register("depth", "Current depth of workqueue", queue.depth.clone());
        w.register("adds", "Total number of adds handled by workqueue", queue.adds.clone());
        w.register("retries", "Total number of retries handled by workqueue", queue.retries.clone());
        w.register(
            "queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            queue.queue_duration.clone(),
        );
        w.register(
            "work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            queue.work_duration.clone(),
        );
        w.register_collector(Box::new(queue.in_flight.clone()));
        let leader = Family::<LeaderLabels, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "1 if this replica is the leader (may write), 0 if it is a follower",
            leader.clone(),
        );
        Metrics { registry, endpointslice, endpoints, mirroring, queue, leader }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_are_exposed() {
        let m = Metrics::default();
        m.endpointslice.changes.get_or_create(&OperationLabels { operation: "create".into() }).inc();
        m.endpointslice.syncs.get_or_create(&ResultLabels { result: "success".into() }).inc();
        m.endpointslice.endpoints_desired.set(7);
        m.endpointslice.endpoints_added_per_sync.observe(3.0);
        m.leader.get_or_create(&LeaderLabels { name: "epslice".into() }).set(1);
        let text = m.encode();
        for want in [
            "endpoint_slice_controller_changes_total{operation=\"create\"} 1",
            "endpoint_slice_controller_syncs_total{result=\"success\"} 1",
            "endpoint_slice_controller_endpoints_desired 7",
            "endpoint_slice_controller_endpoints_added_per_sync_bucket{le=\"4.0\"} 1",
            "endpoint_slice_controller_num_endpoint_slices 0",
            "leader_election_master_status{name=\"epslice\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn running_syncs_sum_into_unfinished_work_and_the_oldest_is_the_longest() {
        let f = InFlight::default();
        f.register("idle");
        let a = f.start("q");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let b = f.start("q");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let snap = f.snapshot();
        assert_eq!(snap["q"], (4.0, 3.0));
        assert_eq!(snap["idle"], (0.0, 0.0));
        drop(a);
        assert_eq!(f.snapshot()["q"], (1.0, 1.0));
        drop(b);
        assert_eq!(f.snapshot()["q"], (0.0, 0.0));
    }
}
