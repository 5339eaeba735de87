//! `--load IMAGE`: seed the inner engine with images from the host engine, streamed
//! host → inner over the API (the host's `export` stream fed into `docker load` in the client),
//! never held in memory. Images the inner engine already holds (same ID) are skipped; all the
//! others travel in one export, so layers they share are sent once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::engine::Engine;
use crate::env::Environment;
use crate::error::{Error, Result};

/// An image to seed, checked on the host engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostImage {
    /// The reference given.
    pub name: String,
    /// Its ID on the host engine.
    pub id: String,
    /// Its size on the host engine (an estimate of the export's size).
    pub size: u64,
}

/// Progress of seeding an inner engine (`--load`).
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadEvent<'a> {
    /// Already in the inner engine with the same ID.
    Skipped(&'a str),
    /// Bytes streamed so far, of about `total`, after `elapsed`.
    Progress {
        /// Bytes sent.
        sent: u64,
        /// Estimated total.
        total: u64,
        /// Time since the export began.
        elapsed: Duration,
    },
}

/// What seeding an inner engine did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Images loaded.
    pub loaded: Vec<String>,
    /// Images skipped (already there).
    pub skipped: Vec<String>,
    /// Bytes streamed.
    pub bytes: u64,
    /// Time the transfer took.
    pub elapsed: Duration,
}

/// Look up every image on the host engine, before anything starts.
pub async fn check(engine: &Engine, names: &[String]) -> Result<Vec<HostImage>> {
    let mut out = Vec::new();
    for name in names {
        let Some(img) = engine.image(name).await? else {
            let fix = if engine.is_ssh() {
                // The engine is another machine's: what this one holds is not there.
                format!(
                    "no such image on the engine at {host}; build, pull or load it there first (one on this machine: docker save {name} | docker -H {host} load)",
                    host = engine.host()
                )
            } else {
                "no such image on the host engine; build, pull or load it there first".to_string()
            };
            return Err(Error::invalid("--load image", name.clone(), fix));
        };
        out.push(HostImage { name: name.clone(), id: img.id.unwrap_or_default(), size: img.size.unwrap_or(0).max(0) as u64 });
    }
    Ok(out)
}

/// Seed `env`'s inner engine with `images`, exported from `engine` (where
/// [`check`] found them).
pub async fn load(engine: &Engine, env: &Environment, images: &[HostImage], on: &(dyn Fn(LoadEvent<'_>) + Send + Sync)) -> Result<LoadReport> {
    let client = &env.client().id;
    let backend = env.backend();
    // Which are there already: one exec asking the inner engine for every ID.
    let mut argv: Vec<String> =
        ["sh", "-c", r#"for i in "$@"; do docker image inspect --format '{{.Id}}' "$i" 2>/dev/null || echo -; done"#, "sh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    argv.extend(images.iter().map(|i| i.name.clone()));
    let mut ids = Vec::new();
    let mut sink = tokio::io::sink();
    backend.exec(client, &argv, &Default::default(), &mut ids, &mut sink).await?;
    let inner: Vec<String> = String::from_utf8_lossy(&ids).lines().map(str::to_string).collect();
    let (mut skipped, mut todo) = (Vec::new(), Vec::new());
    for (i, img) in images.iter().enumerate() {
        if inner.get(i) == Some(&img.id) {
            on(LoadEvent::Skipped(&img.name));
            skipped.push(img.name.clone());
        } else if !todo.iter().any(|t: &&HostImage| t.name == img.name) {
            todo.push(img);
        }
    }
    let t0 = Instant::now();
    if todo.is_empty() {
        return Ok(LoadReport { loaded: vec![], skipped, bytes: 0, elapsed: t0.elapsed() });
    }
    let names: Vec<&str> = todo.iter().map(|i| i.name.as_str()).collect();
    let total: u64 = todo.iter().map(|i| i.size).sum();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let export = engine.export_images(&names).map(move |chunk| {
        if let Ok(b) = &chunk {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    let argv: Vec<String> = ["docker", "load", "-q"].iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = {
        let transfer = backend.exec_with_input(client, &argv, Box::pin(export), &mut out, &mut err);
        tokio::pin!(transfer);
        loop {
            tokio::select! {
                r = &mut transfer => break r?,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    on(LoadEvent::Progress { sent: sent.load(Ordering::Relaxed), total, elapsed: t0.elapsed() });
                }
            }
        }
    };
    let elapsed = t0.elapsed();
    let bytes = sent.load(Ordering::Relaxed);
    on(LoadEvent::Progress { sent: bytes, total: bytes, elapsed });
    if code != 0 {
        return Err(Error::Io {
            what: format!("docker load in the client exited {code}"),
            source: std::io::Error::other(String::from_utf8_lossy(&err).trim().to_string()),
        });
    }
    Ok(LoadReport { loaded: names.iter().map(|s| s.to_string()).collect(), skipped, bytes, elapsed })
}
