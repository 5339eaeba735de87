//! Finding didx's environments on a Docker engine by label, removing them, and the sweep of
//! what ended runs left.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::future::join_all;

use super::recipe;
use crate::backend::Swept;
use crate::engine::Engine;
use crate::env::summary::{EnvSummary, Member};
use crate::error::Result;
use crate::labels;
use crate::publish::{Proto, Published};
use bollard::models::PortSummaryTypeEnum;

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
        if p.private_port == recipe::TLS_PORT && ip == recipe::PUBLISHED_IP && proto == Proto::Tcp {
            endpoint = Some(format!("tcp://{ip}:{host_port}"));
        } else if !published.iter().any(|q: &Published| q.ip == *ip && q.host_port == host_port && q.proto == proto) {
            published.push(Published { ip: ip.clone(), host_port, env_port: p.private_port, proto });
        }
    }
    published.sort_by_key(|p| (p.env_port, p.host_port));
    (endpoint, published)
}

/// Every didx environment on the engine, oldest first.
pub(super) async fn list(engine: &Engine) -> Result<Vec<EnvSummary>> {
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
                entry.limits = l.get(labels::LIMITS).cloned();
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
/// What it removed, and what it saw live.
pub(super) async fn sweep(engine: &Engine) -> Result<Swept> {
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
    Ok(Swept { volumes: removed, live, listed })
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
        engine.remove_labelled_with(Some(env)).await?;
    }
    Ok(())
}

impl Engine {
    /// Remove every container, volume and network labelled with environment `env` (every one
    /// didx manages when `None`), containers first; the removed containers' names.
    pub(crate) async fn remove_labelled_with(&self, env: Option<&str>) -> Result<Vec<String>> {
        let containers = self.containers(labels::filter(env)).await?;
        let names: Vec<String> = containers.iter().map(container_name).collect();
        let ids: Vec<String> = containers.into_iter().filter_map(|c| c.id).collect();
        // All at once; Podman refuses to remove a server while its client (which joins the
        // server's network namespace) exists ("has dependent containers"), where Docker does
        // not mind: those go again once the others are gone.
        let mut dependent = Vec::new();
        for (id, r) in ids.iter().zip(join_all(ids.iter().map(|c| self.remove_container(c))).await) {
            match r {
                Err(e) if e.has_dependent_containers() => dependent.push(id),
                r => r?,
            }
        }
        for r in join_all(dependent.into_iter().map(|c| self.remove_container(c))).await {
            r?;
        }
        let (volumes, networks) = tokio::join!(self.volumes(labels::filter(env)), self.networks(labels::filter(env)));
        let (volumes, networks) = (volumes?, networks?);
        let removals = join_all(volumes.iter().map(|v| self.remove_volume(v)));
        let (vs, ns) = tokio::join!(removals, join_all(networks.iter().map(|n| self.remove_network(n))));
        for r in vs.into_iter().chain(ns) {
            r?;
        }
        Ok(names)
    }
}

/// A listed container's name, without the engine's leading `/`.
pub(crate) fn container_name(c: &bollard::models::ContainerSummary) -> String {
    c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortSummary;

    fn port(ip: &str, public: u16, private: u16, typ: PortSummaryTypeEnum) -> PortSummary {
        PortSummary { ip: Some(ip.into()), private_port: private, public_port: Some(public), typ: Some(typ) }
    }

    #[test]
    fn podman_s_refusal_to_remove_a_container_others_depend_on_is_told() {
        let podman = |message: &str| crate::error::Error::Engine {
            op: "remove container",
            target: "a84d5bdcb130".into(),
            source: bollard::errors::Error::DockerResponseServerError { status_code: 500, message: message.into() },
        };
        // As Podman 5.4 said it in the VM lane (a server whose client joined its network).
        assert!(
            podman(
                "container a84d5bdcb130 has dependent containers which must be removed before it: b7519033c76e: container already exists"
            )
            .has_dependent_containers()
        );
        assert!(!podman("removal of container a84d5bdcb130 is already in progress").has_dependent_containers());
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
        let shown: Vec<String> =
            published.iter().map(|p| format!("{}:{}->{}/{}", p.ip, p.host_port, p.env_port, p.proto.as_str())).collect();
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
}
