//! The starts of a [`SandboxBuilder`] on a Kubernetes cluster (the `kubernetes` feature).

use super::builder::{KEEP_POLICY, SandboxBuilder, StartFrom};
use super::handle::Sandbox;
use crate::engine::Engine;
use crate::error::Result;

impl SandboxBuilder {
    /// Start it on a cluster instead of a Docker engine: a Job in `cluster`'s namespace (see
    /// [`crate::kubernetes`]), held by this process, its inner engine reached as
    /// [`KubeOptions::reach`](crate::kubernetes::KubeOptions) says ([`Sandbox::docker`]),
    /// COMMANDs run with [`Sandbox::exec`]. What needs a Docker engine is refused before
    /// anything is made: host paths and volumes (`-v`), networks, published ports other than
    /// loopback TCP, the image store, `--engine host`, files copied in and images loaded (see
    /// [`start_on_cluster_from`](Self::start_on_cluster_from)). Kept ([`Sandbox::keep`], or
    /// `DIDX_KEEP` set), its pod runs on until its deadline (`kube.deadline`) or
    /// [`crate::kubernetes::remove`]. The pool there:
    /// [`start_on_cluster_with`](Self::start_on_cluster_with).
    pub async fn start_on_cluster(
        self,
        cluster: &crate::backend::kubernetes::cluster::Cluster,
        kube: &crate::backend::kubernetes::manifest::KubeOptions,
    ) -> Result<Sandbox> {
        self.start_on_cluster_with(cluster, kube, None, StartFrom::Fresh).await
    }

    /// [`start_on_cluster`](Self::start_on_cluster), with what [`copy`](Self::copy) and
    /// [`load`](Self::load) ask read from `source` (the user's own engine: its images are
    /// streamed into the inner engine through `pods/exec`, as on Docker through the exec API).
    pub async fn start_on_cluster_from(
        self,
        cluster: &crate::backend::kubernetes::cluster::Cluster,
        kube: &crate::backend::kubernetes::manifest::KubeOptions,
        source: &Engine,
    ) -> Result<Sandbox> {
        self.start_on_cluster_with(cluster, kube, Some(source), StartFrom::Fresh).await
    }

    /// A sandbox on a cluster: copies and loads read from `source` when given; with
    /// [`StartFrom::PoolOrFresh`], a ready one of the pool on the cluster when one matches
    /// ([`crate::kubernetes::pool_up`]; the pool named by `DIDX_POOL_NAME`), else a fresh one.
    /// A claim starts the pool's refill at once, in this process: [`Sandbox::rm`] waits for it.
    pub async fn start_on_cluster_with(
        self,
        cluster: &crate::backend::kubernetes::cluster::Cluster,
        kube: &crate::backend::kubernetes::manifest::KubeOptions,
        source: Option<&Engine>,
        from: StartFrom,
    ) -> Result<Sandbox> {
        let opts = self.options()?;
        let started = opts.start_on_cluster(cluster, kube, source, from == StartFrom::PoolOrFresh, crate::pool::name()?, &|_| {}).await?;
        let (env, refilling) = (started.env, started.refilling);
        let mut sandbox = Sandbox { env: Some(env), kept: false, refill: None, access: tokio::sync::OnceCell::new(), refilling };
        if opts.policy == KEEP_POLICY {
            // DIDX_KEEP: held while it started (a pod is held from its start), released now,
            // so that it runs on until its deadline whatever becomes of this process.
            sandbox.keep().await?;
        }
        Ok(sandbox)
    }
}
