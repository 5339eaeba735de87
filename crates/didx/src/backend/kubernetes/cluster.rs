//! The objects of sandboxes on a cluster, through its API server (`kube`): made in the order
//! that leaves nothing without an owner or an expiry whenever didx stops, found by label,
//! removed, and swept.
//!
//! The order of a start ([`Cluster::create`]): the **Job** first — it carries its own expiry
//! (`activeDeadlineSeconds` ends its pod, then `ttlSecondsAfterFinished` has the cluster delete
//! it), and its pod waits for its files until the Secret exists (`FailedMount`, retried by the
//! kubelet); then the **Secret**, owned by the Job (its uid, known only once the Job is made),
//! which the cluster's garbage collector deletes with it. A didx killed between or after the
//! two calls leaves a Job that expires and a Secret that goes with it; never a Secret alone.
//! (A Secret first would be an object with neither, until a sweep.)
//!
//! The pod's containers end themselves when their didx falls silent (the entrypoint's lease:
//! stdin with beats, see `recipe::held`): no word within a few seconds of their start ends
//! them, so a didx killed before it attached leaves a pod that ends at once, a Job that failed,
//! and the TTL after that.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{Config, KubeConfigOptions};

use super::manifest::Objects;
use crate::error::{Error, Result};
use crate::labels;

/// A namespace of a cluster, as didx uses it.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    namespace: String,
    /// Its configuration is the in-cluster one (didx runs in a pod of it).
    in_cluster: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// What [`Cluster::create`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The Job's and the Secret's name.
    pub name: String,
    /// The Job's uid (the Secret's owner).
    pub job_uid: String,
}

/// What [`Cluster::sweep`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// didx's Jobs that had ended (completed, failed, or past their deadline).
    pub jobs: Vec<String>,
    /// didx's Secrets whose owning Job is gone (the garbage collector had not taken them).
    pub secrets: Vec<String>,
}

/// A Job's name.
fn object_name_of(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

/// didx's objects, as the sweep and `ls` find them.
fn managed() -> ListParams {
    ListParams::default().labels(&format!("{}=true", labels::MANAGED))
}

fn call(op: &'static str, target: &str) -> impl FnOnce(kube::Error) -> Error {
    let target = target.to_string();
    move |source| Error::Cluster { op, target, source: Box::new(source) }
}

/// True when the API server answered 404 (the object is not there).
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Cluster {
    /// The cluster the user's configuration names: `context` of the kubeconfig (`KUBECONFIG`,
    /// else `~/.kube/config`) when given, else its current context, else the in-cluster
    /// configuration (didx running in a pod); `namespace`, else the context's, else `default`.
    pub async fn connect(context: Option<&str>, namespace: Option<&str>) -> Result<Cluster> {
        let bad = |why: String| Error::ClusterConfig { context: context.map(str::to_string), why };
        let config = match context {
            Some(c) => {
                let options = KubeConfigOptions { context: Some(c.to_string()), ..KubeConfigOptions::default() };
                Config::from_kubeconfig(&options).await.map_err(|e| bad(e.to_string()))?
            }
            None => Config::infer().await.map_err(|e| bad(e.to_string()))?,
        };
        // `infer` takes the in-cluster configuration exactly when no kubeconfig could be read.
        let in_cluster = context.is_none() && Config::from_kubeconfig(&KubeConfigOptions::default()).await.is_err();
        let namespace = namespace.map(str::to_string).unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| bad(e.to_string()))?;
        Ok(Cluster { client, namespace, in_cluster })
    }

    /// A cluster reached through `client` (any `tower` service: tests give an emulated API
    /// server), in `namespace`.
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Cluster {
        Cluster { client, namespace: namespace.into(), in_cluster: false }
    }

    /// Whether didx runs in this cluster (its configuration is a pod's in-cluster one): a
    /// sandbox's pod is then reached by its IP ([`KubeReach::Auto`](super::way::KubeReach)).
    pub fn in_cluster(&self) -> bool {
        self.in_cluster
    }

    /// The client it talks through.
    pub(crate) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The namespace didx's objects are made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A start's calls to the cluster: [`Cluster::sweep`], then [`Cluster::create`].
    pub async fn start(&self, objects: Objects) -> Result<(Swept, Created)> {
        let swept = self.sweep().await?;
        Ok((swept, self.create(objects).await?))
    }

    /// Makes a sandbox's objects: the Job, then the Secret owned by it (see the module's
    /// docs for why in this order). When the Secret cannot be made, the Job is deleted again.
    pub async fn create(&self, objects: Objects) -> Result<Created> {
        let Objects { job, mut secret } = objects;
        let name = object_name_of(&job);
        let made = self.jobs().create(&PostParams::default(), &job).await.map_err(call("create job", &name))?;
        let job_uid = made.metadata.uid.clone().unwrap_or_default();
        for owner in secret.metadata.owner_references.iter_mut().flatten() {
            owner.uid = job_uid.clone();
        }
        if let Err(e) = self.secrets().create(&PostParams::default(), &secret).await {
            // Only the Job made here (a Secret of that name, if one exists, is not ours).
            let _ = self.jobs().delete(&name, &DeleteParams::background()).await;
            return Err(call("create secret", &name)(e));
        }
        Ok(Created { name, job_uid })
    }

    /// Deletes a sandbox's Job (its pod with it, in the background) and its Secret (the
    /// garbage collector would; didx does not wait for it). False when neither was there.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let mut found = false;
        match self.jobs().delete(name, &DeleteParams::background()).await {
            Ok(_) => found = true,
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(call("delete job", name)(e)),
        }
        match self.secrets().delete(name, &DeleteParams::default()).await {
            Ok(_) => found = true,
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(call("delete secret", name)(e)),
        }
        Ok(found)
    }

    /// didx's Jobs in the namespace.
    pub(crate) async fn jobs_managed(&self) -> Result<Vec<Job>> {
        Ok(self.jobs().list(&managed()).await.map_err(call("list jobs", &self.namespace))?.items)
    }

    /// The labels and annotations of Job `name` (what a start wrote there), together; `None`
    /// when it is gone.
    pub(crate) async fn job_labels(&self, name: &str) -> Result<Option<std::collections::HashMap<String, String>>> {
        let job = self.jobs().get_opt(name).await.map_err(call("get job", name))?;
        Ok(job.map(|j| {
            let m = j.metadata;
            m.labels.into_iter().flatten().chain(m.annotations.into_iter().flatten()).collect()
        }))
    }

    /// The names of didx's Jobs in the namespace.
    pub async fn list(&self) -> Result<Vec<String>> {
        let jobs = self.jobs().list(&managed()).await.map_err(call("list jobs", &self.namespace))?;
        Ok(jobs.items.iter().map(object_name_of).collect())
    }

    /// The phase of a sandbox's pod (`Pending`, `Running`, `Succeeded`, `Failed`), `None`
    /// while the Job controller has made none.
    pub async fn pod_phase(&self, name: &str) -> Result<Option<String>> {
        let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
        let pods = self.pods().list(&params).await.map_err(call("list pods", name))?;
        Ok(pods.items.first().map(|p| p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into())))
    }

    /// Removes what is left of ended sandboxes: didx's Jobs that completed, failed or passed
    /// their deadline (the TTL controller would, later, where the cluster runs it), and didx's
    /// Secrets whose owning Job is gone (the garbage collector would). Run at each start.
    pub async fn sweep(&self) -> Result<Swept> {
        let ns = self.namespace.clone();
        let jobs = self.jobs().list(&managed()).await.map_err(call("list jobs", &ns))?;
        let mut swept = Swept::default();
        let mut live_uids = Vec::new();
        for job in &jobs.items {
            let name = object_name_of(job);
            if ended(job) {
                match self.jobs().delete(&name, &DeleteParams::background()).await {
                    Ok(_) => swept.jobs.push(name),
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(call("delete job", &name)(e)),
                }
            } else if let Some(uid) = &job.metadata.uid {
                live_uids.push(uid.clone());
            }
        }
        let secrets = self.secrets().list(&managed()).await.map_err(call("list secrets", &ns))?;
        for secret in &secrets.items {
            let owned = secret.metadata.owner_references.iter().flatten().any(|o| live_uids.contains(&o.uid));
            let name = secret.metadata.name.clone().unwrap_or_default();
            if !owned {
                match self.secrets().delete(&name, &DeleteParams::default()).await {
                    Ok(_) => swept.secrets.push(name),
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(call("delete secret", &name)(e)),
                }
            }
        }
        Ok(swept)
    }
}

/// True when a Job has ended: a `Complete` or `Failed` condition (a passed deadline is one),
/// or a pod that succeeded or failed (`backoffLimit: 0`: there is no second).
fn ended(job: &Job) -> bool {
    let Some(status) = &job.status else { return false };
    let condition = status.conditions.iter().flatten().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    condition || status.succeeded.unwrap_or(0) > 0 || status.failed.unwrap_or(0) > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    #[test]
    fn a_job_has_ended_once_it_completed_failed_or_its_pod_did() {
        let with = |status: Option<JobStatus>| Job { status, ..Job::default() };
        assert!(!ended(&with(None)));
        assert!(!ended(&with(Some(JobStatus { active: Some(1), ..JobStatus::default() }))));
        assert!(ended(&with(Some(JobStatus { failed: Some(1), ..JobStatus::default() }))));
        assert!(ended(&with(Some(JobStatus { succeeded: Some(1), ..JobStatus::default() }))));
        let condition = |type_: &str, status: &str| {
            Some(JobStatus {
                conditions: Some(vec![JobCondition { type_: type_.into(), status: status.into(), ..JobCondition::default() }]),
                ..JobStatus::default()
            })
        };
        assert!(ended(&with(condition("Failed", "True"))));
        assert!(ended(&with(condition("Complete", "True"))));
        assert!(!ended(&with(condition("Failed", "False"))));
        assert!(!ended(&with(condition("Suspended", "True"))));
    }
}
