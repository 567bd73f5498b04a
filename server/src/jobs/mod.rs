//! The jobs the server runs: their type names ([`types`]), their typed
//! payloads, and the one [`Handler`] the worker pools give every lease to.
//! [`Jobs`] is that handler: it reads a job's payload once, as the type
//! its job type names, and runs the extraction, the analysis or the
//! notification delivery it asks for.
//!
//! | Job type | Payload | Handler |
//! |---|---|---|
//! | `excel_processing`, `pdf_processing` | [`ExtractPayload`] | [`extract`] |
//! | `ai_analysis` | [`AnalysisPayload`] | [`analysis`] |
//! | `webhook_delivery`, `email_delivery` | the notifier's | [`crate::notify`] |

mod analysis;
mod extract;
pub mod types;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use docproc_queue::{Job, JobId, JobStatus, Lease, Queue, QueueError};
use tokio::sync::watch;

pub use analysis::AnalysisPayload;
pub use extract::{is_upload_name, ExtractPayload};

use crate::llm::Summarizer;
use crate::notify::{Notifier, Targets};
use crate::results::ResultStore;
use crate::sandbox::Sandbox;

/// Runs leased jobs; the worker pools give every lease they take to one.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one job to its end: completes, fails or releases its lease.
    /// `hand_back` turns true when the shutdown grace is over: a job that
    /// can stop early then goes back to the queue at once.
    async fn run(&self, lease: Lease, hand_back: watch::Receiver<bool>);
}

/// A job's payload, read as the type its job type names.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `excel_processing`, `pdf_processing`.
    Extract(ExtractPayload),
    /// `ai_analysis`.
    Analysis(AnalysisPayload),
    /// `webhook_delivery`, `email_delivery`: read by the notifier.
    Notification,
}

impl Payload {
    /// Reads `job`'s payload; a payload that does not fit its job type, or
    /// a job type the server does not run, is the error's message.
    pub fn of(job: &Job) -> Result<Self, String> {
        let malformed = |e: serde_json::Error| format!("malformed job payload: {e}");
        match job.job_type.as_str() {
            types::EXCEL | types::PDF => serde_json::from_value(job.payload.clone())
                .map(Payload::Extract)
                .map_err(malformed),
            types::AI => serde_json::from_value(job.payload.clone())
                .map(Payload::Analysis)
                .map_err(malformed),
            types::WEBHOOK | types::EMAIL => Ok(Payload::Notification),
            other => Err(format!("no handler for job type {other}")),
        }
    }

    /// Where the job's notifications go (only extractions have any).
    pub fn targets(&self) -> Targets {
        match self {
            Payload::Extract(p) => p.targets(),
            _ => Targets::default(),
        }
    }
}

/// Where `job`'s notifications go; none when its payload does not read.
pub fn targets_of(job: &Job) -> Targets {
    Payload::of(job).map(|p| p.targets()).unwrap_or_default()
}

/// Everything the job handlers use.
pub struct Jobs {
    /// The queue (analysis and notification jobs are published to it).
    pub queue: Arc<dyn Queue>,
    /// Where results go.
    pub results: ResultStore,
    /// Where uploads are (the files extraction jobs read).
    pub uploads: PathBuf,
    /// How extractions run.
    pub sandbox: Sandbox,
    /// Lease renewal interval; `None`: a third of each job's timeout.
    pub heartbeat: Option<Duration>,
    /// Writes analysis summaries, when an endpoint is configured.
    pub summarizer: Option<Summarizer>,
    /// Sends webhooks and mail (and runs their delivery jobs).
    pub notifier: Option<Arc<Notifier>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("backend", &self.queue.backend())
            .field("uploads", &self.uploads)
            .finish_non_exhaustive()
    }
}

impl Jobs {
    /// Handlers without an LLM endpoint or notifier.
    pub fn new(
        queue: Arc<dyn Queue>,
        results: ResultStore,
        uploads: PathBuf,
        sandbox: Sandbox,
    ) -> Self {
        Self {
            queue,
            results,
            uploads,
            sandbox,
            heartbeat: None,
            summarizer: None,
            notifier: None,
        }
    }

    async fn notification(&self, lease: Lease) {
        let Some(n) = &self.notifier else {
            let _ = lease.fail("this worker has no notification settings").await;
            return;
        };
        if lease.job().job_type == types::WEBHOOK {
            n.webhooks.run_job(lease).await;
        } else if let Some(m) = &n.mailer {
            m.run_job(lease).await;
        } else {
            let _ = lease.fail("no SMTP server is configured here").await;
        }
    }
}

#[async_trait]
impl Handler for Jobs {
    async fn run(&self, lease: Lease, hand_back: watch::Receiver<bool>) {
        match Payload::of(lease.job()) {
            Ok(Payload::Extract(p)) => extract::run(self, lease, p, hand_back).await,
            Ok(Payload::Analysis(p)) => analysis::run(self, lease, p).await,
            Ok(Payload::Notification) => self.notification(lease).await,
            Err(msg) => settle(None, lease.fail_permanently(&msg).await).await,
        }
    }
}

/// What a completed job stores as its result: its summary and where its
/// result files are served.
fn completed(id: &JobId, summary: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "summary": summary,
        "json_url": format!("/api/job/{id}/result"),
        "html_url": format!("/api/job/{id}/html"),
        "markdown_url": format!("/api/job/{id}/markdown"),
    })
}

/// Removes the upload once a failed job will not run again.
async fn settle(upload: Option<&PathBuf>, status: Result<JobStatus, QueueError>) {
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
