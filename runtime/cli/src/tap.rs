//! `squall tap NAME COMPONENT [--stream S] [--count N] [--ui ADDR]`: live tuples sampled from
//! what a running component emits, one JSON object per line.
//!
//! Contract: each line is `{"component", "task", "stream", "timestamp", "tuple": {FIELD:
//! VALUE, …}}` (the fields in the stream's order; timestamp in milliseconds since the Unix
//! epoch). A cluster's topology is tapped through nimbus's API (signed with the cluster
//! secret, as every request); a local run's (`squall local FILE --ui ADDR`) through that UI,
//! with `SQUALL_SECRET`. A tapped component gives a bounded sample (at most 500 tuples a
//! second, spread over its tasks), so a busy one shows a sample of its output and a quiet one
//! every tuple; while nobody taps, the component pays one relaxed atomic load per emit.
//! With `--count N` the command exits 0 after N lines; without it, it runs until Ctrl-C or
//! the end of the run. An unknown topology, component or stream, and a run that ends before
//! N lines, are one-line errors with a non-zero exit. A closed stdout (`| head`) ends it
//! quietly.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use squall_cluster::client::Client;

use crate::cluster_verbs::ConfigArg;

#[derive(Args, Debug)]
pub struct TapArgs {
    /// The topology's name
    name: String,
    /// The component whose output to sample
    component: String,
    /// Only this stream [default: every stream of the component]
    #[arg(long, value_name = "S")]
    stream: Option<String>,
    /// Exit after this many tuples
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Tap a local run's UI at HOST:PORT (`squall local FILE --ui ADDR`) instead of the
    /// cluster's nimbus
    #[arg(long, value_name = "HOST:PORT")]
    ui: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

pub async fn run(args: TapArgs) -> Result<(), String> {
    if args.count == Some(0) {
        return Ok(());
    }
    let response = match &args.ui {
        Some(addr) => open_local(&args, addr).await?,
        None => {
            let config = args.config.load()?;
            let client = Client::new(&config.cluster.nimbus, &config.cluster.secret);
            client
                .tap(&args.name, &args.component, args.stream.as_deref())
                .await
                .map_err(|e| e.to_string())?
        }
    };
    copy_lines(response, args.count).await
}

/// Opens the tap on a local run's UI.
async fn open_local(args: &TapArgs, addr: &str) -> Result<reqwest::Response, String> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let mut url = reqwest::Url::parse(&format!("http://{addr}/api/v1/topology"))
        .map_err(|e| format!("--ui {addr}: not a HOST:PORT ({e})"))?;
    url.path_segments_mut().map_err(|_| format!("--ui {addr}: not a HOST:PORT"))?.extend([
        args.name.as_str(),
        "component",
        args.component.as_str(),
        "tap",
    ]);
    if let Some(stream) = &args.stream {
        url.query_pairs_mut().append_pair("stream", stream);
    }
    let mut request = http.get(url);
    if let Ok(secret) = std::env::var("SQUALL_SECRET") {
        request = request.header(squall_ui::server::SECRET_HEADER, secret);
    }
    let response = request.send().await.map_err(|e| format!("cannot reach the ui at {addr}: {e}"))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("the ui answered {status}"));
    Err(reason)
}

/// Prints the reply's lines until `count` of them (or its end), stopping at an error line.
async fn copy_lines(mut response: reqwest::Response, count: Option<u64>) -> Result<(), String> {
    let mut pending: Vec<u8> = Vec::new();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(format!("the tap broke off: {e}")),
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            if text.trim().is_empty() {
                continue;
            }
            if let Some(error) = error_of(&text) {
                return Err(error);
            }
            let mut out = stdout.lock();
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                // Whoever read our output is gone (`| head`): nothing is wrong.
                return Ok(());
            }
            printed += 1;
            if count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
    }
    match count {
        Some(n) => Err(format!("the tap ended after {printed} of {n} tuples: the topology stopped")),
        None => Ok(()),
    }
}

/// The reason in an `{"error": …}` line.
fn error_of(line: &str) -> Option<String> {
    if !line.starts_with("{\"error\"") {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(line).ok()?["error"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_is_told_from_a_tuple_line() {
        assert_eq!(
            error_of(r#"{"error":"component `x` emits no stream `y`"}"#).as_deref(),
            Some("component `x` emits no stream `y`")
        );
        assert_eq!(
            error_of(r#"{"component":"x","task":1,"stream":"default","timestamp":1,"tuple":{"error":"no"}}"#),
            None
        );
    }
}
