//! The local process table: every websocket session and every service of this
//! node is a lightweight process with a [`Pid`], an [`Inbox`] and optionally a
//! registered name.
//!
//! The table only routes; it never buffers. Each process owns a bounded queue
//! behind its [`Inbox`], so a sender learns at once whether a message was
//! accepted, refused because the receiver is not keeping up, or addressed to a
//! process that no longer exists. That is what lets fan-out to a slow client
//! cost nothing but a counter and a disconnect of that client.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::pid::Pid;

/// What happened to a message handed to an [`Inbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the process.
    Accepted,
    /// The process's queue is full; the process has been told it is too slow.
    Full,
    /// The process has ended.
    Gone,
}

/// How an exit signal reached a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// A linked process ended (or its node was lost: `noconnection`).
    Link,
    /// `exit(Pid, Reason)` from another process; `kill` cannot be trapped.
    Exit2,
}

/// What a process does with an exit signal.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitAction {
    /// Nothing more for the node to do (ignored, or trapped and queued as a
    /// `{'EXIT', From, Reason}` message by the inbox itself).
    Ignore,
    /// The process ends with this reason: the node removes it, fires its
    /// monitors and links, and calls [`Inbox::terminated`].
    Terminate(eetf::Term),
}

/// The receiving end of a process as the rest of the node sees it.
///
/// Implementations convert what they accept into their own bounded queue: a
/// chat session turns chat records into pre-encoded JSON, a service keeps
/// Erlang terms. Monitors reach a process as `{'DOWN', Ref, process, Obj,
/// Reason}` terms through [`Inbox::deliver_term`]; exit signals go through
/// [`Inbox::exit_signal`].
pub trait Inbox: Send + Sync + 'static {
    /// Delivers an Erlang term sent to this process by `from` (when known).
    fn deliver_term(&self, from: Option<&Pid>, message: eetf::Term) -> Delivery;

    /// An exit signal from `from`. The default is a process that does not
    /// trap exits: `normal` is ignored, anything else ends it (`kill` sent
    /// with `exit/2` ends it as `killed`).
    fn exit_signal(&self, from: &Pid, reason: &eetf::Term, kind: ExitKind) -> ExitAction {
        let _ = from;
        match reason {
            eetf::Term::Atom(a) if a.name == "normal" => ExitAction::Ignore,
            eetf::Term::Atom(a) if a.name == "kill" && kind == ExitKind::Exit2 => {
                ExitAction::Terminate(eetf::Term::from(eetf::Atom::from("killed")))
            }
            other => ExitAction::Terminate(other.clone()),
        }
    }

    /// The node has ended this process (it has left the process table). A
    /// Rust task behind the inbox learns of its end here, e.g. by closing
    /// its queue. Called once per process.
    fn terminated(&self, reason: &eetf::Term) {
        let _ = reason;
    }
}

/// Registered-name errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Another live process holds the name.
    #[error("the name {0} is already registered")]
    Taken(String),
    /// The pid is not a live local process.
    #[error("{0} is not a live local process")]
    NoProcess(Pid),
}

/// Routes messages to local processes by pid or registered name.
pub struct ProcessTable {
    node: Arc<str>,
    creation: u32,
    next: AtomicU64,
    processes: RwLock<HashMap<(u32, u32), Arc<dyn Inbox>>>,
    names: RwLock<HashMap<String, Pid>>,
}

impl ProcessTable {
    /// A table for the node `node` (`name@host`, or [`super::pid::NO_NODE`])
    /// with the creation EPMD gave it (0 without distribution).
    pub fn new(node: Arc<str>, creation: u32) -> Self {
        Self {
            node,
            creation,
            // Erlang's first user processes are in the hundreds; starting
            // there keeps our pids unremarkable in Erlang shells and logs.
            next: AtomicU64::new(100),
            processes: RwLock::new(HashMap::new()),
            names: RwLock::new(HashMap::new()),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// This node's creation.
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// Starts a process: gives `inbox` a fresh pid of this node.
    pub fn spawn(&self, inbox: Arc<dyn Inbox>) -> Pid {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        // id and serial together form a 64-bit counter, as V4_NC pids allow.
        let (id, serial) = (number as u32, (number >> 32) as u32);
        self.processes.write().insert((id, serial), inbox);
        Pid::new(self.node.clone(), id, serial, self.creation)
    }

    /// Ends a process: it leaves the table and loses its registered names.
    /// Returns whether it was alive.
    pub fn remove(&self, pid: &Pid) -> bool {
        let removed = self
            .processes
            .write()
            .remove(&(pid.id, pid.serial))
            .is_some();
        if removed {
            self.names.write().retain(|_, holder| holder != pid);
        }
        removed
    }

    /// Ends a process and hands back its inbox (to tell it it has ended).
    pub fn take(&self, pid: &Pid) -> Option<Arc<dyn Inbox>> {
        if !self.is_local(pid) {
            return None;
        }
        let inbox = self.processes.write().remove(&(pid.id, pid.serial))?;
        self.names.write().retain(|_, holder| holder != pid);
        Some(inbox)
    }

    /// The registered names of the live local processes.
    pub fn registered(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether `pid` belongs to this node incarnation.
    pub fn is_local(&self, pid: &Pid) -> bool {
        pid.node == self.node && pid.creation == self.creation
    }

    /// The inbox of a live local process.
    pub fn lookup(&self, pid: &Pid) -> Option<Arc<dyn Inbox>> {
        if !self.is_local(pid) {
            return None;
        }
        self.processes.read().get(&(pid.id, pid.serial)).cloned()
    }

    /// Whether `pid` is a live local process.
    pub fn is_alive(&self, pid: &Pid) -> bool {
        self.lookup(pid).is_some()
    }

    /// Registers `name` for the live local process `pid`.
    pub fn register_name(&self, name: &str, pid: &Pid) -> Result<(), NameError> {
        if !self.is_alive(pid) {
            return Err(NameError::NoProcess(pid.clone()));
        }
        let mut names = self.names.write();
        if names.contains_key(name) {
            return Err(NameError::Taken(name.to_owned()));
        }
        names.insert(name.to_owned(), pid.clone());
        Ok(())
    }

    /// The pid registered under `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.names.read().get(name).cloned()
    }

    /// Sends a term to a local pid.
    pub fn send(&self, to: &Pid, from: Option<&Pid>, message: eetf::Term) -> Delivery {
        match self.lookup(to) {
            Some(inbox) => inbox.deliver_term(from, message),
            None => Delivery::Gone,
        }
    }

    /// Sends a term to a locally registered name.
    pub fn send_named(&self, name: &str, from: Option<&Pid>, message: eetf::Term) -> Delivery {
        match self.whereis(name) {
            Some(pid) => self.send(&pid, from, message),
            None => Delivery::Gone,
        }
    }

    /// How many processes are alive.
    pub fn len(&self) -> usize {
        self.processes.read().len()
    }

    /// Whether no process is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<eetf::Term>>);

    impl Inbox for Recorder {
        fn deliver_term(&self, _from: Option<&Pid>, message: eetf::Term) -> Delivery {
            self.0.lock().push(message);
            Delivery::Accepted
        }
    }

    #[test]
    fn routes_by_pid_and_name_until_the_process_ends() {
        let table = ProcessTable::new(Arc::from("rust@localhost"), 7);
        let inbox = Arc::new(Recorder::default());
        let pid = table.spawn(inbox.clone());
        assert!(table.is_local(&pid));
        table.register_name("svc", &pid).expect("name is free");
        assert_eq!(
            table.register_name("svc", &pid),
            Err(NameError::Taken("svc".into()))
        );
        let hello = eetf::Term::from(eetf::Atom::from("hello"));
        assert_eq!(
            table.send_named("svc", None, hello.clone()),
            Delivery::Accepted
        );
        assert_eq!(table.send(&pid, None, hello.clone()), Delivery::Accepted);
        assert_eq!(inbox.0.lock().len(), 2);
        assert!(table.remove(&pid));
        assert_eq!(table.whereis("svc"), None);
        assert_eq!(table.send(&pid, None, hello), Delivery::Gone);
    }

    #[test]
    fn pids_of_an_older_creation_are_not_ours() {
        let table = ProcessTable::new(Arc::from("rust@localhost"), 7);
        let pid = table.spawn(Arc::new(Recorder::default()));
        let stale = Pid::new(pid.node.clone(), pid.id, pid.serial, 6);
        assert!(table.lookup(&stale).is_none());
    }
}
