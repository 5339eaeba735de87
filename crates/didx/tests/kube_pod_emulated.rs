//! EMULATION, not a cluster: the pod of a rendered sandbox Job (`didx::kubernetes::objects`)
//! run on the local Docker engine with the settings the pod asks for, translated as a
//! container runtime under the kubelet would apply them: each container's image, command, args,
//! env, stdin/stdinOnce and security context (privileged; else capabilities, seccomp and
//! AppArmor profiles, with the runtime's default masked and read-only paths and device rules,
//! as containerd gives a pod), the Secret's files at their mount paths with their modes, the
//! `emptyDir` as an anonymous volume, the containers in one network namespace (the server's)
//! with the pod's host aliases. What it does not emulate: the kubelet and the API server
//! themselves (the Secret's files are copied in, not mounted read-only; the pod's attach is the
//! engine's attach).
//!
//! What it proves about the rendered pod: its server's dockerd starts and serves mutual TLS to
//! its client as `docker`; the inner engine is reached from outside through an exec of `docker
//! system dial-stdio` in the client (the data path the Kubernetes backend takes over
//! pods/exec); and the pod's lease, with the beats a didx sends, ends both containers when
//! the beats stop though the stream stays open (a silent link, or a killed didx whose attach
//! the API server keeps). Every container and volume is removed; the test asserts it.

mod common;
#[path = "common/pod_on_docker.rs"]
mod pod_on_docker;

use std::time::{Duration, Instant};

use bollard::query_parameters as qp;
use common::{host, leftovers};
use didx::kubernetes::{KubeOptions, objects};
use didx::spec::IsolationMode;
use pod_on_docker::Pod;

async fn emulated_pod_serves_its_client_and_ends_when_its_beats_stop(isolation: IsolationMode, what: &str) {
    let docker = host();
    let options =
        didx::Sandbox::builder().server_image("didx/dind:local").client_image("didx/dind:local").isolation(isolation).options().unwrap();
    let objects = objects(&options, &KubeOptions::default()).unwrap();
    let id = objects.job.metadata.labels.as_ref().unwrap()["io.didx.env"].clone();
    let tag = common::tag("k8s-emulated");
    let mut pod = match Pod::run(&docker, &objects, &tag, true).await {
        Ok(p) => p,
        Err(e) => panic!("EMULATED pod ({what}): not made: {e}"),
    };
    let engine = didx::Engine::connect_default().await.unwrap();

    // The data path: the inner engine through `docker system dial-stdio` execs in the client,
    // once its dockerd is ready (beats meanwhile, as the backend's hold sends them).
    let inner = engine.inner_over_exec(&pod.client).unwrap();
    let started = Instant::now();
    let version = loop {
        pod.beat().await;
        match tokio::time::timeout(Duration::from_secs(5), inner.version()).await {
            Ok(Ok(v)) => break v,
            _ if started.elapsed() < Duration::from_secs(90) && pod.running(&pod.server).await => {}
            other => {
                let (s, c) = (pod.logs(&pod.server).await, pod.logs(&pod.client).await);
                pod.remove().await;
                panic!("EMULATED pod ({what}): its inner engine never answered: {other:?}\nserver:\n{s}\nclient:\n{c}");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(version.version.is_some(), "{version:?}");
    // It works as an engine: a volume made, listed and removed in it.
    let made =
        inner.create_volume(bollard::models::VolumeCreateRequest { name: Some("emulated".into()), ..Default::default() }).await.unwrap();
    let listed = inner.list_volumes(None::<qp::ListVolumesOptions>).await.unwrap();
    assert!(listed.volumes.unwrap_or_default().iter().any(|v| v.name == made.name));
    inner.remove_volume("emulated", None::<qp::RemoveVolumeOptions>).await.unwrap();
    // And the client reaches it as `docker` over mutual TLS, with its own CLI (DOCKER_HOST).
    let argv: Vec<String> = ["docker", "info", "--format", "{{.ServerVersion}}"].map(String::from).to_vec();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = engine.exec(&pod.client, &argv, &[], &mut out, &mut err).await.unwrap();
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out.trim(), version.version.clone().unwrap(), "{err}");

    // The beats stop; the stream stays open (a silent link): both containers end themselves.
    let silent = Instant::now();
    while (pod.running(&pod.server).await || pod.running(&pod.client).await) && silent.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (server_up, client_up) = (pod.running(&pod.server).await, pod.running(&pod.client).await);
    let logs = pod.logs(&pod.server).await;
    pod.remove().await;
    assert!(
        !server_up && !client_up,
        "EMULATED pod ({what}): still running 60 s after its beats stopped (server {server_up}, client {client_up})"
    );
    assert!(logs.contains("lease lost"), "the server ended by its lease: {logs}");
    eprintln!("EMULATED pod ({what}): ended {:.1} s after its beats stopped", silent.elapsed().as_secs_f64());
    assert!(leftovers(&docker, &id).await.is_empty(), "left: {:?}", leftovers(&docker, &id).await);
}

#[tokio::test]
async fn an_emulated_pod_with_the_caps_profile_serves_its_client_and_ends_when_its_beats_stop() {
    emulated_pod_serves_its_client_and_ends_when_its_beats_stop(IsolationMode::Caps, "caps").await;
}

/// The privileged pod (isolation `auto`, the default): served as above where the engine grants
/// `--privileged` (`DIDX_TEST_PRIVILEGED=works`, the VM lane); where it is refused
/// (`DIDX_TEST_PRIVILEGED=refused`: this project's host, whose root lacks CAP_SYS_RESOURCE), the
/// emulated pod cannot start, as such a pod could not on a node like it — asserted, and nothing
/// is left.
#[tokio::test]
async fn an_emulated_privileged_pod_serves_its_client_or_is_refused_where_the_host_refuses_privileged() {
    let granted = match std::env::var("DIDX_TEST_PRIVILEGED").as_deref() {
        Ok("works") => Some(true),
        Ok("refused") => Some(false),
        Err(_) => None,
        Ok(other) => panic!("DIDX_TEST_PRIVILEGED={other}: say works or refused"),
    };
    if granted == Some(true) {
        return emulated_pod_serves_its_client_and_ends_when_its_beats_stop(IsolationMode::Auto, "privileged").await;
    }
    let docker = host();
    let options = didx::Sandbox::builder().server_image("didx/dind:local").client_image("didx/dind:local").options().unwrap();
    let objects = objects(&options, &KubeOptions::default()).unwrap();
    let server = &objects.job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(server.security_context.as_ref().and_then(|s| s.privileged), Some(true));
    let id = objects.job.metadata.labels.as_ref().unwrap()["io.didx.env"].clone();
    match Pod::run(&docker, &objects, &common::tag("k8s-emulated-priv"), true).await {
        Ok(pod) if granted.is_none() => {
            // Unset: this engine grants it, so the whole test runs.
            pod.remove().await;
            eprintln!("EMULATED pod (privileged): granted here (DIDX_TEST_PRIVILEGED unset): run in full");
            emulated_pod_serves_its_client_and_ends_when_its_beats_stop(IsolationMode::Auto, "privileged").await;
        }
        Ok(pod) => {
            pod.remove().await;
            panic!("the privileged pod started where --privileged is refused (DIDX_TEST_PRIVILEGED=refused)")
        }
        Err(e) => {
            assert!(didx::isolation::is_caps_refusal(&e.to_string()), "{e}");
            eprintln!("EMULATED pod (privileged): refused by this engine, as asserted: {e}");
        }
    }
    assert!(leftovers(&docker, &id).await.is_empty(), "left: {:?}", leftovers(&docker, &id).await);
}
