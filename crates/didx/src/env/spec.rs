//! What an environment is started from: the validated [`EnvSpec`] and the store it mounts.

use std::time::Duration;

use super::id::EnvId;
use crate::net::AddressRange;
use crate::spec::{IsolationMode, PublishSpec, Version, VolumeSpec};

/// Everything needed to start an environment, validated.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    /// The environment's id (chosen up front so a caller can always clean up by it).
    pub id: EnvId,
    /// `--sv`, naming the server container.
    pub sv: Version,
    /// `--cv`, naming the client container.
    pub cv: Version,
    /// Server image (resolved).
    pub server_image: String,
    /// Client image (resolved).
    pub client_image: String,
    /// dockerd's `--storage-driver`.
    pub storage_driver: String,
    /// Further dockerd arguments (`--dkropts`, already split into words).
    pub dockerd_opts: Vec<String>,
    /// How to get dockerd its privileges.
    pub isolation: IsolationMode,
    /// The engine's ID, under which the `auto` isolation outcome is remembered.
    pub engine_id: String,
    /// How long to wait for the inner engine to answer.
    pub ready_timeout: Duration,
    /// `-v` mounts for the client.
    pub volumes: Vec<VolumeSpec>,
    /// `--publish` ports, bound on the server (part of the pool key).
    pub publish: Vec<PublishSpec>,
    /// Hold the environment for this process (see [`crate::engine::Engine::lease`]): when the
    /// process ends without releasing it — SIGKILL included — the environment ends itself and
    /// the engine removes it. For environments the run would remove anyway. (Every start is
    /// held until the environment is ready; without `lease` it is then released.)
    pub lease: bool,
    /// Where the inner engine's addresses come from: a block of this range is claimed for the
    /// server (see [`crate::net`]); `None` leaves them to dockerd (`--dkropts` chose them, or
    /// `--address-range none`).
    pub address_range: Option<AddressRange>,
    /// The engine network the server joins (`--network`), instead of the default bridge.
    pub network: Option<String>,
    /// What removes it, as `didx ls` shows it (the `io.didx.policy` label).
    pub policy: String,
    /// Who makes it, `USER@HOST pid PID` (see [`owner`](super::id::owner)).
    pub owner: String,
    /// Which engine the client talks to: its own server's, or (`--engine host`) the engine
    /// itself through didx's proxy, with no server.
    pub engine_mode: crate::spec::EngineMode,
    /// The image store the server mounts read-only and seeds its engine from (`--store`, see
    /// [`crate::store`]); `None` without.
    pub store: Option<StoreMount>,
    /// Resource limits of each container (`--memory`, `--cpus`, `--pids-limit`).
    pub limits: crate::spec::Limits,
}
/// An image store as a server mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreMount {
    /// The store's volume.
    pub volume: String,
    /// The server's own engine, `dockerd --version`'s line (as [`crate::store::engine_line`]
    /// found it for the server image): the entrypoint seeds from a snapshot made by this engine
    /// only. Empty: the entrypoint asks `dockerd --version` itself (~45 ms).
    pub engine: String,
    /// The sealed snapshot the server seeds from (`snap-N`) and its seal's digest
    /// ([`crate::store::Seal`]): the entrypoint seeds only when everything matches it.
    pub seal: Option<Seal>,
}
impl EnvSpec {
    /// The server container's name, `dind_<id>_server_<sv>`.
    pub fn server_name(&self) -> String {
        format!("dind_{}_server_{}", self.id, self.sv.as_str())
    }
    /// The client container's name, `dind_<id>_client_<cv>`.
    pub fn client_name(&self) -> String {
        format!("dind_{}_client_{}", self.id, self.cv.as_str())
    }
}

/// A snapshot's seal, as the host engine keeps it (the labels of a volume that holds no data,
/// out of every sandbox's reach): the entrypoint seeds a server from the snapshot only when the
/// digest of its `seal` file is this one and the snapshot and every layer still match what that
/// file lists (see `image/entrypoint.sh` and [`crate::store`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Seal {
    /// The snapshot (`snap-N`).
    pub snapshot: String,
    /// The SHA-256 of its `seal` file, in hex.
    pub digest: String,
}

/// Marks a server as a pool member: its labels.
#[derive(Debug, Clone)]
pub struct PoolTag {
    /// The pool key (`key` in the pool).
    pub key: String,
    /// How many environments the pool keeps ready (what a refill tops up to).
    pub size: usize,
    /// Who is starting it: `<host>/<lock id>/<pid>/<token>` (see `PoolEntry::filler`).
    pub filler: String,
    /// Unix time after which, if still starting, it is dead.
    pub deadline: u64,
    /// Seconds after which the server ends itself unless claimed (`pool up --idle-timeout`).
    pub idle_timeout: Option<u64>,
    /// The pool's name (`DIDX_POOL_NAME`); `None` for the default pool.
    pub name: Option<String>,
}

/// The unit tests' environment spec: one literal, which each test varies with `..`.
#[cfg(test)]
impl EnvSpec {
    pub(crate) fn example() -> EnvSpec {
        EnvSpec {
            id: EnvId("e1".into()),
            sv: Version::parse("--sv", "latest").unwrap(),
            cv: Version::parse("--cv", "latest").unwrap(),
            server_image: "didx/dind:local".into(),
            client_image: "didx/dind:local".into(),
            storage_driver: "vfs".into(),
            dockerd_opts: vec![],
            isolation: IsolationMode::Auto,
            engine_id: String::new(),
            ready_timeout: Duration::from_secs(1),
            volumes: vec![],
            publish: vec![],
            lease: false,
            address_range: None,
            network: None,
            policy: "anycase".into(),
            owner: String::new(),
            engine_mode: Default::default(),
            store: None,
            limits: crate::spec::Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_didx_sh() {
        let spec = EnvSpec {
            id: EnvId("abc".into()),
            cv: Version::parse("--cv", "24.0").unwrap(),
            ..EnvSpec::example()
        };
        assert_eq!(spec.server_name(), "dind_abc_server_latest");
        assert_eq!(spec.client_name(), "dind_abc_client_24.0");
    }
}
