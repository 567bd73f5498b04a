//! RocksDB storage: column families, reads, and the group-commit writer thread.
//!
//! Every state change of the broker becomes one [`Commit`]: a list of puts
//! and deletes plus the lifecycle events it causes. A single writer thread
//! takes all commits waiting in its channel, writes them as one `WriteBatch`
//! with one fsync (group commit), then publishes their events and answers
//! their senders. Commit order is therefore the order in which the engine
//! submitted them, which is the order of its in-memory changes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use docproc_proto::broker::v1::Event;
use parking_lot::Mutex;
use rocksdb::{
    ColumnFamilyDescriptor, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use tokio::sync::{broadcast, oneshot, watch};

use crate::config::Durability;
use crate::error::{Error, Result};

/// Column families, one per concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cf {
    /// id → immutable `MsgRecord`.
    Msgs,
    /// id|kind → payload, result or progress bytes.
    Blobs,
    /// id → `Status` of messages not yet final.
    Live,
    /// id → `Status` of completed, dead and cancelled messages.
    Done,
    /// queue|id → priority byte, for dead letters.
    Dead,
    /// queue|dedup_key → id|expires_at.
    Dedup,
    /// expires_at|id → empty: when final messages are removed.
    Expiry,
    /// queue|state|created_at|id → empty: final messages, for listing.
    Finals,
    /// owner|queue|state|created_at|id → empty: final messages of an
    /// owner, for listing one owner's messages.
    Owners,
    /// Counters, queue settings, id high-water mark.
    Meta,
}

impl Cf {
    const ALL: [Cf; 10] = [
        Cf::Msgs,
        Cf::Blobs,
        Cf::Live,
        Cf::Done,
        Cf::Dead,
        Cf::Dedup,
        Cf::Expiry,
        Cf::Finals,
        Cf::Owners,
        Cf::Meta,
    ];

    fn name(self) -> &'static str {
        match self {
            Cf::Msgs => "msgs",
            Cf::Blobs => "blobs",
            Cf::Live => "live",
            Cf::Done => "done",
            Cf::Dead => "dead",
            Cf::Dedup => "dedup",
            Cf::Expiry => "expiry",
            Cf::Finals => "finals",
            Cf::Owners => "owners",
            Cf::Meta => "meta",
        }
    }
}

/// One write in a commit.
#[derive(Debug)]
pub(crate) enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
}

/// An atomic group of writes and the events they publish once durable.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    pub(crate) ops: Vec<Op>,
    pub(crate) events: Vec<Event>,
}

impl Commit {
    pub(crate) fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(cf, key.into(), value.into()));
    }

    pub(crate) fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(cf, key.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.events.is_empty()
    }
}

struct Pending {
    commit: Commit,
    done: Option<oneshot::Sender<Result<()>>>,
}

/// The database and its writer thread.
pub(crate) struct Store {
    /// `None` once closed, so the database lock is released even while
    /// clones of the broker are still alive.
    db: parking_lot::RwLock<Option<Arc<DB>>>,
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop_flusher: Mutex<Option<mpsc::Sender<()>>>,
    failed: Arc<AtomicBool>,
    fatal: watch::Sender<Option<String>>,
    events: broadcast::Sender<Event>,
    latency: Arc<SyncLatency>,
}

/// Waits for a submitted commit to be durable.
pub(crate) struct Durable(Option<oneshot::Receiver<Result<()>>>);

impl Durable {
    /// Resolves when the commit is on disk (per the durability mode).
    pub(crate) async fn wait(self) -> Result<()> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("broker is shutting down".into()))),
        }
    }
}

impl Store {
    /// Opens (or creates) the database and starts the writer.
    /// Opens (or creates) the database in `dir`; with `in_memory` the files
    /// live in RocksDB's memory environment and vanish with the process.
    pub(crate) fn open(
        dir: &Path,
        durability: Durability,
        event_buffer: usize,
        in_memory: bool,
    ) -> Result<Self> {
        let mut opts = Options::default();
        if in_memory {
            opts.set_env(&rocksdb::Env::mem_env()?);
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            o.set_write_buffer_size(32 << 20);
            match cf {
                Cf::Blobs | Cf::Msgs | Cf::Done => {
                    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
                }
                // Entries here are deleted soon after they are written; compact
                // files dense with tombstones so recovery scans stay fast.
                Cf::Live | Cf::Expiry => {
                    o.add_compact_on_deletion_collector_factory(10_000, 5_000, 0.5);
                }
                _ => {}
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);
        let (events, _) = broadcast::channel(event_buffer.max(16));
        let (fatal, _) = watch::channel(None);
        let failed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Pending>();
        let mut threads = Vec::new();
        let latency = Arc::new(SyncLatency::default());
        let writer = Writer {
            db: db.clone(),
            sync: durability == Durability::Sync,
            latency: latency.clone(),
            failed: failed.clone(),
            fatal: fatal.clone(),
            events: events.clone(),
            seq: 0,
        };
        threads.push(
            std::thread::Builder::new()
                .name("docproc-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| Error::Unavailable(format!("cannot start writer: {e}")))?,
        );
        let mut stop_flusher = None;
        if let Durability::Batch { interval } = durability {
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            stop_flusher = Some(stop_tx);
            let failure = Failure {
                failed: failed.clone(),
                fatal: fatal.clone(),
            };
            let db = db.clone();
            let latency = latency.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("docproc-flusher".into())
                    .spawn(move || flusher(db, interval, stop_rx, failure, latency))
                    .map_err(|e| Error::Unavailable(format!("cannot start flusher: {e}")))?,
            );
        }
        Ok(Self {
            db: parking_lot::RwLock::new(Some(db)),
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            stop_flusher: Mutex::new(stop_flusher),
            failed,
            fatal,
            events,
            latency,
        })
    }

    /// Latency of durable writes.
    pub(crate) fn sync_latency(&self) -> &SyncLatency {
        &self.latency
    }

    /// Queues a commit for the writer. Call it while holding the engine lock
    /// so that commit order matches the order of in-memory changes.
    pub(crate) fn submit(&self, commit: Commit) -> Durable {
        if commit.is_empty() {
            return Durable(None);
        }
        let (done, rx) = oneshot::channel();
        let guard = self.tx.lock();
        match guard.as_ref() {
            Some(tx) if !self.failed.load(Ordering::Acquire) => {
                if tx
                    .send(Pending {
                        commit,
                        done: Some(done),
                    })
                    .is_err()
                {
                    return Durable(Some(closed_receiver()));
                }
                Durable(Some(rx))
            }
            _ => Durable(Some(closed_receiver())),
        }
    }

    /// Resolves once every commit submitted before it has been written: a
    /// reader that missed a change still in flight waits here and reads again.
    pub(crate) fn barrier(&self) -> Durable {
        let (done, rx) = oneshot::channel();
        let guard = self.tx.lock();
        match guard.as_ref() {
            Some(tx) if !self.failed.load(Ordering::Acquire) => {
                let marker = Pending {
                    commit: Commit::default(),
                    done: Some(done),
                };
                if tx.send(marker).is_err() {
                    return Durable(Some(closed_receiver()));
                }
                Durable(Some(rx))
            }
            _ => Durable(Some(closed_receiver())),
        }
    }

    /// Subscribes to lifecycle events published after their commit.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Becomes `Some(reason)` when storage failed and the broker stopped writing.
    pub(crate) fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    fn db(&self) -> Result<Arc<DB>> {
        self.db
            .read()
            .clone()
            .ok_or_else(|| Error::Unavailable("broker is closed".into()))
    }

    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let db = self.db()?;
        Ok(db.get_cf(handle(&db, cf)?, key)?)
    }

    /// The values of `keys` in one column family, read as one batch.
    pub(crate) fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let db = self.db()?;
        db.batched_multi_get_cf(handle(&db, cf)?, keys, false)
            .into_iter()
            .map(|v| Ok(v?.map(|s| s.to_vec())))
            .collect()
    }

    /// Calls `f` on each `(key, value)` from `from` (inclusive) up to `to`
    /// (exclusive, or the end) until it returns `false`.
    pub(crate) fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut ro = ReadOptions::default();
        if let Some(to) = to {
            ro.set_iterate_upper_bound(to.to_vec());
        }
        let db = self.db()?;
        let iter = db.iterator_cf_opt(
            handle(&db, cf)?,
            ro,
            IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f` on keys in `[lower, upper)`, from the last one backwards,
    /// while it returns `true`.
    pub(crate) fn scan_rev(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.to_vec());
        ro.set_iterate_upper_bound(upper.to_vec());
        let db = self.db()?;
        let iter = db.iterator_cf_opt(handle(&db, cf)?, ro, IteratorMode::End);
        for item in iter {
            let (k, v) = item?;
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// Writes a commit at once, synced, bypassing the writer thread. Only for
    /// startup, before anything else is submitted.
    pub(crate) fn write_now(&self, commit: &Commit) -> Result<()> {
        let db = self.db()?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch(&db, commit.ops.iter())?, &wo)?;
        Ok(())
    }

    /// Stops the writer after it has written everything submitted, fsyncs the
    /// log and flushes memtables, so that the next open replays nothing.
    pub(crate) fn close(&self) {
        self.tx.lock().take();
        self.stop_flusher.lock().take();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        let Some(db) = self.db.write().take() else {
            return;
        };
        if !self.failed.load(Ordering::Acquire) {
            if let Err(e) = db.flush_wal(true) {
                tracing::error!(error = %e, "final WAL sync failed");
            }
            for cf in Cf::ALL {
                if let Ok(h) = handle(&db, cf) {
                    if let Err(e) = db.flush_cf(h) {
                        tracing::error!(error = %e, cf = cf.name(), "final flush failed");
                    }
                }
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn handle(db: &DB, cf: Cf) -> Result<&rocksdb::ColumnFamily> {
    db.cf_handle(cf.name())
        .ok_or_else(|| Error::Corrupt(format!("column family {} missing", cf.name())))
}

fn closed_receiver() -> oneshot::Receiver<Result<()>> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Err(Error::Unavailable(
        "broker is not writing (shut down or storage failed)".into(),
    )));
    rx
}

/// Upper bounds (seconds) of the sync latency buckets.
pub const SYNC_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Latency of durable writes: group commits written with fsync, and the
/// background WAL syncs of the batch mode.
#[derive(Debug, Default)]
pub(crate) struct SyncLatency {
    buckets: [AtomicU64; SYNC_BOUNDS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl SyncLatency {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (b, c) in SYNC_BOUNDS.iter().zip(&self.buckets) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (per [`SYNC_BOUNDS`]), the sum in seconds,
    /// and the count.
    pub(crate) fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        (
            self.buckets
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed),
        )
    }
}

struct Writer {
    db: Arc<DB>,
    sync: bool,
    latency: Arc<SyncLatency>,
    failed: Arc<AtomicBool>,
    fatal: watch::Sender<Option<String>>,
    events: broadcast::Sender<Event>,
    seq: u64,
}

/// Most commits merged into one write batch.
const MAX_GROUP: usize = 4096;

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Pending>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            self.write_group(group);
        }
    }

    fn write_group(&mut self, group: Vec<Pending>) {
        let result = if self.failed.load(Ordering::Acquire) {
            Err("storage failed earlier".to_string())
        } else {
            self.write(&group).map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                for p in group {
                    for mut ev in p.commit.events {
                        self.seq += 1;
                        ev.seq = self.seq;
                        let _ = self.events.send(ev);
                    }
                    if let Some(done) = p.done {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            Err(reason) => {
                if !self.failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %reason, "RocksDB write failed; the broker stops writing");
                    self.fatal.send_replace(Some(reason.clone()));
                }
                for p in group {
                    if let Some(done) = p.done {
                        let _ = done.send(Err(Error::Unavailable(format!(
                            "storage failure: {reason}"
                        ))));
                    }
                }
            }
        }
    }

    fn write(&self, group: &[Pending]) -> Result<()> {
        if group.iter().all(|p| p.commit.ops.is_empty()) {
            // Only barriers: everything before them is written already.
            return Ok(());
        }
        let ops = group.iter().flat_map(|p| &p.commit.ops);
        let wb = batch(&self.db, ops)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        let started = std::time::Instant::now();
        self.db.write_opt(wb, &wo)?;
        if self.sync {
            self.latency.observe(started.elapsed());
        }
        Ok(())
    }
}

/// The operations as one RocksDB write batch, sized for them up front (no
/// regrowth while it is filled) with each column family looked up once.
fn batch<'a>(db: &DB, ops: impl Iterator<Item = &'a Op> + Clone) -> Result<WriteBatch> {
    // Per record: a tag byte, the family id and two lengths (varints of at
    // most 5 bytes each), then the key and value; 12 bytes of header.
    let bytes = ops.clone().fold(12, |n, op| {
        n + 16
            + match op {
                Op::Put(_, k, v) => k.len() + v.len(),
                Op::Delete(_, k) => k.len(),
            }
    });
    let mut handles: [Option<&rocksdb::ColumnFamily>; Cf::ALL.len()] = [None; Cf::ALL.len()];
    let mut wb = WriteBatch::with_capacity_bytes(bytes);
    for op in ops {
        let cf = match op {
            Op::Put(cf, ..) | Op::Delete(cf, _) => *cf,
        };
        let slot = &mut handles[cf as usize];
        let h = match slot {
            Some(h) => *h,
            None => *slot.insert(handle(db, cf)?),
        };
        match op {
            Op::Put(_, k, v) => wb.put_cf(h, k, v),
            Op::Delete(_, k) => wb.delete_cf(h, k),
        }
    }
    Ok(wb)
}

/// How the background sync reports a failure: like a failed write, it
/// stops every later write (`failed`) and makes the broker fatal.
struct Failure {
    failed: Arc<AtomicBool>,
    fatal: watch::Sender<Option<String>>,
}

fn flusher(
    db: Arc<DB>,
    interval: Duration,
    stop: mpsc::Receiver<()>,
    failure: Failure,
    latency: Arc<SyncLatency>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        let started = std::time::Instant::now();
        let synced = db.flush_wal(true);
        latency.observe(started.elapsed());
        if let Err(e) = synced {
            // Writes answered since the last sync may not be on disk; none
            // may be answered after it.
            failure.failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "background WAL sync failed; the broker stops writing");
            failure.fatal.send_replace(Some(e.to_string()));
            return;
        }
    }
}
