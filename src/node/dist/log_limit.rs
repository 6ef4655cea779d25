//! Keeping a hostile client from writing the node's log: what a failed
//! handshake may put into a log line, and how many such lines one source
//! address may cause.
//!
//! This module owns two things. [`shown`] is how a name a peer chose
//! appears in a log line: escaped (no newlines or terminal controls from a
//! stranger) and cut to [`SHOWN_NAME`] bytes with the full length noted.
//! [`LogLimiter`] counts handshake failures per source address: the first
//! [`LogLimiter::BURST`] of a [`LogLimiter::WINDOW`] are logged, the rest are
//! counted and summed up in one line when the address fails again in a
//! later window. It tracks at most [`LogLimiter::MAX_SOURCES`] addresses;
//! past that, the addresses it does not know share one budget, so a flood
//! from many addresses is bounded too. It is pure (the caller passes the
//! time), so the rules are tested without a clock.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many bytes of a peer-chosen name a log line shows.
pub const SHOWN_NAME: usize = 64;

/// A peer-chosen name as a log line shows it: escaped like a Rust string
/// literal's contents and cut at [`SHOWN_NAME`] bytes, with
/// `...(N bytes)` when cut.
pub fn shown(name: &str) -> Shown<'_> {
    Shown(name)
}

/// See [`shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cut = self.0.len().min(SHOWN_NAME);
        while !self.0.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(f, "{}", self.0[..cut].escape_debug())?;
        if cut < self.0.len() {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// What the caller should do with one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it. `suppressed` failures from the same source were not logged
    /// since the last line; say so.
    Log {
        /// Failures not logged before this one.
        suppressed: u64,
    },
    /// Do not log it (it is counted).
    Quiet,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Per-source counts of logged and suppressed handshake failures.
#[derive(Debug, Default)]
pub struct LogLimiter {
    sources: HashMap<IpAddr, Bucket>,
    overflow: Option<Bucket>,
}

impl LogLimiter {
    /// Lines logged per source and window.
    pub const BURST: u32 = 5;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Sources tracked one by one; the rest share one budget.
    pub const MAX_SOURCES: usize = 1024;

    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// One failure from `source` at `now`: log it or not.
    /// IPv6 sources count per /64, the block one host usually has.
    pub fn check(&mut self, source: Option<IpAddr>, now: Instant) -> Verdict {
        let source = source.map(|ip| match ip {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            v4 => v4,
        });
        if self.sources.len() >= Self::MAX_SOURCES {
            self.sources
                .retain(|_, b| now.duration_since(b.window_start) < Self::WINDOW);
        }
        let bucket = match source {
            Some(ip)
                if self.sources.contains_key(&ip) || self.sources.len() < Self::MAX_SOURCES =>
            {
                self.sources.entry(ip).or_insert(Bucket {
                    window_start: now,
                    logged: 0,
                    suppressed: 0,
                })
            }
            _ => self.overflow.get_or_insert(Bucket {
                window_start: now,
                logged: 0,
                suppressed: 0,
            }),
        };
        if now.duration_since(bucket.window_start) >= Self::WINDOW {
            bucket.window_start = now;
            bucket.logged = 0;
        }
        if bucket.logged < Self::BURST {
            bucket.logged += 1;
            let suppressed = std::mem::take(&mut bucket.suppressed);
            Verdict::Log { suppressed }
        } else {
            bucket.suppressed += 1;
            Verdict::Quiet
        }
    }

    /// How many sources are tracked one by one.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_and_escaped() {
        assert_eq!(shown("a@h").to_string(), "a@h");
        assert_eq!(shown("a\nb").to_string(), "a\\nb");
        let long = "x".repeat(70_000);
        assert_eq!(
            shown(&long).to_string(),
            format!("{}...(70000 bytes)", "x".repeat(SHOWN_NAME))
        );
        // Cut on a character boundary.
        let wide = "é".repeat(40);
        assert!(shown(&wide).to_string().ends_with("...(80 bytes)"));
    }

    #[test]
    fn a_burst_per_window_then_a_summary() {
        let mut l = LogLimiter::new();
        let t0 = Instant::now();
        let ip: Option<IpAddr> = Some("127.0.0.9".parse().expect("ip"));
        for _ in 0..LogLimiter::BURST {
            assert_eq!(l.check(ip, t0), Verdict::Log { suppressed: 0 });
        }
        for _ in 0..100 {
            assert_eq!(l.check(ip, t0), Verdict::Quiet);
        }
        // Another source has its own budget.
        let other: Option<IpAddr> = Some("127.0.0.10".parse().expect("ip"));
        assert_eq!(l.check(other, t0), Verdict::Log { suppressed: 0 });
        let later = t0 + LogLimiter::WINDOW;
        assert_eq!(l.check(ip, later), Verdict::Log { suppressed: 100 });
        assert_eq!(l.check(ip, later), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn many_sources_share_a_budget() {
        let mut l = LogLimiter::new();
        let t0 = Instant::now();
        let mut logged = 0;
        for i in 0..(LogLimiter::MAX_SOURCES as u32 + 1000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            for _ in 0..3 {
                if matches!(l.check(Some(ip), t0), Verdict::Log { .. }) {
                    logged += 1;
                }
            }
        }
        assert_eq!(l.tracked(), LogLimiter::MAX_SOURCES);
        assert_eq!(
            logged,
            LogLimiter::MAX_SOURCES as u32 * 3 + LogLimiter::BURST
        );
    }
}
