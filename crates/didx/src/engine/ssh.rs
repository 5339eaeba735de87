//! Engines reached over SSH (`ssh://[user@]host[:port]`), the way the docker CLI reaches them:
//! each engine connection is a `docker system dial-stdio` run on the remote machine, its stdin
//! and stdout the connection. didx opens one master connection per [`super::Engine`] with the
//! system `ssh` (the user's own configuration, keys, agent and known hosts apply; host keys are
//! checked as ssh checks them) and multiplexes every connection over it, so a connection costs
//! a session, not a handshake.
//!
//! The master ends with the engine handle, and with this process however it ends (a small
//! shell holding it ends it when its pipe from this process closes, see [`HOLD`]): its
//! sessions close with it, and the remote engine sees every connection close, the leases' too.
//!
//! `DIDX_SSH` names the ssh program and any options to put first (split as a shell would,
//! e.g. `ssh -F /path/config`); the default is `ssh` on the `PATH`.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The ssh program and leading options, split as a shell would.
pub const SSH_ENV: &str = "DIDX_SSH";

/// What an `ssh://` address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshAddr {
    /// `user@`, when given (else ssh's configuration or the local user's name).
    pub user: Option<String>,
    /// The host name, alias or address (an IPv6 address without its brackets).
    pub host: String,
    /// `:port`, when given.
    pub port: Option<u16>,
}

impl SshAddr {
    /// Reads `ssh://[user@]host[:port]` (a trailing `/` allowed, as docker allows it). On a
    /// bad address: what is wrong with it.
    pub(crate) fn parse(addr: &str) -> Result<SshAddr, String> {
        let rest = addr.strip_prefix("ssh://").ok_or("an ssh address starts with ssh://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("expected ssh://[user@]host[:port], without a path".into());
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        if let Some(u) = user {
            if u.is_empty() || u.contains(':') {
                return Err("the user part must be a user name (no password: ssh asks, or uses keys)".into());
            }
            if !u.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) || u.starts_with('-') {
                return Err(format!("'{u}' is not a user name ssh would take"));
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or("expected :PORT after the IPv6 address")?)),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("'{p}' is not a port (1-65535)"))?),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        if host.starts_with('-') || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:%".contains(c)) {
            return Err(format!("'{host}' is not a host name or address"));
        }
        Ok(SshAddr { user: user.map(str::to_string), host: host.to_string(), port })
    }

    /// ssh's arguments naming the destination: `-p`, `-l`, then `--` and the host.
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(p) = self.port {
            a.extend(["-p".to_string(), p.to_string()]);
        }
        if let Some(u) = &self.user {
            a.extend(["-l".to_string(), u.clone()]);
        }
        a.extend(["--".to_string(), self.host.clone()]);
        a
    }
}

/// The ssh program and its leading options: `DIDX_SSH`, else `ssh`.
fn ssh_program() -> io::Result<Vec<String>> {
    let words = match std::env::var(SSH_ENV) {
        Ok(v) if !v.trim().is_empty() => shell_words::split(&v)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{SSH_ENV} cannot be split into words: {e}")))?,
        _ => vec!["ssh".to_string()],
    };
    Ok(words)
}

/// The last line of what ssh said on stderr, or how it exited.
fn last_line(stderr: &str, fallback: impl FnOnce() -> String) -> String {
    stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_string).unwrap_or_else(fallback)
}

/// One master connection, and what each session over it needs.
pub(crate) struct Master {
    ssh: Vec<String>,
    addr: SshAddr,
    ctl: PathBuf,
    /// The shell holding the master (see [`HOLD`]); killed when dropped.
    _shell: Child,
    /// Its stdin: the master ends when this closes (dropped with the last handle, or this
    /// process gone).
    _hold: Option<ChildStdin>,
    /// What the last session's ssh said on stderr (its last line), for errors.
    said: Arc<Mutex<String>>,
    /// Holds the control socket's directory (removed on drop).
    _dir: tempfile::TempDir,
}

/// The shell that holds the master: ssh (its arguments) runs in the background; a watcher
/// kills it when the shell's stdin ends; the shell exits with ssh's status when ssh ends by
/// itself. (An asynchronous list's stdin is /dev/null in sh, so the watcher reads a copy.)
const HOLD: &str = r#"exec 3<&0; "$@" </dev/null & m=$!; (read -r _ <&3; kill "$m" 2>/dev/null) </dev/null & w=$!; exec 3<&-; wait "$m"; s=$?; kill "$w" 2>/dev/null; exit "$s""#;

impl Master {
    /// Opens the master connection to `addr` within `within`; fails with what ssh said.
    pub(crate) async fn open(addr: &SshAddr, within: Duration) -> io::Result<Arc<Master>> {
        let ssh = ssh_program()?;
        let dir = tempfile::Builder::new().prefix("didx-ssh-").tempdir()?;
        let ctl = dir.path().join("m");
        // ssh runs under a small shell that ends it when its stdin (a pipe from this process)
        // reaches its end: when the handle drops, or this process dies however it dies. ssh
        // itself reads no stdin with -N; the shell's exit status is ssh's.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(HOLD)
            .arg("didx-ssh")
            .args(&ssh)
            .args(["-o", "ControlMaster=yes", "-o"])
            .arg(format!("ControlPath={}", ctl.display()))
            // No prompts (there is no terminal to answer them on), and a link that stops
            // answering ends the master within 15 s.
            .args(["-o", "ControlPersist=no", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-N"])
            .args(addr.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", ssh[0])))?;
        let hold = child.stdin.take();
        let deadline = Instant::now() + within;
        loop {
            if ctl.exists() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err).await;
                }
                let said = last_line(&err, || format!("exited with {status}"));
                return Err(io::Error::other(if said.starts_with("ssh:") { said } else { format!("ssh: {said}") }));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("ssh: no connection within {} s", within.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ssh says nothing more unless something goes wrong; keep its pipe drained.
        if let Some(mut e) = child.stderr.take() {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = e.read_to_end(&mut sink).await;
            });
        }
        Ok(Arc::new(Master { ssh, addr: addr.clone(), ctl, _shell: child, _hold: hold, said: Arc::default(), _dir: dir }))
    }

    /// What ssh last said on a session's stderr, if anything.
    pub(crate) fn said(&self) -> String {
        self.said.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// An ssh over the master (never a master itself): `options` before the destination,
    /// `command` after it; stdin and stdout piped, killed when dropped.
    fn session(&self, options: &[String], command: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ssh[0]);
        cmd.args(&self.ssh[1..])
            .args(["-o", "ControlMaster=no", "-o"])
            .arg(format!("ControlPath={}", self.ctl.display()))
            .args(["-o", "BatchMode=yes"])
            .args(options)
            .args(self.addr.args())
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// A session running `docker system dial-stdio` on the remote machine: one engine
    /// connection.
    pub(super) fn dial(&self) -> io::Result<SshStream> {
        let mut child = self.session(&[], &["docker", "system", "dial-stdio"]).stderr(Stdio::piped()).spawn()?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => return Err(io::Error::other("ssh session without its pipes")),
        };
        if let Some(mut e) = child.stderr.take() {
            let said = Arc::clone(&self.said);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = e.read_to_end(&mut buf).await;
                let text = String::from_utf8_lossy(&buf);
                let line = last_line(&text, String::new);
                if !line.is_empty()
                    && let Ok(mut s) = said.lock()
                {
                    *s = line;
                }
            });
        }
        Ok(SshStream { _child: child, stdin: Some(TokioIo::new(stdin)), stdout: TokioIo::new(stdout) })
    }

    /// A session carrying its stdin and stdout to `127.0.0.1:port` as the remote machine sees
    /// it (`ssh -W`): one forwarded connection.
    fn tunnel(&self, port: u16) -> io::Result<Child> {
        self.session(&["-W".to_string(), format!("127.0.0.1:{port}")], &[]).stderr(Stdio::null()).spawn()
    }
}

/// A listener on this machine's loopback whose every connection is carried over the master
/// to a port on the remote machine's loopback (where the engine publishes ports). Ends (its
/// listener closed, its connections cut) when dropped.
#[derive(Debug)]
pub struct Forward {
    local: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Forward {
    /// Listens on `127.0.0.1` (a port the system picks) and carries each connection to the
    /// remote machine's `127.0.0.1:remote_port`.
    pub(crate) async fn open(master: Arc<Master>, remote_port: u16) -> io::Result<Forward> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            while let Ok((mut sock, _)) = listener.accept().await {
                let master = Arc::clone(&master);
                open.spawn(async move {
                    let Ok(mut child) = master.tunnel(remote_port) else { return };
                    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else { return };
                    let mut remote = tokio::io::join(stdout, stdin);
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut remote).await;
                });
                // Reap the finished ones as it goes.
                while open.try_join_next().is_some() {}
            }
        });
        Ok(Forward { local, task })
    }

    /// A forward served by `task` (which owns its listener, bound at `local`), as another
    /// backend carries it (a cluster's port-forward).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn serving(local: std::net::SocketAddr, task: tokio::task::JoinHandle<()>) -> Forward {
        Forward { local, task }
    }

    /// The local address: `127.0.0.1:PORT`.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // Aborting the task drops the listener and every connection's session (its ssh is
        // killed on drop).
        self.task.abort();
    }
}

/// The body type of bollard's requests (its `BollardRequest`'s), named here for the client.
pub(crate) type Body = http_body_util::Either<
    Full<Bytes>,
    StreamBody<Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, io::Error>> + Send>>>,
>;

/// The hyper connector: each connection a new session over the master.
#[derive(Clone)]
pub(crate) struct Connector(pub Arc<Master>);

impl tower_service::Service<hyper::Uri> for Connector {
    type Response = SshStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<SshStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let master = Arc::clone(&self.0);
        Box::pin(async move { master.dial() })
    }
}

/// One engine connection: a session's stdout to read, its stdin to write.
pub(crate) struct SshStream {
    _child: Child,
    stdin: Option<TokioIo<ChildStdin>>,
    stdout: TokioIo<ChildStdout>,
}

impl hyper::rt::Read for SshStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdout).poll_read(cx, buf)
    }
}

impl SshStream {
    fn stdin(&mut self) -> io::Result<Pin<&mut TokioIo<ChildStdin>>> {
        self.stdin.as_mut().map(Pin::new).ok_or_else(|| io::ErrorKind::BrokenPipe.into())
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().stdin()?.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stdin()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(stdin) = this.stdin.as_mut() {
            std::task::ready!(Pin::new(stdin).poll_shutdown(cx))?;
        }
        // Closing stdin half-closes the connection: the remote end sees its end of input.
        this.stdin = None;
        Poll::Ready(Ok(()))
    }
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_addresses_are_read_as_docker_reads_them() {
        let a = |s: &str| SshAddr::parse(s);
        assert_eq!(a("ssh://box").unwrap(), SshAddr { user: None, host: "box".into(), port: None });
        assert_eq!(a("ssh://me@box:2222/").unwrap(), SshAddr { user: Some("me".into()), host: "box".into(), port: Some(2222) });
        assert_eq!(a("ssh://root@10.0.0.2").unwrap().host, "10.0.0.2");
        assert_eq!(a("ssh://[fd00::2]:22").unwrap(), SshAddr { user: None, host: "fd00::2".into(), port: Some(22) });
        assert_eq!(a("ssh://me@box:2222").unwrap().args(), ["-p", "2222", "-l", "me", "--", "box"]);
        assert_eq!(a("ssh://box").unwrap().args(), ["--", "box"]);
    }

    #[test]
    fn what_ssh_would_take_as_an_option_or_a_second_word_is_refused() {
        for bad in [
            "ssh://",
            "ssh://-oProxyCommand=touch /tmp/x",
            "ssh://-box",
            "ssh://-l@box",
            "ssh://me:secret@box",
            "ssh://box:0",
            "ssh://box:99999",
            "ssh://box:ssh",
            "ssh://box/path",
            "ssh://box?x=1",
            "ssh://bo x",
            "ssh://box;reboot",
            "ssh://[fd00::2",
            "ssh://[fd00::2]22",
            "tcp://box",
        ] {
            assert!(SshAddr::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_last_thing_ssh_said_names_the_failure() {
        assert_eq!(last_line("Warning: x\nPermission denied (publickey).\n\n", String::new), "Permission denied (publickey).");
        assert_eq!(last_line("", || "exited with 255".into()), "exited with 255");
    }
}
