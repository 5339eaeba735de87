//! `didx env ID [--json]`: how a host tool reaches a running environment's inner engine.
//!
//! On an engine over SSH the inner engine's port is on the engine's machine: `didx env` then
//! starts a holder, `didx env --hold ID` in a process group of its own, which opens local
//! forwards over its own SSH connection, prints the line (read here and printed as ours), and
//! holds them until the environment ends.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use didx::Error;

use crate::engine::connect;
use crate::listing;
use crate::output;

/// `didx env ID [--json]`: the variables, as a line to `eval` or as JSON.
pub async fn env_vars(host: Option<&str>, id: &str, json: bool, hold: bool) -> anyhow::Result<u8> {
    // Said before trying to reach an engine elsewhere (the library checks again after
    // connecting, for an engine named by a docker context).
    if let Some(h) = host.map(str::to_string).or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        && !didx::inventory::is_on_this_machine(&h)
        && !h.starts_with("ssh://")
    {
        return Err(Error::EndpointElsewhere { host: h }.into());
    }
    let engine = connect(host).await?;
    let line =
        |access: &didx::inventory::HostAccess| format!("{}\n", if json { listing::host_access_json(access) } else { export_line(access) });
    if hold {
        let held = didx::inventory::hold_host_access(&engine, id).await?;
        output::out(&line(&held.access));
        // Its output is complete: the end of it tells `didx env` so (and nothing it says later
        // could be read).
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            rustix::stdio::dup2_stdout(&null).ok();
            rustix::stdio::dup2_stderr(&null).ok();
        }
        held.until_gone().await?;
        return Ok(0);
    }
    if engine.host().starts_with("ssh://") {
        return holder(host, id, json);
    }
    let access = didx::inventory::host_access(&engine, id).await?;
    output::out(&line(&access));
    Ok(0)
}

/// Starts `didx env --hold ID` (same engine, same options) in a process group of its own, and
/// prints what it prints once its forwards listen (all of it: it closes its output then);
/// its error, if it ends first.
fn holder(host: Option<&str>, id: &str, json: bool) -> anyhow::Result<u8> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    if let Some(h) = host {
        cmd.args(["-H", h]);
    }
    cmd.args(["env", "--hold"]).args(json.then_some("--json")).arg("--").arg(id);
    run_holder(cmd)
}

/// Starts `cmd` (a holder: `didx env --hold …`, `didx k8s env --hold …`) in a process group of
/// its own — a Ctrl-C in the shell that ran `didx` does not end it — and prints what it prints
/// once it holds (all of it: it closes its output then); its error and exit code, if it ends
/// first.
pub fn run_holder(mut cmd: Command) -> anyhow::Result<u8> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn()?;
    let mut said = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut said)?;
    if said.ends_with('\n') {
        output::out(&said);
        return Ok(0);
    }
    // It ended without its line: its own error says why (and its exit code is ours).
    let mut err = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut err)?;
    let status = child.wait()?;
    eprint!("{err}");
    Ok(u8::try_from(status.code().unwrap_or(125)).unwrap_or(125))
}

/// `export DOCKER_HOST='…' DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH='…'`, quoted for a POSIX shell.
fn export_line(access: &didx::inventory::HostAccess) -> String {
    let vars: Vec<String> = access
        .docker_env()
        .into_iter()
        .map(|(k, v)| if v == "1" { format!("{k}=1") } else { format!("{k}='{}'", v.replace('\'', r"'\''")) })
        .collect();
    format!("export {}", vars.join(" "))
}
