//! In-memory indexes of live messages: ready sets per queue and priority,
//! timers, leases and dedup keys. RocksDB is never scanned on the hot path,
//! so tombstones left by acked messages cannot slow dequeues down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use docproc_proto::broker::v1::{Counters, PriorityStats, QueueConfig, QueueStats};
use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::record::Status;

/// Counts of one priority level that are not kept as sets.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LevelCounts {
    pub(crate) delayed: u64,
    pub(crate) retrying: u64,
    pub(crate) leased: u64,
    pub(crate) dead: u64,
}

impl LevelCounts {
    /// Counts a delayed or retrying message (by its state) as leaving its timer.
    pub(crate) fn leave_timer(&mut self, state: docproc_proto::broker::v1::State) {
        let n = if state == docproc_proto::broker::v1::State::Retrying {
            &mut self.retrying
        } else {
            &mut self.delayed
        };
        *n = n.saturating_sub(1);
    }
}

/// Everything the engine knows about one queue.
#[derive(Debug)]
pub(crate) struct QueueState {
    /// Ready message ids per priority; ids ascend, so first is oldest.
    pub(crate) ready: BTreeMap<u8, BTreeSet<u64>>,
    pub(crate) levels: BTreeMap<u8, LevelCounts>,
    pub(crate) counters: Counters,
    /// The queue's settings with defaults filled in.
    pub(crate) config: QueueConfig,
    /// Smooth weighted round-robin credit per priority (fair share only).
    wrr: BTreeMap<u8, i64>,
    /// Woken whenever a message of this queue becomes ready.
    pub(crate) notify: Arc<Notify>,
    /// `(created_at, id)` of every live message of the queue, so a list
    /// walks only the queue it names, newest first.
    pub(crate) live: BTreeSet<(u64, u64)>,
}

impl QueueState {
    pub(crate) fn new(config: QueueConfig) -> Self {
        Self {
            ready: BTreeMap::new(),
            levels: BTreeMap::new(),
            counters: Counters::default(),
            config,
            wrr: BTreeMap::new(),
            notify: Arc::new(Notify::new()),
            live: BTreeSet::new(),
        }
    }

    pub(crate) fn push_ready(&mut self, priority: u8, id: u64) {
        self.ready.entry(priority).or_default().insert(id);
    }

    /// Removes a ready id; false if it was not ready.
    pub(crate) fn remove_ready(&mut self, priority: u8, id: u64) -> bool {
        let Some(set) = self.ready.get_mut(&priority) else {
            return false;
        };
        let found = set.remove(&id);
        if set.is_empty() {
            self.ready.remove(&priority);
        }
        found
    }

    pub(crate) fn level(&mut self, priority: u8) -> &mut LevelCounts {
        self.levels.entry(priority).or_default()
    }

    /// Takes the next ready id: the oldest of the highest priority, or with
    /// fair share the oldest of the priority whose weighted turn it is.
    pub(crate) fn pop_ready(&mut self) -> Option<u64> {
        let priority = if self.config.fair_share && self.ready.len() > 1 {
            self.fair_pick()?
        } else {
            *self.ready.keys().next_back()?
        };
        let set = self.ready.get_mut(&priority)?;
        let id = set.pop_first();
        if set.is_empty() {
            self.ready.remove(&priority);
        }
        id
    }

    /// Smooth weighted round-robin (as in nginx): each non-empty level gains
    /// its weight, the richest is served and pays the total. Over any window,
    /// level p is served in proportion to its weight, and no level starves.
    fn fair_pick(&mut self) -> Option<u8> {
        let weights = &self.config.weights;
        let mut total = 0i64;
        let mut best: Option<(i64, u8)> = None;
        self.wrr.retain(|p, _| self.ready.contains_key(p));
        for &p in self.ready.keys() {
            let w = i64::from(
                weights
                    .get(&u32::from(p))
                    .copied()
                    .unwrap_or(u32::from(p) + 1),
            );
            total += w;
            let cur = self.wrr.entry(p).or_insert(0);
            *cur += w;
            if best.is_none_or(|(b, bp)| *cur > b || (*cur == b && p > bp)) {
                best = Some((*cur, p));
            }
        }
        let (_, p) = best?;
        if let Some(cur) = self.wrr.get_mut(&p) {
            *cur -= total;
        }
        Some(p)
    }

    /// Counts per priority; `jobs` gives the publish time of each level's
    /// oldest ready message (the first of its set: ids ascend with time).
    pub(crate) fn stats(&self, name: &str, jobs: &HashMap<u64, Status>) -> QueueStats {
        let mut prios: BTreeSet<u8> = self.ready.keys().copied().collect();
        prios.extend(self.levels.keys().copied());
        let priorities = prios
            .into_iter()
            .rev()
            .map(|p| {
                let l = self.levels.get(&p).copied().unwrap_or_default();
                PriorityStats {
                    priority: u32::from(p),
                    ready: self.ready.get(&p).map_or(0, |s| s.len() as u64),
                    oldest_ready_created_at_ms: self
                        .ready
                        .get(&p)
                        .and_then(|s| s.first())
                        .and_then(|id| jobs.get(id))
                        .map_or(0, |s| s.created_at_ms),
                    delayed: l.delayed,
                    retrying: l.retrying,
                    leased: l.leased,
                    dead: l.dead,
                }
            })
            .filter(|s| s.ready + s.delayed + s.retrying + s.leased + s.dead > 0)
            .collect();
        QueueStats {
            queue: name.to_string(),
            priorities,
            counters: Some(self.counters),
        }
    }
}

/// Fills unset fields of a queue's settings from the broker defaults.
pub(crate) fn resolve_config(mut c: QueueConfig, defaults: &BrokerConfig) -> QueueConfig {
    if c.default_lease_timeout_ms == 0 {
        c.default_lease_timeout_ms = defaults.default_lease_timeout_ms;
    }
    if c.retry_base_ms == 0 {
        c.retry_base_ms = defaults.retry_base_ms;
    }
    if c.retry_max_ms == 0 {
        c.retry_max_ms = defaults.retry_max_ms;
    }
    if c.dedup_window_ms == 0 {
        c.dedup_window_ms = defaults.dedup_window_ms;
    }
    c
}

/// The engine's whole in-memory state, behind one mutex.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) queues: HashMap<String, QueueState>,
    /// Status of every live (not final) message.
    pub(crate) jobs: HashMap<u64, Status>,
    /// `(due, id)` of delayed and retrying messages.
    pub(crate) timers: BTreeSet<(u64, u64)>,
    /// `(deadline, id)` of leased messages.
    pub(crate) leases: BTreeSet<(u64, u64)>,
    /// `(queue, key)` → `(id, expires_at)`.
    pub(crate) dedup: HashMap<(String, String), (u64, u64)>,
    pub(crate) dedup_expiry: BTreeSet<(u64, String, String)>,
    /// Highest id handed out.
    pub(crate) last_id: u64,
    /// `(created_at, id)` of every live message per owner (messages without
    /// one are not here), so listing one owner's messages walks only theirs.
    pub(crate) owners: HashMap<String, BTreeSet<(u64, u64)>>,
}

impl State {
    /// The queue's state, created with resolved defaults on first use.
    pub(crate) fn queue(&mut self, name: &str, defaults: &BrokerConfig) -> &mut QueueState {
        if !self.queues.contains_key(name) {
            let q = QueueState::new(resolve_config(QueueConfig::default(), defaults));
            self.queues.insert(name.to_string(), q);
        }
        // Just inserted if it was missing.
        self.queues
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("queue inserted above"))
    }

    /// Adds a live message to the listing indexes (its queue's and its
    /// owner's).
    pub(crate) fn index_live(&mut self, id: u64, s: &Status, defaults: &BrokerConfig) {
        self.queue(&s.queue, defaults)
            .live
            .insert((s.created_at_ms, id));
        if !s.owner.is_empty() {
            self.owners
                .entry(s.owner.clone())
                .or_default()
                .insert((s.created_at_ms, id));
        }
    }

    /// Takes a message that turned final out of the listing indexes.
    pub(crate) fn unindex_live(&mut self, id: u64, s: &Status, defaults: &BrokerConfig) {
        self.queue(&s.queue, defaults)
            .live
            .remove(&(s.created_at_ms, id));
        if let Some(set) = self.owners.get_mut(&s.owner) {
            set.remove(&(s.created_at_ms, id));
            if set.is_empty() {
                self.owners.remove(&s.owner);
            }
        }
    }

    /// Ids increase forever and carry their creation time in the upper bits
    /// (milliseconds << 16), so they sort by age even across restarts.
    pub(crate) fn next_id(&mut self, now_ms: u64) -> u64 {
        let id = (self.last_id + 1).max(now_ms << 16);
        self.last_id = id;
        id
    }

    /// Earliest moment at which [`crate::Broker::tick`] has work to do.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        [
            self.timers.first().map(|t| t.0),
            self.leases.first().map(|t| t.0),
            self.dedup_expiry.first().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(fair: bool, weights: &[(u32, u32)]) -> QueueState {
        QueueState::new(QueueConfig {
            fair_share: fair,
            weights: weights.iter().copied().collect(),
            ..Default::default()
        })
    }

    #[test]
    fn strict_priority_then_fifo() {
        let mut q = queue(false, &[]);
        for (p, id) in [(1, 10), (5, 20), (1, 5), (5, 30), (9, 40)] {
            q.push_ready(p, id);
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_ready()).collect();
        assert_eq!(order, vec![40, 20, 30, 5, 10]);
    }

    #[test]
    fn fair_share_serves_levels_by_weight() {
        let mut q = queue(true, &[(0, 1), (1, 3)]);
        for i in 0..100 {
            q.push_ready(0, i);
            q.push_ready(1, 1000 + i);
        }
        let first: Vec<u64> = (0..40).filter_map(|_| q.pop_ready()).collect();
        let high = first.iter().filter(|&&id| id >= 1000).count();
        assert_eq!(high, 30, "weights 3:1 give 30 of 40 to the high level");
        // FIFO within each level is kept.
        let lows: Vec<u64> = first.iter().copied().filter(|&id| id < 1000).collect();
        assert_eq!(lows, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn fair_share_default_weight_is_priority_plus_one() {
        let mut q = queue(true, &[]);
        for i in 0..300 {
            q.push_ready(0, i);
            q.push_ready(2, 1000 + i);
        }
        let got: Vec<u64> = (0..200).filter_map(|_| q.pop_ready()).collect();
        let low = got.iter().filter(|&&id| id < 1000).count();
        assert_eq!(low, 50, "weights 1:3 give a quarter to priority 0");
    }
}
