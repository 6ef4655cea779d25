//! A reusable process type for services and tests: a bounded queue of
//! `(from, term)` messages plus the exit signals that end it.
//!
//! [`TermMailbox::new`] returns the [`Inbox`] half to spawn on the node and the
//! [`Mailbox`] half a tokio task reads from. A mailbox that does not trap
//! exits ends on a non-normal exit signal: its task sees
//! [`Received::Terminated`] and then the end of the stream. One that traps
//! exits receives `{'EXIT', From, Reason}` as an ordinary message, as in
//! Erlang.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::pid::Pid;
use super::process::{Delivery, ExitAction, ExitKind, Inbox};
use super::term;

/// What a mailbox task receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A message, with its sender when known.
    Message(Option<Pid>, eetf::Term),
    /// The process was ended by the node (exit signal, or `exit_process`).
    Terminated(eetf::Term),
}

/// The inbox half of a term mailbox.
pub struct TermMailbox {
    tx: mpsc::Sender<Received>,
    trap_exit: AtomicBool,
    ended: Mutex<bool>,
}

/// The reading half of a term mailbox.
pub struct Mailbox {
    rx: mpsc::Receiver<Received>,
    saved: std::collections::VecDeque<Received>,
    inbox: Arc<TermMailbox>,
}

impl TermMailbox {
    /// A mailbox holding at most `capacity` queued messages.
    pub fn new(capacity: usize) -> (Arc<TermMailbox>, Mailbox) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let inbox = Arc::new(TermMailbox {
            tx,
            trap_exit: AtomicBool::new(false),
            ended: Mutex::new(false),
        });
        (
            inbox.clone(),
            Mailbox {
                rx,
                saved: Default::default(),
                inbox,
            },
        )
    }

    /// `process_flag(trap_exit, on)`.
    pub fn set_trap_exit(&self, on: bool) {
        self.trap_exit.store(on, Ordering::Relaxed);
    }
}

impl Inbox for TermMailbox {
    fn deliver_term(&self, from: Option<&Pid>, message: eetf::Term) -> Delivery {
        if *self.ended.lock() {
            return Delivery::Gone;
        }
        match self.tx.try_send(Received::Message(from.cloned(), message)) {
            Ok(()) => Delivery::Accepted,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }

    fn exit_signal(&self, from: &Pid, reason: &eetf::Term, kind: ExitKind) -> ExitAction {
        if kind == ExitKind::Exit2 && term::as_atom(reason) == Some("kill") {
            return ExitAction::Terminate(term::atom("killed"));
        }
        if self.trap_exit.load(Ordering::Relaxed) {
            let msg = term::tuple(vec![
                term::atom("EXIT"),
                from.clone().into(),
                reason.clone(),
            ]);
            let _ = self.tx.try_send(Received::Message(Some(from.clone()), msg));
            return ExitAction::Ignore;
        }
        if term::is_normal(reason) {
            ExitAction::Ignore
        } else {
            ExitAction::Terminate(reason.clone())
        }
    }

    fn terminated(&self, reason: &eetf::Term) {
        let mut ended = self.ended.lock();
        if !*ended {
            *ended = true;
            // The termination notice must get through even to a full queue:
            // wait for room off the caller's thread.
            let tx = self.tx.clone();
            let note = Received::Terminated(reason.clone());
            if let Err(mpsc::error::TrySendError::Full(note)) = tx.try_send(note)
                && let Ok(handle) = tokio::runtime::Handle::try_current()
            {
                handle.spawn(async move {
                    let _ = tx.send(note).await;
                });
            }
        }
    }
}

impl Mailbox {
    /// The next message or signal; `None` once the node dropped the process
    /// and everything queued was read.
    pub async fn recv(&mut self) -> Option<Received> {
        if let Some(r) = self.saved.pop_front() {
            return Some(r);
        }
        self.rx.recv().await
    }

    /// The next message within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits up to `timeout` for the first message for which `pick` returns
    /// `Some`; the others stay queued, in order (Erlang's selective receive).
    pub async fn receive<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&Received) -> Option<T>,
    ) -> Option<T> {
        if let Some(i) = self.saved.iter().position(|r| pick(r).is_some()) {
            let r = self.saved.remove(i)?;
            return pick(&r);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()
                .flatten()?;
            match pick(&r) {
                Some(t) => return Some(t),
                None => self.saved.push_back(r),
            }
        }
    }

    /// The inbox half (to change `trap_exit`).
    pub fn inbox(&self) -> &Arc<TermMailbox> {
        &self.inbox
    }
}
