//! Peer-link TLS: `--peer-cert FILE`, `--peer-key FILE`, `--peer-ca FILE`.
//!
//! With all three, every peer connection, dialled or accepted, is TLS 1.3
//! with a certificate on each side, checked against the herd CA alone (the
//! web PKI roots play no part):
//!
//! - **dialling** neighbour N ([`PeerTls::dial`]): N's certificate must chain to
//!   the herd CA and carry the DNS name N, the name the herd file gives it
//!   (rustls checks it: N is the `ServerName`);
//! - **accepting** ([`PeerTls::accept`]): the dialer must present a certificate
//!   that chains to the herd CA (`WebPkiClientVerifier`, client
//!   authentication required); whose it is, the handshake cannot say, so once
//!   its HELLO names a neighbour, [`check_claimed_name`] checks that the
//!   certificate carries that name: a server holding a good certificate for
//!   Jaquez cannot speak as Riley.
//!
//! Expired, untrusted and wrong-name certificates fail the handshake (or the
//! HELLO check) with rustls's reason, and a server refuses to start with its
//! own certificate expired, untrusted by the herd CA, or not for its name.
//! Session resumption is off both ways, so the certificates are checked on
//! every connection, not once per process. Errors are one line and name
//! files, never what the key file holds.
//!
//! The transport that carries these connections is [`super::transport`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// Answered, in plaintext, to a neighbour that dials a TLS peer port in
/// plaintext (see [`super::TlsTransport::set_plaintext_refusal`]): its own
/// protocol logs it as a refusal.
pub const REFUSE_PLAINTEXT: &[u8] = b"REFUSED this peer port speaks TLS (--peer-cert)\n";

/// What a plaintext peer port should answer a neighbour whose first bytes
/// are a TLS ClientHello ([`super::transport::looks_like_tls`]): the TLS side
/// logs it, quoted, as "the other side speaks plaintext".
pub const REFUSE_TLS: &[u8] = b"REFUSED this peer port speaks plaintext (no --peer-cert)\n";

/// The refusal for a HELLO whose name is not in the dialer's certificate
/// (after [`check_claimed_name`] failed).
pub fn wrong_name_refusal(name: &str) -> String {
    format!("REFUSED certificate not for {name}\n")
}

/// The three files, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsFiles {
    /// `--peer-cert`: this server's certificate chain, PEM.
    pub cert: PathBuf,
    /// `--peer-key`: its private key, PEM.
    pub key: PathBuf,
    /// `--peer-ca`: the herd CA certificate(s), PEM.
    pub ca: PathBuf,
}

/// Peer TLS, loaded and checked: a configuration for each direction.
pub struct PeerTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("PeerTls { .. }")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM error in words that cannot quote the file.
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "nothing of the expected kind in it".to_string(),
        _ => "not valid PEM".to_string(),
    }
}

fn read(option: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {option} {}: {e}", path.display()))
}

fn certificates(
    option: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: pem::Error| format!("{option} {}: {}", path.display(), pem_error(&e));
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if certs.is_empty() {
        return Err(format!("{option} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

impl PeerTls {
    /// Reads and checks the three files for server `name`.
    pub fn load(files: &PeerTlsFiles, name: &str) -> Result<PeerTls, String> {
        let cert = read("--peer-cert", &files.cert)?;
        let key = read("--peer-key", &files.key)?;
        let ca = read("--peer-ca", &files.ca)?;
        Self::from_pem(
            name,
            (&cert, &files.cert),
            (&key, &files.key),
            (&ca, &files.ca),
        )
    }

    /// [`load`](Self::load) from the files' bytes (and their names, for errors).
    pub fn from_pem(
        name: &str,
        (cert, cert_path): (&[u8], &Path),
        (key, key_path): (&[u8], &Path),
        (ca, ca_path): (&[u8], &Path),
    ) -> Result<PeerTls, String> {
        let chain = certificates("--peer-cert", cert_path, cert)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
            format!(
                "--peer-key {}: no private key read: {}",
                key_path.display(),
                pem_error(&e)
            )
        })?;
        let mut roots = RootCertStore::empty();
        for c in certificates("--peer-ca", ca_path, ca)? {
            roots
                .add(c)
                .map_err(|e| format!("--peer-ca {}: {e}", ca_path.display()))?;
        }
        let roots = Arc::new(roots);
        check_own_certificate(name, &chain, &roots, cert_path)?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| format!("--peer-ca {}: {e}", ca_path.display()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| key_mismatch(&e, cert_path, key_path))?;
        // No resumption: a resumed session skips the certificate checks.
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| key_mismatch(&e, cert_path, key_path))?;
        client.resumption = Resumption::disabled();
        Ok(PeerTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The TLS side of a connection we dial to neighbour `neighbour`: its
    /// certificate must carry that name.
    pub fn dial(&self, neighbour: &str) -> Result<ClientConnection, String> {
        let name = ServerName::try_from(neighbour.to_string())
            .map_err(|_| format!("{neighbour:?} cannot be a certificate name"))?;
        ClientConnection::new(self.client.clone(), name).map_err(|e| format!("TLS: {e}"))
    }

    /// The TLS side of a connection a neighbour dialled to us.
    pub fn accept(&self) -> Result<ServerConnection, String> {
        ServerConnection::new(self.server.clone()).map_err(|e| format!("TLS: {e}"))
    }

    /// The configuration for accepted connections.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The configuration for dialled connections.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

fn key_mismatch(e: &rustls::Error, cert: &Path, key: &Path) -> String {
    format!(
        "--peer-cert {} and --peer-key {} do not go together: {e}",
        cert.display(),
        key.display()
    )
}

/// Our own certificate must be one our neighbours will take: chained to the
/// herd CA, in date, for our name, and good for both ends of a link.
fn check_own_certificate(
    name: &str,
    chain: &[CertificateDer<'static>],
    roots: &Arc<RootCertStore>,
    path: &Path,
) -> Result<(), String> {
    let bad = |why: String| format!("--peer-cert {}: {why}", path.display());
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| bad(format!("{name:?} cannot be a certificate name")))?;
    let (end_entity, intermediates) = chain
        .split_first()
        .ok_or_else(|| bad("no certificate".to_string()))?;
    let now = UnixTime::now();
    let as_server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    as_server
        .verify_server_cert(end_entity, intermediates, &server_name, &[], now)
        .map_err(|e| bad(format!("not a herd certificate for {name}: {e}")))?;
    let as_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    as_client
        .verify_client_cert(end_entity, intermediates, now)
        .map_err(|e| bad(format!("not good for dialling: {e}")))?;
    Ok(())
}

/// After a neighbour's HELLO claimed to be `name` (the herd's spelling of a
/// neighbour's name): true when the certificate it presented in the handshake
/// (already checked against the herd CA) carries the DNS name `name`.
/// `certs` is [`super::TlsTransport::peer_certificates`].
pub fn check_claimed_name(certs: Option<&[CertificateDer<'_>]>, name: &str) -> Result<(), String> {
    let end_entity = certs
        .and_then(|c| c.first())
        .ok_or_else(|| "no certificate presented".to_string())?;
    let server_name =
        ServerName::try_from(name).map_err(|_| format!("{name:?} cannot be a certificate name"))?;
    let parsed = ParsedCertificate::try_from(end_entity)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    rustls::client::verify_server_name(&parsed, &server_name)
        .map_err(|e| format!("its certificate is not for {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{HerdCa, Issued, Validity};
    use rustls::{Connection, Error};
    use std::io::{Read, Write};

    struct Herd {
        ca: HerdCa,
    }

    impl Herd {
        fn new() -> Herd {
            Herd {
                ca: HerdCa::new("test CA", Validity::from_now(1)).unwrap(),
            }
        }

        fn issue(&self, name: &str) -> Issued {
            self.ca.issue(name, Validity::from_now(1)).unwrap()
        }

        /// Server `name`'s peer TLS, with a certificate issued for `cert_for`.
        fn tls(&self, name: &str, issued: &Issued) -> Result<PeerTls, String> {
            PeerTls::from_pem(
                name,
                (issued.cert_pem.as_bytes(), Path::new("c.pem")),
                (issued.key_pem.as_bytes(), Path::new("c.key")),
                (self.ca.cert_pem().as_bytes(), Path::new("ca.pem")),
            )
        }

        fn server(&self, name: &str) -> PeerTls {
            self.tls(name, &self.issue(name)).unwrap()
        }
    }

    /// Moves what `from` has to say to `to`; false when it had nothing.
    fn transfer(from: &mut Connection, to: &mut Connection, err: &mut Option<Error>) -> bool {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        if wire.is_empty() || err.is_some() {
            return false;
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            if let Err(e) = to.process_new_packets() {
                *err = Some(e);
                break;
            }
        }
        true
    }

    /// Moves records between the two sides in memory until neither has
    /// anything to say; returns each side's error, if any.
    fn pump(client: &mut Connection, server: &mut Connection) -> (Option<Error>, Option<Error>) {
        let (mut client_err, mut server_err) = (None, None);
        for _ in 0..20 {
            let a = transfer(client, server, &mut server_err);
            let b = transfer(server, client, &mut client_err);
            if !a && !b {
                break;
            }
        }
        (client_err, server_err)
    }

    /// Dials `to` as `dialer`, says a line, and returns both sides' errors
    /// and what the acceptor received.
    fn link(
        dialer: &PeerTls,
        acceptor: &PeerTls,
        to: &str,
    ) -> (Option<Error>, Option<Error>, Connection) {
        let mut client = Connection::Client(dialer.dial(to).unwrap());
        let mut server = Connection::Server(acceptor.accept().unwrap());
        let (c, s) = pump(&mut client, &mut server);
        if c.is_some() || s.is_some() {
            return (c, s, server);
        }
        client.writer().write_all(b"HELLO x\n").unwrap();
        let (c, s) = pump(&mut client, &mut server);
        (c, s, server)
    }

    fn received(server: &mut Connection) -> Vec<u8> {
        let mut got = Vec::new();
        let _ = server.reader().read_to_end(&mut got);
        got
    }

    #[test]
    fn herd_certificates_link_both_ways_over_tls13() {
        let herd = Herd::new();
        let (riley, jaquez) = (herd.server("Riley"), herd.server("Jaquez"));
        let (c, s, mut server) = link(&riley, &jaquez, "Jaquez");
        assert!(c.is_none() && s.is_none(), "{c:?} {s:?}");
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(received(&mut server), b"HELLO x\n");
        let certs = server.peer_certificates();
        assert!(check_claimed_name(certs, "Riley").is_ok());
        let err = check_claimed_name(certs, "Juzang").unwrap_err();
        assert!(
            err.starts_with("its certificate is not for Juzang"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_neighbour_with_another_name_is_refused_by_the_dialer() {
        let herd = Herd::new();
        let riley = herd.server("Riley");
        // Juzang answers where the herd file puts Jaquez.
        let (c, _, _) = link(&riley, &herd.server("Juzang"), "Jaquez");
        let err = c.expect("the dialer refuses").to_string();
        assert!(err.contains("not valid for name"), "{err}");
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused_both_ways() {
        let herd = Herd::new();
        let other = Herd::new();
        let jaquez = herd.server("Jaquez");
        // An intruder with another CA's certificate for Riley, trusting ours.
        let intruder = PeerTls::from_pem(
            "Riley",
            (other.issue("Riley").cert_pem.as_bytes(), Path::new("c.pem")),
            (other.issue("Riley").key_pem.as_bytes(), Path::new("c.key")),
            (herd.ca.cert_pem().as_bytes(), Path::new("ca.pem")),
        );
        // It does not even start: its own certificate is not the herd's.
        let err = intruder.unwrap_err();
        assert!(err.contains("not a herd certificate for Riley"), "{err}");
        // Started anyway, it is refused when it dials...
        let intruder = PeerTls::unchecked(&other.issue("Riley"), &herd.ca.cert_pem());
        let (_, s, _) = link(&intruder, &jaquez, "Jaquez");
        // Its CA has our CA's name (as an intruder's would): the signature fails.
        let err = s.expect("the acceptor refuses").to_string();
        assert!(err.contains("BadSignature"), "{err}");
        // ...and when it is dialled.
        let intruder = PeerTls::unchecked(&other.issue("Juzang"), &herd.ca.cert_pem());
        let (c, _, _) = link(&jaquez, &intruder, "Juzang");
        let err = c.expect("the dialer refuses").to_string();
        assert!(err.contains("BadSignature"), "{err}");
        // A CA by another name is not even a candidate issuer.
        let stranger = HerdCa::new("another CA", Validity::from_now(1)).unwrap();
        let issued = stranger.issue("Juzang", Validity::from_now(1)).unwrap();
        let intruder = PeerTls::unchecked(&issued, &herd.ca.cert_pem());
        let (c, _, _) = link(&jaquez, &intruder, "Juzang");
        let err = c.expect("the dialer refuses").to_string();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn an_expired_certificate_is_refused_both_ways() {
        let herd = Herd::new();
        let past = Validity {
            not_before: rcgen::date_time_ymd(2020, 1, 1),
            not_after: rcgen::date_time_ymd(2021, 1, 1),
        };
        let old = herd.ca.issue("Riley", past).unwrap();
        let err = herd.tls("Riley", &old).unwrap_err();
        assert!(err.contains("not a herd certificate for Riley"), "{err}");
        assert!(err.to_lowercase().contains("expired"), "{err}");
        // A server holding it anyway (say it expired while running).
        let expired = PeerTls::unchecked(&old, &herd.ca.cert_pem());
        let jaquez = herd.server("Jaquez");
        let (_, s, _) = link(&expired, &jaquez, "Jaquez");
        let err = s.expect("the acceptor refuses").to_string();
        assert!(err.to_lowercase().contains("expired"), "{err}");
        let (c, _, _) = link(&jaquez, &expired, "Riley");
        let err = c.expect("the dialer refuses").to_string();
        assert!(err.to_lowercase().contains("expired"), "{err}");
    }

    impl PeerTls {
        /// A `PeerTls` built without the start-up checks (as a server whose
        /// certificate expired after it started has, or an intruder's).
        fn unchecked(issued: &Issued, ca_pem: &str) -> PeerTls {
            let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
                .unwrap();
            let roots = Arc::new(roots);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .unwrap();
            let server = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .unwrap();
            let client = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap();
            PeerTls {
                server: Arc::new(server),
                client: Arc::new(client),
            }
        }
    }

    #[test]
    fn a_certificate_for_another_server_cannot_claim_its_name() {
        let herd = Herd::new();
        let jaquez = herd.server("Jaquez");
        let juzang = herd.server("Juzang");
        // Juzang's good certificate gets through the handshake...
        let (c, s, server) = link(&juzang, &jaquez, "Jaquez");
        assert!(c.is_none() && s.is_none(), "{c:?} {s:?}");
        // ...but its HELLO may only name Juzang.
        assert!(check_claimed_name(server.peer_certificates(), "Juzang").is_ok());
        let err = check_claimed_name(server.peer_certificates(), "Riley").unwrap_err();
        assert!(err.contains("not for Riley"), "{err}");
        // And it does not start as Riley.
        let err = herd.tls("Riley", &herd.issue("Juzang")).unwrap_err();
        assert!(err.contains("not a herd certificate for Riley"), "{err}");
    }

    #[test]
    fn names_are_dns_names_without_regard_to_case() {
        let herd = Herd::new();
        let issued = herd.issue("Riley");
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let chain = [der];
        assert!(check_claimed_name(Some(&chain), "Riley").is_ok());
        assert!(check_claimed_name(Some(&chain), "riley").is_ok());
        assert!(check_claimed_name(Some(&chain), "Rile").is_err());
        assert!(check_claimed_name(Some(&[]), "Riley").is_err());
        assert!(check_claimed_name(None, "Riley").is_err());
        let under = herd.issue("a_b-1");
        let der = CertificateDer::from_pem_slice(under.cert_pem.as_bytes()).unwrap();
        assert!(check_claimed_name(Some(&[der]), "a_b-1").is_ok());
    }

    #[test]
    fn a_dialer_without_a_certificate_is_refused() {
        let herd = Herd::new();
        let jaquez = herd.server("Jaquez");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(herd.ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let anonymous = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("Jaquez").unwrap();
        let mut client =
            Connection::Client(ClientConnection::new(Arc::new(anonymous), name).unwrap());
        let mut server = Connection::Server(jaquez.accept().unwrap());
        let (_, s) = pump(&mut client, &mut server);
        let err = s.expect("the acceptor refuses").to_string();
        assert!(err.contains("certificate"), "{err}");
    }

    #[test]
    fn bad_files_are_one_line_errors_that_never_quote_the_key() {
        let herd = Herd::new();
        let riley = herd.issue("Riley");
        let ca = herd.ca.cert_pem();
        let try_with = |cert: &[u8], key: &[u8], ca: &[u8]| {
            PeerTls::from_pem(
                "Riley",
                (cert, Path::new("r.pem")),
                (key, Path::new("r.key")),
                (ca, Path::new("ca.pem")),
            )
            .unwrap_err()
        };
        let key = riley.key_pem.as_bytes();
        let cert = riley.cert_pem.as_bytes();
        // The key file holds a certificate, the cert file a key.
        let errors = [
            (try_with(cert, cert, ca.as_bytes()), "--peer-key r.key"),
            (
                try_with(key, key, ca.as_bytes()),
                "--peer-cert r.pem: no certificate",
            ),
            (
                try_with(cert, key, b"junk"),
                "--peer-ca ca.pem: no certificate",
            ),
            (
                try_with(cert, herd.issue("Riley").key_pem.as_bytes(), ca.as_bytes()),
                "do not go together",
            ),
            (
                try_with(
                    cert,
                    b"-----BEGIN PRIVATE KEY-----\nAAAA!!\n-----END PRIVATE KEY-----\n",
                    ca.as_bytes(),
                ),
                "--peer-key r.key",
            ),
        ];
        let secret = riley.key_pem.lines().nth(1).unwrap();
        for (err, want) in errors {
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(!err.contains('\n'), "{err:?}");
            assert!(!err.contains(secret), "{err:?} quotes the key");
            assert!(!err.contains("AAAA"), "{err:?} quotes the key file");
        }
        let missing = PeerTlsFiles {
            cert: "/nonexistent/r.pem".into(),
            key: "/nonexistent/r.key".into(),
            ca: "/nonexistent/ca.pem".into(),
        };
        let err = PeerTls::load(&missing, "Riley").unwrap_err();
        assert!(
            err.starts_with("cannot read --peer-cert /nonexistent/r.pem"),
            "{err}"
        );
    }
}
