//! The listings, `didx --clean rpt` (environments) and `didx pool` (the warm pool): a table
//! for people, or JSON for programs with `--json`. Either goes to stdout; the count line goes
//! to stderr, as every status line does.
//!
//! The JSON is an array of objects with snake_case keys; times are Unix seconds, `null` when
//! unknown. The book documents the schema (docs/src/reference/json.md); the unit tests below pin it.

use std::sync::atomic::{AtomicBool, Ordering};

use didx::inventory::EnvSummary;
use didx::pool::{self, PoolEntry};
use didx::spec::CleanPolicy;
use didx::{Engine, Error};
use serde_json::{Value, json};

use crate::cli::RunArgs;
use crate::output::{self, say, utc_date};

/// `--json` was given: listings print JSON instead of a table. Set once from the command line
/// before anything is listed (a process-wide output choice, like NO_COLOR).
static JSON: AtomicBool = AtomicBool::new(false);

/// Take `--json` from the command line.
pub fn choose_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// `--json` on a run is accepted only with `--clean rpt`, the one run that lists: anywhere else
/// it is a usage error, said before anything is created. Takes `--json` for the listing.
pub fn check_run(args: &RunArgs) -> Result<(), Error> {
    let clean = CleanPolicy::from(args.clean);
    // A matrix (a --sv list) prints its summary as JSON.
    if args.json && clean != CleanPolicy::Rpt && !args.is_matrix() {
        return Err(Error::Invalid {
            what: "option",
            value: "--json".into(),
            fix: format!("it formats listings only (didx --clean rpt --json, didx pool --json), not a run with --clean {}", clean.as_str()),
        });
    }
    choose_json(args.json);
    Ok(())
}

/// `--json` given with a verb's subcommand (`verb`), which lists nothing: the usage error
/// naming the listing it belongs to (`listing`).
pub fn json_alone(verb: &str, listing: &str) -> anyhow::Error {
    Error::Invalid { what: "option", value: "--json".into(), fix: format!("it formats the listing ({listing}), not {verb}; drop it") }
        .into()
}

/// Seconds since the Unix epoch, now.
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// How long ago `created` was, for the table: `42s`, `17m`, `5h`, `?` when unknown.
fn age(created: Option<u64>) -> String {
    match created {
        None => "?".into(),
        Some(c) => {
            let s = now().saturating_sub(c);
            if s < 120 {
                format!("{s}s")
            } else if s < 7200 {
                format!("{}m", s / 60)
            } else {
                format!("{}h", s / 3600)
            }
        }
    }
}

/// `--clean rpt`: every didx environment on the engine, a line per container.
pub async fn environments(engine: &Engine) -> anyhow::Result<u8> {
    list_environments(engine, rpt_table).await
}

/// `didx ls`: every didx environment on the engine, a line each.
pub async fn ls(engine: &Engine) -> anyhow::Result<u8> {
    list_environments(engine, ls_table).await
}

/// Every didx environment on the engine: JSON with `--json` (one schema for both listings),
/// else `table`'s text; then the count line.
async fn list_environments(engine: &Engine, table: fn(&[EnvSummary]) -> String) -> anyhow::Result<u8> {
    let envs = didx::inventory::list(engine).await?;
    print_environments(&envs, table)
}

/// `didx k8s ls`: the sandboxes of a cluster's namespace, as `didx ls` lists an engine's.
pub async fn cluster(cluster: &didx::kubernetes::Cluster) -> anyhow::Result<u8> {
    let envs = didx::kubernetes::list(cluster).await?;
    print_environments(&envs, rpt_table)
}

fn print_environments(envs: &[EnvSummary], table: fn(&[EnvSummary]) -> String) -> anyhow::Result<u8> {
    if JSON.load(Ordering::Relaxed) {
        let now = now();
        output::out(&to_text(&Value::Array(envs.iter().map(|e| env_json(e, now)).collect())));
    } else {
        output::out(&table(envs));
    }
    say(format!("{} environment(s)", envs.len()));
    Ok(0)
}

/// `--clean rpt`'s table.
fn rpt_table(envs: &[EnvSummary]) -> String {
    let mut t = format!("{:<12} {:<6} {:<8} {:<10} {:<18} {:<17} NAME\n", "ENV", "AGE", "ROLE", "STATE", "POOL", "CERTS EXPIRE");
    for e in envs {
        let pool = e.pool.as_ref().map(|k| format!("pool {k}")).unwrap_or_else(|| "-".into());
        let expires = e.expires.map(utc_date).unwrap_or_else(|| "-".into());
        for m in &e.members {
            t.push_str(&format!(
                "{:<12} {:<6} {:<8} {:<10} {:<18} {:<17} {}\n",
                e.id,
                age(e.created),
                m.role,
                m.state,
                pool,
                expires,
                m.name
            ));
        }
    }
    t
}

/// `didx ls`'s table.
fn ls_table(envs: &[EnvSummary]) -> String {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let mut t = format!(
        "{:<12} {:<8} {:<16} {:<22} {:<5} {:<8} {:<28} {:<16} {:<24} {:<36} LIMITS\n",
        "ENV", "STATE", "VERSIONS", "IMAGE", "AGE", "POLICY", "OWNER", "ADDRESSES", "PUBLISHED", "ENDPOINT"
    );
    for e in envs {
        let versions = match (&e.versions.0, &e.versions.1) {
            (Some(s), Some(c)) if s != c => format!("{s}/{c}"),
            (s, c) => dash(s.as_deref().or(c.as_deref())),
        };
        let image = match (&e.images.0, &e.images.1) {
            (Some(s), Some(c)) if s != c => format!("{s} {c}"),
            (s, c) => dash(s.as_deref().or(c.as_deref())),
        };
        let published: Vec<String> =
            e.published.iter().map(|p| format!("{}:{}->{}/{}", p.ip, p.host_port, p.env_port, p.proto.as_str())).collect();
        t.push_str(&format!(
            "{:<12} {:<8} {:<16} {:<22} {:<5} {:<8} {:<28} {:<16} {:<24} {:<36} {}\n",
            e.id,
            e.state(),
            versions,
            image,
            age(e.created),
            dash(e.policy.as_deref()),
            dash(e.owner.as_deref()),
            dash(e.net.as_deref()),
            if published.is_empty() { "-".to_string() } else { published.join(",") },
            match e.engine.as_deref() {
                Some(engine) => format!("{engine} engine ({} started)", e.started),
                None => dash(e.endpoint.as_deref()),
            },
            dash(e.limits.as_deref()),
        ));
    }
    t
}

/// `didx pool`: every pooled environment on the engine.
pub async fn pool(engine: &Engine) -> anyhow::Result<u8> {
    let entries = pool::entries(engine).await?;
    if JSON.load(Ordering::Relaxed) {
        let now = now();
        output::out(&to_text(&Value::Array(entries.iter().map(|e| pool_json(&PoolRow::of(e), now)).collect())));
    } else {
        output::out(&format!("{:<14} {:<12} {:<6} {:<6} {:<10} SERVER\n", "POOL", "ENV", "SIZE", "AGE", "STATE"));
        for e in &entries {
            output::out(&format!(
                "{:<14} {:<12} {:<6} {:<6} {:<10} {}\n",
                e.key,
                e.id,
                e.size,
                age(e.created),
                e.state.as_str(),
                e.server.name
            ));
        }
    }
    let ready = entries.iter().filter(|e| e.state == pool::PoolState::Ready).count();
    say(format!("{} pooled environment(s), {ready} ready", entries.len()));
    Ok(0)
}

/// `didx store`: each image store of this prefix, its disk use, users and images; JSON with
/// `--json`.
pub async fn stores(engine: &Engine, json: bool) -> anyhow::Result<u8> {
    let stores = didx::store::list(engine).await?;
    if json {
        output::out(&to_text(&Value::Array(stores.iter().map(store_json).collect())));
    } else {
        output::out(&format!("{:<44} {:<16} {:>10} {:>6} {:<8} USERS\n", "STORE", "ENGINE", "DISK", "IMAGES", "LAST USE"));
        for s in &stores {
            let (disk, count) = match &s.index {
                Some(i) => (format!("{:.1} MB", i.kib as f64 * 1024.0 / 1e6), i.images.len().to_string()),
                None => ("?".to_string(), "?".to_string()),
            };
            let users = if s.users.is_empty() { "-".to_string() } else { s.users.join(",") };
            let used = if s.last_used.is_some() { age(s.last_used) } else { "-".to_string() };
            output::out(&format!("{:<44} {:<16} {:>10} {:>6} {used:<8} {users}\n", s.store.name, s.store.version, disk, count));
            for img in s.index.iter().flat_map(|i| &i.images) {
                let id = img.id.trim_start_matches("sha256:");
                let tags = if img.tags.is_empty() { "<none>".to_string() } else { img.tags.join(" ") };
                output::out(&format!("  {:<12} {:>10} {tags}\n", &id[..id.len().min(12)], format!("{:.1} MB", img.size as f64 / 1e6)));
            }
        }
    }
    say(format!("{} image store(s); reclaim space with didx store rm [IMAGE...] or didx store prune", stores.len()));
    Ok(0)
}

/// One store of `didx store --json`.
fn store_json(s: &didx::store::StoreInfo) -> Value {
    json!({
        "name": s.store.name,
        "engine_version": s.store.version,
        "server_image": s.store.image,
        "disk_kib": s.index.as_ref().map(|i| i.kib),
        "snapshot": s.index.as_ref().map(|i| i.snapshot.clone()),
        "images": s.index.iter().flat_map(|i| &i.images).map(|i| json!({"id": i.id, "size": i.size, "tags": i.tags})).collect::<Vec<_>>(),
        "users": s.users,
        "last_used": s.last_used,
    })
}

/// Pretty JSON and a final newline.
fn to_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// One environment of `--clean rpt --json`, as of `now` (Unix seconds).
fn env_json(e: &EnvSummary, now: u64) -> Value {
    json!({
        "id": e.id,
        "created": e.created,
        "age_seconds": e.created.map(|c| now.saturating_sub(c)),
        "pool": e.pool,
        "certs_expire": e.expires,
        "members": e.members.iter().map(|m| json!({"role": m.role, "state": m.state, "name": m.name})).collect::<Vec<_>>(),
        "state": e.state(),
        "server_version": e.versions.0,
        "client_version": e.versions.1,
        "server_image": e.images.0,
        "client_image": e.images.1,
        "policy": e.policy,
        "owner": e.owner,
        "address_block": e.net,
        "limits": e.limits,
        "published": e.published.iter().map(|p| json!({"ip": p.ip, "host_port": p.host_port, "env_port": p.env_port, "proto": p.proto.as_str()})).collect::<Vec<_>>(),
        "endpoint": e.endpoint,
        "engine": e.engine.as_deref().unwrap_or("dind"),
        "started": e.started,
    })
}

/// What `didx pool --json` shows of a [`PoolEntry`] (whose other fields are the library's).
struct PoolRow<'a> {
    key: &'a str,
    id: &'a str,
    size: usize,
    created: Option<u64>,
    state: pool::PoolState,
    server: &'a str,
}

impl<'a> PoolRow<'a> {
    fn of(e: &'a PoolEntry) -> Self {
        PoolRow { key: &e.key, id: &e.id, size: e.size, created: e.created, state: e.state, server: &e.server.name }
    }
}

/// One entry of `didx pool --json`, as of `now` (Unix seconds).
fn pool_json(e: &PoolRow<'_>, now: u64) -> Value {
    json!({
        "key": e.key,
        "id": e.id,
        "size": e.size,
        "created": e.created,
        "age_seconds": e.created.map(|c| now.saturating_sub(c)),
        "state": e.state.as_str(),
        "server": e.server,
    })
}

/// `didx env ID --json`: the environment's id, the three docker variables and its published ports.
pub fn host_access_json(a: &didx::inventory::HostAccess) -> String {
    let v = json!({
        "id": a.id,
        "docker_host": a.docker_host,
        "docker_tls_verify": "1",
        "docker_cert_path": a.cert_path.display().to_string(),
        "published": a.published.iter().map(|p| json!({
            "ip": p.ip,
            "host_port": p.host_port,
            "env_port": p.env_port,
            "proto": p.proto.as_str(),
        })).collect::<Vec<_>>(),
    });
    to_text(&v).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use didx::env::Member;
    use didx::spec::{Proto, Published};

    #[test]
    fn a_store_in_json_has_the_documented_keys() {
        use didx::store::{Index, Store, StoreInfo, StoredImage};
        let mut store = Store::new("didx-store", "20.10.24+dfsg1", "didx/dind:local");
        store.engine = "Docker version 20.10.24+dfsg1, build 5d6db84".into();
        let info = StoreInfo {
            store,
            index: Some(Index {
                snapshot: "snap-2".into(),
                kib: 206_440,
                seal: String::new(),
                images: vec![StoredImage { id: "sha256:1920".into(), size: 209_982_147, tags: vec!["app:1".into()] }],
            }),
            users: vec!["dind_k2v9x0a1b2_server_latest".into()],
            last_used: Some(1_000),
        };
        assert_eq!(
            store_json(&info),
            json!({
                "name": "didx-store-20.10.24_dfsg1-overlay2",
                "engine_version": "20.10.24+dfsg1",
                "server_image": "didx/dind:local",
                "disk_kib": 206_440,
                "snapshot": "snap-2",
                "images": [{"id": "sha256:1920", "size": 209_982_147, "tags": ["app:1"]}],
                "users": ["dind_k2v9x0a1b2_server_latest"],
                "last_used": 1_000,
            })
        );
        let unreadable = StoreInfo { index: None, users: vec![], last_used: None, ..info };
        let v = store_json(&unreadable);
        assert_eq!((v["disk_kib"].clone(), v["snapshot"].clone(), v["images"].clone()), (Value::Null, Value::Null, json!([])));
    }

    #[test]
    fn an_environment_in_json_has_the_documented_keys() {
        let e = EnvSummary {
            id: "k2v9x0a1b2".into(),
            created: Some(1_000),
            members: vec![
                Member { role: "server".into(), name: "dind_k2v9x0a1b2_server_latest".into(), state: "running".into() },
                Member { role: "client".into(), name: "dind_k2v9x0a1b2_client_latest".into(), state: "exited".into() },
            ],
            pool: Some("3f2a9c1d0e7b".into()),
            expires: Some(2_000),
            versions: (Some("latest".into()), Some("latest".into())),
            images: (Some("didx/dind:local".into()), Some("didx/dind:local".into())),
            policy: Some("pool".into()),
            owner: Some("ci@host pid 42".into()),
            net: Some("10.200.16.0/20".into()),
            limits: Some("memory=512m,pids=100".into()),
            published: vec![Published { ip: "127.0.0.1".into(), host_port: 8080, env_port: 80, proto: Proto::Tcp }],
            endpoint: Some("tcp://127.0.0.1:40001".into()),
            engine: None,
            started: 0,
        };
        assert_eq!(
            env_json(&e, 1_060),
            json!({
                "id": "k2v9x0a1b2",
                "created": 1000,
                "age_seconds": 60,
                "pool": "3f2a9c1d0e7b",
                "certs_expire": 2000,
                "members": [
                    {"role": "server", "state": "running", "name": "dind_k2v9x0a1b2_server_latest"},
                    {"role": "client", "state": "exited", "name": "dind_k2v9x0a1b2_client_latest"},
                ],
                "state": "exited",
                "server_version": "latest",
                "client_version": "latest",
                "server_image": "didx/dind:local",
                "client_image": "didx/dind:local",
                "policy": "pool",
                "owner": "ci@host pid 42",
                "address_block": "10.200.16.0/20",
                "limits": "memory=512m,pids=100",
                "published": [{"ip": "127.0.0.1", "host_port": 8080, "env_port": 80, "proto": "tcp"}],
                "endpoint": "tcp://127.0.0.1:40001",
                "engine": "dind",
                "started": 0,
            })
        );
        let unknown = EnvSummary { id: e.id.clone(), ..Default::default() };
        let v = env_json(&unknown, 1_060);
        for k in ["created", "age_seconds", "pool", "certs_expire", "server_version", "policy", "owner", "address_block", "endpoint"] {
            assert_eq!(v[k], Value::Null, "{k}");
        }
    }

    #[test]
    fn a_pool_entry_in_json_has_the_documented_keys() {
        let e = PoolRow {
            id: "p0o1l2e3n4",
            key: "3f2a9c1d0e7b",
            size: 3,
            created: Some(500),
            state: pool::PoolState::Ready,
            server: "dind_p0o1l2e3n4_server_latest",
        };
        assert_eq!(
            pool_json(&e, 510),
            json!({
                "key": "3f2a9c1d0e7b",
                "id": "p0o1l2e3n4",
                "size": 3,
                "created": 500,
                "age_seconds": 10,
                "state": "ready",
                "server": "dind_p0o1l2e3n4_server_latest",
            })
        );
        assert_eq!(pool_json(&PoolRow { created: None, ..e }, 510)["age_seconds"], Value::Null);
    }

    #[test]
    fn the_json_text_is_an_array_ending_in_a_newline() {
        let t = to_text(&Value::Array(vec![]));
        assert_eq!(t, "[]\n");
    }
}
