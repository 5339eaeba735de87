//! The life of a sandbox's objects on a cluster, against an emulated API server (no cluster can
//! be installed where these tests run; see `common/fake_kube.rs` for what is emulated): a start
//! and a removal killed after each of their requests leave nothing without an owner or an
//! expiry, and the next start's sweep (with the cluster's own controllers) leaves nothing at
//! all; a refused Secret takes its Job back; a second start of the same name is refused.
//! Needs no engine.

#[path = "common/fake_kube.rs"]
mod fake_kube;

use didx::kubernetes::k8s_openapi::api::core::v1::Secret;
use didx::kubernetes::kube::Api;
use didx::kubernetes::kube::api::PostParams;
use didx::kubernetes::{Cluster, KubeOptions, Objects, objects};
use fake_kube::FakeApi;
use serde_json::Value;

const NS: &str = "ci";

fn sandbox_objects() -> Objects {
    let options = didx::Sandbox::builder().server_version("26.1").options().unwrap();
    objects(&options, &KubeOptions { namespace: NS.into(), ..KubeOptions::default() }).unwrap()
}

fn managed(o: &Value) -> bool {
    o["metadata"]["labels"]["io.didx.managed"].as_str() == Some("true")
}

/// What another didx left: a Job that ended (its Secret with it), a Secret whose Job is gone
/// (the garbage collector has not come by), and a Job that is not didx's.
async fn seed(api: &FakeApi) {
    let cluster = Cluster::new(api.client(), NS);
    cluster.create(sandbox_objects()).await.unwrap();
    api.state.lock().unwrap().fail_every_job();
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    let mut orphan = sandbox_objects().secret;
    orphan.metadata.name = Some("didx-orphan".into());
    orphan.metadata.owner_references.as_mut().unwrap()[0].uid = "00000000-0000-4000-8000-999999999999".into();
    secrets.create(&PostParams::default(), &orphan).await.unwrap();
    let mut theirs = sandbox_objects().job;
    theirs.metadata.name = Some("their-job".into());
    theirs.metadata.labels = None;
    Api::namespaced(api.client(), NS).create(&PostParams::default(), &theirs).await.unwrap();
}

/// A start, then the removal of what it made.
async fn flow(api: &FakeApi) -> didx::Result<()> {
    let cluster = Cluster::new(api.client(), NS);
    let (_, created) = cluster.start(sandbox_objects()).await?;
    assert!(cluster.delete(&created.name).await?);
    Ok(())
}

/// Nothing of didx's without an owner or an expiry: every Job has a deadline and a TTL after
/// it ends, every Secret and pod an owner.
fn owned_or_expiring(api: &FakeApi, after: usize) {
    let s = api.state.lock().unwrap();
    for job in s.all("jobs").iter().filter(|o| managed(o)) {
        let spec = &job["spec"];
        assert!(spec["activeDeadlineSeconds"].as_i64().unwrap_or(0) > 0, "killed after request {after}: a Job without a deadline: {job}");
        assert!(spec["ttlSecondsAfterFinished"].as_i64().is_some(), "killed after request {after}: a Job without a TTL: {job}");
    }
    for kind in ["secrets", "pods"] {
        for o in s.all(kind) {
            let owners = o["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
            assert!(
                owners.iter().any(|r| r["kind"] == "Job" && r["controller"] == true && r["uid"].as_str().is_some_and(|u| !u.is_empty())),
                "killed after request {after}: a {kind} without an owner: {o}"
            );
        }
    }
}

/// The cluster's own work once didx is gone (the pods' leases end them: the Job failed; the
/// garbage collector), then the next start's sweep: only the Job that is not didx's is left.
async fn cleared_by_the_next_start(api: &FakeApi, after: usize) {
    {
        let mut s = api.state.lock().unwrap();
        s.fail_every_job();
        s.collect_garbage();
    }
    Cluster::new(api.client(), NS).sweep().await.unwrap();
    let mut s = api.state.lock().unwrap();
    s.collect_garbage();
    let names = s.names();
    assert_eq!(names, ["jobs/their-job", "pods/their-job-x7k2p"], "killed after request {after}: left {names:?}");
}

#[tokio::test]
async fn a_start_and_a_removal_killed_after_any_request_leave_nothing_without_an_owner_or_an_expiry() {
    // The whole flow first, to count its requests (and see it work).
    let api = FakeApi::new();
    seed(&api).await;
    let before = api.state.lock().unwrap().requests;
    flow(&api).await.unwrap();
    let (requests, log) = {
        let s = api.state.lock().unwrap();
        (s.requests - before, s.log[before..].to_vec())
    };
    // The sweep (list Jobs, delete the ended one, list Secrets, delete the two not owned by a
    // live Job), the Job, its Secret, then the removal's two deletes.
    assert_eq!(requests, 9, "{log:#?}");
    assert!(log[5].starts_with("POST /apis/batch/v1/namespaces/ci/jobs"), "the Job first: {log:#?}");
    assert!(log[6].starts_with("POST /api/v1/namespaces/ci/secrets"), "then its Secret: {log:#?}");
    api.state.lock().unwrap().collect_garbage();
    assert_eq!(api.state.lock().unwrap().names(), ["jobs/their-job", "pods/their-job-x7k2p"]);

    for k in 1..=requests {
        let api = FakeApi::new();
        seed(&api).await;
        api.kill_after(k);
        let killed = api.killed.clone();
        tokio::select! {
            r = flow(&api) => panic!("the flow ended ({r:?}) though the API server never answered request {k}"),
            () = killed.notified() => {}
        }
        owned_or_expiring(&api, k);
        cleared_by_the_next_start(&api, k).await;
    }
}

#[tokio::test]
async fn a_started_sandbox_s_secret_is_owned_by_its_job_and_goes_with_it() {
    let api = FakeApi::new();
    let cluster = Cluster::new(api.client(), NS);
    let (swept, created) = cluster.start(sandbox_objects()).await.unwrap();
    assert_eq!(swept, didx::kubernetes::Swept::default());
    assert_eq!(cluster.list().await.unwrap(), std::slice::from_ref(&created.name));
    assert_eq!(cluster.pod_phase(&created.name).await.unwrap().as_deref(), Some("Pending"));
    {
        let mut s = api.state.lock().unwrap();
        let secret = s.all("secrets").pop().unwrap();
        let owner = &secret["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"].as_str(), Some(created.job_uid.as_str()));
        assert_eq!(owner["name"].as_str(), Some(created.name.as_str()));
        // Real files, not a render's placeholders: the entrypoint and the certificates.
        let data = secret["data"].as_object().unwrap();
        assert!(data.keys().any(|k| k.ends_with("key.pem")), "{data:?}");
        assert!(!secret.to_string().contains(didx::kubernetes::PLACEHOLDER));
        // Deleting the Job alone: the garbage collector takes the Secret and the pod.
        let key = s.objects["jobs"].keys().next().unwrap().clone();
        s.objects.get_mut("jobs").unwrap().remove(&key);
        s.collect_garbage();
        assert!(s.names().is_empty(), "{:?}", s.names());
    }
    assert!(!cluster.delete(&created.name).await.unwrap(), "nothing was left to delete");
    assert_eq!(cluster.pod_phase(&created.name).await.unwrap(), None);
}

#[tokio::test]
async fn a_secret_the_cluster_refuses_takes_its_job_back() {
    let api = FakeApi::new();
    api.state.lock().unwrap().forbidden.push("secrets");
    let err = Cluster::new(api.client(), NS).create(sandbox_objects()).await.unwrap_err();
    let line = err.to_string();
    assert!(line.starts_with("kubernetes call 'create secret' on 'didx-"), "{line}");
    assert!(line.contains("forbidden") && !line.contains('\n'), "{line}");
    let s = api.state.lock().unwrap();
    assert!(s.all("jobs").is_empty(), "the Job was deleted again: {:?}", s.names());
}

#[tokio::test]
async fn a_second_start_of_the_same_name_is_refused_and_leaves_the_first_as_it_was() {
    let api = FakeApi::new();
    let cluster = Cluster::new(api.client(), NS);
    let objects = sandbox_objects();
    let first = cluster.create(objects.clone()).await.unwrap();
    let before = api.state.lock().unwrap().names();
    let err = cluster.create(objects).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(api.state.lock().unwrap().names(), before);
    let job_uid = api.state.lock().unwrap().all("jobs")[0]["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(job_uid, first.job_uid);
}
