//! `didx --backend kubernetes …` against an EMULATED cluster (didx's own test emulation,
//! `crates/didx/tests/common/kube_cluster.rs`: an API server on loopback whose "kubelet" runs
//! pods on the local engine; no Kubernetes component runs, none can be installed here), named
//! by a kubeconfig as a user's would name a cluster. The run's own Docker engine is pointed at
//! nothing: the kubernetes backend needs none.

mod common;
#[path = "../../didx/tests/common/fake_kube.rs"]
mod fake_kube;
#[path = "../../didx/tests/common/kube_cluster.rs"]
mod kube_cluster;
#[path = "../../didx/tests/common/pod_on_docker.rs"]
mod pod_on_docker;

use std::time::{Duration, Instant};

use common::*;
use kube_cluster::EmulatedCluster;

/// The emulated cluster (its tasks on a runtime of their own, running while didx runs) and a
/// kubeconfig naming it (context `emulated`, namespace `ci`).
struct Emulated {
    rt: tokio::runtime::Runtime,
    em: Option<EmulatedCluster>,
    dir: tempfile::TempDir,
}

impl Emulated {
    fn start() -> Emulated {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let em = rt.block_on(EmulatedCluster::start(bollard::Docker::connect_with_defaults().unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulated\n  cluster:\n    server: {}\ncontexts:\n- name: emulated\n  context:\n    cluster: emulated\n    user: nobody\n    namespace: ci\ncurrent-context: emulated\nusers:\n- name: nobody\n  user: {{}}\n",
            em.url
        );
        std::fs::write(dir.path().join("config"), config).unwrap();
        Emulated { rt, em: Some(em), dir }
    }

    /// `didx ARGS` with this kubeconfig and no Docker engine.
    fn didx(&self, args: &[&str]) -> Run {
        let out = didx_cmd(args)
            .env("KUBECONFIG", self.dir.path().join("config"))
            .env("DOCKER_HOST", "unix:///nonexistent/didx-test.sock")
            .output()
            .unwrap();
        from_output(out)
    }

    /// `didx ARGS` with this kubeconfig and the local engine (what --cp and --load read).
    /// `vars` set too.
    fn didx_with_engine(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = didx_cmd(args);
        cmd.env("KUBECONFIG", self.dir.path().join("config")).envs(vars.iter().copied());
        from_output(cmd.output().unwrap())
    }

    fn em(&self) -> &EmulatedCluster {
        self.em.as_ref().unwrap()
    }

    fn requests(&self) -> usize {
        self.em().api.state.lock().unwrap().requests
    }

    /// Waits until the cluster holds nothing, then stops it; nothing of `ids` on the engine.
    fn empty_then_stop(mut self, ids: &[&str]) {
        let started = Instant::now();
        while !(self.em().containers().is_empty() && self.em().api.state.lock().unwrap().names().is_empty()) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "left on the emulated cluster: {:?} {:?}",
                self.em().api.state.lock().unwrap().names(),
                self.em().containers()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let em = self.em.take().unwrap();
        self.rt.block_on(em.stop());
        for id in ids {
            assert_gone(id);
        }
    }
}

const LOCAL: [&str; 6] = ["--server-image", "didx/dind:local", "--client-image", "didx/dind:local", "--isolation", "caps"];

#[test]
fn a_run_on_the_kubernetes_backend_runs_its_commands_in_the_pod_stops_at_the_first_failure_and_removes_it() {
    let cluster = Emulated::start();
    let mut args = vec!["--backend", "kubernetes", "--clean", "anycase", "--events", "json"];
    args.extend(LOCAL);
    args.extend(["docker info --format {{.ServerVersion}}", "sh -c 'echo to-stderr >&2; exit 3'", "echo never"]);
    let r = cluster.didx(&args);
    assert_eq!(r.code, 3, "{}", r.show());
    // The session's events, as on Docker: on the cluster, each step, the end.
    let kinds: Vec<String> = r.events().iter().filter_map(|e| e["didx_event"].as_str().map(str::to_string)).collect();
    let wanted = ["on_cluster", "step_started", "step_ended", "step_started", "step_ended", "commands_done", "removing", "removed"];
    assert_eq!(kinds, wanted, "{}", r.show());
    assert_eq!(r.stderr.matches("[2/3]").count(), 2, "the steps said: {}", r.show());
    let version = r.stdout.lines().next().unwrap_or_default();
    assert!(version.chars().next().is_some_and(|c| c.is_ascii_digit()), "the inner engine's version first: {}", r.show());
    assert!(!r.stdout.contains("never") && r.stderr.contains("to-stderr"), "{}", r.show());
    let id = r.stderr.split_whitespace().find(|w| w.starts_with("didx-")).map(|w| w.trim_start_matches("didx-").to_string());
    let id = id.unwrap_or_else(|| panic!("the Job named on stderr: {}", r.show()));
    assert!(r.stderr.contains(&format!("{id} removed")), "{}", r.show());
    cluster.empty_then_stop(&[&id]);
}

#[test]
fn host_commands_and_published_ports_on_the_kubernetes_backend_go_through_port_forwards_with_mutual_tls() {
    let cluster = Emulated::start();
    let mut args = vec!["--backend", "kubernetes", "--clean", "anycase", "--publish", "8080"];
    args.extend(LOCAL);
    args.extend([
        "docker info --format {{.ServerVersion}}",
        "host: docker version --format {{.Server.Version}}",
        "host: sh -c 'echo \"$DOCKER_TLS_VERIFY $DIND_CLIENT_NAME\"'",
    ]);
    let r = cluster.didx(&args);
    assert_eq!(r.code, 0, "{}", r.show());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.show());
    assert!(!lines[0].is_empty() && lines[0] == lines[1], "the same engine from the client and from here: {}", r.show());
    assert!(lines[2].starts_with("1 didx-") && lines[2].ends_with("/client"), "{}", r.show());
    // --publish: the port carried to this machine's loopback, said before the COMMANDs (the
    // data path: the library's test of an inner container's port).
    assert!(r.stderr.lines().any(|l| l.contains("published 127.0.0.1:") && l.ends_with(" -> 8080/tcp")), "{}", r.show());
    let id = r.stderr.split_whitespace().find(|w| w.starts_with("didx-")).map(|w| w.trim_start_matches("didx-").to_string()).unwrap();
    cluster.empty_then_stop(&[&id]);
}

#[test]
fn what_the_kubernetes_backend_cannot_do_is_one_usage_line_and_nothing_is_asked_of_the_cluster() {
    let cluster = Emulated::start();
    let cases: [(&[&str], &str); 16] = [
        (&["--backend", "kubernetes", "--clean", "rpt", "true"], "--clean"),
        (&["k8s", "rm", "Not_An_Id"], "sandbox id"),
        (&["--backend", "kubernetes", "--clean", "anycase", "-v", "/data", "true"], "-v"),
        (&["--backend", "kubernetes", "--clean", "anycase", "--workdir-here", "true"], "--workdir-here"),
        (&["--backend", "kubernetes", "--clean", "anycase", "docker exec x true"], "COMMAND"),
        (&["--namespace", "ci", "true"], "--backend kubernetes"),
        (&["pool", "up", "1", "--backend", "kubernetes", "--idle-timeout", "0"], "--idle-timeout"),
        (&["pool", "up", "1", "--backend", "kubernetes", "--load", "busybox:latest"], "--load"),
        (&["pool", "up", "1", "--namespace", "ci"], "--backend kubernetes"),
        (&["pool", "down", "--kube-context", "emulated"], "--backend kubernetes"),
        (&["--backend", "kubernetes", "--clean", "anycase", "--kube-reach", "ssh", "true"], "--kube-reach"),
        (&["--kube-reach", "pod-ip", "true"], "--backend kubernetes"),
        (&["env", "abc", "--namespace", "ci"], "--backend kubernetes"),
        (&["env", "Not_An_Id", "--backend", "kubernetes"], "sandbox id"),
        (&["env", "abc", "--backend", "kubernetes", "--kube-reach", "ssh"], "--kube-reach"),
        (&["-H", "unix:///nonexistent.sock", "env", "abc", "--backend", "kubernetes"], "-H"),
    ];
    for (args, names) in cases {
        let r = cluster.didx(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(names), "{args:?}: {}", r.show());
    }
    // A context the kubeconfig does not have.
    let r = cluster.didx(&["--backend", "kubernetes", "--clean", "anycase", "--kube-context", "nope", "true"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("context 'nope'") && r.stderr.trim().lines().count() == 1, "{}", r.show());
    assert_eq!(cluster.requests(), 0, "nothing was asked of the cluster");
    cluster.empty_then_stop(&[]);
}

#[test]
fn a_run_on_the_kubernetes_backend_copies_host_files_and_loads_local_images_into_the_pod() {
    let cluster = Emulated::start();
    let image = rt().block_on(async { busybox_image_with(&engine().await, "didx-k8s-load", &["sh", "echo", "true"]).await });
    let saved = format!("didx-k8s-saved:{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from this machine\n").unwrap();
    let cp = format!("{}:/work/", dir.path().join("hello.txt").display());
    // And out again: a file the COMMANDs wrote (--cp-out), an image they tagged (--save). And
    // registry credentials in (--registry-auth), private, in the client's tmpfs.
    let cp_out = format!("/work/made.txt:{}/", dir.path().display());
    let mut args = vec![
        "--backend",
        "kubernetes",
        "--clean",
        "anycase",
        "--cp",
        &cp,
        "--load",
        &image,
        "--cp-out",
        &cp_out,
        "--save",
        &saved,
        "--registry-auth",
    ];
    args.extend(LOCAL);
    let run_it = format!("docker run --rm {image} echo ran-inside");
    let tag_it = format!("docker tag {image} {saved}");
    let auth = "sh -c 'stat -c %a \"$DOCKER_CONFIG/config.json\" && grep -c k8s-secret-token \"$DOCKER_CONFIG/config.json\"'";
    args.extend(["cat /work/hello.txt", &run_it, "sh -c 'echo made-in-the-pod > /work/made.txt'", &tag_it, auth]);
    let config = r#"{"auths": {"registry.test:5000": {"identitytoken": "k8s-secret-token"}}}"#;
    let r = cluster.didx_with_engine(&args, &[("DOCKER_AUTH_CONFIG", config)]);
    let saved_there = rt().block_on(async {
        let e = engine().await;
        let there = e.image(&saved).await.ok().flatten().is_some();
        e.remove_image(&saved).await.ok();
        e.remove_image(&image).await.ok();
        there
    });
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.stdout, "from this machine\nran-inside\n600\n1\n", "{}", r.show());
    assert_eq!(std::fs::read_to_string(dir.path().join("made.txt")).unwrap(), "made-in-the-pod\n", "{}", r.show());
    assert!(saved_there, "--save: {}", r.show());
    let id = r.stderr.split_whitespace().find(|w| w.starts_with("didx-")).map(|w| w.trim_start_matches("didx-").to_string()).unwrap();
    cluster.empty_then_stop(&[&id]);
}

#[test]
fn didx_env_on_the_kubernetes_backend_points_a_host_docker_client_at_the_pod_and_a_sigkilled_run_leaves_nothing_running() {
    use std::io::BufRead;
    let cluster = Emulated::start();
    let mut args = vec!["--backend", "kubernetes", "--clean", "anycase"];
    args.extend(LOCAL);
    args.push("sleep 300");
    let mut run = didx_cmd(&args)
        .env("KUBECONFIG", cluster.dir.path().join("config"))
        .env("DOCKER_HOST", "unix:///nonexistent/didx-test.sock")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(run.stderr.take().unwrap()).lines();
    let id = loop {
        let line = lines.next().expect("the run says it started").unwrap();
        if let Some(w) = line.split_whitespace().find(|w| w.starts_with("didx-")) {
            break w.trim_start_matches("didx-").to_string();
        }
    };
    // Listed, as `didx ls` lists an engine's.
    let r = cluster.didx(&["k8s", "ls"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let rows: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with(&id)).collect();
    assert_eq!(rows.len(), 2, "server and client: {}", r.show());
    assert!(rows.iter().all(|l| l.contains("running")), "{}", r.show());
    let r = cluster.didx(&["k8s", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.show()));
    assert_eq!(listed.as_array().map(|a| a.len()), Some(1), "{}", r.show());
    assert_eq!(listed[0]["id"], id.as_str(), "{}", r.show());
    // A host docker client, through the socket `didx env --backend kubernetes` holds (an exec
    // stream per connection), and through the one `didx k8s env --kube-reach port-forward`
    // holds (mutual TLS over a port-forward per connection): the same inner engine.
    let r = cluster.didx(&["env", &id, "--backend", "kubernetes"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let socket = r
        .stdout
        .trim()
        .strip_prefix("export DOCKER_HOST='unix://")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{}", r.show()))
        .to_string();
    let r = cluster.didx(&["k8s", "env", &id, "--kube-reach", "port-forward", "--json"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let said: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.show()));
    assert_eq!(
        (said["id"].as_str(), said["namespace"].as_str(), said["reach"].as_str()),
        (Some(id.as_str()), Some("ci"), Some("port-forward"))
    );
    let forwarded =
        said["docker_host"].as_str().and_then(|h| h.strip_prefix("unix://")).unwrap_or_else(|| panic!("{}", r.show())).to_string();
    let mut ids = Vec::new();
    for socket in [&socket, &forwarded] {
        let meta = std::fs::metadata(std::path::Path::new(socket).parent().unwrap()).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o700, "a private directory");
        let docker = bollard::Docker::connect_with_unix(socket, 30, bollard::API_DEFAULT_VERSION).unwrap();
        let info = cluster.rt.block_on(docker.info()).unwrap();
        ids.push(info.id.unwrap_or_else(|| panic!("{socket}: an engine without an id")));
    }
    assert_eq!(ids[0], ids[1], "both sockets reach the one inner engine");

    // SIGKILL the run: its hold's streams close with it; the pod ends, the holder with it.
    run.kill().unwrap();
    run.wait().unwrap();
    let killed = Instant::now();
    let k8s = {
        let _in = cluster.rt.enter();
        didx::kubernetes::Cluster::new(cluster.em().client(), "ci")
    };
    let job = format!("didx-{id}");
    while !matches!(cluster.rt.block_on(k8s.pod_phase(&job)).unwrap().as_deref(), Some("Failed" | "Succeeded")) {
        assert!(killed.elapsed() < Duration::from_secs(30), "the pod still runs 30 s after its didx was killed");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("EMULATED cluster: the pod of a SIGKILLed run ended {:.1} s after", killed.elapsed().as_secs_f64());
    while std::path::Path::new(&socket).exists() || std::path::Path::new(&forwarded).exists() {
        assert!(killed.elapsed() < Duration::from_secs(30), "an env holder still holds its socket 30 s after the pod ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The next start's sweep takes the ended Job.
    let swept = cluster.rt.block_on(k8s.sweep()).unwrap();
    assert_eq!(swept.jobs, [job]);
    cluster.empty_then_stop(&[&id]);
}

#[test]
fn the_pool_on_the_kubernetes_backend_serves_a_run_refills_and_empties_leaving_nothing() {
    let cluster = Emulated::start();
    let mut up = vec!["pool", "up", "1", "--backend", "kubernetes", "--idle-timeout", "10m"];
    up.extend(LOCAL);
    let r = cluster.didx(&up);
    assert_eq!(r.code, 0, "{}", r.show());
    let pooled = r.stderr.split_whitespace().skip_while(|w| *w != "sandbox").nth(1).unwrap_or_default().to_string();
    assert!(r.stderr.contains(&format!("pooled sandbox {pooled} ready")), "{}", r.show());
    // Released into the pool: unheld, and still running past the beat limit.
    std::thread::sleep(Duration::from_secs(8));
    let r = cluster.didx(&["k8s", "ls"]);
    let rows: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with(&pooled)).collect();
    assert!(rows.len() == 2 && rows.iter().all(|l| l.contains(" ready ")), "{}", r.show());
    // Topped up already: nothing started.
    let r = cluster.didx(&up);
    assert!(r.code == 0 && r.stderr.contains("1 already, 0 started now"), "{}", r.show());

    // A run with --pool takes it, and waits at its end for the refill it started.
    let mut run = vec!["--backend", "kubernetes", "--clean", "anycase", "--pool"];
    run.extend(LOCAL);
    run.push("docker info --format {{.ServerVersion}}");
    let r = cluster.didx(&run);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains(&format!("{pooled} claimed from the pool")), "{}", r.show());
    assert!(r.stderr.contains(&format!("{pooled} removed")), "{}", r.show());
    let r = cluster.didx(&["k8s", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.show()));
    let ids: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "the refill, and the claimed one gone: {}", r.show());
    let refill = ids[0].to_string();
    assert_ne!(refill, pooled);

    // Emptied: the refill removed, nothing left.
    let r = cluster.didx(&["pool", "down", "--backend", "kubernetes"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains("removed 1 pooled sandbox(es) in namespace ci"), "{}", r.show());
    cluster.empty_then_stop(&[&pooled, &refill]);
}

/// The Job named on a run's stderr (`ID started: Job didx-ID …`).
fn job_id(r: &Run) -> String {
    let id = r.stderr.split_whitespace().find(|w| w.starts_with("didx-")).map(|w| w.trim_start_matches("didx-").to_string());
    id.unwrap_or_else(|| panic!("the Job named on stderr: {}", r.show()))
}

/// `--clean` on a cluster as on Docker: `success` keeps a failed run's sandbox, `failure` a
/// successful one's (released, not ended: its pod runs on after didx exits, until its
/// deadline), `anycase`-like removal otherwise; `didx k8s rm`, `--clean rpt` and `--clean all`
/// find and remove what was kept.
#[test]
fn a_kept_sandbox_on_the_kubernetes_backend_runs_on_after_its_run_until_k8s_rm_or_clean_all() {
    let cluster = Emulated::start();
    let run = |clean: &str, command: &str| {
        let mut args = vec!["--backend", "kubernetes", "--clean", clean];
        args.extend(LOCAL);
        args.push(command);
        cluster.didx(&args)
    };
    let failed = run("success", "sh -c 'exit 3'");
    assert_eq!(failed.code, 3, "{}", failed.show());
    let kept_failed = job_id(&failed);
    assert!(failed.stderr.contains(&format!("{kept_failed} kept")), "{}", failed.show());
    let succeeded = run("failure", "true");
    assert_eq!(succeeded.code, 0, "{}", succeeded.show());
    let kept_succeeded = job_id(&succeeded);
    assert!(succeeded.stderr.contains(&format!("{kept_succeeded} kept")), "{}", succeeded.show());
    let removed = run("success", "true");
    let gone = job_id(&removed);
    assert!(removed.stderr.contains(&format!("{gone} removed")), "{}", removed.show());

    // Their didx has exited: a pod whose hold had closed unreleased would have ended in 0.3 s.
    std::thread::sleep(Duration::from_secs(3));
    let rpt = cluster.didx(&["--backend", "kubernetes", "--clean", "rpt"]);
    assert_eq!(rpt.code, 0, "{}", rpt.show());
    for id in [&kept_failed, &kept_succeeded] {
        let row = rpt.stdout.lines().find(|l| l.starts_with(id.as_str())).unwrap_or_else(|| panic!("{id} not listed: {}", rpt.show()));
        assert!(row.contains("running"), "{row}");
    }
    assert!(!rpt.stdout.contains(&gone), "{}", rpt.show());
    let rm = cluster.didx(&["k8s", "rm", &kept_failed]);
    assert_eq!(rm.code, 0, "{}", rm.show());
    let again = cluster.didx(&["k8s", "rm", &kept_failed]);
    assert_eq!(again.code, 1, "{}", again.show());
    assert!(again.stderr.contains("no such sandbox"), "{}", again.show());
    let all = cluster.didx(&["--backend", "kubernetes", "--clean", "all"]);
    assert_eq!(all.code, 0, "{}", all.show());
    assert!(all.stderr.contains(&format!("didx-{kept_succeeded}")), "{}", all.show());
    cluster.empty_then_stop(&[&kept_failed, &kept_succeeded, &gone]);
}
