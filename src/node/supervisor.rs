//! The node's supervisor: keeps its core services (`net_kernel`, `rex`,
//! `flack_mesh`, `global_name_server`; in a cluster also `gproc_dist` and
//! `flack_fanout`) running
//! under their registered names, and says so when one cannot be kept
//! running.
//!
//! Each service is a permanent child of a `one_for_one` supervisor: when its
//! process ends for any reason but the node's shutdown (an `exit(Pid, kill)`
//! from a peer holding the cookie, any other exit signal, a panic), a fresh
//! process with a new pid is started at once and registered under the same
//! name. Whatever state the service keeps between incarnations stays with
//! the [`Service`] (gproc_dist keeps its registry, as gproc keeps its ets
//! table when gproc_sup restarts gproc_dist); its mailbox does not.
//!
//! Restarts are limited as an OTP supervisor limits them: more than
//! `max_restarts` within `period` ([`Intensity`]) and the supervisor gives
//! up. Each service is counted on its own, as if it were the only child of
//! its own supervisor. The service then stays down, and the node reports
//! it ([`Services::failed`]): `/health` answers 503 and the process exits
//! non-zero after a short grace (see `app`), as an OTP node halts when a
//! permanent application's top supervisor gives up, so that systemd (or any
//! process supervisor) restarts the whole node.
//!
//! The limits: [`Intensity::NODE_SERVICE`] (5 in 10 s) for the node's own
//! services, [`Intensity::GPROC_SUP`] (15 in 60 s, gproc_sup's own figures)
//! for gproc_dist. An OTP node is stricter with the first group:
//! `net_kernel` and `rex` are children of `kernel_sup`, whose intensity is
//! 0, so killing either halts the node at once. A flack node serves
//! thousands of websocket clients that a halt would cut off, so it restarts
//! them, within a limit that a real fault loop (a peer killing them over and
//! over) still reaches in seconds.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::mailbox::{Mailbox, TermMailbox};
use super::pid::Pid;
use super::term::atom;
use super::{NameError, Node};

/// How many restarts a service may need within a period before its
/// supervisor gives up on it (an OTP supervisor's `intensity` and
/// `period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within `period`; one more and the service stays down.
    pub max_restarts: usize,
    /// The sliding window the restarts are counted in.
    pub period: Duration,
}

impl Intensity {
    /// `net_kernel`, `rex` and the mesh keeper: 5 restarts in 10 s, a
    /// common choice for permanent workers (OTP's default is 1 in 5 s,
    /// which one stray `exit/2` and a retry already exhaust).
    pub const NODE_SERVICE: Intensity = Intensity {
        max_restarts: 5,
        period: Duration::from_secs(10),
    };

    /// `gproc_dist`: gproc_sup's `{one_for_one, 15, 60}`, what an Erlang
    /// flack node allows its gproc_dist.
    pub const GPROC_SUP: Intensity = Intensity {
        max_restarts: 15,
        period: Duration::from_secs(60),
    };
}

/// Where a supervised service stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Its process is registered and serving.
    Up,
    /// Its process ended; a new one is being started.
    Restarting,
    /// It ended more often than its [`Intensity`] allows and stays down.
    Failed,
}

/// One supervised service, for `/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    /// The registered name.
    pub name: String,
    /// Where it stands.
    pub state: ServiceState,
    /// How many times it was restarted since the node started.
    pub restarts: u64,
}

/// The supervised services of a node and whether any has failed for good.
#[derive(Default)]
pub struct Services {
    children: Mutex<Vec<ServiceStatus>>,
    failed: CancellationToken,
}

impl Services {
    /// Every supervised service, in the order they were started.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.children.lock().clone()
    }

    /// The services that failed for good.
    pub fn failed_names(&self) -> Vec<String> {
        self.children
            .lock()
            .iter()
            .filter(|child| child.state == ServiceState::Failed)
            .map(|child| child.name.clone())
            .collect()
    }

    /// Waits until some service has failed for good; returns their names.
    pub async fn failed(&self) -> Vec<String> {
        self.failed.cancelled().await;
        self.failed_names()
    }

    fn add(&self, name: &str) {
        self.children.lock().push(ServiceStatus {
            name: name.to_owned(),
            state: ServiceState::Up,
            restarts: 0,
        });
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut ServiceStatus)) {
        if let Some(child) = self
            .children
            .lock()
            .iter_mut()
            .find(|child| child.name == name)
        {
            change(child);
        }
    }

    fn fail(&self, name: &str) {
        self.update(name, |child| child.state = ServiceState::Failed);
        self.failed.cancel();
    }
}

/// A service: what one incarnation of its process does. `serve` runs until
/// the process ends (its mailbox yields [`super::Received::Terminated`] or
/// closes) or the service's shutdown; `self` is what outlives the process.
pub trait Service: Send + 'static {
    /// Serves as the process `pid`, reading `mailbox`.
    fn serve(&mut self, node: Node, pid: Pid, mailbox: Mailbox) -> BoxFuture<'_, ()>;
}

/// A service that keeps nothing between incarnations: `F` serves one.
pub struct Stateless<F>(pub F);

impl<F, Fut> Service for Stateless<F>
where
    F: FnMut(Node, Pid, Mailbox) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn serve(&mut self, node: Node, pid: Pid, mailbox: Mailbox) -> BoxFuture<'_, ()> {
        Box::pin((self.0)(node, pid, mailbox))
    }
}

/// How a service is supervised.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The name each incarnation is registered under.
    pub name: &'static str,
    /// Messages its mailbox holds.
    pub mailbox: usize,
    /// Its restart limit.
    pub intensity: Intensity,
    /// Cancelled when the service is meant to stop (not restarted then).
    pub shutdown: CancellationToken,
}

/// Starts `service` under the supervisor: its first process is registered
/// as `spec.name` before this returns (its pid is returned), and every
/// later one as soon as the previous one ends, within `spec.intensity`.
pub fn supervise<S: Service>(
    node: &Node,
    spec: ChildSpec,
    mut service: S,
) -> Result<Pid, NameError> {
    let (pid, mailbox) = start_process(node, &spec)?;
    let services = &node.core().services;
    services.add(spec.name);
    let first = pid.clone();
    let node = node.clone();
    tokio::spawn(async move {
        let services = &node.core().services;
        let mut restarts: VecDeque<tokio::time::Instant> = VecDeque::new();
        let mut current = (pid, mailbox);
        loop {
            let (pid, mailbox) = current;
            let served = AssertUnwindSafe(service.serve(node.clone(), pid.clone(), mailbox))
                .catch_unwind()
                .await;
            // A process that ended by a signal is gone already; one whose
            // code returned or panicked ends here, so that its monitors and
            // links fire as they would for an Erlang process.
            let why = match (&served, node.is_alive(&pid)) {
                (Err(_), _) => "panicked",
                (Ok(()), true) => "returned",
                (Ok(()), false) => "was ended by an exit signal",
            };
            let reason = if served.is_err() { "killed" } else { "normal" };
            node.exit_process(&pid, atom(reason));
            if spec.shutdown.is_cancelled() || node.core().shutdown.is_cancelled() {
                return;
            }
            services.update(spec.name, |child| child.state = ServiceState::Restarting);
            let now = tokio::time::Instant::now();
            restarts.retain(|at| now.duration_since(*at) < spec.intensity.period);
            if restarts.len() >= spec.intensity.max_restarts {
                tracing::error!(
                    service = spec.name,
                    "{} {why}; it was restarted {} times within {:?}, the most allowed: it stays down",
                    spec.name,
                    spec.intensity.max_restarts,
                    spec.intensity.period,
                );
                services.fail(spec.name);
                return;
            }
            restarts.push_back(now);
            match start_process(&node, &spec) {
                Ok(next) => {
                    tracing::warn!(service = spec.name, old = %pid, new = %next.0, "{} {why}; restarted", spec.name);
                    services.update(spec.name, |child| {
                        child.state = ServiceState::Up;
                        child.restarts += 1;
                    });
                    current = next;
                }
                Err(error) => {
                    tracing::error!(service = spec.name, %error, "{} {why} and cannot be restarted", spec.name);
                    services.fail(spec.name);
                    return;
                }
            }
        }
    });
    Ok(first)
}

/// A fresh process for the service, registered under its name.
fn start_process(node: &Node, spec: &ChildSpec) -> Result<(Pid, Mailbox), NameError> {
    let (inbox, mailbox) = TermMailbox::new(spec.mailbox);
    let pid = node.spawn(inbox);
    if let Err(error) = node.register_name(spec.name, &pid) {
        node.exit_process(&pid, atom("normal"));
        return Err(error);
    }
    Ok((pid, mailbox))
}
