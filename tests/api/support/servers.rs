//! Throw-away `redis-server` and `mariadbd` processes on free loopback ports with temporary data folders.
//! A watchdog shell kills each one when the test process exits, since statics are never dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap().port()
}

/// Finds a server binary on PATH or in /usr/sbin (where Debian puts mariadbd).
fn binary(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} not found: run `scripts/services.sh install` (or `make test`)"))
}

/// Kills `pid` (a number or a shell expression) and removes `dir` once this test process is gone.
fn watch(pid: &str, dir: &Path) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null; rm -rf '{dir}'",
        parent = std::process::id(),
        dir = dir.display()
    );
    // Deliberately not waited for: it outlives every test and ends on its own.
    #[expect(clippy::zombie_processes, reason = "the watchdog must outlive the test that starts it")]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watchdog");
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up: {status}");
        }
        assert!(started.elapsed() < START_TIMEOUT, "{what} did not listen on {port} within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Redis server owned by the tests; it can be killed and started again on the same data folder and port,
/// with other persistence settings, to test what the service does when Redis loses data.
pub struct RedisServer {
    pub port: u16,
    /// Its data folder (`dump.rdb`, `appendonlydir/`).
    pub dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server with these extra arguments (persistence settings).
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on(free_port(), args)
    }

    /// A server on this port with these extra arguments.
    fn start_on(port: u16, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("stampede-redis-").tempdir().unwrap().keep();
        let mut server = Self { port, dir, child: None };
        server.resume(args);
        // The pid changes when a test restarts the server, so the watchdog reads the pid file.
        watch(&format!("$(cat '{}/redis.pid')", server.dir.display()), &server.dir);
        server
    }

    /// Starts redis-server on this server's data folder and port.
    pub fn resume(&mut self, args: &[&str]) {
        let mut child = Command::new(binary("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for_port(self.port, "redis-server", &mut child);
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would: nothing is saved beyond what the persistence setting already wrote.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a stopped replica acknowledges nothing its master sends.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id();
        let signal = if frozen { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal redis-server");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters without replicas owned by a test, for what a shared cluster cannot
/// show (a slot moved mid-sale). `redis-cli --cluster create` gives each node a third of the slots.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Every node's extra arguments, for a restart.
    args: Vec<String>,
}

/// What makes a node a cluster node: `nodes.conf` in its data folder keeps its id and slots across a restart.
const CLUSTER_ARGS: [&str; 6] =
    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"];

/// Offset of a node's cluster bus port from its client port (fixed by Redis).
const CLUSTER_BUS_OFFSET: u16 = 10_000;

impl RedisCluster {
    /// A cluster without persistence.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A cluster whose nodes also get these arguments (persistence, coverage settings); a node restarted
    /// with [`RedisCluster::restart`] gets them again.
    pub fn start_with(args: &[&str]) -> Self {
        let args: Vec<String> = CLUSTER_ARGS.iter().chain(args).map(|arg| arg.to_string()).collect();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on(free_cluster_port(), &args.iter().map(String::as_str).collect::<Vec<_>>()))
            .collect();
        let created = Command::new(binary("redis-cli"))
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
        let cluster = Self { nodes, args };
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` (all slots served, as each node sees it).
    pub fn wait_until_ok(&self) {
        let started = Instant::now();
        while !self.nodes.iter().all(|node| self.cli(node.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")) {
            assert!(started.elapsed() < START_TIMEOUT, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL of node `index`: its port refuses connections until [`RedisCluster::restart`].
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts node `index` again on its data folder and port; its `nodes.conf` makes it rejoin as itself,
    /// with its slots.
    pub fn restart(&mut self, index: usize) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.nodes[index].resume(&args);
    }

    /// fred's URL of the cluster: the first node, the others as `node` parameters.
    pub fn url(&self) -> String {
        let others: Vec<String> = self.nodes[1..].iter().map(|node| format!("node=127.0.0.1:{}", node.port)).collect();
        format!("redis-cluster://127.0.0.1:{}?{}", self.nodes[0].port, others.join("&"))
    }

    /// Runs one command with redis-cli on the node at `port`; returns its reply as redis-cli prints it
    /// (one line per element), trimmed. Panics on an error reply.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new(binary("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        let reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(out.status.success() && !reply.starts_with("ERR"), "redis-cli {args:?} on {port}: {reply}");
        reply
    }
}

/// A free port whose cluster bus port (+10,000) is a valid port and free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET)
            && TcpListener::bind(("127.0.0.1", bus)).is_ok()
        {
            return port;
        }
    }
}

/// A MariaDB server owned by the tests; it can be stopped and started again on the same data and port,
/// to test what the service does while MySQL is down.
pub struct MariaDb {
    pub port: u16,
    datadir: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    pub fn start() -> Self {
        let root = tempfile::Builder::new().prefix("stampede-mariadb-").tempdir_in(fast_tmp()).unwrap().keep();
        let datadir = root.join("data");
        let installed = Command::new(binary("mariadb-install-db"))
            .arg(format!("--datadir={}", datadir.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--rpm"])
            .arg(format!("--user={}", current_user()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run mariadb-install-db");
        assert!(installed.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&installed.stderr));
        let mut server = Self { port: free_port(), datadir, child: None };
        server.resume();
        // The pid changes when a test restarts the server, so the watchdog reads the pid file.
        watch(&format!("$(cat '{}/mysqld.pid')", server.datadir.display()), &root);
        server
    }

    /// Starts mariadbd on this server's data and port.
    pub fn resume(&mut self) {
        let datadir = self.datadir.display().to_string();
        let mut command = Command::new(binary("mariadbd"));
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={datadir}"))
            .arg(format!("--socket={datadir}/mysqld.sock"))
            .arg(format!("--pid-file={datadir}/mysqld.pid"))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=256M",
                "--max-connections=2000",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if current_user() == "root" {
            command.arg("--user=root");
        }
        let mut child = command.spawn().expect("start mariadbd");
        wait_for_port(self.port, "mariadbd", &mut child);
        if let Some(old) = self.child.replace(child) {
            drop(old);
        }
    }

    /// Kills mariadbd at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A URL for database `name` (`--skip-grant-tables`: any user is let in).
    pub fn url(&self, name: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// tmpfs when there is one: MariaDB start-up and DDL are much faster off disk.
fn fast_tmp() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() { shm } else { std::env::temp_dir() }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
