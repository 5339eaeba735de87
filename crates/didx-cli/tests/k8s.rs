//! `didx k8s render`: the objects a sandbox on a cluster is made of, printed without a cluster
//! or an engine (these runs point DOCKER_HOST at nothing). No Kubernetes API server can run on
//! the machines these tests run on: what a cluster does with the objects is not tested here
//! (see the book's testing page).

mod common;
use common::*;

use serde_json::Value;

/// `didx k8s render ARGS` with no engine reachable.
fn render(args: &[&str]) -> Run {
    let mut all = vec!["k8s", "render"];
    all.extend_from_slice(args);
    from_output(didx_cmd(&all).env("DOCKER_HOST", "unix:///nonexistent/didx-test.sock").output().unwrap())
}

/// The YAML's documents, read back.
fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n").skip(1).map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}\n{d}"))).collect()
}

fn pod(job: &Value) -> &Value {
    &job["spec"]["template"]["spec"]
}

#[test]
fn render_prints_a_job_and_the_secret_it_owns_and_the_level_its_namespace_must_admit() {
    let r = render(&["--namespace", "ci", "--deadline", "30m", "--ttl", "2m", "--sv", "26.1", "--server-limits", "cpu=2,memory=4Gi"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let docs = documents(&r.stdout);
    assert_eq!(docs.len(), 2, "{}", r.stdout);
    let (job, secret) = (&docs[0], &docs[1]);
    assert_eq!((job["apiVersion"].as_str(), job["kind"].as_str()), (Some("batch/v1"), Some("Job")));
    assert_eq!(job["metadata"]["namespace"], "ci");
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 1800);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 120);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let containers = pod(job)["containers"].as_array().unwrap();
    assert_eq!(containers.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(), ["server", "client"]);
    assert_eq!(containers[0]["image"], "docker:26.1-dind");
    assert_eq!(containers[0]["securityContext"]["privileged"], true);
    assert_eq!(containers[0]["resources"]["limits"]["memory"], "4Gi");
    assert!(!r.stdout.contains("hostPath") && !r.stdout.contains("hostNetwork"), "{}", r.stdout);
    assert_eq!((secret["kind"].as_str(), secret["metadata"]["ownerReferences"][0]["kind"].as_str()), (Some("Secret"), Some("Job")));
    assert_eq!(secret["metadata"]["name"], job["metadata"]["name"]);
    assert!(!r.stdout.contains("PRIVATE KEY"), "a render prints no key");
    assert!(r.stderr.contains("Pod Security level 'privileged'"), "{}", r.show());
    // The same objects as JSON.
    let r = render(&["--json", "--runtime-class", "sysbox-runc"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let job = &list["items"][0];
    assert_eq!(pod(job)["runtimeClassName"], "sysbox-runc");
    assert!(pod(job)["containers"][0].get("securityContext").is_none(), "{}", r.stdout);
    assert!(r.stderr.contains("Pod Security level 'baseline'"), "{}", r.show());
}

#[test]
fn render_refuses_what_a_pod_cannot_be_in_one_line() {
    for (args, says) in [
        (&["--publish", "8080:80/udp"][..], "--publish"),
        (&["--store"][..], "--store"),
        (&["--network", "ci"][..], "--network"),
        (&["--server-limits", "cpu=lots"][..], "--server-limits"),
        (&["--deadline", "5d"][..], "--deadline"),
        (&["--storage-limit", "20GB"][..], "--storage-limit"),
    ] {
        let r = render(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(says), "{args:?}: {}", r.show());
        assert!(r.stdout.is_empty(), "{args:?}: nothing printed: {}", r.show());
    }
}
