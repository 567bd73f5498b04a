//! Helpers shared by the engine tests: a broker on a manual clock in a temp dir.
#![allow(dead_code, unreachable_pub, clippy::new_without_default)]

use std::sync::Arc;

use docproc_broker::{pb, Broker, BrokerConfig, ManualClock};

pub const T0: u64 = 1_800_000_000_000;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub broker: Broker,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(f: impl FnOnce(&mut BrokerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = BrokerConfig::with_dir(dir.path());
        f(&mut cfg);
        let clock = Arc::new(ManualClock::new(T0));
        let broker = Broker::open_with_clock(cfg, clock.clone()).expect("open");
        Self { dir, clock, broker }
    }

    /// Closes and reopens the same database, keeping the clock.
    pub fn reopen(&mut self, f: impl FnOnce(&mut BrokerConfig)) {
        let mut cfg = self.broker.config().clone();
        f(&mut cfg);
        self.broker.close();
        self.broker = Broker::open_with_clock(cfg, self.clock.clone()).expect("reopen");
    }

    pub fn now(&self) -> u64 {
        use docproc_broker::Clock;
        self.clock.now_ms()
    }

    pub async fn advance(&self, ms: u64) {
        self.clock.advance(ms);
        self.broker.tick().await.expect("tick");
    }

    pub async fn produce(&self, queue: &str, priority: u32, payload: &str) -> u64 {
        self.produce_msg(msg(queue, priority, payload)).await
    }

    pub async fn produce_msg(&self, m: pb::NewMessage) -> u64 {
        let out = self.broker.produce(vec![m]).await.expect("produce");
        out[0].0
    }

    pub async fn lease(&self, queue: &str, n: usize) -> Vec<pb::Delivery> {
        self.broker
            .lease(queue, n, "test-worker")
            .await
            .expect("lease")
    }

    pub fn state(&self, id: u64) -> pb::State {
        self.broker.get(id, false).expect("get").state()
    }
}

pub fn msg(queue: &str, priority: u32, payload: &str) -> pb::NewMessage {
    pb::NewMessage {
        queue: queue.into(),
        priority,
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn payloads(ds: &[pb::Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect()
}
