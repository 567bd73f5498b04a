//! Extraction jobs (`excel_processing`, `pdf_processing`): their payload,
//! the rule for which upload one may read, and the handler that runs the
//! extractor in the sandbox, renews the lease, reports progress, and on
//! the way out queues the analysis and the notifications.

use std::path::{Path, PathBuf};
use std::time::Duration;

use docproc_extract::Format;
use docproc_queue::{Completion, Job, JobId, JobStatus, Lease, NewJob, QueueError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::types as job_types;
use super::{settle, AnalysisPayload, Jobs};
use crate::notify::Targets;

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
    /// As the queue stores it.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Where its notifications go.
    pub fn targets(&self) -> Targets {
        Targets {
            callback_url: self.callback_url.clone(),
            email: self.email.clone(),
        }
    }

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

/// Least time between two progress writes of one job.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How long between lease renewals: a third of the timeout, 0.1–30 s.
fn heartbeat_every(timeout: Duration) -> Duration {
    (timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Runs an extraction job in the sandbox, renewing the lease and passing
/// progress on; queues the analysis and the notifications it asks for.
pub(super) async fn run(
    ctx: &Jobs,
    mut lease: Lease,
    payload: ExtractPayload,
    mut hand_back: watch::Receiver<bool>,
) {
    let job = lease.job().clone();
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
    let outcome = loop {
        let beat = tokio::select! {
            r = &mut run => break Some(r),
            () = async { let _ = hand_back.wait_for(|h| *h).await; } => {
                // Kill the extractor and return the job now, not at the
                // lease's end (on the broker a release, not counted as an
                // attempt; elsewhere an attempt retried at once).
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
    let targets = payload.targets();
    match outcome {
        None => {
            ctx.results.remove(&job.job_id).await;
            let notes = announce(ctx, &job, &targets).await;
            let status = lease.fail("cancelled").await;
            confirm(ctx, &job, &targets, &notes, &status, true).await;
            settle(Some(&file), status).await;
        }
        Some(Ok(summary)) => {
            let mut result = super::completed(&job.job_id, summary);
            result["format"] = json!(payload.format);
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
async fn announce(ctx: &Jobs, job: &Job, targets: &Targets) -> Vec<JobId> {
    match (&ctx.notifier, targets.is_empty()) {
        (Some(n), false) => n.announce(ctx.queue.as_ref(), job, targets).await,
        _ => Vec::new(),
    }
}

async fn withdraw(ctx: &Jobs, notes: &[JobId]) {
    if let Some(n) = &ctx.notifier {
        n.withdraw(ctx.queue.as_ref(), notes).await;
    }
}

/// After a failure was recorded: withdraws notifications announced for a
/// final state that did not come, or announces a final state that came
/// unannounced (a cancel met the failure).
async fn confirm(
    ctx: &Jobs,
    job: &Job,
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

async fn queue_analysis(ctx: &Jobs, job: &Job) -> Option<JobId> {
    let payload = AnalysisPayload {
        source_job: job.job_id.clone(),
    };
    let mut next = NewJob::new(job_types::AI, payload.to_value())
        .priority(job.priority)
        .max_retries(job.max_retries)
        .timeout(job.timeout);
    // The analysis belongs to whoever uploaded the source.
    next.owner = job.owner.clone();
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
