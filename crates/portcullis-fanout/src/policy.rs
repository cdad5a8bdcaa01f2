//! [`Policy`]: when a fan-out is done, and whether it got what it waited for.
//!
//! The rule, over a peer set of `peers` and the [`Counts`] of the peer calls that have ended:
//!
//! | policy         | met when             | settled (done) when                           |
//! |----------------|----------------------|-----------------------------------------------|
//! | `All`          | `responses == peers` | every peer has ended                          |
//! | `FirstSuccess` | `responses > 0`      | met, or every peer has ended                  |
//! | `Quorum(n)`    | `responses >= n`     | met, or `responses + peers not yet ended < n` |
//!
//! The response future asks [`Policy::is_settled`] after each peer call ends and stops there;
//! the report's [`policy_met`](crate::Report::policy_met) is [`Policy::is_met`] over the final
//! counts (a fan-out cut short by its overall deadline is done without being settled).

use crate::report::Counts;

/// When a fan-out is complete.
///
/// Once the policy is settled (met, or impossible to meet) the peer calls still in flight are
/// dropped, which cancels them, and reported as [`Outcome::Cancelled`](crate::Outcome), as are
/// the peers not yet called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Wait for every peer to answer, fail or time out. Met when every peer answered `Ok`.
    All,
    /// Done at the first `Ok` response (met), or when every peer has failed (not met).
    FirstSuccess,
    /// Done once this many peers answered `Ok` (met), or as soon as the peers left can no longer
    /// make up the quorum (not met). A quorum larger than the peer set at call time is a
    /// [`FanOutError`](crate::FanOutError); 0 is refused at build time.
    Quorum(usize),
}

impl Policy {
    /// Whether the fan-out over `peers` peers is done: the policy is met, or the peers that
    /// have not ended can no longer meet it.
    pub(crate) fn is_settled(self, counts: &Counts, peers: usize) -> bool {
        let responses = counts.responses;
        let finished = counts.finished();
        match self {
            Policy::All => finished == peers,
            Policy::FirstSuccess => responses > 0 || finished == peers,
            Policy::Quorum(quorum) => {
                responses >= quorum || responses + (peers - finished) < quorum
            }
        }
    }

    /// Whether the fan-out over `peers` peers got what it waited for.
    pub(crate) fn is_met(self, counts: &Counts, peers: usize) -> bool {
        let responses = counts.responses;
        match self {
            Policy::All => responses == peers,
            Policy::FirstSuccess => responses > 0,
            Policy::Quorum(quorum) => responses >= quorum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts of peer calls that ended: `responses` answered, `failed` failed.
    fn ended(responses: usize, failed: usize) -> Counts {
        Counts {
            responses,
            errors: failed,
            ..Counts::default()
        }
    }

    #[test]
    fn all_is_settled_when_every_peer_has_ended_and_met_when_every_one_answered() {
        let all = Policy::All;
        assert!(!all.is_settled(&ended(2, 0), 3));
        assert!(all.is_settled(&ended(3, 0), 3));
        assert!(all.is_met(&ended(3, 0), 3));
        assert!(all.is_settled(&ended(2, 1), 3));
        assert!(!all.is_met(&ended(2, 1), 3));
        // Nobody to wait for: settled and met at once.
        assert!(all.is_settled(&ended(0, 0), 0) && all.is_met(&ended(0, 0), 0));
    }

    #[test]
    fn first_success_is_settled_by_one_answer_or_by_every_peer_failing() {
        let first = Policy::FirstSuccess;
        assert!(!first.is_settled(&ended(0, 2), 3));
        assert!(first.is_settled(&ended(1, 0), 3));
        assert!(first.is_met(&ended(1, 0), 3));
        assert!(first.is_settled(&ended(0, 3), 3));
        assert!(!first.is_met(&ended(0, 3), 3));
    }

    #[test]
    fn quorum_is_settled_once_met_or_out_of_reach() {
        let quorum = Policy::Quorum(2);
        assert!(
            !quorum.is_settled(&ended(1, 1), 4),
            "two peers left can make it"
        );
        assert!(quorum.is_settled(&ended(2, 0), 4));
        assert!(quorum.is_met(&ended(2, 0), 4));
        assert!(
            !quorum.is_settled(&ended(0, 2), 4),
            "two peers left, two needed"
        );
        assert!(
            quorum.is_settled(&ended(0, 3), 4),
            "one peer left, two needed"
        );
        assert!(!quorum.is_met(&ended(0, 3), 4));
        // Timed-out and cancelled calls have ended too.
        let timed_out = Counts {
            responses: 1,
            timed_out: 2,
            ..Counts::default()
        };
        assert!(quorum.is_settled(&timed_out, 3));
    }
}
