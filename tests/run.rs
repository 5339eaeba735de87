//! End-to-end behaviour of `didx [OPTIONS] COMMAND...` on the real engine: clean policies,
//! exit codes, command forms, TLS, isolation, signals, rollback. Each test asserts that the
//! engine holds nothing of its environment afterwards.

mod common;

use common::*;

#[test]
fn anycase_removes_after_success_and_after_failure() {
    let ok = didx(&["--clean", "anycase", "version"]);
    with_cleanup(ok, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("Server:"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    let fail = didx(&["--clean", "anycase", r#"sh -c "exit 3""#]);
    with_cleanup(fail, |r| {
        assert_eq!(r.code, 3, "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn success_policy_removes_only_after_success() {
    with_cleanup(didx(&["--clean", "success", "true"]), |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    with_cleanup(didx(&["--clean", "success", "false"]), |r| {
        assert_eq!(r.code, 1, "{}", r.show());
        assert!(r.stderr.contains("remains running"), "{}", r.show());
        assert_running_then_remove(&r.env_id().unwrap());
    });
}

#[test]
fn failure_policy_removes_only_after_failure() {
    with_cleanup(didx(&["--clean", "failure", "true"]), |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert_running_then_remove(&r.env_id().unwrap());
    });
    with_cleanup(didx(&["--clean", "failure", "false"]), |r| {
        assert_eq!(r.code, 1, "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn none_policy_leaves_both_running_with_no_commands() {
    // didx.sh's Ex1: no COMMAND, default --clean none.
    with_cleanup(didx(&[]), |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("remains running"), "{}", r.show());
        assert_running_then_remove(&r.env_id().unwrap());
    });
}

#[test]
fn first_failure_stops_the_rest_and_its_code_is_didx_s() {
    let r = didx(&["--clean", "anycase", "echo one", r#"sh -c "echo two; exit 7""#, "echo three"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 7, "{}", r.show());
        assert!(r.stdout.contains("one") && r.stdout.contains("two"), "{}", r.show());
        assert!(!r.stdout.contains("three"), "{}", r.show());
        assert!(r.stderr.contains("[2/3] failed with exit code 7"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn words_are_split_like_posix_sh_without_host_expansion() {
    let r = didx(&["--clean", "anycase", r#"sh -c 'echo "[$0]" "$HOME"' 'a b'"#, "echo $HOME"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("[a b] /root"), "{}", r.show());
        assert!(r.stdout.contains("$HOME"), "host must not expand: {}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn docker_exec_form_runs_on_the_host_with_the_client_name() {
    let r = didx(&[
        "--clean",
        "anycase",
        r#"docker exec $DIND_CLIENT_NAME sh -c "echo in-client; docker info --format '{{.Images}} images'""#,
        "--cv-env",
        "MYCLIENT",
    ]);
    // With --cv-env MYCLIENT, $DIND_CLIENT_NAME is empty and docker exec fails.
    with_cleanup(r, |r| {
        assert_ne!(r.code, 0, "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    let r = didx(&[
        "--clean",
        "anycase",
        "--cv-env",
        "MYCLIENT",
        r#"docker exec $MYCLIENT sh -c "echo in-client; docker info --format '{{.Images}} images'""#,
    ]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("in-client") && r.stdout.contains("0 images"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn inner_engine_requires_the_client_certificate() {
    // From the client: with its certificate it works; plain TCP and TLS without a client
    // certificate are refused.
    let r = didx(&[
        "--clean",
        "none",
        "docker version --format ok-{{.Server.Version}}",
        r#"sh -c "! env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker -H tcp://docker:2376 version""#,
        r#"sh -c "! env -u DOCKER_CERT_PATH -u DOCKER_TLS_VERIFY docker -H tcp://docker:2376 --tlsverify --tlscacert /certs/client/ca.pem version 2>/tmp/e; cat /tmp/e; grep -q 'bad certificate' /tmp/e""#,
    ]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("ok-20"), "{}", r.show());
        let id = r.env_id().unwrap();
        let server = format!("dind_{id}_server_latest");
        // A separate container in the server's network namespace that trusts the CA but has
        // no client certificate.
        let code = rt().block_on(async {
            let e = engine().await;
            let body = bollard::models::ContainerCreateBody {
                image: Some(didx::images::LOCAL_IMAGE.into()),
                entrypoint: Some(
                    ["docker", "-H", "tcp://docker:2376", "--tlsverify", "--tlscacert", "/ca.pem", "version"]
                        .map(String::from)
                        .to_vec(),
                ),
                labels: Some(didx::labels::for_resource(&id, didx::labels::Role::Client, 0)),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some(format!("container:{server}")),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let c = e.create_container(&format!("didx_test_nocert_{id}"), body).await.unwrap();
            let chunks: Vec<bytes::Bytes> =
                futures_util::TryStreamExt::try_collect(e.download(&server, "/didx/certs/server/ca.pem")).await.unwrap();
            let ca: Vec<u8> = chunks.concat();
            e.upload(&c, "/", ca).await.unwrap();
            e.start(&c).await.unwrap();
            let code = e.wait(&c).await.unwrap();
            let logs = e.logs_tail(&c, 50).await.unwrap();
            assert!(logs.contains("bad certificate"), "{logs}");
            code
        });
        assert_ne!(code, 0);
        rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
        assert_gone(&id);
    });
}

#[test]
fn inner_engine_is_isolated_empty_and_runs_limited_containers() {
    let tag = format!("didx-test-inner:{}", std::process::id());
    let make_image = format!("didx-busybox-image {tag}");
    let limited = format!(
        r#"run --rm --memory 64m {tag} sh -c "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max""#
    );
    let r = didx(&[
        "--clean",
        "anycase",
        r#"sh -c "test -z \"$(docker images -q)\" && test -z \"$(docker ps -aq)\" && echo started-empty""#,
        &make_image,
        &limited,
    ]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("started-empty"), "{}", r.show());
        assert!(r.stdout.contains("67108864"), "64m limit not applied: {}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    let on_host = rt().block_on(async { engine().await.image(&tag).await.unwrap() });
    assert!(on_host.is_none(), "inner image leaked to the host engine");
}

#[test]
fn readme_ex4_runs_offline() {
    let r = didx(&[
        "--clean",
        "anycase",
        "didx-busybox-image busybox",
        "images",
        "run -dit --name busybox_container busybox sh",
        "ps",
        "stop -t 1 busybox_container",
    ]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("busybox_container") && r.stdout.contains("Up "), "{}", r.show());
        assert_eq!(r.stderr.matches("succeeded").count(), 5, "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn privileged_refusal_falls_back_once_and_is_remembered() {
    let cache = tempdir("fallback");
    let run = |args: &[&str]| from_output(didx_cmd(args).env("DIDX_CACHE_DIR", &cache).output().unwrap());
    let first = run(&["--clean", "anycase", "version"]);
    let privileged_works = first.stderr.contains("privileged isolation");
    with_cleanup(first, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        if !privileged_works {
            assert_eq!(r.stderr.matches("refuses --privileged").count(), 1, "{}", r.show());
            assert!(r.stderr.contains("caps isolation"), "{}", r.show());
        }
        assert_gone(&r.env_id().unwrap());
    });
    with_cleanup(run(&["--clean", "anycase", "version"]), |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(!r.stderr.contains("refuses --privileged"), "not remembered: {}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    if !privileged_works {
        // Forcing privileged where it is refused fails cleanly and leaves nothing.
        with_cleanup(run(&["--isolation", "privileged", "--clean", "anycase", "version"]), |r| {
            assert_eq!(r.code, 125, "{}", r.show());
            assert!(r.stderr.contains("refuses --privileged") && r.stderr.contains("--isolation"), "{}", r.show());
            assert_gone(&r.env_id().unwrap());
        });
    }
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_failed_pull_of_a_mapped_image_is_not_retried_for_a_while() {
    // docker:0.0.1-didxtest-dind exists nowhere, so its pull fails online and offline alike.
    let cache = tempdir("pullcache");
    let run = |args: &[&str]| from_output(didx_cmd(args).env("DIDX_CACHE_DIR", &cache).output().unwrap());
    let args = ["--sv", "0.0.1-didxtest", "--clean", "anycase", "true"];
    with_cleanup(run(&args), |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("cannot be pulled") && !r.stderr.contains("not retried"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    with_cleanup(run(&args), |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("not retried for 10 min, --pull retries now"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    let mut pulled = args.to_vec();
    pulled.insert(0, "--pull");
    with_cleanup(run(&pulled), |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("cannot be pulled") && !r.stderr.contains("not retried"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn failed_start_is_rolled_back() {
    // dockerd refuses an unknown flag and exits: didx reports its log and removes everything.
    with_cleanup(didx(&["--clean", "none", "--dkropts", "--no-such-dockerd-flag", "version"]), |r| {
        assert_eq!(r.code, 125, "{}", r.show());
        assert!(r.stderr.contains("exited") && r.stderr.contains("no-such-dockerd-flag"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    // The inner engine cannot answer within 1 ms.
    with_cleanup(didx(&["--clean", "none", "--ready-timeout", "1ms", "version"]), |r| {
        assert_eq!(r.code, 125, "{}", r.show());
        assert!(r.stderr.contains("did not answer"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

fn tempdir(tag: &str) -> String {
    let d = std::env::temp_dir().join(format!("didx-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.display().to_string()
}

mod signals {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    /// Start didx, wait until its stderr shows `marker`, send `sig`, return the run.
    fn interrupt_at(args: &[&str], marker: &str, sig: i32) -> Run {
        let mut child = didx_cmd(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap();
                tx.send(line.clone()).ok();
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = rx.recv_timeout(deadline - Instant::now()).expect("marker never appeared");
            if line.contains(marker) {
                break;
            }
        }
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        let stderr = reader.join().unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        Run { code: status.code().unwrap_or(-1), stdout, stderr }
    }

    #[test]
    fn sigint_during_a_command_cleans_up_as_a_failure() {
        let r = interrupt_at(&["--clean", "failure", "sleep 600"], "[1/1]", libc::SIGINT);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 130, "{}", r.show());
            assert_gone(&r.env_id().unwrap());
        });
    }

    #[test]
    fn sigterm_counts_as_failure_so_success_policy_keeps_the_environment() {
        let r = interrupt_at(&["--clean", "success", "sleep 600"], "[1/1]", libc::SIGTERM);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 143, "{}", r.show());
            assert_running_then_remove(&r.env_id().unwrap());
        });
    }

    #[test]
    fn sigint_while_starting_removes_what_was_created() {
        let r = interrupt_at(&["--clean", "none", "version"], "server named", libc::SIGINT);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 130, "{}", r.show());
            assert!(r.stderr.contains("interrupted"), "{}", r.show());
            assert_gone(&r.env_id().unwrap());
        });
    }
}

#[test]
fn timings_name_every_phase_in_order() {
    let r = didx(&["--timings", "--clean", "anycase", "version"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        let phases: Vec<(String, u64)> = r
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix("didx: timing "))
            .map(|l| {
                let (p, ms) = l.split_once(' ').unwrap();
                (p.to_string(), ms.parse().unwrap())
            })
            .collect();
        let names: Vec<&str> = phases.iter().map(|(p, _)| p.as_str()).collect();
        for want in ["connected", "resolved", "server-started", "client-started", "ready", "commands-done", "removed"] {
            assert!(names.contains(&want), "{want} missing: {}", r.show());
        }
        assert!(phases.windows(2).all(|w| w[0].1 <= w[1].1), "not in time order: {phases:?}");
        assert_eq!(names.last(), Some(&"removed"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}
