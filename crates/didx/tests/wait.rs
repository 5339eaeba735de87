//! `didx::wait` on a sandbox's inner engine, as a user's test uses it: inner containers started
//! with bollard through `Sandbox::docker`, each wait met, timed out (saying what it last saw)
//! and failing fast (an exit, an unhealthy check, a missing probe tool); logs followed; a
//! second container reaching a first by a network alias. One sandbox for the lot (a start costs
//! seconds), its cases run side by side; the host engine is left as found. Needs a Docker
//! engine and didx/dind:local (`bash scripts/setup.sh`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig};
use bollard::query_parameters as qp;
use common::*;
use didx::wait::{self, LogLine, LogStream, WaitFor, wait_for, wait_for_all};
use didx::{Engine, Error, Sandbox};

/// Long enough never to pass in a healthy run: a wait that must fail fast is given this, and
/// its error (not a timeout) shows it did.
const LONG: Duration = Duration::from_secs(600);
/// A wait that must time out is given this.
const SHORT: Duration = Duration::from_secs(2);
/// A wait that must be met is given this.
const ENOUGH: Duration = Duration::from_secs(60);

/// Create and start inner container `name` from `body`.
async fn start(docker: &Docker, name: &str, body: ContainerCreateBody) {
    create(docker, name, body).await;
    docker.start_container(name, None::<qp::StartContainerOptions>).await.unwrap();
}

async fn create(docker: &Docker, name: &str, body: ContainerCreateBody) {
    let opts = qp::CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
    docker.create_container(Some(opts), body).await.unwrap();
}

/// A body running `script` with busybox's sh.
fn sh(image: &str, script: &str) -> ContainerCreateBody {
    ContainerCreateBody { image: Some(image.to_string()), cmd: Some(vec!["sh".into(), "-c".into(), script.into()]), ..Default::default() }
}

/// A body serving `text` as /index.html over HTTP on port 8080 (busybox httpd).
fn web(image: &str, text: &str) -> ContainerCreateBody {
    sh(image, &format!("busybox mkdir -p /www && echo {text} > /www/index.html && echo serving && exec busybox httpd -f -p 8080 -h /www"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_inner_containers_are_met_time_out_and_fail_fast() {
    let host = host();
    let t = tag("wait");
    let image = busybox(&host, "didx-libtest-wait", &t).await;
    let engine = Engine::connect_default().await.expect("a docker engine (bash scripts/setup.sh)");
    let sb = Sandbox::builder().load(&image).start(&engine).await;
    // Loaded into the sandbox: the host's copy goes now, so a failure below leaves none.
    remove_image(&host, &image).await;
    let sb = sb.expect("start");
    let id = sb.id().to_string();
    let docker = sb.docker().await.unwrap();

    tokio::join!(
        logs(&docker, &image),
        ports_and_http(&docker, &image),
        health(&docker, &image),
        exits_and_durations(&docker, &image),
        followed(&docker, &image),
        alias(&docker, &image),
    );

    sb.rm().await.unwrap();
    assert_eq!(leftovers(&host, &id).await, Vec::<String>::new());
    let left = host.list_images(Some(qp::ListImagesOptions { all: true, ..Default::default() })).await.unwrap();
    assert!(!left.iter().any(|i| i.repo_tags.contains(&image)), "{image} left on the host");
}

/// A log text: met on either stream, counted, on one stream; timed out naming the last lines;
/// failing fast when the container exits without it.
async fn logs(docker: &Docker, image: &str) {
    start(docker, "talker", sh(image, "echo starting; sleep 1; echo ready; echo ready >&2; exec sleep 600")).await;
    wait_for(docker, "talker", &WaitFor::log("ready"), ENOUGH).await.unwrap();
    wait_for(docker, "talker", &WaitFor::log_times("ready", 2), ENOUGH).await.unwrap();
    wait_for(docker, "talker", &WaitFor::message_on_stderr("ready"), ENOUGH).await.unwrap();

    match wait_for(docker, "talker", &WaitFor::log("never said"), SHORT).await {
        Err(Error::WaitTimedOut { container, condition, after, last_seen }) => {
            assert_eq!((container.as_str(), condition.as_str(), after), ("talker", "log text \"never said\"", SHORT));
            assert!(last_seen.contains("seen 0 times of 1") && last_seen.contains("starting\nready"), "{last_seen}");
        }
        other => panic!("a text never said: {other:?}"),
    }
    let twice_on_stdout = WaitFor::Log { text: "ready".into(), stream: Some(LogStream::Stdout), times: 2 };
    match wait_for(docker, "talker", &twice_on_stdout, SHORT).await {
        Err(e @ Error::WaitTimedOut { .. }) => assert!(e.to_string().contains("seen 1 times of 2"), "{e}"),
        other => panic!("once on stdout is not twice: {other:?}"),
    }

    start(docker, "crasher", sh(image, "echo booting; echo 'config missing' >&2; sleep 1; exit 3")).await;
    match wait_for(docker, "crasher", &WaitFor::log("ready"), LONG).await {
        Err(Error::ContainerExited { container, code, logs, .. }) => {
            assert_eq!((container.as_str(), code), ("crasher", 3));
            assert!(logs.contains("booting") && logs.contains("config missing"), "{logs}");
        }
        other => panic!("a container that exits without the text: {other:?}"),
    }
    // Said before it exited: met, exit or not.
    wait_for(docker, "crasher", &WaitFor::log("booting"), ENOUGH).await.unwrap();
}

/// A port and HTTP, probed inside the container: met, timed out with what listens or answers,
/// failing fast on an exit or on an image without the probe's tool.
async fn ports_and_http(docker: &Docker, image: &str) {
    start(docker, "web", web(image, "hello")).await;
    let ready = [WaitFor::port(8080), WaitFor::http(8080, "/index.html"), WaitFor::http_status(8080, "/missing", 404)];
    wait_for_all(docker, "web", &ready, ENOUGH).await.unwrap();

    match wait_for(docker, "web", &WaitFor::port(8081), SHORT).await {
        Err(Error::WaitTimedOut { condition, last_seen, .. }) => {
            assert_eq!(condition, "TCP port 8081 listening");
            assert!(last_seen.contains("TCP ports listening in the container: 8080"), "{last_seen}");
            assert!(last_seen.contains("serving"), "its log lines: {last_seen}");
        }
        other => panic!("a port nothing listens on: {other:?}"),
    }
    match wait_for(docker, "web", &WaitFor::http(8080, "/missing"), SHORT).await {
        Err(Error::WaitTimedOut { last_seen, .. }) => assert!(last_seen.contains("answered HTTP 404"), "{last_seen}"),
        other => panic!("a page that is not there: {other:?}"),
    }
    match wait_for(docker, "web", &WaitFor::http(8081, "/"), SHORT).await {
        Err(Error::WaitTimedOut { last_seen, .. }) => assert!(last_seen.contains("refused"), "{last_seen}"),
        other => panic!("a port nothing answers on: {other:?}"),
    }

    start(docker, "quitter", sh(image, "echo 'bind failed' >&2; sleep 1; exit 7")).await;
    match wait_for(docker, "quitter", &WaitFor::port(9000), LONG).await {
        Err(Error::ContainerExited { code: 7, logs, .. }) => assert!(logs.contains("bind failed"), "{logs}"),
        other => panic!("a container that exits while its port is waited for: {other:?}"),
    }

    // An image without cat, wget or curl (here: a PATH that has none of them).
    let bare = ContainerCreateBody {
        cmd: Some(vec!["/bin/sleep".into(), "600".into()]),
        env: Some(vec!["PATH=/nowhere".into()]),
        ..sh(image, "")
    };
    start(docker, "bare", bare).await;
    match wait_for(docker, "bare", &WaitFor::port(8080), LONG).await {
        Err(Error::WaitFailed { why, .. }) => assert!(why.contains("no `cat`"), "{why}"),
        other => panic!("a port probe without cat: {other:?}"),
    }
    match wait_for(docker, "bare", &WaitFor::http(8080, "/"), LONG).await {
        Err(Error::WaitFailed { why, .. }) => assert!(why.contains("neither `wget` nor `curl`"), "{why}"),
        other => panic!("an HTTP probe without wget or curl: {other:?}"),
    }
    match wait_for(docker, "no-such-container", &WaitFor::port(8080), LONG).await {
        Err(Error::WaitFailed { why, .. }) => assert!(why.contains("gone"), "{why}"),
        other => panic!("a container that is not there: {other:?}"),
    }
    match wait_for(docker, "no-such-container", &WaitFor::log("x"), LONG).await {
        Err(Error::WaitFailed { why, .. }) => assert!(why.contains("gone"), "{why}"),
        other => panic!("a log text of a container that is not there: {other:?}"),
    }
}

/// A check the engine runs every 300 ms, `test` its command; its failures count after
/// `grace` (the start period).
fn checked(image: &str, script: &str, test: &[&str], grace: Duration) -> ContainerCreateBody {
    let check = HealthConfig {
        test: Some(test.iter().map(|s| s.to_string()).collect()),
        interval: Some(300_000_000),
        timeout: Some(5_000_000_000),
        retries: Some(2),
        start_period: Some(grace.as_nanos() as i64),
        ..Default::default()
    };
    ContainerCreateBody { healthcheck: Some(check), ..sh(image, script) }
}

/// The health check: healthy is met; unhealthy and no check fail at once.
async fn health(docker: &Docker, image: &str) {
    let ok_later = "sleep 1; echo ok > /ok; exec sleep 600";
    start(docker, "healthy", checked(image, ok_later, &["CMD", "cat", "/ok"], ENOUGH)).await;
    start(docker, "sick", checked(image, "exec sleep 600", &["CMD", "cat", "/tmp/never"], Duration::ZERO)).await;
    start(docker, "unchecked", sh(image, "exec sleep 600")).await;
    wait_for(docker, "healthy", &WaitFor::healthy(), ENOUGH).await.unwrap();
    match wait_for(docker, "sick", &WaitFor::healthy(), LONG).await {
        Err(Error::WaitFailed { why, .. }) => assert!(why.contains("unhealthy") && why.contains("/tmp/never"), "{why}"),
        other => panic!("an unhealthy container: {other:?}"),
    }
    match wait_for(docker, "unchecked", &WaitFor::healthy(), LONG).await {
        Err(Error::WaitFailed { why, .. }) => assert!(why.contains("no health check"), "{why}"),
        other => panic!("a container without a health check: {other:?}"),
    }
}

/// An exit with its code, another code failing at once; a duration, cut short by an exit or by
/// the deadline.
async fn exits_and_durations(docker: &Docker, image: &str) {
    start(docker, "job", sh(image, "sleep 1; echo done")).await;
    start(docker, "failing-job", sh(image, "echo 'step 2 failed' >&2; exit 4")).await;
    start(docker, "sleeper", sh(image, "exec sleep 600")).await;
    wait_for(docker, "job", &WaitFor::exit(0), ENOUGH).await.unwrap();
    match wait_for(docker, "failing-job", &WaitFor::exit(0), LONG).await {
        Err(Error::ContainerExited { code: 4, condition, logs, .. }) => {
            assert_eq!(condition, "its exit with code 0");
            assert!(logs.contains("step 2 failed"), "{logs}");
        }
        other => panic!("an exit with another code: {other:?}"),
    }
    wait_for(docker, "failing-job", &WaitFor::exit(4), ENOUGH).await.unwrap();
    match wait_for(docker, "sleeper", &WaitFor::exit(0), SHORT).await {
        Err(Error::WaitTimedOut { last_seen, .. }) => assert!(last_seen.contains("the container is running"), "{last_seen}"),
        other => panic!("a container that does not exit: {other:?}"),
    }

    wait_for(docker, "sleeper", &WaitFor::duration(Duration::from_millis(500)), ENOUGH).await.unwrap();
    match wait_for(docker, "sleeper", &WaitFor::seconds(30), SHORT).await {
        Err(Error::WaitTimedOut { last_seen, .. }) => assert!(last_seen.contains("of 30.0 s passed"), "{last_seen}"),
        other => panic!("a duration longer than the timeout: {other:?}"),
    }
    start(docker, "short-lived", sh(image, "sleep 1; exit 2")).await;
    match wait_for(docker, "short-lived", &WaitFor::seconds(600), LONG).await {
        Err(Error::ContainerExited { code: 2, .. }) => {}
        other => panic!("a container that exits during a duration: {other:?}"),
    }
    // In order, one deadline: the second never comes, and is the one named.
    match wait_for_all(docker, "sleeper", &[WaitFor::seconds(0), WaitFor::log("never")], SHORT).await {
        Err(Error::WaitTimedOut { condition, .. }) => assert_eq!(condition, "log text \"never\""),
        other => panic!("the second of two waits: {other:?}"),
    }
}

/// Logs followed from before the container starts to its end, stdout and stderr apart, each
/// line whole (the last without its line end too).
async fn followed(docker: &Docker, image: &str) {
    create(docker, "chatty", sh(image, "sleep 1; echo one; echo two >&2; echo three; printf four")).await;
    let lines: Arc<Mutex<Vec<LogLine>>> = Arc::default();
    let sink = Arc::clone(&lines);
    let follower = wait::follow_logs(docker, "chatty", move |line| sink.lock().unwrap().push(line));
    docker.start_container("chatty", None::<qp::StartContainerOptions>).await.unwrap();
    follower.finished().await.unwrap();
    let lines = lines.lock().unwrap().clone();
    let on = |s: LogStream| lines.iter().filter(|l| l.stream == s).map(|l| l.text.as_str()).collect::<Vec<_>>();
    assert_eq!(on(LogStream::Stdout), ["one", "three", "four"], "{lines:?}");
    assert_eq!(on(LogStream::Stderr), ["two"], "{lines:?}");

    let follower = wait::follow_logs(docker, "no-such-container", |_| {});
    match follower.finished().await {
        Err(e @ Error::Engine { .. }) => assert!(e.to_string().contains("follow container logs"), "{e}"),
        other => panic!("following a container that is not there: {other:?}"),
    }
}

/// A second container reaches the first by an alias on a user network.
async fn alias(docker: &Docker, image: &str) {
    wait::create_network(docker, "backend").await.unwrap();
    wait::create_network(docker, "backend").await.unwrap(); // there already: fine
    create(docker, "api-1", web(image, "from-api")).await;
    wait::connect_with_aliases(docker, "backend", "api-1", &["api"]).await.unwrap();
    docker.start_container("api-1", None::<qp::StartContainerOptions>).await.unwrap();
    wait_for(docker, "api-1", &WaitFor::http(8080, "/index.html"), ENOUGH).await.unwrap();

    let mut client = sh(image, "busybox wget -q -O - http://api:8080/index.html");
    client.host_config = Some(HostConfig { network_mode: Some("backend".into()), ..Default::default() });
    start(docker, "client", client).await;
    wait_for(docker, "client", &WaitFor::exit(0), ENOUGH).await.unwrap();
    wait_for(docker, "client", &WaitFor::message_on_stdout("from-api"), ENOUGH).await.unwrap();
}
