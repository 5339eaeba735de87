//! docker:*-dind-style images. Those images' /bin/sh is busybox ash and busybox is every core
//! tool; didx places its entrypoint into every container it creates, so servers and clients
//! made from such an image must behave as with didx's own Debian image. didx/dind-busybox:local
//! is that image, built offline by scripts/busybox-dind-image.sh (scripts/setup.sh runs it):
//! busybox-static, with Docker's binaries and iptables copied from didx/dind:local. Both lanes
//! run these (the book, docs/src/testing.md, "Tested where").

mod common;

use common::*;

const IMAGE: &str = "didx/dind-busybox:local";

fn with_image<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--server-image", IMAGE, "--client-image", IMAGE];
    a.extend_from_slice(args);
    a
}

fn require_image() {
    let have = rt().block_on(async { engine().await.image(IMAGE).await.unwrap() });
    assert!(have.is_some(), "{IMAGE} is missing: build it with scripts/busybox-dind-image.sh (scripts/setup.sh does)");
}

#[test]
fn busybox_servers_and_clients_run_commands_keep_exit_codes_and_clean_up() {
    require_image();
    let tag = format!("didx-test-bbinner:{}", std::process::id());
    let make_image = format!("didx-busybox-image {tag}");
    let inner = format!("run --rm {tag} echo inner-ok");
    let r = didx(&with_image(&["--clean", "anycase", "sh -c 'readlink /bin/sh; readlink /bin/ls'", "version", &make_image, &inner]));
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        // The client's shell and tools are busybox: the commands ran in this image.
        assert_eq!(r.stdout.matches("/bin/busybox").count(), 2, "{}", r.show());
        assert!(r.stdout.contains("inner-ok"), "{}", r.show());
        assert!(r.stderr.contains(&format!("successfully started ({IMAGE},")), "server image: {}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    // A failing command's code is didx's, and anycase still removes everything.
    with_cleanup(didx(&with_image(&["--clean", "anycase", "sh -c 'exit 7'", "version"])), |r| {
        assert_eq!(r.code, 7, "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn busybox_servers_nest_cgroups_in_both_isolation_modes() {
    require_image();
    check_isolations(&["--server-image", IMAGE, "--client-image", IMAGE], &format!("bb{}", std::process::id()));
}

#[test]
fn busybox_clients_take_cp_v_and_load() {
    require_image();
    let dir = std::env::temp_dir().join(format!("didx-test-bbfiles-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tree/sub")).unwrap();
    std::fs::write(dir.join("tree/sub/file"), "copied\n").unwrap();
    std::fs::create_dir_all(dir.join("bind")).unwrap();
    std::fs::write(dir.join("bind/from-host"), "bound\n").unwrap();
    let seed = format!("didx-test-bbseed:{}", std::process::id());
    rt().block_on(async { busybox_image(&engine().await, &seed).await });
    let cp = format!("{}:/work", dir.join("tree").display());
    let v = format!("{}:/mnt/host", dir.join("bind").display());
    let inner = format!("run --rm {seed} sh -c 'echo seeded-ok'");
    let r = didx(&with_image(&[
        "--clean",
        "anycase",
        "--cp",
        &cp,
        "-v",
        &v,
        "--load",
        &seed,
        "sh -c 'cat /work/sub/file /mnt/host/from-host && echo c > /mnt/host/from-client'",
        &inner,
    ]));
    let removed = rt().block_on(async { engine().await.remove_image(&seed).await });
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("copied") && r.stdout.contains("bound"), "{}", r.show());
        assert!(r.stdout.contains("seeded-ok"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
    removed.unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("bind/from-client")).unwrap(), "c\n");
    std::fs::remove_dir_all(&dir).ok();
}

/// The pool listing (`didx pool`): (environment id, state) pairs, ready or not.
fn pooled(run: &dyn Fn(&[&str]) -> Run) -> Vec<(String, String)> {
    let r = run(&["pool"]);
    assert_eq!(r.code, 0, "{}", r.show());
    parse_pool_listing(&r.stdout)
}

#[test]
fn busybox_pooled_environments_are_claimed_refilled_and_removed() {
    let _pool = OwnPool::new("busybox");
    require_image();
    let cache = std::env::temp_dir().join(format!("didx-test-bbpool-{}", std::process::id()));
    std::fs::create_dir_all(&cache).unwrap();
    let run = |args: &[&str]| from_output(didx_cmd(args).env("DIDX_CACHE_DIR", &cache).output().unwrap());
    let up = run(&["pool", "up", "--events", "json", "--server-image", IMAGE, "--client-image", IMAGE, "1"]);
    assert_eq!(up.code, 0, "{}", up.show());
    let id = up.pool_ready().pop().unwrap_or_else(|| panic!("pool up named no ready environment: {}", up.show()));
    let claimed = run(&with_image(&["--pool", "--clean", "anycase", "sh -c 'readlink /bin/sh'", "version"]));
    // The claim starts a refill in the background: wait for it (bounded), then empty the pool.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !pooled(&run).iter().any(|(other, state)| *other != id && state == "ready") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let refilled = pooled(&run);
    let down = run(&["pool", "down"]);
    with_cleanup(claimed, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("/bin/busybox"), "{}", r.show());
        assert_eq!(r.env_id().as_deref(), Some(id.as_str()), "the run did not take the pooled environment: {}", r.show());
        assert_ends(&id);
    });
    assert_eq!(down.code, 0, "{}", down.show());
    assert!(refilled.iter().any(|(_, state)| state == "ready"), "no refill: {refilled:?}");
    for (other, _) in &refilled {
        assert_gone(other);
    }
    std::fs::remove_dir_all(&cache).ok();
}
