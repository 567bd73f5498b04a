//! Notifications: everything that tells clients a job changed without
//! their asking. All of it is built on the queue (its watch stream and its
//! jobs), so it works whatever process or host ran the job.
//!
//! - [`hub`]: one watch stream per server, numbered events, a replay
//!   buffer, routing to WebSocket subscribers (the route, `GET /api/ws`,
//!   is the HTTP API's).
//! - [`webhook`]: Standard-Webhooks-signed POSTs as durable
//!   `webhook_delivery` jobs; [`ssrf`]: where they may go.
//! - [`email`]: completion mail as durable `email_delivery` jobs.
//!
//! A notification job is published before the transition it announces
//! (the worker queues it, then completes or fails its job; a transition
//! that does not take withdraws it), and the delivery reads the job's
//! final record before sending, so what is sent is always what happened.

pub mod email;
pub mod hub;
pub mod ssrf;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::jobs::types as job_types;
use crate::results::ResultStore;
use docproc_queue::{Job, JobId, JobRecord, JobStatus, NewJob, Queue, QueueError, WatchFilter};

pub use email::{EmailConfig, Mailer};
pub use hub::{Hub, HubConfig, HubStats};
pub use webhook::{WebhookConfig, Webhooks};

/// Why notifications could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// The secret file.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The queue.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

/// WebSocket settings (part of [`NotifyConfig`]): the connections `GET /api/ws` serves.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How often the server pings.
    pub ping_every: Duration,
    /// A connection silent this long (no pong, no message) is closed.
    pub idle_timeout: Duration,
    /// A frame the client does not take within this is the end of it.
    pub send_timeout: Duration,
    /// Job ids, correlation ids and `all` one connection may follow.
    pub max_subscriptions: usize,
    /// Largest client message, bytes.
    pub max_message: usize,
}

impl Default for WsConfig {
    /// Ping every 20 s, close after 60 s of silence, 10 s to take a frame,
    /// 1,000 subscriptions per connection, 64 KiB messages.
    fn default() -> Self {
        Self {
            ping_every: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            max_subscriptions: 1000,
            max_message: 64 * 1024,
        }
    }
}

/// Every notification setting, defaults in [`NotifyConfig::default`].
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// Event numbering, replay and fan-out.
    pub hub: HubConfig,
    /// WebSocket connections.
    pub ws: WsConfig,
    /// Webhook signing, SSRF allowlist and retries.
    pub webhook: WebhookConfig,
    /// SMTP; `None` (the default): no mail, and uploads asking for one are refused.
    pub email: Option<EmailConfig>,
}

/// What finished jobs trigger, for the workers and the HTTP API.
pub struct Notifier {
    /// Webhook sender.
    pub webhooks: Webhooks,
    /// Mail sender, when SMTP is configured.
    pub mailer: Option<Mailer>,
    webhook_timeout: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("mail", &self.mailer.is_some())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Senders for `cfg`, signing with `secret`.
    pub fn new(
        cfg: &NotifyConfig,
        secret: &str,
        results: ResultStore,
        queue: Arc<dyn Queue>,
    ) -> Result<Self, NotifyError> {
        let webhooks = Webhooks::new(cfg.webhook.clone(), secret, results.clone(), queue.clone())?;
        let mailer = match &cfg.email {
            Some(e) => Some(Mailer::new(e.clone(), results, queue)?),
            None => None,
        };
        Ok(Self {
            webhooks,
            mailer,
            webhook_timeout: cfg.webhook.timeout,
        })
    }

    /// Where the notifications `targets` asked for of `job` stand:
    /// `(webhook, email)` as their senders recorded them, `not_sent`
    /// before the first attempt, `None` when not asked for.
    pub async fn delivery_state(
        &self,
        results: &ResultStore,
        job: &JobId,
        targets: &Targets,
    ) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
        let mut webhook = None;
        if let Some(url) = &targets.callback_url {
            webhook = Some(match results.read_meta(job, webhook::STATE_FILE).await {
                Some(v) => v,
                None => serde_json::json!({ "url": url, "state": "not_sent", "attempts": 0 }),
            });
        }
        let mut email = None;
        if let Some(to) = &targets.email {
            email = Some(match results.read_meta(job, email::STATE_FILE).await {
                Some(v) => v,
                None => serde_json::json!({ "to": to, "state": "not_sent", "attempts": 0 }),
            });
        }
        (webhook, email)
    }

    /// The notification jobs a finished `source` asks for.
    pub fn jobs_for(&self, source: &Job, targets: &Targets) -> Vec<NewJob> {
        let mut jobs = Vec::new();
        if let Some(url) = &targets.callback_url {
            jobs.push(webhook::delivery_job(source, url, self.webhook_timeout));
        }
        if let (Some(to), Some(_)) = (&targets.email, &self.mailer) {
            jobs.push(email::email_job(source, to));
        }
        jobs
    }

    /// Publishes the notifications of `source` (before the transition they
    /// announce); answers their ids for [`Notifier::withdraw`].
    pub async fn announce(&self, queue: &dyn Queue, source: &Job, targets: &Targets) -> Vec<JobId> {
        let jobs = self.jobs_for(source, targets);
        if jobs.is_empty() {
            return Vec::new();
        }
        match queue.publish(jobs).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, job = %source.job_id, "could not queue the notifications");
                Vec::new()
            }
        }
    }

    /// Cancels notifications whose transition did not take.
    pub async fn withdraw(&self, queue: &dyn Queue, ids: &[JobId]) {
        for id in ids {
            if let Err(e) = queue.cancel(id).await {
                tracing::debug!(error = %e, notification = %id, "could not withdraw");
            }
        }
    }
}

/// Where a job's notifications go (from its upload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Webhook receiver.
    pub callback_url: Option<String>,
    /// Mail recipient.
    pub email: Option<String>,
}

impl Targets {
    /// Whether nothing is to be sent.
    pub fn is_empty(&self) -> bool {
        self.callback_url.is_none() && self.email.is_none()
    }
}

/// How long a delivery waits for its job to show final (its worker queues
/// the delivery just before finishing the job).
const FINAL_WAIT: Duration = Duration::from_secs(10);

/// The job's record once it is final, or `None` after [`FINAL_WAIT`] (or
/// when it is gone).
pub async fn wait_final(queue: &dyn Queue, id: &JobId) -> Option<JobRecord> {
    let deadline = tokio::time::Instant::now() + FINAL_WAIT;
    let mut pause = Duration::from_millis(20);
    loop {
        match queue.get(id).await {
            Ok(r) if r.status.is_final() => return Some(r),
            Ok(_) => {}
            Err(QueueError::NotFound(_)) => return None,
            Err(e) => tracing::debug!(error = %e, job = %id, "reading the job to notify about"),
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The start of every notification job: its payload, and the final record
/// of the job it is about. `None` when the lease was settled here (a
/// malformed payload fails for good; a job that did not turn final — its
/// finishing attempt did not take, and whoever finishes it announces
/// again — completes the notification as skipped).
pub(crate) async fn begin<P: serde::de::DeserializeOwned + Sourced>(
    queue: &dyn Queue,
    lease: docproc_queue::Lease,
) -> Option<(docproc_queue::Lease, P, JobRecord)> {
    let p: P = match serde_json::from_value(lease.job().payload.clone()) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("malformed {} payload: {e}", lease.job().job_type);
            let _ = lease.fail_permanently(&msg).await;
            return None;
        }
    };
    match wait_final(queue, p.source_job()).await {
        Some(source) => Some((lease, p, source)),
        None => {
            let skipped = serde_json::json!({ "skipped": "the job did not reach a final state" });
            let _ = lease.complete(skipped).await;
            None
        }
    }
}

/// A notification payload names the job it is about.
pub(crate) trait Sourced {
    /// That job.
    fn source_job(&self) -> &JobId;
}

/// Announces the jobs no worker finished: those failed because their last
/// lease expired (the worker died), to the targets `targets_of` reads from
/// each job. Runs in `docproc serve` until `stop`.
pub async fn watch_expired(
    queue: Arc<dyn Queue>,
    notifier: Arc<Notifier>,
    targets_of: fn(&Job) -> Targets,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let filter = WatchFilter::job_types([job_types::EXCEL, job_types::PDF]);
        let mut events = match queue.watch(filter).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for expired jobs; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                n = events.next() => n,
                _ = stop.wait_for(|s| *s) => return,
            };
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err(QueueError::Lagged(_))) => continue,
                Some(Err(_)) | None => break,
            };
            let expired = ev.status == JobStatus::Failed
                && ev
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("lease expired"));
            if !expired {
                continue;
            }
            if let Ok(r) = queue.get(&ev.job_id).await {
                let targets = targets_of(&r.job);
                if !targets.is_empty() {
                    notifier.announce(queue.as_ref(), &r.job, &targets).await;
                }
            }
        }
    }
}
