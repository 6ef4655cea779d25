//! Who this node is: its name, its host and its cookie, worked out the way
//! `erl` works them out. (The flags themselves are read with the rest of
//! the configuration, in [`crate::config`].)
//!
//! `-sname NAME` gives `NAME@SHORTHOST`, where `SHORTHOST` is the machine's
//! host name cut at the first dot (what `inet:gethostname/0` followed by
//! net_kernel's short-name rule yields); `-sname NAME@HOST` keeps the given
//! host. `-name NAME@HOST` is a long name; `-name NAME` appends the DNS domain
//! from `/etc/resolv.conf` to the host name, and fails like `erl` does when
//! there is none. `-setcookie C` sets the cookie; without it the cookie is read
//! from `~/.erlang.cookie`, which is created (mode 0400, twenty random
//! uppercase letters, as `auth.erl` does) when missing. Without a name,
//! distribution is off.

use std::path::{Path, PathBuf};

/// Whether a node uses short (`-sname`) or long (`-name`) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `-sname`: host without dots.
    Short,
    /// `-name`: fully qualified host.
    Long,
}

/// A node name, `alive@host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName {
    /// The part before `@`.
    pub alive: String,
    /// The part after `@`.
    pub host: String,
    /// Short or long names.
    pub kind: NameKind,
}

/// Errors working out the node identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The name is not a valid node name.
    #[error("invalid node name {0:?}")]
    BadName(String),
    /// `-name` without a host and no domain could be found.
    #[error("can't set long node name {0:?}: the host name has no domain")]
    NoDomain(String),
    /// A flag lacks its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value is malformed.
    #[error("invalid value for {flag}: {value:?}")]
    BadValue {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
    },
    /// The cookie file could not be read or created.
    #[error("cookie file {path}: {source}")]
    Cookie {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl NodeName {
    /// `-sname` semantics: `alive` or `alive@host`.
    pub fn short(spec: &str) -> Result<Self, IdentityError> {
        let (alive, host) = match spec.split_once('@') {
            Some((a, h)) => (a.to_owned(), h.to_owned()),
            None => (spec.to_owned(), short_host_name(&local_host_name())),
        };
        Self::checked(alive, host, NameKind::Short, spec)
    }

    /// `-name` semantics: `alive@fq.host` or `alive` (host name plus domain).
    pub fn long(spec: &str) -> Result<Self, IdentityError> {
        let (alive, host) = match spec.split_once('@') {
            Some((a, h)) => (a.to_owned(), h.to_owned()),
            None => {
                let host = local_host_name();
                let host = if host.contains('.') {
                    host
                } else {
                    match resolv_domain(Path::new("/etc/resolv.conf")) {
                        Some(domain) => format!("{host}.{domain}"),
                        None => return Err(IdentityError::NoDomain(spec.to_owned())),
                    }
                };
                (spec.to_owned(), host)
            }
        };
        Self::checked(alive, host, NameKind::Long, spec)
    }

    fn checked(
        alive: String,
        host: String,
        kind: NameKind,
        spec: &str,
    ) -> Result<Self, IdentityError> {
        let alive_ok = !alive.is_empty()
            && alive.len() <= 255
            && alive
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let host_ok = !(host.is_empty()
            || host.contains('@')
            || (kind == NameKind::Short && host.contains('.')));
        if alive_ok && host_ok {
            Ok(Self { alive, host, kind })
        } else {
            Err(IdentityError::BadName(spec.to_owned()))
        }
    }

    /// `alive@host`.
    pub fn full(&self) -> String {
        format!("{}@{}", self.alive, self.host)
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.alive, self.host)
    }
}

/// The machine's host name as `inet:gethostname/0` returns it.
pub fn local_host_name() -> String {
    // gethostname(2) on Linux reads the UTS name the kernel exposes here.
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_owned();
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned())
}

/// Net_kernel's short-name rule: the host name up to the first dot.
pub fn short_host_name(host: &str) -> String {
    host.split('.').next().unwrap_or(host).to_owned()
}

fn resolv_domain(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut search = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("domain"), Some(d)) => return Some(d.to_owned()),
            (Some("search"), Some(d)) if search.is_none() => search = Some(d.to_owned()),
            _ => {}
        }
    }
    search
}

/// Reads a cookie file as `auth.erl` does (first line, trailing whitespace
/// dropped), creating it with twenty random uppercase letters and mode 0400
/// when it does not exist.
pub fn cookie_from_file(path: &Path) -> Result<String, IdentityError> {
    let err = |source| IdentityError::Cookie {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().next().unwrap_or("").trim_end().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::Rng;
            let mut rng = rand::rng();
            let cookie: String = (0..20)
                .map(|_| char::from(b'A' + rng.random_range(0..26u8)))
                .collect();
            write_private(path, &cookie).map_err(err)?;
            Ok(cookie)
        }
        Err(e) => Err(err(e)),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_take_the_host_up_to_the_first_dot() {
        assert_eq!(short_host_name("vm.example.org"), "vm");
        let n = NodeName::short("flack").expect("valid");
        assert!(!n.host.contains('.'));
        assert_eq!(
            NodeName::short("a@localhost").expect("valid").full(),
            "a@localhost"
        );
        assert!(NodeName::short("a@b.c").is_err());
        assert!(NodeName::short("@x").is_err());
        assert_eq!(NodeName::long("a@b.c").expect("valid").full(), "a@b.c");
    }

    #[test]
    fn creates_a_missing_cookie_like_erl() {
        let dir = std::env::temp_dir().join(format!("flack-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join(".erlang.cookie");
        let _ = std::fs::remove_file(&path);
        let cookie = cookie_from_file(&path).expect("created");
        assert_eq!(cookie.len(), 20);
        assert!(cookie.bytes().all(|b| b.is_ascii_uppercase()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o400);
        assert_eq!(cookie_from_file(&path).expect("read back"), cookie);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
