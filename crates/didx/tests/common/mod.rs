//! What the library's own tests share: a host engine client (plain bollard, as a user's test
//! would have), a tiny busybox image made offline from the one in didx/dind:local, and the
//! check that a sandbox left nothing behind.
#![allow(dead_code)]

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters as qp;
use futures_util::{StreamExt, TryStreamExt};

/// The host engine, as a user's test would reach it.
pub fn host() -> Docker {
    Docker::connect_with_defaults().expect("a docker engine (scripts/ensure-engine.sh)")
}

/// A unique tag for this test's resources.
pub fn tag(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// Import a busybox image named `name:tag` on the host engine from the busybox binary of
/// didx/dind:local (no registry). Returns `name:tag`.
pub async fn busybox(docker: &Docker, name: &str, tag: &str) -> String {
    let reader = format!("didx-libtest-reader-{tag}");
    let body = ContainerCreateBody { image: Some("didx/dind:local".into()), ..Default::default() };
    docker.create_container(Some(qp::CreateContainerOptions { name: Some(reader.clone()), ..Default::default() }), body).await.unwrap();
    let chunks: Vec<bytes::Bytes> = docker
        .download_from_container(&reader, Some(qp::DownloadFromContainerOptions { path: "/usr/bin/busybox".into() }))
        .try_collect()
        .await
        .unwrap();
    docker.remove_container(&reader, Some(qp::RemoveContainerOptions { force: true, ..Default::default() })).await.unwrap();
    let data = chunks.concat();
    let mut archive = tar::Archive::new(&data[..]);
    let mut bin = Vec::new();
    std::io::Read::read_to_end(&mut archive.entries().unwrap().next().unwrap().unwrap(), &mut bin).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bin.len() as u64);
    b.append_data(&mut h, "bin/busybox", &bin[..]).unwrap();
    // wget: what didx::wait's HTTP probe runs in a container (tests/wait.rs).
    for applet in ["sh", "true", "echo", "sleep", "cat", "ls", "wget"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    let rootfs = b.into_inner().unwrap();
    let opts = qp::CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(name.into()),
        tag: Some(tag.into()),
        // One change only, and no ENV PATH (the engine's default PATH has /bin): with two,
        // Podman's import left an image whose `echo` the inner engine could not find.
        changes: vec!["CMD [\"sh\"]".into()],
        ..Default::default()
    };
    let mut s = docker.create_image(Some(opts), Some(bollard::body_full(rootfs.into())), None);
    while let Some(item) = s.next().await {
        item.unwrap();
    }
    format!("{name}:{tag}")
}

/// Remove an image of the host engine.
pub async fn remove_image(docker: &Docker, image: &str) {
    docker.remove_image(image, Some(qp::RemoveImageOptions { force: true, ..Default::default() }), None).await.unwrap();
}

/// Containers and volumes on the host engine labelled with sandbox `id`.
pub async fn leftovers(docker: &Docker, id: &str) -> Vec<String> {
    let filters: HashMap<String, Vec<String>> = HashMap::from([("label".into(), vec![format!("io.didx.env={id}")])]);
    let cs = docker
        .list_containers(Some(qp::ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() }))
        .await
        .unwrap();
    let vs = docker.list_volumes(Some(qp::ListVolumesOptions { filters: Some(filters) })).await.unwrap();
    cs.into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .chain(vs.volumes.unwrap_or_default().into_iter().map(|v| format!("volume {}", v.name)))
        .collect()
}

/// Serves `text` over HTTP from an inner container of `docker` (a sandbox's inner engine,
/// running `image`, a busybox) published on port `port` of the server's network, then fetches
/// it from this machine at `addr` until it answers 200 (20 s at most); the reply.
pub async fn serve_and_fetch(docker: &Docker, image: &str, name: &str, port: u16, text: &str, addr: String) -> String {
    use std::io::{Read, Write};
    let serve = format!("busybox mkdir -p /www && echo {text} > /www/index.html && exec busybox httpd -f -p 80 -h /www");
    let hc = bollard::models::HostConfig {
        port_bindings: Some(HashMap::from([(
            "80/tcp".to_string(),
            Some(vec![bollard::models::PortBinding { host_ip: None, host_port: Some(port.to_string()) }]),
        )])),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), serve]),
        host_config: Some(hc),
        // As `docker run -p` does: an engine binds only ports the container exposes.
        exposed_ports: Some(vec!["80/tcp".to_string()]),
        ..Default::default()
    };
    docker.create_container(Some(qp::CreateContainerOptions { name: Some(name.to_string()), ..Default::default() }), body).await.unwrap();
    docker.start_container(name, None::<qp::StartContainerOptions>).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let mut reply = String::new();
            if let Ok(mut s) = std::net::TcpStream::connect(&addr)
                && s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_string(&mut reply).is_ok()
                && reply.contains("200")
            {
                return reply;
            }
            assert!(std::time::Instant::now() < deadline, "no reply from {addr}: {reply:?}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    })
    .await
    .unwrap()
}
