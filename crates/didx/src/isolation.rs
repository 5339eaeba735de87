//! How the server container gets what dockerd needs: `--privileged`, or where the engine
//! refuses that (e.g. its root lacks a capability, so runc fails with "unable to apply caps"),
//! the explicit caps profile:
//!
//! - every capability in this process's bounding set (the host's), less any the engine does
//!   not know;
//! - seccomp and AppArmor unconfined;
//! - no masked or read-only /proc paths (`systempaths=unconfined`);
//! - every device allowed by the device cgroup (`a *:* rwm`), so the inner engine can give its
//!   own `--privileged` containers every device (they still need every capability);
//! - /sys (mount and superblock) and the cgroup filesystem remounted writable by the
//!   entrypoint (needs CAP_SYS_ADMIN).
//!
//! The outcome of `auto` is remembered per engine (by its ID) in the cache directory, so only
//! the first run on an engine pays for the refused privileged start.

use bollard::models::HostConfig;

/// Linux capability names by bit number (capability.h).
const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The isolation a server container is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// `--privileged`.
    Privileged,
    /// The caps profile with these capabilities (`CAP_*` names).
    Caps(Vec<String>),
}

impl Isolation {
    /// The caps profile for this host: the capabilities of this process's bounding set.
    pub fn caps_profile() -> Isolation {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Isolation::Caps(caps_from_status(&status))
    }

    /// The caps profile for the host of `engine`: this process's bounding set when didx runs
    /// on that host, but when didx runs in a container of the engine (whose bounding set is
    /// the engine's default, without `CAP_SYS_ADMIN`), the bounding set of the host's init,
    /// read once by a short container of `image` in the host's PID namespace and remembered
    /// for the engine (`engine_id`).
    pub async fn caps_profile_on(engine: &crate::engine::Engine, engine_id: &str, image: &str, env: &str) -> crate::error::Result<Isolation> {
        if crate::dood::own_mounts(engine).await?.is_none() {
            return Ok(Isolation::caps_profile());
        }
        if let Some(status) = crate::cache::read("host-caps", engine_id) {
            return Ok(Isolation::Caps(caps_from_status(&status)));
        }
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["cat".into(), "/proc/1/status".into()]),
            labels: Some(crate::labels::for_resource(env, crate::labels::Role::Source, crate::util::now_secs())),
            host_config: Some(HostConfig { pid_mode: Some("host".into()), ..Default::default() }),
            ..Default::default()
        };
        let name = format!("dind_{env}_caps_probe");
        let id = engine.create_container(&name, body).await?;
        let read = async {
            engine.start(&id).await?;
            engine.wait(&id).await?;
            engine.logs_tail(&id, 200).await
        }
        .await;
        engine.remove_container(&id).await?;
        let status = read?;
        let caps = caps_from_status(&status);
        if caps.is_empty() {
            return Ok(Isolation::caps_profile());
        }
        if let Err(e) = crate::cache::write("host-caps", engine_id, &status) {
            tracing::debug!(error = %e, "cannot remember the engine host's capabilities; probed again next time");
        }
        Ok(Isolation::Caps(caps))
    }

    /// A short name for status lines.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::Privileged => "privileged",
            Isolation::Caps(_) => "caps",
        }
    }

    /// Set the host config fields this isolation needs.
    pub fn apply(&self, hc: &mut HostConfig) {
        match self {
            Isolation::Privileged => hc.privileged = Some(true),
            Isolation::Caps(caps) => {
                hc.cap_add = Some(caps.clone());
                hc.security_opt = Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]);
                hc.masked_paths = Some(vec![]);
                hc.readonly_paths = Some(vec![]);
                hc.device_cgroup_rules = Some(vec!["a *:* rwm".into()]);
            }
        }
    }

    /// Drop one capability the engine said it does not know (`unknown capability: "CAP_BPF"`):
    /// its name without `CAP_`, or None when the message names none this profile holds.
    pub fn drop_unknown(&mut self, engine_message: &str) -> Option<String> {
        let Isolation::Caps(caps) = self else { return None };
        let rest = engine_message.split("unknown capability: ").nth(1)?;
        let name = rest.trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace());
        let name = name.split(['"', '\'']).next().unwrap_or("");
        let bare = name.strip_prefix("CAP_").unwrap_or(name);
        let before = caps.len();
        caps.retain(|c| c != bare && c != name);
        (caps.len() != before).then(|| bare.to_string())
    }
}

/// Capability names (without `CAP_`) in the `CapBnd` line of a /proc status file.
pub fn caps_from_status(status: &str) -> Vec<String> {
    let bits = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok()).unwrap_or(0);
    CAP_NAMES.iter().enumerate().filter(|(i, _)| bits >> i & 1 == 1).map(|(_, n)| n.to_string()).collect()
}

/// True when an engine error says runc could not grant the privileged capability set.
pub fn is_caps_refusal(message: &str) -> bool {
    message.contains("unable to apply caps")
}

/// True when an earlier `auto` run found that this engine refuses `--privileged`.
pub fn remembered_refusal(engine_id: &str) -> bool {
    crate::cache::read("isolation", engine_id).is_some_and(|s| s.trim() == "caps")
}

/// Remember that this engine refuses `--privileged`. Failing to write only costs speed.
pub fn remember_refusal(engine_id: &str) {
    if let Err(e) = crate::cache::write("isolation", engine_id, "caps\n") {
        tracing::debug!(error = %e, "cannot cache isolation outcome");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounding_set_maps_to_names() {
        // This machine's root: everything up to CHECKPOINT_RESTORE except SYS_RESOURCE (bit 24).
        let caps = caps_from_status("Name:\tx\nCapBnd:\t000001fffeffffff\n");
        assert_eq!(caps.len(), CAP_NAMES.len() - 1);
        assert!(!caps.contains(&"SYS_RESOURCE".to_string()));
        assert!(caps.contains(&"SYS_ADMIN".to_string()) && caps.contains(&"BPF".to_string()));
        assert!(caps_from_status("nothing").is_empty());
    }

    #[test]
    fn unknown_capabilities_are_dropped_one_by_one() {
        let mut iso = Isolation::Caps(vec!["SYS_ADMIN".into(), "BPF".into()]);
        assert_eq!(iso.drop_unknown(r#"invalid CapAdd: unknown capability: "CAP_BPF""#).as_deref(), Some("BPF"));
        assert_eq!(iso, Isolation::Caps(vec!["SYS_ADMIN".into()]));
        assert_eq!(iso.drop_unknown(r#"invalid CapAdd: unknown capability: "CAP_BPF""#), None);
        assert_eq!(iso.drop_unknown("something else"), None);
        assert_eq!(Isolation::Privileged.drop_unknown(r#"unknown capability: "CAP_BPF""#), None);
    }

    #[test]
    fn caps_profile_unconfines_and_unmasks() {
        let mut hc = HostConfig::default();
        Isolation::Caps(vec!["SYS_ADMIN".into()]).apply(&mut hc);
        assert_eq!(hc.privileged, None);
        assert_eq!(hc.masked_paths, Some(vec![]));
        assert_eq!(hc.readonly_paths, Some(vec![]));
        assert!(hc.security_opt.unwrap().contains(&"seccomp=unconfined".to_string()));
        let mut hc = HostConfig::default();
        Isolation::Privileged.apply(&mut hc);
        assert_eq!(hc.privileged, Some(true));
    }

    #[test]
    fn caps_refusal_is_recognised() {
        assert!(is_caps_refusal(
            "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply caps: operation not permitted: unknown"
        ));
        assert!(!is_caps_refusal("no such image"));
    }
}
