//! Registries for the inner engine (pure): `--registry-mirror` and `--insecure-registry` as
//! dockerd reads them, and [`RegistryAuth`], the credentials a sandbox's client is given
//! (`--registry-auth`: `DOCKER_AUTH_CONFIG`, else the host's docker config).
//!
//! The credentials reach the client as a docker config of their own, `auths` only, written
//! through an exec's stdin into the client's `/dev/shm` (a tmpfs: never in an image layer,
//! `docker diff` or `docker commit`), 0600 in a 0700 directory, `DOCKER_CONFIG` pointing there
//! for the COMMANDs and [`Sandbox::exec`](crate::Sandbox::exec). Nothing of them is in a
//! label, an argument, an event or a log line; their `Debug` names the registries only.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};

/// Where the client's copy of the credentials lives (a tmpfs every container has).
pub(crate) const CONFIG_DIR: &str = "/dev/shm/didx-docker";

/// dockerd's `--registry-mirror=URL` for `url`: `http://` or `https://`, a host, an optional
/// port, no credentials, path, query or fragment.
pub fn mirror_arg(url: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid("--registry-mirror value", url, format!("{why}: a URL such as https://mirror.example:5000"));
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or_else(|| bad("no http:// or https://"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.contains(['/', '?', '#']) {
        return Err(bad("a mirror is a host, not a path"));
    }
    if host.contains('@') {
        return Err(bad("credentials in the URL would show in the server's arguments (use --registry-auth)"));
    }
    check_host_port(host).map_err(|why| bad(&why))?;
    Ok(format!("--registry-mirror={url}"))
}

/// dockerd's `--insecure-registry=HOST` for `host`: `HOST[:PORT]` or a CIDR block (plain HTTP
/// or an unverified certificate allowed there).
pub fn insecure_arg(host: &str) -> Result<String> {
    let bad =
        |why: String| Error::invalid("--insecure-registry value", host, format!("{why}: HOST[:PORT] or a CIDR block, e.g. 10.0.0.5:5000"));
    if host.contains("://") {
        return Err(bad("no scheme".into()));
    }
    if let Some((ip, bits)) = host.split_once('/') {
        let ip: std::net::IpAddr = ip.parse().map_err(|_| bad(format!("'{ip}' is not an address")))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        bits.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| bad(format!("'{bits}' is not a prefix length")))?;
    } else {
        check_host_port(host).map_err(bad)?;
    }
    Ok(format!("--insecure-registry={host}"))
}

/// `HOST[:PORT]`, `[V6]:PORT` or a bare address: a name of letters, digits, `-`, `.`, `_`.
fn check_host_port(s: &str) -> std::result::Result<(), String> {
    if let Some(bracketed) = s.strip_prefix('[') {
        let (addr, port) = bracketed.split_once(']').ok_or("an unclosed [")?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| format!("'{addr}' is not an IPv6 address"))?;
        return match port.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map(|_| ()).map_err(|_| format!("'{p}' is not a port")),
            None if port.is_empty() => Ok(()),
            None => Err(format!("'{port}' after the address")),
        };
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(());
    }
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        p.parse::<u16>().map_err(|_| format!("'{p}' is not a port"))?;
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        return Err(format!("'{name}' is not a host name"));
    }
    Ok(())
}

/// Registry credentials for a sandbox's client (`--registry-auth`): the `auths` of a docker
/// config, each registry's `auth` (or `username` and `password`, or `identitytoken`). Its
/// `Debug` shows the registries, never what they are given.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    auths: BTreeMap<String, Value>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth").field("registries", &self.registries()).finish_non_exhaustive()
    }
}

/// The keys of an `auths` entry that carry a credential (the others are dropped).
const CREDENTIAL_KEYS: [&str; 5] = ["auth", "username", "password", "identitytoken", "registrytoken"];

impl RegistryAuth {
    /// The credentials of `json`, a docker config (`{"auths": {REGISTRY: {"auth": …}}}`, as
    /// `DOCKER_AUTH_CONFIG` and `~/.docker/config.json` hold them); `source` names it in
    /// errors. Registries without a credential are dropped; none left is an error, and so is
    /// a config whose credentials a helper keeps (`credsStore`, `credHelpers`: not read).
    pub fn parse(json: &str, source: &str) -> Result<RegistryAuth> {
        let what = "registry credentials";
        let config: Value = serde_json::from_str(json).map_err(|e| {
            Error::invalid(what, format!("{source}: not JSON: {e}"), "a docker config: {\"auths\": {\"REGISTRY\": {\"auth\": \"…\"}}}")
        })?;
        let mut auths = BTreeMap::new();
        for (registry, entry) in config.get("auths").and_then(Value::as_object).into_iter().flatten() {
            let kept: serde_json::Map<String, Value> = entry
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| CREDENTIAL_KEYS.contains(&k.as_str()) && v.as_str().is_some_and(|s| !s.is_empty()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !kept.is_empty() {
                auths.insert(registry.clone(), Value::Object(kept));
            }
        }
        if auths.is_empty() {
            let helpers = config.get("credsStore").is_some() || config.get("credHelpers").is_some();
            let fix = if helpers {
                "its credentials are kept by a credential helper (credsStore, credHelpers), which didx does not run: set DOCKER_AUTH_CONFIG to a config with the auths"
            } else {
                "docker login first, or set DOCKER_AUTH_CONFIG to {\"auths\": {\"REGISTRY\": {\"auth\": \"BASE64(USER:PASSWORD)\"}}}"
            };
            return Err(Error::invalid(what, format!("{source}: no registry with a credential"), fix));
        }
        Ok(RegistryAuth { auths })
    }

    /// What `--registry-auth` reads: `DOCKER_AUTH_CONFIG` when set, else the host's docker
    /// config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
    pub fn from_host() -> Result<RegistryAuth> {
        if let Some(json) = std::env::var("DOCKER_AUTH_CONFIG").ok().filter(|v| !v.trim().is_empty()) {
            return RegistryAuth::parse(&json, "DOCKER_AUTH_CONFIG");
        }
        let dir = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(d) => std::path::PathBuf::from(d),
            None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker"),
        };
        let path = dir.join("config.json");
        let json = std::fs::read_to_string(&path).map_err(|e| {
            Error::invalid(
                "registry credentials",
                format!("{}: {e}", path.display()),
                "docker login first, or set DOCKER_AUTH_CONFIG (or DOCKER_CONFIG)",
            )
        })?;
        RegistryAuth::parse(&json, &path.display().to_string())
    }

    /// The registries it has credentials for.
    pub fn registries(&self) -> Vec<&str> {
        self.auths.keys().map(String::as_str).collect()
    }

    /// The client's config file: `{"auths": …}`, nothing else.
    pub(crate) fn config_json(&self) -> String {
        serde_json::json!({ "auths": self.auths }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_is_an_http_or_https_host_without_credentials_or_path() {
        assert_eq!(mirror_arg("https://m.example:5000").unwrap(), "--registry-mirror=https://m.example:5000");
        assert_eq!(mirror_arg("http://10.0.0.5:5000/").unwrap(), "--registry-mirror=http://10.0.0.5:5000/");
        assert!(mirror_arg("http://[fd00::1]:5000").is_ok());
        for bad in ["m.example", "ftp://m.example", "https://u:p@m.example", "https://m.example/v2", "https://m.example:x", "https://"] {
            let e = mirror_arg(bad).unwrap_err().to_string();
            assert!(e.contains("--registry-mirror"), "{bad}: {e}");
        }
        assert!(mirror_arg("https://u:p@m.example").unwrap_err().to_string().contains("--registry-auth"));
    }

    #[test]
    fn an_insecure_registry_is_a_host_with_a_port_or_a_cidr_block() {
        for ok in ["10.0.0.5:5000", "reg.local", "10.0.0.0/8", "fd00::/8", "[fd00::1]:5000", "my_reg:443"] {
            assert_eq!(insecure_arg(ok).unwrap(), format!("--insecure-registry={ok}"));
        }
        for bad in ["http://reg:5000", "10.0.0.0/33", "reg:port", "", "a b", "x/8"] {
            assert!(insecure_arg(bad).unwrap_err().to_string().contains("--insecure-registry"), "{bad}");
        }
    }

    #[test]
    fn credentials_keep_only_the_auths_with_a_credential_and_never_show_in_debug() {
        let json = r#"{"auths": {"reg:5000": {"auth": "dTpzZWNyZXQ=", "email": "x@y"}, "empty.example": {},
                       "tok.example": {"identitytoken": "T0KEN"}}, "credsStore": "desktop", "proxies": {"default": {}}}"#;
        let a = RegistryAuth::parse(json, "test").unwrap();
        assert_eq!(a.registries(), ["reg:5000", "tok.example"]);
        let config: Value = serde_json::from_str(&a.config_json()).unwrap();
        assert_eq!(config, serde_json::json!({"auths": {"reg:5000": {"auth": "dTpzZWNyZXQ="}, "tok.example": {"identitytoken": "T0KEN"}}}));
        let shown = format!("{a:?}");
        assert!(shown.contains("reg:5000") && !shown.contains("dTpzZWNyZXQ") && !shown.contains("T0KEN"), "{shown}");
    }

    #[test]
    fn a_config_without_credentials_says_why_and_what_to_do() {
        let e = RegistryAuth::parse(r#"{"auths": {"r": {}}, "credsStore": "desktop"}"#, "cfg").unwrap_err().to_string();
        assert!(e.contains("credential helper") && e.contains("DOCKER_AUTH_CONFIG"), "{e}");
        let e = RegistryAuth::parse("{}", "cfg").unwrap_err().to_string();
        assert!(e.contains("docker login"), "{e}");
        let e = RegistryAuth::parse("{not json", "DOCKER_AUTH_CONFIG").unwrap_err().to_string();
        assert!(e.contains("DOCKER_AUTH_CONFIG") && e.contains("not JSON"), "{e}");
    }
}
