//! `squall top NAME [--ui ADDR] [--once]`: a live terminal view of a running topology.
//!
//! Contract: reads `GET /api/v1/topology/NAME` of the UI at ADDR (a cluster's nimbus `[ui]
//! listen`, the default from the cluster file, or `squall local --ui ADDR`), once a second,
//! with the cluster secret when reading needs it. It shows one row per component in the
//! topology's order: tasks, the rate over the last second (emitted for spouts, executed for
//! bolts), acked and failed totals and rates, capacity, latency (complete p50/p99 for spouts,
//! execute for bolts), errors and the last one. `q`, Esc or Ctrl-C quits and gives the
//! terminal back as it was. `--once` prints the same rows as plain text, from two readings a
//! second apart, and exits (for scripts and terminals that are not one). Rows are computed by
//! [`rows`], which does no I/O.

use std::time::Duration;

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row as TableRow, Table};
use ratatui::Frame;
use squall_ui::rest::TopologyPage;

use crate::cluster_verbs::ConfigArg;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// The topology's name
    name: String,
    /// The UI to read: HOST:PORT [default: [ui] listen of the cluster file]
    #[arg(long, value_name = "HOST:PORT")]
    ui: Option<String>,
    /// Print one reading as text and exit
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    config: ConfigArg,
}

/// One component's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub kind: String,
    pub spout: bool,
    pub tasks: usize,
    /// Emitted (spouts) or executed (bolts) per second since the previous reading.
    pub rate: f64,
    pub acked: u64,
    pub failed: u64,
    pub failed_rate: f64,
    /// Bolts: Storm's capacity.
    pub capacity: Option<f64>,
    /// Spouts: complete latency p50 and p99; bolts: mean execute latency (ms).
    pub latency: String,
    pub errors: u64,
    pub last_error: String,
}

/// The rows of `cur`, with rates against `prev` (none before a second reading).
pub fn rows(prev: Option<&TopologyPage>, cur: &TopologyPage) -> Vec<Row> {
    let secs =
        prev.map(|p| cur.sampled_at_ms.saturating_sub(p.sampled_at_ms) as f64 / 1000.0).filter(|s| *s > 0.0);
    let rate = |now: u64, before: Option<u64>| match (secs, before) {
        (Some(secs), Some(before)) => now.saturating_sub(before) as f64 / secs,
        _ => 0.0,
    };
    let mut out = Vec::new();
    for s in &cur.spouts {
        let before = prev.and_then(|p| p.spouts.iter().find(|x| x.spout_id == s.spout_id));
        out.push(Row {
            id: s.spout_id.clone(),
            kind: s.kind.clone(),
            spout: true,
            tasks: s.tasks,
            rate: rate(s.emitted, before.map(|b| b.emitted)),
            acked: s.acked,
            failed: s.failed,
            failed_rate: rate(s.failed, before.map(|b| b.failed)),
            capacity: None,
            latency: if s.acked > 0 {
                format!("p50 {} p99 {}", ms(s.complete_latency), ms(s.complete_latency_p99))
            } else {
                "-".into()
            },
            errors: s.errors,
            last_error: s.last_error.clone(),
        });
    }
    for b in &cur.bolts {
        let before = prev.and_then(|p| p.bolts.iter().find(|x| x.bolt_id == b.bolt_id));
        out.push(Row {
            id: b.bolt_id.clone(),
            kind: b.kind.clone(),
            spout: false,
            tasks: b.tasks,
            rate: rate(b.executed, before.map(|x| x.executed)),
            acked: b.acked,
            failed: b.failed,
            failed_rate: rate(b.failed, before.map(|x| x.failed)),
            capacity: Some(b.capacity),
            latency: format!("exec {}", ms(b.execute_latency)),
            errors: b.errors,
            last_error: b.last_error.clone(),
        });
    }
    out
}

fn ms(ms: f64) -> String {
    squall_engine::metrics::fmt_us(ms * 1000.0)
}

fn rate(r: f64) -> String {
    squall_engine::metrics::human(r)
}

/// The plain-text table `--once` prints.
pub fn render_text(page: &TopologyPage, rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}", title(page));
    let _ = writeln!(
        out,
        "{:<16} {:<16} {:>5} {:>10} {:>12} {:>10} {:>9} {:>24} {:>7}",
        "component", "kind", "tasks", "rate/s", "acked", "failed", "capacity", "latency", "errors"
    );
    for r in rows {
        let capacity = r.capacity.map_or("-".to_string(), |c| format!("{c:.3}"));
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:>5} {:>10} {:>12} {:>10} {:>9} {:>24} {:>7}",
            r.id,
            r.kind,
            r.tasks,
            rate(r.rate),
            r.acked,
            r.failed,
            capacity,
            r.latency,
            r.errors
        );
    }
    out
}

fn title(page: &TopologyPage) -> String {
    let e = &page.entry;
    format!(
        "topology {}: {}, up {}, {} workers, {} tasks",
        e.name,
        e.status,
        humantime::format_duration(Duration::from_secs(e.uptime_seconds)),
        e.workers_total,
        e.tasks_total
    )
}

/// Reads the topology page from the UI.
struct Source {
    http: reqwest::Client,
    url: String,
    secret: Option<String>,
}

impl Source {
    async fn read(&self) -> Result<TopologyPage, String> {
        get_json(&self.http, &self.url, self.secret.as_deref()).await
    }
}

/// `GET url` of a UI, with the secret if given: its JSON answer, or a one-line error (the
/// UI's own reason when it refused).
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
) -> Result<T, String> {
    let mut request = http.get(url);
    if let Some(secret) = secret {
        request = request.header(squall_ui::server::SECRET_HEADER, secret);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let why = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        return Err(format!("{url}: {status}: {}", why.trim()));
    }
    response.json::<T>().await.map_err(|e| format!("{url}: unreadable answer: {e}"))
}

/// An HTTP client for reading a UI, and the scheme to read it with: HTTPS with the cluster's
/// TLS (a TLS cluster's UI speaks nothing else).
pub(crate) fn ui_client(
    tls: Option<&squall_engine::tls::Tls>,
) -> Result<(reqwest::Client, &'static str), String> {
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
    let scheme = match tls {
        Some(tls) => {
            http = http.use_preconfigured_tls(tls.client_config());
            "https"
        }
        None => "http",
    };
    let http = http.build().map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    Ok((http, scheme))
}

pub async fn run(args: TopArgs) -> Result<(), String> {
    // The cluster file's `[cluster] tls` applies to --ui too: a TLS cluster's UI is HTTPS only.
    let config = args.config.load()?;
    let (ui, secret) = match &args.ui {
        Some(addr) => (addr.clone(), std::env::var("SQUALL_SECRET").ok()),
        None => (config.ui.listen.clone(), Some(config.cluster.secret.clone())),
    };
    let (http, scheme) = ui_client(config.tls().map_err(|e| e.to_string())?.as_ref())?;
    let source = Source { http, url: format!("{scheme}://{ui}/api/v1/topology/{}", args.name), secret };
    let first = source.read().await?;
    if args.once {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = source.read().await?;
        print!("{}", render_text(&second, &rows(Some(&first), &second)));
        return Ok(());
    }
    live(&source, first).await
}

/// The live view, until q, Esc or Ctrl-C.
async fn live(source: &Source, first: TopologyPage) -> Result<(), String> {
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let mut prev: Option<TopologyPage> = None;
    let mut cur = first;
    let mut problem: Option<String> = None;
    let mut next_read = tokio::time::Instant::now() + Duration::from_secs(1);
    let result = loop {
        let shown = rows(prev.as_ref(), &cur);
        if let Err(e) = terminal.draw(|f| draw(f, &cur, &shown, problem.as_deref())) {
            break Err(format!("cannot draw: {e}"));
        }
        // Keys are read off the runtime: crossterm's poll blocks.
        let key = tokio::task::spawn_blocking(|| -> std::io::Result<Option<Event>> {
            if event::poll(Duration::from_millis(100))? {
                return Ok(Some(event::read()?));
            }
            Ok(None)
        })
        .await;
        if let Ok(Ok(Some(Event::Key(k)))) = key {
            let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
            if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                break Ok(());
            }
        }
        if tokio::time::Instant::now() >= next_read {
            next_read += Duration::from_secs(1);
            match source.read().await {
                Ok(page) => {
                    prev = Some(std::mem::replace(&mut cur, page));
                    problem = None;
                }
                Err(e) => problem = Some(e),
            }
        }
    };
    ratatui::restore();
    result
}

fn draw(f: &mut Frame, page: &TopologyPage, rows: &[Row], problem: Option<&str>) {
    let [head, body, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
    f.render_widget(Paragraph::new(title(page)).style(Style::new().add_modifier(Modifier::BOLD)), head);
    let header = TableRow::new(
        [
            "component",
            "kind",
            "tasks",
            "rate/s",
            "acked",
            "failed",
            "failed/s",
            "capacity",
            "latency",
            "errors",
        ]
        .map(|h| Cell::from(h).style(Style::new().add_modifier(Modifier::BOLD))),
    );
    let lines = rows.iter().map(|r| {
        // Bolts coloured by capacity, as the web UI does: near 1 is the bottleneck.
        let colour = match r.capacity {
            Some(c) if c >= 0.8 => Color::Red,
            Some(c) if c >= 0.5 => Color::Yellow,
            _ => Color::Reset,
        };
        let failed = if r.failed_rate > 0.0 { Color::Red } else { Color::Reset };
        TableRow::new(vec![
            Cell::from(r.id.clone()),
            Cell::from(r.kind.clone()),
            Cell::from(r.tasks.to_string()),
            Cell::from(rate(r.rate)),
            Cell::from(r.acked.to_string()),
            Cell::from(r.failed.to_string()).style(Style::new().fg(failed)),
            Cell::from(rate(r.failed_rate)).style(Style::new().fg(failed)),
            Cell::from(r.capacity.map_or("-".to_string(), |c| format!("{c:.3}")))
                .style(Style::new().fg(colour)),
            Cell::from(r.latency.clone()),
            Cell::from(if r.errors > 0 { format!("{} {}", r.errors, r.last_error) } else { "0".into() }),
        ])
    });
    let widths = [
        Constraint::Length(16),
        Constraint::Length(16),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(24),
        Constraint::Min(8),
    ];
    f.render_widget(Table::new(lines, widths).header(header).block(Block::bordered()), body);
    let footer = match problem {
        Some(p) => Line::from(format!("q quits · last read failed: {p}")).style(Style::new().fg(Color::Red)),
        None => Line::from("q quits · refreshed every second"),
    };
    f.render_widget(Paragraph::new(footer), foot);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(at_ms: u64, emitted: u64, executed: u64, failed: u64) -> TopologyPage {
        serde_json::from_value(serde_json::json!({
            "id": "t", "name": "t", "status": "ACTIVE", "uptime": "1s", "uptimeSeconds": 1,
            "workersTotal": 1, "executorsTotal": 3, "tasksTotal": 3, "encodedId": "t",
            "msgTimeout": 30, "topologyStats": [], "workers": [], "edges": [],
            "sampledAtMs": at_ms,
            "spouts": [{"spoutId": "s", "kind": "sequence", "executors": 1, "tasks": 1, "emitted": emitted,
                        "transferred": emitted, "acked": emitted, "failed": failed, "completeLatency": 1.5,
                        "completeLatencyP99": 9.0, "errors": 0, "lastError": "", "lastErrorTime": null}],
            "bolts": [{"boltId": "b", "kind": "log", "executors": 2, "tasks": 2, "emitted": 0, "transferred": 0,
                       "executed": executed, "acked": executed, "failed": 0, "capacity": 0.9,
                       "executeLatency": 0.02, "processLatency": 0.02, "queueDepth": 0, "errors": 1,
                       "lastError": "boom", "lastErrorTime": 5}]
        }))
        .expect("a page as the REST API writes it")
    }

    #[test]
    fn rates_are_the_difference_of_two_readings_over_the_time_between_them() {
        let first = page(10_000, 1_000, 500, 0);
        let second = page(12_000, 5_000, 2_500, 10);
        let rows = rows(Some(&first), &second);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].id.as_str(), rows[0].rate, rows[0].failed_rate), ("s", 2_000.0, 5.0));
        assert_eq!((rows[1].id.as_str(), rows[1].rate, rows[1].capacity), ("b", 1_000.0, Some(0.9)));
        assert_eq!(rows[1].last_error, "boom");
        assert!(rows[0].latency.contains("p99"), "{}", rows[0].latency);
    }

    #[test]
    fn a_first_reading_has_no_rates_yet() {
        let rows = rows(None, &page(10_000, 1_000, 500, 0));
        assert!(rows.iter().all(|r| r.rate == 0.0));
        let text = render_text(&page(10_000, 1_000, 500, 0), &rows);
        assert!(text.starts_with("topology t: ACTIVE"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("b ") && l.contains("0.900")), "{text}");
    }
}
