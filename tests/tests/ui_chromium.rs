//! The web UI in a real browser: headless Chromium (Debian's `chromium`, installed by the
//! tests if missing) loads the pages of `squall local FILE --ui ADDR` while the topology runs,
//! and they show its components with live figures. Screenshots are kept under
//! `target/ui-screenshots/` for people to look at.

use std::time::Duration;

use squall_tests::ui::{attr_of, chromium, get_json, local_ui, wait_for};
use squall_tests::{workspace_root, TempDir};

const TOPOLOGY: &str = r#"
name = "wc"

[[spouts]]
id = "sentences"
kind = "random-sentence"
config = { rate = 200 }

[[bolts]]
id = "split"
kind = "split-sentence"
parallelism = 2
inputs = [{ from = "sentences", grouping = "shuffle" }]

[[bolts]]
id = "count"
kind = "word-count"
inputs = [{ from = "split", grouping = { fields = ["word"] } }]
"#;

/// Loads `url` and lets its script fetch and draw (virtual time runs ahead while the page is
/// idle, and waits while its requests are in flight).
fn dom(dir: &TempDir, url: &str) -> String {
    chromium(dir, &["--virtual-time-budget=8000", "--dump-dom"], url)
}

#[test]
fn the_web_ui_draws_the_running_topology_with_live_figures() {
    let dir = TempDir::new("ui-chromium");
    let file = dir.topology("wc.toml", TOPOLOGY);
    let (_run, addr) = local_ui(&dir, &file);
    // The page's first rates are means since the start, which it has only once the run has
    // been up a whole second (uptimeSeconds counts whole seconds): wait for both.
    wait_for(Duration::from_secs(180), "split executed tuples and the run is up 2 s", || {
        let page = get_json(&addr, "/api/v1/topology/wc");
        page["uptimeSeconds"].as_u64() >= Some(2)
            && page["bolts"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["boltId"] == "split" && b["executed"] != 0))
    });

    let topology = dom(&dir, &format!("http://{addr}/#/topology/wc"));
    assert!(topology.contains("data-loaded=\"true\""), "the page did not load its figures:\n{topology}");
    for id in ["sentences", "split", "count"] {
        assert!(
            topology.contains(&format!("data-component=\"{id}\"")),
            "no node {id} in the graph:\n{topology}"
        );
    }
    let figure = |marker: &str, attr: &str| attr_of(&topology, marker, attr).unwrap_or(0.0);
    assert!(figure("data-component=\"sentences\"", "data-emitted") > 0.0, "{topology}");
    assert!(figure("data-component=\"split\"", "data-executed") > 0.0, "{topology}");
    assert!(attr_of(&topology, "data-component=\"split\"", "data-capacity").is_some(), "{topology}");
    assert!(
        figure("data-from=\"sentences\"", "data-rate") > 0.0,
        "no rate on sentences → split:\n{topology}"
    );
    assert!(topology.contains("data-bolt=\"count\""), "no row for count:\n{topology}");
    // Where each component's time goes, failure causes, and the workers' restarts.
    for shown in ["title=\"busy / idle / backpressured\"", ">failed by<", ">restarts<", "data-window=\"600\""]
    {
        assert!(topology.contains(shown), "no {shown} on the topology page:\n{topology}");
    }

    let cluster = dom(&dir, &format!("http://{addr}/"));
    assert!(cluster.contains("data-topology=\"wc\""), "the cluster page lists no wc:\n{cluster}");
    assert_eq!(attr_of(&cluster, "id=\"cluster-summary\"", "data-supervisors"), Some(1.0), "{cluster}");

    let component = dom(&dir, &format!("http://{addr}/#/topology/wc/component/split"));
    assert!(component.contains("data-task="), "no task rows for split:\n{component}");

    let shots = workspace_root().join("target").join("ui-screenshots");
    std::fs::create_dir_all(&shots).expect("create target/ui-screenshots");
    let shot = shots.join("topology.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    chromium(
        &dir,
        &["--virtual-time-budget=8000", "--window-size=1400,1000", &arg],
        &format!("http://{addr}/#/topology/wc"),
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} is not a screenshot", shot.display());
}
