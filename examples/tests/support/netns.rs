//! Hosts of their own: network namespaces joined to the root namespace by veth pairs, and a
//! backend in each, run as a process would be (a thread that entered the namespace, with a
//! runtime of its own) so that it can be frozen, thawed, killed and restarted.
//!
//! Each backend runs on a thread that enters its namespace with `setns(2)` and then builds a
//! current-thread runtime, so every socket it opens is the namespace's. In process rather
//! than `ip netns exec <helper>`: no extra binary to build and find, the test keeps the
//! backend's counters, and a failing test cannot leave a process behind. Freezing that one
//! thread freezes the whole backend, as SIGSTOP would; ending it drops its runtime and every
//! socket with it, as a killed process's are closed by the kernel.

use portcullis_examples::backend::{Backend, Behavior};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{mpsc as std_mpsc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::mpsc;

/// Addresses per test (a /27): up to 8 hosts, a /30 each.
const BLOCK: u32 = 32;
/// How many tags (one per test and protocol) a process may use at once.
pub(crate) const TAGS: u32 = 32;

/// Runs `ip` with `args`; panics, naming what is needed, when it cannot.
pub(crate) fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "the network-namespace tests need `ip` (iproute2) to make network namespaces, and \
             could not run it: {e}"
        )
    });
    assert!(
        output.status.success(),
        "`ip {}` failed: {}the network-namespace tests make network namespaces and veth \
         pairs: they need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip` (iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// `ip` for cleanup: errors ignored.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// Network namespaces, one per host, each joined to the root namespace by a veth pair with a
/// /30 of its own: `.1` on the root side, `.2` in the namespace. Deleted on drop, also when
/// the test fails.
pub(crate) struct Hosts {
    pub(crate) namespaces: Vec<String>,
    /// The root side of each pair (deleting it deletes its peer).
    root_veths: Vec<String>,
    /// The namespace side of each pair.
    inner_veths: Vec<String>,
    /// Each namespace's address.
    pub(crate) addrs: Vec<Ipv4Addr>,
}

impl Hosts {
    /// `count` namespaces (at most 8) named after `test`; `tag` (below [`TAGS`], one per test
    /// and protocol) and the pid make the names and the addresses unique among tests running
    /// at once.
    pub(crate) fn new(test: &str, tag: u32, count: usize) -> Self {
        assert!(tag < TAGS && count as u32 * 4 <= BLOCK);
        let pid = std::process::id();
        let mut hosts = Self {
            namespaces: Vec::new(),
            root_veths: Vec::new(),
            inner_veths: Vec::new(),
            addrs: Vec::new(),
        };
        let base = free_block(pid, tag);
        for i in 0..count {
            let ns = format!("portcullis-{pid}-{test}-{i}");
            // Interface names have 15 bytes at most: "pc", the pid (6 hex digits at most),
            // the tag (2 digits), the host, the side.
            let root = format!("pc{pid:x}t{tag}h{i}r");
            let inner = format!("pc{pid:x}t{tag}h{i}n");
            let net = u32::from(base) + 4 * i as u32;
            let (root_addr, addr) = (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2));
            ip(&["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            ip(&["link", "add", &root, "type", "veth", "peer", "name", &inner]);
            hosts.root_veths.push(root.clone());
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["addr", "add", &format!("{root_addr}/30"), "dev", &root]);
            ip(&["link", "set", &root, "up"]);
            let inner_addr = format!("{addr}/30");
            ip(&["-n", &ns, "addr", "add", &inner_addr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            // A static neighbour entry: once the link is cut, a new connection's SYN vanishes
            // as an open connection's segments do, rather than failing ARP ("no route to
            // host") after a second.
            let mac = mac_of(&ns, &inner);
            let addr_text = addr.to_string();
            ip(&[
                "neigh",
                "replace",
                &addr_text,
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

    /// Cuts host `i`'s link: its namespace side goes down, so what the root side sends is
    /// dropped without a word. (Down on the root side, its route would go and the packets
    /// would take the default route out of the machine.)
    pub(crate) fn cut(&self, i: usize) {
        let (ns, dev) = (&self.namespaces[i], &self.inner_veths[i]);
        ip(&["-n", ns, "link", "set", dev, "down"]);
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

/// A block of [`BLOCK`] addresses in 10.128.0.0/9 that no interface uses yet, chosen from the
/// pid and the tag.
fn free_block(pid: u32, tag: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0));
    let blocks = (1 << 23) / BLOCK;
    for step in 0..64 {
        let block = (pid.wrapping_mul(TAGS) + tag + step * TAGS * 7_919) % blocks;
        let addr = Ipv4Addr::from(base + block * BLOCK);
        let output = Command::new("ip")
            .args(["-o", "addr", "show", "to", &format!("{addr}/27")])
            .output()
            .unwrap_or_else(|e| panic!("the network-namespace tests need `ip` (iproute2): {e}"));
        if output.status.success() && output.stdout.is_empty() {
            return addr;
        }
    }
    panic!("no free /27 in 10.128.0.0/9 after 64 tries");
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

/// A backend on a host: its process (none while killed), and the backends of the processes
/// it ran before, whose counters still count.
pub(crate) struct Host {
    ns: String,
    /// Where it listens: the same address and port in every life.
    pub(crate) addr: SocketAddr,
    name: String,
    process: Mutex<Option<Process>>,
    dead: Mutex<Vec<Backend>>,
}

impl Host {
    /// Starts backend `name` in namespace `ns`, on a free port of `addr`.
    pub(crate) fn start(ns: &str, addr: Ipv4Addr, name: &str, behavior: Behavior) -> Self {
        let process = Process::start(ns, SocketAddr::from((addr, 0)), name, behavior);
        Self {
            ns: ns.to_string(),
            addr: process.backend.addr,
            name: name.to_string(),
            process: Mutex::new(Some(process)),
            dead: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The running backend; panics if it was killed.
    pub(crate) fn backend(&self) -> BackendGuard<'_> {
        BackendGuard(lock(&self.process))
    }

    /// Requests received by every life of it.
    pub(crate) fn requests(&self) -> u64 {
        let dead: u64 = lock(&self.dead).iter().map(Backend::requests).sum();
        let live = lock(&self.process)
            .as_ref()
            .map_or(0, |p| p.backend.requests());
        dead + live
    }

    /// Freezes it, as SIGSTOP would: the kernel still accepts connections and takes their
    /// bytes; nothing reads or answers them. Returns once it is frozen.
    pub(crate) fn freeze(&self) {
        if let Some(process) = lock(&self.process).as_mut() {
            process.freeze();
        }
    }

    /// Thaws it, as SIGCONT would: it reads and answers what came meanwhile.
    pub(crate) fn thaw(&self) {
        if let Some(process) = lock(&self.process).as_mut() {
            process.thaw.take();
        }
    }

    /// Kills it: its thread ends and its runtime goes, so its listening socket and every
    /// connection close at once (new connections are refused).
    pub(crate) fn kill(&self) {
        let process = lock(&self.process).take();
        if let Some(process) = process {
            let backend = process.end();
            lock(&self.dead).push(backend);
        }
    }

    /// Starts it again on the same address and port, behaving as `behavior`.
    pub(crate) fn restart(&self, behavior: Behavior) {
        self.kill();
        let process = Process::start(&self.ns, self.addr, &self.name, behavior);
        *lock(&self.process) = Some(process);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The running backend of a [`Host`], while its lock is held.
pub(crate) struct BackendGuard<'a>(MutexGuard<'a, Option<Process>>);

impl std::ops::Deref for BackendGuard<'_> {
    type Target = Backend;

    fn deref(&self) -> &Backend {
        &self.0.as_ref().expect("the host's backend runs").backend
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

enum Control {
    /// Blocks the backend's thread (so its whole runtime) until `thaw`'s sender is dropped,
    /// once it has said so on `frozen`.
    Freeze {
        frozen: std_mpsc::Sender<()>,
        thaw: std_mpsc::Receiver<()>,
    },
}

/// One life of a host's backend: a thread in the namespace and its runtime.
struct Process {
    backend: Backend,
    control: mpsc::UnboundedSender<Control>,
    /// Set while frozen: dropping it thaws.
    thaw: Option<std_mpsc::Sender<()>>,
    thread: JoinHandle<()>,
}

impl Process {
    fn start(ns: &str, addr: SocketAddr, name: &str, behavior: Behavior) -> Self {
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
                let _ = ready_tx.send(Backend::start_on(addr, &name, behavior).await);
                while let Some(control) = control_rx.recv().await {
                    match control {
                        Control::Freeze { frozen, thaw } => {
                            let _ = frozen.send(());
                            let _ = thaw.recv();
                        }
                    }
                }
            });
        });
        let backend = ready_rx
            .recv()
            .expect("the backend thread answers")
            .unwrap_or_else(|e| panic!("a backend in its network namespace on {addr}: {e}"));
        Self {
            backend,
            control,
            thaw: None,
            thread,
        }
    }

    fn freeze(&mut self) {
        let (thaw_tx, thaw) = std_mpsc::channel();
        let (frozen, frozen_rx) = std_mpsc::channel();
        self.thaw = Some(thaw_tx);
        let _ = self.control.send(Control::Freeze { frozen, thaw });
        let _ = frozen_rx.recv();
    }

    /// Ends the thread, and with its runtime every socket; the backend is kept for its
    /// counters.
    fn end(self) -> Backend {
        let Self {
            backend,
            control,
            thaw,
            thread,
        } = self;
        // Thawed first: a frozen thread reads its control channel only once it runs again.
        drop(thaw);
        drop(control);
        let _ = thread.join();
        backend
    }
}
