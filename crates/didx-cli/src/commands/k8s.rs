//! `didx k8s render`: the objects a sandbox on a Kubernetes cluster would be made of.

use didx::kubernetes::{KubeOptions, KubeReach, Rendered, Resources};
use didx::spec::parse_duration;

use crate::cli::{K8sArgs, K8sCmd};
use didx::session::{Outcome, Removal};

use crate::output::{self, say};

/// What `didx k8s render` prints, made (and its options validated) before anything is printed.
pub struct Render {
    rendered: Rendered,
    json: bool,
}

/// Validate the command line and render.
pub fn of(cmd: K8sCmd) -> anyhow::Result<Render> {
    let K8sCmd::Render { k8s, json, env } = cmd else { unreachable!("render only") };
    let kube = kube_options(&k8s)?;
    let options = crate::options::builder(&env)?.options()?;
    let rendered = didx::kubernetes::render(&options, &kube)?;
    Ok(Render { rendered, json })
}

/// The pod's settings `a` names (the namespace `default` when not named: a run takes its
/// cluster's).
pub fn kube_options(a: &K8sArgs) -> didx::Result<KubeOptions> {
    let mut server = Resources::default();
    let mut client = Resources::default();
    for (map, what, text) in [
        (&mut server.requests, "--server-requests value", &a.server_requests),
        (&mut server.limits, "--server-limits value", &a.server_limits),
        (&mut client.requests, "--client-requests value", &a.client_requests),
        (&mut client.limits, "--client-limits value", &a.client_limits),
    ] {
        if let Some(t) = text {
            Resources::parse_into(map, what, t)?;
        }
    }
    if let Some(q) = &a.storage_limit
        && !didx::kubernetes::is_quantity(q)
    {
        return Err(didx::Error::Invalid { what: "--storage-limit value", value: q.clone(), fix: "a quantity, e.g. 20Gi or 500Mi".into() });
    }
    Ok(KubeOptions {
        namespace: a.namespace.clone().unwrap_or_else(|| "default".into()),
        deadline: parse_duration("--deadline value", &a.deadline)?,
        ttl_after_finished: parse_duration("--ttl value", &a.ttl)?,
        runtime_class: a.runtime_class.clone(),
        server_resources: server,
        client_resources: client,
        storage_limit: a.storage_limit.clone(),
        reach: KubeReach::parse(&a.kube_reach)?,
    })
}

/// Print the objects on stdout and the Pod Security level on stderr.
pub fn print(r: &Render) -> anyhow::Result<u8> {
    let text = if r.json { r.rendered.json()? + "\n" } else { r.rendered.yaml()? };
    output::out(&text);
    say(format!(
        "the pod needs a namespace admitting Pod Security level '{}' (pod-security.kubernetes.io/enforce)",
        r.rendered.pod_security.name()
    ));
    Ok(0)
}

/// `didx --backend kubernetes [OPTIONS] COMMAND…`: one environment as a Job of a cluster, its
/// COMMANDs run in the client through `pods/exec`, then removed.
pub struct KubeRun {
    /// The engine `--cp`, `--load` read from and `--save` puts into (-H), when they are given.
    source: Option<Option<String>>,
    /// The library's session: the start, the COMMANDs, the copies out and saves, the end.
    session: didx::session::Session,
    kube: KubeOptions,
    context: Option<String>,
    namespace: Option<String>,
    /// `--clean`: what becomes of the sandbox after its COMMANDs (`rpt` and `all`: the
    /// namespace's sandboxes listed or removed, nothing started).
    clean: didx::spec::CleanPolicy,
    /// `--deadline`, as given: how long a kept sandbox runs on.
    deadline: String,
}

impl KubeRun {
    /// Validate the run before the cluster is touched: what a pod cannot have, and what is not
    /// built on this backend yet, is a usage error.
    pub fn of(host: Option<String>, a: crate::cli::RunArgs) -> anyhow::Result<KubeRun> {
        let refuse = |option: &'static str, value: &str, why: &str| didx::Error::Invalid {
            what: option,
            value: value.to_string(),
            fix: format!("{why} on the kubernetes backend"),
        };
        let clean = didx::spec::CleanPolicy::from(a.clean);
        if matches!(clean, didx::spec::CleanPolicy::All | didx::spec::CleanPolicy::Rpt) && !a.commands.is_empty() {
            let fix = format!("--clean {} runs no commands; drop the COMMANDs or use anycase", clean.as_str());
            return Err(didx::Error::Invalid { what: "--clean value", value: clean.as_str().to_string(), fix }.into());
        }
        if a.is_matrix() {
            return Err(refuse("--sv", &a.env.sv, "a version matrix is not built").into());
        }
        if a.teardown.is_some() {
            return Err(refuse("--teardown", "(set)", "the Job is deleted at the end; there is no other way").into());
        }
        let mut steps = Vec::new();
        for c in &a.commands {
            let step = didx::spec::Step::parse(c)?;
            if let didx::spec::Step::Host { form: didx::spec::HostForm::DockerExec, .. } = step {
                let why = "there is no engine to `docker exec` into (write the command as the client runs it, or use host: COMMAND)";
                return Err(refuse("COMMAND", c, why).into());
            }
            steps.push(step);
        }
        let kube = kube_options(&a.k8s)?;
        let options = crate::options::run_builder(&a)?.options()?;
        // What a pod cannot have, refused as `didx k8s render` refuses it, before any cluster.
        didx::kubernetes::render(&options, &kube)?;
        let source = (!a.cp.is_empty() || !a.load.is_empty() || !a.save.is_empty()).then_some(host);
        let cwd = std::env::current_dir()?;
        let copies_out: Vec<didx::spec::CpOutSpec> =
            a.cp_out.iter().map(|s| didx::spec::CpOutSpec::parse(s, &cwd)).collect::<Result<_, _>>()?;
        for image in &a.save {
            didx::spec::check_save_image(image)?;
        }
        let session =
            didx::session::Session::new(options).steps(steps).clean(clean).copy_out(copies_out).save(a.save.clone()).pooled(a.pool);
        let (context, namespace, deadline) = (a.kube_context, a.k8s.namespace, a.k8s.deadline);
        Ok(KubeRun { source, session, kube, context, namespace, clean, deadline })
    }

    /// Start, run the COMMANDs (stopping at the first that fails), then remove or keep it as
    /// `--clean` says; the exit code: the failed COMMAND's, else 0. A run whose policy keeps a
    /// failed run's sandbox (`none`, `success`) does not hold it: killed, it is kept too.
    pub async fn go(self) -> anyhow::Result<u8> {
        use didx::spec::CleanPolicy;
        let cluster = didx::kubernetes::Cluster::connect(self.context.as_deref(), self.namespace.as_deref()).await?;
        match self.clean {
            CleanPolicy::Rpt => return crate::listing::cluster(&cluster).await,
            CleanPolicy::All => {
                let removed = didx::kubernetes::remove(&cluster, None).await?;
                say(format!("removed {} sandbox(es) in namespace {}: {}", removed.len(), cluster.namespace(), removed.join(" ")));
                return Ok(0);
            }
            _ => {}
        }
        let engine = match &self.source {
            Some(host) => Some(crate::engine::connect(host.as_deref()).await?),
            None => None,
        };
        let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
        let on = |e: &didx::session::Event<'_>| {
            crate::event_json::emit(e);
            say_event(e)
        };
        let cancel = didx::Cancel::new();
        let report = self.session.run_on_cluster(&cluster, &self.kube, engine.as_ref(), &cancel, &on, &mut stdout, &mut stderr).await?;
        let id = &report.env;
        match &report.removal {
            Removal::Kept => say(format!("{id} kept: its pod runs until its deadline ({}); didx k8s rm {id} removes it", self.deadline)),
            Removal::Failed(e) => say(format!("error: removing sandbox {id} failed: {e} (didx k8s rm {id} removes what is left)")),
            _ => say(format!("{id} removed (Job didx-{id} deleted)")),
        }
        Ok(match report.outcome {
            Outcome::Succeeded => 0,
            Outcome::CommandFailed { code, .. } if (1..=255).contains(&code) => code as u8,
            _ => crate::exit::EXIT_DIDX,
        })
    }
}

/// A run's events on a cluster, said as a run on Docker says them (the end is said from the
/// session's report: the sandbox's Job, not two containers).
fn say_event(e: &didx::session::Event<'_>) {
    use didx::session::Event;
    match e {
        Event::OnCluster { id, namespace, claimed } => {
            if *claimed {
                say(format!("{id} claimed from the pool; a refill starts now (this run waits for it at its end)"));
            }
            say(format!("{id} started: Job didx-{id} in namespace {namespace}"));
        }
        Event::Published { ports } => {
            // Each carried to this machine's loopback by port-forwards held by this run.
            for p in ports.iter() {
                say(format!("published {} -> {}/{}", p.host_addr(), p.env_port, p.proto.as_str()));
            }
        }
        Event::CopyWarning { warning } => say(warning),
        Event::Copied { sources } => say(format!("copied {sources} source(s) into the client")),
        Event::Loaded { report } if !report.loaded.is_empty() => say(format!(
            "loaded {} into the inner engine: {:.1} MB in {:.2} s",
            report.loaded.join(", "),
            report.bytes as f64 / 1e6,
            report.elapsed.as_secs_f64()
        )),
        Event::Step(s) => crate::run::say_step(s),
        Event::CopiedOut { from, to } => say(format!("copied {from} out of the client to {}", to.display())),
        Event::Saved { images } => say(format!("saved {} into the host engine", images.join(", "))),
        Event::Failed { error } => say(format!("error: {error}{}", crate::exit::advice(error))),
        _ => {}
    }
}

/// `didx env ID --backend kubernetes` and `didx k8s env ID`: a host docker client pointed at a
/// cluster sandbox's inner engine, through a socket of this machine's that a holder process
/// serves until the sandbox's pod ends.
pub struct EnvJob {
    id: String,
    context: Option<String>,
    namespace: Option<String>,
    reach: KubeReach,
    json: bool,
    hold: bool,
}

impl EnvJob {
    /// Checked before the cluster is asked anything.
    pub fn of(id: String, kube: &crate::cli::KubeEnvArgs, json: bool, hold: bool) -> Result<EnvJob, didx::Error> {
        didx::kubernetes::check_id(&id)?;
        let reach = KubeReach::parse(&kube.kube_reach)?;
        Ok(EnvJob { id, context: kube.kube_context.clone(), namespace: kube.namespace.clone(), reach, json, hold })
    }

    /// As [`EnvJob::of`], for `didx env --backend kubernetes` (where `-H`, a Docker engine,
    /// means nothing: `host` says it was given).
    pub fn on_cluster(host: bool, id: String, kube: &crate::cli::KubeEnvArgs, json: bool, hold: bool) -> Result<EnvJob, didx::Error> {
        if host {
            let fix = "it names a Docker engine; --backend kubernetes reaches the kubeconfig's cluster (--kube-context)";
            return Err(didx::Error::Invalid { what: "option", value: "-H".into(), fix: fix.into() });
        }
        EnvJob::of(id, kube, json, hold)
    }

    /// The holder started (see [`super::env::run_holder`]) and what it prints once its socket
    /// listens printed; or, as the holder, the socket served.
    pub async fn go(self) -> anyhow::Result<u8> {
        if self.hold {
            return self.serve().await;
        }
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["k8s", "env", "--hold", "--kube-reach", self.reach.name()]);
        if let Some(c) = &self.context {
            cmd.args(["--kube-context", c]);
        }
        if let Some(n) = &self.namespace {
            cmd.args(["--namespace", n]);
        }
        cmd.args(self.json.then_some("--json")).arg("--").arg(&self.id);
        super::env::run_holder(cmd)
    }

    /// The socket, in a private directory of this machine's temporary directory, served until
    /// the sandbox's pod no longer runs; the line printed once it listens.
    async fn serve(self) -> anyhow::Result<u8> {
        use std::os::unix::fs::DirBuilderExt;
        let cluster = didx::kubernetes::Cluster::connect(self.context.as_deref(), self.namespace.as_deref()).await?;
        let pod = cluster.pod_of(&self.id).await?;
        let dir = std::env::temp_dir().join(format!("didx-k8s-env-{}-{}", self.id, std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("docker.sock");
        let served = async {
            let listener = tokio::net::UnixListener::bind(&socket)?;
            let host = format!("unix://{}", socket.display());
            output::out(&format!("{}\n", self.line(&host, cluster.namespace(), self.reach.on(cluster.in_cluster()))));
            // Its output is complete: the end of it tells the starting didx so.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                rustix::stdio::dup2_stdout(&null).ok();
                rustix::stdio::dup2_stderr(&null).ok();
            }
            cluster.forward_inner(&pod, self.reach, listener).await?;
            anyhow::Ok(())
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        served.map(|()| 0)
    }

    /// `export DOCKER_HOST='unix://…'`, or its JSON object (docs/src/reference/json.md).
    fn line(&self, host: &str, namespace: &str, way: KubeReach) -> String {
        if self.json {
            let v = serde_json::json!({ "id": self.id, "docker_host": host, "backend": "kubernetes", "namespace": namespace, "reach": way.name() });
            return v.to_string();
        }
        format!("export DOCKER_HOST='{}'", host.replace('\'', r"'\''"))
    }
}

/// `didx k8s rm ID…` or `didx k8s rm --all`: the sandboxes' Jobs deleted (their pods and
/// Secrets with them); an id that names none is said, and the exit code is then 1.
pub async fn rm(ids: &[String], all: bool, context: Option<&str>, namespace: Option<&str>) -> anyhow::Result<u8> {
    let cluster = didx::kubernetes::Cluster::connect(context, namespace).await?;
    if all {
        let removed = didx::kubernetes::remove(&cluster, None).await?;
        say(format!("removed {} sandbox(es) in namespace {}", removed.len(), cluster.namespace()));
        return Ok(0);
    }
    let mut missing = 0;
    for id in ids {
        if didx::kubernetes::remove(&cluster, Some(id)).await?.is_empty() {
            say(format!("{id}: no such sandbox in namespace {}", cluster.namespace()));
            missing += 1;
        } else {
            say(format!("{id} removed (Job didx-{id} deleted)"));
        }
    }
    Ok(u8::from(missing > 0))
}

/// `didx k8s ls`: the sandboxes of the namespace.
pub async fn ls(context: Option<&str>, namespace: Option<&str>) -> anyhow::Result<u8> {
    let cluster = didx::kubernetes::Cluster::connect(context, namespace).await?;
    crate::listing::cluster(&cluster).await
}
