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
    fn didx_with_engine(&self, args: &[&str]) -> Run {
        from_output(didx_cmd(args).env("KUBECONFIG", self.dir.path().join("config")).output().unwrap())
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
    let mut args = vec!["--backend", "kubernetes", "--clean", "anycase"];
    args.extend(LOCAL);
    args.extend(["docker info --format {{.ServerVersion}}", "sh -c 'echo to-stderr >&2; exit 3'", "echo never"]);
    let r = cluster.didx(&args);
    assert_eq!(r.code, 3, "{}", r.show());
    let version = r.stdout.lines().next().unwrap_or_default();
    assert!(version.chars().next().is_some_and(|c| c.is_ascii_digit()), "the inner engine's version first: {}", r.show());
    assert!(!r.stdout.contains("never") && r.stderr.contains("to-stderr"), "{}", r.show());
    let id = r.stderr.split_whitespace().find(|w| w.starts_with("didx-")).map(|w| w.trim_start_matches("didx-").to_string());
    let id = id.unwrap_or_else(|| panic!("the Job named on stderr: {}", r.show()));
    assert!(r.stderr.contains(&format!("{id} removed")), "{}", r.show());
    cluster.empty_then_stop(&[&id]);
}

#[test]
fn what_the_kubernetes_backend_cannot_do_is_one_usage_line_and_nothing_is_asked_of_the_cluster() {
    let cluster = Emulated::start();
    let cases: [(&[&str], &str); 7] = [
        (&["--backend", "kubernetes", "true"], "--clean anycase"),
        (&["--backend", "kubernetes", "--clean", "success", "true"], "--clean anycase"),
        (&["--backend", "kubernetes", "--clean", "anycase", "-v", "/data", "true"], "-v"),
        (&["--backend", "kubernetes", "--clean", "anycase", "--workdir-here", "true"], "--workdir-here"),
        (&["--backend", "kubernetes", "--clean", "anycase", "host: docker info"], "COMMAND"),
        (&["--backend", "kubernetes", "--clean", "anycase", "--pool", "true"], "--pool"),
        (&["--namespace", "ci", "true"], "--backend kubernetes"),
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from this machine\n").unwrap();
    let cp = format!("{}:/work/", dir.path().join("hello.txt").display());
    let mut args = vec!["--backend", "kubernetes", "--clean", "anycase", "--cp", &cp, "--load", &image];
    args.extend(LOCAL);
    let run_it = format!("docker run --rm {image} echo ran-inside");
    args.extend(["cat /work/hello.txt", &run_it]);
    let r = cluster.didx_with_engine(&args);
    rt().block_on(async { engine().await.remove_image(&image).await.ok() });
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.stdout, "from this machine\nran-inside\n", "{}", r.show());
    let id = r.stderr.split_whitespace().find(|w| w.starts_with("didx-")).map(|w| w.trim_start_matches("didx-").to_string()).unwrap();
    cluster.empty_then_stop(&[&id]);
}
