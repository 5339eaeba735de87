//! What holds a host port an engine refused to bind: one of its containers, or a process of
//! this machine (read from `/proc`).

use super::connect::Engine;

/// What holds host port `port`: a container of `engine` publishing it (`container NAME`), else
/// a process of this machine listening on it (`process PID (COMM)`, from `/proc`); `None` when
/// neither is found (another network namespace, or no permission to look).
pub(crate) async fn port_holder(engine: &Engine, port: u16) -> Option<String> {
    if let Ok(containers) = engine.containers(Default::default()).await {
        for c in containers {
            if c.ports.iter().flatten().any(|p| p.public_port == Some(port)) {
                let name = c.names.and_then(|n| n.into_iter().next()).unwrap_or_default();
                let id = c.id.unwrap_or_default();
                return Some(format!("container {} ({})", name.trim_start_matches('/'), id.get(..12).unwrap_or(&id)));
            }
        }
    }
    listening_process(port)
}

/// A process of this machine with a socket listening on `port`, from `/proc/net/tcp{,6}` and
/// the processes' descriptors.
fn listening_process(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        inodes.extend(listening_inodes(&text, port));
    }
    if inodes.is_empty() {
        return None;
    }
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            if inodes.iter().any(|i| t == format!("socket:[{i}]")) {
                let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                return Some(format!("process {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

/// The inodes of sockets listening (state 0A) on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9).map(|s| s.to_string()))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_read() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
           1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0\n";
        assert_eq!(listening_inodes(table, 8080), ["4242"]);
        assert!(listening_inodes(table, 8081).is_empty());
    }
}
