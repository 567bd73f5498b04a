//! The table of every setting: TOML key, environment names, flag, commands.

use super::{Cmd, Kind, Spec};

const ALL: &[Cmd] = &[Cmd::Serve, Cmd::Worker, Cmd::Broker];
const JOBS: &[Cmd] = &[Cmd::Serve, Cmd::Worker];
const SERVE: &[Cmd] = &[Cmd::Serve];
const BROKER: &[Cmd] = &[Cmd::Broker];
const HTTP_AND_BROKER: &[Cmd] = &[Cmd::Serve, Cmd::Broker];

const fn s(
    key: &'static str,
    env: &'static [&'static str],
    flag: &'static str,
    cmds: &'static [Cmd],
    kind: Kind,
    help: &'static str,
) -> Spec {
    Spec {
        key,
        env,
        flag,
        cmds,
        kind,
        secret: false,
        help,
    }
}

const fn secret(mut spec: Spec) -> Spec {
    spec.secret = true;
    spec
}

use Kind::{Bool, Int, List, Str};

/// Every setting of every command.
pub static SPECS: &[Spec] = &[
    // Where things live.
    s("data_dir", &["DOCPROC_DATA_DIR"], "data-dir", ALL, Str,
      "Uploads, results and the embedded queue (serve, worker); the broker's database (broker) [default: ./data]"),
    s("log.format", &["DOCPROC_LOG_FORMAT"], "log-format", ALL, Str,
      "Log lines as `text` (human-readable) or `json` (one object per line) [default: text]"),
    s("log.level", &["DOCPROC_LOG", "RUST_LOG"], "log-level", ALL, Str,
      "Log filter, e.g. `info` or `docproc_server=debug,info` [default: info]"),
    // HTTP server.
    s("server.listen", &["DOCPROC_LISTEN"], "listen", SERVE, Str,
      "HTTP address; a non-loopback address needs API keys or --insecure [default: 127.0.0.1:8080]"),
    s("server.insecure", &["DOCPROC_INSECURE"], "insecure", ALL, Bool,
      "Allow a non-loopback address without API keys (anyone who reaches it can do anything) [default: false]"),
    s("server.max_upload_bytes", &["DOCPROC_MAX_UPLOAD_BYTES"], "max-upload-bytes", SERVE, Int,
      "Largest upload in bytes [default: 104857600]"),
    s("server.request_timeout_secs", &["DOCPROC_REQUEST_TIMEOUT_SECS"], "request-timeout-secs", SERVE, Int,
      "Seconds any request may take (uploads included); then 408 [default: 300]"),
    s("server.max_header_bytes", &["DOCPROC_MAX_HEADER_BYTES"], "max-header-bytes", SERVE, Int,
      "Largest total size of a request's headers; then 431 [default: 16384]"),
    s("server.header_timeout_secs", &["DOCPROC_HEADER_TIMEOUT_SECS"], "header-timeout-secs", HTTP_AND_BROKER, Int,
      "Seconds a client has to send a request's headers (a new connection its first request, TLS included; an idle HTTP/1.1 connection its next one) [default: 10]"),
    s("server.idle_timeout_secs", &["DOCPROC_IDLE_TIMEOUT_SECS"], "idle-timeout-secs", SERVE, Int,
      "Seconds an HTTP/2 connection may stay without requests before it is closed [default: 60]"),
    s("server.max_connections", &["DOCPROC_MAX_CONNECTIONS"], "max-connections", HTTP_AND_BROKER, Int,
      "Connections open at once, WebSockets and gRPC streams included; more are refused (HTTP 503) [default: 1024]"),
    s("server.max_streams", &["DOCPROC_MAX_STREAMS"], "max-streams", HTTP_AND_BROKER, Int,
      "Requests in flight on one HTTP/2 connection [default: 100 (HTTP), 256 (gRPC)]"),
    s("server.drain_secs", &["DOCPROC_DRAIN_SECS"], "drain-secs", HTTP_AND_BROKER, Int,
      "Seconds requests in flight may take to finish after SIGTERM; then their connections are closed [default: 10]"),
    s("broker.max_connection_age_secs", &["DOCPROC_MAX_CONNECTION_AGE_SECS"], "max-connection-age-secs", BROKER, Int,
      "Seconds after which a gRPC connection is asked to reconnect (GOAWAY), to spread clients over restarted brokers [default: none]"),
    s("server.public_url", &["DOCPROC_PUBLIC_URL"], "public-url", JOBS, Str,
      "Public base URL used in links of mails, e.g. https://docproc.example.com [default: none, paths only]"),
    // API keys.
    secret(s("auth.keys", &["DOCPROC_API_KEYS"], "api-keys", HTTP_AND_BROKER, List,
      "API keys as NAME:SCOPE:sha256:HEX (scope read, worker, write or admin; made by `docproc key new`) [default: none, loopback only]")),
    s("auth.upload_rate", &["DOCPROC_UPLOAD_RATE"], "upload-rate", SERVE, Int,
      "Uploads per minute per API key (and per client address without keys) [default: 600]"),
    // Metrics of processes without the HTTP API.
    s("metrics.listen", &["DOCPROC_METRICS_LISTEN"], "metrics-listen", &[Cmd::Worker, Cmd::Broker], Str,
      "Address serving /metrics and /healthz for `docproc worker` and `docproc broker` [default: none]"),
    // TLS.
    s("tls.cert", &["DOCPROC_TLS_CERT"], "tls-cert", HTTP_AND_BROKER, Str,
      "PEM certificate chain: serve HTTPS (serve) or gRPC over TLS (broker) [default: none, plaintext]"),
    s("tls.key", &["DOCPROC_TLS_KEY"], "tls-key", HTTP_AND_BROKER, Str,
      "PEM private key of tls.cert [default: none]"),
    // Queue.
    secret(s("queue.url", &["DOCPROC_QUEUE"], "queue", JOBS, Str,
      "Queue URL: rocksdb://PATH, memory://, grpc://HOST:PORT, grpcs://HOST:PORT[?ca=CA.pem], redis://HOST:PORT[/DB], kafka://HOST:PORT, amqp://USER:PASS@HOST:PORT/VHOST [default: rocksdb://DATA_DIR/queue]")),
    s("queue.type", &["DOCPROC_QUEUE_TYPE", "QUEUE_TYPE"], "queue-type", JOBS, Str,
      "Queue backend when no URL is given: rocksdb, memory, redis, kafka or rabbitmq [default: rocksdb]"),
    s("queue.redis_host", &["DOCPROC_REDIS_HOST", "REDIS_HOST"], "redis-host", JOBS, Str,
      "Redis host with queue.type = redis [default: 127.0.0.1]"),
    s("queue.redis_port", &["DOCPROC_REDIS_PORT", "REDIS_PORT"], "redis-port", JOBS, Int,
      "Redis port with queue.type = redis [default: 6379]"),
    secret(s("queue.redis_password", &["DOCPROC_REDIS_PASSWORD", "REDIS_PASSWORD"], "redis-password", JOBS, Str,
      "Redis password with queue.type = redis [default: none]")),
    s("queue.kafka_bootstrap_servers", &["DOCPROC_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"], "kafka-bootstrap-servers", JOBS, Str,
      "Kafka brokers HOST:PORT,… with queue.type = kafka [default: 127.0.0.1:9092]"),
    secret(s("queue.rabbitmq_url", &["DOCPROC_RABBITMQ_URL", "RABBITMQ_URL"], "rabbitmq-url", JOBS, Str,
      "RabbitMQ amqp://USER:PASS@HOST:PORT/VHOST with queue.type = rabbitmq [default: amqp://guest:guest@127.0.0.1:5672/%2f]")),
    s("queue.wait_secs", &["DOCPROC_QUEUE_WAIT_SECS"], "queue-wait-secs", JOBS, Int,
      "Seconds startup waits for a queue backend that does not answer yet (a broker, Redis or RabbitMQ still starting); then it fails [default: 60]"),
    secret(s("queue.api_key", &["DOCPROC_QUEUE_API_KEY"], "queue-api-key", JOBS, Str,
      "API key presented to a grpc:// broker [default: none]")),
    // Worker pools.
    s("workers.excel", &["DOCPROC_EXCEL_WORKERS", "EXCEL_WORKERS"], "excel-workers", JOBS, Int,
      "Spreadsheet workers [default: 2]"),
    s("workers.pdf", &["DOCPROC_PDF_WORKERS", "PDF_WORKERS"], "pdf-workers", JOBS, Int,
      "PDF workers [default: 2]"),
    s("workers.ai", &["DOCPROC_AI_WORKERS", "AI_WORKERS"], "ai-workers", JOBS, Int,
      "Analysis workers [default: 1]"),
    s("workers.webhook", &["DOCPROC_WEBHOOK_WORKERS"], "webhook-workers", JOBS, Int,
      "Concurrent webhook deliveries [default: 4]"),
    s("workers.job_types", &["DOCPROC_JOB_TYPES", "WORKER_TYPE"], "job-types", JOBS, List,
      "Run only these pools: excel, pdf, ai, webhook, email or their job type names (excel_processing, …), comma-separated [default: every pool]"),
    s("workers.excel_max", &["DOCPROC_EXCEL_WORKERS_MAX"], "excel-workers-max", JOBS, Int,
      "Spreadsheet workers the pool may grow to while jobs wait (workers.excel is then its minimum) [default: workers.excel, a fixed pool]"),
    s("workers.pdf_max", &["DOCPROC_PDF_WORKERS_MAX"], "pdf-workers-max", JOBS, Int,
      "PDF workers the pool may grow to while jobs wait [default: workers.pdf, a fixed pool]"),
    s("workers.ai_max", &["DOCPROC_AI_WORKERS_MAX"], "ai-workers-max", JOBS, Int,
      "Analysis workers the pool may grow to while jobs wait [default: workers.ai, a fixed pool]"),
    s("workers.scale_idle_secs", &["DOCPROC_SCALE_IDLE_SECS"], "scale-idle-secs", JOBS, Int,
      "Seconds a worker of a growing pool may sit idle before it leaves (down to the minimum) [default: 60]"),
    s("workers.scale_max_load_pct", &["DOCPROC_SCALE_MAX_LOAD_PCT"], "scale-max-load-pct", JOBS, Int,
      "A pool grows only while the 1-minute load average per core is below this percentage [default: 100]"),
    // Jobs.
    s("jobs.timeout_secs", &["DOCPROC_JOB_TIMEOUT_SECS"], "job-timeout-secs", JOBS, Int,
      "Lease of each job in seconds: a silent worker loses the job [default: 300]"),
    s("jobs.max_retries", &["DOCPROC_MAX_RETRIES"], "max-retries", JOBS, Int,
      "Failures retried before a job fails [default: 3]"),
    s("jobs.heartbeat_ms", &["DOCPROC_HEARTBEAT_MS"], "heartbeat-ms", JOBS, Int,
      "Lease renewal and cancel check interval in ms [default: a third of the job timeout, at most 30 s]"),
    s("jobs.shutdown_grace_secs", &["DOCPROC_SHUTDOWN_GRACE_SECS"], "shutdown-grace-secs", JOBS, Int,
      "Seconds jobs in hand may run on after SIGTERM before they are handed back [default: 25]"),
    s("jobs.result_retention_hours", &["DOCPROC_RESULT_RETENTION_HOURS"], "result-retention-hours", JOBS, Int,
      "Hours results are kept [default: 168]"),
    s("extract.allow_unlimited", &["DOCPROC_EXTRACT_ALLOW_UNLIMITED"], "extract-allow-unlimited", JOBS, Bool,
      "Run extractors even where they cannot set their resource limits (memory, CPU, file size); otherwise such a job fails [default: false]"),
    // Analysis summaries.
    s("llm.url", &["DOCPROC_LLM_URL"], "llm-url", JOBS, Str,
      "OpenAI-compatible API base URL for analysis summaries [default: none, built-in summaries]"),
    s("llm.model", &["DOCPROC_LLM_MODEL"], "llm-model", JOBS, Str,
      "Model asked for summaries (needed with llm.url) [default: none]"),
    secret(s("llm.api_key", &["DOCPROC_LLM_API_KEY"], "llm-api-key", JOBS, Str,
      "Bearer token of the LLM endpoint [default: none]")),
    s("llm.timeout_secs", &["DOCPROC_LLM_TIMEOUT_SECS"], "llm-timeout-secs", JOBS, Int,
      "Seconds a summary may take before the built-in one is used [default: 30]"),
    // Webhooks.
    secret(s("webhook.secret", &["DOCPROC_WEBHOOK_SECRET"], "webhook-secret", JOBS, Str,
      "Webhook signing secret, whsec_<base64 key of 24-64 bytes> [default: made once into DATA_DIR/webhook-secret]")),
    s("webhook.allow", &["DOCPROC_WEBHOOK_ALLOW"], "webhook-allow", JOBS, List,
      "Addresses, networks (CIDR) and host names webhooks may reach although private [default: none]"),
    s("webhook.retry_window_secs", &["DOCPROC_WEBHOOK_RETRY_WINDOW_SECS"], "webhook-retry-window-secs", JOBS, Int,
      "Seconds a webhook is retried for [default: 86400]"),
    s("webhook.retry_base_ms", &["DOCPROC_WEBHOOK_RETRY_BASE_MS"], "webhook-retry-base-ms", JOBS, Int,
      "First retry delay in ms, doubling per attempt with jitter [default: 5000]"),
    s("webhook.retry_max_secs", &["DOCPROC_WEBHOOK_RETRY_MAX_SECS"], "webhook-retry-max-secs", JOBS, Int,
      "Longest delay between retries in seconds [default: 3600]"),
    s("webhook.timeout_secs", &["DOCPROC_WEBHOOK_TIMEOUT_SECS"], "webhook-timeout-secs", JOBS, Int,
      "Seconds a receiver has to answer [default: 30]"),
    // Mail.
    secret(s("smtp.url", &["DOCPROC_SMTP_URL"], "smtp-url", JOBS, Str,
      "SMTP server for completion mail: smtp://HOST:PORT[?tls=required], smtps://USER:PASS@HOST:465 [default: none, no mail]")),
    s("smtp.from", &["DOCPROC_SMTP_FROM"], "smtp-from", JOBS, Str,
      "Sender of completion mail [default: docproc@localhost]"),
    // WebSocket.
    s("ws.ping_secs", &["DOCPROC_WS_PING_SECS"], "ws-ping-secs", SERVE, Int,
      "Seconds between WebSocket pings; silent three times this, a connection is closed [default: 20]"),
    s("ws.max_subscriptions", &["DOCPROC_WS_MAX_SUBSCRIPTIONS"], "ws-max-subscriptions", SERVE, Int,
      "Jobs and correlation ids one WebSocket may follow [default: 1000]"),
    s("ws.replay_events", &["DOCPROC_WS_REPLAY_EVENTS"], "ws-replay-events", SERVE, Int,
      "Events kept for clients that reconnect with a last event id [default: 100000]"),
    // The broker (`docproc broker`).
    s("broker.listen", &["DOCPROC_BROKER_LISTEN", "DOCPROC_LISTEN"], "listen", BROKER, Str,
      "gRPC address of `docproc broker`; non-loopback needs API keys or --insecure [default: 127.0.0.1:7070]"),
    s("broker.durability", &["DOCPROC_DURABILITY"], "durability", BROKER, Str,
      "sync (fsync before answering, group commit), batch[:MS] (fsync every MS; a power cut loses up to that) or none [default: sync]"),
    s("broker.max_message_bytes", &["DOCPROC_MAX_MESSAGE_BYTES"], "max-message-bytes", BROKER, Int,
      "Largest payload in bytes [default: 1048576]"),
    s("broker.lease_timeout_ms", &["DOCPROC_LEASE_TIMEOUT_MS"], "lease-timeout-ms", BROKER, Int,
      "Lease timeout for messages that set none, in ms [default: 30000]"),
    s("broker.max_attempts", &["DOCPROC_MAX_ATTEMPTS"], "max-attempts", BROKER, Int,
      "Delivery attempts for messages that set none [default: 5]"),
    s("broker.retention_secs", &["DOCPROC_RETENTION_SECS"], "retention-secs", BROKER, Int,
      "How long final messages stay queryable, in seconds [default: 86400]"),
    s("broker.dedup_window_secs", &["DOCPROC_DEDUP_WINDOW_SECS"], "dedup-window-secs", BROKER, Int,
      "How long dedup keys are remembered, in seconds [default: 600]"),
];
