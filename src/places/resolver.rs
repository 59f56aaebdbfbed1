//! Name resolution off the loop: asyncio's `loop.getaddrinfo`, which runs
//! `socket.getaddrinfo` in the default executor (`run_in_executor`) because
//! the system resolver blocks. We do the same thing explicitly: one resolver
//! thread takes names from a channel, resolves them, sends the answer back on
//! another channel and wakes the event loop through a `mio::Waker` (the
//! [`crate::event_loop::WAKER`] token). Answers are cached for [`CACHE_FOR`].
//!
//! An IP address needs no resolving and never touches the thread.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token, Waker};

/// How long a resolved address is used before it is looked up again.
pub const CACHE_FOR: Duration = Duration::from_secs(60);

/// The answer for one name.
pub type Answer = Result<SocketAddr, String>;

/// What the Places client needs of a resolver: the loop injects the
/// threaded [`Resolver`]; unit tests inject one that answers at once.
pub trait Resolve {
    /// The address, if known and fresh; else ask (the answer comes later,
    /// and the loop then calls [`Resolve::answers`]).
    fn lookup(&mut self, now: Instant) -> Result<Lookup, String>;
    /// Collects answers that have arrived; returns the last one.
    fn answers(&mut self, now: Instant) -> Option<Answer>;
}

/// The loop's side of the resolver thread, with the cache.
pub struct Resolver {
    host: String,
    port: u16,
    requests: Sender<()>,
    answers: Receiver<Answer>,
    cached: Option<(SocketAddr, Instant)>,
    asked: bool,
}

/// What [`Resolver::lookup`] can say at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Known: connect here.
    Ready(SocketAddr),
    /// Asked the thread; the answer comes through the waker.
    Pending,
}

impl Resolver {
    /// Starts the thread for `host:port`; the thread wakes `token` on `registry`.
    pub fn new(host: &str, port: u16, registry: &Registry, token: Token) -> std::io::Result<Self> {
        let waker = Arc::new(Waker::new(registry, token)?);
        let (requests, asked) = channel::<()>();
        let (answer, answers) = channel();
        let name = (host.to_string(), port);
        std::thread::Builder::new()
            .name("resolver".to_string())
            .spawn(move || {
                // Ends when the loop drops its sender.
                while asked.recv().is_ok() {
                    let result = name
                        .to_socket_addrs()
                        .map_err(|e| e.to_string())
                        .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()));
                    if answer.send(result).is_err() || waker.wake().is_err() {
                        return;
                    }
                }
            })?;
        Ok(Resolver {
            host: host.to_string(),
            port,
            requests,
            answers,
            cached: None,
            asked: false,
        })
    }
}

impl Resolve for Resolver {
    /// The address, if known and fresh; else asks the thread (once).
    fn lookup(&mut self, now: Instant) -> Result<Lookup, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(Lookup::Ready(SocketAddr::new(ip, self.port)));
        }
        if let Some((addr, until)) = self.cached {
            if now < until {
                return Ok(Lookup::Ready(addr));
            }
        }
        if !self.asked {
            self.requests
                .send(())
                .map_err(|_| "the resolver thread is gone".to_string())?;
            self.asked = true;
        }
        Ok(Lookup::Pending)
    }

    /// Collects the thread's answers (after a wake-up); returns the last one.
    fn answers(&mut self, now: Instant) -> Option<Answer> {
        let mut last = None;
        while let Ok(answer) = self.answers.try_recv() {
            self.asked = false;
            if let Ok(addr) = answer {
                self.cached = Some((addr, now + CACHE_FOR));
            }
            last = Some(answer);
        }
        last
    }
}
