//! The kubernetes backend: environments as Jobs of a cluster's namespace (see [`super::cluster`]
//! for their objects' life, [`super::reach`] for the streams), behind the same seam as Docker
//! ([`crate::backend::Backend`]).
//!
//! A member is a container of the environment's pod, named `POD/CONTAINER`. A program runs
//! in it through `pods/exec` (its exit code from the stream's final status); files go in and
//! out as a tar through `tar` run there. The pod is held from the moment it runs by a lease
//! per container (an attach to its stdin, beating), kept with the environment as on Docker:
//! released (the pool's fill) or ended (its removal); an exec'd lease (`Backend::hold`, the
//! entrypoint's `lease` mode) holds a pooled pod for the run that claimed it. What is not made
//! here: a member of its own (the pod's containers go together), the image store, published
//! ports.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::AttachParams;
use tokio::io::AsyncWriteExt;

use super::cluster::Cluster;
use super::manifest::{self, CLIENT, Contents, KubeOptions, SERVER};

use crate::backend::docker::recipe::PUBLISHED_IP;
use crate::backend::{Backend, MemberConfig, OnEvent, Placed, Reached, Sink, Swept};
use crate::cancel::Cancel;
use crate::engine::{ExecAs, Lease};
use crate::env::id::Container;
use crate::env::spec::{EnvSpec, PoolTag};
use crate::env::summary::{EnvSummary, Member};
use crate::error::{Error, Result};
use crate::labels;
use crate::publish::Published;

/// The buffer of an exec's streams (kube's default is 1 KiB).
const BUFFER: usize = 256 * 1024;

/// Environments on a cluster's namespace.
#[derive(Debug)]
pub(crate) struct KubeBackend {
    cluster: Cluster,
    options: KubeOptions,
    location: String,
}

impl KubeBackend {
    pub(crate) fn new(cluster: Cluster, options: KubeOptions) -> KubeBackend {
        let location = format!("kubernetes namespace {}", cluster.namespace());
        KubeBackend { cluster, options, location }
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub(crate) fn options(&self) -> &KubeOptions {
        &self.options
    }

    /// A sandbox as `spec` says (for the warm pool when `pool` is given): its objects made, its
    /// pod running and held by this process's attach leases, its inner engine answering.
    /// Whatever fails on the way deletes it.
    pub(crate) async fn place_as(&self, spec: &EnvSpec, pool: Option<&PoolTag>, cancel: &Cancel) -> Result<Placed> {
        manifest::refuse_unsupported(spec)?;
        let tls = crate::tls::TlsMaterial::generate(&[spec.server_name().as_str()])?;
        let objects = manifest::objects_of(spec, &self.options, Contents::Real(&tls), pool)?;
        let (_, created) = tokio::select! {
            r = self.cluster.start(objects) => r?,
            () = cancel.cancelled() => return Err(Error::Cancelled),
        };
        match self.place_pod(spec, &created.name, cancel).await {
            Ok((pod, leases)) => Ok(placed(&pod, leases)),
            Err(e) => {
                if let Err(rm) = self.cluster.delete(&created.name).await {
                    tracing::warn!(error = %rm, job = %created.name, "removing a Job whose start failed failed; its deadline ends it");
                }
                Err(e)
            }
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client(), self.cluster.namespace())
    }

    /// Runs `argv` in `member`, `input` on its stdin (closed at its end), its output to `out`
    /// and `err`; its exit code from the stream's final status.
    async fn run(
        &self,
        member: &str,
        argv: Vec<String>,
        input: Option<BoxStream<'_, Result<Bytes>>>,
        out: Sink<'_>,
        err: Sink<'_>,
    ) -> Result<i64> {
        let (pod, container) = split(member)?;
        let params = AttachParams {
            container: Some(container.to_string()),
            stdin: input.is_some(),
            stdout: true,
            stderr: true,
            tty: false,
            max_stdin_buf_size: Some(BUFFER),
            max_stdout_buf_size: Some(BUFFER),
            max_stderr_buf_size: Some(BUFFER),
        };
        let failed = |source: kube::Error| Error::Cluster { op: "exec", target: member.to_string(), source: Box::new(source) };
        let mut process = self.pods().exec(pod, argv, &params).await.map_err(failed)?;
        let status = process.take_status().expect("an exec's status is taken once");
        let (mut stdout, mut stderr) = (process.stdout().expect("asked for"), process.stderr().expect("asked for"));
        let stdin = process.stdin();
        let feed = async move {
            let (Some(mut input), Some(mut stdin)) = (input, stdin) else { return Ok(()) };
            while let Some(chunk) = input.next().await {
                if stdin.write_all(&chunk?).await.is_err() {
                    // The program stopped reading (it ended): the rest is not wanted.
                    break;
                }
            }
            let _ = stdin.shutdown().await;
            Ok::<(), Error>(())
        };
        let (o, e, fed) = tokio::join!(copy_to(&mut stdout, out), copy_to(&mut stderr, err), feed);
        fed?;
        o.and(e).map_err(|e| Error::io(format!("reading the output of {member}"), e))?;
        let status = status.await;
        exit_code(member, status)
    }

    /// Runs `argv` in `member` and captures its stdout; fails on a non-zero exit.
    async fn capture(&self, member: &str, argv: &[&str]) -> Result<Vec<u8>> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = self.run(member, argv.iter().map(|s| s.to_string()).collect(), None, &mut out, &mut err).await?;
        if code != 0 {
            let why = String::from_utf8_lossy(&err).trim().to_string();
            return Err(Error::io(format!("{} in {member}", argv.join(" ")), std::io::Error::other(format!("exit {code}: {why}"))));
        }
        Ok(out)
    }

    async fn place_pod(&self, spec: &EnvSpec, name: &str, cancel: &Cancel) -> Result<(String, Vec<Lease>)> {
        let pod = tokio::select! {
            r = self.cluster.wait_running(name, spec.ready_timeout.max(Duration::from_secs(120))) => r?,
            () = cancel.cancelled() => return Err(Error::Cancelled),
        };
        let leases = self.cluster.leases(&pod).await?;
        let inner = self.cluster.inner_docker_by(&pod, self.options.reach)?;
        let started = Instant::now();
        loop {
            let answer = tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(5), inner.version()) => r,
                () = cancel.cancelled() => return Err(Error::Cancelled),
            };
            if let Ok(Ok(_)) = answer {
                return Ok((pod, leases));
            }
            if started.elapsed() >= spec.ready_timeout {
                return Err(Error::TimedOut { op: "wait for the inner engine", target: pod, after: spec.ready_timeout, idle: false });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn copy_to(from: &mut (impl tokio::io::AsyncRead + Unpin), to: Sink<'_>) -> std::io::Result<()> {
    tokio::io::copy(from, to).await?;
    to.flush().await
}

/// A sandbox's state from its Job's status, as the Job controller keeps it: `exited` once its
/// pod ended, `running` while the pod is ready (its containers run: no probes), else `created`
/// (pending: scheduled, pulling, starting). Clusters older than the `ready` count (1.24) say
/// only `active`, which counts a pending pod too.
pub(crate) fn job_state(status: &k8s_openapi::api::batch::v1::JobStatus) -> &'static str {
    let active = status.active.unwrap_or(0) > 0;
    if status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0) > 0 {
        "exited"
    } else if status.ready.map_or(active, |r| r > 0) {
        "running"
    } else {
        "created"
    }
}

/// A sandbox's state from its Job: [`job_state`]'s; for a pooled one nobody claimed yet,
/// `ready` once released into the pool, else `starting` (as `didx ls` says them on Docker).
pub(crate) fn sandbox_state(job: &k8s_openapi::api::batch::v1::Job) -> &'static str {
    let state = job_state(&job.status.clone().unwrap_or_default());
    let labels = job.metadata.labels.as_ref();
    let has = |k: &str| labels.is_some_and(|l| l.contains_key(k));
    if has(labels::POOL) && !has(labels::POOL_CLAIMED) && state != "exited" {
        return if has(labels::POOL_READY) { "ready" } else { "starting" };
    }
    state
}

/// The members of `pod`, held by `leases`.
pub(crate) fn placed(pod: &str, leases: Vec<Lease>) -> Placed {
    let member = |c: &str| Container { name: format!("{pod}/{c}"), id: format!("{pod}/{c}") };
    Placed { server: Some(member(SERVER)), client: member(CLIENT), leases, guard: None }
}

/// `POD/CONTAINER`.
fn split(member: &str) -> Result<(&str, &str)> {
    member.split_once('/').ok_or_else(|| Error::invalid("member", member, "a member on a cluster is POD/CONTAINER"))
}

/// The Job of a pod (`<job>-<suffix>`, as the Job controller names it).
pub(crate) fn job_of(pod: &str) -> &str {
    pod.rsplit_once('-').map_or(pod, |(job, _)| job)
}

/// The exit code an exec's final status says: `Success` is 0; a failure with an `ExitCode`
/// cause is that code (the kubelet's `NonZeroExitCode`); anything else is an error.
fn exit_code(member: &str, status: Option<Status>) -> Result<i64> {
    let Some(status) = status else {
        return Err(Error::io(format!("exec in {member}"), std::io::Error::other("the stream ended without a status")));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let causes = status.details.as_ref().and_then(|d| d.causes.as_ref());
    let code =
        causes.into_iter().flatten().find(|c| c.reason.as_deref() == Some("ExitCode")).and_then(|c| c.message.as_deref()?.parse().ok());
    code.ok_or_else(|| {
        let why = format!("{} ({})", status.message.unwrap_or_default(), status.reason.unwrap_or_default());
        Error::io(format!("exec in {member}"), std::io::Error::other(why))
    })
}

/// The argv that runs `argv` as `how` says, where exec itself cannot (a pod's exec has no
/// working directory or variables of its own): through `sh` and `env`.
fn shaped(argv: &[String], how: &ExecAs) -> Result<Vec<String>> {
    if how.user.is_some() {
        return Err(Error::Unsupported { what: "running a command as another user", backend: "kubernetes" });
    }
    if how.working_dir.is_none() && how.env.is_empty() {
        return Ok(argv.to_vec());
    }
    let mut out = vec!["sh".into(), "-c".into(), r#"cd "$0" || exit 126; exec "$@""#.into()];
    out.push(how.working_dir.clone().unwrap_or_else(|| ".".into()));
    if !how.env.is_empty() {
        out.push("env".into());
        out.extend(how.env.iter().cloned());
    }
    out.extend(argv.iter().cloned());
    Ok(out)
}

impl Backend for KubeBackend {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn place<'a>(&'a self, spec: &'a EnvSpec, cancel: &'a Cancel, _on: OnEvent<'a>) -> BoxFuture<'a, Result<Placed>> {
        self.place_as(spec, None, cancel).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<EnvSummary>>> {
        async move {
            let mut out = Vec::new();
            for job in self.cluster.jobs_managed().await? {
                let labels = job.metadata.labels.clone().unwrap_or_default();
                let label = |k: &str| labels.get(k).cloned();
                let state = sandbox_state(&job);
                let name = job.metadata.name.clone().unwrap_or_default();
                let members = [SERVER, CLIENT]
                    .iter()
                    .map(|c| Member { role: c.to_string(), name: format!("{name}/{c}"), state: state.to_string() })
                    .collect();
                out.push(EnvSummary {
                    id: label(labels::ENV).unwrap_or_default(),
                    created: label(labels::CREATED).and_then(|v| v.parse().ok()),
                    expires: label(labels::EXPIRES).and_then(|v| v.parse().ok()),
                    policy: label(labels::POLICY),
                    owner: job.metadata.annotations.as_ref().and_then(|a| a.get(labels::OWNER).cloned()),
                    pool: label(labels::POOL),
                    members,
                    ..EnvSummary::default()
                });
            }
            out.sort_by_key(|e| e.created);
            Ok(out)
        }
        .boxed()
    }

    fn remove_env<'a>(&'a self, env: Option<&'a str>) -> BoxFuture<'a, Result<Vec<String>>> {
        async move {
            let names = match env {
                Some(id) => vec![format!("didx-{id}")],
                None => self.cluster.list().await?,
            };
            let mut removed = Vec::new();
            for name in names {
                if self.cluster.delete(&name).await? {
                    removed.push(name);
                }
            }
            Ok(removed)
        }
        .boxed()
    }

    fn sweep(&self) -> BoxFuture<'_, Result<Swept>> {
        async move {
            self.cluster.sweep().await?;
            let listed = std::time::SystemTime::now();
            let live = self.cluster.list().await?.into_iter().map(|n| n.strip_prefix("didx-").unwrap_or(&n).to_string()).collect();
            Ok(Swept { volumes: Vec::new(), live, listed })
        }
        .boxed()
    }

    fn exec<'a>(
        &'a self,
        member: &'a str,
        argv: &'a [String],
        how: &'a ExecAs,
        out: Sink<'a>,
        err: Sink<'a>,
    ) -> BoxFuture<'a, Result<i64>> {
        async move { self.run(member, shaped(argv, how)?, None, out, err).await }.boxed()
    }

    fn exec_with_input<'a>(
        &'a self,
        member: &'a str,
        argv: &'a [String],
        input: BoxStream<'a, Result<Bytes>>,
        out: Sink<'a>,
        err: Sink<'a>,
    ) -> BoxFuture<'a, Result<i64>> {
        async move { self.run(member, argv.to_vec(), Some(input), out, err).await }.boxed()
    }

    fn copy_in<'a>(&'a self, member: &'a str, dir: &'a str, tar: BoxStream<'static, std::io::Result<Bytes>>) -> BoxFuture<'a, Result<()>> {
        async move {
            let argv: Vec<String> = ["tar", "-x", "-f", "-", "-C", dir].map(String::from).to_vec();
            let input = tar.map(|c| c.map_err(|e| Error::io("reading the archive to copy in", e))).boxed();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = self.run(member, argv, Some(input), &mut out, &mut err).await?;
            if code != 0 {
                let why = String::from_utf8_lossy(&err).trim().to_string();
                return Err(Error::io(
                    format!("extracting into {dir} in {member}"),
                    std::io::Error::other(format!("tar exit {code}: {why}")),
                ));
            }
            Ok(())
        }
        .boxed()
    }

    fn copy_out<'a>(&'a self, member: &'a str, path: &'a str) -> BoxStream<'a, Result<Bytes>> {
        let (parent, base) = match path.trim_end_matches('/').rsplit_once('/') {
            Some(("", base)) => ("/".to_string(), base.to_string()),
            Some((parent, base)) => (parent.to_string(), base.to_string()),
            None => (".".to_string(), path.to_string()),
        };
        futures_util::stream::once(async move {
            let argv = ["tar", "-c", "-f", "-", "-C", &parent, &base];
            self.capture(member, &argv).await.map(Bytes::from)
        })
        .boxed()
    }

    fn is_dir<'a>(&'a self, member: &'a str, path: &'a str) -> BoxFuture<'a, Result<Option<bool>>> {
        async move {
            let script = r#"if [ -d "$1" ]; then echo d; elif [ -e "$1" ] || [ -L "$1" ]; then echo f; fi"#;
            let out = self.capture(member, &["sh", "-c", script, "sh", path]).await?;
            Ok(match String::from_utf8_lossy(&out).trim() {
                "d" => Some(true),
                "f" => Some(false),
                _ => None,
            })
        }
        .boxed()
    }

    fn config<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<MemberConfig>> {
        async move {
            // What a program run there gets: the image's variables and the pod's.
            let out = self.capture(member, &["env"]).await?;
            let env = String::from_utf8_lossy(&out).lines().filter(|l| l.contains('=')).map(str::to_string).collect();
            Ok(MemberConfig { env, ..MemberConfig::default() })
        }
        .boxed()
    }

    fn labels<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<HashMap<String, String>>> {
        // Its Job's, with the annotations (what no label value can hold).
        async move { Ok(self.cluster.job_labels(job_of(split(member)?.0)).await?.unwrap_or_default()) }.boxed()
    }

    fn reach<'a>(&'a self, member: &'a str, port: u16, local: u16) -> BoxFuture<'a, Result<Reached>> {
        async move {
            let f = self.cluster.forward_port(split(member)?.0, port, local).await?;
            Ok(Reached { port: f.local_addr().port(), forward: Some(f) })
        }
        .boxed()
    }

    fn published<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Vec<Published>>> {
        // What the start recorded on the Job: `--publish` as asked (loopback only).
        async move {
            let labels = self.labels(member).await?;
            let specs = labels.get(labels::PUBLISH).map(String::as_str).unwrap_or_default();
            let mut out = Vec::new();
            for spec in specs.split(',').filter(|s| !s.is_empty()) {
                let p = crate::publish::PublishSpec::parse(spec)?;
                out.push(Published { ip: PUBLISHED_IP.to_string(), host_port: p.host_port, env_port: p.env_port, proto: p.proto });
            }
            Ok(out)
        }
        .boxed()
    }

    fn hold<'a>(&'a self, member: &'a str, argv: &'a [String]) -> BoxFuture<'a, Result<Lease>> {
        self.cluster.exec_lease(member, argv).boxed()
    }

    fn remove_member<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<()>> {
        // The pod's containers go together: the Job (its pod, its Secret) is deleted.
        async move {
            let (pod, _) = split(member)?;
            self.cluster.delete(job_of(pod)).await.map(|_| ())
        }
        .boxed()
    }

    fn inner_docker(&self, client: &str) -> Option<Result<bollard::Docker>> {
        Some(split(client).and_then(|(pod, _)| self.cluster.inner_docker_by(pod, self.options.reach)))
    }

    fn as_engine(&self) -> Option<&crate::engine::Engine> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn a_sandbox_s_state_is_read_off_its_job_s_counts() {
        use k8s_openapi::api::batch::v1::JobStatus;
        let st = |active, ready, succeeded, failed| JobStatus { active, ready, succeeded, failed, ..JobStatus::default() };
        assert_eq!(job_state(&st(None, None, None, None)), "created");
        assert_eq!(job_state(&st(Some(1), Some(0), None, None)), "created", "pending");
        assert_eq!(job_state(&st(Some(1), Some(1), None, None)), "running");
        assert_eq!(job_state(&st(Some(1), None, None, None)), "running", "a cluster without `ready`");
        assert_eq!(job_state(&st(None, Some(0), None, Some(1))), "exited");
        assert_eq!(job_state(&st(None, None, Some(1), None)), "exited");
        // A pooled one: `starting` until released, `ready` after, its own state once claimed
        // or ended.
        use k8s_openapi::api::batch::v1::Job;
        let job = |labels: &[&str], status| {
            let mut job = Job { status: Some(status), ..Job::default() };
            job.metadata.labels = Some(labels.iter().map(|l| (l.to_string(), "1".to_string())).collect());
            job
        };
        let running = st(Some(1), Some(1), None, None);
        assert_eq!(sandbox_state(&job(&[], running.clone())), "running");
        assert_eq!(sandbox_state(&job(&[labels::POOL], running.clone())), "starting");
        assert_eq!(sandbox_state(&job(&[labels::POOL, labels::POOL_READY], running.clone())), "ready");
        assert_eq!(sandbox_state(&job(&[labels::POOL, labels::POOL_READY, labels::POOL_CLAIMED], running)), "running");
        assert_eq!(sandbox_state(&job(&[labels::POOL, labels::POOL_READY], st(None, None, None, Some(1)))), "exited");
    }

    #[test]
    fn an_exec_s_exit_code_is_read_off_its_final_status() {
        let success = Status { status: Some("Success".into()), ..Status::default() };
        assert_eq!(exit_code("p/c", Some(success)).unwrap(), 0);
        let failed = |causes: Vec<StatusCause>| Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code".into()),
            details: Some(StatusDetails { causes: Some(causes), ..StatusDetails::default() }),
            ..Status::default()
        };
        let cause = StatusCause { reason: Some("ExitCode".into()), message: Some("3".into()), field: None };
        assert_eq!(exit_code("p/c", Some(failed(vec![cause]))).unwrap(), 3);
        assert!(exit_code("p/c", Some(failed(vec![]))).unwrap_err().to_string().contains("NonZeroExitCode"));
        assert!(exit_code("p/c", None).is_err());
    }

    #[test]
    fn a_command_s_directory_and_variables_are_given_through_sh_and_env() {
        let argv = vec!["docker".to_string(), "ps".to_string()];
        assert_eq!(shaped(&argv, &ExecAs::default()).unwrap(), argv);
        let how = ExecAs { working_dir: Some("/work".into()), env: vec!["A=1".into()], ..ExecAs::default() };
        let s = shaped(&argv, &how).unwrap();
        assert_eq!(s[..3], ["sh", "-c", r#"cd "$0" || exit 126; exec "$@""#]);
        assert_eq!(s[3..], ["/work", "env", "A=1", "docker", "ps"]);
        assert!(shaped(&argv, &ExecAs { user: Some("1000".into()), ..ExecAs::default() }).is_err());
    }

    #[test]
    fn a_member_is_pod_slash_container_and_a_pod_names_its_job() {
        assert_eq!(split("didx-abc-x7k2p/client").unwrap(), ("didx-abc-x7k2p", "client"));
        assert!(split("nope").is_err());
        assert_eq!(job_of("didx-abc-x7k2p"), "didx-abc");
    }
}
