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
            say(format!("error: {e:#}{advice}"));
            if lib.is_some_and(Error::is_usage) { EXIT_USAGE } else { EXIT_DIDX }
        }
    }
}

/// What the command adds to a library error: how to act on it from the command line.
pub fn advice(e: &Error) -> &'static str {
    match e {
        Error::Unreachable { .. } => " (start one with scripts/ensure-engine.sh, or point DOCKER_HOST / -H at one)",
        Error::NotReady { .. } => " (raise --ready-timeout)",
        Error::PrivilegedRefused { .. } => "; use --isolation auto or caps",
        Error::PortTaken { .. } => " (another --publish HOSTPORT, or 0 for a free one; nothing was left)",
        _ => "",
    }
}
