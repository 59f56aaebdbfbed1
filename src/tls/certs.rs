//! `proxy-herd certs HERDFILE DIR`: the certificates for a herd, in one
//! command. It writes, in DIR:
//!
//! - `ca.pem`: a fresh herd CA, the only trust anchor of peer links
//!   (`--peer-ca`);
//! - `NAME.pem` and `NAME.key` for each server of the herd file: a key (ECDSA
//!   P-256) and a certificate whose only subject alternative name is the
//!   DNS name `NAME`, good for both ends of a link (serverAuth and
//!   clientAuth), signed by the CA (`--peer-cert`, `--peer-key`). Key files
//!   are created with mode 0600.
//!
//! Choices:
//!
//! - **The CA key is not kept.** It is used for this one run and dropped, so no
//!   file on any server can mint a certificate for another name: a server
//!   whose files leak can be impersonated, but only as itself. The price is
//!   that adding a server means issuing the herd again (one command) and
//!   handing every server its new files.
//! - **Only the server's name** goes in the certificate, no `localhost` or
//!   address: a link's identity is the herd name (the dialer checks the name
//!   the herd file gives its neighbour, the acceptor the name its HELLO
//!   claims), never the address, so an address would never be checked, and
//!   `localhost` in every certificate would make every server a valid
//!   `localhost`.
//! - **Valid for one year** from an hour ago (clock skew); the CA too.
//! - **Nothing is overwritten**: if any of the files exists, nothing is written.
//! - Names are DNS names, compared without regard to case, so a herd whose
//!   names differ only in case (`Riley`, `riley`) is refused.
//!
//! `rcgen` (from the rustls project) builds the certificates: writing X.509
//! by hand would be a second, untested ASN.1 encoder; it uses `ring`, already
//! in the build for rustls.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};

use crate::herd::config::HerdConfig;

/// The CA certificate's file name in DIR.
pub const CA_FILE: &str = "ca.pem";

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (a neighbour's clock may be a little behind) for `days`.
    pub fn from_now(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// A server's key and certificate, PEM.
pub struct Issued {
    pub cert_pem: String,
    /// The private key: written to a 0600 file, never printed or logged.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Issued { .. }")
    }
}

/// A herd CA, held in memory only while it issues.
pub struct HerdCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl HerdCa {
    /// A fresh CA named `label` (its common name, for people reading it).
    pub fn new(label: &str, validity: Validity) -> Result<HerdCa, String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, label);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let issuer = CertifiedIssuer::self_signed(params, key)
            .map_err(|e| format!("cannot make the CA certificate: {e}"))?;
        Ok(HerdCa { issuer })
    }

    /// The CA certificate, PEM (`--peer-ca`).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A key and certificate for server `name`: the DNS name `name` as its
    /// only subject alternative name, for both ends of a link.
    pub fn issue(&self, name: &str, validity: Validity) -> Result<Issued, String> {
        check_name(name)?;
        let mut params = CertificateParams::new(vec![name.to_string()])
            .map_err(|e| format!("server {name}: {e}"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign the certificate of {name}: {e}"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A herd name must be a DNS name to go in a certificate.
fn check_name(name: &str) -> Result<(), String> {
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        _ => Err(format!(
            "server name {name:?} cannot be a DNS name in a certificate"
        )),
    }
}

/// Writes the herd CA and every server's key and certificate into `dir`
/// (created if need be); returns the files written. Nothing is written if
/// any of them exists already, or if a name cannot go in a certificate.
pub fn write_herd(herd: &HerdConfig, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let names = herd.names();
    for (i, name) in names.iter().enumerate() {
        check_name(name)?;
        if let Some(other) = names[..i].iter().find(|n| n.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "servers {other} and {name} differ only in case: certificate names cannot tell them apart"
            ));
        }
    }
    let mut files = vec![dir.join(CA_FILE)];
    for name in &names {
        files.push(dir.join(format!("{name}.pem")));
        files.push(dir.join(format!("{name}.key")));
    }
    if let Some(there) = files.iter().find(|f| f.exists()) {
        return Err(format!(
            "{} exists already: remove the old certificates to issue the herd again",
            there.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let validity = Validity::from_now(365);
    let ca = HerdCa::new("proxy-herd herd CA", validity)?;
    let mut issued = Vec::new();
    for name in &names {
        issued.push(ca.issue(name, validity)?);
    }
    write_new(&files[0], ca.cert_pem().as_bytes(), 0o644)?;
    for (i, server) in issued.iter().enumerate() {
        write_new(&files[1 + 2 * i], server.cert_pem.as_bytes(), 0o644)?;
        write_new(&files[2 + 2 * i], server.key_pem.as_bytes(), 0o600)?;
    }
    Ok(files)
}

/// Creates `path` with `mode` (never replacing a file) and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_names() {
        assert!(check_name("Riley").is_ok());
        assert!(check_name("a_b-c").is_ok());
        let err = check_name("127.0.0.1").unwrap_err();
        assert!(err.contains("cannot be a DNS name"), "{err}");
    }

    #[test]
    fn issued_keys_do_not_show_in_debug() {
        let ca = HerdCa::new("t", Validity::from_now(1)).unwrap();
        let issued = ca.issue("Riley", Validity::from_now(1)).unwrap();
        assert!(issued.key_pem.contains("PRIVATE KEY"));
        assert_eq!(format!("{issued:?}"), "Issued { .. }");
    }
}
