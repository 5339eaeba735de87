//! The store's filler: a container of the server image whose dockerd runs on the store while
//! it is changed. Started (held by this process), made ready, given the change, committed,
//! its snapshot sealed and published, then gone.

use std::time::{Duration, Instant};

use super::index::{Index, remember_index};
use super::seal::seal_snapshot;
use super::volume::{Store, users};
use crate::cancel::Cancel;
use crate::engine::{Engine, Lease, message_of, status_of};
use crate::env::{ENTRYPOINT_PATH, EnvSpec};
use crate::error::{Error, Result};
use crate::isolation::{self, Isolation};
use crate::ops::load::HostImage;
use crate::spec::IsolationMode;

/// What starts a filler: the isolation to try first and the engine's ID (under which a refusal
/// of `--privileged` is remembered), and how long its dockerd may take to answer.
#[derive(Debug, Clone)]
pub struct FillerShape {
    /// `--isolation`.
    pub isolation: IsolationMode,
    /// The engine's ID.
    pub engine_id: String,
    /// How long its dockerd may take to answer.
    pub ready_timeout: Duration,
}

impl FillerShape {
    /// The shape of `spec`'s server.
    pub fn of(spec: &EnvSpec) -> FillerShape {
        FillerShape { isolation: spec.isolation, engine_id: spec.engine_id.clone(), ready_timeout: spec.ready_timeout }
    }

    /// `auto` isolation on `engine`, a 60 s ready timeout.
    pub async fn auto(engine: &Engine) -> Result<FillerShape> {
        let info = engine.info().await?;
        Ok(FillerShape { isolation: IsolationMode::Auto, engine_id: info.id.unwrap_or_default(), ready_timeout: Duration::from_secs(60) })
    }
}

/// What a filler does to the store between its start and its commit.
pub(super) enum Change<'a> {
    /// Load these host images (streamed from the host engine's export).
    Load(&'a [&'a HostImage]),
    /// Remove these references (tags or IDs) from the store.
    Remove(&'a [String]),
}

/// Run one filler over `change`: started (held by this process), its dockerd ready, the change
/// made, committed, and gone with its snapshot published. `false` when another filler of the
/// store exists (its name is taken): nothing was done. `starting` is called once the filler runs.
pub(super) async fn run_filler(
    engine: &Engine,
    store: &Store,
    shape: &FillerShape,
    change: Change<'_>,
    cancel: &Cancel,
    starting: &(dyn Fn() + Send + Sync),
) -> Result<bool> {
    let drain = matches!(change, Change::Remove(_));
    let Some((id, lease)) = start_filler(engine, store, shape, drain).await? else { return Ok(false) };
    starting();
    let work = async {
        wait_filler_ready(engine, &id, shape.ready_timeout, cancel).await?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // A removal drained the store as its filler started (no snapshot to seed from): a server
        // mounting it now either started since (it seeded nothing) or seeded before and may be
        // reading the layers. They cannot be told apart, so any refuses the removal; the commit
        // below then publishes the store as it was.
        let mut in_use = Vec::new();
        if drain {
            in_use = users(engine, &store.name).await?.into_iter().filter(|u| *u != store.filler_name()).collect();
        }
        let (what, code) = match change {
            Change::Remove(_) if !in_use.is_empty() => ("nothing", 0),
            Change::Load(images) => {
                let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
                let argv: Vec<String> = ["docker", "load", "-q"].iter().map(|s| s.to_string()).collect();
                ("docker load", engine.exec_with_input(&id, &argv, engine.export_images(&names), &mut out, &mut err).await?)
            }
            Change::Remove(refs) => {
                let mut argv: Vec<String> = ["docker", "image", "rm"].iter().map(|s| s.to_string()).collect();
                argv.extend(refs.iter().cloned());
                ("docker image rm", engine.exec(&id, &argv, &[], &mut out, &mut err).await?)
            }
        };
        if code != 0 {
            return Err(Error::Store {
                store: store.name.clone(),
                why: format!("{what} in its filler exited {code}: {}", String::from_utf8_lossy(&err).trim()),
            });
        }
        let argv = vec![ENTRYPOINT_PATH.to_string(), "store-commit".to_string()];
        let code = engine.exec(&id, &argv, &[], &mut out, &mut err).await?;
        if code != 0 {
            return Err(Error::Store {
                store: store.name.clone(),
                why: format!("committing the fill exited {code}: {}", String::from_utf8_lossy(&err).trim()),
            });
        }
        // Committed: dockerd is stopping and PID 1 publishes the snapshot once it has ended.
        // Released now, so this process ending does not cut that short.
        lease.release().await?;
        // The published index, read from the filler while it still holds the store's name, and
        // its seal kept on the host engine before the filler may go: another process waiting
        // on the name never sees the snapshot unsealed.
        let (mut index, mut err) = (Vec::new(), Vec::new());
        let argv = vec![ENTRYPOINT_PATH.to_string(), "store-published".to_string()];
        let published = engine.exec(&id, &argv, &[], &mut index, &mut err).await?;
        // Why the fill failed, as PID 1 said it to this exec (its log is gone with it).
        let why = String::from_utf8_lossy(&err).trim().to_string();
        if published == 0 {
            let text = String::from_utf8_lossy(&index);
            let index = Index::parse(&text).ok_or_else(|| Error::Store {
                store: store.name.clone(),
                why: format!("its index is not readable: {:?}", text.lines().next()),
            })?;
            seal_snapshot(engine, store, &index).await?;
            if let Some((_, created)) = engine.volume(&store.name).await? {
                remember_index(&store.name, &created, &index);
            }
            let argv = vec![ENTRYPOINT_PATH.to_string(), "store-sealed".to_string()];
            match engine.exec(&id, &argv, &[], &mut Vec::new(), &mut err).await {
                // PID 1 ends the filler as soon as this exec has said it, and the engine forgets
                // the exec with its container: asked for its exit code a moment later (a round
                // trip over SSH), the engine no longer knows it. It ran: nothing else ends the
                // filler this early.
                Err(e) if status_of(&e) == Some(404) => {
                    tracing::debug!(filler = %id, error = %e, "the filler ended before its store-sealed exec was inspected");
                }
                r => {
                    r?;
                }
            }
        }
        let status = engine.wait(&id).await.unwrap_or(0);
        let logs = if status == 0 { String::new() } else { engine.logs_tail(&id, 10).await.unwrap_or_default() };
        wait_gone(engine, &id, Instant::now() + Duration::from_secs(60), cancel).await?;
        if status != 0 {
            let said = if logs.trim().is_empty() { why } else { logs.trim().to_string() };
            return Err(Error::Store { store: store.name.clone(), why: format!("its filler exited {status}: {said}") });
        }
        if !in_use.is_empty() {
            return Err(Error::StoreInUse { store: store.name.clone(), containers: in_use });
        }
        Ok(())
    };
    let done = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Error::Cancelled),
    };
    if let Err(e) = done {
        // Nothing is published: its snapshot is made only after a commit.
        if let Err(rm) = engine.remove_container(&id).await {
            tracing::warn!(filler = %id, error = %rm, "cannot remove a failed store filler");
        }
        return Err(e);
    }
    Ok(true)
}

/// Create and start the store's filler, held by this process from its start; `None` when its
/// name is taken (another filler runs). `auto` isolation falls back to the caps profile as a
/// server's does.
async fn start_filler(engine: &Engine, store: &Store, shape: &FillerShape, drain: bool) -> Result<Option<(String, Lease)>> {
    let filler = crate::backend::docker::recipe::Filler { store: &store.name, prefix: &store.prefix, image: &store.image, drain };
    let name = store.filler_name();
    let mut iso =
        crate::backend::docker::start::first_isolation(engine, shape.isolation, &shape.engine_id, &store.image, &store.name).await?;
    let files = crate::backend::docker::recipe::handover(&[crate::backend::docker::recipe::ENTRYPOINT_FILE])?;
    loop {
        let id = match engine.create_container(&name, crate::backend::docker::recipe::held(filler.body(&iso), engine.beats())).await {
            Ok(id) => id,
            Err(e) if status_of(&e) == Some(409) => return Ok(None),
            Err(e) => match message_of(&e).and_then(|m| iso.drop_unknown(m)) {
                Some(_) => continue,
                None => return Err(e),
            },
        };
        let started = async {
            engine.start(&id).await?;
            let lease = engine.attach_lease(&id, &files).await?;
            Ok::<_, Error>(lease)
        }
        .await;
        match started {
            Ok(lease) => return Ok(Some((id, lease))),
            Err(e) => {
                engine.remove_container(&id).await?;
                let msg = message_of(&e).unwrap_or_default().to_string();
                if iso == Isolation::Privileged && isolation::is_caps_refusal(&msg) && shape.isolation != IsolationMode::Privileged {
                    isolation::remember_refusal(&shape.engine_id);
                    iso = Isolation::caps_profile_on(engine, &shape.engine_id, &store.image, &store.name).await?;
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// Poll `docker version` in the filler until its dockerd answers.
async fn wait_filler_ready(engine: &Engine, id: &str, timeout: Duration, cancel: &Cancel) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let argv: Vec<String> = ["docker", "version", "--format", "{{.Server.Version}}"].iter().map(|s| s.to_string()).collect();
    loop {
        cancel.check()?;
        let (mut out, mut err) = (tokio::io::sink(), Vec::new());
        let last = match engine.exec(id, &argv, &[], &mut out, &mut err).await {
            Ok(0) => return Ok(()),
            Ok(code) => format!("docker version exited {code}: {}", String::from_utf8_lossy(&err).trim()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            let logs = engine.logs_tail(id, 10).await.unwrap_or_default();
            return Err(Error::NotReady { name: id.to_string(), timeout, last_probe: last, logs });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until container `name` is gone (removed), polling; an error after `deadline`.
pub(super) async fn wait_gone(engine: &Engine, name: &str, deadline: Instant, cancel: &Cancel) -> Result<()> {
    loop {
        if engine.inspect_if_exists(name).await?.is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Store { store: name.to_string(), why: "its filler did not go away in time".to_string() });
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = cancel.cancelled() => return Err(Error::Cancelled),
        }
    }
}
