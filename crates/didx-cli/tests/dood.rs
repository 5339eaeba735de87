//! Docker-outside-of-Docker (`--engine host`): the client drives the engine didx uses through
//! didx's engine-API proxy. Bind sources the client names are translated to the engine's paths
//! (checked by reading a file through a container the client starts), a client path on no
//! mount is refused, what the client creates is removed by `--clean anycase`, a taken host port
//! names its holder, and the translation also works with didx itself in a container with the
//! engine's socket mounted. Each test asserts the engine holds nothing of its run afterwards.

mod common;

use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig};
use common::*;

/// A fresh directory under the system's temp dir, for one test; removed when dropped.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("didx-dood-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A token no other run prints.
fn token(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), now_secs())
}

/// What the engine holds by name: containers, volumes and networks whose names contain `part`.
fn named(part: &str) -> Vec<String> {
    rt().block_on(async {
        let e = engine().await;
        let mut out: Vec<String> = e
            .containers(Default::default())
            .await
            .unwrap()
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .filter(|n| n.contains(part))
            .map(|n| format!("container {n}"))
            .collect();
        out.extend(e.volumes(Default::default()).await.unwrap().into_iter().filter(|v| v.contains(part)).map(|v| format!("volume {v}")));
        out.extend(e.networks(Default::default()).await.unwrap().into_iter().filter(|n| n.contains(part)).map(|n| format!("network {n}")));
        out
    })
}

/// The image the client's own `docker run`s use: the offline image, with `cat`/`sleep` as
/// entrypoint (its own entrypoint is didx's).
const IMG: &str = "didx/dind:local";

#[test]
fn a_client_bind_reaches_the_host_path_and_anycase_removes_what_the_client_started() {
    let dir = TempDir::new("bind");
    let tok = token("dood");
    std::fs::write(dir.0.join("hello.txt"), &tok).unwrap();
    let name = format!("dood-probe-{}", std::process::id());
    let v = format!("{}:/src", dir.path());
    let run_detached = format!("docker run -d --name {name} --entrypoint sleep {IMG} 300");
    let read = format!("docker run --rm -v /src:/in --entrypoint cat {IMG} /in/hello.txt");
    let read_mount = format!("docker run --rm --mount type=bind,source=/src/hello.txt,target=/f --entrypoint cat {IMG} /f");
    let vol = format!("docker volume create {name}-vol");
    let net = format!("docker network create {name}-net");
    let run = didx(&["--engine", "host", "-v", &v, "--clean", "anycase", &run_detached, &read, &read_mount, &vol, &net]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(run.stdout.matches(&tok).count(), 2, "both bind forms read the host file: {}", run.show());
        assert_eq!(run.stderr.matches("WARNING: --engine host").count(), 1, "warned once: {}", run.show());
        assert!(!run.stderr.contains("dind server named"), "no server in host mode: {}", run.show());
        let id = run.env_id().expect("env id");
        assert_gone(&id);
        assert!(named(&name).is_empty(), "what the client started is removed: {:?}", named(&name));
    });
}

#[test]
fn what_the_client_started_is_labelled_and_kept_with_a_kept_client() {
    let name = format!("dood-kept-{}", std::process::id());
    let start = format!("docker run -d --name {name} --entrypoint sleep {IMG} 300");
    let run = didx(&["--engine", "host", "--clean", "none", &start]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let id = run.env_id().expect("env id");
        let left = rt().block_on(leftovers(Some(&id)));
        assert_eq!(left.len(), 2, "the kept client and the container it started, both labelled: {left:?}");
        assert!(left.iter().any(|l| l.contains(&name)), "{left:?}");
        rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
        assert_gone(&id);
        assert!(named(&name).is_empty());
    });
}

#[test]
fn a_client_path_on_no_mount_is_refused_naming_it_and_the_fix() {
    let made = format!("docker run --rm -v /tmp/made-in-client:/x --entrypoint true {IMG}");
    let run = didx(&["--engine", "host", "--clean", "anycase", &made]);
    with_cleanup(run, |run| {
        assert_ne!(run.code, 0, "{}", run.show());
        assert!(run.stderr.contains("/tmp/made-in-client is a path in the client container on none of its mounts"), "{}", run.show());
        assert!(run.stderr.contains("didx -v HOSTDIR:DIR"), "{}", run.show());
        assert_gone(&run.env_id().expect("env id"));
    });
}

#[test]
fn a_taken_host_port_is_reported_with_what_holds_it() {
    // A process of this machine: the test itself.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = format!("dood-port-{}", std::process::id());
    let by_process = format!("docker run --rm -p 127.0.0.1:{port}:80 --entrypoint true {IMG}");
    // A container the client started.
    let holder = format!("docker run -d --name {name} -p 127.0.0.1::80 --entrypoint sleep {IMG} 300");
    let by_container = format!(
        "sh -c 'p=$(docker port {name} 80 | head -n 1 | sed s/.*://); docker run --rm -p 127.0.0.1:$p:80 --entrypoint true {IMG}; echo code=$?'"
    );
    let run = didx(&["--engine", "host", "--clean", "anycase", &holder, &by_container, &by_process]);
    drop(listener);
    with_cleanup(run, |run| {
        assert!(
            run.stderr.contains(&format!("host port {port} is held by process {} (", std::process::id())),
            "the test process holds it: {}",
            run.show()
        );
        assert!(run.stdout.contains("code=125"), "{}", run.show());
        assert!(run.stderr.contains(&format!("is held by container {name} (")), "the first container holds it: {}", run.show());
        assert_ne!(run.code, 0);
        assert_gone(&run.env_id().expect("env id"));
        assert!(named(&name).is_empty());
    });
}

/// Containers a didx process made (its `io.didx.owner` label names its pid).
fn made_by(pid: u32) -> Vec<String> {
    rt().block_on(async {
        let cs = engine().await.containers(didx::labels::filter(None)).await.unwrap();
        cs.into_iter()
            .filter(|c| c.labels.as_ref().and_then(|l| l.get(didx::labels::OWNER)).is_some_and(|o| o.ends_with(&format!(" pid {pid}"))))
            .map(|c| format!("{:?}", c.names))
            .collect()
    })
}

#[test]
fn usage_errors_create_nothing() {
    for (args, needle) in [
        (vec!["--engine", "hots", "true"], "--engine value"),
        (vec!["--engine", "host", "--pool", "true"], "--pool"),
        (vec!["--engine", "host", "--publish", "8080:80", "true"], "--publish"),
        (vec!["--engine", "host", "--load", "didx/dind:local", "true"], "--load"),
        (vec!["--engine", "host", "--sv", "20.10.24,26.1.5", "true"], "--engine host"),
    ] {
        let child = didx_cmd(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        let run = from_output(child.wait_with_output().unwrap());
        assert_eq!(run.code, 2, "{args:?}: {}", run.show());
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.show());
        assert_eq!(run.stderr.lines().filter(|l| l.starts_with("didx:")).count(), 1, "one line: {}", run.show());
        assert!(made_by(pid).is_empty(), "{args:?} created {:?}", made_by(pid));
    }
}

/// didx itself in a container of the engine (a CI job with the socket mounted): its `-v`
/// source and its proxy socket are its own paths, translated through its container's mounts
/// to the host's (in both engine modes); the client's bind is translated through the client's. The host directory
/// is mounted at a different path in didx's container, so an untranslated path would fail.
#[test]
fn didx_in_a_container_translates_its_own_paths_too() {
    let data = TempDir::new("indata");
    let cache = TempDir::new("incache");
    let tok = token("nested");
    std::fs::write(data.0.join("hello.txt"), &tok).unwrap();
    let name = format!("didx_test_dood_outer_{}", std::process::id());
    let script = format!(
        "didx --engine host -v /data:/src --clean anycase 'docker run --rm -v /src:/in --entrypoint cat {IMG} /in/hello.txt'; echo code=$?; \
         didx -v /data:/src --clean anycase 'sed s/^/dind-mode-/ /src/hello.txt'; echo code=$?; \
         didx --engine host -v /nowhere:/src true; echo code=$?"
    );
    let (code, logs) = rt().block_on(async {
        let e = engine().await;
        let body = ContainerCreateBody {
            image: Some(IMG.into()),
            entrypoint: Some(vec!["sh".into(), "-c".into()]),
            cmd: Some(vec![script]),
            env: Some(vec![format!("DIDX_CACHE_DIR=/cache"), "DIDX_CLIENT_IMAGE=".into(), "DIDX_SERVER_IMAGE=".into()]),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    "/var/run/docker.sock:/var/run/docker.sock".into(),
                    format!("{BIN}:/usr/local/bin/didx:ro"),
                    format!("{}:/data", data.path()),
                    format!("{}:/cache", cache.path()),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = e.create_container(&name, body).await.unwrap();
        e.start(&id).await.unwrap();
        let code = e.wait(&id).await.unwrap();
        let logs = e.logs_tail(&id, 200).await.unwrap();
        e.remove_container(&id).await.unwrap();
        (code, logs)
    });
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains(&tok), "the nested client read the host file: {logs}");
    assert_eq!(logs.matches("code=0").count(), 2, "{logs}");
    assert!(logs.contains(&format!("dind-mode-{tok}")), "a dind-mode run in a container translates its -v too: {logs}");
    // /nowhere is on no mount of didx's container: refused before anything is created.
    assert!(logs.contains("-v source /nowhere is inside didx's own container, on none of its mounts"), "{logs}");
    assert!(logs.contains("code=2"), "a usage error: {logs}");
    for line in logs.lines() {
        if let Some(id) = env_id_in(line) {
            assert_gone(&id);
        }
    }
}

#[test]
fn a_kept_environment_lists_as_host_with_what_its_client_started() {
    let name = format!("dood-ls-{}", std::process::id());
    let start = format!("docker run -d --name {name} --entrypoint sleep {IMG} 300");
    let run = didx(&["--engine", "host", "--clean", "none", &start]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let id = run.env_id().expect("env id");
        let ls = didx(&["ls", "--json"]);
        let all: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
        let me =
            all.as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).unwrap_or_else(|| panic!("{id} not listed: {}", ls.show()));
        assert_eq!(me["engine"], "host", "{me}");
        assert_eq!(me["started"], 1, "{me}");
        assert_eq!(me["state"], "running", "{me}");
        assert_eq!(me["policy"], "none", "{me}");
        assert_eq!(me["members"].as_array().unwrap().len(), 1, "the client only: {me}");
        let env = didx(&["env", &id]);
        assert_eq!(env.code, 125, "{}", env.show());
        assert!(env.stderr.contains("runs with --engine host: it has no inner engine"), "{}", env.show());
        rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
        assert_gone(&id);
    });
}

/// A run killed with SIGKILL cannot clean up: its client's lease ends the client, and the next
/// didx start sweeps what that client had started.
#[test]
fn what_a_killed_runs_client_started_is_swept_by_the_next_start() {
    let name = format!("dood-killed-{}", std::process::id());
    let start = format!("docker run -d --name {name} --entrypoint sleep {IMG} 300");
    let child = didx_cmd(&["--engine", "host", "--clean", "anycase", &start, "sleep 300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while named(&name).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the client never started {name}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    let id = env_id_in(&String::from_utf8_lossy(&out.stderr)).expect("env id");
    // The lease ends the client within seconds; what it started stays until a sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rt().block_on(leftovers(Some(&id))).len() > 1 {
        assert!(std::time::Instant::now() < deadline, "the client outlived its killed run: {:?}", rt().block_on(leftovers(Some(&id))));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // (What it started outlives it until a sweep; another test's start may sweep it first.)
    let next = didx(&["--engine", "host", "--clean", "anycase", "true"]);
    assert_eq!(next.code, 0, "{}", next.show());
    assert_gone(&id);
    assert!(named(&name).is_empty(), "swept: {:?}", named(&name));
    assert_gone(&next.env_id().unwrap());
}

/// The builder-launcher over the host engine: a non-root user of the client reaches the engine
/// (the proxy's socket is open to the client's users; there is no certificate to hand over).
#[test]
fn a_non_root_user_of_the_client_reaches_the_host_engine() {
    let run =
        didx(&["--engine", "host", "--user", "1234:1234", "--clean", "anycase", "id -u", "docker version --format {{.Server.Version}}"]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"1234"), "{}", run.show());
        let host_version = rt().block_on(async { engine().await.info().await.unwrap().server_version.unwrap_or_default() });
        assert_eq!(lines.get(1), Some(&host_version.as_str()), "the host's engine answered: {}", run.show());
        assert_gone(&run.env_id().unwrap());
    });
}
