//! Completion mail through a configured SMTP server (lettre): an
//! `email_delivery` job on our queue per mail, sent once its job is final,
//! retried with backoff on temporary SMTP errors. Each attempt is recorded
//! in `results/<job>/email.json`, which the job's status shows.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{begin, NotifyError, Sourced};
use crate::jobs::types as job_types;
use crate::results::ResultStore;
use crate::time::now_ms;
use crate::time::rfc3339;
use docproc_queue::{Job, JobId, JobRecord, JobStatus, Lease, NewJob, Queue};

/// Mail settings (part of [`NotifyConfig`](super::NotifyConfig); no mail
/// unless set).
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `smtp://HOST:PORT` (plain), `smtp://HOST:PORT?tls=required`
    /// (STARTTLS) or `smtps://USER:PASS@HOST:465` (TLS).
    pub smtp_url: String,
    /// The sender, `Name <addr@example.com>` or `addr@example.com`.
    pub from: String,
    /// Where links in the mail point (`https://docproc.example.com`);
    /// `None`: paths only.
    pub public_url: Option<String>,
    /// One SMTP exchange may take this long.
    pub timeout: Duration,
}

impl EmailConfig {
    /// An SMTP URL and sender with defaults for the rest (no public URL,
    /// 30 s timeout; concurrency: [`Pools`](crate::config::Pools)).
    pub fn new(smtp_url: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            smtp_url: smtp_url.into(),
            from: from.into(),
            public_url: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What an `email_delivery` job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailPayload {
    /// The job the mail is about.
    pub source_job: JobId,
    /// The recipient.
    pub to: String,
}

impl Sourced for EmailPayload {
    fn source_job(&self) -> &JobId {
        &self.source_job
    }
}

/// The file name of the mail record in a job's result directory.
pub const STATE_FILE: &str = "email.json";

/// Retries of a mail on temporary errors.
const EMAIL_RETRIES: u32 = 10;

/// Checks a recipient address as given on upload.
pub fn validate_address(s: &str) -> Result<(), String> {
    s.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| format!("email: {s:?} is not an address ({e})"))
}

/// The mail job for a finished `source`.
pub fn email_job(source: &Job, to: &str) -> NewJob {
    let payload = EmailPayload {
        source_job: source.job_id.clone(),
        to: to.to_string(),
    };
    // No correlation id: subscribers of the document's correlation id
    // follow the document jobs, not their notifications.
    NewJob::new(
        job_types::EMAIL,
        serde_json::to_value(&payload).unwrap_or(Value::Null),
    )
    .priority(source.priority)
    .max_retries(EMAIL_RETRIES)
    .timeout(Duration::from_secs(120))
}

/// Sends mail.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    cfg: EmailConfig,
    results: ResultStore,
    queue: Arc<dyn Queue>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.cfg.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Ready to send through `cfg.smtp_url`.
    pub fn new(
        cfg: EmailConfig,
        results: ResultStore,
        queue: Arc<dyn Queue>,
    ) -> Result<Self, NotifyError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)
            .map_err(|e| NotifyError::Config(format!("smtp url {:?}: {e}", cfg.smtp_url)))?
            .timeout(Some(cfg.timeout))
            .build();
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| NotifyError::Config(format!("mail sender {:?}: {e}", cfg.from)))?;
        Ok(Self {
            transport,
            from,
            cfg,
            results,
            queue,
        })
    }

    /// Runs one mail job.
    pub async fn run_job(&self, lease: Lease) {
        let Some((lease, p, source)) = begin::<EmailPayload>(self.queue.as_ref(), lease).await
        else {
            return;
        };
        let attempt = lease.attempt();
        let sent = match self.message(&p.to, &source) {
            Ok(m) => self.transport.send(m).await.map_err(|e| {
                let permanent = e.is_permanent();
                (e.to_string(), permanent)
            }),
            Err(e) => Err((e, true)),
        };
        let mut st = json!({
            "to": p.to,
            "attempts": attempt,
            "last_attempt_at": rfc3339(now_ms()),
        });
        match sent {
            Ok(resp) => {
                st["state"] = json!("sent");
                st["smtp_code"] = json!(resp.code().to_string());
                self.record(&p.source_job, &st).await;
                let _ = lease.complete(json!({ "sent": true })).await;
            }
            Err((error, permanent)) => {
                let out_of_retries = attempt > EMAIL_RETRIES;
                st["state"] = json!(if permanent || out_of_retries {
                    "failed"
                } else {
                    "pending"
                });
                st["last_error"] = json!(error);
                self.record(&p.source_job, &st).await;
                let _ = if permanent {
                    lease.fail_permanently(&error).await
                } else {
                    lease.fail(&error).await
                };
            }
        }
    }

    async fn record(&self, job: &JobId, st: &Value) {
        if let Err(e) = self.results.write_meta(job, STATE_FILE, st).await {
            tracing::warn!(error = %e, job = %job, "could not record the mail");
        }
    }

    fn link(&self, path: &str) -> String {
        match &self.cfg.public_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => path.to_string(),
        }
    }

    fn message(&self, to: &str, r: &JobRecord) -> Result<Message, String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("bad recipient {to:?}: {e}"))?;
        let title = r
            .job
            .payload
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("your document");
        let id = &r.job.job_id;
        let mut text = format!("{title}: {}\n\nJob {id} ({})\n", r.status, r.job.job_type);
        match r.status {
            JobStatus::Completed => {
                text.push_str(&format!(
                    "Result (JSON): {}\nResult (HTML): {}\n",
                    self.link(&format!("/api/job/{id}/result")),
                    self.link(&format!("/api/job/{id}/html"))
                ));
            }
            _ => {
                if let Some(e) = &r.error {
                    text.push_str(&format!("Error: {e}\n"));
                }
            }
        }
        if let Some(at) = r.completed_at_ms {
            text.push_str(&format!("Finished at {}\n", rfc3339(at)));
        }
        text.push_str(&format!(
            "Status: {}\n",
            self.link(&format!("/api/job/{id}/status"))
        ));
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("docproc: {title} {}", r.status))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| format!("cannot build the mail: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_checked() {
        assert!(super::validate_address("a@example.com").is_ok());
        assert!(super::validate_address("not an address").is_err());
        assert!(super::validate_address("a@b@c").is_err());
    }
}
