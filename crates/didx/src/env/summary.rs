//! An environment as found where it runs: its members, labels and state (the `rpt` report's rows).

use crate::labels;
use crate::publish::Published;

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
    /// Its containers' resource limits, each (`memory=512m,cpus=1.5,pids=512`); `None`: none.
    pub limits: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
