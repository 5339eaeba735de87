//! Validated forms of what the user asks for: clean policy, versions and their images,
//! `-v` specs, `--publish` specs, the `--cv-env` name, isolation mode, durations.
//!
//! Parse, don't validate twice: each raw string becomes one of these types here, and nothing
//! downstream re-checks strings.

pub use crate::command::{HostForm, Step};
pub use crate::net::AddressRange;
pub use crate::ops::copy::spec::{CpOutSpec, CpSource, CpSpec};
pub use crate::publish::{Proto, PublishSpec, Published};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

pub use crate::limits::Limits;
pub use crate::registry::{RegistryAuth, insecure_arg, mirror_arg};

/// What to remove after the commands ran (`--clean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanPolicy {
    /// Leave server and client running.
    None,
    /// Remove when every command succeeded.
    Success,
    /// Remove when a command failed (or didx was interrupted).
    Failure,
    /// Always remove.
    Anycase,
    /// Remove every didx environment on the engine; runs no commands.
    All,
    /// Report every didx environment on the engine; runs no commands.
    Rpt,
}

impl CleanPolicy {
    /// Whether an environment whose commands ended with `succeeded` is removed.
    pub fn removes(self, succeeded: bool) -> bool {
        match self {
            CleanPolicy::None | CleanPolicy::All | CleanPolicy::Rpt => false,
            CleanPolicy::Success => succeeded,
            CleanPolicy::Failure => !succeeded,
            CleanPolicy::Anycase => true,
        }
    }

    /// Whether a run under this policy holds its environment (its lease): a killed run counts
    /// as failed, so exactly the policies that remove a failed run's environment.
    pub fn holds(self) -> bool {
        self.removes(false)
    }

    /// The option value, as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanPolicy::None => "none",
            CleanPolicy::Success => "success",
            CleanPolicy::Failure => "failure",
            CleanPolicy::Anycase => "anycase",
            CleanPolicy::All => "all",
            CleanPolicy::Rpt => "rpt",
        }
    }
}

impl FromStr for CleanPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => CleanPolicy::None,
            "success" => CleanPolicy::Success,
            "failure" => CleanPolicy::Failure,
            "anycase" => CleanPolicy::Anycase,
            "all" => CleanPolicy::All,
            "rpt" => CleanPolicy::Rpt,
            _ => {
                return Err(Error::invalid("--clean value", s, "expected one of none, success, failure, anycase, all, rpt"));
            }
        })
    }
}

/// How a run whose policy removes its environment ends it (`--teardown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Remove it before the run returns: a command run after didx finds it gone.
    Wait,
    /// Close its leases and return at once: its members end themselves and the engine removes
    /// them within 2 s, with no further call (even if didx is killed then). Needs the
    /// environment held (`--clean anycase` or `failure`); one not held is removed as with
    /// `Wait`.
    Lease,
}

impl Teardown {
    /// The word for it, as `--teardown` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Teardown::Wait => "wait",
            Teardown::Lease => "lease",
        }
    }
}

impl FromStr for Teardown {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wait" => Ok(Teardown::Wait),
            "lease" => Ok(Teardown::Lease),
            _ => Err(Error::invalid("--teardown value", s, "expected one of wait, lease")),
        }
    }
}

/// A `--sv` / `--cv` value: `latest`, a version such as `24.0`, or `X-dind`.
///
/// It names containers (`dind_<id>_server_<ver>`) and images (`docker:<tag>`), so it is limited
/// to the characters both allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(String);

impl Version {
    /// Parse a version value given for option `what`.
    pub fn parse(what: &'static str, s: &str) -> Result<Self> {
        // No '_': it separates the parts of didx's container names (dind_<id>_server_<ver>),
        // so a version could otherwise pose as another part (`x_starting`, `x_pooled`).
        let ok = !s.is_empty()
            && s.len() <= 100
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
        if ok {
            Ok(Version(s.to_string()))
        } else {
            Err(Error::invalid(
                what,
                s,
                "expected 'latest' or a docker image version such as 24.0 or 24.0-dind (letters, digits, '.', '-'; '_' is reserved for didx's names)",
            ))
        }
    }

    /// The value as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server image didx.sh maps this version to: `latest` → `docker:dind`,
    /// `X-dind` → `docker:X-dind`, `X` → `docker:X-dind`.
    pub fn server_image(&self) -> String {
        match self.0.as_str() {
            "latest" => "docker:dind".to_string(),
            v if v.ends_with("-dind") => format!("docker:{v}"),
            v => format!("docker:{v}-dind"),
        }
    }

    /// The client image didx.sh maps this version to: `docker:<v>`.
    pub fn client_image(&self) -> String {
        format!("docker:{}", self.0)
    }

    /// The offline image of this engine version, as `didx image build` tags it:
    /// `X` and `X-dind` → `didx/dind:X`; `latest` → none (no version to match).
    pub fn offline_image(&self) -> Option<String> {
        let v = self.0.strip_suffix("-dind").unwrap_or(&self.0);
        (v != "latest" && !v.is_empty()).then(|| format!("didx/dind:{v}"))
    }
}

/// The name of the host environment variable that holds the client's container name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVarName(String);

impl EnvVarName {
    /// Parse a `--cv-env` value: a POSIX shell variable name.
    pub fn parse(s: &str) -> Result<Self> {
        let mut chars = s.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(EnvVarName(s.to_string()))
        } else {
            Err(Error::invalid("--cv-env name", s, "expected a shell variable name: a letter or '_' followed by letters, digits or '_'"))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a `-v` mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host path, made absolute.
    Host(PathBuf),
    /// A named volume (never removed by didx).
    Named(String),
    /// An anonymous volume (removed with its container).
    Anonymous,
}

/// One validated `-v [SOURCE:]ABS_CLIENT_PATH[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The mount's source.
    pub source: VolumeSource,
    /// Absolute path inside the client.
    pub target: String,
    /// Mount options such as `ro`, as given (comma-separated), if any.
    pub mode: Option<String>,
}

const VOLUME_FIX: &str = "expected [SOURCE:]ABSOLUTE_CLIENT_PATH[:MODE] with SOURCE an absolute or ./relative host path or a volume name, e.g. ./src:/work or /cache";

fn is_mode(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|m| {
            matches!(
                m,
                "ro" | "rw"
                    | "z"
                    | "Z"
                    | "nocopy"
                    | "shared"
                    | "rshared"
                    | "slave"
                    | "rslave"
                    | "private"
                    | "rprivate"
                    | "consistent"
                    | "cached"
                    | "delegated"
            )
        })
}

impl VolumeSpec {
    /// Parse a `-v` value. Relative host paths (`./x`, `../x`, `.`) are resolved against `cwd`
    /// and must exist, as a typo would otherwise create an empty root-owned directory.
    pub fn parse(s: &str, cwd: &Path) -> Result<Self> {
        let bad = || Error::invalid("-v spec", s, VOLUME_FIX);
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [t] => (None, *t, None),
            [a, b] if b.starts_with('/') => (Some(*a), *b, None),
            [t, m] if t.starts_with('/') && is_mode(m) => (None, *t, Some(*m)),
            [a, b, m] if is_mode(m) => (Some(*a), *b, Some(*m)),
            _ => return Err(bad()),
        };
        if !target.starts_with('/') || target.contains('\0') {
            return Err(bad());
        }
        let target = client_path("-v target", target)?;
        if let Some(own) = DIDX_CLIENT_PATHS.iter().find(|p| target == **p || target.starts_with(&format!("{p}/"))) {
            return Err(Error::invalid(
                "-v target",
                s,
                format!("{own} is didx's own (the client's entrypoint and TLS certificates); mount somewhere else"),
            ));
        }
        let source = match source {
            None => VolumeSource::Anonymous,
            Some(src) if src.starts_with('/') => VolumeSource::Host(PathBuf::from(src)),
            Some(src) if src == "." || src == ".." || src.starts_with("./") || src.starts_with("../") => {
                let path = cwd.join(src);
                if !path.exists() {
                    return Err(Error::invalid("-v source", src, format!("{} does not exist; create it or fix the path", path.display())));
                }
                VolumeSource::Host(path)
            }
            Some(src) if crate::util::is_engine_name(src) => VolumeSource::Named(src.to_string()),
            Some(_) => return Err(bad()),
        };
        Ok(VolumeSpec { source, target, mode: mode.map(str::to_string) })
    }

    /// The engine's bind string (`src:dst[:mode]`) for host and named sources; `None` for an
    /// anonymous volume, which is created as a labelled mount instead.
    pub fn bind(&self) -> Option<String> {
        let src = match &self.source {
            VolumeSource::Host(p) => p.display().to_string(),
            VolumeSource::Named(n) => n.clone(),
            VolumeSource::Anonymous => return None,
        };
        Some(match &self.mode {
            Some(m) => format!("{src}:{}:{m}", self.target),
            None => format!("{src}:{}", self.target),
        })
    }
}

/// Paths in the client that didx itself fills: a mount there would hide them.
pub const DIDX_CLIENT_PATHS: &[&str] = &["/didx", "/certs"];

/// An absolute client path in one spelling: `.` and empty parts dropped, no trailing `/`, so
/// `/m`, `/m/` and `/m/.` are one path. A `..` part, or the root itself, is refused.
pub fn client_path(what: &'static str, path: &str) -> Result<String> {
    let mut out = String::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Error::invalid(what, path, "a '..' in a client path is ambiguous; write the path without it")),
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(what, path, "the client's root directory cannot be a mount target; name a directory"));
    }
    Ok(out)
}

/// How the server container gets the privileges dockerd needs (`--isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationMode {
    /// Privileged where the engine grants it, else the caps profile (remembered per engine).
    #[default]
    Auto,
    /// `--privileged` only; fail where refused.
    Privileged,
    /// The explicit capability profile only.
    Caps,
}

impl IsolationMode {
    /// The option value.
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Auto => "auto",
            IsolationMode::Privileged => "privileged",
            IsolationMode::Caps => "caps",
        }
    }
}

impl FromStr for IsolationMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(IsolationMode::Auto),
            "privileged" => Ok(IsolationMode::Privileged),
            "caps" => Ok(IsolationMode::Caps),
            _ => Err(Error::invalid("--isolation value", s, "expected one of auto, privileged, caps")),
        }
    }
}

/// Which engine the client's docker talks to (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineMode {
    /// Its own inner engine in a server container (Docker-in-Docker).
    #[default]
    Dind,
    /// The engine didx itself uses, through didx's engine-API proxy (Docker-outside-of-Docker;
    /// see the engine proxy with the `internals` feature): no server, and the client has root
    /// on the engine's host.
    Host,
}

impl EngineMode {
    /// The option value.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineMode::Dind => "dind",
            EngineMode::Host => "host",
        }
    }
}

impl FromStr for EngineMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dind" => Ok(EngineMode::Dind),
            "host" => Ok(EngineMode::Host),
            _ => Err(Error::invalid(
                "--engine value",
                s,
                "expected dind (the default: an inner engine of its own) or host (the engine didx uses)",
            )),
        }
    }
}

/// Parse a duration such as `30`, `30s`, `500ms`, `2m` or `1h` (under a day).
pub fn parse_duration(what: &'static str, s: &str) -> Result<Duration> {
    let bad = || Error::invalid(what, s, "expected a duration such as 60, 60s, 500ms, 2m or 1h");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A `--network` value: an engine network's name or id (letters, digits, `_`, `.`, `-`, as the
/// engine names networks). `host`, `none` and `container:…` are refused: the server needs its
/// own network namespace (its published port, its iptables).
pub fn network_name(s: &str) -> Result<&str> {
    let fix = "give the name of a bridge or other network of the host engine (docker network ls)";
    if matches!(s, "host" | "none") || s.starts_with("container:") {
        return Err(Error::invalid("--network", s, format!("the server needs a network namespace of its own: {fix}")));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if s.is_empty() || !s.chars().all(ok) || s.starts_with(['.', '-']) {
        return Err(Error::invalid("--network", s, fix));
    }
    Ok(s)
}

/// A reference `--save` takes: a name as docker tags it (no whitespace, no control
/// character, not starting with `-`); a usage error otherwise.
pub fn check_save_image(image: &str) -> Result<()> {
    let ok = !image.is_empty() && !image.starts_with('-') && !image.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(()) } else { Err(Error::invalid("--save image", image, "an image of the inner engine, e.g. app:test")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_takes_image_references_only() {
        for ok in ["app:test", "registry.local:5000/team/app:1", "app@sha256:0123"] {
            assert!(check_save_image(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-o", "a b", "a\nb"] {
            assert!(check_save_image(bad).unwrap_err().is_usage(), "{bad:?}");
        }
    }

    #[test]
    fn clean_policies_parse_and_decide() {
        for p in ["none", "success", "failure", "anycase", "all", "rpt"] {
            assert_eq!(p.parse::<CleanPolicy>().unwrap().as_str(), p);
        }
        let e = "sometimes".parse::<CleanPolicy>().unwrap_err();
        assert!(e.is_usage());
        assert!(e.to_string().contains("'sometimes'") && e.to_string().contains("anycase"));
        assert!(CleanPolicy::Success.removes(true) && !CleanPolicy::Success.removes(false));
        assert!(!CleanPolicy::Failure.removes(true) && CleanPolicy::Failure.removes(false));
        assert!(CleanPolicy::Anycase.removes(true) && CleanPolicy::Anycase.removes(false));
        assert!(!CleanPolicy::None.removes(false));
    }

    #[test]
    fn versions_map_like_didx_sh() {
        let v = |s| Version::parse("--sv", s).unwrap();
        assert_eq!(v("latest").server_image(), "docker:dind");
        assert_eq!(v("latest").client_image(), "docker:latest");
        assert_eq!(v("24.0").server_image(), "docker:24.0-dind");
        assert_eq!(v("24.0").client_image(), "docker:24.0");
        assert_eq!(v("1.10-dind").server_image(), "docker:1.10-dind");
        for bad in ["", "a b", "x:y", "-1", "1/2", "x_starting", "24_0"] {
            assert!(Version::parse("--sv", bad).unwrap_err().is_usage(), "{bad}");
        }
    }

    #[test]
    fn env_var_names() {
        assert!(EnvVarName::parse("DIND_CLIENT_NAME").is_ok());
        assert!(EnvVarName::parse("_x1").is_ok());
        for bad in ["", "1X", "A-B", "A B", "$A"] {
            assert!(EnvVarName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_specs() {
        let cwd = std::env::temp_dir();
        let p = |s| VolumeSpec::parse(s, &cwd);
        assert_eq!(p("/data").unwrap().source, VolumeSource::Anonymous);
        assert_eq!(p("/data").unwrap().bind(), None);
        assert_eq!(p("/data:ro").unwrap().mode.as_deref(), Some("ro"));
        let host = p("/etc:/mnt/etc:ro").unwrap();
        assert_eq!(host.source, VolumeSource::Host("/etc".into()));
        assert_eq!(host.bind().unwrap(), "/etc:/mnt/etc:ro");
        assert_eq!(p("cache:/cache").unwrap().source, VolumeSource::Named("cache".into()));
        assert_eq!(p(".:/w").unwrap().source, VolumeSource::Host(cwd.join(".")));
        // One spelling per client path, so duplicates are seen.
        assert_eq!(p("/m/.").unwrap().target, "/m");
        assert_eq!(p("/m/").unwrap().target, "/m");
        assert_eq!(p("//m//n/./").unwrap().target, "/m/n");
        assert_eq!(p("/etc:/m/.:ro").unwrap().target, "/m");
        assert_eq!(p("/didxx").unwrap().target, "/didxx");
        for bad in [
            "",
            "data",
            "rel/x:/a",
            "/a:b",
            "/a:/b:bogus",
            "a:b:c:d",
            "./no-such-dir-didx:/x",
            "x y:/a",
            "/",
            "/.",
            "/etc:/",
            "/a/../b",
            "/didx",
            "/didx/x",
            "/etc:/certs",
            "/certs/client",
            "vol:/certs/client/ca.pem:ro",
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.is_usage(), "{bad}");
        }
    }

    #[test]
    fn a_killed_run_counts_as_failed_for_the_lease() {
        let held: Vec<CleanPolicy> = [CleanPolicy::None, CleanPolicy::Success, CleanPolicy::Failure, CleanPolicy::Anycase]
            .into_iter()
            .filter(|p| p.holds())
            .collect();
        assert_eq!(held, [CleanPolicy::Failure, CleanPolicy::Anycase]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("t", "30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("t", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("t", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("t", "5h").unwrap(), Duration::from_secs(5 * 3600));
        // A day or more, an unknown unit.
        for bad in ["", "0", "x", "24h", "5d", "-1"] {
            assert!(parse_duration("t", bad).is_err(), "{bad}");
        }
    }
}

/// Where `--workdir-here` mounts the current directory, and the working directory of every
/// COMMAND with it.
pub const WORKDIR: &str = "/work";
/// Where `--ssh-agent` mounts the host's agent socket (`SSH_AUTH_SOCK` in the client).
pub const SSH_AGENT_SOCK: &str = "/run/didx/ssh-agent.sock";

/// Who COMMANDs run as (`--user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    /// The user running didx: its uid, gid and every supplementary gid (`--user host`).
    Host,
    /// These ids: `gid` defaults to the host passwd entry's for `uid`, else `uid`; `groups`
    /// are supplementary gids (`--user UID[:GID]` gives none).
    Ids {
        /// The user id.
        uid: u32,
        /// The primary group id.
        gid: Option<u32>,
        /// Supplementary group ids.
        groups: Vec<u32>,
    },
}

impl UserSpec {
    /// Parse a `--user` value: `host` or `UID[:GID]` (numbers).
    pub fn parse(s: &str) -> Result<UserSpec> {
        if s == "host" {
            return Ok(UserSpec::Host);
        }
        let bad = || Error::invalid("--user value", s, "expected host or UID[:GID] (numbers), e.g. --user host or --user 1000:1000");
        let (uid, gid) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let uid: u32 = uid.parse().map_err(|_| bad())?;
        let gid: Option<u32> = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
        Ok(UserSpec::Ids { uid, gid, groups: Vec::new() })
    }
}
