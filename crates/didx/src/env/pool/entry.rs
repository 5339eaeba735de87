//! The pool as found on the engine: each pooled environment and its state (starting, ready,
//! claimed, stopped), decided in one pure place from a container list.

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum as CState};

use crate::engine::Engine;
use crate::env::id::{CLIENT, Container, POOLED, POOLING};
use crate::backend::docker::container_name;
use crate::error::Result;
use crate::labels;

/// State of a pooled environment: starting → ready → claimed, never back; stopped is where an
/// unclaimed one ends when its containers stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    /// No client yet (its dockerd has not answered), or its client is still being made (under
    /// `_pooling_`) or not yet running.
    Starting,
    /// Its client runs under its pool-only name (`_pooled_`), as does its server: a run may
    /// claim it.
    Ready,
    /// Its client was renamed to its run name: it belongs to that run (or to a `pool down`
    /// removing it), whatever state its containers are in.
    Claimed,
    /// Unclaimed, and its server or client stopped (e.g. an engine restart): of no use.
    Stopped,
}

impl PoolState {
    /// As shown by `didx pool`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Starting => "starting",
            PoolState::Ready => "ready",
            PoolState::Claimed => "claimed",
            PoolState::Stopped => "stopped",
        }
    }
}

/// One pooled environment as found on the engine.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    /// Environment id.
    pub id: String,
    /// Pool key.
    pub key: String,
    /// Pool size it was started for.
    pub size: usize,
    /// Unix time it was created.
    pub created: Option<u64>,
    /// Its server container.
    pub server: Container,
    /// Whether the server container is running.
    pub running: bool,
    /// Starting, ready, claimed or stopped.
    pub state: PoolState,
    /// The filler that started it, `<host>/<lock id>/<pid>/<token>`: `<host>/<lock id>` names
    /// the lock file it held (host name, and a hash of the file's path, device and inode).
    pub filler: Option<String>,
    /// Unix time after which, if still starting, it counts as dead.
    pub deadline: Option<u64>,
    /// Seconds after its start within which it must be claimed, else it ends itself.
    pub idle_timeout: Option<u64>,
    /// Its client: the pooled one, or the claimed one once claimed.
    pub(super) client: Option<Container>,
}

/// Every pooled environment of pool `name` (`None`: the default pool): all its keys, or one;
/// oldest first; one list request.
pub async fn entries(engine: &Engine, name: Option<&str>, key: Option<&str>) -> Result<Vec<PoolEntry>> {
    let label = match key {
        Some(k) => format!("{}={k}", labels::POOL),
        None => labels::POOL.to_string(),
    };
    let filter = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    Ok(entries_of(&engine.containers(filter).await?, name))
}

/// The pool `name` (`None`: the default pool) as read from a container list: pure, the one
/// place states are decided. A server of another pool is not this pool's.
pub(super) fn entries_of(containers: &[ContainerSummary], name: Option<&str>) -> Vec<PoolEntry> {
    let label = |c: &ContainerSummary, k: &str| c.labels.as_ref().and_then(|l| l.get(k)).cloned();
    let is = |c: &ContainerSummary, r: labels::Role| label(c, labels::ROLE).as_deref() == Some(r.as_str());
    let state = |c: &ContainerSummary| c.state.unwrap_or(CState::EMPTY);
    let stopped = |s: CState| matches!(s, CState::EXITED | CState::DEAD);
    let as_container = |c: &ContainerSummary| Container { name: container_name(c), id: c.id.clone().unwrap_or_default() };
    let mut out: Vec<PoolEntry> = Vec::new();
    for s in containers.iter().filter(|c| is(c, labels::Role::Server)) {
        let (Some(id), Some(key)) = (label(s, labels::ENV), label(s, labels::POOL)) else { continue };
        if label(s, labels::POOL_NAME).as_deref() != name {
            continue;
        }
        let pooled_prefix = format!("dind_{id}{POOLED}");
        let pooling_prefix = format!("dind_{id}{POOLING}");
        let (pooled, claimed): (Vec<&ContainerSummary>, Vec<&ContainerSummary>) = containers
            .iter()
            .filter(|c| is(c, labels::Role::Client) && label(c, labels::ENV).as_deref() == Some(id.as_str()))
            .filter(|c| !container_name(c).starts_with(&pooling_prefix))
            .partition(|c| container_name(c).starts_with(&pooled_prefix));
        let pooling = containers
            .iter()
            .find(|c| is(c, labels::Role::Client) && label(c, labels::ENV).as_deref() == Some(id.as_str()) && container_name(c).starts_with(&pooling_prefix));
        // Any client under another name than the pool-only one means a claim won its rename
        // (while a claim swaps in a client with mounts, two may exist: prefer the run name).
        let run_client = claimed.iter().find(|c| container_name(c).contains(CLIENT)).or(claimed.first());
        let (st, client) = match (run_client, pooled.first()) {
            (Some(c), _) => (PoolState::Claimed, Some(*c)),
            (None, p) if stopped(state(s)) || p.copied().or(pooling).is_some_and(|c| stopped(state(c))) => {
                (PoolState::Stopped, p.copied().or(pooling))
            }
            (None, Some(p)) if state(p) == CState::RUNNING && state(s) == CState::RUNNING => (PoolState::Ready, Some(*p)),
            (None, p) => (PoolState::Starting, p.copied().or(pooling)),
        };
        out.push(PoolEntry {
            id: id.clone(),
            key,
            size: label(s, labels::POOL_SIZE).and_then(|v| v.parse().ok()).unwrap_or(1),
            created: label(s, labels::CREATED).and_then(|v| v.parse().ok()),
            server: as_container(s),
            running: state(s) == CState::RUNNING,
            state: st,
            filler: label(s, labels::POOL_FILLER),
            deadline: label(s, labels::POOL_DEADLINE).and_then(|v| v.parse().ok()),
            idle_timeout: label(s, labels::POOL_IDLE).and_then(|v| v.parse().ok()),
            client: client.map(as_container),
        });
    }
    out.sort_by_key(|e| (e.created, e.id.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{client, server};
    use super::*;

    fn state_of(cs: &[ContainerSummary], env: &str) -> PoolState {
        entries_of(cs, None).into_iter().find(|e| e.id == env).expect("entry").state
    }

    #[test]
    fn states_follow_the_client_name_one_way() {
        use CState::*;
        let f = "host-b/ffffffffffff/7/tok";
        // No client: starting, whatever the server does before it stops.
        for s in [CREATED, RUNNING] {
            assert_eq!(state_of(&[server("e1", s, f, 0)], "e1"), PoolState::Starting);
        }
        // A client still being made (`_pooling_`): starting, whatever its state.
        for c in [CREATED, RUNNING] {
            let cs = [server("e1", RUNNING, f, 0), client("dind_e1_pooling_latest", "e1", c)];
            assert_eq!(state_of(&cs, "e1"), PoolState::Starting, "pooling client {c}");
        }
        // Renamed to the pool-only name: ready once running; not yet started: starting.
        for (c, want) in [(CREATED, PoolState::Starting), (RUNNING, PoolState::Ready)] {
            let cs = [server("e1", RUNNING, f, 0), client("dind_e1_pooled_latest", "e1", c)];
            assert_eq!(state_of(&cs, "e1"), want, "pooled client {c}");
        }
        // Pooled client but the server is not running: not ready.
        let cs = [server("e1", PAUSED, f, 0), client("dind_e1_pooled_latest", "e1", RUNNING)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Starting);
        // Renamed to the run name: claimed, whatever its state, paused again included.
        for c in [RUNNING, PAUSED, EXITED] {
            let cs = [server("e1", RUNNING, f, 0), client("dind_e1_client_latest", "e1", c)];
            assert_eq!(state_of(&cs, "e1"), PoolState::Claimed, "claimed client {c}");
            let e = &entries_of(&cs, None)[0];
            assert_eq!(e.client.as_ref().map(|c| c.name.as_str()), Some("dind_e1_client_latest"));
        }
        // A claim swapping in a client with mounts: both clients present, still claimed.
        let cs =
            [server("e1", RUNNING, f, 0), client("dind_e1_client_latest", "e1", PAUSED), client("dind_e1_claiming_latest", "e1", CREATED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        assert_eq!(entries_of(&cs, None)[0].client.as_ref().unwrap().name, "dind_e1_client_latest");
        let cs = [server("e1", RUNNING, f, 0), client("dind_e1_claiming_latest", "e1", CREATED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        // Forging the old "starting" suffix in a --sv changes nothing: names of servers do not count.
        let mut s = server("e1", RUNNING, f, 0);
        s.names = Some(vec!["/dind_e1_server_x_starting".into()]);
        assert_eq!(state_of(&[s, client("dind_e1_pooled_x", "e1", RUNNING)], "e1"), PoolState::Ready);
        // Another environment's pooled name does not make this one's.
        let cs = [server("e1", RUNNING, f, 0), client("dind_e2_pooled_latest", "e1", PAUSED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        // Stopped (what an engine restart leaves): unclaimed with a stopped server or client.
        for (s, c) in [(EXITED, Some(EXITED)), (EXITED, Some(PAUSED)), (RUNNING, Some(EXITED)), (DEAD, None), (EXITED, None)] {
            let mut cs = vec![server("e1", s, f, 0)];
            cs.extend(c.map(|c| client("dind_e1_pooled_latest", "e1", c)));
            assert_eq!(state_of(&cs, "e1"), PoolState::Stopped, "server {s}, client {c:?}");
        }
        // A stopped claimed one is still its run's.
        let cs = [server("e1", EXITED, f, 0), client("dind_e1_client_latest", "e1", EXITED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        // Containers without the pool label on the server, or other roles, are no entries.
        let mut plain = server("e3", RUNNING, f, 0);
        plain.labels.as_mut().unwrap().remove(labels::POOL);
        assert!(entries_of(&[plain, client("dind_e3_pooled_latest", "e3", PAUSED)], None).is_empty());
    }

    #[test]
    fn entries_carry_labels_and_sort_oldest_first() {
        let f = "host-b/ffffffffffff/7/tok";
        let mut a = server("ea", CState::RUNNING, f, 1234);
        a.labels.as_mut().unwrap().insert(labels::CREATED.into(), "2000".into());
        let b = server("eb", CState::RUNNING, f, 99);
        let es = entries_of(&[a, b], None);
        assert_eq!(es.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["eb", "ea"]);
        assert_eq!((es[1].size, es[1].deadline, es[1].filler.as_deref(), es[1].key.as_str()), (3, Some(1234), Some(f), "k1"));
        assert!(es[1].running);
    }

    #[test]
    fn a_pool_sees_only_its_own_servers() {
        let f = "host-b/ffffffffffff/7/tok";
        let mut named = server("en", CState::RUNNING, f, 0);
        named.labels.as_mut().unwrap().insert(labels::POOL_NAME.into(), "ci-1".into());
        let plain = server("ed", CState::RUNNING, f, 0);
        let cs = [named, plain];
        let ids = |name| entries_of(&cs, name).into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(None), ["ed"], "the default pool");
        assert_eq!(ids(Some("ci-1")), ["en"]);
        assert!(ids(Some("ci-2")).is_empty());
    }
}
