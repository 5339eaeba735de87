//! The pool key: everything that must match for a pooled environment to serve a run, hashed
//! (pure, but for reading the images' IDs).

use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::backend::docker::recipe;
use crate::env::spec::EnvSpec;
use crate::error::Result;

/// The pool key of a spec in pool `name`: everything that must match for a pooled environment to
/// serve it (the recipe's revision, so one pooled by an older didx making servers differently is
/// never served; server and client image, by ID, so a rebuilt image is never served from an older
/// pool; `--sv`, `--cv`, storage driver, dockerd options, isolation). The client's mounts, copies
/// and environment are applied at claim time and are not part of it.
pub async fn key(engine: &Engine, name: Option<&str>, spec: &EnvSpec) -> Result<String> {
    let (server, client) = tokio::join!(engine.image(&spec.server_image), engine.image(&spec.client_image));
    let id = |i: Option<bollard::models::ImageInspect>, name: &str| i.and_then(|i| i.id).unwrap_or_else(|| name.to_string());
    let (server, client) = (id(server?, &spec.server_image), id(client?, &spec.client_image));
    Ok(key_at(recipe::VERSION, spec, name, &server, &client))
}

#[cfg(test)]
fn key_of(spec: &EnvSpec, server_image_id: &str, client_image_id: &str) -> String {
    key_at(recipe::VERSION, spec, None, server_image_id, client_image_id)
}

/// The key in pool `name` (`None`: the default pool, whose keys do not hash a name, so they
/// are what they were before pools had names).
fn key_at(recipe_version: u32, spec: &EnvSpec, name: Option<&str>, server_image_id: &str, client_image_id: &str) -> String {
    let mut h = Sha256::new();
    let revision = format!("recipe {recipe_version}");
    let fixed =
        [server_image_id, client_image_id, spec.sv.as_str(), spec.cv.as_str(), spec.storage_driver.as_str(), spec.isolation.as_str()];
    // The address range and the network: a pooled server's block and network are fixed at its
    // start. (An empty part for "none": the parts are separated, so this adds no ambiguity.)
    let range = spec.address_range.map(|r| r.to_string()).unwrap_or_default();
    let shaped = [range.as_str(), spec.network.as_deref().unwrap_or_default()];
    for part in std::iter::once(revision.as_str()).chain(fixed).chain(shaped).chain(spec.dockerd_opts.iter().map(String::as_str)) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // `--publish` shapes the server: a pooled server without those ports must never serve a
    // run asking for them. Only when given, so the keys of servers without any stay the same
    // (and those pooled before `--publish` existed, which publish none, still serve them).
    // `--store`: a pooled server without the store must never serve a run asking for it (nor
    // one with it a run that did not). Only when given, as `--publish`.
    if let Some(name) = name {
        h.update(b"name\0");
        h.update(name.as_bytes());
        h.update([0]);
    }
    if let Some(store) = &spec.store {
        h.update(b"store\0");
        h.update(store.volume.as_bytes());
        h.update([0]);
    }
    if !spec.limits.is_empty() {
        h.update(b"limits\0");
        h.update(spec.limits.label().as_bytes());
        h.update([0]);
    }
    if !spec.publish.is_empty() {
        h.update(b"publish\0");
        for p in &spec.publish {
            h.update(p.to_string().as_bytes());
            h.update([0]);
        }
    }
    hex::encode(h.finalize())[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::super::testing::spec;
    use super::*;
    use crate::spec::Version;

    #[test]
    fn key_covers_server_options_but_not_the_id_or_client_mounts() {
        let a = spec();
        let k = key_of(&a, "sha256:1", "sha256:1");
        let mut b = spec();
        b.volumes = vec![crate::spec::VolumeSpec::parse("/data", std::path::Path::new("/")).unwrap()];
        assert_eq!(key_of(&b, "sha256:1", "sha256:1"), k, "id and mounts are not part of the key");
        assert_ne!(key_of(&a, "sha256:2", "sha256:1"), k, "a rebuilt server image");
        assert_ne!(key_of(&a, "sha256:1", "sha256:2"), k, "a rebuilt client image");
        let mut c = spec();
        c.dockerd_opts = vec!["--debug".into()];
        assert_ne!(key_of(&c, "sha256:1", "sha256:1"), k);
        let mut d = spec();
        d.cv = Version::parse("--cv", "24.0").unwrap();
        assert_ne!(key_of(&d, "sha256:1", "sha256:1"), k);
        let mut e = spec();
        e.storage_driver = "vfs".into();
        assert_ne!(key_of(&e, "sha256:1", "sha256:1"), k);
        // Another recipe revision (e.g. a server made before the TLS port was published).
        assert_ne!(key_at(recipe::VERSION - 1, &a, None, "sha256:1", "sha256:1"), k, "an older recipe");
        // A named pool's keys are its own; the default pool's are unchanged by names.
        let named = key_at(recipe::VERSION, &a, Some("ci-1"), "sha256:1", "sha256:1");
        assert_ne!(named, k, "a named pool");
        assert_ne!(key_at(recipe::VERSION, &a, Some("ci-2"), "sha256:1", "sha256:1"), named, "another name");
        let mut p = spec();
        p.publish = vec![crate::spec::PublishSpec::parse("8080:80").unwrap()];
        let kp = key_of(&p, "sha256:1", "sha256:1");
        assert_ne!(kp, k, "a server publishing a port is another shape");
        p.publish = vec![crate::spec::PublishSpec::parse("8081:80").unwrap()];
        assert_ne!(key_of(&p, "sha256:1", "sha256:1"), kp, "another host port");
        let mut st = spec();
        let mount = |v: &str| Some(crate::env::StoreMount { volume: v.into(), engine: "Docker version 20.10.24+dfsg1, build 5d6db84".into(), seal: None });
        st.store = mount("didx-store-20.10.24_dfsg1-overlay2");
        let ks = key_of(&st, "sha256:1", "sha256:1");
        assert_ne!(ks, k, "a server mounting a store is another shape");
        st.store = mount("other-20.10.24_dfsg1-overlay2");
        assert_ne!(key_of(&st, "sha256:1", "sha256:1"), ks, "another store");
        // Word boundaries count: ["--a", "b"] is not ["--ab"].
        let (mut f, mut g) = (spec(), spec());
        f.dockerd_opts = vec!["--a".into(), "b".into()];
        g.dockerd_opts = vec!["--ab".into()];
        assert_ne!(key_of(&f, "x", "x"), key_of(&g, "x", "x"));
    }
}
