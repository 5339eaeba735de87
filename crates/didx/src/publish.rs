//! `--publish [IP:]HOSTPORT:ENVPORT[/PROTO]`: a port of the environment made reachable from the
//! engine's host. Bound on the server container, whose network namespace the inner engine's
//! `docker run -p ENVPORT:…` binds in, so an inner container's port is reachable at
//! `IP:HOSTPORT` on the host. Parsed once here into [`PublishSpec`]; the set a run asks for is
//! checked as a whole by [`check_all`].

use std::net::{IpAddr, Ipv4Addr};

use crate::error::{Error, Result};

/// The inner engine's own TLS port, which didx publishes itself (on 127.0.0.1, engine-chosen).
const INNER_TLS_PORT: u16 = 2376;

const FIX: &str = "expected ENVPORT, HOSTPORT:ENVPORT, IP:HOSTPORT:ENVPORT, IP::ENVPORT or [::1]:HOSTPORT:ENVPORT, ports 1-65535 (HOSTPORT 0 or empty: a free port), optional /tcp or /udp, e.g. 8080:80 or 127.0.0.1::80/udp";

/// A published port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`, as the engine writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One validated `--publish` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishSpec {
    /// The host address to bind: 127.0.0.1 unless given.
    pub ip: IpAddr,
    /// The host port; 0 lets the engine choose a free one.
    pub host_port: u16,
    /// The port in the environment (the server's network namespace).
    pub env_port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl PublishSpec {
    /// Parse one `--publish` value.
    ///
    /// ```
    /// use didx::spec::{Proto, PublishSpec};
    /// let p = PublishSpec::parse("8080:80").unwrap();
    /// assert_eq!((p.ip.to_string().as_str(), p.host_port, p.env_port, p.proto), ("127.0.0.1", 8080, 80, Proto::Tcp));
    /// ```
    pub fn parse(s: &str) -> Result<PublishSpec> {
        let bad = |why: &str| Error::invalid("--publish spec", s, format!("{why}{FIX}"));
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some((_, p)) => return Err(bad(&format!("unknown protocol '{p}'; "))),
            None => (s, Proto::Tcp),
        };
        // An IPv6 address is bracketed: [::1]:HOSTPORT:ENVPORT.
        let (ip, ports) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unbalanced '['; "))?;
            let ip: IpAddr = addr.parse().map_err(|_| bad(&format!("'{addr}' is not an IP address; ")))?;
            let ports = after.strip_prefix(':').ok_or_else(|| bad("an address needs HOSTPORT:ENVPORT after it; "))?;
            if !ip.is_ipv6() {
                return Err(bad("only an IPv6 address goes in brackets; "));
            }
            (Some(ip), ports)
        } else {
            match rest.matches(':').count() {
                0 | 1 => (None, rest),
                2 => {
                    let (addr, ports) = rest.split_once(':').unwrap_or_default();
                    let ip: IpAddr = addr.parse().map_err(|_| bad(&format!("'{addr}' is not an IP address; ")))?;
                    if ip.is_ipv6() {
                        return Err(bad("write an IPv6 address in brackets; "));
                    }
                    (Some(ip), ports)
                }
                _ => return Err(bad("too many ':'; ")),
            }
        };
        let port = |p: &str, what: &str, zero_ok: bool| -> Result<u16> {
            match p.parse::<u16>() {
                Ok(0) if zero_ok => Ok(0),
                Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Ok(n),
                _ => Err(bad(&format!("{what} '{p}' is not a port; "))),
            }
        };
        let (host_port, env_port) = match ports.split_once(':') {
            None if ip.is_none() => (0, port(ports, "ENVPORT", false)?),
            None => return Err(bad("an address needs HOSTPORT:ENVPORT after it; ")),
            Some(("", e)) => (0, port(e, "ENVPORT", false)?),
            Some((h, e)) => (port(h, "HOSTPORT", true)?, port(e, "ENVPORT", false)?),
        };
        if env_port == INNER_TLS_PORT && proto == Proto::Tcp {
            return Err(Error::invalid(
                "--publish spec",
                s,
                "2376/tcp is the inner engine's own TLS port, which didx publishes itself on 127.0.0.1 (see didx env ID); publish another port",
            ));
        }
        Ok(PublishSpec { ip: ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), host_port, env_port, proto })
    }

    /// The engine's port key, `ENVPORT/PROTO`.
    pub fn port_key(&self) -> String {
        format!("{}/{}", self.env_port, self.proto.as_str())
    }

    /// The engine's binding for it: the address (IPv6 without brackets, as the engine takes
    /// it) and the host port, empty for the engine to choose.
    pub(crate) fn binding(&self) -> bollard::models::PortBinding {
        let port = if self.host_port == 0 { String::new() } else { self.host_port.to_string() };
        bollard::models::PortBinding { host_ip: Some(self.ip.to_string()), host_port: Some(port) }
    }
}

impl std::fmt::Display for PublishSpec {
    /// The canonical form, `IP:HOSTPORT:ENVPORT/PROTO` (`[IP]` for IPv6).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}:{}/{}", self.host_port, self.env_port, self.proto.as_str()),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}:{}/{}", self.host_port, self.env_port, self.proto.as_str()),
        }
    }
}

/// Refuse a set of specs that cannot all be bound: two on the same address, host port (not 0)
/// and protocol, or two for the same environment port and protocol.
pub fn check_all(specs: &[PublishSpec]) -> Result<()> {
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            let same_host = a.host_port != 0
                && a.host_port == b.host_port
                && a.proto == b.proto
                && (a.ip == b.ip || a.ip.is_unspecified() || b.ip.is_unspecified());
            if same_host {
                return Err(Error::invalid(
                    "--publish spec",
                    a.to_string(),
                    format!("it binds the same host port as {b}; give each a different HOSTPORT (or 0 for a free one)"),
                ));
            }
            if a.env_port == b.env_port && a.proto == b.proto {
                return Err(Error::invalid(
                    "--publish spec",
                    a.to_string(),
                    format!("{} is already published by {b}; publish each environment port once", a.port_key()),
                ));
            }
        }
    }
    Ok(())
}

/// The part of an engine's start refusal that says a host port could not be bound
/// (`listen tcp4 127.0.0.1:P: bind: address already in use`, or from 23 on `Bind for
/// 127.0.0.1:P failed: port is already allocated`); `None` for any other refusal.
pub(crate) fn bind_refusal(msg: &str) -> Option<&str> {
    let at = msg.find("listen tcp").or_else(|| msg.find("listen udp")).or_else(|| msg.find("Bind for"))?;
    Some(msg[at..].trim_end())
}

/// The host port a bind refusal names (`listen tcp4 0.0.0.0:8080: bind: …`, `Bind for
/// 0.0.0.0:8080 failed: …`).
pub(crate) fn refused_port(msg: &str) -> Option<u16> {
    let reason = bind_refusal(msg)?;
    let addr = reason.strip_prefix("Bind for ").map(|r| r.split(' ').next().unwrap_or("")).unwrap_or_else(|| {
        let r = reason.split_once(' ').map_or("", |(_, r)| r);
        r.split(": ").next().unwrap_or("")
    });
    addr.rsplit(':').next()?.parse().ok()
}

/// A port the server publishes, as the engine bound it (the real host port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The host address.
    pub ip: String,
    /// The host port.
    pub host_port: u16,
    /// The environment's port.
    pub env_port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl Published {
    /// `IP:PORT` as a client dials it (`[IP]:PORT` for IPv6).
    pub fn host_addr(&self) -> String {
        if self.ip.contains(':') { format!("[{}]:{}", self.ip, self.host_port) } else { format!("{}:{}", self.ip, self.host_port) }
    }
}

/// Every port a server publishes but its inner engine's TLS port, from its inspected ports.
pub(crate) fn all_bound(ports: Option<&bollard::models::PortMap>) -> Vec<Published> {
    let mut out = Vec::new();
    for (key, bindings) in ports.into_iter().flatten() {
        let Some((port, proto)) = key.split_once('/') else { continue };
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => continue,
        };
        let Ok(env_port) = port.parse::<u16>() else { continue };
        if env_port == INNER_TLS_PORT && proto == Proto::Tcp {
            continue;
        }
        for b in bindings.iter().flatten() {
            if let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse().ok()) {
                out.push(Published { ip: b.host_ip.clone().unwrap_or_default(), host_port, env_port, proto });
            }
        }
    }
    // An engine from 23 on lists a 0.0.0.0 binding twice, as 0.0.0.0 and as ::; one is enough.
    let v4_any: Vec<(u16, u16, Proto)> = out.iter().filter(|p| p.ip == "0.0.0.0").map(|p| (p.host_port, p.env_port, p.proto)).collect();
    out.retain(|p| !(p.ip == "::" && v4_any.contains(&(p.host_port, p.env_port, p.proto))));
    out.sort_by(|a, b| (a.env_port, a.proto, &a.ip).cmp(&(b.env_port, b.proto, &b.ip)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        PublishSpec::parse(s).unwrap().to_string()
    }

    #[test]
    fn every_form_parses_to_one_canonical_spec() {
        assert_eq!(p("80"), "127.0.0.1:0:80/tcp");
        assert_eq!(p("8080:80"), "127.0.0.1:8080:80/tcp");
        assert_eq!(p("0:80"), "127.0.0.1:0:80/tcp");
        assert_eq!(p(":80"), "127.0.0.1:0:80/tcp");
        assert_eq!(p("0.0.0.0:8080:80"), "0.0.0.0:8080:80/tcp");
        assert_eq!(p("127.0.0.1::80/udp"), "127.0.0.1:0:80/udp");
        assert_eq!(p("[::1]:8080:80"), "[::1]:8080:80/tcp");
        assert_eq!(p("[::1]::80/tcp"), "[::1]:0:80/tcp");
        assert_eq!(p("53/udp"), "127.0.0.1:0:53/udp");
        // 2376/udp is not the inner engine's port.
        assert_eq!(p("2376/udp"), "127.0.0.1:0:2376/udp");
    }

    #[test]
    fn bad_specs_are_usage_errors_naming_the_problem() {
        for (bad, says) in [
            ("", "not a port"),
            ("0", "not a port"),
            ("65536", "not a port"),
            ("8080:0", "not a port"),
            ("x:80", "not a port"),
            ("+80", "not a port"),
            ("80/sctp", "unknown protocol"),
            ("1.2.3:1:80", "not an IP address"),
            ("999.0.0.1:1:80", "not an IP address"),
            ("::1:8080:80", "too many"),
            ("[::1:8080:80", "unbalanced"),
            ("[127.0.0.1]:1:80", "brackets"),
            ("127.0.0.1:80", "not a port"),
            ("[::1]:80", "HOSTPORT:ENVPORT"),
            ("2376", "inner engine's own TLS port"),
            ("8080:2376/tcp", "inner engine's own TLS port"),
        ] {
            let e = PublishSpec::parse(bad).unwrap_err();
            assert!(e.is_usage(), "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn overlapping_specs_are_refused() {
        let specs = |v: &[&str]| v.iter().map(|s| PublishSpec::parse(s).unwrap()).collect::<Vec<_>>();
        assert!(check_all(&specs(&["8080:80", "8081:81", "0:82", "0:83", "8080:80/udp", "127.0.0.2:8080:84"])).is_ok());
        for bad in [&["8080:80", "8080:81"][..], &["0.0.0.0:8080:80", "8080:81"], &["8080:80", "8081:80"], &["80", "0:80"]] {
            let e = check_all(&specs(bad)).unwrap_err();
            assert!(e.is_usage(), "{bad:?}");
        }
    }

    #[test]
    fn bind_refusals_are_recognised() {
        let old = "driver failed programming external connectivity on endpoint x (c5): Error starting userland proxy: listen tcp4 127.0.0.1:55973: bind: address already in use";
        assert_eq!(bind_refusal(old), Some("listen tcp4 127.0.0.1:55973: bind: address already in use"));
        let new =
            "driver failed programming external connectivity on endpoint x (c5): Bind for 127.0.0.1:8080 failed: port is already allocated";
        assert_eq!(bind_refusal(new), Some("Bind for 127.0.0.1:8080 failed: port is already allocated"));
        assert_eq!(bind_refusal("OCI runtime create failed: unable to apply caps"), None);
    }

    #[test]
    fn bound_ports_are_read_back() {
        use bollard::models::PortBinding;
        let b = |ip: &str, port: &str| PortBinding { host_ip: Some(ip.into()), host_port: Some(port.into()) };
        let ports = std::collections::HashMap::from([
            ("2376/tcp".to_string(), Some(vec![b("127.0.0.1", "49153")])),
            ("80/tcp".to_string(), Some(vec![b("127.0.0.1", "49154")])),
            ("53/udp".to_string(), Some(vec![b("0.0.0.0", "5353"), b("::", "5353")])),
        ]);
        let all = all_bound(Some(&ports));
        assert_eq!(all.len(), 2, "the TLS port is not listed, 0.0.0.0 once: {all:?}");
        assert_eq!((all[0].host_addr(), all[0].env_port, all[0].proto), ("0.0.0.0:5353".to_string(), 53, Proto::Udp));
        assert_eq!((all[1].host_addr(), all[1].env_port, all[1].proto), ("127.0.0.1:49154".to_string(), 80, Proto::Tcp));
        let v6 = Published { ip: "::1".into(), host_port: 1, env_port: 2, proto: Proto::Tcp };
        assert_eq!(v6.host_addr(), "[::1]:1");
    }

    #[test]
    fn refused_ports_are_read() {
        assert_eq!(refused_port("driver failed …: Bind for 0.0.0.0:8080 failed: port is already allocated"), Some(8080));
        assert_eq!(refused_port("Error starting userland proxy: listen tcp4 0.0.0.0:18080: bind: address already in use"), Some(18080));
        assert_eq!(refused_port("no such image"), None);
    }
}
