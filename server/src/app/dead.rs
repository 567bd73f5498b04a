//! Dead jobs (failed for good): listing them, running one again as a new
//! job, deleting one's files. The same on every queue backend: a retry
//! publishes a copy of the job (same type, payload, priority, correlation
//! id) and the original stays failed with a link to its retry; a deleted
//! job's record stays in the backend until the backend's own retention.

use docproc_queue::{JobId, JobRecord, JobStatus, ListQuery, NewJob};
use serde_json::json;

use super::{App, AppError, DeadJob, DeadPage, Deleted, JobView, Retried, Viewer};

/// Marks a dead job deleted from the list.
const DELETED: &str = "deleted.json";
/// Links a dead job to the job that retried it.
const RETRIED: &str = "retried.json";
/// Most backend pages one answer reads past deleted jobs.
const MAX_READS: usize = 16;

impl App {
    /// Dead jobs this viewer may see, not deleted, newest first, with the
    /// job that retried each. `query`'s statuses are replaced by `failed`.
    /// Deleted jobs stay in the backend, so a page skips them and reads on
    /// until it holds `limit` jobs: pages are full while more follow (up to
    /// [`MAX_READS`] backend pages per answer; a page cut short by that
    /// bound still carries the cursor to go on from).
    pub async fn dead(&self, who: &Viewer, query: ListQuery) -> Result<DeadPage, AppError> {
        let limit = query.page_size();
        let mut query = who.scope(ListQuery {
            statuses: vec![JobStatus::Failed],
            ..query
        });
        let mut jobs = Vec::with_capacity(limit);
        let mut next_cursor = None;
        for _ in 0..MAX_READS {
            query.limit = Some((limit - jobs.len()) as u32);
            let page = self.queue.list(&query).await?;
            for r in page.jobs.iter().filter(|r| who.sees(&r.job)) {
                if self
                    .results
                    .read_meta(&r.job.job_id, DELETED)
                    .await
                    .is_some()
                {
                    continue;
                }
                let retried_as = self
                    .results
                    .read_meta(&r.job.job_id, RETRIED)
                    .await
                    .and_then(|v| v["job_id"].as_str().map(|s| JobId(s.to_string())));
                jobs.push(DeadJob {
                    job: JobView::from(r),
                    retried_as,
                });
            }
            next_cursor = page.next_cursor;
            if jobs.len() >= limit || next_cursor.is_none() {
                break;
            }
            query.cursor = next_cursor.clone();
        }
        Ok(DeadPage { jobs, next_cursor })
    }

    /// The dead job `id`: [`AppError::NotDead`] when it is not failed or
    /// was deleted.
    async fn dead_job(&self, who: &Viewer, id: &JobId) -> Result<JobRecord, AppError> {
        let r = self.job(who, id).await?;
        let deleted = self.results.read_meta(id, DELETED).await.is_some();
        if r.status != JobStatus::Failed || deleted {
            let state = match deleted {
                true => "deleted".to_string(),
                false => r.status.as_str().to_string(),
            };
            return Err(AppError::NotDead {
                id: id.clone(),
                state,
            });
        }
        Ok(r)
    }

    /// Runs a dead job again as a new job (same type, payload, priority,
    /// correlation id); the dead one links to it. An extraction whose
    /// upload is gone is [`AppError::UploadGone`].
    pub async fn retry_dead(&self, who: &Viewer, id: &JobId) -> Result<Retried, AppError> {
        let r = self.dead_job(who, id).await?;
        if let Ok(crate::jobs::Payload::Extract(p)) = crate::jobs::Payload::of(&r.job) {
            let kept = match p.upload(&self.uploads) {
                Some(file) => tokio::fs::try_exists(file).await.unwrap_or(false),
                None => false,
            };
            if !kept {
                return Err(AppError::UploadGone(id.clone()));
            }
        }
        let job = NewJob {
            job_type: r.job.job_type.clone(),
            payload: r.job.payload.clone(),
            priority: r.job.priority,
            max_retries: r.job.max_retries,
            timeout: r.job.timeout,
            correlation_id: r.job.correlation_id.clone(),
            callback_context: r.job.callback_context.clone(),
            run_at_ms: None,
            owner: r.job.owner.clone(),
        };
        let new_id = self.queue.publish_one(job).await?;
        self.results
            .write_meta(id, RETRIED, &json!({ "job_id": new_id }))
            .await
            .map_err(AppError::internal)?;
        tracing::info!(job_id = %id, retried_as = %new_id, "dead job retried");
        Ok(Retried {
            polling_url: format!("/api/job/{new_id}/status"),
            job_id: new_id,
            retry_of: id.clone(),
            status: "queued",
        })
    }

    /// Deletes a dead job's upload and results and takes it off the list.
    /// The backend forgets the record at its own retention.
    pub async fn delete_dead(&self, who: &Viewer, id: &JobId) -> Result<Deleted, AppError> {
        let r = self.dead_job(who, id).await?;
        self.remove_upload(&r.job).await;
        self.results.remove(id).await;
        self.results
            .write_meta(
                id,
                DELETED,
                &json!({ "deleted_at_ms": crate::time::now_ms() }),
            )
            .await
            .map_err(AppError::internal)?;
        tracing::info!(job_id = %id, "dead job deleted");
        Ok(Deleted {
            job_id: id.clone(),
            status: "deleted",
        })
    }
}
