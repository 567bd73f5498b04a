//! Flags and environment variables of the notification settings, shared
//! by `docproc serve` and `docproc worker`.

use std::time::Duration;

use docproc_server::notify::{EmailConfig, NotifyConfig};

/// Unset ones keep `NotifyConfig::default()`.
#[derive(Debug, clap::Args)]
pub(crate) struct NotifyArgs {
    /// Webhook signing secret, whsec_<base64 key of 24-64 bytes> [default: made once, kept in DATA_DIR/webhook-secret].
    #[arg(long, env = "DOCPROC_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Addresses, networks (CIDR) and host names webhooks may reach although private, comma-separated [default: none].
    #[arg(long, env = "DOCPROC_WEBHOOK_ALLOW", value_delimiter = ',')]
    webhook_allow: Vec<String>,
    /// Seconds a webhook is retried for [default: 86400].
    #[arg(long, env = "DOCPROC_WEBHOOK_RETRY_WINDOW_SECS")]
    webhook_retry_window_secs: Option<u64>,
    /// First retry delay in ms, doubling per attempt with jitter [default: 5000].
    #[arg(long, env = "DOCPROC_WEBHOOK_RETRY_BASE_MS")]
    webhook_retry_base_ms: Option<u64>,
    /// Longest delay between retries in seconds [default: 3600].
    #[arg(long, env = "DOCPROC_WEBHOOK_RETRY_MAX_SECS")]
    webhook_retry_max_secs: Option<u64>,
    /// Seconds a receiver has to answer [default: 30].
    #[arg(long, env = "DOCPROC_WEBHOOK_TIMEOUT_SECS")]
    webhook_timeout_secs: Option<u64>,
    /// Concurrent webhook deliveries [default: 4].
    #[arg(long, env = "DOCPROC_WEBHOOK_WORKERS")]
    pub(crate) webhook_workers: Option<usize>,
    /// SMTP server for completion mail: smtp://HOST:PORT, smtp://HOST:PORT?tls=required, smtps://USER:PASS@HOST:465 [default: none, no mail].
    #[arg(long, env = "DOCPROC_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// Sender of completion mail [default: docproc@localhost].
    #[arg(long, env = "DOCPROC_SMTP_FROM")]
    smtp_from: Option<String>,
    /// Public base URL used in links of mails, e.g. https://docproc.example.com [default: none, paths only].
    #[arg(long, env = "DOCPROC_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds between WebSocket pings; a connection silent for three times this is closed [default: 20].
    #[arg(long, env = "DOCPROC_WS_PING_SECS")]
    ws_ping_secs: Option<u64>,
    /// Jobs and correlation ids one WebSocket may follow [default: 1000].
    #[arg(long, env = "DOCPROC_WS_MAX_SUBSCRIPTIONS")]
    ws_max_subscriptions: Option<usize>,
    /// Events kept for clients that reconnect with a last event id [default: 100000].
    #[arg(long, env = "DOCPROC_WS_REPLAY_EVENTS")]
    ws_replay_events: Option<usize>,
}

fn secs(name: &str, v: u64, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        range.contains(&v),
        "{name} must be {} to {}",
        range.start(),
        range.end()
    );
    Ok(Duration::from_secs(v))
}

impl NotifyArgs {
    /// Applies the flags over `c`.
    pub(crate) fn apply(&self, c: &mut NotifyConfig) -> anyhow::Result<()> {
        let w = &mut c.webhook;
        if let Some(s) = &self.webhook_secret {
            docproc_server::notify::webhook::Signer::from_secret(s)
                .map_err(|e| anyhow::anyhow!("--webhook-secret / DOCPROC_WEBHOOK_SECRET: {e}"))?;
            w.secret = Some(s.clone());
        }
        if !self.webhook_allow.is_empty() {
            docproc_server::notify::ssrf::Allowlist::parse(&self.webhook_allow)
                .map_err(|e| anyhow::anyhow!("--webhook-allow / DOCPROC_WEBHOOK_ALLOW: {e}"))?;
            w.allowlist = self.webhook_allow.clone();
        }
        if let Some(s) = self.webhook_retry_window_secs {
            w.retry_window = secs("--webhook-retry-window-secs", s, 1..=30 * 86_400)?;
        }
        if let Some(ms) = self.webhook_retry_base_ms {
            anyhow::ensure!(ms >= 1, "--webhook-retry-base-ms must be at least 1");
            w.retry_base = Duration::from_millis(ms);
        }
        if let Some(s) = self.webhook_retry_max_secs {
            w.retry_max = secs("--webhook-retry-max-secs", s, 1..=86_400)?;
        }
        if let Some(s) = self.webhook_timeout_secs {
            w.timeout = secs("--webhook-timeout-secs", s, 1..=300)?;
        }
        if let Some(url) = &self.smtp_url {
            let from = self
                .smtp_from
                .clone()
                .unwrap_or_else(|| "docproc@localhost".into());
            let mut e = EmailConfig::new(url.clone(), from);
            e.public_url = self.public_url.clone();
            c.email = Some(e);
        }
        if let Some(s) = self.ws_ping_secs {
            c.ws.ping_every = secs("--ws-ping-secs", s, 1..=3600)?;
            c.ws.idle_timeout = c.ws.ping_every * 3;
        }
        if let Some(n) = self.ws_max_subscriptions {
            anyhow::ensure!(n >= 1, "--ws-max-subscriptions must be at least 1");
            c.ws.max_subscriptions = n;
        }
        if let Some(n) = self.ws_replay_events {
            anyhow::ensure!(n >= 1, "--ws-replay-events must be at least 1");
            c.hub.replay_events = n;
        }
        Ok(())
    }
}
