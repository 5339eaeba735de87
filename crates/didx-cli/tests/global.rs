//! Engine-wide behaviour: `--clean rpt` and `--clean all`, and bad input creating nothing.
//! These look at every didx resource on the engine, so they run one at a time (a lock) and
//! in their own test binary (cargo runs test binaries one after another).

mod common;

use std::sync::Mutex;

use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn assert_engine_clean() {
    let left = rt().block_on(leftovers(None));
    assert!(left.is_empty(), "didx resources on the engine: {left:?}");
}

#[test]
fn rpt_lists_and_all_removes_only_didx_environments() {
    let _g = serial();
    assert_engine_clean();
    let a = didx(&[]);
    let b = didx(&["--cv", "other"]);
    // b's client image docker:other is missing and maps to the local image as well.
    let ids: Vec<String> = [&a, &b].iter().filter_map(|r| r.env_id()).collect();
    // A container that merely looks like didx's by name must survive --clean all.
    let decoy = "dind_decoy00000_server_latest";
    rt().block_on(async {
        let e = engine().await;
        let body = bollard::models::ContainerCreateBody { image: Some(didx::images::LOCAL_IMAGE.into()), ..Default::default() };
        e.create_container(decoy, body).await.unwrap();
    });
    let result = std::panic::catch_unwind(|| {
        assert_eq!(a.code, 0, "{}", a.show());
        assert_eq!(b.code, 0, "{}", b.show());
        assert_eq!(ids.len(), 2);
        let rpt = didx(&["--clean", "rpt"]);
        assert_eq!(rpt.code, 0, "{}", rpt.show());
        for id in &ids {
            let lines: Vec<&str> = rpt.stdout.lines().filter(|l| l.starts_with(id.as_str())).collect();
            assert_eq!(lines.len(), 2, "{}", rpt.show());
            assert!(lines.iter().all(|l| l.contains("running")), "{}", rpt.show());
            // Certificates expire in 30 days (bounded validity), shown as a UTC date.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let d = time::OffsetDateTime::from_unix_timestamp((now + 30 * 24 * 3600) as i64).unwrap();
            let day = format!("{}-{:02}-{:02}", d.year(), d.month() as u8, d.day());
            assert!(lines.iter().all(|l| l.contains(&day)), "expiry {day} not shown: {}", rpt.show());
        }
        assert!(rpt.stdout.contains(&format!("dind_{}_client_other", ids[1])), "{}", rpt.show());
        assert!(!rpt.stdout.contains("decoy"), "{}", rpt.show());
        let all = didx(&["--clean", "all"]);
        assert_eq!(all.code, 0, "{}", all.show());
        assert_eq!(all.stderr.matches("terminated & destroyed").count(), 4, "{}", all.show());
        assert_engine_clean();
        let rpt = didx(&["--clean", "rpt"]);
        assert!(rpt.stderr.contains("0 environment(s)"), "{}", rpt.show());
    });
    let decoy_survived = rt().block_on(async {
        let e = engine().await;
        let there = e.inspect(decoy).await.is_ok();
        e.remove_container(decoy).await.unwrap();
        for id in &ids {
            didx::env::remove(&e, id).await.unwrap();
        }
        there
    });
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert!(decoy_survived, "--clean all removed a container didx did not create");
    assert_engine_clean();
}

/// Each bad input: usage (2) or didx (125) exit code, one line on stderr naming the problem
/// and the fix, and nothing created.
#[test]
fn bad_input_is_one_clear_line_and_creates_nothing() {
    let _g = serial();
    assert_engine_clean();
    let cases: &[(&[&str], i32, &[&str])] = &[
        (&["--clean", "sometimes", "version"], 2, &["--clean", "sometimes", "anycase"]),
        (&["-v", "rel/path:/x", "version"], 2, &["-v", "rel/path:/x", "ABSOLUTE_CLIENT_PATH"]),
        (&["-v", "/a:/b:bogus", "version"], 2, &["-v", "MODE"]),
        (&["-v", "./no-such-dir-for-didx:/x", "version"], 2, &["does not exist"]),
        (&["--cv-env", "1BAD", "version"], 2, &["--cv-env", "1BAD", "shell variable name"]),
        (&["--no-such-option", "version"], 2, &["--no-such-option", "--help"]),
        (&["--isolation", "maybe"], 2, &["--isolation", "auto, privileged, caps"]),
        (&["--sv", "a:b"], 2, &["--sv", "a:b"]),
        (&["sh -c 'unbalanced"], 2, &["COMMAND", "quotes"]),
        (&["--clean", "all", "version"], 2, &["runs no commands"]),
        (&["image"], 2, &["didx image build", "didx -- image"]),
        (&["-H", "unix:///no/such/docker.sock", "version"], 125, &["cannot reach", "ensure-engine.sh"]),
        (&["-H", "ftp://x", "version"], 2, &["engine address", "unix://"]),
        (&["--server-image", "didx-test/absent:1", "version"], 125, &["didx-test/absent:1", "didx image build"]),
        (&["-v", "/m", "-v", "/tmp:/m/", "true"], 2, &["-v target", "/m", "twice"]),
        (&["--cp", "/no/such/didx/file:/x", "true"], 2, &["--cp", "does not exist"]),
        (&["--cp", "didx_no_such_container:/etc:/x", "true"], 2, &["no container"]),
        (&["--cp", "didx-no-such-image:1::/etc:/x", "true"], 2, &["no such image"]),
        (&["--cp", "/etc/hostname", "true"], 2, &["--cp", "SOURCE:ABSOLUTE_CLIENT_PATH"]),
        (&["--load", "didx-no-such-image:1", "true"], 2, &["--load", "no such image"]),
        // Values that could pose as didx's own names, state or paths.
        (&["--sv", "x_starting", "true"], 2, &["--sv", "x_starting", "reserved"]),
        (&["--cv", "1_pooled", "true"], 2, &["--cv", "1_pooled", "reserved"]),
        (&["-v", "/m", "-v", "/tmp:/m/.", "true"], 2, &["-v target", "/m", "twice"]),
        (&["-v", "/tmp:/didx", "true"], 2, &["-v target", "/didx", "didx's own"]),
        (&["-v", "/certs/client", "true"], 2, &["-v target", "/certs", "didx's own"]),
        (&["-v", "/tmp:/", "true"], 2, &["-v target", "root"]),
        (&["-v", "/tmp:/a/../b", "true"], 2, &["-v target", "'..'"]),
    ];
    for (args, code, needles) in cases {
        let r = didx(args);
        assert_eq!(r.code, *code, "{args:?}: {}", r.show());
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {}", r.show());
        for n in *needles {
            assert!(lines[0].contains(n), "{args:?}: {n:?} missing: {}", r.show());
        }
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.show());
        assert_engine_clean();
    }
}

#[test]
fn help_shows_the_host_storage_driver_and_exit_codes() {
    let _g = serial();
    let driver = rt().block_on(async { engine().await.info().await.unwrap().driver.unwrap() });
    let r = didx(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains(&format!("[default: {driver}, the host engine's]")), "{}", r.show());
    for needle in ["125", "130", "--clean", "--cv-env", "didx image build", "--"] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.show());
    }
}

#[test]
fn double_dash_forces_the_command_reading_of_a_verb_name() {
    let _g = serial();
    let r = didx(&["--clean", "anycase", "--", "image", "-D info --format {{.ServerVersion}}"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("[1/2] docker image"), "{}", r.show());
        assert!(r.stderr.contains("[2/2] docker -D info"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

/// Containers made by the didx process `pid` (their owner label), still on the engine.
fn containers_of_pid(pid: u32) -> Vec<String> {
    rt().block_on(async {
        let filter = std::collections::HashMap::from([("label".to_string(), vec![didx::labels::OWNER.to_string()])]);
        let cs = engine().await.containers(filter).await.unwrap();
        cs.into_iter()
            .filter(|c| c.labels.as_ref().and_then(|l| l.get(didx::labels::OWNER)).is_some_and(|o| o.ends_with(&format!(" pid {pid}"))))
            .map(|c| format!("{:?}", c.names))
            .collect()
    })
}

/// The names in `dir` (empty when it is absent or unreadable).
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// The cache directory holds client keys and the engine proxy's sockets: one others may write,
/// another user's, a link to such, or a relative one (which the engine would take for a volume
/// name) is refused before anything is made: exit 2, one line naming it and the fix, nothing
/// written into it, no container of that didx process on the engine.
#[test]
fn an_unfit_cache_directory_is_refused_and_nothing_is_created() {
    use std::os::unix::fs::PermissionsExt;
    // Its last run makes an environment: not while another test here checks the engine clean.
    let _g = serial();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                eprintln!("removing {}: {e}", self.0.display());
            }
        }
    }
    let base = std::env::temp_dir().join(format!("didx-test-unfit-cache-{}", std::process::id()));
    private_dir(&base);
    let _rm = Rm(base.clone());
    let made = |name: &str, mode: u32| {
        let d = base.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        // Something in it, so an unchanged listing means something.
        std::fs::write(d.join("isolation-x"), "caps\n").ok();
        d
    };
    let open = made("open", 0o777);
    let group = made("group", 0o770);
    let foreign = made("foreign", 0o700);
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown (the tests run as root)");
    let link = base.join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let cases: [(&std::path::Path, &str); 5] = [
        (&open, "writable by its group or others (mode 0777)"),
        (&group, "(mode 0770)"),
        (&foreign, "owned by uid 65534"),
        (&link, "(mode 0777)"),
        (std::path::Path::new("rel-cache"), "DIDX_CACHE_DIR is a relative path"),
    ];
    let runs: [&[&str]; 3] = [&["--clean", "anycase", "true"], &["--engine", "host", "--clean", "anycase", "true"], &["pool", "up", "1"]];
    for (dir, says) in cases {
        for args in runs {
            let before = names_in(&base.join(dir));
            let child = didx_cmd(args)
                .env("DIDX_CACHE_DIR", dir)
                .current_dir(&base)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            let r = from_output(child.wait_with_output().unwrap());
            let what = format!("DIDX_CACHE_DIR={} didx {args:?}", dir.display());
            assert_eq!(r.code, 2, "{what}: {}", r.show());
            let lines: Vec<&str> = r.stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{what}: not one line: {}", r.show());
            assert!(lines[0].contains("invalid cache directory") && lines[0].contains(says), "{what}: {}", r.show());
            assert!(lines[0].contains(&dir.display().to_string()), "{what}: names it: {}", r.show());
            assert_eq!(names_in(&base.join(dir)), before, "{what}: something was written into it");
            assert!(!base.join("rel-cache").exists(), "{what}: made the relative one");
            assert_eq!(r.env_id(), None, "{what}: {}", r.show());
            assert!(containers_of_pid(pid).is_empty(), "{what}: left {:?}", containers_of_pid(pid));
        }
    }
    // The same directory made private again is used (and so was refused for what it was).
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    let r = from_output(didx_cmd(&["--engine", "host", "--clean", "anycase", "true"]).env("DIDX_CACHE_DIR", &link).output().unwrap());
    assert_eq!(r.code, 0, "{}", r.show());
    if let Some(id) = r.env_id() {
        assert_gone(&id);
    }
}
