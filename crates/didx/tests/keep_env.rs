//! `DIDX_KEEP=1` keeps a dropped sandbox. Its own test binary: it sets a process-wide
//! variable, which no other test may see.

mod common;

use common::*;
use didx::{Engine, Sandbox};

#[test]
fn didx_keep_keeps_a_dropped_sandbox_and_rm_still_removes() {
    // SAFETY: set before any runtime or other thread of this binary exists.
    unsafe { std::env::set_var(didx::KEEP_VAR, "1") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let host = host();
        let engine = Engine::connect_default().await.unwrap();
        let sb = Sandbox::builder().start(&engine).await.unwrap();
        let id = sb.id().to_string();
        drop(sb);
        assert_eq!(leftovers(&host, &id).await.len(), 3, "DIDX_KEEP=1 keeps what is dropped");
        didx::inventory::remove(&engine, &id).await.unwrap();
        assert!(leftovers(&host, &id).await.is_empty());

        let sb = Sandbox::builder().start(&engine).await.unwrap();
        let id = sb.id().to_string();
        sb.rm().await.unwrap();
        assert!(leftovers(&host, &id).await.is_empty(), "an explicit rm removes even with DIDX_KEEP=1");
    });
}
