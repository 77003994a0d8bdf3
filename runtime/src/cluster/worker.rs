//! TO BE WRITTEN.
use squall_api::Registry;

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    pub nimbus: String,
}

pub async fn run(args: WorkerArgs, registry: &Registry) -> Result<(), String> {
    let _ = (args, registry);
    Err("worker is not written yet".into())
}
