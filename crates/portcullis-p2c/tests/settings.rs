//! A built pool answers each of its settings by the setter's name, with what is in force.

use portcullis_p2c::{P2cPool, P2cPoolBuilder};
use std::time::Duration;
use tower::load::Constant;
use tower::service_fn;

type Endpoint = Constant<
    tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<u16, std::io::Error>>>,
    u32,
>;

fn endpoint(_: &u32, _: &()) -> Endpoint {
    let answer: fn(()) -> std::future::Ready<Result<u16, std::io::Error>> =
        |_| std::future::ready(Ok(200));
    Constant::new(service_fn(answer), 0)
}

#[test]
fn a_pool_built_with_defaults_answers_them() {
    let pool: P2cPool<u32, (), _, ()> = P2cPool::builder().build(endpoint).unwrap();
    assert_eq!(
        pool.backoff(),
        (
            P2cPoolBuilder::DEFAULT_BACKOFF_BASE,
            P2cPoolBuilder::DEFAULT_BACKOFF_MAX
        )
    );
    assert_eq!(pool.seed(), None);
    assert_eq!(pool.consecutive_failures(), None);
    assert_eq!(pool.failure_percentage(), None);
    assert_eq!(
        pool.ejection_time(),
        (
            P2cPoolBuilder::DEFAULT_EJECTION_BASE,
            P2cPoolBuilder::DEFAULT_EJECTION_MAX
        )
    );
    assert_eq!(
        pool.max_ejection_percent(),
        P2cPoolBuilder::DEFAULT_MAX_EJECTION_PERCENT
    );
    assert_eq!(pool.demotion(), Duration::ZERO, "off without ejection");
    assert_eq!(pool.abandoned_after(), None);
    assert_eq!(pool.slow_start(), None);
    assert_eq!(
        pool.panic_threshold(),
        P2cPoolBuilder::DEFAULT_PANIC_THRESHOLD
    );
}

#[test]
fn a_pool_answers_every_setting_it_was_built_with() {
    let classify = |status: &u16| *status >= 500;
    let pool: P2cPool<u32, (), _, (), _> = P2cPool::builder()
        .backoff(Duration::from_millis(5), Duration::from_secs(2))
        .seed(7)
        .consecutive_failures(3)
        .failure_percentage(80, 40, Duration::from_secs(5))
        .ejection_time(Duration::from_secs(1), Duration::from_secs(9))
        .max_ejection_percent(30)
        .abandoned_after(Duration::from_millis(900))
        .slow_start(Duration::from_secs(20), 2.0, 25)
        .panic_threshold(40)
        .build_with_classify(endpoint, classify)
        .unwrap();
    assert_eq!(
        pool.backoff(),
        (Duration::from_millis(5), Duration::from_secs(2))
    );
    assert_eq!(pool.seed(), Some(7));
    assert_eq!(pool.consecutive_failures(), Some(3));
    assert_eq!(
        pool.failure_percentage(),
        Some((80, 40, Duration::from_secs(5)))
    );
    assert_eq!(
        pool.ejection_time(),
        (Duration::from_secs(1), Duration::from_secs(9))
    );
    assert_eq!(pool.max_ejection_percent(), 30);
    assert_eq!(
        pool.demotion(),
        P2cPoolBuilder::DEFAULT_DEMOTION,
        "on by default with ejection"
    );
    assert_eq!(pool.abandoned_after(), Some(Duration::from_millis(900)));
    assert_eq!(pool.slow_start(), Some((Duration::from_secs(20), 2.0, 25)));
    assert_eq!(pool.panic_threshold(), 40);
    assert!((pool.classify())(&503));

    let off: P2cPool<u32, (), _, ()> = P2cPool::builder()
        .consecutive_failures(3)
        .demotion(Duration::ZERO)
        .build(endpoint)
        .unwrap();
    assert_eq!(off.demotion(), Duration::ZERO);
}
