//! What marks a pooled environment: its server's pool labels, and its client's names as it
//! moves from `_pooling_` to `_pooled_` to its run name.

use crate::env::id::{CLIENT, POOLED, POOLING};
use crate::env::spec::{EnvSpec, PoolTag};
use crate::error::{Error, Result};
use crate::labels;

impl PoolTag {
    /// The server's labels for this tag.
    pub(crate) fn labels(&self) -> Vec<(String, String)> {
        let mut l = vec![
            (labels::POOL.to_string(), self.key.clone()),
            (labels::POOL_SIZE.to_string(), self.size.to_string()),
            (labels::POOL_FILLER.to_string(), self.filler.clone()),
            (labels::POOL_DEADLINE.to_string(), self.deadline.to_string()),
        ];
        if let Some(t) = self.idle_timeout {
            l.push((labels::POOL_IDLE.to_string(), t.to_string()));
        }
        if let Some(n) = &self.name {
            l.push((labels::POOL_NAME.to_string(), n.clone()));
        }
        l
    }
}

/// The variable naming the pool this process fills, lists, empties and claims from.
pub const NAME_VAR: &str = "DIDX_POOL_NAME";

/// The pool this process uses: `DIDX_POOL_NAME`, else the default pool (`None`). Pools of
/// different names share an engine without seeing each other: each has its own keys, its own
/// lock and `pool down` count in the cache directory, and `didx pool`, `pool up`, `pool down`
/// and `--pool` claims see only their own. A name is letters, digits, `_ . -` (starting with a
/// letter or digit), at most 40 of them.
pub fn name() -> Result<Option<String>> {
    match std::env::var(NAME_VAR) {
        Ok(n) if !n.is_empty() => {
            if n.len() > 40 || !crate::util::is_engine_name(&n) {
                return Err(Error::invalid(NAME_VAR, n, "at most 40 letters, digits, '_', '.' and '-', starting with a letter or digit"));
            }
            Ok(Some(n))
        }
        _ => Ok(None),
    }
}

/// A file of the pool `name` in the cache directory: `base` for the default pool,
/// `base-NAME` for a named one.
pub(super) fn file_of(base: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{base}-{n}"),
        None => base.to_string(),
    }
}

/// A pooled client's name before it is claimed: `dind_<id>_pooled_<cv>`.
pub(super) fn pooled_name(spec: &EnvSpec) -> String {
    format!("dind_{}{POOLED}{}", spec.id, spec.cv.as_str())
}

/// A pooled client's name while its filler makes it: `dind_<id>_pooling_<cv>`.
pub(super) fn pooling_name(spec: &EnvSpec) -> String {
    format!("dind_{}{POOLING}{}", spec.id, spec.cv.as_str())
}

/// The run name a pooled client is renamed to when claimed.
pub(super) fn claimed_name(pooled: &str) -> String {
    pooled.replacen(POOLED, CLIENT, 1)
}

#[cfg(test)]
mod tests {
    use super::super::lock::site_of;
    use super::super::testing::spec;
    use super::*;

    #[test]
    fn names_and_filler_sites() {
        let s = spec();
        assert_eq!(pooled_name(&s), format!("dind_{}_pooled_latest", s.id));
        assert_eq!(claimed_name(&pooled_name(&s)), s.client_name());
        assert_eq!(site_of("h/abc/12/tok"), Some("h/abc"));
        assert_eq!(site_of("h"), None);
        assert_eq!(site_of("h/abc"), None);
    }
}
