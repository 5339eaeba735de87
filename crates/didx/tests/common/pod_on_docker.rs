//! A pod of a rendered sandbox Job run on a Docker engine as a container runtime under the
//! kubelet would run it (EMULATION, not a cluster; see `kube_pod_emulated.rs` for what is and
//! is not emulated): the containers made from the pod's fields, the Secret's files copied in,
//! optionally attached (stdin held, as the backend holds a pod), started.

#![allow(dead_code)]

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters as qp;
use didx::kubernetes::Objects;
use didx::kubernetes::k8s_openapi::api::core::v1::{Container, PodSpec};
use tokio::io::AsyncWriteExt;

/// The label every emulated container and volume carries, beside the pod's own.
pub const EMULATED: &str = "io.didx.emulated";

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
pub struct Pod {
    pub docker: Docker,
    pub server: String,
    pub client: String,
    holds: Vec<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
}

impl Pod {
    pub async fn run(docker: &Docker, objects: &Objects, tag: &str, attach: bool) -> Result<Pod, bollard::errors::Error> {
        let mut made = Vec::new();
        let result = Pod::make(docker, objects, tag, attach, &mut made).await;
        if result.is_err() {
            for id in made {
                let _ = docker.remove_container(&id, Some(qp::RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
            }
        }
        result
    }

    async fn make(
        docker: &Docker,
        objects: &Objects,
        tag: &str,
        attach: bool,
        ids: &mut Vec<String>,
    ) -> Result<Pod, bollard::errors::Error> {
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
            if attach {
                let options = qp::AttachContainerOptions { stdin: true, stream: true, ..Default::default() };
                me.holds.push(docker.attach_container(id, Some(options)).await?.input);
            }
        }
        for id in ids.iter() {
            docker.start_container(id, None::<qp::StartContainerOptions>).await?;
        }
        Ok(me)
    }

    /// One beat on each container's stdin (what the backend's hold says every second).
    pub async fn beat(&mut self) {
        for h in &mut self.holds {
            let _ = h.write_all(b"beat\n").await;
        }
    }

    pub async fn running(&self, id: &str) -> bool {
        let c = self.docker.inspect_container(id, None::<qp::InspectContainerOptions>).await.unwrap();
        c.state.and_then(|s| s.running).unwrap_or(false)
    }

    pub async fn logs(&self, id: &str) -> String {
        use futures_util::StreamExt;
        let mut s = self.docker.logs(id, Some(qp::LogsOptions { stdout: true, stderr: true, tail: "30".into(), ..Default::default() }));
        let mut out = String::new();
        while let Some(Ok(l)) = s.next().await {
            out.push_str(&l.to_string());
        }
        out
    }

    pub async fn remove(self) {
        for id in [&self.client, &self.server] {
            let _ = self.docker.remove_container(id, Some(qp::RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
        }
    }
}
