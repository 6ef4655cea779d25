//! Per-chat event streams of a cluster node: the events this node emits for
//! a chat wait in one bounded FIFO, and everything queued while the previous
//! batch was being numbered takes its sequence numbers in one request.
//!
//! In a cluster a chat's sequence numbers come from the leader (a gproc
//! counter, incremented atomically), so each request is a round trip. One
//! round trip per event bounds a node's rate for a chat by the leader's
//! latency; one round trip per *batch* (`update_counter` by the batch's
//! length, which gproc takes for any increment) does not. Each chat has at
//! most one request in flight from this node, and its events are emitted in
//! the order they were submitted, so:
//!
//! - per sender, events keep the order the sender submitted them in;
//! - the numbers this node emits for a chat increase strictly, in emission
//!   order, and never collide with another node's (the leader hands out
//!   disjoint ranges);
//! - a submitter waits only while its chat's queue is full (backpressure),
//!   never for the round trip itself.
//!
//! The stream machinery is generic over a [`Sink`] (who reserves numbers and
//! who emits), so it is tested here without a cluster. A chat's task retires
//! after it has been idle for a while; its queue goes with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Where a stream's batches go: numbered by [`Sink::reserve`], then handed
/// to [`Sink::emit`] in submission order.
pub trait Sink<T>: Send + Sync + 'static {
    /// Reserves `count` consecutive sequence numbers of `chat` and returns
    /// the last of them.
    fn reserve<'a>(&'a self, chat: &'a Arc<str>, count: u64) -> BoxFuture<'a, u64>;

    /// Emits `batch` (drained by the callee); its first item takes sequence
    /// number `first`, the next `first + 1`, and so on.
    fn emit<'a>(
        &'a self,
        chat: &'a Arc<str>,
        first: u64,
        batch: &'a mut Vec<T>,
    ) -> BoxFuture<'a, ()>;
}

/// The streams of every chat this node is emitting events for.
pub struct Streams<T> {
    queues: Mutex<HashMap<Arc<str>, mpsc::Sender<T>>>,
    /// Items one chat's queue holds; also the largest batch.
    capacity: usize,
    /// How long a chat's task waits for work before it retires.
    idle: Duration,
}

impl<T: Send + 'static> Streams<T> {
    /// Streams whose queues hold `capacity` items each, retiring after
    /// `idle` without work.
    pub fn new(capacity: usize, idle: Duration) -> Arc<Self> {
        Arc::new(Self {
            queues: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            idle,
        })
    }

    /// Queues `item` on `chat`'s stream, starting the stream when it has
    /// none; waits while the queue is full.
    pub async fn submit<S: Sink<T>>(self: &Arc<Self>, sink: &Arc<S>, chat: &Arc<str>, item: T) {
        let mut item = item;
        loop {
            let queue = {
                let mut queues = self.queues.lock();
                match queues.get(chat) {
                    Some(queue) if !queue.is_closed() => queue.clone(),
                    _ => {
                        let (queue, receiver) = mpsc::channel(self.capacity);
                        queues.insert(chat.clone(), queue.clone());
                        tokio::spawn(self.clone().run(sink.clone(), chat.clone(), receiver));
                        queue
                    }
                }
            };
            match queue.send(item).await {
                Ok(()) => return,
                // The stream retired between the lookup and the send: it had
                // emitted everything before it, so a new one keeps the order.
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
    }

    /// Number of chats with a live stream.
    pub fn len(&self) -> usize {
        self.queues.lock().len()
    }

    /// Whether no chat has a live stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn run<S: Sink<T>>(
        self: Arc<Self>,
        sink: Arc<S>,
        chat: Arc<str>,
        mut receiver: mpsc::Receiver<T>,
    ) {
        let mut batch = Vec::with_capacity(self.capacity);
        loop {
            let first = match tokio::time::timeout(self.idle, receiver.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(_) => {
                    // Retire only when nothing is queued, under the lock that
                    // submitters take to find the queue.
                    let mut queues = self.queues.lock();
                    if receiver.is_empty() {
                        queues.remove(&chat);
                        receiver.close();
                        return;
                    }
                    continue;
                }
            };
            batch.push(first);
            while batch.len() < self.capacity {
                match receiver.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            let last = sink.reserve(&chat, count).await;
            let first = last.saturating_sub(count - 1).max(1);
            sink.emit(&chat, first, &mut batch).await;
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio::sync::Notify;

    /// What a test sink emitted: chat, sequence number, item.
    type Emitted = (Arc<str>, u64, (u32, u32));

    /// A sink with a counter per chat that can hold a reservation until
    /// released, and records what it emitted.
    #[derive(Default)]
    struct Recorder {
        counters: Mutex<HashMap<Arc<str>, u64>>,
        reservations: Mutex<Vec<u64>>,
        emitted: Mutex<Vec<Emitted>>,
        gate: Option<Arc<Notify>>,
    }

    impl Sink<(u32, u32)> for Recorder {
        fn reserve<'a>(&'a self, chat: &'a Arc<str>, count: u64) -> BoxFuture<'a, u64> {
            async move {
                if let Some(gate) = &self.gate {
                    gate.notified().await;
                }
                self.reservations.lock().push(count);
                let mut counters = self.counters.lock();
                let counter = counters.entry(chat.clone()).or_default();
                *counter += count;
                *counter
            }
            .boxed()
        }

        fn emit<'a>(
            &'a self,
            chat: &'a Arc<str>,
            first: u64,
            batch: &'a mut Vec<(u32, u32)>,
        ) -> BoxFuture<'a, ()> {
            async move {
                let mut emitted = self.emitted.lock();
                for (offset, item) in batch.drain(..).enumerate() {
                    emitted.push((chat.clone(), first + offset as u64, item));
                }
            }
            .boxed()
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn queued_events_share_one_reservation_and_keep_their_order() {
        let gate = Arc::new(Notify::new());
        let sink = Arc::new(Recorder {
            gate: Some(gate.clone()),
            ..Recorder::default()
        });
        let streams = Streams::new(64, Duration::from_secs(5));
        let chat: Arc<str> = Arc::from("room");
        // The first event's reservation is held; ten more queue behind it.
        for n in 0..11 {
            streams.submit(&sink, &chat, (1, n)).await;
            settle().await;
        }
        gate.notify_one();
        settle().await;
        gate.notify_one();
        settle().await;
        assert_eq!(*sink.reservations.lock(), vec![1, 10]);
        let emitted = sink.emitted.lock().clone();
        let sequences: Vec<u64> = emitted.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(sequences, (1..=11).collect::<Vec<_>>());
        let order: Vec<u32> = emitted.iter().map(|(_, _, (_, n))| *n).collect();
        assert_eq!(order, (0..11).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn chats_are_numbered_independently() {
        let sink = Arc::new(Recorder::default());
        let streams = Streams::new(8, Duration::from_secs(5));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for n in 0..5 {
            streams.submit(&sink, &a, (0, n)).await;
            streams.submit(&sink, &b, (0, n)).await;
        }
        settle().await;
        let emitted = sink.emitted.lock().clone();
        for chat in [&a, &b] {
            let sequences: Vec<u64> = emitted
                .iter()
                .filter(|(c, _, _)| c == chat)
                .map(|(_, s, _)| *s)
                .collect();
            assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
        }
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_submitter_back() {
        let gate = Arc::new(Notify::new());
        let sink = Arc::new(Recorder {
            gate: Some(gate.clone()),
            ..Recorder::default()
        });
        let streams = Streams::new(2, Duration::from_secs(5));
        let chat: Arc<str> = Arc::from("room");
        // One item taken into a held batch, two queued: the fourth waits.
        for n in 0..3 {
            streams.submit(&sink, &chat, (0, n)).await;
            settle().await;
        }
        let waiting = {
            let (streams, sink, chat) = (streams.clone(), sink.clone(), chat.clone());
            tokio::spawn(async move { streams.submit(&sink, &chat, (0, 3)).await })
        };
        settle().await;
        assert!(
            !waiting.is_finished(),
            "a full queue must hold the submitter"
        );
        gate.notify_one();
        settle().await;
        assert!(waiting.is_finished());
        gate.notify_one();
        settle().await;
        gate.notify_one();
        settle().await;
        let sequences: Vec<u64> = sink.emitted.lock().iter().map(|(_, s, _)| *s).collect();
        assert_eq!(sequences, vec![1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_retires_and_a_new_one_continues_the_numbers() {
        let sink = Arc::new(Recorder::default());
        let streams = Streams::new(8, Duration::from_secs(5));
        let chat: Arc<str> = Arc::from("room");
        streams.submit(&sink, &chat, (0, 0)).await;
        settle().await;
        assert_eq!(streams.len(), 1);
        tokio::time::sleep(Duration::from_secs(6)).await;
        settle().await;
        assert!(streams.is_empty(), "the idle stream retired");
        streams.submit(&sink, &chat, (0, 1)).await;
        settle().await;
        let sequences: Vec<u64> = sink.emitted.lock().iter().map(|(_, s, _)| *s).collect();
        assert_eq!(sequences, vec![1, 2]);
    }
}
