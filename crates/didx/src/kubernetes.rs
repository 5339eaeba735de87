//! Sandboxes on Kubernetes: the objects a sandbox on a cluster is made of, as `didx k8s render`
//! prints them for reading and for `kubectl apply --dry-run=server`; their life on a cluster
//! ([`Cluster`]: made in an order that leaves nothing without an owner or an expiry, removed,
//! swept); and sandboxes there ([`crate::SandboxBuilder::start_on_cluster`]: held by this
//! process, COMMANDs and the inner engine through `pods/exec`).
//!
//! ```
//! # fn demo() -> didx::Result<()> {
//! use didx::kubernetes::{KubeOptions, render};
//! let options = didx::Sandbox::builder().server_version("26.1").options()?;
//! let rendered = render(&options, &KubeOptions { namespace: "ci".into(), ..KubeOptions::default() })?;
//! assert_eq!(rendered.pod_security.name(), "privileged");
//! println!("{}", rendered.yaml()?);
//! # Ok(()) }
//! ```

pub use crate::backend::kubernetes::cluster::{Cluster, Created, Swept};
pub use crate::backend::kubernetes::manifest::{
    KubeOptions, OWNER_UID_PLACEHOLDER, Objects, PLACEHOLDER, PodSecurity, Resources, is_quantity,
};
pub use crate::backend::kubernetes::reach::Hold;
pub use crate::backend::kubernetes::way::KubeReach;
pub use crate::env::pool::kube::{KubePoolDown, KubePoolUp};
/// The Kubernetes API types didx's objects are made of (the version didx is built with).
pub use k8s_openapi;
/// The Kubernetes client [`Cluster`] talks through (its `Client` can be made from any `tower`
/// service, e.g. an emulated API server in tests).
pub use kube;

use crate::backend::kubernetes::manifest;
use crate::error::{Error, Result};
use crate::sandbox::SandboxOptions;

/// What a sandbox would be made of on a cluster.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The Job and the Secret it owns.
    pub objects: Objects,
    /// The most restrictive Pod Security Standard level its pod meets: its namespace must
    /// admit that level.
    pub pod_security: PodSecurity,
}

impl Rendered {
    /// As YAML: the Job, then the Secret, one document each, after comments saying what a
    /// start fills in and which Pod Security level the namespace must admit.
    pub fn yaml(&self) -> Result<String> {
        let failed = |e: serde_saphyr::SerializeError| Error::io("rendering YAML", std::io::Error::other(e.to_string()));
        let job = serde_saphyr::to_string(&self.objects.job).map_err(failed)?;
        let secret = serde_saphyr::to_string(&self.objects.secret).map_err(failed)?;
        let level = self.pod_security.name();
        Ok(format!(
            "# didx sandbox: a Job (its pod: the inner engine's server, and the client beside it) and the\n\
             # Secret it owns (the files didx places in them: made at each start, shown here as\n\
             # placeholders; the owner reference's uid is the Job's, set when it is created).\n\
             # Pod Security level needed: {level} (the namespace's pod-security.kubernetes.io/enforce).\n\
             ---\n{job}---\n{secret}"
        ))
    }

    /// As JSON: a `v1` `List` of the Job and the Secret (what `kubectl apply -f` reads).
    pub fn json(&self) -> Result<String> {
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [self.objects.job, self.objects.secret],
        });
        serde_json::to_string_pretty(&list).map_err(|e| Error::io("rendering JSON", std::io::Error::other(e)))
    }
}

/// The objects a sandbox with `options` would be made of on a cluster, as `kube` says; a usage
/// error for options a pod cannot have (host paths and networks, published host ports, the
/// image store, `--engine host`, `--workdir-here`, `--ssh-agent`). Images are as mapped (the
/// cluster pulls them; the offline fallback is a Docker engine's).
pub fn render(options: &SandboxOptions, kube: &KubeOptions) -> Result<Rendered> {
    let spec = options.kube_spec()?;
    let tls = crate::tls::TlsMaterial::generate(&[spec.server_name().as_str()])?;
    let objects = manifest::objects(&spec, kube, manifest::Contents::Placeholder(&tls))?;
    let pod = objects.job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("a rendered Job has a pod");
    let pod_security = manifest::pod_security(pod);
    Ok(Rendered { objects, pod_security })
}

/// The objects a new sandbox with `options` is made of on a cluster, with its own certificates
/// and entrypoint in the Secret (what [`Cluster::create`] takes; the owner reference's uid is
/// set there). The same refusals as [`render`].
pub fn objects(options: &SandboxOptions, kube: &KubeOptions) -> Result<Objects> {
    let spec = options.kube_spec()?;
    let tls = crate::tls::TlsMaterial::generate(&[spec.server_name().as_str()])?;
    manifest::objects(&spec, kube, manifest::Contents::Real(&tls))
}

/// The sandboxes in `cluster`'s namespace (didx's Jobs), oldest first: id, state (`running`
/// while its pod runs, `exited` once it ended, `created` before), creation, expiry of its
/// certificates, policy and owner.
pub async fn list(cluster: &Cluster) -> Result<Vec<crate::inventory::EnvSummary>> {
    use crate::backend::Backend;
    crate::backend::kubernetes::backend::KubeBackend::new(cluster.clone(), KubeOptions::default()).list().await
}

/// Remove sandbox `id` from `cluster`'s namespace (its Job, with its pod and Secret), or every
/// didx sandbox there with `None` (a kept one, one of the pool: all); the Jobs deleted. Gone
/// already is not an error.
pub async fn remove(cluster: &Cluster, id: Option<&str>) -> Result<Vec<String>> {
    use crate::backend::Backend;
    if let Some(id) = id {
        check_id(id)?;
    }
    crate::backend::kubernetes::backend::KubeBackend::new(cluster.clone(), KubeOptions::default()).remove_env(id).await
}

/// A sandbox id as its Job's name takes it (`didx-ID`, a DNS label): lowercase letters, digits
/// and `-` inside, at most 58; anything else is a usage error.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 58
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.ends_with('-');
    if ok { Ok(()) } else { Err(Error::invalid("sandbox id", id, "expected a sandbox's id as didx k8s ls lists it (its Job is didx-ID)")) }
}

/// Top the warm pool on `cluster` (the pool `DIDX_POOL_NAME` names, else the default one) up
/// to `size` (1 to [`crate::pool::MAX_SIZE`]) ready sandboxes for `options`' server options,
/// each ending itself when no run claims it within `idle`; returns once those started now are
/// ready or failed. A run takes one with [`crate::SandboxBuilder::start_on_cluster_with`] and
/// [`crate::StartFrom::PoolOrFresh`].
pub async fn pool_up(
    cluster: &Cluster,
    options: &SandboxOptions,
    kube: &KubeOptions,
    size: usize,
    idle: std::time::Duration,
) -> Result<KubePoolUp> {
    crate::pool::check_size(size)?;
    if idle.is_zero() {
        return Err(Error::invalid(
            "--idle-timeout",
            "0",
            "a pooled pod cannot wait forever on a cluster (its Job has a deadline): give a duration, e.g. 30m",
        ));
    }
    options.refuse_fill_on_cluster()?;
    let spec = options.kube_spec()?;
    let mut kube = kube.clone();
    kube.namespace = cluster.namespace().to_string();
    crate::env::pool::kube::up(cluster, &spec, &kube, (size, size), idle, crate::pool::name()?.as_deref()).await
}

/// Empty the warm pool on `cluster` (the pool `DIDX_POOL_NAME` names, else the default one):
/// every ready sandbox of it, each claimed first so that one a run took meanwhile is left.
pub async fn pool_down(cluster: &Cluster) -> Result<KubePoolDown> {
    crate::env::pool::kube::down(cluster, crate::pool::name()?.as_deref()).await
}
