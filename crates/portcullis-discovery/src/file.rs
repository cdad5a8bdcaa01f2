//! [`AddrFile`]: a file of socket addresses, re-read on an interval, as a stream of
//! [`Update`]s.

use crate::{BuildError, DiscoveryMetrics};
use futures_core::Stream;
use portcullis_pool::Update;
use portcullis_pool::UpdateKind;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};

/// A file of socket addresses that discovery re-reads on an interval.
///
/// The file holds one [`SocketAddr`] per line (`10.0.0.1:8080`, `[::1]:8080`) and ends with
/// the line `# end` ([`AddrFile::END_LINE`]); surrounding whitespace, blank lines and other
/// lines starting with `#` are ignored:
///
/// ```text
/// # replicas
/// 10.0.0.1:8080
/// 10.0.0.2:8080
/// # end
/// ```
///
/// [`AddrFile::updates`] makes a stream that reads the file at once and then every
/// `poll_interval`, and yields `Update::Reset(vec![(addr, addr), ..])` (the address is both
/// key and target) whenever a complete file names a set of addresses that differs from the
/// last one it yielded. The first complete file read is always yielded, even if it names no
/// address.
///
/// # What a writer must do
///
/// End the file with the line `# end`, followed by a newline, and put that line nowhere else.
/// A file is *complete*, and only then applied, when its `# end` line is there once, is ended
/// by a newline, and has nothing but blank space after it. A read that catches a write
/// half-way sees a prefix of what is being written, and no proper prefix of a complete file
/// is complete with other addresses: it stops before the end line or inside it (`# en`, or
/// `# end` without its newline). So the start of a rewrite (`# replicas\n`) and an address
/// cut short (`10.0.0.2:80`, the start of `10.0.0.2:8080`) are never applied: the last set
/// stays in force until a read sees the whole file. This holds for a writer that rewrites the
/// file in place (truncate then write, as `std::fs::write` and a shell's `>` do) and for one
/// that appends line by line, `# end` last. A read that got an old file whole and then the
/// tail of its replacement holds two end lines, and is refused too.
///
/// Replacing the file atomically is still the better way to write it: write a temporary file
/// in the same directory, then rename it over this one. A read then only ever sees a whole
/// file, old or new, whatever the file system does with reads that race a write.
///
/// # No endpoints
///
/// To remove every endpoint on purpose, write a file whose only address-or-end line is
/// `# end` (comments may come before it). An empty file, or one of comments only, has no end
/// line: like any write caught half-way it keeps the last set.
///
/// # What keeps the last set
///
/// The stream never fails and never ends, so that a bad edit of the file can never stop the
/// pool behind it. In each of these cases the last set stays in force:
///
/// - an incomplete file (above). One read of it is logged at debug only, since a writer in
///   the middle of a rewrite is no fault; if the same contents are read again an interval
///   later, they are logged at warn, once (a forgotten end line shows up after one
///   interval);
/// - a complete file with a line that is not a socket address is ignored, whole, until it
///   parses, and the bad lines are logged at warn (once per change of the file's contents,
///   not on every poll). A typo such as a missing port must not take the endpoints it names
///   out of the pool;
/// - a file that is missing or unreadable (or not UTF-8) is logged at warn once, when it
///   becomes unreadable; it is logged at info when it can be read again, and its new set
///   yielded if it changed.
///
/// # Reading without blocking
///
/// The stream does no file I/O in `poll_next`: at each tick it hands the read to tokio's
/// blocking pool ([`tokio::task::spawn_blocking`]) and is woken when the read is done, so the
/// task that polls it (the `PoolQueue` worker) never waits on the file system, on a
/// current-thread runtime as on a multi-thread one. A read that hangs (a stuck network file
/// system) only delays the next read; the last set stays in force meanwhile. The interval is
/// a [`tokio::time::Interval`], created on first poll, so the stream must be polled inside a
/// tokio runtime with time enabled. Paused-time tests work: on a current-thread runtime tokio
/// does not auto-advance paused time while a blocking task is in flight, so a read that
/// starts at a tick ends at that tick.
///
/// ```
/// use portcullis_discovery::AddrFile;
/// use portcullis_discovery::Update;
/// use futures_util::StreamExt;
/// use std::net::SocketAddr;
/// use std::time::Duration;
///
/// /// Replaces the file whole: a temporary file in the same directory, renamed over it.
/// fn replace(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
///     let temporary = path.with_extension("addrs.tmp");
///     std::fs::write(&temporary, contents)?;
///     std::fs::rename(&temporary, path)
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("portcullis-doc-{}.addrs", std::process::id()));
/// replace(&path, "# replicas\n10.0.0.1:8080\n\n10.0.0.2:8080\n# end\n")?;
///
/// let file = AddrFile::new(&path, Duration::from_secs(5))?;
/// let mut updates = file.updates();
/// let a: SocketAddr = "10.0.0.1:8080".parse()?;
/// let b: SocketAddr = "10.0.0.2:8080".parse()?;
/// assert_eq!(updates.next().await, Some(Ok(Update::Reset(vec![(a, a), (b, b)]))));
///
/// replace(&path, "10.0.0.2:8080\n# end\n")?;
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
    /// The read in flight on the blocking pool, if any.
    read: Option<JoinHandle<io::Result<String>>>,
    seen: Seen,
    metrics: DiscoveryMetrics,
}

/// What the stream last read and yielded.
#[derive(Debug, Default)]
struct Seen {
    /// The last contents read, so an unchanged file is not parsed (nor warned about) again.
    contents: Option<String>,
    /// Why `contents` were incomplete, while not yet warned about: a second read of the same
    /// incomplete contents is no longer a write caught half-way.
    incomplete_unwarned: Option<Incomplete>,
    /// The last set yielded.
    set: Option<BTreeSet<SocketAddr>>,
    /// Whether the last read failed, so a lasting failure is logged once.
    unreadable: bool,
}

/// Why a file's contents are not complete (see [`AddrFile`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Incomplete {
    /// No end line, or one not yet ended by its newline.
    NoEndLine,
    /// Something other than blank space after the end line (a second one, say).
    EndLineNotLast,
}

// === impl AddrFile ===

impl AddrFile {
    /// The line that ends a complete address file (surrounding whitespace allowed); see
    /// [`AddrFile`].
    pub const END_LINE: &'static str = "# end";

    /// The file at `path`, to be re-read every `poll_interval`.
    ///
    /// Refuses a zero interval ([`BuildError::ZeroPollInterval`]). The file need not exist
    /// yet.
    pub fn new(path: impl Into<PathBuf>, poll_interval: Duration) -> Result<Self, BuildError> {
        if poll_interval.is_zero() {
            return Err(BuildError::ZeroPollInterval);
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
            read: None,
            seen: Seen::default(),
            metrics: DiscoveryMetrics::new(),
        }
    }
}

// === impl AddrFileUpdates ===

impl AddrFileUpdates {
    /// The file this stream reads.
    pub fn file(&self) -> &AddrFile {
        &self.file
    }

    /// What this stream has read, failed and yielded: `reads` counts reads of the file that
    /// returned its contents; `errors` counts reads that failed, complete files with lines
    /// that are not addresses (once per change of the contents) and files still incomplete a
    /// poll interval later (once), each logged at warn; `updates` and `endpoints` count the
    /// sets yielded.
    pub fn metrics(&self) -> DiscoveryMetrics {
        self.metrics.clone()
    }
}

impl Stream for AddrFileUpdates {
    type Item = Result<Update<SocketAddr, SocketAddr>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(read) = &mut this.read {
                let read = ready!(Pin::new(read).poll(cx));
                this.read = None;
                // The read cannot panic; a runtime shutting down cancels it.
                let contents = read.unwrap_or_else(|cancelled| Err(io::Error::other(cancelled)));
                let (path, metrics) = (&this.file.path, &this.metrics);
                if let Some(addrs) = this.seen.apply(path, contents, metrics) {
                    metrics.update(UpdateKind::Reset, addrs.len());
                    let endpoints = addrs.into_iter().map(|addr| (addr, addr)).collect();
                    return Poll::Ready(Some(Ok(Update::Reset(endpoints))));
                }
            }
            let period = this.file.poll_interval;
            let interval = this.interval.get_or_insert_with(|| {
                let mut interval = tokio::time::interval(period);
                // After a stall (or a slow read), one read brings the set up to date; a burst
                // of catch-up reads would only read the same file again.
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                interval
            });
            ready!(interval.poll_tick(cx));
            // Off the polling task: this stream runs inside the PoolQueue worker, which must
            // never block, and a read of a file can (a slow disk, a hung network mount).
            let path = this.file.path.clone();
            this.read = Some(tokio::task::spawn_blocking(move || {
                std::fs::read_to_string(path)
            }));
        }
    }
}

// === impl Seen ===

impl Seen {
    /// Takes the result of one read of the file and returns its addresses (in file order,
    /// without duplicates) if the file is complete and their set differs from the last one
    /// returned.
    /// Counts the read, and each failure it logs at warn, in `metrics`.
    fn apply(
        &mut self,
        path: &Path,
        read: io::Result<String>,
        metrics: &DiscoveryMetrics,
    ) -> Option<Vec<SocketAddr>> {
        let contents = match read {
            Ok(contents) => {
                metrics.read();
                contents
            }
            Err(error) => {
                metrics.error();
                if !self.unreadable {
                    tracing::warn!(
                        path = %path.display(),
                        %error,
                        "cannot read address file; keeping the last endpoint set"
                    );
                }
                self.unreadable = true;
                return None;
            }
        };
        if std::mem::take(&mut self.unreadable) {
            tracing::info!(path = %path.display(), "address file readable again");
        }
        if self.contents.as_deref() == Some(contents.as_str()) {
            if let Some(incomplete) = self.incomplete_unwarned.take() {
                metrics.error();
                tracing::warn!(
                    path = %path.display(),
                    %incomplete,
                    "address file still incomplete a poll interval later: it must end with its \
                     end line, once; keeping the last endpoint set"
                );
            }
            return None;
        }
        let parsed = complete(&contents).map(|body| parse(path, body));
        self.contents = Some(contents);
        self.incomplete_unwarned = None;
        let addrs = match parsed {
            Ok(Some(addrs)) => addrs,
            Ok(None) => {
                metrics.error();
                tracing::warn!(
                    path = %path.display(),
                    "address file has lines that are not addresses; keeping the last endpoint set"
                );
                return None;
            }
            Err(incomplete) => {
                tracing::debug!(
                    path = %path.display(),
                    %incomplete,
                    "address file incomplete (a write caught half-way?); keeping the last endpoint set"
                );
                self.incomplete_unwarned = Some(incomplete);
                return None;
            }
        };
        let set: BTreeSet<SocketAddr> = addrs.iter().copied().collect();
        if self.set.as_ref() == Some(&set) {
            return None;
        }
        tracing::info!(path = %path.display(), endpoints = set.len(), "address file changed");
        self.set = Some(set);
        Some(addrs)
    }
}

/// The part of `contents` before its end line, if the file is complete: the end line is
/// there, ended by a newline, with nothing but blank space after it (so only once).
///
/// Only a newline ends a line here, so every line of a prefix of a file that is ended by a
/// newline is a whole line of the file; a prefix that stops inside the end line has no
/// newline after it. Hence no proper prefix of a complete file is complete, except one that
/// only lacks some of the blank space after the end line (and has the same addresses).
fn complete(contents: &str) -> Result<&str, Incomplete> {
    let mut start = 0;
    for line in contents.split_inclusive('\n') {
        let end = start + line.len();
        if line.trim() == AddrFile::END_LINE {
            return if !line.ends_with('\n') {
                Err(Incomplete::NoEndLine)
            } else if !contents[end..].trim().is_empty() {
                Err(Incomplete::EndLineNotLast)
            } else {
                Ok(&contents[..start])
            };
        }
        start = end;
    }
    Err(Incomplete::NoEndLine)
}

/// `complete` then `parse`, as one read of the file (for [`crate::fuzzing`]).
pub(crate) fn parse_contents(contents: &str) -> Result<Vec<SocketAddr>, String> {
    let body = complete(contents).map_err(|incomplete| incomplete.to_string())?;
    parse(Path::new("(fuzzing)"), body).ok_or_else(|| "a line is not an address".to_string())
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
                    "a line of the address file is not a socket address"
                );
            }
        }
    }
    (!bad).then_some(addrs)
}

// === impl Incomplete ===

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end_line = AddrFile::END_LINE;
        match self {
            Self::NoEndLine => write!(f, "no `{end_line}` line ended by a newline"),
            Self::EndLineNotLast => write!(f, "more than blank space after the `{end_line}` line"),
        }
    }
}

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

    const WHOLE: &str = "# replicas\n10.0.0.1:8080\n[::1]:8080\n# end\n";
    const BODY: &str = "# replicas\n10.0.0.1:8080\n[::1]:8080\n";

    #[test]
    fn complete_is_what_comes_before_the_end_line() {
        assert_eq!(complete(WHOLE), Ok(BODY));
        // Surrounding whitespace, CRLF and blank space after the end line are allowed.
        assert_eq!(
            complete("10.0.0.1:80\r\n  # end \r\n\n \n"),
            Ok("10.0.0.1:80\r\n")
        );
        // The end line alone: complete, with no address.
        assert_eq!(complete("# end\n"), Ok(""));
        assert_eq!(parse(Path::new("test"), ""), Some(vec![]));
    }

    #[test]
    fn no_proper_prefix_of_a_complete_file_is_complete() {
        let whole = format!("{WHOLE}\n  \n");
        let end_line_ends = WHOLE.len();
        for cut in 0..whole.len() {
            let prefix = &whole[..cut];
            let expected = if cut < end_line_ends {
                Err(Incomplete::NoEndLine)
            } else {
                Ok(BODY)
            };
            assert_eq!(complete(prefix), expected, "{prefix:?}");
        }
    }

    #[test]
    fn a_file_without_its_end_line_is_incomplete() {
        for contents in [
            "",
            "\n",
            "# replicas\n",
            "10.0.0.2:80",
            "10.0.0.1:8080\n# end",
            "10.0.0.1:8080\n# en",
            // Not the end line: another comment, or a prefix of one.
            "# end of zone a\n",
            "# endpoints",
            "#end\n",
        ] {
            assert_eq!(
                complete(contents),
                Err(Incomplete::NoEndLine),
                "{contents:?}"
            );
        }
    }

    #[test]
    fn a_file_with_more_after_its_end_line_is_incomplete() {
        for contents in [
            // An old file read whole, then the tail of its replacement.
            "10.0.0.1:80\n# end\n10.0.0.2:80\n# end\n",
            "10.0.0.1:80\n# end\n10.0.0.2:80\n",
            "# end\n# end\n",
        ] {
            assert_eq!(
                complete(contents),
                Err(Incomplete::EndLineNotLast),
                "{contents:?}"
            );
        }
    }

    #[test]
    fn zero_interval_is_refused() {
        assert_eq!(
            AddrFile::new("x", Duration::ZERO),
            Err(BuildError::ZeroPollInterval)
        );
        assert!(AddrFile::new("x", Duration::from_millis(1)).is_ok());
    }
}
