//! The TLS transport: asyncio's `SSLProtocol` transport, for one TCP stream
//! with TLS on it, on either side. It serves the Places client (a rustls
//! `ClientConnection`), `places-offline` (a `ServerConnection`) and peer links
//! both ways (either, or `rustls::Connection` to hold both in one type).
//!
//! All of rustls's plumbing stays in this file (as sozu keeps it in one):
//! ciphertext in (`read_tls` → `process_new_packets` → read plaintext) and
//! plaintext out (our own queue → `writer()` → `write_tls`). rustls buffers only
//! a bounded amount of plaintext, so we keep our own queue and feed it as
//! records leave. The protocols above see only "bytes arrived" ([`TlsTransport::receive`],
//! or [`TlsTransport::read`] shaped like a socket's), "the handshake is done"
//! ([`TlsTransport::take_handshake_done`]) and "all flushed" ([`Flushed`]).
//!
//! The method names follow the plaintext [`crate::transport::Transport`]
//! (`write`, `out_buf`, `backlog`, `flush`, `read`, `stream_mut`), so code that
//! drives one can drive the other. Timeouts are the caller's: a handshake that
//! stalls only leaves its connection waiting, since nothing here blocks, and
//! the timer that bounds a dial or a greeting bounds the handshake inside it.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, CommonState, Connection, IoState, ServerConnection};

use crate::log::Escaped;
pub use crate::transport::Flushed;

/// Above this, an emptied output queue gives its memory back.
const KEEP_CAPACITY: usize = 64 * 1024;
/// How many of the first bytes received are kept to tell a plaintext peer
/// from a broken TLS one when the handshake fails.
const SNIFF: usize = 64;

/// A rustls connection, client or server: the calls the transport makes.
/// Implemented for `ClientConnection`, `ServerConnection` and `Connection`.
pub trait TlsConnection {
    /// rustls's `read_tls`.
    fn read_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize>;
    /// rustls's `write_tls`.
    fn write_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize>;
    /// rustls's `process_new_packets`.
    fn process_new_packets(&mut self) -> Result<IoState, rustls::Error>;
    /// rustls's `reader`.
    fn reader(&mut self) -> rustls::Reader<'_>;
    /// rustls's `writer`.
    fn writer(&mut self) -> rustls::Writer<'_>;
    /// The state both sides share (handshaking, versions, certificates).
    fn common(&self) -> &CommonState;
    /// The same, to queue close_notify.
    fn common_mut(&mut self) -> &mut CommonState;
}

// `$inner` reaches the value whose inherent methods these are: the
// `ConnectionCommon` under a client or server connection, or the
// `Connection` enum itself (which has them all).
macro_rules! tls_connection {
    ($t:ty, $inner:tt) => {
        impl TlsConnection for $t {
            fn read_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize> {
                tls_connection!(@ $inner self).read_tls(rd)
            }
            fn write_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize> {
                tls_connection!(@ $inner self).write_tls(wr)
            }
            fn process_new_packets(&mut self) -> Result<IoState, rustls::Error> {
                tls_connection!(@ $inner self).process_new_packets()
            }
            fn reader(&mut self) -> rustls::Reader<'_> {
                tls_connection!(@ $inner self).reader()
            }
            fn writer(&mut self) -> rustls::Writer<'_> {
                tls_connection!(@ $inner self).writer()
            }
            fn common(&self) -> &CommonState {
                self
            }
            fn common_mut(&mut self) -> &mut CommonState {
                self
            }
        }
    };
    (@ deref $s:ident) => { (**$s) };
    (@ itself $s:ident) => { (*$s) };
}

tls_connection!(ClientConnection, deref);
tls_connection!(ServerConnection, deref);
tls_connection!(Connection, itself);

/// How the other side ended its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// close_notify: everything it sent has arrived.
    Clean,
    /// TCP end of file without close_notify: what arrived may be cut short
    /// (by the other side crashing, or by someone on the path), so a partial
    /// last line must not be used.
    Abrupt,
}

/// What one [`TlsTransport::receive`] brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Plaintext bytes appended.
    pub bytes: usize,
    /// The other side has ended its stream (nothing more will come).
    pub closed: Option<Closed>,
}

/// Why a TLS connection failed.
#[derive(Debug)]
pub enum TlsError {
    /// The socket failed while reading.
    Read(io::Error),
    /// The socket failed while writing.
    Write(io::Error),
    /// TLS itself failed (a bad certificate, a bad record, an alert from the
    /// other side, or plaintext where TLS was expected); the message says which.
    Tls(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            TlsError::Read(e) => write!(f, "read error: {e}"),
            TlsError::Write(e) => write!(f, "write error: {e}"),
            TlsError::Tls(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        match e {
            TlsError::Read(e) | TlsError::Write(e) => e,
            TlsError::Tls(why) => io::Error::new(io::ErrorKind::InvalidData, why),
        }
    }
}

/// What a [`TlsTransport::pump`] brought (the Places client's view).
#[derive(Debug, Default)]
pub struct Pumped {
    /// Decrypted bytes from the server.
    pub data: Vec<u8>,
    /// The server closed (close_notify or TCP end of file).
    pub eof: bool,
}

/// Where our side of the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Writing normally.
    Open,
    /// `close` was called: close_notify goes after the queued plaintext.
    Requested,
    /// close_notify is queued in rustls; FIN follows once it is written.
    Notified,
    /// Our write half is shut.
    Shut,
}

/// A TCP stream with TLS on it, and our own queue of plaintext to send.
pub struct TlsTransport<C> {
    stream: TcpStream,
    tls: C,
    /// Plaintext to send; `out[..sent]` is already in rustls.
    out: Vec<u8>,
    sent: usize,
    /// The first bytes received, kept until the handshake is done.
    sniff: Vec<u8>,
    /// The handshake completed and nobody has been told yet.
    handshake_news: bool,
    handshake_done: bool,
    closed: Option<Closed>,
    closing: Closing,
    /// Decrypted bytes that [`read`](Self::read) has not handed out yet (one
    /// record can hold more than the caller's buffer).
    inbox: Vec<u8>,
    /// Sent in plaintext, instead of an alert, to a peer that speaks plaintext.
    plaintext_refusal: Option<&'static [u8]>,
}

/// Reads the socket for rustls, keeping a copy of the first bytes.
struct Sniffing<'a> {
    stream: &'a mut TcpStream,
    sniff: Option<&'a mut Vec<u8>>,
}

impl Read for Sniffing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        if let Some(sniff) = self.sniff.as_deref_mut() {
            let room = SNIFF.saturating_sub(sniff.len()).min(n);
            sniff.extend_from_slice(&buf[..room]);
        }
        Ok(n)
    }
}

impl<C: TlsConnection> TlsTransport<C> {
    /// Wraps a connected (or connecting) stream; the handshake starts with
    /// the first [`flush`](Self::flush) or [`receive`](Self::receive).
    pub fn new(stream: TcpStream, tls: C) -> Self {
        TlsTransport {
            stream,
            tls,
            out: Vec::new(),
            sent: 0,
            sniff: Vec::new(),
            handshake_news: false,
            handshake_done: false,
            closed: None,
            closing: Closing::Open,
            inbox: Vec::new(),
            plaintext_refusal: None,
        }
    }

    /// What to answer, in plaintext, a peer found speaking plaintext during
    /// the handshake (a line its own protocol understands, such as a peer
    /// link's `REFUSED ...`), instead of a TLS alert it could not read.
    pub fn set_plaintext_refusal(&mut self, line: &'static [u8]) {
        self.plaintext_refusal = Some(line);
    }

    /// The socket, for registration and connect checks.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket, for registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Queues plaintext (asyncio's `transport.write`). Bytes queued during
    /// the handshake leave once it is done.
    pub fn write(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    /// The plaintext queue itself, to format a message straight into it.
    pub fn out_buf(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Plaintext queued and not yet taken by rustls (asyncio's
    /// `get_write_buffer_size`; rustls itself holds a bounded amount more).
    pub fn backlog(&self) -> usize {
        self.out.len() - self.sent
    }

    /// True until the handshake is complete.
    pub fn is_handshaking(&self) -> bool {
        self.tls.common().is_handshaking()
    }

    /// True once, after the handshake has completed: the moment to log it
    /// and, for a peer link, to check who is on the other end.
    pub fn take_handshake_done(&mut self) -> bool {
        std::mem::take(&mut self.handshake_news)
    }

    /// The negotiated protocol version, for the log.
    pub fn version(&self) -> String {
        self.tls
            .common()
            .protocol_version()
            .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}"))
    }

    /// The negotiated cipher suite, for the log.
    pub fn cipher_suite(&self) -> String {
        self.tls
            .common()
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()))
    }

    /// The other side's certificate chain, its own first, once the handshake
    /// has got that far (see [`super::peer::check_claimed_name`]).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls.common().peer_certificates()
    }

    /// True when every queued byte is on the wire.
    pub fn all_sent(&self) -> bool {
        self.sent == self.out.len() && !self.tls.common().wants_write()
    }

    /// How the other side ended its stream, if it has.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
    }

    /// True once close_notify and FIN are out after [`close`](Self::close).
    pub fn write_closed(&self) -> bool {
        self.closing == Closing::Shut
    }

    /// Reads and decrypts until the socket has nothing more, the other side
    /// has closed, or `into` holds `limit` bytes (then stop reading and let TCP
    /// push back; call again once `into` has room, since the readiness edge
    /// will not come again). Whatever rustls wants to send in answer (the
    /// handshake's next flight, our queued plaintext once it is done) goes out
    /// on the way.
    pub fn receive(&mut self, into: &mut Vec<u8>, limit: usize) -> Result<Received, TlsError> {
        let mut got = Received::default();
        while self.closed.is_none() && into.len() < limit {
            let sniffing = !self.handshake_done && self.sniff.len() < SNIFF;
            let mut source = Sniffing {
                stream: &mut self.stream,
                sniff: sniffing.then_some(&mut self.sniff),
            };
            match self.tls.read_tls(&mut source) {
                Ok(0) => {
                    self.closed = Some(Closed::Abrupt);
                    // A connection that closes before saying anything (a port
                    // probe) is only closed; one that stops halfway failed.
                    if self.is_handshaking() && !self.sniff.is_empty() {
                        return Err(self.end_of_file_during_handshake());
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TlsError::Read(e)),
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => return Err(self.failed(&e)),
            };
            if !self.handshake_done && !self.is_handshaking() {
                self.handshake_done = true;
                self.handshake_news = true;
                self.sniff = Vec::new();
            }
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = into.len();
                into.resize(start + n, 0);
                if let Err(e) = self.tls.reader().read_exact(&mut into[start..]) {
                    into.truncate(start);
                    return Err(TlsError::Tls(format!("TLS: {e}")));
                }
                got.bytes += n;
            }
            if state.peer_has_closed() {
                self.closed = Some(Closed::Clean);
            }
            self.send().map_err(TlsError::Write)?;
        }
        got.closed = self.closed;
        Ok(got)
    }

    /// A socket-shaped read, as [`crate::transport::Transport::read`]: the
    /// plaintext that has arrived, `Ok(0)` after close_notify,
    /// `UnexpectedEof` after a TCP end of file without it, `WouldBlock` when
    /// nothing is there, and `InvalidData` when TLS failed.
    ///
    /// It fills `buf` whenever that much has arrived, from what is left over
    /// from the last read and from the socket: a caller that reads again only
    /// after a full buffer (an edge-triggered loop) must not be handed a short
    /// leftover while more waits in the kernel, where no new edge announces it.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbox.len() < buf.len() && self.closed.is_none() {
            let mut inbox = std::mem::take(&mut self.inbox);
            let got = self.receive(&mut inbox, buf.len());
            self.inbox = inbox;
            got?;
        }
        if !self.inbox.is_empty() {
            let n = self.inbox.len().min(buf.len());
            buf[..n].copy_from_slice(&self.inbox[..n]);
            self.inbox.drain(..n);
            return Ok(n);
        }
        match self.closed {
            Some(Closed::Clean) => Ok(0),
            Some(Closed::Abrupt) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed without close_notify",
            )),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Sends what can be sent without blocking: the handshake's records,
    /// our queue once the handshake is done, then (after `close`)
    /// close_notify and FIN.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        self.send()?;
        Ok(if self.all_sent() {
            Flushed::All
        } else {
            Flushed::Pending
        })
    }

    /// asyncio's `transport.close()` for TLS: stop taking plaintext, send
    /// what is queued, then close_notify, then FIN (the rest on the next
    /// [`flush`](Self::flush)s; [`write_closed`](Self::write_closed) says when).
    pub fn close(&mut self) {
        if self.closing == Closing::Open {
            self.closing = Closing::Requested;
        }
        // Best effort: a closing connection has nobody left to tell.
        let _ = self.send();
    }

    /// After our close: reads and drops what the other side still sends, so
    /// that our last records are not destroyed by a reset. True at its end of
    /// file (or a failure): nothing more will come.
    pub fn discard_input(&mut self) -> bool {
        let mut scratch = [0u8; 4096];
        loop {
            match self.stream.read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Moves bytes every way they can go without blocking: socket → rustls →
    /// plaintext in, and our queue → rustls → socket (the Places client's
    /// view of [`receive`](Self::receive) and [`flush`](Self::flush)).
    pub fn pump(&mut self, readable: bool) -> Result<Pumped, String> {
        let mut got = Pumped::default();
        if readable {
            let received = self
                .receive(&mut got.data, usize::MAX)
                .map_err(|e| e.to_string())?;
            got.eof = received.closed.is_some();
        }
        self.send().map_err(|e| format!("write error: {e}"))?;
        Ok(got)
    }

    fn send(&mut self) -> io::Result<()> {
        loop {
            let taking = matches!(self.closing, Closing::Open | Closing::Requested);
            if taking && self.sent < self.out.len() && !self.is_handshaking() {
                match self.tls.writer().write(&self.out[self.sent..]) {
                    Ok(n) => self.sent += n,
                    Err(e) => return Err(e),
                }
            }
            if self.sent == self.out.len() && self.closing == Closing::Requested {
                self.tls.common_mut().send_close_notify();
                self.closing = Closing::Notified;
            }
            if !self.tls.common().wants_write() {
                if self.closing == Closing::Notified {
                    // Already gone is fine: we were closing anyway.
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.closing = Closing::Shut;
                }
                self.compact();
                return Ok(());
            }
            match self.tls.write_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.compact();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops what rustls has taken once it is the larger part of the queue,
    /// so a slow reader costs no copying per write.
    fn compact(&mut self) {
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::new();
            }
        } else if self.sent > self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// The TLS error, with the alert rustls queued sent (best effort), and in
    /// words a person can act on when the other side spoke plaintext.
    fn failed(&mut self, e: &rustls::Error) -> TlsError {
        let hint = self
            .is_handshaking()
            .then(|| plaintext_hint(&self.sniff))
            .flatten();
        match (&hint, self.plaintext_refusal) {
            (Some(_), Some(line)) => {
                let _ = self.stream.write_all(line);
            }
            _ => {
                let _ = self.tls.write_tls(&mut self.stream);
            }
        }
        match hint {
            Some(text) => TlsError::Tls(format!(
                "the other side speaks plaintext, not TLS (it sent \"{text}\"): {e}"
            )),
            None => TlsError::Tls(format!("TLS: {e}")),
        }
    }

    fn end_of_file_during_handshake(&self) -> TlsError {
        match plaintext_hint(&self.sniff) {
            Some(text) => TlsError::Tls(format!(
                "the other side speaks plaintext, not TLS: it sent \"{text}\" and closed"
            )),
            None => TlsError::Tls("closed during the TLS handshake".to_string()),
        }
    }
}

/// The first line of `first_bytes` if they look like a plaintext protocol
/// (printable ASCII up to a newline) rather than a TLS record, escaped for
/// the log; `None` for anything that could be TLS.
pub fn plaintext_hint(first_bytes: &[u8]) -> Option<String> {
    let first = *first_bytes.first()?;
    // TLS records start with a content type: 20 to 24.
    if (20..=24).contains(&first) {
        return None;
    }
    let line = first_bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let printable = line.iter().all(|b| (0x20..0x7f).contains(b));
    (printable && !line.is_empty()).then(|| Escaped(line).to_string())
}

/// True when `first_bytes` begin a TLS handshake record (a ClientHello): what
/// a plaintext server sees when a neighbour that has peer TLS dials it.
pub fn looks_like_tls(first_bytes: &[u8]) -> bool {
    matches!(first_bytes, [22, 3, ..] | [22])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{HerdCa, Validity};
    use crate::tls::peer::{PeerTls, REFUSE_PLAINTEXT, REFUSE_TLS};
    use mio::{Events, Interest, Poll, Token};
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn herd() -> (PeerTls, PeerTls) {
        let ca = HerdCa::new("test CA", Validity::from_now(1)).unwrap();
        let tls = |name: &str| {
            let issued = ca.issue(name, Validity::from_now(1)).unwrap();
            PeerTls::from_pem(
                name,
                (issued.cert_pem.as_bytes(), Path::new("c")),
                (issued.key_pem.as_bytes(), Path::new("k")),
                (ca.cert_pem().as_bytes(), Path::new("ca")),
            )
            .unwrap()
        };
        (tls("Riley"), tls("Jaquez"))
    }

    /// A connected pair of non-blocking loopback sockets, registered with `poll`.
    fn socket_pair(poll: &Poll) -> (TcpStream, TcpStream) {
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

    /// Calls `step` after every readiness event until it says done; the
    /// deadline only stops a broken test from hanging.
    fn run_until(poll: &mut Poll, mut step: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut events = Events::with_capacity(16);
        while !step() {
            assert!(Instant::now() < deadline, "no progress before the deadline");
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
        }
    }

    #[test]
    fn a_peer_link_carries_bulk_both_ways_then_closes_cleanly() {
        let (riley, jaquez) = herd();
        let mut poll = Poll::new().unwrap();
        let (d, a) = socket_pair(&poll);
        let mut client = TlsTransport::new(d, Connection::from(riley.dial("Jaquez").unwrap()));
        let mut server = TlsTransport::new(a, Connection::from(jaquez.accept().unwrap()));
        // Queued before the handshake: it leaves once the handshake is done.
        client.write(b"HELLO Riley\n");
        // Far more than rustls buffers, so our queue and backpressure work.
        let bulk: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        client.write(&bulk);
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        let (mut client_done, mut server_done) = (0, 0);
        let want = bulk.len() + 12;
        run_until(&mut poll, || {
            client.receive(&mut at_client, usize::MAX).unwrap();
            client.flush().unwrap();
            // A small limit: the reader stops short, and must come back for
            // more (the edge will not come again).
            loop {
                let limit = at_server.len() + 4096;
                if server.receive(&mut at_server, limit).unwrap().bytes == 0 {
                    break;
                }
            }
            server.flush().unwrap();
            client_done += usize::from(client.take_handshake_done());
            server_done += usize::from(server.take_handshake_done());
            at_server.len() >= want && client.all_sent()
        });
        assert_eq!(&at_server[..12], b"HELLO Riley\n");
        assert!(at_server[12..] == bulk[..], "the bulk arrived changed");
        assert_eq!((client_done, server_done), (1, 1));
        assert_eq!(server.version(), "TLSv1_3");
        assert!(crate::tls::peer::check_claimed_name(server.peer_certificates(), "Riley").is_ok());
        assert!(client.backlog() == 0 && client.out.capacity() <= KEEP_CAPACITY);

        server.write(b"WELCOME Jaquez\n");
        server.close();
        run_until(&mut poll, || {
            server.flush().unwrap();
            client.receive(&mut at_client, usize::MAX).unwrap();
            client.closed().is_some() && server.write_closed()
        });
        assert_eq!(at_client, b"WELCOME Jaquez\n");
        assert_eq!(client.closed(), Some(Closed::Clean));
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_cut_stream_is_told_apart_from_a_closed_one() {
        let (riley, jaquez) = herd();
        let mut poll = Poll::new().unwrap();
        let (d, a) = socket_pair(&poll);
        let mut client = TlsTransport::new(d, riley.dial("Jaquez").unwrap());
        let mut server = TlsTransport::new(a, jaquez.accept().unwrap());
        client.write(b"AT Riley +34.068930-118.445127 1621464827.959498503\nAT Riley +34");
        let mut got = Vec::new();
        run_until(&mut poll, || {
            // The dialer must read too: the handshake's second flight.
            client.receive(&mut Vec::new(), usize::MAX).unwrap();
            client.flush().unwrap();
            let mut buf = [0u8; 7];
            // The socket-shaped read, a little at a time.
            loop {
                match server.read(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let _ = server.flush();
            got.len() == 64 && client.all_sent()
        });
        assert!(got.ends_with(b"\nAT Riley +34"));
        // FIN without close_notify, as a crash or someone on the path would.
        client.stream().shutdown(Shutdown::Write).unwrap();
        let mut buf = [0u8; 64];
        let mut last = None;
        run_until(&mut poll, || match server.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            other => {
                last = Some(other.map_err(|e| e.kind()));
                true
            }
        });
        assert_eq!(last, Some(Err(io::ErrorKind::UnexpectedEof)));
        assert_eq!(server.closed(), Some(Closed::Abrupt));
    }

    #[test]
    fn a_read_fills_the_buffer_while_more_waits_in_the_kernel() {
        let (riley, jaquez) = herd();
        let mut poll = Poll::new().unwrap();
        let (d, a) = socket_pair(&poll);
        let mut client = TlsTransport::new(d, riley.dial("Jaquez").unwrap());
        let mut server = TlsTransport::new(a, jaquez.accept().unwrap());
        run_until(&mut poll, || {
            client.receive(&mut Vec::new(), usize::MAX).unwrap();
            client.flush().unwrap();
            server.receive(&mut Vec::new(), usize::MAX).unwrap();
            server.flush().unwrap();
            !client.is_handshaking() && !server.is_handshaking()
        });
        let bulk = vec![b'x'; 100_000];
        client.write(&bulk);
        let mut peeked = vec![0u8; 256 * 1024];
        run_until(&mut poll, || {
            client.flush().unwrap();
            client.all_sent() && server.stream().peek(&mut peeked).unwrap_or(0) > bulk.len()
        });
        // Records are 16 KiB, so the first read takes more than it hands out;
        // the second must still fill the buffer, not return the short rest:
        // an edge-triggered caller reads again only after a full buffer.
        let mut buf = vec![0u8; 30_000];
        assert_eq!(server.read(&mut buf).unwrap(), buf.len());
        assert_eq!(server.read(&mut buf).unwrap(), buf.len());
    }

    #[test]
    fn plaintext_to_a_tls_port_is_refused_in_words_both_sides_read() {
        let (_, jaquez) = herd();
        let mut poll = Poll::new().unwrap();
        let (mut plain, a) = socket_pair(&poll);
        let mut server = TlsTransport::new(a, jaquez.accept().unwrap());
        server.set_plaintext_refusal(REFUSE_PLAINTEXT);
        plain.write_all(b"HELLO Riley\n").unwrap();
        let mut failure = None;
        run_until(&mut poll, || {
            match server.receive(&mut Vec::new(), usize::MAX) {
                Ok(_) => false,
                Err(e) => {
                    failure = Some(e.to_string());
                    true
                }
            }
        });
        let failure = failure.unwrap();
        assert!(
            failure
                .starts_with("the other side speaks plaintext, not TLS (it sent \"HELLO Riley\")"),
            "{failure}"
        );
        let mut answer = Vec::new();
        run_until(&mut poll, || {
            let mut buf = [0u8; 256];
            if let Ok(n) = plain.read(&mut buf) {
                answer.extend_from_slice(&buf[..n]);
            }
            answer.ends_with(b"\n")
        });
        assert_eq!(answer, REFUSE_PLAINTEXT);
    }

    #[test]
    fn tls_to_a_plaintext_port_is_refused_in_words_both_sides_read() {
        let (riley, _) = herd();
        let mut poll = Poll::new().unwrap();
        let (d, mut plain) = socket_pair(&poll);
        let mut client = TlsTransport::new(d, riley.dial("Jaquez").unwrap());
        client.write(b"HELLO Riley\n");
        let mut hello = Vec::new();
        run_until(&mut poll, || {
            client.flush().unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(n) = plain.read(&mut buf) {
                hello.extend_from_slice(&buf[..n]);
            }
            hello.len() >= 2
        });
        // What a plaintext peer port does with a ClientHello.
        assert!(looks_like_tls(&hello));
        assert!(plaintext_hint(&hello).is_none());
        plain.write_all(REFUSE_TLS).unwrap();
        plain.shutdown(Shutdown::Both).unwrap();
        let mut failure = None;
        run_until(&mut poll, || {
            match client.receive(&mut Vec::new(), usize::MAX) {
                Ok(_) => false,
                Err(e) => {
                    failure = Some(e.to_string());
                    true
                }
            }
        });
        let failure = failure.unwrap();
        assert!(
            failure.contains("the other side speaks plaintext, not TLS")
                && failure.contains("REFUSED this peer port speaks plaintext"),
            "{failure}"
        );
    }

    #[test]
    fn plaintext_is_told_from_tls_by_its_first_bytes() {
        assert_eq!(
            plaintext_hint(b"HELLO Riley\nAT x"),
            Some("HELLO Riley".into())
        );
        assert_eq!(plaintext_hint(b"REFUSED no\r\n"), Some("REFUSED no".into()));
        assert_eq!(
            plaintext_hint(b"GET / HTTP/1.1"),
            Some("GET / HTTP/1.1".into())
        );
        assert_eq!(plaintext_hint(&[22, 3, 1, 0, 200]), None);
        assert_eq!(plaintext_hint(&[21, 3, 3, 0, 2]), None);
        assert_eq!(plaintext_hint(b"\x00\x01binary"), None);
        assert_eq!(plaintext_hint(b""), None);
        assert_eq!(plaintext_hint(b"\n"), None);
        assert!(looks_like_tls(&[22, 3, 1]));
        assert!(looks_like_tls(&[22]));
        assert!(!looks_like_tls(b"HELLO"));
        assert!(!looks_like_tls(b""));
    }
}
