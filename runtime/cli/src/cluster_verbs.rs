//! The cluster verbs of the command line: `submit`, `list`, `status`, `kill`, `activate`,
//! `deactivate`, `rebalance` (clients of nimbus's API) and the daemons `nimbus`, `supervisor`
//! and `worker`.
//!
//! Contract: every verb reads the cluster file (`--config`, default config/cluster.toml) for
//! nimbus's address and the secret. `submit` validates the topology with the components of
//! the executable it uploads (this binary, or `--artifact PATH` asked through its own
//! `validate`), uploads that executable under its sha256 unless nimbus has it, and submits
//! the topology with its `${VAR}`s substituted here. `kill` and `rebalance` wait until nimbus
//! has done what they asked (the drain takes `--wait` seconds, default the topology's message
//! timeout) and say what happened. Results go to stdout, one line (or a table); a failure is
//! one line `error: …` and a non-zero exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use squall_api::{Registry, Role};

use squall_cluster::artifacts::sha256_hex;
use squall_cluster::client::{Client, ClientError};
use squall_cluster::config::{self, ClusterConfig};
use squall_cluster::*;
use squall_engine::topology::{self, substitute};

/// `--config FILE`, shared by every cluster verb.
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// The cluster file: nimbus's address, the secret, daemon settings
    /// [default: config/cluster.toml if it exists, else built-in defaults]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<ClusterConfig, String> {
        config::load(self.config.as_deref()).map_err(|e| e.to_string())
    }

    fn client(&self) -> Result<(ClusterConfig, Client), String> {
        let config = self.load()?;
        let client = Client::for_config(&config).map_err(|e| e.to_string())?;
        Ok((config, client))
    }
}

/// The verbs of this module, as the command line has them.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Send a topology to the cluster: validates it, uploads the executable holding its
    /// components (this one unless --artifact) and has nimbus place its tasks
    Submit {
        /// The topology file (TOML)
        file: PathBuf,
        /// The executable holding the topology's components [default: this one]
        #[arg(long, value_name = "PATH")]
        artifact: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The cluster's topologies with status, workers, tasks, uptime
    List {
        /// One JSON array on stdout
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// A running topology's per-component figures, summed over its workers
    Status {
        name: String,
        /// One JSON object on stdout (as `local --json`)
        #[arg(long)]
        json: bool,
        /// The figures over Storm's window 600 (10 minutes), 10800 (3 hours) or all-time,
        /// read from the cluster's UI (`[ui] listen`) [default: since the tasks started]
        #[arg(long, value_name = "WINDOW")]
        window: Option<String>,
        /// With --window: the UI to read, HOST:PORT [default: [ui] listen of the cluster file]
        #[arg(long, value_name = "ADDR", requires = "window")]
        ui: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Deactivate a topology, let in-flight tuples drain, stop its workers, remove it
    Kill {
        name: String,
        /// Seconds to let in-flight tuples drain [default: the topology's message timeout]
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Let a topology's spouts emit again
    Activate {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stop a topology's spouts from emitting (in-flight tuples still complete)
    Deactivate {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Spread a topology over a new number of workers and/or change components' parallelism
    Rebalance {
        name: String,
        /// Worker processes
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// A component's new parallelism (repeatable)
        #[arg(long, value_name = "COMPONENT=N", value_parser = parse_parallelism)]
        parallelism: Vec<(String, usize)>,
        /// Seconds to let in-flight tuples drain first [default: the topology's message timeout]
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The cluster's coordinator: keeps topologies and places their tasks on supervisors
    Nimbus {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Runs worker processes for the tasks nimbus assigns to this machine's slots
    Supervisor {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One worker process of a topology (started by a supervisor, never by hand)
    #[command(hide = true)]
    Worker(squall_cluster::worker::WorkerArgs),
}

/// Runs a cluster verb with the component kinds of `registry`.
pub async fn run(command: ClusterCommand, registry: Registry) -> Result<(), String> {
    match command {
        ClusterCommand::Submit { file, artifact, config } => {
            submit(&config, &file, artifact.as_deref(), &registry).await
        }
        ClusterCommand::List { json, config } => list(&config, json).await,
        ClusterCommand::Status { name, json, window: Some(window), ui, config } => {
            status_over(&config, &name, json, &window, ui).await
        }
        ClusterCommand::Status { name, json, window: None, config, .. } => status(&config, &name, json).await,
        ClusterCommand::Kill { name, wait, config } => kill(&config, &name, wait).await,
        ClusterCommand::Activate { name, config } => activate(&config, &name, true).await,
        ClusterCommand::Deactivate { name, config } => activate(&config, &name, false).await,
        ClusterCommand::Rebalance { name, workers, parallelism, wait, config } => {
            rebalance(&config, &name, workers, parallelism, wait).await
        }
        ClusterCommand::Nimbus { config } => {
            squall_cluster::nimbus::run(config.load()?).await.map_err(|e| e.to_string())
        }
        ClusterCommand::Supervisor { config } => {
            squall_cluster::supervisor::run(config.load()?).await.map_err(|e| e.to_string())
        }
        ClusterCommand::Worker(args) => {
            let mut registry = registry;
            // The benchmarks' own components run in workers too.
            registry.merge(&crate::bench::worker_registry());
            squall_cluster::worker::run(args, &registry).await.map_err(|e| e.to_string())
        }
    }
}

/// `validate --layout`: the topology's layout as JSON, what `submit` asks of an `--artifact`.
pub fn print_layout(def: &topology::TopologyDef) -> Result<(), String> {
    let text = serde_json::to_string(&Layout::of(def)).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn err(e: ClientError) -> String {
    e.to_string()
}

/// What `submit` sends: the topology's name, substituted text and layout, validated with the
/// components of `artifact`.
pub fn prepare_submit(
    file: &Path,
    artifact: Option<&Path>,
    registry: &Registry,
) -> Result<(String, String, Layout), String> {
    let source = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let shown = file.display().to_string();
    let text = substitute(&shown, &source, &|name| std::env::var(name).ok())
        .map_err(|d| d.to_string().lines().next().unwrap_or_default().to_string())?
        .text()
        .to_string();
    let own = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    let other = artifact.and_then(|a| a.canonicalize().ok()).filter(|a| Some(a) != own.as_ref());
    let layout = match other {
        None => {
            let def = topology::load(file, registry).map_err(|d| {
                let n = d.0.len();
                let hint = match d.0.iter().any(|d| d.is_unknown_kind()) {
                    true => " (components of your own? build them into your binary and submit with --artifact PATH)",
                    false => "",
                };
                format!("{d}\n{shown} has {n} mistake{}{hint}", if n == 1 { "" } else { "s" })
            })?;
            Layout::of(&def)
        }
        Some(exe) => layout_from(&exe, file)?,
    };
    let name = topology_name(&text).unwrap_or_default();
    Ok((name, text, layout))
}

/// Validates `file` with the components of another executable (its `validate --layout`).
fn layout_from(exe: &Path, file: &Path) -> Result<Layout, String> {
    let output = std::process::Command::new(exe)
        .arg("validate")
        .arg("--layout")
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run the artifact {}: {e}", exe.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("the artifact {} refused the topology:\n{}", exe.display(), stderr.trim_end()));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "the artifact {} is not a squall binary of this version (validate --layout: {e})",
            exe.display()
        )
    })
}

/// The `name` of a topology file's text.
fn topology_name(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    toml::from_str::<Named>(text).ok().map(|n| n.name)
}

pub async fn submit(
    config: &ConfigArg,
    file: &Path,
    artifact: Option<&Path>,
    registry: &Registry,
) -> Result<(), String> {
    let (_, client) = config.client()?;
    let (name, text, layout) = prepare_submit(file, artifact, registry)?;
    let exe = match artifact {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?,
    };
    let bytes =
        std::fs::read(&exe).map_err(|e| format!("cannot read the artifact {}: {e}", exe.display()))?;
    let hash = sha256_hex(&bytes);
    if !client.has_artifact(&hash).await.map_err(err)? {
        client.upload_artifact(&hash, bytes).await.map_err(err)?;
    }
    let resources = client.upload_resources(file).await?;
    let request = SubmitRequest { name, text, layout, artifact: hash.clone(), resources };
    let info = client.submit(&request).await.map_err(err)?;
    let placed = if info.version == 0 {
        "waiting for free slots".to_string()
    } else {
        format!("{} worker{}", info.workers, if info.workers == 1 { "" } else { "s" })
    };
    println!("submitted topology {}: {} tasks, {placed} (artifact {})", info.name, info.tasks, &hash[..12]);
    Ok(())
}

pub async fn list(config: &ConfigArg, json: bool) -> Result<(), String> {
    let (_, client) = config.client()?;
    let topologies = client.list().await.map_err(err)?;
    if json {
        println!("{}", serde_json::to_string(&topologies).map_err(|e| e.to_string())?);
        return Ok(());
    }
    // With several nimbus seeds, which of them leads (the one that answered).
    let leader = client.leader().filter(|_| client.addr().contains(','));
    if topologies.is_empty() {
        println!("no topologies");
        if let Some(leader) = leader {
            println!("nimbus leader: {leader}");
        }
        return Ok(());
    }
    println!("{:<24} {:<12} {:>7} {:>6} {:>10}", "name", "status", "workers", "tasks", "uptime");
    for t in topologies {
        println!(
            "{:<24} {:<12} {:>7} {:>6} {:>10}",
            t.name,
            t.status.to_string(),
            t.workers,
            t.tasks,
            humantime::format_duration(Duration::from_secs(t.uptime_secs)).to_string()
        );
    }
    if let Some(leader) = leader {
        println!("nimbus leader: {leader}");
    }
    Ok(())
}

pub async fn status(config: &ConfigArg, name: &str, json: bool) -> Result<(), String> {
    let (_, client) = config.client()?;
    let status = client.status(name).await.map_err(err)?;
    if json {
        println!("{}", serde_json::to_string(&status.snapshot).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let i = &status.info;
    let restarts = match status.worker_restarts {
        0 => String::new(),
        1 => ", 1 worker restart".to_string(),
        n => format!(", {n} worker restarts"),
    };
    println!(
        "topology {}: {}, {} workers ({} reporting{restarts}), {} tasks, up {}, assignment version {}",
        i.name,
        i.status,
        i.workers,
        status.workers_reporting,
        i.tasks,
        humantime::format_duration(Duration::from_secs(i.uptime_secs)),
        i.version
    );
    let order: Vec<(&str, Role)> = status
        .order
        .iter()
        .filter_map(|id| status.snapshot.components.get(id).map(|s| (id.as_str(), s)))
        .map(|(id, s)| (id, if s.role == "spout" { Role::Spout } else { Role::Bolt }))
        .collect();
    print!("{}", status.snapshot.render_rows(order));
    Ok(())
}

/// `status --window W`: the topology's figures over a window, from the UI's page.
async fn status_over(
    config: &ConfigArg,
    name: &str,
    json: bool,
    window: &str,
    ui: Option<String>,
) -> Result<(), String> {
    let window = squall_ui::history::Window::parse(window)?;
    let loaded = config.load()?;
    let ui = ui.unwrap_or_else(|| loaded.ui.listen.clone());
    let (http, scheme) = crate::top::ui_client(loaded.tls().map_err(|e| e.to_string())?.as_ref())?;
    let url = format!("{scheme}://{ui}/api/v1/topology/{name}?window={}", window.name());
    let page: squall_ui::rest::TopologyPage =
        crate::top::get_json(&http, &url, Some(&loaded.cluster.secret)).await?;
    let snapshot = squall_ui::rest::page_snapshot(&page);
    if json {
        println!("{}", serde_json::to_string(&snapshot).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!(
        "topology {}: {}, {} workers, {} tasks, up {}; figures over: {}",
        page.entry.name,
        page.entry.status,
        page.entry.workers_total,
        page.entry.tasks_total,
        page.entry.uptime,
        page.window_pretty
    );
    let spouts = page.spouts.iter().map(|s| (s.spout_id.as_str(), Role::Spout));
    let order: Vec<(&str, Role)> =
        spouts.chain(page.bolts.iter().map(|b| (b.bolt_id.as_str(), Role::Bolt))).collect();
    print!("{}", snapshot.render_rows(order));
    Ok(())
}

pub async fn activate(config: &ConfigArg, name: &str, active: bool) -> Result<(), String> {
    let (_, client) = config.client()?;
    let info =
        if active { client.activate(name).await } else { client.deactivate(name).await }.map_err(err)?;
    println!("topology {} is {}", info.name, info.status);
    Ok(())
}

/// How long to wait for nimbus beyond the drain asked for (its default drain is the
/// topology's message timeout, which this side does not know).
const SLACK: Duration = Duration::from_secs(300);

pub async fn kill(config: &ConfigArg, name: &str, wait: Option<u64>) -> Result<(), String> {
    let (_, client) = config.client()?;
    client.kill(name, &KillRequest { wait_secs: wait }).await.map_err(err)?;
    eprintln!("killing topology {name}: spouts deactivated, in-flight tuples drain before its workers stop");
    let deadline = Instant::now() + Duration::from_secs(wait.unwrap_or(0).min(1 << 32)) + SLACK;
    loop {
        match client.status(name).await {
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(e.to_string()),
            Ok(_) if Instant::now() > deadline => {
                return Err(format!("nimbus has not removed topology {name} yet; see `squall list`"))
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    println!("killed topology {name}");
    Ok(())
}

pub async fn rebalance(
    config: &ConfigArg,
    name: &str,
    workers: Option<usize>,
    parallelism: Vec<(String, usize)>,
    wait: Option<u64>,
) -> Result<(), String> {
    let (_, client) = config.client()?;
    let before = client.status(name).await.map_err(err)?.info;
    let request = RebalanceRequest {
        workers,
        parallelism: parallelism.into_iter().collect::<BTreeMap<_, _>>(),
        wait_secs: wait,
    };
    let started = client.rebalance(name, &request).await.map_err(err)?;
    match started.drain_secs {
        Some(secs) if secs > 0 => eprintln!(
            "rebalancing topology {name}: deactivated; waiting up to {secs}s for in-flight tuples to drain (--wait SECS to change)"
        ),
        _ => eprintln!("rebalancing topology {name}: deactivated; re-assigning now"),
    }
    let deadline = Instant::now() + Duration::from_secs(wait.unwrap_or(0).min(1 << 32)) + SLACK;
    loop {
        let info = client.status(name).await.map_err(err)?.info;
        if info.version == 0 && info.status != Status::Rebalancing {
            println!(
                "rebalanced topology {name}: no free slots for it now; it starts when supervisors have some"
            );
            return Ok(());
        }
        if info.version > before.version && info.status != Status::Rebalancing {
            let fewer = match workers {
                Some(asked) if info.workers < asked && info.workers >= info.tasks => {
                    format!(
                        " (asked for {asked}; {} tasks run on at most {} workers)",
                        info.tasks, info.tasks
                    )
                }
                // Nimbus grows it once slots free up.
                Some(asked) if info.workers < asked => {
                    format!(" (asked for {asked}; only {} slots free: more as slots free up)", info.workers)
                }
                _ => String::new(),
            };
            println!(
                "rebalanced topology {name}: {} workers{fewer}, {} tasks (assignment version {})",
                info.workers, info.tasks, info.version
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("nimbus has not rebalanced topology {name} yet; see `squall status {name}`"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `COMPONENT=N` of `--parallelism`.
pub fn parse_parallelism(s: &str) -> Result<(String, usize), String> {
    let (component, n) = s.split_once('=').ok_or_else(|| format!("`{s}` is not COMPONENT=N"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("`{s}`: N must be a whole number"))?;
    if component.trim().is_empty() || n == 0 {
        return Err(format!("`{s}`: needs a component id and N of at least 1"));
    }
    Ok((component.trim().to_string(), n))
}
