//! Shared helpers for the cross-crate integration tests: brokers served on
//! `127.0.0.1:0` with a shutdown handle, and the queue conformance suite.

pub mod conformance;
pub mod services;

use std::net::SocketAddr;

use docproc_broker::{Broker, BrokerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A broker served over gRPC on a loopback port for one test.
pub struct TestBroker {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The engine behind the service.
    pub broker: Broker,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBroker {
    /// Serves a broker with `cfg` on a fresh loopback port.
    pub async fn start(cfg: BrokerConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve_on(cfg, listener)
    }

    /// Serves a broker with `cfg` on `listener`.
    pub fn serve_on(cfg: BrokerConfig, listener: tokio::net::TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let broker = Broker::open(cfg)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let b = broker.clone();
        let task = tokio::spawn(async move {
            let _ = docproc_broker::serve(b, listener, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Self {
            addr,
            broker,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `grpc://` URL of the broker.
    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// Stops serving and closes the database.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.broker.close();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.broker.close();
    }
}
