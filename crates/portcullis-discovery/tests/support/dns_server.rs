//! A real DNS server for the DNS tests and the change-latency bench: hickory-server, in this
//! process, on 127.0.0.1 at a free port (UDP and TCP), serving an in-memory zone `test.` that
//! the caller replaces whole.
#![allow(dead_code, unreachable_pub)]

use hickory_server::authority::{Catalog, MessageResponseBuilder, ZoneType};
use hickory_server::proto::op::{Header, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
pub use hickory_server::proto::rr::RecordType;
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use portcullis_discovery::dns::{Dns, DnsBuilder};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

pub fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// One record of the test zone.
#[derive(Clone, Debug)]
pub enum Rr {
    A(&'static str, [u8; 4], u32),
    Aaaa(&'static str, [u16; 8], u32),
    Srv(&'static str, u16, u16, u16, &'static str, u32),
}

/// How the server answers questions of one record type in place of the zone's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SERVFAIL.
    ServFail,
    /// No answer at all: the question is dropped (a lost packet, for a resolver that asks
    /// once).
    Silent,
    /// NXDOMAIN with no SOA in the authority section (no negative TTL: RFC 2308 §5).
    NxDomainWithoutSoa,
    /// NOERROR with no records and no SOA (NODATA without a negative TTL).
    NoDataWithoutSoa,
}

/// The zone `test.` as a list of records, and a server on 127.0.0.1 that serves it.
pub struct TestDns {
    pub addr: SocketAddr,
    records: Vec<Rr>,
    serial: u32,
    catalog: Arc<RwLock<Arc<Catalog>>>,
    faults: Arc<RwLock<HashMap<RecordType, Fault>>>,
    server: Option<ServerFuture<Handler>>,
}

/// Answers from whatever catalog is current, so that a test can replace the zone whole,
/// unless a fault is set for the question's record type.
struct Handler {
    catalog: Arc<RwLock<Arc<Catalog>>>,
    faults: Arc<RwLock<HashMap<RecordType, Fault>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let fault = request.request_info().ok().and_then(|info| {
            let faults = self.faults.read().unwrap();
            faults.get(&info.query.query_type()).copied()
        });
        let code = match fault {
            None => {
                let catalog = self.catalog.read().unwrap().clone();
                return catalog.handle_request(request, response).await;
            }
            Some(Fault::Silent) => {
                let mut header = Header::response_from_request(request.header());
                header.set_response_code(ResponseCode::ServFail);
                return header.into();
            }
            Some(Fault::ServFail) => ResponseCode::ServFail,
            Some(Fault::NxDomainWithoutSoa) => ResponseCode::NXDomain,
            Some(Fault::NoDataWithoutSoa) => ResponseCode::NoError,
        };
        let mut header = Header::response_from_request(request.header());
        header.set_response_code(code);
        header.set_authoritative(true);
        let message =
            MessageResponseBuilder::from_message_request(request).build_no_records(header);
        response.send_response(message).await.unwrap()
    }
}

impl TestDns {
    pub async fn start(records: Vec<Rr>) -> Self {
        let mut dns = Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            records,
            serial: 0,
            catalog: Arc::new(RwLock::new(Arc::new(Catalog::new()))),
            faults: Arc::default(),
            server: None,
        };
        dns.publish();
        dns.serve().await;
        dns
    }

    /// Serves on `self.addr` (a free port the first time, the same port again after a stop).
    pub async fn serve(&mut self) {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(self.addr).await.unwrap();
            let port = udp.local_addr().unwrap().port();
            match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(tcp) => break (udp, tcp),
                // Another program has the TCP port of a new free UDP port: try another.
                Err(_) if self.addr.port() == 0 => continue,
                Err(error) => panic!("cannot listen on {}: {error}", self.addr),
            }
        };
        self.addr = udp.local_addr().unwrap();
        let mut server = ServerFuture::new(Handler {
            catalog: self.catalog.clone(),
            faults: self.faults.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5));
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.shutdown_gracefully().await.unwrap();
        }
    }

    /// Replaces the zone's records; the server answers from them at once.
    pub fn set(&mut self, records: Vec<Rr>) {
        self.records = records;
        self.publish();
    }

    /// Answers questions of type `rtype` with `fault` (`None`: from the zone again).
    pub fn fault(&mut self, rtype: RecordType, fault: Option<Fault>) {
        let mut faults = self.faults.write().unwrap();
        match fault {
            Some(fault) => faults.insert(rtype, fault),
            None => faults.remove(&rtype),
        };
    }

    /// Answers REFUSED to everything (a server without the zone) until the next `set`.
    pub fn refuse(&mut self) {
        *self.catalog.write().unwrap() = Arc::new(Catalog::new());
    }

    fn publish(&mut self) {
        self.serial += 1;
        let origin = name("test.");
        let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        // The SOA's minimum (1 s) is the negative TTL of NXDOMAIN and NODATA answers.
        let soa = SOA::new(
            name("ns.test."),
            name("admin.test."),
            self.serial,
            60,
            60,
            60,
            1,
        );
        zone.upsert_mut(
            Record::from_rdata(origin.clone(), 1, RData::SOA(soa)),
            self.serial,
        );
        for rr in &self.records {
            let record = match rr {
                Rr::A(host, ip, ttl) => {
                    Record::from_rdata(name(host), *ttl, RData::A(A::from(Ipv4Addr::from(*ip))))
                }
                Rr::Aaaa(host, ip, ttl) => Record::from_rdata(
                    name(host),
                    *ttl,
                    RData::AAAA(AAAA::from(Ipv6Addr::from(*ip))),
                ),
                Rr::Srv(service, priority, weight, port, target, ttl) => Record::from_rdata(
                    name(service),
                    *ttl,
                    RData::SRV(SRV::new(*priority, *weight, *port, name(target))),
                ),
            };
            assert!(zone.upsert_mut(record, self.serial), "{rr:?}");
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        *self.catalog.write().unwrap() = Arc::new(catalog);
    }

    /// A resolver that asks only this server, quickly.
    pub fn client(&self) -> Dns {
        self.resolver().build().unwrap()
    }

    /// The settings of [`TestDns::client`]'s resolver, for a caller that builds its own.
    pub fn resolver(&self) -> DnsBuilder {
        Dns::builder()
            .name_servers([self.addr])
            .min_ttl(Duration::from_millis(50))
            .max_ttl(Duration::from_secs(60))
            .timeout(Duration::from_millis(300))
            .backoff(Duration::from_millis(50), Duration::from_millis(400))
            .seed(7)
    }
}
