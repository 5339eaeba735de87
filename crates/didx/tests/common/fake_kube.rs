//! A stateful emulation of the parts of a Kubernetes API server didx's objects live in: Jobs,
//! Secrets and Pods of namespaces, created, read, listed by label and deleted, with the
//! answers (codes, `Status` bodies, uids, lists) the real one gives, and the two controllers
//! whose work didx relies on: the Job controller (a Job gets a pod, labelled with its name) and
//! the garbage collector (run on demand: it deletes what is owned by a uid that no longer
//! exists, as the real one does in the background).
//!
//! It can die with the flow that uses it: `kill_after(n)` makes the n-th request take effect
//! and then never answer, and says so, so that a test drops the flow there — a didx killed
//! right after the API server acted on its request.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use didx::kubernetes::kube;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The objects of the emulated cluster: kind → (namespace, name) → object.
#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    next_uid: u64,
    version: u64,
    /// Requests answered (or acted on) so far.
    pub requests: usize,
    /// The log of requests: `METHOD path?query`.
    pub log: Vec<String>,
    /// The streams asked for (`pods/exec`, `pods/attach`, `pods/portforward`: `path?query`),
    /// served by the emulated node.
    pub streams: Vec<String>,
    /// Kinds whose creation the API server forbids (403), e.g. a role without `secrets`.
    pub forbidden: Vec<&'static str>,
    kill_after: Option<usize>,
    /// Set: the next conditional PATCH finds its object changed by another writer first (its
    /// version moved on), as when another claimer won a race.
    pub raced: bool,
}

impl State {
    /// A new resource version (one counter for every object, as etcd's revision).
    pub fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012}", self.next_uid)
    }

    /// Every object of `kind`.
    pub fn all(&self, kind: &'static str) -> Vec<Value> {
        self.objects.get(kind).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    fn uids(&self) -> Vec<String> {
        self.objects.values().flat_map(|m| m.values()).filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_string)).collect()
    }

    /// The garbage collector's pass: deletes every object owned only by uids that are gone,
    /// until nothing more goes.
    pub fn collect_garbage(&mut self) {
        loop {
            let uids = self.uids();
            let mut gone = Vec::new();
            for (kind, m) in &self.objects {
                for (key, o) in m {
                    let owners: Vec<&str> = o["metadata"]["ownerReferences"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|r| r["uid"].as_str()).collect())
                        .unwrap_or_default();
                    if !owners.is_empty() && owners.iter().all(|u| !uids.iter().any(|x| x == u)) {
                        gone.push((*kind, key.clone()));
                    }
                }
            }
            if gone.is_empty() {
                return;
            }
            for (kind, key) in gone {
                self.objects.get_mut(kind).unwrap().remove(&key);
            }
        }
    }

    /// What the cluster does to a Job whose pod ended (its containers' lease ended them, or its
    /// deadline passed): the pod `Failed`, the Job with a `Failed` condition.
    pub fn fail_every_job(&mut self) {
        for job in self.objects.entry("jobs").or_default().values_mut() {
            job["status"] = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]});
        }
        for pod in self.objects.entry("pods").or_default().values_mut() {
            pod["status"] = json!({"phase": "Failed"});
        }
    }

    /// Everything there, as `kind/name` (for messages).
    pub fn names(&self) -> Vec<String> {
        self.objects.iter().flat_map(|(k, m)| m.keys().map(move |(_, n)| format!("{k}/{n}"))).collect()
    }

    fn kind_of(path: &str) -> Option<(&'static str, String, Option<String>)> {
        let rest = path.strip_prefix("/apis/batch/v1/namespaces/").or_else(|| path.strip_prefix("/api/v1/namespaces/"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let kind = match *parts.get(1)? {
            "jobs" => "jobs",
            "secrets" => "secrets",
            "pods" => "pods",
            _ => return None,
        };
        Some((kind, parts[0].to_string(), parts.get(2).map(|s| s.to_string())))
    }

    fn selected(o: &Value, selector: &str) -> bool {
        selector.split(',').filter(|s| !s.is_empty()).all(|term| {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            o["metadata"]["labels"][k].as_str() == Some(v)
        })
    }

    /// Acts on one request as the API server would; the status and body it answers.
    fn act(&mut self, method: &str, path: &str, query: &str, body: &[u8]) -> (StatusCode, Value) {
        self.version += 1;
        let Some((kind, ns, name)) = Self::kind_of(path) else {
            return status(StatusCode::NOT_FOUND, "NotFound", &format!("the server could not find the requested resource ({path})"));
        };
        let list_kind = match kind {
            "jobs" => ("batch/v1", "JobList"),
            "secrets" => ("v1", "SecretList"),
            _ => ("v1", "PodList"),
        };
        let query: BTreeMap<String, String> =
            query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), percent_decode(v))).collect();
        let objects = self.objects.entry(kind).or_default();
        match (method, name) {
            ("POST", None) => {
                if self.forbidden.contains(&kind) {
                    return status(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        &format!("{kind} is forbidden: User cannot create resource \"{kind}\""),
                    );
                }
                let mut o: Value = match serde_json::from_slice(body) {
                    Ok(o) => o,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
                };
                let Some(name) = o["metadata"]["name"].as_str().map(str::to_string) else {
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value");
                };
                if o["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "the namespace of the object does not match the namespace on the request",
                    );
                }
                let key = (ns.clone(), name.clone());
                if objects.contains_key(&key) {
                    return status(StatusCode::CONFLICT, "AlreadyExists", &format!("{kind} \"{name}\" already exists"));
                }
                let uid = self.uid();
                o["metadata"]["uid"] = json!(uid);
                o["metadata"]["namespace"] = json!(ns);
                o["metadata"]["resourceVersion"] = json!(self.version.to_string());
                o["metadata"]["creationTimestamp"] = json!("2026-12-04T00:00:00Z");
                if kind == "secrets"
                    && let Some(sd) = o.get("stringData").cloned()
                {
                    // The API server folds stringData into data.
                    let data = o["data"].as_object().cloned().unwrap_or_default();
                    let mut data = data;
                    for (k, v) in sd.as_object().unwrap() {
                        data.insert(k.clone(), json!(base64(v.as_str().unwrap_or_default().as_bytes())));
                    }
                    o["data"] = Value::Object(data);
                    o.as_object_mut().unwrap().remove("stringData");
                }
                self.objects.get_mut(kind).unwrap().insert(key, o.clone());
                if kind == "jobs" {
                    // The Job controller: one pod, owned by the Job, labelled with its name.
                    let pod_uid = self.uid();
                    let pod = json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {
                            "name": format!("{name}-x7k2p"), "namespace": ns, "uid": pod_uid,
                            "labels": {"batch.kubernetes.io/job-name": name, "job-name": name},
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                        },
                        "spec": o["spec"]["template"]["spec"].clone(),
                        "status": {"phase": "Pending"},
                    });
                    self.objects.entry("pods").or_default().insert((ns.clone(), format!("{name}-x7k2p")), pod);
                    // Counted active while pending, not yet ready.
                    if let Some(j) = self.objects.get_mut("jobs").and_then(|jobs| jobs.get_mut(&(ns, name.clone()))) {
                        j["status"] = json!({"active": 1, "ready": 0});
                    }
                }
                (StatusCode::CREATED, o)
            }
            ("GET", None) => {
                let selector = query.get("labelSelector").cloned().unwrap_or_default();
                let items: Vec<Value> =
                    objects.iter().filter(|((n, _), o)| *n == ns && Self::selected(o, &selector)).map(|(_, o)| o.clone()).collect();
                let list = json!({"apiVersion": list_kind.0, "kind": list_kind.1, "metadata": {"resourceVersion": self.version.to_string()}, "items": items});
                (StatusCode::OK, list)
            }
            ("GET", Some(name)) => match objects.get(&(ns, name.clone())) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{kind} \"{name}\" not found")),
            },
            // A JSON merge patch (RFC 7386); a `metadata.resourceVersion` in it is a
            // precondition, as the API server takes it: applied to that version only, else 409.
            ("PATCH", Some(name)) => {
                let Ok(mut patch) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "the patch is not JSON");
                };
                let Some(o) = objects.get_mut(&(ns, name.clone())) else {
                    return status(StatusCode::NOT_FOUND, "NotFound", &format!("{kind} \"{name}\" not found"));
                };
                let wanted = patch["metadata"].as_object_mut().and_then(|m| m.remove("resourceVersion"));
                if wanted.is_some() && std::mem::take(&mut self.raced) {
                    o["metadata"]["resourceVersion"] = json!(format!("{}-raced", self.version));
                }
                if let Some(wanted) = wanted
                    && o["metadata"]["resourceVersion"] != wanted
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    );
                }
                merge(o, &patch);
                o["metadata"]["resourceVersion"] = json!(self.version.to_string());
                (StatusCode::OK, o.clone())
            }
            ("DELETE", Some(name)) => match objects.remove(&(ns, name.clone())) {
                Some(o) => (StatusCode::OK, o),
                None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{kind} \"{name}\" not found")),
            },
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", &format!("{method} is not supported here")),
        }
    }
}

/// RFC 7386: objects merged key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in fields {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            out.push(if i <= c.len() { A[(n >> shift & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// The emulated API server: clone it into a `kube::Client` and keep a handle to its state.
#[derive(Clone, Default)]
pub struct FakeApi {
    pub state: Arc<Mutex<State>>,
    pub killed: Arc<Notify>,
}

impl FakeApi {
    pub fn new() -> FakeApi {
        FakeApi::default()
    }

    /// The `n`-th request from now on acts, then never answers (and `killed` is told).
    pub fn kill_after(&self, n: usize) {
        let mut s = self.state.lock().unwrap();
        s.kill_after = Some(s.requests + n);
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// One request, acted on and logged (the HTTP server of `kube_cluster.rs` answers with it).
    pub fn act(&self, method: &str, path: &str, query: &str, body: &[u8]) -> (StatusCode, Value) {
        let mut s = self.state.lock().unwrap();
        s.requests += 1;
        s.log.push(format!("{method} {path}?{query}"));
        s.act(method, path, query, body)
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, std::convert::Infallible>> + Send>>;

impl tower_service::Service<Request<kube::client::Body>> for FakeApi {
    type Response = Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Fut {
        let state = self.state.clone();
        let killed = self.killed.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let (code, answer, dies) = {
                let mut s = state.lock().unwrap();
                s.requests += 1;
                let line = format!("{} {}", parts.method, parts.uri);
                s.log.push(line);
                let (code, answer) = s.act(parts.method.as_str(), parts.uri.path(), parts.uri.query().unwrap_or(""), &body);
                (code, answer, s.kill_after == Some(s.requests))
            };
            if dies {
                killed.notify_one();
                std::future::pending::<()>().await;
            }
            let body = Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap()));
            Ok(Response::builder().status(code).header("content-type", "application/json").body(body).unwrap())
        })
    }
}
