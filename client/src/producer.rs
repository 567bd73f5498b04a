//! A producer that gathers single sends into batched produce requests.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, NewMessage};
use crate::error::{Error, Result};

impl Client {
    /// A batching producer; see [`ProducerOptions`].
    pub fn producer(&self, opts: ProducerOptions) -> Producer {
        Producer::new(self.clone(), opts)
    }
}

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Most messages per produce request. Default 500.
    pub max_batch: usize,
    /// How long a send waits for others to share its request. Default 1 ms.
    pub linger: Duration,
    /// Produce requests in flight at once. Default 1, which keeps messages in
    /// send order; with more, batches may be stored in a different order.
    pub in_flight: usize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            max_batch: 500,
            linger: Duration::from_millis(1),
            in_flight: 1,
        }
    }
}

type Pending = (NewMessage, oneshot::Sender<Result<u64>>);

/// Batches sends; each [`Producer::send`] resolves with the message id once
/// its batch is durable. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Producer {
    tx: mpsc::Sender<Pending>,
}

impl Producer {
    pub(crate) fn new(client: Client, opts: ProducerOptions) -> Self {
        let (tx, rx) = mpsc::channel(opts.max_batch.max(1) * 4);
        tokio::spawn(run(client, opts, rx));
        Self { tx }
    }

    /// Sends one message; resolves with its id when durable.
    pub async fn send(&self, msg: NewMessage) -> Result<u64> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send((msg, done))
            .await
            .map_err(|_| Error::Unavailable("producer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("producer stopped".into()))?
    }
}

async fn run(client: Client, opts: ProducerOptions, mut rx: mpsc::Receiver<Pending>) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(opts.in_flight.max(1)));
    let max = opts.max_batch.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + opts.linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                _ => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let (msgs, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match client.produce(msgs).await {
                Ok(ids) => {
                    for (w, id) in waiters.into_iter().zip(ids) {
                        let _ = w.send(Ok(id));
                    }
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}
