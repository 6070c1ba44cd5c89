//! Prometheus endpoint: hyper 1.x HTTP/1 connections polled by the daemon's
//! own mio loop. No tokio and no thread per request:
//!
//! - [`MioIo`] implements hyper's `Read`/`Write` over a non-blocking mio
//!   stream, returning `Pending` on `WouldBlock`; mio readiness on the
//!   connection's token polls the connection again.
//! - A connection's waker pushes its token onto a ready queue that the loop
//!   drains (hyper wakes itself to yield, so a waker that did nothing would
//!   stall connections).
//! - [`LoopTimer`] gives hyper sleeps whose deadlines the loop folds into
//!   its poll timeout (hyper's header-read timeout cuts slowloris clients).
//!
//! Pages are rendered from the in-memory totals when a request first asks
//! for one after a tick ([`HttpServer::wanted`], [`HttpServer::render`]):
//! once per tick and page, so any number of scrapers cost the same, and a
//! tick nobody scrapes costs no rendering. A scrape never touches BPF maps
//! or changes state.

mod mio_io;
mod pages;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::server::conn::http1;
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};

use crate::exposition::{self, SelfStats};
use mio_io::{LoopTimer, MioIo, ReadyQueue, TokenWaker};
pub use pages::{counted_maps, map_gauges, Page, View};
use pages::{landing, PageService, Pages};

/// Connections at once, at most; more are accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request headers within this (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with nothing going on is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Request head buffer, bytes (hyper's minimum).
pub const MAX_HEAD: usize = 8192;

type ConnFuture = Pin<Box<http1::Connection<MioIo, PageService>>>;

struct Conn {
    fut: ConnFuture,
    waker: Waker,
    activity: Rc<RefCell<Instant>>,
    /// The socket's descriptor (owned by `fut`'s stream).
    fd: RawFd,
    /// Shutting down: a second descriptor of the socket, which keeps it
    /// open after hyper closes its own (see [`Lingering`]).
    dup: Option<std::net::TcpStream>,
}

/// A connection hyper finished while shutting down, whose client had sent
/// more than was answered (a pipelining scraper): closing a socket with
/// unread input makes the kernel send a reset, which can destroy the
/// responses the client has not read yet. Its input is read and dropped
/// until the client closes, or [`LINGER`] passes.
struct Lingering {
    socket: std::net::TcpStream,
    until: Instant,
}

/// How long a finished connection's unread input is drained at shutdown.
const LINGER: Duration = Duration::from_secs(2);

pub struct HttpServer {
    listeners: Vec<(TcpListener, Token, SocketAddr)>,
    conns: HashMap<Token, Conn>,
    conn_base: usize,
    next: usize,
    pages: Rc<RefCell<Pages>>,
    queue: Arc<ReadyQueue>,
    timer: LoopTimer,
    /// Connections closed at once because of the cap.
    pub refused: u64,
    shutting_down: bool,
    lingering: Vec<Lingering>,
}

impl HttpServer {
    pub fn listen(
        registry: &Registry,
        addrs: &[String],
        listen_base: usize,
        conn_base: usize,
    ) -> anyhow::Result<HttpServer> {
        use anyhow::Context as _;
        let mut listeners = Vec::new();
        for (i, a) in addrs.iter().enumerate().take(16) {
            let addr: SocketAddr = a
                .parse()
                .with_context(|| format!("metrics.listen: {a:?} is not an address:port"))?;
            let mut l = TcpListener::bind(addr)
                .with_context(|| format!("failed to listen for metrics on {addr} (port in use? address not on this host?)"))?;
            let local = l.local_addr().unwrap_or(addr);
            let token = Token(listen_base + i);
            registry.register(&mut l, token, Interest::READABLE)?;
            listeners.push((l, token, local));
        }
        Ok(HttpServer {
            listeners,
            conns: HashMap::new(),
            conn_base,
            next: 0,
            pages: Rc::new(RefCell::new(Pages {
                started: Some(Instant::now()),
                ..Default::default()
            })),
            queue: Arc::new(ReadyQueue::default()),
            timer: LoopTimer::default(),
            refused: 0,
            shutting_down: false,
            lingering: Vec::new(),
        })
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, _, a)| *a).collect()
    }

    /// Open connections, those draining a client's input at shutdown
    /// included.
    pub fn connections(&self) -> usize {
        self.conns.len() + self.lingering.len()
    }

    /// A tick happened: the pages are rendered again when asked for.
    pub fn ticked(&mut self, last_tick: Option<Instant>, interval: Duration) {
        let mut p = self.pages.borrow_mut();
        p.invalidate();
        p.last_tick = last_tick;
        p.interval = interval;
    }

    /// Pages requests are waiting for (the event loop renders them with
    /// [`HttpServer::render`]).
    pub fn wanted(&self) -> Vec<Page> {
        self.pages.borrow().wanted.clone()
    }

    /// Renders these pages and wakes the requests waiting for them.
    pub fn render(&mut self, v: &View, pages: &[Page]) {
        let self_stats = SelfStats::read(v.open_fds);
        let inputs = exposition::Inputs {
            totals: v.totals,
            probes: &v.probes,
            store: v.store.as_ref(),
            export: v.export.as_ref(),
            drain_seconds: v.drain_seconds,
            drain_lag_seconds: v.drain_lag_seconds,
            loop_turns: Some((&v.loop_turns.0, v.loop_turns.1)),
            page_size_bytes: v.page_size_bytes,
            maps: &v.maps,
            self_stats: &self_stats,
        };
        let mut p = self.pages.borrow_mut();
        for page in pages {
            let b = match page {
                Page::Metrics(f) => Bytes::from(exposition::render(&inputs, *f)),
                Page::Landing => Bytes::from(landing(&v.probes)),
            };
            p.set(*page, b);
        }
        p.wanted.retain(|w| !pages.contains(w));
        for w in std::mem::take(&mut p.waiters) {
            w.wake();
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timer.next_deadline()
    }

    fn owns_conn(&self, t: Token) -> bool {
        t.0 >= self.conn_base && t.0 < self.conn_base + (1 << 24)
    }

    /// A mio event for one of our tokens.
    pub fn on_event(&mut self, registry: &Registry, token: Token) {
        if let Some(i) = self.listeners.iter().position(|(_, t, _)| *t == token) {
            self.accept(registry, i);
        } else if self.owns_conn(token) {
            self.poll_conn(token);
        }
    }

    fn accept(&mut self, registry: &Registry, i: usize) {
        loop {
            let (mut stream, _) = match self.listeners[i].0.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("http: accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                self.refused += 1;
                drop(stream);
                continue;
            }
            let token = loop {
                let t = Token(self.conn_base + self.next % (1 << 24));
                self.next = self.next.wrapping_add(1);
                if !self.conns.contains_key(&t) {
                    break t;
                }
            };
            if registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            let activity = Rc::new(RefCell::new(Instant::now()));
            let io = MioIo {
                stream,
                activity: activity.clone(),
            };
            let service = PageService {
                pages: self.pages.clone(),
            };
            let conn = http1::Builder::new()
                .timer(self.timer.clone())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(io, service);
            let waker = Waker::from(Arc::new(TokenWaker {
                token,
                queue: self.queue.clone(),
            }));
            self.conns.insert(
                token,
                Conn {
                    fut: Box::pin(conn),
                    waker,
                    activity,
                    fd,
                    dup: None,
                },
            );
            self.poll_conn(token);
        }
    }

    fn poll_conn(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let mut cx = Context::from_waker(&c.waker);
        match c.fut.as_mut().poll(&mut cx) {
            Poll::Pending => {}
            Poll::Ready(res) => {
                if let Err(e) = res {
                    log::debug!("http: connection ended: {e}");
                }
                // Dropping the stream closes it and takes it out of epoll
                // (shutting down, once the second descriptor is closed
                // too: an event for the token meanwhile finds no
                // connection and is ignored).
                if let Some(c) = self.conns.remove(&token) {
                    let Conn { fut, dup, .. } = c;
                    drop(fut);
                    if let Some(socket) = dup.filter(unread_input) {
                        // Whatever hyper did, the client sees the end.
                        let _ = socket.shutdown(std::net::Shutdown::Write);
                        self.lingering.push(Lingering {
                            socket,
                            until: Instant::now() + LINGER,
                        });
                    }
                }
            }
        }
    }

    /// Fires due timers, polls woken connections, closes idle ones.
    pub fn poll_ready(&mut self, _registry: &Registry, until: Instant) {
        self.timer.fire(Instant::now());
        if !self.lingering.is_empty() {
            let now = Instant::now();
            self.lingering
                .retain(|l| now < l.until && !matches!(discard_input(&l.socket), Input::Closed));
        }
        // Bounded: a connection that keeps waking itself is polled once per
        // round here, and again at the next loop iteration; and nothing is
        // polled past `until` (the next tick): the rest stays queued, and
        // the loop comes back to it right after the drain.
        for _ in 0..4 {
            let woken: Vec<Token> = match self.queue.0.lock() {
                Ok(mut q) => std::mem::take(&mut *q),
                Err(_) => return,
            };
            if woken.is_empty() {
                break;
            }
            let mut seen = std::collections::HashSet::new();
            for (i, t) in woken.iter().enumerate() {
                if Instant::now() >= until {
                    if let Ok(mut q) = self.queue.0.lock() {
                        q.extend_from_slice(&woken[i..]);
                    }
                    return;
                }
                if seen.insert(*t) {
                    self.poll_conn(*t);
                }
            }
        }
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.activity.borrow().elapsed() > IDLE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.conns.remove(&t);
        }
    }

    /// Whether a connection asked to be polled again (the loop must not
    /// sleep then).
    pub fn has_ready(&self) -> bool {
        self.queue.0.lock().map(|q| !q.is_empty()).unwrap_or(false)
    }

    /// Stops accepting and asks every connection to finish: a response in
    /// progress is completed, idle keep-alive connections are closed. The
    /// loop then polls until `connections()` is 0 or its deadline.
    pub fn begin_shutdown(&mut self, registry: &Registry) {
        for (l, _, _) in &mut self.listeners {
            let _ = registry.deregister(l);
        }
        self.listeners.clear();
        self.shutting_down = true;
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
                // SAFETY: `c.fd` is the descriptor of the stream `c.fut`
                // owns, open while the connection is in the map; it is
                // only borrowed here, to make a second one.
                let fd = unsafe { BorrowedFd::borrow_raw(c.fd) };
                c.dup = fd.try_clone_to_owned().ok().map(std::net::TcpStream::from);
                c.fut.as_mut().graceful_shutdown();
            }
            self.poll_conn(t);
        }
    }

    /// Drops whatever did not finish.
    pub fn shutdown(&mut self, registry: &Registry) {
        for (l, _, _) in &mut self.listeners {
            let _ = registry.deregister(l);
        }
        self.listeners.clear();
        self.conns.clear();
        self.lingering.clear();
    }
}

/// What reading a socket's pending input found.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    /// Nothing to read now.
    None,
    /// Input was read (and dropped).
    Some,
    /// The client closed its side, or the socket failed.
    Closed,
}

/// Reads and drops what the client sent and nobody will answer (the
/// socket is non-blocking: the descriptor shares the stream's flags).
fn discard_input(mut s: &std::net::TcpStream) -> Input {
    let mut buf = [0u8; 4096];
    let mut got = Input::None;
    // Bounded: at most 64 KiB per call.
    for _ in 0..16 {
        match io::Read::read(&mut s, &mut buf) {
            Ok(0) => return Input::Closed,
            Ok(_) => got = Input::Some,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Input::Closed,
        }
    }
    got
}

/// Whether a finished connection's client had sent input nobody read:
/// then it lingers (see [`Lingering`]).
fn unread_input(s: &std::net::TcpStream) -> bool {
    discard_input(s) == Input::Some
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn unread_input_is_drained_and_the_clients_close_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        assert_eq!(discard_input(&server), Input::None, "nothing sent yet");
        assert!(!unread_input(&server));
        // A pipelining client: more than one call reads (64 KiB).
        client.write_all(&vec![b'x'; 100_000]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(unread_input(&server));
        // The rest of it, in bounded calls.
        let mut calls = 0;
        while discard_input(&server) == Input::Some {
            calls += 1;
            assert!(calls < 100);
        }
        assert_eq!(discard_input(&server), Input::None);
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(discard_input(&server), Input::Closed);
    }
}
