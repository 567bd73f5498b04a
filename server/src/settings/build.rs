//! From layered [`Settings`] to the configs the commands run with: every
//! value parsed and range-checked, errors naming the setting and its origin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use docproc_broker::auth::Keys;
use docproc_broker::{BrokerConfig, Durability, ServeOptions};

use super::{Settings, SettingsError};
use crate::config::{ServeConfig, TlsFiles};
use crate::llm::LlmConfig;
use crate::notify::EmailConfig;

/// How log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// `tracing_subscriber::EnvFilter` directives.
    pub filter: String,
}

/// Log settings: `log.format` and `log.level`.
pub fn log(st: &Settings) -> Result<LogConfig, SettingsError> {
    let json = match st.str("log.format").as_deref().map(str::trim) {
        None | Some("text") => false,
        Some("json") => true,
        Some(_) => return Err(st.invalid("log.format", "expected text or json")),
    };
    let filter = st.str("log.level").unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&filter).is_err() {
        return Err(st.invalid("log.level", "not a valid log filter"));
    }
    Ok(LogConfig { json, filter })
}

fn addr(st: &Settings, key: &'static str) -> Result<Option<SocketAddr>, SettingsError> {
    st.str(key)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| st.invalid(key, "expected IP:PORT, e.g. 127.0.0.1:8080"))
        })
        .transpose()
}

fn secs(st: &Settings, key: &'static str, max: u64) -> Result<Option<Duration>, SettingsError> {
    Ok(st.u64_in(key, 1..=max)?.map(Duration::from_secs))
}

fn count(st: &Settings, key: &'static str, max: u64) -> Result<Option<usize>, SettingsError> {
    Ok(st.u64_in(key, 0..=max)?.map(|n| n as usize))
}

/// API keys of `auth.keys`.
pub fn keys(st: &Settings) -> Result<Keys, SettingsError> {
    let entries = st.list("auth.keys").unwrap_or_default();
    Keys::parse(&entries).map_err(|e| st.invalid("auth.keys", e))
}

/// TLS files of `tls.cert` and `tls.key`; both or neither, both readable.
pub fn tls(st: &Settings) -> Result<Option<TlsFiles>, SettingsError> {
    match (st.str("tls.cert"), st.str("tls.key")) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            for (k, path) in [("tls.cert", &cert), ("tls.key", &key)] {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(st.invalid(k, format!("cannot read it: {e}")));
                }
            }
            Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }))
        }
        (Some(_), None) => Err(st.invalid("tls.cert", "needs tls.key too")),
        (None, Some(_)) => Err(st.invalid("tls.key", "needs tls.cert too")),
    }
}

/// Refuses a non-loopback `listen` without keys unless `insecure`.
pub fn check_exposure(
    listen: SocketAddr,
    keys: &Keys,
    insecure: bool,
) -> Result<(), SettingsError> {
    if keys.is_empty() && !listen.ip().is_loopback() && !insecure {
        return Err(SettingsError::Conflict(format!(
            "refusing to listen on {listen} without API keys: anyone who reaches it could \
             upload, cancel and read every job. Configure auth.keys (DOCPROC_API_KEYS; \
             `docproc key new` makes one), listen on 127.0.0.1, or pass --insecure"
        )));
    }
    Ok(())
}

/// The queue URL: `queue.url`, else one made from `queue.type` and the
/// seed's Redis/Kafka settings; `None` is the embedded broker.
fn queue_url(st: &Settings) -> Result<Option<String>, SettingsError> {
    let key = st.str("queue.api_key");
    if let Some(url) = st.str("queue.url") {
        let url = url.trim().to_string();
        return Ok(Some(match key {
            Some(k)
                if (url.starts_with("grpc://") || url.starts_with("grpcs://"))
                    && !url.contains('@') =>
            {
                url.replacen("://", &format!("://{k}@"), 1)
            }
            _ => url,
        }));
    }
    let Some(kind) = st.str("queue.type") else {
        return Ok(None);
    };
    match kind.trim().to_ascii_lowercase().as_str() {
        "rocksdb" | "embedded" => Ok(None),
        "memory" => Ok(Some("memory://".into())),
        "redis" => {
            let host = st
                .str("queue.redis_host")
                .unwrap_or_else(|| "127.0.0.1".into());
            let port = st.u64_in("queue.redis_port", 1..=65_535)?.unwrap_or(6379);
            let auth = match st.str("queue.redis_password") {
                Some(p) => format!(
                    ":{}@",
                    url::form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>()
                ),
                None => String::new(),
            };
            Ok(Some(format!("redis://{auth}{}:{port}", host.trim())))
        }
        "kafka" => {
            let servers = st
                .str("queue.kafka_bootstrap_servers")
                .unwrap_or_else(|| "127.0.0.1:9092".into());
            Ok(Some(format!("kafka://{}", servers.replace(' ', ""))))
        }
        "rabbitmq" | "amqp" => {
            let url = st
                .str("queue.rabbitmq_url")
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
            if !url.trim().starts_with("amqp://") {
                return Err(st.invalid(
                    "queue.rabbitmq_url",
                    "expected amqp://USER:PASS@HOST:PORT/VHOST",
                ));
            }
            Ok(Some(url.trim().to_string()))
        }
        "grpc" => Err(st.invalid(
            "queue.type",
            "grpc needs queue.url = grpc://HOST:PORT (DOCPROC_QUEUE)",
        )),
        _ => Err(st.invalid(
            "queue.type",
            "expected rocksdb, memory, redis, kafka or rabbitmq (or set queue.url)",
        )),
    }
}

/// Keeps only the pools `types` names (`excel` or `excel_processing`, …):
/// the others get no workers.
fn only_pools(
    st: &Settings,
    types: &[String],
    p: &mut crate::config::Pools,
) -> Result<(), SettingsError> {
    use crate::jobs::types as t;
    let mut keep = [false; 5];
    for name in types.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let i = match name.to_ascii_lowercase().as_str() {
            "excel" | t::EXCEL => 0,
            "pdf" | t::PDF => 1,
            "ai" | t::AI => 2,
            "webhook" | t::WEBHOOK => 3,
            "email" | t::EMAIL => 4,
            _ => {
                return Err(st.invalid(
                    "workers.job_types",
                    "expected excel, pdf, ai, webhook or email (or their job type names)",
                ))
            }
        };
        keep[i] = true;
    }
    if !keep.contains(&true) {
        return Err(st.invalid("workers.job_types", "names no pool"));
    }
    let pools: [(&mut usize, Option<&mut usize>); 5] = [
        (&mut p.excel, Some(&mut p.excel_max)),
        (&mut p.pdf, Some(&mut p.pdf_max)),
        (&mut p.ai, Some(&mut p.ai_max)),
        (&mut p.webhook, None),
        (&mut p.email, None),
    ];
    for ((size, max), kept) in pools.into_iter().zip(keep) {
        if !kept {
            *size = 0;
            if let Some(m) = max {
                *m = 0;
            }
        }
    }
    Ok(())
}

/// Settings of `docproc serve` and `docproc worker`.
pub fn serve(st: &Settings) -> Result<ServeConfig, SettingsError> {
    let mut c = ServeConfig::default();
    if let Some(d) = st.str("data_dir") {
        c.data_dir = PathBuf::from(d);
    }
    if let Some(a) = addr(st, "server.listen")? {
        c.listen = a;
    }
    c.queue_url = queue_url(st)?;
    if let Some(s) = st.u64_in("queue.wait_secs", 0..=3600)? {
        c.queue_wait = Duration::from_secs(s);
    }
    if let Some(n) = st.u64_in("server.max_upload_bytes", 1..=u64::MAX)? {
        c.max_upload_bytes = n;
    }
    if let Some(d) = secs(st, "server.request_timeout_secs", 86_400)? {
        c.request_timeout = d;
    }
    if let Some(n) = st.u64_in("server.max_header_bytes", 1024..=1024 * 1024)? {
        c.max_header_bytes = n as usize;
    }
    http_limits(st, &mut c.http)?;
    c.insecure = st.bool("server.insecure")?.unwrap_or(false);
    c.keys = keys(st)?;
    c.tls = tls(st)?;
    if let Some(n) = st.u64_in("auth.upload_rate", 1..=1_000_000)? {
        c.upload_rate_per_min = n as u32;
    }
    let pools = [
        ("workers.excel", &mut c.pools.excel),
        ("workers.pdf", &mut c.pools.pdf),
        ("workers.ai", &mut c.pools.ai),
        ("workers.webhook", &mut c.pools.webhook),
        ("workers.excel_max", &mut c.pools.excel_max),
        ("workers.pdf_max", &mut c.pools.pdf_max),
        ("workers.ai_max", &mut c.pools.ai_max),
    ];
    for (key, slot) in pools {
        if let Some(n) = count(st, key, 1024)? {
            *slot = n;
        }
    }
    if let Some(types) = st.list("workers.job_types") {
        only_pools(st, &types, &mut c.pools)?;
    }
    if let Some(d) = secs(st, "workers.scale_idle_secs", 86_400)? {
        c.pools.scale_idle = d;
    }
    if let Some(p) = st.u64_in("workers.scale_max_load_pct", 1..=10_000)? {
        c.pools.scale_max_load = p as f64 / 100.0;
    }
    if let Some(d) = secs(st, "jobs.timeout_secs", 86_400)? {
        c.job_timeout = d;
    }
    if let Some(n) = st.u64_in("jobs.max_retries", 0..=100)? {
        c.max_retries = n as u32;
    }
    if let Some(ms) = st.u64_in("jobs.heartbeat_ms", 10..=3_600_000)? {
        c.heartbeat = Some(Duration::from_millis(ms));
    }
    if let Some(s) = st.u64_in("jobs.shutdown_grace_secs", 0..=3600)? {
        c.shutdown_grace = Duration::from_secs(s);
    }
    if let Some(h) = st.u64_in("jobs.result_retention_hours", 1..=24 * 3650)? {
        c.result_retention = Duration::from_secs(h * 3600);
    }
    c.allow_unlimited_extractors = st.bool("extract.allow_unlimited")?.unwrap_or(false);
    c.llm = llm(st)?;
    notify(st, &mut c)?;
    if st.cmd() == super::Cmd::Serve {
        check_exposure(c.listen, &c.keys, c.insecure)?;
    }
    c.metrics_listen = addr(st, "metrics.listen")?;
    if let Some(m) = c.metrics_listen {
        check_exposure(m, &c.keys, c.insecure)?;
    }
    Ok(c)
}

/// The listener settings shared by the HTTP server and the broker's gRPC;
/// `None` where not given.
struct Listener {
    header_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_streams: Option<u32>,
    drain: Option<Duration>,
}

fn listener(st: &Settings) -> Result<Listener, SettingsError> {
    Ok(Listener {
        header_timeout: secs(st, "server.header_timeout_secs", 3600)?,
        max_connections: st
            .u64_in("server.max_connections", 1..=1_000_000)?
            .map(|n| n as usize),
        max_streams: st
            .u64_in("server.max_streams", 1..=10_000)?
            .map(|n| n as u32),
        drain: st
            .u64_in("server.drain_secs", 0..=3600)?
            .map(Duration::from_secs),
    })
}

fn http_limits(
    st: &Settings,
    l: &mut crate::http::listen::HttpLimits,
) -> Result<(), SettingsError> {
    let given = listener(st)?;
    l.header_timeout = given.header_timeout.unwrap_or(l.header_timeout);
    l.max_connections = given.max_connections.unwrap_or(l.max_connections);
    l.max_streams = given.max_streams.unwrap_or(l.max_streams);
    l.drain = given.drain.unwrap_or(l.drain);
    if let Some(d) = secs(st, "server.idle_timeout_secs", 86_400)? {
        l.idle_timeout = d;
    }
    Ok(())
}

fn llm(st: &Settings) -> Result<Option<LlmConfig>, SettingsError> {
    let Some(url) = st.str("llm.url") else {
        return Ok(None);
    };
    let model = st
        .str("llm.model")
        .ok_or_else(|| st.invalid("llm.url", "needs llm.model (DOCPROC_LLM_MODEL) too"))?;
    let mut llm = LlmConfig::new(url, model);
    llm.api_key = st.str("llm.api_key").filter(|k| !k.is_empty());
    if let Some(d) = secs(st, "llm.timeout_secs", 600)? {
        llm.timeout = d;
    }
    Ok(Some(llm))
}

fn notify(st: &Settings, c: &mut ServeConfig) -> Result<(), SettingsError> {
    let w = &mut c.notify.webhook;
    if let Some(s) = st.str("webhook.secret") {
        crate::notify::webhook::Signer::from_secret(&s)
            .map_err(|e| st.invalid("webhook.secret", e.to_string()))?;
        w.secret = Some(s);
    }
    if let Some(allow) = st.list("webhook.allow") {
        crate::notify::ssrf::Allowlist::parse(&allow)
            .map_err(|e| st.invalid("webhook.allow", e.to_string()))?;
        w.allowlist = allow;
    }
    if let Some(d) = secs(st, "webhook.retry_window_secs", 30 * 86_400)? {
        w.retry_window = d;
    }
    if let Some(ms) = st.u64_in("webhook.retry_base_ms", 1..=86_400_000)? {
        w.retry_base = Duration::from_millis(ms);
    }
    if let Some(d) = secs(st, "webhook.retry_max_secs", 86_400)? {
        w.retry_max = d;
    }
    if let Some(d) = secs(st, "webhook.timeout_secs", 300)? {
        w.timeout = d;
    }
    if let Some(url) = st.str("smtp.url") {
        let from = st
            .str("smtp.from")
            .unwrap_or_else(|| "docproc@localhost".into());
        let mut e = EmailConfig::new(url, from);
        e.public_url = st.str("server.public_url");
        c.notify.email = Some(e);
    }
    if let Some(d) = secs(st, "ws.ping_secs", 3600)? {
        c.notify.ws.ping_every = d;
        c.notify.ws.idle_timeout = d * 3;
    }
    if let Some(n) = st.u64_in("ws.max_subscriptions", 1..=1_000_000)? {
        c.notify.ws.max_subscriptions = n as usize;
    }
    if let Some(n) = st.u64_in("ws.replay_events", 1..=10_000_000)? {
        c.notify.hub.replay_events = n as usize;
    }
    Ok(())
}

/// Everything `docproc broker` runs with.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// gRPC address.
    pub listen: SocketAddr,
    /// The engine's settings.
    pub broker: BrokerConfig,
    /// API keys.
    pub keys: Keys,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Where to serve `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Connection limits of the gRPC server (keys and TLS are set apart,
    /// from `keys` and `tls`, when serving).
    pub serve: ServeOptions,
}

/// Settings of `docproc broker`; unset ones take `BrokerConfig::default()`.
pub fn broker(st: &Settings) -> Result<BrokerSettings, SettingsError> {
    let dir = st.str("data_dir").unwrap_or_else(|| "./data".into());
    let mut c = BrokerConfig::with_dir(&dir);
    if let Some(d) = st.str("broker.durability") {
        c.durability = d
            .parse::<Durability>()
            .map_err(|e| st.invalid("broker.durability", e.to_string()))?;
    }
    if let Some(n) = st.u64_in("broker.max_message_bytes", 1..=256 * 1024 * 1024)? {
        c.max_message_bytes = n as usize;
    }
    if let Some(n) = st.u64_in("broker.lease_timeout_ms", 1..=7 * 86_400_000)? {
        c.default_lease_timeout_ms = n;
    }
    if let Some(n) = st.u64_in("broker.max_attempts", 1..=10_000)? {
        c.default_max_attempts = n as u32;
    }
    if let Some(s) = st.u64_in("broker.retention_secs", 1..=3650 * 86_400)? {
        c.retention_ms = s * 1000;
    }
    if let Some(s) = st.u64_in("broker.dedup_window_secs", 0..=30 * 86_400)? {
        c.dedup_window_ms = s * 1000;
    }
    let listen = addr(st, "broker.listen")?.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7070)));
    let keys = keys(st)?;
    let insecure = st.bool("server.insecure")?.unwrap_or(false);
    check_exposure(listen, &keys, insecure)?;
    let metrics_listen = addr(st, "metrics.listen")?;
    if let Some(m) = metrics_listen {
        check_exposure(m, &keys, insecure)?;
    }
    let given = listener(st)?;
    let mut serve = ServeOptions::default();
    let l = &mut serve.limits;
    l.first_request = given.header_timeout.unwrap_or(l.first_request);
    l.max_connections = given.max_connections.unwrap_or(l.max_connections);
    serve.max_streams = given.max_streams.unwrap_or(serve.max_streams);
    serve.drain = given.drain.unwrap_or(serve.drain);
    serve.max_connection_age = secs(st, "broker.max_connection_age_secs", 30 * 86_400)?;
    Ok(BrokerSettings {
        listen,
        broker: c,
        keys,
        tls: tls(st)?,
        metrics_listen,
        serve,
    })
}
