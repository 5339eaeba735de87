//! Labels that mark what didx creates, and the filters that find it again.
//!
//! Clean-up and listing find resources by these labels only, never by name pattern, so nothing
//! didx did not create is ever touched.

use std::collections::HashMap;

/// Present (value `true`) on every container, volume and network didx creates.
pub const MANAGED: &str = "io.didx.managed";
/// The environment id the resource belongs to.
pub const ENV: &str = "io.didx.env";
/// The resource's role: `server`, `client`, `data`.
pub const ROLE: &str = "io.didx.role";
/// Unix time (seconds) the environment was created.
pub const CREATED: &str = "io.didx.created";
/// The `--sv` / `--cv` value the container was started for.
pub const VERSION: &str = "io.didx.version";
/// On a pooled server: the pool key (see `env::pool::key`).
pub const POOL: &str = "io.didx.pool";
/// On a pooled server of a named pool (`DIDX_POOL_NAME`): the pool's name; absent in the
/// default pool.
pub const POOL_NAME: &str = "io.didx.pool.name";
/// On a pooled server: the size of the pool it was started for (what refills top up to).
pub const POOL_SIZE: &str = "io.didx.pool.size";
/// On a server: when its environment's certificates expire (Unix seconds).
pub const EXPIRES: &str = "io.didx.expires";
/// On a pooled server: the filler that started it (`<host>/<lock id>/<pid>/<token>`).
pub const POOL_FILLER: &str = "io.didx.pool.filler";
/// On a pooled server: Unix time after which, if still starting, it counts as dead.
pub const POOL_DEADLINE: &str = "io.didx.pool.deadline";
/// On a pooled server: seconds after its start within which a claim must take it, else it
/// ends itself (`pool up --idle-timeout`).
pub const POOL_IDLE: &str = "io.didx.pool.idle";
/// On a pooled Job of a cluster once it was released with its inner engine answering:
/// claimable. Its value: the Unix time it became ready.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
pub const POOL_READY: &str = "io.didx.pool.ready";
/// On a claimed pooled Job of a cluster: who claimed it (a run's process id, or `pool-down`).
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
pub const POOL_CLAIMED: &str = "io.didx.pool.claimed";
/// On a sandbox's Job on a cluster: its `--publish` specs (`IP:HOSTPORT:ENVPORT/PROTO`, comma
/// separated), the ports a run carries to this machine by port-forwards.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
pub const PUBLISH: &str = "io.didx.publish";
/// On a server: the block of the address range its inner engine's networks are made in
/// (`A.B.C.D/20`, see `net`); absent when `--dkropts` chose the inner addresses.
pub const NET: &str = "io.didx.net";
/// On a server: its resource limits, each container's (`memory=512m,cpus=1.5,pids=512`, what
/// is set; see [`crate::spec::Limits::label`]); absent when none.
pub const LIMITS: &str = "io.didx.limits";
/// On a server: what removes the environment, as `didx ls` shows it (`--clean` policy of the
/// run that made it, `drop` for a library sandbox, `keep`, `pool`).
pub const POLICY: &str = "io.didx.policy";
/// On a server: who made it, `USER@HOST pid PID`.
pub const OWNER: &str = "io.didx.owner";
/// The recipe hash an offline image was built from.
pub const RECIPE: &str = "io.didx.recipe";

/// On an image store's volume and the containers that fill or read it: the store prefix it
/// belongs to (see `store`). Never with [`MANAGED`]: `--clean all` and the sweep leave stores.
pub const STORE: &str = "io.didx.store";
/// On a store volume: the inner engine version that fills it (`dockerd --version`'s).
pub const STORE_VERSION: &str = "io.didx.store.version";
/// On a store volume: the inner storage driver (`overlay2`).
pub const STORE_DRIVER: &str = "io.didx.store.driver";
/// On a store volume: the server image that filled it first (its fillers and readers run it).
pub const STORE_IMAGE: &str = "io.didx.store.image";
/// On a store's helper container: `filler` or `reader`.
pub const STORE_ROLE: &str = "io.didx.store.role";
/// On a store's seal (a volume holding no data, with [`STORE`]): the store it seals. A seal is
/// kept on the host engine, where no sandbox reaches: the digest of a snapshot's `seal` file.
pub const STORE_SEAL: &str = "io.didx.store.seal";
/// On a store's seal: the snapshot it seals (`snap-N`).
pub const STORE_SNAPSHOT: &str = "io.didx.store.snapshot";
/// On a store's seal: the SHA-256 of the snapshot's `seal` file.
pub const STORE_DIGEST: &str = "io.didx.store.digest";

/// On a network `didx::wait::create_network` made (on a sandbox's inner engine, as a rule):
/// `network`. Never with [`MANAGED`]: didx's clean-up of an engine leaves it.
pub const WAIT: &str = "io.didx.wait";

/// On a `--engine host` client: `host` (the environment has no server).
pub const ENGINE: &str = "io.didx.engine";

/// Role of a resource within an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The container running dockerd.
    Server,
    /// The container running the docker CLI.
    Client,
    /// The server's storage volume.
    Data,
    /// A short-lived container that reads an image for `--cp IMAGE::/path`.
    Source,
    /// A container, volume or network the client created on the engine (`--engine host`).
    Started,
    /// The container that removes what a `--engine host` client started once the didx
    /// holding the environment is gone (see `backend/docker/reaper.rs`).
    Reaper,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::Data => "data",
            Role::Source => "source",
            Role::Started => "started",
            Role::Reaper => "reaper",
        }
    }
}

/// Labels for one resource of environment `env`.
pub fn for_resource(env: &str, role: Role, created: u64) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.to_string(), "true".to_string()),
        (ENV.to_string(), env.to_string()),
        (ROLE.to_string(), role.as_str().to_string()),
        (CREATED.to_string(), created.to_string()),
    ])
}

/// An engine list filter selecting everything didx manages, or one environment's resources.
pub fn filter(env: Option<&str>) -> HashMap<String, Vec<String>> {
    let label = match env {
        Some(id) => format!("{ENV}={id}"),
        None => format!("{MANAGED}=true"),
    };
    HashMap::from([("label".to_string(), vec![label])])
}
