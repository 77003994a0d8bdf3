//! The HTTP client of nimbus's API, used by the CLI, supervisors and workers.
//!
//! Contract: every request is signed with the cluster's secret (a fresh nonce, the time and
//! the body's sha256 under an HMAC, in [`squall_engine::auth::SIGNATURE_HEADER`]; the secret
//! itself never travels) and has a deadline (connect 3 s; 30 s per request, 10 min for artifacts). Every failure is a
//! [`ClientError`] whose text is one line: nimbus unreachable (with its address), or what
//! nimbus said when it refused (its `{"error": …}` text and the HTTP status). With
//! `[cluster] tls` ([`Client::with_tls`]) requests go over HTTPS: rustls, nimbus's
//! certificate checked against the cluster's CA and the host of its address, this side's
//! own certificate shown; no system roots.
//!
//! Seeds: a client may be given several nimbus addresses (`host:port,host:port`, as
//! `[cluster] nimbus` lists them). A request goes to the nimbus that answered last, else to
//! the seeds in turn; a nimbus that does not lead answers 503 naming the leader
//! (`{"error": …, "leader": ADDR}`), which is asked next. Only when no seed leads (none
//! answers, or each says it does not lead) does the request fail, with one line
//! `no nimbus leader among SEEDS: …` (with one seed, that nimbus's own error as before).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::*;
use squall_engine::auth::{body_sha256, HttpSignature, Secret, SIGNATURE_HEADER};

/// A failed request to nimbus.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach nimbus at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// Several seeds, none of which leads or names a leader that answers.
    #[error("no nimbus leader among {seeds}: {message}")]
    NoLeader { seeds: String, message: String },
}

impl ClientError {
    /// True for a 404: the topology (or artifact) is not known to nimbus.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Refused { status: 404, .. })
    }
}

/// An error reply's body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A refusal that names the leader: what a nimbus that is not the leader answers (503).
#[derive(Debug, Deserialize)]
struct Reply {
    error: String,
    #[serde(default)]
    leader: Option<String>,
}

/// The status a nimbus that does not lead answers with, naming the leader if it knows it.
pub const NOT_LEADER_STATUS: u16 = 503;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http`, or `https` with `[cluster] tls`.
    scheme: &'static str,
    /// The seeds, joined by commas.
    addr: String,
    seeds: Vec<String>,
    /// The nimbus that answered last: asked first.
    leader: Arc<Mutex<Option<String>>>,
    secret: Secret,
}

const ARTIFACT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a tap's reply may stream (a day: in effect, until its reader stops).
const TAP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What every nimbus client is built with: its deadlines and pool.
fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        // Well before nimbus closes a connection idle for its header timeout (10 s), so a
        // pooled connection is never reused just as nimbus closes it.
        .pool_idle_timeout(Duration::from_secs(4))
        .timeout(Duration::from_secs(30))
}

/// A request to be sent to whichever nimbus leads.
struct Call {
    method: Method,
    path: String,
    body_sha256: [u8; 32],
    body: Option<Bytes>,
    json: bool,
    timeout: Option<Duration>,
}

impl Call {
    fn timeout(mut self, timeout: Duration) -> Call {
        self.timeout = Some(timeout);
        self
    }

    fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = Some(body.into());
        self
    }
}

/// Where to send a request next: the named leader if not tried yet, else the next seed not
/// tried yet (pure: the client's seed following).
fn next_target(seeds: &[String], tried: &[String], named_leader: Option<&str>) -> Option<String> {
    if let Some(leader) = named_leader.filter(|l| !tried.iter().any(|t| t == l)) {
        return Some(leader.to_string());
    }
    seeds.iter().find(|s| !tried.contains(s)).cloned()
}

impl Client {
    /// A client of the nimbus at `addr` (`host:port`), or of whichever of several seeds
    /// (`host:port,host:port`) leads: requests go to the one that answered last, then to the
    /// seeds in turn, following a nimbus that names the leader.
    pub fn new(addr: &str, secret: &str) -> Client {
        let http = http_builder().build().unwrap_or_default();
        let seeds: Vec<String> = match crate::config::Seeds::parse(addr) {
            Ok(seeds) => seeds.list().to_vec(),
            // Refused at the first request with the address in the message.
            Err(_) => vec![addr.to_string()],
        };
        Client {
            http,
            scheme: "http",
            addr: addr.to_string(),
            seeds,
            leader: Arc::new(Mutex::new(None)),
            secret: Secret::new(secret),
        }
    }

    /// The same client over HTTPS when `tls` is set (`[cluster] tls`): nimbus's certificate
    /// must chain to the cluster's CA and name the host of its address; this side shows its
    /// own certificate. No system roots.
    pub fn with_tls(mut self, tls: Option<&squall_engine::tls::Tls>) -> Client {
        if let Some(tls) = tls {
            self.http =
                http_builder().use_preconfigured_tls(tls.client_config()).build().unwrap_or_else(|e| {
                    // Only a reqwest built without rustls gets here; requests then fail to verify.
                    tracing::error!("cannot set up TLS for nimbus's client: {}", one_line(&e));
                    reqwest::Client::default()
                });
            self.scheme = "https";
        }
        self
    }

    /// The client of the cluster file's nimbus, with its secret and `[cluster] tls`.
    pub fn for_config(config: &super::config::ClusterConfig) -> Result<Client, squall_engine::tls::TlsError> {
        Ok(Client::new(&config.cluster.nimbus, &config.cluster.secret).with_tls(config.tls()?.as_ref()))
    }

    /// The seeds, joined by commas (what a worker is given).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The nimbus that answered last, if any did.
    pub fn leader(&self) -> Option<String> {
        self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A request without a body, signed.
    fn request(&self, method: Method, path: &str) -> Call {
        self.signed(method, path, body_sha256(b""))
    }

    /// A request whose body hashes to `body`, signed.
    fn signed(&self, method: Method, path: &str, body: [u8; 32]) -> Call {
        Call { method, path: path.to_string(), body_sha256: body, body: None, json: false, timeout: None }
    }

    /// A request with a JSON body, signed.
    fn with_json(&self, method: Method, path: &str, body: &impl Serialize) -> Call {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut call = self.signed(method, path, body_sha256(&bytes)).body(bytes);
        call.json = true;
        call
    }

    /// `call` to the nimbus at `addr`, signed afresh.
    fn build(&self, addr: &str, call: &Call) -> RequestBuilder {
        let url = format!("{}://{addr}{}", self.scheme, call.path);
        // Signed as it travels (percent-encoded), which is what nimbus sees.
        let sent = match reqwest::Url::parse(&url) {
            Ok(u) => u.query().map_or_else(|| u.path().to_string(), |q| format!("{}?{q}", u.path())),
            Err(_) => call.path.clone(),
        };
        let mut request = self.http.request(call.method.clone(), url);
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        if call.json {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        match HttpSignature::header(&self.secret, call.method.as_str(), &sent, call.body_sha256) {
            Ok(signature) => request.header(SIGNATURE_HEADER, signature),
            // Unsigned, nimbus refuses it and says why; this side logs why it is unsigned.
            Err(e) => {
                tracing::error!("cannot sign a request to nimbus: {e}");
                request
            }
        }
    }

    /// Sends `call` to the leader: the nimbus that answered last first, then the seeds in
    /// turn, following a nimbus that names the leader.
    async fn send(&self, call: Call) -> Result<reqwest::Response, ClientError> {
        let mut tried: Vec<String> = Vec::new();
        let mut named = self.leader();
        let mut failures: Vec<String> = Vec::new();
        let mut last = None;
        while let Some(addr) = next_target(&self.seeds, &tried, named.as_deref()) {
            tried.push(addr.clone());
            match self.send_to(&addr, &call).await {
                Ok(response) => {
                    *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
                    return Ok(response);
                }
                Err((e, leader)) => {
                    let retry = matches!(e, ClientError::Unreachable { .. })
                        || matches!(e, ClientError::Refused { status: NOT_LEADER_STATUS, .. });
                    if !retry {
                        return Err(e);
                    }
                    named = leader;
                    failures.push(match &e {
                        ClientError::Unreachable { message, .. } => format!("{addr}: {message}"),
                        other => format!("{addr}: {other}"),
                    });
                    last = Some(e);
                }
            }
        }
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match last {
            // One nimbus: its own error, as before seeds.
            Some(e) if tried.len() == 1 => Err(e),
            _ => Err(ClientError::NoLeader { seeds: self.addr.clone(), message: failures.join("; ") }),
        }
    }

    async fn send_to(
        &self,
        addr: &str,
        call: &Call,
    ) -> Result<reqwest::Response, (ClientError, Option<String>)> {
        let response = self.build(addr, call).send().await.map_err(|e| {
            let message = if e.is_connect() {
                format!("{} (is `squall nimbus` running there?)", root_cause(&e))
            } else if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                one_line(&e)
            };
            (ClientError::Unreachable { addr: addr.to_string(), message }, None)
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let (message, leader) = match serde_json::from_str::<Reply>(&text) {
            Ok(body) => (body.error, body.leader),
            Err(_) if text.trim().is_empty() => (format!("nimbus answered {status}"), None),
            Err(_) => (format!("nimbus answered {status}: {}", text.trim().replace('\n', " ")), None),
        };
        Err((ClientError::Refused { status: status.as_u16(), message }, leader))
    }

    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, ClientError> {
        let response = self.send(call).await?;
        let addr = self.leader().unwrap_or_else(|| self.addr.clone());
        response.json().await.map_err(|e| ClientError::Unreachable {
            addr,
            message: format!("unreadable reply: {}", one_line(&e)),
        })
    }

    /// Uploads an executable under its sha256 (lowercase hex).
    pub async fn upload_artifact(&self, sha256: &str, bytes: Vec<u8>) -> Result<(), ClientError> {
        // The artifact's address is its sha256: nimbus checks the bytes against it.
        let Some(hash) = crate::artifacts::parse_sha256(sha256) else {
            return Err(ClientError::Refused { status: 400, message: format!("`{sha256}` is not a sha256") });
        };
        let request = self
            .signed(Method::PUT, &format!("/v1/artifacts/{sha256}"), hash)
            .timeout(ARTIFACT_TIMEOUT)
            .body(bytes);
        self.send(request).await.map(|_| ())
    }

    /// True if nimbus already has the artifact.
    pub async fn has_artifact(&self, sha256: &str) -> Result<bool, ClientError> {
        match self.send(self.request(Method::HEAD, &format!("/v1/artifacts/{sha256}"))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Packs the `resources/` folder beside the topology file `file`, if there is one, and
    /// uploads it as an artifact unless nimbus has it; its sha256.
    pub async fn upload_resources(&self, file: &std::path::Path) -> Result<Option<String>, String> {
        let Some(dir) = squall_engine::resources::beside(file) else {
            return Ok(None);
        };
        let bytes = squall_engine::resources::pack(&dir)?;
        let sha256 = crate::artifacts::sha256_hex(&bytes);
        if !self.has_artifact(&sha256).await.map_err(|e| e.to_string())? {
            self.upload_artifact(&sha256, bytes).await.map_err(|e| e.to_string())?;
        }
        Ok(Some(sha256))
    }

    pub async fn download_artifact(&self, sha256: &str) -> Result<Bytes, ClientError> {
        let request = self.request(Method::GET, &format!("/v1/artifacts/{sha256}")).timeout(ARTIFACT_TIMEOUT);
        let response = self.send(request).await?;
        response.bytes().await.map_err(|e| ClientError::Unreachable {
            addr: self.leader().unwrap_or_else(|| self.addr.clone()),
            message: format!("artifact download broke off: {}", one_line(&e)),
        })
    }

    pub async fn submit(&self, request: &SubmitRequest) -> Result<TopologyInfo, ClientError> {
        self.json(self.with_json(Method::POST, "/v1/topologies", request)).await
    }

    pub async fn list(&self) -> Result<Vec<TopologyInfo>, ClientError> {
        self.json(self.request(Method::GET, "/v1/topologies")).await
    }

    pub async fn status(&self, name: &str) -> Result<TopologyStatus, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/topologies/{name}"))).await
    }

    /// Each component's error count and each task's latest error (`squall errors`).
    pub async fn errors(&self, name: &str) -> Result<squall_ui::rest::TopologyErrors, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/topologies/{name}/errors"))).await
    }

    /// Opens a tap on `component` of `name` (`squall tap`): the reply streams JSON lines
    /// (see `squall_ui::server`) for as long as it is read.
    pub async fn tap(
        &self,
        name: &str,
        component: &str,
        stream: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut url = reqwest::Url::parse("http://nimbus/v1/topologies")
            .map_err(|e| ClientError::Refused { status: 400, message: e.to_string() })?;
        url.path_segments_mut()
            .map_err(|_| ClientError::Refused { status: 400, message: "bad url".into() })?
            .extend([name, "components", component, "tap"]);
        if let Some(stream) = stream {
            url.query_pairs_mut().append_pair("stream", stream);
        }
        let path = url.query().map_or_else(|| url.path().to_string(), |q| format!("{}?{q}", url.path()));
        // A tap lasts as long as its reader wants.
        self.send(self.request(Method::GET, &path).timeout(TAP_TIMEOUT)).await
    }

    pub async fn activate(&self, name: &str) -> Result<TopologyInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/topologies/{name}/activate"))).await
    }

    pub async fn deactivate(&self, name: &str) -> Result<TopologyInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/v1/topologies/{name}/deactivate"))).await
    }

    pub async fn kill(&self, name: &str, request: &KillRequest) -> Result<TopologyInfo, ClientError> {
        self.json(self.with_json(Method::POST, &format!("/v1/topologies/{name}/kill"), request)).await
    }

    pub async fn rebalance(
        &self,
        name: &str,
        request: &RebalanceRequest,
    ) -> Result<TopologyInfo, ClientError> {
        self.json(self.with_json(Method::POST, &format!("/v1/topologies/{name}/rebalance"), request)).await
    }

    pub async fn assignment(&self, name: &str) -> Result<Assignment, ClientError> {
        self.json(self.request(Method::GET, &format!("/v1/assignments/{name}"))).await
    }

    pub async fn supervisors(&self) -> Result<Vec<SupervisorInfo>, ClientError> {
        self.json(self.request(Method::GET, "/v1/supervisors")).await
    }

    pub async fn supervisor_heartbeat(
        &self,
        beat: &SupervisorHeartbeat,
    ) -> Result<SupervisorReply, ClientError> {
        self.json(self.with_json(Method::POST, "/v1/supervisors/heartbeat", beat)).await
    }

    pub async fn worker_heartbeat(&self, beat: &WorkerHeartbeat) -> Result<WorkerReply, ClientError> {
        self.json(self.with_json(Method::POST, "/v1/workers/heartbeat", beat)).await
    }
}

/// The innermost cause of an error: "Connection refused (os error 111)".
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(s) = cause.source() {
        cause = s;
    }
    cause.to_string().replace('\n', " ")
}

/// An error and its causes on one line.
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_named_leader_is_tried_first_then_the_seeds_in_turn_each_once() {
        let all = seeds(&["a:1", "b:2", "c:3"]);
        assert_eq!(next_target(&all, &[], None).as_deref(), Some("a:1"));
        assert_eq!(next_target(&all, &seeds(&["a:1"]), Some("c:3")).as_deref(), Some("c:3"));
        assert_eq!(next_target(&all, &seeds(&["a:1", "c:3"]), None).as_deref(), Some("b:2"));
        // A leader already tried is not asked again (no redirect loop).
        assert_eq!(next_target(&all, &seeds(&["a:1", "b:2", "c:3"]), Some("a:1")), None);
        // A leader that is not a seed is followed too.
        assert_eq!(next_target(&all, &seeds(&["a:1"]), Some("d:4")).as_deref(), Some("d:4"));
    }

    #[tokio::test]
    async fn no_seed_answering_is_one_line_naming_the_seeds() {
        let dead = |_: ()| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let (a, b) = (dead(()), dead(()));
        let client = Client::new(&format!("{a},{b}"), "s");
        let err = client.list().await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("no nimbus leader among {a},{b}: {a}: ")), "{err}");
        assert!(err.contains(&format!("; {b}: ")) && !err.contains('\n'), "{err}");
        let one = Client::new(&a, "s").list().await.unwrap_err().to_string();
        assert!(one.starts_with(&format!("cannot reach nimbus at {a}")), "{one}");
    }
}
