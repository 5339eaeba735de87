//! Host tools reaching an environment: the variables that point any docker client of this
//! machine at its inner engine (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`, the
//! certificate files in a private directory of didx's cache, see `certdir.rs`), and the ports
//! its server publishes (`--publish`). Found by id or container name for `didx env ID`, or for
//! a running [`Environment`] (the `host:` COMMAND form).

use std::collections::HashSet;
use std::path::PathBuf;

use crate::backend::docker::container_name;
use crate::backend::docker::recipe::{CLIENT_CERT_PATH, PUBLISHED_IP};
use super::certdir;
use super::handle::Environment;
use super::id::{Container, EnvId};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::labels;
use crate::publish::{Proto, Published};

/// How a host tool reaches an environment's inner engine, and what else its server publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAccess {
    /// The environment id.
    pub id: String,
    /// `tcp://127.0.0.1:PORT`: mutual TLS, the server certificate names 127.0.0.1.
    pub docker_host: String,
    /// The private directory (0700) holding `ca.pem`, `cert.pem`, `key.pem` (0600); removed
    /// with the environment.
    pub cert_path: PathBuf,
    /// The ports published with `--publish`, as bound (the real host ports).
    pub published: Vec<Published>,
}

impl HostAccess {
    /// `DOCKER_HOST`, `DOCKER_TLS_VERIFY=1`, `DOCKER_CERT_PATH`, as a docker client reads them.
    pub fn docker_env(&self) -> Vec<(String, String)> {
        vec![
            ("DOCKER_HOST".to_string(), self.docker_host.clone()),
            ("DOCKER_TLS_VERIFY".to_string(), "1".to_string()),
            ("DOCKER_CERT_PATH".to_string(), self.cert_path.display().to_string()),
        ]
    }
}

/// An id or container name as didx makes them; anything else is a usage error.
fn check_name(id: &str) -> Result<()> {
    let ok = id.len() <= 200 && crate::util::is_engine_name(id);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "environment id",
            id,
            "expected an environment id (the <id> of dind_<id>_server_<ver>) or a server or client container name; didx --clean rpt lists them",
        ))
    }
}

impl Environment {
    /// How a host tool reaches this environment's inner engine: its endpoint, and its client
    /// certificate written to `$DIDX_CACHE_DIR/env/<id>/` (0700; removed with the
    /// environment). For an engine over SSH, the ports are local forwards over its SSH
    /// connection, held as long as this handle. [`Error::EndpointElsewhere`] when the engine
    /// is on another machine and not reached over SSH.
    pub async fn host_access(&self) -> Result<HostAccess> {
        let docker_host = self.endpoint().await?.host;
        let published = self.published().await?;
        let certs = self.client_certificates().await?;
        let cert_path = certdir::write(self.backend.location(), self.id.as_str(), &certs)?;
        Ok(HostAccess { id: self.id.to_string(), docker_host, cert_path, published })
    }

    /// The ports this environment's server publishes (`--publish`), as bound; those reachable
    /// from here only through a forward (an engine over SSH, a cluster) are the forwards' local
    /// ports, held as long as this handle. The rest (UDP, a port on one of the engine host's
    /// other addresses, any port of an engine on another machine reached otherwise) stay as
    /// bound.
    pub async fn published(&self) -> Result<Vec<Published>> {
        let Some(server) = &self.server else { return Ok(Vec::new()) };
        let mut published = self.backend.published(&server.id).await?;
        for p in published.iter_mut().filter(|p| p.proto == Proto::Tcp && (p.ip == PUBLISHED_IP || p.ip == "0.0.0.0")) {
            match self.reach_at(p.env_port, p.host_port).await {
                Ok((port, true)) => (p.host_port, p.ip) = (port, PUBLISHED_IP.to_string()),
                Ok((_, false)) | Err(Error::EndpointElsewhere { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(published)
    }
}

/// `Environment::host_access` for the running environment `id` — its id or its server's or
/// client's container name — on `engine`. First sweeps the certificate directories of this
/// engine's environments that no longer exist (gone without didx: reaped, `docker rm -f`).
/// For an engine over SSH the ports it names are forwards that end with this call: use
/// [`hold_host_access`] there.
pub async fn host_access(engine: &Engine, id: &str) -> Result<HostAccess> {
    view(engine, id).await?.host_access().await
}

/// [`host_access`], with what it opened held: for an engine over SSH, the local forwards its
/// ports are, until [`HeldAccess::until_gone`] returns (the environment ended) or it is
/// dropped. (For an engine on this machine nothing needs holding.)
pub async fn hold_host_access(engine: &Engine, id: &str) -> Result<HeldAccess> {
    let env = view(engine, id).await?;
    let access = env.host_access().await?;
    Ok(HeldAccess { access, env })
}

/// What [`hold_host_access`] found, and the forwards it holds.
#[derive(Debug)]
pub struct HeldAccess {
    /// How a host tool reaches the environment (its ports are the held forwards').
    pub access: HostAccess,
    env: Environment,
}

impl HeldAccess {
    /// Waits until the environment's server stops (removed, reaped, its engine gone), then
    /// ends the forwards.
    pub async fn until_gone(self) -> Result<()> {
        let server = self.env.inner_server()?;
        // A stopped server (or a lost engine) ends the wait either way.
        let _ = self.env.docker("waiting for an environment to end")?.wait(&server.id).await;
        Ok(())
    }
}

/// A handle on the running environment `id` (never removed or released from here).
pub(crate) async fn view(engine: &Engine, id: &str) -> Result<Environment> {
    check_name(id)?;
    let listed = std::time::SystemTime::now();
    let containers = engine.containers(labels::filter(None)).await?;
    let live: HashSet<String> = containers.iter().filter_map(|c| c.labels.as_ref()?.get(labels::ENV).cloned()).collect();
    for gone in certdir::sweep(engine.host(), &live, listed) {
        tracing::info!(env = %gone, "removed the client certificates of an environment no longer on the engine");
    }
    let env_id = containers
        .iter()
        .find_map(|c| {
            let env = c.labels.as_ref()?.get(labels::ENV)?;
            (env == id || container_name(c) == id).then(|| env.clone())
        })
        .ok_or_else(|| Error::NoSuchEnvironment { id: id.to_string(), host: engine.host().to_string() })?;
    let member = |role: labels::Role| {
        containers.iter().find(|c| {
            c.labels.as_ref().is_some_and(|l| l.get(labels::ENV) == Some(&env_id) && l.get(labels::ROLE).map(String::as_str) == Some(role.as_str()))
        })
    };
    if member(labels::Role::Client).and_then(|c| c.labels.as_ref()?.get(labels::ENGINE)).is_some() {
        return Err(Error::NoInnerEngine { id: env_id, host: engine.host().to_string() });
    }
    let server = member(labels::Role::Server);
    let state = |c: Option<&bollard::models::ContainerSummary>| c.and_then(|c| c.state.map(|s| s.to_string())).unwrap_or_else(|| "gone".into());
    let (Some(server), Some(client)) = (server, member(labels::Role::Client)) else {
        return Err(Error::NotRunning {
            id: env_id.clone(),
            server: server.map(container_name).unwrap_or_else(|| format!("of {env_id}")),
            state: if server.is_some() { "without a client".into() } else { state(server) },
        });
    };
    if state(Some(server)) != "running" {
        return Err(Error::NotRunning { id: env_id, server: container_name(server), state: state(Some(server)) });
    }
    let env = Environment {
        backend: crate::backend::docker(engine),
        id: EnvId(env_id),
        server: Some(Container { name: container_name(server), id: server.id.clone().unwrap_or_default() }),
        client: Container { name: container_name(client), id: client.id.clone().unwrap_or_default() },
        client_cert_dir: CLIENT_CERT_PATH,
        // A view of an environment someone else owns: never removed or released from here.
        settled: true,
        leases: Vec::new(),
        exec_as: crate::engine::ExecAs::default(),
        guard: None,
        forwards: Default::default(),
    };
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_checked() {
        for ok in ["abc123", "dind_abc123_server_latest", "dind_x_client_24.0-dind"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a b", "-x", "a/b", "$(x)"] {
            assert!(check_name(bad).unwrap_err().is_usage(), "{bad}");
        }
    }
}
