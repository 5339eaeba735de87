//! `--cp SOURCE:ABS_CLIENT_PATH`: files into the client from a host path, a tar stream on
//! stdin, a container or an image on the host engine, through the Engine API's archive
//! endpoints.
//!
//! Targets follow `docker cp`: a target ending in `/`, or an existing directory, receives the
//! source inside it; otherwise the source is copied *as* the target (missing parents are
//! created). A source directory ending in `/.` copies its contents.
//!
//! Every source passes the one validator of [`validate`], which writes every header fresh.
//! All or nothing: archives from stdin, containers and images are validated into a spool file
//! (in a fresh 0700 directory, unlinked at once) and uploaded only when the whole archive
//! passed; host trees are pre-scanned (metadata only) and then streamed, memory flat. Every
//! upload asks the engine never to replace a directory with a non-directory
//! (`noOverwriteDirNonDir`, as `docker cp` does).

pub(crate) mod out;
pub(crate) mod spec;
pub mod validate;

pub use spec::{CpSource, CpSpec};

use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::labels::{self, Role};
use validate::{Origin, Placement, Report};

/// Size of the chunks that flow through a copy, and how many may wait in flight: the copy's
/// memory bound (`CHUNK * DEPTH`, 1 MiB) whatever the payload.
const CHUNK: usize = 128 * 1024;
const DEPTH: usize = 8;

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
            CpSource::Image { image, path } => {
                if engine.image(image).await?.is_none() {
                    return Err(Error::invalid("--cp source", image.clone(), "no such image on the engine; pull or load it first"));
                }
                // No environment yet: the reader is labelled with an id of its own.
                let check = format!("check{}", crate::util::token());
                let found = with_reader(engine, &check, image, |reader| async move { engine.stat_is_dir(&reader, path).await }).await?;
                if found.is_none() {
                    return Err(Error::invalid("--cp source", format!("{image}::{path}"), "no such path in that image"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Apply `specs` to the client `client`, a member on `target`, in order; returns warnings
/// (entries skipped, e.g. a socket in a host tree). Container and image sources are read from
/// `engine` (the user's own engine); `env` labels the short-lived reader containers of image
/// sources there, so they are found and removed with the environment if didx dies mid-copy.
pub(crate) async fn copy_all(engine: &Engine, target: &dyn Backend, client: &str, env: &str, specs: &[CpSpec]) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for spec in specs {
        let what = match &spec.source {
            CpSource::Host { path, .. } => path.display().to_string(),
            CpSource::Stdin => "stdin".to_string(),
            CpSource::Container { container, path } => format!("{container}:{path}"),
            CpSource::Image { image, path } => format!("{image}::{path}"),
        };
        let report = copy_one(engine, target, client, env, spec).await.map_err(|e| match e {
            Error::Refused { entry, why, .. } => Error::Refused { source_name: format!("--cp {what}"), entry, why },
            other => other,
        })?;
        warnings.extend(report.skipped);
    }
    Ok(warnings)
}

/// Copy the host path `src` (ending in `/.`: a directory's contents) into `member` at the
/// absolute `target`, as `--cp` copies a host path (`docker cp`'s rules).
pub(crate) async fn copy_in_host(backend: &dyn Backend, member: &str, src: &std::path::Path, target: &str) -> Result<Report> {
    use std::os::unix::ffi::OsStrExt;
    if !target.starts_with('/') {
        return Err(Error::invalid("copy target", target, "the client path must be absolute"));
    }
    let contents = src.as_os_str().as_bytes().ends_with(b"/.");
    let path = std::path::absolute(src).map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(Error::invalid("copy source", src.display().to_string(), "no such file or directory here"));
    }
    let place = placement(backend, member, target, contents && path.is_dir()).await?;
    copy_host(backend, member, path, contents, place).await.map_err(|e| match e {
        Error::Refused { entry, why, .. } => Error::Refused { source_name: format!("copy of {}", src.display()), entry, why },
        other => other,
    })
}

/// Create a never-started container of `image` (labelled with `env`), run `f` with its id,
/// and remove it whatever `f` returned.
async fn with_reader<T, F, Fut>(engine: &Engine, env: &str, image: &str, f: F) -> Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let name = format!("didx_{env}_source_{}", crate::util::token());
    let reader = engine.create_container(&name, reader_body(env, image, crate::util::now_secs())).await?;
    let result = f(reader.clone()).await;
    let removed = engine.remove_container(&reader).await;
    match (result, removed) {
        (Ok(t), Ok(())) => Ok(t),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// A reader of `image` for environment `env`, made at `now`: never started, so labelled with
/// the time it was made like every other create, which keeps every didx start's sweep (it takes
/// never-started containers of environments with no live member, made over a minute ago) off it
/// while it is read, before the environment exists.
fn reader_body(env: &str, image: &str, now: u64) -> bollard::models::ContainerCreateBody {
    bollard::models::ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["/didx-never-started".into()]),
        labels: Some(labels::for_resource(env, Role::Source, now)),
        ..Default::default()
    }
}

async fn placement(backend: &dyn Backend, client: &str, target: &str, contents_only: bool) -> Result<Placement> {
    let rel = target.trim_start_matches('/').trim_end_matches('/').to_string();
    let into = target.ends_with('/') || rel.is_empty() || backend.is_dir(client, target).await? == Some(true);
    if into || contents_only {
        return Ok(Placement { dir: rel, rename_top: None });
    }
    let (dir, name) = match rel.rsplit_once('/') {
        Some((d, n)) => (d.to_string(), n.to_string()),
        None => (String::new(), rel.clone()),
    };
    Ok(Placement { dir, rename_top: Some(name) })
}

async fn copy_one(engine: &Engine, target: &dyn Backend, client: &str, env: &str, spec: &CpSpec) -> Result<Report> {
    match &spec.source {
        CpSource::Host { path, contents } => {
            let place = placement(target, client, &spec.target, *contents && path.is_dir()).await?;
            copy_host(target, client, path.clone(), *contents, place).await
        }
        CpSource::Stdin => {
            // docker cp -: the stream is extracted into the target directory.
            let place = Placement { dir: spec.target.trim_matches('/').to_string(), rename_top: None };
            let validated = tokio::task::spawn_blocking(move || spool(std::io::stdin().lock(), place)).await;
            upload_spool(target, client, validated).await
        }
        CpSource::Container { container, path } => {
            let place = placement(target, client, &spec.target, path.ends_with("/.")).await?;
            let input = engine.download(container, path).map(|r| r.map_err(std::io::Error::other)).boxed();
            let validated = spool_stream(input, place).await;
            upload_spool(target, client, Ok(validated)).await
        }
        CpSource::Image { image, path } => {
            // A created, never started container gives access to the image's files; it is
            // removed as soon as the archive is spooled.
            let validated = with_reader(engine, env, image, |reader| async move {
                if engine.stat_is_dir(&reader, path).await?.is_none() {
                    return Err(Error::invalid("--cp source", format!("{image}::{path}"), "no such path in that image"));
                }
                let place = placement(target, client, &spec.target, path.ends_with("/.")).await?;
                let input = engine.download(&reader, path).map(|r| r.map_err(std::io::Error::other)).boxed();
                spool_stream(input, place).await
            })
            .await;
            upload_spool(target, client, Ok(validated)).await
        }
    }
}

/// A host file or tree: pre-scanned (metadata only, so a refusal comes before the engine sees
/// a byte), then streamed through the validator into the upload.
async fn copy_host(target: &dyn Backend, client: &str, src: PathBuf, contents: bool, place: Placement) -> Result<Report> {
    use std::os::unix::ffi::OsStrExt;
    let top: Vec<u8> = match &src.file_name() {
        _ if contents && src.is_dir() => Vec::new(),
        Some(n) => n.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let (scan_src, scan_top, scan_place) = (src.clone(), top.clone(), place.clone());
    let report = tokio::task::spawn_blocking(move || validate::validate_host(&scan_src, &scan_top, scan_place, None))
        .await
        .map_err(|e| Error::Task { what: "the copy task", source: e })??;
    let (mut tx, stream) = channel();
    let producer = tokio::task::spawn_blocking(move || {
        let r = validate::validate_host(&src, &top, place, Some(&mut tx))
            .and_then(|r| tx.flush().map(|_| r).map_err(|e| Error::io("copying", e)));
        if let Err(e) = &r {
            tx.abort(e);
        }
        r
    });
    let uploaded = target.copy_in(client, "/", Box::pin(stream)).await;
    let produced = producer.await.map_err(|e| Error::Task { what: "the copy task", source: e })?;
    // The producer's error (e.g. a file that changed) explains an aborted upload best.
    produced?;
    uploaded?;
    Ok(report)
}

/// A temporary file that is already unlinked: created in a fresh 0700 directory, opened, and
/// both removed at once, so nothing of it outlives the process, even after `kill -9`.
fn spool_file() -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = crate::cache::private_dir("didx-spool")?;
    let path = dir.path().join("archive.tar");
    let file = std::fs::File::options().read(true).write(true).create_new(true).mode(0o600).open(&path);
    std::fs::remove_file(&path).ok();
    drop(dir);
    file.map_err(|e| Error::io("making the copy's spool file", e))
}

/// Validate the archive `input` into a spool file; the file and what it holds.
fn spool(input: impl Read, place: Placement) -> Result<(std::fs::File, Report)> {
    let mut file = spool_file()?;
    let report = validate::validate_tar(input, place, Origin::Foreign, std::io::BufWriter::with_capacity(CHUNK, &file))?;
    file.rewind().map_err(|e| Error::io("rewinding the copy's spool file", e))?;
    Ok((file, report))
}

/// Validate an archive coming from the engine into a spool file (download and validation
/// overlap; the upload waits for the whole archive to pass).
async fn spool_stream(
    mut input: futures_util::stream::BoxStream<'_, std::io::Result<Bytes>>,
    place: Placement,
) -> Result<(std::fs::File, Report)> {
    let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<std::io::Result<Bytes>>(DEPTH);
    let validated = tokio::task::spawn_blocking(move || spool(ChannelReader { rx: in_rx, buf: Bytes::new() }, place));
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
    let (_, r) = tokio::join!(feed, validated);
    r.map_err(|e| Error::Task { what: "the copy task", source: e })?
}

/// Upload a validated spool file (nothing is sent when validation failed).
async fn upload_spool(
    target: &dyn Backend,
    client: &str,
    validated: std::result::Result<Result<(std::fs::File, Report)>, tokio::task::JoinError>,
) -> Result<Report> {
    let (file, report) = validated.map_err(|e| Error::Task { what: "the copy task", source: e })??;
    let stream = crate::engine::body_from(tokio::fs::File::from_std(file), CHUNK);
    target.copy_in(client, "/", Box::pin(stream)).await?;
    Ok(report)
}

/// A bounded channel whose sending half is a `std::io::Write` (for the validator on the
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_is_labelled_with_the_time_it_was_made_so_no_sweep_takes_it_while_it_is_read() {
        // Labelled as made at the epoch, a reader was "abandoned" at once to the sweep every
        // other didx start runs: one started beside a run checking its `--cp IMAGE::` source
        // removed the reader under it ("no such path in that image").
        let body = reader_body("e1", "img:1", 1_700_000_000);
        let l = body.labels.unwrap();
        assert_eq!(l.get(labels::CREATED).map(String::as_str), Some("1700000000"));
        assert_eq!(l.get(labels::ENV).map(String::as_str), Some("e1"));
        assert_eq!(body.image.as_deref(), Some("img:1"));
    }
}
