//! Which engine a program means when it names none: `DOCKER_HOST`, else the docker CLI's
//! current context (`DOCKER_CONTEXT`, else `currentContext` in `$DOCKER_CONFIG/config.json`),
//! else the local socket — the docker CLI's own order.
//!
//! A context lives in `$DOCKER_CONFIG/contexts/meta/<sha256 of its name>/meta.json` (its
//! `Endpoints.docker.Host`) and, when it uses TLS, `…/contexts/tls/<sha256>/docker/`
//! (`ca.pem`, `cert.pem`, `key.pem`). Pure: the environment and the files are read through the
//! arguments, so every branch is unit-tested.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Default engine address when neither `-H` nor `DOCKER_HOST` (nor a docker context) names one.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Where the address came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `DOCKER_HOST`.
    DockerHost,
    /// A docker context, by name.
    Context(String),
    /// Nothing named one: the local socket.
    Default,
}

/// The engine to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Its address (`unix://…`, `tcp://…`).
    pub host: String,
    /// The context's TLS directory (ca.pem, cert.pem, key.pem), when it has one.
    pub tls_dir: Option<PathBuf>,
    /// Where it came from.
    pub source: Source,
}

/// The docker CLI's configuration directory: `DOCKER_CONFIG`, else `~/.docker`.
fn config_dir(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    var("DOCKER_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")))
}

/// Resolve the engine: `var` reads the environment, `read` a file (None when absent).
pub(crate) fn resolve(var: &dyn Fn(&str) -> Option<String>, read: &dyn Fn(&Path) -> Option<String>) -> Result<Target> {
    if let Some(host) = var("DOCKER_HOST").filter(|h| !h.is_empty()) {
        return Ok(Target { host, tls_dir: None, source: Source::DockerHost });
    }
    let default = Target { host: DEFAULT_HOST.to_string(), tls_dir: None, source: Source::Default };
    let Some(dir) = config_dir(var) else { return Ok(default) };
    let name = match var("DOCKER_CONTEXT").filter(|c| !c.is_empty()) {
        Some(n) => n,
        None => {
            let Some(config) = read(&dir.join("config.json")) else { return Ok(default) };
            let config: serde_json::Value = serde_json::from_str(&config).map_err(|e| Error::Context {
                name: String::new(),
                why: format!("{} is not valid JSON: {e}", dir.join("config.json").display()),
            })?;
            match config.get("currentContext").and_then(|c| c.as_str()).filter(|c| !c.is_empty()) {
                Some(n) => n.to_string(),
                None => return Ok(default),
            }
        }
    };
    if name == "default" {
        return Ok(default);
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    let meta_path = dir.join("contexts/meta").join(&digest).join("meta.json");
    let meta =
        read(&meta_path).ok_or_else(|| Error::Context { name: name.clone(), why: format!("{} does not exist", meta_path.display()) })?;
    let meta: serde_json::Value = serde_json::from_str(&meta)
        .map_err(|e| Error::Context { name: name.clone(), why: format!("{} is not valid JSON: {e}", meta_path.display()) })?;
    let endpoint = meta.pointer("/Endpoints/docker");
    let host = endpoint
        .and_then(|e| e.get("Host"))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Context { name: name.clone(), why: format!("{} names no Endpoints.docker.Host", meta_path.display()) })?;
    let skip_verify = endpoint.and_then(|e| e.get("SkipTLSVerify")).and_then(|v| v.as_bool()).unwrap_or(false);
    if skip_verify {
        return Err(Error::Context { name, why: "it sets SkipTLSVerify, which didx does not do (verification stays on)".into() });
    }
    let tls = dir.join("contexts/tls").join(&digest).join("docker");
    let tls_dir = read(&tls.join("ca.pem")).is_some().then_some(tls);
    Ok(Target { host: host.to_string(), tls_dir, source: Source::Context(name) })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn run(vars: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Target> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let files: HashMap<PathBuf, String> = files.iter().map(|(k, v)| (PathBuf::from(k), v.to_string())).collect();
        resolve(&|k| vars.get(k).cloned(), &|p| files.get(p).cloned())
    }

    fn digest(name: &str) -> String {
        hex::encode(Sha256::digest(name.as_bytes()))
    }

    #[test]
    fn docker_host_wins_over_any_context() {
        let t = run(&[("DOCKER_HOST", "tcp://h:2376"), ("DOCKER_CONTEXT", "remote"), ("HOME", "/h")], &[]).unwrap();
        assert_eq!(t, Target { host: "tcp://h:2376".into(), tls_dir: None, source: Source::DockerHost });
    }

    #[test]
    fn no_config_or_default_context_means_the_local_socket() {
        assert_eq!(run(&[("HOME", "/h")], &[]).unwrap().source, Source::Default);
        assert_eq!(run(&[], &[]).unwrap().host, DEFAULT_HOST);
        assert_eq!(
            run(&[("HOME", "/h")], &[("/h/.docker/config.json", r#"{"currentContext":"default"}"#)]).unwrap().source,
            Source::Default
        );
        assert_eq!(run(&[("HOME", "/h")], &[("/h/.docker/config.json", r#"{"auths":{}}"#)]).unwrap().source, Source::Default);
    }

    #[test]
    fn the_current_context_is_read_with_its_tls_directory() {
        let d = digest("rootless");
        let meta = format!("/cfg/contexts/meta/{d}/meta.json");
        let ca = format!("/cfg/contexts/tls/{d}/docker/ca.pem");
        let files = [
            ("/cfg/config.json", r#"{"currentContext":"rootless"}"#),
            (
                meta.as_str(),
                r#"{"Name":"rootless","Endpoints":{"docker":{"Host":"unix:///run/user/1000/docker.sock","SkipTLSVerify":false}}}"#,
            ),
        ];
        let t = run(&[("DOCKER_CONFIG", "/cfg"), ("HOME", "/h")], &files).unwrap();
        assert_eq!(
            t,
            Target { host: "unix:///run/user/1000/docker.sock".into(), tls_dir: None, source: Source::Context("rootless".into()) }
        );
        let mut with_tls = files.to_vec();
        with_tls.push((ca.as_str(), "PEM"));
        let t = run(&[("DOCKER_CONFIG", "/cfg")], &with_tls).unwrap();
        assert_eq!(t.tls_dir, Some(PathBuf::from(format!("/cfg/contexts/tls/{d}/docker"))));
    }

    #[test]
    fn docker_context_overrides_the_config_file() {
        let d = digest("ci");
        let meta = format!("/h/.docker/contexts/meta/{d}/meta.json");
        let files = [
            ("/h/.docker/config.json", r#"{"currentContext":"other"}"#),
            (meta.as_str(), r#"{"Endpoints":{"docker":{"Host":"tcp://ci:2376"}}}"#),
        ];
        let t = run(&[("HOME", "/h"), ("DOCKER_CONTEXT", "ci")], &files).unwrap();
        assert_eq!(t.host, "tcp://ci:2376");
    }

    #[test]
    fn broken_contexts_are_errors_naming_the_context() {
        let missing = run(&[("HOME", "/h"), ("DOCKER_CONTEXT", "gone")], &[]).unwrap_err();
        assert!(matches!(&missing, Error::Context { name, .. } if name == "gone"), "{missing}");
        let d = digest("insecure");
        let meta = format!("/h/.docker/contexts/meta/{d}/meta.json");
        let skip = run(
            &[("HOME", "/h"), ("DOCKER_CONTEXT", "insecure")],
            &[(meta.as_str(), r#"{"Endpoints":{"docker":{"Host":"tcp://x:2376","SkipTLSVerify":true}}}"#)],
        )
        .unwrap_err();
        assert!(skip.to_string().contains("SkipTLSVerify"), "{skip}");
        let bad = run(&[("HOME", "/h")], &[("/h/.docker/config.json", "{not json")]).unwrap_err();
        assert!(matches!(bad, Error::Context { .. }));
    }
}
