//! `endpoint::grpc` against real tonic health servers on 127.0.0.1: a channel made for an
//! address serves a health check, a pool of them serves a tonic client, and a backend that
//! refuses connections fails the call with `UNAVAILABLE` instead of hanging it.

use portcullis::endpoint::grpc::MakeGrpcEndpoint;
use portcullis::p2c::{make::peak_ewma, MakeEndpoint, P2cPool};
use portcullis::pool::{Pool, Update};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long any one call to a local server may take before the test fails instead of
/// hanging; a local call takes milliseconds.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A tonic server on 127.0.0.1 serving `grpc.health.v1.Health` (the server as a whole, `""`,
/// is `SERVING`). It stops when dropped.
struct HealthServer {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl HealthServer {
    async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                let _ = stop.await;
            });
        tokio::spawn(server);
        Ok(Self {
            addr,
            _shutdown: shutdown,
        })
    }
}

fn whole_server() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

fn maker() -> MakeGrpcEndpoint {
    MakeGrpcEndpoint::new().configure(|endpoint| endpoint.connect_timeout(EVENT_TIMEOUT))
}

#[tokio::test]
async fn a_channel_made_for_an_address_serves_a_health_check() {
    let server = HealthServer::start().await.unwrap();
    let channel: Channel = maker().make_endpoint(&"a", &server.addr);
    let mut health = HealthClient::new(channel);

    let response = timeout(EVENT_TIMEOUT, health.check(whole_server()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn a_closed_port_fails_the_call_with_unavailable() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let channel: Channel = maker().make_endpoint(&"closed", &addr);
    let mut health = HealthClient::new(channel);

    let status = timeout(EVENT_TIMEOUT, health.check(whole_server()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_p2c_pool_of_channels_is_a_tonic_transport() {
    let a = HealthServer::start().await.unwrap();
    let b = HealthServer::start().await.unwrap();
    let mut pool = P2cPool::builder()
        .seed(7)
        .build(peak_ewma(maker()))
        .unwrap();
    pool.update_pool(Update::Reset(vec![(a.addr, a.addr), (b.addr, b.addr)]));
    let mut health = HealthClient::new(pool);

    for _ in 0..8 {
        let response = timeout(EVENT_TIMEOUT, health.check(whole_server()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    }
}
