//! `squall errors NAME [--ui ADDR] [--json]`: a running topology's errors, per component,
//! from nimbus, or with `--ui` from a UI's `GET /api/v1/topology/NAME/errors` (a local run's
//! `squall local --ui ADDR`, with `$SQUALL_SECRET` if set).
//!
//! Contract: per component in the topology's order, one line `ID: N errors` (every error
//! its tasks reported, logged or not), then each task's latest error, the newest first:
//! `  TIME  task T  worker W (HOST:PORT)  MESSAGE`, TIME in RFC 3339 UTC. `--json` prints
//! nimbus's answer as one object (`{"topology", "components": [{"id", "errors",
//! "componentErrors": [{"error", "errorTime", "task", "worker", "host", "port"}]}]}`).
//! An unknown topology or an unreachable nimbus is a one-line error.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use squall_cluster::client::Client;
use squall_ui::rest::TopologyErrors;

use crate::cluster_verbs::ConfigArg;

#[derive(Args, Debug)]
pub struct ErrorsArgs {
    /// The topology's name
    name: String,
    /// One JSON object on stdout
    #[arg(long)]
    json: bool,
    /// Read a UI at HOST:PORT instead of nimbus (a local run's `--ui`)
    #[arg(long, value_name = "ADDR")]
    ui: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

pub async fn run(args: ErrorsArgs) -> Result<(), String> {
    let errors: TopologyErrors = match &args.ui {
        Some(addr) => {
            // A local run's UI (`squall local --ui`): plain HTTP, its secret in SQUALL_SECRET.
            let url = format!("http://{addr}/api/v1/topology/{}/errors", args.name);
            let secret = std::env::var("SQUALL_SECRET").ok();
            crate::top::get_json(&crate::top::ui_client(None)?.0, &url, secret.as_deref()).await?
        }
        None => {
            let config = args.config.load()?;
            let client = Client::for_config(&config).map_err(|e| e.to_string())?;
            client.errors(&args.name).await.map_err(|e| e.to_string())?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&errors).map_err(|e| e.to_string())?);
    } else {
        print!("{}", render(&errors));
    }
    Ok(())
}

/// The text form (see the module docs).
pub fn render(errors: &TopologyErrors) -> String {
    let mut out = String::new();
    for c in &errors.components {
        let count = match c.errors {
            0 => "no errors".to_string(),
            1 => "1 error".to_string(),
            n => format!("{n} errors"),
        };
        let _ = writeln!(out, "{}: {count}", c.id);
        for e in &c.component_errors {
            let time = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(e.error_time));
            let worker = match e.worker {
                Some(w) if e.port != 0 => format!("worker {w} ({}:{})", e.host, e.port),
                Some(w) => format!("worker {w} ({})", e.host),
                None => "worker ?".to_string(),
            };
            let _ = writeln!(out, "  {time}  task {}  {worker}  {}", e.task, e.error);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_ui::rest::{ComponentErrors, ErrorEntry};

    #[test]
    fn errors_print_per_component_with_time_task_and_worker() {
        let errors = TopologyErrors {
            topology: "t".into(),
            components: vec![
                ComponentErrors { id: "numbers".into(), errors: 0, component_errors: Vec::new() },
                ComponentErrors {
                    id: "lines".into(),
                    errors: 3,
                    component_errors: vec![ErrorEntry {
                        error: "f:2: skipped".into(),
                        error_time: 86_400,
                        task: 4,
                        worker: Some(1),
                        host: "10.0.0.2".into(),
                        port: 6701,
                    }],
                },
            ],
        };
        assert_eq!(
            render(&errors),
            "numbers: no errors\nlines: 3 errors\n  1970-01-02T00:00:00Z  task 4  worker 1 (10.0.0.2:6701)  f:2: skipped\n"
        );
    }
}
