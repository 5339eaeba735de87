//! Probes run inside a container, by an exec (see the module doc of [`crate::wait`] for why):
//! whether a TCP port listens there (its `/proc/net/tcp`), and what an HTTP `GET` there
//! answers (`wget`, else `curl`); and the pure readers of what they print.

use super::state::{PROBE_TIMEOUT, Verdict};
use crate::engine::{Engine, status_of};
use crate::error::Result;

/// What one probe printed, and how it ended.
struct Ran {
    code: i64,
    out: String,
    err: String,
}

impl Ran {
    /// Whether the probe's program is not in the image: the runtime's refusal (exit 126 or
    /// 127, "executable file not found").
    fn missing(&self) -> bool {
        let said = format!("{}{}", self.out, self.err).to_ascii_lowercase();
        matches!(self.code, 126 | 127) && (said.contains("not found") || said.contains("no such file"))
    }

    /// Its last non-empty line (stderr's first), to say what was seen.
    fn last_line(&self) -> String {
        let last = |s: &str| s.lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_string);
        last(&self.err).or_else(|| last(&self.out)).unwrap_or_else(|| format!("no output, exit {}", self.code))
    }
}

/// Run `argv` in `container` with `env` added, within [`PROBE_TIMEOUT`]: what it printed, or
/// what kept it from answering (the container stopped running between the poll's look and the
/// exec; the probe hung).
async fn run(engine: &Engine, container: &str, argv: &[&str], env: &[&str]) -> Result<Result<Ran, String>> {
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let env: Vec<String> = env.iter().map(|a| a.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ran = tokio::time::timeout(PROBE_TIMEOUT, engine.exec(container, &argv, &env, &mut out, &mut err)).await;
    match ran {
        Ok(Ok(code)) => {
            Ok(Ok(Ran { code, out: String::from_utf8_lossy(&out).into_owned(), err: String::from_utf8_lossy(&err).into_owned() }))
        }
        // 409: not running (any more), paused, restarting: the next poll's look says which.
        Ok(Err(e)) if status_of(&e) == Some(409) => Ok(Err(e.to_string())),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(Err(format!("`{}` did not finish within {} s", argv.join(" "), PROBE_TIMEOUT.as_secs()))),
    }
}

/// Whether something listens on TCP `port` in `container`'s network namespace.
pub(super) async fn port(engine: &Engine, container: &str, port: u16) -> Result<Verdict> {
    let ran = match run(engine, container, &["cat", "/proc/net/tcp", "/proc/net/tcp6"], &[]).await? {
        Ok(ran) => ran,
        Err(why) => return Ok(Verdict::Pending(why)),
    };
    if ran.missing() {
        return Ok(Verdict::Never(
            "its image has no `cat`, which the port probe runs in the container to read /proc/net/tcp; \
             wait for its health check or a log line instead"
                .to_string(),
        ));
    }
    let open = listening(&ran.out);
    Ok(if open.contains(&port) {
        Verdict::Met
    } else if open.is_empty() && ran.code != 0 {
        Verdict::Pending(format!("reading /proc/net/tcp failed: {}", ran.last_line()))
    } else if open.is_empty() {
        Verdict::Pending("nothing listens on TCP in the container".to_string())
    } else {
        let open: Vec<String> = open.iter().map(u16::to_string).collect();
        Verdict::Pending(format!("TCP ports listening in the container: {}", open.join(", ")))
    })
}

/// The HTTP clients the probe runs, in the order tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Client {
    Wget,
    Curl,
}

impl Client {
    /// Its command for a `GET` of `url`, printing the response's status line(s): wget's `-S` to
    /// stderr (busybox's and GNU's alike), curl's `-D -` to stdout. Redirects are followed.
    fn argv(self, url: &str) -> Vec<&str> {
        match self {
            Client::Wget => vec!["wget", "-S", "-O", "/dev/null", url],
            Client::Curl => vec!["curl", "-sS", "-L", "-o", "/dev/null", "-D", "-", "--noproxy", "*", url],
        }
    }
}

/// Proxies off for the probe (a container's `http_proxy` would carry 127.0.0.1 elsewhere).
const NO_PROXY: &[&str] = &["http_proxy=", "HTTP_PROXY=", "no_proxy=127.0.0.1", "NO_PROXY=127.0.0.1"];

/// Whether a `GET` of `path` on `port` in `container` answers `want`. `client` is the HTTP
/// client found in the image by an earlier poll, and is set to the one found.
pub(super) async fn http(
    engine: &Engine,
    container: &str,
    port: u16,
    path: &str,
    want: u16,
    client: &mut Option<Client>,
) -> Result<Verdict> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut tried = client.unwrap_or(Client::Wget);
    let ran = loop {
        let ran = match run(engine, container, &tried.argv(&url), NO_PROXY).await? {
            Ok(ran) => ran,
            Err(why) => return Ok(Verdict::Pending(why)),
        };
        match (ran.missing(), tried) {
            (false, _) => break ran,
            (true, Client::Wget) => tried = Client::Curl,
            (true, Client::Curl) => {
                return Ok(Verdict::Never(
                    "its image has neither `wget` nor `curl`, which the HTTP probe runs in the container; \
                     wait for its health check, a port or a log line instead"
                        .to_string(),
                ));
            }
        }
    };
    *client = Some(tried);
    Ok(match last_status(&format!("{}\n{}", ran.out, ran.err)) {
        Some(status) if status == want => Verdict::Met,
        Some(status) => Verdict::Pending(format!("GET {url} answered HTTP {status}")),
        None => Verdict::Pending(format!("GET {url}: {}", ran.last_line())),
    })
}

/// The TCP ports in state LISTEN in a `/proc/net/tcp` (or `tcp6`) table, sorted, once each.
fn listening(table: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_slot, local, _remote, state) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            // 0A: TCP_LISTEN.
            if state != "0A" {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The status of the last HTTP status line in `text` (`HTTP/1.1 200 OK`, `HTTP/2 404`, as a
/// client prints it, indented or after a message): the final response's, once redirects were
/// followed.
fn last_status(text: &str) -> Option<u16> {
    let mut last = None;
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("HTTP/") {
            rest = &rest[at + "HTTP/".len()..];
            let mut words = rest.split_whitespace();
            let version = words.next().unwrap_or_default();
            let code = words.next().unwrap_or_default();
            let version_ok = !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.');
            if version_ok
                && code.len() == 3
                && let Ok(status @ 100..=599) = code.parse::<u16>()
            {
                last = Some(status);
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_are_read_from_proc_net_tcp() {
        // As busybox's cat printed /proc/net/tcp and tcp6 of a container running httpd on 8080,
        // with a connection to it in TIME_WAIT (06), and a listener on 127.0.0.1:5432.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5361620 1 0000000000000000 100 0 0 10 0
   1: 0100007F:B0C4 0100007F:1F91 01 00000000:00000000 00:00000000 00000000     0        0 5361621 1 0000000000000000 100 0 0 10 0
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5361627 1 000000009e13de4c 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:BA98 06 00000000:00000000 03:00001744 00000000     0        0 0 3 00000000d6a4504f
";
        assert_eq!(listening(table), [5432, 8080]);
        assert_eq!(listening(""), Vec::<u16>::new());
        assert_eq!(listening("cat: can't open '/proc/net/tcp6': No such file or directory"), Vec::<u16>::new());
    }

    #[test]
    fn the_last_status_line_is_the_answer() {
        // busybox wget -S, a 200 (headers indented on stderr).
        assert_eq!(last_status("Connecting to 127.0.0.1:8080 (127.0.0.1:8080)\n  HTTP/1.1 200 OK\n  Content-Length: 3\n"), Some(200));
        // busybox wget on a 404: the header, then its error.
        assert_eq!(last_status("  HTTP/1.1 404 Not Found\nwget: server returned error: HTTP/1.1 404 Not Found\n"), Some(404));
        // curl -L -D - through a redirect: the final response counts.
        assert_eq!(last_status("HTTP/1.1 301 Moved Permanently\r\nLocation: /b\r\n\r\nHTTP/2 204\r\n\r\n"), Some(204));
        // No answer at all, or text that only looks like one.
        assert_eq!(last_status("wget: can't connect to remote host (127.0.0.1): Connection refused"), None);
        assert_eq!(last_status("GET /HTTP/x 200 and HTTP/1.1 2000 and HTTP/1.1 999 Weird"), None);
        assert_eq!(last_status(""), None);
    }

    #[test]
    fn a_missing_program_is_told_from_a_failing_one() {
        let ran = |code, out: &str| Ran { code, out: out.into(), err: String::new() };
        let oci = "OCI runtime exec failed: exec failed: unable to start container process: exec: \"wget\": executable file not found in $PATH: unknown";
        assert!(ran(126, oci).missing());
        assert!(ran(127, "sh: curl: not found").missing());
        assert!(!ran(1, "wget: server returned error: HTTP/1.1 404 Not Found").missing());
        assert!(!ran(126, "permission denied").missing());
        assert_eq!(ran(1, "a\nlast\n\n").last_line(), "last");
        assert_eq!(ran(3, "").last_line(), "no output, exit 3");
    }
}
