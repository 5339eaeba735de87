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

/// A fresh directory under the system's temp dir, for one test; removed when dropped. Each is
/// its own (a counter, not only the tag, names it): two tests running at once with one tag
/// once shared a directory and the first to end removed the other's scripts.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("didx-dood-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
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
fn teardown_lease_on_the_host_engine_ends_the_client_and_what_it_started_within_2_s() {
    let name = format!("dood-lease-{}", std::process::id());
    let start = format!("docker run -d --name {name} --entrypoint sleep {IMG} 300");
    let run = didx(&["--engine", "host", "--clean", "anycase", "--teardown", "lease", &start]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        assert!(run.stderr.contains("dind client named") && run.stderr.contains("ends with its lease"), "{}", run.show());
        assert!(!run.stderr.contains("dind server named"), "no server in host mode: {}", run.show());
        // The client ends with its lease; the reaper, with its own, removes what the client
        // started (labelled with the environment, so counted here).
        assert_ends(&run.env_id().expect("env id"));
        assert!(named(&name).is_empty(), "{:?}", named(&name));
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
/// didx start sweeps what that client had started, and the next proxy start its socket's
/// directory (`dood/<id>`).
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
    // The proxy's directory, whose Drop never runs under SIGKILL (the live proxy's is never swept).
    let proxy_dirs: Vec<PathBuf> =
        std::fs::read_dir(PathBuf::from(cache_dir()).join("dood")).unwrap().flatten().map(|e| e.path()).collect();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    let id = env_id_in(&String::from_utf8_lossy(&out.stderr)).expect("env id");
    let proxy_dir = PathBuf::from(cache_dir()).join("dood").join(&id);
    assert!(proxy_dirs.contains(&proxy_dir), "{proxy_dir:?} while its run lived: {proxy_dirs:?}");
    // The lease ends the client within seconds; what it started stays until a sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rt().block_on(leftovers(Some(&id))).len() > 1 {
        assert!(std::time::Instant::now() < deadline, "the client outlived its killed run: {:?}", rt().block_on(leftovers(Some(&id))));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // (What it started outlives it until a sweep; another test's start may sweep it first.)
    // A proxy directory younger than the sweep's grace (5 s) may be one being set up.
    while std::fs::symlink_metadata(&proxy_dir).is_ok_and(|m| m.modified().unwrap().elapsed().unwrap().as_secs() < 6) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let next = didx(&["--engine", "host", "--clean", "anycase", "true"]);
    assert_eq!(next.code, 0, "{}", next.show());
    assert_gone(&id);
    assert!(named(&name).is_empty(), "swept: {:?}", named(&name));
    assert!(!proxy_dir.exists(), "the killed run's proxy directory is swept by the next start");
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

/// Remove what the engine holds whose name contains `part` (this test's own names only), so a
/// failed assertion leaves nothing; returns what was there.
fn remove_named(part: &str) -> Vec<String> {
    let left = named(part);
    rt().block_on(async {
        let e = engine().await;
        for l in &left {
            let (kind, name) = l.split_once(' ').unwrap();
            let name = name.trim_start_matches('/');
            match kind {
                "container" => e.remove_container(name).await.unwrap(),
                "volume" => e.remove_volume(name).await.unwrap(),
                _ => e.remove_network(name).await.unwrap(),
            }
        }
    });
    left
}

/// A python module for the client (the image has python3, no curl): `req(method, path, body)`
/// sends one raw HTTP request over the proxy's socket exactly as written (a path the docker
/// CLI would never send) and returns (status, body text).
const RAW_PY: &str = r#"
import json, socket, sys
def req(method, path, body=None, timeout=30):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect("/var/run/docker.sock")
    b = body.encode() if isinstance(body, str) else (json.dumps(body).encode() if body is not None else b"")
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b)
    d = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        d += c
    s.close()
    head, _, rest = d.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while rest:
            n, _, rest = rest.partition(b"\r\n")
            n = int(n, 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        rest = out
    return int(head.split(b" ")[1]), rest.decode(errors="replace")
def show(tag, status, body):
    print(f"{tag} status={status} {body.strip()[:300]}", flush=True)
"#;

/// A directory for the client at /t holding `raw.py` and `script` as `/t/attack.py`.
fn scripts(tag: &str, script: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.0.join("raw.py"), RAW_PY).unwrap();
    std::fs::write(dir.0.join("attack.py"), format!("import sys\nsys.path.insert(0, '/t')\nfrom raw import *\n{script}")).unwrap();
    dir
}

/// The line of `out` starting with `tag ` (the client printed one per request).
fn line<'a>(out: &'a str, tag: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(&format!("{tag} "))).unwrap_or_else(|| panic!("no line {tag} in: {out}"))
}

/// Spellings of the create path that the engine decodes to `/containers/create`, and JSON keys
/// in another case (the engine matches them ignoring case): each create is labelled and its
/// binds translated or refused like the canonical spelling, keys the engine reads as one are
/// refused with a 400, and `--clean anycase` leaves nothing, so nothing slipped by unlabelled.
#[test]
fn encoded_paths_and_keys_in_another_case_are_labelled_translated_or_refused() {
    let p = format!("dood-spell-{}", std::process::id());
    let script = format!(
        r#"
IMG = "{IMG}"
P = "{p}"
def made(tag, path, body):
    st, b = req("POST", path, body)
    show(tag, st, b)
    if st == 201:
        cid = json.loads(b)["Id"]
        st, b = req("GET", f"/containers/{{cid}}/json")
        c = json.loads(b)
        labels = c["Config"]["Labels"] or {{}}
        print(f"{{tag}}-env {{labels.get('io.didx.env')}} mine={{labels.get('mine')}}", flush=True)
        print(f"{{tag}}-binds {{json.dumps(c['HostConfig']['Binds'])}} {{json.dumps([m['Source'] for m in c['Mounts'] if m['Type'] == 'bind'])}}", flush=True)
for i, path in enumerate(["/containers%2Fcreate", "/v1.41/containers%2fcreate", "/%63ontainers/create", "/v1.41%2Fcontainers%2Fcreate", "//containers/create", "/./containers/create", "/v1.41/volumes/../containers/create"]):
    made(f"path{{i}}", f"{{path}}?name={{P}}-path{{i}}", {{"Image": IMG, "Labels": {{"mine": "1"}}, "HostConfig": {{"Binds": ["/t:/in"]}}}})
made("case", f"/containers/create?name={{P}}-case", {{"image": IMG, "labels": {{"mine": "1"}}, "hostconfig": {{"binds": ["/t:/in"], "mounts": [{{"type": "bind", "source": "/t", "target": "/m"}}]}}}})
made("kelvin", f"/containers/create?name={{P}}-kelvin", '{{"Image": "' + IMG + '", "Labelſ": {{"mine": "1"}}}}')
made("toplevel", f"/containers/create?name={{P}}-top", {{"Image": IMG, "Binds": ["/etc:/e"]}})
made("caserefused", f"/containers%2Fcreate?name={{P}}-cr", {{"Image": IMG, "hostconfig": {{"binds": ["/etc:/e"]}}}})
made("dup-hc", f"/containers/create?name={{P}}-d1", {{"Image": IMG, "HostConfig": {{}}, "hostconfig": {{"Binds": ["/etc:/e"]}}}})
made("dup-labels", f"/containers/create?name={{P}}-d2", {{"Image": IMG, "Labels": {{}}, "labels": {{"a": "b"}}}})
made("dup-binds", f"/containers/create?name={{P}}-d3", {{"Image": IMG, "HostConfig": {{"Binds": [], "binds": ["/etc:/e"]}}}})
made("dup-mount", f"/containers/create?name={{P}}-d4", {{"Image": IMG, "HostConfig": {{"Mounts": [{{"Type": "volume", "type": "bind", "Source": "/etc", "Target": "/e"}}]}}}})
st, b = req("POST", f"/volumes%2Fcreate", {{"Name": P + "-vol", "labels": {{"mine": "1"}}}})
show("vol", st, b)
st, b = req("GET", f"/volumes/{{P}}-vol")
print("vol-env", (json.loads(b).get("Labels") or {{}}).get("io.didx.env"), flush=True)
"#
    );
    let dir = scripts("spell", &script);
    let t = format!("{}:/t", dir.path());
    let run = didx(&["--engine", "host", "-v", &t, "--clean", "anycase", "python3 /t/attack.py"]);
    let left = remove_named(&p);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let id = run.env_id().expect("env id");
        let out = &run.stdout;
        let host_t = format!("{}:/in", dir.path());
        for i in 0..7 {
            let tag = format!("path{i}");
            let status = line(out, &tag);
            if status.contains("status=301") {
                continue; // an unclean path: the engine redirects and creates nothing
            }
            assert!(status.contains("status=201"), "{status}\n{}", run.show());
            assert_eq!(line(out, &format!("{tag}-env")), format!("{tag}-env {id} mine=1"), "labelled: {}", run.show());
            assert!(line(out, &format!("{tag}-binds")).contains(&host_t), "translated: {}", run.show());
        }
        assert!(line(out, "path0").contains("status=201") && line(out, "path2").contains("status=201"), "{}", run.show());
        assert_eq!(line(out, "case-env"), format!("case-env {id} mine=1"), "{}", run.show());
        let binds = line(out, "case-binds");
        assert!(binds.contains(&host_t) && binds.contains(&format!("\"{}\"]", dir.path())), "both bind forms translated: {binds}");
        assert_eq!(line(out, "kelvin-env"), format!("kelvin-env {id} mine=1"), "{}", run.show());
        for tag in ["toplevel", "caserefused"] {
            let l = line(out, tag);
            assert!(l.contains("status=400") && l.contains("/etc is a path in the client container on none of its mounts"), "{l}");
        }
        for (tag, place) in
            [("dup-hc", "the request"), ("dup-labels", "the request"), ("dup-binds", "HostConfig"), ("dup-mount", "HostConfig.Mounts[0]")]
        {
            let l = line(out, tag);
            assert!(
                l.contains("status=400") && l.contains(&format!("{place} has both")) && l.contains("which the engine reads as one field"),
                "{l}"
            );
        }
        assert!(line(out, "vol").contains("status=201"), "{}", run.show());
        assert_eq!(line(out, "vol-env"), format!("vol-env {id}"), "{}", run.show());
        assert_gone(&id);
        assert!(left.is_empty(), "--clean anycase left what the client made: {left:?}");
    });
}

/// Named volumes the engine makes implicitly (`-v NAME:/x`, `--mount type=volume`) are made by
/// the proxy first, labelled (with the mount's driver and options), and so removed by `--clean
/// anycase`; a volume that already existed is the user's and stays unlabelled; a lone
/// `Binds` `/data` (docker-py's anonymous volume) passes untranslated and its volume goes with
/// the container.
#[test]
fn implicit_named_volumes_are_labelled_and_removed_and_an_anonymous_bind_is_left() {
    let p = format!("dood-vols-{}", std::process::id());
    let (v1, v2, mine) = (format!("{p}-bind"), format!("{p}-mount"), format!("{p}-mine"));
    rt().block_on(async { engine().await.create_volume(&mine, Default::default()).await.unwrap() });
    let script = format!(
        r#"
st, b = req("POST", "/containers/create?name={p}-anon", {{"Image": "{IMG}", "HostConfig": {{"Binds": ["/data"]}}}})
show("anon", st, b)
st, b = req("GET", "/containers/{p}-anon/json")
m = [m for m in json.loads(b)["Mounts"] if m["Destination"] == "/data"][0]
print("anon-mount", m["Type"], m["Name"], flush=True)
for tag, name in [("v1", "{v1}"), ("v2", "{v2}"), ("mine", "{mine}")]:
    st, b = req("GET", f"/volumes/{{name}}")
    v = json.loads(b)
    labels = v.get("Labels") or {{}}
    print(tag, v["Driver"], json.dumps(v.get("Options") or {{}}, sort_keys=True), labels.get("io.didx.env"), labels.get("mine"), flush=True)
"#
    );
    let dir = scripts("vols", &script);
    let t = format!("{}:/t", dir.path());
    let run = didx(&[
        "--engine",
        "host",
        "-v",
        &t,
        "--clean",
        "anycase",
        &format!("docker run --rm -v {v1}:/x -v {mine}:/z --entrypoint true {IMG}"),
        &format!(
            "docker run --rm --mount type=volume,source={v2},target=/y,volume-driver=local,volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-label=mine=1 --entrypoint true {IMG}"
        ),
        "python3 /t/attack.py",
    ]);
    let anon = run.stdout.lines().find_map(|l| l.strip_prefix("anon-mount volume ")).map(str::to_string);
    let kept = rt().block_on(async { engine().await.volume(&mine).await.unwrap() });
    let left: Vec<String> = remove_named(&p).into_iter().filter(|l| *l != format!("volume {mine}")).collect();
    rt().block_on(async { engine().await.remove_volume(&mine).await.unwrap() });
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let id = run.env_id().expect("env id");
        assert_eq!(line(&run.stdout, "v1"), format!("v1 local {{}} {id} None"), "-v NAME:/x made labelled: {}", run.show());
        assert_eq!(
            line(&run.stdout, "v2"),
            format!(r#"v2 local {{"device": "tmpfs", "type": "tmpfs"}} {id} 1"#),
            "driver options and the mount's labels kept: {}",
            run.show()
        );
        assert_eq!(line(&run.stdout, "mine"), "mine local {} None None", "the user's volume is left as it was: {}", run.show());
        assert!(line(&run.stdout, "anon").contains("status=201"), "/data is not translated as a host path: {}", run.show());
        let anon = anon.as_deref().expect("an anonymous volume at /data");
        let still = rt().block_on(async { engine().await.volume(anon).await.unwrap() });
        assert!(still.is_none(), "the anonymous volume {anon} went with its container");
        assert!(kept.is_some_and(|(l, _)| !l.contains_key(didx::labels::ENV)), "the user's volume stays, unlabelled");
        assert_gone(&id);
        assert!(left.is_empty(), "--clean anycase left: {left:?}");
    });
}

/// didx run with an open-file limit of `soft`/`hard` (set before it starts), its stdout piped.
fn didx_limited(args: &[&str], soft: u64, hard: u64) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = didx_cmd(args);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// CPU seconds process `pid` (all its threads) has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap(); // utime + stime
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The client opens `n` long-lived `GET /events` streams through the proxy (filtered on a label
/// nothing carries, so they stay silent: what the proxy spends while they are held is its own
/// idling, not forwarding the events of whatever else runs on the engine — in the VM lane,
/// the other tests' containers once cost it 37 % of an emulated core), says so, holds them
/// while the test measures didx's CPU, then asks `/version` (streams held), closes them and asks
/// again. Returns (stdout, stderr, exit code, CPU share of a core over 3 s while held).
fn hold_streams(n: usize, soft: u64, hard: u64) -> (Run, f64) {
    let script = format!(
        r#"
import time
socks, st = [], {{}}
for i in range({n}):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect("/var/run/docker.sock")
        s.sendall(b"GET /events?filters=%7B%22label%22%3A%5B%22io.didx.test.silent%3D1%22%5D%7D HTTP/1.1\r\nHost: docker\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n"):
            c = s.recv(1)
            if not c:
                break
            head += c
        code = head.split(b" ")[1].decode() if head else "closed"
    except Exception as e:
        code = type(e).__name__
    st[code] = st.get(code, 0) + 1
    socks.append(s)
print("streams", json.dumps(st, sort_keys=True), flush=True)
print("streams-open", flush=True)
time.sleep(6)
show("during", *req("GET", "/version", timeout=20))
for s in socks:
    s.close()
time.sleep(1)
show("after", *req("GET", "/version", timeout=20))
"#
    );
    let dir = scripts(&format!("streams{soft}"), &script);
    let t = format!("{}:/t", dir.path());
    let mut child = didx_limited(&["--engine", "host", "-v", &t, "--clean", "anycase", "python3 -u /t/attack.py"], soft, hard);
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if l == "streams-open" {
                tx.send(()).ok();
            }
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let mut share = f64::NAN;
    if rx.recv_timeout(std::time::Duration::from_secs(180)).is_ok() {
        let c0 = cpu_seconds(pid);
        std::thread::sleep(std::time::Duration::from_secs(3));
        share = (cpu_seconds(pid) - c0) / 3.0;
    }
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: reader.join().unwrap(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, share)
}

/// Hundreds of long-lived streams (each two open files in the proxy): with a soft open-file
/// limit of 256 under a hard one of 4096, the proxy raises its limit and serves them all, and a
/// new call still answers; the proxy does not spin (its CPU while they are held is far below a
/// core).
#[test]
fn hundreds_of_streams_are_served_under_a_low_soft_open_file_limit_without_spinning() {
    let (run, share) = hold_streams(300, 256, 4096);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(line(&run.stdout, "streams"), r#"streams {"200": 300}"#, "{}", run.show());
        assert!(share < 0.3, "the proxy used {:.0} % of a core holding idle streams: {}", share * 100.0, run.show());
        assert!(line(&run.stdout, "during").contains("status=200"), "{}", run.show());
        assert!(line(&run.stdout, "after").contains("status=200"), "{}", run.show());
        assert_gone(&run.env_id().unwrap());
    });
}

/// Under a hard open-file limit of 256 the proxy serves what its connection bound allows and
/// answers the rest `503` at once with a message saying why, instead of spinning on failed
/// accepts; once the streams end, calls are served again.
#[test]
fn beyond_the_connection_bound_calls_get_a_clear_503_and_the_proxy_does_not_spin() {
    let (run, share) = hold_streams(300, 256, 256);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let streams: serde_json::Value = serde_json::from_str(line(&run.stdout, "streams").trim_start_matches("streams ")).unwrap();
        let (ok, refused) = (streams["200"].as_u64().unwrap_or(0), streams["503"].as_u64().unwrap_or(0));
        assert!(ok >= 16 && ok + refused == 300, "served up to the bound, the rest refused: {streams} {}", run.show());
        assert!(share < 0.3, "the proxy used {:.0} % of a core: {}", share * 100.0, run.show());
        let during = line(&run.stdout, "during");
        assert!(during.contains("status=503") && during.contains("connections are open at once, its limit"), "{during}");
        assert!(line(&run.stdout, "after").contains("status=200"), "{}", run.show());
        assert_gone(&run.env_id().unwrap());
    });
}

/// A symbolic link planted at `$DIDX_CACHE_DIR/dood` would make the proxy's socket (root on
/// the host) appear where it points: the run is refused with one line naming it, and nothing
/// appears there. A `dood` others may write is refused the same way.
#[test]
fn a_link_planted_at_the_proxy_s_directory_is_refused_and_nothing_appears_where_it_points() {
    use std::os::unix::fs::PermissionsExt;
    let cache = TempDir::new("linkcache");
    let target = TempDir::new("linktarget");
    let dood = cache.0.join("dood");
    std::os::unix::fs::symlink(&target.0, &dood).unwrap();
    let attempt = |needle: &str| {
        let child = didx_cmd(&["--engine", "host", "--clean", "anycase", "true"])
            .env("DIDX_CACHE_DIR", cache.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let run = from_output(child.wait_with_output().unwrap());
        assert_ne!(run.code, 0, "{}", run.show());
        let said: Vec<&str> =
            run.stderr.lines().filter(|l| l.contains(&format!("the engine proxy's directory {} ", dood.display()))).collect();
        assert_eq!(said.len(), 1, "{}", run.show());
        assert!(said[0].contains(needle), "{}", run.show());
        assert!(made_by(pid).is_empty(), "created {:?}", made_by(pid));
        if let Some(id) = run.env_id() {
            assert_gone(&id);
        }
    };
    attempt("is a symbolic link");
    assert_eq!(std::fs::read_dir(&target.0).unwrap().count(), 0, "nothing appeared where the link points");
    assert!(std::fs::symlink_metadata(&dood).unwrap().file_type().is_symlink(), "the link is the user's to remove");
    std::fs::remove_file(&dood).unwrap();
    std::fs::create_dir(&dood).unwrap();
    std::fs::set_permissions(&dood, std::fs::Permissions::from_mode(0o777)).unwrap();
    attempt("writable by group or others");
    assert_eq!(std::fs::read_dir(&dood).unwrap().count(), 0);
}
