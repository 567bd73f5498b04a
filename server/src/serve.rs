//! Wiring of `docproc serve` and `docproc worker`: open the queue and the
//! result store, start the worker pools, serve HTTP until shutdown, then
//! stop the workers and close the queue.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::config::ServeConfig;
use crate::http::rate::RateLimiter;
use crate::http::{app, AppState};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::notify::webhook::load_or_create_secret;
use crate::notify::{self, Hub, Notifier, NotifyError};
use crate::results::ResultStore;
use crate::sandbox::Sandbox;
use crate::worker::Pools;
use docproc_queue::{self as queue, Queue, QueueError};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The queue could not be opened.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// A directory or the listener failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The LLM endpoint settings cannot work.
    #[error("{0}")]
    Llm(#[from] crate::llm::LlmError),
    /// The notification settings cannot work.
    #[error("notifications: {0}")]
    Notify(#[from] NotifyError),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The embedded queue's storage failed (a write or sync error, a full
    /// disk): it takes no more writes, so the process stops.
    #[error("the queue's storage failed: {0}")]
    Storage(String),
}

/// How often old results are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

fn sandbox(cfg: &ServeConfig) -> std::io::Result<Sandbox> {
    let mut s = Sandbox::current(cfg.limits.clone())?;
    if let Some(exe) = &cfg.extractor {
        s.exe = exe.clone();
    }
    s.allow_unlimited = cfg.allow_unlimited_extractors;
    if s.allow_unlimited {
        tracing::warn!("extract.allow_unlimited: an extractor that cannot set its resource limits runs without them");
    }
    Ok(s)
}

fn notifier(
    cfg: &ServeConfig,
    queue: Arc<dyn docproc_queue::Queue>,
    results: ResultStore,
    metrics: Arc<Metrics>,
) -> Result<Arc<Notifier>, ServeError> {
    crate::durable::create_private_dir_all(&cfg.data_dir)?;
    let secret = load_or_create_secret(
        cfg.notify.webhook.secret.as_deref(),
        &cfg.webhook_secret_file(),
    )?;
    let mut n = Notifier::new(&cfg.notify, &secret, results, queue)?;
    n.webhooks.metrics = metrics;
    Ok(Arc::new(n))
}

/// The job handlers and the pools that feed them.
fn workers(
    cfg: &ServeConfig,
    queue: Arc<dyn docproc_queue::Queue>,
    results: ResultStore,
    notifier: Arc<Notifier>,
) -> Result<Pools, ServeError> {
    let mut sizes = cfg.pools.clone();
    if cfg.notify.email.is_none() {
        sizes.email = 0;
    }
    let mut jobs = Jobs::new(queue.clone(), results, cfg.uploads_dir(), sandbox(cfg)?);
    jobs.heartbeat = cfg.heartbeat;
    jobs.notifier = Some(notifier);
    if let Some(llm) = &cfg.llm {
        jobs.summarizer = Some(crate::llm::Summarizer::new(llm.clone())?);
        tracing::info!(url = %llm.url, model = %llm.model, "analysis summaries from an LLM endpoint");
    }
    Ok(Pools::new(
        queue,
        Arc::new(jobs),
        &sizes.specs(),
        sizes.scaling(),
    ))
}

/// Serves the HTTP API and runs the worker pools until `shutdown` resolves.
/// The listener answers from the start: `/healthz` 200 and everything else
/// 503 `starting` until the queue is open and the workers run.
pub async fn serve(
    cfg: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let cfg = Arc::new(cfg);
    let tls = match &cfg.tls {
        Some(t) => Some(crate::http::tls::server_config(&t.cert, &t.key).map_err(ServeError::Tls)?),
        None => None,
    };
    let local = listener.local_addr()?;
    let ready = Arc::new(OnceLock::new());
    let (closing_tx, closing) = watch::channel(false);
    let (abort_tx, abort) = tokio::sync::oneshot::channel::<()>();
    let stop_serving = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = abort => {}
        }
        // WebSocket connections close (1001) so the server can finish.
        closing_tx.send_replace(true);
    };
    let front = crate::http::front(ready.clone());
    let gate = Arc::new(cfg.http.gate());
    let mut server = tokio::spawn(crate::http::listen::serve(
        listener,
        tls,
        front,
        cfg.http,
        cfg.max_header_bytes,
        gate.clone(),
        stop_serving,
    ));
    let started = tokio::select! {
        s = start(&cfg, closing, gate) => s,
        // Stopped while starting.
        done = &mut server => return flatten(done),
    };
    let (state, mut running) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = abort_tx.send(());
            let _ = server.await;
            return Err(e);
        }
    };
    let queue = state.queue.clone();
    let _ = ready.set(app(state));
    tracing::info!(
        listen = %local,
        queue = %queue.backend(),
        data_dir = %cfg.data_dir.display(),
        "docproc serve ready"
    );
    let mut abort_tx = Some(abort_tx);
    let served = tokio::select! {
        done = &mut server => flatten(done),
        reason = storage_failed(queue.storage_failure()) => {
            tracing::error!(error = %reason, "the queue's storage failed; docproc serve stops");
            if let Some(abort) = abort_tx.take() {
                let _ = abort.send(());
            }
            let _ = (&mut server).await;
            Err(ServeError::Storage(reason))
        }
    };
    running.stop(grace(&cfg, &served)).await;
    queue.close().await;
    drop(abort_tx);
    served
}

/// Resolves with the reason once the queue's storage in this process
/// failed; never for a queue that cannot fail that way.
async fn storage_failed(failure: Option<watch::Receiver<Option<String>>>) -> String {
    if let Some(mut rx) = failure {
        if let Ok(reason) = rx.wait_for(|f| f.is_some()).await {
            return reason.clone().unwrap_or_default();
        }
    }
    std::future::pending().await
}

fn flatten(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), ServeError> {
    match r {
        Ok(r) => Ok(r?),
        Err(e) => Err(ServeError::Io(std::io::Error::other(e.to_string()))),
    }
}

/// The tasks `docproc serve` runs beside the HTTP server.
struct Running {
    stop: watch::Sender<bool>,
    workers: tokio::task::JoinSet<()>,
    pools: Arc<Pools>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops taking jobs, drains the pools within `grace`, ends the other
    /// tasks.
    async fn stop(&mut self, grace: Duration) {
        self.stop.send_replace(true);
        drain(&mut self.workers, &self.pools, grace).await;
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Opens the queue and the result store, starts the pools, the event hub,
/// the expiry watcher and the sweeper.
async fn start(
    cfg: &Arc<ServeConfig>,
    closing: watch::Receiver<bool>,
    connections: Arc<docproc_broker::conn::Gate>,
) -> Result<(AppState, Running), ServeError> {
    let metrics = Arc::new(Metrics::default());
    let queue = open_queue(&cfg.queue_url(), cfg.queue_wait).await?;
    let results = ResultStore::open(cfg.results_dir())?;
    crate::durable::create_private_dir_all_async(cfg.uploads_dir()).await?;
    let notifier = notifier(cfg, queue.clone(), results.clone(), metrics.clone())?;
    let pools = Arc::new(workers(
        cfg,
        queue.clone(),
        results.clone(),
        notifier.clone(),
    )?);
    let (stop, stopped) = watch::channel(false);
    let workers = pools.start(stopped.clone());
    let hub = Hub::new(queue.clone(), cfg.notify.hub.clone());
    let tasks = vec![
        tokio::spawn(hub.clone().run(stopped.clone(), Some(metrics.clone()))),
        tokio::spawn(notify::watch_expired(
            queue.clone(),
            notifier.clone(),
            crate::jobs::targets_of,
            stopped.clone(),
        )),
        tokio::spawn(sweep(
            results.clone(),
            cfg.uploads_dir(),
            cfg.result_retention,
            stopped,
        )),
    ];
    let app = App::new(
        queue.clone(),
        results.clone(),
        notifier.clone(),
        hub.clone(),
        cfg.uploads_dir(),
        cfg.max_retries,
        cfg.job_timeout,
    );
    let state = AppState {
        app,
        queue,
        results,
        config: cfg.clone(),
        workers: Some(pools.clone()),
        hub,
        notifier,
        closing,
        metrics,
        upload_limiter: Arc::new(RateLimiter::new(cfg.upload_rate_per_min)),
        connections,
    };
    let running = Running {
        stop,
        workers,
        pools,
        tasks,
    };
    Ok((state, running))
}

/// Opens the queue, waiting up to `wait` for a backend that does not answer
/// yet (processes of one deployment start in any order); a bad URL, a
/// refused key or a backend that is still silent then is an error.
async fn open_queue(url: &str, wait: Duration) -> Result<Arc<dyn Queue>, ServeError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(250);
    loop {
        match queue::open(url).await {
            Err(e) if e.is_retryable() && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "waiting for the queue backend");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            opened => return Ok(opened?),
        }
    }
}

/// Runs only the worker pools (no HTTP) until `shutdown` resolves.
pub async fn work(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let url = cfg.queue_url();
    let queue = tokio::select! {
        q = open_queue(&url, cfg.queue_wait) => q?,
        // Stopped while waiting for the backend.
        _ = &mut shutdown => return Ok(()),
    };
    let results = ResultStore::open(cfg.results_dir())?;
    let metrics = Arc::new(Metrics::default());
    let notifier = notifier(&cfg, queue.clone(), results.clone(), metrics.clone())?;
    let pools = Arc::new(workers(&cfg, queue.clone(), results, notifier)?);
    let (stop, stopped) = watch::channel(false);
    let mut workers = pools.start(stopped.clone());
    let ops = match cfg.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(metrics = %listener.local_addr()?, "metrics listening");
            let state = crate::ops_http::OpsState {
                queue: queue.clone(),
                workers: Some(pools.clone()),
                metrics,
                keys: cfg.keys.clone(),
            };
            let mut stopped = stopped;
            Some(tokio::spawn(crate::ops_http::serve(
                listener,
                state,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    tracing::info!(queue = %queue.backend(), pools = ?cfg.pools, "docproc worker ready");
    let outcome = tokio::select! {
        _ = &mut shutdown => Ok(()),
        reason = storage_failed(queue.storage_failure()) => {
            tracing::error!(error = %reason, "the queue's storage failed; docproc worker stops");
            Err(ServeError::Storage(reason))
        }
    };
    stop.send_replace(true);
    drain(&mut workers, &pools, grace(&cfg, &outcome)).await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    queue.close().await;
    outcome
}

/// How long jobs in hand may run on as the process stops: the configured
/// grace on a shutdown, none once the queue failed — their results could
/// not be recorded, and the backend has handed (or will hand) the jobs to
/// other workers.
fn grace<T>(cfg: &ServeConfig, outcome: &Result<T, ServeError>) -> Duration {
    match outcome {
        Err(ServeError::Storage(_)) => Duration::ZERO,
        _ => cfg.shutdown_grace,
    }
}

/// Lets jobs in hand finish within `grace`; then extractions still running
/// are stopped and their jobs handed back to the queue, and after a few more
/// seconds any other task left (a notification, an analysis) is aborted and
/// its job returns when its lease expires.
async fn drain(workers: &mut tokio::task::JoinSet<()>, pools: &Pools, grace: Duration) {
    if tokio::time::timeout(grace, join_all(workers)).await.is_ok() {
        return;
    }
    tracing::warn!(
        ?grace,
        "jobs still running after the shutdown grace; handing them back"
    );
    pools.hand_back();
    if tokio::time::timeout(HAND_BACK_WAIT, join_all(workers))
        .await
        .is_err()
    {
        workers.abort_all();
        join_all(workers).await;
    }
}

async fn join_all(workers: &mut tokio::task::JoinSet<()>) {
    while workers.join_next().await.is_some() {}
}

/// How long handing jobs back may take before the tasks are aborted.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// Removes results past the retention, and uploads as old (those of jobs
/// whose worker died with them and that failed by lease expiry).
async fn sweep(
    results: ResultStore,
    uploads: std::path::PathBuf,
    retention: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        match results.sweep(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "old results removed"),
            Err(e) => tracing::warn!(error = %e, "result sweep failed"),
        }
        match crate::results::remove_older_than(&uploads, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "orphaned uploads removed"),
            Err(e) => tracing::warn!(error = %e, "upload sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
