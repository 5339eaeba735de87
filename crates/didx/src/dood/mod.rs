//! Docker-outside-of-Docker (`--engine host`): no server; the client talks to the engine didx
//! itself uses, through an engine-API proxy didx runs for the environment.
//!
//! The pitfall DooD users solve by hand is that a bind mount's source names a path of the
//! *engine's* machine, while the program asking (in the client container) only knows its own
//! paths. The proxy solves it the way a "mount resolver" does, through the engine API: every
//! `POST /containers/create` from the client has its bind sources that are client paths
//! translated through the client container's own mounts, as the engine reports them
//! ([`MountTable::translate`]); a client path on no mount of the client is refused with a
//! message saying so, never passed on to mean something else on the host. Containers, volumes
//! and networks the client creates are labelled with the environment ([`Role::Started`]), so
//! clean-up by policy removes them with the client. A start that fails because a host port is
//! taken gets what holds it added to the engine's message (`port_holder`).
//!
//! The proxy reads a request as the engine does, so a hostile or careless client cannot slip
//! past it: it routes on the percent-decoded, cleaned path without its `/v1.NN` prefix
//! (`rewrite_for`), matches JSON keys ignoring case as Go's decoder does and refuses two keys
//! the engine would read as one (`prepare_create`), and makes the named volumes a container
//! create would make the engine create implicitly itself, labelled. It raises the process's
//! open-file limit, serves a bounded number of connections (`503` beyond), never spins on a
//! failed accept, makes its directory without following links, and sweeps the directories of
//! proxies that are gone ([`Proxy::start`]).
//!
//! When didx itself runs in a container on the same engine (a CI job with the socket mounted),
//! paths didx hands the engine (`-v` sources, the proxy's socket) are translated the same way
//! through didx's own container's mounts ([`own_mounts`]).
//!
//! The proxy lives in the didx process (a task of its runtime), on a unix socket in didx's
//! cache directory bound into the client at `/var/run/docker.sock`: the client reaches the
//! engine while didx runs. A client kept past its run (`--clean none`) keeps its files but no
//! longer reaches an engine.
//!
//! The proxy's parts: which rewrite a request gets, routed as the engine routes it (`route`);
//! the JSON bodies rewritten and refused (`rewrite`); paths translated through a container's
//! mounts (`mounts`); one request forwarded (`forward`); the accept loop and its connection
//! bound (`serve`); the proxies' directories, made private and swept (`dir`).
//!
//! [`Role::Started`]: crate::labels::Role::Started

mod dir;
mod forward;
mod mounts;
mod rewrite;
mod route;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use dir::{KERNEL_FILE, at, boot_id, open_private_dir, sweep_dirs};
use forward::Ctx;
pub use mounts::{own_mounts, translate_own};
// Paths of the `internals` API (and named by this module's doc); the crate itself uses them
// only inside this folder.
#[allow(unused_imports)]
pub use mounts::{MountTable, own_container_id};
use serve::{connection_bound, raise_open_files, serve};

/// Where the proxy's socket appears in the client (docker's default, so every tool finds it).
pub const CLIENT_SOCKET: &str = "/var/run/docker.sock";

/// A running proxy: its task ends (and its socket directory goes) when this is dropped.
#[derive(Debug)]
pub struct Proxy {
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

impl Proxy {
    /// Serve environment `env`'s proxy for client `client` on a socket in `dir`
    /// (`<cache>/dood/<env>`; the socket is `dir/docker.sock`), forwarding to `engine` (a
    /// `unix://` engine only).
    ///
    /// `dir`'s parent is made (mode 0700) or opened without following a link and must be this
    /// user's and not writable by others; `dir` is made anew, mode 0700, through it (an existing
    /// one is refused). Directories of proxies that are gone are swept first (`sweep_dirs`).
    /// The process's open-file soft limit is raised to its hard limit once
    /// (`raise_open_files`); at most `connection_bound` client connections are served at
    /// once, a further one is answered `503` with a message saying so.
    pub async fn start(engine: &Engine, env: &str, client: &str, dir: PathBuf) -> Result<Proxy> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let upstream = match engine.host().strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None => return Err(Error::EngineHostNeedsSocket { host: engine.host().to_string() }),
        };
        let (Some(parent), Some(id)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str())) else {
            return Err(Error::io(format!("placing the engine proxy at {}", dir.display()), std::io::Error::other("no parent directory")));
        };
        match std::fs::DirBuilder::new().mode(0o700).create(parent) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(Error::io(format!("making {}", parent.display()), e)),
            _ => {}
        }
        let dood = open_private_dir(parent)?;
        sweep_dirs(&dood, id).await;
        std::fs::DirBuilder::new().mode(0o700).create(at(&dood, id)).map_err(|e| Error::io(format!("making {}", dir.display()), e))?;
        // What follows is undone on failure (no Proxy, no Drop to remove the directory).
        let made = (|| {
            let own = open_private_dir(&at(&dood, id))?;
            own.set_permissions(std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(format!("securing {}", dir.display()), e))?;
            let record = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(at(&own, KERNEL_FILE))
                .and_then(|mut f| std::io::Write::write_all(&mut f, boot_id().as_bytes()));
            record.map_err(|e| Error::io(format!("writing {}", dir.join(KERNEL_FILE).display()), e))?;
            let socket = dir.join("docker.sock");
            // Bound through the open directory: a link swapped in on the way is not followed.
            let listener = tokio::net::UnixListener::bind(at(&own, "docker.sock")).map_err(|e| Error::io(format!("listening on {}", socket.display()), e))?;
            // Open to every user of the client (`--user`): on this machine the 0700 directory
            // keeps everyone but didx's user out; in the client the socket is bound by itself.
            std::fs::set_permissions(at(&own, "docker.sock"), std::fs::Permissions::from_mode(0o666))
                .map_err(|e| Error::io(format!("opening {} to the client's users", socket.display()), e))?;
            Ok(listener)
        })();
        let listener = match made {
            Ok(l) => l,
            Err(e) => {
                if let Err(rm) = std::fs::remove_dir_all(at(&dood, id)) {
                    tracing::warn!(dir = %dir.display(), error = %rm, "cannot remove the engine proxy's directory after a failed start");
                }
                return Err(e);
            }
        };
        let bound = connection_bound(raise_open_files());
        let ctx = Arc::new(Ctx { upstream, engine: engine.clone(), client: client.to_string(), env: env.to_string() });
        let task = tokio::spawn(serve(listener, ctx, bound));
        Ok(Proxy { task, dir })
    }

    /// The socket's path (on this machine).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "cannot remove the engine proxy's directory");
        }
    }
}
