//! Discovery sources that feed a [`PoolQueue`](crate::pool::PoolQueue): tower's `Discover`, a
//! `tokio::sync::watch` of endpoint sets, a file of addresses, and behind features DNS, etcd
//! and Kubernetes EndpointSlices: the `portcullis-discovery` crate.
//!
//! # Each source in a stack
//!
//! A source goes to [`PoolQueueBuilder::build_layer`](crate::pool::PoolQueueBuilder::build_layer)
//! as a function that makes its stream (`move || source.updates()`: a stream is read once, and
//! the layer makes one per pool it wraps), and the layer goes to
//! [`ServiceBuilderExt::pool_queue`](crate::ServiceBuilderExt::pool_queue). The pool's maker
//! takes the source's key and target; where the target carries a weight (an SRV record's, an
//! etcd value's), [`p2c::make::weighted`](crate::p2c::make::weighted) hands it to the pool.
//!
//! In these examples `endpoint(addr)` stands for a real endpoint, such as the makers of
//! `portcullis::endpoint` (features `http` and `grpc`) build; the ones that need a server are
//! `no_run`, and each feature's example is compiled with its feature.
//!
//! [`from_watch`]: whoever knows the replicas publishes the current set; see the
//! [crate root](crate#how-they-stack), whose stack is fed by one.
//!
//! [`AddrFile`]: a file of addresses ending with the line `# end`, re-read on an interval.
//!
//! ```
//! use portcullis::prelude::*;
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use tower::ServiceExt;
//! # use tower::util::BoxCloneSyncService;
//! # fn endpoint(addr: impl std::fmt::Display) -> BoxCloneSyncService<String, String, BoxError> {
//! #     let addr = addr.to_string();
//! #     BoxCloneSyncService::new(tower::service_fn(move |req: String| {
//! #         let answer = format!("{addr} answered {req}");
//! #         async move { Ok::<_, BoxError>(answer) }
//! #     }))
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let path = std::env::temp_dir().join(format!("backends-{}.addrs", std::process::id()));
//! std::fs::write(&path, "10.0.0.1:8080\n# end\n")?;
//! let file = AddrFile::new(&path, Duration::from_secs(1))?;
//!
//! let pool = P2cPool::builder().build(p2c::make::peak_ewma(
//!     |_: &SocketAddr, addr: &SocketAddr| endpoint(addr),
//! ))?;
//! let svc = ServiceBuilder::new()
//!     .pool_queue(PoolQueue::builder().build_layer(move || file.updates())?)
//!     .service(pool);
//!
//! let answer = svc.oneshot("hello".to_string()).await?;
//! assert_eq!(answer, "10.0.0.1:8080 answered hello");
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```
//!
//! [`from_discover`]: a tower `Discover`, whose targets are services: the peers of a
//! [`FanOut`](crate::fanout::FanOut) behind the queue.
//!
//! ```
//! use futures_util::stream;
//! use portcullis::discovery::from_discover;
//! use portcullis::prelude::*;
//! use std::convert::Infallible;
//! use tower::{discover::Change, service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let peer = |name: &'static str| {
//!     service_fn(move |req: u32| async move { Ok::<_, Infallible>(format!("{name}: {req}")) })
//! };
//! let discover = move || {
//!     let changes = [Change::Insert("a", peer("a")), Change::Insert("b", peer("b"))];
//!     from_discover(stream::iter(changes.map(Ok::<_, Infallible>)))
//! };
//!
//! let svc = ServiceBuilder::new()
//!     .pool_queue(PoolQueue::builder().build_layer(discover)?)
//!     .fan_out(FanOut::builder().build_layer()?)
//!     .service(Vec::new());
//!
//! let report = svc.oneshot(7).await?;
//! assert_eq!(report.counts().responses, 2);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    feature = "dns",
    doc = r##"
[`dns::Dns`] (feature `dns`): the SRV records of a service, each endpoint weighted as its
record says, re-resolved on their TTL.

```no_run
use portcullis::discovery::dns::{Dns, DnsEndpoint};
use portcullis::prelude::*;
use std::net::SocketAddr;
use tower::ServiceExt;
# use tower::util::BoxCloneSyncService;
# fn endpoint(addr: impl std::fmt::Display) -> BoxCloneSyncService<String, String, BoxError> {
#     let addr = addr.to_string();
#     BoxCloneSyncService::new(tower::service_fn(move |req: String| {
#         let answer = format!("{addr} answered {req}");
#         async move { Ok::<_, BoxError>(answer) }
#     }))
# }

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), BoxError> {
let dns = Dns::builder().build()?; // the system's name servers
let api = dns.srv("_http._tcp.api.internal.")?;

let pool = P2cPool::builder().build(p2c::make::weighted(
    p2c::make::peak_ewma(|_: &SocketAddr, ep: &DnsEndpoint| endpoint(ep.addr)),
    |_: &SocketAddr, ep: &DnsEndpoint| u32::from(ep.weight),
))?;
let svc = ServiceBuilder::new()
    .pool_queue(PoolQueue::builder().build_layer(move || api.updates())?)
    .service(pool);

let answer = svc.oneshot("hello".to_string()).await?;
# drop(answer);
# Ok(())
# }
```
"##
)]
#![cfg_attr(
    feature = "etcd",
    doc = r##"
[`etcd::Etcd`] (feature `etcd`): the keys under a prefix, listed then watched, each
endpoint weighted as its value says (the etcd client is the source's own, re-exported).

```no_run
use portcullis::discovery::etcd::{etcd_client::Client, Etcd, EtcdEndpoint};
use portcullis::prelude::*;
use tower::ServiceExt;
# use tower::util::BoxCloneSyncService;
# fn endpoint(addr: impl std::fmt::Display) -> BoxCloneSyncService<String, String, BoxError> {
#     let addr = addr.to_string();
#     BoxCloneSyncService::new(tower::service_fn(move |req: String| {
#         let answer = format!("{addr} answered {req}");
#         async move { Ok::<_, BoxError>(answer) }
#     }))
# }

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), BoxError> {
let client = Client::connect(["http://127.0.0.1:2379"], None).await?;
let etcd = Etcd::builder().build(client)?;

// Keyed by the etcd key; the target's `addr` is the value's `host:port`.
let pool = P2cPool::builder().build(p2c::make::weighted(
    p2c::make::peak_ewma(|_: &String, ep: &EtcdEndpoint| endpoint(&ep.addr)),
    |_: &String, ep: &EtcdEndpoint| ep.weight,
))?;
let svc = ServiceBuilder::new()
    .pool_queue(PoolQueue::builder().build_layer(move || etcd.updates("/services/api/"))?)
    .service(pool);

let answer = svc.oneshot("hello".to_string()).await?;
# drop(answer);
# Ok(())
# }
```
"##
)]
#![cfg_attr(
    feature = "k8s",
    doc = r##"
[`k8s::K8s`] (feature `k8s`): the ready endpoints of a Service's EndpointSlices at a named
port (the kube client is the source's own, re-exported; a TLS feature of kube's is the
application's to enable). Here the pool routes by zone, which is optional: each endpoint's
zone and EndpointSlice hints (`hints.forZones`) reach the pool through
[`p2c::make::zoned`](crate::p2c::make::zoned), and the pool learns its own zone from the
environment, as a pod does from the downward API (the rule: [`p2c::zone`](crate::p2c::zone)).

```no_run
use portcullis::discovery::k8s::{kube, K8s, K8sEndpoint};
use portcullis::p2c::zone::{Locality, ZoneAware};
use portcullis::prelude::*;
use std::net::SocketAddr;
use tower::ServiceExt;
# use tower::util::BoxCloneSyncService;
# fn endpoint(addr: impl std::fmt::Display) -> BoxCloneSyncService<String, String, BoxError> {
#     let addr = addr.to_string();
#     BoxCloneSyncService::new(tower::service_fn(move |req: String| {
#         let answer = format!("{addr} answered {req}");
#         async move { Ok::<_, BoxError>(answer) }
#     }))
# }

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), BoxError> {
let k8s = K8s::builder().build(kube::Client::try_default().await?)?;
let api = k8s.service("default", "api", "http")?;

// `env: [{name: ZONE, valueFrom: {fieldRef: {fieldPath:
//   "metadata.labels['topology.kubernetes.io/zone']"}}}]` in the pod's spec.
let pool = P2cPool::builder()
    .zone_aware(ZoneAware::from_env("ZONE")?)
    .build(p2c::make::zoned(
        p2c::make::peak_ewma(|addr: &SocketAddr, _: &K8sEndpoint| endpoint(addr)),
        |_: &SocketAddr, ep: &K8sEndpoint| {
            Locality::zone_of(ep.zone.as_deref()).hints_of(ep.for_zones.as_deref())
        },
    ))?;
let svc = ServiceBuilder::new()
    .pool_queue(PoolQueue::builder().build_layer(move || api.updates())?)
    .service(pool);

let answer = svc.oneshot("hello".to_string()).await?;
# drop(answer);
# Ok(())
# }
```
"##
)]

#[doc(inline)]
pub use portcullis_discovery::*;
