//! Faults on real hosts: the `http_proxy` example's stack (`Retry` → `PoolQueue` → `P2cPool`
//! with outlier ejection) in the root network namespace, in front of three hyper backends,
//! each a host of its own in a network namespace this test creates, reached over a veth pair.
//! One fault per test, 16 callers for 4 s: a cut link (packets vanish, no RST), a killed
//! backend (refused), a frozen one (SIGSTOP-like: the kernel accepts, nothing answers).
//!
//! What is asserted is what must hold whatever the timing: every request ends, with a response
//! or a typed error, within the proxy's deadline plus a margin (a per-request timeout above it
//! finds a hang), and none is lost. The counts are printed.
//!
//! Needs root and `ip` (iproute2): without them the tests fail and say so.
//!
//! Each backend runs on a thread of its own that enters its namespace with `setns(2)` and then
//! builds a current-thread runtime, so every socket it opens is the namespace's. In process
//! rather than `ip netns exec <helper>`: no extra binary to build and find, the test keeps the
//! backend's counters and its `stop`, and a failing test cannot leave a process behind. Freezing
//! that one thread freezes the whole backend, as SIGSTOP would.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_examples::{
    backend::{Backend, Behavior},
    endpoint::HttpClient,
    proxy::{write_backends_file, Proxy, ProxyConfig, ProxyMetrics},
};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const CALLERS: usize = 16;
const BACKENDS: usize = 3;
/// How long the callers send; the fault comes `FAULT_AFTER` into it, with every backend warm.
const RUN: Duration = Duration::from_secs(4);
const FAULT_AFTER: Duration = Duration::from_secs(1);
/// The proxy's per-attempt timeout and its deadline for a whole request.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
const DEADLINE: Duration = Duration::from_secs(1);
/// A request not ended by then is hung: the deadline plus a margin for a loaded machine.
const REQUEST_BOUND: Duration = Duration::from_millis(1_500);
/// A bound on the whole run: far above what it takes, so only a hang reaches it.
const RUN_BOUND: Duration = Duration::from_secs(60);

fn healthy() -> Behavior {
    Behavior {
        delay: Duration::from_millis(1),
        unavailable_until: None,
        ..Behavior::default()
    }
}

/// Runs `ip` with `args`; panics, naming what is needed, when it cannot.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "netns_faults needs `ip` (iproute2) to make network namespaces, and could not run \
             it: {e}"
        )
    });
    assert!(
        output.status.success(),
        "`ip {}` failed: {}netns_faults makes network namespaces and veth pairs: it needs root \
         (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip` (iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// `ip` for cleanup: errors ignored.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// Network namespaces, one per backend, each joined to the root namespace by a veth pair with
/// a /30 of its own: `.1` on the root side, `.2` in the namespace. Deleted on drop, also when
/// the test fails.
struct Hosts {
    namespaces: Vec<String>,
    /// The root side of each pair (deleting it deletes its peer).
    root_veths: Vec<String>,
    /// The namespace side of each pair.
    inner_veths: Vec<String>,
    /// Each namespace's address.
    addrs: Vec<Ipv4Addr>,
}

impl Hosts {
    /// `test` names the namespaces; `tag` (0–9, one per test) and the pid make the names and
    /// the addresses unique among tests running at once.
    fn new(test: &str, tag: u32) -> Self {
        let pid = std::process::id();
        let mut hosts = Self {
            namespaces: Vec::new(),
            root_veths: Vec::new(),
            inner_veths: Vec::new(),
            addrs: Vec::new(),
        };
        let base = free_block(pid, tag);
        for i in 0..BACKENDS {
            let ns = format!("portcullis-{pid}-{test}-{i}");
            let root = format!("pc{pid:x}{tag}{i}r");
            let inner = format!("pc{pid:x}{tag}{i}n");
            let net = u32::from(base) + 4 * i as u32;
            let (root_addr, addr) = (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2));
            ip(&["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            ip(&["link", "add", &root, "type", "veth", "peer", "name", &inner]);
            hosts.root_veths.push(root.clone());
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["addr", "add", &format!("{root_addr}/30"), "dev", &root]);
            ip(&["link", "set", &root, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            // A static neighbour entry: once the link is cut, a new connection's SYN vanishes
            // as an open connection's segments do, rather than failing ARP ("no route to
            // host") after a second.
            let mac = mac_of(&ns, &inner);
            ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac,
                "dev",
                &root,
                "nud",
                "permanent",
            ]);
            hosts.inner_veths.push(inner);
            hosts.addrs.push(addr);
        }
        hosts
    }

    /// Cuts backend `i`'s link: its namespace side goes down, so what the root side sends is
    /// dropped without a word. (Down on the root side, its route would go and the packets
    /// would take the default route out of the machine.)
    fn cut(&self, i: usize) {
        ip(&[
            "-n",
            &self.namespaces[i],
            "link",
            "set",
            &self.inner_veths[i],
            "down",
        ]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for veth in &self.root_veths {
            ip_quiet(&["link", "del", veth]);
        }
        for ns in &self.namespaces {
            ip_quiet(&["netns", "del", ns]);
        }
    }
}

/// The MAC address of `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> String {
    let path = format!("/sys/class/net/{dev}/address");
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &path])
        .output()
        .expect("`ip netns exec` runs");
    assert!(output.status.success(), "could not read {path} in {ns}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A block of 16 addresses in 10.128.0.0/9 (three /30s) that no interface uses yet, chosen
/// from the pid and the test's tag.
fn free_block(pid: u32, tag: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0));
    let blocks = 1 << 19;
    for step in 0..64 {
        let block = (pid.wrapping_mul(16) + tag + step * 10) % blocks;
        let addr = Ipv4Addr::from(base + block * 16);
        let output = Command::new("ip")
            .args(["-o", "addr", "show", "to", &format!("{addr}/28")])
            .output()
            .unwrap_or_else(|e| panic!("netns_faults needs `ip` (iproute2): {e}"));
        if output.status.success() && output.stdout.is_empty() {
            return addr;
        }
    }
    panic!("no free /28 in 10.128.0.0/9 after 64 tries");
}

/// Moves the calling thread (only it) into network namespace `ns`.
// The one unsafe call: setns(2) has no wrapper in the standard library.
#[allow(unsafe_code)]
fn enter_namespace(ns: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: `file` is open for the whole call, and CLONE_NEWNET changes only the calling
    // thread's network namespace, which no other code of this thread depends on yet.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

enum Control {
    /// Blocks the backend's thread (so its whole runtime) until the sender is dropped.
    Freeze(std_mpsc::Receiver<()>),
}

/// A backend serving from inside a namespace, on a thread of its own.
struct Host {
    backend: Backend,
    control: Option<mpsc::UnboundedSender<Control>>,
    thaw: Option<std_mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    /// Starts backend `name` in namespace `ns`, listening on `addr`.
    fn start(ns: &str, addr: Ipv4Addr, name: &str) -> Self {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (control, mut control_rx) = mpsc::unbounded_channel();
        let (ns, name) = (ns.to_string(), name.to_string());
        let thread = std::thread::spawn(move || {
            let started = (|| {
                enter_namespace(&ns)?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })();
            let runtime = match started {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let backend =
                    Backend::start_on(SocketAddr::from((addr, 0)), &name, healthy()).await;
                let _ = ready_tx.send(backend);
                while let Some(control) = control_rx.recv().await {
                    match control {
                        Control::Freeze(thaw) => {
                            let _ = thaw.recv();
                        }
                    }
                }
            });
        });
        let backend = ready_rx
            .recv()
            .expect("the backend thread answers")
            .unwrap_or_else(|e| panic!("a backend in its network namespace: {e}"));
        Self {
            backend,
            control: Some(control),
            thaw: None,
            thread: Some(thread),
        }
    }

    /// Freezes it, as SIGSTOP would: the kernel still accepts connections and takes their
    /// bytes; nothing reads or answers them.
    fn freeze(&mut self) {
        let (thaw, frozen) = std_mpsc::channel();
        self.thaw = Some(thaw);
        let _ = self.control.as_ref().unwrap().send(Control::Freeze(frozen));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.thaw.take();
        self.control.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A temp file of backend addresses, removed on drop.
struct AddrsFile(PathBuf);

impl AddrsFile {
    fn new(name: &str, hosts: &[Host]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "portcullis-netns-faults-{}-{name}.addrs",
            std::process::id()
        ));
        write_backends_file(
            &path,
            hosts
                .iter()
                .map(|h| (h.backend.name.as_str(), h.backend.addr)),
        )
        .unwrap();
        Self(path)
    }
}

impl Drop for AddrsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Three hosts, the proxy in front of them and its metrics. Bound in this order, they drop in
/// the reverse: the backends' threads end before their namespaces go.
async fn setup(
    test: &str,
    tag: u32,
) -> (Arc<Hosts>, Vec<Host>, AddrsFile, SocketAddr, ProxyMetrics) {
    let net = Hosts::new(test, tag);
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| Host::start(&net.namespaces[i], net.addrs[i], name))
        .collect();
    let file = AddrsFile::new(test, &hosts);
    let mut config = ProxyConfig::new(&file.0);
    config.attempt_timeout = ATTEMPT_TIMEOUT;
    config.deadline = DEADLINE;
    let proxy = Proxy::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .unwrap();
    let addr = proxy.local_addr().unwrap();
    let metrics = proxy.metrics().clone();
    tokio::spawn(proxy.run());
    (Arc::new(net), hosts, file, addr, metrics)
}

/// What became of the run's requests.
#[derive(Debug, Default)]
struct Outcome {
    requests: usize,
    ok: usize,
    /// Ended with an error status from the proxy (502, 503, 504) or a client error.
    failed: usize,
    /// Not ended within `REQUEST_BOUND`.
    hung: usize,
    /// Sent and never counted as ended (a caller that died midway).
    lost: usize,
    /// The slowest request that ended.
    slowest: Duration,
}

/// `CALLERS` callers at once for `RUN`, each sending its next request when the last ended;
/// `fault` runs once, `FAULT_AFTER` into the run.
async fn run(proxy: SocketAddr, fault: impl FnOnce() + Send + 'static) -> Outcome {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let fault = Arc::new(Mutex::new(Some(fault)));
    let start = Instant::now();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, next, sent, fault, outcome) = (
                client.clone(),
                next.clone(),
                sent.clone(),
                fault.clone(),
                outcome.clone(),
            );
            tokio::spawn(async move {
                while start.elapsed() < RUN {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if start.elapsed() >= FAULT_AFTER {
                        let fault = fault.lock().unwrap().take();
                        if let Some(fault) = fault {
                            // `ip` blocks: off the runtime's workers.
                            tokio::task::spawn_blocking(fault).await.unwrap();
                        }
                    }
                    let started = Instant::now();
                    let request = Request::get(format!("http://{proxy}/work/{i}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    let ended = timeout(REQUEST_BOUND, async {
                        match client.request(request).await {
                            Ok(response) => {
                                let status = response.status();
                                let body = response.into_body().collect().await;
                                status == StatusCode::OK && body.is_ok()
                            }
                            Err(_) => false,
                        }
                    })
                    .await;
                    let mut outcome = outcome.lock().unwrap();
                    outcome.requests += 1;
                    match ended {
                        Ok(true) => outcome.ok += 1,
                        Ok(false) => outcome.failed += 1,
                        Err(_) => outcome.hung += 1,
                    }
                    if ended.is_ok() {
                        outcome.slowest = outcome.slowest.max(started.elapsed());
                    }
                }
            })
        })
        .collect();
    timeout(RUN_BOUND, async {
        for caller in callers {
            caller.await.unwrap();
        }
    })
    .await
    .expect("the run ended within its bound");
    let mut outcome = Arc::try_unwrap(outcome).unwrap().into_inner().unwrap();
    outcome.lost = sent.load(Ordering::Relaxed) - outcome.requests;
    outcome
}

fn report(fault: &str, outcome: &Outcome, hosts: &[Host], metrics: &ProxyMetrics) {
    let p2c = metrics.p2c.snapshot();
    let retry = metrics.retry.snapshot();
    eprintln!(
        "{fault}: requests {}, ok {}, failed {}, hung {}, lost {}, slowest {:?}; \
         calls a/b/c {}/{}/{}; ejections {}; retries {}; attempt timeouts {}",
        outcome.requests,
        outcome.ok,
        outcome.failed,
        outcome.hung,
        outcome.lost,
        outcome.slowest,
        hosts[0].backend.requests(),
        hosts[1].backend.requests(),
        hosts[2].backend.requests(),
        p2c.ejections,
        retry.retries,
        retry.attempt_timeouts,
    );
}

/// What every fault must leave: each request ended, with a response or a typed error, within
/// the deadline and its margin.
fn assert_every_request_ended(outcome: &Outcome) {
    assert!(outcome.requests > 500, "{outcome:?}");
    assert_eq!(outcome.hung, 0, "requests hung: {outcome:?}");
    assert_eq!(outcome.lost, 0, "requests lost: {outcome:?}");
    assert!(outcome.slowest < REQUEST_BOUND, "{outcome:?}");
}

/// The fault took: backend `a`, faulted a quarter into the run, served under half as many
/// calls as each of the others.
fn assert_a_was_faulted(hosts: &[Host]) {
    let calls: Vec<u64> = hosts.iter().map(|h| h.backend.requests()).collect();
    assert!(
        calls[0] * 2 < calls[1] && calls[0] * 2 < calls[2],
        "calls a/b/c {calls:?}"
    );
}

/// The fault was silent: at least one attempt waited out its timeout.
fn assert_an_attempt_waited_out_its_timeout(metrics: &ProxyMetrics) {
    let timeouts = metrics.retry.snapshot().attempt_timeouts;
    assert!(timeouts >= 1, "{timeouts} attempt timeouts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_hangs_no_request() {
    let (net, hosts, _file, proxy, metrics) = setup("cut", 0).await;
    let cut = net.clone();
    let outcome = run(proxy, move || cut.cut(0)).await;
    report("cut link", &outcome, &hosts, &metrics);
    assert_every_request_ended(&outcome);
    assert_a_was_faulted(&hosts);
    assert_an_attempt_waited_out_its_timeout(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_hangs_no_request() {
    let (_net, hosts, _file, proxy, metrics) = setup("killed", 1).await;
    let hosts = Arc::new(hosts);
    let killed = hosts.clone();
    let outcome = run(proxy, move || killed[0].backend.stop()).await;
    report("killed backend", &outcome, &hosts, &metrics);
    assert_every_request_ended(&outcome);
    assert_a_was_faulted(&hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_hangs_no_request() {
    let (_net, hosts, _file, proxy, metrics) = setup("frozen", 2).await;
    let hosts = Arc::new(Mutex::new(hosts));
    let frozen = hosts.clone();
    let outcome = run(proxy, move || frozen.lock().unwrap()[0].freeze()).await;
    let hosts = hosts.lock().unwrap();
    report("frozen backend", &outcome, &hosts, &metrics);
    assert_every_request_ended(&outcome);
    assert_a_was_faulted(&hosts);
    assert_an_attempt_waited_out_its_timeout(&metrics);
}
