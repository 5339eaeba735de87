//! The library's error type: one variant per way didx can fail, each carrying what the user
//! needs to act (the value at fault, the fix, the engine call that failed).

use std::time::Duration;

/// Every error the didx library returns.
///
/// [`Error::is_usage`] tells the caller whether the fault is in what the user asked for (exit 2)
/// or in running it (exit 125).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the user is malformed; `fix` says what is expected.
    #[error("invalid {what} '{value}': {fix}")]
    Invalid {
        /// The option or argument at fault, e.g. `--clean`.
        what: &'static str,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        fix: String,
    },
    /// The engine did not answer at all.
    #[error("cannot reach the Docker engine at {host}: {source}")]
    Unreachable {
        /// The address tried.
        host: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// One engine API call failed.
    #[error("engine call '{op}' on '{target}' failed: {source}")]
    Engine {
        /// The call, e.g. `create container`.
        op: &'static str,
        /// What it was about (a container or image name).
        target: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// One engine API call did not answer, or stopped making progress, within its bound.
    #[error("engine call '{op}' on '{target}' timed out: {} {} s", if *.idle { "no progress for" } else { "no answer within" }, .after.as_secs())]
    TimedOut {
        /// The call, e.g. `inspect container`.
        op: &'static str,
        /// What it was about (a container or image name).
        target: String,
        /// The bound that passed.
        after: Duration,
        /// True when the bound is on progress (data calls), false when on the whole call.
        idle: bool,
    },
    /// An image is absent and could not be obtained.
    #[error("image '{image}' is not on the engine and cannot be pulled{why}; build the offline image with: {build_command}")]
    ImageMissing {
        /// The image wanted.
        image: String,
        /// Why the pull failed (with a leading separator), or empty.
        why: String,
        /// The exact command that builds a usable image.
        build_command: String,
    },
    /// `--privileged` was required (isolation `privileged`) and the engine refuses it.
    #[error("the engine refuses --privileged for {server}: {reason}")]
    PrivilegedRefused {
        /// The server container's name.
        server: String,
        /// The engine's refusal.
        reason: String,
    },
    /// The server container stopped before its engine answered.
    #[error("server {name} exited (code {code}) before its engine answered; its last log lines:\n{logs}")]
    ServerExited {
        /// The server container's name.
        name: String,
        /// Its exit code.
        code: i64,
        /// Its last log lines.
        logs: String,
    },
    /// The inner engine did not answer in time.
    #[error("inner engine of {name} did not answer over TLS within {}s; last probe: {last_probe}; its last log lines:\n{logs}", .timeout.as_secs_f32())]
    NotReady {
        /// The server container's name.
        name: String,
        /// The deadline that passed.
        timeout: Duration,
        /// The last probe's result.
        last_probe: String,
        /// The server's last log lines.
        logs: String,
    },
    /// The server publishes no host port for its inner engine's TLS port on the loopback
    /// address (an environment made by an older didx, or the binding is gone).
    #[error("server {server} publishes no {ip} port for {port}/tcp")]
    NoEndpoint {
        /// The server container's name.
        server: String,
        /// The address looked for.
        ip: &'static str,
        /// The inner engine's TLS port inside the server.
        port: u16,
    },
    /// Every block of the address range is held by a live environment or overlaps a network
    /// of the engine.
    #[error(
        "address range {range} is exhausted: {held} environments hold blocks of it and {overlapped} blocks overlap the engine's networks"
    )]
    AddressRangeExhausted {
        /// The range (`--address-range`).
        range: String,
        /// How many of its blocks live environments hold.
        held: usize,
        /// How many overlap a network of the engine.
        overlapped: usize,
    },
    /// No didx environment on the engine has this id or container name.
    #[error("no didx environment '{id}' on the engine at {host}")]
    NoSuchEnvironment {
        /// The id or name asked for.
        id: String,
        /// The engine looked at.
        host: String,
    },
    /// The client image has no `docker` on its `PATH`, and neither has the server's to copy.
    #[error("client {client} has no docker CLI on its PATH, and server {server} has none to copy in")]
    NoDockerCli {
        /// The client container's name.
        client: String,
        /// The server container's name.
        server: String,
    },
    /// A container ended and was removed while a command ran in it: its environment was
    /// removed, or ended by its lease (its holder gone, or over SSH its link silent).
    #[error("container {container} is gone: it ended while a command ran in it (its environment was removed, or ended by its lease)")]
    ContainerGone {
        /// The container's name.
        container: String,
    },
    /// A wait on a container ([`crate::wait`]) passed its deadline; `last_seen` is what its
    /// last poll saw (the container's last log lines, a probe's answer, its health).
    #[error("container {container}: {condition} not met within {} s; last seen: {last_seen}", .after.as_secs_f32())]
    WaitTimedOut {
        /// The container waited on.
        container: String,
        /// What was waited for, e.g. `TCP port 8080 listening`.
        condition: String,
        /// The deadline that passed.
        after: Duration,
        /// What the last poll saw.
        last_seen: String,
    },
    /// A container waited on ([`crate::wait`]) exited while waiting for something else, or
    /// with another code than the one waited for.
    #[error("container {container} exited with code {code} while waiting for {condition}; its last log lines:\n{logs}")]
    ContainerExited {
        /// The container waited on.
        container: String,
        /// What was waited for.
        condition: String,
        /// Its exit code.
        code: i64,
        /// Its last log lines (stdout and stderr).
        logs: String,
    },
    /// What a wait ([`crate::wait`]) waits for can never come: the container was removed, its
    /// health check reported `unhealthy`, it has no health check, or its image lacks the tool
    /// a probe runs in it.
    #[error("container {container}: {condition} cannot be met: {why}")]
    WaitFailed {
        /// The container waited on.
        container: String,
        /// What was waited for.
        condition: String,
        /// Why not, with what was seen (a health check's last output).
        why: String,
    },
    /// On a rootless engine, the inner engine answered but cannot start a container (its
    /// runtime fails in the nested user namespace; measured: Debian bookworm's runc 1.1.5 fails
    /// there, trixie's 1.1.15 works, on trixie's kernel 6.12).
    #[error("the inner engine of {server} ({image}) cannot start containers on this rootless engine: {why}")]
    InnerCannotRun {
        /// The server container's name.
        server: String,
        /// The server's image.
        image: String,
        /// What the inner engine said.
        why: String,
    },
    /// The environment's server is not running, so its inner engine cannot be reached.
    #[error("environment {id} is not running (its server {server} is {state})")]
    NotRunning {
        /// The environment id.
        id: String,
        /// The server container's name.
        server: String,
        /// The server's state.
        state: String,
    },
    /// The engine is not on this machine: the inner engine's endpoint is on the engine's host
    /// (its 127.0.0.1), which this machine cannot reach.
    #[error(
        "the engine at {host} is not on this machine: the environment's endpoint is on the engine's host (127.0.0.1 there); run didx there"
    )]
    EndpointElsewhere {
        /// The engine's address.
        host: String,
    },
    /// The engine could not bind a port the server publishes (`--publish`): the host port is
    /// taken. The start was rolled back.
    #[error("cannot publish the ports of {server}: {reason}")]
    PortTaken {
        /// The server container's name.
        server: String,
        /// The engine's refusal, from the bind on.
        reason: String,
    },
    /// didx runs in a container of the engine and a path it would hand the engine is on
    /// none of that container's mounts, so the engine cannot see it.
    #[error(
        "{what} {path} is inside didx's own container, on none of its mounts, so the engine cannot see it; \
         mount a host directory there (docker run -v HOSTDIR:DIR) or set DIDX_CACHE_DIR to a mounted directory"
    )]
    NotOnAMount {
        /// What the path is for (`-v source`, `the engine proxy's socket`, …).
        what: String,
        /// The path.
        path: String,
    },
    /// The environment has no inner engine (`--engine host`): its client uses the engine
    /// didx itself uses.
    #[error("environment {id} runs with --engine host: it has no inner engine; its client uses the engine didx uses ({host})")]
    NoInnerEngine {
        /// The environment's id.
        id: String,
        /// The engine's address.
        host: String,
    },
    /// What was asked is made only on the Docker backend so far (a published port, the image
    /// store, `--engine host`'s proxy), and this environment runs elsewhere.
    #[error("{what} is not available on the {backend} backend yet; use a Docker engine for it")]
    Unsupported {
        /// What was asked.
        what: &'static str,
        /// The backend the environment runs on.
        backend: &'static str,
    },
    /// `--engine host` needs an engine reached through a unix socket (the proxy forwards to it).
    #[error("--engine host needs the engine's unix socket (DOCKER_HOST=unix:///…), not {host}; run didx on the engine's machine")]
    EngineHostNeedsSocket {
        /// The engine's address.
        host: String,
    },
    /// The directory the `--engine host` proxy's socket goes in is a symbolic link, not a
    /// directory, another user's, or writable by others: didx would not know where its socket
    /// (root on the engine's host) appears. Nothing was made.
    #[error("the engine proxy's directory {path} {why}")]
    ProxyDirUnsafe {
        /// The directory.
        path: String,
        /// What is wrong with it, and the fix.
        why: String,
    },
    /// One Kubernetes API call failed (the kubernetes backend).
    #[cfg(feature = "kubernetes")]
    #[error("kubernetes call '{op}' on '{target}' failed: {source}")]
    Cluster {
        /// The call, e.g. `create job`.
        op: &'static str,
        /// What it was about (an object's name, or the namespace).
        target: String,
        /// The API server's answer (or the client's failure).
        #[source]
        source: Box<kube::Error>,
    },
    /// The cluster configuration (kubeconfig, its context, in-cluster config) cannot be used.
    #[error("cannot use the kubernetes configuration{}: {why}", context.as_deref().map(|c| format!(" (context '{c}')")).unwrap_or_default())]
    ClusterConfig {
        /// The context asked for (`--kube-context`), if any.
        context: Option<String>,
        /// What is wrong.
        why: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate TLS material: {0}")]
    Tls(#[from] rcgen::Error),
    /// A local file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The docker context that names the engine cannot be used.
    #[error("docker context '{name}' cannot be used: {why}")]
    Context {
        /// The context's name (empty when the configuration file itself is broken).
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// Interrupted (SIGINT/SIGTERM/SIGHUP) before it finished; what it created was removed.
    #[error("interrupted")]
    Cancelled,
    /// A task didx ran alongside (a copy's producer or validator) panicked or was aborted.
    #[error("{what} failed: {source}")]
    Task {
        /// The task.
        what: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Building the offline image failed.
    #[error("image build failed: {0}")]
    Build(String),
    /// Filling, changing or reading an image store failed (see `--store`); the store keeps
    /// its previous snapshot.
    #[error("image store {store}: {why}")]
    Store {
        /// The store's volume.
        store: String,
        /// What failed.
        why: String,
    },
    /// An image store cannot be changed or removed while containers mount it.
    #[error("image store {store} is in use by {}", containers.join(", "))]
    StoreInUse {
        /// The store's volume.
        store: String,
        /// The containers mounting it.
        containers: Vec<String>,
    },
    /// An archive (or host tree) entry was refused by the `--cp` validator; nothing of that
    /// source reached the client.
    #[error("{source_name}: entry {entry} refused: {why}; nothing of this source was copied")]
    Refused {
        /// The `--cp` source, e.g. `stdin` or `IMAGE::/path` (empty until the copy names it).
        source_name: String,
        /// The entry, quoted and escaped as read.
        entry: String,
        /// Why it was refused.
        why: String,
    },
}

impl Error {
    /// True when the user's input is at fault (exit code 2), false when running it failed.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Invalid { .. }
                | Error::NotOnAMount { .. }
                | Error::EngineHostNeedsSocket { .. }
                | Error::ClusterConfig { context: Some(_), .. }
        )
    }

    /// True when a removal failed because other containers depend on the container: Podman's
    /// answer for a server whose client joined its network namespace (Docker removes both).
    pub(crate) fn has_dependent_containers(&self) -> bool {
        self.to_string().contains("has dependent containers")
    }

    /// True when the engine itself stopped answering (stopped, restarted, its socket gone),
    /// as opposed to refusing one call: the connection failed, not the request.
    pub fn is_engine_gone(&self) -> bool {
        use bollard::errors::Error as B;
        match self {
            Error::Unreachable { .. } => true,
            Error::Engine { source, .. } => {
                matches!(source, B::IOError { .. } | B::HyperResponseError { .. } | B::HyperLegacyError { .. } | B::SocketNotFoundError(_))
            }
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Invalid { what, value: value.into(), fix: fix.into() }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
