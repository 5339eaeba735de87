//! Where environments run: the seam between what is done to an environment and the engine
//! that runs it.
//!
//! An environment is made of *members*: the server (its own dockerd) and the client (the docker
//! CLI wired to it); with `--engine host` the client alone. Everything the layers above do
//! with an environment — make it from its spec ([`Backend::place`]), run a program in a member,
//! copy files in and out of it, read its configured defaults, hold it with a lease, list the
//! environments there, remove one or all, sweep what ended runs left — goes through
//! [`Backend`], and none of them asks which backend it is. Members are named by the string the
//! backend gave them ([`crate::env::Container::id`]).
//!
//! Two backends exist. A Docker Engine API, local or tcp+TLS ([`docker`]: the engine
//! wrapper itself implements the trait; Podman's Docker-compatible socket and an engine over
//! SSH are this same backend). Its way of making an environment is `docker/start.rs`
//! (the recipe's container bodies, address blocks, isolation profiles, the engine-API proxy of
//! `--engine host`), of finding, removing and sweeping them `docker/list.rs`. What still asks
//! for the Docker engine itself ([`Backend::as_engine`]; `Environment::docker(what)` says
//! [`crate::Error::Unsupported`] elsewhere): the warm pool, the image store's volume, the
//! published endpoint, `--cp IMAGE::` readers. And a cluster ([`kubernetes`]: one Job per
//! environment, a member a container of its pod named `POD/CONTAINER`, exec through
//! `pods/exec`, files a tar through exec, the hold an attach with beats, list and removal
//! label-selected; see `kubernetes/backend.rs`).
//!
//! The trait is object-safe (an environment holds an `Arc<dyn Backend>`), so its methods
//! return boxed futures and streams.

pub(crate) mod docker;
#[cfg(feature = "kubernetes")]
pub(crate) mod kubernetes;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::io::AsyncWrite;

use crate::cancel::Cancel;
use crate::engine::{ExecAs, Lease};
use crate::env::event::Event;
use crate::env::id::Container;
use crate::env::spec::EnvSpec;
use crate::env::summary::EnvSummary;
use crate::error::Result;

/// Where a start's progress goes.
pub(crate) type OnEvent<'a> = &'a (dyn Fn(Event<'_>) + Send + Sync);

/// What a backend made of an environment ([`Backend::place`]): its members, the leases
/// holding them for this process, and whatever must live as long as the environment (the
/// engine-API proxy of `--engine host`).
#[derive(Debug)]
pub(crate) struct Placed {
    /// `None` with `--engine host`, which has no server.
    pub server: Option<Container>,
    /// The client.
    pub client: Container,
    /// What holds the members (empty when the spec asks for no lease).
    pub leases: Vec<Lease>,
    /// Kept with the environment, ended with it.
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// What [`Backend::sweep`] took and saw.
#[derive(Debug)]
pub(crate) struct Swept {
    /// The volumes it removed.
    pub volumes: Vec<String>,
    /// The environments with a member left, as it listed them.
    pub live: std::collections::HashSet<String>,
    /// When it listed them (what appeared since is not known to it).
    pub listed: std::time::SystemTime,
}

/// Where a member's output goes.
pub(crate) type Sink<'a> = &'a mut (dyn AsyncWrite + Unpin + Send);

/// What a member was configured with (its image's and its own settings): how a program run in
/// it is found and run by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemberConfig {
    /// Its environment, `NAME=value`.
    pub env: Vec<String>,
    /// Its user, empty for the image's default (root).
    pub user: String,
    /// Its working directory, empty for `/`.
    pub working_dir: String,
}

impl MemberConfig {
    /// A variable's value, if set.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| kv.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// What an environment needs from where it runs. See the module documentation.
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// The backend's name, for messages: `docker`.
    fn kind(&self) -> &'static str;

    /// Where it runs, for messages: the engine's address.
    fn location(&self) -> &str;

    /// Make the environment `spec` describes: its members started (held from their start when
    /// `spec.lease`), its inner engine answering, progress told to `on`. A start that fails or
    /// is cancelled removes whatever it made before it returns.
    fn place<'a>(&'a self, spec: &'a EnvSpec, cancel: &'a Cancel, on: OnEvent<'a>) -> BoxFuture<'a, Result<Placed>>;

    /// Every didx environment here, oldest first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<EnvSummary>>>;

    /// Remove environment `env` whole — its members and whatever else carries its label
    /// (volumes, networks, helpers) — or every didx environment with `None`; the names of the
    /// members removed. Gone already is not an error.
    fn remove_env<'a>(&'a self, env: Option<&'a str>) -> BoxFuture<'a, Result<Vec<String>>>;

    /// Remove what no lease can (members made and never started, volumes no member uses, of
    /// environments with no live member), made long enough ago; never anything of a live
    /// environment.
    fn sweep(&self) -> BoxFuture<'_, Result<Swept>>;

    /// Run `argv` in `member` as `how` says, its output streamed to `out` and `err` as it
    /// comes; the program's exit code. The program's own length is not bounded.
    fn exec<'a>(&'a self, member: &'a str, argv: &'a [String], how: &'a ExecAs, out: Sink<'a>, err: Sink<'a>)
    -> BoxFuture<'a, Result<i64>>;

    /// Run `argv` in `member` with `input` on its stdin (closed at its end).
    fn exec_with_input<'a>(
        &'a self,
        member: &'a str,
        argv: &'a [String],
        input: BoxStream<'a, Result<Bytes>>,
        out: Sink<'a>,
        err: Sink<'a>,
    ) -> BoxFuture<'a, Result<i64>>;

    /// Extract the tar stream `tar` at directory `dir` in `member` (never replacing a
    /// directory with a non-directory).
    fn copy_in<'a>(&'a self, member: &'a str, dir: &'a str, tar: BoxStream<'static, std::io::Result<Bytes>>) -> BoxFuture<'a, Result<()>>;

    /// `path` in `member` as a tar stream (its last component at the archive's top).
    fn copy_out<'a>(&'a self, member: &'a str, path: &'a str) -> BoxStream<'a, Result<Bytes>>;

    /// Whether `path` in `member` is a directory; `None` when nothing is there.
    fn is_dir<'a>(&'a self, member: &'a str, path: &'a str) -> BoxFuture<'a, Result<Option<bool>>>;

    /// What `member` was configured with.
    fn config<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<MemberConfig>>;

    /// Hold `member` for this process by running `argv` (the entrypoint's `lease` mode) with
    /// its stdin on a connection of this process: when the connection closes without
    /// [`Lease::release`], the member ends itself.
    fn hold<'a>(&'a self, member: &'a str, argv: &'a [String]) -> BoxFuture<'a, Result<Lease>>;

    /// Remove `member` now (no graceful stop: it is throwaway); gone already is not an error.
    fn remove_member<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<()>>;

    /// A client of the inner engine `client` reaches, where the backend has its own way to it
    /// (a cluster: `pods/exec`); `None` where the inner engine is reached as on Docker.
    fn inner_docker(&self, _client: &str) -> Option<Result<bollard::Docker>> {
        None
    }

    /// The Docker engine behind this backend, for what is made only on Docker so far (see the
    /// module documentation); `None` elsewhere.
    fn as_engine(&self) -> Option<&crate::engine::Engine>;

    /// The labels of `member`'s environment as it was made (on a cluster, its Job's labels
    /// and annotations).
    fn labels<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<std::collections::HashMap<String, String>>>;

    /// Where this machine reaches TCP `port` of `member`'s network (the server's: its inner
    /// engine's TLS port, what `--publish` declared). Docker: the port the engine publishes it
    /// on (its loopback, or all its addresses), that port itself for an engine on this
    /// machine, a forward over the SSH connection for an engine over SSH,
    /// [`crate::Error::EndpointElsewhere`] for another machine's; a cluster: a port-forward.
    /// A forward listens on `local` (0: a port the system picks).
    fn reach<'a>(&'a self, member: &'a str, port: u16, local: u16) -> BoxFuture<'a, Result<Reached>>;

    /// The ports `member`'s network is published on for this machine (`--publish`): Docker's
    /// bindings (the inner engine's TLS port left out), a cluster's as declared (loopback, the
    /// host port asked). Each TCP one on the loopback or on all addresses is then reached
    /// through [`reach`](Self::reach).
    fn published<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Vec<crate::publish::Published>>>;
}

/// Where [`Backend::reach`] found a port: this machine's loopback `port`, carried by `forward`
/// when there is one (held until it drops).
#[derive(Debug)]
pub(crate) struct Reached {
    pub port: u16,
    pub forward: Option<crate::engine::Forward>,
}

/// A member's tar of `path`, whole (for small files: certificates, `/etc`).
pub(crate) async fn read_tar(backend: &dyn Backend, member: &str, path: &str) -> Result<Vec<u8>> {
    use futures_util::TryStreamExt;
    let chunks: Vec<Bytes> = backend.copy_out(member, path).try_collect().await?;
    Ok(chunks.concat())
}

/// Extract `tar` (whole, in memory) at `dir` in `member`.
pub(crate) async fn write_tar(backend: &dyn Backend, member: &str, dir: &str, tar: Vec<u8>) -> Result<()> {
    let once = futures_util::stream::once(async move { Ok(Bytes::from(tar)) });
    backend.copy_in(member, dir, Box::pin(once)).await
}

/// The Docker backend on `engine`.
pub(crate) fn docker(engine: &crate::engine::Engine) -> Arc<dyn Backend> {
    Arc::new(engine.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_s_variable_is_found_by_its_whole_name() {
        let config = MemberConfig { env: vec!["PATHS=x".into(), "PATH=/bin:/usr/bin".into(), "EMPTY=".into()], ..Default::default() };
        assert_eq!(config.var("PATH"), Some("/bin:/usr/bin"));
        assert_eq!(config.var("EMPTY"), Some(""));
        assert_eq!(config.var("PAT"), None);
        assert_eq!(config.var("HOME"), None);
    }
}
