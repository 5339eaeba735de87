//! The JSON bodies the proxy rewrites, read as the engine reads them (keys matched ignoring
//! case, two keys it reads as one refused): a container create's bind sources translated and
//! its named volumes found, the environment's labels added; an error message added to.

use std::collections::HashMap;

use serde_json::Value;

use super::mounts::MountTable;

/// A JSON object key as Go's `encoding/json` compares it with the engine's (ASCII) field
/// names: it matches them ignoring case under Unicode simple folding, which for ASCII names is
/// ASCII case plus `ſ` (U+017F) for `s` and the Kelvin sign (U+212A) for `k`.
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Refuse an object holding two keys the engine reads as one field (say `HostConfig` and
/// `hostconfig`: it would merge or pick one; the proxy cannot know which the client meant),
/// then rename the keys of `fields` to their canonical spelling, so the proxy reads and writes
/// what the engine reads.
fn canonical(obj: &mut serde_json::Map<String, Value>, fields: &[&str], place: &str) -> std::result::Result<(), String> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for k in obj.keys() {
        if let Some(other) = seen.insert(fold(k), k) {
            return Err(format!(
                "didx engine proxy: {place} has both \"{other}\" and \"{k}\", which the engine reads as one field (it ignores case); send it once"
            ));
        }
    }
    for field in fields {
        let folded = fold(field);
        if let Some(k) = obj.keys().find(|k| *k != field && fold(k) == folded).cloned() {
            let v = obj.remove(&k).unwrap_or(Value::Null);
            obj.insert((*field).to_string(), v);
        }
    }
    Ok(())
}

/// Add `labels` to a create body's `Labels` (a container's, a volume's or a network's), keeping
/// the caller's own.
fn add_labels(obj: &mut serde_json::Map<String, Value>, labels: &HashMap<String, String>) {
    let entry = obj.entry("Labels").or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        *entry = Value::Object(Default::default());
    }
    if let Some(map) = entry.as_object_mut() {
        for (k, v) in labels {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// A `POST /volumes/create` or `/networks/create` body, labelled.
pub(super) fn label_body(body: &mut Value, labels: &HashMap<String, String>) -> std::result::Result<(), String> {
    let obj = body.as_object_mut().ok_or("didx engine proxy: the request body is not a JSON object")?;
    canonical(obj, &["Labels"], "the request")?;
    add_labels(obj, labels);
    Ok(())
}

/// A named volume a container create makes the engine create when it is missing: made by the
/// proxy first, labelled, with the driver and options the engine would use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ImplicitVolume {
    pub(super) name: String,
    pub(super) driver: Option<String>,
    pub(super) options: HashMap<String, String>,
    pub(super) labels: HashMap<String, String>,
}

/// A JSON object of strings as a map (what is not a string is left out: the engine refuses it).
fn strings(v: Option<&Value>) -> HashMap<String, String> {
    v.and_then(Value::as_object).map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()).unwrap_or_default()
}

/// Rewrite a container create body as the engine will read it: refuse keys it reads as one,
/// translate bind sources that are client paths through the client's mounts, add `labels`;
/// returns the named volumes it names (to be made labelled when missing).
///
/// The host config the engine reads is `HostConfig`, or, when that is absent or null, the
/// top-level object (the engine still reads the deprecated top-level `Binds`, `Mounts`, …).
/// A bind source is `HostConfig.Binds` `SRC:DST[:OPTS]` with an absolute SRC (a lone `/DST` is
/// an anonymous volume and is left), or a `HostConfig.Mounts` entry of type `bind`; a source on
/// no mount of the client is an error naming it. A named volume is a `Binds` SRC that is not a
/// path (driver `HostConfig.VolumeDriver`), or a `Mounts` entry of type `volume` with a source
/// (driver, options and labels from its `VolumeOptions`).
pub(super) fn prepare_create(body: &mut Value, client: &MountTable, labels: &HashMap<String, String>) -> std::result::Result<Vec<ImplicitVolume>, String> {
    let refuse = |src: &str| {
        format!(
            "didx --engine host: {src} is a path in the client container on none of its mounts, so the host engine cannot see it; \
             put it under a directory mounted into the client (didx -v HOSTDIR:DIR), or use a volume"
        )
    };
    const HOST_FIELDS: [&str; 3] = ["Binds", "Mounts", "VolumeDriver"];
    let top = body.as_object_mut().ok_or("didx engine proxy: the request body is not a JSON object")?;
    canonical(top, &["HostConfig", "Labels", "Binds", "Mounts", "VolumeDriver"], "the request")?;
    let mut volumes = Vec::new();
    {
        let hc = match top.get("HostConfig") {
            Some(Value::Object(_)) => {
                let hc = top.get_mut("HostConfig").and_then(Value::as_object_mut).expect("an object");
                canonical(hc, &HOST_FIELDS, "HostConfig")?;
                hc
            }
            _ => &mut *top,
        };
        let driver = hc.get("VolumeDriver").and_then(Value::as_str).filter(|d| !d.is_empty()).map(str::to_string);
        if let Some(binds) = hc.get_mut("Binds").and_then(Value::as_array_mut) {
            for b in binds.iter_mut() {
                let Some(s) = b.as_str() else { continue };
                let Some((src, rest)) = s.split_once(':') else { continue }; // an anonymous volume
                if src.is_empty() {
                    continue;
                }
                if !src.starts_with('/') {
                    volumes.push(ImplicitVolume { name: src.to_string(), driver: driver.clone(), options: HashMap::new(), labels: labels.clone() });
                    continue;
                }
                let host = client.translate(src).ok_or_else(|| refuse(src))?;
                *b = Value::String(format!("{}:{rest}", host.to_string_lossy()));
            }
        }
        if let Some(mounts) = hc.get_mut("Mounts").and_then(Value::as_array_mut) {
            for (i, m) in mounts.iter_mut().enumerate() {
                let Some(m) = m.as_object_mut() else { continue };
                let place = format!("HostConfig.Mounts[{i}]");
                canonical(m, &["Type", "Source", "VolumeOptions"], &place)?;
                if let Some(vo) = m.get_mut("VolumeOptions").and_then(Value::as_object_mut) {
                    canonical(vo, &["Labels", "DriverConfig"], &format!("{place}.VolumeOptions"))?;
                    if let Some(dc) = vo.get_mut("DriverConfig").and_then(Value::as_object_mut) {
                        canonical(dc, &["Name", "Options"], &format!("{place}.VolumeOptions.DriverConfig"))?;
                    }
                }
                let Some(src) = m.get("Source").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string) else { continue };
                match m.get("Type").and_then(Value::as_str) {
                    Some("bind") => {
                        let host = client.translate(&src).ok_or_else(|| refuse(&src))?;
                        m.insert("Source".into(), Value::String(host.to_string_lossy().into_owned()));
                    }
                    Some("volume") => {
                        let vo = m.get("VolumeOptions");
                        let dc = vo.and_then(|v| v.get("DriverConfig"));
                        let mut vlabels = strings(vo.and_then(|v| v.get("Labels")));
                        vlabels.extend(labels.clone());
                        volumes.push(ImplicitVolume {
                            name: src,
                            driver: dc.and_then(|d| d.get("Name")).and_then(Value::as_str).filter(|d| !d.is_empty()).map(str::to_string),
                            options: strings(dc.and_then(|d| d.get("Options"))),
                            labels: vlabels,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
    add_labels(top, labels);
    Ok(volumes)
}

/// The engine's message in a JSON error body, with `more` added.
pub(super) fn with_message(body: &[u8], more: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let msg = v.get("message")?.as_str()?.to_string();
    v["message"] = Value::String(format!("{msg} ({more})"));
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::mounts::example_table as table;

    fn ours() -> HashMap<String, String> {
        HashMap::from([("io.didx.env".to_string(), "e1".to_string())])
    }

    /// `prepare_create` on `body`, with the labels [`ours`].
    fn prepare(body: &mut Value) -> std::result::Result<Vec<ImplicitVolume>, String> {
        prepare_create(body, &table(), &ours())
    }

    #[test]
    fn binds_and_bind_mounts_are_translated_and_volumes_left() {
        let mut body = serde_json::json!({
            "Image": "x",
            "HostConfig": {
                "Binds": ["/work/src:/src:ro", "named:/data", "/work:/w", "/anon"],
                "Mounts": [
                    {"Type": "bind", "Source": "/work/cache/a", "Target": "/a"},
                    {"Type": "volume", "Source": "vol", "Target": "/v"}
                ]
            }
        });
        prepare(&mut body).unwrap();
        assert_eq!(body["HostConfig"]["Binds"], serde_json::json!(["/home/u/proj/src:/src:ro", "named:/data", "/home/u/proj:/w", "/anon"]));
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "/srv/cache/a");
        assert_eq!(body["HostConfig"]["Mounts"][1]["Source"], "vol");
        assert_eq!(body["Labels"], serde_json::json!({"io.didx.env": "e1"}));
    }

    #[test]
    fn a_lone_binds_destination_is_an_anonymous_volume_left_untranslated() {
        // docker-py sends `-v /data` this way; it names no source, so nothing is translated.
        let mut body = serde_json::json!({"HostConfig": {"Binds": ["/data", "/tmp"]}});
        assert_eq!(prepare(&mut body), Ok(vec![]));
        assert_eq!(body["HostConfig"]["Binds"], serde_json::json!(["/data", "/tmp"]));
    }

    #[test]
    fn a_bind_of_a_path_on_no_client_mount_is_refused_naming_it() {
        let mut body = serde_json::json!({"HostConfig": {"Binds": ["/tmp/made-in-client:/x"]}});
        let err = prepare(&mut body).unwrap_err();
        assert!(err.contains("/tmp/made-in-client") && err.contains("-v"), "{err}");
        let mut body = serde_json::json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}});
        assert!(prepare(&mut body).is_err());
    }

    #[test]
    fn keys_in_another_case_are_read_as_the_engine_reads_them() {
        let mut body = serde_json::json!({
            "hostconfig": {"binds": ["/work/a:/a", "vol1:/v"], "MOUNTS": [{"type": "bind", "source": "/work/b", "Target": "/b"}]},
            "labels": {"mine": "1"}
        });
        let vols = prepare(&mut body).unwrap();
        assert_eq!(body["HostConfig"]["Binds"], serde_json::json!(["/home/u/proj/a:/a", "vol1:/v"]));
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "/home/u/proj/b");
        assert_eq!(body["Labels"], serde_json::json!({"mine": "1", "io.didx.env": "e1"}), "merged into the key the engine reads");
        assert!(body.get("labels").is_none() && body.get("hostconfig").is_none(), "{body}");
        assert_eq!(vols.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["vol1"]);
        // Go folds `ſ` to `s` and the Kelvin sign to `k`: `Labelſ` is `Labels` to the engine.
        let mut body = serde_json::json!({"Labelſ": {"mine": "1"}, "HostConfig": {"Binds": ["/etc:/e"]}});
        assert!(prepare(&mut body).is_err(), "the bind is read, and refused");
        let mut body = serde_json::json!({"Labelſ": {"mine": "1"}});
        prepare(&mut body).unwrap();
        assert_eq!(body["Labels"], serde_json::json!({"mine": "1", "io.didx.env": "e1"}));
        assert_eq!(fold("\u{212A}ind"), "kind");
    }

    #[test]
    fn keys_the_engine_reads_as_one_are_refused_wherever_they_are() {
        for (body, place) in [
            (serde_json::json!({"HostConfig": {}, "hostconfig": {"Binds": ["/etc:/e"]}}), "the request"),
            (serde_json::json!({"Labels": {}, "labels": {"a": "b"}}), "the request"),
            (serde_json::json!({"HostConfig": {"Binds": [], "binds": ["/etc:/e"]}}), "HostConfig"),
            (serde_json::json!({"HostConfig": {"Mounts": [{"Type": "volume", "type": "bind", "Source": "/etc"}]}}), "HostConfig.Mounts[0]"),
            (
                serde_json::json!({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "VolumeOptions": {"Labels": {}, "LABELS": {}}}]}}),
                "HostConfig.Mounts[0].VolumeOptions",
            ),
        ] {
            let mut b = body.clone();
            let err = prepare(&mut b).unwrap_err();
            assert!(err.contains(place) && err.contains("which the engine reads as one field"), "{body}: {err}");
        }
        let mut body = serde_json::json!({"Labels": {"a": "1"}, "LABELS": {"b": "2"}});
        assert!(label_body(&mut body, &ours()).is_err(), "a volume's or network's labels too");
        // Label names are map keys the engine keeps as they are: not folded.
        let mut body = serde_json::json!({"Labels": {"a": "1", "A": "2"}});
        prepare(&mut body).unwrap();
    }

    #[test]
    fn without_a_host_config_the_top_level_fields_the_engine_still_reads_are_translated() {
        let mut body = serde_json::json!({"Image": "x", "Binds": ["/work/a:/a", "/etc:/e"]});
        assert!(prepare(&mut body).is_err(), "/etc is on no client mount");
        let mut body = serde_json::json!({"Image": "x", "binds": ["/work/a:/a"], "HostConfig": null});
        prepare(&mut body).unwrap();
        assert_eq!(body["Binds"], serde_json::json!(["/home/u/proj/a:/a"]));
    }

    #[test]
    fn named_volumes_come_with_the_driver_options_and_labels_the_engine_would_use() {
        let mut body = serde_json::json!({"HostConfig": {
            "VolumeDriver": "drv",
            "Binds": ["b1:/b1", "b1:/again:ro"],
            "Mounts": [
                {"Type": "volume", "Source": "m1", "Target": "/m1", "VolumeOptions": {
                    "labels": {"mine": "1", "io.didx.env": "spoofed"},
                    "driverconfig": {"name": "local", "options": {"type": "tmpfs", "device": "tmpfs"}}}},
                {"Type": "volume", "Target": "/anon"},
                {"Type": "tmpfs", "Target": "/t"}
            ]}});
        let vols = prepare(&mut body).unwrap();
        assert_eq!(vols.len(), 3, "{vols:?}");
        assert_eq!((vols[0].name.as_str(), vols[0].driver.as_deref()), ("b1", Some("drv")));
        assert_eq!(vols[0].labels, ours());
        assert_eq!((vols[2].name.as_str(), vols[2].driver.as_deref()), ("m1", Some("local")));
        assert_eq!(vols[2].options, HashMap::from([("type".into(), "tmpfs".into()), ("device".into(), "tmpfs".into())]));
        assert_eq!(vols[2].labels, HashMap::from([("mine".into(), "1".into()), ("io.didx.env".into(), "e1".into())]));
    }

    #[test]
    fn labels_are_added_beside_the_callers_own() {
        let mut body = serde_json::json!({"Labels": {"mine": "1"}});
        label_body(&mut body, &ours()).unwrap();
        assert_eq!(body["Labels"], serde_json::json!({"mine": "1", "io.didx.env": "e1"}));
        let mut body = serde_json::json!({"Name": "n", "Labels": null});
        label_body(&mut body, &ours()).unwrap();
        assert_eq!(body["Labels"], serde_json::json!({"io.didx.env": "e1"}));
        assert!(label_body(&mut serde_json::json!([1]), &ours()).is_err());
    }

    #[test]
    fn a_json_message_gets_the_holder_added() {
        let b = with_message(br#"{"message":"Bind for 0.0.0.0:8080 failed"}"#, "host port 8080 is held by container web").unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["message"], "Bind for 0.0.0.0:8080 failed (host port 8080 is held by container web)");
    }
}
