//! `docproc broker`: the broker served over gRPC until SIGINT/SIGTERM.

use std::time::Duration;

use anyhow::Context;
use docproc_broker::ServeOptions;
use docproc_server::settings::build;

use crate::cli_settings::{read_pem, BrokerCmd, Overrides};

/// Flags of `docproc broker`; unset settings take `BrokerConfig::default()`.
#[derive(Debug, clap::Args)]
pub(crate) struct BrokerArgs {
    #[command(flatten)]
    settings: Overrides<BrokerCmd>,
}

pub(crate) async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let Some(st) = args.settings.start()? else {
        return Ok(());
    };
    let bs = build::broker(&st)?;
    let config = bs.broker;
    let tls = match &bs.tls {
        Some(t) => Some((read_pem(&t.cert)?, read_pem(&t.key)?)),
        None => None,
    };
    if bs.keys.is_empty() {
        tracing::warn!("no API keys configured: every gRPC call is accepted");
    }
    let queue = docproc_queue::rocksdb::open_with(
        config.clone(),
        docproc_queue::RetryPolicy::default(),
        "rocksdb",
    )
    .with_context(|| format!("opening the broker in {}", config.data_dir.display()))?;
    let broker = queue.api().broker().clone();
    let listener = tokio::net::TcpListener::bind(bs.listen)
        .await
        .with_context(|| format!("binding {}", bs.listen))?;
    tracing::info!(listen = %listener.local_addr()?, durability = %config.durability, tls = tls.is_some(), keys = bs.keys.len(), "broker serving");
    let (stop_ops, ops_stopped) = tokio::sync::watch::channel(false);
    let ops = match bs.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(metrics = %l.local_addr()?, "metrics listening");
            let state = docproc_server::ops_http::OpsState {
                queue: std::sync::Arc::new(queue),
                workers: None,
                metrics: Default::default(),
                keys: bs.keys.clone(),
            };
            let mut stopped = ops_stopped;
            Some(tokio::spawn(docproc_server::ops_http::serve(
                l,
                state,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    let mut fatal = broker.fatal();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down"),
            _ = fatal.wait_for(|f| f.is_some()) => tracing::error!("storage failed; shutting down"),
        }
    };
    let options = ServeOptions {
        keys: bs.keys,
        tls,
        ..bs.serve
    };
    let served = docproc_broker::serve_with(broker.clone(), listener, options, shutdown).await;
    stop_ops.send_replace(true);
    if let Some(ops) = ops {
        let _ = ops.await;
    }
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
