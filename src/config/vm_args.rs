//! `vm.args`: the arguments a release gives its node, one or more on a line.
//!
//! This module owns reading such a file as `erl -args_file` does: words
//! separated by whitespace, `#` starting a comment to the end of the line,
//! `\` taking the next character literally, and `-args_file FILE` reading
//! another file in its place (a relative name is relative to the current
//! directory, as for `erl`; `bin/flack` runs from the release root). The
//! words go through [`ErlArgs::extract`], a line at a time, so every error
//! names `file:line`; a flag's values must be on its line.
//!
//! What the node acts on is kept ([`VmArgs::args`], and the typed
//! `-App Key Value` values in [`VmArgs::known`]). The rest is accepted and
//! ignored; for the flags that change what an Erlang node does but mean
//! nothing to this one (`+K`, `+A`, `+P`, `-smp`, `-heart`, `-env`, ...)
//! a warning says so, for the caller to log.

use std::path::{Path, PathBuf};

use super::erl_args::ErlArgs;
use super::sys_config::KnownEnv;

/// A vm.args that cannot be used; the message names `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VmArgsError(pub String);

/// A vm.args that has been read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmArgs {
    /// Everything the lines say, later lines over earlier ones.
    pub args: ErlArgs,
    /// The `-App Key Value` lines flack acts on, typed.
    pub known: KnownEnv,
    /// The files read: the vm.args, then those of `-args_file`.
    pub files: Vec<PathBuf>,
    /// Lines accepted that mean nothing to this node, each starting
    /// `file:line:`; for the caller to log.
    pub warnings: Vec<String>,
}

/// How deep `-args_file` may nest (a file that includes itself stops here).
const MAX_INCLUDE_DEPTH: usize = 8;

impl VmArgs {
    /// Reads the vm.args at `path`, and the files it includes.
    pub fn read(path: &Path) -> Result<Self, VmArgsError> {
        let mut args = Self::default();
        args.load_file(path, 0)?;
        Ok(args)
    }

    /// Reads vm.args text; `origin` names it in messages.
    pub fn parse(origin: &str, text: &str) -> Result<Self, VmArgsError> {
        let mut args = Self::default();
        args.load_text(origin, text, 0)?;
        Ok(args)
    }

    fn load_file(&mut self, path: &Path, depth: usize) -> Result<(), VmArgsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| VmArgsError(format!("{}: {error}", path.display())))?;
        self.files.push(path.to_path_buf());
        self.load_text(&path.display().to_string(), &text, depth)
    }

    fn load_text(&mut self, origin: &str, text: &str, depth: usize) -> Result<(), VmArgsError> {
        for (index, line) in text.lines().enumerate() {
            let at = format!("{origin}:{}", index + 1);
            let words =
                split_line(line).map_err(|message| VmArgsError(format!("{at}: {message}")))?;
            let mut segment = Vec::new();
            let mut words = words.into_iter();
            while let Some(word) = words.next() {
                if word != "-args_file" {
                    segment.push(word);
                    continue;
                }
                self.apply(&at, std::mem::take(&mut segment))?;
                let Some(file) = words.next() else {
                    return Err(VmArgsError(format!("{at}: -args_file needs a file name")));
                };
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(VmArgsError(format!(
                        "{at}: -args_file nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)"
                    )));
                }
                self.load_file(Path::new(&file), depth + 1)
                    .map_err(|error| VmArgsError(format!("{at}: -args_file {error}")))?;
            }
            self.apply(&at, segment)?;
        }
        Ok(())
    }

    /// Takes the words of one line (or of the part of a line around an
    /// `-args_file`).
    fn apply(&mut self, at: &str, words: Vec<String>) -> Result<(), VmArgsError> {
        if words.is_empty() {
            return Ok(());
        }
        let (args, rest) =
            ErlArgs::extract(&words).map_err(|error| VmArgsError(format!("{at}: {error}")))?;
        let sname = args.sname.is_some() || self.args.sname.is_some();
        let name = args.name.is_some() || self.args.name.is_some();
        if sname && name {
            return Err(VmArgsError(format!(
                "{at}: a node has one name, but -sname and -name are both given"
            )));
        }
        let known = KnownEnv::from_app_env(&args.app_env)
            .map_err(|error| VmArgsError(format!("{at}: {error}")))?;
        self.known.overlay(&known);
        for flag in &args.ignored {
            if let Some(why) = why_ignored(flag) {
                self.warnings.push(format!("{at}: {flag} ignored: {why}"));
            }
        }
        for word in rest {
            self.warnings
                .push(format!("{at}: {word:?} is not an Erlang argument; ignored"));
        }
        self.args.overlay(args);
        Ok(())
    }
}

/// The words of a line: whitespace separates, `#` starts a comment, `\`
/// takes the next character as it is.
fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            '\\' => {
                let escaped = chars
                    .next()
                    .ok_or_else(|| "'\\' at the end of the line escapes nothing".to_owned())?;
                word.get_or_insert_with(String::new).push(escaped);
            }
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Why an ignored flag deserves a warning, or `None` when ignoring it
/// changes nothing (`-noshell`, `-boot`, `-pa`: the BEAM's own concerns).
fn why_ignored(flag: &str) -> Option<&'static str> {
    let name = flag.split_whitespace().next().unwrap_or(flag);
    let why = match name {
        "-noshell" | "-noinput" | "-nouser" | "-boot" | "-boot_var" | "-mode" | "-pa" | "-pz"
        | "-code_path_choice" | "-emu_type" => return None,
        "-smp" => "a Rust node always runs on every core",
        "-heart" => {
            "a Rust node has no heart; let systemd restart it (Restart= in rel/flack.service)"
        }
        "-env" => {
            "it sets a variable for the Erlang emulator; set variables in the environment of bin/flack or of the service"
        }
        "-detached" => {
            "the binary stays in the foreground; bin/flack start runs it in the background"
        }
        "-eval" | "-s" | "-run" => "it runs Erlang code at boot; a Rust node has none",
        "-shutdown_time" => "use --shutdown-grace-secs for the time sessions get to close",
        "-connect_all" | "-start_epmd" | "-epmd_module" | "-remsh" | "-rsh" => {
            "a distribution option this node does not implement"
        }
        _ if name.starts_with("+K") => "kernel poll; a Rust node always uses epoll",
        _ if name.starts_with("+A") => {
            "the BEAM's async thread pool; a Rust node's blocking work runs on tokio's pool"
        }
        _ if name.starts_with("+P") => {
            "the BEAM's process limit; a Rust node has none, the open-file limit bounds its connections"
        }
        _ if name.starts_with("+Q") => {
            "the BEAM's port limit; the open-file limit (LimitNOFILE) bounds a Rust node"
        }
        _ if name.starts_with("+S") || name.starts_with("+s") => {
            "BEAM scheduler settings; a Rust node runs a worker thread per core"
        }
        _ => "an emulator flag, without effect on a Rust node",
    };
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sys_config::GprocDist;

    fn parse(text: &str) -> VmArgs {
        match VmArgs::parse("vm.args", text) {
            Ok(args) => args,
            Err(error) => panic!("should parse: {error}"),
        }
    }

    #[test]
    fn the_original_vm_args() {
        let args = parse("-sname flack\n\n-setcookie flack_cookie\n\n+K true\n+A30\n");
        assert_eq!(args.args.sname.as_deref(), Some("flack"));
        assert_eq!(args.args.cookie.as_deref(), Some("flack_cookie"));
        assert_eq!(
            args.warnings,
            [
                "vm.args:5: +K true ignored: kernel poll; a Rust node always uses epoll",
                "vm.args:6: +A30 ignored: the BEAM's async thread pool; a Rust node's blocking work runs on tokio's pool"
            ]
        );
    }

    #[test]
    fn comments_escapes_and_several_args_a_line() {
        let args = parse(
            "# a release's vm.args\n-sname flack2 -setcookie se\\ cret#comment\n  -kernel net_ticktime 20   # faster\n-flack port 8082\n-gproc gproc_dist [flack1@vm,flack2@vm]\n-noshell\n",
        );
        assert_eq!(args.args.sname.as_deref(), Some("flack2"));
        assert_eq!(args.args.cookie.as_deref(), Some("se cret"));
        assert_eq!(args.known.net_ticktime, Some(20));
        assert_eq!(args.known.port, Some(8082));
        assert_eq!(
            args.known.gproc_dist,
            Some(GprocDist::Candidates {
                nodes: vec!["flack1@vm".into(), "flack2@vm".into()],
                opts: vec![]
            })
        );
        assert!(args.warnings.is_empty(), "{:?}", args.warnings);
    }

    #[test]
    fn behaviour_changing_flags_are_warned_about() {
        let args = parse(
            "+P 1000000\n-smp enable\n-heart\n-env ERL_MAX_PORTS 4096\n+Q 65536\nforeground\n",
        );
        let lines: Vec<&str> = args
            .warnings
            .iter()
            .map(|w| w.split(" ignored:").next().unwrap_or(w))
            .collect();
        assert_eq!(
            lines,
            [
                "vm.args:1: +P 1000000",
                "vm.args:2: -smp enable",
                "vm.args:3: -heart",
                "vm.args:4: -env ERL_MAX_PORTS 4096",
                "vm.args:5: +Q 65536",
                "vm.args:6: \"foreground\" is not an Erlang argument; ignored",
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let error = |text: &str| VmArgs::parse("vm.args", text).expect_err("invalid").0;
        assert_eq!(
            error("-sname a\n\n-setcookie\n"),
            "vm.args:3: -setcookie needs a value"
        );
        assert_eq!(
            error("-sname a\n-flack port eighty\n"),
            "vm.args:2: -flack port eighty: not a port number (0 to 65535), found eighty"
        );
        assert_eq!(
            error("-sname a\n-name b@host\n"),
            "vm.args:2: a node has one name, but -sname and -name are both given"
        );
        assert_eq!(
            error("-setcookie x\\"),
            "vm.args:1: '\\' at the end of the line escapes nothing"
        );
        assert_eq!(
            error("-args_file"),
            "vm.args:1: -args_file needs a file name"
        );
        assert!(
            error("-args_file /no/such/file.args")
                .starts_with("vm.args:1: -args_file /no/such/file.args: ")
        );
    }

    #[test]
    fn args_files_are_read_in_place() {
        let dir = std::env::temp_dir().join(format!("flack-vm-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let extra = dir.join("extra.args");
        std::fs::write(&extra, "-setcookie from_extra\n+K true\n").expect("write");
        let main = dir.join("vm.args");
        std::fs::write(
            &main,
            format!(
                "-setcookie first\n-args_file {}\n-sname n\n",
                extra.display()
            ),
        )
        .expect("write");
        let args = VmArgs::read(&main).expect("reads");
        assert_eq!(args.args.cookie.as_deref(), Some("from_extra"));
        assert_eq!(args.files, [main.clone(), extra.clone()]);
        assert!(args.warnings[0].starts_with(&format!("{}:2: +K true ignored", extra.display())));

        std::fs::write(&main, format!("-args_file {}\n", main.display())).expect("write");
        let error = VmArgs::read(&main).expect_err("loops").0;
        assert!(error.contains("nested more than 8 deep"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
