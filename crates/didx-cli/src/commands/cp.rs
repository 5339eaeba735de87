//! `didx cp`: files between a running environment's client and this machine, as `docker cp`
//! copies them (the library's `inventory::copy_out` and `copy_in`).

use std::path::PathBuf;

use didx::Error;

use crate::engine::connect;
use crate::output::say;

/// A validated `didx cp`.
#[derive(Debug)]
pub enum Cp {
    /// `ID:PATH HOST_PATH`.
    Out { id: String, from: String, to: PathBuf },
    /// `HOST_PATH ID:PATH`.
    In { from: PathBuf, id: String, to: String },
}

/// `ID:ABS_PATH` (an id or container name has no `/`; the path is absolute), or `None` for a
/// host path (write `./a:b` for a host path with a colon).
fn in_client(arg: &str) -> Option<(&str, &str)> {
    let (id, path) = arg.split_once(':')?;
    (!id.is_empty() && !id.contains('/') && path.starts_with('/')).then_some((id, path))
}

/// The command line's two paths: exactly one of them in a client.
pub fn of(src: &str, dest: &str) -> anyhow::Result<Cp> {
    let cwd = std::env::current_dir()?;
    let usage = |fix: &str| Error::Invalid { what: "didx cp", value: format!("{src} {dest}"), fix: fix.into() };
    Ok(match (in_client(src), in_client(dest)) {
        (Some((id, from)), None) => Cp::Out { id: id.into(), from: from.into(), to: cwd.join(dest) },
        (None, Some((id, to))) => Cp::In { from: cwd.join(src), id: id.into(), to: to.into() },
        (Some(_), Some(_)) => return Err(usage("one side must be a path on this machine").into()),
        (None, None) => return Err(usage("one side must be ID:ABS_PATH in an environment's client, e.g. abc123:/work/out").into()),
    })
}

/// Copy; says what was copied.
pub async fn go(host: Option<&str>, cp: Cp) -> anyhow::Result<u8> {
    let engine = connect(host).await?;
    match cp {
        Cp::Out { id, from, to } => {
            didx::inventory::copy_out(&engine, &id, &from, &to).await?;
            say(format!("copied {id}:{from} to {}", to.display()));
        }
        Cp::In { from, id, to } => {
            didx::inventory::copy_in(&engine, &from, &id, &to).await?;
            say(format!("copied {} to {id}:{to}", from.display()));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_side_is_id_colon_absolute_path() {
        assert!(matches!(of("abc:/w/out", "./here").unwrap(), Cp::Out { ref id, ref from, .. } if id == "abc" && from == "/w/out"));
        assert!(matches!(of("./a:b", "abc:/w/").unwrap(), Cp::In { ref id, ref to, .. } if id == "abc" && to == "/w/"));
        assert!(of("a:/x", "b:/y").is_err());
        assert!(of("./a", "b/c:d").is_err());
        assert!(of("abc:rel", "here").is_err());
    }
}
