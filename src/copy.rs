//! `--cp SOURCE:ABS_CLIENT_PATH`: files into the client from a host path, a tar stream on
//! stdin, a container or an image on the host engine — all as streams through the Engine API's
//! archive endpoints, never a temporary copy, memory flat whatever the size.
//!
//! Targets follow `docker cp`: a target ending in `/`, or an existing directory, receives the
//! source inside it; otherwise the source is copied *as* the target (missing parents are
//! created). A source directory ending in `/.` copies its contents.
//!
//! Archives that come from elsewhere (stdin, containers, images) are re-read entry by entry and
//! refused if an entry would land outside its target: an absolute path, a `..` that climbs out,
//! a path through a symbolic link of the same archive, a hard link to outside, or a relative
//! symbolic link that climbs out. (Absolute symbolic links are kept: in the client they resolve
//! inside the client's own filesystem, as the image that holds them intends.)

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::labels::{self, Role};

/// Size of the chunks that flow through a copy, and how many may wait in flight: the copy's
/// memory bound (`CHUNK * DEPTH`, 1 MiB) whatever the payload.
const CHUNK: usize = 128 * 1024;
const DEPTH: usize = 8;

/// Where a `--cp` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpSource {
    /// A host file or directory (absolute).
    Host {
        /// The path, made absolute.
        path: PathBuf,
        /// The path was given ending in `/.`: copy the directory's contents.
        contents: bool,
    },
    /// A tar stream on stdin.
    Stdin,
    /// A path in a container on the host engine.
    Container {
        /// Container name or id.
        container: String,
        /// Absolute path in it.
        path: String,
    },
    /// A path in an image on the host engine.
    Image {
        /// Image reference.
        image: String,
        /// Absolute path in it.
        path: String,
    },
}

/// One validated `--cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpSpec {
    /// The source.
    pub source: CpSource,
    /// Absolute target path in the client; a trailing `/` means "into this directory".
    pub target: String,
}

const CP_FIX: &str = "expected SOURCE:ABSOLUTE_CLIENT_PATH with SOURCE a host path (/abs or ./rel), '-' (tar on stdin), CONTAINER:/path or IMAGE[:TAG]::/path";

fn is_container_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_ascii_alphanumeric()) && c.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn is_image_ref(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

impl CpSpec {
    /// Parse a `--cp` value; relative host paths resolve against `cwd`. A host source that
    /// does not exist is refused here, before anything starts.
    pub fn parse(s: &str, cwd: &Path) -> Result<CpSpec> {
        let bad = || Error::invalid("--cp spec", s, CP_FIX);
        // The target is what follows the last ":/" (sources may hold ":/" themselves).
        let i = s.rfind(":/").ok_or_else(bad)?;
        let (src, target) = (&s[..i], &s[i + 1..]);
        if src.is_empty() || target.contains('\0') {
            return Err(bad());
        }
        let source = if src == "-" {
            CpSource::Stdin
        } else if src.starts_with('/') || src.starts_with('.') {
            host_source(src, cwd)?
        } else if let Some((image, path)) = src.split_once("::") {
            if !is_image_ref(image) || !path.starts_with('/') {
                return Err(bad());
            }
            CpSource::Image { image: image.to_string(), path: path.to_string() }
        } else if let Some((container, path)) = src.split_once(':') {
            if !is_container_name(container) || !path.starts_with('/') {
                return Err(bad());
            }
            CpSource::Container { container: container.to_string(), path: path.to_string() }
        } else {
            host_source(src, cwd)?
        };
        Ok(CpSpec { source, target: target.to_string() })
    }
}

fn host_source(src: &str, cwd: &Path) -> Result<CpSource> {
    let contents = src.ends_with("/.") || src == ".";
    let path = cwd.join(src);
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(Error::invalid("--cp source", src, format!("{} does not exist; fix the path", path.display())));
    }
    Ok(CpSource::Host { path, contents })
}

/// Check that container and image sources exist on the host engine, before anything starts.
pub async fn check_sources(engine: &Engine, specs: &[CpSpec]) -> Result<()> {
    for spec in specs {
        match &spec.source {
            CpSource::Container { container, path } => {
                let spec = || format!("{container}:{path}");
                if engine.inspect(container).await.is_err() {
                    return Err(Error::invalid("--cp source", spec(), format!("no container '{container}' on the engine")));
                }
                if engine.stat_is_dir(container, path).await?.is_none() {
                    return Err(Error::invalid("--cp source", spec(), "no such path in that container"));
                }
            }
            CpSource::Image { image, .. } if engine.image(image).await?.is_none() => {
                return Err(Error::invalid("--cp source", image.clone(), "no such image on the engine; pull or load it first"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Apply `specs` to the client `client` in order. `env` labels the short-lived reader
/// containers of image sources, so they are found and removed with the environment if didx
/// dies mid-copy.
pub async fn copy_all(engine: &Engine, client: &str, env: &str, specs: &[CpSpec]) -> Result<()> {
    for spec in specs {
        copy_one(engine, client, env, spec).await?;
    }
    Ok(())
}

/// Where entries land: the target directory, and whether the source's own top entry is
/// renamed to the target.
struct Placement {
    /// Path (relative to the client's `/`) of the directory entries are placed under.
    dir: String,
    /// Replace the archive's first path component with this name (copy *as* the target).
    rename_top: Option<String>,
}

async fn placement(engine: &Engine, client: &str, target: &str, contents_only: bool) -> Result<Placement> {
    let rel = target.trim_start_matches('/').trim_end_matches('/').to_string();
    let into = target.ends_with('/') || rel.is_empty() || engine.stat_is_dir(client, target).await? == Some(true);
    if into || contents_only {
        return Ok(Placement { dir: rel, rename_top: None });
    }
    let (dir, name) = match rel.rsplit_once('/') {
        Some((d, n)) => (d.to_string(), n.to_string()),
        None => (String::new(), rel.clone()),
    };
    Ok(Placement { dir, rename_top: Some(name) })
}

async fn copy_one(engine: &Engine, client: &str, env: &str, spec: &CpSpec) -> Result<()> {
    let what = || match &spec.source {
        CpSource::Host { path, .. } => path.display().to_string(),
        CpSource::Stdin => "stdin".to_string(),
        CpSource::Container { container, path } => format!("{container}:{path}"),
        CpSource::Image { image, path } => format!("{image}::{path}"),
    };
    match &spec.source {
        CpSource::Host { path, contents } => {
            let place = placement(engine, client, &spec.target, *contents && path.is_dir()).await?;
            let (tx, stream) = channel();
            let src = path.clone();
            let producer = tokio::task::spawn_blocking(move || host_tar(&src, place, tx));
            finish(engine, client, stream, producer, what()).await
        }
        CpSource::Stdin => {
            // docker cp -: the stream is extracted into the target directory.
            let place = Placement { dir: spec.target.trim_matches('/').to_string(), rename_top: None };
            let (tx, stream) = channel();
            let producer = tokio::task::spawn_blocking(move || retar(std::io::stdin().lock(), place, tx));
            finish(engine, client, stream, producer, what()).await
        }
        CpSource::Container { container, path } => {
            let place = placement(engine, client, &spec.target, path.ends_with("/.")).await?;
            let input = engine.download(container, path).map(|r| r.map_err(std::io::Error::other)).boxed();
            pipe_archive(engine, client, input, place, what()).await
        }
        CpSource::Image { image, path } => {
            // A created, never started container gives access to the image's files.
            let name = format!("didx_{env}_source_{}", crate::env::EnvId::generate());
            let body = bollard::models::ContainerCreateBody {
                image: Some(image.clone()),
                entrypoint: Some(vec!["/didx-never-started".into()]),
                labels: Some(labels::for_resource(env, Role::Source, 0)),
                ..Default::default()
            };
            let reader = engine.create_container(&name, body).await?;
            let result = async {
                if engine.stat_is_dir(&reader, path).await?.is_none() {
                    return Err(Error::invalid("--cp source", format!("{image}::{path}"), "no such path in that image"));
                }
                let place = placement(engine, client, &spec.target, path.ends_with("/.")).await?;
                let input = engine.download(&reader, path).map(|r| r.map_err(std::io::Error::other)).boxed();
                pipe_archive(engine, client, input, place, what()).await
            }
            .await;
            let removed = engine.remove_container(&reader).await;
            result.and(removed)
        }
    }
}

/// Re-read an archive coming from the engine and upload it, validated and re-rooted.
async fn pipe_archive(
    engine: &Engine,
    client: &str,
    mut input: futures_util::stream::BoxStream<'_, std::io::Result<Bytes>>,
    place: Placement,
    what: String,
) -> Result<()> {
    let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<std::io::Result<Bytes>>(DEPTH);
    let (tx, stream) = channel();
    let producer = tokio::task::spawn_blocking(move || retar(ChannelReader { rx: in_rx, buf: Bytes::new() }, place, tx));
    let feed = async move {
        while let Some(chunk) = input.next().await {
            let in_tx = in_tx.clone();
            // A full channel blocks: hand the send to the blocking pool.
            let sent = tokio::task::spawn_blocking(move || in_tx.send(chunk).is_ok()).await.unwrap_or(false);
            if !sent {
                break;
            }
        }
    };
    let (_, r) = tokio::join!(feed, finish(engine, client, stream, producer, what));
    r
}

async fn finish(
    engine: &Engine,
    client: &str,
    stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    producer: tokio::task::JoinHandle<Result<()>>,
    what: String,
) -> Result<()> {
    let uploaded = engine.upload_stream(client, "/", stream).await;
    let produced = producer.await.map_err(|e| Error::Build(format!("copy task failed: {e}")))?;
    // The producer's error (e.g. a refused entry) explains an aborted upload best.
    produced.map_err(|e| match e {
        Error::Invalid { .. } => e,
        other => Error::Io { what: format!("copying {what}"), source: std::io::Error::other(other.to_string()) },
    })?;
    uploaded
}

/// A bounded channel whose sending half is a `std::io::Write` (for tar builders on the
/// blocking pool) and whose receiving half is a byte stream (for the upload body).
fn channel() -> (ChannelWriter, impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) }, stream)
}

struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the engine stopped reading the copy"))
    }
    /// Make the upload fail with `e` (so the engine does not extract a truncated archive).
    fn abort(&mut self, e: &Error) {
        self.tx.blocking_send(Err(std::io::Error::other(e.to_string()))).ok();
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.buf = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

fn join(dir: &str, rel: &str) -> String {
    match (dir.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => dir.to_string(),
        (false, false) => format!("{dir}/{rel}"),
    }
}

/// Tar a host file or directory into `tx`, keeping modes, mtimes and symbolic links.
fn host_tar(src: &Path, place: Placement, mut tx: ChannelWriter) -> Result<()> {
    let run = |tx: &mut ChannelWriter| -> std::io::Result<()> {
        let mut b = tar::Builder::new(&mut *tx);
        b.follow_symlinks(false);
        let meta = std::fs::symlink_metadata(src)?;
        let top = match &place.rename_top {
            Some(name) => name.clone(),
            None if meta.is_dir() && (src.ends_with(".") || src.to_string_lossy().ends_with("/.")) => String::new(),
            None => src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let name = join(&place.dir, &top);
        if meta.is_dir() {
            if name.is_empty() {
                // Contents of a directory into the client's root.
                for entry in std::fs::read_dir(src)? {
                    let entry = entry?;
                    let n = entry.file_name().to_string_lossy().into_owned();
                    if entry.file_type()?.is_dir() {
                        b.append_dir_all(&n, entry.path())?;
                    } else {
                        b.append_path_with_name(entry.path(), &n)?;
                    }
                }
            } else {
                b.append_dir_all(&name, src)?;
            }
        } else {
            b.append_path_with_name(src, &name)?;
        }
        b.finish()?;
        drop(b);
        tx.flush()
    };
    run(&mut tx).map_err(|e| {
        let err = Error::io(format!("reading {}", src.display()), e);
        tx.abort(&err);
        err
    })
}

/// Re-read the tar archive `input`, refuse any entry that would land outside its target, and
/// write it re-rooted at `place` into `tx`.
fn retar(input: impl Read, place: Placement, mut tx: ChannelWriter) -> Result<()> {
    let result = (|| -> Result<()> {
        let io = |e| Error::io("reading the source archive", e);
        let mut archive = tar::Archive::new(input);
        let mut b = tar::Builder::new(&mut tx);
        let mut links: Vec<PathBuf> = Vec::new();
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let raw = entry.path_bytes().into_owned();
            let raw = String::from_utf8_lossy(&raw).into_owned();
            let rel = contained(&raw).ok_or_else(|| refuse(&raw, "its path leaves the target"))?;
            if rel.as_os_str().is_empty() {
                continue; // "./" itself
            }
            if links.iter().any(|l| rel.starts_with(l) && rel != *l) {
                return Err(refuse(&raw, "it goes through a symbolic link of the same archive"));
            }
            let kind = entry.header().entry_type();
            let link = entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
            if kind.is_symlink() {
                let target = link.clone().unwrap_or_default();
                if !target.starts_with('/') {
                    let base = rel.parent().unwrap_or(Path::new(""));
                    if contained(&base.join(&target).to_string_lossy()).is_none() {
                        return Err(refuse(&raw, &format!("its link target {target} climbs out of the target")));
                    }
                }
                links.push(rel.clone());
            }
            let new_path = rerooted(&rel, &place);
            let mut header = entry.header().clone();
            if kind.is_hard_link() {
                let target = link.unwrap_or_default();
                let t = contained(&target).ok_or_else(|| refuse(&raw, "its hard link points outside the target"))?;
                b.append_link(&mut header, &new_path, rerooted(&t, &place)).map_err(io)?;
            } else if kind.is_symlink() {
                b.append_link(&mut header, &new_path, link.unwrap_or_default()).map_err(io)?;
            } else if kind.is_file() || kind.is_dir() || kind.is_fifo() || kind.is_character_special() || kind.is_block_special() || kind == tar::EntryType::Continuous {
                b.append_data(&mut header, &new_path, &mut entry).map_err(io)?;
            }
            // pax/GNU extension records are consumed by the reader and rewritten by the builder.
        }
        b.finish().map_err(io)?;
        drop(b);
        tx.flush().map_err(io)
    })();
    if let Err(e) = &result {
        tx.abort(e);
    }
    result
}

fn refuse(entry: &str, why: &str) -> Error {
    Error::invalid("archive entry", entry, format!("refused because {why}; nothing was copied from this source"))
}

/// `path` normalised (`.` removed, `..` applied), or `None` when it is absolute or climbs out.
pub fn contained(path: &str) -> Option<PathBuf> {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.iter().collect())
}

fn rerooted(rel: &Path, place: &Placement) -> String {
    let rel = match &place.rename_top {
        Some(name) => {
            let mut comps = rel.components();
            comps.next();
            let rest = comps.as_path().to_string_lossy().into_owned();
            join(name, &rest)
        }
        None => rel.to_string_lossy().into_owned(),
    };
    join(&place.dir, &rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CpSpec> {
        CpSpec::parse(s, Path::new("/"))
    }

    #[test]
    fn cp_specs_parse_into_the_four_sources() {
        assert_eq!(
            parse("/etc/hostname:/t/").unwrap(),
            CpSpec { source: CpSource::Host { path: "/etc/hostname".into(), contents: false }, target: "/t/".into() }
        );
        assert_eq!(parse("-:/in/").unwrap().source, CpSource::Stdin);
        assert_eq!(
            parse("dreamy_pare:/some/file:/client/target/").unwrap(),
            CpSpec {
                source: CpSource::Container { container: "dreamy_pare".into(), path: "/some/file".into() },
                target: "/client/target/".into()
            }
        );
        assert_eq!(
            parse("alpine:3.3::/tmp/file:/client/target/").unwrap().source,
            CpSource::Image { image: "alpine:3.3".into(), path: "/tmp/file".into() }
        );
        assert_eq!(
            parse("reg:5000/ns/img::/etc:/x").unwrap().source,
            CpSource::Image { image: "reg:5000/ns/img".into(), path: "/etc".into() }
        );
        assert!(matches!(parse("/etc/.:/x").unwrap().source, CpSource::Host { contents: true, .. }));
    }

    #[test]
    fn bad_cp_specs_are_usage_errors() {
        for bad in ["", "/etc/hostname", "/etc/hostname:rel", ":/x", "-:", "bad name:/x:/y", "img::rel:/y", "/no/such/file/for/didx:/x"] {
            assert!(parse(bad).unwrap_err().is_usage(), "{bad}");
        }
    }

    #[test]
    fn containment() {
        assert_eq!(contained("a/./b/../c").unwrap(), PathBuf::from("a/c"));
        assert_eq!(contained("./").unwrap(), PathBuf::from(""));
        assert!(contained("/etc/passwd").is_none());
        assert!(contained("../x").is_none());
        assert!(contained("a/../../x").is_none());
    }

    #[test]
    fn rerooting_renames_the_top_or_places_under_the_dir() {
        let into = Placement { dir: "opt/app".into(), rename_top: None };
        assert_eq!(rerooted(Path::new("src/main.rs"), &into), "opt/app/src/main.rs");
        let as_target = Placement { dir: "opt".into(), rename_top: Some("app".into()) };
        assert_eq!(rerooted(Path::new("src/main.rs"), &as_target), "opt/app/main.rs");
        assert_eq!(rerooted(Path::new("src"), &as_target), "opt/app");
        let root = Placement { dir: String::new(), rename_top: None };
        assert_eq!(rerooted(Path::new("f"), &root), "f");
    }

    fn archive(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(0);
            // Write raw names: the builder's own checks would refuse the hostile ones.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn retar_to_vec(input: Vec<u8>) -> Result<Vec<String>> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, stream) = channel();
        let place = Placement { dir: "t".into(), rename_top: None };
        let producer = std::thread::spawn(move || retar(&input[..], place, tx));
        let bytes: Vec<std::io::Result<Bytes>> = rt.block_on(stream.collect());
        producer.join().unwrap()?;
        let data: Vec<u8> = bytes.into_iter().map(|b| b.unwrap()).collect::<Vec<_>>().concat();
        let mut a = tar::Archive::new(&data[..]);
        Ok(a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect())
    }

    #[test]
    fn safe_archives_are_rerooted() {
        use tar::EntryType::*;
        let got = retar_to_vec(archive(&[("d/", Directory, ""), ("d/f", Regular, ""), ("d/l", Symlink, "f"), ("abs", Symlink, "/usr/bin/env")]))
            .unwrap();
        assert_eq!(got, vec!["t/d", "t/d/f", "t/d/l", "t/abs"]);
    }

    #[test]
    fn escaping_archives_are_refused() {
        use tar::EntryType::*;
        let cases: Vec<Vec<(&str, tar::EntryType, &str)>> = vec![
            vec![("/etc/passwd", Regular, "")],
            vec![("../x", Regular, "")],
            vec![("a/../../x", Regular, "")],
            vec![("l", Symlink, "../../etc"), ],
            vec![("l", Symlink, "/etc"), ("l/passwd", Regular, "")],
            vec![("h", Link, "../../etc/shadow")],
        ];
        for c in cases {
            let e = retar_to_vec(archive(&c)).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains("refused"), "{c:?}: {e}");
        }
    }
}
