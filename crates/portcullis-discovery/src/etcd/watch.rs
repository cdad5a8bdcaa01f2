//! The list-then-watch loop behind [`EtcdUpdates`](super::EtcdUpdates).

use super::{value, EtcdEndpoint};
use crate::source::{Delays, SourceLoop, Tracked};
use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions, WatchStream};
use portcullis_pool::Update;
use std::fmt;
use tonic::Code;

/// Why a step ended without an answer: the stream backs off and tries again.
#[derive(Debug)]
enum Failure {
    Client(etcd_client::Error),
    /// The watch stream ended: etcd closed it (a restart, a leader change).
    WatchEnded,
    /// The watch was cancelled for another reason than compaction.
    Cancelled(String),
    /// etcd's revision is behind the last one seen: it was replaced by an empty etcd or
    /// restored from a backup without `--bump-revision`, and a watch from the old revision
    /// would hide every change until its revisions pass it.
    Rewound {
        seen: i64,
        server: i64,
    },
}

/// One stream's state between two updates.
pub(super) struct Watching {
    pub(super) client: Client,
    pub(super) prefix: String,
    pub(super) set: Tracked<String, EtcdEndpoint>,
    pub(super) delays: Delays,
    /// The revision of the last change seen (the list's revision, then each event's):
    /// a new watch starts just after it, so that nothing is lost or seen twice. `None`:
    /// list first.
    pub(super) revision: Option<i64>,
    pub(super) watch: Option<WatchStream>,
}

impl SourceLoop for Watching {
    type Key = String;
    type Target = EtcdEndpoint;

    /// Lists, watches and re-watches until the set changes.
    async fn next(&mut self) -> Update<String, EtcdEndpoint> {
        loop {
            match self.step().await {
                Ok(Some(update)) => return update,
                Ok(None) => {}
                Err(failure) => {
                    self.watch = None;
                    self.set.metrics().error();
                    let retry_in = self.delays.failed();
                    tracing::warn!(
                        system = "etcd",
                        prefix = %self.prefix,
                        error = %failure,
                        ?retry_in,
                        "etcd watch failed; keeping the last endpoint set"
                    );
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
    }
}

impl Watching {
    /// One read: the list when there is no revision to watch from, else one watch
    /// response (opening the watch first if there is none).
    async fn step(&mut self) -> Result<Option<Update<String, EtcdEndpoint>>, Failure> {
        let Some(revision) = self.revision else {
            return self.list().await;
        };
        let watch = match &mut self.watch {
            Some(watch) => watch,
            None => {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1);
                let watch = self
                    .client
                    .watch(self.prefix.as_str(), Some(options))
                    .await?;
                self.watch.insert(watch)
            }
        };
        let response = match watch.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(Failure::WatchEnded),
            Err(etcd_client::Error::GRpcStatus(status)) if status.code() == Code::OutOfRange => {
                // etcd sends the backlog of a watch that fell behind as one message; past the
                // client's message limit (4 MiB) it is refused, unread. Listing again costs
                // only the current set, so memory stays bounded by the larger of the two.
                tracing::info!(
                    system = "etcd",
                    prefix = %self.prefix,
                    revision,
                    error = %status.message(),
                    "etcd watch backlog too large for one message; listing again"
                );
                self.set.metrics().relist();
                self.revision = None;
                self.watch = None;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        self.set.metrics().read();
        let server = response
            .header()
            .map_or(revision, |header| header.revision());
        if server < revision {
            // Every response's header carries etcd's current revision, which never goes
            // backwards on the same history: the history is another one. Only a new list
            // is complete; the set stays in force until it is read.
            self.set.metrics().rewind();
            self.set.metrics().relist();
            self.revision = None;
            return Err(Failure::Rewound {
                seen: revision,
                server,
            });
        }
        if response.compact_revision() > 0 {
            // The history after our revision is gone: only a new list is complete. The set
            // stays in force until it is read (no empty set in between).
            tracing::info!(
                system = "etcd",
                prefix = %self.prefix,
                revision,
                compacted = response.compact_revision(),
                "etcd history compacted past the watch; listing again"
            );
            self.set.metrics().relist();
            self.revision = None;
            self.watch = None;
            return Ok(None);
        }
        if response.canceled() {
            return Err(Failure::Cancelled(response.cancel_reason().to_string()));
        }
        self.delays.succeeded();
        let mut changes = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            self.revision = Some(self.revision.unwrap_or(0).max(kv.mod_revision()));
            let Some(key) = self.key(kv) else { continue };
            match event.event_type() {
                EventType::Put => {
                    if let Some(endpoint) = self.endpoint(&key, kv) {
                        changes.push((key, Some(endpoint)));
                    }
                }
                EventType::Delete => changes.push((key, None)),
            }
        }
        Ok(self.set.change(changes))
    }

    /// Reads every key under the prefix: a `Reset` if the set differs from the last one
    /// yielded. A key whose value is not an endpoint keeps its last value, as on the watch
    /// (left out if it has none).
    async fn list(&mut self) -> Result<Option<Update<String, EtcdEndpoint>>, Failure> {
        let response = self
            .client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        self.set.metrics().read();
        self.delays.succeeded();
        self.revision = Some(response.header().map_or(0, |header| header.revision()));
        let set = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = self.key(kv)?;
                let endpoint = match self.endpoint(&key, kv) {
                    Some(endpoint) => endpoint,
                    None => self.set.get(&key)?.clone(),
                };
                Some((key, endpoint))
            })
            .collect();
        Ok(self.set.reset(set))
    }

    fn key(&self, kv: &KeyValue) -> Option<String> {
        match kv.key_str() {
            Ok(key) => Some(key.to_string()),
            Err(error) => {
                self.set.metrics().error();
                tracing::warn!(system = "etcd", prefix = %self.prefix, %error, "etcd key is not UTF-8; skipped");
                None
            }
        }
    }

    fn endpoint(&self, key: &str, kv: &KeyValue) -> Option<EtcdEndpoint> {
        match value::parse(kv.value()) {
            Ok(endpoint) => Some(endpoint),
            Err(error) => {
                self.set.metrics().error();
                tracing::warn!(
                    system = "etcd",
                    prefix = %self.prefix,
                    key,
                    %error,
                    "etcd value is not an endpoint; keeping the key's last value"
                );
                None
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Client(error) => error.fmt(f),
            Failure::WatchEnded => f.write_str("the watch stream ended"),
            Failure::Cancelled(reason) => write!(f, "the watch was cancelled: {reason}"),
            Failure::Rewound { seen, server } => write!(
                f,
                "etcd's revision {server} is behind revision {seen} already seen (etcd replaced, \
                 or restored from a backup without --bump-revision); listing again"
            ),
        }
    }
}

impl From<etcd_client::Error> for Failure {
    fn from(error: etcd_client::Error) -> Self {
        Failure::Client(error)
    }
}

impl fmt::Debug for Watching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watching")
            .field("prefix", &self.prefix)
            .field("revision", &self.revision)
            .field("watching", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}
