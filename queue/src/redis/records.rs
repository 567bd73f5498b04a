//! How jobs and events look in Redis: the job hash read back into a
//! [`JobRecord`], and the JSON status events the scripts publish.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{QueueError, Result};
use crate::model::{legacy_owner, Job, JobEvent, JobId, JobRecord, JobStatus, Priority};

/// A job hash (`HGETALL P:job:ID`) as a record; `None` for an empty hash.
pub(super) fn record(id: &JobId, h: &HashMap<String, String>) -> Result<Option<JobRecord>> {
    if h.is_empty() {
        return Ok(None);
    }
    let text = |f: &str| h.get(f).map(String::as_str);
    let num = |f: &str| text(f).and_then(|v| v.parse::<u64>().ok());
    let json = |f: &str| -> Result<Option<Value>> {
        text(f)
            .map(|v| {
                serde_json::from_str(v).map_err(|e| {
                    QueueError::Backend(format!("job {id}: field {f} is not JSON: {e}"))
                })
            })
            .transpose()
    };
    let status: JobStatus = text("status")
        .ok_or_else(|| QueueError::Backend(format!("job {id} has no status")))?
        .parse()?;
    let payload = json("payload")?.unwrap_or(Value::Null);
    let job = Job {
        job_id: id.clone(),
        job_type: text("type").unwrap_or_default().to_string(),
        owner: text("owner")
            .map(str::to_string)
            .or_else(|| legacy_owner(&payload)),
        payload,
        priority: Priority::from_level(num("prio").unwrap_or(1) as u32),
        max_retries: num("max_retries").unwrap_or(0) as u32,
        timeout: Duration::from_millis(num("timeout").unwrap_or(0)),
        correlation_id: text("correlation").map(str::to_string),
        callback_context: json("context")?,
        created_at_ms: num("created").unwrap_or(0),
    };
    Ok(Some(JobRecord {
        job,
        status,
        attempts: num("attempts").unwrap_or(0) as u32,
        result: json("result")?,
        error: text("error").map(str::to_string),
        progress: json("progress")?,
        worker_id: text("worker").map(str::to_string),
        started_at_ms: num("started"),
        completed_at_ms: num("completed"),
        updated_at_ms: num("updated").unwrap_or(0),
        cancel_requested: text("cancel") == Some("1"),
    }))
}

/// A status event as `common.lua`'s `emit` publishes it.
#[derive(Debug, Deserialize)]
pub(super) struct WireEvent {
    pub(super) seq: u64,
    id: String,
    #[serde(rename = "type")]
    job_type: String,
    prio: u32,
    status: String,
    attempts: u32,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    progress: bool,
    at: u64,
}

impl WireEvent {
    pub(super) fn parse(raw: &[u8]) -> Result<Self> {
        serde_json::from_slice(raw).map_err(|e| QueueError::Backend(format!("bad event: {e}")))
    }

    pub(super) fn into_event(self) -> Result<JobEvent> {
        Ok(JobEvent {
            job_id: JobId(self.id),
            job_type: self.job_type,
            status: self.status.parse()?,
            attempts: self.attempts,
            error: self.error,
            worker_id: self.worker,
            priority: Priority::from_level(self.prio),
            progress: self.progress,
            at_ms: self.at,
        })
    }
}

/// Whether `id` could have been made by this adapter (ids are `INCR`
/// counters): anything else is unknown without asking Redis.
pub(super) fn plausible_id(id: &JobId) -> bool {
    !id.0.is_empty() && id.0.len() <= 19 && id.0.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_hash_reads_back() {
        let h: HashMap<String, String> = [
            ("type", "pdf"),
            ("payload", r#"{"n":1}"#),
            ("prio", "3"),
            ("max_retries", "2"),
            ("timeout", "5000"),
            ("created", "10"),
            ("status", "processing"),
            ("attempts", "1"),
            ("worker", "w1"),
            ("started", "11"),
            ("updated", "12"),
            ("cancel", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = record(&JobId("7".into()), &h).unwrap().unwrap();
        assert_eq!(r.job.priority, Priority::Urgent);
        assert_eq!(r.job.timeout, Duration::from_secs(5));
        assert_eq!(r.status, JobStatus::Processing);
        assert_eq!(r.job.payload["n"], 1);
        assert!(r.cancel_requested);
        assert_eq!(r.completed_at_ms, None);
        assert!(record(&JobId("7".into()), &HashMap::new())
            .unwrap()
            .is_none());
    }

    #[test]
    fn events_parse_with_and_without_optional_fields() {
        let e = WireEvent::parse(
            br#"{"seq":4,"id":"9","type":"t","prio":0,"status":"retrying","attempts":2,"error":"boom","progress":false,"at":77}"#,
        )
        .unwrap();
        assert_eq!(e.seq, 4);
        let e = e.into_event().unwrap();
        assert_eq!(e.status, JobStatus::Retrying);
        assert_eq!(e.error.as_deref(), Some("boom"));
        assert_eq!(e.worker_id, None);
        assert!(WireEvent::parse(b"nope").is_err());
    }

    #[test]
    fn only_counter_ids_are_plausible() {
        assert!(plausible_id(&JobId("42".into())));
        for bad in ["", "not-an-id", "4 2", "99999999999999999999"] {
            assert!(!plausible_id(&JobId(bad.into())), "{bad}");
        }
    }
}
