//! The discovery adapters: what each yields, when, and when it ends.

use futures_util::{stream, StreamExt};
use portcullis_discovery::Update;
use portcullis_discovery::{from_discover, from_watch, AddrFile, AddrFileUpdates};
use portcullis_test::MockError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_test::{assert_pending, assert_ready, task};
use tower::discover::Change;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Removes the file when the test ends, passed or not.
struct TempFile(PathBuf);

impl TempFile {
    /// A path unique to this process and call; the file is not created.
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!("portcullis-{name}-{}-{n}.addrs", std::process::id());
        Self(std::env::temp_dir().join(file))
    }

    fn write(&self, contents: &str) {
        std::fs::write(&self.0, contents).unwrap();
    }

    fn remove(&self) {
        std::fs::remove_file(&self.0).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// === from_discover ===

#[tokio::test(start_paused = true)]
async fn discover_changes_become_updates_and_errors_pass_through() {
    let changes = stream::iter(vec![
        Ok(Change::Insert("a", 1)),
        Ok(Change::Insert("b", 2)),
        Ok(Change::Remove("a")),
        Err(MockError("resolver down".into())),
        Ok(Change::Insert("a", 3)),
    ]);
    let mut updates = task::spawn(from_discover(changes));

    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Add(vec![("a", 1)])))
    );
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Add(vec![("b", 2)])))
    );
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Remove(vec!["a"])))
    );
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Err(MockError("resolver down".into())))
    );
    // The adapter does not decide that an error is terminal; its consumer does.
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Add(vec![("a", 3)])))
    );
    assert_eq!(assert_ready!(updates.poll_next()), None);
}

#[tokio::test(start_paused = true)]
async fn discover_pending_is_pending() {
    let changes = stream::pending::<Result<Change<&str, u8>, MockError>>();
    let mut updates = task::spawn(from_discover(changes));
    assert_pending!(updates.poll_next());
}

// === from_watch ===

#[tokio::test(start_paused = true)]
async fn watch_yields_current_set_then_each_change() {
    let (publish, endpoints) = watch::channel(vec![("a", 1)]);
    let mut updates = task::spawn(from_watch(endpoints));

    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![("a", 1)])))
    );
    // Nothing new: nothing yielded, and the stream has not ended.
    assert_pending!(updates.poll_next());

    publish.send(vec![("a", 1), ("b", 2)]).unwrap();
    assert!(updates.is_woken());
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![("a", 1), ("b", 2)])))
    );
    assert_pending!(updates.poll_next());

    // An empty set is a set: every endpoint goes.
    publish.send(vec![]).unwrap();
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![])))
    );
}

#[tokio::test(start_paused = true)]
async fn watch_skips_to_the_latest_set() {
    let (publish, endpoints) = watch::channel(vec![("a", 1)]);
    let mut updates = task::spawn(from_watch(endpoints));
    assert_ready!(updates.poll_next());
    assert_pending!(updates.poll_next());

    publish.send(vec![("b", 2)]).unwrap();
    publish.send(vec![("c", 3)]).unwrap();
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![("c", 3)])))
    );
    assert_pending!(updates.poll_next());
}

#[tokio::test(start_paused = true)]
async fn watch_ends_when_the_sender_is_dropped_after_its_last_set() {
    let (publish, endpoints) = watch::channel(vec![("a", 1)]);
    let mut updates = task::spawn(from_watch(endpoints));
    assert_ready!(updates.poll_next());
    assert_pending!(updates.poll_next());

    publish.send(vec![("b", 2)]).unwrap();
    drop(publish);
    assert!(updates.is_woken());
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![("b", 2)])))
    );
    assert_eq!(assert_ready!(updates.poll_next()), None);
    assert_eq!(assert_ready!(updates.poll_next()), None);
}

#[tokio::test(start_paused = true)]
async fn watch_yields_the_current_set_even_if_the_sender_is_gone() {
    let (publish, endpoints) = watch::channel(vec![("a", 1)]);
    drop(publish);
    let mut updates = task::spawn(from_watch(endpoints));
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![("a", 1)])))
    );
    assert_eq!(assert_ready!(updates.poll_next()), None);
}

#[tokio::test(start_paused = true)]
async fn watch_of_a_hash_map() {
    let (publish, endpoints) = watch::channel(HashMap::from([("a", 1)]));
    let mut updates = task::spawn(from_watch(endpoints));
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![("a", 1)])))
    );

    publish.send_modify(|set| {
        set.insert("b", 2);
    });
    let Some(Ok(Update::Reset(mut set))) = assert_ready!(updates.poll_next()) else {
        panic!("expected a reset");
    };
    set.sort_unstable();
    assert_eq!(set, vec![("a", 1), ("b", 2)]);
}

// === AddrFile ===

const INTERVAL: Duration = Duration::from_secs(5);

/// An address file's stream, and how long until its next read, so that each
/// [`Reads::next`] waits for exactly one read.
///
/// The reads happen on tokio's blocking pool; paused time does not auto-advance while one is
/// in flight, so a read that starts at a tick yields (or not) at that tick. Each wait ends
/// half an interval after the read it waits for, never on a tick.
struct Reads {
    updates: AddrFileUpdates,
    until_next: Duration,
}

impl Reads {
    fn new(file: &TempFile) -> Self {
        Self {
            updates: AddrFile::new(&file.0, INTERVAL).unwrap().updates(),
            // The first read is at once.
            until_next: Duration::ZERO,
        }
    }

    /// What the next read yields, if anything.
    async fn next(&mut self) -> Option<Update<SocketAddr, SocketAddr>> {
        match timeout(self.until_next + INTERVAL / 2, self.updates.next()).await {
            Ok(Some(Ok(update))) => {
                self.until_next = INTERVAL;
                Some(update)
            }
            Ok(Some(Err(never))) => match never {},
            Ok(None) => panic!("the address file stream ended"),
            Err(_) => {
                self.until_next = INTERVAL / 2;
                None
            }
        }
    }
}

fn reset(addrs: &[SocketAddr]) -> Option<Update<SocketAddr, SocketAddr>> {
    Some(Update::Reset(addrs.iter().map(|&a| (a, a)).collect()))
}

#[tokio::test(start_paused = true)]
async fn file_is_read_at_once_then_every_interval_when_changed() {
    let file = TempFile::new("interval");
    file.write("# replicas\n10.0.0.1:80\n\n  10.0.0.2:80  \n# end\n");
    let mut reads = Reads::new(&file);
    let (a, b, c) = (
        addr("10.0.0.1:80"),
        addr("10.0.0.2:80"),
        addr("10.0.0.3:80"),
    );
    let start = Instant::now();
    assert_eq!(reads.next().await, reset(&[a, b]));
    assert_eq!(start.elapsed(), Duration::ZERO, "read at once");

    file.write("10.0.0.3:80\n# end\n");
    assert_eq!(reads.next().await, reset(&[c]));
    assert_eq!(
        start.elapsed(),
        INTERVAL,
        "read again an interval later, not before"
    );
    assert_eq!(reads.next().await, None, "unchanged: nothing to say");
}

#[tokio::test(start_paused = true)]
async fn file_yields_only_when_the_set_changes() {
    let file = TempFile::new("unchanged");
    file.write("10.0.0.1:80\n10.0.0.2:80\n# end\n");
    let mut reads = Reads::new(&file);
    assert!(reads.next().await.is_some());

    // Same contents, then the same set reordered, with a comment and a duplicate: no update.
    assert_eq!(reads.next().await, None);
    file.write("# reordered\n10.0.0.2:80\n10.0.0.1:80\n10.0.0.2:80\n# end\n");
    assert_eq!(reads.next().await, None);

    // A file of comments and its end line only is an empty set.
    file.write("# drained\n# end\n");
    assert_eq!(reads.next().await, reset(&[]));
}

/// A typo (here a missing port) must not take the endpoints it names out of the pool: a file
/// with a line that is not an address is ignored until it parses.
#[tokio::test(start_paused = true)]
async fn a_file_with_a_bad_line_is_ignored_until_it_parses() {
    let file = TempFile::new("bad-lines");
    file.write("10.0.0.1:80\n10.0.0.2:80\n# end\n");
    let mut reads = Reads::new(&file);
    let (a, b, v6) = (addr("10.0.0.1:80"), addr("10.0.0.2:80"), addr("[::1]:443"));
    assert_eq!(reads.next().await, reset(&[a, b]));

    file.write("10.0.0.1\nnot an address\n[::1]:443\n# end\n");
    assert_eq!(reads.next().await, None, "the last set stays in force");

    file.write("10.0.0.1:80\n[::1]:443\n# end\n");
    assert_eq!(reads.next().await, reset(&[a, v6]));
}

/// A rewrite caught at its start: `# replicas\n` has no end line, so it is not the empty set
/// it would otherwise name.
#[tokio::test(start_paused = true)]
async fn a_file_caught_as_its_first_comment_line_keeps_the_last_set() {
    let file = TempFile::new("caught-comment");
    file.write("# replicas\n10.0.0.1:8080\n# end\n");
    let mut reads = Reads::new(&file);
    let (a, b) = (addr("10.0.0.1:8080"), addr("10.0.0.2:8080"));
    assert_eq!(reads.next().await, reset(&[a]));

    file.write("# replicas\n");
    assert_eq!(reads.next().await, None, "the last set stays in force");
    // A writer stuck there for longer than an interval is warned about, still not applied.
    assert_eq!(reads.next().await, None);

    file.write("# replicas\n10.0.0.2:8080\n# end\n");
    assert_eq!(reads.next().await, reset(&[b]), "the whole rewrite applies");
}

/// A rewrite caught inside an address: `10.0.0.2:80` is the start of `10.0.0.2:8080`, a valid
/// address but the wrong one; so is every later prefix of the rewrite until its end line.
#[tokio::test(start_paused = true)]
async fn a_file_caught_as_an_address_cut_short_is_not_applied() {
    let file = TempFile::new("caught-address");
    file.write("10.0.0.1:8080\n# end\n");
    let mut reads = Reads::new(&file);
    let (a, b) = (addr("10.0.0.1:8080"), addr("10.0.0.2:8080"));
    assert_eq!(reads.next().await, reset(&[a]));

    for caught in ["10.0.0.2:80", "10.0.0.2:8080\n", "10.0.0.2:8080\n# end"] {
        file.write(caught);
        assert_eq!(reads.next().await, None, "{caught:?} applied");
    }

    file.write("10.0.0.2:8080\n# end\n");
    assert_eq!(reads.next().await, reset(&[b]), "the whole rewrite applies");
}

/// The first read obeys the same rule: a file caught half-way at start yields nothing (not an
/// empty set), and the pool gets its first set from the whole file.
#[tokio::test(start_paused = true)]
async fn a_file_incomplete_at_start_yields_nothing_until_whole() {
    let file = TempFile::new("incomplete-at-start");
    file.write("# replicas\n10.0.0.1:80\n");
    let mut reads = Reads::new(&file);
    assert_eq!(reads.next().await, None);

    file.write("# replicas\n10.0.0.1:80\n# end\n");
    let a = addr("10.0.0.1:80");
    assert_eq!(reads.next().await, reset(&[a]));
}

/// A read that got an old file whole and then the tail of its replacement (an in-place rewrite
/// racing the read) holds two end lines; an end line before addresses is no end.
#[tokio::test(start_paused = true)]
async fn a_file_with_more_after_its_end_line_is_not_applied() {
    let file = TempFile::new("end-not-last");
    file.write("10.0.0.1:80\n# end\n");
    let mut reads = Reads::new(&file);
    let a = addr("10.0.0.1:80");
    assert_eq!(reads.next().await, reset(&[a]));

    file.write("10.0.0.1:80\n# end\n10.0.0.2:80\n# end\n");
    assert_eq!(reads.next().await, None);
    file.write("# end\n10.0.0.2:80\n");
    assert_eq!(reads.next().await, None);
}

/// Removing every endpoint on purpose is a file with its end line and no address; an emptied
/// file, or one of comments only, has no end line and keeps the set.
#[tokio::test(start_paused = true)]
async fn an_end_line_alone_clears_the_set_an_emptied_file_keeps_it() {
    let file = TempFile::new("emptied");
    file.write("10.0.0.1:80\n# end\n");
    let mut reads = Reads::new(&file);
    let a = addr("10.0.0.1:80");
    assert_eq!(reads.next().await, reset(&[a]));

    file.write("");
    assert_eq!(reads.next().await, None);
    file.write("# no endpoints for now\n");
    assert_eq!(reads.next().await, None);

    file.write("# no endpoints for now\n# end\n");
    assert_eq!(reads.next().await, reset(&[]));
}

#[tokio::test(start_paused = true)]
async fn missing_file_keeps_the_last_set_and_is_not_terminal() {
    let file = TempFile::new("missing");
    file.write("10.0.0.1:80\n# end\n");
    let mut reads = Reads::new(&file);
    let (a, b) = (addr("10.0.0.1:80"), addr("10.0.0.2:80"));
    assert_eq!(reads.next().await, reset(&[a]));

    // Gone for several intervals: no update (the last set stays), and no end of stream.
    file.remove();
    for _ in 0..3 {
        assert_eq!(reads.next().await, None);
    }

    // Back with the same set: still nothing to say.
    file.write("10.0.0.1:80\n# end\n");
    assert_eq!(reads.next().await, None);

    file.remove();
    assert_eq!(reads.next().await, None);

    // Back with a new set: yielded.
    file.write("10.0.0.2:80\n# end\n");
    assert_eq!(reads.next().await, reset(&[b]));
}

#[tokio::test(start_paused = true)]
async fn file_missing_at_start_is_read_once_it_appears() {
    let file = TempFile::new("late");
    let mut reads = Reads::new(&file);
    assert_eq!(reads.next().await, None);

    file.write("10.0.0.1:80\n# end\n");
    let a = addr("10.0.0.1:80");
    assert_eq!(reads.next().await, reset(&[a]));
}

#[tokio::test(start_paused = true)]
async fn each_file_stream_starts_afresh() {
    let file = TempFile::new("afresh");
    file.write("10.0.0.1:80\n# end\n");
    let a = addr("10.0.0.1:80");
    for _ in 0..2 {
        let mut reads = Reads::new(&file);
        assert_eq!(reads.next().await, reset(&[a]));
    }
}

/// The stream's poll does no file I/O: it hands each read to tokio's blocking pool. Opening a
/// FIFO that has no writer blocks; a poll that opened the file itself would hang the only
/// thread of the current-thread runtime polling it, instead of returning `Pending`.
#[cfg(unix)]
#[test]
fn polling_the_file_stream_does_no_file_io() {
    const BOUND: Duration = Duration::from_secs(10);
    let fifo = TempFile::new("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo.0)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}: {made}", fifo.0.display());

    let path = fifo.0.clone();
    let (polled, first_poll) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let update = runtime.block_on(async {
            let mut updates = task::spawn(AddrFile::new(&path, INTERVAL).unwrap().updates());
            assert_pending!(
                updates.poll_next(),
                "no writer yet: the read is still waiting"
            );
            polled.send(()).unwrap();
            timeout(BOUND, updates.next()).await
        });
        // Whatever the next tick would start must not hold the test up.
        runtime.shutdown_background();
        update
    });

    first_poll
        .recv_timeout(BOUND)
        .expect("the stream's first poll returns while the file cannot be read yet");
    // Be the writer the read on the blocking pool is waiting for.
    std::fs::write(&fifo.0, "10.0.0.1:80\n# end\n").unwrap();
    let a = addr("10.0.0.1:80");
    let update = reader.join().unwrap().expect("the read ends once written");
    assert_eq!(update, Some(Ok(Update::Reset(vec![(a, a)]))));
}

/// The address file counts as the other sources do: each read that returned the file, each
/// failure it logs at warn (a failed read, every time; a file with a bad line or still
/// incomplete an interval later, once), and each set it yields.
#[tokio::test(start_paused = true)]
async fn an_address_file_counts_its_reads_failures_and_updates() {
    let file = TempFile::new("metrics");
    let mut reads = Reads::new(&file);
    let metrics = reads.updates.metrics();
    let counts = || {
        let s = metrics.snapshot();
        (s.reads, s.errors, s.updates.reset, s.endpoints)
    };
    assert_eq!(metrics.snapshot().since_last_change, None);

    file.write("10.0.0.1:80\n10.0.0.2:80\n# end\n");
    assert!(reads.next().await.is_some());
    assert_eq!(counts(), (1, 0, 1, 2));
    assert!(metrics.snapshot().since_last_change.is_some());

    // A bad line: one failure, not one per read of the same contents.
    file.write("10.0.0.1\n# end\n");
    assert_eq!(reads.next().await, None);
    assert_eq!(reads.next().await, None);
    assert_eq!(counts(), (3, 1, 1, 2));

    // Unreadable: every failed read counts.
    file.remove();
    assert_eq!(reads.next().await, None);
    assert_eq!(reads.next().await, None);
    assert_eq!(counts(), (3, 3, 1, 2));

    // Incomplete: a write caught half-way is no failure; the same contents an interval later
    // are, once.
    file.write("10.0.0.3:80\n");
    for _ in 0..3 {
        assert_eq!(reads.next().await, None);
    }
    assert_eq!(counts(), (6, 4, 1, 2));

    file.write("10.0.0.3:80\n# end\n");
    assert_eq!(reads.next().await, reset(&[addr("10.0.0.3:80")]));
    assert_eq!(counts(), (7, 4, 2, 1));
    assert_eq!(metrics.snapshot().updates.total(), 2);
}
