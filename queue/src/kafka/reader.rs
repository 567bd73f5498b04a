//! Reads the compacted status topic into the shared status view.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::error::{QueueError, Result};
use crate::statuslog::view::{take, View};

/// Reads the status topic from its start into `view`: first up to the end
/// it has now (before the queue answers anything), then follows it until
/// `closed`.
pub(super) async fn read(
    consumer: Arc<StreamConsumer>,
    topic: String,
    view: Arc<View>,
    caught_up: tokio::sync::oneshot::Sender<Result<()>>,
    mut closed: watch::Receiver<bool>,
) {
    let ends = {
        let (c, t) = (consumer.clone(), topic.clone());
        tokio::task::spawn_blocking(move || -> Result<HashMap<i32, i64>> {
            let md = c
                .fetch_metadata(Some(&t), Duration::from_secs(10))
                .map_err(|e| QueueError::Unavailable(format!("kafka metadata: {e}")))?;
            let mut ends = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            for p in md.topics().iter().flat_map(|t| t.partitions()) {
                let (_, high) = c
                    .fetch_watermarks(&t, p.id(), Duration::from_secs(10))
                    .map_err(|e| QueueError::Unavailable(format!("kafka watermarks: {e}")))?;
                ends.insert(p.id(), high);
                tpl.add_partition_offset(&t, p.id(), Offset::Beginning)
                    .map_err(|e| QueueError::Backend(e.to_string()))?;
            }
            c.assign(&tpl)
                .map_err(|e| QueueError::Backend(format!("kafka assign: {e}")))?;
            Ok(ends)
        })
        .await
    };
    let mut ends = match ends {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            let _ = caught_up.send(Err(e));
            return;
        }
        Err(e) => {
            let _ = caught_up.send(Err(QueueError::Backend(e.to_string())));
            return;
        }
    };
    ends.retain(|_, high| *high > 0);
    let mut caught_up = Some(caught_up);
    if ends.is_empty() {
        if let Some(c) = caught_up.take() {
            let _ = c.send(Ok(()));
        }
    }
    let mut stream = consumer.stream();
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = closed.wait_for(|c| *c) => return,
        };
        match msg {
            Some(Ok(m)) => {
                take(&view, m.key(), m.payload());
                if caught_up.is_some() {
                    if ends
                        .get(&m.partition())
                        .is_some_and(|h| m.offset() + 1 >= *h)
                    {
                        ends.remove(&m.partition());
                    }
                    if ends.is_empty() {
                        if let Some(c) = caught_up.take() {
                            let _ = c.send(Ok(()));
                        }
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka status reader");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => return,
        }
    }
}
