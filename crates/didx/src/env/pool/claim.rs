//! Claiming a ready pooled environment for a run: its client renamed to the run name (one
//! claimer wins), then made as the run wants it and held.

use super::entry::{PoolEntry, PoolState, entries};
use super::key::key;
use super::names::claimed_name;
use super::retire::lost_rename;
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::env::event::Event;
use crate::env::handle::Environment;
use crate::env::id::{Container, EnvId};
use crate::env::list::remove;
use crate::backend::docker::recipe::{self, CLIENT_CERT_PATH, ClientFiles};
use crate::env::spec::EnvSpec;
use crate::backend::docker::start::create_client;
use crate::error::Result;

/// Claim a ready environment of pool `name` (`None`: the default pool) matching `spec`'s key
/// and give it to the caller, its client running under its run name (replaced by one with
/// `spec`'s mounts if it has any).
/// `spec.id` becomes the claimed environment's id. `None`: none is ready. Returns the
/// environment and the pool size to refill to.
pub async fn claim(
    engine: &Engine,
    name: Option<&str>,
    spec: &mut EnvSpec,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Option<(Environment, usize, Option<u64>)>> {
    let t0 = std::time::Instant::now();
    let key = key(engine, name, spec).await?;
    let candidates: Vec<PoolEntry> = entries(engine, name, Some(&key)).await?.into_iter().filter(|e| e.state == PoolState::Ready).collect();
    for cand in candidates {
        cancel.check()?;
        let Some(pooled) = cand.client.clone() else { continue };
        let run_name = claimed_name(&pooled.name);
        match engine.rename(&pooled.id, &run_name).await {
            Ok(()) => {}
            // Another process (a run, a pool down) claimed it first: try the next.
            Err(e) if lost_rename(&e) => continue,
            Err(e) => return Err(e),
        }
        spec.id = EnvId(cand.id.clone());
        let client = Container { name: run_name, id: pooled.id };
        let env = Environment {
            backend: crate::backend::docker(engine),
            id: spec.id.clone(),
            server: Some(cand.server.clone()),
            client,
            client_cert_dir: CLIENT_CERT_PATH,
            settled: false,
            leases: Vec::new(),
            exec_as: crate::engine::ExecAs::default(),
            guard: None,
            forwards: Default::default(),
        };
        match take(engine, name, spec, env, &key).await {
            Ok(mut env) => {
                // Held from here: a run killed right after its claim leaves nothing. Taking the
                // lease also marks the server claimed (its idle timeout stops); a run that keeps
                // the environment whatever happens releases it at once.
                env.lease().await?;
                if !spec.lease {
                    env.release().await?;
                }
                on(Event::ClientStarted { name: &env.client.name, image: &spec.client_image });
                on(Event::Ready { elapsed: t0.elapsed() });
                return Ok(Some((env, cand.size, cand.idle_timeout)));
            }
            Err(e) => {
                if let Err(rm) = remove(engine, spec.id.as_str()).await {
                    tracing::warn!(env = %spec.id, error = %rm, "removing a failed claim failed");
                }
                return Err(e);
            }
        }
    }
    Ok(None)
}

/// The claimed environment as the run wants it: its client as it runs, or, when `spec` has
/// client mounts, a client made anew with them. The new one is made under a third name first
/// and takes the run name only once the old one is removed, so the environment always has a
/// client under a non-pooled name (it reads as claimed throughout).
async fn take(engine: &Engine, name: Option<&str>, spec: &EnvSpec, mut env: Environment, key: &str) -> Result<Environment> {
    if spec.volumes.is_empty() {
        return Ok(env);
    }
    let server_name = env.inner_server()?.name.clone();
    let client = recipe::Client {
        spec,
        server_name: &server_name,
        created: crate::util::now_secs(),
        files: ClientFiles::Copied,
        pool_key: Some(key),
        pool_name: name,
        engine_socket: None,
    };
    let swapping = format!("dind_{}_claiming_{}", spec.id, spec.cv.as_str());
    let id = create_client(engine, &swapping, &client).await?;
    // Its entrypoint and certificates, from the client it replaces (archives of a few KB).
    for dir in ["/didx", "/certs"] {
        let tar: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(engine.download(&env.client.id, dir)).await?;
        engine.upload(&id, "/", tar.concat()).await?;
    }
    engine.remove_container(&env.client.id).await?;
    engine.rename(&id, &env.client.name).await?;
    env.client.id = id;
    engine.start(&env.client.id).await?;
    Ok(env)
}
