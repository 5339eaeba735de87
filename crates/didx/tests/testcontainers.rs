//! A real third-party client through the sandbox's endpoint: testcontainers-rs (from
//! crates.io) starts a container in the sandbox's INNER engine, from an image seeded with
//! `.load` (no registry), configured only by the variables `Sandbox::docker_env` gives — as a
//! user would point it at any engine. Its own binary: those variables are process-wide.

mod common;

use bollard::query_parameters as qp;
use common::*;
use didx::{Engine, Sandbox};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

#[test]
fn testcontainers_runs_a_container_in_the_sandbox() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let host = host();
    let t = tag("tc");
    let image = rt.block_on(busybox(&host, "didx-libtest-tc", &t));
    let engine = rt.block_on(Engine::connect_default()).unwrap();
    let sb = rt.block_on(Sandbox::builder().load(&image).start(&engine)).unwrap();
    let id = sb.id().to_string();
    let vars = rt.block_on(sb.docker_env()).unwrap();
    for (k, v) in &vars {
        // SAFETY: no other test runs in this binary, and nothing of ours reads the
        // environment while it is set (testcontainers reads it when it makes its client).
        unsafe { std::env::set_var(k, v) };
    }
    rt.block_on(async {
        let container = GenericImage::new("didx-libtest-tc", t.as_str())
            .with_wait_for(WaitFor::message_on_stdout("ready"))
            .with_cmd(["sh", "-c", "echo ready; sleep 60"])
            .start()
            .await
            .expect("testcontainers starts a container in the sandbox");
        let cid = container.id().to_string();
        // It runs in the sandbox's engine, and not on the host's.
        let inner = sb.docker().await.unwrap();
        let state = inner.inspect_container(&cid, None::<qp::InspectContainerOptions>).await.unwrap().state.unwrap();
        assert_eq!(state.running, Some(true));
        assert!(host.inspect_container(&cid, None::<qp::InspectContainerOptions>).await.is_err());
        container.rm().await.unwrap();
        assert!(inner.inspect_container(&cid, None::<qp::InspectContainerOptions>).await.is_err());
    });
    rt.block_on(sb.rm()).unwrap();
    rt.block_on(remove_image(&host, &image));
    assert_eq!(rt.block_on(leftovers(&host, &id)), Vec::<String>::new());
}
