//! One shared connection of a key: its states and their transitions, the assignment policy
//! (least-leased) and the rebuild backoff. Everything here runs under the cache's lock and
//! only decides; the cache carries the decisions out (makes, drops, spawns, logs).

use portcullis_pool::backoff::ExponentialBackoff;
use portcullis_pool::time::deadline_after;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a lease checks on every `poll_ready` without taking the lock: whether the connection
/// it cloned is still the connection of its slot. The epoch moves when the connection fails
/// and again when it is rebuilt.
#[derive(Debug)]
pub(crate) struct ConnCell {
    pub(crate) id: u64,
    epoch: AtomicU64,
}

impl ConnCell {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn advance(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// A connection slot of a key.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) cell: Arc<ConnCell>,
    /// Leases (consumers, not their clones) assigned to this slot.
    pub(crate) leases: usize,
    pub(crate) state: ConnState<S>,
    /// Failures in a row: reset by a failure that comes more than the backoff cap after the
    /// last (re)build, which is how a connection that stayed up earns a short wait again.
    pub(crate) failures: u32,
    built_at: Instant,
    /// Whether a task is waiting for the idle grace to end (at most one per connection).
    reaper_armed: bool,
}

/// The states of a connection slot.
#[derive(Debug)]
pub(crate) enum ConnState<S> {
    /// The user's connection service; `idle_since` is set while no lease holds it.
    Ready { svc: S, idle_since: Option<Instant> },
    /// Its `poll_ready` failed; the service was dropped and is rebuilt at `retry_at` by the
    /// first lease that needs it.
    Broken { retry_at: Instant },
}

/// What the last lease's departure means for a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Released {
    /// Other leases hold it.
    Held,
    /// Close it now: failed, or no grace.
    Close,
    /// Keep it for the grace; `arm` asks for a reaper task (none is running yet).
    Idle { arm: bool },
}

/// What the reaper finds when the grace ends.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Still idle past the grace: close it.
    Close,
    /// Leased again and released since: wait until this instant.
    WaitUntil(Instant),
    /// Leased again: the reaper stops.
    Leased,
}

/// Where [`pick`] puts a new lease.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The connection at this index.
    Existing(usize),
    /// A new connection.
    Open,
}

// === impl Conn ===

impl<S: Clone> Conn<S> {
    pub(crate) fn open(id: u64, svc: S, now: Instant) -> Self {
        Self {
            cell: Arc::new(ConnCell {
                id,
                epoch: AtomicU64::new(0),
            }),
            leases: 0,
            state: ConnState::Ready {
                svc,
                idle_since: None,
            },
            failures: 0,
            built_at: now,
            reaper_armed: false,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.cell.id
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, ConnState::Ready { .. })
    }

    /// A clone of the connection, if it is up.
    pub(crate) fn svc(&self) -> Option<S> {
        match &self.state {
            ConnState::Ready { svc, .. } => Some(svc.clone()),
            ConnState::Broken { .. } => None,
        }
    }

    pub(crate) fn lease(&mut self) {
        self.leases += 1;
        if let ConnState::Ready { idle_since, .. } = &mut self.state {
            *idle_since = None;
        }
    }

    /// One lease leaves. A connection with a grace stays open, idle, for that long.
    pub(crate) fn release(&mut self, now: Instant, grace: Duration, can_spawn: bool) -> Released {
        self.leases = self.leases.saturating_sub(1);
        if self.leases > 0 {
            return Released::Held;
        }
        match &mut self.state {
            ConnState::Broken { .. } => Released::Close,
            ConnState::Ready { .. } if grace.is_zero() || !can_spawn => Released::Close,
            ConnState::Ready { idle_since, .. } => {
                *idle_since = Some(now);
                let arm = !self.reaper_armed;
                self.reaper_armed = true;
                Released::Idle { arm }
            }
        }
    }

    /// The reaper woke: close, wait again, or stop.
    pub(crate) fn expiry(&mut self, now: Instant, grace: Duration) -> Expiry {
        match &self.state {
            ConnState::Ready {
                idle_since: Some(since),
                ..
            } if self.leases == 0 => {
                let until = deadline_after(*since, grace);
                if now >= until {
                    Expiry::Close
                } else {
                    Expiry::WaitUntil(until)
                }
            }
            _ => {
                self.reaper_armed = false;
                Expiry::Leased
            }
        }
    }

    /// Its `poll_ready` failed: drop the service (returned, to be dropped outside the lock)
    /// and wait for the backoff before a rebuild. `None` when it was already broken.
    ///
    /// The wait before the `failures`-th rebuild in a row is `backoff`'s wait for it: its base,
    /// doubled for each failure after the first, capped. No jitter: one lease rebuilds a slot,
    /// whoever else waits for it finds it rebuilt, so there is no herd to spread.
    pub(crate) fn fail(
        &mut self,
        now: Instant,
        backoff: &ExponentialBackoff,
    ) -> Option<(S, Duration)> {
        if !self.is_ready() {
            return None;
        }
        self.failures = if now.saturating_duration_since(self.built_at) > backoff.cap() {
            1
        } else {
            self.failures.saturating_add(1)
        };
        let wait = backoff.wait(self.failures - 1);
        let old = std::mem::replace(
            &mut self.state,
            ConnState::Broken {
                retry_at: deadline_after(now, wait),
            },
        );
        self.cell.advance();
        match old {
            ConnState::Ready { svc, .. } => Some((svc, wait)),
            ConnState::Broken { .. } => None,
        }
    }

    /// A new connection in the slot of a failed one.
    pub(crate) fn rebuild(&mut self, svc: S, now: Instant) {
        self.state = ConnState::Ready {
            svc,
            idle_since: None,
        };
        self.built_at = now;
        self.cell.advance();
    }
}

/// The assignment policy, least-leased: a new lease goes to
///
/// 1. an up connection that no lease holds (an idle one in its grace), if any;
/// 2. otherwise a new connection, while the key has fewer than `max` (so the first `max`
///    consumers get one connection each);
/// 3. otherwise the up connection with the fewest leases, the oldest on a tie;
/// 4. otherwise (every connection failed, none can be added) the failed connection with the
///    fewest leases; the lease waits for its rebuild.
pub(crate) fn pick<S: Clone>(conns: &[Conn<S>], max: usize) -> Pick {
    let least_ready = least_leased(conns, |c| c.is_ready());
    match least_ready {
        Some(i) if conns[i].leases == 0 => Pick::Existing(i),
        _ if conns.len() < max => Pick::Open,
        Some(i) => Pick::Existing(i),
        None => least_leased(conns, |_| true).map_or(Pick::Open, Pick::Existing),
    }
}

/// Where a lease on the failed connection `from` moves: the up connection with the fewest
/// leases, the oldest on a tie.
pub(crate) fn move_target<S: Clone>(conns: &[Conn<S>], from: u64) -> Option<usize> {
    least_leased(conns, |c| c.is_ready() && c.id() != from)
}

fn least_leased<S>(conns: &[Conn<S>], eligible: impl Fn(&Conn<S>) -> bool) -> Option<usize> {
    conns
        .iter()
        .enumerate()
        .filter(|(_, c)| eligible(c))
        .min_by_key(|(_, c)| (c.leases, c.cell.id))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);
    const BACKOFF: ExponentialBackoff = match ExponentialBackoff::doubling(BASE, MAX) {
        Ok(backoff) => backoff,
        Err(_) => panic!("a valid backoff"),
    };

    fn conns(leases: &[usize]) -> Vec<Conn<()>> {
        let now = Instant::now();
        leases
            .iter()
            .enumerate()
            .map(|(id, &n)| {
                let mut c = Conn::open(id as u64, (), now);
                c.leases = n;
                c
            })
            .collect()
    }

    #[test]
    fn pick_fills_up_to_max_then_least_leased_oldest_first() {
        assert_eq!(pick::<()>(&[], 3), Pick::Open);
        assert_eq!(pick(&conns(&[1]), 3), Pick::Open);
        assert_eq!(pick(&conns(&[1, 1]), 3), Pick::Open);
        assert_eq!(pick(&conns(&[1, 1, 1]), 3), Pick::Existing(0));
        assert_eq!(pick(&conns(&[2, 1, 2]), 3), Pick::Existing(1));
        assert_eq!(pick(&conns(&[2, 2, 1]), 3), Pick::Existing(2));
    }

    #[test]
    fn pick_reuses_an_idle_connection_before_opening() {
        assert_eq!(pick(&conns(&[3, 0]), 4), Pick::Existing(1));
    }

    #[tokio::test(start_paused = true)]
    async fn pick_avoids_failed_connections_until_nothing_else_is_left() {
        let now = Instant::now();
        let mut cs = conns(&[0, 5]);
        cs[0].leases = 1;
        cs[0].fail(now, &BACKOFF);
        assert_eq!(pick(&cs, 2), Pick::Existing(1), "the up one, though busier");
        cs[1].fail(now, &BACKOFF);
        assert_eq!(
            pick(&cs, 2),
            Pick::Existing(0),
            "all failed: the least leased"
        );
        assert_eq!(move_target(&cs, 0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_grow_the_wait_and_a_long_life_resets_it() {
        let mut c = conns(&[1]).remove(0);
        let now = Instant::now();
        assert_eq!(c.fail(now, &BACKOFF).map(|(_, w)| w), Some(BASE));
        assert_eq!(c.fail(now, &BACKOFF), None, "already failed");
        c.rebuild((), now + BASE);
        assert_eq!(c.fail(now + BASE, &BACKOFF).map(|(_, w)| w), Some(BASE * 2));
        let later = now + MAX * 3;
        c.rebuild((), later);
        assert_eq!(
            c.fail(later + MAX * 2, &BACKOFF).map(|(_, w)| w),
            Some(BASE)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn release_closes_idles_or_holds() {
        let now = Instant::now();
        let grace = Duration::from_secs(1);
        let mut c = conns(&[2]).remove(0);
        assert_eq!(c.release(now, grace, true), Released::Held);
        assert_eq!(c.release(now, grace, true), Released::Idle { arm: true });
        c.lease();
        assert_eq!(c.release(now, grace, true), Released::Idle { arm: false });
        assert_eq!(c.expiry(now, grace), Expiry::WaitUntil(now + grace));
        assert_eq!(c.expiry(now + grace, grace), Expiry::Close);
        c.lease();
        assert_eq!(c.expiry(now + grace, grace), Expiry::Leased);
        assert_eq!(c.release(now, Duration::ZERO, true), Released::Close);
    }
}
