//! Running COMMANDs in an environment, in order, stopping at the first failure.

use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;

use crate::command::{HostForm, Step};
use crate::env::{Environment, HostAccess};
use crate::error::{Error, Result};
use crate::spec::EnvVarName;

/// Progress of a session's commands.
#[derive(Debug)]
#[non_exhaustive]
pub enum StepEvent<'a> {
    /// Step `index` (1-based) of `total` starts.
    Started {
        /// 1-based position.
        index: usize,
        /// Number of steps.
        total: usize,
        /// The step as shown to people.
        display: &'a str,
    },
    /// Step `index` ended with `code`.
    Ended {
        /// 1-based position.
        index: usize,
        /// Number of steps.
        total: usize,
        /// Its exit code.
        code: i64,
        /// How long it ran.
        elapsed: Duration,
    },
}

/// How a run of steps ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Steps that ran (including a failing one).
    pub ran: usize,
    /// The first failing step (1-based) and its exit code.
    pub failed: Option<(usize, i64)>,
}


/// Run `steps` in order in `env`, streaming their output to `out`/`err`; stop at the first
/// failure. Host steps run with `sh -c` here, with `cv_env` set to the client's container
/// name. The `docker exec …` form gets `DOCKER_HOST` (see [`Engine::cli_env`]) of the engine
/// `env` runs on, so its `docker` talks to the same engine as didx whatever `-H` was given;
/// the `host:` form gets the sandbox's inner engine ([`Environment::host_access`]) as
/// `DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`. Both get the sandbox's as
/// `DIDX_DOCKER_HOST`, `DIDX_DOCKER_TLS_VERIFY`, `DIDX_DOCKER_CERT_PATH` (the `docker exec`
/// form only where the engine is on this machine).
///
/// [`Engine::cli_env`]: crate::engine::Engine::cli_env
pub async fn run_steps(
    env: &Environment,
    steps: &[Step],
    cv_env: &EnvVarName,
    out: &mut (dyn AsyncWrite + Unpin + Send),
    err: &mut (dyn AsyncWrite + Unpin + Send),
    on: &(dyn Fn(StepEvent<'_>) + Send + Sync),
) -> Result<Outcome> {
    let total = steps.len();
    // Made on the first host step that needs it (it writes the certificate files).
    let mut access: Option<HostAccess> = None;
    for (i, step) in steps.iter().enumerate() {
        let index = i + 1;
        let display = step.display();
        on(StepEvent::Started { index, total, display: &display });
        let t0 = Instant::now();
        let code = match step {
            Step::Client(argv) => {
                let gone = || Error::ContainerGone { container: env.client().name.clone() };
                match env.exec(argv, out, err).await {
                    Ok(0) => 0,
                    Ok(code) if env.client_gone(code == 128 + 9 || code == 128 + 15).await => return Err(gone()),
                    Ok(code) => code,
                    // The engine forgot the exec with its container.
                    Err(e) if crate::engine::status_of(&e) == Some(404) && env.client_gone(false).await => return Err(gone()),
                    Err(e) => return Err(e),
                }
            }
            Step::Host { script, form } => {
                if access.is_none() {
                    match env.host_access().await {
                        Ok(a) => access = Some(a),
                        Err(e) if *form == HostForm::DockerExec => {
                            tracing::debug!(error = %e, "no DIDX_DOCKER_HOST for a docker exec command");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let sandbox = access.as_ref().map(HostAccess::docker_env).unwrap_or_default();
                let mut vars: Vec<(String, String)> = match form {
                    HostForm::DockerExec => env.docker("a `docker exec` COMMAND")?.cli_env(),
                    HostForm::Sandbox => sandbox.clone(),
                };
                vars.extend(sandbox.into_iter().map(|(k, v)| (format!("DIDX_{k}"), v)));
                run_on_host(script, cv_env.as_str(), &env.client().name, &vars).await?
            }
        };
        on(StepEvent::Ended { index, total, code, elapsed: t0.elapsed() });
        if code != 0 {
            return Ok(Outcome { ran: index, failed: Some((index, code)) });
        }
    }
    Ok(Outcome { ran: total, failed: None })
}

async fn run_on_host(script: &str, var: &str, client: &str, engine_env: &[(String, String)]) -> Result<i64> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .envs(engine_env.iter().map(|(k, v)| (k, v)))
        .env(var, client)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| Error::io("running a host command with sh", e))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as i64,
        (None, Some(sig)) => 128 + sig as i64,
        _ => 1,
    })
}
