//! Worker pools: per job type, a number of tasks each taking one lease at a
//! time from the queue, running its handler (extraction in the sandbox, or
//! the analysis) while renewing the lease, and finishing the job. Uploaded
//! files are removed once their job reaches a final state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::job_types;
use crate::extract::sandbox::Sandbox;
use crate::extract::Format;
use crate::llm::Summarizer;
use crate::notify::{Notifier, Targets};
use crate::queue::{
    Completion, ConsumeOptions, JobId, JobStatus, Lease, NewJob, Queue, QueueError,
};
use crate::results::ResultStore;

/// What an extraction job carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractPayload {
    /// The uploaded file: its name under the uploads directory (older
    /// jobs carry the whole path). Read it through [`Self::upload`].
    pub file: PathBuf,
    /// Its format, detected from content at upload.
    pub format: Format,
    /// The client's file name, for display only.
    pub title: String,
    /// Queue an analysis job once extraction completes.
    #[serde(default)]
    pub analyze: bool,
    /// Where to send the completion webhook.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Who gets the completion mail.
    #[serde(default)]
    pub email: Option<String>,
    /// The name of the API key that uploaded it (`write` keys see only
    /// their own jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The names the server gives uploads: 32 lower-case hex digits and
/// `.upload`.
pub fn is_upload_name(name: &str) -> bool {
    name.len() == 39
        && name.ends_with(".upload")
        && name[..32]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl ExtractPayload {
    /// The upload this job reads, under `uploads`. Whoever can produce to
    /// the queue writes this payload, so only a name of the shape the
    /// server gives uploads is taken — bare, or under `uploads` itself —
    /// and anything else (another directory, `..`, a file the server did
    /// not write) is `None`: the job can neither read nor delete it.
    pub fn upload(&self, uploads: &Path) -> Option<PathBuf> {
        let name = self.file.file_name()?.to_str()?;
        if !is_upload_name(name) {
            return None;
        }
        match self.file.parent() {
            Some(p) if !p.as_os_str().is_empty() && p != uploads => None,
            _ => Some(uploads.join(name)),
        }
    }
}

/// Busy and total workers of one pool.
#[derive(Debug, Default)]
pub struct PoolGauge {
    /// Workers in the pool.
    pub size: AtomicUsize,
    /// Workers holding a job now.
    pub busy: AtomicUsize,
}

/// What every worker shares.
pub struct WorkerContext {
    /// The queue.
    pub queue: Arc<dyn Queue>,
    /// Where results go.
    pub results: ResultStore,
    /// Where uploads are (the files extraction jobs read).
    pub uploads: PathBuf,
    /// How extractions run.
    pub sandbox: Sandbox,
    /// Busy gauges per job type.
    pub gauges: BTreeMap<&'static str, Arc<PoolGauge>>,
    /// Lease renewal interval; `None`: a third of each job's timeout.
    pub heartbeat: Option<Duration>,
    /// Writes analysis summaries, when an endpoint is configured.
    pub summarizer: Option<Summarizer>,
    /// Sends webhooks and mail (and runs their delivery jobs).
    pub notifier: Option<Arc<Notifier>>,
    /// Turns true when the shutdown grace is over: extractions in hand stop
    /// and their jobs go back to the queue at once.
    pub hand_back: watch::Sender<bool>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("backend", &self.queue.backend())
            .finish_non_exhaustive()
    }
}

impl WorkerContext {
    /// A context with a gauge for each pool.
    pub fn new(
        queue: Arc<dyn Queue>,
        results: ResultStore,
        uploads: PathBuf,
        sandbox: Sandbox,
        pools: &[(&'static str, usize)],
    ) -> Self {
        let gauges = pools
            .iter()
            .map(|(t, n)| {
                let g = PoolGauge::default();
                g.size.store(*n, Ordering::Relaxed);
                (*t, Arc::new(g))
            })
            .collect();
        Self {
            queue,
            results,
            uploads,
            sandbox,
            gauges,
            heartbeat: None,
            summarizer: None,
            notifier: None,
            hand_back: watch::channel(false).0,
        }
    }

    /// `(job type, workers, busy)` of every pool.
    pub fn gauges(&self) -> Vec<(String, usize, usize)> {
        self.gauges
            .iter()
            .map(|(t, g)| {
                (
                    t.to_string(),
                    g.size.load(Ordering::Relaxed),
                    g.busy.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// `{job_type: {size, busy}}`, for the stats endpoint.
    pub fn utilisation(&self) -> Value {
        let m: serde_json::Map<String, Value> = self
            .gauges
            .iter()
            .map(|(t, g)| {
                (
                    t.to_string(),
                    json!({
                        "size": g.size.load(Ordering::Relaxed),
                        "busy": g.busy.load(Ordering::Relaxed),
                    }),
                )
            })
            .collect();
        Value::Object(m)
    }
}

/// Starts every pool; the tasks stop taking jobs when `shutdown` turns true
/// and finish the job in hand (or hand it back when `hand_back` turns true).
pub fn start(ctx: Arc<WorkerContext>, shutdown: watch::Receiver<bool>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for (job_type, gauge) in &ctx.gauges {
        for i in 0..gauge.size.load(Ordering::Relaxed) {
            let worker_id = format!("{}-{job_type}-{i}", std::process::id());
            set.spawn(run(ctx.clone(), job_type, worker_id, shutdown.clone()));
        }
    }
    set
}

async fn run(
    ctx: Arc<WorkerContext>,
    job_type: &'static str,
    worker_id: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let opts = ConsumeOptions::worker(worker_id.clone());
        let mut leases = match ctx.queue.consume(&[job_type.to_string()], opts).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, job_type, "cannot consume; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            // Shutdown first: no new job once it is set.
            let next = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                n = leases.next() => n,
            };
            match next {
                Some(Ok(lease)) => {
                    let gauge = ctx.gauges.get(job_type).cloned().unwrap_or_default();
                    gauge.busy.fetch_add(1, Ordering::Relaxed);
                    handle(&ctx, lease).await;
                    gauge.busy.fetch_sub(1, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, job_type, "lease stream failed");
                    break;
                }
                // The queue closed.
                None => return,
            }
        }
    }
}

/// Least time between two progress writes of one job.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How long between lease renewals: a third of the timeout, 0.1–30 s.
fn heartbeat_every(timeout: Duration) -> Duration {
    (timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

async fn handle(ctx: &WorkerContext, lease: Lease) {
    let job = lease.job();
    let span = tracing::info_span!("job", id = %job.job_id, job_type = %job.job_type, attempt = lease.attempt());
    async move {
        match lease.job().job_type.as_str() {
            job_types::EXCEL | job_types::PDF => extract_job(ctx, lease).await,
            job_types::AI => crate::analysis::run_job(ctx, lease).await,
            job_types::WEBHOOK | job_types::EMAIL => notification_job(ctx, lease).await,
            other => {
                let msg = format!("no handler for job type {other}");
                settle(None, lease.fail_permanently(&msg).await).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Removes the upload once a failed job will not run again.
pub(crate) async fn settle(upload: Option<&PathBuf>, status: Result<JobStatus, QueueError>) {
    match status {
        Ok(s) if s.is_final() => {
            if let Some(f) = upload {
                let _ = tokio::fs::remove_file(f).await;
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not record the failure"),
    }
}

async fn extract_job(ctx: &WorkerContext, mut lease: Lease) {
    let job = lease.job().clone();
    let payload: ExtractPayload = match serde_json::from_value(job.payload.clone()) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("malformed job payload: {e}");
            settle(None, lease.fail_permanently(&msg).await).await;
            return;
        }
    };
    let Some(file) = payload.upload(&ctx.uploads) else {
        let msg = format!(
            "the job's file {:?} is not an upload of this server",
            payload.file
        );
        settle(None, lease.fail_permanently(&msg).await).await;
        return;
    };
    let Some(out_dir) = ctx.results.dir(&job.job_id) else {
        settle(Some(&file), lease.fail_permanently("bad job id").await).await;
        return;
    };
    let (progress, mut reports) = watch::channel(None);
    let mut run = Box::pin(ctx.sandbox.run(
        payload.format,
        &file,
        &out_dir,
        &payload.title,
        job.timeout,
        progress,
    ));
    let every = ctx
        .heartbeat
        .unwrap_or_else(|| heartbeat_every(job.timeout));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    // The first report is written at once, later ones throttled.
    let now = tokio::time::Instant::now();
    let mut last_report = now.checked_sub(PROGRESS_EVERY).unwrap_or(now);
    let mut hand_back = ctx.hand_back.subscribe();
    let outcome = loop {
        let beat = tokio::select! {
            r = &mut run => break Some(r),
            () = async { let _ = hand_back.wait_for(|h| *h).await; } => {
                // Kill the extractor and return the job now, not at the
                // lease's end; it counts as an attempt, like an expiry.
                drop(run);
                let status = lease
                    .release("interrupted: the worker shut down; handed back")
                    .await;
                tracing::info!(?status, "job handed back at shutdown");
                return;
            }
            _ = tick.tick() => lease.heartbeat().await,
            // Progress renews the lease too; at most one write per PROGRESS_EVERY.
            Ok(()) = reports.changed(), if last_report.elapsed() >= PROGRESS_EVERY => {
                last_report = tokio::time::Instant::now();
                let p = reports.borrow_and_update().clone();
                match p {
                    Some(p) => lease.progress(json!({ "stage": "extracting", "progress": p })).await,
                    None => continue,
                }
            }
        };
        match beat {
            Ok(hb) if hb.cancelled => break None,
            Ok(_) => {}
            Err(QueueError::LeaseLost(_)) => {
                tracing::warn!("lease lost while extracting; the job runs elsewhere");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    };
    // Dropping the extraction kills its process (when cancelled).
    drop(run);
    let targets = Targets {
        callback_url: payload.callback_url.clone(),
        email: payload.email.clone(),
    };
    match outcome {
        None => {
            ctx.results.remove(&job.job_id).await;
            let notes = announce(ctx, &job, &targets).await;
            let status = lease.fail("cancelled").await;
            confirm(ctx, &job, &targets, &notes, &status, true).await;
            settle(Some(&file), status).await;
        }
        Some(Ok(summary)) => {
            let result = json!({
                "summary": summary,
                "format": payload.format,
                "json_url": format!("/api/job/{}/result", job.job_id),
                "html_url": format!("/api/job/{}/html", job.job_id),
                "markdown_url": format!("/api/job/{}/markdown", job.job_id),
            });
            // Queued before the job completes, so whoever sees it completed
            // also finds its analysis (same correlation id).
            let analysis = match payload.analyze {
                true => queue_analysis(ctx, &job).await,
                false => None,
            };
            let notes = announce(ctx, &job, &targets).await;
            let completed = lease.complete(result).await;
            if completed.is_err() {
                withdraw(ctx, &notes).await;
            }
            if !matches!(completed, Ok(Completion::Completed)) {
                if let Some(a) = analysis {
                    if let Err(e) = ctx.queue.cancel(&a).await {
                        tracing::warn!(error = %e, analysis = %a, "could not cancel the analysis");
                    }
                }
            }
            match completed {
                Ok(done) => {
                    let _ = tokio::fs::remove_file(&file).await;
                    if done == Completion::Cancelled {
                        // Cancelled while its last moments ran: no result, no analysis.
                        ctx.results.remove(&job.job_id).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not complete the job"),
            }
        }
        Some(Err(e)) => {
            tracing::info!(error = %e, "extraction failed");
            // Announced when this failure is the last one.
            let last = e.is_permanent() || lease.attempt() > job.max_retries;
            let notes = match last {
                true => announce(ctx, &job, &targets).await,
                false => Vec::new(),
            };
            let status = if e.is_permanent() {
                lease.fail_permanently(&e.to_string()).await
            } else {
                lease.fail(&e.to_string()).await
            };
            confirm(ctx, &job, &targets, &notes, &status, last).await;
            if e.is_permanent() {
                ctx.results.remove(&job.job_id).await;
                settle(Some(&file), status).await;
            } else if let Err(e) = status {
                tracing::warn!(error = %e, "could not record the failure");
            }
            // Out of retries for a passing cause (an extractor that could
            // not run): the upload stays, so the dead job can be retried,
            // until the result retention sweeps it.
        }
    }
}

/// Queues the webhook and mail of a job about to finish.
async fn announce(ctx: &WorkerContext, job: &crate::queue::Job, targets: &Targets) -> Vec<JobId> {
    match (&ctx.notifier, targets.is_empty()) {
        (Some(n), false) => n.announce(ctx.queue.as_ref(), job, targets).await,
        _ => Vec::new(),
    }
}

async fn withdraw(ctx: &WorkerContext, notes: &[JobId]) {
    if let Some(n) = &ctx.notifier {
        n.withdraw(ctx.queue.as_ref(), notes).await;
    }
}

/// After a failure was recorded: withdraws notifications announced for a
/// final state that did not come, or announces a final state that came
/// unannounced (a cancel met the failure).
async fn confirm(
    ctx: &WorkerContext,
    job: &crate::queue::Job,
    targets: &Targets,
    notes: &[JobId],
    status: &Result<JobStatus, QueueError>,
    announced: bool,
) {
    let is_final = matches!(status, Ok(s) if s.is_final());
    if announced && !is_final {
        withdraw(ctx, notes).await;
    } else if !announced && is_final {
        announce(ctx, job, targets).await;
    }
}

async fn notification_job(ctx: &WorkerContext, lease: Lease) {
    let Some(n) = &ctx.notifier else {
        let msg = "this worker has no notification settings";
        let _ = lease.fail(msg).await;
        return;
    };
    if lease.job().job_type == job_types::WEBHOOK {
        n.webhooks.run_job(lease).await;
    } else if let Some(m) = &n.mailer {
        m.run_job(lease).await;
    } else {
        let _ = lease.fail("no SMTP server is configured here").await;
    }
}

async fn queue_analysis(ctx: &WorkerContext, job: &crate::queue::Job) -> Option<JobId> {
    let mut payload = json!({ "source_job": job.job_id });
    if let Some(owner) = crate::queue::owner_of(job) {
        payload["owner"] = json!(owner);
    }
    let mut next = NewJob::new(job_types::AI, payload)
        .priority(job.priority)
        .max_retries(job.max_retries)
        .timeout(job.timeout);
    if let Some(c) = &job.correlation_id {
        next = next.correlation_id(c.clone());
    }
    if let Some(c) = &job.callback_context {
        next = next.callback_context(c.clone());
    }
    match ctx.queue.publish_one(next).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, source = %job.job_id, "could not queue the analysis");
            None
        }
    }
}
