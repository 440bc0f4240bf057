//! A TCP proxy a test repoints: the service connects to it, and the test moves every connection to another
//! server at once (a failover to a promoted replica, as a sentinel or a DNS switch would do it).

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Where new connections go, and the token that ends the connections made to it.
struct Target {
    port: u16,
    connections: CancellationToken,
}

/// A loopback proxy to `127.0.0.1:<target port>`; stops with the test's runtime.
pub struct Proxy {
    pub port: u16,
    target: Arc<Mutex<Target>>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(Mutex::new(Target { port: target_port, connections: CancellationToken::new() }));
        let shared = target.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (port, ended) = {
                    let target = shared.lock().unwrap();
                    (target.port, target.connections.clone())
                };
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = ended.cancelled() => {}
                    }
                });
            }
        });
        Self { port, target }
    }

    /// Closes every connection made so far; new ones go to `port`.
    pub fn repoint(&self, port: u16) {
        let mut target = self.target.lock().unwrap();
        target.port = port;
        std::mem::replace(&mut target.connections, CancellationToken::new()).cancel();
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
