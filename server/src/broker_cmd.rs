//! `docproc broker`: the broker served over gRPC until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use docproc_broker::{Broker, BrokerConfig, Durability};

/// Flags of `docproc broker`; each can also come from the environment.
/// Unset settings take the values of `BrokerConfig::default()`.
#[derive(Debug, clap::Args)]
pub(crate) struct BrokerArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "DOCPROC_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory of the RocksDB database.
    #[arg(long, env = "DOCPROC_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// sync (fsync before answering, group commit), batch[:MS] (fsync every
    /// MS, default 10; a power cut loses up to that), or none (no fsync).
    #[arg(long, env = "DOCPROC_DURABILITY", default_value = "sync")]
    durability: String,
    /// Largest payload in bytes [default: 1 MiB].
    #[arg(long, env = "DOCPROC_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Lease timeout for messages that set none, in ms [default: 30000].
    #[arg(long, env = "DOCPROC_LEASE_TIMEOUT_MS")]
    lease_timeout_ms: Option<u64>,
    /// Delivery attempts for messages that set none [default: 5].
    #[arg(long, env = "DOCPROC_MAX_ATTEMPTS")]
    max_attempts: Option<u32>,
    /// How long final messages stay queryable, in seconds [default: 86400].
    #[arg(long, env = "DOCPROC_RETENTION_SECS")]
    retention_secs: Option<u64>,
    /// How long dedup keys are remembered, in seconds [default: 600].
    #[arg(long, env = "DOCPROC_DEDUP_WINDOW_SECS")]
    dedup_window_secs: Option<u64>,
}

impl BrokerArgs {
    fn config(&self) -> anyhow::Result<BrokerConfig> {
        let mut c = BrokerConfig::with_dir(&self.data_dir);
        c.durability = self
            .durability
            .parse::<Durability>()
            .map_err(|e| anyhow::anyhow!("--durability / DOCPROC_DURABILITY: {e}"))?;
        if let Some(v) = self.max_message_bytes {
            c.max_message_bytes = v;
        }
        if let Some(v) = self.lease_timeout_ms {
            c.default_lease_timeout_ms = v;
        }
        if let Some(v) = self.max_attempts {
            anyhow::ensure!(
                v > 0,
                "--max-attempts / DOCPROC_MAX_ATTEMPTS must be at least 1"
            );
            c.default_max_attempts = v;
        }
        if let Some(v) = self.retention_secs {
            c.retention_ms = v * 1000;
        }
        if let Some(v) = self.dedup_window_secs {
            c.dedup_window_ms = v * 1000;
        }
        Ok(c)
    }
}

pub(crate) async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let broker = Broker::open(config.clone())
        .with_context(|| format!("opening the broker in {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, durability = %config.durability, "broker serving");
    let mut fatal = broker.fatal();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down"),
            _ = fatal.wait_for(|f| f.is_some()) => tracing::error!("storage failed; shutting down"),
        }
    };
    let served = docproc_broker::serve(broker.clone(), listener, shutdown).await;
    // Consumers' streams end when the broker closes; give in-flight writes a moment.
    tokio::time::sleep(Duration::from_millis(10)).await;
    broker.close();
    served?;
    if let Some(reason) = broker.fatal().borrow().clone() {
        anyhow::bail!("broker stopped after a storage failure: {reason}");
    }
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
