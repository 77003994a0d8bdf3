//! TO BE WRITTEN.
use super::config::ClusterConfig;

pub async fn run(config: ClusterConfig) -> Result<(), String> {
    let _ = config;
    Err("nimbus is not written yet".into())
}

pub async fn serve(
    config: ClusterConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let _ = (config, listener, shutdown);
    Err("nimbus is not written yet".into())
}
