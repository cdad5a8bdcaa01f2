//! [`AddrFile`]: a file of socket addresses, re-read on an interval, as a stream of
//! [`Update`]s.

use crate::pool::Update;
use futures_core::Stream;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Interval, MissedTickBehavior};

/// A file of socket addresses that discovery re-reads on an interval.
///
/// The file holds one [`SocketAddr`] per line (`10.0.0.1:8080`, `[::1]:8080`); surrounding
/// whitespace, blank lines and lines starting with `#` are ignored. [`AddrFile::updates`] makes
/// a stream that reads the file at once and then every `poll_interval`, and yields
/// `Update::Reset(vec![(addr, addr), ..])` (the address is both key and target) whenever the
/// set of addresses differs from the last one it yielded. The first successful read is always
/// yielded, even if it names no address.
///
/// The stream never fails and never ends, so that a bad edit of the file can never stop the
/// pool behind it:
///
/// - a file with a line that is not a socket address is ignored, whole, until it parses: the
///   last set stays in force and the bad lines are logged at warn (once per change of the
///   file's contents, not on every poll). A typo such as a missing port must not take the
///   endpoints it names out of the pool;
/// - a file that is empty or blank, once a set has been read, is taken for a write caught
///   half-way (a truncate before the new contents) and ignored too. To say "no endpoints",
///   leave a comment line in it. Better still, replace the file atomically (write a temporary
///   file, then rename it over this one);
/// - a file that is missing or unreadable (or not UTF-8) keeps the last set in force and is
///   logged at warn once, when it becomes unreadable; it is logged at info when it can be read
///   again, and its new set yielded if it changed.
///
/// The file is read with `std::fs` on the task that polls the stream (the `PoolQueue`
/// worker), which suits the small files this is meant for; the interval is a
/// [`tokio::time::Interval`], created on first poll, so the stream must be polled inside a
/// tokio runtime with time enabled (and paused-time tests can advance it).
///
/// ```
/// use portcullis::discovery::AddrFile;
/// use portcullis::pool::Update;
/// use futures_util::StreamExt;
/// use std::net::SocketAddr;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("portcullis-doc-{}.addrs", std::process::id()));
/// std::fs::write(&path, "# replicas\n10.0.0.1:8080\n\n10.0.0.2:8080\n")?;
///
/// let file = AddrFile::new(&path, Duration::from_secs(5))?;
/// let mut updates = file.updates();
/// let a: SocketAddr = "10.0.0.1:8080".parse()?;
/// let b: SocketAddr = "10.0.0.2:8080".parse()?;
/// assert_eq!(updates.next().await, Some(Ok(Update::Reset(vec![(a, a), (b, b)]))));
///
/// std::fs::write(&path, "10.0.0.2:8080\n")?;
/// // Read again at the next tick (paused time advances to it).
/// assert_eq!(updates.next().await, Some(Ok(Update::Reset(vec![(b, b)]))));
/// # std::fs::remove_file(&path)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrFile {
    path: PathBuf,
    poll_interval: Duration,
}

/// The stream [`AddrFile::updates`] returns.
#[derive(Debug)]
pub struct AddrFileUpdates {
    file: AddrFile,
    /// Created on first poll: a tokio interval needs a runtime, and the stream may be made
    /// outside one (a `PoolQueueLayer` calls its discovery function where it is applied).
    interval: Option<Interval>,
    seen: Seen,
}

/// What the stream last read and yielded.
#[derive(Debug, Default)]
struct Seen {
    /// The last contents read, so an unchanged file is not parsed (nor warned about) again.
    contents: Option<String>,
    /// The last set yielded.
    set: Option<BTreeSet<SocketAddr>>,
    /// Whether the last read failed, so a lasting failure is logged once.
    unreadable: bool,
}

/// An [`AddrFile`] poll interval of zero, which would re-read the file in a busy loop.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ZeroPollInterval;

// === impl AddrFile ===

impl AddrFile {
    /// The file at `path`, to be re-read every `poll_interval`.
    ///
    /// Refuses a zero interval. The file need not exist yet.
    pub fn new(
        path: impl Into<PathBuf>,
        poll_interval: Duration,
    ) -> Result<Self, ZeroPollInterval> {
        if poll_interval.is_zero() {
            return Err(ZeroPollInterval);
        }
        Ok(Self {
            path: path.into(),
            poll_interval,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How often the file is re-read.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// A new discovery stream over the file; see [`AddrFile`].
    pub fn updates(&self) -> AddrFileUpdates {
        AddrFileUpdates {
            file: self.clone(),
            interval: None,
            seen: Seen::default(),
        }
    }
}

// === impl AddrFileUpdates ===

impl AddrFileUpdates {
    /// The file this stream reads.
    pub fn file(&self) -> &AddrFile {
        &self.file
    }
}

impl Stream for AddrFileUpdates {
    type Item = Result<Update<SocketAddr, SocketAddr>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let period = this.file.poll_interval;
        let interval = this.interval.get_or_insert_with(|| {
            let mut interval = tokio::time::interval(period);
            // After a stall, one read brings the set up to date; a burst of catch-up reads
            // would only read the same file again.
            interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
            interval
        });
        loop {
            ready!(interval.poll_tick(cx));
            if let Some(addrs) = this.seen.reload(&this.file.path) {
                let endpoints = addrs.into_iter().map(|addr| (addr, addr)).collect();
                return Poll::Ready(Some(Ok(Update::Reset(endpoints))));
            }
        }
    }
}

// === impl Seen ===

impl Seen {
    /// Reads the file and returns its addresses (in file order, without duplicates) if their
    /// set differs from the last one returned.
    fn reload(&mut self, path: &Path) -> Option<Vec<SocketAddr>> {
        let contents = match std::fs::read_to_string(path) {
            Ok(contents) => contents,
            Err(error) => {
                if !self.unreadable {
                    tracing::warn!(
                        path = %path.display(),
                        %error,
                        "Cannot read address file; keeping the last endpoint set"
                    );
                }
                self.unreadable = true;
                return None;
            }
        };
        if std::mem::take(&mut self.unreadable) {
            tracing::info!(path = %path.display(), "Address file readable again");
        }
        if self.contents.as_deref() == Some(contents.as_str()) {
            return None;
        }
        let blank = contents.trim().is_empty();
        let parsed = parse(path, &contents);
        self.contents = Some(contents);
        let Some(addrs) = parsed else {
            tracing::warn!(
                path = %path.display(),
                "Address file has lines that are not addresses; keeping the last endpoint set"
            );
            return None;
        };
        if blank && self.set.is_some() {
            tracing::warn!(
                path = %path.display(),
                "Address file is empty (a write caught half-way?); keeping the last endpoint set"
            );
            return None;
        }
        let set: BTreeSet<SocketAddr> = addrs.iter().copied().collect();
        if self.set.as_ref() == Some(&set) {
            return None;
        }
        tracing::info!(path = %path.display(), endpoints = set.len(), "Address file changed");
        self.set = Some(set);
        Some(addrs)
    }
}

/// The addresses in `contents`, in order, each once; `None` if any line is not an address
/// (each such line is logged).
fn parse(path: &Path, contents: &str) -> Option<Vec<SocketAddr>> {
    let mut seen = BTreeSet::new();
    let mut addrs = Vec::new();
    let mut bad = false;
    for (index, line) in contents.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<SocketAddr>() {
            Ok(addr) => {
                if seen.insert(addr) {
                    addrs.push(addr);
                }
            }
            Err(error) => {
                bad = true;
                tracing::warn!(
                    path = %path.display(),
                    line = index + 1,
                    text = line,
                    %error,
                    "A line of the address file is not a socket address"
                );
            }
        }
    }
    (!bad).then_some(addrs)
}

// === impl ZeroPollInterval ===

impl fmt::Display for ZeroPollInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the address file poll interval must be greater than zero")
    }
}

impl std::error::Error for ZeroPollInterval {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_comments_blanks_and_duplicates() {
        let addrs = parse(
            Path::new("test"),
            "  # header\n\n 10.0.0.1:80 \n[::1]:443\n10.0.0.1:80\n",
        );
        let expected: Vec<SocketAddr> =
            vec!["10.0.0.1:80".parse().unwrap(), "[::1]:443".parse().unwrap()];
        assert_eq!(addrs, Some(expected));
    }

    #[test]
    fn parse_refuses_a_file_with_any_bad_line() {
        let contents = "10.0.0.1:80\nnot-an-addr\n10.0.0.2\n";
        assert_eq!(parse(Path::new("test"), contents), None);
    }

    #[test]
    fn zero_interval_is_refused() {
        assert_eq!(AddrFile::new("x", Duration::ZERO), Err(ZeroPollInterval));
        assert!(AddrFile::new("x", Duration::from_millis(1)).is_ok());
    }
}
