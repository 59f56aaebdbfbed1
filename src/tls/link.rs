//! The transport of one peer connection, plaintext or TLS, behind the
//! plaintext [`Transport`]'s methods (`write`, `out_buf`, `backlog`, `flush`,
//! `read`, `stream_mut`), so the loop's peer code reads the same either way.
//!
//! Each side also turns the other kind away in words instead of a timeout:
//! an accepted TLS connection answers a plaintext HELLO with
//! [`REFUSE_PLAINTEXT`], and an accepted plaintext connection answers a TLS
//! ClientHello with [`REFUSE_TLS`] (see `docs/protocol.md`). The TLS plumbing
//! itself is in [`super::transport`]; who is trusted, in [`super::peer`].

use std::io;

use mio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::peer::{check_claimed_name, REFUSE_PLAINTEXT, REFUSE_TLS};
use super::transport::{looks_like_tls, TlsTransport};
use crate::transport::{Flushed, StreamTransport, Transport, WriteTransport};

/// A peer connection's transport.
pub enum PeerTransport {
    /// Plaintext. `first` holds until the first bytes have been read, to
    /// catch a neighbour that opens with a TLS ClientHello.
    Plain { transport: Transport, first: bool },
    /// TLS, dialled (client) or accepted (server).
    Tls(Box<TlsTransport<Connection>>),
}

impl PeerTransport {
    /// A plaintext connection, either way. Its queue keeps up to 1 MiB of
    /// memory between turns (a busy link fills it again every turn).
    pub fn plain(transport: Transport) -> PeerTransport {
        PeerTransport::Plain {
            transport: transport.keep_capacity(1024 * 1024),
            first: true,
        }
    }

    /// A connection we dialled, with TLS from [`super::peer::PeerTls::dial`].
    /// The ClientHello goes out with the first [`flush`](Self::flush).
    pub fn dialled(stream: TcpStream, tls: ClientConnection) -> PeerTransport {
        PeerTransport::Tls(Box::new(TlsTransport::new(stream, Connection::from(tls))))
    }

    /// A connection a neighbour dialled, with TLS from
    /// [`super::peer::PeerTls::accept`].
    pub fn accepted(stream: TcpStream, tls: ServerConnection) -> PeerTransport {
        let mut transport = TlsTransport::new(stream, Connection::from(tls));
        transport.set_plaintext_refusal(REFUSE_PLAINTEXT);
        PeerTransport::Tls(Box::new(transport))
    }

    /// True for TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, PeerTransport::Tls(_))
    }

    /// The socket, for registration and connect checks.
    pub fn stream(&self) -> &TcpStream {
        match self {
            PeerTransport::Plain { transport, .. } => transport.stream(),
            PeerTransport::Tls(t) => t.stream(),
        }
    }

    /// The socket, for registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        match self {
            PeerTransport::Plain { transport, .. } => transport.stream_mut(),
            PeerTransport::Tls(t) => t.stream_mut(),
        }
    }

    /// Queues bytes to send; over TLS, bytes queued during the handshake
    /// leave once it is done.
    pub fn write(&mut self, data: &[u8]) {
        match self {
            PeerTransport::Plain { transport, .. } => transport.write(data),
            PeerTransport::Tls(t) => t.write(data),
        }
    }

    /// The output queue, to format a message straight into it.
    pub fn out_buf(&mut self) -> &mut Vec<u8> {
        match self {
            PeerTransport::Plain { transport, .. } => transport.out_buf(),
            PeerTransport::Tls(t) => t.out_buf(),
        }
    }

    /// Bytes queued and not yet sent (over TLS: not yet taken by rustls).
    pub fn backlog(&self) -> usize {
        match self {
            PeerTransport::Plain { transport, .. } => transport.backlog(),
            PeerTransport::Tls(t) => t.backlog(),
        }
    }

    /// Sends what the socket takes.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        match self {
            PeerTransport::Plain { transport, .. } => transport.flush(),
            PeerTransport::Tls(t) => t.flush(),
        }
    }

    /// What has arrived, as a socket's `read`: `Ok(0)` at a clean end
    /// (plaintext EOF, TLS close_notify); over TLS, `UnexpectedEof` for a
    /// stream cut without close_notify (its partial last line must not be
    /// used) and `InvalidData` when TLS failed. A plaintext connection whose
    /// first bytes are a TLS ClientHello is answered [`REFUSE_TLS`] and fails.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            PeerTransport::Tls(t) => t.read(buf),
            PeerTransport::Plain { transport, first } => {
                let n = transport.read(buf)?;
                if std::mem::take(first) && looks_like_tls(&buf[..n]) {
                    transport.write(REFUSE_TLS);
                    let _ = transport.flush();
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the other side speaks TLS (it has --peer-cert), this peer port plaintext",
                    ));
                }
                Ok(n)
            }
        }
    }

    /// True once after a TLS handshake completes (never for plaintext): the
    /// moment to log the version and, on an accepted link, to expect HELLO.
    pub fn take_handshake_done(&mut self) -> bool {
        match self {
            PeerTransport::Plain { .. } => false,
            PeerTransport::Tls(t) => t.take_handshake_done(),
        }
    }

    /// The TLS version and cipher suite, for the log ("plaintext" otherwise).
    pub fn describe(&self) -> String {
        match self {
            PeerTransport::Plain { .. } => "plaintext".to_string(),
            PeerTransport::Tls(t) => format!("{} {}", t.version(), t.cipher_suite()),
        }
    }

    /// The other side's certificates (TLS, once the handshake got that far),
    /// for [`super::peer::check_claimed_name`].
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            PeerTransport::Plain { .. } => None,
            PeerTransport::Tls(t) => t.peer_certificates(),
        }
    }

    /// Before the socket is dropped: a last flush, then (over TLS)
    /// close_notify, then FIN, best effort, so the other side sees a clean end.
    pub fn close(&mut self) {
        match self {
            PeerTransport::Plain { transport, .. } => transport.close(),
            PeerTransport::Tls(t) => t.close(),
        }
    }
}

impl WriteTransport for PeerTransport {
    fn write(&mut self, data: &[u8]) {
        PeerTransport::write(self, data);
    }

    fn out_buf(&mut self) -> &mut Vec<u8> {
        PeerTransport::out_buf(self)
    }

    fn get_write_buffer_size(&self) -> usize {
        self.backlog()
    }

    /// Over TLS, the claimed name must be in the certificate the other side
    /// presented in the handshake ([`check_claimed_name`]).
    fn check_peer_name(&self, name: &str) -> Result<(), String> {
        match self {
            PeerTransport::Plain { .. } => Ok(()),
            PeerTransport::Tls(t) => check_claimed_name(t.peer_certificates(), name),
        }
    }
}

impl StreamTransport for PeerTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        PeerTransport::read(self, buf)
    }

    fn flush(&mut self) -> io::Result<Flushed> {
        PeerTransport::flush(self)
    }

    fn close(&mut self) {
        PeerTransport::close(self);
    }

    fn stream_mut(&mut self) -> &mut TcpStream {
        PeerTransport::stream_mut(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{HerdCa, Validity};
    use crate::tls::peer::PeerTls;
    use mio::{Events, Interest, Poll, Token};
    use std::io::{Read, Write};
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn pair(poll: &Poll) -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut dialled = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let mut accepted = TcpStream::from_std(accepted);
        let both = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut dialled, Token(1), both)
            .unwrap();
        poll.registry()
            .register(&mut accepted, Token(2), both)
            .unwrap();
        (dialled, accepted)
    }

    fn run_until(poll: &mut Poll, mut step: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut events = Events::with_capacity(16);
        while !step() {
            assert!(Instant::now() < deadline, "no progress before the deadline");
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
        }
    }

    /// Reads what is there: the bytes, or the error that ended it.
    fn drain(t: &mut PeerTransport, into: &mut Vec<u8>) -> Option<io::Error> {
        let mut buf = [0u8; 1024];
        loop {
            match t.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(e),
            }
        }
    }

    fn tls(ca: &HerdCa, name: &str) -> PeerTls {
        let issued = ca.issue(name, Validity::from_now(1)).unwrap();
        PeerTls::from_pem(
            name,
            (issued.cert_pem.as_bytes(), Path::new("c")),
            (issued.key_pem.as_bytes(), Path::new("k")),
            (ca.cert_pem().as_bytes(), Path::new("ca")),
        )
        .unwrap()
    }

    #[test]
    fn a_tls_link_greets_like_a_plaintext_one() {
        let ca = HerdCa::new("test CA", Validity::from_now(1)).unwrap();
        let (riley, jaquez) = (tls(&ca, "Riley"), tls(&ca, "Jaquez"));
        let mut poll = Poll::new().unwrap();
        let (d, a) = pair(&poll);
        let mut out = PeerTransport::dialled(d, riley.dial("Jaquez").unwrap());
        let mut inc = PeerTransport::accepted(a, jaquez.accept().unwrap());
        out.write(b"HELLO Riley\n");
        out.flush().unwrap();
        let (mut heard, mut answer) = (Vec::new(), Vec::new());
        let mut welcomed = false;
        run_until(&mut poll, || {
            assert!(drain(&mut inc, &mut heard).is_none());
            if heard == b"HELLO Riley\n" && !welcomed {
                // What the loop does after HELLO, over TLS.
                check_claimed_name(inc.peer_certificates(), "Riley").unwrap();
                inc.write(b"WELCOME Jaquez\n");
                welcomed = true;
            }
            inc.flush().unwrap();
            assert!(drain(&mut out, &mut answer).is_none());
            out.flush().unwrap();
            answer == b"WELCOME Jaquez\n"
        });
        assert!(out.is_tls() && inc.is_tls());
        assert!(
            out.describe().starts_with("TLSv1_3 TLS13_"),
            "{}",
            out.describe()
        );
        assert!(out.take_handshake_done() && inc.take_handshake_done());
        assert!(!out.take_handshake_done());
        // A clean close reads as a plaintext EOF does.
        out.close();
        let mut buf = [0u8; 16];
        run_until(&mut poll, || match inc.read(&mut buf) {
            Ok(0) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            other => panic!("{other:?}"),
        });
    }

    #[test]
    fn a_plaintext_port_turns_a_tls_dialer_away_in_words() {
        let ca = HerdCa::new("test CA", Validity::from_now(1)).unwrap();
        let riley = tls(&ca, "Riley");
        let mut poll = Poll::new().unwrap();
        let (d, a) = pair(&poll);
        let mut out = PeerTransport::dialled(d, riley.dial("Jaquez").unwrap());
        let mut inc = PeerTransport::plain(Transport::new(a));
        out.write(b"HELLO Riley\n");
        out.flush().unwrap();
        let mut refused = None;
        run_until(&mut poll, || {
            refused = drain(&mut inc, &mut Vec::new());
            refused.is_some()
        });
        let refused = refused.unwrap().to_string();
        assert!(refused.contains("the other side speaks TLS"), "{refused}");
        let mut failure = None;
        run_until(&mut poll, || {
            failure = drain(&mut out, &mut Vec::new());
            let _ = out.flush();
            failure.is_some()
        });
        let failure = failure.unwrap().to_string();
        assert!(
            failure.contains("speaks plaintext") && failure.contains("no --peer-cert"),
            "{failure}"
        );
    }

    #[test]
    fn a_tls_port_turns_a_plaintext_dialer_away_in_words() {
        let ca = HerdCa::new("test CA", Validity::from_now(1)).unwrap();
        let jaquez = tls(&ca, "Jaquez");
        let mut poll = Poll::new().unwrap();
        let (mut d, a) = pair(&poll);
        let mut inc = PeerTransport::accepted(a, jaquez.accept().unwrap());
        d.write_all(b"HELLO Riley\n").unwrap();
        let mut failure = None;
        run_until(&mut poll, || {
            failure = drain(&mut inc, &mut Vec::new());
            failure.is_some()
        });
        let failure = failure.unwrap().to_string();
        assert!(failure.contains("(it sent \"HELLO Riley\")"), "{failure}");
        let mut answer = Vec::new();
        run_until(&mut poll, || {
            let mut buf = [0u8; 128];
            if let Ok(n) = d.read(&mut buf) {
                answer.extend_from_slice(&buf[..n]);
            }
            answer.ends_with(b"\n")
        });
        assert_eq!(answer, REFUSE_PLAINTEXT);
    }

    #[test]
    fn plaintext_links_read_as_before() {
        let mut poll = Poll::new().unwrap();
        let (d, a) = pair(&poll);
        let mut out = PeerTransport::plain(Transport::new(d));
        let mut inc = PeerTransport::plain(Transport::new(a));
        out.write(b"HELLO Riley\n");
        let mut heard = Vec::new();
        run_until(&mut poll, || {
            out.flush().unwrap();
            assert!(drain(&mut inc, &mut heard).is_none());
            heard == b"HELLO Riley\n"
        });
        assert!(!inc.is_tls() && inc.peer_certificates().is_none());
        assert_eq!(inc.describe(), "plaintext");
        assert!(!inc.take_handshake_done());
    }
}

/// What TLS costs a peer link, measured without the loop: a full mutual
/// handshake, and the encryption and decryption of AT lines, in memory and
/// over a loopback pair. `cargo test --release --lib tls::link::cost --
/// --ignored --nocapture`; the figures are in docs/reliability.md.
#[cfg(test)]
mod cost {
    use super::*;
    use crate::tls::certs::{HerdCa, Validity};
    use crate::tls::peer::PeerTls;
    use mio::{Events, Interest, Poll, Token};
    use std::io::{Read, Write};
    use std::path::Path;
    use std::time::{Duration, Instant};

    const AT: &[u8] =
        b"AT Riley +0.000311000 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

    fn tls(ca: &HerdCa, name: &str) -> PeerTls {
        let issued = ca.issue(name, Validity::from_now(1)).unwrap();
        PeerTls::from_pem(
            name,
            (issued.cert_pem.as_bytes(), Path::new("c")),
            (issued.key_pem.as_bytes(), Path::new("k")),
            (ca.cert_pem().as_bytes(), Path::new("ca")),
        )
        .unwrap()
    }

    /// Moves records from one side to the other, in memory, and reads the
    /// plaintext they carried; returns (bytes on the wire, plaintext bytes).
    fn transfer(from: &mut Connection, to: &mut Connection) -> (usize, usize) {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        let mut plain = 0;
        let mut sink = [0u8; 16 * 1024];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets().unwrap();
            while let Ok(n) = to.reader().read(&mut sink) {
                if n == 0 {
                    break;
                }
                plain += n;
            }
        }
        (wire.len(), plain)
    }

    fn linked(riley: &PeerTls, jaquez: &PeerTls) -> (Connection, Connection) {
        let mut c = Connection::from(riley.dial("Jaquez").unwrap());
        let mut s = Connection::from(jaquez.accept().unwrap());
        while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
            transfer(&mut c, &mut s);
            transfer(&mut s, &mut c);
        }
        (c, s)
    }

    fn per(d: Duration, n: usize) -> f64 {
        d.as_secs_f64() * 1e6 / n as f64
    }

    #[test]
    #[ignore = "a measurement; run in release with --ignored --nocapture"]
    fn cost() {
        let ca = HerdCa::new("bench CA", Validity::from_now(1)).unwrap();
        let (riley, jaquez) = (tls(&ca, "Riley"), tls(&ca, "Jaquez"));

        let n = 300;
        let t = Instant::now();
        for _ in 0..n {
            linked(&riley, &jaquez);
        }
        println!(
            "mutual TLS 1.3 handshake, ECDSA P-256, both sides' CPU: {:.0} us",
            per(t.elapsed(), n)
        );

        let (mut c, mut s) = linked(&riley, &jaquez);
        for batch in [1usize, 16, 256] {
            let updates = 200_000;
            // As the transport does: the lines of one turn, one write.
            let lines = AT.repeat(batch);
            let mut wire = 0;
            let t = Instant::now();
            for _ in 0..updates / batch {
                c.writer().write_all(&lines).unwrap();
                let (w, plain) = transfer(&mut c, &mut s);
                assert_eq!(plain, lines.len());
                wire += w;
            }
            println!(
                "{batch:>3} AT lines per flush: {:.3} us per update to encrypt and decrypt, {:.1} bytes on the wire for {} of text",
                per(t.elapsed(), updates),
                wire as f64 / updates as f64,
                AT.len()
            );
        }

        // Relink over loopback: connect to handshake done at both ends, and
        // to the acceptor reading HELLO (what the loop waits for).
        let mut poll = Poll::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut events = Events::with_capacity(16);
        let (mut plain_total, mut tls_total) = (Duration::ZERO, Duration::ZERO);
        let rounds = 200;
        for round in 0..2 * rounds {
            let use_tls = round % 2 == 1;
            let t = Instant::now();
            let mut dialled = mio::net::TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            accepted.set_nonblocking(true).unwrap();
            let mut accepted = mio::net::TcpStream::from_std(accepted);
            let both = Interest::READABLE | Interest::WRITABLE;
            poll.registry()
                .register(&mut dialled, Token(1), both)
                .unwrap();
            poll.registry()
                .register(&mut accepted, Token(2), both)
                .unwrap();
            let (mut out, mut inc) = if use_tls {
                (
                    PeerTransport::dialled(dialled, riley.dial("Jaquez").unwrap()),
                    PeerTransport::accepted(accepted, jaquez.accept().unwrap()),
                )
            } else {
                (
                    PeerTransport::plain(Transport::new(dialled)),
                    PeerTransport::plain(Transport::new(accepted)),
                )
            };
            out.write(b"HELLO Riley\n");
            let mut heard = Vec::new();
            let mut buf = [0u8; 4096];
            while heard.len() < 12 {
                out.flush().unwrap();
                let _ = out.read(&mut buf);
                match inc.read(&mut buf) {
                    Ok(n) => heard.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
                inc.flush().unwrap();
                if heard.len() < 12 {
                    poll.poll(&mut events, Some(Duration::from_millis(50)))
                        .unwrap();
                }
            }
            let took = t.elapsed();
            if use_tls {
                tls_total += took;
            } else {
                plain_total += took;
            }
            let _ = poll.registry().deregister(out.stream_mut());
            let _ = poll.registry().deregister(inc.stream_mut());
        }
        println!(
            "loopback, connect to HELLO read by the acceptor: plaintext {:.0} us, TLS {:.0} us",
            per(plain_total, rounds),
            per(tls_total, rounds)
        );
    }
}
