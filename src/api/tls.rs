//! TLS for the message API: how a client trusts a server (a pinned
//! certificate fingerprint, or a CA), when plaintext is allowed (the
//! server is on this machine, or the user said so), and the fingerprint
//! format that join tokens carry.
//!
//! rustls with the ring provider: pure Rust and C that builds with the
//! compiler the crate already needs, no cmake.

use std::net::ToSocketAddrs;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// What a fingerprint starts with when written out.
pub const FINGERPRINT_PREFIX: &str = "sha256:";

/// What separates a join token from the fingerprint it carries.
pub const TOKEN_FINGERPRINT_SEPARATOR: char = '@';

/// The crypto every TLS config of lote uses. rustls deprecates ring's
/// default for lacking post-quantum key exchange; aws-lc-rs has it but
/// builds a large C library with cmake on every new machine. Revisit when
/// a harvest-now-decrypt-later threat matters to a deployment.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sha256:HEX` of a certificate (its DER bytes).
pub fn fingerprint(cert_der: &[u8]) -> String {
    format!(
        "{FINGERPRINT_PREFIX}{}",
        super::auth::hex(&Sha256::digest(cert_der))
    )
}

/// A fingerprint as written: `sha256:HEX`, `HEX`, or HEX with colons
/// between bytes (as openssl prints it), any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text
        .trim()
        .trim_start_matches(FINGERPRINT_PREFIX)
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>();
    super::auth::unhex(&hex)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("{text:?} is not a SHA-256 fingerprint (sha256: and 64 hex digits)"))
}

/// A join token and the server certificate's fingerprint it may carry
/// (`TOKEN@sha256:HEX`).
pub fn split_join_token(token: &str) -> (&str, Option<&str>) {
    match token.split_once(TOKEN_FINGERPRINT_SEPARATOR) {
        Some((token, fingerprint)) => (token, Some(fingerprint)),
        None => (token, None),
    }
}

/// How a client trusts the server it connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The server's certificate has this SHA-256 (a self-signed one).
    Fingerprint([u8; 32]),
    /// The server's certificate chains to a CA in this PEM file, for its
    /// host name.
    Ca(std::path::PathBuf),
}

impl Trust {
    /// From a `--tls-fingerprint` or `--tls-ca` flag (the fingerprint
    /// first); None for neither.
    pub fn from_flags(
        fingerprint: Option<&str>,
        ca: Option<std::path::PathBuf>,
    ) -> Result<Option<Trust>, String> {
        match (fingerprint, ca) {
            (Some(fp), _) => parse_fingerprint(fp).map(|fp| Some(Trust::Fingerprint(fp))),
            (None, Some(ca)) => Ok(Some(Trust::Ca(ca))),
            (None, None) => Ok(None),
        }
    }
}

/// How a client reaches the server.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls {
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain => f.write_str("Plain"),
            Transport::Tls { name, .. } => write!(f, "Tls({name:?})"),
        }
    }
}

/// Whether `addr` (HOST:PORT) names this machine: every address it
/// resolves to is a loopback one.
pub fn is_loopback(addr: &str) -> bool {
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

impl Transport {
    /// TLS with `trust` when given; else plaintext to this machine or when
    /// `insecure_plaintext` says so; else an error that says what to give.
    pub fn choose(
        addr: &str,
        trust: Option<&Trust>,
        insecure_plaintext: bool,
    ) -> Result<Transport, String> {
        match trust {
            Some(trust) => Transport::tls(addr, trust),
            None if insecure_plaintext || is_loopback(addr) => Ok(Transport::Plain),
            None => Err(format!(
                "{addr} is not on this machine, and keys and data travel to it only over TLS: \
                 give the server certificate's fingerprint (--tls-fingerprint sha256:..., which \
                 the server prints at start and `lote pool join-token` carries) or a CA \
                 (--tls-ca FILE); --insecure-plaintext sends everything in clear"
            )),
        }
    }

    fn tls(addr: &str, trust: &Trust) -> Result<Transport, String> {
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(addr);
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = match trust {
            Trust::Fingerprint(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    fingerprint: *fp,
                    provider: provider(),
                }))
                .with_no_client_auth(),
            Trust::Ca(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{} holds no certificate", path.display()));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        // A pinned certificate is checked by its bytes, not its name; the
        // name still goes in the hello (SNI) when it is one.
        let name = ServerName::try_from(host.to_string())
            .or_else(|_| ServerName::try_from("lote-server".to_string()))
            .map_err(|e| e.to_string())?;
        Ok(Transport::Tls {
            config: Arc::new(config),
            name,
        })
    }
}

/// Accepts exactly the certificate whose SHA-256 is pinned, and checks
/// that the server holds its key (the handshake's signature).
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is {}, not the pinned {}: a different server, or one that changed its certificate",
                fingerprint(end_entity.as_ref()),
                format_args!("{FINGERPRINT_PREFIX}{}", super::auth::hex(&self.fingerprint))
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_forms_people_paste() {
        let hex = "ab".repeat(32);
        let want = [0xab; 32];
        assert_eq!(parse_fingerprint(&format!("sha256:{hex}")), Ok(want));
        assert_eq!(parse_fingerprint(&hex.to_uppercase()), Ok(want));
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")), Ok(want));
        assert!(parse_fingerprint("sha256:abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert_eq!(fingerprint(b"x").len(), FINGERPRINT_PREFIX.len() + 64);
    }

    #[test]
    fn join_tokens_carry_a_fingerprint_after_the_separator() {
        assert_eq!(split_join_token("abc"), ("abc", None));
        assert_eq!(
            split_join_token("abc@sha256:00"),
            ("abc", Some("sha256:00"))
        );
    }

    #[test]
    fn plaintext_goes_to_this_machine_only_unless_asked() {
        assert!(is_loopback("127.0.0.1:7070"));
        assert!(is_loopback("[::1]:7070"));
        assert!(is_loopback("localhost:7070"));
        assert!(!is_loopback("10.1.2.3:7070"));
        assert!(!is_loopback("192.0.2.1:7070"));
        assert!(matches!(
            Transport::choose("127.0.0.1:7070", None, false),
            Ok(Transport::Plain)
        ));
        let refused = Transport::choose("10.1.2.3:7070", None, false).unwrap_err();
        assert!(refused.contains("--tls-fingerprint"), "{refused}");
        assert!(matches!(
            Transport::choose("10.1.2.3:7070", None, true),
            Ok(Transport::Plain)
        ));
        let pinned = Trust::Fingerprint([1; 32]);
        assert!(matches!(
            Transport::choose("127.0.0.1:7070", Some(&pinned), false),
            Ok(Transport::Tls { .. })
        ));
    }
}
