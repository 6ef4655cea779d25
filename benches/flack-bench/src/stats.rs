//! Measurement primitives: a latency histogram (HdrHistogram, microseconds)
//! with its report form, the per-(receiver, sender) tracker that counts lost,
//! duplicated and reordered messages, and the pacer that spaces events at a
//! fixed rate without drift.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Highest latency a histogram records exactly (60 s, in microseconds);
/// larger values are clamped to it.
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts.
        Latency(
            Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("sigfig 3 is valid"))
            }),
        )
    }

    /// Records one value in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    /// Records a duration.
    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(MAX_US)) as u64);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so addition cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The report form.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        let ms = |us: u64| round3(us as f64 / 1000.0);
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: round3(h.mean() / 1000.0),
        }
    }
}

/// Latency percentiles in milliseconds (microsecond resolution).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// Largest value.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Rounds to 3 decimals (reports print exactly what the JSON holds).
pub fn round3(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Rounds to 1 decimal.
pub fn round1(v: f64) -> f64 {
    if v.is_finite() {
        (v * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// Most missing counters remembered per (receiver, sender) pair; past it,
/// further gaps are only counted and late arrivals of them may be counted
/// as duplicates (the report says so).
const MAX_GAPS: usize = 100_000;

/// Delivery bookkeeping of one sender's messages at one receiver.
#[derive(Debug, Default, Clone)]
pub struct PairTracker {
    /// One past the highest counter seen (0: nothing seen).
    next: u64,
    /// Counters below `next` not (yet) received.
    gaps: BTreeSet<u64>,
    /// Gap counters not remembered because `gaps` was full.
    untracked_gaps: u64,
    /// Messages received.
    pub received: u64,
    /// Counters received twice.
    pub duplicated: u64,
    /// Counters received after a higher counter of the same sender.
    pub reordered: u64,
}

impl PairTracker {
    /// Records the arrival of `counter`.
    pub fn on_receive(&mut self, counter: u64) {
        self.received += 1;
        if counter >= self.next {
            for missing in self.next..counter {
                if self.gaps.len() < MAX_GAPS {
                    self.gaps.insert(missing);
                } else {
                    self.untracked_gaps += counter - missing;
                    break;
                }
            }
            self.next = counter + 1;
        } else if self.gaps.remove(&counter) {
            self.reordered += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Messages of the `sent` this sender sent that never arrived.
    pub fn lost(&self, sent: u64) -> u64 {
        self.gaps.len() as u64 + self.untracked_gaps + sent.saturating_sub(self.next)
    }

    /// Counters received that the sender never sent (counter >= sent).
    pub fn beyond(&self, sent: u64) -> u64 {
        self.next.saturating_sub(sent)
    }

    /// Whether gap bookkeeping overflowed (counts then approximate).
    pub fn overflowed(&self) -> bool {
        self.untracked_gaps > 0
    }
}

/// Spaces events at a fixed rate: the k-th caller of [`Pacer::wait`] wakes
/// at start + k / rate, so late callers do not shift the schedule.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    interval_ns: f64,
    next: AtomicU64,
}

impl Pacer {
    /// `rate` events per second; non-positive or infinite: no waiting.
    pub fn new(rate: f64) -> Self {
        let interval_ns = if rate.is_finite() && rate > 0.0 {
            1e9 / rate
        } else {
            0.0
        };
        Pacer {
            start: Instant::now(),
            interval_ns,
            next: AtomicU64::new(0),
        }
    }

    /// Waits for this caller's slot.
    pub async fn wait(&self) {
        if self.interval_ns == 0.0 {
            return;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let at = self.start + Duration::from_nanos((k as f64 * self.interval_ns) as u64);
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_in_order() {
        let mut t = PairTracker::default();
        for c in 0..10 {
            t.on_receive(c);
        }
        assert_eq!((t.lost(10), t.duplicated, t.reordered), (0, 0, 0));
        assert_eq!(t.lost(12), 2);
    }

    #[test]
    fn tracker_loss_dup_reorder() {
        let mut t = PairTracker::default();
        for c in [0, 1, 3, 4, 2, 4, 7] {
            t.on_receive(c);
        }
        // 2 arrived late (reordered), 4 twice (duplicate), 5 and 6 lost,
        // 8 and 9 never arrived.
        assert_eq!(t.reordered, 1);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.lost(10), 4);
        assert_eq!(t.received, 7);
        assert_eq!(t.beyond(10), 0);
        assert_eq!(t.beyond(5), 3);
    }

    #[test]
    fn latency_summary() {
        let mut l = Latency::new();
        for us in 1..=1000 {
            l.record_us(us);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.01);
        assert!((s.max_ms - 1.0).abs() < 0.01);
        let mut m = Latency::new();
        m.merge(&l);
        assert_eq!(m.summary().count, 1000);
    }
}
