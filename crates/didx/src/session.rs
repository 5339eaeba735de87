//! The run session: what one `didx [OPTIONS] COMMAND…` does, as a library call. Start (or
//! claim) an environment, copy and load into it, run the commands in order, then remove or
//! keep it by the clean-up policy — reporting each step as an [`Event`] and answering a
//! [`Cancel`] token at every phase.
//!
//! ```no_run
//! # async fn demo() -> didx::Result<()> {
//! use didx::session::{Event, Outcome, Session};
//! use didx::spec::{CleanPolicy, Step};
//! use didx::{Cancel, Engine, Sandbox};
//! let engine = Engine::connect_default().await?;
//! let session = Session::new(Sandbox::builder().copy("./src:/work/").options()?)
//!     .step(Step::parse("docker run --rm busybox true")?)
//!     .clean(CleanPolicy::Anycase);
//! let report = session
//!     .run(&engine, &Cancel::new(), &|e: &Event<'_>| eprintln!("{e:?}"), &mut tokio::io::stdout(), &mut tokio::io::stderr())
//!     .await?;
//! assert!(matches!(report.outcome, Outcome::Succeeded));
//! # Ok(()) }
//! ```

use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::cancel::Cancel;
use crate::command::Step;
use crate::engine::Engine;
use crate::env::Environment;
use crate::env::pool::Refill;
use crate::error::{Error, Result};
use crate::ops::copy::spec::CpOutSpec;
pub use crate::ops::load::{LoadEvent, LoadReport};
pub use crate::ops::run::StepEvent;
use crate::ops::run::run_steps;
use crate::ops::start::SandboxOptions;
use crate::spec::{CleanPolicy, EnvVarName, Teardown};

pub use crate::env::Event as StartEvent;
pub use crate::event::{Event, Phase};

/// How the commands ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Every command succeeded (or there were none).
    Succeeded,
    /// Command `step` (1-based) exited `code`; the rest did not run.
    CommandFailed {
        /// 1-based position of the failing command.
        step: usize,
        /// Its exit code.
        code: i64,
    },
    /// The cancel token stopped the session after the start.
    Interrupted,
    /// didx failed after the start (copy, load, or the engine while commands ran).
    Failed(Error),
}

impl Outcome {
    /// True for [`Outcome::Succeeded`]: what the clean-up policy judges by.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
}

/// What happened to the environment at the end.
#[derive(Debug)]
#[non_exhaustive]
pub enum Removal {
    /// Removed, with everything labelled with it.
    Removed,
    /// Handed to its lease ([`Teardown::Lease`]; by default, an environment the pool served):
    /// its members end themselves and the engine removes them, everything labelled with it
    /// included, within 2 s of the run's end, with no further call; the run does not wait.
    Ending,
    /// Left running, by policy.
    Kept,
    /// The removal failed; what is left carries the environment's label.
    Failed(Error),
}

/// What [`Session::run`] did.
#[derive(Debug)]
pub struct Report {
    /// The environment's id.
    pub env: String,
    /// Its server and client names (the server's empty with `--engine host`).
    pub names: [String; 2],
    /// How the commands ended.
    pub outcome: Outcome,
    /// What became of the environment.
    pub removal: Removal,
    /// When the pool served the environment: what tops it up again. The session does not run
    /// it, so a caller whose process ends with the session can hand it elsewhere.
    pub refill: Option<Refill>,
}

/// One run: options for the environment, commands, and a clean-up policy.
#[derive(Debug, Clone)]
#[must_use = "a session does nothing until run"]
pub struct Session {
    options: SandboxOptions,
    steps: Vec<Step>,
    clean: CleanPolicy,
    teardown: Option<Teardown>,
    cv_env: EnvVarName,
    pooled: bool,
    copies_out: Vec<CpOutSpec>,
    saves: Vec<String>,
}

impl Session {
    /// A session for an environment with `options`: no commands, `--clean none`, a fresh start.
    pub fn new(mut options: SandboxOptions) -> Session {
        options.policy = CleanPolicy::None.as_str();
        Session {
            options,
            steps: Vec::new(),
            clean: CleanPolicy::None,
            teardown: None,
            cv_env: EnvVarName::parse("DIND_CLIENT_NAME").expect("a valid name"),
            pooled: false,
            copies_out: Vec::new(),
            saves: Vec::new(),
        }
    }
    /// Add a command to run (see [`Step::parse`]).
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }
    /// Add commands to run, in order.
    pub fn steps(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.steps.extend(steps);
        self
    }
    /// When to remove the environment. [`CleanPolicy::All`] and [`CleanPolicy::Rpt`] are not
    /// session policies (see [`inventory`](crate::inventory)): a usage error at [`run`](Self::run).
    pub fn clean(mut self, policy: CleanPolicy) -> Self {
        self.clean = policy;
        self.options.policy = policy.as_str();
        self
    }
    /// The host variable that names the client for `docker exec $VAR …` host commands.
    pub fn client_name_var(mut self, name: EnvVarName) -> Self {
        self.cv_env = name;
        self
    }
    /// How an environment the policy removes is ended: [`Teardown::Wait`] (removed before
    /// [`Session::run`] returns) or [`Teardown::Lease`] (its leases closed; the engine removes
    /// it within 2 s). Unset: `Lease` for an environment the pool served, else `Wait`.
    pub fn teardown(mut self, teardown: Teardown) -> Self {
        self.teardown = Some(teardown);
        self
    }
    /// After the commands, whether they succeeded or failed (not when interrupted, nor when
    /// the environment never got to them), copy these client paths to this machine
    /// (`--cp-out`, see [`crate::Sandbox::copy_out`]), in order; a copy that fails fails the
    /// run (an [`Outcome::Failed`] where the commands succeeded) and the others are still made.
    pub fn copy_out(mut self, specs: impl IntoIterator<Item = CpOutSpec>) -> Self {
        self.copies_out.extend(specs);
        self
    }
    /// After the commands, when they all succeeded, put these images of the inner engine into
    /// the host engine (`--save`, the reverse of `--load`; see [`crate::Sandbox::save_images`]);
    /// a save that fails fails the run.
    pub fn save(mut self, images: impl IntoIterator<Item = String>) -> Self {
        self.saves.extend(images);
        self
    }
    /// Claim a ready environment of the warm pool when one matches (else start fresh).
    pub fn pooled(mut self, pooled: bool) -> Self {
        self.pooled = pooled;
        self
    }

    /// Run the session. Errors before the environment exists (bad input, a missing source, a
    /// failed or cancelled start — which removes what it created) are `Err`; from then on
    /// every ending is a [`Report`], with clean-up done by policy (an interruption or a didx
    /// failure counts as a failed run). Command output streams to `out` and `err`.
    pub async fn run(
        &self,
        engine: &Engine,
        cancel: &Cancel,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<Report> {
        self.check()?;
        let seeds = self.options.check(engine).await?;
        // Held by this process when the policy would remove the environment if the run were
        // killed (killed counts as failed): anycase and failure. Under success and none a
        // killed run keeps it, as a SIGTERM does.
        let lease = self.clean.holds();
        let launched = self.options.launch(engine, self.pooled, lease, &seeds, cancel, on).await?;
        Ok(self.work(launched.env, launched.refill, Some(engine), Some(&seeds), cancel, on, out, err).await)
    }

    /// [`run`](Self::run) on a Kubernetes cluster: the sandbox a Job of `cluster`'s namespace
    /// (or, [`pooled`](Self::pooled), a ready one of the pool there; see
    /// [`SandboxBuilder::start_on_cluster_with`](crate::SandboxBuilder::start_on_cluster_with)),
    /// its copies and loads read from `source`, the engine [`save`](Self::save) puts images
    /// into. A claim's refill runs in this process and is waited for before this returns. The
    /// cancel token is answered from the commands on (a start on a cluster runs to its end).
    #[cfg(feature = "kubernetes")]
    #[allow(clippy::too_many_arguments)]
    pub async fn run_on_cluster(
        &self,
        cluster: &crate::backend::kubernetes::cluster::Cluster,
        kube: &crate::backend::kubernetes::manifest::KubeOptions,
        source: Option<&Engine>,
        cancel: &Cancel,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<Report> {
        self.check()?;
        if !self.saves.is_empty() && source.is_none() {
            let fix = "--save puts images into an engine of yours: give the session one (-H)";
            return Err(Error::invalid("--save", self.saves.join(" "), fix));
        }
        let started = self.options.start_on_cluster(cluster, kube, source, self.pooled, crate::pool::name()?, on).await?;
        let mut env = started.env;
        // A pod is held from its start: released now when the policy keeps a killed run's.
        if !self.clean.holds()
            && let Err(error) = env.release().await
        {
            on(&Event::Failed { error: &error });
            return Ok(self.finish(env, Outcome::Failed(error), None, on).await);
        }
        on(&Event::OnCluster { id: env.id().as_str(), namespace: cluster.namespace(), claimed: started.refilling.is_some() });
        let report = self.work(env, None, source, None, cancel, on, out, err).await;
        if let Some(refill) = started.refilling {
            let _ = refill.await;
        }
        Ok(report)
    }

    /// What no session runs: `--clean all` and `rpt`, a `--save` name that is not one.
    fn check(&self) -> Result<()> {
        if matches!(self.clean, CleanPolicy::All | CleanPolicy::Rpt) {
            return Err(Error::invalid("--clean value", self.clean.as_str(), "a session removes by none, success, failure or anycase"));
        }
        for image in &self.saves {
            crate::spec::check_save_image(image)?;
        }
        Ok(())
    }

    /// From a started environment to its end: the published ports said, the copies and loads
    /// (`seeds` given: on a cluster they were made at the start), the commands, the copies out
    /// and saves (into `source`), then the removal or keeping by the policy.
    #[allow(clippy::too_many_arguments)]
    async fn work(
        &self,
        mut env: Environment,
        refill: Option<Refill>,
        source: Option<&Engine>,
        seeds: Option<&[crate::ops::load::HostImage]>,
        cancel: &Cancel,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Report {
        if !self.options.publish.is_empty() {
            match env.published().await {
                Ok(ports) => on(&Event::Published { ports: &ports }),
                Err(error) => {
                    on(&Event::Failed { error: &error });
                    return self.finish(env, Outcome::Failed(error), refill, on).await;
                }
            }
        }
        if cancel.is_cancelled() {
            on(&Event::Interrupted { phase: Phase::Started });
            return self.finish(env, Outcome::Interrupted, refill, on).await;
        }
        if let (Some(engine), Some(seeds)) = (source, seeds) {
            let filled = tokio::select! {
                r = self.options.fill(engine, &mut env, seeds, on) => r,
                () = cancel.cancelled() => {
                    on(&Event::Interrupted { phase: Phase::Preparing });
                    return self.finish(env, Outcome::Interrupted, refill, on).await;
                }
            };
            if let Err(error) = filled {
                on(&Event::Failed { error: &error });
                return self.finish(env, Outcome::Failed(error), refill, on).await;
            }
        }
        let on_step = |e: StepEvent<'_>| on(&Event::Step(e));
        let ran = tokio::select! {
            r = run_steps(&env, &self.steps, &self.cv_env, out, err, &on_step) => r,
            () = cancel.cancelled() => {
                on(&Event::Interrupted { phase: Phase::Commands });
                return self.finish(env, Outcome::Interrupted, refill, on).await;
            }
        };
        let mut outcome = match ran {
            Ok(o) => match o.failed {
                None => Outcome::Succeeded,
                Some((step, code)) => Outcome::CommandFailed { step, code },
            },
            Err(error) => {
                on(&Event::Failed { error: &error });
                Outcome::Failed(error)
            }
        };
        for spec in &self.copies_out {
            let copied = tokio::select! {
                r = crate::ops::copy::out::copy_out(&**env.backend(), &env.client().id, &spec.from, &spec.to) => r,
                () = cancel.cancelled() => {
                    on(&Event::Interrupted { phase: Phase::Commands });
                    return self.finish(env, Outcome::Interrupted, refill, on).await;
                }
            };
            match copied {
                Ok(_) => on(&Event::CopiedOut { from: &spec.from, to: &spec.to }),
                Err(error) => {
                    on(&Event::Failed { error: &error });
                    if outcome.succeeded() {
                        outcome = Outcome::Failed(error);
                    }
                }
            }
        }
        if outcome.succeeded()
            && let Some(engine) = source.filter(|_| !self.saves.is_empty())
        {
            let saved = tokio::select! {
                r = crate::ops::save::save(&env, engine, &self.saves) => r,
                () = cancel.cancelled() => {
                    on(&Event::Interrupted { phase: Phase::Commands });
                    return self.finish(env, Outcome::Interrupted, refill, on).await;
                }
            };
            match saved {
                Ok(images) => on(&Event::Saved { images: &images }),
                Err(error) => {
                    on(&Event::Failed { error: &error });
                    outcome = Outcome::Failed(error);
                }
            }
        }
        self.finish(env, outcome, refill, on).await
    }

    /// Remove or keep `env` by the policy and the outcome.
    async fn finish(&self, env: Environment, outcome: Outcome, refill: Option<Refill>, on: &(dyn Fn(&Event<'_>) + Send + Sync)) -> Report {
        on(&Event::CommandsDone);
        let id = env.id().to_string();
        // With `--engine host` there is no server: its name is empty.
        let server = env.server().map_or_else(String::new, |s| s.name.clone());
        let names = [server, env.client().name.clone()];
        // By its lease (by default, an environment the pool served): off the run's critical
        // path, its members stop themselves and the engine's auto-removal takes them (all it
        // has: anonymous volumes only, no network of its own).
        let removes = self.clean.removes(outcome.succeeded());
        let by_lease = self.teardown.map_or(refill.is_some(), |t| t == Teardown::Lease);
        let removal = if removes && by_lease && env.is_held() {
            on(&Event::Ending { id: &id, names: &names });
            match env.end().await {
                Ok(()) => Removal::Ending,
                Err(e) => Removal::Failed(e),
            }
        } else if removes {
            on(&Event::Removing { id: &id, names: &names });
            match env.rm().await {
                Ok(()) => {
                    on(&Event::Removed { names: &names });
                    Removal::Removed
                }
                Err(e) => Removal::Failed(e),
            }
        } else {
            // Bounded: a slow answer here must not hold the run's end.
            let expires = match tokio::time::timeout(Duration::from_secs(5), env.certificates_expire()).await {
                Ok(Ok(t)) => t,
                _ => None,
            };
            if let Err(e) = env.keep().await {
                tracing::warn!(env = %id, error = %e, "releasing the lease of a kept environment failed; it may end with this process");
            }
            on(&Event::Kept { id: &id, names: &names, expires });
            Removal::Kept
        };
        Report { env: id, names, outcome, removal, refill }
    }
}
