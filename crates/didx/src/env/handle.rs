//! A running environment as a handle: its containers, exec, leases, removal.

use std::sync::Arc;

use super::event::Event;
use super::id::{Container, EnvId};
use super::spec::EnvSpec;
use crate::backend::docker::recipe::{CLIENT_CERT_PATH, ENTRYPOINT_PATH};
use crate::backend::{Backend, OnEvent};
use crate::cancel::Cancel;
use crate::engine::{Engine, ExecAs, Lease};
use crate::error::{Error, Result};
use crate::labels;

/// A running environment. Remove it with [`Environment::rm`] or leave it running with
/// [`Environment::keep`]; dropping it does neither and only logs.
#[derive(Debug)]
pub struct Environment {
    /// Where it runs: everything done to its members goes through this.
    pub(super) backend: Arc<dyn Backend>,
    pub(super) id: EnvId,
    /// `None` with `--engine host`, which has no server.
    pub(super) server: Option<Container>,
    pub(super) client: Container,
    /// Where the client's certificates are (a real directory, not the link a pooled client has).
    pub(super) client_cert_dir: &'static str,
    pub(super) settled: bool,
    /// The leases holding server and client for this process (empty when not leased).
    pub(super) leases: Vec<Lease>,
    /// How COMMANDs run in the client (user, working directory, variables; see
    /// [`crate::ops::launcher`]): the client's defaults until [`Environment::set_exec_as`].
    pub(super) exec_as: ExecAs,
    /// What the backend keeps with the environment (the engine-API proxy the client of
    /// `--engine host` talks to); it ends when this does.
    #[expect(dead_code, reason = "held, not read: dropping it ends it")]
    pub(super) guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// For an engine over SSH: the local forwards to ports published on the engine machine's
    /// loopback, by that port, opened when first asked for and held as long as this handle.
    pub(super) forwards: tokio::sync::Mutex<std::collections::HashMap<u16, crate::engine::Forward>>,
}

impl Environment {
    /// Start server and client on `engine` and wait until the inner engine answers over TLS.
    /// A start that fails or is cancelled removes everything it created.
    pub async fn start(engine: &Engine, spec: &EnvSpec, cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<Environment> {
        Self::start_on(crate::backend::docker(engine), spec, cancel, on).await
    }

    /// Start it on `backend` (see [`Backend::place`]).
    pub(crate) async fn start_on(backend: Arc<dyn Backend>, spec: &EnvSpec, cancel: &Cancel, on: OnEvent<'_>) -> Result<Environment> {
        let placed = backend.place(spec, cancel, on).await?;
        Ok(Environment::placed(backend, spec.id.clone(), placed))
    }

    /// Environment `id`, as `backend` placed it.
    pub(crate) fn placed(backend: Arc<dyn Backend>, id: EnvId, placed: crate::backend::Placed) -> Environment {
        Environment {
            backend,
            id,
            server: placed.server,
            client: placed.client,
            client_cert_dir: CLIENT_CERT_PATH,
            settled: false,
            leases: placed.leases,
            exec_as: ExecAs::default(),
            guard: placed.guard,
            forwards: Default::default(),
        }
    }

    /// The environment's id.
    pub fn id(&self) -> &EnvId {
        &self.id
    }
    /// The server container (`None` with `--engine host`: the client talks to the engine
    /// itself).
    pub fn server(&self) -> Option<&Container> {
        self.server.as_ref()
    }
    /// The server, or [`Error::NoInnerEngine`] with `--engine host`.
    pub(crate) fn inner_server(&self) -> Result<&Container> {
        self.server.as_ref().ok_or_else(|| Error::NoInnerEngine { id: self.id.to_string(), host: self.backend.location().to_string() })
    }

    /// The client container.
    pub fn client(&self) -> &Container {
        &self.client
    }
    /// Where it runs.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Where it runs, for messages: the engine's address.
    pub fn location(&self) -> &str {
        self.backend.location()
    }

    /// The Docker engine it runs on, for `what`, made only on Docker so far;
    /// [`Error::Unsupported`] on another backend.
    pub(crate) fn docker(&self, what: &'static str) -> Result<&Engine> {
        self.backend.as_engine().ok_or(Error::Unsupported { what, backend: self.backend.kind() })
    }

    /// Run `argv` in the client, streaming output; returns the exit code.
    pub async fn exec(
        &self,
        argv: &[String],
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        err: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<i64> {
        self.backend.exec(&self.client.id, argv, &self.exec_as, out, err).await
    }

    /// Whether the client is gone (no longer running, or no longer known to the engine):
    /// asked after a command in it failed, so that a removal under it is told as such. With
    /// `killed` (the command died of SIGKILL or SIGTERM, the first sign of a removal) the
    /// client is watched for up to a second.
    pub(crate) async fn client_gone(&self, killed: bool) -> bool {
        let Some(engine) = self.backend.as_engine() else { return false };
        let deadline = std::time::Instant::now() + if killed { std::time::Duration::from_secs(1) } else { std::time::Duration::ZERO };
        loop {
            let running = match engine.inspect_if_exists(&self.client.id).await {
                Ok(c) => c.and_then(|c| c.state).and_then(|s| s.running).unwrap_or(false),
                // The engine cannot say: nothing is claimed.
                Err(_) => return false,
            };
            if !running {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// How [`exec`](Self::exec) runs now.
    pub fn exec_as(&self) -> &ExecAs {
        &self.exec_as
    }

    /// Run every later [`exec`](Self::exec) as `shape` says.
    pub fn set_exec_as(&mut self, shape: ExecAs) {
        self.exec_as = shape;
    }

    /// Remove server, client, their anonymous volumes and anything else labelled with this
    /// environment, at once (no graceful stop: the engine is throwaway).
    pub async fn rm(mut self) -> Result<()> {
        self.settled = true;
        // Both containers at once, by id (no list first); then whatever else carries the
        // environment's label (volumes shared between them, `--cp IMAGE::` readers, …).
        let server = async {
            match &self.server {
                Some(s) => self.backend.remove_member(&s.id).await,
                None => Ok(()),
            }
        };
        // Any other container held (a `--engine host` environment's reaper) at the same time.
        let others: Vec<String> = self
            .leases
            .iter()
            .map(|l| l.container().to_string())
            .filter(|c| *c != self.client.id && self.server.as_ref().is_none_or(|s| s.id != *c))
            .collect();
        let others = async { futures_util::future::join_all(others.iter().map(|c| self.backend.remove_member(c))).await.into_iter().collect::<Result<Vec<()>>>() };
        let (s, c, o) = tokio::join!(server, self.backend.remove_member(&self.client.id), others);
        // Podman removes a server only once its client (in the server's network namespace) is
        // gone: again, now that it is.
        let s = match (s, &self.server) {
            (Err(e), Some(server)) if e.has_dependent_containers() => self.backend.remove_member(&server.id).await,
            (s, _) => s,
        };
        s.and(c).and(o.map(|_| ()))?;
        // Then whatever else carries its label, and what stays of it on this machine.
        super::list::remove_on(&*self.backend, self.id.as_str()).await.map(|_| ())
    }

    /// When this environment's certificates expire (Unix seconds), from its server's
    /// `io.didx.expires` label; `None` for a server made before didx bounded them.
    pub async fn certificates_expire(&self) -> Result<Option<u64>> {
        let Some(server) = &self.server else { return Ok(None) };
        let labels = self.backend.labels(&server.id).await?;
        Ok(labels.get(labels::EXPIRES).and_then(|v| v.parse().ok()))
    }

    /// Take leases on server and client (none are held yet), so that the environment ends
    /// itself when this process ends without [`Environment::release`].
    pub async fn lease(&mut self) -> Result<()> {
        let argv = lease_argv();
        if let Some(server) = &self.server {
            self.leases.push(self.backend.hold(&server.id, &argv).await?);
        }
        self.leases.push(self.backend.hold(&self.client.id, &argv).await?);
        Ok(())
    }

    /// Release the leases: the environment stays when this process ends.
    pub async fn release(&mut self) -> Result<()> {
        let released = futures_util::future::join_all(self.leases.drain(..).map(Lease::release)).await;
        released.into_iter().collect()
    }

    /// Whether every member is held by a lease of this process (so [`Environment::end`] ends
    /// it whole).
    pub(crate) fn is_held(&self) -> bool {
        let held = |id: &str| self.leases.iter().any(|l| l.container() == id);
        self.server.as_ref().is_none_or(|s| held(&s.id)) && held(&self.client.id)
    }

    /// Let the environment end itself: what stays of it on this machine (its client
    /// certificates) removed, then its leases closed without a release, so each member stops
    /// and the engine's auto-removal takes it with its anonymous volumes, moments later, with
    /// no further call (as when this process dies). The caller checks [`Environment::is_held`]
    /// first: a member no lease holds would stay.
    pub(crate) async fn end(mut self) -> Result<()> {
        self.settled = true;
        super::certdir::remove(self.id.as_str());
        let ended = futures_util::future::join_all(self.leases.drain(..).map(Lease::end)).await;
        ended.into_iter().collect()
    }

    /// Leave the environment running (`--clean none`): its leases released first.
    pub async fn keep(mut self) -> Result<()> {
        self.settled = true;
        self.release().await
    }

    /// Let go of the handle without removing or releasing: a leased environment ends itself
    /// (its leases close), an unleased one keeps running.
    pub fn forget(mut self) {
        self.settled = true;
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if !self.settled {
            if self.leases.is_empty() {
                tracing::warn!(env = %self.id, client = %self.client.name, "environment dropped without rm() or keep(); it keeps running");
            } else {
                tracing::warn!(env = %self.id, client = %self.client.name, "environment dropped without rm() or keep(); its lease ends it");
            }
        }
    }
}

/// The lease's command: the entrypoint's `lease` mode.
pub(crate) fn lease_argv() -> Vec<String> {
    vec![ENTRYPOINT_PATH.to_string(), "lease".to_string()]
}
