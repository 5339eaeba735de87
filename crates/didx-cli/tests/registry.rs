//! Registries for the inner engine, against registries of our own (Debian's distribution
//! registry, `docker-registry`, installed by scripts/setup.sh) listening on the engine's bridge
//! address, the host as every server sees it: a private registry behind htpasswd auth, pushed
//! to and pulled from with `--registry-auth` (`DOCKER_AUTH_CONFIG`), refused without it; and an
//! open one serving as `--registry-mirror` for the inner engine's Docker Hub pulls. The
//! credentials are looked for, and must be absent, in both containers' `docker inspect`, the
//! client's `docker diff` (what a commit would keep) and everything didx said. Each test leaves
//! the engine as found.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

/// A registry of ours: `docker-registry` on the bridge address, storage and config in a
/// directory of its own; killed and removed when dropped.
struct Registry {
    child: Child,
    dir: std::path::PathBuf,
    /// `GATEWAY:PORT`, as the inner engines reach it.
    addr: String,
}

impl Registry {
    /// Started, with htpasswd auth for `user` (bcrypt, as the registry requires) when given;
    /// returned once it answers `/v2/`.
    fn start(tag: &str, user: Option<(&str, &str)>) -> Registry {
        for tool in ["docker-registry", "htpasswd"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().unwrap();
            assert!(found.success(), "{tool} is missing: bash scripts/setup.sh installs it (docker-registry, apache2-utils)");
        }
        let gateway = rt().block_on(async {
            let docker = bollard::Docker::connect_with_defaults().unwrap();
            let bridge = docker.inspect_network("bridge", None::<bollard::query_parameters::InspectNetworkOptions>).await.unwrap();
            let config: Vec<_> = bridge.ipam.and_then(|i| i.config).into_iter().flatten().collect();
            // An engine that made its bridge itself (a first start, no docker0 before it) names
            // only the subnet; its gateway, this machine's docker0, is the subnet's first host.
            config
                .iter()
                .find_map(|c| c.gateway.clone())
                .or_else(|| config.iter().find_map(|c| first_host(c.subnet.as_deref()?)))
                .unwrap_or_else(|| panic!("the bridge network names no IPv4 gateway or subnet: {config:?}"))
        });
        let port = std::net::TcpListener::bind((gateway.as_str(), 0)).unwrap().local_addr().unwrap().port();
        let addr = format!("{gateway}:{port}");
        let dir = std::env::temp_dir().join(format!("didx-registry-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        if let Some((name, password)) = user {
            let out = Command::new("htpasswd").args(["-Bbn", name, password]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: didx-test\n    path: {}\n", dir.join("htpasswd").display()));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", &dir.join("config.yml").display().to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        let registry = Registry { child, dir, addr };
        let deadline = std::time::Instant::now() + scaled(std::time::Duration::from_secs(20));
        loop {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(&registry.addr) {
                let mut reply = String::new();
                if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok() && s.read_to_string(&mut reply).is_ok() && reply.starts_with("HTTP/1.")
                {
                    return registry;
                }
            }
            let log = std::fs::read_to_string(registry.dir.join("log")).unwrap_or_default();
            assert!(std::time::Instant::now() < deadline, "the registry at {} never answered: {log}", registry.addr);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first host address of an IPv4 subnet (`172.17.0.0/16` → `172.17.0.1`).
fn first_host(subnet: &str) -> Option<String> {
    let net: std::net::Ipv4Addr = subnet.split_once('/')?.0.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(net) + 1).to_string())
}

/// Standard base64 (what a docker config's `auth` holds).
fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The host image the runs load (busybox), removed when dropped.
fn host_image(tag: &str) -> HostImages {
    let name = format!("didx-test-registry-{tag}-{}:1", std::process::id());
    let made = HostImages(vec![name.clone()]);
    rt().block_on(async { busybox_image(&engine().await, &name).await });
    made
}

#[test]
fn private_images_go_up_and_come_down_with_registry_auth_and_are_refused_without_and_the_secret_shows_nowhere() {
    let password = format!("pw-{}-{}", std::process::id(), didx::env::EnvId::generate());
    let private = Registry::start("private", Some(("didx", &password)));
    let image = host_image("private");
    let auth = base64(format!("didx:{password}").as_bytes());
    let config = format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, private.addr);
    let remote = format!("{}/private/bb:1", private.addr);
    let tag = format!("docker tag {} {remote}", image.0[0]);
    let push = format!("docker push {remote}");

    // Without credentials: the push is refused, the run fails with the registry's answer.
    let r = from_output(
        didx_cmd(&["--clean", "anycase", "--insecure-registry", &private.addr, "--load", &image.0[0], &tag, &push])
            .env_remove("DOCKER_AUTH_CONFIG")
            .output()
            .unwrap(),
    );
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    assert_gone(&id);
    assert_ne!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains("no basic auth credentials") || r.stderr.contains("unauthorized"), "{}", r.show());

    // With them: pushed, removed, pulled back by the inner engine; the client's copy is
    // private. Kept (--clean none) to be looked at.
    let check =
        "sh -c 'stat -c %a:%U \"$DOCKER_CONFIG/config.json\" && stat -c %a \"$DOCKER_CONFIG\" && df -P \"$DOCKER_CONFIG\" | tail -1'";
    let r = from_output(
        didx_cmd(&[
            "--clean",
            "none",
            "--registry-auth",
            "--insecure-registry",
            &private.addr,
            "--load",
            &image.0[0],
            &tag,
            &push,
            &format!("docker rmi {remote}"),
            &format!("docker pull {remote}"),
            &format!("docker run --rm {remote} true"),
            check,
        ])
        .env("DOCKER_AUTH_CONFIG", &config)
        .output()
        .unwrap(),
    );
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        let id = r.env_id().unwrap();
        assert!(r.stdout.contains("600:root\n700\n"), "0600 in a 0700 directory: {}", r.show());
        assert!(r.stdout.lines().last().is_some_and(|l| l.starts_with("shm ") || l.contains("/dev/shm")), "on the tmpfs: {}", r.show());
        let secrets = [password.as_str(), auth.as_str()];
        for s in secrets {
            assert!(!r.stdout.contains(s) && !r.stderr.contains(s), "didx's output holds a secret: {}", r.show());
        }
        rt().block_on(async {
            let docker = bollard::Docker::connect_with_defaults().unwrap();
            let filters = std::collections::HashMap::from([("label".to_string(), vec![format!("io.didx.env={id}")])]);
            let opts = bollard::query_parameters::ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
            let members = docker.list_containers(Some(opts)).await.unwrap();
            assert_eq!(members.len(), 2, "{members:?}");
            for m in &members {
                let name = m.id.clone().unwrap();
                let inspected = serde_json::to_string(&docker.inspect_container(&name, None).await.unwrap()).unwrap();
                for s in secrets {
                    assert!(!inspected.contains(s), "docker inspect {name} holds a secret");
                }
                let changes = docker.container_changes(&name).await.unwrap().unwrap_or_default();
                let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
                assert!(paths.iter().all(|p| !p.contains("didx-docker") && !p.ends_with("config.json")), "docker diff {name}: {paths:?}");
            }
            didx::env::remove(&engine().await, &id).await.unwrap();
        });
        assert_gone(&id);
    });
}

#[test]
fn a_registry_mirror_serves_the_inner_engine_s_docker_hub_pulls() {
    let mirror = Registry::start("mirror", None);
    let image = host_image("mirror");
    // The mirror holds library/busybox: pushed from a sandbox (the registry is plain HTTP).
    let hub = format!("{}/library/busybox:latest", mirror.addr);
    let r = didx(&[
        "--clean",
        "anycase",
        "--insecure-registry",
        &mirror.addr,
        "--load",
        &image.0[0],
        &format!("docker tag {} {hub}", image.0[0]),
        &format!("docker push {hub}"),
        &format!("docker image inspect -f '{{{{.Id}}}}' {}", image.0[0]),
    ]);
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    assert_gone(&id);
    assert_eq!(r.code, 0, "{}", r.show());
    let pushed = r.stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(pushed.starts_with("sha256:"), "{}", r.show());

    // `busybox` from Docker Hub, which this machine cannot reach: the mirror answers.
    let r = didx(&[
        "--clean",
        "anycase",
        "--registry-mirror",
        &format!("http://{}", mirror.addr),
        "docker pull busybox",
        "docker image inspect -f '{{.Id}}' busybox",
        "docker run --rm busybox true",
    ]);
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    assert_gone(&id);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains(&pushed), "the mirror's image, {pushed}: {}", r.show());
}

#[test]
fn bad_registry_options_are_one_usage_line_and_nothing_is_made() {
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (&["--registry-mirror", "mirror.example", "true"], None, "--registry-mirror"),
        (&["--registry-mirror", "https://user:pw@mirror.example", "true"], None, "--registry-auth"),
        (&["--insecure-registry", "http://reg:5000", "true"], None, "--insecure-registry"),
        (&["--registry-auth", "true"], Some("{not json"), "DOCKER_AUTH_CONFIG"),
        (&["--registry-auth", "true"], Some(r#"{"auths": {"r": {}}, "credsStore": "desktop"}"#), "credential helper"),
    ];
    for (args, config, names) in cases {
        let mut cmd = didx_cmd(args);
        match config {
            Some(c) => cmd.env("DOCKER_AUTH_CONFIG", c),
            None => cmd.env_remove("DOCKER_AUTH_CONFIG"),
        };
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        let r = from_output(child.wait_with_output().unwrap());
        assert!(made_by(pid).is_empty(), "{args:?}: nothing is made");
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(names), "{args:?}: {}", r.show());
    }
}

#[test]
fn a_subnet_s_first_host_is_its_gateway_when_the_engine_names_none() {
    assert_eq!(first_host("172.17.0.0/16").as_deref(), Some("172.17.0.1"));
    assert_eq!(first_host("10.200.3.0/24").as_deref(), Some("10.200.3.1"));
    assert_eq!(first_host("fd00::/64"), None);
    assert_eq!(first_host("172.17.0.0"), None);
}
