//! One store's volume: its name (from the prefix and the inner engine's version), its labels
//! and mount, the labels of the helper containers that read it, and who mounts it.

use std::collections::HashMap;

use bollard::models::{Mount, MountType};

use crate::engine::Engine;
use crate::env::STORE_PATH;
use crate::error::{Error, Result};
use crate::labels;

/// The variable naming the stores' prefix (default [`DEFAULT_PREFIX`]): tests and separate
/// users of one engine keep their stores apart with it.
pub const PREFIX_VAR: &str = "DIDX_STORE_PREFIX";

/// The stores' default prefix.
pub const DEFAULT_PREFIX: &str = "didx-store";

/// The one inner storage driver a store holds.
pub const DRIVER: &str = "overlay2";

/// The stores' prefix: `DIDX_STORE_PREFIX`, else [`DEFAULT_PREFIX`]. A volume name's
/// characters only (letters, digits, `_ . -`, starting with a letter or digit).
pub fn prefix() -> Result<String> {
    let p = std::env::var(PREFIX_VAR).ok().filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    if !crate::util::is_engine_name(&p) {
        return Err(Error::invalid(PREFIX_VAR, p, "letters, digits, '_', '.' and '-', starting with a letter or digit"));
    }
    Ok(p)
}

/// One store: its volume, the inner engine version it is for, the server image its fillers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// The volume's name, `<prefix>-<version>-overlay2`.
    pub name: String,
    /// The inner engine's version (`20.10.24+dfsg1`).
    pub version: String,
    /// The server image its fillers (and readers) run.
    pub image: String,
    /// Its prefix.
    pub prefix: String,
    /// The `dockerd --version` line of the engine that uses it, when known (empty from
    /// [`list`](super::list)).
    pub engine: String,
}

impl Store {
    /// The store for inner engine `version`, filled by `image`.
    pub fn new(prefix: &str, version: &str, image: &str) -> Store {
        let safe: String = version.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
        Store {
            name: format!("{prefix}-{safe}-{DRIVER}"),
            version: version.to_string(),
            image: image.to_string(),
            prefix: prefix.to_string(),
            engine: String::new(),
        }
    }

    /// Its filler's container name: fixed, so that one filler at a time can exist (the claim).
    pub fn filler_name(&self) -> String {
        format!("{}-filler", self.name)
    }

    pub(super) fn volume_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (labels::STORE.to_string(), self.prefix.clone()),
            (labels::STORE_VERSION.to_string(), self.version.clone()),
            (labels::STORE_DRIVER.to_string(), DRIVER.to_string()),
            (labels::STORE_IMAGE.to_string(), self.image.clone()),
        ])
    }
}

pub(super) fn helper_labels(prefix: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([(labels::STORE.to_string(), prefix.to_string()), (labels::STORE_ROLE.to_string(), role.to_string())])
}

pub(super) fn store_mount(store: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(STORE_PATH.to_string()),
        source: Some(store.to_string()),
        typ: Some(MountType::VOLUME),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The containers that mount volume `store` (its readers excepted: they never run).
pub(super) async fn users(engine: &Engine, store: &str) -> Result<Vec<String>> {
    let filter = HashMap::from([("volume".to_string(), vec![store.to_string()])]);
    Ok(engine
        .containers(filter)
        .await?
        .into_iter()
        .filter(|c| c.labels.as_ref().and_then(|l| l.get(labels::STORE_ROLE)).map(String::as_str) != Some("reader"))
        .filter_map(|c| c.names.and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_named_by_prefix_version_and_driver() {
        let s = Store::new("didx-store", "20.10.24+dfsg1", "didx/dind:local");
        assert_eq!(s.name, "didx-store-20.10.24_dfsg1-overlay2");
        assert_eq!(s.filler_name(), "didx-store-20.10.24_dfsg1-overlay2-filler");
        let l = s.volume_labels();
        assert_eq!(l[labels::STORE], "didx-store");
        assert_eq!(l[labels::STORE_VERSION], "20.10.24+dfsg1");
        assert!(!l.contains_key(labels::MANAGED), "--clean all must leave stores");
    }

    #[test]
    fn the_prefix_is_a_volume_name_s() {
        crate::cache::tests::with_cache(|_| {
            assert_eq!(prefix().unwrap(), DEFAULT_PREFIX);
            crate::cache::tests::set_env(PREFIX_VAR, Some("t-1.x_y".as_ref()));
            assert_eq!(prefix().unwrap(), "t-1.x_y");
            crate::cache::tests::set_env(PREFIX_VAR, Some("-bad".as_ref()));
            assert!(prefix().is_err());
            crate::cache::tests::set_env(PREFIX_VAR, Some("a/b".as_ref()));
            assert!(prefix().is_err());
            crate::cache::tests::set_env(PREFIX_VAR, None);
        });
    }
}
