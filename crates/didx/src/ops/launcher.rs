//! The builder-launcher: how COMMANDs run in the client, as a build's launcher script runs
//! them (`docker run -v "$PWD:/work" -w /work -u …`). `--workdir-here` binds the current
//! directory at [`WORKDIR`] and runs every COMMAND there; `--user` runs them as a given user —
//! the host's own with `host` — with every supplementary group, a passwd entry (so `whoami`
//! and `~` work) and the client certificate made that user's; `--ssh-agent` binds the host's
//! agent socket at [`SSH_AGENT_SOCK`] and points `SSH_AUTH_SOCK` at it.
//!
//! Supplementary groups need no tool in the client image: the engine resolves an exec's
//! `User` given as a *name* in the container's `/etc/passwd` and `/etc/group`, groups listing
//! the name as a member included (as `docker exec -u NAME` does). So didx writes those two
//! files (the image's entries kept, the user's replacing any of the same name or uid) and
//! execs as the name. Everything goes through the engine's archive calls: no shell, `chown`
//! or `setpriv` needed in the image.

use std::collections::HashSet;

use crate::engine::ExecAs;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::spec::{SSH_AGENT_SOCK, UserSpec, WORKDIR};

/// Where didx puts a docker CLI for a client image that has none on its `PATH` (copied from
/// the server, whose image has one), put first on the COMMANDs' `PATH`.
pub const INJECTED_BIN: &str = "/didx/bin";
/// The `PATH` of a container whose image sets none (the engine's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
impl UserSpec {
    /// The user as COMMANDs get it: ids, and names from this machine's user and group
    /// databases where they have them (`u<UID>`, `g<GID>` otherwise).
    pub(crate) fn resolve(&self) -> Result<User> {
        let (uid, gid, mut gids) = match self {
            UserSpec::Host => {
                let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
                (uid, gid, host_groups()?)
            }
            UserSpec::Ids { uid, gid, groups } => {
                let gid = gid.or_else(|| passwd_of(*uid).map(|(_, g)| g)).unwrap_or(*uid);
                (*uid, gid, groups.clone())
            }
        };
        gids.insert(0, gid);
        let mut seen = HashSet::new();
        gids.retain(|g| seen.insert(*g));
        let name = passwd_of(uid).map(|(n, _)| n).filter(|n| entry_safe(n)).unwrap_or_else(|| format!("u{uid}"));
        let groups = gids.into_iter().map(|g| (g, group_name(g).filter(|n| entry_safe(n)).unwrap_or_else(|| format!("g{g}")))).collect();
        Ok(User { name, uid, gid, groups })
    }
}

/// A user resolved for the client: its name, ids, and every group (the primary first) with
/// a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<(u32, String)>,
}

/// A name that can stand in a passwd or group line.
fn entry_safe(n: &str) -> bool {
    !n.is_empty() && !n.contains([':', ',', '\n', '\r', '\0'])
}

/// The supplementary groups of this process.
fn host_groups() -> Result<Vec<u32>> {
    let groups = rustix::process::getgroups().map_err(|e| Error::io("reading this process's groups", e.into()))?;
    Ok(groups.into_iter().map(|g| g.as_raw()).collect())
}

/// This machine's passwd entry for `uid`: name and primary gid.
fn passwd_of(uid: u32) -> Option<(String, u32)> {
    // getpwuid_r; an entry that cannot be read counts as none.
    let pw = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some((pw.name, pw.gid.as_raw()))
}

/// This machine's name for group `gid`.
fn group_name(gid: u32) -> Option<String> {
    // getgrgid_r; as in passwd_of.
    Some(nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).ok()??.name)
}

/// The client's `/etc/passwd` with `user`'s entry: every line naming the same user or uid
/// dropped, the user's appended (home `home`, shell `/bin/sh`).
pub(crate) fn merge_passwd(existing: &str, user: &User, home: &str) -> String {
    let uid = user.uid.to_string();
    let mut out: Vec<String> = existing
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(':').collect();
            !(f.len() >= 3 && (f[0] == user.name || f[2] == uid))
        })
        .map(str::to_string)
        .collect();
    out.push(format!("{0}:x:{1}:{2}:{0}:{home}:/bin/sh", user.name, user.uid, user.gid));
    out.join("\n") + "\n"
}

/// The client's `/etc/group` making `user` a member of exactly its groups: the image's
/// groups of those gids list it (the first of each gid), no other group does, and a gid the
/// image lacks gets a line (the host's name for it, or `g<GID>` when the image uses that
/// name for another gid).
pub(crate) fn merge_group(existing: &str, user: &User) -> String {
    let wanted: HashSet<String> = user.groups.iter().map(|(g, _)| g.to_string()).collect();
    let mut present: HashSet<String> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for line in existing.lines() {
        let f: Vec<&str> = line.splitn(4, ':').collect();
        if f.len() < 4 || line.starts_with('#') {
            out.push(line.to_string());
            continue;
        }
        let mut members: Vec<&str> = f[3].split(',').filter(|m| !m.is_empty() && *m != user.name).collect();
        if wanted.contains(f[2]) && present.insert(f[2].to_string()) {
            members.push(&user.name);
        }
        names.insert(f[0].to_string());
        out.push(format!("{}:{}:{}:{}", f[0], f[1], f[2], members.join(",")));
    }
    for (gid, name) in &user.groups {
        if present.insert(gid.to_string()) {
            let name = if names.contains(name) { format!("g{gid}") } else { name.clone() };
            out.push(format!("{name}:x:{gid}:{}", user.name));
            names.insert(name);
        }
    }
    out.join("\n") + "\n"
}

/// What a run asks of its COMMANDs, validated ([`crate::SandboxBuilder`]'s `workdir_here`,
/// `user`, `ssh_agent`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Launch {
    pub workdir: bool,
    pub user: Option<User>,
    pub ssh_agent: bool,
    /// Look for `docker` in the client (its image was given, so may lack one) and copy the
    /// server's in when absent.
    pub docker_check: bool,
}

impl Launch {
    /// Nothing asked: COMMANDs run as the client's defaults.
    pub fn is_plain(&self) -> bool {
        !self.workdir && self.user.is_none() && !self.ssh_agent && !self.docker_check
    }

    /// The user's home in the client: [`WORKDIR`] with `--workdir-here`, else `/home/NAME`.
    fn home(&self, user: &User) -> String {
        if self.workdir { WORKDIR.to_string() } else { format!("/home/{}", user.name) }
    }

    /// How every COMMAND runs.
    pub fn exec_as(&self) -> ExecAs {
        let mut shape = ExecAs::default();
        if self.workdir {
            shape.working_dir = Some(WORKDIR.to_string());
        }
        if let Some(u) = &self.user {
            shape.user = Some(u.name.clone());
            shape.env.push(format!("HOME={}", self.home(u)));
            shape.env.push(format!("USER={}", u.name));
            shape.env.push(format!("LOGNAME={}", u.name));
        }
        if self.ssh_agent {
            shape.env.push(format!("SSH_AUTH_SOCK={SSH_AGENT_SOCK}"));
        }
        shape
    }

    /// Make the started client ready for it (the user's entries, home and certificate), then
    /// run the environment's COMMANDs so.
    pub async fn prepare(&self, env: &mut Environment) -> Result<()> {
        if self.is_plain() {
            return Ok(());
        }
        if let Some(user) = &self.user {
            let backend = env.backend();
            let client = &env.client().id;
            let (passwd, group) = read_accounts(env).await?;
            let home = self.home(user);
            let passwd = merge_passwd(&passwd, user, &home);
            let group = merge_group(&group, user);
            let mut files = vec![
                Owned { path: "etc/passwd".into(), mode: 0o644, uid: 0, gid: 0, data: Some(passwd.into_bytes()) },
                Owned { path: "etc/group".into(), mode: 0o644, uid: 0, gid: 0, data: Some(group.into_bytes()) },
            ];
            if !self.workdir {
                files.push(Owned { path: home.trim_start_matches('/').to_string(), mode: 0o700, uid: user.uid, gid: user.gid, data: None });
            }
            // The client certificate, the user's and still private (the key stays 0600). One
            // upload for everything: each archive call costs tens of milliseconds. (`--engine
            // host` has none: its engine socket is open to every user of the client.)
            if env.server().is_some() {
                let certs = crate::env::CLIENT_CERT_PATH;
                let tar = crate::backend::read_tar(backend.as_ref(), client, certs).await?;
                let parent = std::path::Path::new(certs).parent().map(|p| p.display().to_string()).unwrap_or_default();
                files.extend(reowned(&tar, parent.trim_start_matches('/'), user.uid, user.gid)?);
            }
            crate::backend::write_tar(backend.as_ref(), client, "/", owned_tar(&files)?).await?;
        }
        let mut shape = self.exec_as();
        if self.docker_check
            && let Some(path) = inject_docker(env).await?
        {
            shape.env.push(format!("PATH={path}"));
        }
        env.set_exec_as(shape);
        Ok(())
    }
}

/// A container's `PATH` (from its configuration; the engine's default when it sets none).
async fn path_of(env: &Environment, container: &str) -> Result<String> {
    let config = env.backend().config(container).await?;
    Ok(config.var("PATH").unwrap_or(DEFAULT_PATH).to_string())
}

/// Where `docker` is in a container: the first `DIR/docker` of `path` that exists and is not
/// a directory.
async fn find_docker(env: &Environment, container: &str, path: &str) -> Result<Option<String>> {
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let file = format!("{}/docker", dir.trim_end_matches('/'));
        if env.backend().is_dir(container, &file).await? == Some(false) {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

/// When the client has no `docker` on its `PATH`, copy the server's into [`INJECTED_BIN`]
/// (streamed, engine to engine) and return the `PATH` that finds it first.
async fn inject_docker(env: &Environment) -> Result<Option<String>> {
    let client = env.client().id.clone();
    let client_path = path_of(env, &client).await?;
    if find_docker(env, &client, &client_path).await?.is_some() {
        return Ok(None);
    }
    // `--engine host` has no server to copy from.
    let Some(server) = env.server().cloned() else {
        return Err(Error::NoDockerCli { client: env.client().name.clone(), server: "(none: --engine host)".to_string() });
    };
    let server_path = path_of(env, &server.id).await?;
    let Some(source) = find_docker(env, &server.id, &server_path).await? else {
        return Err(Error::NoDockerCli { client: env.client().name.clone(), server: server.name.clone() });
    };
    let server = server.id;
    tracing::info!(client = %env.client().name, %source, "the client image has no docker CLI; copying the server's");
    let dir = Owned { path: INJECTED_BIN.trim_start_matches('/').to_string(), mode: 0o755, uid: 0, gid: 0, data: None };
    crate::backend::write_tar(env.backend().as_ref(), &client, "/", owned_tar(&[dir])?).await?;
    // The download borrows its backend; the upload wants a stream of its own: a task forwards.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let backend = env.backend().clone();
    let forward = tokio::spawn(async move {
        use futures_util::StreamExt;
        let download = backend.copy_out(&server, &source);
        futures_util::pin_mut!(download);
        while let Some(chunk) = download.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk.map_err(std::io::Error::other)).await.is_err() || failed {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let uploaded = env.backend().copy_in(&client, INJECTED_BIN, Box::pin(stream)).await;
    forward.await.map_err(|e| Error::Task { what: "copying the docker CLI", source: e })?;
    uploaded?;
    Ok(Some(format!("{INJECTED_BIN}:{client_path}")))
}

/// The client's `/etc/passwd` and `/etc/group` as text (empty when absent), from one
/// download of `/etc` (each archive call costs tens of milliseconds).
async fn read_accounts(env: &Environment) -> Result<(String, String)> {
    let (backend, client) = (env.backend().as_ref(), &env.client().id);
    if backend.is_dir(client, "/etc").await? != Some(true) {
        return Ok((String::new(), String::new()));
    }
    let data = crate::backend::read_tar(backend, client, "/etc").await?;
    accounts_in(&data).map_err(|e| Error::io("reading /etc/passwd and /etc/group of the client", e))
}

/// `etc/passwd` and `etc/group` of a tar of `/etc`, as text (empty when absent).
fn accounts_in(tar: &[u8]) -> std::io::Result<(String, String)> {
    let (mut passwd, mut group) = (String::new(), String::new());
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let into = match entry.path()?.to_str() {
            Some("etc/passwd") => &mut passwd,
            Some("etc/group") => &mut group,
            _ => continue,
        };
        std::io::Read::read_to_string(&mut entry, into)?;
    }
    Ok((passwd, group))
}

/// One entry of [`owned_tar`]: a file (`data`) or a directory (`None`), with its owner.
struct Owned {
    path: String,
    mode: u32,
    uid: u32,
    gid: u32,
    data: Option<Vec<u8>>,
}

/// A tar archive of `entries` with their owners (the engine extracts them so).
fn owned_tar(entries: &[Owned]) -> Result<Vec<u8>> {
    let io = |e| Error::io("building a tar archive", e);
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid.into());
        h.set_gid(e.gid.into());
        match &e.data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, &e.path, &d[..]).map_err(io)?;
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty()).map_err(io)?;
            }
        }
    }
    b.into_inner().map_err(io)
}

/// The files and directories of `tar`, under `under` (relative), owned by `uid:gid` (modes
/// and contents kept; other kinds of entry dropped).
fn reowned(tar: &[u8], under: &str, uid: u32, gid: u32) -> Result<Vec<Owned>> {
    let io = |e| Error::io("re-owning the client certificate", e);
    let mut a = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in a.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(io)?;
        let path = entry.path().map_err(io)?.display().to_string();
        let path = format!("{under}/{}", path.trim_end_matches('/')).trim_start_matches('/').to_string();
        let data = match kind {
            tar::EntryType::Directory => None,
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).map_err(io)?;
                Some(data)
            }
            _ => continue,
        };
        out.push(Owned { path, mode, uid, gid, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            name: "alice".into(),
            uid: 1234,
            gid: 2345,
            groups: vec![(2345, "alice".into()), (3456, "dev".into()), (4567, "docker".into())],
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnode:x:1234:1234::/home/node:/bin/sh\nalice:x:99:99::/x:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ndocker:x:999:alice,bob\ndev:x:3456:bob\nusers:x:100:\n";

    #[test]
    fn user_values_parse() {
        assert_eq!(UserSpec::parse("host").unwrap(), UserSpec::Host);
        assert_eq!(UserSpec::parse("1000").unwrap(), UserSpec::Ids { uid: 1000, gid: None, groups: vec![] });
        assert_eq!(UserSpec::parse("1000:50").unwrap(), UserSpec::Ids { uid: 1000, gid: Some(50), groups: vec![] });
        for bad in ["", "alice", "1000:", ":5", "1:2:3", "-1", "Host"] {
            assert!(UserSpec::parse(bad).unwrap_err().is_usage(), "{bad:?}");
        }
    }

    #[test]
    fn explicit_ids_resolve_with_every_group_once_primary_first() {
        let u = UserSpec::Ids { uid: 4_000_000_001, gid: Some(4_000_000_002), groups: vec![4_000_000_003, 4_000_000_002, 4_000_000_004] };
        let u = u.resolve().unwrap();
        assert_eq!((u.name.as_str(), u.uid, u.gid), ("u4000000001", 4_000_000_001, 4_000_000_002));
        assert_eq!(
            u.groups,
            [
                (4_000_000_002, "g4000000002".to_string()),
                (4_000_000_003, "g4000000003".to_string()),
                (4_000_000_004, "g4000000004".to_string())
            ]
        );
        // No gid given and no host entry: the uid.
        assert_eq!(UserSpec::Ids { uid: 4_000_000_001, gid: None, groups: vec![] }.resolve().unwrap().gid, 4_000_000_001);
    }

    #[test]
    fn the_host_user_resolves_to_this_process_s_ids_and_groups() {
        let u = UserSpec::Host.resolve().unwrap();
        let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
        assert_eq!((u.uid, u.gid), (uid, gid));
        assert_eq!(u.groups[0].0, gid);
        let mut want: Vec<u32> = host_groups().unwrap();
        want.push(gid);
        want.sort();
        want.dedup();
        let mut got: Vec<u32> = u.groups.iter().map(|(g, _)| *g).collect();
        got.sort();
        assert_eq!(got, want);
        assert!(entry_safe(&u.name));
    }

    #[test]
    fn passwd_replaces_entries_of_the_same_name_or_uid() {
        let p = merge_passwd(PASSWD, &alice(), "/home/alice");
        assert_eq!(p, "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/sh\nalice:x:1234:2345:alice:/home/alice:/bin/sh\n");
        assert_eq!(merge_passwd("", &alice(), "/work"), "alice:x:1234:2345:alice:/work:/bin/sh\n");
    }

    #[test]
    fn groups_list_the_user_in_exactly_its_gids() {
        let g = merge_group(GROUP, &alice());
        assert_eq!(
            g, "root:x:0:\ndocker:x:999:bob\ndev:x:3456:bob,alice\nusers:x:100:\nalice:x:2345:alice\ng4567:x:4567:alice\n",
            "docker (999 here) is taken by name: the host's 4567 becomes g4567; alice leaves the image's docker group"
        );
        // Twice is the same as once.
        assert_eq!(merge_group(&g, &alice()), g);
        assert_eq!(merge_group("", &alice()), "alice:x:2345:alice\ndev:x:3456:alice\ndocker:x:4567:alice\n");
    }

    #[test]
    fn root_from_the_host_keeps_one_root_line() {
        let root = User { name: "root".into(), uid: 0, gid: 0, groups: vec![(0, "root".into())] };
        let p = merge_passwd(PASSWD, &root, "/work");
        assert!(p.starts_with("node:x:1234"), "{p}");
        assert_eq!(p.lines().filter(|l| l.starts_with("root:")).collect::<Vec<_>>(), ["root:x:0:0:root:/work:/bin/sh"]);
        assert_eq!(merge_group(GROUP, &root).lines().next(), Some("root:x:0:root"));
    }

    #[test]
    fn commands_run_in_work_as_the_user_with_its_home_and_the_agent() {
        let plain = Launch::default();
        assert!(plain.is_plain());
        assert_eq!(plain.exec_as(), ExecAs::default());
        let all = Launch { workdir: true, user: Some(alice()), ssh_agent: true, docker_check: false };
        assert_eq!(
            all.exec_as(),
            ExecAs {
                user: Some("alice".into()),
                working_dir: Some("/work".into()),
                env: vec![
                    "HOME=/work".into(),
                    "USER=alice".into(),
                    "LOGNAME=alice".into(),
                    "SSH_AUTH_SOCK=/run/didx/ssh-agent.sock".into()
                ],
            }
        );
        let user = Launch { user: Some(alice()), ..Launch::default() };
        assert_eq!(user.exec_as().env[0], "HOME=/home/alice");
        assert_eq!(user.exec_as().working_dir, None);
    }

    #[test]
    fn the_accounts_are_read_from_a_tar_of_etc() {
        let t = owned_tar(&[
            Owned { path: "etc".into(), mode: 0o755, uid: 0, gid: 0, data: None },
            Owned { path: "etc/hosts".into(), mode: 0o644, uid: 0, gid: 0, data: Some(b"h".to_vec()) },
            Owned { path: "etc/passwd".into(), mode: 0o644, uid: 0, gid: 0, data: Some(PASSWD.as_bytes().to_vec()) },
            Owned { path: "etc/group".into(), mode: 0o644, uid: 0, gid: 0, data: Some(GROUP.as_bytes().to_vec()) },
        ])
        .unwrap();
        assert_eq!(accounts_in(&t).unwrap(), (PASSWD.to_string(), GROUP.to_string()));
        let none = owned_tar(&[Owned { path: "etc".into(), mode: 0o755, uid: 0, gid: 0, data: None }]).unwrap();
        assert_eq!(accounts_in(&none).unwrap(), (String::new(), String::new()));
    }

    #[test]
    fn archives_carry_owners_and_reowning_keeps_modes() {
        let t = owned_tar(&[
            Owned { path: "etc/passwd".into(), mode: 0o644, uid: 0, gid: 0, data: Some(b"x".to_vec()) },
            Owned { path: "home/alice".into(), mode: 0o700, uid: 1234, gid: 2345, data: None },
        ])
        .unwrap();
        let r = owned_tar(&reowned(&t, "x", 7, 8).unwrap()).unwrap();
        let list = |t: &[u8]| {
            tar::Archive::new(t)
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let h = e.header();
                    (e.path().unwrap().display().to_string(), h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.size().unwrap())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(list(&t), [("etc/passwd".into(), 0o644, 0, 0, 1), ("home/alice/".into(), 0o700, 1234, 2345, 0)]);
        assert_eq!(list(&r), [("x/etc/passwd".into(), 0o644, 7, 8, 1), ("x/home/alice/".into(), 0o700, 7, 8, 0)]);
    }
}
