//! An engine over SSH: the second host `scripts/remote-host.sh` builds on this machine (a
//! network namespace with its own address, sshd and dockerd; `scripts/setup.sh` starts it), as
//! `-H ssh://didx-remote`, `DOCKER_HOST=ssh://didx-remote` and the library's `Engine::connect`.
//! didx's ssh is `DIDX_SSH` (the host's ssh configuration: the test key, the host's key in
//! its known hosts, checking on). Each test checks the remote engine directly (its socket on
//! this machine) for anything of the environment it ran, and the local engine too.

mod common;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use didx::engine::Engine;
use didx::labels;

/// The env file `scripts/remote-host.sh up` writes.
const ENV_FILE: &str = "/run/didx-remote/env";

/// The test that cuts the host's link holds it for writing, every other for reading: under
/// `cargo test` (one process, tests on threads) no test runs while the link is down. (Under
/// cargo-nextest, .config/nextest.toml runs that test alone.)
static LINK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The library over SSH reads `DIDX_SSH` and `TMPDIR` (its control socket's directory) from
/// this process's environment: the tests that set them for it hold this while they do.
static LIBRARY_ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The process's temporary directory as it was before any test set `TMPDIR` (see
/// [`library_env`]): where [`tmp`] makes every test's directory.
fn temp_base() -> &'static std::path::Path {
    static BASE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BASE.get_or_init(std::env::temp_dir)
}

/// `DIDX_SSH` and `TMPDIR` set for the library over SSH while the value lives (then `TMPDIR`
/// is as it was).
struct LibraryEnv {
    _held: std::sync::MutexGuard<'static, ()>,
}

fn library_env(r: &HashMap<String, String>, tmp: &std::path::Path) -> LibraryEnv {
    let held = LIBRARY_ENV.lock().unwrap_or_else(|e| e.into_inner());
    temp_base();
    // SAFETY: every test of this binary that sets or reads these through the library holds
    // LIBRARY_ENV; the others give their processes both explicitly, and make their
    // directories in temp_base(), read before any test sets TMPDIR.
    unsafe {
        std::env::set_var("DIDX_SSH", &r["DIDX_SSH"]);
        std::env::set_var("TMPDIR", tmp);
    }
    LibraryEnv { _held: held }
}

impl Drop for LibraryEnv {
    fn drop(&mut self) {
        // SAFETY: as in library_env (the lock is still held here).
        unsafe { std::env::set_var("TMPDIR", temp_base()) }
    }
}

/// The link held up for a test (a poisoned lock is fine: the panicking test restored it).
fn link_up() -> std::sync::RwLockReadGuard<'static, ()> {
    LINK.read().unwrap_or_else(|e| e.into_inner())
}

/// The second host's settings. Panics, saying how to start it, when it is not up: these tests
/// do not skip.
fn remote() -> HashMap<String, String> {
    let text = std::fs::read_to_string(ENV_FILE)
        .unwrap_or_else(|e| panic!("{ENV_FILE}: {e}: start the test host with `bash scripts/remote-host.sh up` (scripts/setup.sh does)"));
    // KEY='VALUE' lines (values hold no quote).
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string())).collect()
}

/// didx with the remote host's ssh settings, and a TMPDIR of its own (where its ssh control
/// socket goes, so the test can tell its ssh processes from others').
fn remote_cmd(r: &HashMap<String, String>, tmp: &std::path::Path, args: &[&str]) -> Command {
    let mut c = didx_cmd(args);
    c.env("DIDX_SSH", &r["DIDX_SSH"]).env("TMPDIR", tmp).env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT");
    c
}

/// The remote engine, reached directly through its socket on this machine.
async fn remote_engine(r: &HashMap<String, String>) -> Engine {
    Engine::connect(Some(&r["DIDX_REMOTE_SOCKET"])).await.expect("the remote engine's socket")
}

/// Everything of didx's on engine `e` labelled with environment `id`.
async fn leftovers_on(e: &Engine, id: &str) -> Vec<String> {
    let mut out: Vec<String> =
        e.containers(labels::filter(Some(id))).await.unwrap().into_iter().map(|c| format!("container {:?}", c.names)).collect();
    out.extend(e.volumes(labels::filter(Some(id))).await.unwrap().into_iter().map(|v| format!("volume {v}")));
    out.extend(e.networks(labels::filter(Some(id))).await.unwrap().into_iter().map(|n| format!("network {n}")));
    out
}

/// Processes whose command line mentions `needle` (the test's own TMPDIR: its ssh processes).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Waits up to `within` (scaled) until no process mentions `needle`, then asserts none does.
fn assert_no_process_mentions(needle: &str, within: Duration, what: &str) {
    let t0 = Instant::now();
    while !processes_mentioning(needle).is_empty() && t0.elapsed() < scaled(within) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(processes_mentioning(needle), Vec::<String>::new(), "{what}");
}

/// Waits up to `within` (scaled) until nothing of environment `id` is on engine `e`; past it,
/// removes what is left and panics. `after` names the event timed from now.
fn assert_remote_gone_within(e: &Engine, id: &str, within: Duration, after: &str) {
    let t0 = Instant::now();
    loop {
        let left = rt().block_on(leftovers_on(e, id));
        if left.is_empty() {
            eprintln!("remote environment {id} gone {:.2} s after {after}", t0.elapsed().as_secs_f64());
            return;
        }
        if t0.elapsed() > scaled(within) {
            rt().block_on(async { didx::env::remove(e, id).await.unwrap() });
            panic!("remote environment {id} left {within:?} after {after}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A run of `--clean anycase` on the remote host: it succeeded, and neither engine keeps
/// anything of it, nor does any ssh process of its TMPDIR `t` live on.
fn assert_ran_and_left_nothing(r: &HashMap<String, String>, t: &std::path::Path, run: &Run) {
    assert_eq!(run.code, 0, "{}", run.show());
    let id = run.env_id().expect("an environment id");
    rt().block_on(async {
        assert_eq!(leftovers_on(&remote_engine(r).await, &id).await, Vec::<String>::new(), "the remote engine keeps something");
        assert_eq!(leftovers(Some(&id)).await, Vec::<String>::new(), "the local engine got something of a remote run");
    });
    assert_no_process_mentions(&t.display().to_string(), Duration::from_secs(5), "its ssh outlived it");
}

/// A pool of the test's own on the remote engine ([`OwnPool`]), emptied there (`pool down`
/// over the socket) when the test fails before it does so itself.
struct PoolThere {
    pool: OwnPool,
    socket: String,
}

impl PoolThere {
    fn new(r: &HashMap<String, String>, tag: &str) -> PoolThere {
        PoolThere { pool: OwnPool::new(tag), socket: r["DIDX_REMOTE_SOCKET"].clone() }
    }

    /// The names of this pool's containers on engine `there`.
    fn on(&self, there: &Engine) -> Vec<String> {
        rt().block_on(async {
            let all = there.containers(labels::filter(None)).await.unwrap();
            all.into_iter().filter(|c| c.labels.as_ref().is_some_and(|l| self.pool.owns(l))).map(|c| format!("{:?}", c.names)).collect()
        })
    }

    /// After `pool down`: nothing of the pool on `there` within 30 s (a background refill a
    /// claim started may still be filling; pool down ends it, and what it made).
    fn assert_emptied(&self, there: &Engine) {
        let t0 = Instant::now();
        while !self.on(there).is_empty() && t0.elapsed() < scaled(Duration::from_secs(30)) {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(self.on(there), Vec::<String>::new(), "the pool left something on the remote engine");
    }
}

impl Drop for PoolThere {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = didx_cmd(&["pool", "down"]).env("DOCKER_HOST", &self.socket).env_remove("DOCKER_CONTEXT").output();
        }
    }
}

/// A private temporary directory for one test's didx (removed on drop).
fn tmp(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("didx-remote-{tag}-")).tempdir_in(temp_base()).unwrap()
}

#[test]
fn a_run_on_an_ssh_engine_runs_there_and_leaves_both_engines_as_found() {
    let _link = link_up();
    let r = remote();
    let t = tmp("run");
    let out = remote_cmd(
        &r,
        t.path(),
        &["-H", &r["DIDX_REMOTE_HOST"], "--clean", "anycase", "sh -c 'docker info --format inner={{.Name}}; echo hello-remote'"],
    )
    .output()
    .unwrap();
    let run = from_output(out);
    assert_ran_and_left_nothing(&r, t.path(), &run);
    assert!(run.stdout.contains("hello-remote") && run.stdout.contains("inner="), "{}", run.show());
}

#[test]
fn docker_host_ssh_is_the_engine_and_cp_goes_through_it() {
    let _link = link_up();
    let r = remote();
    let t = tmp("cp");
    let file = t.path().join("greeting.txt");
    std::fs::write(&file, "over ssh\n").unwrap();
    let cp = format!("{}:/work/greeting.txt", file.display());
    let out = remote_cmd(&r, t.path(), &["--clean", "none", "--cp", &cp, "cat /work/greeting.txt"])
        .env("DOCKER_HOST", &r["DIDX_REMOTE_HOST"])
        .output()
        .unwrap();
    let run = from_output(out);
    assert_eq!(run.stdout, "over ssh\n", "{}", run.show());
    assert_kept_there_then_remove(&r, run);
}

#[test]
fn sigkill_of_didx_on_an_ssh_engine_leaves_nothing_there_within_seconds() {
    let _link = link_up();
    let r = remote();
    let t = tmp("kill");
    let mut child = remote_cmd(
        &r,
        t.path(),
        &["-H", &r["DIDX_REMOTE_HOST"], "--events", "json", "--clean", "anycase", "sh -c 'echo started; sleep 120'"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .spawn()
    .unwrap();
    // The command runs once "started" is out.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "started\n");
    let remote_engine = rt().block_on(remote_engine(&r));
    let ours = rt().block_on(async { remote_engine.containers(labels::filter(None)).await.unwrap() });
    let ids: Vec<String> = ours
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(labels::OWNER).filter(|o| o.ends_with(&format!(" pid {}", child.id())))?.clone().into())
        .collect();
    assert!(!ids.is_empty(), "no container of this didx on the remote engine");
    let env_ids: Vec<String> = ours
        .iter()
        .filter(|c| c.labels.as_ref().and_then(|l| l.get(labels::OWNER)).is_some_and(|o| o.ends_with(&format!(" pid {}", child.id()))))
        .filter_map(|c| c.labels.as_ref()?.get(labels::ENV).cloned())
        .collect();
    let id = env_ids[0].clone();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_remote_gone_within(&remote_engine, &id, Duration::from_secs(10), "the SIGKILL");
    // Its ssh master ended with it (the kernel's parent-death signal), and the sessions with it.
    assert_no_process_mentions(&t.path().display().to_string(), Duration::from_secs(5), "ssh processes outlived didx");
}

#[test]
fn the_library_connects_to_an_ssh_engine_and_a_sandbox_there_is_reached_through_its_forward() {
    let _link = link_up();
    let r = remote();
    let t = tmp("lib");
    let _env = library_env(&r, t.path());
    rt().block_on(async {
        let over_ssh = Engine::connect(Some(&r["DIDX_REMOTE_HOST"])).await.expect("connect over ssh");
        assert_eq!(over_ssh.host(), r["DIDX_REMOTE_HOST"]);
        let direct = remote_engine(&r).await;
        let (a, b) = (over_ssh.info().await.unwrap(), direct.info().await.unwrap());
        assert_eq!(a.id, b.id, "ssh:// reached another engine than the remote host's");
        assert_ne!(a.id, engine().await.info().await.unwrap().id, "ssh:// reached the local engine");
        // A sandbox there, and its inner engine from here through the sandbox's forward.
        let sb = didx::Sandbox::builder().server_version("local").start(&over_ssh).await.expect("a sandbox over ssh");
        let id = sb.id().to_string();
        let inner = sb.docker().await.expect("the inner engine through the forward").info().await.unwrap();
        assert!(inner.id.is_some() && inner.id != a.id, "sb.docker() reached {:?}, the remote engine is {:?}", inner.id, a.id);
        assert!(leftovers_on(&direct, &id).await.iter().any(|l| l.starts_with("container")), "the sandbox is not on the remote engine");
        sb.rm().await.unwrap();
        assert_eq!(leftovers_on(&direct, &id).await, Vec::<String>::new());
        drop(over_ssh);
    });
    assert_no_process_mentions(&t.path().display().to_string(), Duration::from_secs(5), "the engine handle's ssh outlived it");
}

/// A plain TCP listener on this machine's end of the link to the second host (not a loopback
/// address, so didx takes the engine for another machine's) that carries each connection to
/// the remote engine's socket: a `tcp://` engine on another machine, as users have them.
async fn tcp_to(socket: &str) -> (String, tokio::task::JoinHandle<()>) {
    let host_side = r_host_ip();
    let listener = tokio::net::TcpListener::bind((host_side, 0)).await.expect("a port on the link's host side");
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let socket = socket.trim_start_matches("unix://").to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    (addr, task)
}

/// This machine's address on the link to the second host (its veth's, from the remote's
/// address: the /30's first).
fn r_host_ip() -> std::net::Ipv4Addr {
    let r = remote();
    let remote: std::net::SocketAddrV4 = r["DIDX_REMOTE_ADDR"].parse().unwrap();
    let o = remote.ip().octets();
    std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3] - 1)
}

#[test]
fn a_sandbox_on_a_tcp_engine_of_another_machine_is_reached_through_its_client_s_exec() {
    let _link = link_up();
    let r = remote();
    let t = tmp("tcp");
    let _env = library_env(&r, t.path());
    rt().block_on(async {
        let (addr, forwarder) = tcp_to(&r["DIDX_REMOTE_SOCKET"]).await;
        let over_tcp = Engine::connect(Some(&addr)).await.expect("connect over tcp");
        let direct = remote_engine(&r).await;
        assert_eq!(over_tcp.info().await.unwrap().id, direct.info().await.unwrap().id);
        let sb = didx::Sandbox::builder().server_version("local").start(&over_tcp).await.expect("a sandbox over tcp");
        let id = sb.id().to_string();
        // Its port is published on the remote host's loopback, which this machine cannot reach:
        // the inner engine comes through `docker system dial-stdio` in the client.
        assert!(matches!(sb.endpoint().await, Err(didx::Error::EndpointElsewhere { .. })));
        let inner = sb.docker().await.expect("the inner engine through the client's exec");
        let info = inner.info().await.unwrap();
        assert!(info.id.is_some() && info.id != direct.info().await.unwrap().id, "reached {:?}", info.id);
        // Streams both ways: an image imported through it, run, its output read back.
        let tag = format!("didx-test-exec:{}", std::process::id());
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        b.append_data(&mut h, "hello", &b"hello\n"[..]).unwrap();
        let rootfs = b.into_inner().unwrap();
        let (repo, version) = tag.split_once(':').unwrap();
        let opts = bollard::query_parameters::CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(version.into()),
            ..Default::default()
        };
        let mut s = inner.create_image(Some(opts), Some(bollard::body_full(rootfs.into())), None);
        while let Some(item) = futures_util::StreamExt::next(&mut s).await {
            item.expect("import through the exec stream");
        }
        let images = inner.list_images(None::<bollard::query_parameters::ListImagesOptions>).await.unwrap();
        assert!(images.iter().any(|i| i.repo_tags.contains(&tag)), "{images:?}");
        assert!(!leftovers_on(&direct, &id).await.is_empty(), "the sandbox is not on the remote engine");
        sb.rm().await.unwrap();
        assert_eq!(leftovers_on(&direct, &id).await, Vec::<String>::new());
        assert!(direct.image(&tag).await.unwrap().is_none(), "the inner image leaked to the remote engine");
        forwarder.abort();
    });
}

#[test]
fn a_bad_ssh_address_is_a_usage_error_and_an_unreachable_one_says_what_ssh_said() {
    let t = tmp("bad");
    for bad in ["ssh://-oProxyCommand=touch", "ssh://me:pw@box", "ssh://box/path"] {
        let mut c = didx_cmd(&["-H", bad, "--clean", "anycase", "true"]);
        let run = from_output(c.env("TMPDIR", t.path()).output().unwrap());
        assert_eq!(run.code, 2, "{bad}: {}", run.show());
        assert_eq!(run.stderr.lines().count(), 1, "{bad}: {}", run.show());
        assert!(run.stderr.contains("ssh://"), "{bad}: {}", run.show());
    }
    // Nothing listens on loopback port 1: ssh's own words come through.
    let mut c = didx_cmd(&["-H", "ssh://127.0.0.1:1", "--clean", "anycase", "true"]);
    let run = from_output(c.env("TMPDIR", t.path()).env_remove("DIDX_SSH").output().unwrap());
    assert_eq!(run.code, 125, "{}", run.show());
    assert!(run.stderr.contains("ssh:") && run.stderr.to_lowercase().contains("refused"), "{}", run.show());
}

/// Brings the namespace's end of the link down; up again when dropped (a panic too).
struct LinkDown {
    netns: String,
    /// The host's sshd, answering again once the link is back.
    addr: std::net::SocketAddr,
}

impl LinkDown {
    fn new(r: &HashMap<String, String>) -> LinkDown {
        let netns = r["DIDX_REMOTE_NETNS"].clone();
        let addr = r["DIDX_REMOTE_ADDR"].parse().expect("DIDX_REMOTE_ADDR");
        let dev = format!("{netns}1");
        let ok = Command::new("ip").args(["-n", &netns, "link", "set", &dev, "down"]).status().unwrap().success();
        assert!(ok, "ip -n {netns} link set {dev} down");
        LinkDown { netns, addr }
    }
}

impl Drop for LinkDown {
    /// The link up again, and waited for (bounded): the first connection after it comes up
    /// can find the neighbour still unresolved ("No route to host").
    fn drop(&mut self) {
        let dev = format!("{}1", self.netns);
        let ok = Command::new("ip").args(["-n", &self.netns, "link", "set", &dev, "up"]).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("could not bring {dev} up again: run bash scripts/remote-host.sh down, then up");
            return;
        }
        let t0 = Instant::now();
        while std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                eprintln!("{} does not answer 20 s after {dev} came up", self.addr);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A run of `args` (its COMMAND says "started" first) on the remote host, read up to that line.
fn started(r: &HashMap<String, String>, t: &std::path::Path, args: &[&str]) -> std::process::Child {
    let mut child = remote_cmd(r, t, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "started\n");
    child
}

#[test]
fn a_cut_link_to_an_ssh_engine_ends_the_remote_environment_by_its_beat_and_the_run_fails() {
    let _link = LINK.write().unwrap_or_else(|e| e.into_inner());
    let r = remote();
    let t = tmp("cut");
    let host = r["DIDX_REMOTE_HOST"].as_str();
    // Two runs: a fresh environment (held through its containers' own stdin) and one claimed
    // from a warm pool (held through an exec of the entrypoint's lease mode).
    let pool = PoolThere::new(&r, "cut");
    let up = from_output(remote_cmd(&r, t.path(), &["-H", host, "pool", "up", "1", "--events", "json"]).output().unwrap());
    assert_eq!(up.code, 0, "{}", up.show());
    let pooled = up.pool_ready().pop().expect("a pooled environment");
    let command = "sh -c 'echo started; sleep 120'";
    let fresh_run = started(&r, t.path(), &["-H", host, "--clean", "anycase", command]);
    let pooled_run = started(&r, t.path(), &["-H", host, "--pool", "--clean", "anycase", command]);
    let remote_engine = rt().block_on(remote_engine(&r));
    let pid = fresh_run.id();
    let fresh = rt()
        .block_on(remote_engine.containers(labels::filter(None)))
        .unwrap()
        .into_iter()
        .find(|c| c.labels.as_ref().and_then(|l| l.get(labels::OWNER)).is_some_and(|o| o.ends_with(&format!(" pid {pid}"))))
        .and_then(|c| c.labels?.get(labels::ENV).cloned())
        .expect("this run's environment on the remote engine");
    let children = [fresh_run, pooled_run];
    let cut = LinkDown::new(&r);
    let t0 = Instant::now();
    // The remote sshd, a stock one, does not notice (no ClientAliveInterval): the containers
    // end themselves when didx's beat stops (a word every second; they give up after 6 s of
    // silence, checking every 6 s: within 12 s, then the engine removes them).
    let gone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for id in [&fresh, &pooled] {
            assert_remote_gone_within(&remote_engine, id, Duration::from_secs(16), "the cut")
        }
    }));
    // Each run, on this side, learns of it when its ssh gives up (ServerAliveInterval 5 ×
    // ServerAliveCountMax 3: 15 s after the cut) and fails. The link stays down until then: a
    // link back sooner keeps the ssh connection, and the run would learn of its environment's
    // end only when TCP's backed-off retransmissions carry the engine's answer, at a moment
    // no test can bound.
    let mut ended = Vec::new();
    for mut child in children {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > scaled(Duration::from_secs(40)) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        eprintln!("didx ended {:.1} s after the cut: {status:?}\n{err}", t0.elapsed().as_secs_f64());
        ended.push((status, err));
    }
    drop(cut);
    // The pool's refill, started by the claim, made another: emptied with the link back.
    let down = from_output(remote_cmd(&r, t.path(), &["-H", host, "pool", "down"]).output().unwrap());
    drop(pool);
    if gone.is_err() {
        std::panic::resume_unwind(Box::new("a remote environment outlived the cut (above)"));
    }
    assert_eq!(down.code, 0, "{}", down.show());
    for (status, err) in ended {
        let status = status.unwrap_or_else(|| panic!("didx still running 40 s after its ssh link was cut:\n{err}"));
        assert!(!status.success(), "a run whose engine went away succeeded:\n{err}");
    }
    assert_no_process_mentions(&t.path().display().to_string(), Duration::from_secs(30), "ssh processes outlived didx");
}

#[test]
fn a_docker_context_with_an_ssh_endpoint_is_the_engine() {
    let _link = link_up();
    let r = remote();
    let t = tmp("context");
    // A docker configuration of the test's own: context "far", current, whose endpoint is the
    // remote host (the docker CLI keeps a context under the SHA-256 of its name).
    let config = t.path().join("docker");
    let digest = Command::new("sh").args(["-c", "printf far | sha256sum | cut -d' ' -f1"]).output().unwrap();
    let digest = String::from_utf8(digest.stdout).unwrap().trim().to_string();
    let meta = config.join("contexts/meta").join(&digest);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(config.join("config.json"), r#"{"currentContext":"far"}"#).unwrap();
    let endpoint = format!(
        r#"{{"Name":"far","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{}","SkipTLSVerify":false}}}}}}"#,
        r["DIDX_REMOTE_HOST"]
    );
    std::fs::write(meta.join("meta.json"), endpoint).unwrap();
    let out = remote_cmd(&r, t.path(), &["--clean", "none", "version"]).env("DOCKER_CONFIG", &config).output().unwrap();
    assert_kept_there_then_remove(&r, from_output(out));
}

/// A run kept its environment (`--clean none`) on the remote engine, not on the local one:
/// checked, then removed, and both engines left as found.
fn assert_kept_there_then_remove(r: &HashMap<String, String>, run: Run) {
    assert_eq!(run.code, 0, "{}", run.show());
    let id = run.env_id().expect("an environment id");
    rt().block_on(async {
        let there = remote_engine(r).await;
        let on_remote = leftovers_on(&there, &id).await;
        let on_local = leftovers(Some(&id)).await;
        didx::env::remove(&there, &id).await.unwrap();
        assert!(
            on_remote.iter().filter(|l| l.starts_with("container")).count() == 2,
            "not on the remote engine: {on_remote:?}\n{}",
            run.show()
        );
        assert_eq!(on_local, Vec::<String>::new(), "on the local engine");
        assert_eq!(leftovers_on(&there, &id).await, Vec::<String>::new());
    });
}

#[test]
fn didx_env_on_an_ssh_engine_gives_local_clients_the_inner_engine_until_the_environment_ends() {
    let _link = link_up();
    let r = remote();
    let t = tmp("env");
    let run = from_output(remote_cmd(&r, t.path(), &["-H", &r["DIDX_REMOTE_HOST"], "--clean", "none", "version"]).output().unwrap());
    assert_eq!(run.code, 0, "{}", run.show());
    let id = run.env_id().unwrap();
    let there = rt().block_on(remote_engine(&r));
    let env = from_output(remote_cmd(&r, t.path(), &["-H", &r["DIDX_REMOTE_HOST"], "env", "--json", &id]).output().unwrap());
    let check = || -> Result<(), String> {
        if env.code != 0 {
            return Err(env.show());
        }
        let v: serde_json::Value = serde_json::from_str(env.stdout.trim()).map_err(|e| format!("{e}: {}", env.show()))?;
        let (host, certs) = (v["docker_host"].as_str().unwrap_or_default(), v["docker_cert_path"].as_str().unwrap_or_default());
        if !host.starts_with("tcp://127.0.0.1:") {
            return Err(format!("not a local address: {}", env.show()));
        }
        // The local docker CLI, and the Python SDK (without the CA bundles that would override
        // the environment's CA, see the book's host access guide), through the forward.
        let cli = Command::new("docker")
            .args(["info", "--format", "{{.ID}}"])
            .env("DOCKER_HOST", host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs)
            .output()
            .unwrap();
        let inner = String::from_utf8_lossy(&cli.stdout).trim().to_string();
        let py = Command::new("/usr/bin/python3")
            .args(["-c", "import docker; print(docker.from_env().info()['ID'])"])
            .env("DOCKER_HOST", host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs)
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .unwrap();
        let by_python = String::from_utf8_lossy(&py.stdout).trim().to_string();
        let (remote_id, local_id) = rt().block_on(async { (there.info().await.unwrap().id, engine().await.info().await.unwrap().id) });
        if inner.is_empty() || inner != by_python || Some(&inner) == remote_id.as_ref() || Some(&inner) == local_id.as_ref() {
            return Err(format!(
                "cli {inner:?} ({}), python {by_python:?} ({}), remote engine {remote_id:?}, local engine {local_id:?}",
                String::from_utf8_lossy(&cli.stderr),
                String::from_utf8_lossy(&py.stderr)
            ));
        }
        Ok(())
    };
    let checked = check();
    rt().block_on(async { didx::env::remove(&there, &id).await.unwrap() });
    checked.unwrap();
    // The holder `didx env` left ends with the environment, and its ssh with it.
    assert_no_process_mentions(&format!("--hold -- {id}"), Duration::from_secs(10), "the forward's holder outlived its environment");
    assert_no_process_mentions(&t.path().display().to_string(), Duration::from_secs(5), "ssh processes outlived the holder");
}

#[test]
fn a_host_command_on_an_ssh_engine_reaches_the_inner_engine_through_the_run_s_forward() {
    let _link = link_up();
    let r = remote();
    let t = tmp("hostcmd");
    let run = from_output(
        remote_cmd(
            &r,
            t.path(),
            &["-H", &r["DIDX_REMOTE_HOST"], "--clean", "anycase", "host: docker info --format inner={{.ID}}; echo at=$DOCKER_HOST"],
        )
        .output()
        .unwrap(),
    );
    assert_ran_and_left_nothing(&r, t.path(), &run);
    assert!(run.stdout.contains("inner=") && run.stdout.contains("at=tcp://127.0.0.1:"), "{}", run.show());
}

#[test]
fn load_on_an_ssh_engine_seeds_from_the_remote_engine_s_own_image() {
    let _link = link_up();
    let r = remote();
    let t = tmp("load");
    let there = rt().block_on(remote_engine(&r));
    // An image only the remote engine holds (made there, through its socket).
    let image = format!("didx-remote-load-{}:t", std::process::id());
    rt().block_on(busybox_image(&there, &image));
    let local_has = rt().block_on(async { engine().await.image(&image).await.unwrap().is_some() });
    let run = from_output(
        remote_cmd(
            &r,
            t.path(),
            &["-H", &r["DIDX_REMOTE_HOST"], "--clean", "anycase", "--load", &image, "images --format {{.Repository}}:{{.Tag}}"],
        )
        .output()
        .unwrap(),
    );
    rt().block_on(async { there.remove_image(&image).await.ok() });
    assert!(!local_has, "the local engine holds {image}: the test proves nothing");
    assert_ran_and_left_nothing(&r, t.path(), &run);
    assert!(run.stdout.contains(&image), "{}", run.show());
}

#[test]
fn a_warm_pool_on_an_ssh_engine_fills_there_serves_a_run_and_goes_down_leaving_nothing() {
    let _link = link_up();
    let r = remote();
    let t = tmp("pool");
    let pool = PoolThere::new(&r, "remote");
    let host = r["DIDX_REMOTE_HOST"].as_str();
    let there = rt().block_on(remote_engine(&r));
    // -H before the verb: the address is the pool's engine.
    let up = from_output(remote_cmd(&r, t.path(), &["-H", host, "pool", "up", "2", "--events", "json"]).output().unwrap());
    assert_eq!(up.code, 0, "{}", up.show());
    let filled = Instant::now();
    let ready = up.pool_ready();
    assert_eq!(ready.len(), 2, "{}", up.show());
    assert!(!pool.on(&there).is_empty(), "the remote engine holds none of the pool: {}", up.show());
    rt().block_on(async { assert_eq!(leftovers(Some(&ready[0])).await, Vec::<String>::new(), "the pool filled the local engine") });

    let run = from_output(
        remote_cmd(&r, t.path(), &["-H", host, "--pool", "--clean", "anycase", "--events", "json", "sh -c 'echo env=$DIDX_ENV'"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.show());
    let claimed = run.stdout.trim().strip_prefix("env=").unwrap_or_default().to_string();
    assert!(ready.contains(&claimed), "the run did not get a pooled environment: {}", run.show());
    assert!(run.events().iter().any(|e| e["didx_event"] == "claimed"), "{}", run.show());
    // A pooled run's environment ends with its lease, over the link.
    assert_remote_gone_within(&there, &claimed, Duration::from_secs(10), "the pooled run returned");

    // The other, claimed by a didx on the engine's own socket, which does not beat: its lease
    // clears the beat limit its containers were made with over SSH, so it outlives that limit.
    // Claimed only once that limit has passed since `pool up` ended (6 s without a beat, checked
    // every 6 s): the filler's release must have reached it (a release still in an ssh's
    // buffer when `pool up` exits is lost, and the environment ends itself by the limit).
    std::thread::sleep(Duration::from_secs(13).saturating_sub(filled.elapsed()));
    let mut local = didx_cmd(&["--pool", "--clean", "anycase", "--events", "json", "sh -c 'sleep 14; echo env=$DIDX_ENV'"]);
    local.env("DOCKER_HOST", &r["DIDX_REMOTE_SOCKET"]).env_remove("DOCKER_CONTEXT");
    let run = from_output(local.output().unwrap());
    assert_eq!(run.code, 0, "{}", run.show());
    let other = run.stdout.trim().strip_prefix("env=").unwrap_or_default().to_string();
    assert!(ready.contains(&other) && other != claimed, "not the other pooled environment: {}", run.show());
    assert_remote_gone_within(&there, &other, Duration::from_secs(10), "the second pooled run returned");

    let down = from_output(remote_cmd(&r, t.path(), &["pool", "-H", host, "down"]).output().unwrap());
    assert_eq!(down.code, 0, "{}", down.show());
    pool.assert_emptied(&there);
    assert_no_process_mentions(&t.path().display().to_string(), Duration::from_secs(30), "an ssh or a refill outlived the pool");
}

#[test]
fn a_published_port_on_an_ssh_engine_is_served_here_through_a_forward() {
    let _link = link_up();
    let r = remote();
    let t = tmp("publish");
    let host = r["DIDX_REMOTE_HOST"].as_str();
    let there = rt().block_on(remote_engine(&r));
    let image = format!("didx-remote-pub-{}:t", std::process::id());
    rt().block_on(busybox_image(&there, &image));
    let serve = format!(
        r#"run -d -p 8080:80 {image} busybox sh -c "busybox mkdir -p /www && echo remote-published > /www/index.html && exec busybox httpd -f -p 80 -h /www""#
    );
    let run = from_output(
        remote_cmd(&r, t.path(), &["-H", host, "--clean", "none", "--publish", "8080", "--load", &image, &serve]).output().unwrap(),
    );
    rt().block_on(async { there.remove_image(&image).await.ok() });
    assert_eq!(run.code, 0, "{}", run.show());
    let id = run.env_id().unwrap();
    let checked = (|| -> Result<(), String> {
        // The run said a local address (its forward, ended with it).
        let said = run.stderr.lines().find_map(|l| l.strip_prefix("didx: published ")?.strip_suffix(" -> 8080/tcp"));
        if !said.is_some_and(|a| a.starts_with("127.0.0.1:")) {
            return Err(format!("no local published address: {}", run.show()));
        }
        // didx env holds a forward of it here: a plain TCP client gets the inner container's page.
        let env = from_output(remote_cmd(&r, t.path(), &["-H", host, "env", "--json", &id]).output().unwrap());
        let v: serde_json::Value = serde_json::from_str(env.stdout.trim()).map_err(|e| format!("{e}: {}", env.show()))?;
        let p = &v["published"][0];
        if p["ip"] != "127.0.0.1" || p["env_port"] != 8080 {
            return Err(format!("{v}"));
        }
        let reply = http_get(&format!("127.0.0.1:{}", p["host_port"]));
        if !reply.contains("remote-published") {
            return Err(reply);
        }
        Ok(())
    })();
    rt().block_on(async { didx::env::remove(&there, &id).await.unwrap() });
    checked.unwrap();
    assert_no_process_mentions(&format!("--hold -- {id}"), Duration::from_secs(10), "the forward's holder outlived its environment");
    assert_no_process_mentions(&t.path().display().to_string(), Duration::from_secs(5), "ssh processes outlived the holder");
    rt().block_on(async { assert_eq!(leftovers_on(&there, &id).await, Vec::<String>::new()) });
}

#[test]
fn the_image_store_on_an_ssh_engine_is_filled_and_used_there_and_removed_by_store_rm() {
    let _link = link_up();
    let r = remote();
    let t = tmp("store");
    let host = r["DIDX_REMOTE_HOST"].as_str();
    let prefix = format!("didx-t-{}", didx::env::EnvId::generate());
    let there = rt().block_on(remote_engine(&r));
    let image = format!("didx-remote-store-{}:t", std::process::id());
    rt().block_on(busybox_image(&there, &image));
    let didx_store = |args: &[&str]| from_output(remote_cmd(&r, t.path(), args).env("DIDX_STORE_PREFIX", &prefix).output().unwrap());
    let stores_on = |e: &Engine| -> Vec<String> {
        rt().block_on(async { e.volumes(HashMap::new()).await.unwrap().into_iter().filter(|v| v.contains(&prefix)).collect() })
    };
    let first = didx_store(&["-H", host, "--store", "--load", &image, "--clean", "anycase", &format!("run --rm {image} ls /bin/ls")]);
    rt().block_on(async { there.remove_image(&image).await.ok() });
    // Later: from the store alone (the remote engine no longer holds the image).
    let later = didx_store(&["-H", host, "--store", "--clean", "anycase", &format!("run --rm {image} ls /bin/ls")]);
    let here = rt().block_on(engine());
    let (stored_there, stored_here) = (stores_on(&there), stores_on(&here));
    let rm = didx_store(&["-H", host, "store", "rm"]);
    assert_ran_and_left_nothing(&r, t.path(), &first);
    assert!(first.stderr.contains(&format!("put {image} into the image store")), "{}", first.show());
    assert_ran_and_left_nothing(&r, t.path(), &later);
    assert!(later.stdout.contains("/bin/ls") && !later.stderr.contains("into the image store"), "{}", later.show());
    assert_eq!(stored_here, Vec::<String>::new(), "a store on the local engine");
    assert!(!stored_there.is_empty(), "no store on the remote engine");
    assert_eq!(rm.code, 0, "{}", rm.show());
    assert_eq!(stores_on(&there), Vec::<String>::new(), "store rm left a store there");
}

#[test]
fn load_of_an_image_only_this_machine_holds_is_a_usage_error_saying_how_to_carry_it_over() {
    let _link = link_up();
    let r = remote();
    let t = tmp("load-local");
    let host = r["DIDX_REMOTE_HOST"].as_str();
    // Only the local engine holds it (scripts/setup.sh builds it here alone).
    let image = "didx/dind-busybox:local";
    let there = rt().block_on(remote_engine(&r));
    let (here_has, there_has) =
        rt().block_on(async { (engine().await.image(image).await.unwrap().is_some(), there.image(image).await.unwrap().is_some()) });
    assert!(here_has && !there_has, "{image}: here {here_has}, there {there_has}: the test proves nothing");
    let child = remote_cmd(&r, t.path(), &["-H", host, "--load", image, "--clean", "anycase", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run = from_output(child.wait_with_output().unwrap());
    assert_eq!(run.code, 2, "{}", run.show());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.show());
    assert!(run.stderr.contains(&format!("docker save {image} | docker -H {host} load")), "{}", run.show());
    let made: Vec<_> = rt()
        .block_on(there.containers(labels::filter(None)))
        .unwrap()
        .into_iter()
        .filter(|c| c.labels.as_ref().and_then(|l| l.get(labels::OWNER)).is_some_and(|o| o.ends_with(&format!(" pid {pid}"))))
        .collect();
    assert!(made.is_empty(), "the refused run made {made:?}");
}

#[test]
fn an_engine_served_from_another_network_namespace_is_probed_from_the_environment_s_client() {
    let _link = link_up();
    let r = remote();
    // The remote engine's socket is on this machine, but its dockerd (and its containers'
    // addresses) are in the second host's network namespace: the same addresses here are this
    // machine's bridge, where another engine's containers (another environment's server) may
    // answer. A pooled server is probed before its client exists wherever its address is
    // reachable: here that probe would never reach it.
    let there = rt().block_on(remote_engine(&r));
    assert!(!rt().block_on(there.reaches_containers()), "the remote engine's socket is served from another network namespace");
    assert!(rt().block_on(async { Engine::connect(None).await.unwrap().reaches_containers().await }), "this machine's engine");
    let pool = PoolThere::new(&r, "netns");
    let socket = |args: &[&str]| {
        let mut c = didx_cmd(args);
        c.env("DOCKER_HOST", &r["DIDX_REMOTE_SOCKET"]).env_remove("DOCKER_CONTEXT");
        from_output(c.output().unwrap())
    };
    let up = socket(&["pool", "up", "1", "--events", "json"]);
    assert_eq!(up.code, 0, "{}", up.show());
    let ready = up.pool_ready();
    let fresh = socket(&["--clean", "anycase", "--events", "json", "docker version --format inner={{.Server.Version}}"]);
    assert_eq!(fresh.code, 0, "{}", fresh.show());
    assert!(fresh.stdout.contains("inner="), "{}", fresh.show());
    let pooled = socket(&["--pool", "--clean", "anycase", "--events", "json", "sh -c 'echo env=$DIDX_ENV'"]);
    assert_eq!(pooled.code, 0, "{}", pooled.show());
    let claimed = pooled.stdout.trim().strip_prefix("env=").unwrap_or_default().to_string();
    assert!(ready.contains(&claimed), "the run did not get the pooled environment: {}", pooled.show());
    let down = socket(&["pool", "down"]);
    assert_eq!(down.code, 0, "{}", down.show());
    pool.assert_emptied(&there);
    for id in [fresh.env_id().unwrap(), claimed] {
        rt().block_on(async { assert_eq!(leftovers_on(&there, &id).await, Vec::<String>::new(), "the remote engine keeps something") });
    }
}

#[test]
fn the_loose_container_list_podman_needs_reads_as_the_typed_one_over_a_socket_and_over_ssh() {
    let _link = link_up();
    let r = remote();
    let t = tmp("loose");
    let _env = library_env(&r, t.path());
    rt().block_on(async {
        let host = r["DIDX_REMOTE_HOST"].clone();
        let engines = [Engine::connect(None).await.unwrap(), remote_engine(&r).await, Engine::connect(Some(&host)).await.unwrap()];
        let tag = format!("loose-{}", std::process::id());
        let label = format!("{}={tag}", labels::ENV);
        for e in &engines {
            let name = format!("didx-test-{tag}");
            let body = bollard::models::ContainerCreateBody {
                image: Some("didx/dind:local".into()),
                cmd: Some(vec!["true".into()]),
                labels: Some(HashMap::from([(labels::ENV.to_string(), tag.clone())])),
                ..Default::default()
            };
            let id = e.create_container(&name, body).await.unwrap();
            let filters = HashMap::from([("label".to_string(), vec![label.clone()])]);
            let typed = e.containers(filters.clone()).await;
            let loose = e.containers_read_loosely(&filters).await;
            e.remove_container(&id).await.unwrap();
            let (typed, loose) = (typed.unwrap(), loose.unwrap());
            let seen = |l: &[bollard::models::ContainerSummary]| -> Vec<String> {
                l.iter()
                    .map(|c| {
                        let labels: Option<std::collections::BTreeMap<_, _>> = c.labels.clone().map(|l| l.into_iter().collect());
                        format!("{:?} {:?} {:?} {labels:?}", c.id, c.names, c.state)
                    })
                    .collect()
            };
            assert_eq!(seen(&loose), seen(&typed), "on {}", e.host());
            assert_eq!(typed.len(), 1, "on {}: {typed:?}", e.host());
            assert_eq!(leftovers_on(e, &tag).await, Vec::<String>::new());
        }
    });
}
