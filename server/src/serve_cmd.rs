//! `docproc serve`, `docproc worker` and the internal `docproc extract`.

use std::path::PathBuf;

use anyhow::Context;
use docproc_extract::{Format, Limits};
use docproc_server::sandbox;
use docproc_server::settings::build;

use crate::broker_cmd::shutdown_signal;
use crate::cli_settings::{Overrides, ServeCmd, WorkerCmd};

/// Flags of `docproc serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    settings: Overrides<ServeCmd>,
    /// The program run as the extractor instead of this binary (tests).
    #[arg(long, hide = true)]
    extractor: Option<PathBuf>,
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let Some(st) = args.settings.start()? else {
        return Ok(());
    };
    let mut cfg = build::serve(&st)?;
    cfg.extractor = args.extractor;
    if cfg.keys.is_empty() {
        tracing::warn!(
            "no API keys configured: every request is accepted (listening on loopback only \
             unless --insecure); `docproc key new` makes one"
        );
    } else {
        tracing::info!(keys = cfg.keys.len(), "API keys required");
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, tls = cfg.tls.is_some(), "http listening");
    docproc_server::serve::serve(cfg, listener, async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}

/// Flags of `docproc worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    settings: Overrides<WorkerCmd>,
    /// The program run as the extractor instead of this binary (tests).
    #[arg(long, hide = true)]
    extractor: Option<PathBuf>,
}

pub(crate) async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let Some(st) = args.settings.start()? else {
        return Ok(());
    };
    let mut cfg = build::serve(&st)?;
    cfg.extractor = args.extractor;
    docproc_server::serve::work(cfg, async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}

/// Flags of `docproc extract` (run by the server in a sandbox, not by hand).
#[derive(Debug, clap::Args)]
pub(crate) struct ExtractArgs {
    #[arg(long)]
    format: String,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output_dir: PathBuf,
    #[arg(long, default_value = "document")]
    title: String,
    /// Limits as JSON; missing fields take their defaults.
    #[arg(long, default_value = "{}")]
    limits: String,
    /// CPU seconds this process may use.
    #[arg(long, default_value_t = 3600)]
    cpu_secs: u64,
    /// Run on even if the resource limits cannot be set.
    #[arg(long)]
    allow_unlimited: bool,
}

/// Runs one extraction and returns the process exit code.
pub(crate) fn extract(args: ExtractArgs) -> i32 {
    let format: Format =
        match serde_json::from_value(serde_json::Value::String(args.format.clone())) {
            Ok(f) => f,
            Err(_) => {
                eprintln!("unknown format {:?}", args.format);
                return sandbox::EXIT_INVALID;
            }
        };
    let limits: Limits = match serde_json::from_str(&args.limits) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bad --limits: {e}");
            return sandbox::EXIT_IO;
        }
    };
    // Before the untrusted file is opened.
    let own = docproc_server::sandbox::rlimit::ChildLimits {
        memory_bytes: limits.memory_bytes,
        cpu_secs: args.cpu_secs,
        file_bytes: limits.max_output_bytes,
    };
    if let Err(e) = own.apply() {
        if !args.allow_unlimited {
            eprintln!("{e}; refusing to parse without limits (extract.allow_unlimited)");
            return sandbox::EXIT_NO_LIMITS;
        }
        eprintln!("{e}; parsing without limits, as extract.allow_unlimited says");
    }
    sandbox::child_main(format, &args.input, &args.output_dir, &args.title, &limits)
}
