//! Which rewrite a request gets ([`Rewrite`]), decided on its path as the engine's router
//! reads it: percent-decoded, cleaned, without its `/v1.NN` prefix.

use hyper::Method;

/// What the proxy does to a request it rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rewrite {
    /// `POST /containers/create`: translate bind sources, label implicit volumes, add the labels.
    CreateContainer,
    /// `POST /volumes/create` or `/networks/create`: add the labels.
    Label,
    /// `POST /containers/{id}/start`: on a taken port, add its holder to the message.
    Start,
    /// Anything else: passed through untouched.
    None,
}

/// `raw` (a request's path as sent) as the engine's router matches it: percent-decoded (Go's
/// `net/http`) and cleaned (gorilla/mux: `.`, `..` and repeated `/` resolved, a trailing `/`
/// kept; the engine answers an unclean path with a redirect to the clean one, so routing on the
/// clean one is never less strict). `None` for a malformed `%` escape (the engine refuses it).
fn engine_path(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
            decoded.push((hex(i + 1)? * 16 + hex(i + 2)?) as u8);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut parts: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if decoded.ends_with('/') && out != "/" {
        out.push('/');
    }
    Some(out)
}

/// `path` without the engine's optional API version prefix (its router's `/v{version:[0-9.]+}`).
fn unversioned(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.').len();
        if digits > 0 && rest[digits..].starts_with('/') {
            return &rest[digits..];
        }
    }
    path
}

/// Which rewrite `method raw_path` gets, routed as the engine routes it ([`engine_path`], then
/// the version prefix); `Err` for a path the engine could not decode.
pub(super) fn rewrite_for(method: &Method, raw_path: &str) -> std::result::Result<Rewrite, String> {
    let path = engine_path(raw_path).ok_or_else(|| format!("didx engine proxy: malformed percent-encoding in the path {raw_path}"))?;
    if method != Method::POST {
        return Ok(Rewrite::None);
    }
    Ok(match unversioned(&path) {
        "/containers/create" => Rewrite::CreateContainer,
        "/volumes/create" | "/networks/create" => Rewrite::Label,
        p if p.len() > "/containers//start".len() && p.starts_with("/containers/") && p.ends_with("/start") => Rewrite::Start,
        _ => Rewrite::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_to_their_rewrite_with_or_without_a_version() {
        let r = |m: &Method, p: &str| rewrite_for(m, p).unwrap();
        assert_eq!(r(&Method::POST, "/v1.41/containers/create"), Rewrite::CreateContainer);
        assert_eq!(r(&Method::POST, "/containers/create"), Rewrite::CreateContainer);
        assert_eq!(r(&Method::POST, "/v1.45/volumes/create"), Rewrite::Label);
        assert_eq!(r(&Method::POST, "/networks/create"), Rewrite::Label);
        assert_eq!(r(&Method::POST, "/v1.41/containers/abc/start"), Rewrite::Start);
        assert_eq!(r(&Method::GET, "/v1.41/containers/create"), Rewrite::None);
        assert_eq!(r(&Method::POST, "/v1.41/containers/abc/attach"), Rewrite::None);
        assert_eq!(r(&Method::POST, "/volumes/prune"), Rewrite::None);
    }

    #[test]
    fn requests_are_routed_on_the_path_the_engine_decodes() {
        let r = |p: &str| rewrite_for(&Method::POST, p).unwrap();
        for p in [
            "/containers%2Fcreate",
            "/containers%2fcreate",
            "/v1.41/containers%2fcreate",
            "/v1.41%2Fcontainers%2Fcreate",
            "/%63ontainers/create",
            "//containers/create",
            "/./containers/create",
            "/v1.41//containers/./create",
            "/volumes/../containers/create",
            "/v.41/containers/create",
        ] {
            assert_eq!(r(p), Rewrite::CreateContainer, "{p}");
        }
        assert_eq!(r("/v1.41/volumes%2Fcreate"), Rewrite::Label);
        assert_eq!(r("/networks/./create"), Rewrite::Label);
        assert_eq!(r("/containers/a%2Fb/start"), Rewrite::Start);
        assert_eq!(r("/containers/create/"), Rewrite::None, "the engine has no such route");
        assert_eq!(r("/vx/containers/create"), Rewrite::None);
        assert!(rewrite_for(&Method::POST, "/containers%2").is_err());
        assert!(rewrite_for(&Method::GET, "/containers/%zz/json").is_err());
        assert_eq!(engine_path("/a/%2e%2E/b/").as_deref(), Some("/b/"));
        assert_eq!(unversioned("/v1.41"), "/v1.41");
    }
}
