//! An open-loop load: requests sent at a fixed rate whatever the answers, each in a task of
//! its own, at most a bounded number in flight; and the events (faults) that come at given
//! points of it. Every request's end is recorded: a response (which one), a transport error,
//! or a hang (no end within [`REQUEST_BOUND`]).

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_examples::endpoint::{self, HttpClient, Protocol};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// The proxy's deadline for a whole request in these tests (see `super::configure`).
pub(crate) const DEADLINE: Duration = Duration::from_secs(1);
/// A request not ended by then is hung: the deadline plus a margin for a loaded machine.
pub(crate) const REQUEST_BOUND: Duration = Duration::from_millis(1_500);
/// A bound on what follows the last send: far above what it takes, so only a hang reaches it.
const DRAIN_BOUND: Duration = Duration::from_secs(60);
/// The callers: clients with a connection pool each, the requests dealt to them in turn. Over
/// HTTP/2 each has one connection, and hyper's server takes at most 200 streams at once on a
/// connection: a single caller's connection would make requests wait for a stream before the
/// proxy sees them, outside its deadline (seen at 2,000 requests a second with several faults
/// at once: a quarter of a second's requests waited past the bound). 16 connections carry
/// 3,200 streams, more than the load ever has in flight.
const CALLERS: usize = 16;

/// How much load, for how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    /// Requests per second.
    pub(crate) rate: u32,
    pub(crate) duration: Duration,
}

impl Load {
    /// The CI size: 500 requests a second for 4 s, to each of two stacks at once (one scenario,
    /// both protocols; scenarios run one at a time): within what a 2-core machine serves in a
    /// debug build with a parallel release build beside it (docs/reliability.md has the runs).
    pub(crate) const CI: Self = Self {
        rate: 500,
        duration: Duration::from_secs(4),
    };
    /// Issue 18's long run: 2,000 requests a second for 20 s.
    pub(crate) const LONG: Self = Self {
        rate: 2_000,
        duration: Duration::from_secs(20),
    };

    /// [`Load::LONG`] when `PORTCULLIS_NETNS_LONG` is set (to anything but `0`), else
    /// [`Load::CI`].
    pub(crate) fn from_env() -> Self {
        match std::env::var("PORTCULLIS_NETNS_LONG") {
            Ok(value) if value != "0" => Self::LONG,
            _ => Self::CI,
        }
    }

    /// A shorter load at the same rate.
    pub(crate) fn lasting(self, duration: Duration) -> Self {
        Self { duration, ..self }
    }

    /// How many requests it sends.
    pub(crate) fn requests(&self) -> u64 {
        (u128::from(self.rate) * self.duration.as_nanos() / 1_000_000_000) as u64
    }

    /// At most this many requests in flight: what two request bounds' worth of sends would
    /// fill, so that it binds only if requests hang (then sends wait, and are counted late).
    fn max_in_flight(&self) -> usize {
        (2 * self.rate as usize).max(1)
    }
}

/// How a request ended, as its caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// 200, served by the backend named.
    Ok(String),
    /// A backend's own 503 ("<name> unavailable"), passed on by the proxy; `retry_after` if
    /// it carried a `Retry-After`.
    Unavailable { retry_after: bool },
    /// The proxy's 503 for a queue in failfast.
    FailFast,
    /// The proxy's 503 for a full queue that sheds at once (`Overloaded`).
    Overloaded,
    /// The proxy's 502 for a caller that found no queue slot free within the failfast timeout.
    NoSlot,
    /// Any other status from the proxy (its 502 and 504 among them).
    Status(StatusCode),
    /// The connection to the proxy failed.
    Transport,
    /// No end within [`REQUEST_BOUND`].
    Hung,
}

/// One request.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// Its number, in the order sent: the path is `/work/{id}`.
    pub(crate) id: u64,
    /// When it was sent, from the start of the run.
    pub(crate) sent: Duration,
    /// How long it took to end (the bound, for a hang).
    pub(crate) took: Duration,
    pub(crate) end: End,
}

/// The run's clock as events see it.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    start: Instant,
    duration: Duration,
    next: Arc<AtomicU64>,
}

impl Clock {
    /// The id the next request will get: every request with this id or a higher one is sent
    /// after this call.
    pub(crate) fn next_id(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Time left until the last send.
    pub(crate) fn remaining(&self) -> Duration {
        self.duration.saturating_sub(self.start.elapsed())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Something done at a point of the run, off the runtime (it may block: `ip`, joining a
/// backend's thread, waiting for the proxy to apply a change).
pub(crate) struct Event {
    /// The point, as a fraction of the run.
    at: f64,
    what: &'static str,
    action: Box<dyn FnOnce(&Clock) + Send>,
}

/// `action` at `at` (a fraction of the run), named `what` in the report.
pub(crate) fn at(
    at: f64,
    what: &'static str,
    action: impl FnOnce(&Clock) + Send + 'static,
) -> Event {
    Event {
        at,
        what,
        action: Box::new(action),
    }
}

/// An event, done.
#[derive(Clone, Debug)]
pub(crate) struct Done {
    pub(crate) what: &'static str,
    /// When it began, from the start of the run.
    pub(crate) began: Duration,
    /// The first request id sent after it began.
    pub(crate) began_id: u64,
    /// When it was done, from the start of the run.
    pub(crate) at: Duration,
    /// The first request id sent after it was done.
    pub(crate) next_id: u64,
}

/// What became of a run's requests.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Every request that ended (hung ones included), in the order they ended.
    pub(crate) records: Vec<Record>,
    /// Requests sent.
    pub(crate) sent: u64,
    /// Sends that waited for a slot under the in-flight bound.
    pub(crate) late: u64,
    pub(crate) events: Vec<Done>,
}

impl Outcome {
    pub(crate) fn requests(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn count(&self, end: impl Fn(&End) -> bool) -> usize {
        self.records.iter().filter(|r| end(&r.end)).count()
    }

    pub(crate) fn ok(&self) -> usize {
        self.count(|end| matches!(end, End::Ok(_)))
    }

    /// Ended with an error: a status other than 200 or a transport error.
    pub(crate) fn failed(&self) -> usize {
        self.count(|end| !matches!(end, End::Ok(_) | End::Hung))
    }

    pub(crate) fn hung(&self) -> usize {
        self.count(|end| *end == End::Hung)
    }

    /// Sent and never recorded as ended (a task that died midway).
    pub(crate) fn lost(&self) -> u64 {
        self.sent - self.records.len() as u64
    }

    /// The slowest request that ended.
    pub(crate) fn slowest(&self) -> Duration {
        let ended = self.records.iter().filter(|r| r.end != End::Hung);
        ended.map(|r| r.took).max().unwrap_or_default()
    }

    /// The event named `what`, once done.
    pub(crate) fn event(&self, what: &str) -> &Done {
        let done = self.events.iter().find(|e| e.what == what);
        done.unwrap_or_else(|| panic!("event {what} not done"))
    }
}

/// Sends `load` to `proxy` in `protocol`, each request `GET /work/{id}`, with `events` done at
/// their points; returns once every request has ended and every event is done.
pub(crate) async fn run(
    proxy: SocketAddr,
    protocol: Protocol,
    load: Load,
    events: Vec<Event>,
) -> Outcome {
    let clients: Vec<HttpClient> = (0..CALLERS)
        .map(|_| endpoint::client_speaking(protocol))
        .collect();
    let clock = Clock {
        start: Instant::now(),
        duration: load.duration,
        next: Arc::new(AtomicU64::new(0)),
    };
    let records = Arc::new(Mutex::new(Vec::with_capacity(load.requests() as usize)));
    let done = Arc::new(Mutex::new(Vec::new()));
    let events: Vec<_> = events
        .into_iter()
        .map(|event| {
            let (clock, done) = (clock.clone(), done.clone());
            let when = clock.start + load.duration.mul_f64(event.at);
            tokio::spawn(async move {
                tokio::time::sleep_until(when.into()).await;
                let (what, action) = (event.what, event.action);
                let at = tokio::task::spawn_blocking(move || {
                    let (began, began_id) = (clock.elapsed(), clock.next_id());
                    action(&clock);
                    Done {
                        what,
                        began,
                        began_id,
                        at: clock.elapsed(),
                        next_id: clock.next_id(),
                    }
                });
                let at = at.await.expect("the event ran");
                done.lock().unwrap().push(at);
            })
        })
        .collect();

    let max_in_flight = load.max_in_flight();
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let (mut sent, mut late) = (0, 0);
    let interval = Duration::from_secs(1) / load.rate;
    for k in 0..load.requests() {
        tokio::time::sleep_until((clock.start + interval * k as u32).into()).await;
        let permit = match in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                late += 1;
                in_flight.clone().acquire_owned().await.unwrap()
            }
        };
        let id = clock.next.fetch_add(1, Ordering::SeqCst);
        sent += 1;
        let client = clients[k as usize % CALLERS].clone();
        let (records, start) = (records.clone(), clock.start);
        tokio::spawn(async move {
            let sent = start.elapsed();
            let began = Instant::now();
            let end = timeout(REQUEST_BOUND, request(&client, proxy, id))
                .await
                .unwrap_or(End::Hung);
            let took = began.elapsed();
            records.lock().unwrap().push(Record {
                id,
                sent,
                took,
                end,
            });
            drop(permit);
        });
    }
    // Every request has ended once every slot is back.
    let all = u32::try_from(max_in_flight).unwrap();
    timeout(DRAIN_BOUND, in_flight.acquire_many(all))
        .await
        .expect("every request ended within its bound")
        .unwrap()
        .forget();
    for event in events {
        timeout(DRAIN_BOUND, event)
            .await
            .expect("every event done within its bound")
            .unwrap();
    }
    let records = std::mem::take(&mut *records.lock().unwrap());
    let events = std::mem::take(&mut *done.lock().unwrap());
    Outcome {
        records,
        sent,
        late,
        events,
    }
}

async fn request(client: &HttpClient, proxy: SocketAddr, id: u64) -> End {
    let request = Request::get(format!("http://{proxy}/work/{id}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let Ok(response) = client.request(request).await else {
        return End::Transport;
    };
    let status = response.status();
    let retry_after = response.headers().contains_key(header::RETRY_AFTER);
    let Ok(body) = response.into_body().collect().await else {
        return End::Transport;
    };
    let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    match status {
        StatusCode::OK => {
            let by = body.split(' ').next().unwrap_or_default();
            End::Ok(by.to_string())
        }
        StatusCode::SERVICE_UNAVAILABLE if body.ends_with(" unavailable") => {
            End::Unavailable { retry_after }
        }
        StatusCode::SERVICE_UNAVAILABLE if body.contains("pool queue in failfast") => End::FailFast,
        StatusCode::SERVICE_UNAVAILABLE if body.contains("pool queue full") => End::Overloaded,
        StatusCode::BAD_GATEWAY if body.contains("no pool queue slot came free") => End::NoSlot,
        status => End::Status(status),
    }
}

/// The id in a request path `/work/{id}`.
pub(crate) fn id_of(path: &str) -> Option<u64> {
    path.strip_prefix("/work/")?.parse().ok()
}
