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
//!
//! [`ChatCounter`] is what a node knows of one chat's counter in the
//! cluster, and decides which registration to increment and by how much. A
//! gproc counter is keyed by its owner, so `{c,g,{flack_seq, Chat}}` can be
//! registered by two nodes at once (a new chat, a chat whose counter's owner
//! went away, the two sides of a healed partition). Every node then
//! increments the same one, the lowest owner, adding to its increment the
//! gap between that counter's value and the highest number it has seen, so
//! numbers never go back after a merge. A second registration stays until
//! the chat empties (see the directory).

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

/// What this node knows of one chat's sequence counter in the cluster:
/// every registration of it with the last value seen, and the highest
/// number seen or handed out here. Owners are ordered (`O: Ord`) so that
/// nodes that have seen the same registrations choose the same one.
#[derive(Debug, Clone)]
pub struct ChatCounter<O> {
    registrations: Vec<(O, u64)>,
    last: u64,
}

impl<O> Default for ChatCounter<O> {
    fn default() -> Self {
        Self {
            registrations: Vec::new(),
            last: 0,
        }
    }
}

/// How to reserve a chat's next numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<O> {
    /// `update_counter` of `owner`'s registration by `by`: the count asked
    /// for, plus what that counter lags behind the highest number seen.
    Increment {
        /// The registration every node increments.
        owner: O,
        /// The increment.
        by: u64,
    },
    /// No registration is known: register one whose value is the last of
    /// the numbers asked for.
    Register {
        /// The new counter's value.
        initial: u64,
    },
}

impl<O: Ord + Clone> ChatCounter<O> {
    /// The highest number seen or handed out for the chat.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The registration every node increments: the lowest owner.
    pub fn chosen(&self) -> Option<&O> {
        self.registrations.iter().map(|(owner, _)| owner).min()
    }

    /// Every known owner of a registration.
    pub fn owners(&self) -> impl Iterator<Item = &O> {
        self.registrations.iter().map(|(owner, _)| owner)
    }

    /// Whether no registration is known.
    pub fn is_unregistered(&self) -> bool {
        self.registrations.is_empty()
    }

    /// `owner`'s registration has `value` (registered or updated).
    pub fn registered(&mut self, owner: O, value: u64) {
        self.last = self.last.max(value);
        match self
            .registrations
            .iter_mut()
            .find(|(known, _)| *known == owner)
        {
            Some((_, known)) => *known = (*known).max(value),
            None => self.registrations.push((owner, value)),
        }
    }

    /// A reservation on `owner`'s registration ended at `value` (the leader's
    /// reply). Only the value is learnt: the registration itself is known
    /// from the broadcasts, which may already have said it is gone.
    pub fn issued(&mut self, owner: &O, value: u64) {
        self.last = self.last.max(value);
        if let Some((_, known)) = self
            .registrations
            .iter_mut()
            .find(|(known, _)| known == owner)
        {
            *known = (*known).max(value);
        }
    }

    /// `owner`'s registration is gone (unregistered, or its node went away).
    pub fn unregistered(&mut self, owner: &O) {
        self.registrations.retain(|(known, _)| known != owner);
    }

    /// How to reserve `count` numbers.
    pub fn plan(&self, count: u64) -> Plan<O> {
        let chosen = self.registrations.iter().min_by(|(a, _), (b, _)| a.cmp(b));
        match chosen {
            Some((owner, value)) => Plan::Increment {
                owner: owner.clone(),
                by: count + self.last.saturating_sub(*value),
            },
            None => Plan::Register {
                initial: self.last + count,
            },
        }
    }

    /// No cluster answer: the next `count` numbers are taken here, above
    /// every number seen. Returns the last of them.
    pub fn reserve_locally(&mut self, count: u64) -> u64 {
        self.last += count;
        self.last
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

    /// A cluster of counters as gproc keeps them (one per owner), and nodes
    /// that follow every registration: what the leader would answer.
    #[test]
    fn every_node_increments_the_lowest_registration() {
        let mut a: ChatCounter<&str> = ChatCounter::default();
        let mut b: ChatCounter<&str> = ChatCounter::default();
        // Two nodes registered at once; the broadcasts arrive in any order.
        a.registered("n2", 7);
        a.registered("n1", 3);
        b.registered("n1", 3);
        b.registered("n2", 7);
        assert_eq!(a.chosen(), Some(&"n1"));
        assert_eq!(b.chosen(), Some(&"n1"));
        // The chosen counter lags behind the highest number seen (7): the
        // increment closes the gap, so the next numbers are 8 and 9.
        assert_eq!(a.plan(2), Plan::Increment { owner: "n1", by: 6 });
        a.issued(&"n1", 3 + 6);
        assert_eq!(a.last(), 9);
        assert_eq!(a.plan(1), Plan::Increment { owner: "n1", by: 1 });
        // The other registration goes: still the same one.
        a.unregistered(&"n2");
        assert_eq!(a.chosen(), Some(&"n1"));
    }

    #[test]
    fn numbers_never_go_back_when_the_chosen_registration_goes() {
        let mut c: ChatCounter<&str> = ChatCounter::default();
        c.registered("n1", 40);
        c.registered("n2", 12);
        c.unregistered(&"n1");
        // n2's counter is behind what was seen from n1's.
        match c.plan(3) {
            Plan::Increment { owner, by } => {
                assert_eq!(owner, "n2");
                assert!(12 + by - 3 >= 40, "the next numbers start above 40");
            }
            other => panic!("{other:?}"),
        }
        c.unregistered(&"n2");
        assert!(c.is_unregistered());
        // A late reply for a registration already gone: its value counts,
        // the registration stays gone.
        c.issued(&"n2", 30);
        assert!(c.is_unregistered());
        assert_eq!(c.plan(3), Plan::Register { initial: 43 });
        // Without an answer, local numbers continue above them too.
        assert_eq!(c.reserve_locally(2), 42);
        assert_eq!(c.plan(1), Plan::Register { initial: 43 });
    }

    #[test]
    fn values_of_a_registration_only_grow() {
        let mut c: ChatCounter<&str> = ChatCounter::default();
        c.registered("n1", 10);
        // A late broadcast of an older value.
        c.registered("n1", 8);
        assert_eq!(c.plan(1), Plan::Increment { owner: "n1", by: 1 });
    }
}
