//! Erlang-style arguments, as `erl` reads them from its command line and from
//! a release's `vm.args`: `-sname flack`, `-setcookie c`, `-kernel
//! net_ticktime 20`, `-flack port 8081`, `+K true`.
//!
//! Operators start the original release with `bin/flack start -flack port
//! 8081`, which relx passes to `erl` as application environment. We accept the
//! same words in the same places, so the habits carry over. Flags that only
//! mean something to the BEAM emulator (`+K`, `+A30`, `-smp`) are kept as
//! [`ErlArgs::ignored`] for the caller to warn about.

/// An application-environment override: `-App Key Value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEnv {
    /// The application, e.g. `flack` or `kernel`.
    pub app: String,
    /// The key, e.g. `port`.
    pub key: String,
    /// The value as written (an Erlang term in text form).
    pub value: String,
}

/// What a list of Erlang-style arguments says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErlArgs {
    /// `-sname NAME`.
    pub sname: Option<String>,
    /// `-name NAME[@HOST]`.
    pub name: Option<String>,
    /// `-setcookie COOKIE`.
    pub cookie: Option<String>,
    /// `-hidden`.
    pub hidden: bool,
    /// `-config FILE` (a sys.config).
    pub config: Option<String>,
    /// `-args_file FILE`: more arguments to read from a file (a vm.args).
    pub args_files: Vec<String>,
    /// `-App Key Value` overrides, in order.
    pub app_env: Vec<AppEnv>,
    /// `-proto_dist MODULE`: `inet_tcp` (the default) or `inet_tls`.
    pub proto_dist: Option<String>,
    /// `-ssl_dist_optfile FILE`: the TLS distribution's options.
    pub ssl_dist_optfile: Option<String>,
    /// `-ssl_dist_opt server_certfile F client_verify verify_peer ...`:
    /// the TLS options as word pairs, in order.
    pub ssl_dist_opt: Vec<(String, String)>,
    /// Arguments understood but without effect here (emulator flags).
    pub ignored: Vec<String>,
}

/// A malformed Erlang-style argument list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ErlArgsError(pub String);

/// Emulator flags that take no value.
const BARE_FLAGS: &[&str] = &["-noshell", "-noinput", "-detached", "-nouser", "-heart"];

/// Emulator and init flags that take a fixed number of values. Like
/// [`BARE_FLAGS`] they are ignored, but their values must not be mistaken
/// for other arguments (`-env VAR VALUE` is not application `env`).
const VALUE_FLAGS: &[(&str, usize)] = &[
    ("-env", 2),
    ("-boot", 1),
    ("-boot_var", 2),
    ("-mode", 1),
    ("-connect_all", 1),
    ("-start_epmd", 1),
    ("-epmd_module", 1),
    ("-shutdown_time", 1),
    ("-eval", 1),
    ("-code_path_choice", 1),
    ("-emu_type", 1),
    ("-remsh", 1),
    ("-rsh", 1),
];

/// Flags followed by any number of values, up to the next flag.
const LIST_FLAGS: &[&str] = &["-pa", "-pz", "-s", "-run"];

impl ErlArgs {
    /// Parses `args`, consuming every Erlang-style argument; what is left
    /// (GNU-style `--flags` and plain words) is returned for the caller.
    pub fn extract(args: &[String]) -> Result<(Self, Vec<String>), ErlArgsError> {
        let mut parsed = Self::default();
        let mut rest = Vec::new();
        let mut index = 0;
        let value = |index: usize, flag: &str| -> Result<String, ErlArgsError> {
            args.get(index + 1)
                .cloned()
                .ok_or_else(|| ErlArgsError(format!("{flag} needs a value")))
        };
        while index < args.len() {
            let arg = &args[index];
            match arg.as_str() {
                "-sname" => {
                    parsed.sname = Some(value(index, arg)?);
                    index += 2;
                }
                "-name" => {
                    parsed.name = Some(value(index, arg)?);
                    index += 2;
                }
                "-setcookie" => {
                    parsed.cookie = Some(value(index, arg)?);
                    index += 2;
                }
                "-config" => {
                    parsed.config = Some(value(index, arg)?);
                    index += 2;
                }
                "-args_file" => {
                    parsed.args_files.push(value(index, arg)?);
                    index += 2;
                }
                "-hidden" => {
                    parsed.hidden = true;
                    index += 1;
                }
                "-proto_dist" => {
                    parsed.proto_dist = Some(value(index, arg)?);
                    index += 2;
                }
                "-ssl_dist_optfile" => {
                    parsed.ssl_dist_optfile = Some(value(index, arg)?);
                    index += 2;
                }
                "-ssl_dist_opt" => {
                    // Pairs up to the next flag, as init collects them.
                    let words: Vec<&String> = args[index + 1..]
                        .iter()
                        .take_while(|word| !word.starts_with(['-', '+']))
                        .collect();
                    if words.is_empty() || !words.len().is_multiple_of(2) {
                        return Err(ErlArgsError(format!(
                            "-ssl_dist_opt needs pairs of words (server_certfile FILE ...), found {} word(s)",
                            words.len()
                        )));
                    }
                    for pair in words.chunks(2) {
                        parsed.ssl_dist_opt.push((pair[0].clone(), pair[1].clone()));
                    }
                    index += 1 + words.len();
                }
                "-smp" => {
                    // `-smp`, or `-smp enable|auto|disable`.
                    match args.get(index + 1).map(String::as_str) {
                        Some(mode @ ("enable" | "auto" | "disable")) => {
                            parsed.ignored.push(format!("-smp {mode}"));
                            index += 2;
                        }
                        _ => {
                            parsed.ignored.push("-smp".to_owned());
                            index += 1;
                        }
                    }
                }
                flag if BARE_FLAGS.contains(&flag) => {
                    parsed.ignored.push(flag.to_owned());
                    index += 1;
                }
                flag if VALUE_FLAGS.iter().any(|(name, _)| *name == flag) => {
                    let count = VALUE_FLAGS
                        .iter()
                        .find(|(name, _)| *name == flag)
                        .map_or(1, |(_, count)| *count);
                    let values = args
                        .get(index + 1..index + 1 + count)
                        .ok_or_else(|| ErlArgsError(format!("{flag} needs {count} value(s)")))?;
                    parsed.ignored.push(format!("{flag} {}", values.join(" ")));
                    index += 1 + count;
                }
                flag if LIST_FLAGS.contains(&flag) => {
                    let values: Vec<&str> = args[index + 1..]
                        .iter()
                        .take_while(|word| !word.starts_with(['-', '+']))
                        .map(String::as_str)
                        .collect();
                    index += 1 + values.len();
                    let mut text = flag.to_owned();
                    for value in values {
                        text.push(' ');
                        text.push_str(value);
                    }
                    parsed.ignored.push(text);
                }
                flag if flag.starts_with('+') => {
                    // `+K true` or `+A30`: a value follows only when the flag
                    // is a bare letter and the next word is not a flag.
                    let takes_value = flag.len() == 2
                        && args
                            .get(index + 1)
                            .is_some_and(|next| !next.starts_with(['-', '+']));
                    if takes_value {
                        parsed.ignored.push(format!("{flag} {}", args[index + 1]));
                        index += 2;
                    } else {
                        parsed.ignored.push(flag.to_owned());
                        index += 1;
                    }
                }
                flag if is_app_flag(flag) => {
                    let key = value(index, flag)?;
                    let val = args
                        .get(index + 2)
                        .cloned()
                        .ok_or_else(|| ErlArgsError(format!("{flag} {key} needs a value")))?;
                    parsed.app_env.push(AppEnv {
                        app: flag[1..].to_owned(),
                        key,
                        value: val,
                    });
                    index += 3;
                    // `-kernel inet_dist_listen_min 9100 inet_dist_listen_max
                    // 9105`: as for erl, more pairs may follow on one flag.
                    while let Some([key, val]) = args.get(index..index + 2)
                        && !key.starts_with(['-', '+'])
                        && !val.starts_with(['-', '+'])
                        && is_param_name(key)
                    {
                        parsed.app_env.push(AppEnv {
                            app: flag[1..].to_owned(),
                            key: key.clone(),
                            value: val.clone(),
                        });
                        index += 2;
                    }
                }
                _ => {
                    rest.push(arg.clone());
                    index += 1;
                }
            }
        }
        Ok((parsed, rest))
    }

    /// The last `-App Key Value` for this application and key.
    pub fn app_value(&self, app: &str, key: &str) -> Option<&str> {
        self.app_env
            .iter()
            .rev()
            .find(|env| env.app == app && env.key == key)
            .map(|env| env.value.as_str())
    }

    /// Adds `other` on top of `self`: its values win where both say something.
    pub fn overlay(&mut self, other: ErlArgs) {
        if other.sname.is_some() {
            self.sname = other.sname;
        }
        if other.name.is_some() {
            self.name = other.name;
        }
        if other.cookie.is_some() {
            self.cookie = other.cookie;
        }
        if other.config.is_some() {
            self.config = other.config;
        }
        if other.proto_dist.is_some() {
            self.proto_dist = other.proto_dist;
        }
        if other.ssl_dist_optfile.is_some() {
            self.ssl_dist_optfile = other.ssl_dist_optfile;
        }
        // erl appends every -ssl_dist_opt; a later pair for the same
        // option wins when they are read.
        self.ssl_dist_opt.extend(other.ssl_dist_opt);
        self.args_files.extend(other.args_files);
        self.hidden |= other.hidden;
        self.app_env.extend(other.app_env);
        self.ignored.extend(other.ignored);
    }
}

/// A parameter name: an unquoted atom (`inet_dist_listen_max`).
fn is_param_name(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_lowercase())
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `-flack`, `-kernel`, `-gproc`: a single dash and an Erlang application
/// name (lowercase letter first). GNU options (`--port`) and short flags of
/// one letter (`-h`) are not.
fn is_app_flag(flag: &str) -> bool {
    let Some(name) = flag.strip_prefix('-') else {
        return false;
    };
    name.len() > 1
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn release_style_arguments() {
        let (args, rest) =
            ErlArgs::extract(&words("foreground -flack port 8081 --bind 127.0.0.1 -sname flack2 -setcookie c +K true +A30 -kernel net_ticktime 20"))
                .expect("valid");
        assert_eq!(rest, words("foreground --bind 127.0.0.1"));
        assert_eq!(args.app_value("flack", "port"), Some("8081"));
        assert_eq!(args.app_value("kernel", "net_ticktime"), Some("20"));
        assert_eq!(args.sname.as_deref(), Some("flack2"));
        assert_eq!(args.cookie.as_deref(), Some("c"));
        assert_eq!(args.ignored, ["+K true", "+A30"]);
    }

    #[test]
    fn init_flags_keep_their_values() {
        let (args, rest) = ErlArgs::extract(&words(
            "-env ERL_MAX_PORTS 4096 -mode embedded -smp enable -boot start_sasl -pa a b -heart -args_file x.args -connect_all false foreground",
        ))
        .expect("valid");
        assert_eq!(rest, ["foreground"]);
        assert_eq!(
            args.ignored,
            [
                "-env ERL_MAX_PORTS 4096",
                "-mode embedded",
                "-smp enable",
                "-boot start_sasl",
                "-pa a b",
                "-heart",
                "-connect_all false"
            ]
        );
        assert_eq!(args.args_files, ["x.args"]);
        assert!(args.app_env.is_empty());
        assert!(ErlArgs::extract(&words("-env ONLY_NAME")).is_err());
    }

    #[test]
    fn several_parameters_on_one_application_flag() {
        let (args, rest) = ErlArgs::extract(&words(
            "foreground -kernel inet_dist_listen_min 9100 inet_dist_listen_max 9105 -sname a",
        ))
        .expect("valid");
        assert_eq!(rest, ["foreground"]);
        assert_eq!(
            args.app_value("kernel", "inet_dist_listen_min"),
            Some("9100")
        );
        assert_eq!(
            args.app_value("kernel", "inet_dist_listen_max"),
            Some("9105")
        );
        assert_eq!(args.sname.as_deref(), Some("a"));
        // A lone word after a parameter is not a pair.
        let (args, rest) = ErlArgs::extract(&words("-flack port 1 foreground")).expect("valid");
        assert_eq!(rest, ["foreground"]);
        assert_eq!(args.app_env.len(), 1);
    }

    #[test]
    fn distribution_protocol_words() {
        let (args, rest) = ErlArgs::extract(&words(
            "-proto_dist inet_tls -ssl_dist_optfile /etc/flack/dist.conf foreground -ssl_dist_opt server_certfile a.pem client_verify verify_peer -sname n",
        ))
        .expect("valid");
        assert_eq!(rest, ["foreground"]);
        assert_eq!(args.proto_dist.as_deref(), Some("inet_tls"));
        assert_eq!(
            args.ssl_dist_optfile.as_deref(),
            Some("/etc/flack/dist.conf")
        );
        assert_eq!(
            args.ssl_dist_opt,
            [
                ("server_certfile".to_owned(), "a.pem".to_owned()),
                ("client_verify".to_owned(), "verify_peer".to_owned())
            ]
        );
        assert_eq!(args.sname.as_deref(), Some("n"));
        assert!(args.app_env.is_empty(), "not an application's parameters");
        assert!(ErlArgs::extract(&words("-ssl_dist_opt server_certfile")).is_err());
        assert!(ErlArgs::extract(&words("-proto_dist")).is_err());
    }

    #[test]
    fn missing_values_are_errors() {
        assert!(ErlArgs::extract(&words("-flack port")).is_err());
        assert!(ErlArgs::extract(&words("-sname")).is_err());
    }

    #[test]
    fn later_values_win() {
        let (mut base, _) = ErlArgs::extract(&words("-sname a -flack port 1")).expect("valid");
        let (top, _) = ErlArgs::extract(&words("-flack port 2")).expect("valid");
        base.overlay(top);
        assert_eq!(base.sname.as_deref(), Some("a"));
        assert_eq!(base.app_value("flack", "port"), Some("2"));
    }
}
