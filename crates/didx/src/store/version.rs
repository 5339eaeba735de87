//! The inner engine a server image runs (`dockerd --version`), which names its store: asked
//! once per image ID by a probe container and remembered in the cache directory.

use bollard::models::{ContainerCreateBody, HostConfig};

use super::volume::{helper_labels, prefix};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The inner engine of server `image`: `dockerd --version`'s line (`Docker version
/// 20.10.24+dfsg1, build 5d6db84`), asked once per image ID (a container that prints it) and
/// remembered in the cache directory.
pub async fn engine_line(engine: &Engine, image: &str) -> Result<String> {
    let id = engine
        .image(image)
        .await?
        .and_then(|i| i.id)
        .ok_or_else(|| Error::Store { store: String::new(), why: format!("its server image {image} is not on the engine") })?;
    if let Some(v) = crate::cache::read("engine-line", &id).map(|v| v.trim().to_string()).filter(|v| parse_version(v).is_some()) {
        return Ok(v);
    }
    let line = probe_version(engine, image).await?;
    let line = line.lines().find(|l| parse_version(l).is_some()).map(str::trim).map(str::to_string).ok_or_else(|| Error::Store {
        store: String::new(),
        why: format!("cannot read the engine version of {image} from `dockerd --version`: {:?}", line.trim()),
    })?;
    if let Err(e) = crate::cache::write("engine-line", &id, &line) {
        tracing::debug!(error = %e, "cannot remember an engine version");
    }
    Ok(line)
}

/// The inner engine version of server `image` (e.g. `20.10.24+dfsg1`, read from its `dockerd --version`).
pub async fn engine_version(engine: &Engine, image: &str) -> Result<String> {
    let line = engine_line(engine, image).await?;
    Ok(parse_version(&line).unwrap_or_default())
}

/// The version in `dockerd --version`'s line (`Docker version 20.10.24+dfsg1, build 5d6db84`).
pub fn parse_version(line: &str) -> Option<String> {
    let rest = line.split("version ").nth(1)?;
    let v = rest.split([',', ' ', '\n']).next()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

async fn probe_version(engine: &Engine, image: &str) -> Result<String> {
    let prefix = prefix()?;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["dockerd".to_string(), "--version".to_string()]),
        cmd: Some(vec![]),
        labels: Some(helper_labels(&prefix, "probe")),
        host_config: Some(HostConfig { network_mode: Some("none".to_string()), ..Default::default() }),
        ..Default::default()
    };
    let id = engine.create_container(&format!("{prefix}-probe-{}", crate::util::token()), body).await?;
    let ran = async {
        engine.start(&id).await?;
        let code = engine.wait(&id).await?;
        let out = engine.logs_tail(&id, 5).await?;
        Ok::<_, Error>((code, out))
    }
    .await;
    if let Err(e) = engine.remove_container(&id).await {
        tracing::warn!(container = %id, error = %e, "cannot remove the engine version probe");
    }
    match ran? {
        (0, out) => Ok(out),
        (code, out) => {
            Err(Error::Store { store: String::new(), why: format!("`dockerd --version` in {image} exited {code}: {}", out.trim()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_dockerd_s_line() {
        assert_eq!(parse_version("Docker version 20.10.24+dfsg1, build 5d6db84\n").as_deref(), Some("20.10.24+dfsg1"));
        assert_eq!(parse_version("Docker version 26.1.5+dfsg1, build 411e817").as_deref(), Some("26.1.5+dfsg1"));
        assert_eq!(parse_version("dockerd: not found"), None);
    }
}
