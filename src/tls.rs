//! HTTPS: the server's certificate, from PEM files or made at startup for this machine's
//! names and addresses, so that phones on the LAN may use their camera.

use crate::config::HttpConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("the certificate or key is not usable: {0}")]
    Unusable(String),
}

/// A certificate and its key, PEM.
pub struct Identity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// SHA-256 of the certificate, `AB:CD:...`.
    pub fingerprint: String,
}

/// The identity HTTPS uses, if the configuration asks for HTTPS.
pub fn identity(config: &HttpConfig) -> Result<Option<Identity>, TlsError> {
    if config.tls_self_signed {
        return self_signed(&names()).map(Some);
    }
    if config.tls_cert.as_os_str().is_empty() {
        return Ok(None);
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&config.tls_cert)?;
    let key_pem = read(&config.tls_key)?;
    let der = CertificateDer::from_pem_slice(&cert_pem)
        .map(|cert| cert.to_vec())
        .unwrap_or_default();
    Ok(Some(Identity {
        fingerprint: fingerprint(&der),
        cert_pem,
        key_pem,
    }))
}

/// The server's TLS configuration for `identity`: HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, TlsError> {
    let unusable = |e: &dyn std::fmt::Display| TlsError::Unusable(e.to_string());
    let certs = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(&e))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|e| unusable(&e))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| unusable(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// This machine's names and addresses: localhost, its host name, its interfaces.
fn names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim().to_string();
        if !host.is_empty() {
            names.push(format!("{host}.local"));
            names.push(host);
        }
    }
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        names.extend(interfaces.into_iter().map(|i| i.ip().to_string()));
    }
    names.sort();
    names.dedup();
    names
}

fn self_signed(names: &[String]) -> Result<Identity, TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok(Identity {
        fingerprint: fingerprint(certified.cert.der()),
        cert_pem: certified.cert.pem().into_bytes(),
        key_pem: certified.signing_key.serialize_pem().into_bytes(),
    })
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_names_this_machine() {
        let names = names();
        assert!(names.contains(&"localhost".to_string()));
        assert!(names.contains(&"127.0.0.1".to_string()));
        let identity = self_signed(&names).unwrap();
        let der = CertificateDer::from_pem_slice(&identity.cert_pem).unwrap();
        assert_eq!(fingerprint(&der), identity.fingerprint);
        assert_eq!(identity.fingerprint.len(), 32 * 3 - 1);
    }
}
