//! Peer authentication with a herd secret (`--herd-secret-file`).
//!
//! Both sides of a link prove they know the secret with an HMAC-SHA256 over a
//! fresh nonce chosen by the other side, so a recorded exchange cannot be
//! replayed and neither side can be impersonated:
//!
//! ```text
//! dialer -> acceptor   HELLO <dialer> <nonce-d>
//! acceptor -> dialer   CHALLENGE <nonce-a> <HMAC(secret, "acceptor" nonce-d dialer acceptor)>
//! dialer -> acceptor   PROOF <HMAC(secret, "dialer" nonce-a dialer acceptor)>
//! acceptor -> dialer   WELCOME <acceptor>
//! ```
//!
//! The secret never leaves the process and never reaches the log; the
//! nonces and proofs that do are useless without it. `ring` is already in the
//! build (rustls uses it), and gives HMAC, constant-time verification, and the
//! system's random numbers.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The herd secret, ready for HMACs.
pub struct Secret {
    key: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which side of the link a proof speaks for.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Secret {
    /// The secret from the bytes of the secret file (surrounding white space
    /// dropped); empty is an error.
    pub fn new(file_bytes: &[u8]) -> Result<Secret, String> {
        let start = file_bytes.iter().position(|b| !b.is_ascii_whitespace());
        let end = file_bytes.iter().rposition(|b| !b.is_ascii_whitespace());
        let secret = match (start, end) {
            (Some(s), Some(e)) => &file_bytes[s..=e],
            _ => return Err("the herd secret file is empty".to_string()),
        };
        Ok(Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            rng: SystemRandom::new(),
        })
    }

    /// A fresh 128-bit nonce, as hex.
    pub fn nonce(&self) -> Result<String, String> {
        let mut bytes = [0u8; 16];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| "no random numbers".to_string())?;
        Ok(hex(&bytes))
    }

    fn message(role: Role, nonce: &[u8], dialer: &[u8], acceptor: &[u8]) -> Vec<u8> {
        let role: &[u8] = match role {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        };
        [b"proxy-herd-v1" as &[u8], role, nonce, dialer, acceptor].join(&b' ')
    }

    /// The proof that `role` knows the secret, for the other side's nonce.
    pub fn proof(&self, role: Role, nonce: &[u8], dialer: &[u8], acceptor: &[u8]) -> String {
        hex(hmac::sign(&self.key, &Self::message(role, nonce, dialer, acceptor)).as_ref())
    }

    /// Checks a proof in constant time.
    pub fn verify(
        &self,
        role: Role,
        nonce: &[u8],
        dialer: &[u8],
        acceptor: &[u8],
        proof: &[u8],
    ) -> bool {
        match unhex(proof) {
            Some(tag) => hmac::verify(
                &self.key,
                &Self::message(role, nonce, dialer, acceptor),
                &tag,
            )
            .is_ok(),
            None => false,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    text.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_secret_nonce_names_and_role() {
        let a = Secret::new(b"  correct horse\n").unwrap();
        let b = Secret::new(b"correct horse").unwrap();
        let other = Secret::new(b"battery staple").unwrap();
        let nonce = a.nonce().unwrap();
        assert_eq!(nonce.len(), 32);
        assert_ne!(nonce, a.nonce().unwrap());
        let p = a.proof(Role::Dialer, nonce.as_bytes(), b"Riley", b"Jaquez");
        assert!(b.verify(
            Role::Dialer,
            nonce.as_bytes(),
            b"Riley",
            b"Jaquez",
            p.as_bytes()
        ));
        assert!(!other.verify(
            Role::Dialer,
            nonce.as_bytes(),
            b"Riley",
            b"Jaquez",
            p.as_bytes()
        ));
        assert!(!b.verify(
            Role::Acceptor,
            nonce.as_bytes(),
            b"Riley",
            b"Jaquez",
            p.as_bytes()
        ));
        assert!(!b.verify(Role::Dialer, b"00", b"Riley", b"Jaquez", p.as_bytes()));
        assert!(!b.verify(
            Role::Dialer,
            nonce.as_bytes(),
            b"Jaquez",
            b"Riley",
            p.as_bytes()
        ));
        assert!(!b.verify(Role::Dialer, nonce.as_bytes(), b"Riley", b"Jaquez", b"zz"));
        assert!(Secret::new(b" \n").is_err());
    }
}
