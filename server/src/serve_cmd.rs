//! `docproc serve`, `docproc worker` and the internal `docproc extract`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use docproc_server::config::ServeConfig;
use docproc_server::extract::{sandbox, Format, Limits};
use docproc_server::llm::LlmConfig;

use crate::broker_cmd::shutdown_signal;

/// Settings shared by `serve` and `worker`; unset ones take
/// `ServeConfig::default()`.
#[derive(Debug, clap::Args)]
pub(crate) struct JobArgs {
    /// Uploads and results live here (and the embedded queue by default).
    #[arg(long, env = "DOCPROC_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Queue URL: rocksdb://PATH, memory://, grpc://HOST:PORT, redis://HOST:PORT[/DB], kafka://HOST:PORT (kafka feature) [default: rocksdb://DATA_DIR/queue].
    #[arg(long, env = "DOCPROC_QUEUE")]
    queue: Option<String>,
    /// Spreadsheet workers [default: 2].
    #[arg(long, env = "EXCEL_WORKERS")]
    excel_workers: Option<usize>,
    /// PDF workers [default: 2].
    #[arg(long, env = "PDF_WORKERS")]
    pdf_workers: Option<usize>,
    /// Analysis workers [default: 1].
    #[arg(long, env = "AI_WORKERS")]
    ai_workers: Option<usize>,
    /// Lease of each job in seconds: a silent worker loses the job [default: 300].
    #[arg(long, env = "DOCPROC_JOB_TIMEOUT_SECS")]
    job_timeout_secs: Option<u64>,
    /// Failures retried before a job fails [default: 3].
    #[arg(long, env = "DOCPROC_MAX_RETRIES")]
    max_retries: Option<u32>,
    /// Lease renewal and cancel check interval in ms [default: a third of the job timeout, at most 30 s].
    #[arg(long, env = "DOCPROC_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Seconds jobs in hand may run on after SIGTERM before they are handed back [default: 25].
    #[arg(long, env = "DOCPROC_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<u64>,
    /// Hours results are kept [default: 168].
    #[arg(long, env = "DOCPROC_RESULT_RETENTION_HOURS")]
    result_retention_hours: Option<u64>,
    /// OpenAI-compatible API base URL for analysis summaries (e.g. https://api.openai.com/v1) [default: none, built-in summaries].
    #[arg(long, env = "DOCPROC_LLM_URL")]
    llm_url: Option<String>,
    /// Model asked for summaries (needed with --llm-url).
    #[arg(long, env = "DOCPROC_LLM_MODEL")]
    llm_model: Option<String>,
    /// Bearer token of the LLM endpoint.
    #[arg(long, env = "DOCPROC_LLM_API_KEY", hide_env_values = true)]
    llm_api_key: Option<String>,
    /// Seconds a summary request may take before the built-in summary is used [default: 30].
    #[arg(long, env = "DOCPROC_LLM_TIMEOUT_SECS")]
    llm_timeout_secs: Option<u64>,
    /// The program run as the extractor instead of this binary (tests).
    #[arg(long, hide = true)]
    extractor: Option<PathBuf>,
    #[command(flatten)]
    notify: crate::notify_args::NotifyArgs,
}

impl JobArgs {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let mut c = ServeConfig {
            data_dir: self.data_dir.clone(),
            queue_url: self.queue.clone(),
            extractor: self.extractor.clone(),
            ..ServeConfig::default()
        };
        if let Some(n) = self.excel_workers {
            c.pools.excel = n;
        }
        if let Some(n) = self.pdf_workers {
            c.pools.pdf = n;
        }
        if let Some(n) = self.ai_workers {
            c.pools.ai = n;
        }
        if let Some(s) = self.job_timeout_secs {
            anyhow::ensure!(
                (1..=86_400).contains(&s),
                "--job-timeout-secs / DOCPROC_JOB_TIMEOUT_SECS must be 1 to 86400"
            );
            c.job_timeout = Duration::from_secs(s);
        }
        if let Some(n) = self.max_retries {
            anyhow::ensure!(
                n <= 100,
                "--max-retries / DOCPROC_MAX_RETRIES must be at most 100"
            );
            c.max_retries = n;
        }
        if let Some(ms) = self.heartbeat_ms {
            anyhow::ensure!(
                ms >= 10,
                "--heartbeat-ms / DOCPROC_HEARTBEAT_MS must be at least 10"
            );
            c.heartbeat = Some(Duration::from_millis(ms));
        }
        if let Some(g) = self.shutdown_grace_secs {
            c.shutdown_grace = Duration::from_secs(g);
        }
        if let Some(h) = self.result_retention_hours {
            c.result_retention = Duration::from_secs(h * 3600);
        }
        if let Some(url) = &self.llm_url {
            let model = self
                .llm_model
                .clone()
                .context("--llm-url needs --llm-model / DOCPROC_LLM_MODEL")?;
            let mut llm = LlmConfig::new(url.clone(), model);
            llm.api_key = self.llm_api_key.clone().filter(|k| !k.is_empty());
            if let Some(t) = self.llm_timeout_secs {
                anyhow::ensure!(
                    (1..=600).contains(&t),
                    "--llm-timeout-secs / DOCPROC_LLM_TIMEOUT_SECS must be 1 to 600"
                );
                llm.timeout = Duration::from_secs(t);
            }
            c.llm = Some(llm);
        }
        self.notify.apply(&mut c.notify)?;
        if let Some(n) = self.notify.webhook_workers {
            c.pools.webhook = n;
        }
        Ok(c)
    }
}

/// Flags of `docproc serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// HTTP address.
    #[arg(long, env = "DOCPROC_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest upload in bytes [default: 104857600].
    #[arg(long, env = "DOCPROC_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<u64>,
    #[command(flatten)]
    jobs: JobArgs,
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = args.jobs.config()?;
    cfg.listen = args.listen;
    if let Some(m) = args.max_upload_bytes {
        cfg.max_upload_bytes = m;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "http listening");
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
    jobs: JobArgs,
}

pub(crate) async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let cfg = args.jobs.config()?;
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
    sandbox::child_main(format, &args.input, &args.output_dir, &args.title, &limits)
}
