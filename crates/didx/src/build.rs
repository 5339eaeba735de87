//! `didx image build`: the offline server/client image, made from Debian's packages with no
//! registry at all. mmdebstrap writes a root filesystem (docker.io, iptables, ca-certificates,
//! mount, busybox-static, docker-compose and didx's entrypoint) as a tar stream that goes
//! straight into the engine's image import endpoint: no temporary tarball, no base image.
//!
//! The default suite ([`DEFAULT_SUITE`]) makes `didx/dind:local`, also tagged
//! `didx/dind:<engine version>`; any other suite (e.g. trixie, whose docker.io is 26.x) makes
//! only `didx/dind:<engine version>`, so `--sv <that version>` finds it and the default image
//! stays. The image is labelled with a hash of its recipe (suite included); a build whose
//! recipe is unchanged reuses the existing image.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::images::LOCAL_IMAGE;
use crate::labels;

/// Bump when the recipe changes in a way the inputs below do not show.
const RECIPE_REVISION: &str = "1";
/// Packages in the image (besides Debian's essential set and apt); see [`packages`].
pub const PACKAGES: &[&str] = &["docker.io", "iptables", "ca-certificates", "mount", "busybox-static", "docker-compose"];
/// The suite `didx image build` uses by default; only its image is tagged [`LOCAL_IMAGE`].
pub const DEFAULT_SUITE: &str = "bookworm";
/// Suites whose docker.io still carries the `docker` CLI (from trixie on it is `docker-cli`).
const CLI_IN_DOCKER_IO: &[&str] = &["stretch", "buster", "bullseye", "bookworm"];
/// Suites whose `docker-compose` is v1 (Python; bookworm's is 1.29.2), which installs no docker
/// CLI plugin: their image also gets [`COMPOSE_V1_PLUGIN`], so `docker compose` works as well as
/// `docker-compose`. From trixie on, `docker-compose` is v2 (Go) and is itself the CLI plugin.
const COMPOSE_V1: &[&str] = &["stretch", "buster", "bullseye", "bookworm"];
/// A docker CLI plugin running Debian's docker-compose v1, for the suites in `COMPOSE_V1`.
pub const COMPOSE_V1_PLUGIN: &str = include_str!("../../../image/compose-v1-plugin.sh");
/// Where that plugin lives in the image (a directory the docker CLI searches for plugins).
pub const IMAGE_COMPOSE_V1_PLUGIN: &str = "/usr/local/lib/docker/cli-plugins/docker-compose";
/// Where the entrypoint lives in the image.
pub const IMAGE_ENTRYPOINT: &str = "/usr/local/bin/didx-entrypoint";
/// The helper that imports a busybox image into the inner engine (offline `pull busybox`).
pub const BUSYBOX_HELPER: &str = include_str!("../../../image/busybox-image.sh");
/// Where the helper lives in the image.
pub const IMAGE_BUSYBOX_HELPER: &str = "/usr/local/bin/didx-busybox-image";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// Debian mirror URL.
    pub mirror: String,
    /// Rebuild even when the recipe is unchanged.
    pub force: bool,
}

/// Progress of a build.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildEvent<'a> {
    /// A line from mmdebstrap.
    Log(&'a str),
    /// Bytes of root filesystem streamed into the engine so far.
    Streamed(u64),
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// Tags the image carries.
    pub tags: Vec<String>,
    /// Image id.
    pub id: String,
    /// Image size in bytes.
    pub size: i64,
    /// True when an existing image with the same recipe was reused.
    pub reused: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// The packages for `suite`: `PACKAGES`, plus `docker-cli` where docker.io no longer holds
/// the `docker` command (trixie and later; without it every COMMAND would fail with 126).
pub fn packages(suite: &str) -> Vec<&'static str> {
    let mut p = PACKAGES.to_vec();
    if !CLI_IN_DOCKER_IO.contains(&suite) {
        p.push("docker-cli");
    }
    p
}

/// Whether `suite`'s docker-compose is v1, so its image gets [`COMPOSE_V1_PLUGIN`] for
/// `docker compose`.
pub fn compose_v1(suite: &str) -> bool {
    COMPOSE_V1.contains(&suite)
}

/// Whether a build of `suite` is tagged [`LOCAL_IMAGE`] (only the default suite's is).
pub fn tags_local(suite: &str) -> bool {
    suite == DEFAULT_SUITE
}

/// The recipe hash: everything that determines the image's content.
pub fn recipe_hash(spec: &BuildSpec) -> String {
    let mut h = Sha256::new();
    for part in [RECIPE_REVISION, &spec.suite, &spec.mirror, &packages(&spec.suite).join(","), crate::env::ENTRYPOINT, BUSYBOX_HELPER, COMPOSE_V1_PLUGIN] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

/// The upstream part of a Debian version: `20.10.24+dfsg1-1+deb12u1+b6` → `20.10.24`.
pub fn upstream_version(debian: &str) -> String {
    let v = debian.split_once(':').map(|(_, v)| v).unwrap_or(debian);
    let v = v.split(['+', '~', '-']).next().unwrap_or(v);
    v.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_').collect()
}

/// Build (or reuse) the image of `spec.suite`: for the default suite [`LOCAL_IMAGE`], also
/// tagged `didx/dind:<engine version>`; for any other suite only `didx/dind:<engine version>`.
pub async fn build(engine: &Engine, spec: &BuildSpec, on: &(dyn Fn(BuildEvent<'_>) + Send + Sync)) -> Result<BuildReport> {
    let t0 = Instant::now();
    let recipe = recipe_hash(spec);
    let local = tags_local(&spec.suite);
    let (repo, _) = crate::engine::split_reference(LOCAL_IMAGE);
    if !spec.force
        && let Some(img) = reusable(engine, &recipe, local).await?
    {
        return Ok(BuildReport {
            tags: img.repo_tags,
            id: img.id,
            size: img.size,
            reused: true,
            elapsed: t0.elapsed(),
        });
    }
    // The default suite imports straight into its tag; another suite into a tag of its own
    // recipe, so that didx/dind:local is never touched, retagged with the version after.
    let staging = if local { LOCAL_IMAGE.to_string() } else { format!("{repo}:build-{recipe}") };
    let previous = engine.image(LOCAL_IMAGE).await?.and_then(|i| i.id).filter(|_| local);
    // A fresh private directory (random name, mode 0700, never one already there): what
    // mmdebstrap uploads into the image is read from it, so nobody else may plant files in it.
    let work = crate::cache::private_dir("didx-build")?;
    let version = build_in(engine, spec, &recipe, &staging, work.path(), on).await;
    drop(work);
    let version = version?;
    let mut tags = Vec::new();
    if local {
        tags.push(LOCAL_IMAGE.to_string());
    } else if version.is_empty() {
        if let Err(e) = engine.remove_image(&staging).await {
            tracing::warn!(image = %staging, error = %e, "cannot remove the staging tag");
        }
        return Err(Error::Build(format!("could not read the docker.io version of the {} image", spec.suite)));
    }
    let mut previous = previous;
    if !version.is_empty() {
        let versioned = format!("{repo}:{version}");
        if !local {
            previous = engine.image(&versioned).await?.and_then(|i| i.id);
        }
        engine.tag(&staging, repo, &version).await?;
        tags.push(versioned);
    }
    let img = engine.image(&staging).await?.ok_or_else(|| Error::Build("the imported image vanished".into()))?;
    if !local && let Err(e) = engine.remove_image(&staging).await {
        tracing::info!(image = %staging, error = %e, "kept the staging tag");
    }
    // The image this build replaced, now untagged: remove it unless something still uses it.
    if let Some(old) = previous.filter(|old| Some(old) != img.id.as_ref())
        && let Err(e) = engine.remove_image(&old).await
    {
        tracing::info!(image = %old, error = %e, "kept the replaced image");
    }
    Ok(BuildReport { tags, id: img.id.unwrap_or_default(), size: img.size.unwrap_or(0), reused: false, elapsed: t0.elapsed() })
}

/// An image built from `recipe` and tagged as a build of it would be: [`LOCAL_IMAGE`] for the
/// default suite, else a `didx/dind:<version>` tag.
async fn reusable(engine: &Engine, recipe: &str, local: bool) -> Result<Option<Reusable>> {
    if local {
        return Ok(engine
            .image(LOCAL_IMAGE)
            .await?
            .filter(|img| img.config.as_ref().and_then(|c| c.labels.as_ref()).and_then(|l| l.get(labels::RECIPE)).map(String::as_str) == Some(recipe))
            .map(|img| Reusable { repo_tags: img.repo_tags.unwrap_or_default(), id: img.id.unwrap_or_default(), size: img.size.unwrap_or(0) }));
    }
    let (repo, _) = crate::engine::split_reference(LOCAL_IMAGE);
    let filters = std::collections::HashMap::from([("label".to_string(), vec![format!("{}={recipe}", labels::RECIPE)])]);
    let found = engine.images(filters).await?;
    Ok(found
        .into_iter()
        .find(|i| i.repo_tags.iter().any(|t| t.strip_prefix(repo).and_then(|t| t.strip_prefix(':')).is_some_and(|t| !t.starts_with("build-") && t != "local")))
        .map(|i| Reusable { repo_tags: i.repo_tags, id: i.id, size: i.size }))
}

/// What a reused image reports.
struct Reusable {
    repo_tags: Vec<String>,
    id: String,
    size: i64,
}

async fn build_in(
    engine: &Engine,
    spec: &BuildSpec,
    recipe: &str,
    target: &str,
    work: &std::path::Path,
    on: &(dyn Fn(BuildEvent<'_>) + Send + Sync),
) -> Result<String> {
    let entrypoint = work.join("entrypoint");
    let version_file = work.join("docker-version");
    let helper = work.join("busybox-image");
    std::fs::write(&entrypoint, crate::env::ENTRYPOINT).map_err(|e| Error::io("writing the entrypoint", e))?;
    std::fs::write(&helper, BUSYBOX_HELPER).map_err(|e| Error::io("writing the busybox helper", e))?;
    let mut cmd = tokio::process::Command::new("mmdebstrap");
    cmd.arg("--mode=auto")
        .arg("--variant=apt")
        .arg("--format=tar")
        .arg(format!("--include={}", packages(&spec.suite).join(",")))
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg(format!("--customize-hook=upload {} {IMAGE_ENTRYPOINT}", entrypoint.display()))
        .arg(format!("--customize-hook=upload {} {IMAGE_BUSYBOX_HELPER}", helper.display()))
        .arg(format!("--customize-hook=chmod 0755 \"$1{IMAGE_ENTRYPOINT}\" \"$1{IMAGE_BUSYBOX_HELPER}\""));
    if compose_v1(&spec.suite) {
        let compose_plugin = work.join("compose-v1-plugin");
        std::fs::write(&compose_plugin, COMPOSE_V1_PLUGIN).map_err(|e| Error::io("writing the compose plugin", e))?;
        let dir = IMAGE_COMPOSE_V1_PLUGIN.rsplit_once('/').map_or("/", |(d, _)| d);
        cmd.arg(format!("--customize-hook=mkdir -p \"$1{dir}\""))
            .arg(format!("--customize-hook=upload {} {IMAGE_COMPOSE_V1_PLUGIN}", compose_plugin.display()))
            .arg(format!("--customize-hook=chmod 0755 \"$1{IMAGE_COMPOSE_V1_PLUGIN}\""));
    }
    cmd        .arg(format!("--customize-hook=chroot \"$1\" dpkg-query -W -f='${{Version}}' docker.io > {}", version_file.display()))
        .arg(&spec.suite)
        .arg("-")
        .arg(&spec.mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Build("mmdebstrap is not installed; install it with: apt-get install -y mmdebstrap".into())
        } else {
            Error::io("starting mmdebstrap", e)
        }
    })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c2 = counted.clone();
    let rootfs = crate::engine::body_from(stdout, 64 * 1024).map(move |chunk| {
        if let Ok(b) = &chunk {
            c2.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        chunk
    });
    let changes = vec![
        format!("ENTRYPOINT [\"{IMAGE_ENTRYPOINT}\"]"),
        "CMD [\"server\"]".to_string(),
        format!("LABEL {}={recipe}", labels::RECIPE),
        "ENV DOCKER_TLS_CERTDIR=/certs".to_string(),
    ];
    let (repo, tag) = crate::engine::split_reference(target);
    let import = engine.import(rootfs, repo, tag, changes);
    let mut tail: Vec<String> = Vec::new();
    let logs = async {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            on(BuildEvent::Log(&line));
            tail.push(line);
            if tail.len() > 15 {
                tail.remove(0);
            }
        }
    };
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let n = counted.load(std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                on(BuildEvent::Streamed(n));
            }
        }
    };
    let (imported, (), status) = tokio::select! {
        r = async { tokio::join!(import, logs, child.wait()) } => r,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    let status = status.map_err(|e| Error::io("waiting for mmdebstrap", e))?;
    if !status.success() {
        return Err(Error::Build(format!("mmdebstrap failed ({status}); its last lines:\n{}", tail.join("\n"))));
    }
    imported?;
    on(BuildEvent::Streamed(counted.load(std::sync::atomic::Ordering::Relaxed)));
    let version = std::fs::read_to_string(&version_file).unwrap_or_default();
    Ok(upstream_version(version.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("20.10.24+dfsg1-1+deb12u1+b6"), "20.10.24");
        assert_eq!(upstream_version("5:27.5.1-1~debian.12~bookworm"), "27.5.1");
        assert_eq!(upstream_version(""), "");
    }

    #[test]
    fn recipe_hash_tracks_inputs() {
        let a = BuildSpec { suite: "bookworm".into(), mirror: "http://m".into(), force: false };
        let mut b = a.clone();
        assert_eq!(recipe_hash(&a), recipe_hash(&b));
        b.mirror = "http://other".into();
        assert_ne!(recipe_hash(&a), recipe_hash(&b));
        b.force = true;
        b.mirror = a.mirror.clone();
        assert_eq!(recipe_hash(&a), recipe_hash(&b), "force is not an input");
        b.suite = "trixie".into();
        assert_ne!(recipe_hash(&a), recipe_hash(&b), "the suite is an input");
    }

    #[test]
    fn docker_cli_only_where_docker_io_lacks_it() {
        assert!(!packages("bookworm").contains(&"docker-cli"));
        assert_eq!(packages("bookworm"), PACKAGES, "the default suite's recipe is unchanged");
        assert!(packages("trixie").contains(&"docker-cli"));
        assert!(tags_local(DEFAULT_SUITE) && !tags_local("trixie"));
    }

    #[test]
    fn compose_in_every_suite_and_the_v1_plugin_only_where_compose_is_v1() {
        for suite in ["bookworm", "trixie"] {
            assert!(packages(suite).contains(&"docker-compose"), "{suite}");
        }
        assert!(compose_v1("bookworm") && !compose_v1("trixie") && !compose_v1("forky"));
        assert!(COMPOSE_V1_PLUGIN.contains("docker-cli-plugin-metadata"));
        assert!(IMAGE_COMPOSE_V1_PLUGIN.ends_with("/cli-plugins/docker-compose"));
    }
}
