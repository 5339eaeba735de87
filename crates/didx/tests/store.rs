//! The image store through the library, pool included: `pool::up` with `store` and `load`
//! fills it once, pooled environments started with it hold its images, and a claim runs them.
//! One test in this binary: it sets `DIDX_STORE_PREFIX` for the process (its own prefix, so no
//! user's store is touched), which no other thread reads meanwhile.

mod common;

use std::time::Duration;

use common::*;
use didx::{Cancel, Engine, Sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_environments_started_with_the_store_hold_its_images_and_a_claim_runs_them() {
    let prefix = format!("didx-libt-{}", std::process::id());
    // SAFETY: the only test of this binary, before it starts any thread of its own.
    unsafe { std::env::set_var(didx::store::PREFIX_VAR, &prefix) };
    let host = host();
    let image = busybox(&host, "didx-libtest-store", &tag("store")).await;
    let engine = Engine::connect_default().await.unwrap();
    let result = scenario(&engine, &image).await;

    // Whatever happened: the pool's environments on this store, the store, the image.
    let cleanup = async {
        for info in didx::store::list(&engine).await? {
            for user in info.users {
                if let Some(id) = user.split('_').nth(1) {
                    didx::inventory::remove(&engine, id).await?;
                }
            }
        }
        didx::store::remove(&engine, &[], &Cancel::new(), &|_| {}).await
    };
    let removed = cleanup.await;
    remove_image(&host, &image).await;
    let left = didx::store::list(&engine).await.unwrap();
    result.unwrap();
    removed.unwrap();
    assert!(left.is_empty(), "stores left: {left:?}");
}

async fn scenario(engine: &Engine, image: &str) -> didx::Result<()> {
    // Without the store, `pool up` with images is refused before anything starts.
    let no_store = Sandbox::builder().load(image).options()?;
    let refused = didx::pool::up(engine, &no_store, 1, None, &Cancel::new(), &|_| {}).await;
    assert!(matches!(&refused, Err(e) if e.is_usage()), "{refused:?}");

    // A pool of one with the store and the image (`pool up --store --load`): the image goes
    // into the store first; the claim gets it without loading.
    let options = Sandbox::builder().store(true).load(image).options()?;
    let up = didx::pool::up(engine, &options, 1, Some(Duration::from_secs(300)), &Cancel::new(), &|_| {}).await?;
    assert_eq!(up.started.len() + up.existing, 1, "{up:?}");
    let stores = didx::store::list(engine).await?;
    assert_eq!(stores.len(), 1, "{stores:?}");
    let index = stores[0].index.clone().expect("readable");
    assert!(index.images.iter().any(|i| i.tags.iter().any(|t| t == image)), "{index:?}");
    let mut sb = Sandbox::builder().store(true).start_pooled(engine).await?;
    assert!(sb.take_refill().is_some(), "claimed from the pool");
    assert_eq!(didx::store::list(engine).await?[0].users.len(), 1, "the claimed server mounts the store");
    let out = sb.exec(["docker", "run", "--rm", image, "echo", "from the store"]).await?;
    assert!(out.success() && out.stdout_text().contains("from the store"), "{out:?}");
    sb.rm().await?;
    Ok(())
}
