//! Who an environment is: its id, its containers' names and ids, and its owner.

/// An environment id: 10 random base-36 characters, unique across processes and hosts that
/// share an engine (unlike didx.sh's PID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvId(pub(super) String);

impl EnvId {
    /// A fresh random id.
    pub fn generate() -> EnvId {
        EnvId(crate::util::token())
    }

    /// The id an existing environment carries (its `io.didx.env` label).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn of_existing(id: &str) -> EnvId {
        EnvId(id.to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EnvId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
/// A container didx created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// Its engine id.
    pub id: String,
}
/// This process as an environment's owner: `USER@HOST pid PID` (`USER` from `$USER`, else
/// `uid N`).
pub fn owner() -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("{user}@{} pid {}", hostname(), std::process::id())
}

/// The middle part of a pooled client's name until it is claimed.
pub(super) const POOLED: &str = "_pooled_";
/// The middle part of a pooled client's name while its filler still makes it ready.
pub(super) const POOLING: &str = "_pooling_";
/// The middle part of a claimed (run) client's name.
pub(super) const CLIENT: &str = "_client_";

/// What a client's name says of its pooled environment `env_id` (as the pool's listing reads it):
/// `Some(true)` under the pool-only name (ready once running), `Some(false)` still being made
/// (`_pooling_`), `None` under any other name (claimed). Pure.
pub(super) fn unclaimed_client(env_id: &str, client_name: &str) -> Option<bool> {
    if client_name.starts_with(&format!("dind_{env_id}{POOLED}")) {
        Some(true)
    } else if client_name.starts_with(&format!("dind_{env_id}{POOLING}")) {
        Some(false)
    } else {
        None
    }
}

/// This host's name ('/' never occurs in one; replaced all the same, it separates the filler
/// label's fields).
pub(super) fn hostname() -> String {
    // uname's nodename, which is what gethostname reads on Linux; it cannot fail.
    rustix::system::uname().nodename().to_string_lossy().replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_name_safe() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| EnvId::generate().0).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|i| i.len() == 10 && i.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())));
    }
}
