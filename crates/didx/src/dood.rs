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
//! taken gets what holds it added to the engine's message ([`crate::publish::port_holder`]).
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
    /// `POST /containers/create`: translate bind sources, add the labels.
    CreateContainer,
    /// `POST /volumes/create` or `/networks/create`: add the labels.
    Label,
    /// `POST /containers/{id}/start`: on a taken port, add its holder to the message.
    Start,
    /// Anything else: passed through untouched.
    None,
}

/// Which rewrite `method path` gets (the API version prefix `/v1.NN` is optional).
fn rewrite_for(method: &Method, path: &str) -> Rewrite {
    if method != Method::POST {
        return Rewrite::None;
    }
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest.find('/').map_or("", |i| &rest[i..]),
        _ => path,
    };
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "containers", "create"] => Rewrite::CreateContainer,
        ["", "volumes", "create"] | ["", "networks", "create"] => Rewrite::Label,
        ["", "containers", _, "start"] => Rewrite::Start,
        _ => Rewrite::None,
    }
}

/// Add `labels` to a create body's `Labels` (a container's, a volume's or a network's), keeping
/// the caller's own.
fn add_labels(body: &mut Value, labels: &HashMap<String, String>) {
    let Some(obj) = body.as_object_mut() else { return };
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

/// Translate a container create body's bind sources that are client paths (`HostConfig.Binds`
/// `SRC:DST[:OPTS]` with an absolute SRC; `HostConfig.Mounts` of type `bind`) through the
/// client's mounts. A source on no mount of the client is an error naming it.
fn translate_binds(body: &mut Value, client: &MountTable) -> std::result::Result<(), String> {
    let refuse = |src: &str| {
        format!(
            "didx --engine host: {src} is a path in the client container on none of its mounts, so the host engine cannot see it; \
             put it under a directory mounted into the client (didx -v HOSTDIR:DIR), or use a volume"
        )
    };
    let Some(hc) = body.get_mut("HostConfig").and_then(Value::as_object_mut) else { return Ok(()) };
    if let Some(binds) = hc.get_mut("Binds").and_then(Value::as_array_mut) {
        for b in binds.iter_mut() {
            let Some(s) = b.as_str() else { continue };
            let (src, rest) = s.split_once(':').unwrap_or((s, ""));
            if !src.starts_with('/') {
                continue; // a named volume
            }
            let host = client.translate(src).ok_or_else(|| refuse(src))?;
            let host = host.to_string_lossy();
            *b = Value::String(if rest.is_empty() { host.into_owned() } else { format!("{host}:{rest}") });
        }
    }
    if let Some(mounts) = hc.get_mut("Mounts").and_then(Value::as_array_mut) {
        for m in mounts.iter_mut() {
            if m.get("Type").and_then(Value::as_str) != Some("bind") {
                continue;
            }
            let Some(src) = m.get("Source").and_then(Value::as_str).map(str::to_string) else { continue };
            let host = client.translate(&src).ok_or_else(|| refuse(&src))?;
            m["Source"] = Value::String(host.to_string_lossy().into_owned());
        }
    }
    Ok(())
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
/// client and finding port holders), the client's name and the labels to add.
struct Ctx {
    upstream: PathBuf,
    engine: Engine,
    client: String,
    env: String,
}

/// A running proxy: its task ends (and its socket directory goes) when this is dropped.
#[derive(Debug)]
pub struct Proxy {
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

impl Proxy {
    /// Serve environment `env`'s proxy for client `client` on a socket in `dir` (made 0700;
    /// the socket is `dir/docker.sock`), forwarding to `engine` (a `unix://` engine only).
    pub async fn start(engine: &Engine, env: &str, client: &str, dir: PathBuf) -> Result<Proxy> {
        let upstream = match engine.host().strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None => return Err(Error::EngineHostNeedsSocket { host: engine.host().to_string() }),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("making {}", dir.display()), e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(format!("securing {}", dir.display()), e))?;
        let socket = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).map_err(|e| Error::io(format!("listening on {}", socket.display()), e))?;
        // Open to every user of the client (`--user`): on this machine the 0700 directory
        // keeps everyone but didx's user out; in the client the socket is bound by itself.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| Error::io(format!("opening {} to the client's users", socket.display()), e))?;
        let ctx = Arc::new(Ctx { upstream, engine: engine.clone(), client: client.to_string(), env: env.to_string() });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(ctx, req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await {
                        tracing::debug!(error = %e, "engine proxy connection ended");
                    }
                });
            }
        });
        Ok(Proxy { task, dir })
    }

    /// The socket's path (on this machine).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn handle(ctx: Arc<Ctx>, mut req: Request<Incoming>) -> Response<Body> {
    let rewrite = rewrite_for(req.method(), req.uri().path());
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

/// The rewritten body of a create request (its translation error as the message otherwise).
async fn rewritten(ctx: &Ctx, rewrite: &Rewrite, bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut body: Value = serde_json::from_slice(bytes).map_err(|e| format!("didx engine proxy: the request is not JSON: {e}"))?;
    if *rewrite == Rewrite::CreateContainer {
        let client = ctx.engine.inspect(&ctx.client).await.map_err(|e| format!("didx engine proxy: inspecting the client: {e}"))?;
        translate_binds(&mut body, &MountTable::of(&client))?;
    }
    add_labels(&mut body, &labels::for_resource(&ctx.env, Role::Started, crate::env::now_secs()));
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

    #[test]
    fn binds_and_bind_mounts_are_translated_and_volumes_left() {
        let mut body = serde_json::json!({
            "Image": "x",
            "HostConfig": {
                "Binds": ["/work/src:/src:ro", "named:/data", "/work"],
                "Mounts": [
                    {"Type": "bind", "Source": "/work/cache/a", "Target": "/a"},
                    {"Type": "volume", "Source": "vol", "Target": "/v"}
                ]
            }
        });
        translate_binds(&mut body, &table()).unwrap();
        assert_eq!(body["HostConfig"]["Binds"], serde_json::json!(["/home/u/proj/src:/src:ro", "named:/data", "/home/u/proj"]));
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "/srv/cache/a");
        assert_eq!(body["HostConfig"]["Mounts"][1]["Source"], "vol");
    }

    #[test]
    fn a_bind_of_a_path_on_no_client_mount_is_refused_naming_it() {
        let mut body = serde_json::json!({"HostConfig": {"Binds": ["/tmp/made-in-client:/x"]}});
        let err = translate_binds(&mut body, &table()).unwrap_err();
        assert!(err.contains("/tmp/made-in-client") && err.contains("-v"), "{err}");
        let mut body = serde_json::json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}});
        assert!(translate_binds(&mut body, &table()).is_err());
    }

    #[test]
    fn labels_are_added_beside_the_callers_own() {
        let mut body = serde_json::json!({"Labels": {"mine": "1"}});
        add_labels(&mut body, &HashMap::from([("io.didx.env".to_string(), "e1".to_string())]));
        assert_eq!(body["Labels"], serde_json::json!({"mine": "1", "io.didx.env": "e1"}));
        let mut body = serde_json::json!({"Name": "n", "Labels": null});
        add_labels(&mut body, &HashMap::from([("k".to_string(), "v".to_string())]));
        assert_eq!(body["Labels"], serde_json::json!({"k": "v"}));
    }

    #[test]
    fn requests_are_routed_to_their_rewrite_with_or_without_a_version() {
        assert_eq!(rewrite_for(&Method::POST, "/v1.41/containers/create"), Rewrite::CreateContainer);
        assert_eq!(rewrite_for(&Method::POST, "/containers/create"), Rewrite::CreateContainer);
        assert_eq!(rewrite_for(&Method::POST, "/v1.45/volumes/create"), Rewrite::Label);
        assert_eq!(rewrite_for(&Method::POST, "/networks/create"), Rewrite::Label);
        assert_eq!(rewrite_for(&Method::POST, "/v1.41/containers/abc/start"), Rewrite::Start);
        assert_eq!(rewrite_for(&Method::GET, "/v1.41/containers/create"), Rewrite::None);
        assert_eq!(rewrite_for(&Method::POST, "/v1.41/containers/abc/attach"), Rewrite::None);
        assert_eq!(rewrite_for(&Method::POST, "/volumes/prune"), Rewrite::None);
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
