//! Environments where they run, through the backend: the `rpt` report, removal of one
//! environment or of all, and the sweep of what ended runs left. What stays on this machine
//! (the client certificates host tools were given) is removed here with them.

use std::collections::HashSet;

use super::summary::EnvSummary;
use crate::backend::{self, Backend};
use crate::engine::Engine;
use crate::error::Result;

/// Every didx environment on the engine, oldest first.
pub async fn list(engine: &Engine) -> Result<Vec<EnvSummary>> {
    backend::docker(engine).list().await
}

/// Remove everything labelled with environment `id` (containers with their anonymous volumes,
/// then volumes and networks); returns the names of the containers removed.
pub async fn remove(engine: &Engine, id: &str) -> Result<Vec<String>> {
    remove_on(&*backend::docker(engine), id).await
}

/// [`remove`] on `backend`.
pub(crate) async fn remove_on(backend: &dyn Backend, id: &str) -> Result<Vec<String>> {
    let names = backend.remove_env(Some(id)).await?;
    // The client certificates host tools were given (`didx env`, `host:` commands).
    super::certdir::remove(id);
    Ok(names)
}

/// Remove every didx environment and every volume and network didx created; returns the
/// names of the containers removed.
pub async fn remove_all(engine: &Engine) -> Result<Vec<String>> {
    let backend = backend::docker(engine);
    let listed = std::time::SystemTime::now();
    let names = backend.remove_env(None).await?;
    super::certdir::sweep(backend.location(), &HashSet::new(), listed);
    Ok(names)
}

/// Remove what no lease can: containers of didx created and never started whose environment
/// has no live container, and volumes of didx that no container uses and whose environment has
/// no container left (an engine restart removes didx's AutoRemove containers but leaves their
/// volumes), each made more than a minute ago. Nothing of an environment with a live owner (its
/// server, client or reaper running) is taken: a `--engine host` client's `docker create`
/// stays created as long as it likes. Run by every didx start and by `pool up` and `pool down`.
/// Returns the volumes removed.
pub async fn sweep(engine: &Engine) -> Result<Vec<String>> {
    let backend = backend::docker(engine);
    let swept = backend.sweep().await?;
    // Client certificates of environments gone without didx (reaped, `docker rm -f`).
    super::certdir::sweep(backend.location(), &swept.live, swept.listed);
    Ok(swept.volumes)
}

/// [`sweep`] where its failure must not fail the caller (a start, `pool up`, `pool down`):
/// logged, not returned.
pub async fn sweep_logged(engine: &Engine) {
    if let Err(e) = sweep(engine).await {
        tracing::warn!(error = %e, "sweeping what earlier didx environments left failed");
    }
}
