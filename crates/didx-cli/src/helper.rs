//! The run's helper process: it refills the warm pool after a claim without the run waiting,
//! and it removes what a run killed in the middle of a start leaves that no lease can hold.
//!
//! Before the async runtime exists (a single thread, so forking is safe), every run forks a
//! helper (each start is held until its environment is in place, a kept one too): it
//! leaves the terminal's session (so a signal to the run's process group does not reach it),
//! points stdin at /dev/null and stdout/stderr at `pool-refill.log` in didx's cache directory
//! (so `$(didx …)` is not held open), and reads lines from a pipe:
//!
//! - `env ID`: the run is starting (or claimed) environment ID and holds it.
//! - `kept`: the environments told of so far are in place and released (`--clean none` or
//!   `success`): they stay whatever ends the run, so the helper forgets them.
//! - `refill SIZE IDLE DOWNS`: a claim took a pooled environment; top the pool up (the
//!   library's [`didx::pool::refill`]), now, while the run goes on, unless a `pool down` ran
//!   since the claim (`DOWNS` is [`didx::pool::Refill::downs_seen`]): then it starts nothing.
//! - `done`: the run reached its end (removed or kept its environment as its policy says).
//!
//! End of input — the run's exit, however it exits — ends the helper once a refill is done.
//! End of input *without* `done` means the run died on the way: the helper removes every
//! environment it was told of. Those hold themselves anyway (their lease ends them within
//! seconds), but a container whose create request was in flight when the run died was never
//! started, and nothing inside it can end it: this is what removes it (looking again 1 s and
//! 3 s after, as such a request may land after the first look).

use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;

use didx::session::Event;
use didx::{Cancel, Engine, SandboxOptions};

use crate::output::say;

/// When the helper removes a dead run's environments: at once, then again after each pause
/// (what a create request in flight at the run's death makes appears a little later).
const LATE_PASSES: [std::time::Duration; 3] =
    [std::time::Duration::ZERO, std::time::Duration::from_secs(1), std::time::Duration::from_secs(2)];

/// The run's end of the pipe to its helper.
pub struct Helper(std::fs::File);

impl Helper {
    /// Fork the helper for runs on `host` with `options`. `None` (said once) when it cannot be
    /// forked: the run goes on, without a refill or that last removal.
    pub fn fork(host: Option<String>, options: SandboxOptions) -> Option<Helper> {
        let (read, write) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
            Ok(fds) => fds,
            Err(e) => {
                say(format!("warning: no helper process ({})", std::io::Error::from(e)));
                return None;
            }
        };
        // SAFETY: called before any other thread exists (no runtime yet): the child may run
        // anything a fresh single-threaded process may.
        match unsafe { libc::fork() } {
            -1 => {
                say(format!("warning: no helper process ({})", std::io::Error::last_os_error()));
                None
            }
            0 => {
                drop(write);
                std::process::exit(child(read, host, options))
            }
            _ => Some(Helper(std::fs::File::from(write))),
        }
    }

    fn say(&mut self, line: &str) {
        if let Err(e) = writeln!(self.0, "{line}") {
            say(format!("warning: the helper process is gone ({e}); no refill or last removal by it"));
        }
    }

    /// The run holds environment `id` (starting it, or having claimed it).
    pub fn guard(&mut self, id: &str) {
        self.say(&format!("env {id}"));
    }

    /// The environments told of are in place and kept: not to be removed if the run dies.
    pub fn kept(&mut self) {
        self.say("kept");
    }

    /// Top the pool up as `refill` says.
    pub fn refill(&mut self, refill: &didx::pool::Refill) {
        let idle = refill.idle_timeout().map(|d| d.as_secs()).unwrap_or(0);
        self.say(&format!("refill {} {idle} {}", refill.size(), refill.downs_seen()));
    }

    /// The run reached its end: nothing to remove on its behalf.
    pub fn done(&mut self) {
        self.say("done");
    }
}

enum Line {
    Env(String),
    Refill(usize, Option<std::time::Duration>, u64),
    Done,
    Kept,
}

fn parse(line: &str) -> Option<Line> {
    let mut w = line.split_whitespace();
    match (w.next()?, w.next(), w.next(), w.next(), w.next()) {
        ("env", Some(id), None, None, None) => Some(Line::Env(id.to_string())),
        ("refill", Some(size), Some(idle), Some(downs), None) => {
            let idle: u64 = idle.parse().ok()?;
            Some(Line::Refill(size.parse().ok()?, (idle > 0).then(|| std::time::Duration::from_secs(idle)), downs.parse().ok()?))
        }
        ("done", None, None, None, None) => Some(Line::Done),
        ("kept", None, None, None, None) => Some(Line::Kept),
        _ => None,
    }
}

/// The helper: detach, read lines, act. Returns its exit code.
fn child(read: OwnedFd, host: Option<String>, options: SandboxOptions) -> i32 {
    // Each best effort: a helper that cannot detach or redirect still does its work.
    use rustix::stdio::{dup2_stderr, dup2_stdin, dup2_stdout};
    rustix::process::setsid().ok();
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        dup2_stdin(&null).ok();
        dup2_stdout(&null).ok();
        dup2_stderr(&null).ok();
    }
    if let Ok(log) = didx::pool::open_refill_log() {
        dup2_stdout(&log).ok();
        dup2_stderr(&log).ok();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            say(format!("helper: cannot start the async runtime: {e}"));
            return 1;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(std::fs::File::from(read)).lines().map_while(Result::ok) {
            if let Some(l) = parse(&line)
                && tx.send(l).is_err()
            {
                break;
            }
        }
    });
    runtime.block_on(async move {
        let engine = || async { Engine::connect(host.as_deref()).await };
        let (mut envs, mut done, mut refills) = (Vec::new(), false, Vec::new());
        while let Some(line) = rx.recv().await {
            match line {
                Line::Env(id) => envs.push(id),
                Line::Done => done = true,
                Line::Kept => envs.clear(),
                Line::Refill(size, idle, downs) => {
                    let options = options.clone();
                    let engine = engine().await;
                    refills.push(tokio::spawn(async move {
                        let engine = engine?;
                        say(format!("refill: topping the pool up to {size} (pid {})", std::process::id()));
                        let on = |e: &Event<'_>| {
                            if let Event::Start(didx::session::StartEvent::Ready { elapsed }) = e {
                                say(format!("refill: a pooled environment is ready after {:.2} s", elapsed.as_secs_f64()));
                            }
                        };
                        let r = didx::pool::refill(&engine, &options, size, idle, downs, &Cancel::new(), &on).await?;
                        if r.downed {
                            say(format!("refill: pool {}: brought down after this refill was queued; nothing started", r.key));
                        } else {
                            say(format!("refill: pool {}: {} started, {} failed", r.key, r.started.len(), r.failed.len()));
                        }
                        Ok::<(), didx::Error>(())
                    }));
                }
            }
        }
        let mut code = 0;
        if !done && !envs.is_empty() {
            match engine().await {
                Ok(engine) => {
                    // Again after a pause, twice: a create request the run had in flight
                    // when it died lands in the engine only after the first pass.
                    for (pass, pause) in LATE_PASSES.iter().enumerate() {
                        tokio::time::sleep(*pause).await;
                        for id in &envs {
                            match didx::inventory::remove(&engine, id).await {
                                Ok(names) if pass > 0 && !names.is_empty() => {
                                    say(format!("helper: {} of environment {id} appeared after the run died; removed", names.join(", ")))
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    say(format!("helper: removing environment {id} of a run that died failed: {e}"));
                                    code = 1;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    say(format!("helper: error: {e}"));
                    code = 1;
                }
            }
        }
        for r in refills {
            match r.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    say(format!("refill: error: {e}"));
                    code = 1;
                }
                Err(e) => {
                    say(format!("refill: the task failed: {e}"));
                    code = 1;
                }
            }
        }
        code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_strictly() {
        assert!(matches!(parse("env abc123"), Some(Line::Env(id)) if id == "abc123"));
        assert!(matches!(parse("refill 3 1800 0"), Some(Line::Refill(3, Some(d), 0)) if d.as_secs() == 1800));
        assert!(matches!(parse("refill 2 0 7"), Some(Line::Refill(2, None, 7))));
        assert!(matches!(parse("done"), Some(Line::Done)));
        assert!(matches!(parse("kept"), Some(Line::Kept)));
        for bad in [
            "",
            "env",
            "env a b",
            "refill x 1 0",
            "refill 1",
            "refill 1 0",
            "refill 1 0 x",
            "refill 1 0 0 0",
            "done now",
            "kept x",
            "rm -rf /",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
