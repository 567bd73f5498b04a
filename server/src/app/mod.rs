//! The application layer: the only place the rules of jobs live. Who may
//! see a job, what a submit checks and publishes, what a cancel does
//! beyond the queue (notifications, the upload), when a result may be
//! read, what a dead job's retry and delete do. The HTTP API, the
//! WebSocket and the dashboard call it; it knows no transport.

mod dead;
mod error;
mod submit;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use docproc_queue::{
    CancelOutcome, Job, JobId, JobRecord, JobStatus, ListQuery, Queue, QueueError,
};

pub use error::AppError;
pub use submit::{display_name, Fields, Spooled, Submission, MAX_FIELD};
pub use view::{CancelAnswer, DeadJob, DeadPage, Deleted, JobView, JobsPage, Retried, Submitted};

use crate::jobs::{targets_of, Payload};
use crate::notify::{Hub, Notifier};
use crate::results::{Artifact, Opened, ResultStore};

/// Who asks, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// Sees every job (a `read`, `worker` or `admin` key, or no keys set).
    All,
    /// Sees only the jobs submitted with the key of this name (`write`).
    Owner(String),
}

impl Viewer {
    /// Whether this viewer may see `job`.
    pub fn sees(&self, job: &Job) -> bool {
        self.sees_owner(job.owner.as_deref())
    }

    /// Whether this viewer may see a job of `owner` (for events, which
    /// carry the owner but not the job).
    pub fn sees_owner(&self, owner: Option<&str>) -> bool {
        match self {
            Viewer::All => true,
            Viewer::Owner(name) => owner == Some(name.as_str()),
        }
    }

    /// `query` narrowed to what this viewer may see: an owner's listing is
    /// answered from the backend's owner index, so its pages are full.
    pub fn scope(&self, query: ListQuery) -> ListQuery {
        match self {
            Viewer::All => query,
            Viewer::Owner(name) => ListQuery {
                owner: Some(name.clone()),
                ..query
            },
        }
    }
}

/// The application: what the rules act on.
#[derive(Clone)]
pub struct App {
    queue: Arc<dyn Queue>,
    results: ResultStore,
    notifier: Arc<Notifier>,
    hub: Hub,
    uploads: PathBuf,
    max_retries: u32,
    job_timeout: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.queue.backend())
            .field("uploads", &self.uploads)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The rules over these parts; new jobs get `max_retries` and `job_timeout`.
    pub fn new(
        queue: Arc<dyn Queue>,
        results: ResultStore,
        notifier: Arc<Notifier>,
        hub: Hub,
        uploads: PathBuf,
        max_retries: u32,
        job_timeout: Duration,
    ) -> Self {
        Self {
            queue,
            results,
            notifier,
            hub,
            uploads,
            max_retries,
            job_timeout,
        }
    }

    /// The job, or [`AppError::NotFound`] when it does not exist or the
    /// viewer may not see it (the two are not told apart).
    pub async fn job(&self, who: &Viewer, id: &JobId) -> Result<JobRecord, AppError> {
        let r = self.queue.get(id).await.map_err(|e| match e {
            QueueError::NotFound(_) => AppError::NotFound(id.clone()),
            e => AppError::Queue(e),
        })?;
        if !who.sees(&r.job) {
            return Err(AppError::NotFound(id.clone()));
        }
        Ok(r)
    }

    /// A job's status, with where its webhook and mail stand.
    pub async fn status(&self, who: &Viewer, id: &JobId) -> Result<JobView, AppError> {
        let r = self.job(who, id).await?;
        let mut view = JobView::from(&r);
        let targets = targets_of(&r.job);
        let (webhook, email) = self
            .notifier
            .delivery_state(&self.results, &r.job.job_id, &targets)
            .await;
        view.webhook = webhook;
        view.email = email;
        Ok(view)
    }

    /// A completed job's result, as `what`.
    pub async fn result(
        &self,
        who: &Viewer,
        id: &JobId,
        what: Artifact,
    ) -> Result<Opened, AppError> {
        let r = self.job(who, id).await?;
        if r.status != JobStatus::Completed {
            return Err(AppError::NotCompleted {
                id: id.clone(),
                status: r.status,
            });
        }
        self.results
            .open_artifact(id, what)
            .await
            .map_err(|_| AppError::ResultExpired(id.clone()))
    }

    /// Cancels a job: a waiting one at once (its notifications go from
    /// here, as no worker will see it, and its upload goes now), a running
    /// one at its worker's next check.
    pub async fn cancel(&self, who: &Viewer, id: &JobId) -> Result<CancelAnswer, AppError> {
        let record = self.job(who, id).await?;
        let (status, message) = match self.queue.cancel(id).await? {
            CancelOutcome::Cancelled => {
                let targets = targets_of(&record.job);
                if !targets.is_empty() {
                    self.notifier
                        .announce(self.queue.as_ref(), &record.job, &targets)
                        .await;
                }
                self.remove_upload(&record.job).await;
                ("cancelled", "the job was cancelled before it started")
            }
            CancelOutcome::Requested => (
                "cancelling",
                "the job is running; its worker stops at its next check",
            ),
        };
        Ok(CancelAnswer {
            job_id: id.clone(),
            status,
            message,
        })
    }

    /// A page of the jobs this viewer may see, newest first.
    pub async fn list(&self, who: &Viewer, query: ListQuery) -> Result<JobsPage, AppError> {
        let page = self.queue.list(&who.scope(query)).await?;
        Ok(JobsPage {
            jobs: page
                .jobs
                .iter()
                .filter(|r| who.sees(&r.job))
                .map(JobView::from)
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// The upload an extraction job reads, when it is one of ours.
    fn upload_of(&self, job: &Job) -> Option<PathBuf> {
        match Payload::of(job) {
            Ok(Payload::Extract(p)) => p.upload(&self.uploads),
            _ => None,
        }
    }

    async fn remove_upload(&self, job: &Job) {
        if let Some(file) = self.upload_of(job) {
            let _ = tokio::fs::remove_file(file).await;
        }
    }
}
