//! A container held by its didx from its start: PID 1 a bootstrap that waits for "go" on
//! stdin, then runs the container's own entrypoint and command.

use bollard::models::ContainerCreateBody;

/// PID 1 of a container held from its start: wait for "go" on stdin (didx started it, then
/// attached to it, then put the entrypoint in place), then run the entrypoint with the
/// container's command, stdin still attached. End of input first (didx gone before "go"), or
/// no "go" within [`GO_WITHIN_SECS`] (didx gone before it attached): exit, and the engine's
/// auto-removal takes the container. (PID 1 ignores signals it does not trap, hence the
/// trap; the line is read in a child so that waiting for it answers the trap.)
pub(crate) const BOOTSTRAP: &str = concat!(
    r#"trap 'exit 0' TERM; (sleep "$DIDX_GO_WITHIN"; kill -TERM 1) & w=$!; exec 3<&0; "#,
    r#"(IFS= read -r go <&3; [ "$go" = go ]) & r=$!; "#,
    r#"if wait "$r"; then kill "$w" 2>/dev/null; exec 3<&-; exec "$@"; fi; exit 0"#
);

/// How long a held container waits for "go" before it ends itself: the longest a container
/// started by a didx that died before attaching to it stays.
pub(super) const GO_WITHIN_SECS: u64 = 15;

/// `body` made to be held by its didx from its start: stdin open to one attach (closed when
/// that attach ends), PID 1 the [`BOOTSTRAP`] running the body's entrypoint and command, and
/// `DIDX_LEASE=stdin` so the entrypoint keeps watching stdin.
pub(crate) fn held(mut body: ContainerCreateBody) -> ContainerCreateBody {
    let mut argv = body.entrypoint.take().unwrap_or_default();
    argv.extend(body.cmd.take().unwrap_or_default());
    body.entrypoint = Some(vec!["/bin/sh".to_string(), "-c".to_string(), BOOTSTRAP.to_string(), "didx-bootstrap".to_string()]);
    body.cmd = Some(argv);
    body.open_stdin = Some(true);
    body.stdin_once = Some(true);
    body.attach_stdin = Some(true);
    body.env.get_or_insert_with(Vec::new).extend(["DIDX_LEASE=stdin".to_string(), format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}")]);
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
        let h = held(plain.clone());
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
        );
        assert!(c.env.unwrap().ends_with(&["DIDX_LEASE=stdin".to_string(), format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}")]));
        // The script: waits for "go" (bounded), exits quietly on anything else or on end of input.
        assert!(BOOTSTRAP.contains("IFS= read -r go <&3; [ \"$go\" = go ]") && BOOTSTRAP.contains("exec \"$@\""));
        assert!(BOOTSTRAP.contains("sleep \"$DIDX_GO_WITHIN\"; kill -TERM 1"));
    }
}
