//! TLS for the Places connection: whom it trusts (the web PKI roots plus
//! `--places-ca`) and the name it checks. The transport itself, with all of
//! rustls's plumbing, is the crate's one TLS transport ([`crate::tls`]); the
//! HTTP state machine above ([`super::client`]) sees only "bytes arrived",
//! "the server closed" and "everything is sent".

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The web PKI roots plus the certificates in `extra_ca` (PEM), if any.
/// Certificates are always verified: there is no insecure mode.
pub fn client_config(extra_ca: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let shown = path.display();
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --places-ca {shown}: {e}"))?
        {
            let cert = cert.map_err(|e| format!("bad certificate in {shown}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("bad certificate in {shown}: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("no certificate in --places-ca {shown}"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server name to send (SNI) and to verify the certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("bad Places host {host}: {e}"))
}

/// The Places connection's transport: the crate's TLS transport, client side.
pub type TlsTransport = crate::tls::TlsTransport<ClientConnection>;

pub use crate::tls::Pumped;
