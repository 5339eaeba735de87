//! What a `--cp` and a `--cp-out` value say (pure: parsed and checked against the host's files, nothing
//! copied).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a `--cp` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpSource {
    /// A host file or directory (absolute).
    Host {
        /// The path, made absolute.
        path: PathBuf,
        /// The path was given ending in `/.`: copy the directory's contents.
        contents: bool,
    },
    /// A tar stream on stdin.
    Stdin,
    /// A path in a container on the host engine.
    Container {
        /// Container name or id.
        container: String,
        /// Absolute path in it.
        path: String,
    },
    /// A path in an image on the host engine.
    Image {
        /// Image reference.
        image: String,
        /// Absolute path in it.
        path: String,
    },
}

/// One validated `--cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpSpec {
    /// The source.
    pub source: CpSource,
    /// Absolute target path in the client; a trailing `/` means "into this directory".
    pub target: String,
}

const CP_FIX: &str = "expected SOURCE:ABSOLUTE_CLIENT_PATH with SOURCE a host path (/abs or ./rel), '-' (tar on stdin), CONTAINER:/path or IMAGE[:TAG]::/path";


fn is_image_ref(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

impl CpSpec {
    /// Parse a `--cp` value; relative host paths resolve against `cwd`. A host source that
    /// does not exist is refused here, before anything starts.
    pub fn parse(s: &str, cwd: &Path) -> Result<CpSpec> {
        let bad = || Error::invalid("--cp spec", s, CP_FIX);
        // The target is what follows the last ":/" (sources may hold ":/" themselves).
        let i = s.rfind(":/").ok_or_else(bad)?;
        let (src, target) = (&s[..i], &s[i + 1..]);
        if src.is_empty() || target.contains('\0') {
            return Err(bad());
        }
        let source = if src == "-" {
            CpSource::Stdin
        } else if src.starts_with('/') || src.starts_with('.') {
            host_source(src, cwd)?
        } else if let Some((image, path)) = src.split_once("::") {
            if !is_image_ref(image) || !path.starts_with('/') {
                return Err(bad());
            }
            CpSource::Image { image: image.to_string(), path: path.to_string() }
        } else if let Some((container, path)) = src.split_once(':') {
            if !crate::util::is_engine_name(container) || !path.starts_with('/') {
                return Err(bad());
            }
            CpSource::Container { container: container.to_string(), path: path.to_string() }
        } else {
            host_source(src, cwd)?
        };
        Ok(CpSpec { source, target: target.to_string() })
    }
}

fn host_source(src: &str, cwd: &Path) -> Result<CpSource> {
    let contents = src.ends_with("/.") || src == ".";
    let path = cwd.join(src);
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(Error::invalid("--cp source", src, format!("{} does not exist; fix the path", path.display())));
    }
    Ok(CpSource::Host { path, contents })
}

/// A `--cp-out` spec: a member's absolute path, and where it goes here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpOutSpec {
    /// The absolute path in the client (ending in `/.`: a directory's contents).
    pub from: String,
    /// The host path, absolute (made so against the working directory of the parse); a
    /// trailing `/` kept (a directory to copy into).
    pub to: PathBuf,
}

impl CpOutSpec {
    /// `CLIENT_PATH:HOST_PATH`: `CLIENT_PATH` absolute (split at its first `:`), `HOST_PATH`
    /// absolute or relative to `cwd`; a usage error otherwise.
    pub fn parse(s: &str, cwd: &Path) -> Result<CpOutSpec> {
        let bad = |fix: &str| Error::invalid("--cp-out spec", s, fix);
        let (from, to) = s.split_once(':').ok_or_else(|| bad("expected CLIENT_PATH:HOST_PATH, e.g. /work/report.xml:./out/"))?;
        if !from.starts_with('/') {
            return Err(bad("the client path must be absolute, e.g. /work/report.xml:./out/"));
        }
        if to.is_empty() {
            return Err(bad("the host path is empty: give a file or a directory (ending in /)"));
        }
        if from.contains('\0') || to.contains('\0') {
            return Err(bad("a path holds a NUL byte"));
        }
        let mut host = cwd.join(to);
        if to.ends_with('/') && !host.as_os_str().to_string_lossy().ends_with('/') {
            host.as_mut_os_string().push("/");
        }
        Ok(CpOutSpec { from: from.to_string(), to: host })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CpSpec> {
        CpSpec::parse(s, Path::new("/"))
    }

    #[test]
    fn cp_specs_parse_into_the_four_sources() {
        assert_eq!(
            parse("/etc/hostname:/t/").unwrap(),
            CpSpec { source: CpSource::Host { path: "/etc/hostname".into(), contents: false }, target: "/t/".into() }
        );
        assert_eq!(parse("-:/in/").unwrap().source, CpSource::Stdin);
        assert_eq!(
            parse("dreamy_pare:/some/file:/client/target/").unwrap(),
            CpSpec {
                source: CpSource::Container { container: "dreamy_pare".into(), path: "/some/file".into() },
                target: "/client/target/".into()
            }
        );
        assert_eq!(
            parse("alpine:3.3::/tmp/file:/client/target/").unwrap().source,
            CpSource::Image { image: "alpine:3.3".into(), path: "/tmp/file".into() }
        );
        assert_eq!(
            parse("reg:5000/ns/img::/etc:/x").unwrap().source,
            CpSource::Image { image: "reg:5000/ns/img".into(), path: "/etc".into() }
        );
        assert!(matches!(parse("/etc/.:/x").unwrap().source, CpSource::Host { contents: true, .. }));
    }

    #[test]
    fn bad_cp_specs_are_usage_errors() {
        for bad in ["", "/etc/hostname", "/etc/hostname:rel", ":/x", "-:", "bad name:/x:/y", "img::rel:/y", "/no/such/file/for/didx:/x"] {
            assert!(parse(bad).unwrap_err().is_usage(), "{bad}");
        }
    }
    #[test]
    fn specs_are_client_path_colon_host_path() {
        let cwd = Path::new("/home/me/proj");
        let s = CpOutSpec::parse("/work/report.xml:./out/", cwd).unwrap();
        assert_eq!((s.from.as_str(), s.to.to_str().unwrap()), ("/work/report.xml", "/home/me/proj/./out/"));
        let s = CpOutSpec::parse("/w/a:b/c:d", cwd).unwrap();
        assert_eq!((s.from.as_str(), s.to.to_str().unwrap()), ("/w/a", "/home/me/proj/b/c:d"));
        assert_eq!(CpOutSpec::parse("/w/x:/abs", cwd).unwrap().to, PathBuf::from("/abs"));
        for bad in ["report.xml", "rel/x:./out", "/x:", "/x\0:y"] {
            let e = CpOutSpec::parse(bad, cwd).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains("--cp-out"), "{bad}: {e}");
        }
    }
}
