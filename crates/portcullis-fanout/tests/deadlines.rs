//! The fan-out's deadlines: which settings are refused, and what the report says of a call
//! the overall deadline cut short.

mod support;

use portcullis_fanout::{BuildError, FanOut, Outcome};
use portcullis_test::time::ms;
use std::time::Duration;
use support::Replicas;
use tower::ServiceExt;

use support::Behavior::{Answer, Hang};

#[tokio::test(start_paused = true)]
async fn a_call_cut_by_the_overall_deadline_has_no_latency() {
    // One at a time: 0 answers at 100 ms, 1 hangs past its per-peer deadline (200 ms) and is
    // timed out at 300 ms by it, 2 hangs and is cut at 450 ms by the overall deadline.
    let replicas = Replicas::new(&[Answer(ms(100)), Hang, Hang]);
    let fanout = FanOut::builder()
        .max_in_flight(1)
        .per_peer_timeout(ms(200))
        .overall_timeout(ms(450))
        .build(replicas.peers())
        .unwrap();
    let report = fanout.clone().oneshot(()).await.unwrap();
    assert!(report.overall_timed_out());
    assert_eq!(report.get(&1), Some(&Outcome::TimedOut));
    assert_eq!(report.get(&2), Some(&Outcome::TimedOut));
    // Ended on their own: answered, or timed out by the per-peer deadline.
    assert_eq!(report.latency(&0), Some(ms(100)));
    assert_eq!(report.latency(&1), Some(ms(200)));
    // Cut by the overall deadline: no latency, in the report as in the histogram.
    assert_eq!(report.latency(&2), None);
    let histogram = fanout
        .metrics()
        .snapshot()
        .peer_latency_us
        .expect("a histogram");
    assert_eq!(histogram.len(), 2);
}

#[test]
fn zero_timeouts_are_refused() {
    assert_eq!(
        FanOut::builder()
            .per_peer_timeout(Duration::ZERO)
            .build_layer()
            .unwrap_err(),
        BuildError::ZeroPerPeerTimeout
    );
    assert_eq!(
        FanOut::builder()
            .overall_timeout(Duration::ZERO)
            .build_layer()
            .unwrap_err(),
        BuildError::ZeroOverallTimeout
    );
    assert_eq!(
        FanOut::builder()
            .per_peer_timeout(Duration::ZERO)
            .overall_timeout(Duration::ZERO)
            .build(Vec::<(u32, ())>::new())
            .unwrap_err(),
        BuildError::ZeroPerPeerTimeout
    );
    assert!(FanOut::builder()
        .per_peer_timeout(Duration::from_nanos(1))
        .overall_timeout(Duration::from_nanos(1))
        .build_layer()
        .is_ok());
}
