//! The start sequence: validated [`SandboxOptions`] → a started (or claimed) environment with
//! its images resolved, the image store chosen and filled, copies and loads done. Shared by
//! the sandbox, the session and the pool, which only call it.

use std::time::Duration;

use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::env::pool::Refill;
use crate::env::{EnvId, EnvSpec, Environment};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::images::{self, Wanted};
use crate::ops::copy::CpSpec;
use crate::ops::launcher::Launch;
use crate::ops::load::HostImage;
use crate::spec::{AddressRange, EngineMode, IsolationMode, PublishSpec, Version, VolumeSource, VolumeSpec};

/// Validated sandbox options ([`SandboxBuilder::options`](crate::SandboxBuilder::options)): nothing downstream re-checks them.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub(crate) sv: Version,
    pub(crate) cv: Version,
    pub(crate) pull: bool,
    pub(crate) storage_driver: Option<String>,
    pub(crate) dockerd_opts: Vec<String>,
    pub(crate) isolation: IsolationMode,
    pub(crate) ready_timeout: Duration,
    pub(crate) server_image: Wanted,
    pub(crate) client_image: Wanted,
    pub(crate) volumes: Vec<VolumeSpec>,
    pub(crate) copies: Vec<CpSpec>,
    pub(crate) loads: Vec<String>,
    pub(crate) address_range: Option<AddressRange>,
    pub(crate) network: Option<String>,
    /// What removes the environment, for its label (`didx ls`): `drop` for a [`Sandbox`](crate::Sandbox),
    /// `keep` with `DIDX_KEEP`, the `--clean` policy for a session, `pool` for the pool.
    pub(crate) policy: &'static str,
    pub(crate) publish: Vec<PublishSpec>,
    /// How the commands run: `/work`, the user, the ssh agent.
    pub(crate) launch: Launch,
    /// Which engine the client talks to (`--engine`).
    pub(crate) engine_mode: EngineMode,
    /// Use the image store (`--store`).
    pub(crate) store: bool,
    /// `--memory`, `--cpus`, `--pids-limit`.
    pub(crate) limits: crate::spec::Limits,
    /// `--registry-auth`: given to the client at [`SandboxOptions::fill`].
    pub(crate) registry_auth: Option<crate::spec::RegistryAuth>,
}

/// What [`SandboxOptions::launch`] made.
pub(crate) struct Launched {
    pub(crate) env: Environment,
    pub(crate) refill: Option<Refill>,
}

impl SandboxOptions {
    /// The images and the client mounts copied and loaded need: each source must exist before
    /// anything starts (a usage error otherwise).
    pub(crate) async fn check(&self, engine: &Engine) -> Result<Vec<HostImage>> {
        crate::ops::copy::check_sources(engine, &self.copies).await?;
        crate::ops::load::check(engine, &self.loads).await
    }

    /// The environment spec: the engine's storage driver and ID, images resolved (pulled, or
    /// the offline image in their place, reported through `on`).
    pub(crate) async fn spec(&self, engine: &Engine, lease: bool, on: &(dyn Fn(&Event<'_>) + Send + Sync)) -> Result<EnvSpec> {
        let info = engine.info().await?;
        // `--engine host` starts no server: only the client's image is wanted.
        let server_image = if self.engine_mode == EngineMode::Host { &self.client_image } else { &self.server_image };
        let resolved = images::resolve(engine, server_image, &self.client_image, self.pull).await?;
        if !resolved.fell_back.is_empty() || !resolved.stale.is_empty() {
            on(&Event::Images { resolved: &resolved });
        }
        // Paths handed to the engine are the engine machine's: when didx runs in a container of
        // that engine, its own paths are translated through its container's mounts.
        let own = crate::dood::own_mounts(engine).await?;
        let mut volumes = self.volumes.clone();
        for v in &mut volumes {
            if let VolumeSource::Host(p) = &v.source {
                v.source = VolumeSource::Host(crate::dood::translate_own(own.as_ref(), "-v source", p)?);
            }
        }
        Ok(EnvSpec {
            id: EnvId::generate(),
            sv: self.sv.clone(),
            cv: self.cv.clone(),
            server_image: resolved.server,
            client_image: resolved.client,
            storage_driver: self.storage_driver.clone().or(info.driver).unwrap_or_default(),
            dockerd_opts: self.dockerd_opts.clone(),
            isolation: self.isolation,
            engine_id: info.id.unwrap_or_default(),
            ready_timeout: self.ready_timeout,
            volumes,
            publish: self.publish.clone(),
            lease,
            address_range: self.address_range,
            network: self.network.clone(),
            policy: self.policy.to_string(),
            owner: crate::env::owner(),
            engine_mode: self.engine_mode,
            store: None,
            limits: self.limits,
        })
    }

    /// The environment spec of a sandbox on a Kubernetes cluster: images as mapped (the
    /// cluster pulls them), the storage driver as given (else the inner dockerd's choice),
    /// held by a lease. Options that bind the sandbox to a Docker engine's host are usage
    /// errors here (`--workdir-here`, `--ssh-agent`, `--store`) or in
    /// [`crate::backend::kubernetes::manifest::refuse_unsupported`] (the rest).
    /// What a start on a cluster does not do yet: files copied in and images loaded as it
    /// starts (a usage error before anything is made).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn refuse_fill_on_cluster(&self) -> Result<()> {
        let refuse = |option: &'static str| {
            Err(Error::invalid(option, "(set)", "not built on the kubernetes backend yet; copy or load after the start"))
        };
        if !self.copies.is_empty() {
            return refuse("--cp");
        }
        if !self.loads.is_empty() {
            return refuse("--load");
        }
        Ok(())
    }

    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn kube_spec(&self) -> Result<EnvSpec> {
        let refuse = |option: &'static str, why: &str| Err(Error::invalid(option, "(set)", format!("{why} on the kubernetes backend")));
        if self.launch.workdir {
            return refuse("--workdir-here", "a mount of this machine's directory is not available");
        }
        if self.launch.ssh_agent {
            return refuse("--ssh-agent", "this machine's agent socket cannot be mounted");
        }
        if self.launch.user.is_some() {
            return refuse("--user", "running COMMANDs as another user is not built yet");
        }
        if self.store {
            return refuse("--store", "the image store (a Docker engine's volume) is not available");
        }
        let l = &self.limits;
        if let Some((option, _)) = [("--memory", l.memory.is_some()), ("--cpus", l.nano_cpus.is_some()), ("--pids-limit", l.pids.is_some())]
            .into_iter()
            .find(|(_, given)| *given)
        {
            return refuse(option, "use --server-limits and --client-limits (the pod's containers' limits)");
        }
        Ok(EnvSpec {
            id: EnvId::generate(),
            sv: self.sv.clone(),
            cv: self.cv.clone(),
            server_image: self.server_image.image.clone(),
            client_image: self.client_image.image.clone(),
            storage_driver: self.storage_driver.clone().unwrap_or_default(),
            dockerd_opts: self.dockerd_opts.clone(),
            isolation: self.isolation,
            engine_id: String::new(),
            ready_timeout: self.ready_timeout,
            volumes: self.volumes.clone(),
            publish: self.publish.clone(),
            lease: true,
            address_range: None,
            network: self.network.clone(),
            policy: self.policy.to_string(),
            owner: crate::env::owner(),
            engine_mode: self.engine_mode,
            store: None,
            limits: self.limits,
        })
    }

    /// With `--store`: the store `spec`'s server mounts, `seeds` the store lacks put into it
    /// first. A store that cannot serve (or whose fill failed) is left out with a note; the
    /// loads then go the way they go without.
    pub(crate) async fn use_store(
        &self,
        engine: &Engine,
        spec: &mut EnvSpec,
        seeds: &[HostImage],
        cancel: &Cancel,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
    ) -> Result<()> {
        use crate::store::{self, StoreEvent};
        if !self.store {
            return Ok(());
        }
        let fwd = |e: StoreEvent<'_>| on(&Event::Store(e));
        let store = match store::choose(engine, spec).await? {
            Ok(s) => s,
            Err(reason) => {
                fwd(StoreEvent::NotUsed { reason: &reason });
                return Ok(());
            }
        };
        if !seeds.is_empty() {
            match store::fill(engine, &store, &store::FillerShape::of(spec), seeds, cancel, &fwd).await {
                Ok(_) => {}
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    fwd(StoreEvent::NotUsed { reason: &format!("filling it failed: {e}") });
                    return Ok(());
                }
            }
        }
        // Mounting a volume that does not exist would make an unlabelled one.
        if !store::exists(engine, &store.name).await? {
            fwd(StoreEvent::NotUsed { reason: &format!("{} is empty (nothing was loaded into it yet)", store.name) });
            return Ok(());
        }
        let Some(seal) = store::seal(engine, &store.name).await? else {
            fwd(StoreEvent::NotUsed {
                reason: &format!(
                    "{} is not sealed (changed since it was filled, or filled by an earlier didx); --store --load IMAGE fills it anew",
                    store.name
                ),
            });
            return Ok(());
        };
        fwd(StoreEvent::Using { store: &store.name });
        store::note_use(&store.name);
        spec.store = Some(crate::env::StoreMount { volume: store.name, engine: store.engine, seal: Some(seal) });
        Ok(())
    }

    /// Start (or, with `pooled`, claim) the environment; nothing copied or loaded yet. With
    /// `lease`, it is held by this process: it ends itself when the process ends without
    /// releasing it. Meanwhile (off the start's own path), what an engine restart or a create
    /// in flight left of earlier environments is swept ([`crate::env::sweep_logged`]).
    pub(crate) async fn launch(
        &self,
        engine: &Engine,
        pooled: bool,
        lease: bool,
        seeds: &[HostImage],
        cancel: &Cancel,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
    ) -> Result<Launched> {
        let (launched, ()) = tokio::join!(self.launch_only(engine, pooled, lease, seeds, cancel, on), crate::env::sweep_logged(engine));
        launched
    }

    async fn launch_only(
        &self,
        engine: &Engine,
        pooled: bool,
        lease: bool,
        seeds: &[HostImage],
        cancel: &Cancel,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
    ) -> Result<Launched> {
        if pooled && self.engine_mode == EngineMode::Host {
            return Err(Error::invalid("--pool", "--engine host", "the pool holds inner engines; --engine host has none: drop --pool"));
        }
        let mut spec = self.spec(engine, lease, on).await?;
        self.use_store(engine, &mut spec, seeds, cancel, on).await?;
        on(&Event::Resolved);
        let fwd = |e: crate::env::Event<'_>| on(&Event::Start(e));
        if pooled {
            on(&Event::Starting { id: spec.id.as_str(), names: &[spec.server_name(), spec.client_name()], pooled: true });
            let template = spec.clone();
            // Before the claim: a `pool down` from here on stops the refill it queues.
            let name = crate::env::pool::name()?;
            let downs = crate::env::pool::downs(name.as_deref());
            if let Some((env, size, idle)) = crate::env::pool::claim(engine, name.as_deref(), &mut spec, cancel, &fwd).await? {
                let refill = Refill::new(name, template, size, idle, downs);
                on(&Event::Claimed { id: env.id().as_str(), refill: &refill });
                return Ok(Launched { env, refill: Some(refill) });
            }
            on(&Event::PoolEmpty);
        } else {
            on(&Event::Starting { id: spec.id.as_str(), names: &[spec.server_name(), spec.client_name()], pooled: false });
        }
        let env = Environment::start(engine, &spec, cancel, &fwd).await?;
        Ok(Launched { env, refill: None })
    }

    /// After `--store --load` had to load images the store holds: if the server refused the
    /// store because it no longer matches its seal (its entrypoint says so in its log), the seal
    /// is withdrawn so no later sandbox seeds from it, and the caller is told. Failures here are
    /// logged: the sandbox itself has its images either way.
    async fn check_store_refused(&self, env: &Environment, on: &(dyn Fn(&Event<'_>) + Send + Sync)) {
        let Ok(server) = env.inner_server() else { return };
        // The store is made on Docker only: nothing to check elsewhere.
        let Ok(engine) = env.docker("the image store") else { return };
        let logs = match engine.logs_tail(&server.id, 200).await {
            Ok(l) => l,
            Err(e) => return tracing::warn!(error = %e, "cannot read the server's log for the store's seal check"),
        };
        let Some(line) = logs.lines().find(|l| l.contains("didx-entrypoint: store: refused")) else { return };
        let why = line.split_once("store: ").map_or(line, |(_, w)| w).trim().to_string();
        let volume = match engine.inspect(&server.id).await {
            Ok(i) => i
                .mounts
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.destination.as_deref() == Some(crate::env::STORE_PATH))
                .and_then(|m| m.name),
            Err(e) => return tracing::warn!(error = %e, "cannot inspect the server for its store"),
        };
        let Some(volume) = volume else { return };
        if let Err(e) = crate::store::withdraw(engine, &volume).await {
            tracing::warn!(store = %volume, error = %e, "cannot withdraw the seal of a store that no longer matches it");
        }
        on(&Event::Store(crate::store::StoreEvent::Refused { store: &volume, why: &why }));
    }

    /// Copy and load into a started environment, in that order, from `source` (the user's
    /// own engine: `--cp CONTAINER:`, `--cp IMAGE::` and `--load` read it).
    pub(crate) async fn fill(
        &self,
        source: &Engine,
        env: &mut Environment,
        seeds: &[HostImage],
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
    ) -> Result<()> {
        self.launch.prepare(env).await?;
        self.authorize(env).await?;
        if !self.copies.is_empty() {
            for warning in
                crate::ops::copy::copy_all(source, env.backend().as_ref(), &env.client().id, env.id().as_str(), &self.copies).await?
            {
                on(&Event::CopyWarning { warning: &warning });
            }
            on(&Event::Copied { sources: self.copies.len() });
        }
        if !seeds.is_empty() {
            let r = crate::ops::load::load(source, env, seeds, &|e| on(&Event::Load(e))).await?;
            if self.store && !r.loaded.is_empty() {
                self.check_store_refused(env, on).await;
            }
            on(&Event::Loaded { report: &r });
        }
        Ok(())
    }
}
