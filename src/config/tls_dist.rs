//! `-proto_dist` and the TLS distribution's options: `-ssl_dist_optfile
//! FILE` (`[{server, [Opt]}, {client, [Opt]}].`, the file OTP's
//! `ssl_dist_sup` reads) and `-ssl_dist_opt server_certfile F client_...`
//! (word pairs on the command line or in vm.args).
//!
//! This module owns reading them into [`TlsDistOptions`] as OTP 25 would:
//! a side the optfile names is taken from it whole; a side it does not name
//! comes from `-ssl_dist_opt`. The options this node implements are read
//! ([`SUPPORTED`]); a few that change nothing on a rustls connection are
//! accepted with a warning ([`IGNORED`]); every other option stops the node
//! at start, naming it, since ignoring it could weaken what the operator
//! asked for. Loading the files the options name is
//! [`crate::node::dist::tls`]'s.

use std::path::PathBuf;

use super::erl_args::ErlArgs;
use super::erl_term::{self, ErlTerm, Located, Spans};
use crate::node::dist::tls::{
    ServerNameIndication, TlsDistOptions, TlsSideOptions, TlsVersion, Verify,
};

/// The options read, in either form.
pub const SUPPORTED: &[&str] = &[
    "certfile",
    "keyfile",
    "cacertfile",
    "verify",
    "fail_if_no_peer_cert",
    "server_name_indication",
    "versions",
    "depth",
];

/// Options accepted with a warning: they tune things a rustls connection
/// does not have, or does safely by itself.
pub const IGNORED: &[(&str, &str)] = &[
    (
        "secure_renegotiate",
        "rustls never renegotiates, which is what secure renegotiation protects",
    ),
    ("client_renegotiation", "rustls never renegotiates"),
    ("reuse_sessions", "session resumption is rustls's own (on)"),
    (
        "hibernate_after",
        "an Erlang process setting; there is no such process here",
    ),
    (
        "dhfile",
        "finite-field Diffie-Hellman is not offered; key exchange is ECDHE",
    ),
    (
        "honor_cipher_order",
        "rustls's server picks the suite by its own order",
    ),
    ("log_level", "TLS errors are logged by the node's own log"),
    ("log_alert", "TLS alerts are logged by the node's own log"),
];

/// How the distribution is carried, from `-proto_dist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistProto {
    /// `inet_tcp` (the default).
    Tcp,
    /// `inet_tls`, with its options.
    Tls(Box<TlsDistOptions>),
}

/// Reads `-proto_dist`, `-ssl_dist_optfile` and `-ssl_dist_opt` of the
/// merged arguments. Another `-proto_dist` than `inet_tcp` or `inet_tls`
/// is an error, not something to ignore: the node would not be reachable
/// the way its operator expects. Warnings go to `warnings`.
pub fn resolve(args: &ErlArgs, warnings: &mut Vec<String>) -> Result<DistProto, String> {
    match args.proto_dist.as_deref() {
        None | Some("inet_tcp") => {
            if args.ssl_dist_optfile.is_some() || !args.ssl_dist_opt.is_empty() {
                warnings.push(
                    "-ssl_dist_optfile / -ssl_dist_opt ignored: the distribution is plain TCP without -proto_dist inet_tls"
                        .to_owned(),
                );
            }
            Ok(DistProto::Tcp)
        }
        Some("inet_tls") => {
            let from_file = match &args.ssl_dist_optfile {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("-ssl_dist_optfile {path}: {e}"))?;
                    parse_optfile(path, &text, warnings)?
                }
                None => OptFile::default(),
            };
            let from_args = parse_opt_words(&args.ssl_dist_opt, warnings)?;
            let server = from_file.server.unwrap_or(from_args.server);
            let client = from_file.client.unwrap_or(from_args.client);
            Ok(DistProto::Tls(Box::new(TlsDistOptions { server, client })))
        }
        Some(other) => Err(format!(
            "-proto_dist {other}: this node implements inet_tcp (the default) and inet_tls only"
        )),
    }
}

/// What an optfile says: each side, when it names it.
#[derive(Debug, Default, PartialEq)]
pub struct OptFile {
    /// `{server, [...]}`.
    pub server: Option<TlsSideOptions>,
    /// `{client, [...]}`.
    pub client: Option<TlsSideOptions>,
}

/// Reads optfile text; `origin` names it in messages (`file:line:column`).
pub fn parse_optfile(
    origin: &str,
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<OptFile, String> {
    let at = |spans: &Spans, message: String| {
        format!(
            "{origin}:{}:{}: {message}",
            spans.pos.line, spans.pos.column
        )
    };
    let mut terms = erl_term::parse_terms(origin, text).map_err(|e| e.to_string())?;
    if terms.len() > 1 {
        return Err(at(
            &terms[1].spans,
            "the file holds one list ended by '.'; this is a second term".to_owned(),
        ));
    }
    let Some(Located { term, spans }) = terms.pop() else {
        return Err(format!(
            "{origin}: empty; expected [{{server, [Opt]}}, {{client, [Opt]}}]."
        ));
    };
    let Some(entries) = term.as_list() else {
        return Err(at(
            &spans,
            format!(
                "expected [{{server, [Opt]}}, {{client, [Opt]}}], found {}",
                term.kind()
            ),
        ));
    };
    let mut file = OptFile::default();
    for (index, entry) in entries.iter().enumerate() {
        let entry_spans = spans.child(index);
        let (side, options, options_spans) = match entry.as_tuple() {
            Some([side, options]) => (side.as_atom(), options, entry_spans.child(1)),
            _ => (None, entry, entry_spans),
        };
        let Some(list) = options.as_list() else {
            return Err(at(
                entry_spans,
                format!("expected {{server, [Opt]}} or {{client, [Opt]}}, found {entry}"),
            ));
        };
        let side = match side {
            Some("server") => Side::Server,
            Some("client") => Side::Client,
            _ => {
                return Err(at(
                    entry_spans,
                    format!("expected {{server, [Opt]}} or {{client, [Opt]}}, found {entry}"),
                ));
            }
        };
        let mut options = TlsSideOptions::default();
        for (index, option) in list.iter().enumerate() {
            let option_spans = options_spans.child(index);
            let Some([key, value]) = option.as_tuple() else {
                return Err(at(
                    option_spans,
                    format!("expected an option {{Key, Value}}, found {option}"),
                ));
            };
            let Some(key) = key.as_atom() else {
                return Err(at(
                    option_spans,
                    format!("expected an option {{Key, Value}}, found {option}"),
                ));
            };
            let value_spans = option_spans.child(1);
            match apply(side, &mut options, key, value) {
                Ok(Applied::Set) => {}
                Ok(Applied::Ignored(why)) => {
                    warnings.push(at(
                        option_spans,
                        format!("{} option {key} ignored: {why}", side.name()),
                    ));
                }
                Err(message) => {
                    return Err(at(value_spans, format!("{} {key}: {message}", side.name())));
                }
            }
        }
        match side {
            Side::Server => file.server = Some(options),
            Side::Client => file.client = Some(options),
        }
    }
    Ok(file)
}

/// Both sides from `-ssl_dist_opt` word pairs (`server_certfile F`,
/// `client_verify verify_peer`); a side without any pair has the defaults.
#[derive(Debug, Default, PartialEq)]
pub struct OptWords {
    /// The `server_` pairs.
    pub server: TlsSideOptions,
    /// The `client_` pairs.
    pub client: TlsSideOptions,
}

/// Reads `-ssl_dist_opt` pairs as `inet_tls_dist` reads them: the value is
/// a word, made a file name, an atom or an integer as the option needs.
pub fn parse_opt_words(
    pairs: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Result<OptWords, String> {
    let mut words = OptWords::default();
    for (key, value) in pairs {
        let (side, option, options) = if let Some(option) = key.strip_prefix("server_") {
            (Side::Server, option, &mut words.server)
        } else if let Some(option) = key.strip_prefix("client_") {
            (Side::Client, option, &mut words.client)
        } else {
            return Err(format!(
                "-ssl_dist_opt {key}: an option starts with server_ or client_"
            ));
        };
        if matches!(option, "server_name_indication" | "versions") {
            return Err(format!(
                "-ssl_dist_opt {key}: OTP does not take {option} here; use -ssl_dist_optfile"
            ));
        }
        let term = match option {
            "certfile" | "keyfile" | "cacertfile" | "dhfile" => ErlTerm::String(value.clone()),
            _ => erl_term::parse_value("-ssl_dist_opt", value)
                .map(|located| located.term)
                .unwrap_or_else(|_| ErlTerm::String(value.clone())),
        };
        match apply(side, options, option, &term) {
            Ok(Applied::Set) => {}
            Ok(Applied::Ignored(why)) => {
                warnings.push(format!("-ssl_dist_opt {key} ignored: {why}"))
            }
            Err(message) => return Err(format!("-ssl_dist_opt {key} {value}: {message}")),
        }
    }
    Ok(words)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

enum Applied {
    Set,
    Ignored(&'static str),
}

/// A file name: a string or a binary.
fn file_name(value: &ErlTerm) -> Result<PathBuf, String> {
    match value {
        ErlTerm::String(text) if !text.is_empty() => Ok(PathBuf::from(text)),
        ErlTerm::Binary(bytes) if !bytes.is_empty() => std::str::from_utf8(bytes)
            .map(PathBuf::from)
            .map_err(|_| "not a file name (UTF-8)".to_owned()),
        other => Err(format!("not a file name (a string), found {other}")),
    }
}

fn boolean(value: &ErlTerm) -> Result<bool, String> {
    match value.as_atom() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(format!("expected true or false, found {value}")),
    }
}

fn apply(
    side: Side,
    options: &mut TlsSideOptions,
    key: &str,
    value: &ErlTerm,
) -> Result<Applied, String> {
    match key {
        "certfile" => options.certfile = Some(file_name(value)?),
        "keyfile" => options.keyfile = Some(file_name(value)?),
        "cacertfile" => options.cacertfile = Some(file_name(value)?),
        "verify" => {
            options.verify = match value.as_atom() {
                Some("verify_peer") => Verify::Peer,
                Some("verify_none") => Verify::None,
                _ => {
                    return Err(format!(
                        "expected verify_peer or verify_none, found {value}"
                    ));
                }
            }
        }
        "fail_if_no_peer_cert" if side == Side::Server => {
            options.fail_if_no_peer_cert = boolean(value)?
        }
        "server_name_indication" if side == Side::Client => {
            options.server_name_indication = match value {
                ErlTerm::Atom(atom) if atom == "disable" => ServerNameIndication::Disable,
                ErlTerm::String(host) if !host.is_empty() => {
                    ServerNameIndication::Name(host.trim_end_matches('.').to_owned())
                }
                other => {
                    return Err(format!(
                        "expected a host name (a string) or disable, found {other}"
                    ));
                }
            }
        }
        "fail_if_no_peer_cert" | "server_name_indication" => {
            return Err(format!(
                "a {} option; not for the {} side",
                if side == Side::Server {
                    "client"
                } else {
                    "server"
                },
                side.name()
            ));
        }
        "versions" => {
            let Some(list) = value.as_list().filter(|list| !list.is_empty()) else {
                return Err(format!(
                    "expected a list such as ['tlsv1.2'], found {value}"
                ));
            };
            let mut versions = Vec::new();
            for version in list {
                let version = match version.as_atom() {
                    Some("tlsv1.2") => TlsVersion::Tls12,
                    Some("tlsv1.3") => TlsVersion::Tls13,
                    _ => {
                        return Err(format!(
                            "{version} is not supported: 'tlsv1.2' and 'tlsv1.3' are"
                        ));
                    }
                };
                if !versions.contains(&version) {
                    versions.push(version);
                }
            }
            options.versions = versions;
        }
        "depth" => {
            options.depth = value
                .as_int()
                .and_then(|depth| usize::try_from(depth).ok())
                .ok_or_else(|| format!("expected a non-negative integer, found {value}"))?
        }
        _ => {
            if let Some((_, why)) = IGNORED.iter().find(|(name, _)| *name == key) {
                return Ok(Applied::Ignored(why));
            }
            return Err(format!(
                "not supported by this node (it reads {}; it ignores {}); remove it or see the README's \"Distribution over TLS\"",
                SUPPORTED.join(", "),
                IGNORED
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(Applied::Set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn args(text: &str) -> ErlArgs {
        ErlArgs::extract(&words(text)).expect("valid").0
    }

    #[test]
    fn the_otp_documentation_example() {
        let mut warnings = Vec::new();
        let file = parse_optfile(
            "dist.conf",
            "[{server,\n  [{certfile, \"/home/me/ssl/erlserver.pem\"},\n   {verify, verify_peer},\n   {depth, 1}]},\n {client,\n  [{certfile, \"/home/me/ssl/erlclient.pem\"},\n   {verify, verify_peer},\n   {depth, 1}]}].\n",
            &mut warnings,
        )
        .expect("valid");
        let server = file.server.expect("server");
        assert_eq!(
            server.certfile,
            Some(PathBuf::from("/home/me/ssl/erlserver.pem"))
        );
        assert_eq!(server.verify, Verify::Peer);
        assert_eq!(server.depth, 1);
        assert_eq!(server.versions, [TlsVersion::Tls12], "OTP's dist default");
        let client = file.client.expect("client");
        assert_eq!(client.verify, Verify::Peer);
        assert_eq!(
            client.server_name_indication,
            ServerNameIndication::NodeHost
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn every_supported_option() {
        let mut warnings = Vec::new();
        let file = parse_optfile(
            "f",
            "[{server, [{certfile, <<\"s.pem\">>}, {keyfile, \"s.key\"}, {cacertfile, \"ca.pem\"}, {verify, verify_peer}, {fail_if_no_peer_cert, true}, {versions, ['tlsv1.3', 'tlsv1.2']}, {secure_renegotiate, true}]},\n {client, [{server_name_indication, disable}, {verify, verify_none}]}].",
            &mut warnings,
        )
        .expect("valid");
        let server = file.server.expect("server");
        assert_eq!(server.keyfile, Some(PathBuf::from("s.key")));
        assert_eq!(server.cacertfile, Some(PathBuf::from("ca.pem")));
        assert!(server.fail_if_no_peer_cert);
        assert_eq!(server.versions, [TlsVersion::Tls13, TlsVersion::Tls12]);
        assert_eq!(
            file.client.expect("client").server_name_indication,
            ServerNameIndication::Disable
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("f:1:170: server option secure_renegotiate ignored: "),
            "{warnings:?}"
        );
        let named = parse_optfile(
            "f",
            "[{client, [{server_name_indication, \"flack.example.com.\"}]}].",
            &mut warnings,
        )
        .expect("valid");
        assert_eq!(
            named.client.expect("client").server_name_indication,
            ServerNameIndication::Name("flack.example.com".into())
        );
        assert_eq!(named.server, None);
    }

    #[test]
    fn refusals_name_the_place_and_the_option() {
        let error = |text: &str| parse_optfile("f", text, &mut Vec::new()).expect_err(text);
        assert_eq!(
            error("[{server, [{verify, verify_maybe}]}]."),
            "f:1:21: server verify: expected verify_peer or verify_none, found verify_maybe"
        );
        let crl = error("[{client, [{crl_check, true}]}].");
        assert!(
            crl.starts_with(
                "f:1:24: client crl_check: not supported by this node (it reads certfile"
            ),
            "{crl}"
        );
        assert!(
            error("[{server, [{server_name_indication, disable}]}].").contains("a client option")
        );
        assert!(error("[{client, [{fail_if_no_peer_cert, true}]}].").contains("a server option"));
        assert!(
            error("[{client, [{versions, ['tlsv1.1']}]}].").contains("'tlsv1.1' is not supported")
        );
        assert!(error("[{both, []}].").contains("expected {server, [Opt]}"));
        assert!(error("{server, []}.").contains("found a tuple"));
        // A fun (verify_fun) is not a literal term.
        assert!(
            error("[{client, [{verify_fun, fun inet_tls_dist:verify_client/3}]}].")
                .starts_with("f:1:")
        );
    }

    #[test]
    fn opt_words_as_inet_tls_dist_reads_them() {
        let mut warnings = Vec::new();
        let words = parse_opt_words(
            &args("-ssl_dist_opt server_certfile /s.pem server_secure_renegotiate true client_verify verify_peer client_cacertfile /ca.pem client_depth 2").ssl_dist_opt,
            &mut warnings,
        )
        .expect("valid");
        assert_eq!(words.server.certfile, Some(PathBuf::from("/s.pem")));
        assert_eq!(words.client.verify, Verify::Peer);
        assert_eq!(words.client.cacertfile, Some(PathBuf::from("/ca.pem")));
        assert_eq!(words.client.depth, 2);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let error = |text: &str| {
            parse_opt_words(&args(text).ssl_dist_opt, &mut Vec::new()).expect_err(text)
        };
        assert!(error("-ssl_dist_opt certfile /s.pem").contains("server_ or client_"));
        assert!(error("-ssl_dist_opt client_password secret").contains("not supported"));
        assert!(
            error("-ssl_dist_opt client_server_name_indication disable")
                .contains("use -ssl_dist_optfile")
        );
    }

    #[test]
    fn proto_dist_selects_or_stops() {
        let mut warnings = Vec::new();
        assert_eq!(resolve(&args(""), &mut warnings), Ok(DistProto::Tcp));
        assert_eq!(
            resolve(&args("-proto_dist inet_tcp"), &mut warnings),
            Ok(DistProto::Tcp)
        );
        assert!(warnings.is_empty());
        let error = resolve(&args("-proto_dist inet6_tcp"), &mut warnings).expect_err("refused");
        assert_eq!(
            error,
            "-proto_dist inet6_tcp: this node implements inet_tcp (the default) and inet_tls only"
        );
        assert!(resolve(&args("-proto_dist my_dist"), &mut warnings).is_err());
        assert_eq!(
            resolve(&args("-ssl_dist_opt server_certfile a"), &mut warnings),
            Ok(DistProto::Tcp)
        );
        assert_eq!(
            warnings.len(),
            1,
            "an optfile without inet_tls is said to do nothing"
        );

        // The optfile's side wins whole; the other comes from the words.
        let dir = std::env::temp_dir().join(format!("flack-tls-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("dist.conf");
        std::fs::write(&file, "[{server, [{certfile, \"from_file.pem\"}]}].").expect("write");
        let proto = resolve(
            &args(&format!(
                "-proto_dist inet_tls -ssl_dist_optfile {} -ssl_dist_opt server_certfile from_words.pem client_certfile c.pem",
                file.display()
            )),
            &mut warnings,
        )
        .expect("valid");
        let DistProto::Tls(options) = proto else {
            panic!("TLS")
        };
        assert_eq!(
            options.server.certfile,
            Some(PathBuf::from("from_file.pem"))
        );
        assert_eq!(options.client.certfile, Some(PathBuf::from("c.pem")));
        let missing = resolve(
            &args("-proto_dist inet_tls -ssl_dist_optfile /no/such/dist.conf"),
            &mut warnings,
        )
        .expect_err("missing");
        assert!(
            missing.starts_with("-ssl_dist_optfile /no/such/dist.conf: "),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
