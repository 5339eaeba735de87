//! The kubernetes backend's own code — kube's client over HTTP, its exec and attach websockets,
//! didx's transport and hold over them — against an EMULATED cluster on this machine
//! (`common/kube_cluster.rs`: an emulated API server on loopback whose "kubelet" runs each
//! Job's pod on the local Docker engine; no Kubernetes component runs, none can be installed
//! here). A sandbox is made, its pod held and its inner engine used through `pods/exec`; let go,
//! its pod ends and the next start's sweep removes the rest; a pod never held ends itself.
//! Every container and volume is removed; the tests assert it.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;
#[path = "common/kube_cluster.rs"]
mod kube_cluster;
#[path = "common/pod_on_docker.rs"]
mod pod_on_docker;

use std::time::{Duration, Instant};

use bollard::query_parameters as qp;
use common::{host, leftovers};
use didx::kubernetes::{Cluster, KubeOptions, Objects, objects};
use didx::spec::IsolationMode;
use kube_cluster::EmulatedCluster;

const NS: &str = "ci";

fn sandbox() -> (Objects, String) {
    // The caps profile: this project's host refuses --privileged (see kube_pod_emulated.rs).
    let options = didx::Sandbox::builder()
        .server_image("didx/dind:local")
        .client_image("didx/dind:local")
        .isolation(IsolationMode::Caps)
        .options()
        .unwrap();
    let objects = objects(&options, &KubeOptions { namespace: NS.into(), ..KubeOptions::default() }).unwrap();
    let id = objects.job.metadata.labels.as_ref().unwrap()["io.didx.env"].clone();
    (objects, id)
}

/// Waits until `f` holds, up to `limit`; false if it never did.
async fn until<F: AsyncFnMut() -> bool>(limit: Duration, mut f: F) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// What the emulated cluster and the engine hold of sandbox `id` once the cluster is stopped.
async fn nothing_left(em: EmulatedCluster, id: &str) {
    let docker = em.docker.clone();
    em.stop().await;
    assert!(leftovers(&docker, id).await.is_empty(), "left on the engine: {:?}", leftovers(&docker, id).await);
}

#[tokio::test]
async fn a_sandbox_on_an_emulated_cluster_is_held_reached_through_pods_exec_and_gone_once_let_go() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    let (objects, id) = sandbox();
    let (_, created) = cluster.start(objects).await.unwrap();
    let pod = cluster.wait_running(&created.name, Duration::from_secs(60)).await.unwrap();
    let hold = cluster.hold(&pod).await.unwrap();

    // The inner engine, through `docker system dial-stdio` execs in the client via the API.
    let inner = cluster.inner_docker(&pod).unwrap();
    let mut last = String::new();
    let ready = until(Duration::from_secs(90), async || match tokio::time::timeout(Duration::from_secs(5), inner.version()).await {
        Ok(Ok(_)) => true,
        other => {
            last = format!("{other:?}");
            false
        }
    })
    .await;
    assert!(ready, "the inner engine never answered through pods/exec: {last}");
    // Data both ways: an image of 4 MiB imported through the stream, listed, inspected, removed.
    let mut b = tar::Builder::new(Vec::new());
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(payload.len() as u64);
    b.append_data(&mut h, "payload", &payload[..]).unwrap();
    let rootfs = b.into_inner().unwrap();
    let import =
        qp::CreateImageOptions { from_src: Some("-".into()), repo: Some("emulated".into()), tag: Some("k8s".into()), ..Default::default() };
    let mut s = inner.create_image(Some(import), Some(bollard::body_full(rootfs.into())), None);
    while let Some(item) = futures_util::StreamExt::next(&mut s).await {
        item.unwrap();
    }
    let image = inner.inspect_image("emulated:k8s").await.unwrap();
    assert!(image.size.unwrap_or(0) >= payload.len() as i64, "{image:?}");
    inner.remove_image("emulated:k8s", None::<qp::RemoveImageOptions>, None).await.unwrap();
    assert!(hold.is_holding());

    // Let go: both containers' stdin ends, the pod ends, its Job failed.
    let released = Instant::now();
    drop(hold);
    let ended = until(Duration::from_secs(30), async || {
        matches!(cluster.pod_phase(&created.name).await.unwrap().as_deref(), Some("Failed" | "Succeeded"))
    })
    .await;
    assert!(ended, "the pod still runs 30 s after it was let go");
    eprintln!("EMULATED cluster: the pod ended {:.1} s after it was let go", released.elapsed().as_secs_f64());

    // The next start's sweep removes the ended Job; the garbage collector and the kubelet the rest.
    let swept = cluster.sweep().await.unwrap();
    assert_eq!(swept.jobs, std::slice::from_ref(&created.name));
    let gone = until(Duration::from_secs(30), async || em.containers().is_empty() && em.api.state.lock().unwrap().names().is_empty()).await;
    assert!(gone, "left on the emulated cluster: {:?} {:?}", em.api.state.lock().unwrap().names(), em.containers());
    nothing_left(em, &id).await;
}

#[tokio::test]
async fn a_pod_its_didx_never_held_ends_itself_and_the_next_start_sweeps_it() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    let (objects, id) = sandbox();
    // A didx killed right after its start: nothing attaches, nothing beats.
    let (_, created) = cluster.start(objects).await.unwrap();
    cluster.wait_running(&created.name, Duration::from_secs(60)).await.unwrap();
    let started = Instant::now();
    let ended = until(Duration::from_secs(60), async || {
        matches!(cluster.pod_phase(&created.name).await.unwrap().as_deref(), Some("Failed" | "Succeeded"))
    })
    .await;
    assert!(ended, "a pod nobody held still runs 60 s after it started");
    eprintln!("EMULATED cluster: a pod never held ended {:.1} s after it ran", started.elapsed().as_secs_f64());
    // A later start sweeps it (its Job ended), then makes its own.
    let (next, next_id) = sandbox();
    let (swept, mine) = cluster.start(next).await.unwrap();
    assert_eq!(swept.jobs, std::slice::from_ref(&created.name));
    assert!(cluster.delete(&mine.name).await.unwrap());
    let gone = until(Duration::from_secs(30), async || em.containers().is_empty() && em.api.state.lock().unwrap().names().is_empty()).await;
    assert!(gone, "left on the emulated cluster: {:?} {:?}", em.api.state.lock().unwrap().names(), em.containers());
    let docker = em.docker.clone();
    nothing_left(em, &id).await;
    assert!(leftovers(&docker, &next_id).await.is_empty(), "left on the engine: {:?}", leftovers(&docker, &next_id).await);
}

fn builder() -> didx::SandboxBuilder {
    didx::Sandbox::builder().server_image("didx/dind:local").client_image("didx/dind:local").isolation(IsolationMode::Caps)
}

/// Waits until the emulated cluster holds nothing (its garbage collector and kubelet done).
async fn cluster_empty(em: &EmulatedCluster) {
    let gone = until(Duration::from_secs(30), async || em.containers().is_empty() && em.api.state.lock().unwrap().names().is_empty()).await;
    assert!(gone, "left on the emulated cluster: {:?} {:?}", em.api.state.lock().unwrap().names(), em.containers());
}

#[tokio::test]
async fn a_library_sandbox_on_an_emulated_cluster_runs_commands_reaches_its_docker_and_rm_leaves_nothing() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    let sb = builder().start_on_cluster(&cluster, &KubeOptions::default()).await.unwrap();
    let id = sb.id().to_string();
    assert!(sb.client_name().ends_with("/client"), "{}", sb.client_name());
    // COMMANDs in the client, through pods/exec: output, and the exit code from its status.
    let out = sb.exec(["docker", "info", "--format", "{{.ServerVersion}}"]).await.unwrap();
    assert!(out.success(), "{out:?}");
    let version = out.stdout_text().trim().to_string();
    assert!(!version.is_empty(), "{out:?}");
    let out = sb.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]).await.unwrap();
    assert_eq!((out.code, out.stdout_text().as_str(), out.stderr_text().as_str()), (3, "out\n", "err\n"));
    // The inner engine from here: dial-stdio through pods/exec.
    let docker = sb.docker().await.unwrap();
    assert_eq!(docker.version().await.unwrap().version.as_deref(), Some(version.as_str()));
    // And as a host tool reaches it: the server's TLS port carried by pods/portforward to this
    // machine's loopback, mutual TLS with the client certificate, the docker CLI.
    let vars = sb.docker_env().await.unwrap();
    let var = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    assert!(var("DOCKER_HOST").starts_with("tcp://127.0.0.1:") && var("DOCKER_TLS_VERIFY") == "1", "{vars:?}");
    let cert_dir = std::path::PathBuf::from(var("DOCKER_CERT_PATH"));
    for _ in 0..2 {
        let out = tokio::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .envs(vars.iter().cloned())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), version, "each connection a port-forward of its own");
    }
    // COMMANDs as didx runs them: `host:` ones on this machine against the inner engine.
    let steps: Vec<didx::spec::Step> =
        [r#"host: test "$(docker info --format '{{.ServerVersion}}')" = "$V" && test -n "$DIND_CLIENT_NAME""#, "true"]
            .iter()
            .map(|c| didx::spec::Step::parse(&c.replace("$V", &version)).unwrap())
            .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(sb.run_steps(&steps, &mut out, &mut err).await.unwrap(), None, "{}", String::from_utf8_lossy(&err));
    let failing = [didx::spec::Step::parse("host: exit 4").unwrap()];
    assert_eq!(sb.run_steps(&failing, &mut out, &mut err).await.unwrap(), Some((1, 4)));
    // Files in and out of the pod's client (tar through pods/exec, validated both ways).
    let here = tempfile::tempdir().unwrap();
    std::fs::write(here.path().join("in.txt"), "from here\n").unwrap();
    sb.copy_in(here.path().join("in.txt"), "/tmp/").await.unwrap();
    assert_eq!(sb.exec(["cat", "/tmp/in.txt"]).await.unwrap().stdout_text(), "from here\n");
    sb.copy_out("/tmp/in.txt", here.path().join("back.txt")).await.unwrap();
    assert_eq!(std::fs::read_to_string(here.path().join("back.txt")).unwrap(), "from here\n");
    sb.rm().await.unwrap();
    assert!(!cert_dir.exists(), "the client certificate directory outlived its sandbox");
    cluster_empty(&em).await;
    nothing_left(em, &id).await;
}

#[tokio::test]
async fn a_library_sandbox_dropped_on_an_emulated_cluster_ends_its_pod_and_the_next_start_sweeps_it() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    let sb = builder().start_on_cluster(&cluster, &KubeOptions::default()).await.unwrap();
    let id = sb.id().to_string();
    let job = format!("didx-{id}");
    drop(sb);
    let ended =
        until(Duration::from_secs(30), async || matches!(cluster.pod_phase(&job).await.unwrap().as_deref(), Some("Failed" | "Succeeded")))
            .await;
    assert!(ended, "a dropped sandbox's pod still runs 30 s later");
    let swept = cluster.sweep().await.unwrap();
    assert_eq!(swept.jobs, [job]);
    cluster_empty(&em).await;
    nothing_left(em, &id).await;
}

#[tokio::test]
async fn what_a_pod_cannot_have_is_refused_before_anything_is_made_on_the_cluster() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    for (b, option) in [
        (builder().volume("/data"), "-v"),
        (builder().load("busybox:latest"), "--load"),
        (builder().copy("./Cargo.toml:/work/"), "--cp"),
        (builder().workdir_here(true), "--workdir-here"),
        (builder().publish("8080/udp"), "--publish"),
    ] {
        let err = b.start_on_cluster(&cluster, &KubeOptions::default()).await.unwrap_err();
        assert!(err.is_usage(), "{option}: {err}");
        assert!(err.to_string().contains(option) && err.to_string().contains("kubernetes"), "{option}: {err}");
    }
    assert_eq!(em.api.state.lock().unwrap().requests, 0, "nothing was asked of the cluster");
    em.stop().await;
}

/// The states `didx k8s ls` shows of `id`'s members.
async fn states(cluster: &Cluster, id: &str) -> Vec<String> {
    let listed = didx::kubernetes::list(cluster).await.unwrap();
    listed.iter().filter(|e| e.id == id).flat_map(|e| e.members.iter().map(|m| m.state.clone())).collect()
}

#[tokio::test]
async fn the_pool_on_an_emulated_cluster_keeps_released_pods_serves_one_claimer_each_refills_and_empties() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    let kube = KubeOptions::default();
    let options = builder().options().unwrap();
    let up = didx::kubernetes::pool_up(&cluster, &options, &kube, 1, Duration::from_secs(600)).await.unwrap();
    assert_eq!((up.existing, up.started.len(), up.failed.len()), (0, 1, 0), "{up:?}");
    let pooled = up.started[0].clone();
    // Released: nobody holds it, and it runs on past the beat limit (6 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(cluster.pod_phase(&format!("didx-{pooled}")).await.unwrap().as_deref(), Some("Running"));
    assert_eq!(states(&cluster, &pooled).await, ["ready", "ready"]);

    // A claim that loses the race (the Job changed after it was listed: 409) takes nothing and
    // starts fresh; the pooled one stays ready for the next.
    em.api.state.lock().unwrap().raced = true;
    let fresh = builder().start_on_cluster_with(&cluster, &kube, None, didx::StartFrom::PoolOrFresh).await.unwrap();
    assert!(!fresh.is_pooled() && fresh.id() != pooled);
    assert!(!em.api.state.lock().unwrap().raced, "the claim's patch met the race");
    let lost = fresh.id().to_string();
    fresh.rm().await.unwrap();
    assert_eq!(states(&cluster, &pooled).await, ["ready", "ready"]);

    // Three runs at once: exactly one is served by the pool (the claim is a patch conditional
    // on the version listed: the others are told 409 and start fresh).
    let start = || builder().start_on_cluster_with(&cluster, &kube, None, didx::StartFrom::PoolOrFresh);
    let (a, b, c) = tokio::join!(start(), start(), start());
    let sandboxes = [a.unwrap(), b.unwrap(), c.unwrap()];
    let served: Vec<&didx::Sandbox> = sandboxes.iter().filter(|s| s.is_pooled()).collect();
    assert_eq!(served.len(), 1, "one claim wins");
    assert_eq!(served[0].id().to_string(), pooled);
    assert_eq!(states(&cluster, &pooled).await, ["running", "running"], "claimed: a run's");
    let out = served[0].exec(["docker", "info", "--format", "{{.ServerVersion}}"]).await.unwrap();
    assert!(out.success() && !out.stdout_text().trim().is_empty(), "{out:?}");
    let ids: Vec<String> = sandboxes.iter().map(|s| s.id().to_string()).collect();
    for sb in sandboxes {
        sb.rm().await.unwrap();
    }
    // The claim's refill (finished by rm): one ready in its place, the claimed one never again.
    let listed = didx::kubernetes::list(&cluster).await.unwrap();
    let left: Vec<&str> = listed.iter().filter(|e| e.pool.is_some()).map(|e| e.id.as_str()).collect();
    assert_eq!(left.len(), 1, "{listed:?}");
    assert!(!ids.iter().any(|i| i == left[0]), "{listed:?}");
    assert_eq!(states(&cluster, left[0]).await, ["ready", "ready"]);

    let down = didx::kubernetes::pool_down(&cluster).await.unwrap();
    assert_eq!((down.removed.len(), down.left.len()), (1, 0), "{down:?}");
    cluster_empty(&em).await;
    let docker = em.docker.clone();
    em.stop().await;
    for id in ids.iter().chain([&down.removed[0], &lost]) {
        assert!(leftovers(&docker, id).await.is_empty(), "left on the engine: {:?}", leftovers(&docker, id).await);
    }
}

#[tokio::test]
async fn a_pooled_pod_nobody_claims_ends_itself_after_its_idle_timeout_and_is_not_served() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    let kube = KubeOptions::default();
    let options = builder().options().unwrap();
    let up = didx::kubernetes::pool_up(&cluster, &options, &kube, 1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(up.started.len(), 1, "{up:?}");
    let pooled = up.started[0].clone();
    let job = format!("didx-{pooled}");
    let ended =
        until(Duration::from_secs(60), async || matches!(cluster.pod_phase(&job).await.unwrap().as_deref(), Some("Failed" | "Succeeded")))
            .await;
    assert!(ended, "a pooled pod nobody claimed still runs 60 s after its start (idle timeout 15 s)");
    assert_eq!(states(&cluster, &pooled).await, ["exited", "exited"]);
    // Not served: a run starts fresh (and its start's sweep deletes the ended Job).
    let sb = builder().start_on_cluster_with(&cluster, &kube, None, didx::StartFrom::PoolOrFresh).await.unwrap();
    assert!(!sb.is_pooled());
    assert!(!cluster.list().await.unwrap().contains(&job), "swept at the start");
    let fresh = sb.id().to_string();
    sb.rm().await.unwrap();
    let down = didx::kubernetes::pool_down(&cluster).await.unwrap();
    assert!(down.removed.is_empty() && down.left.is_empty(), "{down:?}");
    cluster_empty(&em).await;
    let docker = em.docker.clone();
    em.stop().await;
    for id in [&pooled, &fresh] {
        assert!(leftovers(&docker, id).await.is_empty(), "left on the engine: {:?}", leftovers(&docker, id).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_of_a_sandbox_on_an_emulated_cluster_reaches_an_inner_container_through_a_port_forward() {
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    let h = host();
    let t = common::tag("k8spub");
    let image = common::busybox(&h, "didx-libtest-bb", &t).await;
    let engine = didx::Engine::connect(None).await.unwrap();
    let sb = builder().publish("8080").load(&image).start_on_cluster_from(&cluster, &KubeOptions::default(), &engine).await;
    common::remove_image(&h, &image).await;
    let sb = sb.unwrap();
    let id = sb.id().to_string();
    // The pod declares the port; the run carries it to this machine's loopback.
    let access = sb.host_access().await.unwrap();
    let [p] = &access.published[..] else { panic!("{access:?}") };
    assert_eq!((p.ip.as_str(), p.env_port), ("127.0.0.1", 8080));
    assert_ne!(p.host_port, 0);
    assert_eq!(sb.host_access().await.unwrap().published[0].host_port, p.host_port, "one forward per port, held");

    // An inner container publishing 8080 on the server's network (the pod's).
    let docker = sb.docker().await.unwrap();
    let reply = common::serve_and_fetch(&docker, &image, &format!("web-{t}"), 8080, "k8s-published", p.host_addr()).await;
    assert!(reply.contains("k8s-published"), "{reply}");
    sb.rm().await.unwrap();
    cluster_empty(&em).await;
    nothing_left(em, &id).await;
}

/// `--kube-reach port-forward` and `pod-ip`: the inner engine over mutual TLS with the
/// sandbox's client certificate (read from its Secret), by a `pods/portforward` stream to the
/// server's TLS port or by the pod's IP (here the server's address on the engine's bridge, as
/// a pod of the cluster would reach it) — and never a `dial-stdio` exec, from the start's
/// readiness wait on. COMMANDs still run through `pods/exec`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inner_engine_is_reached_by_port_forward_or_by_pod_ip_with_mutual_tls_and_no_exec() {
    use didx::kubernetes::KubeReach;
    let em = EmulatedCluster::start(host()).await;
    let cluster = Cluster::new(em.client(), NS);
    assert!(!cluster.in_cluster());
    assert_eq!(KubeReach::Auto.on(cluster.in_cluster()), KubeReach::Exec, "outside the cluster, auto is exec");
    for reach in [KubeReach::PortForward, KubeReach::PodIp] {
        let before = em.api.state.lock().unwrap().streams.len();
        let sb = builder().start_on_cluster(&cluster, &KubeOptions { reach, ..KubeOptions::default() }).await.unwrap();
        let id = sb.id().to_string();
        let docker = sb.docker().await.unwrap();
        let version = docker.version().await.unwrap().version.unwrap_or_default();
        let out = sb.exec(["docker", "version", "--format", "{{.Server.Version}}"]).await.unwrap();
        assert_eq!(out.stdout_text().trim(), version, "{reach:?}: the same inner engine as the client's");
        assert!(docker.list_images(None::<qp::ListImagesOptions>).await.unwrap().is_empty(), "{reach:?}");
        let streams: Vec<String> = em.api.state.lock().unwrap().streams[before..].to_vec();
        assert!(!streams.iter().any(|s| s.contains("dial-stdio")), "{reach:?} dialled through exec: {streams:#?}");
        let forwarded = streams.iter().any(|s| s.contains("/portforward?") && s.contains("ports=2376"));
        assert_eq!(forwarded, reach == KubeReach::PortForward, "{reach:?}: {streams:#?}");
        sb.rm().await.unwrap();
        cluster_empty(&em).await;
        assert!(leftovers(&em.docker, &id).await.is_empty(), "{reach:?}: left on the engine");
    }
    em.stop().await;
}
