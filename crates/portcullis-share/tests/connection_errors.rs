//! Clients that are always ready and report a broken connection from their response futures
//! (hyper-util's legacy `Client`): with `build_with_connection_errors`, a call failing with a
//! connection error marks its connection failed, as a failed `poll_ready` does. Paused time.

use portcullis_share::{BoxError, ConnectionState, SharedClients, SharedClientsBuilder};
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Service, ServiceExt};

const BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct ConnectionLost;

impl std::fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection lost")
    }
}

impl std::error::Error for ConnectionLost {}

/// A connection that is always ready; its calls answer its number, or fail with
/// `ConnectionLost` once it is broken, or with a plain error for request 0.
#[derive(Clone)]
struct Conn {
    number: usize,
    broken: Arc<AtomicBool>,
}

impl Service<u32> for Conn {
    type Response = usize;
    type Error = BoxError;
    type Future = Ready<Result<usize, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        ready(if self.broken.load(Ordering::SeqCst) {
            Err(ConnectionLost.into())
        } else if req == 0 {
            Err("bad request".into())
        } else {
            Ok(self.number)
        })
    }
}

/// The connections made, in order, each with its switch.
#[derive(Clone, Default)]
struct Made(Arc<Mutex<Vec<Arc<AtomicBool>>>>);

impl Made {
    fn maker(&self) -> impl Fn(&&'static str) -> Conn + Send + Sync + 'static {
        let made = self.0.clone();
        let numbers = AtomicUsize::new(0);
        move |_| {
            let broken = Arc::new(AtomicBool::new(false));
            made.lock().unwrap().push(broken.clone());
            Conn {
                number: numbers.fetch_add(1, Ordering::SeqCst),
                broken,
            }
        }
    }

    fn breaks(&self, number: usize) {
        self.0.lock().unwrap()[number].store(true, Ordering::SeqCst);
    }
}

fn builder(max_connections: usize) -> SharedClientsBuilder {
    SharedClients::builder()
        .max_connections(max_connections)
        .rebuild_backoff(BACKOFF, Duration::from_secs(1))
        .unavailable_timeout(Duration::from_secs(5))
}

fn is_connection_error(error: &BoxError) -> bool {
    error.is::<ConnectionLost>()
}

#[tokio::test(start_paused = true)]
async fn a_call_failing_with_a_connection_error_fails_its_connection_and_the_lease_moves() {
    let made = Made::default();
    let clients = builder(2)
        .build_with_connection_errors(made.maker(), is_connection_error)
        .unwrap();
    let mut a = clients.get("etcd");
    let b = clients.get("etcd");
    assert_eq!((a.connection(), b.connection()), (0, 1));
    assert_eq!(a.ready().await.unwrap().call(1).await.unwrap(), 0);

    // Connection 0 breaks: the call's error is the client's, and the connection is failed.
    made.breaks(0);
    let error = a.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(error.is::<ConnectionLost>(), "{error}");
    let snapshot = clients.metrics().snapshot();
    assert_eq!(snapshot.connection_failures, 1);
    let key = clients.key_snapshot(&"etcd").unwrap();
    assert_eq!(key.connections[0].state, ConnectionState::Failed);

    // The lease's next readiness moves it to the healthy connection, which serves it.
    assert_eq!(a.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert_eq!(a.connection(), 1);
    let snapshot = clients.metrics().snapshot();
    assert_eq!((snapshot.moves, snapshot.connections), (1, 1));
    assert_eq!(b.oneshot(1).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn other_errors_and_no_classifier_leave_the_connection_up() {
    let made = Made::default();
    let clients = builder(1)
        .build_with_connection_errors(made.maker(), is_connection_error)
        .unwrap();
    let lease = clients.get("etcd");
    // An error the classifier does not accept: the connection stays.
    assert!(lease.clone().oneshot(0).await.is_err());
    assert_eq!(clients.metrics().snapshot().connection_failures, 0);

    // Without a classifier, even a connection error changes nothing.
    let made = Made::default();
    let plain = builder(1).build(made.maker()).unwrap();
    let lease = plain.get("etcd");
    made.breaks(0);
    let error = lease.clone().oneshot(1).await.unwrap_err();
    assert!(error.is::<ConnectionLost>(), "{error}");
    assert_eq!(plain.metrics().snapshot().connection_failures, 0);
    assert_eq!(lease.connection(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_only_connection_is_rebuilt_after_the_backoff() {
    let made = Made::default();
    let clients = builder(1)
        .build_with_connection_errors(made.maker(), is_connection_error)
        .unwrap();
    let mut lease = clients.get("etcd");
    made.breaks(0);
    assert!(lease.ready().await.unwrap().call(1).await.is_err());

    // No other connection: the lease waits out the backoff, then rebuilds it.
    let started = tokio::time::Instant::now();
    assert_eq!(lease.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert_eq!(started.elapsed(), BACKOFF);
    let snapshot = clients.metrics().snapshot();
    assert_eq!((snapshot.connection_failures, snapshot.rebuilds), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failure_on_a_connection_since_rebuilt_is_not_counted_again() {
    let made = Made::default();
    let clients = builder(1)
        .build_with_connection_errors(made.maker(), is_connection_error)
        .unwrap();
    let mut lease = clients.get("etcd");
    made.breaks(0);
    // Two calls sent on connection 0 before either fails.
    let first = lease.ready().await.unwrap().call(1);
    let second = lease.ready().await.unwrap().call(1);
    assert!(first.await.is_err());
    assert_eq!(lease.ready().await.unwrap().call(1).await.unwrap(), 1);
    // The second fails after connection 0 was replaced: the rebuilt one stays up.
    assert!(second.await.is_err());
    let snapshot = clients.metrics().snapshot();
    assert_eq!((snapshot.connection_failures, snapshot.rebuilds), (1, 1));
    assert_eq!(lease.oneshot(1).await.unwrap(), 1);
}
