//! The tls module against certificates made here: a CA, a certificate for 127.0.0.1 it
//! signs, and an unrelated CA's.

use super::*;
use crate::auth;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A directory of PEM files, removed when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("squall-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes a CA named `ca` and a certificate for 127.0.0.1 signed by it; returns the files.
    fn identity(&self, ca: &str) -> TlsFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        let files = TlsFiles {
            cert: self.0.join(format!("{ca}-node.pem")),
            key: self.0.join(format!("{ca}-node.key")),
            ca: self.0.join(format!("{ca}.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, issuer.pem()).unwrap();
        files
    }
}

/// Serves one connection on 127.0.0.1 with `server`: accepts, runs the secret's handshake,
/// reads one line and answers it reversed. Returns its address and what `accept` returned.
async fn echo_once(server: Tls) -> (String, tokio::task::JoinHandle<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let mut stream = server.accept(tcp, peer).await.map_err(|e| e.to_string())?;
        auth::accept(&mut stream, &auth::Secret::new("s"), auth::WORKER).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        buf.reverse();
        stream.write_all(&buf).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        Ok(())
    });
    (addr, task)
}

#[tokio::test]
async fn peers_with_certificates_of_the_same_ca_talk_and_the_secret_handshake_runs_inside() {
    let dir = Dir::new("good");
    let tls = Tls::load(&dir.identity("ca")).unwrap();
    let (addr, server) = echo_once(tls.clone()).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let stream = tls.connect(tcp, &addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    auth::connect(&mut CombinedForTest(&mut rd, &mut wr), &auth::Secret::new("s"), auth::WORKER)
        .await
        .unwrap();
    wr.write_all(b"hello").await.unwrap();
    wr.flush().await.unwrap();
    let mut back = [0u8; 5];
    rd.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"olleh");
    server.await.unwrap().unwrap();
}

/// A read half and a write half as one stream, to run the secret's handshake on split halves.
struct CombinedForTest<'a>(&'a mut ReadHalf, &'a mut WriteHalf);

impl AsyncRead for CombinedForTest<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for CombinedForTest<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().1).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().1).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().1).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_client_whose_certificate_another_ca_signed_is_refused_in_the_handshake() {
    let dir = Dir::new("wrong-ca");
    let server = Tls::load(&dir.identity("ca")).unwrap();
    let stranger = Tls::load(&dir.identity("other")).unwrap();
    let (addr, accepted) = echo_once(server).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    // The stranger does not trust the server's CA either: it refuses the server first.
    let refused = stranger.connect(tcp, &addr).await.unwrap_err().to_string();
    assert!(refused.contains("TLS handshake with 127.0.0.1"), "{refused}");
    let why = accepted.await.unwrap().unwrap_err();
    assert!(why.starts_with("TLS handshake with 127.0.0.1:"), "{why}");
    assert!(!why.contains('\n'), "{why}");
}

#[tokio::test]
async fn a_client_with_a_foreign_certificate_that_trusts_the_server_gets_nothing_read() {
    let dir = Dir::new("half");
    let good = dir.identity("ca");
    let other = dir.identity("other");
    let server = Tls::load(&good).unwrap();
    // Trusts the server's CA, but shows a certificate of another CA.
    let impostor = Tls::load(&TlsFiles { ca: good.ca.clone(), ..other }).unwrap();
    let (addr, accepted) = echo_once(server).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    // TLS 1.3: the client's handshake may end before the server checks its certificate; the
    // server refuses it then, and nothing the client sends is read.
    if let Ok(mut stream) = impostor.connect(tcp, &addr).await {
        let _ = stream.write_all(b"hello").await;
        let _ = stream.flush().await;
    }
    let why = accepted.await.unwrap().unwrap_err();
    assert!(why.contains("TLS handshake with 127.0.0.1:") && why.contains("certificate"), "{why}");
}

#[tokio::test]
async fn a_plain_tcp_client_is_refused_in_the_handshake() {
    let dir = Dir::new("plain");
    let server = Tls::load(&dir.identity("ca")).unwrap();
    let (addr, accepted) = echo_once(server).await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"SQAUTH1\nnot a TLS client hello at all, just bytes").await.unwrap();
    let why = accepted.await.unwrap().unwrap_err();
    assert!(why.starts_with("TLS handshake with 127.0.0.1:"), "{why}");
}

#[tokio::test]
async fn a_server_with_a_certificate_for_another_address_is_refused_by_the_client() {
    let dir = Dir::new("name");
    let tls = Tls::load(&dir.identity("ca")).unwrap();
    let (addr, _server) = echo_once(tls.clone()).await;
    let tcp = TcpStream::connect(&addr).await.unwrap();
    // Dialed as 127.0.0.2: the certificate names 127.0.0.1 only.
    let port = addr.rsplit_once(':').unwrap().1;
    let refused = tls.connect(tcp, &format!("127.0.0.2:{port}")).await.unwrap_err().to_string();
    assert!(refused.contains("certificate"), "{refused}");
}

#[test]
fn a_missing_file_is_one_line_naming_the_key_and_the_file() {
    let dir = Dir::new("missing");
    let files = dir.identity("ca");
    for (key, files) in [
        ("cert", TlsFiles { cert: dir.0.join("nope.pem"), ..files.clone() }),
        ("key", TlsFiles { key: dir.0.join("nope.pem"), ..files.clone() }),
        ("ca", TlsFiles { ca: dir.0.join("nope.pem"), ..files.clone() }),
    ] {
        let e = Tls::load(&files).unwrap_err().to_string();
        assert!(e.starts_with(&format!("[cluster] tls {key} = ")), "{e}");
        assert!(e.contains("nope.pem: cannot read"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn a_file_without_pem_is_one_line_naming_the_key_and_the_file() {
    let dir = Dir::new("garbage");
    let files = dir.identity("ca");
    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "not\na\npem\n").unwrap();
    for (key, files, what) in [
        ("cert", TlsFiles { cert: garbage.clone(), ..files.clone() }, "no PEM certificate"),
        ("key", TlsFiles { key: garbage.clone(), ..files.clone() }, "no usable PEM private key"),
        ("ca", TlsFiles { ca: garbage.clone(), ..files.clone() }, "no PEM certificate"),
        // A certificate where the key should be.
        ("key", TlsFiles { key: files.cert.clone(), ..files.clone() }, "no usable PEM private key"),
    ] {
        let e = Tls::load(&files).unwrap_err().to_string();
        assert!(e.starts_with(&format!("[cluster] tls {key} = ")) && e.contains(what), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let dir = Dir::new("mismatch");
    let files = dir.identity("ca");
    let other = dir.identity("other");
    let e = Tls::load(&TlsFiles { key: other.key, ..files }).unwrap_err().to_string();
    assert!(e.starts_with("[cluster] tls: cert "), "{e}");
}

#[test]
fn the_name_checked_is_the_host_of_the_address_dialed() {
    assert_eq!(server_name("127.0.0.1:6627").unwrap(), ServerName::try_from("127.0.0.1").unwrap());
    assert_eq!(server_name("[::1]:6627").unwrap(), ServerName::try_from("::1").unwrap());
    assert_eq!(server_name("nimbus.example:6627").unwrap(), ServerName::try_from("nimbus.example").unwrap());
    assert_eq!(server_name("nimbus.example").unwrap(), ServerName::try_from("nimbus.example").unwrap());
}

#[test]
fn files_pass_through_the_environment_all_or_none() {
    // One test owns these variables (tests run in threads of one process).
    for name in ENV {
        std::env::remove_var(name);
    }
    assert!(TlsFiles::from_env().unwrap().is_none());
    std::env::set_var(ENV[0], "/a/cert.pem");
    assert!(TlsFiles::from_env().is_err());
    std::env::set_var(ENV[1], "/a/key.pem");
    std::env::set_var(ENV[2], "/a/ca.pem");
    let files = TlsFiles::from_env().unwrap().unwrap();
    assert_eq!(files.ca, PathBuf::from("/a/ca.pem"));
    for name in ENV {
        std::env::remove_var(name);
    }
}
