//! The container image without a container engine: the image's file layout
//! (docker/Dockerfile) is assembled under a temporary root, and the image's
//! entrypoint, docker/start-flack.sh, runs there with the environment the
//! image gives it (its `ENV` lines, read from the Dockerfile, under the
//! temporary root) plus what an operator adds (FLACK_CLUSTER,
//! FLACK_NODE_NAME, FLACK_COOKIE or FLACK_COOKIE_FILE, FLACK_PORT). When the
//! tests run as root, the entrypoint runs as the image's unprivileged user
//! (uid 10001, through `setpriv`), with only var/ and log/ its own, as in
//! the image. Two such "containers" on loopback form a cluster and chat.
//!
//! Also: the paths the Dockerfile, compose.yaml and nginx.conf name exist
//! in the repository. The image itself is not built here (no engine).

mod node_support;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use node_support::{TestEpmd, free_port, unique};
use serde_json::Value;
use support::{Client, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The image's user (docker/Dockerfile: useradd --uid 10001).
const IMAGE_UID: u32 = 10001;

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments
/// dropped: (instruction, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("docker/Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|line| {
            let (instruction, rest) = line.split_once(' ').unwrap_or((&line, ""));
            (instruction.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

/// The environment the image sets (its `ENV` lines).
fn image_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (instruction, args) in dockerfile() {
        if instruction != "ENV" {
            continue;
        }
        for pair in args.split_whitespace() {
            let (key, value) = pair.split_once('=').expect("ENV KEY=VALUE");
            env.insert(key.to_owned(), value.trim_matches('"').to_owned());
        }
    }
    env
}

/// The entrypoint script's path in the image (the last word of ENTRYPOINT).
fn image_entrypoint() -> String {
    let (_, args) = dockerfile()
        .into_iter()
        .rfind(|(instruction, _)| instruction == "ENTRYPOINT")
        .expect("an ENTRYPOINT");
    let words: Vec<String> = serde_json::from_str(&args).expect("ENTRYPOINT in exec form");
    words.last().expect("a script").clone()
}

/// The release tarball, packed by the script the image's build stage runs,
/// from the binary under test.
fn tarball() -> &'static Path {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("container-tests/dist");
        let output = Command::new("sh")
            .arg("rel/build-tarball.sh")
            .args(["--binary", env!("CARGO_BIN_EXE_flack"), "--out"])
            .arg(&out)
            .current_dir(REPO)
            .output()
            .expect("build-tarball.sh runs");
        assert!(
            output.status.success(),
            "build-tarball.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        out.join(format!("flack-{VERSION}.tar.gz"))
    })
}

/// Whether the entrypoint runs as the image's user (the tests run as root
/// and can drop to it).
fn as_image_user() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A temporary root laid out as the image is.
struct ImageRoot {
    root: PathBuf,
    home: PathBuf,
    child: Option<Child>,
    port: u16,
}

impl ImageRoot {
    /// `<root>/opt/flack` (the extracted release), `<root>/start-flack.sh`,
    /// `<root>/var/www` -> the web client; var/ and log/ writable by the
    /// image's user, everything else not.
    fn assemble(name: &str) -> Self {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("container-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let env = image_env();
        let home = root.join(env["FLACK_HOME"].trim_start_matches('/'));
        std::fs::create_dir_all(&home).expect("release root");
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(tarball())
            .current_dir(&home)
            .status()
            .expect("tar runs");
        assert!(status.success());
        let entrypoint = root.join(image_entrypoint().trim_start_matches('/'));
        std::fs::copy(repo("docker/start-flack.sh"), &entrypoint).expect("entrypoint");
        std::fs::set_permissions(&entrypoint, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::create_dir_all(root.join("var")).expect("var");
        std::os::unix::fs::symlink(home.join("static"), root.join("var/www")).expect("/var/www");
        if as_image_user() {
            for dir in ["var", "log"] {
                let status = Command::new("chown")
                    .args(["-R", &format!("{IMAGE_UID}:{IMAGE_UID}")])
                    .arg(home.join(dir))
                    .status()
                    .expect("chown runs");
                assert!(status.success());
            }
        } else {
            // Not root: make everything but var/ and log/ read-only, as
            // root-owned files are for the image's user.
            let status = Command::new("chmod")
                .args(["-R", "a-w"])
                .arg(home.join("bin"))
                .arg(home.join("releases"))
                .arg(home.join("static"))
                .arg(home.join("share"))
                .status()
                .expect("chmod runs");
            assert!(status.success());
        }
        Self {
            root,
            home,
            child: None,
            port: 0,
        }
    }

    /// The entrypoint, as the image runs it: the image's environment under
    /// this root, plus `extra`.
    fn command(&self, extra: &[(&str, &str)]) -> Command {
        let script = self.root.join(image_entrypoint().trim_start_matches('/'));
        let mut command = if as_image_user() {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={IMAGE_UID}"))
                .arg(format!("--regid={IMAGE_UID}"))
                .arg("--clear-groups")
                .arg(script);
            command
        } else {
            Command::new(script)
        };
        command
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", &self.home);
        for (key, value) in image_env() {
            let value = if key == "FLACK_HOME" {
                self.home.display().to_string()
            } else {
                value
            };
            command.env(key, value);
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        command.current_dir(&self.home);
        command
    }

    /// Starts the "container" in the background.
    fn run(&mut self, extra: &[(&str, &str)]) {
        self.port = extra
            .iter()
            .find(|(key, _)| *key == "FLACK_PORT")
            .map(|(_, port)| port.parse().expect("port"))
            .expect("FLACK_PORT");
        let log = std::fs::File::create(self.root.join("container.log")).expect("log");
        let child = self
            .command(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("entrypoint runs");
        self.child = Some(child);
    }

    /// Runs the entrypoint to completion (for its refusals).
    fn run_to_end(&self, extra: &[(&str, &str)]) -> Output {
        self.command(extra).output().expect("entrypoint runs")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("container.log")).unwrap_or_default()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `bin/flack ARGS` in the "container" (`docker exec`), as the image's
    /// user.
    fn exec(&self, args: &[&str]) -> Output {
        let bin = self.home.join("bin/flack");
        let mut command = if as_image_user() {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={IMAGE_UID}"))
                .arg(format!("--regid={IMAGE_UID}"))
                .arg("--clear-groups")
                .arg(bin);
            command
        } else {
            Command::new(bin)
        };
        command.args(args).output().expect("bin/flack runs")
    }
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Waits until the node's /health satisfies `ok`.
async fn health_until(node: &ImageRoot, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        if let Some(body) = http_get(node.addr(), "/health").await {
            let health: Value = serde_json::from_str(&body).expect("JSON health");
            if ok(&health) {
                return health;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the container's output:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_containers_form_a_cluster_and_chat() {
    let epmd = TestEpmd::start().await;
    let epmd_port = epmd.port.to_string();
    let stem = unique("ct");
    let names = [format!("{stem}a@localhost"), format!("{stem}b@localhost")];
    let cookie = format!("cookie-{stem}");
    let (port_a, port_b) = (free_port().to_string(), free_port().to_string());
    let (dist_a, dist_b) = (free_port().to_string(), free_port().to_string());

    let mut a = ImageRoot::assemble("a");
    let mut b = ImageRoot::assemble("b");
    // b takes its cookie from a file (a secret), and the candidate list in
    // the original image's quoted form; a in the plain form, with a space.
    let secret = b.root.join("run/secrets/flack_cookie");
    std::fs::create_dir_all(secret.parent().expect("dir")).expect("secrets dir");
    std::fs::write(&secret, format!("{cookie}\n")).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let plain = format!("{}, {}", names[0], names[1]);
    let quoted = format!("'{}','{}'", names[0], names[1]);
    let secret = secret.display().to_string();

    a.run(&[
        ("FLACK_CLUSTER", &plain),
        ("FLACK_NODE_NAME", &names[0]),
        ("FLACK_COOKIE", &cookie),
        ("FLACK_PORT", &port_a),
        ("FLACK_DIST_PORT", &dist_a),
        ("ERL_EPMD_PORT", &epmd_port),
    ]);
    // a leads when it is up first (leadership is sticky): wait for that
    // before b starts, or whichever process is quicker to start leads.
    health_until(&a, "a leading alone", |health| {
        health["cluster"]["leader"] == names[0].as_str()
    })
    .await;
    b.run(&[
        ("FLACK_CLUSTER", &quoted),
        ("FLACK_NODE_NAME", &names[1]),
        ("FLACK_COOKIE_FILE", &secret),
        ("FLACK_PORT", &port_b),
        ("FLACK_DIST_PORT", &dist_b),
        ("ERL_EPMD_PORT", &epmd_port),
    ]);

    for (node, name) in [(&a, &names[0]), (&b, &names[1])] {
        let health = health_until(node, "a cluster of both", |health| {
            health["cluster"]["leader"].is_string()
                && health["cluster"]["candidates"].as_array().map(Vec::len) == Some(2)
                && health["cluster"]["down"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
        })
        .await;
        assert_eq!(health["node"], name.as_str(), "{health}");
        assert_eq!(health["cluster"]["candidates"], serde_json::json!(names));
        assert_eq!(health["cluster"]["leader"], names[0].as_str(), "{health}");
    }

    // The "container"'s process is the node itself (exec all the way), run
    // as the image's user.
    let pid = a.child.as_ref().expect("child").id();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let exe =
        String::from_utf8_lossy(cmdline.split(|b| *b == 0).next().expect("argv0")).into_owned();
    assert!(exe.ends_with(&format!("bin/flack-{VERSION}")), "{exe}");
    if as_image_user() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .expect("Uid line");
        assert!(
            uid.split_whitespace().all(|id| id == IMAGE_UID.to_string()),
            "{uid}"
        );
    }

    // What the entrypoint wrote, and that the release's own files are as
    // shipped.
    let written = |node: &ImageRoot, file: &str| node.home.join("var/container").join(file);
    let sys_config = std::fs::read_to_string(written(&b, "sys.config")).expect("sys.config");
    assert!(
        sys_config.contains(&format!("{{gproc_dist, [{quoted}]}}").replace(",'", ", '")),
        "{sys_config}"
    );
    let vm_args = std::fs::read_to_string(written(&b, "vm.args")).expect("vm.args");
    assert!(
        vm_args.contains(&format!("-sname {}\n", names[1])),
        "{vm_args}"
    );
    assert!(
        vm_args.contains(&format!("-setcookie {cookie}\n")),
        "{vm_args}"
    );
    assert!(
        !vm_args.contains("-sname flack\n") && !vm_args.contains("flack_cookie"),
        "{vm_args}"
    );
    let mode = std::fs::metadata(written(&b, "vm.args"))
        .expect("vm.args")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "vm.args holds the cookie: mode {mode:o}");
    let shipped = std::fs::read_to_string(b.home.join(format!("releases/{VERSION}/sys.config")))
        .expect("shipped sys.config");
    assert_eq!(shipped, read("rel/sys.config"));
    assert!(
        std::fs::read_dir(b.root.join("var/www"))
            .is_ok_and(|mut files| files.any(|f| f.is_ok_and(|f| f.file_name() == "flack.html"))),
        "/var/www has no web client"
    );

    // Chat across the two.
    let mut alice = Client::login(a.addr(), "alice").await;
    alice.join("containers").await;
    let mut bob = Client::login(b.addr(), "bob").await;
    let (state, _) = bob.join("containers").await;
    assert!(state.to_string().contains(&alice.user_id), "{state}");
    let joined = alice.expect("joined").await;
    assert_eq!(joined["user_id"], bob.user_id.as_str());
    bob.post("containers", "hello from b").await;
    for client in [&mut alice, &mut bob] {
        let message = client.expect("chat_message").await;
        assert_eq!(message["message"], "hello from b");
    }

    // The image's HEALTHCHECK (`bin/flack ping`, no arguments) and
    // `docker exec ... bin/flack cluster`.
    for node in [&a, &b] {
        let ping = node.exec(&["ping"]);
        assert_eq!(
            (
                ping.status.code(),
                String::from_utf8_lossy(&ping.stdout).as_ref()
            ),
            (Some(0), "pong\n"),
            "{}",
            String::from_utf8_lossy(&ping.stderr)
        );
    }
    let cluster = b.exec(&["cluster"]);
    let view = String::from_utf8_lossy(&cluster.stdout);
    assert!(
        view.contains(&format!("leader:     {}", names[0])),
        "{view}"
    );
    assert!(view.contains("candidates: 2 up"), "{view}");

    // docker stop: SIGTERM, the node leaves and exits 0.
    drop((alice, bob));
    for node in [&mut b, &mut a] {
        let mut child = node.child.take().expect("child");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("joined")
            .expect("waited");
        assert!(exit.success(), "exit {exit}; log:\n{}", node.log());
    }
}

#[test]
fn the_entrypoint_refuses_bad_settings_with_a_reason() {
    let root = ImageRoot::assemble("refusals");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("FLACK_CLUSTER", "flack1,flack2")],
            "FLACK_CLUSTER: 'flack1' is not NAME@HOST",
        ),
        (
            &[("FLACK_CLUSTER", "a@h,b@h;rm")],
            "FLACK_CLUSTER: 'b@h;rm' is not a node name",
        ),
        (
            &[("FLACK_NODE_NAME", "a b")],
            "FLACK_NODE_NAME: 'a b' is not a node name",
        ),
        (
            &[("FLACK_COOKIE", "x"), ("FLACK_COOKIE_FILE", "/nonexistent")],
            "set FLACK_COOKIE or FLACK_COOKIE_FILE, not both",
        ),
        (
            &[("FLACK_COOKIE_FILE", "/nonexistent")],
            "FLACK_COOKIE_FILE: cannot read /nonexistent",
        ),
        (
            &[("FLACK_COOKIE", "two words")],
            "the cookie must be printable ASCII",
        ),
        (
            &[("FLACK_PORT", "eighty")],
            "FLACK_PORT: 'eighty' is not a port number",
        ),
        (
            &[("FLACK_PORT", "70000")],
            "FLACK_PORT: '70000' is not a port number",
        ),
    ];
    for (env, reason) in cases {
        let output = root.run_to_end(env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{env:?}: {stderr}");
        assert!(stderr.contains(reason), "{env:?}: {stderr}");
    }
}

/// The arguments of every `COPY` line that copies from the build context.
fn context_copies() -> Vec<(Vec<String>, String)> {
    dockerfile()
        .into_iter()
        .filter(|(instruction, args)| instruction == "COPY" && !args.starts_with("--from"))
        .map(|(_, args)| {
            let mut words: Vec<String> = args.split_whitespace().map(String::from).collect();
            let destination = words.pop().expect("a destination");
            (words, destination)
        })
        .collect()
}

#[test]
fn the_dockerfile_names_files_that_exist() {
    let copies = context_copies();
    assert!(copies.len() >= 5, "{copies:?}");
    for (sources, _) in &copies {
        for source in sources {
            assert!(
                repo(source).exists(),
                "COPY {source}: not in the repository"
            );
        }
    }
    // The entrypoint is a copied, executable script.
    let entrypoint = image_entrypoint();
    let (sources, _) = copies
        .iter()
        .find(|(_, destination)| *destination == entrypoint)
        .expect("the entrypoint is copied into the image");
    let mode = std::fs::metadata(repo(&sources[0]))
        .expect("script")
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "{} is not executable", sources[0]);
    // Both stages, the release build and the user.
    let steps = dockerfile();
    let froms: Vec<&str> = steps
        .iter()
        .filter(|(instruction, _)| instruction == "FROM")
        .map(|(_, args)| args.as_str())
        .collect();
    assert!(
        froms[0].starts_with("rust:") && froms[0].ends_with(" AS build"),
        "{froms:?}"
    );
    assert_eq!(froms.last(), Some(&"debian:bookworm-slim"));
    assert!(
        steps
            .iter()
            .any(|(i, args)| i == "RUN" && args.contains("rel/build-tarball.sh"))
    );
    assert!(read("rel/build-tarball.sh").contains("cargo build --release"));
    let user = steps
        .iter()
        .rfind(|(instruction, _)| instruction == "USER")
        .map(|(_, user)| user.as_str());
    assert_eq!(user, Some("flack"));
    assert!(
        steps
            .iter()
            .any(|(i, args)| i == "RUN" && args.contains(&format!("--uid {IMAGE_UID}")))
    );
    // The health check runs the release's start script where FLACK_HOME is.
    let home = &image_env()["FLACK_HOME"];
    assert!(
        steps.iter().any(|(i, args)| i == "HEALTHCHECK"
            && args.contains(&format!("{home}/bin/flack\", \"ping\""))),
        "HEALTHCHECK"
    );
    assert!(repo("docker/Dockerfile.dockerignore").exists());
}

#[test]
fn the_compose_file_and_nginx_conf_name_files_and_services_that_exist() {
    let compose = read("docker/compose.yaml");
    let base = repo("docker");
    let value = |line: &str, key: &str| {
        line.trim()
            .strip_prefix(key)
            .map(|rest| rest.trim().trim_matches('"').to_owned())
    };
    let context = compose
        .lines()
        .find_map(|line| value(line, "context:"))
        .expect("a build context");
    let dockerfile = compose
        .lines()
        .find_map(|line| value(line, "dockerfile:"))
        .expect("a dockerfile");
    assert!(
        base.join(&context).join(&dockerfile).is_file(),
        "{context}/{dockerfile}"
    );
    // Bind mounts: `- ./x:/y[:ro]` relative to the compose file.
    let mut mounts = 0;
    for line in compose.lines() {
        let Some(item) = line.trim().strip_prefix("- ") else {
            continue;
        };
        if item.starts_with("./") || item.starts_with("../") {
            let source = item.split(':').next().expect("source");
            assert!(
                base.join(source).exists(),
                "mount {source}: not in the repository"
            );
            mounts += 1;
        }
    }
    assert!(mounts >= 2, "no bind mounts found");
    // Services: two-space-indented keys under `services:`.
    let services: Vec<String> = compose
        .lines()
        .skip_while(|line| *line != "services:")
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(' ') || line.starts_with('#'))
        .filter(|line| line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':'))
        .map(|line| line.trim().trim_end_matches(':').to_owned())
        .collect();
    for service in ["flack1", "flack2", "flack3", "nginx", "flack-erlang"] {
        assert!(
            services.iter().any(|s| s == service),
            "no service {service}: {services:?}"
        );
    }
    // Every node's name in FLACK_CLUSTER is a service's hostname.
    let cluster = compose
        .lines()
        .find_map(|line| value(line, "FLACK_CLUSTER: ${FLACK_CLUSTER:-"))
        .expect("a default FLACK_CLUSTER");
    for node in cluster.trim_end_matches('}').split(',') {
        let host = node.split('@').nth(1).expect("NAME@HOST");
        assert!(compose.contains(&format!("hostname: {host}\n")), "{host}");
    }

    // nginx: the upstream servers are services; /chat-server is proxied
    // with the upgrade headers.
    let nginx = read("docker/nginx.conf");
    let upstreams: Vec<&str> = nginx
        .lines()
        .filter_map(|line| line.trim().strip_prefix("server "))
        .filter(|rest| rest.contains(':'))
        .filter_map(|rest| rest.split(':').next())
        .collect();
    assert_eq!(upstreams, ["flack1", "flack2", "flack3"]);
    for needed in [
        "location = /chat-server",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $flack_connection_upgrade;",
        "try_files /flack.html",
    ] {
        assert!(nginx.contains(needed), "nginx.conf lacks {needed}");
    }
    assert!(repo("static/flack.html").is_file());
}
