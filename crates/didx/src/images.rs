//! Choosing the server and client images: the mapped `docker:*` images, explicit overrides,
//! pulls, and the offline fallback: a mapped `docker:X-dind` or `docker:X` that is absent and
//! cannot be pulled is replaced by `didx/dind:X` when present (`didx image build --suite …`
//! tags each engine version it builds), else by `didx/dind:local`.

use std::time::Duration;

use crate::engine::Engine;
use crate::error::{Error, Result};

/// The offline image `didx image build` makes.
pub const LOCAL_IMAGE: &str = "didx/dind:local";
/// The command that builds it.
pub const BUILD_COMMAND: &str = "didx image build";
/// A pull that receives nothing for this long counts as failed.
const PULL_IDLE: Duration = Duration::from_secs(60);
/// After a mapped image failed to pull and the offline image stood in, runs within this long
/// do not try again (on a host whose DNS hangs, each try could cost up to the 60 s idle limit).
/// `--pull` always tries.
pub const PULL_RETRY_AFTER: Duration = Duration::from_secs(600);

/// An image wanted for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The reference.
    pub image: String,
    /// True when given by `--server-image`/`--client-image` or their variables: no fallback.
    pub explicit: bool,
    /// The offline image of the same engine version (`didx/dind:X`), tried first when the
    /// mapped image cannot be had; `None` for `latest` and explicit images.
    pub versioned: Option<String>,
}

impl Wanted {
    /// The offline images that may stand in for this one, in the order they are tried:
    /// `didx/dind:X` of the same version, then [`LOCAL_IMAGE`]. None for an explicit image.
    pub fn stand_ins(&self) -> Vec<&str> {
        if self.explicit {
            return vec![];
        }
        let mut v: Vec<&str> = self.versioned.as_deref().into_iter().collect();
        if !v.contains(&LOCAL_IMAGE) {
            v.push(LOCAL_IMAGE);
        }
        v
    }
}

/// The first of `candidates` that `present` says is on the engine.
async fn first_present<'a, F, Fut>(candidates: &[&'a str], present: F) -> Result<Option<&'a str>>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    for c in candidates {
        if present(c).await? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Which server and client images were chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The server image to use.
    pub server: String,
    /// The client image to use.
    pub client: String,
    /// The mapped images that were replaced by an offline image, each with the image used
    /// (`didx/dind:X` of the same version, else [`LOCAL_IMAGE`]).
    pub fell_back: Vec<(String, String)>,
    /// Pulls that failed where a local copy was used instead (with `--pull`).
    pub stale: Vec<String>,
    /// Mapped images not pulled because a pull failed this recently (see [`PULL_RETRY_AFTER`]).
    pub not_retried: Vec<(String, Duration)>,
}

/// Resolve both images. Present images are used as they are unless `pull`; an absent image is
/// pulled; a mapped image that cannot be had is replaced by an offline image (see
/// [`Wanted::stand_ins`]) when one exists.
pub async fn resolve(engine: &Engine, server: &Wanted, client: &Wanted, pull: bool) -> Result<Resolved> {
    let mut out = Resolved { server: String::new(), client: String::new(), fell_back: vec![], stale: vec![], not_retried: vec![] };
    // Resolve each distinct image once (server and client are often the same local image).
    let mut cache: Vec<(Wanted, String)> = Vec::new();
    for (slot, wanted) in [(0, server), (1, client)] {
        let chosen = match cache.iter().find(|(w, _)| w == wanted) {
            Some((_, c)) => c.clone(),
            None => {
                let c = resolve_one(engine, wanted, pull, &mut out).await?;
                cache.push((wanted.clone(), c.clone()));
                c
            }
        };
        if slot == 0 { out.server = chosen } else { out.client = chosen }
    }
    Ok(out)
}

async fn resolve_one(engine: &Engine, wanted: &Wanted, pull: bool, out: &mut Resolved) -> Result<String> {
    let present = engine.image(&wanted.image).await?.is_some();
    let stand_ins = wanted.stand_ins();
    let stand_in = || first_present(&stand_ins, |i| async move { Ok(engine.image(i).await?.is_some()) });
    if present && !pull {
        return Ok(wanted.image.clone());
    }
    // A mapped image that failed to pull a moment ago, with the offline image there to stand
    // in: do not wait on the registry again.
    if !present
        && !pull
        && !wanted.explicit
        && let Some(ago) = failed_pull_age(&wanted.image).filter(|a| *a < PULL_RETRY_AFTER)
        && let Some(used) = stand_in().await?
    {
        out.fell_back.push((wanted.image.clone(), used.to_string()));
        out.not_retried.push((wanted.image.clone(), ago));
        return Ok(used.to_string());
    }
    let pull_error = match engine.pull(&wanted.image, PULL_IDLE).await {
        Ok(()) => {
            forget_failed_pull(&wanted.image);
            return Ok(wanted.image.clone());
        }
        Err(e) => e,
    };
    remember_failed_pull(&wanted.image);
    if present {
        out.stale.push(wanted.image.clone());
        return Ok(wanted.image.clone());
    }
    if let Some(used) = stand_in().await? {
        out.fell_back.push((wanted.image.clone(), used.to_string()));
        return Ok(used.to_string());
    }
    let why = crate::engine::message_of(&pull_error)
        .map(|m| format!(" ({})", m.lines().next().unwrap_or(m)))
        .unwrap_or_else(|| format!(" ({pull_error})"));
    Err(Error::ImageMissing { image: wanted.image.clone(), why, build_command: BUILD_COMMAND.to_string() })
}

/// A failed pull of `image` is remembered in the cache directory; the file's modification time
/// is the failure's.
const FAILED_PULL: &str = "pull-failed";

fn failed_pull_age(image: &str) -> Option<Duration> {
    crate::cache::modified(FAILED_PULL, image)?.elapsed().ok()
}

fn remember_failed_pull(image: &str) {
    if let Err(e) = crate::cache::write(FAILED_PULL, image, image) {
        tracing::debug!(error = %e, "cannot remember a failed pull");
    }
}

fn forget_failed_pull(image: &str) {
    crate::cache::forget(FAILED_PULL, image);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Version;

    fn mapped(sv: &str) -> Wanted {
        let v = Version::parse("--sv value", sv).unwrap();
        Wanted { image: v.server_image(), explicit: false, versioned: v.offline_image() }
    }

    #[test]
    fn a_versioned_offline_image_stands_in_before_the_local_one() {
        assert_eq!(mapped("26.1.5").stand_ins(), ["didx/dind:26.1.5", LOCAL_IMAGE]);
        assert_eq!(mapped("20.10.24-dind").stand_ins(), ["didx/dind:20.10.24", LOCAL_IMAGE]);
        assert_eq!(mapped("latest").stand_ins(), [LOCAL_IMAGE]);
        assert_eq!(mapped("local").stand_ins(), [LOCAL_IMAGE], "named once");
        let explicit = Wanted { image: "x:1".into(), explicit: true, versioned: None };
        assert!(explicit.stand_ins().is_empty(), "an explicit image never falls back");
    }

    #[tokio::test]
    async fn the_first_present_stand_in_is_chosen() {
        let w = mapped("26.1.5");
        let order = w.stand_ins();
        let on = |present: &'static [&'static str]| move |i: &str| {
            let p = present.contains(&i);
            async move { Ok(p) }
        };
        assert_eq!(first_present(&order, on(&["didx/dind:26.1.5", LOCAL_IMAGE])).await.unwrap(), Some("didx/dind:26.1.5"));
        assert_eq!(first_present(&order, on(&[LOCAL_IMAGE])).await.unwrap(), Some(LOCAL_IMAGE));
        assert_eq!(first_present(&order, on(&[])).await.unwrap(), None);
        // Another version's image is no stand-in.
        assert_eq!(first_present(&mapped("27.0").stand_ins(), on(&["didx/dind:26.1.5"])).await.unwrap(), None);
    }
}
