//! Listing and stats of the Redis adapter: pages of jobs newest first from
//! the per-type, per-status index sets, and depth and counters per type.

use std::collections::HashMap;

use super::records::record;
use super::{map, Inner};
use crate::error::{QueueError, Result};
use crate::model::{
    Counters, JobId, JobPage, JobStatus, JobTypeStats, ListQuery, Priority, PriorityDepth,
};

/// A page of jobs, newest first. Ids grow with creation time (both come
/// from the same script on the server's clock), so the scan walks ids down
/// from the cursor and stops at the first job created before the window.
pub(super) async fn list(inner: &Inner, q: &ListQuery) -> Result<JobPage> {
    let limit = q.page_size();
    let mut upper: Option<u64> = match &q.cursor {
        Some(c) => Some(
            c.parse()
                .map_err(|_| QueueError::InvalidArgument(format!("bad cursor {c:?}")))?,
        ),
        None => None,
    };
    q.validate()?;
    let mut c = inner.conn.clone();
    let types: Vec<String> = if q.job_types.is_empty() {
        redis::cmd("SMEMBERS")
            .arg(inner.key("types"))
            .query_async(&mut c)
            .await
            .map_err(map)?
    } else {
        q.job_types.clone()
    };
    let statuses: Vec<JobStatus> = if q.statuses.is_empty() {
        JobStatus::ALL.to_vec()
    } else {
        q.statuses.clone()
    };
    // One owner's jobs come from their own index (scored by id, like the
    // others), so the page is full whatever other owners hold.
    let keys: Vec<String> = match &q.owner {
        Some(o) => vec![inner.key(&format!("owner:{o}"))],
        None => types
            .iter()
            .flat_map(|t| {
                statuses
                    .iter()
                    .map(move |s| inner.key(&format!("idx:{t}:{s}")))
            })
            .collect(),
    };
    let want = limit + 1;
    let batch = want.max(50);
    let mut out = Vec::new();
    'scan: while !keys.is_empty() {
        let max = upper.map_or("+inf".to_string(), |u| format!("({u}"));
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(k)
                .arg(&max)
                .arg("-inf")
                .arg("LIMIT")
                .arg(0)
                .arg(batch);
        }
        let found: Vec<Vec<String>> = pipe.query_async(&mut c).await.map_err(map)?;
        let mut ids: Vec<u64> = found
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let exhausted = ids.len() < batch;
        ids.truncate(batch);
        if ids.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(inner.key(&format!("job:{id}")));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await.map_err(map)?;
        for (id, h) in ids.iter().zip(&hashes) {
            upper = Some(*id);
            // Gone (past retention) or moved on since the index was read.
            let Some(r) = record(&JobId(id.to_string()), h)? else {
                continue;
            };
            if !statuses.contains(&r.status)
                || !types.contains(&r.job.job_type)
                || (q.owner.is_some() && r.job.owner != q.owner)
            {
                continue;
            }
            if q.created_to_ms.is_some_and(|to| r.job.created_at_ms > to) {
                continue;
            }
            if q.created_from_ms
                .is_some_and(|from| r.job.created_at_ms < from)
            {
                break 'scan;
            }
            out.push(r);
            if out.len() == want {
                break 'scan;
            }
        }
        if exhausted {
            break;
        }
    }
    let more = out.len() > limit;
    out.truncate(limit);
    let next_cursor = if more {
        out.last().map(|r| r.job.job_id.0.clone())
    } else {
        None
    };
    Ok(JobPage {
        jobs: out,
        next_cursor,
    })
}

/// Depth per priority and status, and counters, of every job type seen.
pub(super) async fn stats(inner: &Inner) -> Result<Vec<JobTypeStats>> {
    let mut c = inner.conn.clone();
    let mut types: Vec<String> = redis::cmd("SMEMBERS")
        .arg(inner.key("types"))
        .query_async(&mut c)
        .await
        .map_err(map)?;
    types.sort();
    if types.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for t in &types {
        pipe.cmd("HGETALL").arg(inner.key(&format!("depth:{t}")));
        pipe.cmd("HGETALL").arg(inner.key(&format!("count:{t}")));
    }
    let hashes: Vec<HashMap<String, i64>> = pipe.query_async(&mut c).await.map_err(map)?;
    let mut stats: Vec<JobTypeStats> = types
        .into_iter()
        .zip(hashes.chunks(2))
        .map(|(job_type, h)| {
            let (depth, count) = (&h[0], &h[1]);
            let n =
                |m: &HashMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0).max(0) as u64;
            let priorities = Priority::ALL
                .into_iter()
                .map(|p| {
                    let d = |s: &str| n(depth, &format!("{s}:{}", p.level()));
                    PriorityDepth {
                        priority: p,
                        pending: d("pending"),
                        queued: d("queued"),
                        processing: d("processing"),
                        retrying: d("retrying"),
                        failed: d("failed"),
                        oldest_queued_at_ms: None,
                    }
                })
                .collect();
            JobTypeStats {
                job_type,
                priorities,
                counters: Counters {
                    published: n(count, "published"),
                    started: n(count, "started"),
                    completed: n(count, "completed"),
                    retried: n(count, "retried"),
                    lease_expired: n(count, "lease_expired"),
                    failed: n(count, "failed"),
                    cancelled: n(count, "cancelled"),
                },
            }
        })
        .collect();
    oldest_queued(inner, &mut stats).await?;
    Ok(stats)
}

/// Fills in when the oldest queued job of each priority was published: the
/// first id of the priority's band of the ready set (ids ascend with time),
/// then that job's `created` field.
async fn oldest_queued(inner: &Inner, stats: &mut [JobTypeStats]) -> Result<()> {
    let mut c = inner.conn.clone();
    let waiting: Vec<(usize, usize)> = stats
        .iter()
        .enumerate()
        .flat_map(|(t, s)| {
            s.priorities
                .iter()
                .enumerate()
                .filter(|(_, p)| p.queued > 0)
                .map(move |(p, _)| (t, p))
        })
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    const BAND: u64 = 1 << 44;
    let mut pipe = redis::pipe();
    for &(t, p) in &waiting {
        let band = 3 - u64::from(stats[t].priorities[p].priority.level());
        pipe.cmd("ZRANGEBYSCORE")
            .arg(inner.key(&format!("ready:{}", stats[t].job_type)))
            .arg(band * BAND)
            .arg(format!("({}", (band + 1) * BAND))
            .arg("LIMIT")
            .arg(0)
            .arg(1);
    }
    let heads: Vec<Vec<String>> = pipe.query_async(&mut c).await.map_err(map)?;
    let found: Vec<((usize, usize), String)> = waiting
        .into_iter()
        .zip(heads)
        .filter_map(|(at, mut ids)| ids.pop().map(|id| (at, id)))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, id) in &found {
        pipe.cmd("HGET")
            .arg(inner.key(&format!("job:{id}")))
            .arg("created");
    }
    let created: Vec<Option<u64>> = pipe.query_async(&mut c).await.map_err(map)?;
    for (((t, p), _), at) in found.into_iter().zip(created) {
        stats[t].priorities[p].oldest_queued_at_ms = at;
    }
    Ok(())
}
