//! [`Registration`]: this process's address under the prefix, kept alive by a lease.

use super::EtcdError;
use crate::source::Delays;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use std::fmt;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A key put under a lease that a spawned task keeps alive; made by
/// [`Etcd::register`](super::Etcd::register).
///
/// - While it lives, the lease is refreshed every third of its TTL. If the lease is lost
///   (etcd was down longer than the TTL), the task grants a new one and puts the key again.
/// - Dropping it, or [`revoke`](Self::revoke), revokes the lease: the key goes at once.
/// - If the process dies, nothing refreshes the lease, and etcd deletes the key when the
///   TTL runs out.
pub struct Registration {
    key: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), EtcdError>>>,
}

impl Registration {
    pub(super) async fn start(
        mut client: Client,
        key: String,
        value: String,
        ttl: Duration,
        delays: Delays,
    ) -> Result<Self, EtcdError> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = grant(&mut client, &key, &value, ttl_secs).await?;
        let (stop, stopped) = oneshot::channel();
        let alive = KeepAlive {
            client,
            key: key.clone(),
            value,
            ttl_secs,
            lease,
            keeper: None,
            delays,
        };
        Ok(Self {
            key,
            stop: Some(stop),
            task: Some(tokio::spawn(alive.run(stopped))),
        })
    }

    /// The key this registration put.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Revokes the lease (the key goes at once) and waits until etcd has answered.
    pub async fn revoke(mut self) -> Result<(), EtcdError> {
        drop(self.stop.take());
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Err(EtcdError::Stopped)),
            None => Err(EtcdError::Stopped),
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Grants a lease and puts the key under it.
async fn grant(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl_secs: i64,
) -> Result<i64, EtcdError> {
    let lease = client.lease_grant(ttl_secs, None).await?.id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok(lease)
}

/// The task that keeps one registration's lease alive.
struct KeepAlive {
    client: Client,
    key: String,
    value: String,
    ttl_secs: i64,
    lease: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    delays: Delays,
}

impl KeepAlive {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) -> Result<(), EtcdError> {
        // A third of the TTL: two refreshes may be lost before the key goes.
        let period = Duration::from_secs(self.ttl_secs.unsigned_abs()) / 3;
        loop {
            let wait = tokio::select! {
                // Stop first: a registration that is dropped must go at once, even while
                // etcd is slow to answer a refresh.
                biased;
                _ = &mut stopped => break,
                refreshed = self.refresh() => match refreshed {
                    Ok(()) => {
                        self.delays.succeeded();
                        period
                    }
                    Err(error) => {
                        self.keeper = None;
                        let retry_in = self.delays.failed().min(period);
                        tracing::warn!(
                            system = "etcd",
                            key = %self.key,
                            %error,
                            ?retry_in,
                            "etcd lease refresh failed"
                        );
                        retry_in
                    }
                },
            };
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Bounded by the TTL: past it, etcd deletes the key on its own.
        let revoke = self.client.lease_revoke(self.lease);
        match tokio::time::timeout(period * 3, revoke).await {
            Ok(revoked) => revoked.map(drop).map_err(EtcdError::from),
            Err(_) => Ok(()),
        }
    }

    /// One refresh; a lost lease is granted again and the key put again.
    async fn refresh(&mut self) -> Result<(), EtcdError> {
        if self.keeper.is_none() {
            match self.client.lease_keep_alive(self.lease).await {
                Ok(keeper) => self.keeper = Some(keeper),
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => return self.regrant().await,
                Err(error) => return Err(error.into()),
            }
        }
        let Some((keeper, responses)) = &mut self.keeper else {
            return Ok(());
        };
        keeper.keep_alive().await?;
        match responses.message().await? {
            Some(response) if response.ttl() > 0 => Ok(()),
            _ => {
                self.keeper = None;
                self.regrant().await
            }
        }
    }

    async fn regrant(&mut self) -> Result<(), EtcdError> {
        tracing::warn!(system = "etcd", key = %self.key, "etcd lease lost; registering again");
        self.lease = grant(&mut self.client, &self.key, &self.value, self.ttl_secs).await?;
        Ok(())
    }
}
