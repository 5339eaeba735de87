//! A version matrix: `--sv A,B,…` (and `--cv`, paired or one for all) runs the same run — its
//! `-v`, `--cp`, `--load` and COMMANDs — in one environment per version, concurrently (at most
//! `--jobs N` at once). Every line of each version's output and status is prefixed `[VER] `;
//! a summary (version, result, exit code, duration) ends the run on stderr, or as JSON on
//! stdout with `--json` (command output then goes to stderr). The exit code is the first
//! failing version's, in list order, else 0. A single `--sv` value is a plain run.

use std::time::{Duration, Instant};

use didx::Error;
use didx::spec::{CleanPolicy, EngineMode, Version};

use crate::cli::{ClientEngine, RunArgs};
use crate::exit::report;
use crate::helper::Helper;
use crate::output::{self, PREFIX, say};
use crate::run::RunJob;
use crate::signals::{Sig, Signals};

/// `--jobs N`, validated (N ≥ 1); `None` when not given.
pub fn jobs(a: &RunArgs) -> Result<Option<usize>, Error> {
    match &a.jobs {
        None => Ok(None),
        Some(j) => match j.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(Error::Invalid { what: "--jobs value", value: j.clone(), fix: "expected a whole number of at least 1".into() }),
        },
    }
}

/// One version of the matrix.
struct Member {
    sv: String,
    cv: String,
    job: RunJob,
}

/// A validated matrix: every version checked before anything starts.
pub struct Matrix {
    /// The versions, in list order.
    members: Vec<Member>,
    jobs: usize,
    json: bool,
    /// Forwards each signal to every run.
    signals: tokio::sync::broadcast::Sender<Sig>,
}

fn usage(what: &'static str, value: impl Into<String>, fix: impl Into<String>) -> anyhow::Error {
    Error::Invalid { what, value: value.into(), fix: fix.into() }.into()
}

/// The versions of a comma-separated list for option `what`, each checked.
fn versions(what: &'static str, list: &str) -> anyhow::Result<Vec<String>> {
    let items: Vec<String> = list.split(',').map(str::to_string).collect();
    for (i, v) in items.iter().enumerate() {
        Version::parse(what, v)?;
        if items[..i].contains(v) {
            return Err(usage(what, list.to_string(), format!("{v} is listed twice; list each version once")));
        }
    }
    Ok(items)
}

impl Matrix {
    /// Validate the matrix `a` describes; a bad version, a `--cv` list of another length,
    /// `--pool` or `--cp -` is a usage error before anything starts.
    pub fn of(host: Option<String>, a: RunArgs, clean: CleanPolicy) -> anyhow::Result<Matrix> {
        let svs = versions("--sv value", &a.env.sv)?;
        let cvs = match &a.env.cv {
            None => svs.clone(),
            Some(cv) if !cv.contains(',') => {
                Version::parse("--cv value", cv)?;
                vec![cv.clone(); svs.len()]
            }
            Some(cv) => {
                let cvs: Vec<String> = cv.split(',').map(str::to_string).collect();
                for c in &cvs {
                    Version::parse("--cv value", c)?;
                }
                if cvs.len() != svs.len() {
                    return Err(usage(
                        "--cv value",
                        cv.clone(),
                        format!(
                            "it lists {} versions for {} server versions; pair them one to one, or give one for all",
                            cvs.len(),
                            svs.len()
                        ),
                    ));
                }
                cvs
            }
        };
        if a.pool {
            return Err(usage("option", "--pool", "a matrix starts its own environments; drop --pool or give one --sv value"));
        }
        if a.engine != ClientEngine::Dind {
            return Err(usage(
                "option",
                format!("--engine {}", EngineMode::from(a.engine).as_str()),
                "a matrix runs one inner engine per version; drop --engine or give one --sv value",
            ));
        }
        if let Some(cp) = a.cp.iter().find(|c| c.starts_with("-:")) {
            return Err(usage(
                "--cp spec",
                cp.clone(),
                "stdin feeds one environment, and a matrix has several; copy from a host path, a container or an image instead",
            ));
        }
        // A host port can be bound once: every environment of a matrix takes a free one.
        for p in &a.env.publish {
            if didx::spec::PublishSpec::parse(p).is_ok_and(|s| s.host_port != 0) {
                return Err(usage(
                    "--publish spec",
                    p.clone(),
                    "a host port serves one environment, and a matrix has several; omit HOSTPORT (or give 0) and each takes a free port, reported",
                ));
            }
        }
        let jobs = jobs(&a)?.unwrap_or(svs.len());
        let mut members = Vec::new();
        for (sv, cv) in svs.into_iter().zip(cvs) {
            let mut args = a.clone();
            args.env.sv = sv.clone();
            args.env.cv = Some(cv.clone());
            let job = RunJob::of(host.clone(), args, clean)?.in_matrix(format!("[{sv}] "), a.json);
            members.push(Member { sv, cv, job });
        }
        let (signals, _) = tokio::sync::broadcast::channel(4);
        let members = members.into_iter().map(|m| Member { job: m.job.fed_by(signals.subscribe()), ..m }).collect();
        Ok(Matrix { members, jobs, json: a.json, signals })
    }

    /// One helper per version (see [`Helper`]), in list order; forked now, while the process
    /// has one thread. A run that keeps its environment needs one too: its start is held until
    /// the environment is in place.
    pub fn fork_helpers(&self) -> Vec<Option<Helper>> {
        self.members.iter().map(|m| &m.job).map(|r| Helper::fork(r.host.clone(), r.options.clone())).collect()
    }

    /// Run every version, at most `jobs` at once, then print the summary; the exit code.
    /// `helpers` pairs with `members` (each version's run holds its own environment).
    pub async fn go(self, helpers: Vec<Option<Helper>>) -> anyhow::Result<u8> {
        let Matrix { members, jobs, json, signals: forward } = self;
        let mut signals = Signals::install()?;
        // Versions not started yet when a signal came are not started at all.
        let stop: std::sync::Mutex<Option<Sig>> = std::sync::Mutex::new(None);
        let slots = tokio::sync::Semaphore::new(jobs);
        let runs = members.into_iter().zip(helpers).map(|(m, helper)| {
            let (slots, stop) = (&slots, &stop);
            async move {
                let _slot = slots.acquire().await;
                let t0 = Instant::now();
                let prefix = format!("[{}] ", m.sv);
                if let Some(sig) = stop.lock().ok().and_then(|s| *s) {
                    PREFIX.scope(prefix, async { say(format!("not started: the matrix was interrupted by {}", sig.name())) }).await;
                    return Row { sv: m.sv, cv: m.cv, result: "error", code: sig.code(), elapsed: Duration::ZERO, env: None };
                }
                let (code, result, env) = PREFIX
                    .scope(prefix, async {
                        let ended = m.job.end(helper).await;
                        let failed = ended.command_failed;
                        let code = report(ended.code);
                        (
                            code,
                            if code == 0 {
                                "ok"
                            } else if failed {
                                "failed"
                            } else {
                                "error"
                            },
                            ended.env,
                        )
                    })
                    .await;
                Row { sv: m.sv, cv: m.cv, result, code, elapsed: t0.elapsed(), env }
            }
        });
        let all = futures_util::future::join_all(runs);
        tokio::pin!(all);
        // Every signal goes to every run (the first cancels it, a second cuts its clean-up
        // short, as in a single run); versions not started yet are not started.
        let rows = loop {
            tokio::select! {
                rows = &mut all => break rows,
                sig = signals.recv() => {
                    if let Ok(mut s) = stop.lock() {
                        s.get_or_insert(sig);
                    }
                    // An error means no run is listening any more: nobody to tell.
                    forward.send(sig).ok();
                }
            }
        };
        summary(&rows, json);
        Ok(rows.iter().find(|r| r.code != 0).map_or(0, |r| r.code))
    }
}

/// One version's line of the summary.
struct Row {
    sv: String,
    cv: String,
    result: &'static str,
    code: u8,
    elapsed: Duration,
    env: Option<String>,
}

/// The summary: a table on stderr, or a JSON array on stdout.
fn summary(rows: &[Row], json: bool) {
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "server_version": r.sv,
                    "client_version": r.cv,
                    "result": r.result,
                    "exit_code": r.code,
                    "duration_ms": r.elapsed.as_millis() as u64,
                    "env_id": r.env,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
        output::out(&format!("{text}\n"));
        return;
    }
    let failed = rows.iter().filter(|r| r.code != 0).count();
    say(format!("matrix: {} version(s), {} ok, {failed} not", rows.len(), rows.len() - failed));
    let w = rows.iter().map(|r| r.sv.len()).chain([7]).max().unwrap_or(7);
    let wc = rows.iter().map(|r| r.cv.len()).chain([6]).max().unwrap_or(6);
    let mut table = format!("{:<w$}  {:<wc$}  {:<6}  {:>4}  {:>9}  ENV\n", "VERSION", "CLIENT", "RESULT", "EXIT", "DURATION");
    for r in rows {
        table.push_str(&format!(
            "{:<w$}  {:<wc$}  {:<6}  {:>4}  {:>7.2} s  {}\n",
            r.sv,
            r.cv,
            r.result,
            r.code,
            r.elapsed.as_secs_f64(),
            r.env.as_deref().unwrap_or("-")
        ));
    }
    output::err(&table);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lists_are_checked_whole() {
        assert_eq!(versions("--sv value", "20.10.24,26.1.5").unwrap(), ["20.10.24", "26.1.5"]);
        assert!(versions("--sv value", "20.10.24,").is_err(), "an empty item");
        assert!(versions("--sv value", "a,b_c").is_err(), "a bad item");
        assert!(versions("--sv value", "a,a").is_err(), "twice");
    }
}
