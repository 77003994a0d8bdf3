//! TLS on every daemon link (`[cluster] tls = { cert, key, ca }`): the one place that loads
//! the PEM files, builds rustls's server and client configurations and wraps a TCP stream
//! either way, so that nimbus's API, the UI port, worker links and the broker server all
//! speak the same TLS.
//!
//! Contract:
//! - [`Tls::load`] reads `cert` (this process's certificate chain), `key` (its private key)
//!   and `ca` (the certificates that sign every peer's). A file that is missing, unreadable
//!   or holds no usable PEM is a [`TlsError::File`], one line naming the key and the file.
//! - Mutual TLS, both ways: an accepting side ([`Tls::accept`]) requires a client certificate
//!   that chains to `ca`; a connecting side ([`Tls::connect`]) requires the server's
//!   certificate to chain to `ca` and to be valid for the host it dialed: the host part of the
//!   address (`127.0.0.1` of `127.0.0.1:6627`: an IP SAN; a DNS name: a DNS SAN). No system
//!   roots are trusted. A peer that fails is refused during the handshake
//!   ([`TlsError::Handshake`], one line); nothing it sent is read by the caller.
//! - The handshake takes at most [`crate::auth::HANDSHAKE_TIMEOUT`]; the secret's challenge
//!   ([`crate::auth`]) then runs inside the encrypted stream unchanged.
//! - [`Stream`] is a plain or a TLS stream behind one type, and splits into halves that are
//!   the plain TCP halves when TLS is off: a cluster without `tls` pays one enum match per
//!   read or write, nothing else. Writers must flush (TLS records are buffered).
//! - Workers learn the files from their supervisor through [`Tls::env`] / [`TlsFiles::from_env`]
//!   (absolute paths in `SQUALL_TLS_CERT`, `SQUALL_TLS_KEY`, `SQUALL_TLS_CA`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::auth::HANDSHAKE_TIMEOUT;

/// The environment variables a supervisor gives its workers: cert, key, ca.
pub const ENV: [&str; 3] = ["SQUALL_TLS_CERT", "SQUALL_TLS_KEY", "SQUALL_TLS_CA"];

/// `[cluster] tls`: the PEM files, as written in the cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This process's certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
    /// The certificate authority every peer's certificate must chain to, PEM.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files a supervisor passed in [`ENV`]; `None` when none is set (TLS off).
    pub fn from_env() -> Result<Option<TlsFiles>, TlsError> {
        let values: Vec<Option<String>> =
            ENV.iter().map(|name| std::env::var(name).ok().filter(|v| !v.is_empty())).collect();
        match values.as_slice() {
            [None, None, None] => Ok(None),
            [Some(cert), Some(key), Some(ca)] => {
                Ok(Some(TlsFiles { cert: cert.into(), key: key.into(), ca: ca.into() }))
            }
            _ => Err(TlsError::Env),
        }
    }
}

/// Why TLS cannot be set up, or a peer was refused: one line.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `key` is `cert`, `key` or `ca`.
    #[error("[cluster] tls {key} = {path}: {reason}")]
    File { key: &'static str, path: String, reason: String },
    /// The certificate and key do not make a usable configuration (a key that does not match
    /// the certificate, say).
    #[error("[cluster] tls: {0}")]
    Config(String),
    #[error("{} must all be set, or none of them", ENV.join(", "))]
    Env,
    /// The peer did not complete the handshake: no certificate, one not signed by `ca`, one
    /// for another name, plain TCP, or too slow.
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake { peer: String, reason: String },
}

/// A loaded `[cluster] tls`: both sides' configurations. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(key: &'static str, path: &Path, reason: impl fmt::Display) -> TlsError {
    let reason = reason.to_string().replace(['\n', '\r'], " ");
    TlsError::File { key, path: path.display().to_string(), reason }
}

/// Reads `path` whole; a missing or unreadable file names `key`.
fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(key, path, format!("cannot read: {e}")))
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

impl Tls {
    /// Loads the three files (see the module docs). Relative paths are taken from the current
    /// directory and kept absolute, for [`Tls::env`].
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let absolute = |key, path: &Path| std::path::absolute(path).map_err(|e| file_error(key, path, e));
        let files = TlsFiles {
            cert: absolute("cert", &files.cert)?,
            key: absolute("key", &files.key)?,
            ca: absolute("ca", &files.ca)?,
        };
        let chain = certificates("cert", &files.cert)?;
        let key_pem = read("key", &files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| file_error("key", &files.key, format!("holds no usable PEM private key: {e}")))?;
        let mut roots = RootCertStore::empty();
        for cert in certificates("ca", &files.ca)? {
            roots
                .add(cert)
                .map_err(|e| file_error("ca", &files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| file_error("ca", &files.ca, e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                TlsError::Config(format!(
                    "cert {} and key {}: {e}",
                    files.cert.display(),
                    files.key.display()
                ))
            })?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                TlsError::Config(format!(
                    "cert {} and key {}: {e}",
                    files.cert.display(),
                    files.key.display()
                ))
            })?;
        Ok(Tls { files, server: Arc::new(server), client: Arc::new(client) })
    }

    /// Loads `files` if given: `Ok(None)` is TLS off.
    pub fn load_optional(files: Option<&TlsFiles>) -> Result<Option<Tls>, TlsError> {
        files.map(Tls::load).transpose()
    }

    /// The files, absolute.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The server side's configuration (HTTP servers take it as is).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The client side's configuration: the CA as the only root, this process's certificate
    /// as its identity (HTTP clients take it as is).
    pub fn client_config(&self) -> ClientConfig {
        (*self.client).clone()
    }

    /// The environment that passes these files to a worker (see [`TlsFiles::from_env`]).
    pub fn env(&self) -> [(&'static str, &Path); 3] {
        [(ENV[0], &self.files.cert), (ENV[1], &self.files.key), (ENV[2], &self.files.ca)]
    }

    /// The server side of a handshake with `peer` (see the module docs).
    pub async fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Result<Stream, TlsError> {
        let handshake = TlsAcceptor::from(self.server.clone()).accept(stream);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls.into()))),
            Ok(Err(e)) => Err(handshake_error(peer, e)),
            Err(_) => Err(slow(peer)),
        }
    }

    /// The client side of a handshake with the server at `addr` (`host:port`, the address
    /// dialed: its host is the name the server's certificate must hold).
    pub async fn connect(&self, stream: TcpStream, addr: &str) -> Result<Stream, TlsError> {
        let name = server_name(addr).map_err(|reason| TlsError::Handshake { peer: addr.into(), reason })?;
        let handshake = TlsConnector::from(self.client.clone()).connect(name, stream);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls.into()))),
            Ok(Err(e)) => Err(handshake_error(addr, e)),
            Err(_) => Err(slow(addr)),
        }
    }
}

fn handshake_error(peer: impl fmt::Display, e: io::Error) -> TlsError {
    TlsError::Handshake { peer: peer.to_string(), reason: e.to_string().replace(['\n', '\r'], " ") }
}

fn slow(peer: impl fmt::Display) -> TlsError {
    let reason = format!("not completed within {}s", HANDSHAKE_TIMEOUT.as_secs());
    TlsError::Handshake { peer: peer.to_string(), reason }
}

/// The host of `addr` (`host:port`, `[v6]:port`, or a bare host), as the name a server's
/// certificate must be valid for.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.parse::<SocketAddr>() {
        Ok(socket) => socket.ip().to_string(),
        Err(_) => {
            let host = if let Some(bracketed) = addr.strip_prefix('[') {
                bracketed.split(']').next().unwrap_or_default()
            } else {
                addr.rsplit_once(':').map_or(addr, |(h, _)| h)
            };
            host.to_string()
        }
    };
    ServerName::try_from(host).map_err(|e| format!("{addr} has no host a certificate can name: {e}"))
}

/// Accepts `stream` from `peer` as `tls` says: TLS when set, else the plain stream.
pub async fn accept(tls: Option<&Tls>, stream: TcpStream, peer: SocketAddr) -> Result<Stream, TlsError> {
    match tls {
        Some(tls) => tls.accept(stream, peer).await,
        None => Ok(Stream::Plain(stream)),
    }
}

/// Opens the client side of `stream` (dialed to `addr`) as `tls` says.
pub async fn connect(tls: Option<&Tls>, stream: TcpStream, addr: &str) -> Result<Stream, TlsError> {
    match tls {
        Some(tls) => tls.connect(stream, addr).await,
        None => Ok(Stream::Plain(stream)),
    }
}

type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// A connection, TLS or not.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream>),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream>),
}

impl Stream {
    /// The TCP connection under it (for socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Its two halves, to read and write from different tasks.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// Forwards the `AsyncRead` / `AsyncWrite` calls of an enum to whichever variant it holds.
macro_rules! forward_io {
    ($ty:ident) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
    ($ty:ident, write) => {
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    $ty::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Plain(s) => s.is_write_vectored(),
                    $ty::Tls(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_flush(cx),
                    $ty::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $ty::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_io!(Stream);
forward_io!(Stream, write);
forward_io!(ReadHalf);
forward_io!(WriteHalf, write);

#[cfg(test)]
mod tests;
