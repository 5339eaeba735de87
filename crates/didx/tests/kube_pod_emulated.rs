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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters as qp;
use common::{host, leftovers};
use didx::kubernetes::k8s_openapi::api::core::v1::{Container, PodSpec};
use didx::kubernetes::{KubeOptions, Objects, objects};
use didx::spec::IsolationMode;
use tokio::io::AsyncWriteExt;

/// The label every emulated container and volume carries, beside the pod's own.
const EMULATED: &str = "io.didx.emulated";

/// One container of the pod, as Docker creates it (`net`: the server's id for the client).
fn body(c: &Container, pod: &PodSpec, labels: &HashMap<String, String>, net: Option<&str>) -> ContainerCreateBody {
    let sc = c.security_context.clone().unwrap_or_default();
    let mut hc = HostConfig { privileged: sc.privileged, ..HostConfig::default() };
    if let Some(add) = sc.capabilities.and_then(|c| c.add) {
        // `ALL` is every capability the node's runtime has; where that is fewer than the
        // kernel knows (this project's host lacks CAP_SYS_RESOURCE), runc refuses `ALL`
        // ("unable to apply caps"), so the emulation names them: this host's bounding set.
        hc.cap_add = Some(match add.iter().any(|c| c == "ALL") {
            true => match didx::isolation::Isolation::caps_profile() {
                didx::isolation::Isolation::Caps(caps) => caps,
                didx::isolation::Isolation::Privileged => unreachable!(),
            },
            false => add,
        });
    }
    let mut opts = Vec::new();
    if sc.seccomp_profile.is_some_and(|p| p.type_ == "Unconfined") {
        opts.push("seccomp=unconfined".to_string());
    }
    if sc.app_armor_profile.is_some_and(|p| p.type_ == "Unconfined") {
        opts.push("apparmor=unconfined".to_string());
    }
    if sc.allow_privilege_escalation == Some(false) {
        opts.push("no-new-privileges".to_string());
    }
    hc.security_opt = (!opts.is_empty()).then_some(opts);
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let volume = pod.volumes.iter().flatten().find(|v| v.name == m.name).expect("a mount of a pod volume");
        if volume.empty_dir.is_some() {
            mounts.push(Mount {
                target: Some(m.mount_path.clone()),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions { labels: Some(labels.clone()), ..MountVolumeOptions::default() }),
                ..Mount::default()
            });
        }
    }
    hc.mounts = Some(mounts);
    match net {
        Some(server) => hc.network_mode = Some(format!("container:{server}")),
        None => {
            hc.extra_hosts = Some(
                pod.host_aliases.iter().flatten().flat_map(|a| a.hostnames.iter().flatten().map(|h| format!("{h}:{}", a.ip))).collect(),
            )
        }
    }
    ContainerCreateBody {
        image: c.image.clone(),
        entrypoint: c.command.clone(),
        cmd: c.args.clone(),
        env: Some(c.env.iter().flatten().map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default())).collect()),
        open_stdin: c.stdin,
        stdin_once: c.stdin_once,
        attach_stdin: c.stdin,
        labels: Some(labels.clone()),
        host_config: Some(hc),
        ..ContainerCreateBody::default()
    }
}

/// The Secret's files of container `c`, as a tar at their mount paths with their modes.
fn files(c: &Container, pod: &PodSpec, objects: &Objects) -> Vec<u8> {
    let data = objects.secret.data.as_ref().expect("a started sandbox's Secret has its data");
    let mut b = tar::Builder::new(Vec::new());
    for m in c.volume_mounts.iter().flatten() {
        let volume = pod.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
        let Some(secret) = &volume.secret else { continue };
        let key = m.sub_path.as_deref().expect("each file mounted by its key");
        let mode = secret.items.iter().flatten().find(|i| i.key == key).and_then(|i| i.mode).expect("each key with its mode");
        let bytes = &data[key].0;
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode as u32);
        h.set_size(bytes.len() as u64);
        b.append_data(&mut h, m.mount_path.trim_start_matches('/'), &bytes[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The emulated pod: created, its files in, attached (stdin held, as the backend would), started.
struct Pod {
    docker: Docker,
    server: String,
    client: String,
    holds: Vec<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
}

impl Pod {
    async fn run(docker: &Docker, objects: &Objects, tag: &str) -> Result<Pod, bollard::errors::Error> {
        let mut made = Vec::new();
        let result = Pod::make(docker, objects, tag, &mut made).await;
        if result.is_err() {
            for id in made {
                let _ = docker.remove_container(&id, Some(qp::RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
            }
        }
        result
    }

    async fn make(docker: &Docker, objects: &Objects, tag: &str, ids: &mut Vec<String>) -> Result<Pod, bollard::errors::Error> {
        let spec = objects.job.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        let mut labels: HashMap<String, String> = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap().into_iter().collect();
        labels.insert(EMULATED.into(), "kubernetes-pod".into());
        for c in &pod.containers {
            let name = format!("{}-{}-{tag}", objects.job.metadata.name.as_deref().unwrap(), c.name);
            let mut body = body(c, pod, &labels, ids.first().map(String::as_str));
            let made = loop {
                let options = qp::CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
                match docker.create_container(Some(options), body.clone()).await {
                    // An older engine knows fewer capabilities than this kernel (20.10: no
                    // CAP_PERFMON): named one by one, as didx's caps profile does.
                    Err(e) if e.to_string().contains("unknown capability") => {
                        let hc = body.host_config.as_mut().unwrap();
                        let mut iso = didx::isolation::Isolation::Caps(hc.cap_add.clone().unwrap_or_default());
                        iso.drop_unknown(&e.to_string()).ok_or(e)?;
                        let didx::isolation::Isolation::Caps(caps) = iso else { unreachable!() };
                        hc.cap_add = Some(caps);
                    }
                    other => break other?,
                }
            };
            ids.push(made.id);
        }
        let mut me = Pod { docker: docker.clone(), server: ids[0].clone(), client: ids[1].clone(), holds: Vec::new() };
        for (c, id) in pod.containers.iter().zip(ids.iter()) {
            let archive = files(c, pod, objects);
            docker
                .upload_to_container(
                    id,
                    Some(qp::UploadToContainerOptions { path: "/".into(), ..Default::default() }),
                    bollard::body_full(archive.into()),
                )
                .await?;
            let attached =
                docker.attach_container(id, Some(qp::AttachContainerOptions { stdin: true, stream: true, ..Default::default() })).await?;
            me.holds.push(attached.input);
        }
        for id in ids.iter() {
            docker.start_container(id, None::<qp::StartContainerOptions>).await?;
        }
        Ok(me)
    }

    /// One beat on each container's stdin (what the backend's hold says every second).
    async fn beat(&mut self) {
        for h in &mut self.holds {
            let _ = h.write_all(b"beat\n").await;
        }
    }

    async fn running(&self, id: &str) -> bool {
        let c = self.docker.inspect_container(id, None::<qp::InspectContainerOptions>).await.unwrap();
        c.state.and_then(|s| s.running).unwrap_or(false)
    }

    async fn logs(&self, id: &str) -> String {
        use futures_util::StreamExt;
        let mut s = self.docker.logs(id, Some(qp::LogsOptions { stdout: true, stderr: true, tail: "30".into(), ..Default::default() }));
        let mut out = String::new();
        while let Some(Ok(l)) = s.next().await {
            out.push_str(&l.to_string());
        }
        out
    }

    async fn remove(self) {
        for id in [&self.client, &self.server] {
            let _ = self.docker.remove_container(id, Some(qp::RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
        }
    }
}

async fn emulated_pod_serves_its_client_and_ends_when_its_beats_stop(isolation: IsolationMode, what: &str) {
    let docker = host();
    let options =
        didx::Sandbox::builder().server_image("didx/dind:local").client_image("didx/dind:local").isolation(isolation).options().unwrap();
    let objects = objects(&options, &KubeOptions::default()).unwrap();
    let id = objects.job.metadata.labels.as_ref().unwrap()["io.didx.env"].clone();
    let tag = common::tag("k8s-emulated");
    let mut pod = match Pod::run(&docker, &objects, &tag).await {
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
    match Pod::run(&docker, &objects, &common::tag("k8s-emulated-priv")).await {
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
