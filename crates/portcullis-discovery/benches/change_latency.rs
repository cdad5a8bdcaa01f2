//! Change → update yielded, against the real servers of the tests: how long from a write to
//! etcd (a put) until `Etcd::updates` yields it, and from a change of the served DNS zone
//! until `Dns::host(..).updates()` yields it, and from a change of an EndpointSlice in the
//! tests' stand-in Kubernetes API server (not a cluster) until `K8s::service(..).updates()`
//! yields it. Prints p50, p99 and the maximum.
//!
//! `cargo bench -p portcullis-discovery --all-features --bench change_latency`
//! (needs `/usr/bin/etcd`: `apt-get install -y etcd-server`, as `.ci/setup` does).

#[path = "../tests/support/dns_server.rs"]
mod dns_server;
#[path = "../tests/support/etcd_server.rs"]
mod etcd_server;
#[path = "../tests/support/k8s_server.rs"]
mod k8s_server;

use dns_server::{Rr, TestDns};
use etcd_server::EtcdServer;
use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_server::K8sServer;
use portcullis_discovery::dns::Dns;
use portcullis_discovery::etcd::Etcd;
use portcullis_discovery::k8s::K8s;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

const CHANGES: usize = 200;
const PATIENCE: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        report("etcd put -> Add yielded", etcd().await?);
        report("k8s stand-in: slice changed -> Reset yielded", k8s().await?);
        for max_ttl in [Duration::from_millis(20), Duration::from_millis(100)] {
            report(
                &format!("dns record changed -> Reset yielded, ttl clamp {max_ttl:?}"),
                dns(max_ttl).await?,
            );
        }
        Ok(())
    })
}

async fn etcd() -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let server = EtcdServer::start().await;
    let mut kv = server.client().await?;
    let etcd = Etcd::builder().build(server.client().await?)?;
    let mut updates = etcd.updates("/bench/");
    let _first = within(updates.next()).await?;
    let mut took = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let start = Instant::now();
        let value = format!("10.0.0.1:{}", 1_000 + i);
        let (put, update) = tokio::join!(kv.put("/bench/a", value, None), async {
            let update = within(updates.next()).await;
            (update, start.elapsed())
        });
        put?;
        let (update, elapsed) = update;
        let _update = update?;
        took.push(elapsed);
    }
    Ok(took)
}

async fn dns(max_ttl: Duration) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let mut server = TestDns::start(vec![Rr::A("api.test.", [127, 0, 0, 1], 1)]).await;
    let dns = Dns::builder()
        .name_servers([server.addr])
        .min_ttl(Duration::from_millis(1))
        .max_ttl(max_ttl)
        .jitter(0.0)
        .timeout(Duration::from_millis(500))
        .build()?;
    let mut updates = dns.host("api.test.", 80)?.updates();
    let _first = within(updates.next()).await?;
    let mut took = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let ip = [127, 0, 1 + (i / 250) as u8, (i % 250) as u8 + 1];
        let start = Instant::now();
        server.set(vec![Rr::A("api.test.", ip, 1)]);
        let _update = within(updates.next()).await?;
        took.push(start.elapsed());
    }
    server.stop().await;
    Ok(took)
}

/// The stand-in API server (not a cluster): one EndpointSlice of Service `api` whose one
/// endpoint moves to another address with each change (one event that removes and adds: a
/// `Reset`), from `apply` on the server until the source yields it.
async fn k8s() -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let server = K8sServer::start().await;
    let slice = |i: usize| EndpointSlice {
        metadata: ObjectMeta {
            name: Some("api-1".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                "api".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![format!("10.0.{}.{}", i / 250, i % 250 + 1)],
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..EndpointPort::default()
        }]),
    };
    server.apply(slice(0));
    let k8s = K8s::builder().build(server.client())?;
    let mut updates = k8s.service("default", "api", "http")?.updates();
    let _first = within(updates.next()).await?;
    // The watch opens only while the stream is polled: one change, awaited, opens it.
    server.apply(slice(1));
    let _warm_up = within(updates.next()).await?;
    let mut took = Vec::with_capacity(CHANGES);
    for i in 2..CHANGES + 2 {
        let start = Instant::now();
        server.apply(slice(i));
        let _update = within(updates.next()).await?;
        took.push(start.elapsed());
    }
    Ok(took)
}

async fn within<T>(next: impl Future<Output = Option<T>>) -> Result<T, String> {
    match tokio::time::timeout(PATIENCE, next).await {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err("the stream ended".into()),
        Err(_) => Err(format!("no update within {PATIENCE:?}")),
    }
}

fn report(what: &str, mut took: Vec<Duration>) {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: n={} p50={:?} p99={:?} max={:?}",
        took.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}
