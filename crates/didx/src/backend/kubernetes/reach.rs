//! Reaching a sandbox's pod from outside the cluster without a Service or an open port, and
//! holding it: through the API server's `pods/exec` and `pods/attach` streams (websockets).
//!
//! - The inner engine ([`Cluster::inner_docker`]): every connection an exec of `docker system
//!   dial-stdio` in the client container (whose docker CLI is wired to the server over mutual
//!   TLS), its stdin and stdout the connection — the transport `Engine::inner_over_exec` gives
//!   over Docker's exec, as buildx's Kubernetes driver reaches its builder.
//! - The hold ([`Cluster::hold`]): one attach to each container's stdin, saying `beat` every
//!   second; the entrypoint ends its container when the stream ends or the beats stop (see
//!   `recipe::held`: an attach through the API server may stay open when didx is gone).

use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{AttachParams, AttachedProcess, ListParams};
use tokio::io::AsyncWriteExt;

use super::cluster::Cluster;
use super::manifest::{CLIENT, SERVER};
use super::way::KubeReach;
use crate::backend::docker::recipe::{CLIENT_CERT_PATH, TLS_PORT};
use crate::engine::{DIAL, Duplex, Forward, Lease, docker_over};
use crate::error::{Error, Result};

/// The buffer of each exec stream's stdin and stdout (kube's default, 1 KiB, makes an image's
/// upload a thousand round trips of its task per MiB).
const STREAM_BUFFER: usize = 256 * 1024;

/// A stream to `container`'s stdin and from its stdout (no stderr, no terminal), with `buffer`
/// bytes of buffer each way when given (kube's default is 1 KiB).
fn piped(container: &str, buffer: Option<usize>) -> AttachParams {
    AttachParams {
        container: Some(container.into()),
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
        max_stdin_buf_size: buffer,
        max_stdout_buf_size: buffer,
        ..AttachParams::default()
    }
}

/// The TLS client of `pod`'s inner engine (its sandbox's client certificate, from its
/// Secret) and, to reach it `by` the pod's IP, that IP (`None`: by port-forward).
async fn tls_to(
    pods: &Api<Pod>,
    secrets: &Api<Secret>,
    pod: &str,
    by: KubeReach,
) -> std::io::Result<(tokio_rustls::TlsConnector, Option<std::net::IpAddr>)> {
    let job = super::backend::job_of(pod);
    let secret = secrets.get(job).await.map_err(std::io::Error::other)?;
    let data = secret.data.unwrap_or_default();
    let pem = |file: &str| {
        let key = super::manifest::secret_key(&format!("{}/{file}", CLIENT_CERT_PATH.trim_start_matches('/')));
        data.get(&key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| std::io::Error::other(format!("the Secret {job} has no {key}")))
    };
    let connector = crate::ready::connector(&pem("ca.pem")?, &pem("cert.pem")?, &pem("key.pem")?).map_err(std::io::Error::other)?;
    let ip = match by {
        KubeReach::PodIp => {
            let status = pods.get(pod).await.map_err(std::io::Error::other)?.status.unwrap_or_default();
            let ip = status.pod_ip.ok_or_else(|| std::io::Error::other(format!("the pod {pod} has no IP yet")))?;
            Some(ip.parse().map_err(|e| std::io::Error::other(format!("the pod {pod}'s IP '{ip}': {e}")))?)
        }
        _ => None,
    };
    Ok((connector, ip))
}

impl Cluster {
    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client(), self.namespace())
    }

    fn secrets_api(&self) -> Api<Secret> {
        Api::namespaced(self.client(), self.namespace())
    }

    /// The pod of sandbox `name` once it runs (both containers started), within `timeout`.
    /// Fails at once when it ended (its lease or its deadline), with its phase and reason.
    pub async fn wait_running(&self, name: &str, timeout: Duration) -> Result<String> {
        let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
        let started = Instant::now();
        loop {
            let pods = self.pods_api().list(&params).await.map_err(|e| Error::Cluster {
                op: "list pods",
                target: name.to_string(),
                source: Box::new(e),
            })?;
            if let Some(pod) = pods.items.first() {
                let status = pod.status.clone().unwrap_or_default();
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                match status.phase.as_deref() {
                    Some("Running") => return Ok(pod_name),
                    Some(phase @ ("Succeeded" | "Failed")) => {
                        let why = [status.reason, status.message].into_iter().flatten().collect::<Vec<_>>().join(": ");
                        let id = name.strip_prefix("didx-").unwrap_or(name).to_string();
                        return Err(Error::NotRunning { id, server: pod_name, state: format!("{phase} {why}").trim().to_string() });
                    }
                    _ => {}
                }
            }
            if started.elapsed() >= timeout {
                return Err(Error::TimedOut { op: "wait for the pod to run", target: name.to_string(), after: timeout, idle: false });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A client of the inner engine of `pod`, reached as `by` says on this cluster.
    pub fn inner_docker_by(&self, pod: &str, by: KubeReach) -> Result<Docker> {
        let way = by.on(self.in_cluster());
        docker_over(&format!("{}:{}/{pod}", way.name(), self.namespace()), self.dialer(pod, way))
    }

    /// A client of the inner engine of `pod`: every connection a `docker system dial-stdio`
    /// exec in its client container, through the API server.
    pub fn inner_docker(&self, pod: &str) -> Result<Docker> {
        self.inner_docker_by(pod, KubeReach::Exec)
    }

    /// How each connection to `pod`'s inner engine is opened, `by` a way decided (not
    /// [`KubeReach::Auto`]): a `docker system dial-stdio` exec in its client (the inner engine
    /// answers plain HTTP there: the client's docker CLI speaks mutual TLS to it), or mutual TLS
    /// to its server's TLS port by the pod's IP or a `pods/portforward` stream, with the client
    /// certificate of the sandbox's Secret (read once, at the first connection).
    fn dialer(&self, pod: &str, by: KubeReach) -> impl Fn() -> BoxFuture<'static, std::io::Result<Duplex>> + Clone + Send + Sync + 'static {
        let (pods, secrets, pod) = (self.pods_api(), self.secrets_api(), pod.to_string());
        let found: std::sync::Arc<tokio::sync::OnceCell<(tokio_rustls::TlsConnector, Option<std::net::IpAddr>)>> = Default::default();
        move || {
            let (pods, secrets, pod, found) = (pods.clone(), secrets.clone(), pod.clone(), found.clone());
            Box::pin(async move {
                if !matches!(by, KubeReach::PortForward | KubeReach::PodIp) {
                    let mut exec = pods.exec(&pod, DIAL, &piped(CLIENT, Some(STREAM_BUFFER))).await.map_err(std::io::Error::other)?;
                    let (Some(stdout), Some(stdin)) = (exec.stdout(), exec.stdin()) else {
                        return Err(std::io::Error::other("the exec stream has no stdin or stdout"));
                    };
                    // The exec's stream lives as long as the connection (dropped, its task is
                    // aborted and the stream closed: dial-stdio ends).
                    return Ok(Duplex::keeping(Box::pin(stdout), Box::pin(stdin), Box::new(exec)));
                }
                let (connector, ip) = found.get_or_try_init(|| tls_to(&pods, &secrets, &pod, by)).await?;
                match ip {
                    Some(ip) => {
                        let tcp = tokio::net::TcpStream::connect((*ip, TLS_PORT)).await?;
                        tcp.set_nodelay(true).ok();
                        let (output, input) = tokio::io::split(crate::ready::handshake(connector, tcp).await?);
                        Ok(Duplex::new(Box::pin(output), Box::pin(input)))
                    }
                    None => {
                        let mut forwarder = pods.portforward(&pod, &[TLS_PORT]).await.map_err(std::io::Error::other)?;
                        let stream = forwarder
                            .take_stream(TLS_PORT)
                            .ok_or_else(|| std::io::Error::other(format!("the port-forward to {pod} has no stream for {TLS_PORT}")))?;
                        let (output, input) = tokio::io::split(crate::ready::handshake(connector, stream).await?);
                        Ok(Duplex::keeping(Box::pin(output), Box::pin(input), Box::new(forwarder)))
                    }
                }
            })
        }
    }

    /// Serves `listener` (a socket of this machine's) until `pod` no longer runs: each
    /// connection carried to its inner engine, reached as `by` says on this cluster (see
    /// [`Cluster::inner_docker_by`]) — what `didx env --backend kubernetes` points a host docker
    /// client at. The socket speaks plain HTTP to the inner engine (didx holds the TLS or the
    /// exec), so it is the only door: keep it in a private directory.
    pub async fn forward_inner(&self, pod: &str, by: KubeReach, listener: tokio::net::UnixListener) -> Result<()> {
        let dial = self.dialer(pod, by.on(self.in_cluster()));
        let mut check = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (mut conn, _) = accepted.map_err(|e| Error::io("accepting a connection to forward", e))?;
                    let opened = dial();
                    tokio::spawn(async move {
                        let Ok(duplex) = opened.await else { return };
                        let (mut out, mut input, keep) = duplex.into_parts();
                        let (mut from, mut to) = conn.split();
                        let up = async {
                            let _ = tokio::io::copy(&mut from, &mut input).await;
                            let _ = input.shutdown().await;
                        };
                        let down = async {
                            let _ = tokio::io::copy(&mut out, &mut to).await;
                            let _ = to.shutdown().await;
                        };
                        tokio::join!(up, down);
                        drop(keep);
                    });
                }
                _ = check.tick() => {
                    let phase = self.pods_api().get_opt(pod).await.ok().flatten().and_then(|p| p.status).and_then(|s| s.phase);
                    if phase.as_deref() != Some("Running") {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Port `local` of this machine's loopback (one the system picks for 0) whose every
    /// connection is a `pods/portforward` stream to `port` of `pod` (its network: the server's
    /// TLS port, what its inner containers publish), until the [`Forward`] drops.
    pub(crate) async fn forward_port(&self, pod: &str, port: u16, local: u16) -> Result<Forward> {
        let doing = format!("listening on 127.0.0.1:{local} for a port-forward to {pod}:{port}");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local)).await.map_err(|e| Error::io(doing.clone(), e))?;
        let local = listener.local_addr().map_err(|e| Error::io(doing, e))?;
        let (api, pod) = (self.pods_api(), pod.to_string());
        let task = tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let (api, pod) = (api.clone(), pod.clone());
                open.spawn(async move {
                    let Ok(mut forwarder) = api.portforward(&pod, &[port]).await else { return };
                    let Some(mut stream) = forwarder.take_stream(port) else { return };
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut stream).await;
                    drop(stream);
                    let _ = forwarder.join().await;
                });
                while open.try_join_next().is_some() {}
            }
        });
        Ok(Forward::serving(local, task))
    }

    /// The running pod of sandbox `id` (its Job `didx-<id>`).
    pub async fn pod_of(&self, id: &str) -> Result<String> {
        let name = format!("didx-{id}");
        match self.pod_phase(&name).await? {
            Some(p) if p == "Running" => self.wait_running(&name, Duration::from_secs(1)).await,
            Some(p) => Err(Error::NotRunning { id: id.to_string(), server: name, state: p }),
            None => Err(Error::NoSuchEnvironment { id: id.to_string(), host: format!("kubernetes namespace {}", self.namespace()) }),
        }
    }

    /// Holds `pod`: an attach to each container's stdin (and output, where the entrypoint
    /// answers a release), a `beat` every second, until the [`Hold`] is dropped (the streams
    /// end: both containers end) or didx is gone (the beats stop: the entrypoint ends them
    /// within its limit).
    pub async fn hold(&self, pod: &str) -> Result<Hold> {
        Ok(Hold { leases: self.leases(pod).await? })
    }

    /// The leases of [`Cluster::hold`]: one attach per container, as the environment keeps
    /// them (released into the pool, or ended at its removal).
    pub(crate) async fn leases(&self, pod: &str) -> Result<Vec<Lease>> {
        let mut leases = Vec::new();
        for container in [SERVER, CLIENT] {
            let member = format!("{pod}/{container}");
            let a = self.pods_api().attach(pod, &piped(container, None)).await.map_err(|e| Error::Cluster {
                op: "attach",
                target: member.clone(),
                source: Box::new(e),
            })?;
            leases.push(lease_over(&member, a)?);
        }
        Ok(leases)
    }

    /// A lease on `member` (`POD/CONTAINER`) taken by an exec of `argv` (the entrypoint's
    /// `lease` mode) told to expect beats, its stdin and output the lease's.
    pub(crate) async fn exec_lease(&self, member: &str, argv: &[String]) -> Result<Lease> {
        let (pod, container) = member.split_once('/').unwrap_or((member, CLIENT));
        let mut command = vec!["env".to_string()];
        command.extend(crate::backend::docker::recipe::lease_env(true));
        command.extend(argv.iter().cloned());
        let exec = self.pods_api().exec(pod, command, &piped(container, None)).await.map_err(|e| Error::Cluster {
            op: "exec",
            target: member.to_string(),
            source: Box::new(e),
        })?;
        lease_over(member, exec)
    }
}

/// A beating [`Lease`] over an attached process's stdin and stdout, which it keeps.
fn lease_over(member: &str, mut process: AttachedProcess) -> Result<Lease> {
    let (Some(stdin), Some(stdout)) = (process.stdin(), process.stdout()) else {
        return Err(Error::io(format!("holding {member}"), std::io::Error::other("the stream has no stdin or stdout")));
    };
    Ok(Lease::over(member, Box::pin(stdin), stdout, Box::new(process)))
}

/// A held pod (see [`Cluster::hold`]); dropping it lets go: its streams end.
pub struct Hold {
    leases: Vec<Lease>,
}

impl Hold {
    /// True while the beats go on (every stream takes them).
    pub fn is_holding(&self) -> bool {
        self.leases.iter().all(Lease::is_beating)
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("leases", &self.leases.len()).field("holding", &self.is_holding()).finish()
    }
}
