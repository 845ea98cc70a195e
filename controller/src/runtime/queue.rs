//! A work queue with client-go's `workqueue` semantics, as the upstream endpoint controllers use it.
//!
//! - A key is never handed to two workers at once; a key added while it is being processed is
//!   handed out again after [`WorkQueue::done`].
//! - A key added several times before a worker takes it is processed once (de-duplication); the
//!   earliest due time wins.
//! - [`WorkQueue::add_after`] delays a key (pod batching, the ≥ 1 s delay of slice-triggered syncs).
//! - [`WorkQueue::add_rate_limited`] requeues a failed key with the maximum of a per-key exponential
//!   backoff (`base · 2^failures`, capped) and a global token bucket (10 qps, burst 100 upstream);
//!   [`WorkQueue::forget`] resets the key's failures after a success.
//! - Not in client-go: [`WorkQueue::wait_settled`] lets another queue's worker wait, bounded,
//!   while a key is due or being processed here (the Endpoints controller lets the EndpointSlice
//!   controller's sync of a Service go first).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Backoff and rate-limit settings of a queue.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// First per-key retry delay.
    pub base: Duration,
    /// Maximum per-key retry delay.
    pub max: Duration,
    /// Global token bucket refill rate for retries (tokens per second).
    pub qps: f64,
    /// Global token bucket size.
    pub burst: u32,
}

impl RateLimit {
    /// The EndpointSlice controller's limits: 1 s → 1000 s, 10 qps, burst 100.
    pub const ENDPOINTSLICE: RateLimit =
        RateLimit { base: Duration::from_secs(1), max: Duration::from_secs(1000), qps: 10.0, burst: 100 };
    /// The Endpoints controller's limits: 5 ms → 1000 s, 10 qps, burst 100.
    pub const ENDPOINTS: RateLimit =
        RateLimit { base: Duration::from_millis(5), max: Duration::from_secs(1000), qps: 10.0, burst: 100 };
    /// The mirroring controller's limits: 1 s → 100 s, 10 qps, burst 100.
    pub const MIRRORING: RateLimit =
        RateLimit { base: Duration::from_secs(1), max: Duration::from_secs(100), qps: 10.0, burst: 100 };
}

#[derive(Debug)]
struct State<K> {
    /// Keys waiting, with the instant they become due.
    due: HashMap<K, (Instant, u64)>,
    /// The same keys ordered by due time.
    order: BTreeSet<(Instant, u64, K)>,
    seq: u64,
    processing: HashSet<K>,
    /// Keys added while processing: re-queued (with this due time) on `done`.
    dirty: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    bucket_tokens: f64,
    bucket_last: Instant,
    shutting_down: bool,
}

/// The queue. Share it behind an `Arc`.
#[derive(Debug)]
pub struct WorkQueue<K> {
    name: &'static str,
    state: Mutex<State<K>>,
    notify: Notify,
    /// Woken on every [`done`](WorkQueue::done) and on shutdown ([`WorkQueue::wait_settled`]).
    finished: Notify,
    limit: RateLimit,
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    /// A new queue; `name` is the upstream queue name (`endpoint_slice`, `endpoint`, …).
    pub fn new(name: &'static str, limit: RateLimit) -> Self {
        let now = Instant::now();
        WorkQueue {
            name,
            state: Mutex::new(State {
                due: HashMap::new(),
                order: BTreeSet::new(),
                seq: 0,
                processing: HashSet::new(),
                dirty: HashMap::new(),
                failures: HashMap::new(),
                bucket_tokens: f64::from(limit.burst),
                bucket_last: now,
                shutting_down: false,
            }),
            notify: Notify::new(),
            finished: Notify::new(),
            limit,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a key, due now.
    pub fn add(&self, key: K) {
        self.add_at(key, Instant::now());
    }

    /// Adds a key, due after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        self.add_at(key, Instant::now() + delay);
    }

    fn add_at(&self, key: K, at: Instant) {
        let mut s = self.lock();
        if s.shutting_down {
            return;
        }
        if s.processing.contains(&key) {
            let e = s.dirty.entry(key).or_insert(at);
            if at < *e {
                *e = at;
            }
            return;
        }
        Self::insert(&mut s, key, at);
        drop(s);
        self.notify.notify_one();
    }

    fn insert(s: &mut State<K>, key: K, at: Instant) {
        if let Some((prev, prev_seq)) = s.due.get(&key).copied() {
            if prev <= at {
                return;
            }
            s.order.remove(&(prev, prev_seq, key.clone()));
        }
        s.seq += 1;
        let seq = s.seq;
        s.due.insert(key.clone(), (at, seq));
        s.order.insert((at, seq, key));
    }

    /// Requeues a failed key after its backoff; returns the number of failures so far.
    pub fn add_rate_limited(&self, key: K) -> u32 {
        let now = Instant::now();
        let (delay, n) = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            let exp = self.limit.base.saturating_mul(2u32.saturating_pow((*n).min(30)));
            *n += 1;
            let n = *n;
            // Token bucket (golang.org/x/time/rate reservation semantics).
            let elapsed = now.saturating_duration_since(s.bucket_last).as_secs_f64();
            s.bucket_tokens = (s.bucket_tokens + elapsed * self.limit.qps).min(f64::from(self.limit.burst));
            s.bucket_last = now;
            s.bucket_tokens -= 1.0;
            let bucket = if s.bucket_tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.bucket_tokens / self.limit.qps.max(f64::MIN_POSITIVE))
            };
            (exp.min(self.limit.max).max(bucket), n)
        };
        self.add_after(key, delay);
        n
    }

    /// Forgets a key's failures (after a successful sync).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// How many times the key failed in a row.
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Number of keys waiting (due or not), for the depth metric.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.due.len() + s.dirty.len()
    }

    /// Whether no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next due key, waiting as long as needed. `None` once the queue shuts down.
    pub async fn get(&self) -> Option<K> {
        self.get_timed().await.map(|(key, _)| key)
    }

    /// [`get`](Self::get), with how long the key waited in the queue: from its earliest add, or
    /// from the end of its delay, until now (client-go's `workqueue_queue_duration_seconds`). A
    /// key added while it was being processed waits from that add.
    pub async fn get_timed(&self) -> Option<(K, Duration)> {
        loop {
            let notified = self.notify.notified();
            let wait_until = {
                let mut s = self.lock();
                if s.shutting_down {
                    return None;
                }
                let now = Instant::now();
                match s.order.iter().next().cloned() {
                    Some((at, seq, key)) if at <= now => {
                        s.order.remove(&(at, seq, key.clone()));
                        s.due.remove(&key);
                        s.processing.insert(key.clone());
                        // Another worker may be waiting for the next key.
                        if !s.order.is_empty() {
                            self.notify.notify_one();
                        }
                        return Some((key, now.saturating_duration_since(at)));
                    }
                    Some((at, _, _)) => Some(at),
                    None => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a key processed; a key added meanwhile is queued again.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.processing.remove(key);
        if let Some(at) = s.dirty.remove(key) {
            Self::insert(&mut s, key.clone(), at);
            drop(s);
            self.notify.notify_one();
        }
        self.finished.notify_waiters();
    }

    /// Whether `key` is being processed, or due now with fewer than `within` due keys ahead of
    /// it, i.e. next for one of `within` workers. Not: delayed into the future (a batch period,
    /// a retry's backoff), nor further back in a backlog.
    pub fn is_running_or_next(&self, key: &K, within: usize) -> bool {
        Self::running_or_next(&self.lock(), key, within)
    }

    fn running_or_next(s: &State<K>, key: &K, within: usize) -> bool {
        if s.processing.contains(key) {
            return true;
        }
        let Some(&(at, seq)) = s.due.get(key) else { return false };
        // The keys ahead of it were due no later, so they are due too.
        at <= Instant::now() && s.order.range(..(at, seq, key.clone())).take(within).count() < within
    }

    /// Waits while `key` [is running or next](Self::is_running_or_next) for one of `within`
    /// workers, at most `max`; returns how long it waited (zero when it did not). Another queue's
    /// worker uses it to let this queue's sync of the same key go first; a key deep in a backlog
    /// is not waited for, so a busy queue cannot hold the other back key after key. Returns at
    /// once after shutdown.
    pub async fn wait_settled(&self, key: &K, max: Duration, within: usize) -> Duration {
        let start = Instant::now();
        let deadline = start + max;
        let mut waited = false;
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            // Registered before the check, so a `done` between the check and the wait wakes it.
            finished.as_mut().enable();
            {
                let s = self.lock();
                if s.shutting_down || !Self::running_or_next(&s, key, within) {
                    break;
                }
            }
            waited = true;
            tokio::select! {
                _ = finished => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if waited { start.elapsed() } else { Duration::ZERO }
    }

    /// Stops handing out keys; waiting `get`s return `None`.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.notify.notify_waiters();
        self.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn q() -> WorkQueue<String> {
        WorkQueue::new("test", RateLimit::ENDPOINTSLICE)
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_collapse_and_order_is_by_due_time() {
        let q = q();
        q.add_after("b".into(), Duration::from_millis(10));
        q.add("a".into());
        q.add("a".into());
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn earlier_add_wins_over_a_later_delay() {
        let q = q();
        q.add_after("a".into(), Duration::from_secs(60));
        q.add("a".into());
        let t0 = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert!(t0.elapsed() < Duration::from_secs(1));
        // And a later delay does not postpone an earlier one.
        q.done(&"a".to_string());
        q.add_after("a".into(), Duration::from_secs(1));
        q.add_after("a".into(), Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(t0.elapsed().as_secs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_in_processing_is_not_handed_out_twice() {
        let q = Arc::new(q());
        q.add("a".into());
        let k = q.get().await.unwrap();
        q.add("a".into());
        // Not available while processing.
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.get().await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        q.done(&k);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_per_key_and_caps() {
        let q = WorkQueue::new("t", RateLimit { qps: 1e9, burst: 1_000_000, ..RateLimit::ENDPOINTSLICE });
        let mut delays = Vec::new();
        for _ in 0..12 {
            q.add_rate_limited("a".to_string());
            let t0 = Instant::now();
            let k = q.get().await.unwrap();
            delays.push(t0.elapsed().as_secs());
            q.done(&k);
        }
        assert_eq!(&delays[..5], &[1, 2, 4, 8, 16]);
        assert_eq!(delays[10], 1000, "{delays:?}");
        assert_eq!(delays[11], 1000);
        assert_eq!(q.failures(&"a".to_string()), 12);
        q.forget(&"a".to_string());
        assert_eq!(q.failures(&"a".to_string()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn global_bucket_limits_retries_of_many_keys() {
        let q = WorkQueue::new(
            "t",
            RateLimit { base: Duration::from_millis(1), max: Duration::from_secs(1), qps: 10.0, burst: 100 },
        );
        for i in 0..150 {
            q.add_rate_limited(format!("k{i}"));
        }
        // 100 within the burst, the other 50 spread at 10/s: the last is due ~5 s later.
        let t0 = Instant::now();
        for _ in 0..150 {
            let k = q.get().await.unwrap();
            q.done(&k);
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(4900) && took <= Duration::from_millis(5100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_counts_from_the_earliest_add_or_the_end_of_the_delay() {
        let q = q();
        q.add_after("b".into(), Duration::from_millis(10));
        q.add("a".into());
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.add("a".into());
        tokio::time::sleep(Duration::from_millis(45)).await;
        assert_eq!(q.get_timed().await, Some(("a".into(), Duration::from_millis(50))));
        assert_eq!(q.get_timed().await, Some(("b".into(), Duration::from_millis(40))));

        // Added while processing: it waits from that add, through the rest of the processing.
        q.add("c".into());
        let (c, _) = q.get_timed().await.unwrap();
        q.add("c".into());
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.done(&c);
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert_eq!(q.get_timed().await, Some(("c".into(), Duration::from_millis(23))));
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_wakes_waiters() {
        let q = Arc::new(q());
        let q2 = q.clone();
        let w = tokio::spawn(async move { q2.get().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.shut_down();
        assert_eq!(w.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_settled_waits_for_a_running_or_next_key_and_no_longer_than_max() {
        let q = Arc::new(q());
        let max = Duration::from_millis(250);
        // Unknown, or delayed into the future: no wait.
        assert_eq!(q.wait_settled(&"a".to_string(), max, 5).await, Duration::ZERO);
        q.add_after("a".into(), Duration::from_secs(1));
        assert_eq!(q.wait_settled(&"a".to_string(), max, 5).await, Duration::ZERO);
        // Due, but with `within` due keys ahead of it (a backlog): no wait; with fewer, it is next.
        for k in ["x", "y", "z"] {
            q.add(k.into());
        }
        assert!(q.is_running_or_next(&"z".to_string(), 3) && !q.is_running_or_next(&"z".to_string(), 2));
        assert_eq!(q.wait_settled(&"z".to_string(), max, 2).await, Duration::ZERO);
        assert!(q.is_running_or_next(&"x".to_string(), 1), "nothing ahead of the first");
        for _ in 0..3 {
            let k = q.get().await.unwrap();
            q.done(&k);
        }
        assert!(!q.is_running_or_next(&"x".to_string(), 5), "done");
        // Due now: waits until a worker has taken it and finished it.
        q.add("b".into());
        let q2 = q.clone();
        let worker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let k = q2.get().await.unwrap();
            assert_eq!(k, "b");
            tokio::time::sleep(Duration::from_millis(30)).await;
            q2.done(&k);
        });
        assert_eq!(q.wait_settled(&"b".to_string(), max, 5).await, Duration::from_millis(40));
        worker.await.unwrap();
        // Running (or added again while running) longer than `max`: gives up at `max`.
        q.add("c".into());
        let k = q.get().await.unwrap();
        q.add("c".into());
        assert_eq!(q.wait_settled(&k, max, 5).await, max);
        // A `done` that re-queues the key (due now) keeps the waiter waiting for that run too.
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_settled(&"c".to_string(), max, 5).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.done(&k);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished(), "the re-queued run is due");
        let k = q.get().await.unwrap();
        q.done(&k);
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(10));
        // Shutdown releases a waiter.
        q.add("d".into());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_settled(&"d".to_string(), max, 5).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(1));
    }
}
