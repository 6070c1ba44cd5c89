//! hyper 1.x driven by the daemon's mio loop, no tokio: the IO adapter
//! over non-blocking mio streams, the waker that queues a connection's
//! token to be polled again, and the timer whose deadlines the loop folds
//! into its poll timeout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Token;

/// Non-blocking mio stream as hyper IO.
pub(super) struct MioIo {
    pub(super) stream: TcpStream,
    pub(super) activity: Rc<RefCell<Instant>>,
}

impl hyper::rt::Read for MioIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut tmp = [0u8; 8192];
        let want = tmp.len().min(buf.remaining());
        loop {
            match self.stream.read(&mut tmp[..want]) {
                Ok(n) => {
                    *self.activity.borrow_mut() = Instant::now();
                    buf.put_slice(&tmp[..n]);
                    return Poll::Ready(Ok(()));
                }
                // mio readiness on this connection's token polls it again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::rt::Write for MioIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.stream.write(buf) {
                Ok(n) => {
                    *self.activity.borrow_mut() = Instant::now();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write).or(Ok(())))
    }
}

/// Tokens whose connection asked to be polled again.
#[derive(Default)]
pub(super) struct ReadyQueue(pub(super) Mutex<Vec<Token>>);

pub(super) struct TokenWaker {
    pub(super) token: Token,
    pub(super) queue: Arc<ReadyQueue>,
}

impl Wake for TokenWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut q) = self.queue.0.lock() {
            q.push(self.token);
        }
    }
}

/// Sleeps for hyper, fired by the event loop.
#[derive(Clone, Default)]
pub(super) struct LoopTimer {
    sleeps: Arc<Mutex<HashMap<u64, (Instant, Waker)>>>,
    next_id: Arc<AtomicU64>,
}

impl LoopTimer {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.sleeps.lock().ok()?.values().map(|(d, _)| *d).min()
    }

    pub(super) fn fire(&self, now: Instant) {
        let due: Vec<Waker> = match self.sleeps.lock() {
            Ok(mut s) => {
                let ids: Vec<u64> = s
                    .iter()
                    .filter(|(_, (d, _))| *d <= now)
                    .map(|(k, _)| *k)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| s.remove(&id))
                    .map(|(_, w)| w)
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for w in due {
            w.wake();
        }
    }
}

struct LoopSleep {
    id: u64,
    deadline: Instant,
    sleeps: Arc<Mutex<HashMap<u64, (Instant, Waker)>>>,
}

impl Future for LoopSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        if let Ok(mut s) = self.sleeps.lock() {
            s.insert(self.id, (self.deadline, cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        if let Ok(mut s) = self.sleeps.lock() {
            s.remove(&self.id);
        }
    }
}

impl hyper::rt::Sleep for LoopSleep {}

impl hyper::rt::Timer for LoopTimer {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + d)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LoopSleep {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            deadline,
            sleeps: self.sleeps.clone(),
        })
    }
}
