//! The gauge arithmetic of upstream's mirroring metrics cache (`metrics/cache.go`): per
//! Endpoints, the desired endpoints and slices of each (address type, port set); summed, they
//! give `endpoints_desired`, `num_endpoint_slices` and `desired_endpoint_slices`. Plain data:
//! the shell owns the instance and exports the totals.

use std::collections::BTreeMap;

use crate::endpointslice::PortSetStats;

/// Totals of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// `endpoint_slice_mirroring_controller_endpoints_desired`.
    pub endpoints_desired: usize,
    /// `endpoint_slice_mirroring_controller_num_endpoint_slices`.
    pub num_endpoint_slices: usize,
    /// `endpoint_slice_mirroring_controller_desired_endpoint_slices`: slices with perfect
    /// packing, `ceil(endpoints / max)` per port set.
    pub desired_endpoint_slices: usize,
}

impl Totals {
    fn of(port_sets: &[PortSetStats], max: usize) -> Self {
        let mut t = Totals::default();
        for p in port_sets {
            t.endpoints_desired += p.endpoints;
            t.num_endpoint_slices += p.slices;
            t.desired_endpoint_slices += p.endpoints.div_ceil(max.max(1));
        }
        t
    }
}

/// Per-Endpoints contributions to the gauges (upstream `metrics.Cache`).
#[derive(Debug, Clone, Default)]
pub struct MetricsCache {
    max: usize,
    by_endpoints: BTreeMap<String, Totals>,
    totals: Totals,
}

impl MetricsCache {
    /// A cache for `max` endpoints per slice (the per-subset maximum).
    pub fn new(max: usize) -> Self {
        MetricsCache { max: max.max(1), by_endpoints: BTreeMap::new(), totals: Totals::default() }
    }

    /// Replaces the contribution of the Endpoints `key` (upstream `UpdateEndpointPortCache`).
    pub fn update(&mut self, key: &str, port_sets: &[PortSetStats]) {
        self.delete(key);
        let t = Totals::of(port_sets, self.max);
        self.totals.endpoints_desired += t.endpoints_desired;
        self.totals.num_endpoint_slices += t.num_endpoint_slices;
        self.totals.desired_endpoint_slices += t.desired_endpoint_slices;
        self.by_endpoints.insert(key.to_owned(), t);
    }

    /// Removes the contribution of the Endpoints `key` (upstream `DeleteEndpoints`).
    pub fn delete(&mut self, key: &str) {
        if let Some(t) = self.by_endpoints.remove(key) {
            self.totals.endpoints_desired = self.totals.endpoints_desired.saturating_sub(t.endpoints_desired);
            self.totals.num_endpoint_slices = self.totals.num_endpoint_slices.saturating_sub(t.num_endpoint_slices);
            self.totals.desired_endpoint_slices =
                self.totals.desired_endpoint_slices.saturating_sub(t.desired_endpoint_slices);
        }
    }

    /// The gauge values.
    pub fn totals(&self) -> Totals {
        self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Port of metrics/cache_test.go TestNumEndpointsAndSlices.
    #[test]
    fn test_num_endpoints_and_slices() {
        let mut c = MetricsCache::new(100);
        let efficient = [PortSetStats { endpoints: 45, slices: 1 }, PortSetStats { endpoints: 35, slices: 1 }];
        let inefficient = [PortSetStats { endpoints: 12, slices: 5 }, PortSetStats { endpoints: 18, slices: 8 }];
        let expect = |c: &MetricsCache, desired, actual, endpoints| {
            assert_eq!(
                c.totals(),
                Totals { endpoints_desired: endpoints, num_endpoint_slices: actual, desired_endpoint_slices: desired }
            );
        };

        c.update("ns1/svc1", &inefficient);
        expect(&c, 2, 13, 30);
        c.update("ns1/svc2", &efficient);
        expect(&c, 4, 15, 110);
        c.update("ns1/svc3", &inefficient);
        expect(&c, 6, 28, 140);
        c.update("ns1/svc1", &efficient);
        expect(&c, 6, 17, 190);
        c.delete("ns1/svc3");
        expect(&c, 4, 4, 160);
        // Deleting an unknown key changes nothing.
        c.delete("ns1/nope");
        expect(&c, 4, 4, 160);
    }
}
