//! A TCP balancer in front of the command-side replicas, as a Kubernetes Service is: each new
//! connection goes to the next replica that accepts one. A connection stays with its replica
//! until either end closes it, so a replica that dies takes its connections with it and the
//! clients reconnect.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub struct Balancer {
    backends: Vec<u16>,
    next: AtomicUsize,
}

impl Balancer {
    /// Listens on `port` (loopback) and forwards to `backends` until the process ends.
    pub async fn start(port: u16, backends: Vec<u16>) -> std::io::Result<Arc<Balancer>> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let balancer = Arc::new(Balancer {
            backends,
            next: AtomicUsize::new(0),
        });
        let serving = balancer.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let balancer = serving.clone();
                tokio::spawn(async move { balancer.forward(client).await });
            }
        });
        Ok(balancer)
    }

    async fn forward(&self, mut client: TcpStream) {
        let _ = client.set_nodelay(true);
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.backends.len() {
            let port = self.backends[(first + i) % self.backends.len()];
            let connecting = TcpStream::connect(("127.0.0.1", port));
            if let Ok(Ok(mut server)) =
                tokio::time::timeout(Duration::from_millis(500), connecting).await
            {
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                return;
            }
        }
        // No replica accepts: the client sees its connection closed, as behind a Service
        // with no ready endpoints.
    }
}
