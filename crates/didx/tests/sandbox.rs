//! The library as a user's test uses it: a builder, the inner engine through `docker()`,
//! `exec`, and removal by `rm` and by drop — each test asserting the host engine is left as
//! it found it. Needs a Docker engine and didx/dind:local (`bash scripts/setup.sh`).

mod common;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters as qp;
use common::*;
use didx::{Engine, Error, Sandbox};
use futures_util::StreamExt;

async fn engine() -> Engine {
    Engine::connect_default().await.expect("a docker engine (bash scripts/setup.sh)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_sandbox_runs_its_image_through_docker_and_exec_then_rm_leaves_nothing() {
    let host = host();
    let t = tag("seeded");
    let image = busybox(&host, "didx-libtest-bb", &t).await;
    let engine = engine().await;
    let sb = Sandbox::builder().load(&image).volume("/data").start(&engine).await;
    let sb = match sb {
        Ok(sb) => sb,
        Err(e) => {
            remove_image(&host, &image).await;
            panic!("start failed: {e}");
        }
    };
    let id = sb.id().to_string();

    // The inner engine, reached from here over mutual TLS, holds the seeded image and runs it.
    let docker = sb.docker().await.unwrap();
    let images = docker.list_images(None::<qp::ListImagesOptions>).await.unwrap();
    assert!(images.iter().any(|i| i.repo_tags.contains(&image)), "{image} not in {images:?}");
    let name = format!("inner-{t}");
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        cmd: Some(vec!["echo".into(), "hello from inside".into()]),
        ..Default::default()
    };
    docker.create_container(Some(qp::CreateContainerOptions { name: Some(name.clone()), ..Default::default() }), body).await.unwrap();
    docker.start_container(&name, None::<qp::StartContainerOptions>).await.unwrap();
    let mut wait = docker.wait_container(&name, None::<qp::WaitContainerOptions>);
    assert_eq!(wait.next().await.unwrap().unwrap().status_code, 0);
    let logs: Vec<String> =
        docker.logs(&name, Some(qp::LogsOptions { stdout: true, ..Default::default() })).map(|l| l.unwrap().to_string()).collect().await;
    assert_eq!(logs.concat(), "hello from inside\n");
    // Not on the host engine: the sandbox is its own engine.
    assert!(host.inspect_container(&name, None::<qp::InspectContainerOptions>).await.is_err());

    // exec: the exit code and both streams, captured.
    let out = sb.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]).await.unwrap();
    assert_eq!((out.code, out.stdout_text().as_str(), out.stderr_text().as_str()), (3, "out\n", "err\n"));
    let info = sb.exec(["docker", "info", "--format", "{{.Images}}"]).await.unwrap();
    assert!(info.success(), "{info:?}");
    assert_eq!(info.stdout_text().trim(), "1");
    let env = sb.docker_env().await.unwrap();
    let cert_dir = std::path::PathBuf::from(&env.iter().find(|(k, _)| k == "DOCKER_CERT_PATH").unwrap().1);
    assert!(cert_dir.join("key.pem").exists());

    sb.rm().await.unwrap();
    remove_image(&host, &image).await;
    assert_eq!(leftovers(&host, &id).await, Vec::<String>::new());
    assert!(!cert_dir.exists(), "the client certificate directory outlived its sandbox");
}

/// `publish` makes an inner container's port reachable on the host's 127.0.0.1, reported by
/// `host_access` with the real host port; the certificate directory is private, in didx's
/// cache, and goes when the sandbox is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_reaches_an_inner_container_and_host_access_reports_it() {
    use std::os::unix::fs::PermissionsExt;
    let host = host();
    let t = tag("publish");
    let image = busybox(&host, "didx-libtest-bb", &t).await;
    let engine = engine().await;
    let sb = Sandbox::builder().publish("8080").load(&image).start(&engine).await;
    remove_image(&host, &image).await;
    let sb = sb.expect("start");
    let id = sb.id().to_string();
    let access = sb.host_access().await.unwrap();
    assert_eq!(access.id, id);
    assert!(access.docker_host.starts_with("tcp://127.0.0.1:"), "{access:?}");
    assert!(access.cert_path.ends_with(format!("env/{id}")), "{access:?}");
    assert_eq!(std::fs::metadata(&access.cert_path).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(access.cert_path.join("key.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    let [p] = &access.published[..] else { panic!("{access:?}") };
    assert_eq!((p.ip.as_str(), p.env_port), ("127.0.0.1", 8080));
    assert_ne!(p.host_port, 0);

    let docker = sb.docker().await.unwrap();
    let reply = serve_and_fetch(&docker, &image, &format!("web-{t}"), 8080, "lib-published", p.host_addr()).await;
    assert!(reply.contains("lib-published"), "{reply}");

    let dir = access.cert_path.clone();
    drop(sb);
    assert_eq!(leftovers(&host, &id).await, Vec::<String>::new());
    assert!(!dir.exists(), "the certificate directory outlived its sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_removes_and_keep_keeps() {
    let host = host();
    let engine = engine().await;
    // Podman drops anonymous volumes' labels: the server's storage is not found by them there.
    let labelled = if engine.is_podman() {
        eprintln!("Podman: anonymous volumes carry no labels; the server's storage is not counted");
        2
    } else {
        3
    };
    let sb = Sandbox::builder().start(&engine).await.unwrap();
    let id = sb.id().to_string();
    assert_eq!(leftovers(&host, &id).await.len(), labelled, "server, client and the server's storage");
    drop(sb);
    assert_eq!(leftovers(&host, &id).await, Vec::<String>::new());

    let mut kept = Sandbox::builder().start(&engine).await.unwrap();
    let id = kept.id().to_string();
    kept.keep().await.unwrap();
    drop(kept);
    let left = leftovers(&host, &id).await;
    assert_eq!(left.len(), labelled, "a kept sandbox stays: {left:?}");
    didx::inventory::remove(&engine, &id).await.unwrap();
    assert_eq!(leftovers(&host, &id).await, Vec::<String>::new());
}

/// The check a start runs on a rootless engine (that the inner engine starts a container) passes
/// where the inner engine can, and leaves it as empty as it found it. Run here in the client,
/// whose docker CLI reaches the same inner engine (the start runs it in the server, and only on
/// a rootless engine: the VM lane's rootless plan covers that and the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inner_engine_check_runs_a_container_and_leaves_the_engine_empty() {
    let host = host();
    let engine = engine().await;
    let sb = Sandbox::builder().start(&engine).await.unwrap();
    let id = sb.id().to_string();
    let out = sb.exec(["sh", "-c", didx::INNER_CHECK]).await.unwrap();
    assert_eq!(out.code, 0, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let d = sb.docker().await.unwrap();
    let images = d.list_images(None::<qp::ListImagesOptions>).await.unwrap();
    let containers = d.list_containers(Some(qp::ListContainersOptions { all: true, ..Default::default() })).await.unwrap();
    assert!(images.is_empty() && containers.is_empty(), "left in the inner engine: {images:?} {containers:?}");
    // Where the server has no docker-init: /bin/true and its libraries.
    let without_init = didx::INNER_CHECK.replace("command -v docker-init", "command -v didx-no-such-init");
    assert_ne!(without_init, didx::INNER_CHECK);
    let out = sb.exec(["sh", "-c", &without_init]).await.unwrap();
    assert_eq!(out.code, 0, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    // A container that cannot start makes it fail, saying why: here a program the image lacks.
    let broken = didx::INNER_CHECK.replace("\"$img\" \"$@\"", "\"$img\" /bin/no-such-program");
    assert_ne!(broken, didx::INNER_CHECK);
    let out = sb.exec(["sh", "-c", &broken]).await.unwrap();
    assert_ne!(out.code, 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-program"), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    sb.rm().await.unwrap();
    assert_eq!(leftovers(&host, &id).await, Vec::<String>::new());
}

/// Drop inside a single-threaded runtime (a plain #[tokio::test]) must neither panic nor
/// deadlock, and still removes.
#[tokio::test]
async fn drop_in_a_current_thread_runtime_removes() {
    let host = host();
    let engine = engine().await;
    let sb = Sandbox::builder().start(&engine).await.unwrap();
    let id = sb.id().to_string();
    drop(sb);
    assert_eq!(leftovers(&host, &id).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sandboxes_do_not_see_each_others_images() {
    let host = host();
    let t = tag("two");
    let image = busybox(&host, "didx-libtest-bb", &t).await;
    let engine = engine().await;
    let (a, b) = tokio::join!(Sandbox::builder().load(&image).start(&engine), Sandbox::builder().start(&engine));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ida, idb) = (a.id().to_string(), b.id().to_string());
    let tags = |d: bollard::Docker| async move {
        d.list_images(None::<qp::ListImagesOptions>).await.unwrap().into_iter().flat_map(|i| i.repo_tags).collect::<Vec<_>>()
    };
    assert_eq!(tags(a.docker().await.unwrap()).await, vec![image.clone()]);
    assert_eq!(tags(b.docker().await.unwrap()).await, Vec::<String>::new());
    // Each client's certificate opens its own engine only.
    let (ea, eb) = (a.docker_env().await.unwrap(), b.docker_env().await.unwrap());
    assert_ne!(ea[0].1, eb[0].1);
    let (ra, rb) = tokio::join!(a.rm(), b.rm());
    ra.unwrap();
    rb.unwrap();
    remove_image(&host, &image).await;
    assert_eq!(leftovers(&host, &ida).await, Vec::<String>::new());
    assert_eq!(leftovers(&host, &idb).await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_options_are_errors_before_anything_starts() {
    let engine = engine().await;
    for (b, what) in [
        (Sandbox::builder().copy("no-colon"), "--cp spec"),
        (Sandbox::builder().volume("relative/target"), "-v"),
        (Sandbox::builder().server_version("bad version"), "--sv"),
        (Sandbox::builder().dockerd_opts("--unbalanced 'quote"), "--dkropts"),
        (Sandbox::builder().load("didx-libtest-no-such-image:nope"), "--load"),
        (Sandbox::builder().publish("2376"), "--publish"),
        (Sandbox::builder().publish("8080:80").publish("8080:81"), "--publish"),
    ] {
        match b.start(&engine).await {
            Err(e @ Error::Invalid { .. }) => {
                assert!(e.is_usage());
                assert!(e.to_string().contains(what), "{e} should name {what}");
            }
            Err(e) => panic!("expected Invalid naming {what}, got {e}"),
            Ok(sb) => {
                let _ = sb.rm().await;
                panic!("started with a bad {what}")
            }
        }
    }
}

/// Docker-outside-of-Docker from the library: no server, the client's docker is the host
/// engine (through didx's proxy), a client bind is translated to the host path, and `rm`
/// removes what the client started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_host_sandbox_drives_the_host_engine_with_translated_binds() {
    let host = host();
    let t = tag("dood");
    let dir = std::env::temp_dir().join(format!("didx-libtest-dood-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), &t).unwrap();
    let engine = engine().await;
    let sb =
        Sandbox::builder().engine(didx::spec::EngineMode::Host).volume(format!("{}:/src", dir.display())).start(&engine).await.unwrap();
    let id = sb.id().to_string();
    assert_eq!(sb.server_name(), None);
    assert!(matches!(sb.docker().await, Err(Error::NoInnerEngine { .. })));
    let name = format!("dood-lib-{t}");
    let out =
        sb.exec(["docker", "run", "--name", &name, "-v", "/src:/in", "--entrypoint", "cat", "didx/dind:local", "/in/f"]).await.unwrap();
    assert_eq!((out.code, out.stdout_text()), (0, t.clone()), "{out:?}");
    // On the host engine, labelled with the sandbox.
    let inspect = host.inspect_container(&name, None::<qp::InspectContainerOptions>).await.unwrap();
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get("io.didx.env"), Some(&id));
    sb.rm().await.unwrap();
    assert!(host.inspect_container(&name, None::<qp::InspectContainerOptions>).await.is_err(), "removed with the sandbox");
    assert!(leftovers(&host, &id).await.is_empty(), "{:?}", leftovers(&host, &id).await);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `Sandbox::copy_in` and `copy_out` on a running sandbox: a tree in, changed there, its
/// contents out into a fresh directory (made), a file out *as* a named path; a missing client
/// path is an error that writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_into_a_running_sandbox_and_come_back_out() {
    let engine = engine().await;
    let sb = Sandbox::builder().start(&engine).await.expect("start");
    let id = sb.id().to_string();
    let here = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(here.path().join("src/deep")).unwrap();
    std::fs::write(here.path().join("src/deep/a.txt"), "a\n").unwrap();
    sb.copy_in(here.path().join("src"), "/work/").await.unwrap();
    let out = sb.exec(["sh", "-c", "cat /work/src/deep/a.txt && echo b > /work/src/b.txt"]).await.unwrap();
    assert_eq!((out.code, out.stdout_text().as_str()), (0, "a\n"), "{out:?}");
    let back = here.path().join("back");
    sb.copy_out("/work/src/.", &back).await.unwrap();
    assert_eq!(std::fs::read_to_string(back.join("deep/a.txt")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(back.join("b.txt")).unwrap(), "b\n");
    sb.copy_out("/work/src/b.txt", here.path().join("named.txt")).await.unwrap();
    assert_eq!(std::fs::read_to_string(here.path().join("named.txt")).unwrap(), "b\n");
    assert!(sb.copy_out("/work/none", here.path().join("none")).await.is_err());
    assert!(!here.path().join("none").exists());
    assert!(sb.copy_out("relative", here.path()).await.unwrap_err().is_usage());
    sb.rm().await.unwrap();
    assert_eq!(leftovers(&host(), &id).await, Vec::<String>::new());
}
