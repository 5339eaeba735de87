//! One request through the proxy: routed, its body rewritten when it is a create, forwarded to
//! the engine (an upgraded connection spliced both ways), the answer passed back (a failed
//! start's with what holds its port).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::mounts::MountTable;
use super::rewrite::{label_body, prepare_create, with_message};
use super::route::{Rewrite, rewrite_for};
use crate::engine::Engine;
use crate::labels::{self, Role};

pub(super) type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub(super) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// What a running proxy needs: the engine socket it forwards to, the engine (for inspecting the
/// client, making volumes and finding port holders), the client's name and the environment.
pub(super) struct Ctx {
    pub(super) upstream: PathBuf,
    pub(super) engine: Engine,
    pub(super) client: String,
    pub(super) env: String,
}

pub(super) async fn handle(ctx: Arc<Ctx>, mut req: Request<Incoming>) -> Response<Body> {
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
            Some(port) => crate::engine::port_holder(&ctx.engine, port).await.map(|h| format!("host port {port} is held by {h}")),
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
