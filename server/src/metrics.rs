//! Prometheus metrics of `docproc serve`: what this process counts itself
//! (HTTP requests, job durations and queue waits seen on the event stream,
//! webhook outcomes) and what it reads from the queue at scrape time (depth
//! by type, priority and state; lifetime job counters; the embedded
//! broker's fsync latency), rendered in the text exposition format.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;

use docproc_queue::{JobEvent, JobStatus, JobTypeStats, SyncLatency};

/// Bucket bounds (seconds) of request and fsync latencies.
const FAST: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds (seconds) of job durations and queue waits.
const SLOW: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Jobs whose start or queueing time is remembered, at most.
const TRACKED_JOBS: usize = 100_000;

/// A cumulative histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl From<SyncLatency> for Histogram {
    /// The backend's already cumulative bucket counts (the broker's fsyncs).
    fn from(l: SyncLatency) -> Self {
        Self {
            bounds: l.bounds,
            counts: l.counts,
            sum: l.sum,
            count: l.count,
        }
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds one observation in seconds.
    pub fn observe(&mut self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if secs <= *b {
                *c += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Debug, Default)]
struct Timings {
    queued_at: HashMap<String, u64>,
    started_at: HashMap<String, u64>,
}

/// Requests of one route: counts by method and status, and latency.
#[derive(Debug)]
struct RouteStats {
    /// `(method, status, count)`; a handful per route.
    counts: Vec<(String, u16, u64)>,
    seconds: Histogram,
}

/// Counters and histograms this process keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<String, RouteStats>>,
    job_seconds: Mutex<BTreeMap<String, Histogram>>,
    wait_seconds: Mutex<BTreeMap<String, Histogram>>,
    timings: Mutex<Timings>,
    webhooks: Mutex<BTreeMap<&'static str, u64>>,
}

/// A worker pool's scaling as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolScaling {
    /// The job type.
    pub job_type: String,
    /// Fewest workers.
    pub min: usize,
    /// Most workers.
    pub max: usize,
    /// The size it is heading for.
    pub target: usize,
    /// `(direction, reason, decisions)`.
    pub events: Vec<(&'static str, &'static str, u64)>,
}

/// What the scrape reads besides this process's own counts.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Queue depth and lifetime counters per job type; `None`: the queue
    /// did not answer.
    pub queue: Option<Vec<JobTypeStats>>,
    /// `(job type, workers, busy)` of this process's pools.
    pub workers: Vec<(String, usize, usize)>,
    /// Bounds, targets and decisions of this process's pools.
    pub scaling: Vec<PoolScaling>,
    /// The embedded broker's fsync latency.
    pub fsync: Option<SyncLatency>,
    /// Open WebSocket connections.
    pub websockets: Option<u64>,
    /// HTTP connections open now and refused at the cap since start.
    pub connections: Option<(u64, u64)>,
    /// When the snapshot was taken (ms since the Unix epoch): ages are
    /// measured from it.
    pub now_ms: u64,
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn http(&self, route: &str, method: &str, status: u16, took: Duration) {
        // A client chooses the method string: the standard ones are
        // labels, any other is `other`, so no client can add series.
        const KNOWN: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
        ];
        let method = if KNOWN.contains(&method) {
            method
        } else {
            "other"
        };
        // Every request passes here: one lock, and allocation only for a
        // series not seen before.
        let mut http = self.http.lock();
        if !http.contains_key(route) {
            let fresh = RouteStats {
                counts: Vec::new(),
                seconds: Histogram::new(FAST),
            };
            http.insert(route.to_string(), fresh);
        }
        let Some(r) = http.get_mut(route) else {
            return;
        };
        r.seconds.observe(took.as_secs_f64());
        match r
            .counts
            .iter_mut()
            .find(|(m, s, _)| m == method && *s == status)
        {
            Some((_, _, n)) => *n += 1,
            None => r.counts.push((method.to_string(), status, 1)),
        }
    }

    /// Counts one webhook attempt's outcome: `delivered`, `retry`, `failed`.
    pub fn webhook(&self, outcome: &'static str) {
        *self.webhooks.lock().entry(outcome).or_default() += 1;
    }

    /// Follows a job through its events: the wait from queued to
    /// processing, the time from processing to its end.
    pub fn job_event(&self, ev: &JobEvent) {
        if ev.progress {
            return;
        }
        let id = ev.job_id.0.as_str();
        let mut t = self.timings.lock();
        if t.queued_at.len() > TRACKED_JOBS {
            t.queued_at.clear();
        }
        if t.started_at.len() > TRACKED_JOBS {
            t.started_at.clear();
        }
        match ev.status {
            JobStatus::Queued | JobStatus::Pending => {
                t.queued_at.insert(id.to_string(), ev.at_ms);
            }
            JobStatus::Processing => {
                if let Some(q) = t.queued_at.remove(id) {
                    let wait = ev.at_ms.saturating_sub(q) as f64 / 1000.0;
                    observe(&self.wait_seconds, &ev.job_type, wait);
                }
                t.started_at.insert(id.to_string(), ev.at_ms);
            }
            JobStatus::Completed
            | JobStatus::Failed
            | JobStatus::Retrying
            | JobStatus::Cancelled => {
                t.queued_at.remove(id);
                if let Some(s) = t.started_at.remove(id) {
                    let took = ev.at_ms.saturating_sub(s) as f64 / 1000.0;
                    observe(&self.job_seconds, &ev.job_type, took);
                }
                if ev.status == JobStatus::Retrying {
                    t.queued_at.insert(id.to_string(), ev.at_ms);
                }
            }
        }
    }

    /// The text exposition of everything.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
        };
        help(
            &mut out,
            "docproc_up",
            "gauge",
            "1 when the queue backend answered the scrape.",
        );
        let _ = writeln!(out, "docproc_up {}", u8::from(snap.queue.is_some()));
        if let Some(stats) = &snap.queue {
            help(
                &mut out,
                "docproc_queue_depth",
                "gauge",
                "Jobs by type, priority and state.",
            );
            for t in stats {
                for p in &t.priorities {
                    for (state, n) in [
                        ("pending", p.pending),
                        ("queued", p.queued),
                        ("processing", p.processing),
                        ("retrying", p.retrying),
                        ("failed", p.failed),
                    ] {
                        let _ = writeln!(
                            out,
                            "docproc_queue_depth{{job_type=\"{}\",priority=\"{}\",state=\"{state}\"}} {n}",
                            esc(&t.job_type),
                            p.priority.as_str()
                        );
                    }
                }
            }
            help(
                &mut out,
                "docproc_queue_oldest_age_seconds",
                "gauge",
                "Age of the oldest job waiting for a worker (queued), by type; 0 when none waits.",
            );
            for t in stats {
                let age_ms = t
                    .oldest_queued_at_ms()
                    .map_or(0, |at| snap.now_ms.saturating_sub(at));
                let _ = writeln!(
                    out,
                    "docproc_queue_oldest_age_seconds{{job_type=\"{}\"}} {}",
                    esc(&t.job_type),
                    age_ms as f64 / 1000.0
                );
            }
            help(&mut out, "docproc_jobs_total", "counter", "Job transitions by type since the queue was created (as the queue backend counts them).");
            for t in stats {
                let c = &t.counters;
                for (event, n) in [
                    ("produced", c.published),
                    ("started", c.started),
                    ("completed", c.completed),
                    ("failed", c.failed),
                    ("retried", c.retried),
                    ("lease_expired", c.lease_expired),
                    ("cancelled", c.cancelled),
                ] {
                    let _ = writeln!(
                        out,
                        "docproc_jobs_total{{job_type=\"{}\",event=\"{event}\"}} {n}",
                        esc(&t.job_type)
                    );
                }
            }
        }
        for (name, text, map) in [
            ("docproc_job_duration_seconds", "Time from processing to completed, failed, retrying or cancelled, by job type (events seen by this server).", &self.job_seconds),
            ("docproc_job_queue_wait_seconds", "Time from queued to processing, by job type (events seen by this server).", &self.wait_seconds),
        ] {
            help(&mut out, name, "histogram", text);
            for (ty, h) in map.lock().iter() {
                h.render(&mut out, name, &format!("job_type=\"{}\"", esc(ty)));
            }
        }
        help(
            &mut out,
            "docproc_workers",
            "gauge",
            "Workers of this process by job type.",
        );
        for (ty, size, _) in &snap.workers {
            let _ = writeln!(out, "docproc_workers{{job_type=\"{}\"}} {size}", esc(ty));
        }
        help(
            &mut out,
            "docproc_workers_busy",
            "gauge",
            "Workers of this process running a job.",
        );
        for (ty, _, busy) in &snap.workers {
            let _ = writeln!(
                out,
                "docproc_workers_busy{{job_type=\"{}\"}} {busy}",
                esc(ty)
            );
        }
        type Size = fn(&PoolScaling) -> usize;
        let bounds: [(&str, &str, Size); 3] = [
            (
                "docproc_pool_min_workers",
                "Fewest workers a pool of this process keeps.",
                |p| p.min,
            ),
            (
                "docproc_pool_max_workers",
                "Most workers a pool of this process may grow to.",
                |p| p.max,
            ),
            (
                "docproc_pool_target_workers",
                "The size a pool is heading for after its last scaling decision.",
                |p| p.target,
            ),
        ];
        for (name, text, value) in bounds {
            help(&mut out, name, "gauge", text);
            for p in &snap.scaling {
                let _ = writeln!(
                    out,
                    "{name}{{job_type=\"{}\"}} {}",
                    esc(&p.job_type),
                    value(p)
                );
            }
        }
        help(
            &mut out,
            "docproc_pool_scale_events_total",
            "counter",
            "Scaling decisions by direction and reason (below_min, jobs_waiting, idle).",
        );
        for p in &snap.scaling {
            for (dir, reason, n) in &p.events {
                let _ = writeln!(
                    out,
                    "docproc_pool_scale_events_total{{job_type=\"{}\",direction=\"{dir}\",reason=\"{reason}\"}} {n}",
                    esc(&p.job_type)
                );
            }
        }
        help(
            &mut out,
            "docproc_worker_utilisation",
            "gauge",
            "Busy workers over workers, 0 to 1.",
        );
        for (ty, size, busy) in &snap.workers {
            let u = if *size == 0 {
                0.0
            } else {
                *busy as f64 / *size as f64
            };
            let _ = writeln!(
                out,
                "docproc_worker_utilisation{{job_type=\"{}\"}} {u}",
                esc(ty)
            );
        }
        help(
            &mut out,
            "docproc_webhook_deliveries_total",
            "counter",
            "Webhook attempts by outcome (delivered, retry, failed) made by this process.",
        );
        for outcome in ["delivered", "retry", "failed"] {
            let n = self.webhooks.lock().get(outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "docproc_webhook_deliveries_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        help(
            &mut out,
            "docproc_http_requests_total",
            "counter",
            "HTTP requests by route, method and status.",
        );
        let http = self.http.lock();
        for (route, r) in http.iter() {
            let mut counts = r.counts.clone();
            counts.sort();
            for (method, status, n) in counts {
                let _ = writeln!(
                    out,
                    "docproc_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                    esc(route)
                );
            }
        }
        help(
            &mut out,
            "docproc_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route.",
        );
        for (route, r) in http.iter() {
            r.seconds.render(
                &mut out,
                "docproc_http_request_duration_seconds",
                &format!("route=\"{}\"", esc(route)),
            );
        }
        if let Some(n) = snap.websockets {
            help(
                &mut out,
                "docproc_websocket_connections",
                "gauge",
                "Open WebSocket connections.",
            );
            let _ = writeln!(out, "docproc_websocket_connections {n}");
        }
        if let Some((open, refused)) = snap.connections {
            help(
                &mut out,
                "docproc_http_connections",
                "gauge",
                "Open HTTP connections, WebSockets included.",
            );
            let _ = writeln!(out, "docproc_http_connections {open}");
            help(
                &mut out,
                "docproc_http_connections_refused_total",
                "counter",
                "HTTP connections refused because the cap was reached.",
            );
            let _ = writeln!(out, "docproc_http_connections_refused_total {refused}");
        }
        if let Some(h) = snap.fsync.clone().map(Histogram::from) {
            help(
                &mut out,
                "docproc_broker_fsync_seconds",
                "histogram",
                "Latency of the embedded broker's group-commit fsyncs.",
            );
            h.render(&mut out, "docproc_broker_fsync_seconds", "");
        }
        out
    }
}

fn observe(map: &Mutex<BTreeMap<String, Histogram>>, ty: &str, secs: f64) {
    map.lock()
        .entry(ty.to_string())
        .or_insert_with(|| Histogram::new(SLOW))
        .observe(secs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use docproc_queue::{JobId, Priority};

    fn ev(id: &str, status: JobStatus, at_ms: u64) -> JobEvent {
        JobEvent {
            job_id: JobId(id.into()),
            job_type: "pdf".into(),
            status,
            attempts: 1,
            error: None,
            worker_id: None,
            priority: Priority::Normal,
            progress: false,
            at_ms,
        }
    }

    #[test]
    fn waits_and_durations_follow_the_events() {
        let m = Metrics::default();
        m.job_event(&ev("a", JobStatus::Queued, 1_000));
        m.job_event(&ev("a", JobStatus::Processing, 1_500));
        m.job_event(&ev("a", JobStatus::Completed, 4_000));
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains("docproc_job_queue_wait_seconds_sum{job_type=\"pdf\"} 0.5"),
            "{text}"
        );
        assert!(
            text.contains("docproc_job_duration_seconds_sum{job_type=\"pdf\"} 2.5"),
            "{text}"
        );
        assert!(text.contains("docproc_job_duration_seconds_bucket{job_type=\"pdf\",le=\"2.5\"} 1"));
        assert!(text.contains("docproc_job_duration_seconds_bucket{job_type=\"pdf\",le=\"1\"} 0"));
        assert!(text.contains("docproc_job_duration_seconds_count{job_type=\"pdf\"} 1"));
        assert!(text.contains("docproc_up 0"));
    }

    #[test]
    fn the_oldest_waiting_job_is_aged_from_the_snapshot_time() {
        use docproc_queue::{JobTypeStats, PriorityDepth};
        let depth = |priority, queued, oldest_queued_at_ms| PriorityDepth {
            priority,
            queued,
            oldest_queued_at_ms,
            ..Default::default()
        };
        let snap = Snapshot {
            queue: Some(vec![
                JobTypeStats {
                    job_type: "pdf".into(),
                    priorities: vec![
                        depth(Priority::High, 1, Some(9_000)),
                        depth(Priority::Low, 4, Some(7_500)),
                    ],
                    ..Default::default()
                },
                JobTypeStats {
                    job_type: "excel".into(),
                    priorities: vec![depth(Priority::Normal, 0, None)],
                    ..Default::default()
                },
            ]),
            now_ms: 10_000,
            ..Default::default()
        };
        let text = Metrics::default().render(&snap);
        assert!(
            text.contains("docproc_queue_oldest_age_seconds{job_type=\"pdf\"} 2.5\n"),
            "{text}"
        );
        assert!(
            text.contains("docproc_queue_oldest_age_seconds{job_type=\"excel\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
