//! A container held by its didx from its start: PID 1 a bootstrap that reads the container's
//! files from stdin, waits for "go", then runs the container's own entrypoint and command.

use bollard::models::ContainerCreateBody;

use crate::archive::Entry;
use crate::error::{Error, Result};

/// PID 1 of a container held from its start: read the container's files from stdin (didx
/// started it, then attached to it, then wrote them: [`handover`]), then "go", then run the
/// entrypoint with the container's command, stdin still attached. End of input first (didx
/// gone before "go"), a record it cannot read, or no "go" within [`GO_WITHIN_SECS`] (didx gone
/// before it attached): exit, and the engine's auto-removal takes the container. (PID 1
/// ignores signals it does not trap, hence the trap; the records are read in a child so that
/// waiting for them answers the trap. `read` takes a pipe a byte at a time in every shell, so
/// nothing after "go" is consumed: the entrypoint's lease reads on from there.)
///
/// The files come this way rather than as an archive uploaded through the engine: an upload
/// costs the engine a chrooted untar (a fresh process of the engine's own binary), about
/// 70 ms of CPU and as long on the start's critical path, per container.
pub(crate) const BOOTSTRAP: &str = concat!(
    r#"trap 'exit 0' TERM; (sleep "$DIDX_GO_WITHIN"; kill -TERM $$) & w=$!; exec 3<&0; "#,
    r#"(set -f; cd / || exit 1; while IFS= read -r l <&3; do set -- $l; case $1 in "#,
    r#"go) exit 0;; "#,
    r#"d) shift; mkdir -p "$@" || exit 1;; "#,
    r#"f) case $2 in 600) umask 077;; 644|755) umask 022;; *) exit 1;; esac; n=$3; "#,
    r#"while [ "$n" -gt 0 ]; do IFS= read -r x <&3 || exit 1; printf '%s\n' "$x"; n=$((n - 1)); done >"$4" || exit 1; "#,
    r#"[ "$2" != 755 ] || chmod 755 "$4" || exit 1;; "#,
    r#"*) exit 1;; esac; done; exit 1) & r=$!; "#,
    r#"if wait "$r"; then kill "$w" 2>/dev/null; exec 3<&-; exec "$@"; fi; kill "$w" 2>/dev/null; exit 0"#
);

/// What a held container's [`BOOTSTRAP`] reads before "go": `files` (paths relative to `/`)
/// as records, `d DIR...` (made, mode 0755) then `f MODE LINES PATH` followed by the file's
/// lines. Only what the bootstrap can write exactly is taken: text ending in a newline (or
/// empty) without NUL bytes, modes 0600, 0644 and 0755, plain relative paths.
pub(crate) fn handover(files: &[Entry<'_>]) -> Result<Vec<u8>> {
    let refuse = |path: &str, why: &str| Error::io(format!("handing {path} to a held container"), std::io::Error::other(why.to_string()));
    let mut dirs: Vec<&str> = Vec::new();
    let mut records = Vec::new();
    for f in files {
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        if f.path.is_empty()
            || f.path.starts_with('/')
            || !f.path.chars().all(plain)
            || f.path.split('/').any(|p| p.is_empty() || p == "..")
        {
            return Err(refuse(f.path, "its path is not a plain relative path"));
        }
        if ![0o600, 0o644, 0o755].contains(&f.mode) {
            return Err(refuse(f.path, "its mode is not 0600, 0644 or 0755"));
        }
        if f.data.contains(&0) || !(f.data.is_empty() || f.data.ends_with(b"\n")) {
            return Err(refuse(f.path, "it is not text ending in a newline"));
        }
        let mut parent = f.path;
        while let Some((p, _)) = parent.rsplit_once('/') {
            if !dirs.contains(&p) {
                dirs.push(p);
            }
            parent = p;
        }
        let lines = f.data.iter().filter(|&&b| b == b'\n').count();
        records.extend_from_slice(format!("f {:o} {lines} {}\n", f.mode, f.path).as_bytes());
        records.extend_from_slice(f.data);
    }
    dirs.sort_unstable();
    let mut out = if dirs.is_empty() { Vec::new() } else { format!("d {}\n", dirs.join(" ")).into_bytes() };
    out.extend(records);
    Ok(out)
}

/// How long a held container waits for "go" before it ends itself: the longest a container
/// started by a didx that died before attaching to it stays.
pub(super) const GO_WITHIN_SECS: u64 = 15;

/// Where the engine may not pass a lease's end on ([`crate::engine::Engine::beats`]: over SSH,
/// Podman), the held container's stdin carries a `beat` line every `engine::BEAT_EVERY` (see
/// [`crate::engine::Engine::attach_lease`]); with no word for this many seconds the entrypoint
/// ends the container, as when its stdin closes. (A link that drops silently closes nothing
/// until the remote sshd notices, if it is told to; Podman never closes it.)
pub(crate) const BEAT_LIMIT_SECS: u64 = 6;

/// The environment of an exec'd lease (the entrypoint's `lease` mode): `DIDX_LEASE_BEAT` set
/// with `beat`, else cleared (the container's own, from a didx that beat, would else apply).
pub(crate) fn lease_env(beat: bool) -> Vec<String> {
    vec![format!("DIDX_LEASE_BEAT={}", if beat { BEAT_LIMIT_SECS.to_string() } else { String::new() })]
}

/// `body` made to be held by its didx from its start: stdin open to one attach (closed when
/// that attach ends), PID 1 the [`BOOTSTRAP`] running the body's entrypoint and command, and
/// `DIDX_LEASE=stdin` so the entrypoint keeps watching stdin; with `beat` (see
/// [`BEAT_LIMIT_SECS`]), `DIDX_LEASE_BEAT` too: it also ends when its didx falls silent.
pub(crate) fn held(mut body: ContainerCreateBody, beat: bool) -> ContainerCreateBody {
    let mut argv = body.entrypoint.take().unwrap_or_default();
    argv.extend(body.cmd.take().unwrap_or_default());
    body.entrypoint = Some(vec!["/bin/sh".to_string(), "-c".to_string(), BOOTSTRAP.to_string(), "didx-bootstrap".to_string()]);
    body.cmd = Some(argv);
    body.open_stdin = Some(true);
    body.stdin_once = Some(true);
    body.attach_stdin = Some(true);
    let env = body.env.get_or_insert_with(Vec::new);
    env.extend(["DIDX_LEASE=stdin".to_string(), format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}")]);
    if beat {
        env.push(format!("DIDX_LEASE_BEAT={BEAT_LIMIT_SECS}"));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::super::client::{Client, ClientFiles};
    use super::super::server::Server;
    use super::super::testing::{spec, tls};
    use super::*;
    use crate::isolation::Isolation;

    #[test]
    fn a_held_container_boots_through_stdin_into_the_same_entrypoint_and_command() {
        let (s, tls) = (spec(), tls());
        let plain = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None, net: None }.body(&Isolation::Privileged);
        let h = held(plain.clone(), false);
        assert_eq!(h.entrypoint.as_deref().unwrap()[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(h.entrypoint.as_deref().unwrap()[2], BOOTSTRAP);
        let mut argv = plain.entrypoint.clone().unwrap();
        argv.extend(plain.cmd.clone().unwrap());
        assert_eq!(h.cmd, Some(argv), "the bootstrap execs the plain entrypoint and command");
        assert_eq!((h.open_stdin, h.stdin_once, h.attach_stdin), (Some(true), Some(true), Some(true)));
        assert_eq!(h.env, Some(vec!["DIDX_LEASE=stdin".to_string(), format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}")]));
        assert_eq!((h.labels, h.host_config.map(|c| c.auto_remove)), (plain.labels, Some(Some(true))));
        let c = held(
            Client {
                spec: &s,
                server_name: "n",
                created: 1,
                files: ClientFiles::Upload(&tls),
                pool_key: None,
                pool_name: None,
                engine_socket: None,
            }
            .body(),
            true,
        );
        assert!(c.env.unwrap().ends_with(&[
            "DIDX_LEASE=stdin".to_string(),
            format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}"),
            format!("DIDX_LEASE_BEAT={BEAT_LIMIT_SECS}")
        ]));
    }

    fn entry<'a>(path: &'a str, mode: u32, data: &'a [u8]) -> Entry<'a> {
        Entry { path, mode, data }
    }

    #[test]
    fn the_handover_makes_each_directory_once_then_gives_each_file_by_mode_and_line_count() {
        let files = [
            entry("didx/entrypoint", 0o755, b"#!/bin/sh\necho hi\n"),
            entry("didx/certs/server/key.pem", 0o600, b"k\n"),
            entry("certs/client/empty", 0o644, b""),
        ];
        let got = String::from_utf8(handover(&files).unwrap()).unwrap();
        assert_eq!(
            got,
            "d certs certs/client didx didx/certs didx/certs/server\n\
             f 755 2 didx/entrypoint\n#!/bin/sh\necho hi\n\
             f 600 1 didx/certs/server/key.pem\nk\n\
             f 644 0 certs/client/empty\n"
        );
        assert_eq!(handover(&[]).unwrap(), b"");
    }

    #[test]
    fn the_handover_refuses_what_the_bootstrap_could_not_write_exactly() {
        for (f, why) in [
            (entry("a b", 0o644, b"x\n"), "not a plain relative path"),
            (entry("/abs", 0o644, b"x\n"), "not a plain relative path"),
            (entry("a/../b", 0o644, b"x\n"), "not a plain relative path"),
            (entry("a//b", 0o644, b"x\n"), "not a plain relative path"),
            (entry("a*", 0o644, b"x\n"), "not a plain relative path"),
            (entry("a", 0o640, b"x\n"), "mode"),
            (entry("a", 0o644, b"x"), "not text ending in a newline"),
            (entry("a", 0o644, b"x\0y\n"), "not text ending in a newline"),
        ] {
            let e = handover(&[f]).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    /// The bootstrap run by this machine's `sh` (dash on Debian, as in didx's images) with its
    /// root moved to a scratch directory, given `input` (then end of input, unless `hold`):
    /// what the command it execs printed (its working directory, then the rest of its stdin),
    /// or `None` when it never ran.
    fn bootstrap(root: &std::path::Path, input: &[u8], hold: bool, go_within: &str) -> Option<String> {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let script = BOOTSTRAP.replacen("cd /", &format!("cd {}", root.display()), 1);
        assert_ne!(script, BOOTSTRAP);
        let out = root.join("../out");
        let _ = std::fs::remove_file(&out);
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script, "didx-bootstrap", "sh", "-c", r#"pwd >"$OUT"; cat >>"$OUT""#])
            .env("DIDX_GO_WITHIN", go_within)
            .env("OUT", &out)
            .stdin(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        if !hold {
            drop(stdin);
            child.wait().unwrap();
        } else {
            child.wait().unwrap();
            drop(stdin);
        }
        // The bootstrap's timer and reader may outlive it: end the whole group.
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
        std::fs::read_to_string(&out).ok()
    }

    #[test]
    fn the_bootstrap_writes_the_files_exactly_then_runs_the_command_with_the_rest_of_stdin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = crate::backend::docker::recipe::ENTRYPOINT.as_bytes();
        let files = [
            entry("didx/entrypoint", 0o755, script),
            entry("didx/certs/server/key.pem", 0o600, b"-----BEGIN KEY-----\n  spaced \\ back\\slash\ttab \n\n"),
            entry("didx/certs/server/ca.pem", 0o644, b"ca\n"),
        ];
        let mut input = handover(&files).unwrap();
        input.extend_from_slice(b"go\nafter go\n");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let out = bootstrap(&root, &input, false, "60").expect("the command ran");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(out, format!("{}\nafter go\n", cwd.display()), "the command keeps the working directory and reads on from after \"go\"");
        for f in &files {
            let p = root.join(f.path);
            assert_eq!(std::fs::read(&p).unwrap(), f.data, "{}", f.path);
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, f.mode, "{}", f.path);
        }
        assert_eq!(std::fs::metadata(root.join("didx/certs")).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn the_bootstrap_ends_without_running_the_command_on_end_of_input_a_bad_record_or_no_go_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        for input in [&b""[..], b"f 644 2 a\nonly one line\n", b"x what\ngo\n", b"f 640 0 a\ngo\n"] {
            assert_eq!(bootstrap(&root, input, false, "60"), None, "{input:?}");
        }
        // No "go" within DIDX_GO_WITHIN: its timer ends it, the input still open.
        assert_eq!(bootstrap(&root, b"", true, "1"), None);
    }
}
