//! The server's TLS: its certificate (given, or made at first start and
//! kept in the data directory), and what a new connection speaks.
//!
//! One port serves both: a TLS client's first byte is a handshake record
//! (0x16), a plaintext client's is the first byte of its hello's length
//! (0 for any hello lote accepts). Plaintext is accepted where the policy
//! allows it: from this machine by default, never, or from anywhere (an
//! insecure choice the operator makes by name).

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::ServerError;

/// Which connections may speak without TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plaintext {
    /// From this machine only (loopback addresses): local agents, the CLI
    /// on the server's own machine.
    #[default]
    Loopback,
    /// Never: every connection uses TLS.
    Never,
    /// From anywhere: keys and data cross the network in clear. Only on a
    /// network you trust completely.
    InsecureAny,
}

/// The TLS record type of a handshake: a TLS client's first byte.
const TLS_HANDSHAKE: u8 = 0x16;

pub type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
pub type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// The server's certificate and what it accepts.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// `sha256:HEX` of the certificate, which clients pin.
    pub fingerprint: String,
    pub certificate: PathBuf,
    pub plaintext: Plaintext,
}

/// Where a server that makes its own certificate keeps it.
pub const TLS_DIR: &str = "tls";

impl ServerTls {
    /// The certificate and key given, or the ones in `DATA_DIR/tls`,
    /// made there (self-signed, for `names`) when missing.
    pub fn load_or_create(
        data_dir: &Path,
        given: Option<(PathBuf, PathBuf)>,
        names: Vec<String>,
        plaintext: Plaintext,
    ) -> Result<ServerTls, ServerError> {
        let fail = |what: String| ServerError::Config(format!("TLS: {what}"));
        let (cert_path, key_path) = match given {
            Some(paths) => paths,
            None => {
                let dir = data_dir.join(TLS_DIR);
                let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
                if !cert.exists() || !key.exists() {
                    make_self_signed(&dir, &cert, &key, names).map_err(fail)?;
                }
                (cert, key)
            }
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let certs = rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("{}: {e}", cert_path.display())))?;
        let first = certs
            .first()
            .ok_or_else(|| fail(format!("{} holds no certificate", cert_path.display())))?;
        let fingerprint = crate::api::tls::fingerprint(first.as_ref());
        let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
            .map_err(|e| fail(format!("{}: {e}", key_path.display())))?
            .ok_or_else(|| fail(format!("{} holds no private key", key_path.display())))?;
        let config = rustls::ServerConfig::builder_with_provider(crate::api::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                fail(format!(
                    "{} and {}: {e}",
                    cert_path.display(),
                    key_path.display()
                ))
            })?;
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            fingerprint,
            certificate: cert_path,
            plaintext,
        })
    }

    /// Whether `peer` may speak plaintext.
    fn plaintext_from(&self, peer: SocketAddr) -> bool {
        match self.plaintext {
            Plaintext::Loopback => peer.ip().is_loopback(),
            Plaintext::Never => false,
            Plaintext::InsecureAny => true,
        }
    }

    /// The connection's halves once its first byte says what it speaks,
    /// and whether that is TLS: a handshake done, or plaintext where
    /// allowed. Err: the stream (for a plaintext goodbye) and why it is
    /// refused; None when the peer went away or the handshake failed.
    pub async fn negotiate(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(BoxRead, BoxWrite, bool), Option<(TcpStream, String)>> {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) => {}
            _ => return Err(None),
        }
        if first[0] == TLS_HANDSHAKE {
            return match self.acceptor.accept(stream).await {
                Ok(tls) => {
                    let (r, w) = tokio::io::split(tls);
                    Ok((Box::new(r), Box::new(w), true))
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    Err(None)
                }
            };
        }
        if !self.plaintext_from(peer) {
            let why = format!(
                "this server takes only TLS from {}: connect with --tls-fingerprint {} (or a CA that signed its certificate)",
                peer.ip(),
                self.fingerprint
            );
            return Err(Some((stream, why)));
        }
        let (r, w) = stream.into_split();
        Ok((Box::new(r), Box::new(w), false))
    }
}

/// The fingerprint of the first certificate in a PEM file.
pub fn certificate_fingerprint(path: &Path) -> Result<String, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let first = rustls_pemfile::certs(&mut BufReader::new(pem.as_slice()))
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(crate::api::tls::fingerprint(first.as_ref()))
}

/// A self-signed certificate for `names` (host names and addresses) and
/// its key, the key readable by the server's user only.
fn make_self_signed(dir: &Path, cert: &Path, key: &Path, names: Vec<String>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    crate::private_file::write_owner_only(key, &made.key_pair.serialize_pem(), "TLS key", true)
        .map_err(|e| e.to_string())?;
    std::fs::write(cert, made.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    Ok(())
}

/// The names a made certificate is for: this machine's, and the address
/// the server listens on when it is a specific one.
pub fn certificate_names(listen: &SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    names
}
