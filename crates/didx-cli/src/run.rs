//! A run (`didx [OPTIONS] COMMAND…`): the library's session, with the command's printing and
//! signals. The first SIGINT/SIGTERM/SIGHUP cancels the session's token (it winds down and
//! cleans up by policy); one that arrives during a removal, or a second one, cuts the clean-up
//! short and says what is left and the command that removes it.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use didx::session::{Event, Outcome, Phase, Removal, Session, StartEvent};
use didx::spec::{CleanPolicy, EnvVarName, Step};
use didx::{Cancel, Error, SandboxOptions};

use crate::cli::RunArgs;
use crate::engine::connect;
use crate::events::{say_images, say_start_event, say_store_event};
use crate::exit::{EXIT_DIDX, advice};
use crate::helper::Helper;
use crate::options::run_builder;
use crate::output::{self, Timings, say, utc_date};
use crate::signals::{Sig, Signals, Source};
use crate::stream::streams;

/// A run: the library's session, with the command's printing and signals.
pub struct RunJob {
    pub host: Option<String>,
    pub options: SandboxOptions,
    session: Session,
    clean: CleanPolicy,
    pub pooled: bool,
    timings: Timings,
    /// In a matrix: the prefix of every line, and whether command stdout goes to stderr
    /// (`--json`, so stdout holds only the summary).
    matrix: Option<(String, bool)>,
    /// In a matrix, the signals it forwards (else the run installs its own handlers).
    fed: Option<tokio::sync::broadcast::Receiver<Sig>>,
}

/// How a run ended, for a matrix's summary.
pub struct Ended {
    /// The exit code, or the error that stopped the run (the caller says it).
    pub code: anyhow::Result<u8>,
    /// True when a command failed (as opposed to didx, or a signal).
    pub command_failed: bool,
    /// The environment's id, once one was started or claimed.
    pub env: Option<String>,
}

/// What the session is doing, as far as a second signal needs to know: the environment being
/// started (a fresh start's names), or the one being removed.
#[derive(Default)]
struct Where {
    env: Option<(String, [String; 2])>,
    pooled: bool,
    removing: bool,
    started: bool,
    /// A kept environment (`--clean none`, `success`) in place and released: it stays when
    /// didx ends. Until then every start is held, and ends itself if didx does.
    released: bool,
}

impl RunJob {
    pub fn of(host: Option<String>, a: RunArgs, clean: CleanPolicy) -> anyhow::Result<RunJob> {
        let options = run_builder(&a)?.options()?;
        let steps: Vec<Step> = a.commands.iter().map(|c| Step::parse(c)).collect::<Result<_, _>>()?;
        let cwd = std::env::current_dir()?;
        let outs: Vec<didx::spec::CpOutSpec> = a.cp_out.iter().map(|s| didx::spec::CpOutSpec::parse(s, &cwd)).collect::<Result<_, _>>()?;
        let session = Session::new(options.clone())
            .steps(steps)
            .clean(clean)
            .client_name_var(EnvVarName::parse(&a.cv_env)?)
            .pooled(a.pool)
            .copy_out(outs)
            .save(a.save.iter().cloned());
        let session = match a.teardown {
            Some(t) => session.teardown(t.into()),
            None => session,
        };
        Ok(RunJob { host, options, session, clean, pooled: a.pool, timings: Timings(a.timings), matrix: None, fed: None })
    }

    /// Take signals from a matrix's forwarding instead of installing handlers.
    pub fn fed_by(mut self, signals: tokio::sync::broadcast::Receiver<Sig>) -> RunJob {
        self.fed = Some(signals);
        self
    }

    /// Make this run one version of a matrix: lines prefixed `prefix`; command stdout to
    /// stderr when `stdout_to_stderr`.
    pub fn in_matrix(mut self, prefix: String, stdout_to_stderr: bool) -> RunJob {
        self.matrix = Some((prefix, stdout_to_stderr));
        self
    }

    /// Whether the run holds its environment (its policy removes it if the run is killed).
    pub fn leased(&self) -> bool {
        self.clean.holds()
    }

    pub async fn go(self, helper: Option<Helper>) -> anyhow::Result<u8> {
        self.end(helper).await.code
    }

    /// Run to the end, saying what happens; how it ended.
    pub async fn end(self, helper: Option<Helper>) -> Ended {
        let at = Mutex::new(Where::default());
        let mut command_failed = false;
        let code = self.run(helper, &at, &mut command_failed).await;
        let env = at.lock().ok().and_then(|w| w.env.as_ref().map(|(id, _)| id.clone()));
        Ended { code, command_failed, env }
    }

    async fn run(mut self, helper: Option<Helper>, at: &Mutex<Where>, command_failed: &mut bool) -> anyhow::Result<u8> {
        let helper = Mutex::new(helper);
        let with_helper = |f: &dyn Fn(&mut Helper)| {
            if let Ok(mut h) = helper.lock()
                && let Some(h) = h.as_mut()
            {
                f(h)
            }
        };
        let timings = self.timings;
        let engine = connect(self.host.as_deref()).await?;
        timings.mark("connected");
        let mut signals = match self.fed.take() {
            Some(fed) => Source::Fed(fed),
            None => Source::Own(Signals::install()?),
        };
        let cancel = Cancel::new();
        let first: Mutex<Option<Sig>> = Mutex::new(None);
        let sig_name = || first.lock().ok().and_then(|s| *s).unwrap_or(Sig::Int).name();
        let clean = self.clean.as_str();
        // A matrix's lines each carry a prefix: no progress line redrawn in place.
        let tty = std::io::stderr().is_terminal() && self.matrix.is_none();
        let last_line = Mutex::new(std::time::Instant::now());
        let pooled = self.pooled;
        let leased = self.leased();
        let on_prose = |e: &Event<'_>| match e {
            Event::Images { resolved } => say_images(resolved),
            Event::Resolved => timings.mark("resolved"),
            Event::Starting { id, names, pooled } => {
                // Kept or not, a fresh start is held until it is in place (`Placed`).
                with_helper(&|h| h.guard(id));
                if let Ok(mut w) = at.lock() {
                    *w = Where { env: Some((id.to_string(), (*names).clone())), pooled: *pooled, ..Where::default() };
                }
            }
            // The refill starts now, while the run goes on (the helper waits for the pool lock,
            // so it never overshoots). A kept claim is not guarded: it is the run's to keep.
            Event::Claimed { id, refill } => with_helper(&|h| {
                if leased {
                    h.guard(id);
                }
                h.refill(refill);
            }),
            Event::PoolEmpty => say(
                "no pooled environment for these options is left; starting a fresh one (didx pool up N, with the same options, keeps some ready)",
            ),
            Event::Start(s) => {
                say_start_event(s);
                match s {
                    StartEvent::ServerStarted { name, image, isolation } => {
                        timings.mark("server-started");
                        say(format!("dind server named: '{name}' successfully started ({image}, {isolation} isolation)"))
                    }
                    StartEvent::ClientStarted { name, image } => {
                        timings.mark(if pooled { "claimed" } else { "client-started" });
                        say(format!("dind client named: '{name}' successfully started ({image})"))
                    }
                    StartEvent::Ready { elapsed } => {
                        timings.mark("ready");
                        say(format!("inner engine answered over TLS after {:.2} s", elapsed.as_secs_f64()))
                    }
                    // Released to be kept: nothing for the helper to remove if the run dies.
                    StartEvent::Placed { held: false } => {
                        if let Ok(mut w) = at.lock() {
                            w.released = true;
                        }
                        with_helper(&|h| h.kept())
                    }
                    _ => {}
                }
            }
            Event::Published { ports } => {
                for p in ports.iter() {
                    say(format!("published {} -> {}/{}", p.host_addr(), p.env_port, p.proto.as_str()));
                }
            }
            Event::CopyWarning { warning } => say(warning),
            Event::Copied { sources } => say(format!("copied {sources} source(s) into the client")),
            Event::CopiedOut { from, to } => say(format!("copied {from} out of the client to {}", to.display())),
            Event::Saved { images } => say(format!("saved {} into the host engine", images.join(", "))),
            Event::Store(s) => {
                if matches!(s, didx::store::StoreEvent::Using { .. } | didx::store::StoreEvent::NotUsed { .. }) {
                    timings.mark("stored");
                }
                say_store_event(s)
            }
            Event::Load(l) => match l {
                didx::session::LoadEvent::Skipped(name) => say(format!("{name} already in the inner engine (same ID); not loaded")),
                didx::session::LoadEvent::Progress { sent, total, elapsed } => {
                    let rate = *sent as f64 / 1e6 / elapsed.as_secs_f64().max(1e-3);
                    let line = format!("seeding {:.1}/{:.1} MB, {rate:.0} MB/s", *sent as f64 / 1e6, *total as f64 / 1e6);
                    if tty {
                        output::err(&format!("\rdidx: {line}   "));
                    } else if let Ok(mut last) = last_line.lock()
                        && last.elapsed() >= Duration::from_secs(5)
                    {
                        *last = std::time::Instant::now();
                        say(line);
                    }
                }
                _ => {}
            },
            Event::Loaded { report: r } => {
                if tty {
                    output::err("\n");
                }
                if !r.loaded.is_empty() {
                    say(format!(
                        "loaded {} into the inner engine: {:.1} MB in {:.2} s ({:.0} MB/s)",
                        r.loaded.join(", "),
                        r.bytes as f64 / 1e6,
                        r.elapsed.as_secs_f64(),
                        r.bytes as f64 / 1e6 / r.elapsed.as_secs_f64().max(1e-3)
                    ));
                }
            }
            Event::Step(s) => say_step(s),
            Event::Interrupted { phase: Phase::Preparing } => {
                say(format!("interrupted by {} while copying; cleaning up as a failure (--clean {clean})", sig_name()))
            }
            Event::Interrupted { phase: Phase::Commands } => {
                say(format!("interrupted by {}; cleaning up as a failure (--clean {clean})", sig_name()))
            }
            Event::Failed { error } if error.is_engine_gone() => {
                say(format!("error: the Docker engine at {} went away (stopped or restarted): {error}", engine.host()))
            }
            Event::Failed { error } => say(format!("error: {error}{}", advice(error))),
            Event::CommandsDone => {
                timings.mark("commands-done");
                if let Ok(mut w) = at.lock() {
                    w.started = true;
                }
            }
            Event::Removing { id, names } => {
                if let Ok(mut w) = at.lock() {
                    let released = w.released;
                    *w = Where {
                        env: Some((id.to_string(), (*names).clone())),
                        removing: true,
                        started: true,
                        released,
                        ..Where::default()
                    };
                }
            }
            Event::Removed { names: [server, client] } => {
                timings.mark("removed");
                if !server.is_empty() {
                    say(format!("dind server named: '{server}' terminated & destroyed"));
                }
                say(format!("dind client named: '{client}' terminated & destroyed"));
            }
            Event::Ending { names: [server, client], .. } => {
                timings.mark("ending");
                if !server.is_empty() {
                    say(format!("dind server named: '{server}' ends with its lease (the engine removes it within 2 s)"));
                }
                say(format!("dind client named: '{client}' ends with its lease (the engine removes it within 2 s)"));
            }
            Event::Kept { id, names: [server, client], expires } => {
                let expires = expires.map(|t| format!("; its TLS certificates expire on {} UTC", utc_date(t))).unwrap_or_default();
                if !server.is_empty() {
                    say(format!("dind server named: '{server}' remains running{expires}"));
                }
                say(format!(
                    "dind client named: '{client}' remains running (attach: docker exec -it {client} sh; env {id}; remove all: didx --clean all)"
                ));
            }
            _ => {}
        };
        let (mut stdout, mut stderr) = streams(self.matrix.as_ref());
        let result = {
            let on = |e: &Event<'_>| {
                crate::event_json::emit(e);
                on_prose(e)
            };
            let run = self.session.run(&engine, &cancel, &on, &mut stdout, &mut stderr);
            tokio::pin!(run);
            // The first signal cancels (the session winds down and cleans up by policy); one during
            // a removal, or a second one, cuts the clean-up short and says what is left.
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    sig = signals.recv() => {
                        let again = first.lock().ok().is_some_and(|f| f.is_some());
                        if let Ok(mut f) = first.lock() {
                            f.get_or_insert(sig);
                        }
                        cancel.cancel();
                        let w = at.lock().map(|w| (w.env.clone(), w.pooled, w.removing, w.started, w.released)).unwrap_or_default();
                        // Held by this run: its policy removes it, or it is a kept one not yet
                        // in place (every start is held until then).
                        let held = |released: bool| leased || !released;
                        match w {
                            (Some((id, names)), _, true, _, released) => {
                                left_behind(engine.host(), sig, &id, &names);
                                if held(released) {
                                    ends_itself();
                                }
                                return Ok(sig.code());
                            }
                            (Some((id, names)), pooled, false, started, released) if again => {
                                if pooled && !started {
                                    say(format!("roll-back cut short by {}; what is left shows in: didx --clean rpt", sig.name()));
                                } else {
                                    left_behind(engine.host(), sig, &id, &names);
                                    if held(released) {
                                        ends_itself();
                                    }
                                }
                                return Ok(sig.code());
                            }
                            _ => {}
                        }
                    }
                }
            }
        };
        stdout.finish();
        stderr.finish();
        // The session reached its end (whatever it did): nothing for the helper to remove.
        with_helper(&|h| h.done());
        let first = first.lock().ok().and_then(|f| *f);
        let report = match result {
            Ok(r) => r,
            Err(Error::Cancelled) => {
                let sig = first.unwrap_or(Sig::Int);
                say(format!("interrupted by {} while starting; removed what was created", sig.name()));
                return Ok(sig.code());
            }
            Err(e) => return Err(e.into()),
        };
        let code = match (&report.outcome, first) {
            (_, Some(sig)) => sig.code(),
            (Outcome::Succeeded, None) => 0,
            (Outcome::CommandFailed { code, .. }, None) if (1..=255).contains(code) => {
                *command_failed = true;
                *code as u8
            }
            _ => EXIT_DIDX,
        };
        if let Removal::Failed(e) = &report.removal
            && !(e.is_engine_gone() && matches!(&report.outcome, Outcome::Failed(f) if f.is_engine_gone()))
        {
            say(format!(
                "error: clean-up of environment {} failed: {e} (the exit code stays the commands'; remove what is left with: {})",
                report.env,
                removal_command(engine.host(), &report.env, &report.names)
            ));
        }
        Ok(code)
    }
}

pub fn say_step(e: &didx::session::StepEvent<'_>) {
    use didx::session::StepEvent;
    match e {
        StepEvent::Started { index, total, display } => say(format!("[{index}/{total}] {display}")),
        StepEvent::Ended { index, total, code: 0, elapsed } => {
            say(format!("[{index}/{total}] succeeded in {:.2} s", elapsed.as_secs_f64()))
        }
        StepEvent::Ended { index, total, code, elapsed } => say(format!(
            "[{index}/{total}] failed with exit code {code} after {:.2} s{}",
            elapsed.as_secs_f64(),
            if index < total { format!("; skipping the remaining {}", total - index) } else { String::new() }
        )),
        _ => {}
    }
}

/// The docker CLI command that removes environment `id` (containers `names`, then every
/// volume with its label), for the engine at `host`.
pub fn removal_command(host: &str, id: &str, names: &[String]) -> String {
    let docker = if host == didx::inventory::DEFAULT_HOST {
        "docker".to_string()
    } else {
        let mut d = String::from("docker");
        for (k, v) in didx::inventory::cli_env_for(host) {
            match k.as_str() {
                "DOCKER_HOST" => d.push_str(&format!(" -H {}", shell_words::quote(&v))),
                "DOCKER_TLS_VERIFY" => d.push_str(" --tlsverify"),
                _ => {}
            }
        }
        d
    };
    let label = format!("label={}={id}", didx::inventory::ENV_LABEL);
    format!("{docker} rm -fv {}; {docker} volume ls -q --filter {label} | xargs -r {docker} volume rm", names.join(" "))
}

/// Said when a signal cuts a clean-up short: what is left and how to remove it.
fn left_behind(host: &str, sig: Sig, id: &str, names: &[String]) {
    say(format!(
        "clean-up cut short by {}; left on the engine: {} and the volumes labelled {}={id}",
        sig.name(),
        names.join(", "),
        didx::inventory::ENV_LABEL
    ));
    say(format!("remove them with: {}", removal_command(host, id, names)));
}

/// After [`left_behind`], for an environment this run held (its policy would remove it): the
/// lease ends with didx, so it removes itself.
fn ends_itself() {
    say("it was held by this run: it ends itself and the engine removes it within seconds of didx exiting (its lease)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_command_names_containers_and_the_volume_label() {
        let c = removal_command(didx::inventory::DEFAULT_HOST, "abc", &["s".into(), "c".into()]);
        assert!(c.starts_with("docker rm -fv s c;"), "{c}");
        assert!(c.contains("label=io.didx.env=abc"), "{c}");
        let c = removal_command("tcp://h:2376", "abc", &["s".into()]);
        assert!(c.contains("docker -H tcp://h:2376"), "{c}");
    }
}
