//! The engine didx talks to: `-H`, else the one the docker CLI would use.

use didx::Engine;

/// `-H`, else what the docker CLI would use (DOCKER_HOST, the docker context, the socket).
pub async fn connect(host: Option<&str>) -> didx::Result<Engine> {
    match host {
        Some(h) => Engine::connect(Some(h)).await,
        None => Engine::connect_default().await,
    }
}
