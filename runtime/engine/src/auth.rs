//! Proving knowledge of the cluster secret without sending it: the handshake that opens every
//! connection to a worker port and to a `squall broker` server, and the signature every
//! request to nimbus's HTTP API carries.
//!
//! Contract, the handshake ([`accept`] / [`connect`], over any byte stream, so that TLS can
//! wrap the stream later and the handshake runs inside it unchanged): both sides prove they
//! know the secret to each other, and neither ever sends it.
//!
//! 1. The accepting side sends [`MAGIC`] and a random 32-byte nonce `a`.
//! 2. The connecting side answers its own random nonce `c` and
//!    `HMAC-SHA256(secret, "connector" ‖ context ‖ a ‖ c)`.
//! 3. The accepting side checks that proof in constant time. Wrong: it sends the byte 0 and
//!    the caller closes the connection, before reading any other byte from it. Right: it
//!    sends the byte 1 and `HMAC-SHA256(secret, "acceptor" ‖ context ‖ a ‖ c)`.
//! 4. The connecting side checks that proof the same way: a peer that cannot make it (an
//!    impostor listening on a worker's port) is never sent anything.
//!
//! Every message has a fixed length (no length from the peer is read), the whole handshake
//! has [`HANDSHAKE_TIMEOUT`], the context names the service (a proof for a worker link is
//! worthless for the broker) and fresh nonces on both sides make every proof good for one
//! connection only (no replay, no reflection: the two roles' proofs differ). Failures are
//! [`AuthError`]s whose text is one line naming the cause.
//!
//! Contract, HTTP requests ([`HttpSignature`]): a request carries, in [`SIGNATURE_HEADER`],
//! `v1 t=<unix seconds> n=<32 hex nonce> b=<sha256 of the body, hex> s=<hex HMAC-SHA256 over
//! the method, the path with its query, t, n and b>`. The server checks the signature in
//! constant time, that `t` is within [`MAX_SKEW`] of its clock, that the body hashes to `b`,
//! and with a [`ReplayGuard`] that the nonce was not seen within the window (bounded memory).
//! The pure parts (proofs, signatures, the guard) do no I/O and are tested without it.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

/// The bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// The bytes of an HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// What an accepting side sends first: the protocol's name and version.
pub const MAGIC: &[u8; 8] = b"SQAUTH1\n";
/// How long a handshake may take from either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The context of the handshake on worker ports.
pub const WORKER: &[u8] = b"squall worker link";
/// The context of the handshake on a `squall broker` server.
pub const BROKER: &[u8] = b"squall broker";

/// The header that carries a request's signature.
pub const SIGNATURE_HEADER: &str = "x-squall-signature";
/// How far a signed request's time may be from the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(120);
/// The most nonces a [`ReplayGuard`] remembers (about 10 MB): past that, signed requests are
/// refused until the oldest nonces leave the window.
pub const MAX_REMEMBERED: usize = 1 << 18;
/// The bytes of a request nonce.
pub const REQUEST_NONCE_LEN: usize = 16;

/// The secret every component takes when none is configured: good on one machine only.
pub const DEFAULT_SECRET: &str = "change-me";

/// Whether `host` (an address, `host:port`, `[v6]:port` or a name) is loopback only:
/// `127.0.0.0/8`, `::1` or `localhost`. An unspecified address (`0.0.0.0`) is not.
pub fn is_loopback(host: &str) -> bool {
    use std::net::{IpAddr, SocketAddr};
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What a server that listens on `listen` with `secret` must do about the default secret:
/// nothing (`Ok(None)`), warn (`Ok(Some(line))`, on loopback) or refuse to start (`Err(line)`,
/// off loopback: anyone who can reach it would know the secret). `who` names the server.
pub fn check_default_secret(secret: &str, who: &str, listen: &str) -> Result<Option<String>, String> {
    if secret != DEFAULT_SECRET {
        return Ok(None);
    }
    if is_loopback(listen) {
        return Ok(Some(format!(
            "{who}: warning: [cluster] secret is the default `{DEFAULT_SECRET}`: fine on loopback ({listen}), set it (or SQUALL_SECRET) before listening elsewhere"
        )));
    }
    Err(format!(
        "{who}: refusing to listen on {listen} with the default [cluster] secret `{DEFAULT_SECRET}`: set [cluster] secret in the cluster file (or SQUALL_SECRET), or listen on loopback only"
    ))
}

/// The cluster secret, as an HMAC key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(secret: &str) -> Secret {
        Secret(secret.as_bytes().into())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a handshake failed, in one line.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no authentication within {}s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    /// The accepting side did not open with [`MAGIC`].
    #[error("it does not speak squall's authenticated protocol (an older squall, or another service)")]
    NotSquall,
    /// The accepting side refused this side's proof.
    #[error(
        "it refused this process's proof of the cluster secret: the secrets differ (see [cluster] secret or SQUALL_SECRET)"
    )]
    Refused,
    /// The accepting side's proof is wrong: it does not know the secret.
    #[error("its proof of the cluster secret is wrong: it is not a member of this cluster (or its secret differs)")]
    ImpostorPeer,
    /// The connecting side's proof is wrong.
    #[error("a wrong proof of the cluster secret")]
    WrongProof,
    #[error("cannot draw a random nonce: {0}")]
    Random(String),
}

/// `N` random bytes from the operating system's generator.
pub fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

fn proof_mac(secret: &Secret, role: &[u8], context: &[u8], a: &[u8], c: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac();
    for part in [role, context] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac.update(a);
    mac.update(c);
    mac
}

/// The connecting side's proof for the nonces `a` (accepting side's) and `c` (its own).
pub fn connector_proof(secret: &Secret, context: &[u8], a: &[u8], c: &[u8]) -> [u8; TAG_LEN] {
    proof_mac(secret, b"connector", context, a, c).finalize().into_bytes().into()
}

/// The accepting side's proof for the nonces `a` and `c`.
pub fn acceptor_proof(secret: &Secret, context: &[u8], a: &[u8], c: &[u8]) -> [u8; TAG_LEN] {
    proof_mac(secret, b"acceptor", context, a, c).finalize().into_bytes().into()
}

/// Checks a connecting side's proof, in constant time.
pub fn check_connector(secret: &Secret, context: &[u8], a: &[u8], c: &[u8], tag: &[u8]) -> bool {
    proof_mac(secret, b"connector", context, a, c).verify_slice(tag).is_ok()
}

/// Checks an accepting side's proof, in constant time.
pub fn check_acceptor(secret: &Secret, context: &[u8], a: &[u8], c: &[u8], tag: &[u8]) -> bool {
    proof_mac(secret, b"acceptor", context, a, c).verify_slice(tag).is_ok()
}

async fn within<T>(step: impl std::future::Future<Output = Result<T, AuthError>>) -> Result<T, AuthError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, step).await.unwrap_or(Err(AuthError::Timeout))
}

/// The accepting side of the handshake (see the module docs). On `Err` the caller closes the
/// connection without reading anything more from it.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    context: &[u8],
) -> Result<(), AuthError> {
    within(async {
        let a: [u8; NONCE_LEN] = random()?;
        let mut opening = [0u8; MAGIC.len() + NONCE_LEN];
        opening[..MAGIC.len()].copy_from_slice(MAGIC);
        opening[MAGIC.len()..].copy_from_slice(&a);
        stream.write_all(&opening).await?;
        stream.flush().await?;
        let mut answer = [0u8; NONCE_LEN + TAG_LEN];
        stream.read_exact(&mut answer).await?;
        let (c, tag) = answer.split_at(NONCE_LEN);
        if !check_connector(secret, context, &a, c, tag) {
            let _ = stream.write_all(&[0]).await;
            let _ = stream.flush().await;
            return Err(AuthError::WrongProof);
        }
        let mut reply = [0u8; 1 + TAG_LEN];
        reply[0] = 1;
        reply[1..].copy_from_slice(&acceptor_proof(secret, context, &a, c));
        stream.write_all(&reply).await?;
        stream.flush().await?;
        Ok(())
    })
    .await
}

/// The connecting side of the handshake (see the module docs). On `Err` the caller sends
/// nothing more and closes the connection.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    context: &[u8],
) -> Result<(), AuthError> {
    within(async {
        let mut opening = [0u8; MAGIC.len() + NONCE_LEN];
        stream.read_exact(&mut opening).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => AuthError::NotSquall,
            _ => AuthError::Io(e),
        })?;
        let (magic, a) = opening.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(AuthError::NotSquall);
        }
        let c: [u8; NONCE_LEN] = random()?;
        let mut answer = [0u8; NONCE_LEN + TAG_LEN];
        answer[..NONCE_LEN].copy_from_slice(&c);
        answer[NONCE_LEN..].copy_from_slice(&connector_proof(secret, context, a, &c));
        stream.write_all(&answer).await?;
        stream.flush().await?;
        let mut status = [0u8; 1];
        match stream.read_exact(&mut status).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(AuthError::Refused),
            Err(e) => return Err(e.into()),
        }
        match status[0] {
            0 => return Err(AuthError::Refused),
            1 => {}
            _ => return Err(AuthError::NotSquall),
        }
        let mut tag = [0u8; TAG_LEN];
        stream.read_exact(&mut tag).await?;
        if !check_acceptor(secret, context, a, &c, &tag) {
            return Err(AuthError::ImpostorPeer);
        }
        Ok(())
    })
    .await
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The sha256 of a body, as a signature names it.
pub fn body_sha256(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A request's signature (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSignature {
    /// Unix seconds when it was signed.
    pub timestamp: u64,
    pub nonce: [u8; REQUEST_NONCE_LEN],
    /// The sha256 of the body it signs.
    pub body_sha256: [u8; 32],
    tag: [u8; TAG_LEN],
}

/// Why a signed request is refused, in one line (the server answers 401 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpAuthError {
    #[error("unsigned request: requests must be signed with the cluster secret in {SIGNATURE_HEADER} (see [cluster] secret or SQUALL_SECRET)")]
    Missing,
    #[error("the cluster secret in clear (x-squall-secret) is no longer accepted: requests are signed with it in {SIGNATURE_HEADER} (a squall client from before signatures?)")]
    ClearSecret,
    #[error("malformed {SIGNATURE_HEADER}: {0}")]
    Malformed(String),
    #[error("wrong signature: the client's cluster secret differs from this server's (see [cluster] secret or SQUALL_SECRET)")]
    Wrong,
    #[error("the request was signed {skew}s away from this server's clock (at most {}s): check both clocks", MAX_SKEW.as_secs())]
    Skew { skew: u64 },
    #[error("a replayed request: its nonce was already used")]
    Replayed,
    #[error("too many signed requests within {}s; retry later", MAX_SKEW.as_secs())]
    Busy,
    #[error("the body does not match its signature")]
    Body,
}

impl HttpSignature {
    fn mac(
        secret: &Secret,
        method: &str,
        path: &str,
        timestamp: u64,
        nonce: &[u8],
        body: &[u8],
    ) -> HmacSha256 {
        let mut mac = secret.mac();
        mac.update(b"squall-http-v1\n");
        for part in [method.as_bytes(), path.as_bytes(), timestamp.to_string().as_bytes()] {
            mac.update(part);
            mac.update(b"\n");
        }
        mac.update(nonce);
        mac.update(body);
        mac
    }

    /// Signs a request made at `timestamp` with `nonce`.
    pub fn sign_with(
        secret: &Secret,
        method: &str,
        path: &str,
        body_sha256: [u8; 32],
        timestamp: u64,
        nonce: [u8; REQUEST_NONCE_LEN],
    ) -> HttpSignature {
        let tag =
            Self::mac(secret, method, path, timestamp, &nonce, &body_sha256).finalize().into_bytes().into();
        HttpSignature { timestamp, nonce, body_sha256, tag }
    }

    /// Signs a request made now with a fresh nonce: the value of [`SIGNATURE_HEADER`].
    pub fn header(
        secret: &Secret,
        method: &str,
        path: &str,
        body_sha256: [u8; 32],
    ) -> Result<String, AuthError> {
        Ok(Self::sign_with(secret, method, path, body_sha256, unix_now(), random()?).to_string())
    }

    /// Reads a header's value.
    pub fn parse(value: &str) -> Result<HttpSignature, HttpAuthError> {
        let bad = |what: &str| HttpAuthError::Malformed(what.to_string());
        let mut parts = value.split(' ');
        if parts.next() != Some("v1") {
            return Err(bad("it does not start with v1"));
        }
        let mut field = |key: &str| {
            parts.next().and_then(|p| p.strip_prefix(key)).ok_or_else(|| bad(&format!("no {key}…")))
        };
        let timestamp = field("t=")?.parse().map_err(|_| bad("t= is not a number of seconds"))?;
        let nonce = unhex(field("n=")?).ok_or_else(|| bad("n= is not 32 hex digits"))?;
        let body_sha256 = unhex(field("b=")?).ok_or_else(|| bad("b= is not 64 hex digits"))?;
        let tag = unhex(field("s=")?).ok_or_else(|| bad("s= is not 64 hex digits"))?;
        if parts.next().is_some() {
            return Err(bad("it goes on after s="));
        }
        Ok(HttpSignature { timestamp, nonce, body_sha256, tag })
    }

    /// Checks the signature of `method` and `path` (with its query), in constant time.
    pub fn verify(&self, secret: &Secret, method: &str, path: &str) -> Result<(), HttpAuthError> {
        Self::mac(secret, method, path, self.timestamp, &self.nonce, &self.body_sha256)
            .verify_slice(&self.tag)
            .map_err(|_| HttpAuthError::Wrong)
    }
}

impl fmt::Display for HttpSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v1 t={} n={} b={} s={}",
            self.timestamp,
            hex(&self.nonce),
            hex(&self.body_sha256),
            hex(&self.tag)
        )
    }
}

/// The nonces of signed requests seen within the window: a request whose time is more than
/// [`MAX_SKEW`] from now, or whose nonce is remembered, is refused. A nonce is kept for twice
/// the window from when it was seen (every request it could sign is out of the window by
/// then), and at most [`MAX_REMEMBERED`] at once.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashSet<[u8; REQUEST_NONCE_LEN]>,
    /// (when seen, nonce), oldest first.
    order: VecDeque<(u64, [u8; REQUEST_NONCE_LEN])>,
}

impl ReplayGuard {
    /// Admits a verified signature once, at `now` (Unix seconds).
    pub fn admit(&mut self, signature: &HttpSignature, now: u64) -> Result<(), HttpAuthError> {
        let skew = now.abs_diff(signature.timestamp);
        if skew > MAX_SKEW.as_secs() {
            return Err(HttpAuthError::Skew { skew });
        }
        let keep = 2 * MAX_SKEW.as_secs();
        while let Some(&(seen, nonce)) = self.order.front() {
            if now.saturating_sub(seen) <= keep {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
        if self.seen.contains(&signature.nonce) {
            return Err(HttpAuthError::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(HttpAuthError::Busy);
        }
        self.seen.insert(signature.nonce);
        self.order.push_back((now, signature.nonce));
        Ok(())
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("s3cret")
    }

    #[test]
    fn proofs_check_only_with_the_same_secret_context_nonces_and_role() {
        let (a, c) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let p = connector_proof(&secret(), WORKER, &a, &c);
        assert!(check_connector(&secret(), WORKER, &a, &c, &p));
        assert!(!check_connector(&Secret::new("other"), WORKER, &a, &c, &p));
        assert!(!check_connector(&secret(), BROKER, &a, &c, &p), "a worker proof is no broker proof");
        assert!(!check_connector(&secret(), WORKER, &c, &a, &p), "nonces are bound in order");
        assert!(!check_connector(&secret(), WORKER, &[3u8; NONCE_LEN], &c, &p));
        assert!(!check_acceptor(&secret(), WORKER, &a, &c, &p), "a proof cannot be reflected");
        assert!(!check_connector(&secret(), WORKER, &a, &c, &p[..31]));
        let q = acceptor_proof(&secret(), WORKER, &a, &c);
        assert!(check_acceptor(&secret(), WORKER, &a, &c, &q));
        assert_ne!(p, q);
    }

    #[test]
    fn the_default_secret_is_refused_off_loopback_and_warned_on_it() {
        for listen in
            ["127.0.0.1:6627", "127.0.0.1:0", "[::1]:1", "localhost:80", "localhost", "::1", "127.0.0.2"]
        {
            assert!(is_loopback(listen), "{listen}");
            let warning = check_default_secret(DEFAULT_SECRET, "nimbus", listen).unwrap().unwrap();
            assert!(warning.contains("warning") && warning.contains("[cluster] secret"), "{warning}");
        }
        for listen in ["0.0.0.0:6627", "10.0.0.1:1", "[::]:1", "example.com:1", "::", "host"] {
            assert!(!is_loopback(listen), "{listen}");
            let error = check_default_secret(DEFAULT_SECRET, "nimbus", listen).unwrap_err();
            assert!(error.contains("[cluster] secret") && error.contains("SQUALL_SECRET"), "{error}");
            assert!(!error.contains('\n'));
            assert_eq!(check_default_secret("s3cret", "nimbus", listen), Ok(None));
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "Secret(..)");
    }

    async fn handshake(acceptor: &str, connector: &str) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (mut x, mut y) = tokio::io::duplex(256);
        let (acc, con) = (Secret::new(acceptor), Secret::new(connector));
        tokio::join!(accept(&mut x, &acc, BROKER), connect(&mut y, &con, BROKER))
    }

    #[tokio::test]
    async fn both_sides_authenticate_with_the_same_secret() {
        let (a, c) = handshake("s", "s").await;
        assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
    }

    #[tokio::test]
    async fn a_connector_with_another_secret_is_refused_and_told_so() {
        let (a, c) = handshake("s", "t").await;
        assert!(matches!(a, Err(AuthError::WrongProof)), "{a:?}");
        assert!(matches!(c, Err(AuthError::Refused)), "{c:?}");
        assert!(c.unwrap_err().to_string().contains("SQUALL_SECRET"));
    }

    #[tokio::test]
    async fn an_acceptor_that_cannot_prove_the_secret_is_an_impostor() {
        // An impostor that accepts any proof but cannot make its own.
        let (mut x, mut y) = tokio::io::duplex(256);
        let impostor = async move {
            x.write_all(MAGIC).await.unwrap();
            x.write_all(&[7u8; NONCE_LEN]).await.unwrap();
            let mut answer = [0u8; NONCE_LEN + TAG_LEN];
            x.read_exact(&mut answer).await.unwrap();
            x.write_all(&[1]).await.unwrap();
            x.write_all(&[0u8; TAG_LEN]).await.unwrap();
            x
        };
        let ours = secret();
        let (_x, c) = tokio::join!(impostor, connect(&mut y, &ours, WORKER));
        assert!(matches!(c, Err(AuthError::ImpostorPeer)), "{c:?}");
    }

    #[tokio::test]
    async fn a_server_speaking_something_else_is_named_so() {
        let (mut x, mut y) = tokio::io::duplex(256);
        x.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n_____________").await.unwrap();
        let c = connect(&mut y, &secret(), BROKER).await;
        assert!(matches!(c, Err(AuthError::NotSquall)), "{c:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (mut x, _y) = tokio::io::duplex(256);
        let a = accept(&mut x, &secret(), BROKER).await;
        assert!(matches!(a, Err(AuthError::Timeout)), "{a:?}");
    }

    fn signed(timestamp: u64, nonce: u8) -> HttpSignature {
        HttpSignature::sign_with(&secret(), "POST", "/v1/x?y=1", body_sha256(b"{}"), timestamp, [nonce; 16])
    }

    #[test]
    fn a_signature_round_trips_and_verifies_only_for_its_request() {
        let s = signed(1000, 1);
        let parsed = HttpSignature::parse(&s.to_string()).unwrap();
        assert_eq!(parsed, s);
        assert_eq!(parsed.verify(&secret(), "POST", "/v1/x?y=1"), Ok(()));
        assert_eq!(parsed.verify(&Secret::new("nope"), "POST", "/v1/x?y=1"), Err(HttpAuthError::Wrong));
        assert_eq!(parsed.verify(&secret(), "GET", "/v1/x?y=1"), Err(HttpAuthError::Wrong));
        assert_eq!(parsed.verify(&secret(), "POST", "/v1/x?y=2"), Err(HttpAuthError::Wrong));
        let mut other_body = parsed.clone();
        other_body.body_sha256 = body_sha256(b"{\"kill\":1}");
        assert_eq!(other_body.verify(&secret(), "POST", "/v1/x?y=1"), Err(HttpAuthError::Wrong));
        let mut later = parsed;
        later.timestamp += 1;
        assert_eq!(later.verify(&secret(), "POST", "/v1/x?y=1"), Err(HttpAuthError::Wrong));
    }

    #[test]
    fn malformed_headers_are_refused_with_what_is_wrong() {
        let good = signed(5, 1).to_string();
        for (bad, what) in [
            ("", "v1"),
            ("v2 t=1", "v1"),
            ("v1 t=x", "t="),
            ("v1 t=1 n=zz", "n="),
            (&good.replace(" s=", " s=0"), "s="),
            (&format!("{good} more"), "goes on"),
            (&good.replace(" b=", " x="), "b="),
        ] {
            match HttpSignature::parse(bad) {
                Err(HttpAuthError::Malformed(m)) => assert!(m.contains(what), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(HttpSignature::parse("v1 t=1 n=é").is_err());
    }

    #[test]
    fn the_guard_refuses_replays_and_stale_or_future_requests() {
        let mut guard = ReplayGuard::default();
        let now = 1_000_000;
        assert_eq!(guard.admit(&signed(now, 1), now), Ok(()));
        assert_eq!(guard.admit(&signed(now, 1), now + 1), Err(HttpAuthError::Replayed));
        assert_eq!(guard.admit(&signed(now - 121, 2), now), Err(HttpAuthError::Skew { skew: 121 }));
        assert_eq!(guard.admit(&signed(now + 121, 3), now), Err(HttpAuthError::Skew { skew: 121 }));
        assert_eq!(guard.admit(&signed(now + 120, 4), now), Ok(()));
        // A nonce is forgotten once no request it signs can be in the window.
        let later = now + 2 * MAX_SKEW.as_secs() + 1;
        assert_eq!(guard.admit(&signed(later, 5), later), Ok(()));
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn the_guard_holds_at_most_its_bound() {
        let mut guard = ReplayGuard::default();
        for i in 0..MAX_REMEMBERED as u32 {
            let mut s = signed(10_000, 0);
            s.nonce[..4].copy_from_slice(&i.to_be_bytes());
            guard.admit(&s, 10_000).unwrap();
        }
        assert_eq!(guard.admit(&signed(10_000, 0xff), 10_000), Err(HttpAuthError::Busy));
        assert_eq!(guard.admit(&signed(10_300, 0xff), 10_300), Ok(()), "room once the window moved");
    }
}
