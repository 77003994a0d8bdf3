//! The web UI: one page, its script and its style, embedded in the binary (no build step),
//! drawn in the browser from the REST API.
//!
//! Contract: `GET /` is the page; `GET /ui/app.js` and `GET /ui/style.css` its script and
//! style; any other `/ui/…` is 404. The page shows the cluster (supervisors, slots,
//! topologies); per topology an SVG graph of its components with the tuple rate on each edge
//! and each bolt coloured by capacity, per-component figures and last errors, the workers and
//! the tasks each hosts, and the actions (asking for the cluster secret, kept for the tab's
//! session only); per component each task's figures and where it runs. It refreshes itself
//! every [`REFRESH_MS`] ms. Elements carry `data-` attributes with the figures they show, so
//! tests (and scripts) can read them.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

/// How often the page refreshes its figures.
pub const REFRESH_MS: u64 = 2000;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

pub async fn file(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
