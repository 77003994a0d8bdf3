//! Prometheus metrics (`GET /metrics`) of a cluster view, written by `prometheus-client` in the
//! OpenMetrics text format.
//!
//! Contract: every name starts with `squall_`; counters end in `_total`; latencies are
//! histograms in seconds. Per component, labelled `topology` and `component` (and `task`
//! too when per-task series are asked for): `squall_emitted_total`,
//! `squall_transferred_total`, `squall_executed_total`, `squall_acked_total`,
//! `squall_failed_total`, `squall_errors_total`, for spouts `squall_failed_trees_total`
//! (also labelled `cause`, `failed` or `timeout`, and `by`, the bolt that failed the trees or
//! held part of them when they timed out), gauges `squall_capacity`,
//! `squall_queue_depth`, `squall_execute_latency_mean_seconds`, `squall_tasks`,
//! `squall_busy_ratio`, `squall_idle_ratio`, `squall_backpressured_ratio` (Flink's split of
//! the tasks' time), for stateful bolts `squall_checkpoints_total` and
//! `squall_last_checkpoint_seconds`, for bolts the
//! histogram `squall_execute_latency_seconds` (of the sampled tuples, one in 64), and for
//! spouts the histogram `squall_complete_latency_seconds`. Per topology (`topology`):
//! `squall_topology_workers`, `squall_topology_workers_reporting`,
//! `squall_topology_uptime_seconds`, `squall_topology_status` (1 for its `status`). The
//! cluster's health: `squall_supervisors` (by `state`: alive, lost),
//! `squall_slots` (by `state`: used, free, of the live supervisors),
//! `squall_worker_restarts_total`, `squall_topologies`. Values are the totals the views hold
//! (counters reset only when a worker restarts, as Prometheus expects of counters).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use squall_engine::metrics::{
    new_histogram, ComponentStats, Snapshot, TaskFigures, EXECUTE_BUCKETS, EXECUTE_BUCKETS_NS,
};

use crate::rest;
use crate::view::{ClusterView, ComponentView, TopologyView};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histograms' buckets; `+Inf` follows.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The exposition of `cluster`; with `per_task`, component series are per task.
pub fn render(cluster: &ClusterView, per_task: bool) -> String {
    let mut registry = Registry::default();
    registry
        .register_collector(Box::new(Exposition { rows: rows(cluster, per_task), cluster: cluster.clone() }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

type Labels = Vec<(&'static str, String)>;

/// One series' labels and the figures it reports.
#[derive(Debug)]
struct Row {
    labels: Labels,
    spout: bool,
    stats: ComponentStats,
    /// Complete latency (µs value, count) pairs of the tasks summed.
    complete_us: Vec<(u64, u64)>,
    /// Sampled execute latencies per bucket of [`EXECUTE_BUCKETS_NS`], summed over the tasks.
    execute_buckets: [u64; EXECUTE_BUCKETS],
    execute_ns: u64,
}

fn rows(cluster: &ClusterView, per_task: bool) -> Vec<Row> {
    let mut out = Vec::new();
    for t in &cluster.topologies {
        for c in &t.components {
            let figures = t.figures_of(&c.tasks);
            let base: Labels = vec![("topology", t.name.clone()), ("component", c.id.clone())];
            if per_task {
                for f in figures {
                    let mut labels = base.clone();
                    labels.push(("task", f.task.to_string()));
                    out.push(row(t, c, labels, vec![f]));
                }
            } else {
                out.push(row(t, c, base, figures));
            }
        }
    }
    out
}

fn row(t: &TopologyView, c: &ComponentView, labels: Labels, figures: Vec<TaskFigures>) -> Row {
    let mut complete = new_histogram();
    for f in &figures {
        for &(value, count) in &f.complete_us {
            let _ = complete.record_n(value, count);
        }
    }
    let complete_us = complete.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
    let mut execute_buckets = [0u64; EXECUTE_BUCKETS];
    let mut execute_ns = 0;
    for f in &figures {
        execute_ns += f.execute_ns;
        for (sum, &n) in execute_buckets.iter_mut().zip(&f.execute_buckets) {
            *sum += n;
        }
    }
    let role = if c.spout { squall_api::Role::Spout } else { squall_api::Role::Bolt };
    let tasks = figures.len().max(1);
    let stats =
        Snapshot::sum(&t.name, [(c.id.as_str(), c.kind.as_str(), role, tasks, figures)], t.elapsed_secs)
            .components
            .remove(&c.id)
            .unwrap_or_else(|| unreachable!("Snapshot::sum lists every component it is given"));
    Row { labels, spout: c.spout, stats, complete_us, execute_buckets, execute_ns }
}

#[derive(Debug)]
struct Exposition {
    rows: Vec<Row>,
    cluster: ClusterView,
}

/// A family's samples: label set and value.
type Samples<V> = Vec<(Labels, V)>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Samples<u64>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in &samples {
        if labels.is_empty() {
            family.encode_counter::<NoLabelSet, _, u64>(value, None)?;
        } else {
            family.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(value, None)?;
        }
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, samples: Samples<f64>) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in &samples {
        if labels.is_empty() {
            family.encode_gauge(value)?;
        } else {
            family.encode_family(labels)?.encode_gauge(value)?;
        }
    }
    Ok(())
}

/// A histogram: per bucket (upper bound in seconds, the last `f64::MAX` for `+Inf`) its own
/// count (the encoder makes them cumulative), the sum in seconds and the count.
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The sampled execute latencies of a row.
fn execute_histogram(r: &Row) -> Histogram {
    let bounds = EXECUTE_BUCKETS_NS.iter().map(|&ns| ns as f64 / 1e9).chain([f64::MAX]);
    let buckets: Vec<(f64, u64)> = bounds.zip(r.execute_buckets).collect();
    let count = buckets.iter().map(|b| b.1).sum();
    Histogram { buckets, sum: r.execute_ns as f64 / 1e9, count }
}

/// (µs value, count) pairs in [`LATENCY_BUCKETS`] and `+Inf`.
fn bucketize(values_us: &[(u64, u64)]) -> Histogram {
    let mut buckets: Vec<(f64, u64)> =
        LATENCY_BUCKETS.iter().map(|&b| (b, 0)).chain([(f64::MAX, 0)]).collect();
    let (mut sum, mut count) = (0.0, 0u64);
    for &(us, n) in values_us {
        let secs = us as f64 / 1e6;
        sum += secs * n as f64;
        count += n;
        let i = buckets.iter().position(|&(le, _)| secs <= le).unwrap_or(buckets.len() - 1);
        buckets[i].1 += n;
    }
    Histogram { buckets, sum, count }
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let per = |f: &dyn Fn(&ComponentStats) -> u64| -> Samples<u64> {
            self.rows.iter().map(|r| (r.labels.clone(), f(&r.stats))).collect()
        };
        let per_f = |f: &dyn Fn(&Row) -> Option<f64>| -> Samples<f64> {
            self.rows.iter().filter_map(|r| Some((r.labels.clone(), f(r)?))).collect()
        };
        counter(&mut e, "squall_emitted", "Tuples emitted.", per(&|s| s.emitted))?;
        counter(&mut e, "squall_transferred", "Tuples sent to other tasks.", per(&|s| s.transferred))?;
        counter(&mut e, "squall_executed", "Tuples executed (bolts).", per(&|s| s.executed))?;
        counter(&mut e, "squall_acked", "Tuples acked.", per(&|s| s.acked))?;
        counter(&mut e, "squall_failed", "Tuples failed.", per(&|s| s.failed))?;
        counter(&mut e, "squall_errors", "Errors reported by components.", per(&|s| s.errors))?;
        let failed_trees: Samples<u64> = self
            .rows
            .iter()
            .flat_map(|r| {
                r.stats.failed_by.iter().map(|f| {
                    let mut labels = r.labels.clone();
                    labels.push(("cause", f.cause.clone()));
                    labels.push(("by", f.component.clone()));
                    (labels, f.count)
                })
            })
            .collect();
        counter(
            &mut e,
            "squall_failed_trees",
            "Failed tuple trees of a spout by cause: failed by bolt `by`, or timed out while `by` held part of it.",
            failed_trees,
        )?;
        gauge(
            &mut e,
            "squall_capacity",
            "Share of the time a task spent executing (bolts; near 1: the bottleneck).",
            per_f(&|r| (!r.spout).then_some(r.stats.capacity)),
        )?;
        for (name, help, share) in [
            ("squall_busy_ratio", "Share of the tasks' time spent executing (or producing).", 0),
            ("squall_idle_ratio", "Share of the tasks' time spent waiting for input.", 1),
            ("squall_backpressured_ratio", "Share of the tasks' time spent waiting for room downstream.", 2),
        ] {
            let pick = move |r: &Row| Some([r.stats.busy, r.stats.idle, r.stats.backpressured][share]);
            gauge(&mut e, name, help, per_f(&pick))?;
        }
        counter(
            &mut e,
            "squall_checkpoints",
            "Checkpoints committed (stateful bolts).",
            per(&|s| s.checkpoints),
        )?;
        gauge(
            &mut e,
            "squall_last_checkpoint_seconds",
            "How long the last committed checkpoint took, from due to committed (stateful bolts).",
            per_f(&|r| (r.stats.checkpoints > 0).then_some(r.stats.last_checkpoint_ms as f64 / 1000.0)),
        )?;
        gauge(
            &mut e,
            "squall_queue_depth",
            "Tuples waiting in the inboxes.",
            per_f(&|r| Some(r.stats.queue_depth as f64)),
        )?;
        gauge(
            &mut e,
            "squall_execute_latency_mean_seconds",
            "Mean execute latency (bolts; sampled).",
            per_f(&|r| (!r.spout).then_some(r.stats.execute_latency_us / 1e6)),
        )?;
        gauge(&mut e, "squall_tasks", "Tasks reporting.", per_f(&|r| Some(r.stats.tasks as f64)))?;
        {
            let mut family = e.encode_descriptor(
                "squall_complete_latency_seconds",
                "From a spout's emit to its tree's ack (spouts).",
                None,
                MetricType::Histogram,
            )?;
            for r in self.rows.iter().filter(|r| r.spout) {
                bucketize(&r.complete_us).encode(family.encode_family(&r.labels)?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "squall_execute_latency_seconds",
                "Time in a bolt's execute, sampled on one tuple in 64 (bolts).",
                None,
                MetricType::Histogram,
            )?;
            for r in self.rows.iter().filter(|r| !r.spout) {
                execute_histogram(r).encode(family.encode_family(&r.labels)?)?;
            }
        }
        let topologies = &self.cluster.topologies;
        let per_topology = |f: &dyn Fn(&TopologyView) -> f64| -> Samples<f64> {
            topologies.iter().map(|t| (vec![("topology", t.name.clone())], f(t))).collect()
        };
        gauge(
            &mut e,
            "squall_topology_workers",
            "Workers assigned.",
            per_topology(&|t| t.workers.len() as f64),
        )?;
        gauge(
            &mut e,
            "squall_topology_workers_reporting",
            "Workers heard from recently.",
            per_topology(&|t| t.workers.iter().filter(|w| w.reporting).count() as f64),
        )?;
        gauge(
            &mut e,
            "squall_topology_uptime_seconds",
            "Since the topology was submitted.",
            per_topology(&|t| t.uptime_secs as f64),
        )?;
        let status: Samples<f64> = topologies
            .iter()
            .map(|t| (vec![("topology", t.name.clone()), ("status", t.status.clone())], 1.0))
            .collect();
        gauge(&mut e, "squall_topology_status", "1 for the topology's status.", status)?;
        let summary = rest::cluster_summary(&self.cluster);
        let lost = self.cluster.supervisors.len() - summary.supervisors;
        let state = |s: &str| vec![("state", s.to_string())];
        gauge(
            &mut e,
            "squall_supervisors",
            "Supervisors by state.",
            vec![(state("alive"), summary.supervisors as f64), (state("lost"), lost as f64)],
        )?;
        gauge(
            &mut e,
            "squall_slots",
            "Worker slots of the live supervisors by state.",
            vec![(state("used"), summary.slots_used as f64), (state("free"), summary.slots_free as f64)],
        )?;
        gauge(&mut e, "squall_topologies", "Topologies submitted.", vec![(vec![], topologies.len() as f64)])?;
        counter(
            &mut e,
            "squall_worker_restarts",
            "Worker processes that died and were started again.",
            vec![(vec![], self.cluster.worker_restarts)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::SupervisorView;
    use squall_engine::metrics::FailedBy;

    fn cluster() -> ClusterView {
        ClusterView {
            supervisors: vec![SupervisorView {
                id: "s".into(),
                slots_total: 4,
                slots_used: 1,
                alive: true,
                ..Default::default()
            }],
            topologies: vec![TopologyView {
                name: "wc".into(),
                status: "ACTIVE".into(),
                components: vec![
                    ComponentView { id: "src".into(), kind: "k".into(), spout: true, tasks: vec![0] },
                    ComponentView { id: "count".into(), kind: "k".into(), spout: false, tasks: vec![1, 2] },
                ],
                figures: vec![
                    TaskFigures {
                        task: 0,
                        emitted: 5,
                        acked: 3,
                        failed: 3,
                        complete_us: vec![(200, 2), (3_000_000, 1)],
                        failed_by: vec![
                            FailedBy { component: "count".into(), cause: "failed".into(), count: 1 },
                            FailedBy { component: "count".into(), cause: "timeout".into(), count: 2 },
                        ],
                        ..Default::default()
                    },
                    TaskFigures {
                        task: 1,
                        executed: 4,
                        execute_ns: 3_000,
                        execute_samples: 2,
                        execute_buckets: vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        ..Default::default()
                    },
                    TaskFigures { task: 2, executed: 6, ..Default::default() },
                ],
                elapsed_secs: 1.0,
                ..Default::default()
            }],
            worker_restarts: 1,
        }
    }

    #[test]
    fn exposition_names_counters_total_and_sums_tasks_per_component() {
        let text = render(&cluster(), false);
        assert!(text.contains("squall_executed_total{topology=\"wc\",component=\"count\"} 10"), "{text}");
        assert!(text.contains("squall_acked_total{topology=\"wc\",component=\"src\"} 3"), "{text}");
        assert!(text.contains("squall_worker_restarts_total 1"), "{text}");
        assert!(text.contains("squall_slots{state=\"free\"} 3.0"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    #[test]
    fn complete_latency_is_a_cumulative_histogram_in_seconds() {
        let text = render(&cluster(), false);
        let line = |needle: &str| text.lines().find(|l| l.contains(needle)).unwrap_or_default().to_string();
        assert!(
            line("squall_complete_latency_seconds_bucket{le=\"0.00025\",topology=\"wc\",component=\"src\"}")
                .ends_with(" 2"),
            "{text}"
        );
        assert!(
            line("squall_complete_latency_seconds_bucket{le=\"+Inf\",topology=\"wc\",component=\"src\"}")
                .ends_with(" 3"),
            "{text}"
        );
        assert!(
            line("squall_complete_latency_seconds_count{topology=\"wc\",component=\"src\"}").ends_with(" 3")
        );
    }

    #[test]
    fn execute_latency_is_a_histogram_of_the_sampled_tuples() {
        let text = render(&cluster(), false);
        let line = |needle: &str| text.lines().find(|l| l.contains(needle)).unwrap_or_default().to_string();
        let labels = "topology=\"wc\",component=\"count\"";
        assert!(
            line(&format!("squall_execute_latency_seconds_bucket{{le=\"0.000001\",{labels}}}"))
                .ends_with(" 1"),
            "{text}"
        );
        assert!(
            line(&format!("squall_execute_latency_seconds_bucket{{le=\"+Inf\",{labels}}}")).ends_with(" 2"),
            "{text}"
        );
        assert!(line(&format!("squall_execute_latency_seconds_count{{{labels}}}")).ends_with(" 2"), "{text}");
    }

    #[test]
    fn failed_trees_are_counted_by_cause_and_by_the_bolt_that_failed_or_held_them() {
        let text = render(&cluster(), false);
        let labels = "topology=\"wc\",component=\"src\"";
        for (cause, n) in [("failed", 1), ("timeout", 2)] {
            let series = format!("squall_failed_trees_total{{{labels},cause=\"{cause}\",by=\"count\"}} {n}");
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[test]
    fn per_task_series_carry_a_task_label() {
        let text = render(&cluster(), true);
        assert!(
            text.contains("squall_executed_total{topology=\"wc\",component=\"count\",task=\"2\"} 6"),
            "{text}"
        );
    }
}
