//! Which web pages may open a websocket to this node: the `Origin` rule of
//! the upgrade (`--allowed-origins`).
//!
//! A browser sends `Origin` with every websocket upgrade and lets any page
//! connect anywhere, so without a check any site a user visits could chat in
//! the user's name through the user's browser. Clients that are not
//! browsers send no `Origin`, and are always let through: the header only
//! means something when a browser adds it.
//!
//! - [`AllowedOrigins::SameHost`] (the default): the origin's `host[:port]`
//!   must be the request's `Host`, as when the node (or the proxy in front
//!   of it, passing `Host` on) serves the web client itself.
//! - [`AllowedOrigins::List`]: exactly these origins (`scheme://host[:port]`,
//!   compared without case, default ports optional).
//! - [`AllowedOrigins::Any`] (`*`): every origin.

/// The origins allowed to open websockets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// An origin whose host (and port) is the request's `Host`.
    #[default]
    SameHost,
    /// Any origin (`*`).
    Any,
    /// These origins, normalized: lowercase, without a default port.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Reads `--allowed-origins` values: none means [`Self::SameHost`], a
    /// `*` among them means [`Self::Any`], else each must be an origin,
    /// `http://host[:port]` or `https://host[:port]`.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let values: Vec<&str> = values
            .iter()
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
            .collect();
        if values.is_empty() {
            return Ok(Self::SameHost);
        }
        if values.contains(&"*") {
            return Ok(Self::Any);
        }
        values
            .into_iter()
            .map(|value| {
                normalize(value).ok_or_else(|| {
                    format!(
                        "--allowed-origins {value}: not an origin (http://host[:port] or https://host[:port]) or *"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::List)
    }

    /// Whether a request with this `Origin` header (if any) and this `Host`
    /// header (if any) may upgrade.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            Self::Any => true,
            Self::List(allowed) => {
                normalize(origin).is_some_and(|origin| allowed.contains(&origin))
            }
            Self::SameHost => {
                let (Some(origin), Some(host)) = (normalize(origin), host) else {
                    return false;
                };
                let Some((scheme, authority)) = origin.split_once("://") else {
                    return false;
                };
                let host = host.trim().to_ascii_lowercase();
                let host = strip_default_port(scheme, &host);
                authority == host
            }
        }
    }
}

/// `scheme://host[:port]` in lowercase without a default port and without
/// a trailing `/`; `None` when `value` is not such an origin (`null`, a
/// path, another scheme).
fn normalize(value: &str) -> Option<String> {
    let value = value.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = value.split_once("://")?;
    if !matches!(scheme, "http" | "https") || authority.is_empty() {
        return None;
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    Some(format!(
        "{scheme}://{}",
        strip_default_port(scheme, authority)
    ))
}

/// `host` without `:80` for http or `:443` for https.
fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    authority.strip_suffix(default).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<AllowedOrigins, String> {
        AllowedOrigins::parse(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn same_host_by_default() {
        let rule = parse(&[]).expect("valid");
        assert_eq!(rule, AllowedOrigins::SameHost);
        assert!(rule.allows(None, Some("chat.example")));
        assert!(rule.allows(Some("https://chat.example"), Some("chat.example")));
        assert!(rule.allows(Some("http://Chat.Example:8080"), Some("chat.example:8080")));
        assert!(rule.allows(Some("http://chat.example"), Some("chat.example:80")));
        assert!(!rule.allows(Some("http://chat.example:8081"), Some("chat.example:8080")));
        assert!(!rule.allows(Some("https://evil.example"), Some("chat.example")));
        assert!(!rule.allows(Some("null"), Some("chat.example")));
        assert!(!rule.allows(Some("https://chat.example"), None));
    }

    #[test]
    fn lists_and_any() {
        let rule = parse(&["https://a.example/", "http://b.example:8080"]).expect("valid");
        assert!(rule.allows(Some("https://A.example"), Some("node:8080")));
        assert!(rule.allows(Some("https://a.example:443"), None));
        assert!(rule.allows(Some("http://b.example:8080"), None));
        assert!(!rule.allows(Some("http://b.example"), None));
        assert!(rule.allows(None, None));
        assert_eq!(parse(&["https://a.example", "*"]), Ok(AllowedOrigins::Any));
        assert!(AllowedOrigins::Any.allows(Some("null"), None));
        assert!(parse(&["a.example"]).is_err());
        assert!(parse(&["ftp://a.example"]).is_err());
        assert!(parse(&["https://a.example/path"]).is_err());
    }
}
