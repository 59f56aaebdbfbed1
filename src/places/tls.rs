//! The TLS transport: asyncio's `SSLProtocol` transport, for one HTTPS
//! connection to Places.
//!
//! All of rustls's plumbing stays in this file (as sozu keeps it in one):
//! ciphertext in (`read_tls` → `process_new_packets` → read plaintext) and
//! plaintext out (our own queue → `writer()` → `write_tls`). rustls buffers only
//! a bounded amount of plaintext, so we keep our own queue and feed it as
//! records leave. The HTTP state machine above ([`super::client`]) sees only
//! "bytes arrived", "the server closed" and "everything is sent".

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
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

/// What a [`TlsTransport::pump`] brought.
#[derive(Debug, Default)]
pub struct Pumped {
    /// Decrypted bytes from the server.
    pub data: Vec<u8>,
    /// The server closed (close_notify or TCP end of file).
    pub eof: bool,
}

/// A TCP stream with TLS on it.
pub struct TlsTransport {
    stream: TcpStream,
    tls: ClientConnection,
    /// Plaintext not yet taken by rustls.
    out: Vec<u8>,
}

impl TlsTransport {
    /// Wraps a connecting stream; the handshake starts once it is connected.
    pub fn new(stream: TcpStream, tls: ClientConnection) -> Self {
        TlsTransport {
            stream,
            tls,
            out: Vec::new(),
        }
    }

    /// The socket, for registration and connect checks.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket, for registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Queues plaintext (asyncio's `transport.write`).
    pub fn write(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    /// True until the handshake is complete.
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// The negotiated protocol version, for the log.
    pub fn version(&self) -> String {
        self.tls
            .protocol_version()
            .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}"))
    }

    /// True when every queued byte is on the wire.
    pub fn all_sent(&self) -> bool {
        self.out.is_empty() && !self.tls.wants_write()
    }

    /// Moves bytes every way they can go without blocking: socket → rustls →
    /// plaintext in, and our queue → rustls → socket. Call on every event.
    pub fn pump(&mut self, readable: bool) -> Result<Pumped, String> {
        let mut got = Pumped::default();
        if readable {
            self.receive(&mut got)?;
        }
        self.send()?;
        Ok(got)
    }

    fn receive(&mut self, got: &mut Pumped) -> Result<(), String> {
        loop {
            match self.tls.read_tls(&mut self.stream) {
                Ok(0) => {
                    got.eof = true;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read error: {e}")),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Tell the server why (the alert), best effort, then give up.
                let _ = self.tls.write_tls(&mut self.stream);
                return Err(format!("TLS: {e}"));
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) => {
                        got.eof = true;
                        return Ok(());
                    }
                    Ok(n) => got.data.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS: {e}")),
                }
            }
        }
    }

    fn send(&mut self) -> Result<(), String> {
        loop {
            if !self.out.is_empty() && !self.tls.is_handshaking() {
                let n = self
                    .tls
                    .writer()
                    .write(&self.out)
                    .map_err(|e| format!("TLS: {e}"))?;
                self.out.drain(..n);
            }
            if !self.tls.wants_write() {
                return Ok(());
            }
            match self.tls.write_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write error: {e}")),
            }
        }
    }

    /// asyncio's `transport.close()` for TLS: close_notify, then FIN.
    pub fn close(&mut self) {
        self.tls.send_close_notify();
        let _ = self.tls.write_tls(&mut self.stream);
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}
