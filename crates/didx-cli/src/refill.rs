//! Refilling the warm pool after a `--pool` run claimed from it, without the run waiting.
//!
//! The refill itself is the library's ([`didx::pool::Refill`], [`didx::pool::up`]); what the
//! command adds is a process to run it in that outlives the run. Before the async runtime
//! exists (a single thread, so forking is safe), a `--pool` run forks a *refiller*: it leaves
//! the terminal's session, points stdin at /dev/null and stdout/stderr at
//! `pool-refill.log` in didx's cache directory (so `$(didx --pool …)` is not held open),
//! and waits on a pipe. When the run claimed a pooled environment it writes the pool's size
//! down the pipe and the refiller tops the pool up to it; otherwise — no claim, an error, a
//! signal, even SIGKILL of the run — the pipe just closes and the refiller exits.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use didx::session::Event;
use didx::{Cancel, Engine, SandboxOptions};

/// The run's end of the pipe to its refiller.
pub struct Refiller(std::fs::File);

impl Refiller {
    /// Fork the refiller for runs on `host` with `options`. `None` (said once) when it cannot be
    /// forked: the run goes on, the pool is not refilled.
    pub fn fork(host: Option<String>, options: SandboxOptions) -> Option<Refiller> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            crate::say(format!("warning: cannot refill the pool ({})", std::io::Error::last_os_error()));
            return None;
        }
        // SAFETY: both descriptors were just made and are owned here only.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: called before any other thread exists (no runtime yet): the child may run
        // anything a fresh single-threaded process may.
        match unsafe { libc::fork() } {
            -1 => {
                crate::say(format!("warning: cannot refill the pool ({})", std::io::Error::last_os_error()));
                None
            }
            0 => {
                drop(write);
                std::process::exit(child(read, host, options))
            }
            _ => Some(Refiller(std::fs::File::from(write))),
        }
    }

    /// Ask the refiller to top the pool up as `refill` says.
    pub fn send(mut self, refill: &didx::pool::Refill) {
        let idle = refill.idle_timeout().map(|d| d.as_secs()).unwrap_or(0);
        if let Err(e) = writeln!(self.0, "{} {idle}", refill.size()) {
            crate::say(format!("warning: cannot refill the pool ({e})"));
        }
    }
}

/// The refiller: detach, wait for a size, refill. Returns its exit code.
fn child(read: OwnedFd, host: Option<String>, options: SandboxOptions) -> i32 {
    // SAFETY: plain system calls on descriptors this process owns.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
        if let Ok(log) = didx::pool::open_refill_log() {
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
    let mut request = String::new();
    if std::fs::File::from(read).read_to_string(&mut request).is_err() {
        return 0;
    }
    let mut words = request.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(size)), Some(Ok(idle))) = (words.next(), words.next()) else { return 0 };
    let size = size as usize;
    let idle = (idle > 0).then(|| std::time::Duration::from_secs(idle));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            crate::say(format!("refill: cannot start the async runtime: {e}"));
            return 1;
        }
    };
    runtime.block_on(async {
        let engine = match Engine::connect(host.as_deref()).await {
            Ok(e) => e,
            Err(e) => {
                crate::say(format!("refill: error: {e}"));
                return 1;
            }
        };
        crate::say(format!("refill: topping the pool up to {size} (pid {})", std::process::id()));
        let on = |e: &Event<'_>| {
            if let Event::Start(didx::session::StartEvent::Ready { elapsed }) = e {
                crate::say(format!("refill: a pooled environment is ready after {:.2} s", elapsed.as_secs_f64()));
            }
        };
        match didx::pool::up(&engine, &options, size, idle, &Cancel::new(), &on).await {
            Ok(r) => {
                crate::say(format!("refill: pool {}: {} started, {} failed", r.key, r.started.len(), r.failed.len()));
                0
            }
            Err(e) => {
                crate::say(format!("refill: error: {e}"));
                1
            }
        }
    })
}
