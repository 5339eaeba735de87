//! Finding environments by label: the `rpt` report, removal of one environment, and `all`.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::future::join_all;

use crate::engine::Engine;
use crate::error::Result;
use crate::labels;
use crate::publish::{Proto, Published};
use bollard::models::PortSummaryTypeEnum;

/// One container of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `server` or `client` (from its label).
    pub role: String,
    /// Container name.
    pub name: String,
    /// Engine state (`running`, `exited`, …).
    pub state: String,
}

/// One environment as found on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvSummary {
    /// Environment id.
    pub id: String,
    /// Unix time it was created, from its labels.
    pub created: Option<u64>,
    /// Its containers, server first.
    pub members: Vec<Member>,
    /// The pool key, for an environment started for the warm pool.
    pub pool: Option<String>,
    /// When its certificates expire (Unix seconds), from its server's labels.
    pub expires: Option<u64>,
    /// `--sv` and `--cv` (from the server's and the client's labels).
    pub versions: (Option<String>, Option<String>),
    /// Server and client images, as the engine names them.
    pub images: (Option<String>, Option<String>),
    /// What removes it (see the `io.didx.policy` label); `None` for one made by an older didx.
    pub policy: Option<String>,
    /// Who made it, `USER@HOST pid PID`.
    pub owner: Option<String>,
    /// The block of the address range its inner engine's networks are in (`A.B.C.D/20`).
    pub net: Option<String>,
    /// The server's ports published on the host, but the inner engine's own.
    pub published: Vec<Published>,
    /// The inner engine's address on the host, `tcp://127.0.0.1:PORT`.
    pub endpoint: Option<String>,
    /// `host` for a `--engine host` environment (no server; its client uses the engine
    /// itself), `None` for one with an inner engine.
    pub engine: Option<String>,
    /// How many containers its `--engine host` client started (and didx will remove with it).
    pub started: usize,
}

impl EnvSummary {
    /// One word for its state. A pooled environment no run has claimed (its client still under
    /// a pool-only name, see the pool) is `ready` (server and client running: a run may
    /// claim it), `starting` (no client yet, or one still being made), or the state of its
    /// first container that stopped (`exited`, …). Any other is `running` (every container
    /// running: a claimed pooled one included), else the first container not running's state
    /// (`exited`, `created`, `paused`, …), or `partial` when a member is missing.
    pub fn state(&self) -> String {
        let not_running = self.members.iter().find(|m| m.state != "running");
        let clients: Vec<&Member> = self.members.iter().filter(|m| m.role == labels::Role::Client.as_str()).collect();
        if self.pool.is_some() {
            let stages: Vec<Option<bool>> = clients.iter().map(|c| super::id::unclaimed_client(&self.id, &c.name)).collect();
            if stages.iter().all(Option::is_some) {
                let has_server = self.members.iter().any(|m| m.role == labels::Role::Server.as_str());
                let stopped = self.members.iter().find(|m| matches!(m.state.as_str(), "exited" | "dead" | "removing"));
                return match (stopped, not_running) {
                    (Some(m), _) => m.state.clone(),
                    (None, None) if has_server && stages.contains(&Some(true)) => "ready".into(),
                    (None, None) if !has_server => "partial".into(),
                    (None, Some(m)) if m.state != "created" => m.state.clone(),
                    (None, _) => "starting".into(),
                };
            }
        }
        let complete = if self.engine.is_some() { 1 } else { 2 };
        match not_running {
            None if self.members.len() == complete => "running".into(),
            None => "partial".into(),
            Some(m) => m.state.clone(),
        }
    }
}

/// The server's published ports: the inner engine's endpoint (2376 on the loopback address),
/// and the others.
fn ports(ports: &[bollard::models::PortSummary]) -> (Option<String>, Vec<Published>) {
    let mut endpoint = None;
    let mut published = Vec::new();
    for p in ports {
        let (Some(ip), Some(host_port)) = (&p.ip, p.public_port) else { continue };
        let proto = match p.typ {
            Some(PortSummaryTypeEnum::UDP) => Proto::Udp,
            Some(PortSummaryTypeEnum::TCP | PortSummaryTypeEnum::EMPTY) | None => Proto::Tcp,
            Some(_) => continue,
        };
        if p.private_port == super::recipe::TLS_PORT && ip == super::recipe::PUBLISHED_IP && proto == Proto::Tcp {
            endpoint = Some(format!("tcp://{ip}:{host_port}"));
        } else if !published.iter().any(|q: &Published| q.ip == *ip && q.host_port == host_port && q.proto == proto) {
            published.push(Published { ip: ip.clone(), host_port, env_port: p.private_port, proto });
        }
    }
    published.sort_by_key(|p| (p.env_port, p.host_port));
    (endpoint, published)
}

/// A listed container's name, without the engine's leading `/`.
pub(super) use crate::backend::container_name;

/// Every didx environment on the engine, oldest first.
pub async fn list(engine: &Engine) -> Result<Vec<EnvSummary>> {
    let containers = engine.containers(labels::filter(None)).await?;
    let mut envs: BTreeMap<String, EnvSummary> = BTreeMap::new();
    for c in containers {
        let name = container_name(&c);
        let l = c.labels.unwrap_or_default();
        let Some(id) = l.get(labels::ENV) else { continue };
        let entry = envs.entry(id.clone()).or_insert_with(|| EnvSummary {
            id: id.clone(),
            created: l.get(labels::CREATED).and_then(|v| v.parse().ok()),
            ..Default::default()
        });
        match l.get(labels::ROLE).map(String::as_str) {
            Some(r) if r == labels::Role::Server.as_str() => {
                entry.pool = l.get(labels::POOL).cloned();
                entry.expires = l.get(labels::EXPIRES).and_then(|v| v.parse().ok());
                entry.versions.0 = l.get(labels::VERSION).cloned();
                entry.images.0 = c.image.clone();
                entry.policy = l.get(labels::POLICY).cloned();
                entry.owner = l.get(labels::OWNER).cloned();
                entry.net = l.get(labels::NET).cloned();
                (entry.endpoint, entry.published) = ports(c.ports.as_deref().unwrap_or_default());
            }
            Some(r) if r == labels::Role::Client.as_str() => {
                entry.versions.1 = l.get(labels::VERSION).cloned();
                entry.images.1 = c.image.clone();
                if let Some(engine) = l.get(labels::ENGINE) {
                    entry.engine = Some(engine.clone());
                    entry.policy = l.get(labels::POLICY).cloned();
                    entry.owner = l.get(labels::OWNER).cloned();
                }
            }
            // What a `--engine host` client started: counted, not a member.
            Some(r) if r == labels::Role::Started.as_str() => {
                entry.started += 1;
                continue;
            }
            // A `--engine host` environment's reaper: not a member either.
            Some(r) if r == labels::Role::Reaper.as_str() => continue,
            _ => {}
        }
        entry.members.push(Member {
            role: l.get(labels::ROLE).cloned().unwrap_or_default(),
            name,
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        });
    }
    let mut out: Vec<EnvSummary> = envs.into_values().collect();
    for e in &mut out {
        e.members.sort_by(|a, b| b.role.cmp(&a.role)); // "server" before "client"
    }
    out.sort_by_key(|e| (e.created, e.id.clone()));
    Ok(out)
}

/// Remove everything labelled with environment `id` (containers with their anonymous volumes,
/// then volumes and networks); returns the names of the containers removed.
pub async fn remove(engine: &Engine, id: &str) -> Result<Vec<String>> {
    remove_matching(engine, Some(id)).await
}

/// Remove every didx environment and every volume and network didx created; returns the
/// names of the containers removed.
pub async fn remove_all(engine: &Engine) -> Result<Vec<String>> {
    remove_matching(engine, None).await
}

async fn remove_matching(engine: &Engine, id: Option<&str>) -> Result<Vec<String>> {
    let listed = std::time::SystemTime::now();
    let names = engine.remove_labelled_with(id).await?;
    // The client certificates host tools were given (`didx env`, `host:` commands).
    match id {
        Some(id) => super::certdir::remove(id),
        None => {
            super::certdir::sweep(engine.host(), &Default::default(), listed);
        }
    }
    Ok(names)
}

/// How old an unused volume of didx must be before [`sweep`] takes it: a volume is made a
/// moment before the container that uses it, and must not be taken in between.
const SWEEP_AFTER_SECS: u64 = 60;

/// [`SWEEP_AFTER_SECS`], or `DIDX_SWEEP_AFTER_SECS` when set (for tests: it lets a test make
/// what the sweep considers old in seconds, while the sweeps of other didx processes on the
/// same engine still leave it alone).
fn sweep_after_secs() -> u64 {
    std::env::var("DIDX_SWEEP_AFTER_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(SWEEP_AFTER_SECS)
}

/// Remove what no lease can: containers of didx created and never started whose environment
/// has no live container, and volumes of didx that no container uses and whose environment has
/// no container left (an engine restart removes didx's AutoRemove containers but leaves their
/// volumes), each made more than a minute ago. Nothing of an environment with a live owner (its
/// server, client or reaper running) is taken: a `--engine host` client's `docker create`
/// stays created as long as it likes. Run by every didx start and by `pool up` and `pool down`.
/// Returns the volumes removed.
pub async fn sweep(engine: &Engine) -> Result<Vec<String>> {
    sweep_started(engine).await?;
    let now = crate::util::now_secs();
    let after = sweep_after_secs();
    let old = |l: Option<&std::collections::HashMap<String, String>>| {
        l.and_then(|l| l.get(labels::CREATED)).and_then(|c| c.parse::<u64>().ok()).is_some_and(|c| c + after <= now)
    };
    // Created and never started: what a didx killed while its create request was in flight
    // leaves (the engine API has no create-and-start; every other moment of a start is held).
    let all = engine.containers(labels::filter(None)).await?;
    let stale = abandoned_creates(&all, now, after);
    for (id, r) in stale.iter().zip(join_all(stale.iter().map(|c| engine.remove_container(c))).await) {
        if let Err(e) = r {
            tracing::warn!(container = %id, error = %e, "cannot remove a never-started didx container");
        }
    }
    let mut dangling = labels::filter(None);
    dangling.insert("dangling".to_string(), vec!["true".to_string()]);
    let listed = std::time::SystemTime::now();
    let (volumes, containers) = tokio::join!(engine.volumes_labelled(dangling), engine.containers(labels::filter(None)));
    let live: std::collections::HashSet<String> =
        containers?.into_iter().filter_map(|c| c.labels.and_then(|mut l| l.remove(labels::ENV))).collect();
    // Client certificates of environments gone without didx (reaped, `docker rm -f`).
    super::certdir::sweep(engine.host(), &live, listed);
    let orphans: Vec<String> = volumes?
        .into_iter()
        .filter(|(_, l)| old(Some(l)) && l.get(labels::ENV).is_some_and(|env| !live.contains(env)))
        .map(|(name, _)| name)
        .collect();
    let mut removed = Vec::new();
    for (name, r) in orphans.iter().zip(join_all(orphans.iter().map(|v| engine.remove_volume(v))).await) {
        match r {
            Ok(()) => removed.push(name.clone()),
            Err(e) => tracing::warn!(volume = %name, error = %e, "cannot remove an orphaned didx volume"),
        }
    }
    Ok(removed)
}

/// The ids of `containers` (didx's, listed with their labels and states) created and never
/// started, made (their [`labels::CREATED`]) at least `after` seconds before `now`, whose
/// environment has no live container: none running, paused or restarting. A create of an
/// environment whose owner lives is that owner's business.
fn abandoned_creates(containers: &[bollard::models::ContainerSummary], now: u64, after: u64) -> Vec<String> {
    let old = |l: Option<&HashMap<String, String>>| {
        l.and_then(|l| l.get(labels::CREATED)).and_then(|c| c.parse::<u64>().ok()).is_some_and(|c| c + after <= now)
    };
    use bollard::models::ContainerSummaryStateEnum as S;
    let env = |c: &bollard::models::ContainerSummary| c.labels.as_ref().and_then(|l| l.get(labels::ENV)).cloned();
    let live: HashSet<String> =
        containers.iter().filter(|c| matches!(c.state, Some(S::RUNNING | S::PAUSED | S::RESTARTING))).filter_map(env).collect();
    containers
        .iter()
        .filter(|c| c.state == Some(S::CREATED) && old(c.labels.as_ref()))
        .filter(|c| env(c).is_none_or(|e| !live.contains(&e)))
        .filter_map(|c| c.id.clone())
        .collect()
}

/// Remove what `--engine host` clients started (labelled [`labels::Role::Started`]) whose
/// client is gone: a run killed before its clean-up leaves them, as its client's lease ends
/// only the client. (A client kept by policy keeps them.)
async fn sweep_started(engine: &Engine) -> Result<()> {
    let mut started = labels::filter(None);
    if let Some(l) = started.get_mut("label") {
        l.push(format!("{}={}", labels::ROLE, labels::Role::Started.as_str()));
    }
    let (containers, volumes, networks) =
        tokio::join!(engine.containers(labels::filter(None)), engine.volumes_labelled(started.clone()), engine.networks_labelled(started));
    let containers = containers?;
    let role = |l: &HashMap<String, String>| l.get(labels::ROLE).cloned().unwrap_or_default();
    let with_client: HashSet<String> = containers
        .iter()
        .filter_map(|c| c.labels.as_ref())
        .filter(|l| role(l) != labels::Role::Started.as_str())
        .filter_map(|l| l.get(labels::ENV).cloned())
        .collect();
    let mut envs: HashSet<String> = containers
        .iter()
        .filter_map(|c| c.labels.as_ref())
        .filter(|l| role(l) == labels::Role::Started.as_str())
        .filter_map(|l| l.get(labels::ENV).cloned())
        .collect();
    envs.extend(volumes?.into_iter().chain(networks?).filter_map(|(_, mut l)| l.remove(labels::ENV)));
    for env in envs.difference(&with_client) {
        tracing::info!(%env, "removing what a gone --engine host client started");
        remove(engine, env).await?;
    }
    Ok(())
}

/// [`sweep`] where its failure must not fail the caller (a start, `pool up`, `pool down`):
/// logged, not returned.
pub async fn sweep_logged(engine: &Engine) {
    if let Err(e) = sweep(engine).await {
        tracing::warn!(error = %e, "sweeping what earlier didx environments left failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortSummary;

    fn port(ip: &str, public: u16, private: u16, typ: PortSummaryTypeEnum) -> PortSummary {
        PortSummary { ip: Some(ip.into()), private_port: private, public_port: Some(public), typ: Some(typ) }
    }

    #[test]
    fn the_tls_port_on_loopback_is_the_endpoint_and_the_rest_are_published() {
        let (endpoint, published) = ports(&[
            port("127.0.0.1", 40001, 2376, PortSummaryTypeEnum::TCP),
            port("0.0.0.0", 8080, 80, PortSummaryTypeEnum::TCP),
            port("127.0.0.1", 5353, 53, PortSummaryTypeEnum::UDP),
            PortSummary { ip: None, private_port: 9000, public_port: None, typ: None },
        ]);
        assert_eq!(endpoint.as_deref(), Some("tcp://127.0.0.1:40001"));
        let shown: Vec<String> = published.iter().map(|p| format!("{}:{}->{}/{}", p.ip, p.host_port, p.env_port, p.proto.as_str())).collect();
        assert_eq!(shown, ["127.0.0.1:5353->53/udp", "0.0.0.0:8080->80/tcp"]);
    }

    #[test]
    fn only_old_creates_of_environments_with_no_live_container_are_abandoned() {
        use bollard::models::{ContainerSummary, ContainerSummaryStateEnum as S};
        let c = |id: &str, env: Option<&str>, state: S, created: u64| ContainerSummary {
            id: Some(id.into()),
            state: Some(state),
            labels: Some(
                env.map(|e| labels::for_resource(e, labels::Role::Started, created))
                    .unwrap_or_else(|| HashMap::from([(labels::CREATED.to_string(), created.to_string())])),
            ),
            ..Default::default()
        };
        let all = [
            // A live `--engine host` run: its client runs, its `docker create` is old.
            c("live-client", Some("e1"), S::RUNNING, 10),
            c("live-create", Some("e1"), S::CREATED, 10),
            // An environment whose every container is gone or ended: its create is abandoned.
            c("gone-create", Some("e2"), S::CREATED, 10),
            c("gone-exited", Some("e2"), S::EXITED, 10),
            // A paused one is live too.
            c("paused", Some("e3"), S::PAUSED, 10),
            c("paused-create", Some("e3"), S::CREATED, 10),
            // Too young, whatever its environment.
            c("young-create", Some("e4"), S::CREATED, 95),
            // No environment label: only its age counts.
            c("unlabelled-create", None, S::CREATED, 10),
        ];
        assert_eq!(abandoned_creates(&all, 100, 60), ["gone-create", "unlabelled-create"]);
    }

    #[test]
    fn state_says_running_ready_or_what_is_wrong() {
        let m = |role: &str, name: &str, state: &str| Member { role: role.into(), name: name.into(), state: state.into() };
        let e = |members: Vec<Member>, pool: Option<&str>| EnvSummary { id: "e1".into(), members, pool: pool.map(String::from), ..Default::default() };
        let server = |state: &str| m("server", "dind_e1_server_latest", state);
        let run = |state: &str| m("client", "dind_e1_client_latest", state);
        let pooled = |state: &str| m("client", "dind_e1_pooled_latest", state);
        let pooling = |state: &str| m("client", "dind_e1_pooling_latest", state);
        let k = Some("k");
        for (members, pool, want) in [
            // Not pooled.
            (vec![server("running"), run("running")], None, "running"),
            (vec![server("running"), run("paused")], None, "paused"),
            (vec![server("exited"), run("running")], None, "exited"),
            (vec![server("running")], None, "partial"),
            // Pooled and unclaimed: the client runs under its pool-only name.
            (vec![server("running"), pooled("running")], k, "ready"),
            (vec![server("running"), pooled("created")], k, "starting"),
            (vec![server("running"), pooling("running")], k, "starting"),
            (vec![server("running"), pooling("created")], k, "starting"),
            (vec![server("running")], k, "starting"),
            (vec![server("created")], k, "starting"),
            (vec![server("exited"), pooled("running")], k, "exited"),
            (vec![server("running"), pooled("exited")], k, "exited"),
            (vec![server("running"), pooled("paused")], k, "paused"),
            (vec![pooled("running")], k, "partial"),
            // Claimed (renamed to its run name): a run's, as any other.
            (vec![server("running"), run("running")], k, "running"),
            (vec![server("running"), run("paused")], k, "paused"),
            (vec![server("exited"), run("exited")], k, "exited"),
            // Another environment's pooled name is not this one's: claimed.
            (vec![server("running"), m("client", "dind_e2_pooled_latest", "running")], k, "running"),
        ] {
            let shown = format!("{members:?} pool {pool:?}");
            assert_eq!(e(members, pool).state(), want, "{shown}");
        }
        let host = |members: Vec<Member>| EnvSummary { members, engine: Some("host".into()), ..Default::default() };
        assert_eq!(host(vec![m("client", "c", "running")]).state(), "running");
        assert_eq!(host(vec![m("client", "c", "exited")]).state(), "exited");
    }
}
