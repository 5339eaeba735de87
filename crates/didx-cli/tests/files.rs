//! Files and images into an environment: every --cp source kind, stdin streaming, -v (host
//! bind, anonymous volume plus a copy into it), path-escape refusal, missing sources, and
//! --load of a multi-layer image that then runs inside. Hostile archives, each trick built
//! here byte by byte, through stdin and an image source: refused with nothing left in the
//! client; -v host directories hashed before and after every --cp form aimed at them; the
//! spool file gone even after kill -9. Each test leaves the engine as found.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;
use futures_util::TryStreamExt;

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("didx-files-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn didx_with_stdin(args: &[&str], stdin: Vec<u8>) -> Run {
    let mut child = didx_cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        input.write_all(&stdin).ok();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    from_output(out)
}

#[test]
fn host_paths_keep_modes_symlinks_and_mtimes_and_follow_docker_cp_targets() {
    let d = scratch("host");
    std::fs::create_dir_all(d.join("tree/sub")).unwrap();
    std::fs::write(d.join("tree/a.txt"), "hello\n").unwrap();
    std::fs::write(d.join("tree/sub/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("tree/sub/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("a.txt", d.join("tree/link")).unwrap();
    // mtime 2001-09-09 (1e9 s)
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(d.join("tree/a.txt")).unwrap().set_modified(t).unwrap();
    let tree = format!("{}:/work", d.join("tree").display());
    let into = format!("{}/tree:/into/", d.display());
    let renamed = format!("{}:/etc/renamed.txt", d.join("tree/a.txt").display());
    let r = didx(&[
        "--clean",
        "anycase",
        "--cp",
        &tree,
        "--cp",
        &into,
        "--cp",
        &renamed,
        r#"sh -c "stat -c '%n %a %Y' /work/a.txt /work/sub/run.sh; readlink /work/link; /work/sub/run.sh; cat /into/tree/a.txt /etc/renamed.txt""#,
    ]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("/work/a.txt 644 1000000000"), "{}", r.show());
        assert!(r.stdout.contains("/work/sub/run.sh 750"), "{}", r.show());
        assert!(r.stdout.contains("a.txt\nran\nhello\nhello"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    std::fs::remove_dir_all(&d).ok();
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        let raw = h.as_old_mut().name.as_mut();
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn stdin_tar_streams_into_an_anonymous_volume() {
    let tar = tar_of(&[("x/one.txt", b"one\n"), ("two.txt", b"two\n")]);
    let r = didx_with_stdin(
        &[
            "--clean",
            "none",
            "-v",
            "/data",
            "--cp",
            "-:/data/in",
            r#"sh -c "cat /data/in/x/one.txt /data/in/two.txt; mountpoint -q /data && echo volume""#,
        ],
        tar,
    );
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("one\ntwo\nvolume"), "{}", r.show());
        let id = r.env_id().unwrap();
        let e = rt().block_on(engine());
        // The client's /data is an anonymous volume of its own, and goes with the environment.
        let client = rt().block_on(async {
            let cs = e.containers(didx::labels::filter(Some(&id))).await.unwrap();
            let c = cs.into_iter().find(|c| c.names.iter().flatten().any(|n| n.contains("_client_"))).expect("the client");
            e.inspect(c.id.as_deref().unwrap()).await.unwrap()
        });
        let data = client
            .mounts
            .iter()
            .flatten()
            .find(|m| m.destination.as_deref() == Some("/data"))
            .and_then(|m| m.name.clone())
            .expect("a volume at the client's /data");
        if e.is_podman() {
            // Podman drops the labels of anonymous volumes (MountVolumeOptions.Labels): what
            // is checked is that the client's is there and goes with it.
            eprintln!("Podman: anonymous volumes carry no labels; the client's /data volume is followed by name");
        } else {
            // Labelled with the environment: the server's storage and the client's /data.
            let vols = rt().block_on(async { e.volumes(didx::labels::filter(Some(&id))).await.unwrap() });
            assert_eq!(vols.len(), 2, "server data + client anonymous volume: {vols:?}");
            assert!(vols.contains(&data), "{data} is not among {vols:?}");
        }
        rt().block_on(async { didx::env::remove(&e, &id).await.unwrap() });
        assert_gone(&id);
        let left = rt().block_on(async { e.volumes(std::collections::HashMap::new()).await.unwrap() });
        assert!(!left.contains(&data), "the client's /data volume {data} outlived its environment");
    });
}

#[test]
fn escaping_archives_are_refused_with_a_failing_exit_code() {
    for (name, entries) in [("dotdot", tar_of(&[("../../etc/evil", b"x")])), ("absolute", tar_of(&[("/etc/evil", b"x")]))] {
        let r = didx_with_stdin(&["--clean", "anycase", "--cp", "-:/in", "sh -c 'ls /etc/evil && exit 9; exit 0'"], entries);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 125, "{name}: {}", r.show());
            assert!(r.stderr.contains("refused"), "{name}: {}", r.show());
            assert!(!r.stderr.contains("[1/1]"), "{name}: commands must not run: {}", r.show());
            assert_gone(&r.env_id().unwrap());
        });
    }
}

#[test]
fn host_bind_mount_is_shared_and_never_removed() {
    let d = scratch("bind");
    std::fs::write(d.join("from-host"), "h\n").unwrap();
    let spec = format!("{}:/mnt/host", d.display());
    let r = didx(&["--clean", "anycase", "-v", &spec, "sh -c 'cat /mnt/host/from-host && echo c > /mnt/host/from-client'"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    assert_eq!(std::fs::read_to_string(d.join("from-client")).unwrap(), "c\n");
    std::fs::remove_dir_all(&d).ok();
}

/// A host container and a host image holding /opt/payload/file, made offline from the
/// offline image's busybox; removed at the end.
struct HostSources {
    container: String,
    image: String,
}

impl HostSources {
    fn make(tag: &str) -> HostSources {
        rt().block_on(async {
            let e = engine().await;
            let busybox = busybox_image(&e, &format!("didx-test-bb:{tag}")).await;
            let container = format!("didx_test_src_{tag}");
            let body =
                bollard::models::ContainerCreateBody { image: Some(busybox.clone()), cmd: Some(vec!["true".into()]), ..Default::default() };
            let id = e.create_container(&container, body).await.unwrap();
            let payload = tar_of(&[("opt/payload/file", b"payload\n"), ("opt/payload/more", b"more\n")]);
            e.upload(&id, "/", payload).await.unwrap();
            let image = format!("didx-test-layered:{tag}");
            let (repo, t) = didx::engine::split_reference(&image);
            e.commit(&id, repo, t).await.unwrap();
            HostSources { container, image }
        })
    }
    /// Make the sources, run `f` with them, and remove them whether `f` passes or panics.
    fn with(tag: &str, f: impl FnOnce(&HostSources)) {
        let src = HostSources::make(tag);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&src)));
        src.remove();
        if let Err(p) = outcome {
            std::panic::resume_unwind(p);
        }
    }

    fn remove(&self) {
        rt().block_on(async {
            let e = engine().await;
            e.remove_container(&self.container).await.unwrap();
            e.remove_image(&self.image).await.unwrap();
            let base = self.image.replace("didx-test-layered", "didx-test-bb");
            e.remove_image(&base).await.unwrap();
            assert!(e.image(&self.image).await.unwrap().is_none());
        });
    }
}

#[test]
fn container_and_image_sources_leave_no_reader_behind() {
    let tag = format!("{}c", std::process::id());
    HostSources::with(&tag, |src| {
        let from_container = format!("{}:/opt/payload:/c", src.container);
        let from_image = format!("{}::/opt/payload/file:/i/", src.image);
        let r = didx(&["--clean", "anycase", "--cp", &from_container, "--cp", &from_image, "sh -c 'cat /c/file /c/more /i/file'"]);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 0, "{}", r.show());
            assert!(r.stdout.contains("payload\nmore\npayload"), "{}", r.show());
            assert_gone(&r.env_id().unwrap());
        })
    });
}

#[test]
fn missing_sources_are_errors_before_anything_starts() {
    for (args, needle) in [
        (vec!["--cp", "/no/such/didx/file:/x"], "does not exist"),
        (vec!["--cp", "didx_no_such_container:/etc:/x"], "no container"),
        (vec!["--cp", "didx-no-such-image:1::/etc:/x"], "no such image"),
        (vec!["--load", "didx-no-such-image:1"], "no such image"),
        (vec!["--cp", "-:/a", "--cp", "-:/b"], "one --cp"),
    ] {
        let mut a = vec!["--clean", "anycase"];
        a.extend(args.iter().copied());
        a.push("true");
        let r = didx(&a);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.show());
        assert!(r.env_id().is_none(), "{args:?}: started something: {}", r.show());
    }
    // That nothing at all was created is asserted engine-wide, serially, in tests/global.rs.
}

#[test]
fn load_seeds_a_multi_layer_image_that_then_runs_inside() {
    let tag = format!("{}l", std::process::id());
    HostSources::with(&tag, |src| {
        let run = format!("run --rm {} cat /opt/payload/file", src.image);
        let r = didx(&["--clean", "anycase", "--load", &src.image, "--load", &src.image, &run, "images"]);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 0, "{}", r.show());
            assert!(r.stdout.contains("payload"), "{}", r.show());
            assert_eq!(r.stderr.matches("loaded ").count(), 1, "{}", r.show());
            assert_gone(&r.env_id().unwrap());
        })
    });
}

#[test]
fn readme_ex5_builds_a_mounted_context_on_a_seeded_base_and_runs_it() {
    let d = scratch("ex5");
    std::fs::create_dir_all(d.join("build")).unwrap();
    std::fs::write(
        d.join("build/Dockerfile"),
        "FROM didx/dind:local\nRUN echo \"Goodbye cruel world\" > /goodbye.txt\nENTRYPOINT [\"cat\", \"/goodbye.txt\"]\n",
    )
    .unwrap();
    std::fs::write(d.join("goodbyedind.sh"), "#!/bin/sh\nset -e\ndocker build -t goodbye /mount/ex5/build\ndocker run --rm goodbye\n")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("goodbyedind.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mount = format!("{}:/mount/ex5", d.display());
    let r = didx(&["--clean", "anycase", "--load", "didx/dind:local", "-v", &mount, "/mount/ex5/goodbyedind.sh"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("Goodbye cruel world"), "{}", r.show());
        assert!(r.stderr.contains("loaded didx/dind:local into the inner engine"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    std::fs::remove_dir_all(&d).ok();
}

// ---- Hostile archives: each trick built here, fed to didx, refused with nothing left in the
// client (checked through the engine's archive endpoint with --clean none, then removed).

use didx::copy::validate::craft::{end, entry, gnu_long, pax, simple};

/// The client container of environment `id`.
fn client_of(id: &str) -> String {
    rt().block_on(async {
        let cs = engine().await.containers(didx::labels::filter(Some(id))).await.unwrap();
        let c = cs.iter().flat_map(|c| c.names.clone().unwrap_or_default()).find(|n| n.contains("_client_")).expect("client");
        c.trim_start_matches('/').to_string()
    })
}

/// Whether `path` exists in the client of `id` (as the engine's archive endpoint sees it).
fn exists_in_client(id: &str, path: &str) -> bool {
    let client = client_of(id);
    rt().block_on(async { engine().await.stat_is_dir(&client, path).await.unwrap().is_some() })
}

/// Remove environment `id` and assert it is gone.
fn remove_env(id: &str) {
    rt().block_on(async { didx::env::remove(&engine().await, id).await.unwrap() });
    assert_gone(id);
}

/// Feed `archive` on stdin to `--cp -:/t/` with `--clean none`; assert exit 125, "refused",
/// the command not run, and nothing of the archive in the client; remove the environment.
fn assert_refused_from_stdin(name: &str, archive: Vec<u8>, extra: &[&str], check: impl Fn(&str)) {
    let mut args = vec!["--clean", "none"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--cp", "-:/t/", "sh -c 'echo RAN'"]);
    let r = didx_with_stdin(&args, archive);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 125, "{name}: {}", r.show());
        assert!(r.stderr.contains("refused"), "{name}: {}", r.show());
        assert!(!r.stdout.contains("RAN") && !r.stderr.contains("[1/1]"), "{name}: commands must not run: {}", r.show());
        let id = r.env_id().unwrap();
        assert!(!exists_in_client(&id, "/t"), "{name}: the client holds part of a refused archive");
        check(&id);
        remove_env(&id);
    });
}

/// Each hostile trick, built byte by byte, with a harmless file *before* the bad entry (so a
/// partial extraction would show).
fn hostile_archives() -> Vec<(&'static str, Vec<u8>)> {
    let before = |a: &mut Vec<u8>| simple(a, "first.txt", b'0', "", b"extracted before the bad entry\n");
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut add = |name, f: &dyn Fn(&mut Vec<u8>)| {
        let mut a = Vec::new();
        before(&mut a);
        f(&mut a);
        out.push((name, end(a)));
    };
    add("char device", &|a| simple(a, "dev", b'3', "", b""));
    add("block device", &|a| simple(a, "blk", b'4', "", b""));
    add("fifo", &|a| simple(a, "fifo", b'6', "", b""));
    add("GNU sparse", &|a| {
        pax(a, &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")]);
        simple(a, "sparse", b'0', "", b"");
    });
    add("absolute path", &|a| simple(a, "/etc/evil", b'0', "", b"x"));
    add("dotdot", &|a| simple(a, "../../etc/evil", b'0', "", b"x"));
    add("path via earlier symlink", &|a| {
        simple(a, "l", b'2', "/etc", b"");
        simple(a, "l/evil", b'0', "", b"x");
    });
    add("symlink climbing out", &|a| simple(a, "up", b'2', "../../../etc", b""));
    add("hard link out", &|a| simple(a, "h", b'1', "../../etc/shadow", b""));
    add("hard link to symlink", &|a| {
        simple(a, "l", b'2', "/etc", b"");
        simple(a, "h", b'1', "l", b"");
        simple(a, "h/evil", b'0', "", b"x");
    });
    add("PAX path override", &|a| {
        pax(a, &[("path", b"../../etc/evil")]);
        simple(a, "harmless", b'0', "", b"x");
    });
    add("GNU long name", &|a| {
        gnu_long(a, b'L', b"/etc/evil");
        simple(a, "harmless", b'0', "", b"x");
    });
    add("ustar prefix", &|a| entry(a, b"../..", b"etc/evil", b'0', b"", 0o644, 1, b"x"));
    add("NUL in a name", &|a| {
        pax(a, &[("path", b"a\0b")]);
        simple(a, "x", b'0', "", b"");
    });
    add("newline in a name", &|a| simple(a, "a\nb", b'0', "", b""));
    add("size lie", &|a| {
        entry(a, b"", b"big", b'0', b"", 0o644, 1 << 20, b"");
        a.extend_from_slice(b"only a few bytes");
    });
    out
}

#[test]
fn hostile_archives_from_stdin_are_refused_and_leave_nothing_in_the_client() {
    let all = hostile_archives();
    for (name, archive) in all.iter().take(all.len() / 2) {
        assert_refused_from_stdin(name, archive.clone(), &[], |_| {});
    }
}

#[test]
fn hostile_archives_from_stdin_are_refused_and_leave_nothing_in_the_client_2() {
    let all = hostile_archives();
    for (name, archive) in all.iter().skip(all.len() / 2) {
        assert_refused_from_stdin(name, archive.clone(), &[], |_| {});
    }
}

/// Every file under `d` with its type, mode and content (or link target), sorted: equal
/// before and after means byte-for-byte unchanged.
fn tree_state(d: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let what = if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).unwrap())
        } else {
            format!("file {:?}", std::fs::read(&p).unwrap())
        };
        out.push(format!("{} {:o} {what}", p.strip_prefix(d).unwrap().display(), m.mode()));
    }
    out.sort();
    out
}

fn bind_tree(tag: &str) -> std::path::PathBuf {
    let d = scratch(tag);
    std::fs::create_dir_all(d.join("m/sub/deeper")).unwrap();
    std::fs::write(d.join("m/sub/keep.txt"), "keep me\n").unwrap();
    std::fs::write(d.join("m/sub/deeper/also.txt"), "and me\n").unwrap();
    std::fs::write(d.join("m/top.txt"), "top\n").unwrap();
    d
}

#[test]
fn a_host_bind_mount_is_unchanged_by_hostile_archives_aimed_at_it() {
    let d = bind_tree("bindhostile");
    let before = tree_state(&d.join("m"));
    let mount = format!("{}:/m", d.join("m").display());
    let mut tricks: Vec<(&str, Vec<u8>)> = Vec::new();
    // A fine file first: a partial extraction would show in the tree.
    let mut a = Vec::new();
    simple(&mut a, "new.txt", b'0', "", b"x");
    simple(&mut a, "l", b'2', "/m", b"");
    simple(&mut a, "h", b'1', "l", b"");
    simple(&mut a, "h/evil", b'0', "", b"x");
    tricks.push(("hard link to a symlink to the mount", end(a)));
    let mut a = Vec::new();
    simple(&mut a, "new.txt", b'0', "", b"x");
    simple(&mut a, "sub/up", b'2', "../../../../etc", b"");
    tricks.push(("symlink climbing out", end(a)));
    for (name, archive) in tricks {
        let r = didx_with_stdin(&["--clean", "anycase", "-v", &mount, "--cp", "-:/m/", "sh -c 'echo RAN'"], archive);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 125, "{name}: {}", r.show());
            assert!(!r.stdout.contains("RAN"), "{name}: {}", r.show());
            assert_gone(&r.env_id().unwrap());
        });
        assert_eq!(tree_state(&d.join("m")), before, "{name}: the host directory changed");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_host_directory_mounted_with_v_survives_every_cp_form_aimed_at_it() {
    // Without noOverwriteDirNonDir the engine removes a directory an entry of the same name
    // replaces: with -v, that is the user's host directory (reproduced before the fix).
    let d = bind_tree("bindcp");
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(d.join("src/sub"), "a file named like the host directory\n").unwrap();
    std::fs::write(d.join("sub"), "a lone file named sub\n").unwrap();
    let before = tree_state(&d.join("m"));
    let mount = format!("{}:/m", d.join("m").display());
    let contents = format!("{}/src/.:/m", d.display());
    let into = format!("{}:/m/", d.join("sub").display());
    let into_plain = format!("{}:/m", d.join("sub").display());
    let mut a = Vec::new();
    simple(&mut a, "sub", b'0', "", b"x");
    let file_archive = end(a);
    let mut a = Vec::new();
    simple(&mut a, "sub", b'2', "/etc", b"");
    let link_archive = end(a);
    for (name, cp, stdin) in [
        ("host dir contents", contents.as_str(), None),
        ("host file into", into.as_str(), None),
        ("host file into, no slash", into_plain.as_str(), None),
        ("stdin file", "-:/m/", Some(file_archive)),
        ("stdin symlink", "-:/m", Some(link_archive)),
    ] {
        let args = ["--clean", "anycase", "-v", &mount, "--cp", cp, "sh -c 'echo RAN'"];
        let r = match stdin {
            Some(s) => didx_with_stdin(&args, s),
            None => didx(&args),
        };
        with_cleanup(r, |r| {
            assert_eq!(r.code, 125, "{name}: {}", r.show());
            assert!(r.stderr.contains("non-directory") || r.stderr.contains("overwrite"), "{name}: {}", r.show());
            assert!(!r.stdout.contains("RAN"), "{name}: {}", r.show());
            assert_gone(&r.env_id().unwrap());
        });
        assert_eq!(tree_state(&d.join("m")), before, "{name}: the host directory changed");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn setuid_from_stdin_is_stripped_and_long_names_arrive_whole() {
    let long = format!("{}/{}", "d".repeat(110), "f".repeat(120));
    let mut a = Vec::new();
    entry(&mut a, b"", b"su", b'0', b"", 0o4755, 3, b"su\n");
    pax(&mut a, &[("path", long.as_bytes())]);
    simple(&mut a, "x", b'0', "", b"long\n");
    let cmd = format!("sh -c 'stat -c %a /t/su; cat /t/{long}'");
    let r = didx_with_stdin(&["--clean", "anycase", "--cp", "-:/t/", &cmd], end(a));
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("755\nlong\n"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn a_socket_in_a_host_tree_is_skipped_with_a_warning_and_a_fifo_refused_before_any_byte() {
    let d = scratch("sock");
    std::fs::create_dir_all(d.join("tree")).unwrap();
    std::fs::write(d.join("tree/a.txt"), "a\n").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(d.join("tree/sock")).unwrap();
    let cp = format!("{}:/t", d.join("tree").display());
    let r = didx(&["--clean", "anycase", "--cp", &cp, "sh -c 'cat /t/a.txt; ls /t'"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("skipped t/sock: a socket"), "{}", r.show());
        assert_eq!(r.stdout, "a\na.txt\n", "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    let fifo = std::ffi::CString::new(d.join("tree/fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let r = didx(&["--clean", "none", "--cp", &cp, "sh -c 'echo RAN'"]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 125, "{}", r.show());
        assert!(r.stderr.contains("fifo") && r.stderr.contains("refused"), "{}", r.show());
        let id = r.env_id().unwrap();
        assert!(!exists_in_client(&id, "/t"), "part of a refused host tree reached the client");
        remove_env(&id);
    });
    std::fs::remove_dir_all(&d).ok();
}

/// An image on the host engine holding /good/su (setuid) and /bad/{ok.txt,fifo}, imported
/// from a tar made here, removed at the end.
fn hostile_image(tag: &str) -> String {
    let mut a = Vec::new();
    simple(&mut a, "good/", b'5', "", b"");
    entry(&mut a, b"", b"good/su", b'0', b"", 0o4755, 3, b"su\n");
    simple(&mut a, "bad/", b'5', "", b"");
    simple(&mut a, "bad/ok.txt", b'0', "", b"fine\n");
    simple(&mut a, "bad/fifo", b'6', "", b"");
    let image = format!("didx-test-hostile:{tag}");
    rt().block_on(async {
        let (repo, t) = didx::engine::split_reference(&image);
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(end(a))) });
        engine().await.import(stream, repo, t, vec![]).await.unwrap();
    });
    image
}

fn no_container_uses(image: &str) {
    rt().block_on(async {
        let e = engine().await;
        let filter = std::collections::HashMap::from([("ancestor".to_string(), vec![image.to_string()])]);
        let left = e.containers(filter).await.unwrap();
        assert!(left.is_empty(), "reader containers left: {left:?}");
    });
}

#[test]
fn hostile_image_and_container_sources_are_refused_and_setuid_from_an_image_is_stripped() {
    let image = hostile_image(&format!("{}", std::process::id()));
    let outcome = std::panic::catch_unwind(|| {
        let good = format!("{image}::/good:/g");
        let bad = format!("{image}::/bad:/b");
        let r = didx(&["--clean", "none", "--cp", &good, "--cp", &bad, "sh -c 'echo RAN'"]);
        with_cleanup(r, |r| {
            assert_eq!(r.code, 125, "{}", r.show());
            assert!(r.stderr.contains("refused") && r.stderr.contains("fifo"), "{}", r.show());
            assert!(!r.stdout.contains("RAN"), "{}", r.show());
            let id = r.env_id().unwrap();
            assert!(!exists_in_client(&id, "/b"), "part of a refused image archive reached the client");
            let client = client_of(&id);
            let mode = rt().block_on(async {
                let chunks: Vec<bytes::Bytes> = engine().await.download(&client, "/g/su").try_collect().await.unwrap();
                let data = chunks.concat();
                let mut a = tar::Archive::new(&data[..]);
                a.entries().unwrap().next().unwrap().unwrap().header().mode().unwrap()
            });
            assert_eq!(mode & 0o7777, 0o755, "setuid must be stripped");
            remove_env(&id);
        });
        // A path missing in the image is a usage error before anything starts.
        let missing = format!("{image}::/no/such/path:/x");
        let r = didx(&["--clean", "anycase", "--cp", &missing, "true"]);
        assert_eq!(r.code, 2, "{}", r.show());
        assert!(r.stderr.contains("no such path in that image"), "{}", r.show());
        assert!(r.env_id().is_none(), "started something: {}", r.show());
        no_container_uses(&image);
        // The same through a container made from it (never started).
        let name = format!("didx_test_hostile_{}", std::process::id());
        rt().block_on(async {
            let body =
                bollard::models::ContainerCreateBody { image: Some(image.clone()), cmd: Some(vec!["none".into()]), ..Default::default() };
            engine().await.create_container(&name, body).await.unwrap();
        });
        let inner = std::panic::catch_unwind(|| {
            let bad = format!("{name}:/bad:/b");
            let r = didx(&["--clean", "none", "--cp", &bad, "sh -c 'echo RAN'"]);
            with_cleanup(r, |r| {
                assert_eq!(r.code, 125, "{}", r.show());
                assert!(r.stderr.contains("refused") && r.stderr.contains("fifo"), "{}", r.show());
                assert!(!r.stdout.contains("RAN"), "{}", r.show());
                let id = r.env_id().unwrap();
                assert!(!exists_in_client(&id, "/b"), "part of a refused container archive reached the client");
                remove_env(&id);
            });
            let missing = format!("{name}:/no/such/path:/x");
            let r = didx(&["--clean", "anycase", "--cp", &missing, "true"]);
            assert_eq!(r.code, 2, "{}", r.show());
            assert!(r.stderr.contains("no such path in that container"), "{}", r.show());
            assert!(r.env_id().is_none(), "started something: {}", r.show());
        });
        rt().block_on(async { engine().await.remove_container(&name).await.unwrap() });
        if let Err(p) = inner {
            std::panic::resume_unwind(p);
        }
    });
    rt().block_on(async { engine().await.remove_image(&image).await.unwrap() });
    rt().block_on(async { assert!(engine().await.image(&image).await.unwrap().is_none(), "image left") });
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// The open spool file of process `pid`, if it has one (it is unlinked: "(deleted)").
fn spool_fd(pid: u32) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .find(|p| p.contains("didx-spool"))
}

#[test]
fn a_kill_9_while_spooling_leaves_no_spool_file_behind() {
    let tmp = scratch("spooltmp");
    let mut child = didx_cmd(&["--clean", "anycase", "--cp", "-:/t/", "true"])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The header of a 64 MB file and 1 MB of it; the rest is held back, so didx stays spooling.
    let mut a = Vec::new();
    entry(&mut a, b"", b"big", b'0', b"", 0o644, 64 << 20, b"");
    a.extend_from_slice(&vec![1u8; 1 << 20]);
    input.write_all(&a).unwrap();
    // Poll (no timing asserted; the deadline only stops a hung test) until the spool is open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let open = loop {
        if let Some(p) = spool_fd(child.id()) {
            break p;
        }
        assert!(child.try_wait().unwrap().is_none(), "didx ended before spooling");
        assert!(std::time::Instant::now() < deadline, "didx never opened its spool file");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(open.ends_with("(deleted)"), "the spool file must be unlinked while in use: {open}");
    assert!(std::fs::read_dir(&tmp).unwrap().next().is_none(), "the spool is visible in TMPDIR");
    child.kill().unwrap(); // SIGKILL
    drop(input);
    let r = from_output(child.wait_with_output().unwrap());
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    // A killed didx leaves its environment: remove it (that is --clean's job, not the spool's).
    let id = r.env_id().expect("the environment was started");
    remove_env(&id);
    assert!(left.is_empty(), "kill -9 left {left:?} in TMPDIR");
    std::fs::remove_dir_all(&tmp).ok();
}
