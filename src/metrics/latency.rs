//! Latency histograms recorded on the data path: the wait for a backend and the query time, per
//! pool and per role, four observations per transaction. The `prometheus` crate's histogram
//! searches float bounds and keeps a hot and a cold shard (~80 instructions an observation);
//! this one compares whole nanoseconds and does two relaxed adds (a bucket and the sum; the
//! count is the buckets' total). A scrape reads the atomics without stopping writers, so the
//! sum may be a few observations ahead of or behind the buckets, never the buckets themselves.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One histogram (one label set).
pub struct Latency {
    /// Upper bounds in nanoseconds, ascending; `buckets` has one more (+Inf).
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Latency {
    fn new(bounds: &'static [u64]) -> Latency {
        Latency {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn observe(&self, took: Duration) {
        let nanos = nanos(took);
        let at = self
            .bounds
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn proto(&self) -> proto::Histogram {
        let mut histogram = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bucket, &bound) in self.buckets.iter().zip(self.bounds) {
            cumulative += bucket.load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(bound as f64 / 1e9);
            buckets.push(b);
        }
        cumulative += self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        histogram.set_bucket(buckets);
        histogram.set_sample_count(cumulative);
        histogram.set_sample_sum(self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        histogram
    }
}

/// Longest observation the sum takes (a day): it holds 200,000 of them before it wraps.
const LONGEST_NANOS: u64 = 86_400 * 1_000_000_000;

/// Whole nanoseconds, at most [`LONGEST_NANOS`] (no 128-bit arithmetic on the data path).
#[inline]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
        .min(LONGEST_NANOS)
}

/// Bucket bounds in seconds, as Prometheus shows them, to the nanoseconds `Latency` compares.
pub const fn bounds_in_nanos<const N: usize>(seconds: [f64; N]) -> [u64; N] {
    let mut out = [0u64; N];
    let mut i = 0;
    while i < N {
        // Rounded: 0.0001 s is not exactly representable.
        out[i] = (seconds[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    out
}

/// A family of [`Latency`] histograms by label values, registered as one Prometheus collector.
#[derive(Clone)]
pub struct LatencyVec {
    inner: Arc<Family>,
}

struct Family {
    desc: Desc,
    bounds: &'static [u64],
    children: Mutex<Vec<(Vec<String>, Arc<Latency>)>>,
}

impl LatencyVec {
    pub fn new(name: &str, help: &str, labels: &[&str], bounds: &'static [u64]) -> LatencyVec {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let desc = Desc::new(name.into(), help.into(), labels, Default::default()).expect("valid metric");
        LatencyVec {
            inner: Arc::new(Family {
                desc,
                bounds,
                children: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The histogram of these label values (made on first use; resolved once per pool or role,
    /// never per request).
    pub fn with_label_values(&self, values: &[&str]) -> Arc<Latency> {
        assert_eq!(
            values.len(),
            self.inner.desc.variable_labels.len(),
            "one value per label"
        );
        let mut children = self.inner.children.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, child)) = children.iter().find(|(v, _)| v.iter().eq(values.iter())) {
            return child.clone();
        }
        let child = Arc::new(Latency::new(self.inner.bounds));
        children.push((values.iter().map(|v| v.to_string()).collect(), child.clone()));
        child
    }
}

impl Collector for LatencyVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.inner.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let children = self.inner.children.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = children
            .iter()
            .map(|(values, child)| {
                let mut labels: Vec<proto::LabelPair> = self
                    .inner
                    .desc
                    .variable_labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = proto::LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                let mut metric = proto::Metric::default();
                metric.set_label(labels);
                metric.set_histogram(child.proto());
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.inner.desc.fq_name.clone());
        family.set_help(self.inner.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [u64; 3] = bounds_in_nanos([0.0001, 0.001, 0.01]);

    #[test]
    fn observations_land_in_le_buckets_and_export_cumulatively() {
        assert_eq!(BOUNDS, [100_000, 1_000_000, 10_000_000]);
        let vec = LatencyVec::new("t_seconds", "help", &["pool"], &BOUNDS);
        let h = vec.with_label_values(&["a"]);
        assert!(Arc::ptr_eq(&h, &vec.with_label_values(&["a"])), "resolved once");
        for micros in [50, 100, 101, 900, 20_000] {
            h.observe(Duration::from_micros(micros));
        }
        h.observe(Duration::from_secs(u64::MAX));
        let family = &vec.collect()[0];
        assert_eq!(family.get_field_type(), MetricType::HISTOGRAM);
        let exported = family.get_metric()[0].get_histogram();
        let counts: Vec<u64> = exported
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(counts, [2, 4, 4], "le 100 µs holds 50 and exactly 100");
        assert_eq!(exported.get_sample_count(), 6);
        let sum = exported.get_sample_sum();
        assert!(
            (86_400.0..86_400.1).contains(&sum),
            "clamped to a day, not wrapped: {sum}"
        );
        assert_eq!(exported.get_bucket()[0].upper_bound(), 0.0001);
    }
}
