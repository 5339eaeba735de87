//! An emulated cluster on this machine (EMULATION: no Kubernetes component runs): the emulated
//! API server of `fake_kube.rs` served over HTTP on loopback, plus what a node does for it —
//! a "kubelet" that runs each Job's pod on the local Docker engine (`pod_on_docker.rs`) once
//! its Secret exists, reports the pod `Running`, then `Failed` (and its Job failed) when its
//! containers end, and removes its containers when the pod is deleted; the garbage collector
//! running all along; and `pods/exec`, `pods/attach` and `pods/portforward` served as the API
//! server and kubelet serve them (a websocket, subprotocol `v5.channel.k8s.io`: channel 0
//! stdin, 1 stdout, 2 stderr, 3 the final status, 255 a stream's close; a port-forward's
//! channels 0 data and 1 error, each opened with the port), bridged to Docker's exec and attach
//! of the pod's containers and to a TCP connection to the pod's address.
//!
//! So the kubernetes backend's own code (kube's client, its exec and attach streams, didx's
//! transport and hold over them) runs unchanged against it; what is not the real thing is the
//! API server's and kubelet's own behaviour beyond what is emulated here.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters as qp;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::fake_kube::FakeApi;
use super::pod_on_docker::Pod;
use didx::kubernetes::Objects;

const PROTOCOL: &str = "v5.channel.k8s.io";

/// A pod the kubelet runs: its containers on Docker.
pub struct Ran {
    pub docker: Docker,
    pub server: String,
    pub client: String,
}

/// The emulated cluster: its API server's state, its address, and the pods its kubelet runs.
pub struct EmulatedCluster {
    pub api: FakeApi,
    pub url: String,
    pub docker: Docker,
    pods: Arc<Mutex<HashMap<String, Arc<Ran>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// In the names of its pods' containers (unique: its port).
    tag: String,
}

impl EmulatedCluster {
    /// Serves the API on a loopback port and starts the kubelet (pods on `docker`).
    pub async fn start(docker: Docker) -> EmulatedCluster {
        let api = FakeApi::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tag = format!("kube-emulated-{}", listener.local_addr().unwrap().port());
        let pods: Arc<Mutex<HashMap<String, Arc<Ran>>>> = Arc::default();
        let server = {
            let (api, pods) = (api.clone(), pods.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { return };
                    let (api, pods) = (api.clone(), pods.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(api.clone(), pods.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            })
        };
        let kubelet = {
            let (api, pods, docker, tag) = (api.clone(), pods.clone(), docker.clone(), tag.clone());
            tokio::spawn(async move {
                loop {
                    kubelet_sync(&api, &pods, &docker, &tag).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        EmulatedCluster { api, url, docker, pods, tasks: vec![server, kubelet], tag }
    }

    /// A kube client of it, as a kubeconfig naming its URL would make.
    pub fn client(&self) -> didx::kubernetes::kube::Client {
        let config = didx::kubernetes::kube::Config::new(self.url.parse().unwrap());
        didx::kubernetes::kube::Client::try_from(config).unwrap()
    }

    /// The Docker containers of the pods it runs now.
    pub fn containers(&self) -> Vec<String> {
        self.pods.lock().unwrap().values().flat_map(|p| [p.server.clone(), p.client.clone()]).collect()
    }

    /// Stops it and removes every container its kubelet made.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.pods.lock().unwrap().clear();
        remove_tagged(&self.docker, &self.tag).await;
    }
}

impl Drop for EmulatedCluster {
    /// A test that failed midway: its pods' containers are removed all the same (on a thread
    /// of its own: the test's runtime may be gone).
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let (docker, tag) = (self.docker.clone(), self.tag.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(remove_tagged(&docker, &tag))
        })
        .join();
    }
}

/// Every container its kubelet made (even one a stopped pass made and did not record).
async fn remove_tagged(docker: &Docker, tag: &str) {
    let filters = HashMap::from([("name".to_string(), vec![tag.to_string()])]);
    let listed = docker.list_containers(Some(qp::ListContainersOptions { all: true, filters: Some(filters), ..Default::default() })).await;
    for c in listed.unwrap_or_default() {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id, Some(qp::RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
        }
    }
}

async fn remove(docker: &Docker, p: &Ran) {
    for id in [&p.client, &p.server] {
        let _ = docker.remove_container(id, Some(qp::RemoveContainerOptions { force: true, v: true, ..Default::default() })).await;
    }
}

/// A container's exit code once it ended (gone counts as ended, 137).
async fn exit_code(docker: &Docker, id: &str) -> Option<i64> {
    match docker.inspect_container(id, None::<qp::InspectContainerOptions>).await {
        Ok(c) => c.state.filter(|s| !s.running.unwrap_or(false)).map(|s| s.exit_code.unwrap_or(0)),
        Err(_) => Some(137),
    }
}

/// One pass of the node: the garbage collector, pods made, pods ended, pods removed.
async fn kubelet_sync(api: &FakeApi, pods: &Arc<Mutex<HashMap<String, Arc<Ran>>>>, docker: &Docker, tag: &str) {
    let (to_run, gone) = {
        let mut s = api.state.lock().unwrap();
        s.collect_garbage();
        let known: Vec<String> = pods.lock().unwrap().keys().cloned().collect();
        let live: Vec<String> = s.all("pods").iter().filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string)).collect();
        let gone: Vec<String> = known.iter().filter(|k| !live.contains(k)).cloned().collect();
        let mut to_run = Vec::new();
        for pod in s.all("pods") {
            let name = pod["metadata"]["name"].as_str().unwrap().to_string();
            if pod["status"]["phase"] != "Pending" || known.contains(&name) {
                continue;
            }
            let job_name = pod["metadata"]["labels"]["batch.kubernetes.io/job-name"].as_str().unwrap_or_default().to_string();
            let job = s.all("jobs").into_iter().find(|j| j["metadata"]["name"] == job_name.as_str());
            let secret = s.all("secrets").into_iter().find(|x| x["metadata"]["name"] == job_name.as_str());
            if let (Some(job), Some(secret)) = (job, secret) {
                to_run.push((name, job, secret));
            }
        }
        (to_run, gone)
    };
    for name in gone {
        // Removed from the map once its containers are gone (`containers()` tells the truth).
        let p = pods.lock().unwrap().get(&name).cloned();
        if let Some(p) = p {
            remove(docker, &p).await;
            pods.lock().unwrap().remove(&name);
        }
    }
    for (name, job, secret) in to_run {
        let objects = Objects { job: serde_json::from_value(job).unwrap(), secret: serde_json::from_value(secret).unwrap() };
        let phase = match Pod::run(docker, &objects, tag, false).await {
            Ok(p) => {
                let ran = Ran { docker: p.docker.clone(), server: p.server.clone(), client: p.client.clone() };
                pods.lock().unwrap().insert(name.clone(), Arc::new(ran));
                // The pod's IP: its network's (the server's, on the engine's bridge).
                match pod_ip(docker, &p.server).await {
                    Some(ip) => json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}),
                    None => json!({"phase": "Running"}),
                }
            }
            Err(e) => json!({"phase": "Failed", "reason": "RunContainerError", "message": e.to_string()}),
        };
        set_pod_status(api, &name, phase);
    }
    // Pods whose containers have all ended: Failed, and their Job with them.
    let held: Vec<(String, Arc<Ran>)> = pods.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, p) in held {
        let (server, client) = (exit_code(docker, &p.server).await, exit_code(docker, &p.client).await);
        if let (Some(s), Some(c)) = (server, client) {
            // As the kubelet says it: Succeeded when every container exited 0, else Failed.
            let phase = if s == 0 && c == 0 { "Succeeded" } else { "Failed" };
            set_pod_status(api, &name, json!({"phase": phase}));
        }
    }
}

fn set_pod_status(api: &FakeApi, pod: &str, status: Value) {
    let mut s = api.state.lock().unwrap();
    let phase = status["phase"].as_str().unwrap_or_default().to_string();
    let mut job_name = None;
    for (key, p) in s.objects.entry("pods").or_default().iter_mut() {
        if key.1 == pod {
            p["status"] = status.clone();
            job_name = p["metadata"]["labels"]["batch.kubernetes.io/job-name"].as_str().map(str::to_string);
        }
    }
    // The Job controller: its one pod (backoffLimit 0) decides it; `active` counts it while
    // it is pending or running, `ready` once its containers run (no probes: at once).
    let job_status = match phase.as_str() {
        "Failed" => {
            Some(json!({"failed": 1, "ready": 0, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}))
        }
        "Succeeded" => Some(json!({"succeeded": 1, "ready": 0, "conditions": [{"type": "Complete", "status": "True"}]})),
        "Running" => Some(json!({"active": 1, "ready": 1})),
        "Pending" => Some(json!({"active": 1, "ready": 0})),
        _ => None,
    };
    if let (Some(job_status), Some(job_name)) = (job_status, job_name) {
        // A status written is a new version of the object, as on an API server.
        let version = s.bump();
        for (key, j) in s.objects.entry("jobs").or_default().iter_mut() {
            if key.1 == job_name {
                j["status"] = job_status.clone();
                j["metadata"]["resourceVersion"] = json!(version.to_string());
            }
        }
    }
}

type Answer = Response<Full<Bytes>>;

async fn handle(
    api: FakeApi,
    pods: Arc<Mutex<HashMap<String, Arc<Ran>>>>,
    req: Request<Incoming>,
) -> Result<Answer, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(rest) = path.strip_suffix("/exec").or_else(|| path.strip_suffix("/attach")).or_else(|| path.strip_suffix("/portforward")) {
        let pod = rest.rsplit('/').next().unwrap_or_default().to_string();
        let exec = path.ends_with("/exec");
        api.state.lock().unwrap().streams.push(format!("{path}?{query}"));
        let found = pods.lock().unwrap().get(&pod).cloned();
        let Some(p) = found else {
            return Ok(json_answer(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("pods \"{pod}\" not found")}),
            ));
        };
        return Ok(upgrade(req, p, query, exec));
    }
    let method = req.method().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (code, answer) = api.act(&method, &path, &query, &body);
    Ok(json_answer(code, answer))
}

fn json_answer(code: StatusCode, body: Value) -> Answer {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap()
}

/// Query parameters, repeated ones kept (`command=a&command=b`).
fn params(query: &str) -> Vec<(String, String)> {
    query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), super::fake_kube::percent_decode(v))).collect()
}

/// The websocket handshake's answer, and the stream served once the connection is upgraded.
fn upgrade(mut req: Request<Incoming>, pod: Arc<Ran>, query: String, exec: bool) -> Answer {
    let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec()).unwrap_or_default();
    let offered = req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if !offered.split(',').any(|p| p.trim() == PROTOCOL) {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({"kind": "Status", "status": "Failure", "code": 400, "message": format!("{PROTOCOL} not offered: {offered}")}),
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let params = params(&query);
        let container = params.iter().find(|(k, _)| k == "container").map(|(_, v)| v.clone()).unwrap_or_default();
        let id = if container == "client" { pod.client.clone() } else { pod.server.clone() };
        if let Some(port) = params.iter().find(|(k, _)| k == "ports").and_then(|(_, v)| v.split(',').next()?.parse::<u16>().ok()) {
            serve_portforward(&pod.docker, &pod.server, port, ws).await;
        } else if exec {
            let command: Vec<String> = params.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
            let stderr = params.iter().any(|(k, v)| k == "stderr" && v == "true");
            serve_exec(&pod.docker, &id, command, stderr, ws).await;
        } else {
            let stdout = params.iter().any(|(k, v)| k == "stdout" && v == "true");
            serve_attach(&pod.docker, &id, stdout, ws).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key))
        .header("sec-websocket-protocol", PROTOCOL)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

async fn serve_exec(docker: &Docker, id: &str, command: Vec<String>, stderr: bool, ws: Ws) {
    let (mut tx, mut rx) = ws.split();
    let options = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(stderr),
        cmd: Some(command),
        ..Default::default()
    };
    let exec_id = match docker.create_exec(id, options).await {
        Ok(e) => e.id,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "message": e.to_string()});
            let _ = tx.send(framed(3, status.to_string().as_bytes())).await;
            let _ = tx.close().await;
            return;
        }
    };
    let (mut output, input) = match docker.start_exec(&exec_id, None).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        other => {
            let status = json!({"metadata": {}, "status": "Failure", "message": format!("{:?}", other.err())});
            let _ = tx.send(framed(3, status.to_string().as_bytes())).await;
            let _ = tx.close().await;
            return;
        }
    };
    let mut input = Some(input);
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match (b[0], b.get(1)) {
                    (0, _) => if let Some(i) = input.as_mut() && i.write_all(&b[1..]).await.is_err() { input = None },
                    (255, Some(0)) => if let Some(mut i) = input.take() { let _ = i.shutdown().await; },
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => { if let Some(mut i) = input.take() { let _ = i.shutdown().await; } break }
                _ => {}
            },
            out = output.next() => match out {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => { if tx.send(framed(1, &message)).await.is_err() { break } }
                Some(Ok(LogOutput::StdErr { message })) => { if stderr && tx.send(framed(2, &message)).await.is_err() { break } }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    // As the kubelet says it: Success, or NonZeroExitCode with the code as a cause.
                    let code = docker.inspect_exec(&exec_id).await.ok().and_then(|e| e.exit_code).unwrap_or(-1);
                    let status = if code == 0 {
                        json!({"metadata": {}, "status": "Success"})
                    } else {
                        json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                               "message": format!("command terminated with non-zero exit code: exit status {code}"),
                               "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
                    };
                    let _ = tx.send(framed(3, status.to_string().as_bytes())).await;
                    let _ = tx.close().await;
                    break;
                }
            },
        }
    }
}

/// `pods/portforward` for one port, as the kubelet serves it: the data channel (0) and the
/// error channel (1) each open with the port (little-endian), then the bytes of one TCP
/// connection to the pod's network (the server's: the client shares it) on channel 0.
async fn serve_portforward(docker: &Docker, server: &str, port: u16, ws: Ws) {
    let (mut tx, mut rx) = ws.split();
    for channel in [0, 1] {
        if tx.send(framed(channel, &port.to_le_bytes())).await.is_err() {
            return;
        }
    }
    let connected = match pod_ip(docker, server).await {
        Some(ip) => tokio::net::TcpStream::connect((ip.as_str(), port)).await.ok(),
        None => None,
    };
    let Some(tcp) = connected else {
        let _ = tx.send(framed(1, format!("error forwarding port {port} to pod: connection refused").as_bytes())).await;
        let _ = tx.close().await;
        return;
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0) && to_pod.write_all(&b[1..]).await.is_err() => break,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
            n = tokio::io::AsyncReadExt::read(&mut from_pod, &mut buf) => match n {
                Ok(n) if n > 0 => if tx.send(framed(0, &buf[..n])).await.is_err() { break },
                _ => break,
            },
        }
    }
    let _ = to_pod.shutdown().await;
    let _ = tx.close().await;
}

/// The address of the pod's network on the engine's bridge (its server's), if it has one.
async fn pod_ip(docker: &Docker, server: &str) -> Option<String> {
    let c = docker.inspect_container(server, None::<qp::InspectContainerOptions>).await.ok()?;
    c.network_settings?.networks?.into_values().find_map(|n| n.ip_address.filter(|ip| !ip.is_empty()))
}

async fn serve_attach(docker: &Docker, id: &str, stdout: bool, ws: Ws) {
    let (mut tx, mut rx) = ws.split();
    let options = qp::AttachContainerOptions { stdin: true, stdout, stream: true, ..Default::default() };
    let Ok(attached) = docker.attach_container(id, Some(options)).await else { return };
    let (mut input, mut output) = (attached.input, attached.output);
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0) && input.write_all(&b[1..]).await.is_err() => break,
                Some(Ok(Message::Binary(b))) if b.first() == Some(&255) => break,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
            // What the container writes from now on, as the kubelet streams it (channel 1).
            out = output.next(), if stdout => match out {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => { if tx.send(framed(1, &message)).await.is_err() { break } }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            },
        }
    }
    // The attach ends: with stdinOnce, the container's stdin closes.
    let _ = input.shutdown().await;
    let _ = tx.close().await;
}
