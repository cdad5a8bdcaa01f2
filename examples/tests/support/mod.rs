//! What the network-namespace tests (`netns_faults`, `netns_leaks`) share: hosts in network
//! namespaces ([`netns`]), the `http_proxy` example's stack in front of them ([`Stack`]), and
//! an open-loop load with faults at given points of it ([`load`]).
// Each test file uses a part of it.
#![allow(dead_code)]

pub(crate) mod load;
pub(crate) mod netns;

use load::{id_of, Clock, Outcome, DEADLINE};
use netns::{Host, Hosts};
use portcullis_examples::{
    backend::{Behavior, Stall},
    endpoint::Protocol,
    proxy::{BackendsFile, Proxy, ProxyConfig, ProxyMetrics},
};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The proxy's per-attempt timeout in these tests.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// How often the proxy re-reads its backends file: short, so that discovery can flap under
/// load.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A bound on waiting for something the test caused (a change of the backends file applied,
/// failfast left): far above what it takes, so only a failure reaches it.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Both protocols, each spoken by the callers to the proxy and by the proxy to the backends.
pub(crate) const PROTOCOLS: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

/// How far past its deadline the proxy may answer a request, measured inside the proxy (see
/// `ProxyMetrics::handling`): timers that fire late on a busy machine, and the response's way
/// out of the stack.
pub(crate) const STACK_MARGIN: Duration = Duration::from_millis(250);

/// How long a flapping backend stays out of the backends file, and then in, each time.
pub(crate) const FLAP_HOLD: Duration = Duration::from_millis(200);

/// A backend that answers every request with 503 and `Retry-After: 1` (for an hour).
pub(crate) fn unavailable_with_retry_after() -> Behavior {
    let hour = tokio::time::Instant::now() + Duration::from_secs(3_600);
    Behavior {
        unavailable_until: Some(hour),
        retry_after: Some(1),
        ..Behavior::healthy()
    }
}

/// A backend ten times as slow as a healthy one (10 ms), and one request in ten 400 ms, past
/// the attempt timeout.
pub(crate) fn slow() -> Behavior {
    Behavior {
        delay: Duration::from_millis(10),
        stall: Some(Stall {
            every: 10,
            delay: Duration::from_millis(400),
        }),
        ..Behavior::healthy()
    }
}

/// Waits until `done` holds, checking every 5 ms, for at most [`WAIT`]; panics naming `what`
/// if it does not. For events, which run off the runtime.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// As [`wait_until`], on the runtime.
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Names `hosts`, and only them, in the proxy's backends `file`.
fn name_in(
    file: &BackendsFile,
    hosts: impl IntoIterator<Item = impl std::ops::Deref<Target = Host>>,
) {
    let hosts: Vec<_> = hosts.into_iter().collect();
    file.write(hosts.iter().map(|h| (h.name(), h.addr)))
        .expect("the backends file is written");
}

/// Hosts in network namespaces, each serving one backend, and the `http_proxy` example's proxy
/// in front of them, in the root namespace on 127.0.0.1, reading them from a file.
pub(crate) struct Stack {
    pub(crate) label: String,
    pub(crate) protocol: Protocol,
    /// Where the proxy listens.
    pub(crate) proxy: SocketAddr,
    pub(crate) metrics: ProxyMetrics,
    /// When the proxy, and with it its retry budget, was made.
    pub(crate) born: Instant,
    /// Declared before `net`, so that they drop before it: the backends' threads end before
    /// their namespaces go.
    pub(crate) hosts: Vec<Host>,
    pub(crate) file: BackendsFile,
    pub(crate) net: Hosts,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    served: Mutex<Option<JoinHandle<()>>>,
}

impl Stack {
    /// Hosts named `names` (`a`, `b`, …), each serving a healthy backend, all in the file, and
    /// the proxy over them speaking `protocol`, set up as the suite's ([`ATTEMPT_TIMEOUT`],
    /// [`DEADLINE`], [`POLL_INTERVAL`]) and then by `configure`. `tag` (one per test) and the
    /// protocol make the namespaces' names and addresses unique among tests running at once.
    pub(crate) async fn start(
        test: &str,
        tag: u32,
        protocol: Protocol,
        names: &[&str],
        configure: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        let (tag, short) = match protocol {
            Protocol::Http1 => (2 * tag, "h1"),
            Protocol::Http2 => (2 * tag + 1, "h2"),
        };
        let label = format!("{test} {protocol}");
        let name = format!("{test}-{short}");
        let net = Hosts::new(&name, tag, names.len());
        let hosts: Vec<Host> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Host::start(&net.namespaces[i], net.addrs[i], n, Behavior::healthy()))
            .collect();
        let file = BackendsFile::temp(&format!("netns-{name}"));
        name_in(&file, &hosts);
        let mut config = ProxyConfig::new(file.path());
        config.attempt_timeout = ATTEMPT_TIMEOUT;
        config.deadline = DEADLINE;
        config.poll_interval = POLL_INTERVAL;
        config.backend_protocol = protocol;
        configure(&mut config);
        let born = Instant::now();
        let proxy = Proxy::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .unwrap();
        let addr = proxy.local_addr().unwrap();
        let metrics = proxy.metrics().clone();
        let (shutdown, signal) = oneshot::channel();
        let served = tokio::spawn(proxy.run_until(async move {
            let _ = signal.await;
        }));
        let stack = Self {
            label,
            protocol,
            proxy: addr,
            metrics,
            born,
            hosts,
            file,
            net,
            shutdown: Mutex::new(Some(shutdown)),
            served: Mutex::new(Some(served)),
        };
        let all = stack.hosts.len();
        eventually("every backend ready", || {
            stack.metrics.p2c.snapshot().ready == all
        })
        .await;
        stack
    }

    pub(crate) fn host(&self, name: &str) -> &Host {
        let host = self.hosts.iter().find(|h| h.name() == name);
        host.unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Requests each host received, in order.
    pub(crate) fn calls(&self) -> Vec<u64> {
        self.hosts.iter().map(Host::requests).collect()
    }

    /// Names only `names` in the backends file, and waits until the proxy has applied it
    /// (blocking: for events).
    pub(crate) fn name_only(&self, names: &[&str]) {
        let before = self.metrics.queue.updates().reset;
        name_in(
            &self.file,
            self.hosts.iter().filter(|h| names.contains(&h.name())),
        );
        wait_until("the proxy applied the backends file", || {
            self.metrics.queue.updates().reset > before
        });
    }

    /// Takes `name` out of the backends file and puts it back, every [`FLAP_HOLD`], until the
    /// load nearly ends (blocking: for events). Each time, once the proxy has applied the
    /// removal, records what reaches the backend while it is out.
    pub(crate) fn flap(&self, name: &str, clock: &Clock) -> Vec<Removal> {
        let all: Vec<&str> = self.hosts.iter().map(Host::name).collect();
        let others: Vec<&str> = all.iter().copied().filter(|&n| n != name).collect();
        let host = self.host(name);
        let mut removals = Vec::new();
        while clock.remaining() > 2 * FLAP_HOLD {
            self.name_only(&others);
            let applied = clock.next_id();
            host.backend().mark_removed();
            std::thread::sleep(FLAP_HOLD);
            let reached = host.backend().paths_after_removal();
            host.backend().mark_restored();
            let reached = reached.iter().map(|path| id_of(path).unwrap()).collect();
            removals.push(Removal { applied, reached });
            self.name_only(&all);
            std::thread::sleep(FLAP_HOLD);
        }
        removals
    }

    /// Shuts the proxy down ([`Proxy::run_until`]) and waits until it has.
    pub(crate) async fn shut_down(&self) {
        if let Some(shutdown) = self.shutdown.lock().unwrap().take() {
            let _ = shutdown.send(());
        }
        let served = self.served.lock().unwrap().take();
        if let Some(served) = served {
            tokio::time::timeout(WAIT, served)
                .await
                .expect("the proxy shut down")
                .unwrap();
        }
    }

    /// Prints what the run did, one line.
    pub(crate) fn report(&self, outcome: &Outcome) {
        let retry = self.metrics.retry.snapshot();
        let queue = self.metrics.queue.snapshot();
        let p2c = self.metrics.p2c.snapshot();
        let calls = self.calls();
        let per_host: Vec<String> = self
            .hosts
            .iter()
            .zip(&calls)
            .map(|(h, n)| format!("{} {n}", h.name()))
            .collect();
        let total: u64 = calls.iter().sum();
        eprintln!(
            "{}: requests {} (sent {}, late {}), ok {}, failed {}, hung {}, lost {}, slowest \
             {:.1?} (in the proxy {:.1?}); retries {}, never ready {}, attempt timeouts {}, \
             budget refusals {}; attempts/request {:.3}, backend calls/request {:.3} ({}); \
             ejections {}; failfast entered {} left {}",
            self.label,
            outcome.requests(),
            outcome.sent,
            outcome.late,
            outcome.ok(),
            outcome.failed(),
            outcome.hung(),
            outcome.lost(),
            outcome.slowest(),
            self.metrics.handling.slowest(),
            retry.retries,
            retry.never_ready,
            retry.attempt_timeouts,
            retry.budget_refusals,
            retry.attempts as f64 / retry.requests.max(1) as f64,
            total as f64 / outcome.requests().max(1) as f64,
            per_host.join(", "),
            p2c.ejections,
            queue.failfast_entered,
            queue.failfast_exited,
        );
    }
}

/// One removal of a flapping backend.
#[derive(Debug)]
pub(crate) struct Removal {
    /// The first request id sent after the proxy applied it.
    pub(crate) applied: u64,
    /// The ids of the requests that reached the backend while it was out.
    pub(crate) reached: Vec<u64>,
}

/// What every run must leave, whatever the fault: each request sent ended, with a response or
/// a typed error, within the deadline and its margin; none hung, none lost.
pub(crate) fn assert_every_request_ended(outcome: &Outcome, load: load::Load) {
    let summary = || {
        format!(
            "sent {}, ended {}, hung {}, slowest {:?}",
            outcome.sent,
            outcome.requests(),
            outcome.hung(),
            outcome.slowest()
        )
    };
    assert_eq!(outcome.sent, load.requests(), "{}", summary());
    assert_eq!(outcome.lost(), 0, "requests lost: {}", summary());
    assert_eq!(outcome.hung(), 0, "requests hung: {}", summary());
    assert!(outcome.slowest() < load::REQUEST_BOUND, "{}", summary());
}

/// One scenario at a time in a test binary: the tests of a binary run on threads of one
/// process, and each scenario's load is sized for the machine's two cores to serve one
/// scenario (two stacks, one per protocol), not several.
static ONE_SCENARIO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The nice value the scenarios run at: ahead of whatever else runs at the default 0 (a
/// parallel build, another test suite), by a weight of about 9 to 1 in Linux's scheduler.
const NICE: i32 = -10;

/// Where Linux keeps this process's autogroup and its nice value, with autogroups on (the
/// default on desktops: each session, a terminal, is one group, and the groups share the CPU
/// evenly whatever their threads' nice values).
const AUTOGROUP: &str = "/proc/self/autogroup";

/// While held, the scenario runs ahead of other work on the machine: every thread of this
/// process is at [`NICE`] (threads made later, the backends' and the blocking pool's, inherit
/// it from the thread that makes them), and so is this process's autogroup, given back its
/// nice value on drop. The suite already needs root for its namespaces, and root may raise a
/// priority. Why: a scenario asserts deadlines in real time, and its load is sized for the
/// machine's two cores; what a stack does when it is short of CPU is the starvation test's
/// question (`crates/portcullis/tests/starvation.rs`), not this suite's.
pub(crate) struct AheadOfOtherWork {
    autogroup_nice: Option<i32>,
}

#[allow(unsafe_code)]
fn run_ahead_of_other_work() -> AheadOfOtherWork {
    let tasks =
        std::fs::read_dir("/proc/self/task").expect("/proc/self/task lists this process's threads");
    for task in tasks.flatten() {
        let name = task.file_name();
        let Some(tid) = name.to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else {
            continue;
        };
        // setpriority(2) has no wrapper in the standard library. A thread that ended since
        // the listing (ESRCH) is no matter; anything else is.
        let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICE) };
        let error = std::io::Error::last_os_error();
        assert!(
            set == 0 || error.raw_os_error() == Some(libc::ESRCH),
            "cannot run the scenario at nice {NICE} (needs root): {error}"
        );
    }
    // "/autogroup-29 nice 0"; absent without autogroups, where the threads' nice is enough.
    let autogroup_nice = std::fs::read_to_string(AUTOGROUP).ok().and_then(|group| {
        let nice = group.split_whitespace().last()?.parse().ok()?;
        std::fs::write(AUTOGROUP, NICE.to_string()).unwrap_or_else(|error| {
            panic!("cannot set {AUTOGROUP} to {NICE} (needs root): {error}")
        });
        Some(nice)
    });
    AheadOfOtherWork { autogroup_nice }
}

impl Drop for AheadOfOtherWork {
    fn drop(&mut self) {
        if let Some(nice) = self.autogroup_nice {
            let _ = std::fs::write(AUTOGROUP, nice.to_string());
        }
    }
}

/// Runs `scenario` over both protocols at once, each with a stack of its own, while no other
/// scenario of this test binary runs, ahead of other work on the machine
/// ([`run_ahead_of_other_work`]).
pub(crate) async fn each_protocol<F, Fut>(scenario: F)
where
    F: Fn(Protocol) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let _alone = ONE_SCENARIO.lock().await;
    let _ahead = run_ahead_of_other_work();
    let runs: Vec<_> = PROTOCOLS
        .into_iter()
        .map(|protocol| tokio::spawn(scenario(protocol)))
        .collect();
    let mut failed = None;
    for run in runs {
        if let Err(error) = run.await {
            failed.get_or_insert(error);
        }
    }
    if let Some(error) = failed {
        std::panic::resume_unwind(error.into_panic());
    }
}
