//! A session's bounded outbound queue, and the handle the fan-out uses to
//! fill it.
//!
//! The queue holds shared events ([`Arc<ChatEvent>`]), never copies. When it
//! is full the client is not keeping up: the producer does not wait and does
//! not grow anything; it flags the session as overflowed and wakes it, and
//! the session closes the connection. One slow reader therefore costs the
//! others nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc};

use super::event::ChatEvent;
use crate::node::Delivery;

/// Signals from producers and from the node to the session that owns the
/// queue.
#[derive(Debug, Default)]
pub struct Control {
    overflowed: AtomicBool,
    terminated: AtomicBool,
    wake: Notify,
    terminate_notify: Notify,
}

impl Control {
    /// Whether a producer found the queue full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Resolves once a producer has found the queue full.
    pub async fn wait_overflow(&self) {
        loop {
            // Register interest before checking, so a flag set in between is
            // not missed.
            let notified = self.wake.notified();
            if self.overflowed() {
                return;
            }
            notified.await;
        }
    }

    fn flag_overflow(&self) {
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Whether the node ended the session's process (an exit signal).
    pub fn terminated(&self) -> bool {
        self.terminated.load(Ordering::Acquire)
    }

    /// Resolves once the node has ended the session's process.
    pub async fn wait_terminated(&self) {
        loop {
            let notified = self.terminate_wake().notified();
            if self.terminated() {
                return;
            }
            notified.await;
        }
    }

    /// Tells the session its process was ended by the node.
    pub fn flag_terminated(&self) {
        if !self.terminated.swap(true, Ordering::AcqRel) {
            self.terminate_wake().notify_one();
        }
    }

    fn terminate_wake(&self) -> &Notify {
        // One Notify per signal keeps the two waits independent.
        &self.terminate_notify
    }
}

/// The producer side: cheap to clone, kept in the registry as the member's
/// route.
#[derive(Debug, Clone)]
pub struct MailboxSender {
    events: mpsc::Sender<Arc<ChatEvent>>,
    control: Arc<Control>,
}

impl MailboxSender {
    /// The session's control signals.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Queues an event without waiting.
    pub fn deliver(&self, event: &Arc<ChatEvent>) -> Delivery {
        match self.events.try_send(event.clone()) {
            Ok(()) => Delivery::Accepted,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.control.flag_overflow();
                Delivery::Full
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }
}

/// The session side.
#[derive(Debug)]
pub struct Mailbox {
    /// Queued events, oldest first.
    pub events: mpsc::Receiver<Arc<ChatEvent>>,
    /// Overflow signal.
    pub control: Arc<Control>,
}

/// A queue that holds at most `capacity` events.
pub fn mailbox(capacity: usize) -> (MailboxSender, Mailbox) {
    let (events_tx, events_rx) = mpsc::channel(capacity.max(1));
    let control = Arc::new(Control::default());
    (
        MailboxSender {
            events: events_tx,
            control: control.clone(),
        },
        Mailbox {
            events: events_rx,
            control,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::EventKind;

    fn event(sequence: u64) -> Arc<ChatEvent> {
        Arc::new(ChatEvent::new(
            Arc::from("c"),
            EventKind::Left {
                user_id: "u".into(),
            },
            "t".into(),
            sequence,
        ))
    }

    #[tokio::test]
    async fn a_full_queue_flags_the_session_instead_of_growing() {
        let (sender, mut mailbox) = mailbox(2);
        assert_eq!(sender.deliver(&event(1)), Delivery::Accepted);
        assert_eq!(sender.deliver(&event(2)), Delivery::Accepted);
        assert!(!mailbox.control.overflowed());
        assert_eq!(sender.deliver(&event(3)), Delivery::Full);
        mailbox.control.wait_overflow().await;
        assert_eq!(mailbox.events.recv().await.map(|e| e.sequence), Some(1));
        drop(mailbox);
        assert_eq!(sender.deliver(&event(4)), Delivery::Gone);
    }
}
