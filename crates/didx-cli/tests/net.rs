//! Many environments at once without address clashes: each inner engine gets its own block of
//! the address range (`--address-range`), claimed from what the engine reports, even when
//! separate processes start at the same moment; none overlaps a network of the host engine;
//! an exhausted range is one clear line; the inner engine takes the MTU of the server's
//! network; a route from the host to a block reaches an inner container. Each test leaves the
//! engine as it found it.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use common::*;

/// `A.B.C.D/N` as (address, prefix).
fn cidr(s: &str) -> (u32, u32) {
    let (a, p) = s.split_once('/').unwrap_or_else(|| panic!("not a CIDR: {s}"));
    (u32::from(a.parse::<Ipv4Addr>().unwrap()), p.parse().unwrap())
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    let p = a.1.min(b.1);
    let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    a.0 & m == b.0 & m
}

/// Every IPv4 subnet of the host engine's networks.
fn host_subnets() -> Vec<String> {
    let ls = Command::new("docker").args(["network", "ls", "-q"]).output().unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&ls.stdout).split_whitespace().map(String::from).collect();
    let mut args = vec!["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"];
    args.extend(ids.iter().map(String::as_str));
    let out = Command::new("docker").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter(|s| s.contains('.')).map(String::from).collect()
}

/// The value after `key ` on the first line of `text` that has it.
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// What each environment's inner engine reports: an inner container's address (default
/// bridge) and the subnet of a network it creates (its pool).
const REPORT: &str = r#"sh -c 'didx-busybox-image bb >/dev/null && echo ADDR $(docker run --rm bb ip -o -4 addr show eth0 | awk "{print \$4}") && docker network create n >/dev/null && echo POOL $(docker network inspect n -f "{{range .IPAM.Config}}{{.Subnet}}{{end}}")'"#;

/// [`REPORT`]'s address, then a wait (at most 2 min) until four clients have reported into the
/// shared `/sync`: `MET N` says how many had.
const REPORT_AND_MEET: &str = r#"sh -c 'didx-busybox-image bb >/dev/null && echo ADDR $(docker run --rm bb ip -o -4 addr show eth0 | awk "{print \$4}") && touch /sync/$(hostname) && i=0 && while [ $(ls /sync | wc -l) -lt 4 ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; echo MET $(ls /sync | wc -l)'"#;

#[test]
fn six_environments_started_at_once_by_separate_processes_get_distinct_inner_addresses_clear_of_host_networks() {
    let children: Vec<_> = (0..6)
        .map(|_| didx_cmd(&["--clean", "anycase", REPORT]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn didx"))
        .collect();
    let runs: Vec<Run> = children.into_iter().map(|c| from_output(c.wait_with_output().unwrap())).collect();
    for r in &runs {
        assert_eq!(r.code, 0, "{}", r.show());
        assert_gone(&r.env_id().expect("an environment"));
    }
    let host = host_subnets();
    assert!(!host.is_empty(), "the host engine reports no IPv4 network");
    let mut blocks = HashSet::new();
    for r in &runs {
        let addr = field(&r.stdout, "ADDR").unwrap_or_else(|| panic!("no address: {}", r.show()));
        let pool = field(&r.stdout, "POOL").unwrap_or_else(|| panic!("no pool network: {}", r.show()));
        let (a, p) = (cidr(addr), cidr(pool));
        assert_eq!(a.1, 24, "inner bridge is a /24: {addr}");
        // Both in the environment's /20 of the default range, 10.200.0.0/13.
        let block = a.0 & (u32::MAX << 12);
        assert!(overlaps((block, 20), p), "pool network {pool} outside the block of {addr}");
        assert!(overlaps(cidr("10.200.0.0/13"), (block, 20)), "{addr} outside the default range");
        assert!(
            blocks.insert(block),
            "two environments share the block of {addr}: {:?}",
            runs.iter().map(|r| &r.stdout).collect::<Vec<_>>()
        );
        for h in &host {
            assert!(!overlaps(cidr(h), (block, 20)), "block of {addr} overlaps host network {h}");
        }
    }
}

#[test]
fn a_range_held_by_a_live_environment_or_covered_by_a_host_network_is_exhausted_in_one_line_and_nothing_is_left() {
    // One block: the first environment (kept) holds it, the second finds none.
    let range = "10.250.0.0/20";
    let first = didx(&["--address-range", range, "--clean", "none", "true"]);
    with_cleanup(first, |first| {
        assert_eq!(first.code, 0, "{}", first.show());
        let second = didx(&["--address-range", range, "--clean", "anycase", "true"]);
        assert_eq!(second.code, 125, "{}", second.show());
        let line = format!("address range {range} is exhausted: 1 environments hold blocks of it and 0 blocks overlap");
        assert!(second.stderr.contains(&line), "{}", second.show());
        assert!(second.stderr.contains("--address-range"), "says the fix: {}", second.show());
        if let Some(id) = second.env_id() {
            assert_gone(&id);
        }
        assert_running_then_remove(&first.env_id().unwrap());
    });
    // A range inside a host network: every block overlaps it.
    let bridge = host_subnets().into_iter().find(|s| cidr(s).1 <= 20).expect("a host network of /20 or larger");
    let before = rt().block_on(leftovers(None)).len();
    let r = didx(&["--address-range", &bridge, "--clean", "anycase", "true"]);
    assert_eq!(r.code, 125, "{}", r.show());
    assert!(r.stderr.contains("0 environments hold blocks of it") && r.stderr.contains("overlap the engine's networks"), "{}", r.show());
    if let Some(id) = r.env_id() {
        assert_gone(&id);
    }
    assert!(rt().block_on(leftovers(None)).len() <= before, "a failed claim left something");
}

#[test]
fn bad_address_ranges_and_networks_are_usage_errors_naming_the_fix() {
    for (args, says) in [
        (vec!["--address-range", "10.200.0.0/24"], "smaller than one environment's block"),
        (vec!["--address-range", "10.200.0.1/13"], "write its network address, 10.200.0.0/13"),
        (vec!["--address-range", "fd00::/8"], "not an IPv4 network"),
        (vec!["--network", "host"], "network namespace of its own"),
        (vec!["--network", "a b"], "docker network ls"),
    ] {
        let mut all = args.clone();
        all.extend(["--clean", "anycase", "true"]);
        let r = didx(&all);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert!(r.stderr.contains(says), "{args:?}: {}", r.show());
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.show());
        assert!(r.env_id().is_none(), "{}", r.show());
    }
}

#[test]
fn dkropts_choosing_addresses_turn_the_claim_off_and_none_leaves_them_to_dockerd() {
    let opts = "--bip=10.251.7.1/24";
    let r = didx(&["--dkropts", opts, "--clean", "anycase", REPORT]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(field(&r.stdout, "ADDR").map(|a| cidr(a).0 & 0xffff_ff00), Some(u32::from(Ipv4Addr::new(10, 251, 7, 0))), "{}", r.show());
    assert_gone(&r.env_id().unwrap());
    let r = didx(&["--address-range", "none", "--clean", "anycase", REPORT]);
    assert_eq!(r.code, 0, "{}", r.show());
    let addr = field(&r.stdout, "ADDR").unwrap();
    assert!(!overlaps(cidr("10.200.0.0/13"), cidr(addr)), "none still claimed a block: {addr}");
    assert_gone(&r.env_id().unwrap());
}

/// A host network with MTU 1400, removed on drop.
struct Network(String);

impl Network {
    fn new(mtu: u32) -> Network {
        let name = format!("didx-test-mtu-{}", didx::env::EnvId::generate());
        let st = Command::new("docker")
            .args(["network", "create", "-o", &format!("com.docker.network.driver.mtu={mtu}"), &name])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "creating network {name}");
        Network(name)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["network", "rm", &self.0]).stdout(Stdio::null()).status();
    }
}

#[test]
fn the_inner_engine_takes_the_mtu_of_the_network_the_server_sits_on() {
    let net = Network::new(1400);
    let cmd = r#"sh -c 'echo SERVER $(cat /sys/class/net/eth0/mtu); didx-busybox-image bb >/dev/null && echo INNER $(docker run --rm bb cat /sys/class/net/eth0/mtu)'"#;
    let r = didx(&["--network", &net.0, "--clean", "anycase", cmd]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(field(&r.stdout, "SERVER"), Some("1400"), "{}", r.show());
    assert_eq!(field(&r.stdout, "INNER"), Some("1400"), "inner default bridge: {}", r.show());
    assert_gone(&r.env_id().unwrap());
    // An engine with --default-network-opt (24.0 on) gives it to the networks it creates too.
    let trixie = "didx/dind:26.1.5";
    let present = Command::new("docker").args(["image", "inspect", trixie]).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(present.success(), "{trixie} is missing: build it with `didx image build --suite trixie` (scripts/setup.sh does)");
    let created = r#"sh -c 'didx-busybox-image bb >/dev/null && docker network create n >/dev/null && echo CREATED $(docker run --rm --network n bb cat /sys/class/net/eth0/mtu)'"#;
    let r = didx(&["--network", &net.0, "--server-image", trixie, "--client-image", trixie, "--clean", "anycase", created]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(field(&r.stdout, "CREATED"), Some("1400"), "a network the inner engine created: {}", r.show());
    assert_gone(&r.env_id().unwrap());
    // On the default bridge (MTU 1500 here) nothing changes.
    let r = didx(&["--clean", "anycase", cmd]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(field(&r.stdout, "INNER"), field(&r.stdout, "SERVER"), "{}", r.show());
    assert_gone(&r.env_id().unwrap());
}

/// A host route, deleted on drop.
struct Route(String);

impl Drop for Route {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["route", "del", &self.0]).status();
    }
}

#[test]
fn a_route_from_the_host_to_an_environments_block_reaches_its_inner_containers() {
    let web = r#"sh -c 'didx-busybox-image bb >/dev/null && docker run -d --name web -p 8080:80 bb sh -c "echo hello-inner >/index.html; exec httpd -f -p 80 -h /" >/dev/null && echo WEB $(docker inspect -f "{{.NetworkSettings.IPAddress}}" web)'"#;
    let run = didx(&["--clean", "none", web]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let id = run.env_id().unwrap();
        let server = format!("dind_{id}_server_latest");
        let inspect = |f: &str| {
            let o = Command::new("docker").args(["inspect", "-f", f, &server]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        // The commands the book gives (docs/src/concepts/networking.md, "A route from the host").
        let block = inspect(r#"{{index .Config.Labels "io.didx.net"}}"#);
        let via = inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
        assert!(block.ends_with("/20") && !via.is_empty(), "block {block:?} via {via:?}");
        let st = Command::new("ip").args(["route", "add", &block, "via", &via]).status().unwrap();
        assert!(st.success(), "ip route add {block} via {via}");
        let _route = Route(block.clone());
        let addr: Ipv4Addr = field(&run.stdout, "WEB").unwrap().parse().unwrap();
        let mut s =
            std::net::TcpStream::connect_timeout(&(addr, 80).into(), std::time::Duration::from_secs(10)).expect("connect over the route");
        std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
        assert!(reply.contains("hello-inner"), "{reply}");
        assert_running_then_remove(&id);
    });
}

#[test]
fn processes_not_sharing_the_claim_lock_still_end_with_distinct_blocks() {
    // Four processes, each with its own cache directory (so its own lock file), claiming from a
    // range of eight blocks: they often choose alike, and the later-created server of a pair
    // must give its block up and claim another.
    let range = "10.252.0.0/17";
    let dirs: Vec<_> = (0..4).map(|i| std::env::temp_dir().join(format!("didx-test-net-{i}-{}", didx::env::EnvId::generate()))).collect();
    // A rendezvous: each command reports its address, then waits until all four have, so the
    // four servers certainly coexist (a run that ended first would free its block for a later
    // one to take, rightly: only live servers must not share one).
    let sync = std::env::temp_dir().join(format!("didx-test-net-sync-{}", didx::env::EnvId::generate()));
    std::fs::create_dir_all(&sync).unwrap();
    let mount = format!("{}:/sync", sync.display());
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            // What the shared cache directory remembers (the isolation this engine allows, the
            // failed pulls), so that the four start alike and race.
            std::fs::create_dir_all(d).unwrap();
            for f in std::fs::read_dir(cache_dir()).unwrap().flatten().filter(|f| f.file_type().is_ok_and(|t| t.is_file())) {
                let name = f.file_name();
                if !name.to_string_lossy().ends_with(".lock") {
                    std::fs::copy(f.path(), d.join(name)).unwrap();
                }
            }
            didx_cmd(&["--address-range", range, "-v", &mount, "--clean", "anycase", REPORT_AND_MEET])
                .env("DIDX_CACHE_DIR", d)
                .env("DIDX_LOG", "didx=debug")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn didx")
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(|c| from_output(c.wait_with_output().unwrap())).collect();
    for d in dirs.iter().chain([&sync]) {
        let _ = std::fs::remove_dir_all(d);
    }
    let mut blocks = HashSet::new();
    for r in &runs {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("MET 4"), "the four servers did not all run at once: {}", r.show());
        assert_gone(&r.env_id().expect("an environment"));
        let addr = cidr(field(&r.stdout, "ADDR").unwrap_or_else(|| panic!("{}", r.show())));
        assert!(overlaps(cidr(range), addr), "{}", r.show());
        assert!(blocks.insert(addr.0 & (u32::MAX << 12)), "two environments share a block: {}", r.show());
    }
    let lost = runs.iter().map(|r| r.stderr.matches("claimed the same block first").count()).sum::<usize>();
    eprintln!("claims given up to an earlier server: {lost}");
}

#[test]
fn ls_shows_each_environment_with_its_state_versions_images_policy_owner_block_and_endpoint() {
    let run = didx(&["--clean", "none", "--publish", "8080", "true"]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let id = run.env_id().unwrap();
        let ls = didx(&["ls", "--json"]);
        assert_eq!(ls.code, 0, "{}", ls.show());
        let all: serde_json::Value = serde_json::from_str(&ls.stdout).expect("JSON");
        let e = all.as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).unwrap_or_else(|| panic!("{id} not listed: {}", ls.stdout));
        assert_eq!(e["state"], "running");
        assert_eq!((e["server_version"].as_str(), e["client_version"].as_str()), (Some("latest"), Some("latest")));
        assert_eq!((e["server_image"].as_str(), e["client_image"].as_str()), (Some("didx/dind:local"), Some("didx/dind:local")));
        assert_eq!(e["policy"], "none");
        assert!(e["owner"].as_str().is_some_and(|o| o.contains('@') && o.contains(" pid ")), "{e}");
        let published = e["published"].as_array().unwrap();
        assert_eq!(published.len(), 1, "{e}");
        let p = &published[0];
        assert_eq!((p["ip"].as_str(), p["env_port"].as_u64(), p["proto"].as_str()), (Some("127.0.0.1"), Some(8080), Some("tcp")), "{e}");
        let host_port = p["host_port"].as_u64().filter(|p| *p > 0).expect("a host port");
        assert!(run.stderr.contains(&format!("published 127.0.0.1:{host_port} -> 8080/tcp")), "{}", run.show());
        let server = format!("dind_{id}_server_latest");
        let label = Command::new("docker").args(["inspect", "-f", r#"{{index .Config.Labels "io.didx.net"}}"#, &server]).output().unwrap();
        assert_eq!(e["address_block"].as_str(), Some(String::from_utf8_lossy(&label.stdout).trim()), "{e}");
        let port = Command::new("docker").args(["port", &server, "2376/tcp"]).output().unwrap();
        assert_eq!(
            e["endpoint"].as_str().map(String::from),
            Some(format!("tcp://{}", String::from_utf8_lossy(&port.stdout).trim())),
            "{e}"
        );
        // The table: a header and a line for it.
        let table = didx(&["ls"]);
        assert_eq!(table.code, 0, "{}", table.show());
        assert!(table.stdout.starts_with("ENV "), "{}", table.stdout);
        let line = table.stdout.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{}", table.stdout));
        for want in ["running", "latest", "didx/dind:local", "none", e["address_block"].as_str().unwrap(), e["endpoint"].as_str().unwrap()]
        {
            assert!(line.contains(want), "{want} not in {line}");
        }
        assert_running_then_remove(&id);
    });
}
