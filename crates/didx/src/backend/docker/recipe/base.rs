//! What every container of the recipe agrees on: the entrypoint and the paths it uses, the
//! TLS port and where it is published, and the recipe's revision.

use bollard::models::PortMap;

/// The entrypoint script placed at [`ENTRYPOINT_PATH`] in every container didx creates.
pub const ENTRYPOINT: &str = include_str!("../../../../../../image/entrypoint.sh");

/// Where the entrypoint is placed.
pub const ENTRYPOINT_PATH: &str = "/didx/entrypoint";

/// The entrypoint as a file to place at `/` (its path [`ENTRYPOINT_PATH`], relative).
pub(crate) const ENTRYPOINT_FILE: crate::archive::Entry<'static> =
    crate::archive::Entry { path: "didx/entrypoint", mode: 0o755, data: ENTRYPOINT.as_bytes() };

/// Port of the inner engine's TLS listener.
pub const TLS_PORT: u16 = 2376;

/// Where the client finds its certificates (docker:dind's convention).
pub const CLIENT_CERT_PATH: &str = "/certs/client";

/// The host address the server's TLS port is published on (never all addresses).
pub const PUBLISHED_IP: &str = "127.0.0.1";

/// The recipe's revision, part of the pool key: bumped whenever servers are made differently in
/// a way that matters to whoever claims one, so an environment pooled by an older didx is never
/// served. 2: the TLS port published on [`PUBLISHED_IP`]. 3: servers and clients auto-removed
/// and leased, pooled clients running and following their server, no shared files volume. 4:
/// servers in a private cgroup namespace; the caps profile allows every device. 5: a lease's
/// release is answered (the entrypoint's `hold`), and didx waits for the answer.
pub(crate) const VERSION: u32 = 5;

pub(super) const SERVER_CERT_DIR: &str = "/didx/certs/server";

/// Where a server with `--store` (read-only) and a store's filler (read-write) mount the store.
pub const STORE_PATH: &str = "/didx/store";

/// The engine's key for the TLS port, `2376/tcp`.
pub(super) fn tls_port_key() -> String {
    format!("{TLS_PORT}/tcp")
}

/// The host port the engine bound `port`/tcp of a server to, from its inspected
/// `NetworkSettings.Ports`: on [`PUBLISHED_IP`] (where didx publishes the inner engine's TLS
/// port and, by default, `--publish`), else on all addresses; `None` when neither (an older
/// didx, another address only, not yet chosen).
pub(crate) fn loopback_binding(ports: Option<&PortMap>, port: u16) -> Option<u16> {
    let bindings = ports?.get(&format!("{port}/tcp"))?.as_ref()?;
    let on = |ip: &str| {
        bindings.iter().filter(|b| b.host_ip.as_deref() == Some(ip)).find_map(|b| b.host_port.as_deref()?.parse().ok().filter(|p| *p != 0))
    };
    on(PUBLISHED_IP).or_else(|| on("0.0.0.0"))
}

/// Apply `limits` to a container's host config (`Memory`, `NanoCpus`, `PidsLimit`).
pub(crate) fn limit(hc: &mut bollard::models::HostConfig, limits: &crate::spec::Limits) {
    hc.memory = limits.memory.map(|m| m as i64);
    hc.nano_cpus = limits.nano_cpus.map(|c| c as i64);
    hc.pids_limit = limits.pids.map(|p| p as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortBinding;

    #[test]
    fn the_entrypoint_file_lands_where_containers_run_it() {
        assert_eq!(format!("/{}", ENTRYPOINT_FILE.path), ENTRYPOINT_PATH);
        assert_eq!((ENTRYPOINT_FILE.mode, ENTRYPOINT_FILE.data), (0o755, ENTRYPOINT.as_bytes()));
    }

    #[test]
    fn a_port_is_reached_at_its_loopback_binding_else_at_its_all_addresses_one() {
        let published_port = |ports: Option<&PortMap>| loopback_binding(ports, TLS_PORT);
        let b = |ip: &str, port: &str| PortBinding { host_ip: Some(ip.into()), host_port: Some(port.into()) };
        let map = |k: &str, v: Option<Vec<PortBinding>>| PortMap::from([(k.to_string(), v)]);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("127.0.0.1", "32768")])))), Some(32768));
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("0.0.0.0", "1"), b("::", "2"), b("127.0.0.1", "3")])))), Some(3));
        // Absent, not published (an older didx), elsewhere only, another port, not yet chosen.
        assert_eq!(published_port(None), None);
        assert_eq!(published_port(Some(&PortMap::new())), None);
        assert_eq!(published_port(Some(&map("2376/tcp", None))), None);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("0.0.0.0", "32768")])))), Some(32768));
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("10.0.0.1", "32768")])))), None);
        assert_eq!(published_port(Some(&map("2375/tcp", Some(vec![b("127.0.0.1", "32768")])))), None);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("127.0.0.1", "")])))), None);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("127.0.0.1", "0")])))), None);
    }
}
