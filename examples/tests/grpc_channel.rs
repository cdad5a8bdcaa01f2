//! `portcullis::grpc::Channel` under a client that tonic-build generated from the tests' own
//! proto (`proto/echo.proto`), in front of three real tonic servers on 127.0.0.1.
//!
//! Real time (the servers and sockets are real); every wait is bounded by a timeout, never a
//! fixed sleep. One script behind the whole fleet decides which calls fail, so no outcome
//! depends on which server p2c picks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis::grpc::Channel;
use portcullis::target::TargetError;
use portcullis::BuildError;
use portcullis_examples::chain_holds;
use portcullis_examples::echo::pb::{echo_client::EchoClient, EchoRequest};
use portcullis_examples::echo::{payloads, EchoBackend, EchoScript};
use tonic::Code;

/// Every test's bound on one call, far above what one takes.
const BOUND: Duration = Duration::from_secs(20);

struct Fleet {
    script: Arc<EchoScript>,
    servers: Vec<EchoBackend>,
}

impl Fleet {
    async fn start() -> Fleet {
        let script = EchoScript::new();
        let mut servers = Vec::new();
        for name in ["a", "b", "c"] {
            servers.push(EchoBackend::start(name, script.clone()).await.unwrap());
        }
        Fleet { script, servers }
    }

    fn target(&self) -> String {
        let addrs: Vec<String> = self.servers.iter().map(|s| s.addr.to_string()).collect();
        format!("static:///{}", addrs.join(","))
    }
}

async fn unary(client: &mut EchoClient<Channel>, size: usize) -> Result<String, tonic::Status> {
    let request = EchoRequest {
        payload: vec![1; size],
    };
    let call = client.unary(request);
    let reply = tokio::time::timeout(BOUND, call).await.expect("bounded")?;
    Ok(reply.into_inner().server)
}

#[tokio::test]
async fn a_generated_client_takes_the_channel_and_is_balanced_over_the_fleet() {
    let fleet = Fleet::start().await;
    let channel = Channel::from_target(&fleet.target()).unwrap();
    let mut client = EchoClient::new(channel.clone());
    let mut served = BTreeSet::new();
    for _ in 0..30 {
        served.insert(unary(&mut client, 8).await.unwrap());
    }
    assert_eq!(
        served,
        ["a", "b", "c"].map(String::from).into(),
        "every server took calls"
    );
    let snapshot = channel.metrics().snapshot();
    assert_eq!(snapshot.retry.requests, 30);
    assert_eq!(snapshot.retry.retries, 0);
    let pool = snapshot.pool;
    assert_eq!(pool.ready + pool.pending + pool.failed, 3);
}

#[tokio::test]
async fn unavailable_answered_trailers_only_is_retried_on_another_server() {
    let fleet = Fleet::start().await;
    let channel = Channel::from_target(&fleet.target()).unwrap();
    let mut client = EchoClient::new(channel.clone());
    fleet.script.fail_next(1);
    unary(&mut client, 8).await.unwrap();
    let calls = fleet.script.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].failed && !calls[1].failed, "{calls:?}");
    assert_ne!(
        calls[0].server, calls[1].server,
        "the retry went to another server"
    );
    assert_eq!(channel.metrics().snapshot().retry.retries, 1);
}

#[tokio::test]
async fn a_server_s_pushback_holds_that_server_and_costs_no_call_its_deadline() {
    let fleet = Fleet::start().await;
    // A failed endpoint is demoted for 10 ms only, so that what keeps the server away below
    // is its hold, not the demotion.
    let pool = portcullis::p2c::P2cPool::builder()
        .consecutive_failures(5)
        .demotion(Duration::from_millis(10));
    let channel = Channel::builder()
        .pool(pool)
        .deadline(Duration::from_secs(1))
        .build(&fleet.target())
        .unwrap();
    let mut client = EchoClient::new(channel.clone());
    // Server a asks its clients to stay away 5 s, every time it is asked; b and c serve.
    fleet.script.push_back("a", 5_000);
    let started = tokio::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(300) || calls < 30 {
        let call = tokio::time::Instant::now();
        let server = unary(&mut client, 8).await.unwrap();
        assert_ne!(server, "a");
        assert!(call.elapsed() < Duration::from_secs(1));
        calls += 1;
    }
    // Held out of the pick after its first pushback: no call reached it again.
    let to_a = fleet
        .script
        .calls()
        .iter()
        .filter(|call| call.server == "a")
        .count();
    assert!(
        to_a <= 1,
        "{to_a} calls to the server that pushed back, in {calls}"
    );
}

#[tokio::test]
async fn a_client_stream_is_replayed_within_the_bound_and_not_past_it() {
    let fleet = Fleet::start().await;
    let channel = Channel::builder()
        .replay_limit(1024)
        .build(&fleet.target())
        .unwrap();
    let mut client = EchoClient::new(channel.clone());

    // 4 × 200 bytes (and their frame headers) fit in 1 KiB: the retry sends the whole stream.
    fleet.script.fail_next(1);
    let call = client.collect(payloads(4, 200));
    let reply = tokio::time::timeout(BOUND, call).await.expect("bounded");
    assert_eq!(reply.unwrap().into_inner().bytes, 800);
    let calls = fleet.script.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].bytes, 800, "the replay carried every message");

    // 4 × 512 bytes do not: sent once, not retried, and the status names the bound.
    fleet.script.fail_next(1);
    let call = client.collect(payloads(4, 512));
    let status = tokio::time::timeout(BOUND, call)
        .await
        .expect("bounded")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("replay bound (1024 bytes)"),
        "{status:?}"
    );
    let calls = fleet.script.calls();
    assert_eq!(calls.len(), 3, "sent once: {calls:?}");
    assert_eq!(calls[2].bytes, 2048);
    assert_eq!(channel.metrics().snapshot().retry.not_replayable, 1);
}

#[tokio::test]
async fn every_attempt_carries_what_is_left_of_the_deadline() {
    let fleet = Fleet::start().await;
    let channel = Channel::builder()
        .deadline(Duration::from_secs(5))
        .build(&fleet.target())
        .unwrap();
    let mut client = EchoClient::new(channel);

    // Three attempts: the server sees grpc-timeout shrink from one to the next, all within
    // the channel's 5 s.
    fleet.script.fail_next(2);
    unary(&mut client, 8).await.unwrap();
    let seen: Vec<Duration> = fleet
        .script
        .calls()
        .iter()
        .map(|call| {
            call.grpc_timeout
                .expect("every attempt carries grpc-timeout")
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0] <= Duration::from_secs(5), "{seen:?}");
    assert!(seen[0] > seen[1] && seen[1] > seen[2], "{seen:?}");

    // A caller's own timeout shortens the channel's: the server is told at most 800 ms.
    let mut request = tonic::Request::new(EchoRequest { payload: vec![] });
    request.set_timeout(Duration::from_millis(800));
    tokio::time::timeout(BOUND, client.unary(request))
        .await
        .expect("bounded")
        .unwrap();
    let last = fleet.script.calls().last().cloned().unwrap();
    let told = last.grpc_timeout.unwrap();
    assert!(
        told <= Duration::from_millis(800) && told > Duration::ZERO,
        "{told:?}"
    );
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded() {
    // A backend that accepts connections and never answers: the call hangs until the
    // caller's 300 ms are up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let channel = Channel::from_target(&format!("static:///{addr}")).unwrap();
    let mut client = EchoClient::new(channel);
    let mut request = tonic::Request::new(EchoRequest { payload: vec![] });
    request.set_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let status = tokio::time::timeout(BOUND, client.unary(request))
        .await
        .expect("bounded")
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    held.abort();
}

#[tokio::test]
async fn a_bad_target_is_a_typed_error() {
    for (target, want) in [
        ("greeter:50051", "Syntax"),
        ("zk:///greeter", "UnknownScheme"),
        ("static:///10.0.0.1", "Authority"),
    ] {
        match Channel::from_target(target) {
            Err(BuildError::Target(error)) => {
                let kind = match error {
                    TargetError::Syntax { .. } => "Syntax",
                    TargetError::UnknownScheme { .. } => "UnknownScheme",
                    TargetError::Authority { .. } => "Authority",
                    _ => "other",
                };
                assert_eq!(kind, want, "{target}: {error}");
            }
            other => panic!("{target}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_file_target_reads_its_backends_from_the_file() {
    let fleet = Fleet::start().await;
    let dir = std::env::temp_dir().join(format!("portcullis-channel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.addrs");
    let lines: Vec<String> = fleet.servers.iter().map(|s| s.addr.to_string()).collect();
    std::fs::write(&path, format!("{}\n# end\n", lines.join("\n"))).unwrap();
    let channel = Channel::from_target(&format!("file://{}", path.display())).unwrap();
    let mut client = EchoClient::new(channel);
    let mut served = BTreeSet::new();
    for _ in 0..30 {
        served.insert(unary(&mut client, 8).await.unwrap());
    }
    assert_eq!(served.len(), 3, "{served:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn with_every_server_down_calls_fail_fast_then_are_served_once_one_is_back() {
    let mut fleet = Fleet::start().await;
    let failfast = Duration::from_millis(500);
    let channel = Channel::builder()
        .queue(portcullis::pool::PoolQueue::builder().failfast_timeout(failfast))
        .build(&fleet.target())
        .unwrap();
    let mut client = EchoClient::new(channel.clone());
    unary(&mut client, 8).await.unwrap();

    // Every server stopped (each closes its connections as its shutdown goes through):
    // calls fail to connect, every endpoint turns not ready, and the queue fails fast.
    let addrs: Vec<_> = fleet.servers.drain(..).map(|s| s.addr).collect();
    let deadline = tokio::time::Instant::now() + BOUND;
    let status = loop {
        if let Err(status) = unary(&mut client, 8).await {
            if chain_holds::<portcullis::pool::FailFast>(&status) {
                break status;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never failed fast");
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // In failfast, a call is refused at once rather than after its own attempts.
    let started = tokio::time::Instant::now();
    let status = unary(&mut client, 8).await.unwrap_err();
    assert!(
        chain_holds::<portcullis::pool::FailFast>(&status),
        "{status:?}"
    );
    assert!(started.elapsed() < failfast, "{:?}", started.elapsed());

    // One server back on its address: the probes find it with no call spent on it, and the
    // next call is served.
    let listener = tokio::net::TcpListener::bind(addrs[1]).await.unwrap();
    let _back = EchoBackend::start_on("b2", fleet.script.clone(), listener).unwrap();
    let calls_before = fleet.script.calls().len();
    let deadline = tokio::time::Instant::now() + BOUND;
    while channel.metrics().snapshot().pool.ready == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server was never found"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fleet.script.calls().len(),
        calls_before,
        "no call in between"
    );
    assert_eq!(unary(&mut client, 8).await.unwrap(), "b2");
}

/// A gRPC server written by hand on hyper, whose first answer sends its head, then trailers
/// with `UNAVAILABLE` and no message (not trailers-only: the status arrives after the head),
/// and every later answer an `EchoReply` from "raw".
async fn late_status_server() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU32>) {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prost::Message;
    use std::sync::atomic::Ordering;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = counted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let nth = calls.fetch_add(1, Ordering::Relaxed);
                    async move {
                        // The whole request is read first, as a gRPC server reads a unary
                        // call's message before it answers.
                        let _ = http_body_util::BodyExt::collect(
                            request.into_body() as hyper::body::Incoming
                        )
                        .await;
                        let mut trailers = http::HeaderMap::new();
                        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                            Vec::new();
                        if nth == 0 {
                            trailers.insert("grpc-status", "14".parse().unwrap());
                            trailers.insert("grpc-message", "late".parse().unwrap());
                        } else {
                            let reply = portcullis_examples::echo::pb::EchoReply {
                                server: "raw".into(),
                                bytes: 0,
                            }
                            .encode_to_vec();
                            let mut message = vec![0u8];
                            message.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                            message.extend_from_slice(&reply);
                            frames.push(Ok(Frame::data(Bytes::from(message))));
                            trailers.insert("grpc-status", "0".parse().unwrap());
                        }
                        frames.push(Ok(Frame::trailers(trailers)));
                        let body = StreamBody::new(futures_util::stream::iter(frames));
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, calls)
}

#[tokio::test]
async fn a_status_in_trailers_before_any_message_is_retried() {
    let (addr, calls) = late_status_server().await;
    let channel = Channel::from_target(&format!("static:///{addr}")).unwrap();
    let mut client = EchoClient::new(channel);
    assert_eq!(unary(&mut client, 8).await.unwrap(), "raw");
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_server_whose_health_checks_fail_is_not_picked_until_they_pass() {
    use portcullis::endpoint::HealthCheck;
    use portcullis_examples::grpc::{Faults, HealthBackend};
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tonic_health::ServingStatus;

    let faults = Faults::new();
    let a = HealthBackend::start("a", faults.clone()).await.unwrap();
    let b = HealthBackend::start("b", faults).await.unwrap();
    let check = HealthCheck::grpc("")
        .interval(Duration::from_millis(20))
        .unhealthy_threshold(2)
        .healthy_threshold(1);
    let channel = Channel::builder()
        .health_check(check)
        .build(&format!("static:///{},{}", a.addr, b.addr))
        .unwrap();
    let pool = || channel.metrics().snapshot().pool;
    let deadline = tokio::time::Instant::now() + BOUND;
    let wait = |what: &'static str, done: &dyn Fn() -> bool| {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        !done()
    };

    // a reports NOT_SERVING: its checks fail, and it is not ready (not ejected).
    a.reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let mut client = HealthClient::new(channel.clone());
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    // Calls until a has been found not ready (a call that reaches it meanwhile is answered).
    while wait("a not ready", &|| pool().pending == 1) {
        client.check(request()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool().ejected, 0, "not ejected");
    let (a_before, b_before) = (a.calls(), b.calls());
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        client.check(request()).await.unwrap();
    }
    // a's calls meanwhile are its health checks only (one per 20 ms), none of the 20.
    let checks = started.elapsed().as_millis() as u64 / 20 + 2;
    let to_a = a.calls() - a_before;
    assert!(
        to_a <= checks,
        "{to_a} calls reached a (at most {checks} checks)"
    );
    assert!(b.calls() - b_before >= 20);

    // SERVING again: ready again.
    a.reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    while wait("a ready again", &|| pool().ready == 2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
