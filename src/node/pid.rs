//! Process identifiers as this node hands them out and as Erlang sees them.
//!
//! A [`Pid`] names a process on some node: ours or a peer's. It converts
//! losslessly to and from `eetf::Pid`, the form that crosses the wire. The
//! node name is shared (`Arc<str>`) because every pid of a node carries it and
//! pids are copied on the hot path of every fan-out.

use std::fmt;
use std::sync::Arc;

/// The node name Erlang uses for a node with distribution off.
pub const NO_NODE: &str = "nonode@nohost";

/// An Erlang process identifier: `<node, id, serial, creation>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    /// The node the process lives on, `name@host`.
    pub node: Arc<str>,
    /// Process index on that node (NEW_PID_EXT allows the full 32 bits).
    pub id: u32,
    /// Serial number, bumped when an index is reused.
    pub serial: u32,
    /// The node's creation when the pid was made (an EPMD registration number).
    pub creation: u32,
}

impl Pid {
    /// Makes a pid.
    pub fn new(node: Arc<str>, id: u32, serial: u32, creation: u32) -> Self {
        Self {
            node,
            id,
            serial,
            creation,
        }
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{}>", self.node, self.id, self.serial)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<&Pid> for eetf::Pid {
    fn from(pid: &Pid) -> Self {
        eetf::Pid::new(pid.node.to_string(), pid.id, pid.serial, pid.creation)
    }
}

impl From<Pid> for eetf::Term {
    fn from(pid: Pid) -> Self {
        eetf::Term::Pid(eetf::Pid::from(&pid))
    }
}

impl From<&eetf::Pid> for Pid {
    fn from(pid: &eetf::Pid) -> Self {
        Self::new(
            Arc::from(pid.node.name.as_str()),
            pid.id,
            pid.serial,
            pid.creation,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_eetf() {
        let pid = Pid::new(Arc::from("flack1@vm"), 398, 0, 1_764_300_000);
        let wire = eetf::Pid::from(&pid);
        assert_eq!(wire.node.name, "flack1@vm");
        assert_eq!(Pid::from(&wire), pid);
        assert_eq!(format!("{pid}"), "<flack1@vm.398.0>");
    }
}
