//! Files and images into an environment: every --cp source kind, stdin streaming, -v (host
//! bind, anonymous volume plus a copy into it), path-escape refusal, missing sources, and
//! --load of a multi-layer image that then runs inside. Each test leaves the engine as found.

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
        &["--clean", "none", "-v", "/data", "--cp", "-:/data/in", r#"sh -c "cat /data/in/x/one.txt /data/in/two.txt; mountpoint -q /data && echo volume""#],
        tar,
    );
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("one\ntwo\nvolume"), "{}", r.show());
        let id = r.env_id().unwrap();
        // The anonymous volume is labelled with the environment and goes with it.
        let vols = rt().block_on(async { engine().await.volumes(didx::labels::filter(Some(&id))).await.unwrap() });
        assert_eq!(vols.len(), 2, "server data + client anonymous volume: {vols:?}");
        rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
        assert_gone(&id);
    });
}

#[test]
fn escaping_archives_are_refused_with_a_failing_exit_code() {
    for (name, entries) in [
        ("dotdot", tar_of(&[("../../etc/evil", b"x")])),
        ("absolute", tar_of(&[("/etc/evil", b"x")])),
    ] {
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
            let body = bollard::models::ContainerCreateBody {
                image: Some(busybox.clone()),
                cmd: Some(vec!["true".into()]),
                ..Default::default()
            };
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

/// Import a busybox image into the host engine from the offline image's busybox binary.
async fn busybox_image(e: &didx::engine::Engine, name: &str) -> String {
    let reader = format!("didx_test_reader_{}", std::process::id());
    let body = bollard::models::ContainerCreateBody { image: Some(didx::images::LOCAL_IMAGE.into()), ..Default::default() };
    let id = e.create_container(&reader, body).await.unwrap();
    let chunks: Vec<bytes::Bytes> = e.download(&id, "/usr/bin/busybox").try_collect().await.unwrap();
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
    for applet in ["sh", "cat", "true", "ls"] {
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
    std::fs::write(d.join("goodbyedind.sh"), "#!/bin/sh\nset -e\ndocker build -t goodbye /mount/ex5/build\ndocker run --rm goodbye\n").unwrap();
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
