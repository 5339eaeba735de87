//! Against a LIVE cluster, for anyone who has one (none can be installed where didx is built
//! and tested, so this has not run there): the flow the emulated cluster's tests run
//! (`kube_emulated_cluster.rs`), on the cluster of your kubeconfig.
//!
//! ```sh
//! DIDX_K8S_LIVE=1 [DIDX_K8S_NAMESPACE=ns] [DIDX_K8S_CONTEXT=ctx] [DIDX_K8S_ISOLATION=caps] \
//!     cargo test -p didx --test kube_live -- --include-ignored --nocapture
//! ```
//!
//! The namespace (default `default`) must admit privileged pods (or the caps profile's, with
//! `DIDX_K8S_ISOLATION=caps`), and the nodes must pull `docker:dind` and `docker:latest`
//! (the default images; the cluster pulls them). It makes one Job and its Secret, holds the
//! pod, uses its inner engine through `pods/exec`, lets go, and checks that the pod ended and
//! the next start's sweep removed the Job; it deletes what it made whatever happens.

use std::time::{Duration, Instant};

use didx::kubernetes::{Cluster, KubeOptions, objects};
use didx::spec::IsolationMode;

#[tokio::test]
#[ignore = "needs a live cluster: DIDX_K8S_LIVE=1 and a kubeconfig (see the file's docs)"]
async fn a_sandbox_on_a_live_cluster_is_held_reached_through_pods_exec_and_gone_once_let_go() {
    assert_eq!(std::env::var("DIDX_K8S_LIVE").as_deref(), Ok("1"), "run with DIDX_K8S_LIVE=1 and a kubeconfig (see the file's docs)");
    let namespace = std::env::var("DIDX_K8S_NAMESPACE").unwrap_or_else(|_| "default".into());
    let context = std::env::var("DIDX_K8S_CONTEXT").ok();
    let isolation = match std::env::var("DIDX_K8S_ISOLATION").as_deref() {
        Ok("caps") => IsolationMode::Caps,
        _ => IsolationMode::Auto,
    };
    let cluster = Cluster::connect(context.as_deref(), Some(&namespace)).await.unwrap();
    let options = didx::Sandbox::builder().isolation(isolation).options().unwrap();
    let objects = objects(&options, &KubeOptions { namespace: namespace.clone(), ..KubeOptions::default() }).unwrap();
    let (_, created) = cluster.start(objects).await.unwrap();
    let name = created.name.clone();
    let outcome: didx::Result<()> = async {
        let pod = cluster.wait_running(&name, Duration::from_secs(300)).await?;
        let hold = cluster.hold(&pod).await?;
        let inner = cluster.inner_docker(&pod)?;
        let started = Instant::now();
        let version = loop {
            match tokio::time::timeout(Duration::from_secs(10), inner.version()).await {
                Ok(Ok(v)) => break v,
                other if started.elapsed() > Duration::from_secs(120) => panic!("the inner engine never answered: {other:?}"),
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        eprintln!("LIVE: inner engine {:?} after {:.1} s", version.version, started.elapsed().as_secs_f64());
        drop(hold);
        let released = Instant::now();
        while !matches!(cluster.pod_phase(&name).await?.as_deref(), Some("Failed" | "Succeeded")) {
            assert!(released.elapsed() < Duration::from_secs(60), "the pod still runs 60 s after it was let go");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!("LIVE: the pod ended {:.1} s after it was let go", released.elapsed().as_secs_f64());
        let swept = cluster.sweep().await?;
        assert!(swept.jobs.contains(&name), "{swept:?}");
        Ok(())
    }
    .await;
    let _ = cluster.delete(&name).await;
    outcome.unwrap();
    assert!(!cluster.list().await.unwrap().contains(&name));
}
