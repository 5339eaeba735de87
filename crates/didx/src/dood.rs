//! Docker-outside-of-Docker (`--engine host`): no server; the client talks to the engine didx
//! itself uses, through an engine-API proxy didx runs for the environment.
//!
//! The pitfall DooD users solve by hand is that a bind mount's source names a path of the
//! *engine's* machine, while the program asking (in the client container) only knows its own
//! paths. The proxy solves it the way a "mount resolver" does, through the engine API: every
//! `POST /containers/create` from the client has its bind sources that are client paths
//! translated through the client container's own mounts, as the engine reports them
//! ([`MountTable::translate`]); a client path on no mount of the client is refused with a
//! message saying so, never passed on to mean something else on the host. Containers, volumes
//! and networks the client creates are labelled with the environment ([`Role::Started`]), so
//! clean-up by policy removes them with the client. A start that fails because a host port is
//! taken gets what holds it added to the engine's message (`port_holder`).
//!
//! The proxy reads a request as the engine does, so a hostile or careless client cannot slip
//! past it: it routes on the percent-decoded, cleaned path without its `/v1.NN` prefix
//! (`rewrite_for`), matches JSON keys ignoring case as Go's decoder does and refuses two keys
//! the engine would read as one (`prepare_create`), and makes the named volumes a container
//! create would make the engine create implicitly itself, labelled. It raises the process's
//! open-file limit, serves a bounded number of connections (`503` beyond), never spins on a
//! failed accept, makes its directory without following links, and sweeps the directories of
//! proxies that are gone ([`Proxy::start`]).
//!
//! When didx itself runs in a container on the same engine (a CI job with the socket mounted),
//! paths didx hands the engine (`-v` sources, the proxy's socket) are translated the same way
//! through didx's own container's mounts ([`own_mounts`]).
//!
//! The proxy lives in the didx process (a task of its runtime), on a unix socket in didx's
//! cache directory bound into the client at `/var/run/docker.sock`: the client reaches the
//! engine while didx runs. A client kept past its run (`--clean none`) keeps its files but no
//! longer reaches an engine.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::labels::{self, Role};

/// Where the proxy's socket appears in the client (docker's default, so every tool finds it).
pub const CLIENT_SOCKET: &str = "/var/run/docker.sock";

/// A container's mounts as (destination inside it, source on the engine's machine), from its
/// inspected `Mounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable(Vec<(PathBuf, PathBuf)>);

impl MountTable {
    /// From (destination, source) pairs.
    pub fn new(pairs: impl IntoIterator<Item = (PathBuf, PathBuf)>) -> MountTable {
        MountTable(pairs.into_iter().collect())
    }

    /// From an inspected container.
    pub fn of(inspect: &bollard::models::ContainerInspectResponse) -> MountTable {
        let mounts = inspect.mounts.as_deref().unwrap_or_default();
        MountTable::new(mounts.iter().filter_map(|m| Some((PathBuf::from(m.destination.as_ref()?), PathBuf::from(m.source.as_ref()?)))))
    }

    /// The engine-side path of `path` (absolute, in the container): the source of the mount
    /// whose destination is the longest whole-component prefix of it, joined with the rest.
    /// `path` is normalised lexically first (`.`, `..`, repeated `/`); `None` when no mount
    /// holds it (the engine could not see it) or it is not absolute.
    pub fn translate(&self, path: &str) -> Option<PathBuf> {
        let path = normalise(path)?;
        let (dst, src) = self.0.iter().filter(|(dst, _)| path.starts_with(dst)).max_by_key(|(dst, _)| dst.components().count())?;
        let rest = path.strip_prefix(dst).ok()?;
        Some(if rest.as_os_str().is_empty() { src.clone() } else { src.join(rest) })
    }
}

/// `path` with `.`, `..` and repeated separators resolved lexically; `None` unless absolute.
fn normalise(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// The id of the container this process runs in, from the engine's bind of its `hostname`
/// file (`/var/lib/docker/containers/<id>/hostname` in `/proc/self/mountinfo`); `None` outside
/// a Docker container.
pub fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, at) = (fields.get(3)?, fields.get(4)?);
        if *at != "/etc/hostname" {
            return None;
        }
        let dir = root.strip_suffix("/hostname")?;
        let id = dir.rsplit('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

/// The mounts of the container this process runs in when that container is on `engine`
/// (didx in a CI job's container with the engine's socket): the table [`translate_own`] uses.
/// `None` when didx runs on the engine's machine itself (or the engine is another one).
pub async fn own_mounts(engine: &Engine) -> Result<Option<MountTable>> {
    if !engine.is_local() {
        return Ok(None);
    }
    let Some(id) = std::fs::read_to_string("/proc/self/mountinfo").ok().as_deref().and_then(own_container_id) else {
        return Ok(None);
    };
    Ok(engine.inspect_if_exists(&id).await?.map(|i| MountTable::of(&i)))
}

/// `path` (of this process) as the engine's machine names it: itself when didx is not in a
/// container of the engine, else translated through that container's mounts (an error naming
/// the fix when no mount holds it).
pub fn translate_own(own: Option<&MountTable>, what: &str, path: &Path) -> Result<PathBuf> {
    let Some(own) = own else { return Ok(path.to_path_buf()) };
    own.translate(&path.to_string_lossy()).ok_or_else(|| Error::NotOnAMount { what: what.to_string(), path: path.display().to_string() })
}

/// What the proxy does to a request it rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rewrite {
    /// `POST /containers/create`: translate bind sources, label implicit volumes, add the labels.
    CreateContainer,
    /// `POST /volumes/create` or `/networks/create`: add the labels.
    Label,
    /// `POST /containers/{id}/start`: on a taken port, add its holder to the message.
    Start,
    /// Anything else: passed through untouched.
    None,
}

/// `raw` (a request's path as sent) as the engine's router matches it: percent-decoded (Go's
/// `net/http`) and cleaned (gorilla/mux: `.`, `..` and repeated `/` resolved, a trailing `/`
/// kept; the engine answers an unclean path with a redirect to the clean one, so routing on the
/// clean one is never less strict). `None` for a malformed `%` escape (the engine refuses it).
fn engine_path(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
            decoded.push((hex(i + 1)? * 16 + hex(i + 2)?) as u8);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut parts: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if decoded.ends_with('/') && out != "/" {
        out.push('/');
    }
    Some(out)
}

/// `path` without the engine's optional API version prefix (its router's `/v{version:[0-9.]+}`).
fn unversioned(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.').len();
        if digits > 0 && rest[digits..].starts_with('/') {
            return &rest[digits..];
        }
    }
    path
}

/// Which rewrite `method raw_path` gets, routed as the engine routes it ([`engine_path`], then
/// the version prefix); `Err` for a path the engine could not decode.
fn rewrite_for(method: &Method, raw_path: &str) -> std::result::Result<Rewrite, String> {
    let path = engine_path(raw_path).ok_or_else(|| format!("didx engine proxy: malformed percent-encoding in the path {raw_path}"))?;
    if method != Method::POST {
        return Ok(Rewrite::None);
    }
    Ok(match unversioned(&path) {
        "/containers/create" => Rewrite::CreateContainer,
        "/volumes/create" | "/networks/create" => Rewrite::Label,
        p if p.len() > "/containers//start".len() && p.starts_with("/containers/") && p.ends_with("/start") => Rewrite::Start,
        _ => Rewrite::None,
    })
}

/// A JSON object key as Go's `encoding/json` compares it with the engine's (ASCII) field
/// names: it matches them ignoring case under Unicode simple folding, which for ASCII names is
/// ASCII case plus `ſ` (U+017F) for `s` and the Kelvin sign (U+212A) for `k`.
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Refuse an object holding two keys the engine reads as one field (say `HostConfig` and
/// `hostconfig`: it would merge or pick one; the proxy cannot know which the client meant),
/// then rename the keys of `fields` to their canonical spelling, so the proxy reads and writes
/// what the engine reads.
fn canonical(obj: &mut serde_json::Map<String, Value>, fields: &[&str], place: &str) -> std::result::Result<(), String> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for k in obj.keys() {
        if let Some(other) = seen.insert(fold(k), k) {
            return Err(format!(
                "didx engine proxy: {place} has both \"{other}\" and \"{k}\", which the engine reads as one field (it ignores case); send it once"
            ));
        }
    }
    for field in fields {
        let folded = fold(field);
        if let Some(k) = obj.keys().find(|k| *k != field && fold(k) == folded).cloned() {
            let v = obj.remove(&k).unwrap_or(Value::Null);
            obj.insert((*field).to_string(), v);
        }
    }
    Ok(())
}

/// Add `labels` to a create body's `Labels` (a container's, a volume's or a network's), keeping
/// the caller's own.
fn add_labels(obj: &mut serde_json::Map<String, Value>, labels: &HashMap<String, String>) {
    let entry = obj.entry("Labels").or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        *entry = Value::Object(Default::default());
    }
    if let Some(map) = entry.as_object_mut() {
        for (k, v) in labels {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// A `POST /volumes/create` or `/networks/create` body, labelled.
fn label_body(body: &mut Value, labels: &HashMap<String, String>) -> std::result::Result<(), String> {
    let obj = body.as_object_mut().ok_or("didx engine proxy: the request body is not a JSON object")?;
    canonical(obj, &["Labels"], "the request")?;
    add_labels(obj, labels);
    Ok(())
}

/// A named volume a container create makes the engine create when it is missing: made by the
/// proxy first, labelled, with the driver and options the engine would use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImplicitVolume {
    name: String,
    driver: Option<String>,
    options: HashMap<String, String>,
    labels: HashMap<String, String>,
}

/// A JSON object of strings as a map (what is not a string is left out: the engine refuses it).
fn strings(v: Option<&Value>) -> HashMap<String, String> {
    v.and_then(Value::as_object).map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()).unwrap_or_default()
}

/// Rewrite a container create body as the engine will read it: refuse keys it reads as one,
/// translate bind sources that are client paths through the client's mounts, add `labels`;
/// returns the named volumes it names (to be made labelled when missing).
///
/// The host config the engine reads is `HostConfig`, or, when that is absent or null, the
/// top-level object (the engine still reads the deprecated top-level `Binds`, `Mounts`, …).
/// A bind source is `HostConfig.Binds` `SRC:DST[:OPTS]` with an absolute SRC (a lone `/DST` is
/// an anonymous volume and is left), or a `HostConfig.Mounts` entry of type `bind`; a source on
/// no mount of the client is an error naming it. A named volume is a `Binds` SRC that is not a
/// path (driver `HostConfig.VolumeDriver`), or a `Mounts` entry of type `volume` with a source
/// (driver, options and labels from its `VolumeOptions`).
fn prepare_create(body: &mut Value, client: &MountTable, labels: &HashMap<String, String>) -> std::result::Result<Vec<ImplicitVolume>, String> {
    let refuse = |src: &str| {
        format!(
            "didx --engine host: {src} is a path in the client container on none of its mounts, so the host engine cannot see it; \
             put it under a directory mounted into the client (didx -v HOSTDIR:DIR), or use a volume"
        )
    };
    const HOST_FIELDS: [&str; 3] = ["Binds", "Mounts", "VolumeDriver"];
    let top = body.as_object_mut().ok_or("didx engine proxy: the request body is not a JSON object")?;
    canonical(top, &["HostConfig", "Labels", "Binds", "Mounts", "VolumeDriver"], "the request")?;
    let mut volumes = Vec::new();
    {
        let hc = match top.get("HostConfig") {
            Some(Value::Object(_)) => {
                let hc = top.get_mut("HostConfig").and_then(Value::as_object_mut).expect("an object");
                canonical(hc, &HOST_FIELDS, "HostConfig")?;
                hc
            }
            _ => &mut *top,
        };
        let driver = hc.get("VolumeDriver").and_then(Value::as_str).filter(|d| !d.is_empty()).map(str::to_string);
        if let Some(binds) = hc.get_mut("Binds").and_then(Value::as_array_mut) {
            for b in binds.iter_mut() {
                let Some(s) = b.as_str() else { continue };
                let Some((src, rest)) = s.split_once(':') else { continue }; // an anonymous volume
                if src.is_empty() {
                    continue;
                }
                if !src.starts_with('/') {
                    volumes.push(ImplicitVolume { name: src.to_string(), driver: driver.clone(), options: HashMap::new(), labels: labels.clone() });
                    continue;
                }
                let host = client.translate(src).ok_or_else(|| refuse(src))?;
                *b = Value::String(format!("{}:{rest}", host.to_string_lossy()));
            }
        }
        if let Some(mounts) = hc.get_mut("Mounts").and_then(Value::as_array_mut) {
            for (i, m) in mounts.iter_mut().enumerate() {
                let Some(m) = m.as_object_mut() else { continue };
                let place = format!("HostConfig.Mounts[{i}]");
                canonical(m, &["Type", "Source", "VolumeOptions"], &place)?;
                if let Some(vo) = m.get_mut("VolumeOptions").and_then(Value::as_object_mut) {
                    canonical(vo, &["Labels", "DriverConfig"], &format!("{place}.VolumeOptions"))?;
                    if let Some(dc) = vo.get_mut("DriverConfig").and_then(Value::as_object_mut) {
                        canonical(dc, &["Name", "Options"], &format!("{place}.VolumeOptions.DriverConfig"))?;
                    }
                }
                let Some(src) = m.get("Source").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string) else { continue };
                match m.get("Type").and_then(Value::as_str) {
                    Some("bind") => {
                        let host = client.translate(&src).ok_or_else(|| refuse(&src))?;
                        m.insert("Source".into(), Value::String(host.to_string_lossy().into_owned()));
                    }
                    Some("volume") => {
                        let vo = m.get("VolumeOptions");
                        let dc = vo.and_then(|v| v.get("DriverConfig"));
                        let mut vlabels = strings(vo.and_then(|v| v.get("Labels")));
                        vlabels.extend(labels.clone());
                        volumes.push(ImplicitVolume {
                            name: src,
                            driver: dc.and_then(|d| d.get("Name")).and_then(Value::as_str).filter(|d| !d.is_empty()).map(str::to_string),
                            options: strings(dc.and_then(|d| d.get("Options"))),
                            labels: vlabels,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
    add_labels(top, labels);
    Ok(volumes)
}

/// The engine's message in a JSON error body, with `more` added.
fn with_message(body: &[u8], more: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let msg = v.get("message")?.as_str()?.to_string();
    v["message"] = Value::String(format!("{msg} ({more})"));
    serde_json::to_vec(&v).ok()
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// What a running proxy needs: the engine socket it forwards to, the engine (for inspecting the
/// client, making volumes and finding port holders), the client's name and the environment.
struct Ctx {
    upstream: PathBuf,
    engine: Engine,
    client: String,
    env: String,
}

/// How long the accept loop waits after a failed accept (out of descriptors, say) before it
/// tries again: the failure is not retried in a spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a connection refused for the connection bound may take to read its `503`.
const REFUSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A `dood/<id>` directory younger than this is never swept (its proxy may be starting).
const SWEEP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The file in `dood/<id>` naming the kernel (boot id) whose process serves its socket.
const KERNEL_FILE: &str = "kernel";

/// Raise this process's open-file soft limit (`RLIMIT_NOFILE`) to its hard limit, once (at the
/// first proxy start); returns the soft limit in force. Each proxied connection costs two
/// descriptors, and a common soft limit of 1024 runs out at a few hundred open streams.
/// (Processes didx starts afterwards inherit the raised limit.)
fn raise_open_files() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // None is RLIM_INFINITY.
        let now = getrlimit(Resource::Nofile);
        let (cur, max) = (now.current.unwrap_or(u64::MAX), now.maximum.unwrap_or(u64::MAX));
        // The kernel refuses more than fs.nr_open (2^20 by default), RLIM_INFINITY included.
        let target = max.min(1 << 20);
        if cur < target {
            match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: now.maximum }) {
                Ok(()) => {
                    tracing::debug!(from = cur, to = target, "open-file limit raised for the engine proxy");
                    return target;
                }
                Err(e) => tracing::debug!(error = %std::io::Error::from(e), "cannot raise the open-file limit"),
            }
        }
        cur
    })
}

/// How many client connections a proxy serves at once under an open-file limit of `limit`: two
/// descriptors each, after a reserve for the rest of didx (a quarter, 32 to 256), at least 16
/// and at most 16384. A connection beyond it is answered `503` at once.
fn connection_bound(limit: u64) -> usize {
    let reserve = (limit / 4).clamp(32, 256);
    (limit.saturating_sub(reserve) / 2).clamp(16, 16384) as usize
}

/// This kernel's boot id (the same in every container of this machine; another machine's
/// differs).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Open directory `path` without following a symbolic link, refusing one that is a link, not
/// a directory, not this user's, or writable by group or others (where another user could
/// swap in what the proxy's socket then appears through). The error names the path and fix.
fn open_private_dir(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let bad = |why: String| Error::ProxyDirUnsafe { path: path.display().to_string(), why };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_symlink()
    {
        let to = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
        return Err(bad(format!("is a symbolic link (to {to}), which didx does not follow; remove it")));
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => bad("is not a directory (a symbolic link?), which didx does not follow; remove it".into()),
            _ => Error::io(format!("opening the engine proxy's directory {}", path.display()), e),
        })?;
    let meta = dir.metadata().map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(bad(format!("belongs to user {}, not to didx's user {me}; remove it", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!("is writable by group or others (mode {:o}); remove it or chmod go-w it", meta.mode() & 0o7777)));
    }
    Ok(dir)
}

/// `name` inside the directory open as `dir`, as a path that reaches it through the open
/// descriptor (never through a link swapped in since it was opened).
fn at(dir: &std::fs::File, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Remove the `dood/<id>` directories (other than `keep`) of proxies that are gone: this
/// kernel's (its recorded boot id, or none recorded), older than [`SWEEP_GRACE`], and whose
/// socket is absent or refuses a connection (a unix socket's listener ends with its process,
/// however the process ended: `kill -9` included). A directory of a live proxy of any didx
/// process, on any engine, answers and stays; another machine's (a shared cache directory) is
/// left. Returns the ids removed.
async fn sweep_dirs(dood: &std::fs::File, keep: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(at(dood, "")) else { return vec![] };
    let boot = boot_id();
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else { continue };
        if id == keep || id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        let young = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_none_or(|age| age < SWEEP_GRACE);
        if !meta.is_dir() || young {
            continue;
        }
        let kernel = crate::cache::open_read(&entry.path().join(KERNEL_FILE)).and_then(std::io::read_to_string);
        if kernel.is_ok_and(|k| k.trim() != boot) {
            continue;
        }
        let connect = tokio::time::timeout(std::time::Duration::from_secs(1), tokio::net::UnixStream::connect(entry.path().join("docker.sock"))).await;
        let gone =
            matches!(connect, Ok(Err(ref e)) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound));
        if !gone {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => swept.push(id),
            Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a dead engine proxy's directory"),
        }
    }
    if !swept.is_empty() {
        tracing::debug!(ids = ?swept, "directories of dead engine proxies removed");
    }
    swept
}

/// A running proxy: its task ends (and its socket directory goes) when this is dropped.
#[derive(Debug)]
pub struct Proxy {
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

impl Proxy {
    /// Serve environment `env`'s proxy for client `client` on a socket in `dir`
    /// (`<cache>/dood/<env>`; the socket is `dir/docker.sock`), forwarding to `engine` (a
    /// `unix://` engine only).
    ///
    /// `dir`'s parent is made (mode 0700) or opened without following a link and must be this
    /// user's and not writable by others; `dir` is made anew, mode 0700, through it (an existing
    /// one is refused). Directories of proxies that are gone are swept first (`sweep_dirs`).
    /// The process's open-file soft limit is raised to its hard limit once
    /// (`raise_open_files`); at most `connection_bound` client connections are served at
    /// once, a further one is answered `503` with a message saying so.
    pub async fn start(engine: &Engine, env: &str, client: &str, dir: PathBuf) -> Result<Proxy> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let upstream = match engine.host().strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None => return Err(Error::EngineHostNeedsSocket { host: engine.host().to_string() }),
        };
        let (Some(parent), Some(id)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str())) else {
            return Err(Error::io(format!("placing the engine proxy at {}", dir.display()), std::io::Error::other("no parent directory")));
        };
        match std::fs::DirBuilder::new().mode(0o700).create(parent) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(Error::io(format!("making {}", parent.display()), e)),
            _ => {}
        }
        let dood = open_private_dir(parent)?;
        sweep_dirs(&dood, id).await;
        std::fs::DirBuilder::new().mode(0o700).create(at(&dood, id)).map_err(|e| Error::io(format!("making {}", dir.display()), e))?;
        // What follows is undone on failure (no Proxy, no Drop to remove the directory).
        let made = (|| {
            let own = open_private_dir(&at(&dood, id))?;
            own.set_permissions(std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(format!("securing {}", dir.display()), e))?;
            let record = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(at(&own, KERNEL_FILE))
                .and_then(|mut f| std::io::Write::write_all(&mut f, boot_id().as_bytes()));
            record.map_err(|e| Error::io(format!("writing {}", dir.join(KERNEL_FILE).display()), e))?;
            let socket = dir.join("docker.sock");
            // Bound through the open directory: a link swapped in on the way is not followed.
            let listener = tokio::net::UnixListener::bind(at(&own, "docker.sock")).map_err(|e| Error::io(format!("listening on {}", socket.display()), e))?;
            // Open to every user of the client (`--user`): on this machine the 0700 directory
            // keeps everyone but didx's user out; in the client the socket is bound by itself.
            std::fs::set_permissions(at(&own, "docker.sock"), std::fs::Permissions::from_mode(0o666))
                .map_err(|e| Error::io(format!("opening {} to the client's users", socket.display()), e))?;
            Ok(listener)
        })();
        let listener = match made {
            Ok(l) => l,
            Err(e) => {
                if let Err(rm) = std::fs::remove_dir_all(at(&dood, id)) {
                    tracing::warn!(dir = %dir.display(), error = %rm, "cannot remove the engine proxy's directory after a failed start");
                }
                return Err(e);
            }
        };
        let bound = connection_bound(raise_open_files());
        let ctx = Arc::new(Ctx { upstream, engine: engine.clone(), client: client.to_string(), env: env.to_string() });
        let task = tokio::spawn(serve(listener, ctx, bound));
        Ok(Proxy { task, dir })
    }

    /// The socket's path (on this machine).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }
}

/// The accept loop: each connection is served on its own task while a slot of `bound` is free,
/// else answered `503`. A failed accept (out of descriptors, say) is logged once and retried
/// after [`ACCEPT_BACKOFF`], never in a spin.
async fn serve(listener: tokio::net::UnixListener, ctx: Arc<Ctx>, bound: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(bound));
    let mut warned = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if warned {
                    tracing::debug!(error = %e, "engine proxy cannot accept a connection");
                } else {
                    tracing::warn!(error = %e, "engine proxy cannot accept a connection; retrying every {ACCEPT_BACKOFF:?}");
                    warned = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let msg = format!(
                    "didx engine proxy: {bound} connections are open at once, its limit (two open files each, under this process's open-file limit); \
                     end some (streams such as logs -f, events, attach) and try again"
                );
                let svc = hyper::service::service_fn(move |_req| {
                    let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, &msg);
                    r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(REFUSAL_TIMEOUT, conn).await; // refused either way
            });
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(ctx, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await {
                tracing::debug!(error = %e, "engine proxy connection ended");
            }
            drop(slot);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "cannot remove the engine proxy's directory");
        }
    }
}

async fn handle(ctx: Arc<Ctx>, mut req: Request<Incoming>) -> Response<Body> {
    let rewrite = match rewrite_for(req.method(), req.uri().path()) {
        Ok(r) => r,
        Err(msg) => return error_response(StatusCode::BAD_REQUEST, &msg),
    };
    let wants_upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let client_side = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let body = match rewrite {
        Rewrite::CreateContainer | Rewrite::Label => {
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("didx engine proxy: reading the request: {e}")),
            };
            match rewritten(&ctx, &rewrite, &bytes).await {
                Ok(b) => {
                    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
                    parts.headers.insert(hyper::header::CONTENT_LENGTH, b.len().into());
                    full(b)
                }
                Err(msg) => return error_response(StatusCode::BAD_REQUEST, &msg),
            }
        }
        _ => body.boxed(),
    };
    let upstream = match tokio::net::UnixStream::connect(&ctx.upstream).await {
        Ok(s) => s,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, &format!("didx engine proxy: {}: {e}", ctx.upstream.display())),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
        Ok(x) => x,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, &format!("didx engine proxy: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "engine connection ended");
        }
    });
    let mut resp = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, &format!("didx engine proxy: {e}")),
    };
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) = (resp.status(), client_side) {
        let engine_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(e)) = (client_side.await, engine_side.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(e)).await;
            }
        });
    }
    if rewrite == Rewrite::Start && resp.status().is_server_error() {
        let (mut parts, body) = resp.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let msg = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v.get("message")?.as_str().map(str::to_string)).unwrap_or_default();
        let holder = match crate::publish::refused_port(&msg) {
            Some(port) => crate::publish::port_holder(&ctx.engine, port).await.map(|h| format!("host port {port} is held by {h}")),
            None => None,
        };
        let bytes = holder.and_then(|h| with_message(&bytes, &h)).map(Bytes::from).unwrap_or(bytes);
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
        parts.headers.insert(hyper::header::CONTENT_LENGTH, bytes.len().into());
        return Response::from_parts(parts, full(bytes));
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.boxed())
}

/// The rewritten body of a create request (its refusal as the message otherwise). The named
/// volumes a container create makes the engine create are made first, labelled, when missing
/// (an existing one is the user's and is left as it is).
async fn rewritten(ctx: &Ctx, rewrite: &Rewrite, bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut body: Value = serde_json::from_slice(bytes).map_err(|e| format!("didx engine proxy: the request is not JSON: {e}"))?;
    let labels = labels::for_resource(&ctx.env, Role::Started, crate::util::now_secs());
    if *rewrite == Rewrite::CreateContainer {
        let client = ctx.engine.inspect(&ctx.client).await.map_err(|e| format!("didx engine proxy: inspecting the client: {e}"))?;
        for v in prepare_create(&mut body, &MountTable::of(&client), &labels)? {
            let exists = ctx.engine.volume(&v.name).await.map_err(|e| format!("didx engine proxy: looking up volume {}: {e}", v.name))?;
            if exists.is_none() {
                ctx.engine
                    .create_volume_with(&v.name, v.driver.as_deref(), v.options, v.labels)
                    .await
                    .map_err(|e| format!("didx engine proxy: making volume {} with the environment's labels: {e}", v.name))?;
            }
        }
    } else {
        label_body(&mut body, &labels)?;
    }
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> MountTable {
        MountTable::new([
            ("/work".into(), "/home/u/proj".into()),
            ("/work/cache".into(), "/srv/cache".into()),
            ("/var/run/docker.sock".into(), "/root/.cache/didx/dood/e1/docker.sock".into()),
        ])
    }

    #[test]
    fn client_paths_translate_through_the_longest_mount_holding_them() {
        let t = table();
        assert_eq!(t.translate("/work"), Some("/home/u/proj".into()));
        assert_eq!(t.translate("/work/src/a.c"), Some("/home/u/proj/src/a.c".into()));
        assert_eq!(t.translate("/work/cache/x"), Some("/srv/cache/x".into()));
        assert_eq!(t.translate("/work//./src/../b"), Some("/home/u/proj/b".into()));
        assert_eq!(t.translate("/var/run/docker.sock"), Some("/root/.cache/didx/dood/e1/docker.sock".into()));
    }

    #[test]
    fn paths_on_no_mount_or_escaping_one_do_not_translate() {
        let t = table();
        assert_eq!(t.translate("/workshop/x"), None, "a prefix must be whole components");
        assert_eq!(t.translate("/work/../etc/passwd"), None, "`..` is resolved before matching");
        assert_eq!(t.translate("/tmp/x"), None);
        assert_eq!(t.translate("relative/x"), None);
    }

    fn ours() -> HashMap<String, String> {
        HashMap::from([("io.didx.env".to_string(), "e1".to_string())])
    }

    /// `prepare_create` on `body`, with the labels [`ours`].
    fn prepare(body: &mut Value) -> std::result::Result<Vec<ImplicitVolume>, String> {
        prepare_create(body, &table(), &ours())
    }

    #[test]
    fn binds_and_bind_mounts_are_translated_and_volumes_left() {
        let mut body = serde_json::json!({
            "Image": "x",
            "HostConfig": {
                "Binds": ["/work/src:/src:ro", "named:/data", "/work:/w", "/anon"],
                "Mounts": [
                    {"Type": "bind", "Source": "/work/cache/a", "Target": "/a"},
                    {"Type": "volume", "Source": "vol", "Target": "/v"}
                ]
            }
        });
        prepare(&mut body).unwrap();
        assert_eq!(body["HostConfig"]["Binds"], serde_json::json!(["/home/u/proj/src:/src:ro", "named:/data", "/home/u/proj:/w", "/anon"]));
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "/srv/cache/a");
        assert_eq!(body["HostConfig"]["Mounts"][1]["Source"], "vol");
        assert_eq!(body["Labels"], serde_json::json!({"io.didx.env": "e1"}));
    }

    #[test]
    fn a_lone_binds_destination_is_an_anonymous_volume_left_untranslated() {
        // docker-py sends `-v /data` this way; it names no source, so nothing is translated.
        let mut body = serde_json::json!({"HostConfig": {"Binds": ["/data", "/tmp"]}});
        assert_eq!(prepare(&mut body), Ok(vec![]));
        assert_eq!(body["HostConfig"]["Binds"], serde_json::json!(["/data", "/tmp"]));
    }

    #[test]
    fn a_bind_of_a_path_on_no_client_mount_is_refused_naming_it() {
        let mut body = serde_json::json!({"HostConfig": {"Binds": ["/tmp/made-in-client:/x"]}});
        let err = prepare(&mut body).unwrap_err();
        assert!(err.contains("/tmp/made-in-client") && err.contains("-v"), "{err}");
        let mut body = serde_json::json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}});
        assert!(prepare(&mut body).is_err());
    }

    #[test]
    fn keys_in_another_case_are_read_as_the_engine_reads_them() {
        let mut body = serde_json::json!({
            "hostconfig": {"binds": ["/work/a:/a", "vol1:/v"], "MOUNTS": [{"type": "bind", "source": "/work/b", "Target": "/b"}]},
            "labels": {"mine": "1"}
        });
        let vols = prepare(&mut body).unwrap();
        assert_eq!(body["HostConfig"]["Binds"], serde_json::json!(["/home/u/proj/a:/a", "vol1:/v"]));
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "/home/u/proj/b");
        assert_eq!(body["Labels"], serde_json::json!({"mine": "1", "io.didx.env": "e1"}), "merged into the key the engine reads");
        assert!(body.get("labels").is_none() && body.get("hostconfig").is_none(), "{body}");
        assert_eq!(vols.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["vol1"]);
        // Go folds `ſ` to `s` and the Kelvin sign to `k`: `Labelſ` is `Labels` to the engine.
        let mut body = serde_json::json!({"Labelſ": {"mine": "1"}, "HostConfig": {"Binds": ["/etc:/e"]}});
        assert!(prepare(&mut body).is_err(), "the bind is read, and refused");
        let mut body = serde_json::json!({"Labelſ": {"mine": "1"}});
        prepare(&mut body).unwrap();
        assert_eq!(body["Labels"], serde_json::json!({"mine": "1", "io.didx.env": "e1"}));
        assert_eq!(fold("\u{212A}ind"), "kind");
    }

    #[test]
    fn keys_the_engine_reads_as_one_are_refused_wherever_they_are() {
        for (body, place) in [
            (serde_json::json!({"HostConfig": {}, "hostconfig": {"Binds": ["/etc:/e"]}}), "the request"),
            (serde_json::json!({"Labels": {}, "labels": {"a": "b"}}), "the request"),
            (serde_json::json!({"HostConfig": {"Binds": [], "binds": ["/etc:/e"]}}), "HostConfig"),
            (serde_json::json!({"HostConfig": {"Mounts": [{"Type": "volume", "type": "bind", "Source": "/etc"}]}}), "HostConfig.Mounts[0]"),
            (
                serde_json::json!({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "VolumeOptions": {"Labels": {}, "LABELS": {}}}]}}),
                "HostConfig.Mounts[0].VolumeOptions",
            ),
        ] {
            let mut b = body.clone();
            let err = prepare(&mut b).unwrap_err();
            assert!(err.contains(place) && err.contains("which the engine reads as one field"), "{body}: {err}");
        }
        let mut body = serde_json::json!({"Labels": {"a": "1"}, "LABELS": {"b": "2"}});
        assert!(label_body(&mut body, &ours()).is_err(), "a volume's or network's labels too");
        // Label names are map keys the engine keeps as they are: not folded.
        let mut body = serde_json::json!({"Labels": {"a": "1", "A": "2"}});
        prepare(&mut body).unwrap();
    }

    #[test]
    fn without_a_host_config_the_top_level_fields_the_engine_still_reads_are_translated() {
        let mut body = serde_json::json!({"Image": "x", "Binds": ["/work/a:/a", "/etc:/e"]});
        assert!(prepare(&mut body).is_err(), "/etc is on no client mount");
        let mut body = serde_json::json!({"Image": "x", "binds": ["/work/a:/a"], "HostConfig": null});
        prepare(&mut body).unwrap();
        assert_eq!(body["Binds"], serde_json::json!(["/home/u/proj/a:/a"]));
    }

    #[test]
    fn named_volumes_come_with_the_driver_options_and_labels_the_engine_would_use() {
        let mut body = serde_json::json!({"HostConfig": {
            "VolumeDriver": "drv",
            "Binds": ["b1:/b1", "b1:/again:ro"],
            "Mounts": [
                {"Type": "volume", "Source": "m1", "Target": "/m1", "VolumeOptions": {
                    "labels": {"mine": "1", "io.didx.env": "spoofed"},
                    "driverconfig": {"name": "local", "options": {"type": "tmpfs", "device": "tmpfs"}}}},
                {"Type": "volume", "Target": "/anon"},
                {"Type": "tmpfs", "Target": "/t"}
            ]}});
        let vols = prepare(&mut body).unwrap();
        assert_eq!(vols.len(), 3, "{vols:?}");
        assert_eq!((vols[0].name.as_str(), vols[0].driver.as_deref()), ("b1", Some("drv")));
        assert_eq!(vols[0].labels, ours());
        assert_eq!((vols[2].name.as_str(), vols[2].driver.as_deref()), ("m1", Some("local")));
        assert_eq!(vols[2].options, HashMap::from([("type".into(), "tmpfs".into()), ("device".into(), "tmpfs".into())]));
        assert_eq!(vols[2].labels, HashMap::from([("mine".into(), "1".into()), ("io.didx.env".into(), "e1".into())]));
    }

    #[test]
    fn labels_are_added_beside_the_callers_own() {
        let mut body = serde_json::json!({"Labels": {"mine": "1"}});
        label_body(&mut body, &ours()).unwrap();
        assert_eq!(body["Labels"], serde_json::json!({"mine": "1", "io.didx.env": "e1"}));
        let mut body = serde_json::json!({"Name": "n", "Labels": null});
        label_body(&mut body, &ours()).unwrap();
        assert_eq!(body["Labels"], serde_json::json!({"io.didx.env": "e1"}));
        assert!(label_body(&mut serde_json::json!([1]), &ours()).is_err());
    }

    #[test]
    fn requests_are_routed_to_their_rewrite_with_or_without_a_version() {
        let r = |m: &Method, p: &str| rewrite_for(m, p).unwrap();
        assert_eq!(r(&Method::POST, "/v1.41/containers/create"), Rewrite::CreateContainer);
        assert_eq!(r(&Method::POST, "/containers/create"), Rewrite::CreateContainer);
        assert_eq!(r(&Method::POST, "/v1.45/volumes/create"), Rewrite::Label);
        assert_eq!(r(&Method::POST, "/networks/create"), Rewrite::Label);
        assert_eq!(r(&Method::POST, "/v1.41/containers/abc/start"), Rewrite::Start);
        assert_eq!(r(&Method::GET, "/v1.41/containers/create"), Rewrite::None);
        assert_eq!(r(&Method::POST, "/v1.41/containers/abc/attach"), Rewrite::None);
        assert_eq!(r(&Method::POST, "/volumes/prune"), Rewrite::None);
    }

    #[test]
    fn requests_are_routed_on_the_path_the_engine_decodes() {
        let r = |p: &str| rewrite_for(&Method::POST, p).unwrap();
        for p in [
            "/containers%2Fcreate",
            "/containers%2fcreate",
            "/v1.41/containers%2fcreate",
            "/v1.41%2Fcontainers%2Fcreate",
            "/%63ontainers/create",
            "//containers/create",
            "/./containers/create",
            "/v1.41//containers/./create",
            "/volumes/../containers/create",
            "/v.41/containers/create",
        ] {
            assert_eq!(r(p), Rewrite::CreateContainer, "{p}");
        }
        assert_eq!(r("/v1.41/volumes%2Fcreate"), Rewrite::Label);
        assert_eq!(r("/networks/./create"), Rewrite::Label);
        assert_eq!(r("/containers/a%2Fb/start"), Rewrite::Start);
        assert_eq!(r("/containers/create/"), Rewrite::None, "the engine has no such route");
        assert_eq!(r("/vx/containers/create"), Rewrite::None);
        assert!(rewrite_for(&Method::POST, "/containers%2").is_err());
        assert!(rewrite_for(&Method::GET, "/containers/%zz/json").is_err());
        assert_eq!(engine_path("/a/%2e%2E/b/").as_deref(), Some("/b/"));
        assert_eq!(unversioned("/v1.41"), "/v1.41");
    }

    #[test]
    fn the_connection_bound_leaves_descriptors_for_the_rest_of_didx() {
        assert_eq!(connection_bound(256), 96);
        assert_eq!(connection_bound(1024), 384);
        assert_eq!(connection_bound(64), 16);
        assert_eq!(connection_bound(1 << 20), 16384);
    }

    /// A fresh directory for one test.
    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("didx-dood-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_link_or_a_directory_others_may_write_is_refused_as_the_proxy_s_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch("private");
        let target = d.join("target");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, d.join("link")).unwrap();
        let err = open_private_dir(&d.join("link")).unwrap_err().to_string();
        assert!(err.contains("symbolic link") && err.contains("remove it"), "{err}");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_private_dir(&target).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = open_private_dir(&target).unwrap();
        std::fs::write(at(&dir, "f"), "x").unwrap();
        assert!(target.join("f").exists(), "a path through the open descriptor reaches the directory");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn only_directories_of_gone_proxies_of_this_kernel_are_swept() {
        let d = scratch("sweep");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let mk = |id: &str, kernel: Option<&str>| {
            let p = d.join(id);
            std::fs::create_dir(&p).unwrap();
            if let Some(k) = kernel {
                std::fs::write(p.join(KERNEL_FILE), k).unwrap();
            }
            p
        };
        let dead = mk("dead", Some(&boot_id()));
        drop(std::os::unix::net::UnixListener::bind(dead.join("docker.sock")).unwrap()); // its listener is gone
        let live = mk("live", Some(&boot_id()));
        let _listener = std::os::unix::net::UnixListener::bind(live.join("docker.sock")).unwrap();
        let nosocket = mk("nosocket", None);
        let elsewhere = mk("elsewhere", Some("another-machine"));
        let young = mk("young", Some(&boot_id()));
        let keep = mk("mine", Some(&boot_id()));
        for p in [&dead, &live, &nosocket, &elsewhere, &keep] {
            std::fs::File::open(p).unwrap().set_modified(old).unwrap();
        }
        let dood = open_private_dir(&d).unwrap();
        let mut swept = sweep_dirs(&dood, "mine").await;
        swept.sort();
        assert_eq!(swept, ["dead", "nosocket"]);
        assert!(live.exists() && elsewhere.exists() && young.exists() && keep.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_own_container_is_found_from_its_hostname_bind() {
        let id = "a".repeat(64);
        let info = format!(
            "600 500 0:50 / / rw - overlay overlay rw\n\
             610 600 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(own_container_id(&info), Some(id));
        assert_eq!(own_container_id("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }

    #[test]
    fn a_json_message_gets_the_holder_added() {
        let b = with_message(br#"{"message":"Bind for 0.0.0.0:8080 failed"}"#, "host port 8080 is held by container web").unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["message"], "Bind for 0.0.0.0:8080 failed (host port 8080 is held by container web)");
    }
}
