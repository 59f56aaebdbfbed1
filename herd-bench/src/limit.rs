//! The `limit` scenario's server: a bare `mio` line server in a thread of
//! the bench itself, with its own `Poll`, that answers every line with a
//! fixed AT-like reply of a real reply's length. It parses nothing, stores
//! nothing, logs nothing and floods nothing, so the iamat load against it
//! shows the ceiling that the load generator and loopback TCP on this
//! machine allow.
//!
//! Registration model: register read+write once (edges); read and write
//! until `WouldBlock`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::load::LOCATION;
use super::Error;

const LISTENER: Token = Token(usize::MAX);
/// The thread checks its stop flag at least this often.
const TICK: Duration = Duration::from_millis(50);
/// Whatever happens, the thread ends after this long.
const LIFETIME: Duration = Duration::from_secs(3600);
/// Replies owed to one client beyond this and it is dropped (it does not read).
const MAX_OWED: usize = 1 << 20;

/// The running server; dropping it stops the thread.
pub struct LimitServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LimitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A reply as long as the herd's answer to a bench IAMAT ("Riley" and
/// "Limit" have the same length), given the client ID the load uses.
pub fn fixed_reply(client_id_len: usize) -> Vec<u8> {
    let id = "x".repeat(client_id_len);
    format!("AT Limit +0.000012345 {id} {LOCATION} 1700000000.000000000\n").into_bytes()
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
}

/// Starts the server on 127.0.0.1 (a free port).
pub fn start(reply: Vec<u8>) -> Result<LimitServer, Error> {
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().map_err(|_| Error::new("addr"))?)?;
    let addr = listener.local_addr()?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("limit-server".into())
        .spawn(move || serve(poll, listener, reply, &flag))?;
    Ok(LimitServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

fn serve(mut poll: Poll, listener: TcpListener, reply: Vec<u8>, stop: &AtomicBool) {
    let mut conns: slab::Slab<Conn> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let end = Instant::now() + LIFETIME;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        match poll.poll(&mut events, Some(TICK)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                // Accept until WouldBlock: one edge may stand for many clients.
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let entry = conns.vacant_entry();
                    let token = Token(entry.key());
                    if poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(Conn {
                            stream,
                            out: Vec::new(),
                            written: 0,
                        });
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if !serve_one(c, &mut chunk, &reply) {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
}

/// Reads what came, queues one reply per `\n`, writes; `false`: close it.
fn serve_one(c: &mut Conn, chunk: &mut [u8], reply: &[u8]) -> bool {
    loop {
        match c.stream.read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                let lines = chunk[..n].iter().filter(|&&b| b == b'\n').count();
                for _ in 0..lines {
                    c.out.extend_from_slice(reply);
                }
                if c.out.len() > MAX_OWED {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while c.written < c.out.len() {
        match c.stream.write(&c.out[c.written..]) {
            Ok(0) => return false,
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    c.out.clear();
    c.written = 0;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    #[test]
    fn answers_each_line_with_the_fixed_reply() {
        let reply = fixed_reply(10);
        let server = start(reply.clone()).expect("start");
        let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"IAMAT a b c\nIAMAT d e f\n").expect("write");
        let mut r = BufReader::new(s);
        for _ in 0..2 {
            let mut line = String::new();
            r.read_line(&mut line).expect("read");
            assert_eq!(line.as_bytes(), &reply[..]);
        }
    }

    #[test]
    fn reply_has_the_herds_length() {
        let real = b"AT Riley +0.000012345 hb-1-t-0 +34.068930-118.445127 1700000000.000000000\n";
        assert_eq!(fixed_reply("hb-1-t-0".len()).len(), real.len());
    }
}
