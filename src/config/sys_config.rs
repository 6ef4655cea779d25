//! `sys.config`: the application environment of a release, one Erlang list of
//! `{Application, [{Key, Value}]}` ended by a full stop.
//!
//! This module owns reading such a file (the release's
//! `releases/<version>/sys.config`, or the one named by `--config` or
//! `-config`), and the typed view of the few parameters flack acts on,
//! [`KnownEnv`], which `-App Key Value` arguments feed too:
//!
//! - `{flack, [{port, N}]}`: the HTTP and websocket port;
//! - `{flack, [{max_name_bytes, N}, {max_chats_per_connection, N},
//!   {max_message_frames, N}, {max_connections, N},
//!   {header_read_timeout_secs, N}, {handshake_timeout_secs, N},
//!   {allowed_origins, ["https://chat.example.com"] | '*'}]}`: the limits of
//!   the websocket and HTTP port (the `--flags` of the same names win);
//! - `{kernel, [{net_ticktime, N}]}`: seconds of the distribution tick;
//! - `{kernel, [{prevent_overlapping_partitions, true | false}]}`: whether
//!   this node's `global` cuts overlapping partitions (OTP 25's default,
//!   `true`, when unset);
//! - `{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}`: the address the
//!   distribution listener binds (an IPv4 4-tuple or IPv6 8-tuple);
//! - `{kernel, [{inet_dist_listen_min, N}, {inet_dist_listen_max, M}]}`:
//!   the distribution port range, with OTP's meaning (min alone: exactly
//!   that port; max alone: ignored);
//! - `{gproc, [{gproc_dist, all | [Node] | {[Node], Opts}}]}`: who may lead
//!   the global registry ([`GprocDist`]);
//! - `{gproc, [{gproc_dist_workers, [Node]}]}`.
//!
//! Everything else is kept in [`SysConfig::params`] and otherwise ignored, so
//! an Erlang node's sys.config can be used as it is. As in Erlang, a string
//! in the top-level list names another config file to read at that point
//! (`".config"` appended when missing, relative to the including file's
//! directory), and a later value for the same parameter wins. Every error
//! names the file, line and column.

use std::path::{Path, PathBuf};

use super::erl_args::AppEnv;
use super::erl_term::{self, ErlTerm, Located, Pos, Spans};

/// A sys.config that cannot be used; the message names file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SysConfigError(pub String);

/// gproc's `gproc_dist` setting: which nodes take part in electing the
/// leader of the global registry.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum GprocDist {
    /// Not set (or `false`): gproc runs without its global registry.
    #[default]
    Off,
    /// `all`: every node this one is connected to is a candidate.
    All,
    /// `[Node, ...]` or `{[Node, ...], Opts}`: these nodes are the
    /// candidates; `opts` are gen_leader options such as `{workers, [Node]}`
    /// (a bare atom option `A` is read as `{A, true}`).
    Candidates {
        /// Node names as written: `flack1@host`.
        nodes: Vec<String>,
        /// Options, in order.
        opts: Vec<(String, ErlTerm)>,
    },
}

/// The application parameters flack acts on, typed. Each is `None` when the
/// source does not set it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KnownEnv {
    /// `{flack, [{port, N}]}`.
    pub port: Option<u16>,
    /// `{flack, [{max_name_bytes, N}]}`.
    pub max_name_bytes: Option<usize>,
    /// `{flack, [{max_chats_per_connection, N}]}`.
    pub max_chats_per_connection: Option<usize>,
    /// `{flack, [{max_message_frames, N}]}`.
    pub max_message_frames: Option<usize>,
    /// `{flack, [{max_connections, N}]}`.
    pub max_connections: Option<usize>,
    /// `{flack, [{header_read_timeout_secs, N}]}`.
    pub header_read_timeout_secs: Option<u64>,
    /// `{flack, [{handshake_timeout_secs, N}]}`.
    pub handshake_timeout_secs: Option<u64>,
    /// `{flack, [{allowed_origins, ["https://host", ...] | '*'}]}`, as
    /// `--allowed-origins` values.
    pub allowed_origins: Option<Vec<String>>,
    /// `{kernel, [{net_ticktime, Seconds}]}`.
    pub net_ticktime: Option<u32>,
    /// `{kernel, [{prevent_overlapping_partitions, Bool}]}`.
    pub prevent_overlapping_partitions: Option<bool>,
    /// `{gproc, [{gproc_dist, ...}]}`.
    pub gproc_dist: Option<GprocDist>,
    /// `{gproc, [{gproc_dist_workers, [Node]}]}`.
    pub gproc_dist_workers: Option<Vec<String>>,
    /// `{kernel, [{inet_dist_use_interface, IpTuple}]}`.
    pub dist_interface: Option<std::net::IpAddr>,
    /// `{kernel, [{inet_dist_listen_min, N}]}`.
    pub dist_listen_min: Option<u16>,
    /// `{kernel, [{inet_dist_listen_max, N}]}`.
    pub dist_listen_max: Option<u16>,
}

/// A parameter that is wrong: where, and what was expected.
type Problem = (Pos, String);

impl KnownEnv {
    /// Takes every value `other` sets.
    pub fn overlay(&mut self, other: &KnownEnv) {
        if other.port.is_some() {
            self.port = other.port;
        }
        macro_rules! take {
            ($($field:ident),*) => {$(
                if other.$field.is_some() {
                    self.$field.clone_from(&other.$field);
                }
            )*};
        }
        take!(
            max_name_bytes,
            max_chats_per_connection,
            max_message_frames,
            max_connections,
            header_read_timeout_secs,
            handshake_timeout_secs,
            allowed_origins
        );
        if other.net_ticktime.is_some() {
            self.net_ticktime = other.net_ticktime;
        }
        if other.prevent_overlapping_partitions.is_some() {
            self.prevent_overlapping_partitions = other.prevent_overlapping_partitions;
        }
        if other.gproc_dist.is_some() {
            self.gproc_dist.clone_from(&other.gproc_dist);
        }
        if other.gproc_dist_workers.is_some() {
            self.gproc_dist_workers
                .clone_from(&other.gproc_dist_workers);
        }
        if other.dist_interface.is_some() {
            self.dist_interface = other.dist_interface;
        }
        if other.dist_listen_min.is_some() {
            self.dist_listen_min = other.dist_listen_min;
        }
        if other.dist_listen_max.is_some() {
            self.dist_listen_max = other.dist_listen_max;
        }
    }

    /// The distribution port range as OTP's `inet_tcp_dist` reads it:
    /// `(min, max)` when `inet_dist_listen_min` is set (max defaults to min),
    /// else `None` (any free port). `inet_dist_listen_max` alone is ignored,
    /// as in OTP.
    pub fn dist_ports(&self) -> Option<(u16, u16)> {
        let min = self.dist_listen_min?;
        Some((min, self.dist_listen_max.unwrap_or(min)))
    }

    /// Whether flack acts on `{app, [{key, _}]}`.
    pub fn is_known(app: &str, key: &str) -> bool {
        matches!(
            (app, key),
            ("flack", "port")
                | ("flack", "max_name_bytes")
                | ("flack", "max_chats_per_connection")
                | ("flack", "max_message_frames")
                | ("flack", "max_connections")
                | ("flack", "header_read_timeout_secs")
                | ("flack", "handshake_timeout_secs")
                | ("flack", "allowed_origins")
                | ("kernel", "net_ticktime")
                | ("kernel", "prevent_overlapping_partitions")
                | ("gproc", "gproc_dist")
                | ("gproc", "gproc_dist_workers")
                | ("kernel", "inet_dist_use_interface")
                | ("kernel", "inet_dist_listen_min")
                | ("kernel", "inet_dist_listen_max")
        )
    }

    /// Reads the parameter if flack acts on it. Returns warnings about values
    /// that are accepted but look wrong.
    fn apply(
        &mut self,
        app: &str,
        key: &str,
        value: &ErlTerm,
        spans: &Spans,
    ) -> Result<Vec<Problem>, Problem> {
        let mut warnings = Vec::new();
        match (app, key) {
            ("flack", "port") => {
                let port = value
                    .as_int()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| found(spans, "not a port number (0 to 65535)", value))?;
                self.port = Some(port);
            }
            ("flack", "max_name_bytes") => {
                self.max_name_bytes = Some(positive(value, spans)?);
            }
            ("flack", "max_chats_per_connection") => {
                self.max_chats_per_connection = Some(positive(value, spans)?);
            }
            ("flack", "max_message_frames") => {
                self.max_message_frames = Some(positive(value, spans)?);
            }
            ("flack", "max_connections") => {
                self.max_connections = Some(positive(value, spans)?);
            }
            ("flack", "header_read_timeout_secs") => {
                self.header_read_timeout_secs = Some(positive(value, spans)? as u64);
            }
            ("flack", "handshake_timeout_secs") => {
                self.handshake_timeout_secs = Some(positive(value, spans)? as u64);
            }
            ("flack", "allowed_origins") => {
                self.allowed_origins = Some(origins(value, spans)?);
            }
            ("kernel", "net_ticktime") => {
                let seconds = value
                    .as_int()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        found(
                            spans,
                            "not a tick time (a positive number of seconds)",
                            value,
                        )
                    })?;
                self.net_ticktime = Some(seconds);
            }
            ("kernel", "prevent_overlapping_partitions") => {
                // OTP's global refuses to start on anything but a boolean
                // ({invalid_parameter_value, ...}); so does this node.
                let on = match value.as_atom() {
                    Some("true") => true,
                    Some("false") => false,
                    _ => return Err(found(spans, "not a boolean (true or false)", value)),
                };
                self.prevent_overlapping_partitions = Some(on);
            }
            ("gproc", "gproc_dist") => {
                let dist = gproc_dist(value, spans, &mut warnings)?;
                self.gproc_dist = Some(dist);
            }
            ("kernel", "inet_dist_use_interface") => {
                self.dist_interface = Some(ip_tuple(value).ok_or_else(|| {
                    found(
                        spans,
                        "not an IP address tuple ({127,0,0,1} or an IPv6 8-tuple)",
                        value,
                    )
                })?);
            }
            ("kernel", key @ ("inet_dist_listen_min" | "inet_dist_listen_max")) => {
                let port = value
                    .as_int()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| found(spans, "not a port number (0 to 65535)", value))?;
                if key == "inet_dist_listen_min" {
                    self.dist_listen_min = Some(port);
                } else {
                    self.dist_listen_max = Some(port);
                }
            }
            ("gproc", "gproc_dist_workers") => {
                self.gproc_dist_workers = Some(node_list(value, spans, &mut warnings)?);
            }
            _ => {}
        }
        Ok(warnings)
    }

    /// The known parameters among `-App Key Value` arguments, in order (a
    /// later one wins). Errors read `-flack port eighty: not a port number
    /// (0 to 65535)`.
    pub fn from_app_env(env: &[AppEnv]) -> Result<Self, String> {
        let mut known = Self::default();
        for entry in env {
            if !Self::is_known(&entry.app, &entry.key) {
                continue;
            }
            let flag = format!("-{} {} {}", entry.app, entry.key, entry.value);
            let located = erl_term::parse_value(&flag, &entry.value)
                .map_err(|error| format!("{flag}: not an Erlang term: {}", error.message))?;
            known
                .apply(&entry.app, &entry.key, &located.term, &located.spans)
                .map_err(|(_, message)| format!("{flag}: {message}"))?;
        }
        Ok(known)
    }
}

/// `{A,B,C,D}` (each 0..=255) or `{A,B,C,D,E,F,G,H}` (each 0..=65535), as
/// `inet:ip_address()`.
fn ip_tuple(value: &ErlTerm) -> Option<std::net::IpAddr> {
    let items = value.as_tuple()?;
    let parts: Vec<i64> = items.iter().map(ErlTerm::as_int).collect::<Option<_>>()?;
    match parts.len() {
        4 => {
            let b: Vec<u8> = parts
                .iter()
                .map(|&n| u8::try_from(n).ok())
                .collect::<Option<_>>()?;
            Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into())
        }
        8 => {
            let w: Vec<u16> = parts
                .iter()
                .map(|&n| u16::try_from(n).ok())
                .collect::<Option<_>>()?;
            Some(std::net::Ipv6Addr::new(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]).into())
        }
        _ => None,
    }
}

fn found(spans: &Spans, expected: &str, value: &ErlTerm) -> Problem {
    (spans.pos, format!("{expected}, found {value}"))
}

/// A positive integer.
fn positive(value: &ErlTerm, spans: &Spans) -> Result<usize, Problem> {
    value
        .as_int()
        .filter(|&n| n > 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| found(spans, "not a positive integer", value))
}

/// `'*'`, `"*"`, or a list of origins as strings or binaries.
fn origins(value: &ErlTerm, spans: &Spans) -> Result<Vec<String>, Problem> {
    const EXPECTED: &str = "not a list of origins (\"https://host[:port]\", ...) or '*'";
    let text = |term: &ErlTerm| match term {
        ErlTerm::String(text) => Some(text.clone()),
        ErlTerm::Binary(bytes) => String::from_utf8(bytes.clone()).ok(),
        ErlTerm::Atom(star) if star == "*" => Some(star.clone()),
        _ => None,
    };
    let values = match value {
        ErlTerm::List(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                text(item).ok_or_else(|| found(spans.child(index), EXPECTED, item))
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => vec![text(other).ok_or_else(|| found(spans, EXPECTED, other))?],
    };
    crate::http::origin::AllowedOrigins::parse(&values).map_err(|error| {
        (
            spans.pos,
            error.trim_start_matches("--allowed-origins ").to_owned(),
        )
    })?;
    Ok(values)
}

/// `all`, `false`, `[Node]` or `{[Node], Opts}`.
fn gproc_dist(
    value: &ErlTerm,
    spans: &Spans,
    warnings: &mut Vec<Problem>,
) -> Result<GprocDist, Problem> {
    const EXPECTED: &str = "not a gproc_dist setting (all, [Node, ...] or {[Node, ...], Opts})";
    match value {
        ErlTerm::Atom(all) if all == "all" => Ok(GprocDist::All),
        ErlTerm::Atom(off) if off == "false" => Ok(GprocDist::Off),
        ErlTerm::List(_) => Ok(GprocDist::Candidates {
            nodes: node_list(value, spans, warnings)?,
            opts: Vec::new(),
        }),
        ErlTerm::Tuple(items) if items.len() == 2 && items[0].as_list().is_some() => {
            let nodes = node_list(&items[0], spans.child(0), warnings)?;
            let opts_spans = spans.child(1);
            let Some(opts) = items[1].as_list() else {
                return Err(found(
                    opts_spans,
                    "gproc_dist options must be a list",
                    &items[1],
                ));
            };
            let opts = opts
                .iter()
                .enumerate()
                .map(|(index, opt)| match (opt, opt.as_tuple()) {
                    (ErlTerm::Atom(name), _) => {
                        Ok((name.clone(), ErlTerm::Atom("true".to_owned())))
                    }
                    (_, Some([ErlTerm::Atom(name), value])) => Ok((name.clone(), value.clone())),
                    (other, _) => Err(found(
                        opts_spans.child(index),
                        "not a gproc_dist option ({Name, Value} or Name)",
                        other,
                    )),
                })
                .collect::<Result<_, _>>()?;
            Ok(GprocDist::Candidates { nodes, opts })
        }
        other => Err(found(spans, EXPECTED, other)),
    }
}

/// A list of node names (atoms); warns about names without `@host`.
fn node_list(
    value: &ErlTerm,
    spans: &Spans,
    warnings: &mut Vec<Problem>,
) -> Result<Vec<String>, Problem> {
    let Some(items) = value.as_list() else {
        return Err(found(spans, "not a list of node names", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let at = spans.child(index);
            let name = item
                .as_atom()
                .ok_or_else(|| found(at, "not a node name (an atom such as flack1@host)", item))?;
            if !name.contains('@') {
                warnings.push((
                    at.pos,
                    format!("node name {item} has no @host part; no node can have it"),
                ));
            }
            Ok(name.to_owned())
        })
        .collect()
}

/// One `{App, [{Key, Value}]}` parameter of a sys.config.
#[derive(Debug, Clone, PartialEq)]
pub struct AppParam {
    /// The application: `flack`, `kernel`, `gproc`, ...
    pub app: String,
    /// The parameter.
    pub key: String,
    /// Its value.
    pub value: ErlTerm,
    /// Where it was written: `file:line`.
    pub at: String,
}

/// A sys.config that has been read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SysConfig {
    /// The files read: the sys.config, then the files it includes.
    pub files: Vec<PathBuf>,
    /// Every parameter, in the order read; a later one for the same
    /// application and key overrides an earlier one.
    pub params: Vec<AppParam>,
    /// The parameters flack acts on.
    pub known: KnownEnv,
    /// Values accepted that look wrong, each starting `file:line:column:`;
    /// for the caller to log.
    pub warnings: Vec<String>,
}

impl SysConfig {
    /// Reads the sys.config at `path` and the files it includes.
    pub fn read(path: &Path) -> Result<Self, SysConfigError> {
        let mut config = Self::default();
        config.load_file(path, true)?;
        Ok(config)
    }

    /// Reads sys.config text; `origin` names it in messages and its directory
    /// is where relative includes are looked for.
    pub fn parse(origin: &str, text: &str) -> Result<Self, SysConfigError> {
        let mut config = Self::default();
        config.load_text(Path::new(origin), text, true)?;
        Ok(config)
    }

    /// The last value of `{app, [{key, Value}]}`.
    pub fn get(&self, app: &str, key: &str) -> Option<&ErlTerm> {
        self.params
            .iter()
            .rev()
            .find(|param| param.app == app && param.key == key)
            .map(|param| &param.value)
    }

    fn load_file(&mut self, path: &Path, top: bool) -> Result<(), SysConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| SysConfigError(format!("{}: {error}", path.display())))?;
        self.files.push(path.to_path_buf());
        self.load_text(path, &text, top)
    }

    fn load_text(&mut self, path: &Path, text: &str, top: bool) -> Result<(), SysConfigError> {
        let origin = path.display().to_string();
        let at = |pos: Pos, message: String| {
            SysConfigError(format!("{origin}:{}:{}: {message}", pos.line, pos.column))
        };
        let mut terms = erl_term::parse_terms(&origin, text)
            .map_err(|error| SysConfigError(error.to_string()))?;
        if terms.len() > 1 {
            return Err(at(
                terms[1].spans.pos,
                "a config file holds one list ended by '.'; this is a second term".to_owned(),
            ));
        }
        let Some(Located { term, spans }) = terms.pop() else {
            return Err(SysConfigError(format!(
                "{origin}: no term; a config file holds one list ended by '.', such as [{{flack, []}}]."
            )));
        };
        let Some(entries) = term.as_list() else {
            return Err(at(
                spans.pos,
                format!(
                    "a config file is a list of {{Application, [{{Key, Value}}]}}, found {}",
                    term.kind()
                ),
            ));
        };
        for (index, entry) in entries.iter().enumerate() {
            let entry_spans = spans.child(index);
            match entry {
                ErlTerm::String(include) if top => {
                    let mut file = path.parent().unwrap_or(Path::new("")).join(include);
                    if !include.ends_with(".config") {
                        file = PathBuf::from(format!("{}.config", file.display()));
                    }
                    self.load_file(&file, false).map_err(|error| {
                        at(entry_spans.pos, format!("included from here: {error}"))
                    })?;
                }
                ErlTerm::String(_) => {
                    return Err(at(
                        entry_spans.pos,
                        "an included config file cannot include others".to_owned(),
                    ));
                }
                ErlTerm::Tuple(items) if items.len() == 2 => {
                    let Some(app) = items[0].as_atom() else {
                        return Err(at(
                            entry_spans.child(0).pos,
                            format!("expected an application name (an atom), found {}", items[0]),
                        ));
                    };
                    let Some(params) = items[1].as_list() else {
                        return Err(at(
                            entry_spans.child(1).pos,
                            format!(
                                "the parameters of {} must be a list of {{Key, Value}}, found {}",
                                items[0],
                                items[1].kind()
                            ),
                        ));
                    };
                    for (param_index, param) in params.iter().enumerate() {
                        let param_spans = entry_spans.child(1).child(param_index);
                        let (key, value) = match param.as_tuple() {
                            Some([ErlTerm::Atom(key), value]) => (key, value),
                            _ => {
                                return Err(at(
                                    param_spans.pos,
                                    format!(
                                        "expected {{Key, Value}} with an atom Key in the parameters of {}, found {param}",
                                        items[0]
                                    ),
                                ));
                            }
                        };
                        let value_spans = param_spans.child(1);
                        let warnings = self
                            .known
                            .apply(app, key, value, value_spans)
                            .map_err(|(pos, message)| at(pos, format!("{app} {key}: {message}")))?;
                        self.warnings
                            .extend(warnings.into_iter().map(|(pos, message)| {
                                format!(
                                    "{origin}:{}:{}: {app} {key}: {message}",
                                    pos.line, pos.column
                                )
                            }));
                        self.params.push(AppParam {
                            app: app.to_owned(),
                            key: key.clone(),
                            value: value.clone(),
                            at: format!("{origin}:{}", param_spans.pos.line),
                        });
                    }
                }
                other => {
                    return Err(at(
                        entry_spans.pos,
                        format!(
                            "expected {{Application, [{{Key, Value}}]}} or the name of a config file to include, found {other}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SysConfig {
        match SysConfig::parse("sys.config", text) {
            Ok(config) => config,
            Err(error) => panic!("should parse: {error}"),
        }
    }

    fn error(text: &str) -> String {
        match SysConfig::parse("sys.config", text) {
            Ok(config) => panic!("should fail, got {config:?}"),
            Err(error) => error.0,
        }
    }

    #[test]
    fn websocket_limits_are_read() {
        let config = parse(
            "[{flack, [{max_name_bytes, 64}, {max_chats_per_connection, 7}, {max_message_frames, 16},\n {max_connections, 500}, {header_read_timeout_secs, 5}, {handshake_timeout_secs, 3},\n {allowed_origins, [\"https://a.example\", <<\"http://b.example:8080\">>]}]}].",
        );
        assert_eq!(config.known.max_name_bytes, Some(64));
        assert_eq!(config.known.max_chats_per_connection, Some(7));
        assert_eq!(config.known.max_message_frames, Some(16));
        assert_eq!(config.known.max_connections, Some(500));
        assert_eq!(config.known.header_read_timeout_secs, Some(5));
        assert_eq!(config.known.handshake_timeout_secs, Some(3));
        assert_eq!(
            config.known.allowed_origins,
            Some(vec![
                "https://a.example".into(),
                "http://b.example:8080".into()
            ])
        );
        assert_eq!(
            parse("[{flack, [{allowed_origins, '*'}]}].")
                .known
                .allowed_origins,
            Some(vec!["*".into()])
        );
        assert_eq!(
            error("[{flack, [{max_connections, 0}]}]."),
            "sys.config:1:29: flack max_connections: not a positive integer, found 0"
        );
        assert_eq!(
            error("[{flack, [{allowed_origins, [\"evil\"]}]}]."),
            "sys.config:1:29: flack allowed_origins: evil: not an origin (http://host[:port] or https://host[:port]) or *"
        );
        let env = AppEnv {
            app: "flack".into(),
            key: "max_connections".into(),
            value: "9".into(),
        };
        let known = KnownEnv::from_app_env(&[env]).expect("valid");
        assert_eq!(known.max_connections, Some(9));
    }

    #[test]
    fn the_original_release_config() {
        let config = parse("[\n    {flack, []},\n    {gproc, [{gproc_dist, all}]}\n].\n");
        assert_eq!(config.known.gproc_dist, Some(GprocDist::All));
        assert_eq!(config.known.port, None);
        assert_eq!(config.params.len(), 1);
        assert_eq!(config.params[0].at, "sys.config:3");
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn the_readme_candidate_list() {
        let config = parse(
            "[{flack, [{port, 8081}]},\n {gproc, [{gproc_dist, [flack1@vm, flack2@vm, flack3@vm]}]},\n {kernel, [{net_ticktime, 20}]}].",
        );
        assert_eq!(config.known.port, Some(8081));
        assert_eq!(config.known.net_ticktime, Some(20));
        assert_eq!(
            config.known.gproc_dist,
            Some(GprocDist::Candidates {
                nodes: vec!["flack1@vm".into(), "flack2@vm".into(), "flack3@vm".into()],
                opts: vec![],
            })
        );
    }

    #[test]
    fn candidates_with_options_and_workers() {
        let config = parse(
            "[{gproc, [{gproc_dist, {['a@h', b@h], [{workers, [c@h]}, bcast]}},\n{gproc_dist_workers, [w@h]}]}].",
        );
        assert_eq!(
            config.known.gproc_dist,
            Some(GprocDist::Candidates {
                nodes: vec!["a@h".into(), "b@h".into()],
                opts: vec![
                    (
                        "workers".into(),
                        ErlTerm::List(vec![ErlTerm::Atom("c@h".into())])
                    ),
                    ("bcast".into(), ErlTerm::Atom("true".into())),
                ],
            })
        );
        assert_eq!(config.known.gproc_dist_workers, Some(vec!["w@h".into()]));
        assert_eq!(
            parse("[{gproc, [{gproc_dist, false}]}].").known.gproc_dist,
            Some(GprocDist::Off)
        );
    }

    #[test]
    fn unknown_applications_and_keys_are_kept_and_ignored() {
        let config = parse(
            "[{sasl, [{sasl_error_logger, false}]},\n {flack, [{colour, \"blue\"}, {port, 9000}]},\n {lager, [{handlers, [{lager_console_backend, [{level, info}]}]}]}].",
        );
        assert_eq!(config.known.port, Some(9000));
        assert_eq!(
            config.get("flack", "colour"),
            Some(&ErlTerm::String("blue".into()))
        );
        assert_eq!(config.params.len(), 4);
    }

    #[test]
    fn later_values_win() {
        let config = parse("[{flack, [{port, 1}]}, {flack, [{port, 2}]}].");
        assert_eq!(config.known.port, Some(2));
        assert_eq!(config.get("flack", "port"), Some(&ErlTerm::Int(2)));
    }

    #[test]
    fn a_candidate_without_host_is_a_warning() {
        let config = parse("[{gproc, [{gproc_dist,\n  [flack1, flack2@vm]}]}].");
        assert_eq!(
            config.warnings,
            [
                "sys.config:2:4: gproc gproc_dist: node name flack1 has no @host part; no node can have it"
            ]
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert_eq!(
            error("[{flack, [{port, \"8080\"}]}]."),
            "sys.config:1:18: flack port: not a port number (0 to 65535), found \"8080\""
        );
        assert_eq!(
            error("[{flack, [{port, 70000}]}]."),
            "sys.config:1:18: flack port: not a port number (0 to 65535), found 70000"
        );
        assert_eq!(
            error("[\n {gproc, [{gproc_dist, [flack1@vm, \"flack2@vm\"]}]}\n]."),
            "sys.config:2:36: gproc gproc_dist: not a node name (an atom such as flack1@host), found \"flack2@vm\""
        );
        assert_eq!(
            error("[{gproc, [{gproc_dist, some}]}]."),
            "sys.config:1:24: gproc gproc_dist: not a gproc_dist setting (all, [Node, ...] or {[Node, ...], Opts}), found some"
        );
        assert_eq!(
            error("[{kernel, [{net_ticktime, 0}]}]."),
            "sys.config:1:27: kernel net_ticktime: not a tick time (a positive number of seconds), found 0"
        );
        assert_eq!(
            error("{flack, []}."),
            "sys.config:1:1: a config file is a list of {Application, [{Key, Value}]}, found a tuple"
        );
        assert_eq!(
            error("[{flack, port}]."),
            "sys.config:1:10: the parameters of flack must be a list of {Key, Value}, found an atom"
        );
        assert_eq!(
            error("[{flack, [port]}]."),
            "sys.config:1:11: expected {Key, Value} with an atom Key in the parameters of flack, found port"
        );
        assert_eq!(
            error("[{\"flack\", []}]."),
            "sys.config:1:3: expected an application name (an atom), found \"flack\""
        );
        assert_eq!(
            error("[flack]."),
            "sys.config:1:2: expected {Application, [{Key, Value}]} or the name of a config file to include, found flack"
        );
        assert_eq!(
            error("[]. []."),
            "sys.config:1:5: a config file holds one list ended by '.'; this is a second term"
        );
        assert!(error("% nothing\n").starts_with("sys.config: no term"));
        assert_eq!(
            error("[{flack, []}\n {gproc, []}]."),
            "sys.config:2:2: expected ',', '|' or ']', found '{'"
        );
    }

    #[test]
    fn includes_are_read_where_they_stand() {
        let dir = std::env::temp_dir().join(format!("flack-sys-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("extra.config"), "[{flack, [{port, 9001}]}].\n").expect("write");
        std::fs::write(dir.join("bad.config"), "[{flack, [{port, x}]}].\n").expect("write");
        let main = dir.join("sys.config");
        std::fs::write(&main, "[{flack, [{port, 9000}]},\n \"extra\"].\n").expect("write");
        let config = SysConfig::read(&main).expect("reads");
        assert_eq!(config.known.port, Some(9001));
        assert_eq!(config.files, [main.clone(), dir.join("extra.config")]);

        std::fs::write(&main, "[\"extra.config\", {flack, [{port, 9000}]}].\n").expect("write");
        assert_eq!(
            SysConfig::read(&main).expect("reads").known.port,
            Some(9000)
        );

        std::fs::write(&main, "[\n  \"bad\"].\n").expect("write");
        let error = SysConfig::read(&main).expect_err("bad include").0;
        assert_eq!(
            error,
            format!(
                "{}:2:3: included from here: {}:1:18: flack port: not a port number (0 to 65535), found x",
                main.display(),
                dir.join("bad.config").display()
            )
        );
        std::fs::write(&main, "[\"missing\"].\n").expect("write");
        let error = SysConfig::read(&main).expect_err("missing include").0;
        assert!(error.contains("missing.config: No such file"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn app_env_arguments_are_typed_the_same_way() {
        let env = |app: &str, key: &str, value: &str| AppEnv {
            app: app.into(),
            key: key.into(),
            value: value.into(),
        };
        let known = KnownEnv::from_app_env(&[
            env("flack", "port", "8081"),
            env("flack", "other", "not a term {"),
            env("gproc", "gproc_dist", "[a@h,b@h]"),
            env("kernel", "net_ticktime", "10"),
        ])
        .expect("valid");
        assert_eq!(known.port, Some(8081));
        assert_eq!(known.net_ticktime, Some(10));
        assert_eq!(
            known.gproc_dist,
            Some(GprocDist::Candidates {
                nodes: vec!["a@h".into(), "b@h".into()],
                opts: vec![]
            })
        );
        assert_eq!(
            KnownEnv::from_app_env(&[env("flack", "port", "eighty")]),
            Err("-flack port eighty: not a port number (0 to 65535), found eighty".into())
        );
        assert_eq!(
            KnownEnv::from_app_env(&[env("flack", "port", "80 80")]),
            Err("-flack port 80 80: not an Erlang term: unexpected '8' after the term".into())
        );
    }
}
