//! Configuration: the command line, Erlang-style arguments, the release's
//! `vm.args` and `sys.config`, and the settings they resolve to.
//!
//! Precedence, lowest first: defaults, sys.config, vm.args (and files named
//! by `-args_file`), Erlang-style words on the command line (`-flack port
//! 8081`, `-sname flack2`), GNU-style `--flags`. [`Settings::resolve`] finds
//! and reads the files; [`Settings::resolve_with`] combines files already
//! read.

pub mod cli;
pub mod erl_args;
pub mod erl_term;
pub mod sys_config;
pub mod tls_dist;
pub mod vm_args;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use crate::chat::session::{DEFAULT_MAX_CHATS, DEFAULT_MAX_NAME_BYTES, SessionLimits};
use crate::http::origin::AllowedOrigins;
use cli::RunArgs;
use erl_args::ErlArgs;
use sys_config::{GprocDist, KnownEnv, SysConfig};
use vm_args::VmArgs;

/// The port the original flack listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// Default of `--max-message-frames`: browsers send every message as one
/// frame.
pub const DEFAULT_MAX_MESSAGE_FRAMES: usize = 128;

/// Default of `--header-read-timeout-secs` and `--handshake-timeout-secs`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Erlang's default `net_ticktime`, in seconds.
pub const DEFAULT_NET_TICKTIME_SECS: u32 = 60;

/// A node's name as given: `-sname flack1` or `-name flack1@host.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeName {
    /// `-sname`: a short name; without `@host`, the host's short name is used.
    Short(String),
    /// `-name`: a long name; without `@host`, the host's full name is used.
    Long(String),
}

impl NodeName {
    /// The name as written after the flag.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Short(name) | Self::Long(name) => name,
        }
    }

    /// `name@host`: the name as written if it has a host part, else with
    /// `host` added.
    pub fn with_host(&self, host: &str) -> String {
        let name = self.as_str();
        if name.contains('@') {
            name.to_owned()
        } else {
            format!("{name}@{host}")
        }
    }
}

/// Everything a running node needs to know, resolved from every source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the HTTP and websocket listener binds.
    pub listen: SocketAddr,
    /// The web client's directory.
    pub static_dir: PathBuf,
    /// Where node state lives: gen_leader's incarnation file
    /// `gproc_dist_<node>` (the original writes it in the VM's working
    /// directory).
    pub data_dir: PathBuf,
    /// Idle timeout of a websocket connection.
    pub idle_timeout: Duration,
    /// Largest client frame accepted.
    pub max_frame_bytes: usize,
    /// Outbound event queue per connection.
    pub outbound_queue: usize,
    /// Longest single write to a client.
    pub write_timeout: Duration,
    /// Time given to sessions to close at shutdown.
    pub shutdown_grace: Duration,
    /// Longest names and most chats per connection.
    pub session_limits: SessionLimits,
    /// Most frames one client message may arrive in.
    pub max_message_frames: usize,
    /// Most websocket connections open at once.
    pub max_connections: usize,
    /// Longest a client may take to send an HTTP request head.
    pub header_read_timeout: Duration,
    /// Longest a websocket client may take to send its `client_hello`.
    pub handshake_timeout: Duration,
    /// Who may open websockets from a browser.
    pub allowed_origins: AllowedOrigins,
    /// `-sname`/`-name`: the node's name, when it is to be distributed.
    pub node_name: Option<NodeName>,
    /// `-setcookie`.
    pub cookie: Option<String>,
    /// `-hidden`.
    pub hidden: bool,
    /// The EPMD port (`ERL_EPMD_PORT`, else 4369).
    pub epmd_port: u16,
    /// Where an EPMD this node starts listens (`ERL_EPMD_ADDRESS`, with
    /// loopback added; every interface when unset).
    pub epmd_addresses: Vec<IpAddr>,
    /// `-kernel inet_dist_use_interface {A,B,C,D}`: the address the
    /// distribution listener binds; every interface when not set, as in OTP.
    pub dist_interface: Option<IpAddr>,
    /// `-kernel inet_dist_listen_min N [inet_dist_listen_max M]`: the
    /// distribution port range; any free port when not set.
    pub dist_ports: Option<(u16, u16)>,
    /// `-proto_dist inet_tls` with the options of `-ssl_dist_optfile` (or
    /// `-ssl_dist_opt`): the distribution over TLS; plain TCP when `None`.
    pub dist_tls: Option<crate::node::dist::tls::TlsDistOptions>,
    /// `{kernel, [{net_ticktime, N}]}` or `-kernel net_ticktime N`; 60 s as
    /// in Erlang when not set.
    pub net_ticktime: Duration,
    /// `{kernel, [{prevent_overlapping_partitions, Bool}]}` or `-kernel
    /// prevent_overlapping_partitions Bool`: whether `global` cuts
    /// overlapping partitions; `true` when not set, as in OTP 25.
    pub prevent_overlapping_partitions: bool,
    /// `{gproc, [{gproc_dist, ...}]}` or `-gproc gproc_dist ...`: who may
    /// lead the global registry; [`GprocDist::Off`] when not set.
    pub gproc_dist: GprocDist,
    /// `{gproc, [{gproc_dist_workers, [Node]}]}`; empty when not set.
    pub gproc_dist_workers: Vec<String>,
    /// The sys.config read, if any, for anything else it says.
    pub sys_config: Option<SysConfig>,
    /// Every configuration file read, in the order read.
    pub config_files: Vec<PathBuf>,
    /// What the configuration files say that is accepted but means nothing
    /// here, each starting `file:line:`; the caller logs them.
    pub warnings: Vec<String>,
    /// Erlang-style arguments of vm.args and the command line together
    /// (the command line's win), with `sname`/`name` set as [`Self::node_name`].
    pub erl: ErlArgs,
}

/// The configuration files of a node, read.
#[derive(Debug, Clone, Default)]
pub struct ConfigFiles {
    /// The vm.args: `--vm-args`, else `releases/<version>/vm.args` of the
    /// release when present.
    pub vm_args: Option<VmArgs>,
    /// Files named by `-args_file` on the command line, in order; they count
    /// as vm.args read after the first.
    pub args_files: Vec<VmArgs>,
    /// The sys.config: `--config`, else `-config` (command line, then
    /// vm.args), else `releases/<version>/sys.config` when present.
    pub sys_config: Option<SysConfig>,
}

impl ConfigFiles {
    /// Finds and reads the files for `run` and the command line's
    /// Erlang-style words `cmdline`. `release` is the running release's
    /// version directory (`<root>/releases/<version>`), where vm.args and
    /// sys.config are looked for when not named; see [`release_version_dir`].
    pub fn load(run: &RunArgs, cmdline: &ErlArgs, release: Option<&Path>) -> anyhow::Result<Self> {
        let in_release = |name: &str| {
            release
                .map(|dir| dir.join(name))
                .filter(|path| path.is_file())
        };
        let vm_args = match run.vm_args.clone().or_else(|| in_release("vm.args")) {
            Some(path) => Some(VmArgs::read(&path)?),
            None => None,
        };
        let args_files = cmdline
            .args_files
            .iter()
            .map(|file| VmArgs::read(Path::new(file)))
            .collect::<Result<Vec<_>, _>>()?;
        let erl_config = cmdline
            .config
            .iter()
            .chain(
                args_files
                    .iter()
                    .rev()
                    .filter_map(|file| file.args.config.as_ref()),
            )
            .chain(vm_args.iter().filter_map(|file| file.args.config.as_ref()))
            .next()
            .map(|config| erl_config_path(config));
        let sys_config = match run
            .config
            .clone()
            .or(erl_config)
            .or_else(|| in_release("sys.config"))
        {
            Some(path) => Some(SysConfig::read(&path)?),
            None => None,
        };
        Ok(Self {
            vm_args,
            args_files,
            sys_config,
        })
    }
}

/// `-config NAME` names `NAME.config`; the extension may be left out.
fn erl_config_path(name: &str) -> PathBuf {
    if name.ends_with(".config") {
        PathBuf::from(name)
    } else {
        PathBuf::from(format!("{name}.config"))
    }
}

/// The node name one layer of arguments gives, if any.
fn node_name_of(args: &ErlArgs, origin: &str) -> anyhow::Result<Option<NodeName>> {
    match (&args.sname, &args.name) {
        (Some(_), Some(_)) => {
            bail!("{origin}: a node has one name, but -sname and -name are both given")
        }
        (Some(name), None) => Ok(Some(NodeName::Short(name.clone()))),
        (None, Some(name)) => Ok(Some(NodeName::Long(name.clone()))),
        (None, None) => Ok(None),
    }
}

impl Settings {
    /// Resolves settings from the command line (`run`, and its Erlang-style
    /// words `erl`) and the configuration files it names or the release
    /// holds.
    pub fn resolve(run: &RunArgs, erl: ErlArgs) -> anyhow::Result<Self> {
        let files = ConfigFiles::load(run, &erl, release_version_dir().as_deref())?;
        Self::resolve_with(run, erl, files)
    }

    /// Resolves settings from files already read: defaults < sys.config <
    /// vm.args < Erlang-style command line (`erl`) < `--flags` (`run`).
    pub fn resolve_with(run: &RunArgs, erl: ErlArgs, files: ConfigFiles) -> anyhow::Result<Self> {
        let cmdline_known = KnownEnv::from_app_env(&erl.app_env).map_err(anyhow::Error::msg)?;
        let mut known = KnownEnv::default();
        let mut warnings = Vec::new();
        let mut config_files = Vec::new();
        if let Some(sys) = &files.sys_config {
            known.overlay(&sys.known);
            warnings.extend(sys.warnings.iter().cloned());
            config_files.extend(sys.files.iter().cloned());
        }
        let mut merged = ErlArgs::default();
        let mut node_name = None;
        for layer in files.vm_args.iter().chain(&files.args_files) {
            known.overlay(&layer.known);
            warnings.extend(layer.warnings.iter().cloned());
            config_files.extend(layer.files.iter().cloned());
            let origin = layer
                .files
                .first()
                .map_or_else(|| "vm.args".to_owned(), |file| file.display().to_string());
            node_name = node_name_of(&layer.args, &origin)?.or(node_name);
            merged.overlay(layer.args.clone());
        }
        known.overlay(&cmdline_known);
        node_name = node_name_of(&erl, "the command line")?.or(node_name);
        merged.overlay(erl);
        match &node_name {
            Some(NodeName::Short(name)) => {
                merged.sname = Some(name.clone());
                merged.name = None;
            }
            Some(NodeName::Long(name)) => {
                merged.name = Some(name.clone());
                merged.sname = None;
            }
            None => {}
        }
        let port = run.port.or(known.port).unwrap_or(DEFAULT_PORT);
        if run.max_frame_bytes < 256 {
            bail!(
                "--max-frame-bytes {} is too small (at least 256)",
                run.max_frame_bytes
            );
        }
        if run.idle_timeout_secs == 0 {
            bail!("--idle-timeout-secs must be at least 1");
        }
        if let Some((min, max)) = known.dist_ports()
            && max < min
        {
            bail!(
                "kernel inet_dist_listen_max {max} is below inet_dist_listen_min {min}: no port to listen on"
            );
        }
        let dist_tls =
            match tls_dist::resolve(&merged, &mut warnings).map_err(anyhow::Error::msg)? {
                tls_dist::DistProto::Tcp => None,
                tls_dist::DistProto::Tls(options) => Some(*options),
            };
        let epmd_addresses = crate::node::epmd::server::listen_addresses(
            std::env::var("ERL_EPMD_ADDRESS").ok().as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        let max_name_bytes = run
            .max_name_bytes
            .or(known.max_name_bytes)
            .unwrap_or(DEFAULT_MAX_NAME_BYTES);
        if max_name_bytes < 32 {
            bail!(
                "max_name_bytes {max_name_bytes} is too small (at least 32, the length of a generated user_id)"
            );
        }
        let positive = |flag: &str, value: Option<usize>| match value {
            Some(0) => bail!("--{flag} must be at least 1"),
            other => Ok(other),
        };
        let max_chats = positive(
            "max-chats-per-connection",
            run.max_chats_per_connection
                .or(known.max_chats_per_connection),
        )?
        .unwrap_or(DEFAULT_MAX_CHATS);
        let max_message_frames = positive(
            "max-message-frames",
            run.max_message_frames.or(known.max_message_frames),
        )?
        .unwrap_or(DEFAULT_MAX_MESSAGE_FRAMES);
        let max_connections = positive(
            "max-connections",
            run.max_connections.or(known.max_connections),
        )?
        .unwrap_or_else(default_max_connections);
        let seconds = |flag: &str, value: Option<u64>| match value {
            Some(0) => bail!("--{flag} must be at least 1"),
            other => Ok(Duration::from_secs(other.unwrap_or(DEFAULT_TIMEOUT_SECS))),
        };
        let header_read_timeout = seconds(
            "header-read-timeout-secs",
            run.header_read_timeout_secs
                .or(known.header_read_timeout_secs),
        )?;
        let handshake_timeout = seconds(
            "handshake-timeout-secs",
            run.handshake_timeout_secs.or(known.handshake_timeout_secs),
        )?;
        let origins = if run.allowed_origins.is_empty() {
            known.allowed_origins.clone().unwrap_or_default()
        } else {
            run.allowed_origins.clone()
        };
        let allowed_origins = AllowedOrigins::parse(&origins).map_err(anyhow::Error::msg)?;
        Ok(Self {
            listen: SocketAddr::new(run.bind, port),
            static_dir: run.static_dir.clone().unwrap_or_else(default_static_dir),
            epmd_port: crate::node::epmd::port_from_env(),
            epmd_addresses,
            dist_interface: known.dist_interface,
            dist_ports: known.dist_ports(),
            dist_tls,
            data_dir: run
                .data_dir
                .clone()
                .or_else(|| release_root().map(|root| root.join("var")))
                .unwrap_or_else(|| PathBuf::from(".")),
            idle_timeout: Duration::from_secs(run.idle_timeout_secs),
            max_frame_bytes: run.max_frame_bytes,
            outbound_queue: run.outbound_queue.max(1),
            write_timeout: Duration::from_secs(run.write_timeout_secs.max(1)),
            shutdown_grace: Duration::from_secs(run.shutdown_grace_secs),
            session_limits: SessionLimits {
                max_name_bytes,
                max_chats,
            },
            max_message_frames,
            max_connections,
            header_read_timeout,
            handshake_timeout,
            allowed_origins,
            node_name,
            cookie: merged.cookie.clone(),
            hidden: merged.hidden,
            net_ticktime: Duration::from_secs(u64::from(
                known.net_ticktime.unwrap_or(DEFAULT_NET_TICKTIME_SECS),
            )),
            prevent_overlapping_partitions: known.prevent_overlapping_partitions.unwrap_or(true),
            gproc_dist: known.gproc_dist.unwrap_or_default(),
            gproc_dist_workers: known.gproc_dist_workers.unwrap_or_default(),
            sys_config: files.sys_config,
            config_files,
            warnings,
            erl: merged,
        })
    }

    /// The listen address.
    pub fn bind(&self) -> IpAddr {
        self.listen.ip()
    }

    /// Puts what these settings say about the distribution port and EPMD
    /// into a node's configuration: the listener's address and port range,
    /// TLS and its options, the EPMD port and the addresses of an EPMD the
    /// node starts; and `global`'s `prevent_overlapping_partitions`.
    pub fn apply_dist(&self, config: &mut crate::node::NodeConfig) {
        config.prevent_overlapping_partitions = self.prevent_overlapping_partitions;
        if let Some(ip) = self.dist_interface {
            config.listen_ip = ip;
        }
        if let Some((min, max)) = self.dist_ports {
            config.listen_port = min;
            config.listen_port_max = max;
        }
        config.tls.clone_from(&self.dist_tls);
        config.epmd_port = self.epmd_port;
        config.epmd_addresses.clone_from(&self.epmd_addresses);
    }
}

/// Websocket connections allowed when `--max-connections` is not given: the
/// open-file limit less a reserve (a tenth of it, at least 64) for HTTP
/// requests such as `/health`, the distribution connections and files.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    max_connections_for(soft)
}

/// [`default_max_connections`] for an open-file limit of `nofile`.
fn max_connections_for(nofile: usize) -> usize {
    let reserve = (nofile / 10).max(64);
    nofile.saturating_sub(reserve).max(1)
}

/// The root of the release this binary runs from: the directory above
/// `bin/` when the binary is `<root>/bin/<name>`, as in the release tarball.
pub fn release_root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    bin.parent().map(Path::to_path_buf)
}

/// `<root>/releases/<version>` of the release this binary runs from, where
/// its vm.args and sys.config are.
pub fn release_version_dir() -> Option<PathBuf> {
    Some(
        release_root()?
            .join("releases")
            .join(env!("CARGO_PKG_VERSION")),
    )
}

/// `static/` of the release the binary runs from (`<root>/bin/flack` or
/// `<root>/target/*/flack`), else `./static`.
fn default_static_dir() -> PathBuf {
    let beside_release = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .take(3)
            .map(|dir| dir.join("static"))
            .find(|dir| dir.join("flack.html").is_file())
    });
    beside_release.unwrap_or_else(|| Path::new("static").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use cli::{Cli, Command};

    /// Settings for a command line, with files given as text.
    fn resolve(
        command_line: &str,
        sys_config: Option<&str>,
        vm_args: Option<&str>,
    ) -> anyhow::Result<Settings> {
        let words: Vec<String> = command_line.split_whitespace().map(str::to_owned).collect();
        let (erl, rest) = ErlArgs::extract(&words)?;
        let cli = Cli::try_parse_from(std::iter::once("flack".to_owned()).chain(rest))?;
        let Command::Foreground(run) = cli.command else {
            bail!("not foreground")
        };
        let files = ConfigFiles {
            vm_args: vm_args
                .map(|text| VmArgs::parse("vm.args", text))
                .transpose()?,
            args_files: Vec::new(),
            sys_config: sys_config
                .map(|text| SysConfig::parse("sys.config", text))
                .transpose()?,
        };
        Settings::resolve_with(&run, erl, files)
    }

    const SYS: &str = "[{flack, [{port, 1001}]}, {kernel, [{net_ticktime, 30}]}, {gproc, [{gproc_dist, [a@h, b@h]}]}].";

    #[test]
    fn defaults_without_any_source() {
        let settings = resolve("foreground", None, None).expect("valid");
        assert_eq!(settings.listen.port(), DEFAULT_PORT);
        assert_eq!(settings.node_name, None);
        assert_eq!(settings.cookie, None);
        assert_eq!(settings.net_ticktime, Duration::from_secs(60));
        assert_eq!(settings.gproc_dist, GprocDist::Off);
    }

    #[test]
    fn prevent_overlapping_partitions_is_read_like_otp() {
        let default = resolve("foreground", None, None).expect("valid");
        assert!(default.prevent_overlapping_partitions, "OTP 25's default");
        let sys = "[{kernel, [{prevent_overlapping_partitions, false}]}].";
        let from_sys = resolve("foreground", Some(sys), None).expect("valid");
        assert!(!from_sys.prevent_overlapping_partitions);
        let vm = "-kernel prevent_overlapping_partitions true\n";
        let from_vm = resolve("foreground", Some(sys), Some(vm)).expect("valid");
        assert!(from_vm.prevent_overlapping_partitions, "vm.args wins");
        let from_args = resolve(
            "foreground -kernel prevent_overlapping_partitions false",
            None,
            Some(vm),
        )
        .expect("valid");
        assert!(!from_args.prevent_overlapping_partitions);
        let mut node = crate::node::NodeConfig::local();
        from_args.apply_dist(&mut node);
        assert!(!node.prevent_overlapping_partitions);
        let bad = resolve(
            "foreground -kernel prevent_overlapping_partitions yes",
            None,
            None,
        );
        assert!(
            bad.as_ref()
                .is_err_and(|e| e.to_string().contains("not a boolean")),
            "{bad:?}"
        );
    }

    #[test]
    fn each_layer_overrides_the_one_below() {
        let sys_only = resolve("foreground", Some(SYS), None).expect("valid");
        assert_eq!(sys_only.listen.port(), 1001);
        assert_eq!(sys_only.net_ticktime, Duration::from_secs(30));
        assert_eq!(
            sys_only.gproc_dist,
            GprocDist::Candidates {
                nodes: vec!["a@h".into(), "b@h".into()],
                opts: vec![]
            }
        );

        let vm = "-sname flack1\n-setcookie c1\n-flack port 1002\n-kernel net_ticktime 20\n";
        let with_vm = resolve("foreground", Some(SYS), Some(vm)).expect("valid");
        assert_eq!(with_vm.listen.port(), 1002);
        assert_eq!(with_vm.net_ticktime, Duration::from_secs(20));
        assert_eq!(with_vm.node_name, Some(NodeName::Short("flack1".into())));
        assert_eq!(with_vm.cookie.as_deref(), Some("c1"));

        let with_erl = resolve(
            "foreground -flack port 1003 -name flack9@host.example -setcookie c2 -gproc gproc_dist all",
            Some(SYS),
            Some(vm),
        )
        .expect("valid");
        assert_eq!(with_erl.listen.port(), 1003);
        assert_eq!(
            with_erl.node_name,
            Some(NodeName::Long("flack9@host.example".into()))
        );
        assert_eq!(with_erl.erl.sname, None);
        assert_eq!(with_erl.cookie.as_deref(), Some("c2"));
        assert_eq!(with_erl.gproc_dist, GprocDist::All);
        assert_eq!(with_erl.net_ticktime, Duration::from_secs(20));

        let with_flag = resolve(
            "foreground -flack port 1003 --port 1004",
            Some(SYS),
            Some(vm),
        )
        .expect("valid");
        assert_eq!(with_flag.listen.port(), 1004);
    }

    #[test]
    fn distribution_interface_and_ports() {
        let settings = resolve(
            "foreground",
            Some("[{kernel, [{inet_dist_use_interface, {127,0,0,2}}, {inet_dist_listen_min, 9100}]}]."),
            None,
        )
        .expect("valid");
        assert_eq!(
            settings.dist_interface,
            Some("127.0.0.2".parse().expect("ip"))
        );
        assert_eq!(
            settings.dist_ports,
            Some((9100, 9100)),
            "min alone: exactly"
        );
        let vm = "-kernel inet_dist_use_interface {0,0,0,0,0,0,0,1}\n-kernel inet_dist_listen_min 9100 inet_dist_listen_max 9105\n";
        let settings = resolve("foreground", None, Some(vm)).expect("valid");
        assert_eq!(settings.dist_interface, Some("::1".parse().expect("ip")));
        assert_eq!(settings.dist_ports, Some((9100, 9105)));
        let mut config = crate::node::NodeConfig::local();
        settings.apply_dist(&mut config);
        assert_eq!(
            (config.listen_ip, config.listen_port, config.listen_port_max),
            ("::1".parse().expect("ip"), 9100, 9105)
        );
        let settings =
            resolve("foreground -kernel inet_dist_listen_max 9105", None, None).expect("valid");
        assert_eq!(settings.dist_ports, None, "max alone is ignored, as in OTP");
        assert!(
            resolve(
                "foreground -kernel inet_dist_listen_min 9105 inet_dist_listen_max 9100",
                None,
                None
            )
            .is_err()
        );
        let error = resolve(
            "foreground -kernel inet_dist_use_interface {127,0,0,256}",
            None,
            None,
        )
        .expect_err("not an address");
        assert!(
            error.to_string().contains("not an IP address tuple"),
            "{error}"
        );
    }

    #[test]
    fn command_line_kernel_parameters_win_over_sys_config() {
        let settings = resolve(
            "foreground -kernel net_ticktime 7 inet_dist_listen_min 9101",
            Some("[{kernel, [{net_ticktime, 30}, {inet_dist_listen_min, 9100}, {inet_dist_listen_max, 9105}]}]."),
            None,
        )
        .expect("valid");
        assert_eq!(settings.net_ticktime, Duration::from_secs(7));
        assert_eq!(
            settings.dist_ports,
            Some((9101, 9105)),
            "each parameter on its own, as OTP's application environment"
        );
    }

    #[test]
    fn proto_dist_selects_tls_for_the_node() {
        let settings = resolve(
            "foreground",
            None,
            Some("-proto_dist inet_tls\n-ssl_dist_opt server_certfile /s.pem client_verify verify_peer\n"),
        )
        .expect("valid");
        let tls = settings.dist_tls.clone().expect("TLS");
        assert_eq!(tls.server.certfile, Some(PathBuf::from("/s.pem")));
        let mut config = crate::node::NodeConfig::local();
        settings.apply_dist(&mut config);
        assert_eq!(config.tls, Some(tls));
        let settings = resolve("foreground", None, Some("-proto_dist inet_tcp\n")).expect("valid");
        assert_eq!(settings.dist_tls, None);
        let error = resolve("foreground -proto_dist inet6_tls", None, None).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("inet_tcp (the default) and inet_tls only")
        );
    }

    #[test]
    fn hardening_defaults_and_flags() {
        let settings = resolve("foreground", None, None).expect("valid");
        assert_eq!(settings.session_limits, SessionLimits::default());
        assert_eq!(settings.max_message_frames, 128);
        assert_eq!(settings.header_read_timeout, Duration::from_secs(10));
        assert_eq!(settings.handshake_timeout, Duration::from_secs(10));
        assert_eq!(settings.allowed_origins, AllowedOrigins::SameHost);
        assert!(settings.max_connections >= 1);
        assert_eq!(max_connections_for(1024), 922);
        assert_eq!(max_connections_for(100), 36);
        assert_eq!(max_connections_for(1_048_576), 943_719);

        let settings = resolve(
            "foreground --max-name-bytes 64 --max-chats-per-connection 3 --max-connections 7 --allowed-origins https://a.example,http://b.example:8080",
            None,
            None,
        )
        .expect("valid");
        assert_eq!(settings.session_limits.max_name_bytes, 64);
        assert_eq!(settings.session_limits.max_chats, 3);
        assert_eq!(settings.max_connections, 7);
        assert_eq!(
            settings.allowed_origins,
            AllowedOrigins::List(vec![
                "https://a.example".into(),
                "http://b.example:8080".into()
            ])
        );
        assert!(resolve("foreground --max-name-bytes 8", None, None).is_err());
        assert!(resolve("foreground --max-connections 0", None, None).is_err());
        assert!(resolve("foreground --allowed-origins a.example", None, None).is_err());

        // sys.config < -flack words < --flags, as for the port.
        let sys =
            "[{flack, [{max_connections, 11}, {max_name_bytes, 40}, {allowed_origins, '*'}]}].";
        let settings = resolve("foreground", Some(sys), None).expect("valid");
        assert_eq!(settings.max_connections, 11);
        assert_eq!(settings.session_limits.max_name_bytes, 40);
        assert_eq!(settings.allowed_origins, AllowedOrigins::Any);
        let settings =
            resolve("foreground -flack max_connections 12", Some(sys), None).expect("valid");
        assert_eq!(settings.max_connections, 12);
        let settings = resolve(
            "foreground -flack max_connections 12 --max-connections 13 --allowed-origins https://a.example",
            Some(sys),
            None,
        )
        .expect("valid");
        assert_eq!(settings.max_connections, 13);
        assert_eq!(
            settings.allowed_origins,
            AllowedOrigins::List(vec!["https://a.example".into()])
        );
    }

    #[test]
    fn file_warnings_are_collected() {
        let settings = resolve(
            "foreground",
            Some("[{gproc, [{gproc_dist, [flack1]}]}]."),
            Some("+K true\n"),
        )
        .expect("valid");
        assert_eq!(settings.warnings.len(), 2, "{:?}", settings.warnings);
        assert!(settings.warnings[0].starts_with("sys.config:1:25: "));
        assert!(settings.warnings[1].starts_with("vm.args:1: +K true ignored"));
    }

    #[test]
    fn both_names_on_the_command_line_are_refused() {
        let error = resolve("foreground -sname a -name b@h", None, None).expect_err("two names");
        assert_eq!(
            error.to_string(),
            "the command line: a node has one name, but -sname and -name are both given"
        );
    }

    #[test]
    fn files_named_by_the_command_line_are_read() {
        let dir = std::env::temp_dir().join(format!("flack-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sys = dir.join("other.config");
        std::fs::write(&sys, "[{flack, [{port, 2001}]}].").expect("write");
        let vm = dir.join("vm.args");
        std::fs::write(
            &vm,
            format!("-sname n\n-config {}\n", dir.join("other").display()),
        )
        .expect("write");
        let words = [
            "foreground".to_owned(),
            "--vm-args".to_owned(),
            vm.display().to_string(),
        ];
        let cli =
            Cli::try_parse_from(std::iter::once("flack".to_owned()).chain(words)).expect("cli");
        let Command::Foreground(run) = cli.command else {
            panic!("foreground")
        };
        let files = ConfigFiles::load(&run, &ErlArgs::default(), None).expect("loads");
        let settings = Settings::resolve_with(&run, ErlArgs::default(), files).expect("valid");
        assert_eq!(settings.listen.port(), 2001);
        assert_eq!(settings.config_files, [sys.clone(), vm.clone()]);

        let missing = [
            "foreground".to_owned(),
            "--config".to_owned(),
            dir.join("nope.config").display().to_string(),
        ];
        let cli =
            Cli::try_parse_from(std::iter::once("flack".to_owned()).chain(missing)).expect("cli");
        let Command::Foreground(run) = cli.command else {
            panic!("foreground")
        };
        let error = ConfigFiles::load(&run, &ErlArgs::default(), None).expect_err("missing");
        assert!(
            error.to_string().contains("nope.config: No such file"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
