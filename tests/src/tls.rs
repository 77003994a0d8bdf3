//! TLS for the end-to-end tests: certificates made at test time, and HTTPS or raw TLS
//! connections as a client of the cluster would open them.
//!
//! [`Certs::make`] writes into a directory a CA and a certificate for 127.0.0.1 (an IP SAN)
//! it signs (the cluster's), and a second, unrelated CA with its own certificate for
//! 127.0.0.1 (a stranger's). [`https_get`] and [`tls_knock`] connect through
//! `squall_engine::tls`, the code every squall link uses.

use std::io;
use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use squall_engine::tls::{Tls, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The PEM files of a test cluster and of a stranger.
pub struct Certs {
    /// The cluster's: its CA, a certificate for 127.0.0.1 it signed, that certificate's key.
    pub cluster: TlsFiles,
    /// A stranger's: another CA, and a certificate for 127.0.0.1 that CA signed.
    pub stranger: TlsFiles,
    /// The stranger's certificate and key, trusting the cluster's CA: it accepts the
    /// cluster's servers, which must refuse it.
    pub impostor: TlsFiles,
}

/// Writes `<name>-ca.pem`, `<name>.pem` and `<name>.key` into `dir`.
fn authority(dir: &Path, name: &str) -> TlsFiles {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key")).expect("a CA");
    let key = KeyPair::generate().expect("a key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("parameters for 127.0.0.1");
    leaf.distinguished_name.push(DnType::CommonName, format!("{name} node"));
    let leaf = leaf.signed_by(&key, &ca).expect("a certificate");
    let files = TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join(format!("{name}-ca.pem")),
    };
    for (path, pem) in [(&files.cert, leaf.pem()), (&files.key, key.serialize_pem()), (&files.ca, ca.pem())] {
        std::fs::write(path, pem).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    files
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        let cluster = authority(dir, "cluster");
        let stranger = authority(dir, "stranger");
        let impostor = TlsFiles { ca: cluster.ca.clone(), ..stranger.clone() };
        Certs { cluster, stranger, impostor }
    }
}

/// The cluster file's line for `files`: `tls = { cert = "…", key = "…", ca = "…" }`.
pub fn toml_line(files: &TlsFiles) -> String {
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\", ca = \"{}\" }}\n",
        files.cert.display(),
        files.key.display(),
        files.ca.display()
    )
}

/// `files`, loaded (a test's own PEMs load, or the test is wrong).
pub fn load(files: &TlsFiles) -> Tls {
    Tls::load(files).unwrap_or_else(|e| panic!("{e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// Connects to `addr` over TLS as `tls`, sends `bytes`, and returns what came back until the
/// server closed; `Err` with the handshake's one line when it failed on this side.
pub fn tls_knock(addr: &str, tls: &Tls, bytes: &[u8]) -> Result<Vec<u8>, String> {
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?;
        let mut stream = tls.connect(tcp, addr).await.map_err(|e| e.to_string())?;
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
        let mut seen = Vec::new();
        // A server that refuses ends the connection with an alert or without close_notify:
        // what was read until then is the answer.
        let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut seen)).await;
        Ok(seen)
    })
}

/// An HTTPS GET of `path` from `addr`, as `tls`, with `headers` (each CRLF-terminated).
/// Returns (status, body); an error if the TLS handshake or the connection failed.
pub fn https_get(addr: &str, path: &str, tls: &Tls, headers: &str) -> io::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n");
    let reply = tls_knock(addr, tls, request.as_bytes()).map_err(io::Error::other)?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status == 0 {
        return Err(io::Error::other(format!("{addr} answered no HTTP status: {reply:?}")));
    }
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
