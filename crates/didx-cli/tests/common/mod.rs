//! Helpers for the integration tests: run the didx binary, find the environment it made, and
//! check that the engine holds nothing of it afterwards.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use didx::engine::Engine;
use didx::labels;

pub const BIN: &str = env!("CARGO_BIN_EXE_didx");

/// A cache dir shared by the tests of one binary, so only the first run on this engine pays
/// for the privileged→caps discovery (the fallback test uses its own). Private (0700), as
/// didx refuses a cache directory others may write. One per user: another user's (root's,
/// where the VM lane runs one plan as root and the next as a user) is not this one's to use.
pub fn cache_dir() -> String {
    let d = std::env::temp_dir().join(format!("didx-test-cache-{}", rustix::process::getuid().as_raw()));
    private_dir(&d);
    d.display().to_string()
}

/// Make `d` (and missing parents) a directory didx accepts as its cache: mode 0700.
pub fn private_dir(d: &std::path::Path) {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(d).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
}

pub fn didx_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("DIDX_CACHE_DIR", cache_dir()).env_remove("DIDX_SERVER_IMAGE").env_remove("DIDX_CLIENT_IMAGE").stdin(Stdio::null());
    match POOL_NAME.with(|n| n.borrow().clone()) {
        Some(name) => c.env(didx::pool::NAME_VAR, name),
        None => c.env_remove(didx::pool::NAME_VAR),
    };
    c
}

thread_local! {
    static POOL_NAME: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// While held, every didx this thread runs uses a warm pool of its own (`DIDX_POOL_NAME`), so
/// a test's pool is never another test's, in this binary or another running beside it (as
/// cargo-nextest runs them).
pub struct OwnPool {
    pub name: String,
}

impl OwnPool {
    pub fn new(tag: &str) -> OwnPool {
        let name = format!("t{}-{tag}", std::process::id());
        POOL_NAME.with(|n| *n.borrow_mut() = Some(name.clone()));
        OwnPool { name }
    }
    /// Whether a container's labels say it belongs to this pool.
    pub fn owns(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        labels.get(didx::labels::POOL_NAME) == Some(&self.name)
    }
}

impl Drop for OwnPool {
    fn drop(&mut self) {
        POOL_NAME.with(|n| *n.borrow_mut() = None);
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The environment id didx reported: from its `starting` event with `--events json`, else
    /// from the server's name in its prose.
    pub fn env_id(&self) -> Option<String> {
        self.events()
            .iter()
            .find(|e| e["didx_event"] == "starting")
            .and_then(|e| e["id"].as_str().map(String::from))
            .or_else(|| env_id_in(&self.stderr))
    }
    /// The environments a `pool up --events json` made ready (its `pool_ready` events).
    pub fn pool_ready(&self) -> Vec<String> {
        self.events().iter().filter(|e| e["didx_event"] == "pool_ready").filter_map(|e| e["env"].as_str().map(String::from)).collect()
    }
    /// The run's events (`--events json`): the JSON lines of its stderr, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("{\"didx_event\""))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("an event line that is not JSON ({e}): {l}")))
            .collect()
    }
    pub fn show(&self) -> String {
        format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

pub fn env_id_in(text: &str) -> Option<String> {
    let i = text.find("dind_")?;
    let rest = &text[i + 5..];
    let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (rest[id.len()..].starts_with("_server_") || rest[id.len()..].starts_with("_client_")).then_some(id)
}

pub fn from_output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn didx(args: &[&str]) -> Run {
    from_output(didx_cmd(args).output().expect("run didx"))
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub async fn engine() -> Engine {
    Engine::connect(None).await.expect("engine")
}

/// Everything labelled with environment `id`: container, volume and network names.
pub async fn leftovers(id: Option<&str>) -> Vec<String> {
    let e = engine().await;
    let mut out: Vec<String> =
        e.containers(labels::filter(id)).await.unwrap().into_iter().map(|c| format!("container {:?}", c.names)).collect();
    out.extend(e.volumes(labels::filter(id)).await.unwrap().into_iter().map(|v| format!("volume {v}")));
    out.extend(e.networks(labels::filter(id)).await.unwrap().into_iter().map(|n| format!("network {n}")));
    out
}

/// Assert nothing of environment `id` is left on the engine.
pub fn assert_gone(id: &str) {
    let left = rt().block_on(leftovers(Some(id)));
    assert!(left.is_empty(), "environment {id} left: {left:?}");
}

/// Wait until nothing of environment `id` is left, at most `within` (polled every 100 ms);
/// how long it took. Past `within`, removes what is left and panics naming it.
pub fn gone_within(id: &str, within: std::time::Duration) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    loop {
        let left = rt().block_on(leftovers(Some(id)));
        if left.is_empty() {
            eprintln!("environment {id} gone {:.2} s after", t0.elapsed().as_secs_f64());
            return t0.elapsed();
        }
        if t0.elapsed() > within {
            rt().block_on(async { didx::env::remove(&engine().await, id).await.unwrap() });
            panic!("environment {id} left {:?} after {:?}: {left:?}", within, t0.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// How soon an environment handed to its lease (a run the pool served) is gone: the book's
/// promise (docs/src/concepts/cleanup.md), scaled on slow lanes.
pub const ENDING_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Assert that environment `id`, which a run the pool served handed to its lease, is gone
/// within [`ENDING_WITHIN`] (scaled) of now.
pub fn assert_ends(id: &str) {
    gone_within(id, scaled(ENDING_WITHIN));
}

/// Assert environment `id` is still there (both containers running), then remove it and
/// assert it is gone.
pub fn assert_running_then_remove(id: &str) {
    rt().block_on(async {
        let e = engine().await;
        let cs = e.containers(labels::filter(Some(id))).await.unwrap();
        assert_eq!(cs.len(), 2, "expected server and client of {id}");
        assert!(cs.iter().all(|c| c.state.map(|s| s.to_string()) == Some("running".into())), "{cs:?}");
        didx::env::remove(&e, id).await.unwrap();
    });
    assert_gone(id);
}

/// Runs `f`, then removes whatever environment the run reported, so a failing assertion does
/// not leak; returns the run.
pub fn with_cleanup(run: Run, f: impl FnOnce(&Run)) {
    let id = run.env_id();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&run)));
    if let (Err(_), Some(id)) = (&result, &id) {
        rt().block_on(async { didx::env::remove(&engine().await, id).await.ok() });
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// An environment spec as the binary's defaults make it on this engine (offline image), plus
/// `dockerd_opts`.
pub async fn spec(e: &Engine, dockerd_opts: Vec<String>) -> didx::env::EnvSpec {
    let info = e.info().await.unwrap();
    didx::env::EnvSpec {
        id: didx::env::EnvId::generate(),
        sv: didx::spec::Version::parse("--sv", "latest").unwrap(),
        cv: didx::spec::Version::parse("--cv", "latest").unwrap(),
        server_image: "didx/dind:local".into(),
        client_image: "didx/dind:local".into(),
        storage_driver: info.driver.unwrap_or_default(),
        dockerd_opts,
        isolation: didx::spec::IsolationMode::Auto,
        engine_id: info.id.unwrap_or_default(),
        ready_timeout: std::time::Duration::from_secs(60),
        volumes: vec![],
        publish: vec![],
        lease: false,
        address_range: Some(didx::spec::AddressRange::default_range()),
        network: None,
        policy: "anycase".into(),
        owner: String::new(),
        engine_mode: Default::default(),
        store: None,
        limits: Default::default(),
    }
}

/// Host images a test made, removed when dropped: at its end, and when an assertion fails
/// before it (the engine as it was found, either way).
pub struct HostImages(pub Vec<String>);

impl Drop for HostImages {
    fn drop(&mut self) {
        rt().block_on(async {
            let e = engine().await;
            for image in &self.0 {
                let _ = e.remove_image(image).await;
            }
        });
    }
}

/// Import a busybox image into the host engine from the offline image's busybox binary.
pub async fn busybox_image(e: &didx::engine::Engine, name: &str) -> String {
    busybox_image_with(e, name, &["sh", "cat", "true", "ls"]).await
}

/// [`busybox_image`] with `applets` linked in `/bin` (busybox-static has them all).
pub async fn busybox_image_with(e: &didx::engine::Engine, name: &str, applets: &[&str]) -> String {
    // Unique per call: tests of one binary run in parallel threads of one process.
    let reader = format!("didx_test_reader_{}_{}", std::process::id(), didx::env::EnvId::generate());
    let body = bollard::models::ContainerCreateBody { image: Some(didx::images::LOCAL_IMAGE.into()), ..Default::default() };
    let id = e.create_container(&reader, body).await.unwrap();
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(e.download(&id, "/usr/bin/busybox")).await.unwrap();
    e.remove_container(&id).await.unwrap();
    let data = chunks.concat();
    let mut a = tar::Archive::new(&data[..]);
    let mut bin = Vec::new();
    std::io::Read::read_to_end(&mut a.entries().unwrap().next().unwrap().unwrap(), &mut bin).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bin.len() as u64);
    b.append_data(&mut h, "bin/busybox", &bin[..]).unwrap();
    for applet in applets {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    let rootfs = b.into_inner().unwrap();
    let (repo, tag) = didx::engine::split_reference(name);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(rootfs)) });
    e.import(stream, repo, tag, vec!["ENV PATH=/bin".into()]).await.unwrap();
    name.to_string()
}

/// What this engine does with `--privileged`, when the lane running the tests says so:
/// `DIDX_TEST_PRIVILEGED=works` (the VM lane) or `refused` (this project's host, whose root lacks
/// CAP_SYS_RESOURCE); any other value is a mistake. Unset, a test accepts either outcome but
/// asserts the one it gets in full.
pub fn privileged_expected() -> Option<bool> {
    match std::env::var("DIDX_TEST_PRIVILEGED").as_deref() {
        Ok("works") => Some(true),
        Ok("refused") => Some(false),
        Ok(other) => panic!("DIDX_TEST_PRIVILEGED={other}: say works or refused"),
        Err(_) => None,
    }
}

/// An inner container's command printing its memory and pids limits, from whichever cgroup
/// version the host has (v1: one hierarchy per controller; v2: one unified file per limit).
pub const CGROUP_LIMITS: &str = "echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max) pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max) fs=$(stat -fc %T /sys/fs/cgroup)";

/// An inner container's command printing the superblock options of the sysfs it sees, the
/// topmost mount at /sys. With `--network host` that is the server's own sysfs (one per network
/// namespace).
pub const SYSFS_SUPER: &str = r#"echo sys=$(awk "\$5 == \"/sys\" { s = \$NF } END { print s }" /proc/self/mountinfo)"#;

/// Both isolation modes, with `extra` arguments (say, other images): each starts an inner
/// container with `--memory 64m --pids-limit 77` (the cgroup nesting test: on cgroup v2 the
/// entrypoint must enable the controllers for the inner engine) and the limits take effect;
/// and a host-network inner container sees the server's sysfs writable down to its superblock
/// (the caps profile gets a read-only one from the runtime; the entrypoint remounts it).
/// `privileged` where the engine refuses it must fail with 125 and the refusal line instead.
/// Nothing of either run is left. An inner `--privileged` container in the caps profile is
/// expected to work as [`privileged_expected`] says (see [`check_isolations_with`]).
pub fn check_isolations(extra: &[&str], tag: &str) {
    check_isolations_with(extra, tag, privileged_expected())
}

/// [`check_isolations`], with what an inner `--privileged` container does in the caps profile:
/// `Some(true)` works, `Some(false)` refused, `None` either. It depends on the inner engine
/// too: where the host engine refuses `--privileged`, the server lacks the capabilities that
/// engine does not know; an inner docker 20.10 (Debian 12) then fails a `--privileged`
/// container ("unable to apply caps"), an inner docker 26 (trixie) runs it (seen on this
/// project's host).
pub fn check_isolations_with(extra: &[&str], tag: &str, caps_inner_privileged: Option<bool>) {
    let image = format!("didx-test-iso:{tag}");
    let make_image = format!("didx-busybox-image {image}");
    let limited = format!("run --rm --memory 64m --pids-limit 77 {image} sh -c '{CGROUP_LIMITS}'");
    let sysfs = format!("run --rm --network host {image} sh -c '{SYSFS_SUPER}'");
    let inner_privileged = format!(
        "sh -c 'docker run --rm --privileged {image} true >/dev/null 2>&1 && echo inner-privileged=yes || echo inner-privileged=no'"
    );
    for iso in ["caps", "privileged"] {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--isolation", iso, "--clean", "anycase", &make_image, &limited, &sysfs, &inner_privileged]);
        let r = didx(&args);
        let refused = r.stderr.contains("refuses --privileged");
        with_cleanup(r, |r| {
            if iso == "privileged" && refused {
                assert_ne!(privileged_expected(), Some(true), "privileged should work on this lane: {}", r.show());
                assert_eq!(r.code, 125, "{}", r.show());
                assert!(r.stderr.contains("--isolation"), "the refusal names the fix: {}", r.show());
            } else {
                if iso == "privileged" {
                    assert_ne!(privileged_expected(), Some(false), "privileged was expected to be refused: {}", r.show());
                }
                assert_eq!(r.code, 0, "{iso}: {}", r.show());
                assert!(r.stderr.contains(&format!("{iso} isolation")), "{iso}: {}", r.show());
                assert!(r.stdout.contains("mem=67108864"), "{iso}: --memory 64m not applied: {}", r.show());
                assert!(r.stdout.contains("pids=77"), "{iso}: --pids-limit not applied: {}", r.show());
                let super_opts = r.stdout.lines().find_map(|l| l.strip_prefix("sys=")).unwrap_or_default();
                assert!(super_opts.split(',').any(|o| o == "rw"), "{iso}: the server's sysfs superblock is not writable: {}", r.show());
                // An inner --privileged container needs every capability (which the server has
                // where the engine grants --privileged) and every device (the caps profile's
                // device rule allows all).
                let expected = if iso == "privileged" { Some(true) } else { caps_inner_privileged };
                if let Some(works) = expected {
                    let want = if works { "inner-privileged=yes" } else { "inner-privileged=no" };
                    assert!(r.stdout.contains(want), "{iso}: expected {want}: {}", r.show());
                }
            }
            assert_gone(&r.env_id().unwrap());
        });
    }
}

/// Seconds since the epoch, as didx's `io.didx.created` labels carry them.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// `didx pool`'s listing as (environment id, state) pairs, one per line after the header.
pub fn parse_pool_listing(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[4].to_string())
        })
        .collect()
}

/// A time bound of a test, scaled for slow lanes: `DIDX_TEST_SLOWDOWN`, a whole factor (default
/// 1), multiplies it. The VM lane under software emulation sets 10, as its inner engines answer
/// in about 24 s against 0.6 s here: a bound that only holds on a fast machine would fail there
/// for want of time, not for a leak.
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    let factor: u32 = match std::env::var("DIDX_TEST_SLOWDOWN") {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("DIDX_TEST_SLOWDOWN={v}: give a whole factor, such as 10")),
        Err(_) => 1,
    };
    d * factor
}

/// Containers a didx process made (its `io.didx.owner` label names its pid).
pub fn made_by(pid: u32) -> Vec<String> {
    rt().block_on(async {
        let cs = engine().await.containers(didx::labels::filter(None)).await.unwrap();
        cs.into_iter()
            .filter(|c| c.labels.as_ref().and_then(|l| l.get(didx::labels::OWNER)).is_some_and(|o| o.ends_with(&format!(" pid {pid}"))))
            .map(|c| format!("{:?}", c.names))
            .collect()
    })
}

/// `GET /` at `addr` until it answers (the inner httpd starts a moment after `docker run -d`).
pub fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + scaled(std::time::Duration::from_secs(20));
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match std::net::TcpStream::connect(addr) {
            Ok(mut s) => {
                s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                let mut reply = String::new();
                if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() && s.read_to_string(&mut reply).is_ok() && reply.contains("200") {
                    return reply;
                }
                last = format!("reply {reply:?}");
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("no reply from {addr}: {last}");
}
