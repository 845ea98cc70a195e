//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager), as a gate that the
//! controllers check before every write.
//!
//! Every replica runs the watches (so a new leader starts with warm caches); only the holder of
//! the Lease syncs and writes. The gate opens when kube-lease-manager reports that we hold the
//! Lease, and closes when it reports otherwise **or** when our own check of the Lease object
//! (every second, each read bounded in time) finds another holder, or cannot confirm a renewal
//! recent enough: the gate closes a renew deadline after our last renewal seen (by default half
//! a grace period before that renewal would expire),
//! so a replica cut off from the apiserver (even by a link that hangs without a reset) stops
//! writing before another one can take over. On shutdown the Lease is released, so the next
//! replica takes over at once instead of waiting for expiry.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

/// Leader-election settings (`--leader-elect*` flags).
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the Pod name and a random suffix by default).
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
    /// How long after its last renewal seen the holder keeps writing without another: half a
    /// grace period before expiry by default ([`LeaderElection::default_renew_deadline`]), or
    /// kube-controller-manager's `--leader-elect-renew-deadline`.
    pub renew_deadline: Duration,
}

impl LeaderElection {
    /// `lease_duration − grace / 2`: a working renewal (due `grace` before expiry) always lands
    /// first, and a holder that stopped renewing stops writing `grace / 2` before anyone else
    /// can take the Lease.
    pub fn default_renew_deadline(lease_duration: Duration, grace: Duration) -> Duration {
        lease_duration.saturating_sub(grace / 2)
    }
}

/// The write gate: `true` while this replica may write.
pub type Gate = watch::Receiver<bool>;

/// A gate that is always open (leader election off).
pub fn always_open() -> (watch::Sender<bool>, Gate) {
    watch::channel(true)
}

/// The longest one call to the API server may take here. kube's client sets no read timeout, so
/// a connection that died without a reset would otherwise hang the loop that closes the gate.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The sender of the write gate, closing it when dropped: also when leader election panics (in
/// kube-lease-manager, say). A dropped sender alone would leave the gate at its last value, and
/// a replica that no longer renews the Lease would go on writing.
struct ClosesOnDrop(watch::Sender<bool>);

impl std::ops::Deref for ClosesOnDrop {
    type Target = watch::Sender<bool>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for ClosesOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// Runs leader election until `stop` turns true, then releases the Lease. Setting up the Lease
/// is retried with backoff (1 s doubling to 30 s, with jitter) until it works or `stop` turns
/// true: a replica started while the API server is unreachable, or before its RBAC is in place,
/// recovers by itself, and says so in its log meanwhile.
pub async fn run(
    client: kube::Client,
    le: LeaderElection,
    gate: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let gate = ClosesOnDrop(gate);
    let secs = |d: Duration| d.as_secs().max(1);
    let build = || async {
        let build = LeaseManagerBuilder::new(client.clone(), &le.name)
            .with_namespace(&le.namespace)
            .with_identity(&le.identity)
            .with_duration(secs(le.lease_duration))
            .with_grace(secs(le.grace))
            .with_field_manager(format!("epslice-{}", le.identity))
            .build();
        match tokio::time::timeout(CALL_TIMEOUT, build).await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("leader election on Lease {}/{}: {e}", le.namespace, le.name)),
            Err(_) => Err(anyhow::anyhow!(
                "leader election on Lease {}/{}: no answer within {CALL_TIMEOUT:?}",
                le.namespace,
                le.name
            )),
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let first = build.retry(backoff).notify(|e, wait| {
        tracing::warn!(error = %e, retry_in = ?wait, "leader election: cannot set up the Lease; this replica does not write meanwhile");
    });
    let manager = tokio::select! {
        m = first => m?,
        _ = stop.wait_for(|s| *s) => return Ok(()),
    };
    // The manager acquires and renews inside `changed()`, which returns only when it gains or
    // loses the Lease. It runs in a task of its own, never restarted by this loop's pace: on an
    // API server slower than the one-second check, a PATCH that was cancelled at every check
    // never landed, and nobody could lead.
    let mut manager = Running::spawn(manager);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
    let deadline_ms = i64::try_from(le.renew_deadline.as_millis()).unwrap_or(i64::MAX);
    let now_ms = || k8s_openapi::jiff::Timestamp::now().as_millisecond();
    // Until when (wall clock, ms) we may write: the renewTime of our Lease as last read plus the
    // renew deadline (shorter than the lease duration, after which followers take over).
    // (renewTime is written by the holder, so by this replica's own clock.)
    let mut valid_until: Option<i64> = None;
    let mut held = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            r = manager.held.changed() => match r {
                Ok(()) => held = *manager.held.borrow_and_update(),
                Err(_) => {
                    // Its task ended, which only a bug in it can do: start again from the Lease.
                    tracing::warn!("leader election: the Lease manager stopped; starting a new one");
                    held = false;
                    let _ = gate.send(false);
                    match build().await {
                        Ok(m) => manager = Running::spawn(m),
                        Err(e) => {
                            tracing::warn!(error = %e, "leader election: cannot rebuild the Lease manager");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            },
            _ = tick.tick() => {}
        }
        if !held && *gate.borrow() {
            tracing::info!(identity = %le.identity, leading = false, "leadership changed");
            let _ = gate.send(false);
        }
        // Our own view of the Lease, so a replica that cannot renew stops in time. While we write,
        // the read is bounded by what is left of our validity, so the gate closes in time even
        // when the call hangs; otherwise by `CALL_TIMEOUT`.
        let budget = match valid_until.filter(|_| *gate.borrow()) {
            Some(until) => Duration::from_millis(u64::try_from(until - now_ms()).unwrap_or(0))
                .clamp(Duration::from_millis(100), CALL_TIMEOUT),
            None => CALL_TIMEOUT,
        };
        // A shutdown does not wait for the read: the release that follows needs the time.
        let read = tokio::select! {
            r = tokio::time::timeout(budget, leases.get_opt(&le.name)) => match r {
                Ok(r) => r.map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::anyhow!("no answer within {budget:?}")),
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let mine = match read {
            Ok(lease) => {
                let holder = lease.as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.as_deref());
                manager.saw_other_holder |= holder.is_some_and(|h| h != le.identity);
                // kube-lease-manager re-reads a Lease held by another only after its expiry; a
                // fresh manager sees an early release (a graceful handover) now and takes the
                // Lease at once. One that has seen no other holder is acquiring: left alone.
                // A deleted Lease is created again by a new manager (only building one creates it).
                let released = !held && (lease.is_none() || (holder.is_none() && manager.saw_other_holder));
                let expired = lease.as_ref().and_then(|l| l.spec.as_ref()).is_some_and(|spec| {
                    let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_millisecond());
                    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0)).saturating_mul(1000);
                    renewed.saturating_add(duration) < now_ms()
                });
                if !held && (lease.is_none() || holder.is_none() || expired) {
                    manager.free_since.get_or_insert_with(tokio::time::Instant::now);
                } else {
                    manager.free_since = None;
                }
                // A manager that leaves a free Lease untaken for a whole lease duration is stuck
                // too (a read on a dead connection): replaced like one that believes it leads.
                let idle = manager.free_since.is_some_and(|t| t.elapsed() > le.lease_duration + CALL_TIMEOUT);
                valid_until = lease.and_then(|l| l.spec).and_then(|spec| {
                    let holder = spec.holder_identity.as_deref() == Some(le.identity.as_str());
                    let renewed = spec.renew_time?.0.as_millisecond();
                    holder.then_some(renewed.saturating_add(deadline_ms))
                });
                let mine = valid_until.is_some_and(|until| now_ms() < until);
                if mine {
                    manager.confirmed = tokio::time::Instant::now();
                }
                // A manager that believes it holds the Lease while no renewal of ours has been
                // seen for a whole lease duration is stuck (say, a call on a connection that
                // died without a reset): a new one starts from the Lease as it is.
                let stuck = held && manager.confirmed.elapsed() > le.lease_duration + CALL_TIMEOUT;
                if released || stuck || idle {
                    if stuck || idle {
                        tracing::warn!(
                            "leader election: the Lease manager made no progress for a lease duration; restarting it"
                        );
                    }
                    match build().await {
                        Ok(m) => {
                            // The new manager, of the same identity, adopts a Lease the old one
                            // took; the old one is stopped without releasing anything.
                            manager.stop().await;
                            manager = Running::spawn(m);
                            held = false;
                        }
                        Err(e) => tracing::warn!(error = %e, "leader election: cannot rebuild the Lease manager"),
                    }
                }
                mine
            }
            Err(e) => {
                let valid = valid_until.is_some_and(|until| now_ms() < until);
                if *gate.borrow() && !valid {
                    tracing::warn!(error = %e, "cannot read the Lease, and our last renewal is about to expire; not writing");
                }
                *gate.borrow() && valid
            }
        };
        let leading = held && mine;
        if *gate.borrow() != leading {
            tracing::info!(identity = %le.identity, leading, "leadership changed");
            let _ = gate.send(leading);
        }
    }
    let _ = gate.send(false);
    // The manager's call may hold its state: it is stopped before the release.
    manager.stop().await;
    // The task may have reported the Lease taken while the loop was stopping.
    if held || *manager.held.borrow() {
        match tokio::time::timeout(Duration::from_secs(5), manager.manager.release()).await {
            Ok(Ok(())) => tracing::info!("Lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the Lease"),
            Err(_) => tracing::warn!("Lease release did not finish in 5 s"),
        }
    }
    Ok(())
}

/// A [`LeaseManager`] whose `changed()` runs in a task of its own, in a loop: `held` follows
/// whether it holds the Lease. (kube-lease-manager's own `watch()` backs off up to 30 s after
/// errors, resetting only on a change, and releases on stop even a Lease it does not hold once
/// its view has expired; neither suits a gate that must follow the Lease closely.)
struct Running {
    held: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    manager: Arc<LeaseManager>,
    /// Whether our reads showed another holder since this manager started (it then sleeps
    /// until that holder's expiry).
    saw_other_holder: bool,
    /// When our reads last confirmed a renewal of ours (or this manager started).
    confirmed: tokio::time::Instant,
    /// Since when our reads have shown the Lease free to take (missing, without holder, or
    /// expired) while this manager does not hold it.
    free_since: Option<tokio::time::Instant>,
}

impl Running {
    fn spawn(manager: LeaseManager) -> Running {
        let manager = Arc::new(manager);
        let (tx, held) = watch::channel(false);
        let m = manager.clone();
        let task = tokio::spawn(async move {
            loop {
                match m.changed().await {
                    Ok(state) => {
                        if tx.send(state).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "leader election: cannot sync the Lease");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Running {
            held,
            task,
            manager,
            saw_other_holder: false,
            confirmed: tokio::time::Instant::now(),
            free_since: None,
        }
    }

    /// Stops the task (and any call it has in flight); releases nothing.
    async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found in review: a panic in leader election dropped the gate's sender with the gate open,
    /// and the workers went on writing on a Lease nobody renewed.
    #[tokio::test]
    async fn the_gate_closes_when_leader_election_panics() {
        let (tx, mut gate) = watch::channel(true);
        let task = tokio::spawn(async move {
            let _gate = ClosesOnDrop(tx);
            panic!("a bug in leader election");
        });
        assert!(task.await.expect_err("panicked").is_panic());
        assert!(!*gate.borrow_and_update(), "closed, not left at its last value");
        assert!(gate.wait_for(|leading| *leading).await.is_err(), "a worker waiting to lead stops waiting");
    }
}
