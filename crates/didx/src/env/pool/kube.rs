//! The warm pool on a cluster (the kubernetes backend's; Docker's is the rest of this
//! module): Jobs started ahead of time, their inner engine answering, each waiting for a run to
//! claim it — with the same entrypoint and the same lease protocol as on Docker, so the same
//! promises hold.
//!
//! A pooled sandbox moves one way only: **starting → ready → claimed** (→ deleted).
//!
//! - *starting*: its Job made by `pool up` with the pool's labels (key, name, size, idle
//!   timeout; see [`key`]), its pod held by `pool up`'s attach leases (beating) while its
//!   inner engine comes up: a `pool up` that dies leaves nothing, its pod ending within the
//!   beat limit.
//! - *ready*: `pool up` released both leases (each container said `didx-lease: released`),
//!   then labelled the Job [`READY`]. Unheld, the server ends itself when nobody claims it
//!   within the idle timeout (the entrypoint's `DIDX_IDLE_TIMEOUT`), the client following it;
//!   the Job's `activeDeadlineSeconds` (the run's deadline plus the idle timeout) is the
//!   backstop, `ttlSecondsAfterFinished` deletes what ended.
//! - *claimed*: a run patched the Job's labels with [`CLAIMED`], the patch carrying the
//!   `resourceVersion` it listed: the API server applies a patch only to that version, so of
//!   any number of claimers exactly one succeeds and the others are told 409 Conflict and try
//!   the next. No label goes back, so a claimed Job is never offered again. The claimer then
//!   holds both containers with exec'd leases (the entrypoint's `lease` mode, beating), which
//!   also marks the server claimed so its idle timeout no longer applies; the run ends as a
//!   fresh one does (its leases end, its Job is deleted).
//!
//! `pool down` claims each ready sandbox of the pool the same way before it deletes it, so it
//! never takes one a run claimed meanwhile; starting ones are left to their filler (they end
//! with it).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{Patch, PatchParams};
use sha2::{Digest, Sha256};

use crate::backend::kubernetes::backend::{KubeBackend, placed, sandbox_state};
use crate::backend::kubernetes::cluster::Cluster;
use crate::backend::kubernetes::manifest::KubeOptions;
use crate::backend::docker::recipe;
use crate::cancel::Cancel;
use crate::env::Environment;
use crate::env::id::EnvId;
use crate::env::spec::{EnvSpec, PoolTag};
use crate::error::{Error, Result};
use crate::labels;

use labels::{POOL_CLAIMED as CLAIMED, POOL_READY as READY};

/// The pool key on a cluster: everything that must match for a pooled sandbox to serve a run
/// (the recipe's revision; server and client image as named, since the cluster pulls them;
/// `--sv`, `--cv`, storage driver, dockerd options, isolation, `--publish`; the pod's runtime
/// class, resources and storage limit; the pool's name), hashed, 40 hex digits (a label
/// value).
pub(crate) fn key(spec: &EnvSpec, kube: &KubeOptions, name: Option<&str>) -> String {
    let mut h = Sha256::new();
    let pod = format!("{:?} {:?} {:?} {:?}", kube.runtime_class, kube.server_resources, kube.client_resources, kube.storage_limit);
    let revision = format!("recipe {} kubernetes", recipe::VERSION);
    let fixed = [
        revision.as_str(),
        spec.server_image.as_str(),
        spec.client_image.as_str(),
        spec.sv.as_str(),
        spec.cv.as_str(),
        spec.storage_driver.as_str(),
        spec.isolation.as_str(),
        pod.as_str(),
        name.unwrap_or_default(),
    ];
    // `--publish` shapes the pod (its ports, and what a run forwards): part of the key.
    let published: Vec<String> = spec.publish.iter().map(|p| format!("publish {p}")).collect();
    for part in fixed.into_iter().chain(spec.dockerd_opts.iter().map(String::as_str)).chain(published.iter().map(String::as_str)) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// A pooled Job as listed.
struct Pooled {
    name: String,
    id: String,
    version: String,
    /// As `didx ls` says it ([`sandbox_state`]): `ready` and `starting` while unclaimed.
    state: &'static str,
    claimed: bool,
    size: usize,
    idle: Duration,
}

/// The pooled Jobs of pool `name` (`None`: the default pool), of `key` when given.
async fn pooled(cluster: &Cluster, key: Option<&str>, name: Option<&str>) -> Result<Vec<Pooled>> {
    let mut out = Vec::new();
    for job in cluster.jobs_managed().await? {
        let labels = job.metadata.labels.clone().unwrap_or_default();
        let label = |k: &str| labels.get(k).map(String::as_str);
        let Some(of) = label(labels::POOL) else { continue };
        if key.is_some_and(|k| k != of) || label(labels::POOL_NAME) != name {
            continue;
        }
        out.push(Pooled {
            name: job.metadata.name.clone().unwrap_or_default(),
            id: label(labels::ENV).unwrap_or_default().to_string(),
            version: job.metadata.resource_version.clone().unwrap_or_default(),
            state: sandbox_state(&job),
            claimed: label(CLAIMED).is_some(),
            size: label(labels::POOL_SIZE).and_then(|s| s.parse().ok()).unwrap_or(1),
            idle: Duration::from_secs(label(labels::POOL_IDLE).and_then(|s| s.parse().ok()).unwrap_or(1800)),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What [`pool_up`](crate::kubernetes::pool_up) did.
#[derive(Debug)]
pub struct KubePoolUp {
    /// The pool key.
    pub key: String,
    /// Pooled sandboxes of the key already there (ready, or starting by another filler).
    pub existing: usize,
    /// The ids of those started now and ready.
    pub started: Vec<String>,
    /// Why the others failed (each removed).
    pub failed: Vec<Error>,
}

/// Top pool `name` for `template`'s key up to `size` pooled sandboxes, starting at most
/// `at_most` now (a claim's refill starts one: claims at once then each replace their own, with
/// no lock between them), each ending itself when nobody claims it within `idle`; returns once
/// those started now are ready (or failed).
pub(crate) async fn up(
    cluster: &Cluster,
    template: &EnvSpec,
    kube: &KubeOptions,
    (size, at_most): (usize, usize),
    idle: Duration,
    name: Option<&str>,
) -> Result<KubePoolUp> {
    let key = key(template, kube, name);
    let existing = pooled(cluster, Some(&key), name).await?.iter().filter(|p| !p.claimed && p.state != "exited").count();
    let backend = Arc::new(KubeBackend::new(cluster.clone(), kube.clone()));
    let tag = PoolTag {
        key: key.clone(),
        size,
        filler: template.owner.clone(),
        deadline: crate::util::now_secs() + template.ready_timeout.as_secs() + 120,
        idle_timeout: Some(idle.as_secs().max(1)),
        name: name.map(str::to_string),
    };
    let missing = size.saturating_sub(existing).min(at_most);
    let started = join_all((0..missing).map(|_| fill_one(&backend, template, &tag))).await;
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for r in started {
        match r {
            Ok(id) => ok.push(id),
            Err(e) => failed.push(e),
        }
    }
    Ok(KubePoolUp { key, existing, started: ok, failed })
}

/// One pooled sandbox: started and held until its inner engine answers, released, then
/// labelled ready. Whatever fails on the way deletes it.
async fn fill_one(backend: &Arc<KubeBackend>, template: &EnvSpec, tag: &PoolTag) -> Result<String> {
    let mut spec = template.clone();
    spec.id = EnvId::generate();
    spec.policy = "pool".into();
    let placed = backend.place_as(&spec, Some(tag), &Cancel::new()).await?;
    let mut env = Environment::placed(backend.clone(), spec.id.clone(), placed);
    let name = format!("didx-{}", spec.id);
    let readied = async {
        env.release().await?;
        let patch = serde_json::json!({"metadata": {"labels": {READY: crate::util::now_secs().to_string()}}});
        jobs(backend.cluster()).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| Error::Cluster {
            op: "label job ready",
            target: name.clone(),
            source: Box::new(e),
        })?;
        Ok::<(), Error>(())
    }
    .await;
    match readied {
        Ok(()) => {
            env.forget();
            Ok(spec.id.to_string())
        }
        Err(e) => {
            if let Err(rm) = env.rm().await {
                tracing::warn!(error = %rm, job = %name, "removing a pooled sandbox that failed failed; its idle timeout ends it");
            }
            Err(e)
        }
    }
}

fn jobs(cluster: &Cluster) -> Api<Job> {
    Api::namespaced(cluster.client(), cluster.namespace())
}

/// Claims pooled Job `p` for `claimer`: true when this call won it (the API server applied the
/// label to the version listed), false when another claimer changed it first or it is gone.
async fn take(cluster: &Cluster, p: &Pooled, claimer: &str) -> Result<bool> {
    let patch = serde_json::json!({"metadata": {"resourceVersion": p.version, "labels": {CLAIMED: claimer}}});
    match jobs(cluster).patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(Error::Cluster { op: "claim job", target: p.name.clone(), source: Box::new(e) }),
    }
}

/// A ready sandbox of pool `name` for `spec`'s key, claimed and held for this process (its id
/// becomes `spec.id`), with the pool's size and idle timeout (what a refill starts with);
/// `None` when none is ready.
pub(crate) async fn claim(
    backend: &Arc<KubeBackend>,
    spec: &mut EnvSpec,
    name: Option<&str>,
) -> Result<Option<(Environment, usize, Duration)>> {
    let cluster = backend.cluster();
    let key = key(spec, backend.options(), name);
    let claimer = format!("pid-{}", std::process::id());
    for p in pooled(cluster, Some(&key), name).await? {
        if p.state != "ready" || !take(cluster, &p, &claimer).await? {
            continue;
        }
        // Ours: held from here, or deleted.
        let held = async {
            let pod = cluster.wait_running(&p.name, Duration::from_secs(5)).await?;
            let mut env = Environment::placed(backend.clone(), EnvId::of_existing(&p.id), placed(&pod, Vec::new()));
            env.lease().await?;
            Ok::<Environment, Error>(env)
        }
        .await;
        match held {
            Ok(env) => {
                spec.id = EnvId::of_existing(&p.id);
                return Ok(Some((env, p.size, p.idle)));
            }
            Err(e) => {
                // Ended meanwhile (its idle timeout passed as it was claimed): the next.
                tracing::info!(job = %p.name, error = %e, "a claimed pooled sandbox could not be held; deleting it");
                cluster.delete(&p.name).await?;
            }
        }
    }
    Ok(None)
}

/// What [`pool_down`](crate::kubernetes::pool_down) did: the ids removed, and those left with why.
#[derive(Debug, Default)]
pub struct KubePoolDown {
    /// Removed (claimed by the down, then deleted).
    pub removed: Vec<String>,
    /// Left, and why.
    pub left: Vec<(String, String)>,
}

/// Empty pool `name` (every key): each ready or ended pooled sandbox claimed, then deleted;
/// starting ones are left to their filler.
pub(crate) async fn down(cluster: &Cluster, name: Option<&str>) -> Result<KubePoolDown> {
    let mut report = KubePoolDown::default();
    for p in pooled(cluster, None, name).await? {
        if p.claimed {
            continue;
        }
        if p.state == "starting" {
            report.left.push((p.id, "starting: held by its filler (it ends with it)".into()));
            continue;
        }
        if take(cluster, &p, "pool-down").await? {
            cluster.delete(&p.name).await?;
            report.removed.push(p.id);
        } else {
            report.left.push((p.id, "claimed by a run meanwhile".into()));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_a_label_value_and_changes_with_what_shapes_the_pod() {
        let spec = EnvSpec::example();
        let kube = KubeOptions::default();
        let k = key(&spec, &kube, None);
        assert_eq!(k.len(), 40);
        assert!(crate::backend::kubernetes::manifest::is_label_value(&k));
        assert_eq!(k, key(&spec, &KubeOptions { namespace: "other".into(), deadline: Duration::from_secs(5), ..kube.clone() }, None));
        assert_ne!(k, key(&spec, &kube, Some("ci")));
        assert_ne!(k, key(&spec, &KubeOptions { runtime_class: Some("sysbox-runc".into()), ..kube.clone() }, None));
        assert_ne!(k, key(&EnvSpec { sv: crate::spec::Version::parse("--sv", "26.1").unwrap(), ..spec.clone() }, &kube, None));
        assert_ne!(k, key(&EnvSpec { server_image: "other:1".into(), ..spec.clone() }, &kube, None));
        let published = EnvSpec { publish: vec![crate::publish::PublishSpec::parse("8080").unwrap()], ..spec.clone() };
        assert_ne!(k, key(&published, &kube, None));
    }
}
