//! The accept loop: each connection served on its own task up to a bound set by the open-file
//! limit (raised once), a connection beyond it answered `503`, a failed accept never retried
//! in a spin.

use std::sync::Arc;

use hyper::StatusCode;
use hyper_util::rt::TokioIo;

use super::forward::{Ctx, error_response, handle};

/// How long the accept loop waits after a failed accept (out of descriptors, say) before it
/// tries again: the failure is not retried in a spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a connection refused for the connection bound may take to read its `503`.
const REFUSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Raise this process's open-file soft limit (`RLIMIT_NOFILE`) to its hard limit, once (at the
/// first proxy start); returns the soft limit in force. Each proxied connection costs two
/// descriptors, and a common soft limit of 1024 runs out at a few hundred open streams.
/// (Processes didx starts afterwards inherit the raised limit.)
pub(super) fn raise_open_files() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // None is RLIM_INFINITY.
        let now = getrlimit(Resource::Nofile);
        let (cur, max) = (now.current.unwrap_or(u64::MAX), now.maximum.unwrap_or(u64::MAX));
        // The kernel refuses more than fs.nr_open (2^20 by default), RLIM_INFINITY included.
        let target = max.min(1 << 20);
        if cur < target {
            match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: now.maximum }) {
                Ok(()) => {
                    tracing::debug!(from = cur, to = target, "open-file limit raised for the engine proxy");
                    return target;
                }
                Err(e) => tracing::debug!(error = %std::io::Error::from(e), "cannot raise the open-file limit"),
            }
        }
        cur
    })
}

/// How many client connections a proxy serves at once under an open-file limit of `limit`: two
/// descriptors each, after a reserve for the rest of didx (a quarter, 32 to 256), at least 16
/// and at most 16384. A connection beyond it is answered `503` at once.
pub(super) fn connection_bound(limit: u64) -> usize {
    let reserve = (limit / 4).clamp(32, 256);
    (limit.saturating_sub(reserve) / 2).clamp(16, 16384) as usize
}

/// The accept loop: each connection is served on its own task while a slot of `bound` is free,
/// else answered `503`. A failed accept (out of descriptors, say) is logged once and retried
/// after [`ACCEPT_BACKOFF`], never in a spin.
pub(super) async fn serve(listener: tokio::net::UnixListener, ctx: Arc<Ctx>, bound: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(bound));
    let mut warned = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if warned {
                    tracing::debug!(error = %e, "engine proxy cannot accept a connection");
                } else {
                    tracing::warn!(error = %e, "engine proxy cannot accept a connection; retrying every {ACCEPT_BACKOFF:?}");
                    warned = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let msg = format!(
                    "didx engine proxy: {bound} connections are open at once, its limit (two open files each, under this process's open-file limit); \
                     end some (streams such as logs -f, events, attach) and try again"
                );
                let svc = hyper::service::service_fn(move |_req| {
                    let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, &msg);
                    r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(REFUSAL_TIMEOUT, conn).await; // refused either way
            });
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(ctx, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await {
                tracing::debug!(error = %e, "engine proxy connection ended");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_bound_leaves_descriptors_for_the_rest_of_didx() {
        assert_eq!(connection_bound(256), 96);
        assert_eq!(connection_bound(1024), 384);
        assert_eq!(connection_bound(64), 16);
        assert_eq!(connection_bound(1 << 20), 16384);
    }
}
