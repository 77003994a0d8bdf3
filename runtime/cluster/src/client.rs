//! The HTTP client of nimbus's API, used by the CLI, supervisors and workers.
//!
//! Contract: every request is signed with the cluster's secret (a fresh nonce, the time and
//! the body's sha256 under an HMAC, in [`squall_engine::auth::SIGNATURE_HEADER`]; the secret
//! itself never travels) and has a deadline (connect 3 s; 30 s per request, 10 min for artifacts). Every failure is a
//! [`ClientError`] whose text is one line: nimbus unreachable (with its address), or what
//! nimbus said when it refused (its `{"error": …}` text and the HTTP status).

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

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    addr: String,
    base: String,
    secret: Secret,
}

const ARTIFACT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a tap's reply may stream (a day: in effect, until its reader stops).
const TAP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl Client {
    /// A client of the nimbus at `addr` (`host:port`).
    pub fn new(addr: &str, secret: &str) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            // Well before nimbus closes a connection idle for its header timeout (10 s), so a
            // pooled connection is never reused just as nimbus closes it.
            .pool_idle_timeout(Duration::from_secs(4))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Client { http, addr: addr.to_string(), base: format!("http://{addr}"), secret: Secret::new(secret) }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A request without a body, signed.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.signed(method, path, body_sha256(b""))
    }

    /// A request whose body hashes to `body`, signed.
    fn signed(&self, method: Method, path: &str, body: [u8; 32]) -> RequestBuilder {
        let url = format!("{}{path}", self.base);
        // Signed as it travels (percent-encoded), which is what nimbus sees.
        let sent = match reqwest::Url::parse(&url) {
            Ok(u) => u.query().map_or_else(|| u.path().to_string(), |q| format!("{}?{q}", u.path())),
            Err(_) => path.to_string(),
        };
        let request = self.http.request(method.clone(), url);
        match HttpSignature::header(&self.secret, method.as_str(), &sent, body) {
            Ok(signature) => request.header(SIGNATURE_HEADER, signature),
            // Unsigned, nimbus refuses it and says why; this side logs why it is unsigned.
            Err(e) => {
                tracing::error!("cannot sign a request to nimbus: {e}");
                request
            }
        }
    }

    /// A request with a JSON body, signed.
    fn with_json(&self, method: Method, path: &str, body: &impl Serialize) -> RequestBuilder {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.signed(method, path, body_sha256(&bytes))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes)
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            message: if e.is_connect() {
                format!("{} (is `squall nimbus` running there?)", root_cause(&e))
            } else if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                one_line(&e)
            },
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => body.error,
            Err(_) if text.trim().is_empty() => format!("nimbus answered {status}"),
            Err(_) => format!("nimbus answered {status}: {}", text.trim().replace('\n', " ")),
        };
        Err(ClientError::Refused { status: status.as_u16(), message })
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        response.json().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
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
            addr: self.addr.clone(),
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
fn one_line(e: &dyn std::error::Error) -> String {
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
