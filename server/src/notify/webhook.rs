//! Signed webhooks, delivered durably: a `webhook_delivery` job on our own
//! queue per notification, POSTed with Standard Webhooks headers
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`), retried with exponential backoff
//! and jitter over a window; 2xx is success, 410 stops, 429 honours
//! `Retry-After`, redirects are not followed. Each attempt is recorded in
//! `results/<job>/webhook.json`, which the job's status shows.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ssrf::{Allowlist, Guard, SsrfError};
use super::{begin, NotifyError, Sourced};
use crate::jobs::types as job_types;
use crate::results::ResultStore;
use crate::time::{now_ms, rfc3339};
use docproc_queue::{Job, JobId, JobRecord, Lease, NewJob, RetryPolicy};

/// Webhook settings (part of [`NotifyConfig`](super::NotifyConfig)).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `whsec_<base64 key>`; `None`: made once and kept in
    /// `DATA_DIR/webhook-secret`.
    pub secret: Option<String>,
    /// Addresses, networks and host names webhooks may reach despite the
    /// SSRF rules (trusted internal receivers).
    pub allowlist: Vec<String>,
    /// How long a delivery is retried, from when it was queued.
    pub retry_window: Duration,
    /// Delay before the first retry; doubles per attempt.
    pub retry_base: Duration,
    /// Cap on the delay between retries.
    pub retry_max: Duration,
    /// Whole request timeout.
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    /// A kept secret, no allowlist, retries over 24 h from 5 s doubling to
    /// 1 h, 30 s timeout (concurrency: [`Pools`](crate::config::Pools)).
    fn default() -> Self {
        Self {
            secret: None,
            allowlist: Vec::new(),
            retry_window: Duration::from_secs(24 * 3600),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Signs and verifies payloads the Standard Webhooks way.
#[derive(Clone)]
pub struct Signer {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Signer {
    /// From a `whsec_…` secret (the part after the prefix is the base64 key).
    pub fn from_secret(secret: &str) -> Result<Self, NotifyError> {
        let b64 = secret.trim().strip_prefix("whsec_").ok_or_else(|| {
            NotifyError::Config("the webhook secret must start with whsec_".into())
        })?;
        let key = B64
            .decode(b64)
            .map_err(|e| NotifyError::Config(format!("the webhook secret is not base64: {e}")))?;
        if !(24..=64).contains(&key.len()) {
            return Err(NotifyError::Config(format!(
                "the webhook secret's key is {} bytes; use 24 to 64",
                key.len()
            )));
        }
        Ok(Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        })
    }

    /// A new random secret.
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("whsec_{}", B64.encode(key))
    }

    fn content(id: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(id.len() + body.len() + 24);
        m.extend_from_slice(id.as_bytes());
        m.push(b'.');
        m.extend_from_slice(timestamp.to_string().as_bytes());
        m.push(b'.');
        m.extend_from_slice(body);
        m
    }

    /// The `webhook-signature` value: `v1,<base64 signature>`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let tag = ring::hmac::sign(&self.key, &Self::content(id, timestamp, body));
        format!("v1,{}", B64.encode(tag.as_ref()))
    }

    /// Whether any `v1,` signature in a (space-separated) header matches,
    /// compared in constant time.
    pub fn verify(&self, id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
        let content = Self::content(id, timestamp, body);
        header.split(' ').any(|s| {
            s.strip_prefix("v1,")
                .and_then(|b| B64.decode(b).ok())
                .is_some_and(|sig| ring::hmac::verify(&self.key, &content, &sig).is_ok())
        })
    }
}

/// The configured secret, or the one kept in `path` (made on first use,
/// readable by the owner only). Processes sharing a data directory (the
/// web process and workers of one deployment) starting at once agree on one
/// secret: each writes its candidate to a file of its own and links it to
/// `path`, which only the first can do; the others read the winner's.
pub fn load_or_create_secret(configured: Option<&str>, path: &Path) -> Result<String, NotifyError> {
    if let Some(s) = configured {
        return Ok(s.trim().to_string());
    }
    if let Some(s) = read_secret(path)? {
        return Ok(s);
    }
    let secret = Signer::generate();
    let tmp = path.with_extension(format!(
        "tmp.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let made = write_candidate(&tmp, &secret).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match made {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                crate::durable::sync_dir(dir)?;
            }
            tracing::info!(path = %path.display(), "made a webhook signing secret");
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(path)?.ok_or_else(|| {
                NotifyError::Io(std::io::Error::other(format!(
                    "{} is empty",
                    path.display()
                )))
            })
        }
        Err(e) => Err(NotifyError::Io(e)),
    }
}

/// The secret kept in `path`, if there is one.
fn read_secret(path: &Path) -> Result<Option<String>, NotifyError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NotifyError::Io(e)),
    }
}

/// Writes a candidate secret, whole and synced, before it may be linked.
fn write_candidate(tmp: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()
}

/// What a `webhook_delivery` job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPayload {
    /// The job the webhook is about.
    pub source_job: JobId,
    /// Where it goes (checked at registration and again at connect).
    pub url: String,
}

impl Sourced for DeliveryPayload {
    fn source_job(&self) -> &JobId {
        &self.source_job
    }
}

/// Retries a delivery job may use; the window is the real limit.
const DELIVERY_RETRIES: u32 = 100;

/// The delivery job for a finished `source`.
pub fn delivery_job(source: &Job, url: &str, timeout: Duration) -> NewJob {
    let payload = DeliveryPayload {
        source_job: source.job_id.clone(),
        url: url.to_string(),
    };
    // No correlation id: subscribers of the document's correlation id
    // follow the document jobs, not their notifications.
    NewJob::new(
        job_types::WEBHOOK,
        serde_json::to_value(&payload).unwrap_or(Value::Null),
    )
    .priority(source.priority)
    .max_retries(DELIVERY_RETRIES)
    .timeout(timeout + Duration::from_secs(30))
}

/// A delivery's record, as `webhook.json` and the status endpoint show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// The receiver.
    pub url: String,
    /// `pending` (retries to come), `delivered`, `failed` (gave up, 410 or refused).
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The `webhook-id` (the same on every retry; receivers dedupe by it).
    pub webhook_id: String,
    /// The last HTTP status the receiver answered.
    pub last_status_code: Option<u16>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<String>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
}

/// The file name of the delivery record in a job's result directory.
pub const STATE_FILE: &str = "webhook.json";

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    /// Retry after this (the receiver's `Retry-After`, or the backoff).
    Retry {
        code: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// Never retried: 410, or an address the guard refuses.
    Stop {
        code: Option<u16>,
        error: String,
    },
}

/// Sends webhooks.
pub struct Webhooks {
    signer: Signer,
    guard: Guard,
    client: reqwest::Client,
    cfg: WebhookConfig,
    results: ResultStore,
    queue: Arc<dyn docproc_queue::Queue>,
    /// Where attempt outcomes are counted.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Longest `Retry-After` honoured (beyond it the backoff cap applies).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Webhooks {
    /// Ready to send with `secret`.
    pub fn new(
        cfg: WebhookConfig,
        secret: &str,
        results: ResultStore,
        queue: Arc<dyn docproc_queue::Queue>,
    ) -> Result<Self, NotifyError> {
        crate::llm::install_crypto();
        let signer = Signer::from_secret(secret)?;
        let guard = guard(&cfg)?;
        let client = reqwest::Client::builder()
            .dns_resolver(guard.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("docproc-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Config(format!("webhook HTTP client: {e}")))?;
        Ok(Self {
            signer,
            guard,
            client,
            cfg,
            results,
            queue,
            metrics: Arc::default(),
        })
    }

    /// The SSRF guard (uploads check their `callback_url` with it).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Runs one delivery job.
    pub async fn run_job(&self, lease: Lease) {
        let Some((lease, p, source)) = begin::<DeliveryPayload>(self.queue.as_ref(), lease).await
        else {
            return;
        };
        let job = lease.job().clone();
        let webhook_id = format!("msg_{}_{}", source.job.job_id, source.status);
        let body = body(&source);
        let outcome = self.attempt(&p.url, &webhook_id, &body).await;
        let attempt = lease.attempt();
        let now = now_ms();
        let mut st = DeliveryState {
            url: p.url.clone(),
            attempts: attempt,
            webhook_id,
            last_attempt_at: Some(rfc3339(now)),
            ..DeliveryState::default()
        };
        let policy = RetryPolicy {
            base: self.cfg.retry_base,
            max: self.cfg.retry_max,
        };
        let deadline = job
            .created_at_ms
            .saturating_add(u64::try_from(self.cfg.retry_window.as_millis()).unwrap_or(u64::MAX));
        match outcome {
            Outcome::Delivered(code) => {
                self.metrics.webhook("delivered");
                st.state = "delivered".into();
                st.last_status_code = Some(code);
                self.record(&p.source_job, &st).await;
                let _ = lease
                    .complete(
                        json!({ "delivered": true, "status_code": code, "attempts": attempt }),
                    )
                    .await;
            }
            Outcome::Stop { code, error } => {
                self.metrics.webhook("failed");
                st.state = "failed".into();
                st.last_status_code = code;
                st.last_error = Some(error.clone());
                self.record(&p.source_job, &st).await;
                let _ = lease.fail_permanently(&error).await;
            }
            Outcome::Retry { code, error, after } => {
                let delay = after.unwrap_or_else(|| policy.delay(attempt));
                let due = now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                st.last_status_code = code;
                if due > deadline || attempt > DELIVERY_RETRIES {
                    let error = format!(
                        "{error}; gave up after {attempt} attempts over the {}s retry window",
                        self.cfg.retry_window.as_secs()
                    );
                    self.metrics.webhook("failed");
                    st.state = "failed".into();
                    st.last_error = Some(error.clone());
                    self.record(&p.source_job, &st).await;
                    let _ = lease.fail_permanently(&error).await;
                } else {
                    self.metrics.webhook("retry");
                    st.state = "pending".into();
                    st.last_error = Some(error.clone());
                    st.next_attempt_at = Some(rfc3339(due));
                    self.record(&p.source_job, &st).await;
                    let _ = lease.fail_after(&error, delay).await;
                }
            }
        }
    }

    async fn record(&self, job: &JobId, st: &DeliveryState) {
        let v = serde_json::to_value(st).unwrap_or(Value::Null);
        if let Err(e) = self.results.write_meta(job, STATE_FILE, &v).await {
            tracing::warn!(error = %e, job = %job, "could not record the webhook delivery");
        }
    }

    async fn attempt(&self, url: &str, id: &str, body: &[u8]) -> Outcome {
        // Literal addresses never reach the resolver: check them here too.
        let url = match self.guard.parse(url) {
            Ok(u) => u,
            Err(e) => {
                return Outcome::Stop {
                    code: None,
                    error: e.to_string(),
                }
            }
        };
        let ts = now_ms() / 1000;
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", self.signer.sign(id, ts, body))
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return transport_error(&e, self.cfg.timeout),
        };
        let code = resp.status().as_u16();
        match code {
            200..=299 => Outcome::Delivered(code),
            410 => Outcome::Stop {
                code: Some(code),
                error: "the receiver answered 410 Gone; not retried".into(),
            },
            429 => Outcome::Retry {
                code: Some(code),
                error: "the receiver answered 429 Too Many Requests".into(),
                after: retry_after(resp.headers()),
            },
            300..=399 => Outcome::Retry {
                code: Some(code),
                error: format!("the receiver answered {code} (redirects are not followed)"),
                after: None,
            },
            _ => Outcome::Retry {
                code: Some(code),
                error: format!("the receiver answered {code}"),
                after: None,
            },
        }
    }
}

/// The guard the configuration asks for.
pub fn guard(cfg: &WebhookConfig) -> Result<Guard, NotifyError> {
    let allow = Allowlist::parse(&cfg.allowlist)
        .map_err(|e| NotifyError::Config(format!("webhook allowlist: {e}")))?;
    Ok(Guard::new(allow))
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(ssrf) = s.downcast_ref::<SsrfError>() {
            return Outcome::Stop {
                code: None,
                error: ssrf.to_string(),
            };
        }
        source = s.source();
    }
    let error = if e.is_timeout() {
        format!("no answer within {}s", timeout.as_secs())
    } else if e.is_connect() {
        "could not connect to the receiver".to_string()
    } else {
        format!("request failed: {e}")
    };
    Outcome::Retry {
        code: None,
        error,
        after: None,
    }
}

/// `Retry-After` in seconds (an HTTP date is treated as absent).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = h.get("retry-after")?.to_str().ok()?.trim().parse().ok()?;
    Some(
        Duration::from_secs(secs)
            .min(MAX_RETRY_AFTER)
            .max(Duration::from_millis(1)),
    )
}

/// The body every receiver gets.
pub fn body(r: &JobRecord) -> Vec<u8> {
    let v = json!({
        "type": format!("job.{}", r.status),
        "job_id": r.job.job_id,
        "job_type": r.job.job_type,
        "correlation_id": r.job.correlation_id,
        "status": r.status,
        "result": r.result,
        "error": r.error,
        "completed_at": r.completed_at_ms.map(rfc3339),
    });
    v.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks test vector.
        let s = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(s.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bogus {sig}")
        ));
        assert!(!s.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
        assert!(!s.verify("msg_other", 1614265330, body, &sig));
        assert!(Signer::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Signer::from_secret("whsec_c2hvcnQ=").is_err(), "5-byte key");
        assert!(Signer::from_secret(&Signer::generate()).is_ok());
    }

    #[test]
    fn a_made_secret_is_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook-secret");
        let a = load_or_create_secret(None, &path).unwrap();
        let b = load_or_create_secret(None, &path).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("whsec_"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_or_create_secret(Some("whsec_x"), &path).unwrap(),
            "whsec_x"
        );
    }

    #[test]
    fn processes_starting_at_once_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook-secret");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let made: Vec<String> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    load_or_create_secret(None, &path).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert!(made.iter().all(|s| *s == kept), "{made:?} vs {kept}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no candidate files are left behind");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
