//! On real sockets: a hyper HTTP/2 server on 127.0.0.1 and hyper-util's client (HTTP/2 with
//! prior knowledge) under `SharedClients`. Waits on the server's own count of open
//! connections, each wait bounded, never a fixed sleep.

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_share::SharedClients;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

const BOUND: Duration = Duration::from_secs(10);

/// The server's connections: (accepted so far, open now).
type Conns = watch::Receiver<(usize, usize)>;

async fn server() -> (SocketAddr, Conns) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel((0, 0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tx.send_modify(|(accepted, open)| {
                *accepted += 1;
                *open += 1;
            });
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = format!("served {}", req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                tx.send_modify(|(_, open)| *open -= 1);
            });
        }
    });
    (addr, rx)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn h2_client(_: &SocketAddr) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn wait_for(conns: &mut Conns, what: &str, ok: impl FnMut(&(usize, usize)) -> bool) {
    let waited = tokio::time::timeout(BOUND, conns.wait_for(ok))
        .await
        .map(|seen| seen.map(|seen| *seen));
    match waited {
        Ok(seen) => drop(seen.unwrap()),
        Err(_) => panic!("{what}: not within {BOUND:?}: {:?}", *conns.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_consumers_share_two_http2_connections_closed_with_the_last_lease() {
    let (addr, mut conns) = server().await;
    let clients = SharedClients::builder()
        .max_connections(2)
        .max_in_flight(8)
        .build(h2_client)
        .unwrap();

    let leases: Vec<_> = (0..200).map(|_| clients.get(addr)).collect();
    let requests = leases.iter().enumerate().flat_map(|(consumer, lease)| {
        (0..5).map(move |i| {
            let lease = lease.clone();
            async move {
                let uri = format!("http://{addr}/c{consumer}/{i}");
                let rsp = lease
                    .oneshot(Request::get(uri).body(Empty::new()).unwrap())
                    .await
                    .unwrap();
                let body = rsp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, format!("served /c{consumer}/{i}"));
            }
        })
    });
    join_all(requests).await;
    assert_eq!(
        *conns.borrow(),
        (2, 2),
        "1,000 requests of 200 consumers over two connections"
    );
    let key = clients.key_snapshot(&addr).unwrap();
    assert_eq!(
        key.connections.iter().map(|c| c.leases).collect::<Vec<_>>(),
        [100, 100]
    );

    // The last lease of each connection closes it: the server sees both go.
    drop(leases);
    assert_eq!(clients.metrics().snapshot().connections, 0);
    wait_for(&mut conns, "both connections closed", |&(_, open)| {
        open == 0
    })
    .await;

    // The next consumer opens a fresh one.
    let lease = clients.get(addr);
    let uri = format!("http://{addr}/again");
    let rsp = lease
        .oneshot(Request::get(uri).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert!(rsp.status().is_success());
    // The body still holds its stream, and with it the connection, until it is dropped.
    drop(rsp);
    assert_eq!(conns.borrow().0, 3);
    wait_for(&mut conns, "closed again", |&(_, open)| open == 0).await;
}
