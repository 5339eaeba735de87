//! Host tools reaching a sandbox (issue 13, parts 1–2): `didx env ID` (text, JSON, the
//! certificate directory, removed with the environment and swept when it vanished without
//! didx); real clients from outside the project driving the inner engine from the host — the
//! host's `docker` CLI, the Python docker SDK, Debian's docker-compose (the `host:` form);
//! `--publish` serving an inner container's port to a client on the host's 127.0.0.1; bad
//! `--publish` specs and a taken port refused, nothing left. Each test leaves the engine as it
//! found it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// The library (this process) and the binary share the tests' cache directory, where the
/// certificate directories are.
fn cache() -> PathBuf {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        // SAFETY: set once, to the one value every test of this binary uses, before any reads it.
        unsafe { std::env::set_var("DIDX_CACHE_DIR", cache_dir()) };
    });
    PathBuf::from(cache_dir())
}

fn cert_dir(id: &str) -> PathBuf {
    cache().join("env").join(id)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Start a kept environment running `commands`; its id.
fn kept(extra: &[&str], commands: &[&str]) -> (String, Run) {
    let mut args = vec!["--clean", "none"];
    args.extend(extra);
    args.extend(commands);
    let r = didx(&args);
    let id = r.env_id().unwrap_or_else(|| panic!("no environment started: {}", r.show()));
    if r.code != 0 {
        remove(&id);
        panic!("{}", r.show());
    }
    (id, r)
}

/// Remove environment `id` as didx does (`Sandbox::rm`, `--clean all`, a session's clean-up),
/// in this process: with the tests' cache directory set first (it was set only by the first
/// `cache()` call, so a test run alone, as cargo-nextest runs each, removed the certificates
/// from the default cache directory and found the tests' copy left).
fn remove(id: &str) {
    cache();
    rt().block_on(async { didx::env::remove(&engine().await, id).await.unwrap() });
}

/// Run `f` on a kept environment, then remove it (whatever `f` did) and check nothing of it
/// is left: containers, volumes, and its certificate directory.
fn with_env(id: &str, f: impl FnOnce()) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    remove(id);
    assert_gone(id);
    assert!(!cert_dir(id).exists(), "certificate directory of {id} left");
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// `sh -c script` on the host, with the test's cache directory; (code, stdout, stderr).
fn host_sh(script: &str) -> Run {
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("DIDX", BIN)
        .env("DIDX_CACHE_DIR", cache())
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .unwrap();
    from_output(o)
}

#[test]
fn env_prints_the_variables_and_json_and_the_certificates_go_with_the_environment() {
    let (id, _) = kept(&["--publish", "0:8080"], &["true"]);
    with_env(&id, || {
        let r = didx(&["env", &id]);
        assert_eq!(r.code, 0, "{}", r.show());
        let line = r.stdout.trim_end();
        assert_eq!(line.lines().count(), 1, "{}", r.show());
        let dir = cert_dir(&id);
        let prefix = "export DOCKER_HOST='tcp://127.0.0.1:";
        assert!(line.starts_with(prefix), "{line}");
        assert!(line.ends_with(&format!("' DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH='{}'", dir.display())), "{line}");
        // Private: the directory 0700, the key 0600; the three files a docker client reads.
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(std::fs::read_to_string(dir.join(f)).unwrap().contains("-----BEGIN"), "{f}");
        }

        // JSON, found by the client's container name too.
        let client = format!("dind_{id}_client_latest");
        let j = didx(&["env", &client, "--json"]);
        assert_eq!(j.code, 0, "{}", j.show());
        let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
        assert_eq!(v["id"], id.as_str());
        assert!(line.contains(v["docker_host"].as_str().unwrap()), "{v}");
        assert_eq!(v["docker_tls_verify"], "1");
        assert_eq!(v["docker_cert_path"], dir.display().to_string());
        let published = v["published"].as_array().unwrap();
        assert_eq!(published.len(), 1, "{v}");
        assert_eq!(
            (published[0]["ip"].as_str(), published[0]["env_port"].as_u64(), published[0]["proto"].as_str()),
            (Some("127.0.0.1"), Some(8080), Some("tcp"))
        );
        assert!(published[0]["host_port"].as_u64().is_some_and(|p| p > 0), "{v}");

        // Unknown and malformed ids: one line each, 125 and 2.
        let unknown = didx(&["env", "nosuchenv0"]);
        assert_eq!((unknown.code, unknown.stderr.lines().count()), (125, 1), "{}", unknown.show());
        let bad = didx(&["env", "../x"]);
        assert_eq!((bad.code, bad.stderr.lines().count()), (2, 1), "{}", bad.show());
        // An engine elsewhere: the endpoint is on its host.
        let far = didx(&["-H", "tcp://192.0.2.1:2376", "env", &id]);
        assert_eq!(far.code, 125, "{}", far.show());
        assert!(far.stderr.contains("127.0.0.1 there"), "{}", far.show());
    });
}

#[test]
fn certificates_of_an_environment_removed_without_didx_are_swept() {
    let (id, _) = kept(&[], &["true"]);
    let r = didx(&["env", &id]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(cert_dir(&id).join("key.pem").exists());
    // Gone without didx: docker rm -f of both containers (and its volume).
    rt().block_on(async {
        let e = engine().await;
        for c in e.containers(didx::labels::filter(Some(&id))).await.unwrap() {
            e.remove_container(c.id.as_deref().unwrap()).await.unwrap();
        }
    });
    let after = didx(&["env", &id]);
    assert_eq!(after.code, 125, "{}", after.show());
    assert!(!cert_dir(&id).exists(), "not swept by didx env");
    remove(&id);
    assert_gone(&id);
}

#[test]
fn the_host_docker_cli_drives_the_inner_engine_through_didx_env() {
    let image = format!("didx-reach-cli-{}", std::process::id());
    let (id, _) = kept(&[], &[&format!("didx-busybox-image {image}")]);
    with_env(&id, || {
        let r = host_sh(&format!(
            r#"eval "$("$DIDX" env {id})" && docker info --format 'inner={{{{.Name}}}}' && docker run --rm {image} echo reached-the-inner-engine && docker images --format '{{{{.Repository}}}}'"#
        ));
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("reached-the-inner-engine"), "{}", r.show());
        // The image exists in the inner engine, not in the host's.
        assert!(r.stdout.lines().any(|l| l == image), "{}", r.show());
        let host = host_sh(&format!("docker image inspect {image} >/dev/null 2>&1 && echo on-host || echo not-on-host"));
        assert_eq!(host.stdout.trim(), "not-on-host");
        // Verification on: a client that does not present the certificate is refused.
        let anon = host_sh(&format!(
            r#"eval "$("$DIDX" env {id})"; unset DOCKER_CERT_PATH DOCKER_TLS_VERIFY; docker info >/dev/null 2>&1 && echo served || echo refused"#
        ));
        assert_eq!(anon.stdout.trim(), "refused", "{}", anon.show());
    });
}

#[test]
fn the_python_sdk_and_both_host_forms_reach_the_inner_engine() {
    let image = format!("didx-reach-py-{}", std::process::id());
    let py = format!(
        r#"host: python3 -c 'import docker; c = docker.from_env(); assert c.ping(); print(c.containers.run("{image}", "echo from-python-sdk", remove=True).decode().strip()); print("certs=" + __import__("os").environ["DOCKER_CERT_PATH"])'"#
    );
    let r = didx_without_ca_bundle(&[
        "--clean",
        "anycase",
        &format!("didx-busybox-image {image}"),
        &py,
        // The didx.sh form: DOCKER_HOST stays the outer engine (docker exec reaches the client),
        // and the sandbox's is in DIDX_DOCKER_HOST.
        r#"docker exec $DIND_CLIENT_NAME true && case "$DIDX_DOCKER_HOST" in tcp://127.0.0.1:*) [ "$DOCKER_HOST" != "$DIDX_DOCKER_HOST" ] && [ -f "$DIDX_DOCKER_CERT_PATH/key.pem" ] && echo exec-form-ok;; esac"#,
        r#"host: [ "$DOCKER_HOST" = "$DIDX_DOCKER_HOST" ] && [ "$DIDX_DOCKER_TLS_VERIFY" = 1 ] && echo "host-form-ok $DIND_CLIENT_NAME""#,
    ]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("from-python-sdk"), "{}", r.show());
        assert!(r.stdout.contains("exec-form-ok"), "{}", r.show());
        let id = r.env_id().unwrap();
        assert!(r.stdout.contains(&format!("host-form-ok dind_{id}_client_latest")), "{}", r.show());
        // The certificates were where didx env puts them, and went with the environment.
        assert!(r.stdout.contains(&format!("certs={}", cert_dir(&id).display())), "{}", r.show());
        assert!(!cert_dir(&id).exists());
        assert_gone(&id);
    });
}

#[test]
fn docker_compose_brings_up_a_two_service_stack_in_the_sandbox_from_the_host() {
    let tag = format!("{}-{}", std::process::id(), didx::env::EnvId::generate());
    let image = format!("didx-reach-compose-{tag}");
    let dir = std::env::temp_dir().join(format!("didx-reach-compose-{tag}"));
    std::fs::create_dir(&dir).unwrap();
    let compose = format!(
        r#"version: "2.4"
services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo compose-reply-{tag} > /www/index.html && exec httpd -f -p 80 -h /www"]
  probe:
    image: {image}
    depends_on: [web]
    command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do wget -qO- http://web/ && exit 0; sleep 0.5; done; exit 1"]
"#
    );
    std::fs::write(dir.join("docker-compose.yml"), compose).unwrap();
    let d = dir.display();
    let r = didx_without_ca_bundle(&[
        "--clean",
        "anycase",
        &format!("didx-busybox-image {image}"),
        &format!("host: cd {d} && docker-compose -p reach up --abort-on-container-exit --exit-code-from probe"),
        &format!("host: cd {d} && docker-compose -p reach ps && docker-compose -p reach down && echo compose-down-ok"),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains(&format!("compose-reply-{tag}")), "the probe service did not get web's reply: {}", r.show());
        assert!(r.stdout.contains("compose-down-ok"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

/// didx with `args`, without the CA-bundle variables of this machine's environment: `requests`
/// (under the Python SDK and docker-compose) takes `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE`
/// over the CA the SDK gives it (psf/requests#3829), and then trusts no sandbox.
fn didx_without_ca_bundle(args: &[&str]) -> Run {
    from_output(didx_cmd(args).env_remove("REQUESTS_CA_BUNDLE").env_remove("CURL_CA_BUNDLE").output().unwrap())
}

#[test]
fn a_published_port_serves_an_inner_container_to_the_host() {
    let image = rt().block_on(async { busybox_image(&engine().await, &format!("didx-reach-pub:{}", std::process::id())).await });
    let serve = format!(
        r#"run -d -p 8080:80 {image} busybox sh -c "busybox mkdir -p /www && echo published-reply > /www/index.html && exec busybox httpd -f -p 80 -h /www""#
    );
    let (id, r) = kept(&["--publish", "8080", "--load", &image], &[&serve]);
    rt().block_on(async { engine().await.remove_image(&image).await.unwrap() });
    with_env(&id, || {
        let addr = r
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("didx: published ")?.strip_suffix(" -> 8080/tcp"))
            .unwrap_or_else(|| panic!("no published line: {}", r.show()))
            .to_string();
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
        let reply = http_get(&addr);
        assert!(reply.contains("published-reply"), "{reply}");
        // didx env reports the same port.
        let j = didx(&["env", &id, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
        assert_eq!(format!("127.0.0.1:{}", v["published"][0]["host_port"]), addr, "{v}");
    });
}

#[test]
fn bad_publish_specs_are_usage_errors_and_create_nothing() {
    for args in [
        &["--publish", "2376"][..],
        &["--publish", "70000:80"],
        &["--publish", "1.2.3:8080:80"],
        &["--publish", "80/sctp"],
        &["--publish", "8080:80", "--publish", "8080:81"],
        &["--publish", "8080:80", "--publish", "8081:80"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--clean", "anycase", "true"]);
        let r = didx(&a);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.show());
        assert!(r.stderr.contains("--publish"), "{args:?}: {}", r.show());
        assert!(r.env_id().is_none(), "{args:?}: {}", r.show());
    }
}

#[test]
fn a_taken_host_port_fails_the_start_in_one_line_and_leaves_nothing() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let r = didx(&["--clean", "anycase", "--publish", &format!("{port}:80"), "true"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 125, "{}", r.show());
        let errors: Vec<&str> = r.stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{}", r.show());
        assert!(errors[0].contains(&format!("127.0.0.1:{port}")) && errors[0].contains("publish"), "{}", r.show());
        assert!(errors[0].contains(&format!("(held by process {} (", std::process::id())), "names the holder: {}", r.show());
        let id = r.env_id().expect("the error names the server");
        assert_gone(&id);
        assert!(!cert_dir(&id).exists());
    });
    drop(held);
}

/// Published ports are part of the pool key: a `--pool --publish` run is never served a pooled
/// server without them (whatever others keep pooled on this engine for the same options
/// without `--publish`); it starts a fresh one, which publishes.
#[test]
fn a_pooled_run_with_publish_is_not_served_a_server_without_its_ports() {
    // A pool of its own: empty, so what is asserted is the key, not what others keep pooled.
    let _pool = OwnPool::new("publish");
    let r = didx(&["--pool", "--clean", "anycase", "--publish", "8080", "true"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("no pooled environment for these options"), "{}", r.show());
        assert!(r.stderr.lines().any(|l| l.starts_with("didx: published 127.0.0.1:") && l.ends_with(" -> 8080/tcp")), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}
