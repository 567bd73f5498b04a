//! Settings of `docproc serve` and `docproc worker`, with every default in
//! [`ServeConfig::default`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use docproc_broker::auth::Keys;

use crate::jobs::types as job_types;
use crate::llm::LlmConfig;
use crate::notify::NotifyConfig;
use crate::worker::scale::{PoolSpec, Scaling};
use docproc_extract::Limits;

/// Worker pool sizes per job type, and how the extraction and analysis
/// pools scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Pools {
    /// Spreadsheet workers (the pool's minimum when it scales).
    pub excel: usize,
    /// PDF workers (the minimum when it scales).
    pub pdf: usize,
    /// Analysis workers (the minimum when it scales).
    pub ai: usize,
    /// Concurrent webhook deliveries.
    pub webhook: usize,
    /// Concurrent mails (0 unless SMTP is configured).
    pub email: usize,
    /// Most spreadsheet workers; at or below `excel`: a fixed pool.
    pub excel_max: usize,
    /// Most PDF workers; at or below `pdf`: a fixed pool.
    pub pdf_max: usize,
    /// Most analysis workers; at or below `ai`: a fixed pool.
    pub ai_max: usize,
    /// A worker idle this long leaves a pool above its minimum.
    pub scale_idle: Duration,
    /// A pool grows only while the load per core is below this.
    pub scale_max_load: f64,
}

impl Default for Pools {
    /// excel 2, pdf 2, ai 1, webhook 4, email 1, all fixed; scaling pools
    /// give back workers idle for 60 s and grow while the load per core is
    /// below 1.
    fn default() -> Self {
        Self {
            excel: 2,
            pdf: 2,
            ai: 1,
            webhook: 4,
            email: 1,
            excel_max: 0,
            pdf_max: 0,
            ai_max: 0,
            scale_idle: Duration::from_secs(60),
            scale_max_load: 1.0,
        }
    }
}

impl Pools {
    /// Every pool that may have a worker, with its bounds.
    pub fn specs(&self) -> Vec<PoolSpec> {
        [
            (job_types::EXCEL, self.excel, self.excel_max),
            (job_types::PDF, self.pdf, self.pdf_max),
            (job_types::AI, self.ai, self.ai_max),
            (job_types::WEBHOOK, self.webhook, 0),
            (job_types::EMAIL, self.email, 0),
        ]
        .into_iter()
        .map(|(job_type, min, max)| PoolSpec {
            job_type,
            min,
            max: max.max(min),
        })
        .filter(|p| p.max > 0)
        .collect()
    }

    /// When the pools grow and shrink (system clock, `/proc/loadavg`).
    pub fn scaling(&self) -> Scaling {
        Scaling {
            idle: self.scale_idle,
            max_load: self.scale_max_load,
            ..Scaling::default()
        }
    }
}

/// Everything `docproc serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Uploads, results and (by default) the embedded queue live here.
    pub data_dir: PathBuf,
    /// Queue URL; `None` is the embedded broker in `DATA_DIR/queue`.
    pub queue_url: Option<String>,
    /// How long startup waits for a queue backend that does not answer yet
    /// (a broker, Redis or RabbitMQ still starting) before giving up.
    pub queue_wait: Duration,
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Worker pool sizes.
    pub pools: Pools,
    /// Lease of every job: a worker silent this long loses it.
    pub job_timeout: Duration,
    /// Failures retried before a job fails.
    pub max_retries: u32,
    /// How often a worker renews its lease and checks for a cancel;
    /// `None` is a third of the job timeout (at most 30 s).
    pub heartbeat: Option<Duration>,
    /// How long results are kept after their job finished.
    pub result_retention: Duration,
    /// On shutdown, how long jobs in hand may run on; then their extractors
    /// are killed and the jobs return to the queue when their leases expire.
    pub shutdown_grace: Duration,
    /// Parser input limits.
    pub limits: Limits,
    /// Let extractors run where their resource limits cannot be set.
    pub allow_unlimited_extractors: bool,
    /// The `docproc` binary that runs extractions; `None` is this executable.
    pub extractor: Option<PathBuf>,
    /// OpenAI-compatible endpoint for analysis summaries; `None` keeps the
    /// built-in extractive summary.
    pub llm: Option<LlmConfig>,
    /// WebSocket, webhook and mail settings.
    pub notify: NotifyConfig,
    /// API keys; empty: no authentication (loopback only unless `insecure`).
    pub keys: Keys,
    /// Listen on a non-loopback address without keys.
    pub insecure: bool,
    /// PEM certificate chain and key files: serve HTTPS.
    pub tls: Option<TlsFiles>,
    /// Uploads per minute per key (per client address without keys).
    pub upload_rate_per_min: u32,
    /// Longest time any request may take.
    pub request_timeout: Duration,
    /// Largest total size of a request's headers.
    pub max_header_bytes: usize,
    /// Connection limits and timeouts of the HTTP listener.
    pub http: crate::http::listen::HttpLimits,
    /// `docproc worker`: where to serve `/metrics`; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl Default for ServeConfig {
    /// `127.0.0.1:8080`, `./data`, the embedded queue, 100 MiB uploads,
    /// [`Pools::default`], 300 s job timeout, 3 retries, results kept 7
    /// days, 25 s shutdown grace, [`Limits::default`], built-in summaries
    /// (no LLM endpoint), [`NotifyConfig::default`] (no mail), no API keys
    /// (loopback only), plaintext, 600 uploads a minute per key, 300 s
    /// request timeout, 16 KiB of headers, [`HttpLimits::default`]
    /// connections.
    ///
    /// [`HttpLimits::default`]: crate::http::listen::HttpLimits
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            queue_url: None,
            queue_wait: Duration::from_secs(60),
            max_upload_bytes: 100 * 1024 * 1024,
            pools: Pools::default(),
            job_timeout: Duration::from_secs(300),
            max_retries: 3,
            heartbeat: None,
            result_retention: Duration::from_secs(7 * 24 * 3600),
            shutdown_grace: Duration::from_secs(25),
            limits: Limits::default(),
            allow_unlimited_extractors: false,
            extractor: None,
            llm: None,
            notify: NotifyConfig::default(),
            keys: Keys::default(),
            insecure: false,
            tls: None,
            upload_rate_per_min: 600,
            request_timeout: Duration::from_secs(300),
            max_header_bytes: 16 * 1024,
            http: Default::default(),
            metrics_listen: None,
        }
    }
}

impl ServeConfig {
    /// The queue URL in effect.
    pub fn queue_url(&self) -> String {
        self.queue_url
            .clone()
            .unwrap_or_else(|| format!("rocksdb://{}", self.data_dir.join("queue").display()))
    }

    /// Where uploads wait for their job.
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// The webhook signing secret made when none is configured.
    pub fn webhook_secret_file(&self) -> PathBuf {
        self.data_dir.join("webhook-secret")
    }

    /// Where results are stored, one directory per job.
    pub fn results_dir(&self) -> PathBuf {
        self.data_dir.join("results")
    }
}
