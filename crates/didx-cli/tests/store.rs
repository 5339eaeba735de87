//! The image store (`--store`, `didx store`): an image put into the store once is in every
//! later sandbox, which runs and builds on it and cannot change it; a store of another engine
//! version is never used; concurrent fills leave one copy; `store rm`/`prune` free the space
//! and nothing else.
//!
//! Each test has its own store prefix (`DIDX_STORE_PREFIX`), its own host images, and asserts
//! that neither is left on the engine (a guard removes them if an assertion fails first).

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use didx::bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use didx::engine::Engine;
use didx::labels;

/// The test image's base: a small glibc image every lane has.
const BASE: &str = "didx/dind-busybox:local";
/// The image whose tools read a store volume (coreutils' sha256sum).
const READER: &str = "didx/dind:local";

/// A test's own store prefix and host images; dropping it removes both.
struct Fixture {
    prefix: String,
    images: Vec<String>,
    /// Environments a test keeps running (removed on drop if it fails first).
    envs: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { prefix: format!("didx-t-{}", didx::env::EnvId::generate()), images: Vec::new(), envs: Vec::new() }
    }

    /// A host image of two layers: BASE and one holding `/marker` with `content` (and
    /// `extra_mb` MB of random bytes in `/blob`), tagged `didx-store-test:<prefix>-<name>`.
    fn image(&mut self, name: &str, content: &str, extra_mb: u32) -> String {
        let tag = format!("didx-store-test:{}-{name}", self.prefix);
        let script = format!("echo {content} > /marker && head -c {}000000 /dev/urandom > /blob", extra_mb);
        rt().block_on(async {
            let e = engine().await;
            let (code, out) = run_in(&e, BASE, &[], &["sh", "-c", &script], Some(&tag)).await;
            assert_eq!(code, 0, "{out}");
        });
        self.images.push(tag.clone());
        tag
    }

    fn didx(&self, args: &[&str]) -> Run {
        from_output(self.cmd(args).output().expect("run didx"))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = didx_cmd(args);
        c.env("DIDX_STORE_PREFIX", &self.prefix);
        c
    }

    /// The store volume of didx/dind:local's engine.
    fn store_of(&self, server_image: &str) -> String {
        let stores = rt().block_on(async { volumes_of(&engine().await, &self.prefix).await });
        let version = if server_image.ends_with("26.1.5") { "26.1.5" } else { "20.10" };
        stores.into_iter().find(|s| s.contains(version)).unwrap_or_else(|| panic!("no store for {server_image} under {}", self.prefix))
    }

    /// What of this test is on the engine: store volumes, store containers, host images.
    fn leftovers(&self) -> Vec<String> {
        rt().block_on(async {
            let e = engine().await;
            let mut left: Vec<String> = volumes_of(&e, &self.prefix).await.into_iter().map(|v| format!("volume {v}")).collect();
            let f = HashMap::from([("label".to_string(), vec![format!("{}={}", labels::STORE, self.prefix)])]);
            left.extend(e.containers(f).await.unwrap().into_iter().map(|c| format!("container {:?}", c.names)));
            for i in &self.images {
                if e.image(i).await.unwrap().is_some() {
                    left.push(format!("image {i}"));
                }
            }
            left
        })
    }

    /// Remove this test's images from the host and its stores (by `didx store rm`), and assert
    /// nothing of it is left.
    fn finish(mut self) {
        let r = self.didx(&["store", "rm"]);
        assert_eq!(r.code, 0, "{}", r.show());
        rt().block_on(async {
            let e = engine().await;
            for i in &self.images {
                e.remove_image(i).await.unwrap();
            }
        });
        let left = self.leftovers();
        self.images.clear();
        self.prefix.clear();
        assert!(left.is_empty(), "left on the engine: {left:?}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.images.is_empty() && self.prefix.is_empty() {
            return;
        }
        // Only after a failed assertion (finish() clears the images): remove by label and name.
        let (prefix, images, envs) = (self.prefix.clone(), std::mem::take(&mut self.images), std::mem::take(&mut self.envs));
        let _ = std::thread::spawn(move || {
            rt().block_on(async {
                // The engine may be restarting (another test's): try for a while, never panic.
                let mut e = None;
                for _ in 0..60 {
                    match Engine::connect(None).await {
                        Ok(c) => {
                            e = Some(c);
                            break;
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
                    }
                }
                let Some(e) = e else {
                    eprintln!("store test clean-up: no engine; left stores of {prefix}, images {images:?}");
                    return;
                };
                for id in envs {
                    didx::env::remove(&e, &id).await.ok();
                }
                let f = HashMap::from([("label".to_string(), vec![format!("{}={prefix}", labels::STORE)])]);
                for c in e.containers(f).await.unwrap_or_default() {
                    if let Some(id) = c.id {
                        e.remove_container(&id).await.ok();
                    }
                }
                for v in volumes_of(&e, &prefix).await {
                    e.remove_volume(&v).await.ok();
                }
                // The decoy one test makes carries another prefix's label on purpose: by name.
                e.remove_volume(&format!("{prefix}-decoy")).await.ok();
                for i in images {
                    e.remove_image(&i).await.ok();
                }
            })
        })
        .join();
    }
}

async fn volumes_of(e: &Engine, prefix: &str) -> Vec<String> {
    let f = HashMap::from([("label".to_string(), vec![format!("{}={prefix}", labels::STORE)])]);
    e.volumes(f).await.unwrap()
}

/// Run `argv` in a fresh container of `image` with `mounts` (volume:target, read-only), wait,
/// and return its exit code and output; committed as `commit` first when given. Removed after.
async fn run_in(e: &Engine, image: &str, mounts: &[(&str, &str)], argv: &[&str], commit: Option<&str>) -> (i64, String) {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        // A committed image keeps its container's entrypoint: the image's own there.
        entrypoint: commit.is_none().then(|| argv.iter().map(|s| s.to_string()).collect()),
        cmd: Some(if commit.is_none() { vec![] } else { argv.iter().map(|s| s.to_string()).collect() }),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            mounts: Some(
                mounts
                    .iter()
                    .map(|(v, t)| Mount {
                        source: Some(v.to_string()),
                        target: Some(t.to_string()),
                        typ: Some(MountType::VOLUME),
                        read_only: Some(true),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = e.create_container(&format!("didx-store-test-{}", didx::env::EnvId::generate()), body).await.unwrap();
    e.start(&id).await.unwrap();
    let code = e.wait(&id).await.unwrap();
    let out = e.logs_tail(&id, 10_000).await.unwrap();
    if let Some(tag) = commit {
        let (repo, t) = didx::engine::split_reference(tag);
        e.commit(&id, repo, t).await.unwrap();
    }
    e.remove_container(&id).await.unwrap();
    (code, out)
}

/// The store's index and a content hash of every layer file (path and bytes) in it.
fn store_state(store: &str) -> (String, String) {
    let script =
        "cat /s/index; cd /s/root/overlay2 && find . -path ./l -prune -o -type f -print | LC_ALL=C sort | xargs -r sha256sum | sha256sum";
    let (code, out) = rt().block_on(async { run_in(&engine().await, READER, &[(store, "/s")], &["sh", "-c", script], None).await });
    assert_eq!(code, 0, "{out}");
    let (index, hash) = out.trim_end().rsplit_once('\n').expect("index and hash");
    (index.to_string(), hash.to_string())
}

/// The layer directories of the store (its filler's overlay2, `l/` aside).
fn layer_dirs(store: &str) -> usize {
    let (code, out) = rt().block_on(async {
        run_in(&engine().await, READER, &[(store, "/s")], &["sh", "-c", "ls /s/root/overlay2 | grep -vx l | wc -l"], None).await
    });
    assert_eq!(code, 0, "{out}");
    out.trim().parse().unwrap()
}

fn ok(r: &Run) {
    assert_eq!(r.code, 0, "{}", r.show());
}

fn image_id(tag: &str) -> String {
    rt().block_on(async { engine().await.image(tag).await.unwrap().unwrap().id.unwrap() })
}

#[test]
fn an_image_stored_once_is_in_later_sandboxes_which_run_and_build_on_it_and_cannot_change_it() {
    let mut fx = Fixture::new();
    let img = fx.image("app", "stored-once", 1);
    let id = image_id(&img);
    // First: put into the store, then found there (not loaded) by the sandbox.
    let first = fx.didx(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", &format!("run --rm {img} cat /marker")]);
    ok(&first);
    assert!(first.stderr.contains(&format!("put {img} into the image store")), "{}", first.show());
    assert!(first.stderr.contains("already in the inner engine (same ID); not loaded"), "{}", first.show());
    assert!(first.stdout.contains("stored-once"), "{}", first.show());
    let store = fx.store_of("didx/dind:local");
    let (index, hash) = store_state(&store);
    assert!(index.contains(&id) && index.contains(&img), "{index}");

    // A sandbox kept running meanwhile (B): it must still run the image after the others
    // delete and overwrite theirs.
    let b = fx.didx(&["--sv", "local", "--store", "--clean", "none", &format!("run --rm {img} cat /marker")]);
    ok(&b);
    let b_id = b.env_id().unwrap();
    fx.envs.push(b_id.clone());

    // Three later sandboxes at once: each finds it, runs it, builds on it, then deletes it or
    // overwrites its tag and prunes everything inside.
    let scripts = [
        format!(
            "docker run --rm {img} cat /marker && printf 'FROM {img}\\nRUN echo built >> /marker\\n' | docker build -q -t b - && docker run --rm b cat /marker && docker image rm -f {img} b && docker image prune -af"
        ),
        format!(
            "docker run --rm {img} cat /marker && printf 'FROM {img}\\nRUN echo over > /marker\\n' | docker build -q -t {img} - && docker run --rm {img} cat /marker && docker system prune -af"
        ),
        format!("docker run --rm {img} sh -c 'echo changed > /marker; rm -rf /bin/ls' && docker run --rm {img} cat /marker"),
    ];
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = scripts
            .iter()
            .map(|script| {
                let fx = &fx;
                let img = &img;
                s.spawn(move || {
                    fx.didx(&[
                        "--sv",
                        "local",
                        "--store",
                        "--load",
                        img,
                        "--clean",
                        "anycase",
                        &format!("sh -c \"{}\"", script.replace('"', "\\\"")),
                    ])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        ok(r);
        assert!(!r.stderr.contains("into the image store"), "no second fill: {}", r.show());
        assert!(r.stderr.contains("already in the inner engine (same ID); not loaded"), "{}", r.show());
        assert!(r.stdout.contains("stored-once"), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    }
    assert!(runs[0].stdout.contains("built"), "{}", runs[0].show());
    assert!(runs[1].stdout.contains("over"), "{}", runs[1].show());
    // B, untouched by them, still runs the original.
    let (code, out) = rt().block_on(async {
        let e = engine().await;
        let argv: Vec<String> = ["docker", "run", "--rm", img.as_str(), "cat", "/marker"].iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = e.exec(&format!("dind_{b_id}_client_local"), &argv, &[], &mut out, &mut err).await.unwrap();
        didx::env::remove(&e, &b_id).await.unwrap();
        (code, String::from_utf8_lossy(&out).into_owned() + &String::from_utf8_lossy(&err))
    });
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "stored-once", "the kept sandbox's copy is the original");
    assert_gone(&b_id);
    // The store is as it was, byte for byte, and a later sandbox gets the original.
    assert_eq!(store_state(&store), (index, hash), "the store changed");
    let later = fx.didx(&["--sv", "local", "--store", "--clean", "anycase", &format!("run --rm {img} sh -c 'cat /marker; ls /bin/ls'")]);
    ok(&later);
    assert!(later.stdout.contains("stored-once") && !later.stdout.contains("built") && !later.stdout.contains("over"), "{}", later.show());
    fx.finish();
}

#[test]
fn another_engine_version_gets_its_own_store_and_a_store_of_another_version_is_never_used() {
    let mut fx = Fixture::new();
    let img = fx.image("v", "versions", 0);
    let first = fx.didx(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", "true"]);
    ok(&first);
    let old = fx.store_of("didx/dind:local");
    // Filled, sealed and used: what the library part below relies on (its seal).
    assert!(
        first.stderr.contains(&format!("into the image store {old} in"))
            && !first.stderr.contains("is not used")
            && !first.stderr.contains("WARNING"),
        "{}",
        first.show()
    );
    let before = store_state(&old);
    // docker 26's sandbox fills a store of its own; 20.10's is untouched.
    let r = fx.didx(&[
        "--server-image",
        "didx/dind:26.1.5",
        "--store",
        "--load",
        &img,
        "--clean",
        "anycase",
        &format!("run --rm {img} cat /marker"),
    ]);
    ok(&r);
    assert!(r.stdout.contains("versions"), "{}", r.show());
    let new = fx.store_of("didx/dind:26.1.5");
    assert_ne!(new, old);
    assert!(new.contains("26.1.5") && r.stderr.contains(&format!("image store {new}")), "{}", r.show());
    assert_eq!(store_state(&old), before);
    // Forced on a server of another version (through the library), the entrypoint refuses it:
    // the inner engine starts empty and says why.
    rt().block_on(async {
        let e = engine().await;
        let mut spec = spec(&e, vec![]).await;
        spec.server_image = "didx/dind:26.1.5".into();
        // What didx knows of the server's engine (its probe), as a run would pass it.
        let engine = didx::store::engine_line(&e, "didx/dind:26.1.5").await.unwrap();
        assert!(engine.starts_with("Docker version 26.1.5"), "{engine}");
        let seal = didx::store::seal(&e, &old).await.unwrap();
        assert!(seal.is_some(), "a filled store is sealed");
        spec.store = Some(didx::env::StoreMount { volume: old.clone(), engine, seal });
        let env = didx::env::Environment::start(&e, &spec, &didx::Cancel::new(), &|_| {}).await.unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = env.exec(&["docker".into(), "images".into(), "-q".into()], &mut out, &mut err).await.unwrap();
        let logs = e.logs_tail(&env.server().unwrap().id, 200).await.unwrap();
        env.rm().await.unwrap();
        assert_eq!((code, String::from_utf8_lossy(&out).trim().to_string()), (0, String::new()), "no images from another version's store");
        assert!(logs.contains("store: not used: it was filled by 'Docker version 20.10"), "{logs}");
    });
    assert_eq!(store_state(&old), before);
    fx.finish();
}

#[test]
fn two_concurrent_fills_of_one_image_leave_one_consistent_copy() {
    let mut fx = Fixture::new();
    let img = fx.image("race", "raced", 2);
    // Separate cache directories: the lock file does not serialise them, the filler's name does.
    let caches: Vec<_> = (0..2).map(|i| std::env::temp_dir().join(format!("{}-cache{i}", fx.prefix))).collect();
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = caches
            .iter()
            .map(|c| {
                let mut cmd =
                    fx.cmd(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", &format!("run --rm {img} cat /marker")]);
                cmd.env("DIDX_CACHE_DIR", c);
                s.spawn(move || from_output(cmd.output().unwrap()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for c in &caches {
        std::fs::remove_dir_all(c).ok();
    }
    for r in &runs {
        ok(r);
        assert!(r.stdout.contains("raced"), "{}", r.show());
    }
    let fills = runs.iter().filter(|r| r.stderr.contains(&format!("put {img} into the image store"))).count();
    assert_eq!(fills, 1, "one fill, the other waited: {}\n{}", runs[0].show(), runs[1].show());
    assert!(runs.iter().any(|r| r.stderr.contains("waiting for another filler")), "{}\n{}", runs[0].show(), runs[1].show());
    let store = fx.store_of("didx/dind:local");
    let (index, _) = store_state(&store);
    assert_eq!(index.lines().count(), 2, "the snapshot line and the image once: {index}");
    assert_eq!(layer_dirs(&store), 2, "two layers, stored once");
    fx.finish();
}

#[test]
fn store_rm_and_prune_free_the_space_and_nothing_else_and_leave_a_store_in_use() {
    let mut fx = Fixture::new();
    let keep = fx.image("keep", "kept", 1);
    let big = fx.image("big", "big", 20);
    let filled = fx.didx(&["--sv", "local", "--store", "--load", &keep, "--load", &big, "--clean", "anycase", "true"]);
    ok(&filled);
    // The store was filled and used (a run whose fill failed goes on without it, and the
    // listing below would find nothing: say so here, with the run's account of why).
    assert!(filled.stderr.contains("into the image store") && filled.stderr.contains("mounts the image store"), "{}", filled.show());
    let store = fx.store_of("didx/dind:local");
    // A decoy: another prefix's store volume, and the host's own images, stay.
    let decoy = format!("{}-decoy", fx.prefix);
    rt().block_on(async {
        let e = engine().await;
        e.create_volume(&decoy, HashMap::from([(labels::STORE.to_string(), format!("{}x", fx.prefix))])).await.unwrap();
    });
    let listed = fx.didx(&["store", "--json"]);
    ok(&listed);
    let v: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{}", listed.stdout);
    let kib_before = v[0]["disk_kib"].as_u64().unwrap();
    assert_eq!(v[0]["images"].as_array().unwrap().len(), 2, "{}\n{}", listed.show(), filled.show());
    assert!(v[0]["last_used"].as_u64().is_some_and(|t| t + 600 > now_secs()), "used just now: {}", listed.stdout);
    let table = fx.didx(&["store"]);
    ok(&table);
    assert!(table.stdout.contains(&store) && table.stdout.contains(&keep) && table.stdout.contains(&big), "{}", table.show());

    // In use by a sandbox: its filler drains the store, sees the server, removes nothing and
    // publishes the store as it was.
    let (index0, hash0) = store_state(&store);
    let kept = fx.didx(&["--sv", "local", "--store", "--clean", "none", "true"]);
    ok(&kept);
    let id = kept.env_id().unwrap();
    let refused = fx.didx(&["store", "rm", &big]);
    assert_eq!(refused.code, 125, "{}", refused.show());
    assert!(refused.stderr.contains("is in use by dind_"), "{}", refused.show());
    let (index1, hash1) = store_state(&store);
    assert_eq!((index1.lines().skip(1).collect::<Vec<_>>(), hash1), (index0.lines().skip(1).collect::<Vec<_>>(), hash0));
    rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });

    // rm IMAGE: that image's space is freed, the other stays and still runs.
    let rm = fx.didx(&["store", "rm", &big]);
    ok(&rm);
    assert!(rm.stderr.contains(&format!("removed {big} from the image store {store}")), "{}", rm.show());
    let (index, _) = store_state(&store);
    assert!(!index.contains(&big) && index.contains(&keep), "{index}");
    let kib_after: u64 = index.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kib_before - kib_after >= 18_000, "20 MB freed: {kib_before} -> {kib_after} KiB");
    assert_eq!(layer_dirs(&store), 2, "keep's two layers");
    let r = fx.didx(&["--sv", "local", "--store", "--clean", "anycase", &format!("run --rm {keep} cat /marker")]);
    ok(&r);
    assert!(r.stdout.contains("kept"), "{}", r.show());

    // prune: an image the host no longer has goes, with the store it leaves empty.
    let keep_id = image_id(&keep);
    rt().block_on(async { engine().await.remove_image(&keep).await.unwrap() });
    assert!(keep_id.starts_with("sha256:"));
    let prune = fx.didx(&["store", "prune"]);
    ok(&prune);
    assert!(prune.stderr.contains(&format!("removed the image store {store}")), "{}", prune.show());
    rt().block_on(async {
        let e = engine().await;
        assert!(volumes_of(&e, &fx.prefix).await.is_empty());
        assert_eq!(volumes_of(&e, &format!("{}x", fx.prefix)).await, std::slice::from_ref(&decoy), "the decoy stays");
        assert!(e.image(BASE).await.unwrap().is_some() && e.image(&big).await.unwrap().is_some(), "host images stay");
        e.remove_volume(&decoy).await.unwrap();
    });
    fx.images.retain(|i| i != &keep);
    fx.finish();
}

#[test]
fn a_sandbox_no_store_can_serve_loads_as_without_with_a_note_and_usage_errors_create_nothing() {
    let mut fx = Fixture::new();
    let img = fx.image("note", "noted", 0);
    // dockerd's data root chosen by --dkropts: the store is not used, the image is loaded.
    let r = fx.didx(&[
        "--sv",
        "local",
        "--store",
        "--dkropts",
        "--data-root=/var/lib/docker/alt",
        "--load",
        &img,
        "--clean",
        "anycase",
        &format!("run --rm {img} cat /marker"),
    ]);
    ok(&r);
    assert!(r.stderr.contains("the image store is not used: --dkropts sets the storage driver or the data root"), "{}", r.show());
    assert!(r.stderr.contains(&format!("loaded {img} into the inner engine")), "{}", r.show());
    assert!(r.stdout.contains("noted"), "{}", r.show());
    // Nothing to list, and --store where it cannot apply is a usage error, before anything.
    let listed = fx.didx(&["store", "--json"]);
    ok(&listed);
    assert_eq!(listed.stdout.trim(), "[]");
    let bad = fx.didx(&["--store", "--engine", "host", "true"]);
    assert_eq!(bad.code, 2, "{}", bad.show());
    assert!(bad.stderr.contains("--engine host has no inner engine to seed from a store"), "{}", bad.show());
    let bad = fx.cmd(&["store"]).env("DIDX_STORE_PREFIX", "-x").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(fx.leftovers().iter().all(|l| l.starts_with("image ")), "{:?}", fx.leftovers());
    fx.finish();
}

#[test]
fn a_fill_killed_midway_publishes_nothing_and_the_next_fill_completes() {
    use std::io::{BufRead, BufReader};
    let mut fx = Fixture::new();
    let img = fx.image("killed", "survived", 150);
    let mut child = fx
        .cmd(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", "true"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let filling = lines.by_ref().map_while(Result::ok).any(|l| l.contains("into the image store"));
    assert!(filling, "the fill never started");
    // The load is under way (150 MB): kill didx outright; its lease ends the filler.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let filler = |e: &Engine| {
        let f = HashMap::from([("label".to_string(), vec![format!("{}={}", labels::STORE, fx.prefix)])]);
        let e = e.clone();
        async move { e.containers(f).await.unwrap().len() }
    };
    rt().block_on(async {
        let e = engine().await;
        let deadline = std::time::Instant::now() + scaled(std::time::Duration::from_secs(20));
        while filler(&e).await > 0 {
            assert!(std::time::Instant::now() < deadline, "the filler outlived its didx");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let store = fx.store_of("didx/dind:local");
    let (code, out) = rt().block_on(async { run_in(&engine().await, READER, &[(&store, "/s")], &["sh", "-c", "ls /s"], None).await });
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("current") && !out.contains("snap-"), "nothing published: {out}");
    // The next fill completes and its image runs.
    let r = fx.didx(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", &format!("run --rm {img} cat /marker")]);
    ok(&r);
    assert!(r.stderr.contains(&format!("put {img} into the image store")) && r.stdout.contains("survived"), "{}", r.show());
    fx.finish();
}

/// The attack on the store: a sandbox's COMMAND gets CAP_SYS_ADMIN through its inner engine,
/// remounts the store read-write and rewrites a stored layer's file. Later sandboxes must not run
/// the change: the next one's server refuses the store (it no longer matches its seal), loads
/// the original the way `--load` does and says so; the seal is withdrawn; the next
/// `--store --load` fills the store anew, and sandboxes after it seed from it again.
#[test]
fn a_sandbox_that_remounts_the_store_and_rewrites_a_layer_is_noticed_and_no_later_sandbox_runs_the_change() {
    let mut fx = Fixture::new();
    let img = fx.image("poison", "original", 0);
    ok(&fx.didx(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", "true"]));
    let store = fx.store_of("didx/dind:local");
    let (_, hash0) = store_state(&store);
    let attack = format!(
        "run --rm --cap-add SYS_ADMIN --security-opt apparmor=unconfined -v /didx/store:/s {img} sh -c \
         'mount -o remount,rw,bind /s && for f in $(find /s/root/overlay2 -path \"*/diff/marker\"); do echo poisoned > $f; done; echo attacked'"
    );
    let a = fx.didx(&["--sv", "local", "--store", "--clean", "anycase", &attack]);
    ok(&a);
    assert!(a.stdout.contains("attacked"), "{}", a.show());
    let (_, hash1) = store_state(&store);
    assert_ne!(hash1, hash0, "the attack changed the store's files (a kernel that refused the remount would make this test moot)");

    // The next sandbox: refused store, the original loaded, a warning, the seal withdrawn.
    let next = fx.didx(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", &format!("run --rm {img} cat /marker")]);
    ok(&next);
    assert!(next.stdout.contains("original") && !next.stdout.contains("poisoned"), "{}", next.show());
    assert!(next.stderr.contains(&format!("WARNING: the image store {store} no longer matches its seal")), "{}", next.show());
    assert!(next.stderr.contains("changed since it was sealed"), "{}", next.show());
    assert!(rt().block_on(async { didx::store::seal(&engine().await, &store).await.unwrap() }).is_none(), "the seal is withdrawn");

    // A sandbox without --load: not seeded from the unsealed store (and told why).
    let bare = fx.didx(&["--sv", "local", "--store", "--clean", "anycase", "docker images -q"]);
    ok(&bare);
    assert!(bare.stdout.trim().is_empty() && bare.stderr.contains("is not sealed"), "{}", bare.show());

    // The next fill starts from nothing, and later sandboxes seed from it again.
    let refill = fx.didx(&["--sv", "local", "--store", "--load", &img, "--clean", "anycase", &format!("run --rm {img} cat /marker")]);
    ok(&refill);
    assert!(refill.stderr.contains(&format!("put {img} into the image store")), "{}", refill.show());
    assert!(refill.stdout.contains("original") && !refill.stdout.contains("poisoned"), "{}", refill.show());
    let later = fx.didx(&["--sv", "local", "--store", "--clean", "anycase", &format!("run --rm {img} cat /marker")]);
    ok(&later);
    assert!(
        later.stdout.contains("original") && later.stderr.contains(&format!("the server mounts the image store {store}")),
        "{}",
        later.show()
    );
    assert!(!later.stderr.contains("no longer matches"), "{}", later.show());
    fx.finish();
}
