//! didx's exit codes (the table in `--help`), and how an outcome becomes one: an error is said
//! once, on one line, with the command line's advice for it.

use didx::Error;

use crate::output::say;

/// A usage error (bad option or value); nothing was created.
pub const EXIT_USAGE: u8 = 2;
/// didx itself failed (engine unreachable, image missing, start failure).
pub const EXIT_DIDX: u8 = 125;
/// Interrupted by SIGHUP (the terminal closed).
pub const EXIT_SIGHUP: u8 = 129;
/// Interrupted by SIGINT (Ctrl-C).
pub const EXIT_SIGINT: u8 = 130;
/// Interrupted by SIGTERM.
pub const EXIT_SIGTERM: u8 = 143;

/// The exit code of an outcome, the error said once (with the command's advice for it).
pub fn report(r: anyhow::Result<u8>) -> u8 {
    match r {
        Ok(code) => code,
        Err(e) => {
            let lib = e.chain().find_map(|c| c.downcast_ref::<Error>());
            let advice = lib.map(advice).unwrap_or_default();
            say(format!("error: {}{advice}", one_line(&e)));
            if lib.is_some_and(Error::is_usage) { EXIT_USAGE } else { EXIT_DIDX }
        }
    }
}

/// An error and its causes on one line, `a: b: c`, each said once: the library's errors already
/// end with their cause's text, which the chain would otherwise repeat.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// What the command adds to a library error: how to act on it from the command line.
pub fn advice(e: &Error) -> &'static str {
    match e {
        Error::Unreachable { host, .. } if host.starts_with("ssh://") => {
            " (check that `ssh HOST docker version` works with your keys: didx's ssh takes no password; DIDX_SSH adds ssh options)"
        }
        Error::Unreachable { .. } => " (start one with scripts/ensure-engine.sh, or point DOCKER_HOST / -H at one)",
        Error::NotReady { .. } => " (raise --ready-timeout)",
        Error::PrivilegedRefused { .. } => "; use --isolation auto or caps",
        Error::InnerCannotRun { .. } => {
            "; a server image with a newer runc may work (`didx image build --suite trixie` makes didx/dind:26.1.5; pass it with --server-image), or use a rootful engine or --engine host"
        }
        Error::PortTaken { .. } => " (another --publish HOSTPORT, or 0 for a free one; nothing was left)",
        Error::AddressRangeExhausted { .. } => {
            "; remove environments (didx --clean rpt lists them) or give a larger or other --address-range"
        }
        Error::NoSuchEnvironment { .. } => " (didx --clean rpt lists them)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_already_ends_with_is_said_once() {
        let lib = Error::Unreachable { host: "unix:///x".into(), source: bollard::errors::Error::SocketNotFoundError("/x".into()) };
        let e = anyhow::Error::new(lib).context("connecting");
        assert_eq!(one_line(&e), "connecting: cannot reach the Docker engine at unix:///x: Socket not found: /x");
        // A cause the message does not include is kept.
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(io).context("writing the spool");
        assert_eq!(one_line(&e), "writing the spool: disk full");
    }
}
