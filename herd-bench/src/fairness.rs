//! The fairness scenario: one connection floods the server with blank
//! lines (valid, ignored, and as cheap as input gets) while a probe client
//! sends one IAMAT at a time; the probe's reply latency is the measurement.
//! A loop that drained the flooder until `WouldBlock` before looking at
//! anyone else would show the flood's length here; a fair one shows its own
//! turn time (docs/reliability.md, "Attacks").

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;

/// The flooding connection, stopped (and joined) when dropped.
pub struct Flooder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Flooder {
    /// Connects to `addr` and floods it for at most `limit` (the bench's
    /// loops are bounded in time), until dropped.
    pub fn start(addr: SocketAddr, limit: Duration) -> Result<Flooder, Error> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_write_timeout(Some(Duration::from_millis(200)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let chunk = b" \n".repeat(32 * 1024);
            let start = Instant::now();
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) && !crate::interrupted() && start.elapsed() < limit
            {
                match stream.write_all(&chunk) {
                    Ok(()) => sent += chunk.len() as u64,
                    // A full socket: the server is not reading this one now.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            sent
        });
        Ok(Flooder {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the flood; how many bytes it sent.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.finish();
    }
}
