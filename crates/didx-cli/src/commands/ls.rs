//! `didx ls`: every didx environment on the engine, a line each (JSON with `--json`).

use crate::engine::connect;
use crate::listing;

/// Take `--json` for the listing.
pub fn of(json: bool) {
    listing::choose_json(json);
}

/// `didx ls`.
pub async fn ls(host: Option<&str>) -> anyhow::Result<u8> {
    listing::ls(&connect(host).await?).await
}
