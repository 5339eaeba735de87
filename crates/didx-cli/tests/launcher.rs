//! The builder-launcher: `--workdir-here` (the current directory at /work, every COMMAND run
//! there), `--user` (COMMANDs as the host user, or given ids, with every supplementary group,
//! `whoami` and `~` working, files in /work owned by that user) and `--ssh-agent` (the host's
//! agent reachable from the client). Each test works in a temporary directory of its own and
//! checks the engine holds nothing of its environment afterwards.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A fresh directory under the system's temp dir, for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("didx-launcher-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes the directory when the test ends, however.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

fn words(s: &str) -> BTreeSet<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn host_out(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {o:?}");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The value after `key=` on its own line of `out`.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}= in {out}"))
}

const PROBE: &str = r#"sh -c 'echo pwd=$(pwd); echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G); echo whoami=$(whoami); echo home=$(cd ~ && pwd); echo hello > made-here; echo server=$(docker version --format {{.Server.Version}})'"#;

#[test]
fn usage_errors_create_nothing() {
    let dir = temp_dir("usage");
    let _c = Cleanup(dir.clone());
    let run = |args: &[&str], sock: Option<&str>| {
        let mut c = didx_cmd(args);
        c.current_dir(&dir);
        match sock {
            Some(s) => c.env("SSH_AUTH_SOCK", s),
            None => c.env_remove("SSH_AUTH_SOCK"),
        };
        from_output(c.output().unwrap())
    };
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (&["--workdir-here", "-v", "/tmp:/work", "true"], None, "--workdir-here mounts the current directory there"),
        (&["--workdir-here", "-v", "/work/", "true"], None, "--workdir-here mounts the current directory there"),
        (&["--ssh-agent", "true"], None, "SSH_AUTH_SOCK is not set"),
        (&["--ssh-agent", "true"], Some("/nonexistent/agent.sock"), "SSH_AUTH_SOCK does not name a socket"),
        (&["--user", "alice", "true"], None, "expected host or UID[:GID]"),
    ];
    for (args, sock, says) in cases {
        let r = run(args, sock);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(says), "{args:?}: {}", r.show());
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.show());
        assert_eq!(r.env_id(), None, "nothing started: {}", r.show());
    }
}

/// A relative `SSH_AUTH_SOCK` naming a real socket in the current directory: the engine would
/// take it for a volume name (an empty named volume at the agent's place, no agent, the volume
/// left behind). Refused, one line, exit 2, no volume of that name and no environment.
#[test]
fn a_relative_agent_socket_is_refused_and_makes_no_volume() {
    let dir = temp_dir("relsock");
    let _c = Cleanup(dir.clone());
    let name = format!("didx-agent-{}.sock", std::process::id());
    let _listener = std::os::unix::net::UnixListener::bind(dir.join(&name)).unwrap();
    let volumes_named = || {
        rt().block_on(async {
            let filter = std::collections::HashMap::from([("name".to_string(), vec![name.clone()])]);
            engine().await.volumes(filter).await.unwrap().into_iter().filter(|v| *v == name).collect::<Vec<_>>()
        })
    };
    assert!(volumes_named().is_empty(), "a volume {name} is already there");
    let mut c = didx_cmd(&["--ssh-agent", "--clean", "anycase", "true"]);
    c.env("SSH_AUTH_SOCK", &name).current_dir(&dir);
    let r = from_output(c.output().unwrap());
    let left = volumes_named();
    with_cleanup(r, |r| {
        assert_eq!(r.code, 2, "{}", r.show());
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.show());
        assert!(
            r.stderr.contains(&name) && r.stderr.contains("SSH_AUTH_SOCK is a relative path") && r.stderr.contains("absolute"),
            "{}",
            r.show()
        );
        assert_eq!(r.env_id(), None, "nothing started: {}", r.show());
        assert!(left.is_empty(), "the relative socket became volume {left:?}");
    });
    // The same socket by its absolute path is accepted (the refusal was for the spelling).
    let mut c = didx_cmd(&["--ssh-agent", "--clean", "anycase", "sh -c 'test -S $SSH_AUTH_SOCK && echo socket'"]);
    c.env("SSH_AUTH_SOCK", dir.join(&name)).current_dir(&dir);
    let r = from_output(c.output().unwrap());
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("socket"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    assert!(volumes_named().is_empty());
}

/// The contract's proof, as whoever runs the tests (root here): a file made in /work is the
/// host user's, `id -G` shows every host gid, `whoami` and `~` work, and the client's docker
/// CLI still reaches the inner engine as that user.
#[test]
fn workdir_here_and_user_host_run_commands_in_work_as_the_host_user() {
    let dir = temp_dir("host");
    let _c = Cleanup(dir.clone());
    let mut c = didx_cmd(&["--workdir-here", "--user", "host", "--clean", "anycase", PROBE]);
    c.current_dir(&dir);
    let r = from_output(c.output().unwrap());
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        let out = &r.stdout;
        assert_eq!(field(out, "pwd"), "/work");
        // SAFETY: plain libc calls.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((field(out, "uid"), field(out, "gid")), (uid.to_string().as_str(), gid.to_string().as_str()));
        assert_eq!(words(field(out, "groups")), words(&host_out("id", &["-G"])), "every host gid: {out}");
        assert_eq!(field(out, "whoami"), host_out("id", &["-un"]));
        assert_eq!(field(out, "home"), "/work");
        assert!(!field(out, "server").is_empty(), "the inner engine answered: {}", r.show());
        let made = std::fs::metadata(dir.join("made-here")).unwrap();
        assert_eq!((made.uid(), made.gid()), (uid, gid));
        assert_eq!(std::fs::read_to_string(dir.join("made-here")).unwrap(), "hello\n");
        assert_gone(&r.env_id().unwrap());
    });
}

/// The non-root case, through the library: explicit ids with two supplementary groups none of
/// which the client image knows; files made in /work carry them, and the client certificate
/// is that user's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_user_with_two_supplementary_groups_owns_what_it_makes() {
    let dir = temp_dir("nonroot");
    let _c = Cleanup(dir.clone());
    // The user must be able to write /work: the directory is shared with its primary group.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let engine = didx::Engine::connect(None).await.unwrap();
    let user = didx::spec::UserSpec::Ids { uid: 4321, gid: Some(4322), groups: vec![4323, 4324] };
    let sb = didx::Sandbox::builder().cwd(&dir).workdir_here(true).user(user).start(&engine).await.unwrap();
    let id = sb.id().to_string();
    let probe = shell_words_split(PROBE);
    let out = sb.exec(probe).await.unwrap();
    let certs = sb.exec(["sh", "-c", "stat -c '%a %u:%g %n' /certs/client/key.pem /certs/client/cert.pem /certs/client"]).await.unwrap();
    sb.rm().await.unwrap();
    let text = out.stdout_text();
    assert!(out.success(), "{out:?}");
    assert_eq!(field(&text, "pwd"), "/work");
    assert_eq!((field(&text, "uid"), field(&text, "gid")), ("4321", "4322"));
    assert_eq!(words(field(&text, "groups")), words("4322 4323 4324"), "{text}");
    assert_eq!(field(&text, "whoami"), "u4321");
    assert_eq!(field(&text, "home"), "/work");
    assert!(!field(&text, "server").is_empty(), "the inner engine answered as uid 4321: {out:?}");
    let made = std::fs::metadata(dir.join("made-here")).unwrap();
    assert_eq!((made.uid(), made.gid()), (4321, 4322));
    assert_eq!(
        certs.stdout_text(),
        "600 4321:4322 /certs/client/key.pem\n644 4321:4322 /certs/client/cert.pem\n755 4321:4322 /certs/client\n",
        "{certs:?}"
    );
    assert!(leftovers(Some(&id)).await.is_empty());
}

/// Without `--workdir-here`, the user's home is `/home/NAME`, made for it and private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_workdir_the_home_is_made_under_home() {
    let engine = didx::Engine::connect(None).await.unwrap();
    let user = didx::spec::UserSpec::Ids { uid: 4331, gid: None, groups: vec![] };
    let sb = didx::Sandbox::builder().user(user).start(&engine).await.unwrap();
    let id = sb.id().to_string();
    let out = sb.exec(["sh", "-c", "cd ~ && pwd && touch x && stat -c '%a %u:%g' . && id -G && whoami"]).await.unwrap();
    sb.rm().await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_text(), "/home/u4331\n700 4331:4331\n4331\nu4331\n");
    assert!(leftovers(Some(&id)).await.is_empty());
}

/// `--ssh-agent` reaches an agent this test started, holding a key it made: a tiny agent
/// protocol client in the client (perl, which Debian's essential set has; the offline image
/// has no ssh-add) asks for the identities and prints the key's comment.
#[test]
fn ssh_agent_lists_the_keys_of_the_test_agent() {
    let dir = temp_dir("agent");
    let _c = Cleanup(dir.clone());
    let sock = dir.join("agent.sock");
    let key = dir.join("key");
    let comment = format!("didx-launcher-test-{}", std::process::id());
    let agent = Command::new("ssh-agent").arg("-a").arg(&sock).arg("-s").output().expect("ssh-agent (apt install openssh-client)");
    assert!(agent.status.success(), "{agent:?}");
    let pid: i32 = String::from_utf8_lossy(&agent.stdout)
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|p| p.parse().ok())
        .expect("the agent's pid");
    struct Agent(i32);
    impl Drop for Agent {
        fn drop(&mut self) {
            // SAFETY: signals the agent this test started, by its pid.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
        }
    }
    let _agent = Agent(pid);
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"]).arg(&key).output().unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let add = Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &sock).output().unwrap();
    assert!(add.status.success(), "{add:?}");

    let list = r#"perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ENV{SSH_AUTH_SOCK}) or die "connect $ENV{SSH_AUTH_SOCK}: $!\n"; print $s pack("NC", 1, 11); read($s, $l, 4) == 4 or die "no answer\n"; $n = unpack("N", $l); read($s, $b, $n) == $n or die "short answer\n"; ($t, $k) = unpack("CN", $b); print "type=$t\nkeys=$k\n"; $o = 5; for (1 .. $k) { $bl = unpack("N", substr($b, $o, 4)); $o += 4 + $bl; $cl = unpack("N", substr($b, $o, 4)); print "comment=", substr($b, $o + 4, $cl), "\n"; $o += 4 + $cl }'"#;
    let mut c = didx_cmd(&["--ssh-agent", "--user", "host", "--clean", "anycase", "sh -c 'echo sock=$SSH_AUTH_SOCK'", list]);
    c.env("SSH_AUTH_SOCK", &sock).current_dir(&dir);
    let r = from_output(c.output().unwrap());
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert_eq!(field(&r.stdout, "sock"), "/run/didx/ssh-agent.sock");
        // SSH2_AGENT_IDENTITIES_ANSWER (12), the one key the test added.
        assert_eq!((field(&r.stdout, "type"), field(&r.stdout, "keys")), ("12", "1"), "{}", r.show());
        assert_eq!(field(&r.stdout, "comment"), comment);
        assert_gone(&r.env_id().unwrap());
    });
    assert!(Path::new(&sock).exists(), "the agent's socket is the host's; didx leaves it alone");
}

fn shell_words_split(s: &str) -> Vec<String> {
    match didx::spec::Step::parse(s).unwrap() {
        didx::spec::Step::Client(argv) => argv,
        other => panic!("{other:?}"),
    }
}

/// A client image without a docker CLI (didx/dind-busybox:local with every `docker` on its
/// PATH removed, committed as a test image and removed after) gets the server's copied in at
/// /didx/bin, first on the COMMANDs' PATH, and reaches the inner engine with it.
#[test]
fn a_client_image_without_docker_gets_the_server_s_cli() {
    use bollard::query_parameters as qp;
    let rt = rt();
    let host = bollard::Docker::connect_with_local_defaults().unwrap();
    let pid = std::process::id();
    let (repo, tag) = ("didx-test-nodocker", format!("t{pid}"));
    let image = format!("{repo}:{tag}");
    let maker = format!("didx_test_nodocker_{pid}");
    let labels = std::collections::HashMap::from([("io.didx.test".to_string(), "launcher".to_string())]);
    let body = bollard::models::ContainerCreateBody {
        image: Some("didx/dind-busybox:local".into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["for d in $(echo \"$PATH\" | tr : ' '); do rm -f \"$d/docker\"; done; ! command -v docker".into()]),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    rt.block_on(async {
        host.create_container(Some(qp::CreateContainerOptions { name: Some(maker.clone()), ..Default::default() }), body).await.unwrap();
        let made = async {
            host.start_container(&maker, None::<qp::StartContainerOptions>).await?;
            let mut wait = host.wait_container(&maker, None::<qp::WaitContainerOptions>);
            while futures_util::StreamExt::next(&mut wait).await.transpose()?.is_some() {}
            let opts = qp::CommitContainerOptions {
                container: Some(maker.clone()),
                repo: Some(repo.into()),
                tag: Some(tag.clone()),
                ..Default::default()
            };
            host.commit_container(opts, bollard::models::ContainerConfig { labels: Some(labels), ..Default::default() }).await?;
            Ok::<(), bollard::errors::Error>(())
        }
        .await;
        host.remove_container(&maker, Some(qp::RemoveContainerOptions { force: true, ..Default::default() })).await.unwrap();
        made.unwrap();
    });

    let probe = r#"sh -c 'echo docker=$(command -v docker); echo server=$(docker version --format {{.Server.Version}})'"#;
    let r = didx(&["--client-image", &image, "--clean", "anycase", probe]);
    let removed = rt.block_on(host.remove_image(&image, Some(qp::RemoveImageOptions { force: true, ..Default::default() }), None));
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert_eq!(field(&r.stdout, "docker"), "/didx/bin/docker", "{}", r.show());
        assert!(!field(&r.stdout, "server").is_empty(), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    removed.unwrap();
}

/// A pooled environment serves a launcher run: the claim swaps in a client with `/work`
/// bound, and the user is made in that client (files in /work are the user's).
#[test]
fn a_pooled_environment_serves_a_launcher_run() {
    let _pool = OwnPool::new("launcher");
    let dir = temp_dir("pool");
    let _c = Cleanup(dir.clone());
    std::os::unix::fs::chown(&dir, Some(4321), Some(4321)).unwrap();
    let cache = temp_dir("pool-cache");
    let _cc = Cleanup(cache.clone());
    let in_cache = |args: &[&str]| {
        let mut c = didx_cmd(args);
        c.env("DIDX_CACHE_DIR", &cache).current_dir(&dir);
        from_output(c.output().unwrap())
    };
    let up = in_cache(&["pool", "up", "1"]);
    assert_eq!(up.code, 0, "{}", up.show());
    let pooled: Vec<String> = parse_pool_listing(&in_cache(&["pool"]).stdout).into_iter().map(|(env, _)| env).collect();
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    let run = in_cache(&["--pool", "--workdir-here", "--user", "4321:4321", "--clean", "anycase", "id -u", "sh -c 'echo hi > made'"]);
    let down = in_cache(&["pool", "down"]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(run.env_id().as_deref(), Some(pooled[0].as_str()), "the pooled environment served it: {}", run.show());
    assert_eq!(run.stdout.trim(), "4321", "{}", run.show());
    let made = std::fs::metadata(dir.join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (4321, 4321));
    assert_eq!(down.code, 0, "{}", down.show());
    // The run's (the pooled one) ends by its lease, within moments of the run's end.
    for id in pooled.iter().chain(run.env_id().iter()) {
        assert_ends(id);
    }
}
