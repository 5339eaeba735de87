//! A start on a Kubernetes cluster (the `kubernetes` feature): the sandbox's Job made, or a
//! ready one of the pool on the cluster claimed (its refill started at once, in this process),
//! then the copies, loads and registry credentials — what [`SandboxBuilder::start_on_cluster_with`]
//! and [`Session::run_on_cluster`] share.
//!
//! [`SandboxBuilder::start_on_cluster_with`]: crate::SandboxBuilder::start_on_cluster_with
//! [`Session::run_on_cluster`]: crate::session::Session::run_on_cluster

use crate::backend::kubernetes::backend::KubeBackend;
use crate::backend::kubernetes::cluster::Cluster;
use crate::backend::kubernetes::manifest::KubeOptions;
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::env::Environment;
use crate::error::Result;
use crate::event::Event;
use crate::ops::start::SandboxOptions;

/// What [`SandboxOptions::start_on_cluster`] made.
pub(crate) struct OnCluster {
    /// The sandbox, held by this process, filled.
    pub env: Environment,
    /// The pool's refill, when a pooled sandbox was claimed (it logs its own failures).
    pub refilling: Option<tokio::task::JoinHandle<()>>,
}

impl SandboxOptions {
    /// Start (or, `pooled`, claim one of the pool `name`: `DIDX_POOL_NAME`'s) a sandbox on
    /// `cluster`, then copy and load into it from `source` and give it its registry
    /// credentials; what failed after the start is removed.
    pub(crate) async fn start_on_cluster(
        &self,
        cluster: &Cluster,
        kube: &KubeOptions,
        source: Option<&Engine>,
        pooled: bool,
        name: Option<String>,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
    ) -> Result<OnCluster> {
        let mut spec = self.kube_spec()?;
        let seeds = match source {
            Some(engine) => self.check(engine).await?,
            None => {
                self.refuse_fill_on_cluster()?;
                Vec::new()
            }
        };
        let mut kube = kube.clone();
        kube.namespace = cluster.namespace().to_string();
        let backend = std::sync::Arc::new(KubeBackend::new(cluster.clone(), kube.clone()));
        let template = spec.clone();
        let claimed = if pooled { crate::env::pool::kube::claim(&backend, &mut spec, name.as_deref()).await? } else { None };
        let (mut env, refilling) = match claimed {
            Some((env, size, idle)) => {
                let cluster = cluster.clone();
                let refill = tokio::spawn(async move {
                    match crate::env::pool::kube::up(&cluster, &template, &kube, (size, 1), idle, name.as_deref()).await {
                        Ok(up) => {
                            for e in &up.failed {
                                tracing::warn!(error = %e, "refilling the pool on the cluster: a pooled sandbox failed to start");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "refilling the pool on the cluster failed"),
                    }
                });
                (env, Some(refill))
            }
            None => (Environment::start_on(backend, &spec, &Cancel::new(), &|_| {}).await?, None),
        };
        let filled = match source {
            Some(engine) => self.fill(engine, &mut env, &seeds, on).await,
            None => self.authorize(&mut env).await,
        };
        if let Err(e) = filled {
            if let Some(refill) = &refilling {
                refill.abort();
            }
            if let Err(rm) = env.rm().await {
                tracing::warn!(error = %rm, "removing a sandbox whose copy or load failed failed");
            }
            return Err(e);
        }
        Ok(OnCluster { env, refilling })
    }
}
