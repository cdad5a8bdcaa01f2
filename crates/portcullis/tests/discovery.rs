//! The discovery adapters: what each yields, when, and when it ends.

use futures_util::stream;
use portcullis::discovery::{from_discover, from_watch, AddrFile};
use portcullis::pool::Update;
use portcullis_test::MockError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
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

#[tokio::test(start_paused = true)]
async fn file_is_read_at_once_then_every_interval_when_changed() {
    let file = TempFile::new("interval");
    file.write("# replicas\n10.0.0.1:80\n\n  10.0.0.2:80  \n");
    let mut updates = task::spawn(AddrFile::new(&file.0, INTERVAL).unwrap().updates());

    let (a, b, c) = (
        addr("10.0.0.1:80"),
        addr("10.0.0.2:80"),
        addr("10.0.0.3:80"),
    );
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(a, a), (b, b)])))
    );
    assert_pending!(updates.poll_next());

    // Not read again before the interval has passed.
    file.write("10.0.0.3:80\n");
    tokio::time::advance(INTERVAL - Duration::from_millis(1)).await;
    assert_pending!(updates.poll_next());

    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(c, c)])))
    );
    assert_pending!(updates.poll_next());
}

#[tokio::test(start_paused = true)]
async fn file_yields_only_when_the_set_changes() {
    let file = TempFile::new("unchanged");
    file.write("10.0.0.1:80\n10.0.0.2:80\n");
    let mut updates = task::spawn(AddrFile::new(&file.0, INTERVAL).unwrap().updates());
    assert_ready!(updates.poll_next());

    // Same contents, then the same set reordered, with a comment and a duplicate: no update.
    tokio::time::advance(INTERVAL).await;
    assert_pending!(updates.poll_next());
    file.write("# reordered\n10.0.0.2:80\n10.0.0.1:80\n10.0.0.2:80\n");
    tokio::time::advance(INTERVAL).await;
    assert_pending!(updates.poll_next());

    // A file of comments only is an empty set.
    file.write("# drained\n");
    tokio::time::advance(INTERVAL).await;
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![])))
    );
}

/// A typo (here a missing port) must not take the endpoints it names out of the pool: a file
/// with a line that is not an address is ignored until it parses.
#[tokio::test(start_paused = true)]
async fn a_file_with_a_bad_line_is_ignored_until_it_parses() {
    let file = TempFile::new("bad-lines");
    file.write("10.0.0.1:80\n10.0.0.2:80\n");
    let mut updates = task::spawn(AddrFile::new(&file.0, INTERVAL).unwrap().updates());
    let (a, b, v6) = (addr("10.0.0.1:80"), addr("10.0.0.2:80"), addr("[::1]:443"));
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(a, a), (b, b)])))
    );

    file.write("10.0.0.1\nnot an address\n[::1]:443\n");
    tokio::time::advance(INTERVAL).await;
    assert_pending!(updates.poll_next(), "the last set stays in force");

    file.write("10.0.0.1:80\n[::1]:443\n");
    tokio::time::advance(INTERVAL).await;
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(a, a), (v6, v6)])))
    );
}

/// A write caught half-way (truncated to nothing) keeps the set; a file of comments only says
/// "no endpoints".
#[tokio::test(start_paused = true)]
async fn an_emptied_file_keeps_the_set_a_commented_one_clears_it() {
    let file = TempFile::new("emptied");
    file.write("10.0.0.1:80\n");
    let mut updates = task::spawn(AddrFile::new(&file.0, INTERVAL).unwrap().updates());
    let a = addr("10.0.0.1:80");
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(a, a)])))
    );

    file.write("");
    tokio::time::advance(INTERVAL).await;
    assert_pending!(updates.poll_next());

    file.write("# no endpoints for now\n");
    tokio::time::advance(INTERVAL).await;
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![])))
    );
}

#[tokio::test(start_paused = true)]
async fn missing_file_keeps_the_last_set_and_is_not_terminal() {
    let file = TempFile::new("missing");
    file.write("10.0.0.1:80\n");
    let mut updates = task::spawn(AddrFile::new(&file.0, INTERVAL).unwrap().updates());
    let (a, b) = (addr("10.0.0.1:80"), addr("10.0.0.2:80"));
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(a, a)])))
    );

    // Gone for several intervals: no update (the last set stays), and no end of stream.
    file.remove();
    for _ in 0..3 {
        tokio::time::advance(INTERVAL).await;
        assert_pending!(updates.poll_next());
    }

    // Back with the same set: still nothing to say.
    file.write("10.0.0.1:80\n");
    tokio::time::advance(INTERVAL).await;
    assert_pending!(updates.poll_next());

    file.remove();
    tokio::time::advance(INTERVAL).await;
    assert_pending!(updates.poll_next());

    // Back with a new set: yielded.
    file.write("10.0.0.2:80\n");
    tokio::time::advance(INTERVAL).await;
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(b, b)])))
    );
}

#[tokio::test(start_paused = true)]
async fn file_missing_at_start_is_read_once_it_appears() {
    let file = TempFile::new("late");
    let mut updates = task::spawn(AddrFile::new(&file.0, INTERVAL).unwrap().updates());
    assert_pending!(updates.poll_next());

    file.write("10.0.0.1:80\n");
    tokio::time::advance(INTERVAL).await;
    let a = addr("10.0.0.1:80");
    assert_eq!(
        assert_ready!(updates.poll_next()),
        Some(Ok(Update::Reset(vec![(a, a)])))
    );
}

#[tokio::test(start_paused = true)]
async fn each_file_stream_starts_afresh() {
    let file = TempFile::new("afresh");
    file.write("10.0.0.1:80\n");
    let addr_file = AddrFile::new(&file.0, INTERVAL).unwrap();
    let a = addr("10.0.0.1:80");
    for _ in 0..2 {
        let mut updates = task::spawn(addr_file.updates());
        assert_eq!(
            assert_ready!(updates.poll_next()),
            Some(Ok(Update::Reset(vec![(a, a)])))
        );
    }
}
