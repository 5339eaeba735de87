//! `didx [OPTIONS] COMMAND…`, the verb with no name: one run, a version matrix (a `--sv`
//! list), or `--clean rpt|all` (list or remove every didx environment; runs no commands).

use didx::Error;
use didx::spec::CleanPolicy;

use crate::cli::RunArgs;
use crate::engine::connect;
use crate::helper::Helper;
use crate::listing;
use crate::matrix::{self, Matrix};
use crate::options::run_builder;
use crate::output::say;
use crate::run::RunJob;

/// What a run's command line asks for, validated (nothing created yet).
pub enum Plan {
    /// `--clean rpt` (list) or `--clean all` (remove everything didx made).
    Report { host: Option<String>, clean: CleanPolicy },
    /// One environment and its COMMANDs.
    Single(Box<RunJob>),
    /// One environment per version.
    Matrix(Box<Matrix>),
    /// One environment on a cluster (`--backend kubernetes`).
    Kube(Box<crate::commands::k8s::KubeRun>),
}

impl Plan {
    /// Validate the whole run before the engine is touched: a usage error creates nothing.
    pub fn of(host: Option<String>, a: RunArgs) -> anyhow::Result<Plan> {
        listing::check_run(&a)?;
        if a.events == Some(crate::cli::EventFormat::Json) {
            crate::event_json::enable();
        }
        if a.backend == crate::cli::BackendArg::Kubernetes {
            return Ok(Plan::Kube(Box::new(crate::commands::k8s::KubeRun::of(host, a)?)));
        }
        refuse_kube_only(a.kube_context.is_some(), &a.k8s)?;
        let clean = CleanPolicy::from(a.clean);
        if matches!(clean, CleanPolicy::All | CleanPolicy::Rpt) {
            if !a.commands.is_empty() {
                return Err(Error::Invalid {
                    what: "--clean value",
                    value: clean.as_str().to_string(),
                    fix: format!("--clean {} runs no commands; drop the COMMANDs or use anycase", clean.as_str()),
                }
                .into());
            }
            // Validated as a run's options would be, though only the engine is used.
            run_builder(&a)?.options()?;
            Ok(Plan::Report { host, clean })
        } else if a.is_matrix() {
            if let Some(option) = [("--cp-out", !a.cp_out.is_empty()), ("--save", !a.save.is_empty())].iter().find(|o| o.1).map(|o| o.0) {
                let fix = format!("every version would write the same {option} targets; run one version per didx for {option}");
                return Err(Error::Invalid { what: "option", value: option.into(), fix }.into());
            }
            Ok(Plan::Matrix(Box::new(Matrix::of(host, a, clean)?)))
        } else {
            matrix::jobs(&a)?;
            Ok(Plan::Single(Box::new(RunJob::of(host, a, clean)?)))
        }
    }

    /// The helper processes the plan's runs need (see [`Helper`]), forked now, while the
    /// process has one thread: one per run (every start is held until it is in place, a kept
    /// one too; a claim may refill the pool), one per version of a matrix, in list order.
    pub fn fork_helpers(&self) -> Vec<Option<Helper>> {
        match self {
            Plan::Single(run) => vec![Helper::fork(run.host.clone(), run.options.clone())],
            Plan::Matrix(m) => m.fork_helpers(),
            Plan::Report { .. } | Plan::Kube(_) => vec![],
        }
    }

    /// Run the plan with the helpers [`Plan::fork_helpers`] forked; the exit code.
    pub async fn go(self, helpers: Vec<Option<Helper>>) -> anyhow::Result<u8> {
        match self {
            Plan::Report { host, clean } => inventory(host.as_deref(), clean).await,
            Plan::Single(run) => run.go(helpers.into_iter().next().flatten()).await,
            Plan::Matrix(m) => m.go(helpers).await,
            Plan::Kube(k) => k.go().await,
        }
    }
}

/// A usage error for the first option given that only the kubernetes backend reads (when the
/// backend is docker).
pub fn refuse_kube_only(kube_context: bool, k: &crate::cli::K8sArgs) -> Result<(), Error> {
    match kube_only(kube_context, k) {
        Some(option) => Err(Error::Invalid { what: "option", value: option.into(), fix: "it applies to --backend kubernetes".into() }),
        None => Ok(()),
    }
}

/// The first option given that only the kubernetes backend reads.
fn kube_only(kube_context: bool, k: &crate::cli::K8sArgs) -> Option<&'static str> {
    [
        ("--kube-context", kube_context),
        ("--namespace", k.namespace.is_some()),
        ("--deadline", k.deadline != "1h"),
        ("--ttl", k.ttl != "60s"),
        ("--runtime-class", k.runtime_class.is_some()),
        ("--server-requests", k.server_requests.is_some()),
        ("--server-limits", k.server_limits.is_some()),
        ("--client-requests", k.client_requests.is_some()),
        ("--client-limits", k.client_limits.is_some()),
        ("--storage-limit", k.storage_limit.is_some()),
        ("--kube-reach", k.kube_reach != "auto"),
    ]
    .into_iter()
    .find_map(|(o, given)| given.then_some(o))
}

/// `--clean rpt` (list) and `--clean all` (remove everything didx made).
async fn inventory(host: Option<&str>, clean: CleanPolicy) -> anyhow::Result<u8> {
    let engine = connect(host).await?;
    if clean == CleanPolicy::All {
        let removed = didx::inventory::remove_all(&engine).await?;
        for name in &removed {
            say(format!("{name} terminated & destroyed"));
        }
        say(format!("removed {} container(s) and every didx volume and network", removed.len()));
        return Ok(0);
    }
    listing::environments(&engine).await
}
