//! Files out of an environment: `--cp-out` after a run's commands (whether they succeeded or
//! failed), into a directory, as a named path, a directory's contents; a symbolic link already
//! on this machine in the way, which must not be written through (the attack: the client's
//! tree names the link's path); `didx cp` out of and into a running environment. Each test
//! leaves the engine as found.

mod common;

use common::*;

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("didx-artifacts-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn cp_out_copies_what_the_commands_made_even_when_one_failed_and_never_writes_through_a_link_here() {
    use std::os::unix::fs::PermissionsExt;
    let d = scratch("cpout");
    let (dir, all, renamed) = (format!("{}/", d.display()), format!("{}/all", d.display()), format!("{}/tree-renamed", d.display()));
    let make = "mkdir -p /work/out/sub /work/tree && echo '<ok/>' > /work/out/report.xml && echo y > /work/out/sub/y \
                && chmod 0750 /work/out/sub && echo t > /work/tree/t";
    let r = didx(&[
        "--clean",
        "anycase",
        "--cp-out",
        &format!("/work/out/report.xml:{dir}"),
        "--cp-out",
        &format!("/work/out/.:{all}"),
        "--cp-out",
        &format!("/work/tree:{renamed}"),
        &format!("sh -c \"{make}\""),
        "sh -c 'exit 5'",
    ]);
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    assert_gone(&id);
    assert_eq!(r.code, 5, "the failed command's code, the outputs copied all the same: {}", r.show());
    assert_eq!(std::fs::read_to_string(d.join("report.xml")).unwrap(), "<ok/>\n");
    assert_eq!(
        std::fs::read_to_string(d.join("all/report.xml")).unwrap(),
        "<ok/>\n",
        "{:?}",
        std::fs::read_dir(&d).unwrap().collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read_to_string(d.join("all/sub/y")).unwrap(), "y\n");
    assert_eq!(std::fs::metadata(d.join("all/sub")).unwrap().permissions().mode() & 0o7777, 0o750, "modes kept");
    assert_eq!(std::fs::read_to_string(d.join("tree-renamed/t")).unwrap(), "t\n");
    assert!(r.stderr.contains("copied /work/out/report.xml out of the client"), "{}", r.show());

    // The attack: a link here, in the target, to a directory outside it; the client's tree has
    // a directory of the same name. Nothing lands outside, the run fails, the sandbox goes.
    let outside = scratch("cpout-outside");
    std::os::unix::fs::symlink(&outside, d.join("trap")).unwrap();
    let r = didx(&[
        "--clean",
        "anycase",
        "--cp-out",
        &format!("/work/trap:{dir}"),
        "sh -c 'mkdir -p /work/trap && echo owned > /work/trap/pwned'",
    ]);
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    assert_gone(&id);
    assert_ne!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains("symbolic link on this machine"), "{}", r.show());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "written through the link");

    // Bad specs: one line, exit 2, nothing started.
    for bad in ["relative/path:./x", "/work/x:"] {
        let r = didx(&["--clean", "anycase", "--cp-out", bad, "true"]);
        assert_eq!(r.code, 2, "{bad}: {}", r.show());
        assert_eq!(r.stderr.trim().lines().count(), 1, "{bad}: {}", r.show());
        assert!(r.stderr.contains("--cp-out") && r.env_id().is_none(), "{bad}: {}", r.show());
    }
    std::fs::remove_dir_all(&d).ok();
    std::fs::remove_dir_all(&outside).ok();
}

#[test]
fn didx_cp_copies_out_of_and_into_a_running_environment() {
    let d = scratch("cp");
    let r = didx(&["--clean", "none", "sh -c 'mkdir -p /work && echo made-inside > /work/a.txt'"]);
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    with_cleanup(r, |_| {
        let dir = format!("{}/", d.display());
        let out = didx(&["cp", &format!("{id}:/work/a.txt"), &dir]);
        assert_eq!(out.code, 0, "{}", out.show());
        assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "made-inside\n");
        std::fs::write(d.join("in.txt"), "made-here\n").unwrap();
        let into = didx(&["cp", &d.join("in.txt").display().to_string(), &format!("{id}:/work/")]);
        assert_eq!(into.code, 0, "{}", into.show());
        let back = didx(&["cp", &format!("{id}:/work/in.txt"), &d.join("back.txt").display().to_string()]);
        assert_eq!(back.code, 0, "{}", back.show());
        assert_eq!(std::fs::read_to_string(d.join("back.txt")).unwrap(), "made-here\n");
        // A path the client lacks: an error, nothing written.
        let missing = didx(&["cp", &format!("{id}:/work/nope"), &dir]);
        assert_ne!(missing.code, 0, "{}", missing.show());
        assert!(!d.join("nope").exists());
        // Both sides in a client, or neither: usage.
        for (a, b) in [(format!("{id}:/a"), format!("{id}:/b")), ("./a".to_string(), "./b".to_string())] {
            let u = didx(&["cp", &a, &b]);
            assert_eq!(u.code, 2, "{}", u.show());
        }
    });
    assert_running_then_remove(&id);
    std::fs::remove_dir_all(&d).ok();
}

/// `--save IMAGE`: an image made in the inner engine (a commit there: an ID the host never
/// had) put into the host engine when the COMMANDs succeeded; none when one failed; a save of
/// an image the inner engine lacks fails the run and puts nothing here; a bad name is a usage
/// line. The host engine ends as it began.
#[test]
fn save_puts_an_image_of_the_inner_engine_into_the_host_engine_when_the_commands_succeeded() {
    let tag = std::process::id();
    let (base, saved, not_saved) = (format!("didx-save-base:{tag}"), format!("didx-saved:{tag}"), format!("didx-not-saved:{tag}"));
    let host = bollard::Docker::connect_with_defaults().unwrap();
    let exists = |image: &str| rt().block_on(host.inspect_image(image)).ok().and_then(|i| i.id);
    let made = HostImages(vec![saved.clone(), not_saved.clone(), base.clone()]);
    rt().block_on(async { busybox_image(&engine().await, &base).await });
    let make = |name: &str| format!("sh -c 'docker run --name made {base} sh -c \"echo made > /made\" && docker commit made {name}'");
    let r = didx(&["--clean", "anycase", "--load", &base, "--save", &saved, &make(&saved)]);
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    assert_gone(&id);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains(&format!("saved {saved}")), "{}", r.show());
    let (saved_id, base_id) = (exists(&saved), exists(&base));
    assert!(saved_id.is_some() && saved_id != base_id, "{saved} on the host: {saved_id:?} (base {base_id:?})");

    // A COMMAND failed: nothing is saved.
    let r = didx(&["--clean", "anycase", "--load", &base, "--save", &not_saved, &make(&not_saved), "sh -c 'exit 4'"]);
    assert_eq!(r.code, 4, "{}", r.show());
    assert_gone(&r.env_id().unwrap());
    assert_eq!(exists(&not_saved), None);
    // An image the inner engine lacks: the run fails, nothing is put here.
    let r = didx(&["--clean", "anycase", "--save", &not_saved, "true"]);
    assert_ne!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains("docker save"), "{}", r.show());
    assert_gone(&r.env_id().unwrap());
    assert_eq!(exists(&not_saved), None);
    // A bad name: one usage line, nothing started.
    let r = didx(&["--clean", "anycase", "--save", "bad name", "true"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.env_id().is_none() && r.stderr.contains("--save"), "{}", r.show());

    drop(made);
    assert_eq!((exists(&saved), exists(&base)), (None, None), "the host engine as it began");
}
