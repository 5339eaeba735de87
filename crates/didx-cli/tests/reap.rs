//! Reaping when the whole invocation dies (didx and its helper process, as a CI runner killing
//! a job's cgroup does) after a command attacked the lease: a command that kills every process
//! it can see (`kill -9 -1`, or every `sh` but itself) cannot keep its environment past didx;
//! what a `--engine host` client started is removed by the environment's reaper with no later
//! didx call; another didx's sweep never takes what a live `--engine host` run created; and a
//! run the pool served, killed the moment its commands are done, leaves nothing after 2 s.
//! Each test asserts the engine is left as found.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The reaping allowance the book promises ("within ~5 s", docs/src/concepts/cleanup.md).
const REAP: Duration = Duration::from_secs(5);

/// Spawn didx in a process group of its own with stderr piped; return the child once a line
/// starting with `marker` appears on stderr, with the environment id named before it and what
/// it said.
fn spawn_until(args: &[&str], marker: &str) -> (Child, String, String) {
    let mut child = didx_cmd(args).process_group(0).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn didx");
    let mut seen = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with(marker) {
            let id = env_id_in(&seen).unwrap_or_else(|| panic!("no environment id before {marker:?}:\n{seen}"));
            std::thread::spawn(move || for _ in lines {});
            return (child, id, seen);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("didx never said {marker:?}:\n{seen}");
}

/// The pids whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// SIGKILL the whole invocation at once: didx's helper (a child that left the process group)
/// and didx's process group. Asserts a helper was there to kill, so a test cannot pass by the
/// helper's clean-up rather than the leases.
fn kill_invocation(child: &mut Child) {
    let helpers = children_of(child.id());
    assert!(!helpers.is_empty(), "didx forked no helper process");
    let status = kill_all(child, &helpers);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

/// SIGKILL `helpers` and `child`'s process group (which it leads; ESRCH once gone), then reap
/// `child`.
fn kill_all(child: &mut Child, helpers: &[i32]) -> std::process::ExitStatus {
    for h in helpers {
        // SAFETY: kill(2) on a child of our own child.
        unsafe { libc::kill(*h, libc::SIGKILL) };
    }
    // SAFETY: kill(2) on the process group of our own child.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap()
}

/// The count a command printed as `killed=N` on stderr.
fn killed(seen: &str) -> usize {
    seen.lines().find_map(|l| l.strip_prefix("killed=")?.trim().parse().ok()).unwrap_or_else(|| panic!("no killed= line:\n{seen}"))
}

#[test]
fn a_command_that_kills_every_process_cannot_keep_its_environment_past_didx() {
    // kill -9 -1 reaches every process of the client's PID namespace but PID 1 and the caller:
    // the lease's reader among them. Then the command blocks and the whole invocation is killed.
    // (The client runs PID 1, the lease's reader, an idle sleep and this command: kill(-1)
    // succeeding means it signalled all but PID 1 and itself.)
    let cmd = "sh -c 'kill -9 -1 && echo killed=1 >&2; sleep 120'";
    let (mut child, id, seen) = spawn_until(&["--clean", "anycase", cmd], "killed=");
    kill_invocation(&mut child);
    gone_within(&id, scaled(REAP));
    assert!(killed(&seen) >= 1, "the command killed nothing: {seen}");
}

#[test]
fn a_command_that_kills_every_shell_cannot_keep_its_environment_past_didx() {
    // `pkill sh; pkill entrypoint` (the image has no pkill): every shell in the client but PID 1
    // and this one, by name; the lease's reader is a fork of PID 1's `entrypoint` script.
    let cmd = r#"sh -c 'n=0; for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = 1 ] || [ "$p" = $$ ] && continue; case "$(cat $d/comm 2>/dev/null)" in sh|entrypoint) kill -9 "$p" && n=$((n + 1)) ;; esac; done; echo killed=$n >&2; sleep 120'"#;
    let (mut child, id, seen) = spawn_until(&["--clean", "anycase", cmd], "killed=");
    kill_invocation(&mut child);
    gone_within(&id, scaled(REAP));
    assert!(killed(&seen) >= 1, "the command killed no shell: {seen}");
}

/// The image the client's own `docker run`s use (the offline image, its entrypoint replaced).
const IMG: &str = "didx/dind:local";

#[test]
fn what_a_host_engine_client_started_is_gone_within_the_bound_when_the_whole_invocation_is_killed() {
    let tag = format!("reap-host-{}-{}", std::process::id(), now_secs());
    let run = format!("docker run -d --name {tag}-run --entrypoint sleep {IMG} 1000");
    let create = format!("docker create --name {tag}-created --entrypoint true {IMG}");
    let vol = format!("docker volume create {tag}-vol");
    let net = format!("docker network create {tag}-net");
    let done = "sh -c 'echo host-started=1 >&2; sleep 120'";
    let (mut child, id, _) = spawn_until(&["--engine", "host", "--clean", "anycase", &run, &create, &vol, &net, done], "host-started=");
    let left = rt().block_on(leftovers(Some(&id)));
    // Another didx start's sweep may remove what a gone client started too: the reaper's own
    // log says it acted.
    let said = follow_log(&format!("dind_{id}_reaper"));
    kill_invocation(&mut child);
    // No later didx call: the environment's reaper alone.
    gone_within(&id, scaled(REAP));
    for what in ["-run", "-created", "-vol", "-net"] {
        assert!(left.iter().any(|l| l.contains(&format!("{tag}{what}"))), "the client made {tag}{what}: {left:?}");
    }
    let said = said.join().unwrap();
    assert!(said.contains(&format!("lease lost: removing what environment {id} holds")), "the reaper said: {said:?}");
}

/// Follow `container`'s log in a thread until the container ends: what it said.
fn follow_log(container: &str) -> std::thread::JoinHandle<String> {
    use futures_util::StreamExt;
    let container = container.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        rt().block_on(async {
            let docker = bollard::Docker::connect_with_local_defaults().unwrap();
            let opts = bollard::query_parameters::LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
            let mut logs = docker.logs(&container, Some(opts));
            let mut out = String::new();
            // Polled once so the request is made before the caller goes on (the reaper is
            // silent until its lease ends).
            if let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_millis(500), logs.next()).await {
                out.push_str(&chunk.to_string());
            }
            tx.send(()).unwrap();
            while let Some(Ok(chunk)) = logs.next().await {
                out.push_str(&chunk.to_string());
            }
            out
        })
    });
    rx.recv().unwrap();
    t
}

#[test]
fn a_live_host_engine_run_s_old_never_started_container_survives_another_start_s_sweep() {
    // The sweep's age is lowered for the sweeping run only (DIDX_SWEEP_AFTER_SECS), so that
    // what it must leave is old to it but young to the sweeps of other didx processes on this
    // shared engine (a minute). The live run's client makes a never-started container itself,
    // through the proxy; a decoy of the same age whose environment has no container at all
    // must be taken.
    const AGE: u64 = 20;
    let tag = format!("reap-sweep-{}-{}", std::process::id(), now_secs());
    let live_create = format!("{tag}-live");
    let create = format!("docker create --name {live_create} --entrypoint true {IMG}");
    let (mut child, id, _) =
        spawn_until(&["--engine", "host", "--clean", "anycase", &create, "sh -c 'echo live=1 >&2; sleep 120'"], "live=");
    let decoy_env = format!("gone{}", std::process::id());
    let decoy = format!("{tag}-decoy");
    rt().block_on(async {
        let body = bollard::models::ContainerCreateBody {
            image: Some(IMG.into()),
            entrypoint: Some(vec!["true".into()]),
            labels: Some(didx::labels::for_resource(&decoy_env, didx::labels::Role::Client, now_secs())),
            ..Default::default()
        };
        engine().await.create_container(&decoy, body).await.unwrap();
    });
    std::thread::sleep(Duration::from_secs(AGE + 1));
    // Another start: its sweep runs beside its launch and is done when it ends.
    let age = AGE.to_string();
    let other = from_output(
        didx_cmd(&["--engine", "host", "--clean", "anycase", "true"]).env("DIDX_SWEEP_AFTER_SECS", &age).output().expect("run didx"),
    );
    let exists = |name: &str| rt().block_on(async { engine().await.inspect_if_exists(name).await.unwrap().is_some() });
    let (live_kept, decoy_kept) = (exists(&live_create), exists(&decoy));
    kill_invocation(&mut child);
    gone_within(&id, scaled(REAP));
    rt().block_on(async { didx::env::remove(&engine().await, &decoy_env).await.unwrap() });
    assert_eq!(other.code, 0, "{}", other.show());
    assert_gone(&other.env_id().expect("env id"));
    assert!(!decoy_kept, "the sweep did not run: an abandoned create stayed");
    assert!(live_kept, "the sweep took a live run's container");
    assert_gone(&decoy_env);
}

#[test]
fn a_pooled_claim_whose_command_kills_every_process_cannot_keep_its_environment_past_didx() {
    let _pool = OwnPool::new("reap-claim");
    // A pool of its own (other dockerd options make another key), with no idle timeout. A
    // claim holds server and client by an exec each; the command kills the client's (and
    // every other process of the client but PID 1); the server's holds it, and the client
    // follows its server.
    let opts = ["--dkropts", "--label=didx-test=reap-claim"];
    let up = didx(&["pool", "up", "1", "--events", "json", "--idle-timeout", "0", opts[0], opts[1]]);
    assert_eq!(up.code, 0, "{}", up.show());
    let pooled = up.pool_ready().pop().expect("an id");
    let cmd = "sh -c 'kill -9 -1 && echo killed=1 >&2; sleep 120'";
    let (mut child, id, _) = spawn_until(&["--pool", "--clean", "anycase", opts[0], opts[1], cmd], "killed=");
    let claimed = id == pooled;
    kill_invocation(&mut child);
    let reaped = std::panic::catch_unwind(|| gone_within(&id, scaled(REAP)));
    // The refill the claim asked for (its helper killed with the run, it ends itself, or is
    // removed here): only this pool's environments, found by their dockerd option.
    remove_pool_with_option(opts[1]);
    assert!(claimed, "the run claimed {id}, not the pooled {pooled}");
    if let Err(e) = reaped {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_pooled_run_killed_right_after_its_commands_leaves_nothing_within_2_s() {
    let _pool = OwnPool::new("reap-ending");
    // A run the pool served ends by its lease once its commands are done. Killed as its last
    // command ends (its last line seen: didx is then ending the leases itself, or has, or has
    // returned), the environment must be gone within the same 2 s as when it returns.
    let opts = ["--dkropts", "--label=didx-test=reap-ending"];
    let up = didx(&["pool", "up", "1", "--events", "json", "--idle-timeout", "0", opts[0], opts[1]]);
    assert_eq!(up.code, 0, "{}", up.show());
    let pooled = up.pool_ready().pop().expect("an id");
    let args = ["--pool", "--clean", "anycase", opts[0], opts[1], "sh -c 'echo ended=1 >&2'"];
    let (mut child, id, said) = spawn_until(&args, "ended=");
    kill_what_is_left(&mut child);
    let ended = std::panic::catch_unwind(|| gone_within(&id, scaled(ENDING_WITHIN)));
    remove_pool_with_option(opts[1]);
    assert_eq!(id, pooled, "the run did not take the pooled environment:\n{said}");
    if let Err(e) = ended {
        std::panic::resume_unwind(e);
    }
}

/// SIGKILL what is left of an invocation that may be ending by itself: its helper, if any, and
/// its process group (gone already is fine).
fn kill_what_is_left(child: &mut Child) {
    let helpers = children_of(child.id());
    kill_all(child, &helpers);
}

/// Remove every environment of the pool whose servers were given dockerd `option` (the
/// refill a claim queued included), waiting a while for one still starting.
fn remove_pool_with_option(option: &str) {
    let deadline = Instant::now() + scaled(Duration::from_secs(90));
    loop {
        let mine = rt().block_on(pool_envs_with_option(option));
        if mine.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "this pool's environments stay: {mine:?}");
        for env in &mine {
            rt().block_on(async { didx::env::remove(&engine().await, env).await.unwrap() });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The environments of pooled servers whose dockerd was given `option`.
async fn pool_envs_with_option(option: &str) -> Vec<String> {
    let e = engine().await;
    let filter = std::collections::HashMap::from([("label".to_string(), vec![didx::labels::POOL.to_string()])]);
    let mut out = Vec::new();
    for c in e.containers(filter).await.unwrap() {
        let Some(i) = e.inspect_if_exists(c.id.as_deref().unwrap()).await.unwrap() else { continue };
        if i.args.unwrap_or_default().iter().any(|a| a == option) {
            out.extend(c.labels.and_then(|mut l| l.remove(didx::labels::ENV)));
        }
    }
    out
}

#[test]
fn a_kept_host_engine_environment_releases_its_reaper_and_keeps_what_the_client_started() {
    // `--clean failure` whose commands succeed keeps the environment: the reaper's lease is
    // released (it ends, removing nothing), the client and what it started stay.
    let tag = format!("reap-kept-{}-{}", std::process::id(), now_secs());
    let run = format!("docker run -d --name {tag}-run --entrypoint sleep {IMG} 1000");
    let r = didx(&["--engine", "host", "--clean", "failure", &run]);
    let id = r.env_id().expect("env id");
    let deadline = Instant::now() + scaled(REAP);
    let left = loop {
        let left = rt().block_on(leftovers(Some(&id)));
        if !left.iter().any(|l| l.contains("_reaper")) || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(!left.iter().any(|l| l.contains("_reaper")), "the released reaper stays: {left:?}");
    assert!(left.iter().any(|l| l.contains(&format!("{tag}-run"))), "what the client started is kept: {left:?}");
    assert!(left.iter().any(|l| l.contains("_client_")), "the client is kept: {left:?}");
    assert_gone(&id);
}
