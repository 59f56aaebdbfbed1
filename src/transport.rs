//! Transports: asyncio's `Transport`, for non-blocking TCP.
//!
//! [`Transport::write`] only queues bytes; the event loop calls
//! [`Transport::flush`] once the protocol has handled a whole read, so the
//! replies to many pipelined lines leave in one `write`. What the socket does
//! not take stays queued until the next writable event. asyncio's
//! `transport.write` tries the socket at once instead; batching is the one
//! difference, and it is what makes a pipelining client cheap.
//!
//! [`LineReader`] is the line splitter that sits between the transport and a
//! protocol's `data_received`: it hands over complete lines and keeps the
//! partial last one for the next read.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

/// Above this, an emptied output buffer gives its memory back, so a burst does
/// not leave an idle connection holding megabytes.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What a protocol may do with its transport: queue bytes and ask how many
/// are still unsent (asyncio's `transport.write` and
/// `get_write_buffer_size`). Protocols take `&mut dyn WriteTransport`, so they
/// never touch a socket: the loop passes a [`Transport`], unit tests a `Vec`.
pub trait WriteTransport {
    /// Queues bytes to send.
    fn write(&mut self, data: &[u8]);
    /// The output queue itself, to format a reply straight into it.
    fn out_buf(&mut self) -> &mut Vec<u8>;
    /// Bytes queued and not yet taken by the socket.
    fn get_write_buffer_size(&self) -> usize;
    /// asyncio's `get_extra_info('peercert')`, narrowed to the one question
    /// the peer protocol asks: may the other side speak as `name`? Over TLS,
    /// only if its certificate carries that name; a plaintext transport has
    /// no certificate and takes names on trust.
    fn check_peer_name(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }
}

/// What the loop does with a connection's transport, whatever is under it
/// (plaintext [`Transport`], or a peer link's plaintext-or-TLS
/// `PeerTransport`): one read path, one flush path, one close path.
pub trait StreamTransport: WriteTransport {
    /// A socket-shaped read: bytes, `Ok(0)` at a clean end, `WouldBlock`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends what the socket takes.
    fn flush(&mut self) -> io::Result<Flushed>;
    /// A last flush, then the end of our stream (FIN; over TLS close_notify
    /// first), best effort.
    fn close(&mut self);
    /// The socket, for registration.
    fn stream_mut(&mut self) -> &mut TcpStream;
}

impl WriteTransport for Vec<u8> {
    fn write(&mut self, data: &[u8]) {
        self.extend_from_slice(data);
    }

    fn out_buf(&mut self) -> &mut Vec<u8> {
        self
    }

    fn get_write_buffer_size(&self) -> usize {
        self.len()
    }
}

/// A TCP stream with an output queue.
#[derive(Debug)]
pub struct Transport {
    stream: TcpStream,
    out: Vec<u8>,
    /// How much of `out` the socket has taken.
    sent: usize,
    /// `close` was called: nothing more is read, and the write half is shut
    /// once the queue is out.
    closing: bool,
    /// An emptied queue keeps at most this much memory.
    keep: usize,
}

/// What [`Transport::flush`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is in the kernel.
    All,
    /// The socket is full; the rest goes on the next writable event.
    Pending,
}

impl Transport {
    /// Wraps a connected (or connecting) stream.
    pub fn new(stream: TcpStream) -> Self {
        Transport {
            stream,
            out: Vec::new(),
            sent: 0,
            closing: false,
            keep: KEEP_CAPACITY,
        }
    }

    /// Lets an emptied queue keep up to `bytes` of memory: for a busy peer
    /// link, whose queue would otherwise be given back and grown again every
    /// turn (a few links, so the memory is bounded).
    pub fn keep_capacity(mut self, bytes: usize) -> Self {
        self.keep = bytes;
        self
    }

    /// The socket, for registration and connect checks.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket, for registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Gives the stream back (to wrap it in another transport, such as TLS).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Queues bytes to send (asyncio's `transport.write`).
    pub fn write(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    /// The output queue itself, to format a reply straight into it.
    pub fn out_buf(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Bytes queued and not yet taken by the socket
    /// (asyncio's `get_write_buffer_size`).
    pub fn backlog(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes until the queue is empty or the socket is full.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Keep the queue compact: drop what was sent once it is
                    // the larger part, so a slow reader costs no copying per write.
                    if self.sent > self.out.len() / 2 {
                        self.out.drain(..self.sent);
                        self.sent = 0;
                    }
                    return Ok(Flushed::Pending);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > self.keep {
            self.out = Vec::new();
        }
        Ok(Flushed::All)
    }

    /// Reads what the socket has, retrying on EINTR.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Sends FIN after what was flushed (the writing half of `close`).
    pub fn shutdown_write(&self) {
        // The peer may be gone already; there is nothing left to tell it.
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// asyncio's `transport.close()`: one last flush of what is queued, then
    /// FIN. What the socket does not take now is dropped: the loop frees the
    /// slot at the end of the turn, and only calls this once nothing more is
    /// owed or the connection has broken a limit.
    pub fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            let _ = self.flush();
            self.shutdown_write();
        }
    }

    /// asyncio's `transport.is_closing()`.
    pub fn is_closing(&self) -> bool {
        self.closing
    }
}

/// A line longer than the limit arrived or is arriving.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

/// Splits a byte stream into `\n`-terminated lines.
#[derive(Debug, Default)]
pub struct LineReader {
    partial: Vec<u8>,
}

impl LineReader {
    /// Hands each complete line in `data` (without its `\n`) to `on_line`, and
    /// keeps the unterminated rest. Lines longer than `max` stop it with an error.
    pub fn feed(
        &mut self,
        data: &[u8],
        max: usize,
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        let mut rest = data;
        if !self.partial.is_empty() {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.partial.extend_from_slice(rest);
                return self.check(max);
            };
            self.partial.extend_from_slice(&rest[..nl]);
            self.check(max)?;
            on_line(&self.partial);
            self.partial.clear();
            rest = &rest[nl + 1..];
        }
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if nl > max {
                return Err(LineTooLong);
            }
            on_line(&rest[..nl]);
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.is_empty() && self.partial.capacity() > KEEP_CAPACITY {
            self.partial = Vec::new();
        }
        self.check(max)
    }

    /// Bytes of an unfinished line held for the next read.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// At end of file: the last line, if it had no `\n`, is still a line.
    pub fn finish(&mut self, mut on_line: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            on_line(&self.partial);
            self.partial = Vec::new();
        }
    }

    fn check(&self, max: usize) -> Result<(), LineTooLong> {
        if self.partial.len() > max {
            Err(LineTooLong)
        } else {
            Ok(())
        }
    }
}

impl WriteTransport for Transport {
    fn write(&mut self, data: &[u8]) {
        Transport::write(self, data);
    }

    fn out_buf(&mut self) -> &mut Vec<u8> {
        Transport::out_buf(self)
    }

    fn get_write_buffer_size(&self) -> usize {
        self.backlog()
    }
}

impl StreamTransport for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Transport::read(self, buf)
    }

    fn flush(&mut self) -> io::Result<Flushed> {
        Transport::flush(self)
    }

    fn close(&mut self) {
        Transport::close(self);
    }

    fn stream_mut(&mut self) -> &mut TcpStream {
        Transport::stream_mut(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LineReader, data: &[u8]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        reader.feed(data, 8, |l| got.push(l.to_vec())).unwrap();
        got
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut r = LineReader::default();
        assert_eq!(lines(&mut r, b"ab"), Vec::<Vec<u8>>::new());
        assert_eq!(
            lines(&mut r, b"c\nde\n\nf"),
            vec![b"abc".to_vec(), b"de".to_vec(), vec![]]
        );
        let mut last = Vec::new();
        r.finish(|l| last.push(l.to_vec()));
        assert_eq!(last, vec![b"f".to_vec()]);
        r.finish(|_| panic!("nothing left"));
    }

    #[test]
    fn long_lines_are_refused_whole_or_in_parts() {
        let mut r = LineReader::default();
        assert_eq!(r.feed(b"123456789\n", 8, |_| {}), Err(LineTooLong));
        let mut r = LineReader::default();
        assert_eq!(r.feed(b"12345", 8, |_| {}), Ok(()));
        assert_eq!(r.feed(b"6789", 8, |_| {}), Err(LineTooLong));
        let mut r = LineReader::default();
        assert_eq!(r.feed(b"12345678\n", 8, |_| {}), Ok(()));
    }
}
