//! TO BE WRITTEN.
use super::config::ClusterConfig;

pub async fn run(config: ClusterConfig) -> Result<(), String> {
    let _ = config;
    Err("supervisor is not written yet".into())
}
