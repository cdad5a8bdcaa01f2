//! A real etcd for the etcd tests and the change-latency bench: Debian's `etcd-server`
//! (`/usr/bin/etcd`), one process per caller on free loopback ports with a data directory of
//! its own, killed (and its data removed) on drop, passed or not.
#![allow(dead_code, unreachable_pub)]

use etcd_client::Client;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::{timeout, Instant};

const ETCD: &str = "/usr/bin/etcd";

/// An etcd process of this test's own; killed, and its data removed, on drop.
pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client_url: String,
    peer_url: String,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

impl EtcdServer {
    pub async fn start() -> Self {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: the etcd tests need a real etcd; install it with \
             `apt-get install -y etcd-server` (scripts/test does)"
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("portcullis-etcd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            dir,
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
        };
        server.run().await;
        server
    }

    /// Starts the process (again, on the same ports and data) and waits until it answers.
    async fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = Command::new(ETCD)
            .args(["--name", "portcullis-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args([
                "--initial-cluster",
                &format!("portcullis-test={}", self.peer_url),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut client) = self.client().await {
                if let Ok(Ok(_)) = timeout(Duration::from_secs(1), client.get("ready", None)).await
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within 30 s; see {}",
                self.dir.join("etcd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL clients connect to: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.client_url
    }

    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        Client::connect([self.client_url.as_str()], None).await
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Killed and started again: same data, same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }

    /// Killed and replaced by an empty etcd on the same port (its data removed): revisions
    /// start again from 1, as after a restore from a backup without `--bump-revision`.
    pub async fn replace_with_empty(&mut self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.join("data")).unwrap();
        self.run().await;
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
