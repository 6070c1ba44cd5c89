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
//! Pages are rendered once per tick from the in-memory totals
//! ([`HttpServer::publish`]); a scrape never touches BPF maps or changes
//! state, so any number of scrapers cost the same.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY,
};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::exposition::{self, Format, MapGauge, SelfStats};
use crate::probes::{FamilyState, FamilyStatus};
use crate::proto::StoreStatus;
use crate::totals::Totals;

/// Connections at once, at most; more are accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request headers within this (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with nothing going on is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Request head buffer, bytes (hyper's minimum).
pub const MAX_HEAD: usize = 8192;

/// What the HTTP pages are rendered from.
pub struct View<'a> {
    pub totals: &'a Totals,
    pub probes: Vec<FamilyStatus>,
    pub store: Option<StoreStatus>,
    pub drain_seconds: f64,
    pub drain_lag_seconds: f64,
    pub last_tick: Option<Instant>,
    pub interval: Duration,
    pub maps: Vec<MapGauge>,
}

/// Entries-vs-capacity of the BPF maps, for the gauges.
pub fn map_gauges(maps: &crate::probes::Maps, procs_seen: u64) -> Vec<MapGauge> {
    use libbpf_rs::MapCore;
    let mut v = vec![(
        "procs".to_string(),
        procs_seen,
        u64::from(maps.procs[0].max_entries()),
    )];
    for (name, m) in &maps.all {
        if name != "procs" {
            v.push((
                name.clone(),
                crate::drain::count_entries(m),
                u64::from(m.max_entries()),
            ));
        }
    }
    v
}

#[derive(Default)]
struct Pages {
    prometheus: Bytes,
    openmetrics: Bytes,
    prometheus_gz: Option<Bytes>,
    openmetrics_gz: Option<Bytes>,
    landing: Bytes,
    started: Option<Instant>,
    last_tick: Option<Instant>,
    interval: Duration,
}

impl Pages {
    fn health(&self) -> (bool, String) {
        let allowed = self.interval * 3 + Duration::from_secs(1);
        match (self.last_tick, self.started) {
            (Some(t), _) if t.elapsed() <= allowed => (true, "ok\n".into()),
            (Some(t), _) => (
                false,
                format!(
                    "the drain has not ticked for {:.1}s (interval {:.1}s)\n",
                    t.elapsed().as_secs_f64(),
                    self.interval.as_secs_f64()
                ),
            ),
            (None, Some(s)) if s.elapsed() <= allowed => (true, "ok (no tick yet)\n".into()),
            _ => (false, "the drain has not ticked since start\n".into()),
        }
    }
}

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

fn accepts_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut f = e.split(';').map(str::trim);
            f.next() == Some("gzip") && !f.any(|p| p == "q=0" || p == "q=0.0")
        })
}

fn respond(req: &Request<Incoming>, pages: &RefCell<Pages>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let gz = accepts_gzip(req);
            let mut p = pages.borrow_mut();
            let body = match (format, gz) {
                (Format::Prometheus, false) => p.prometheus.clone(),
                (Format::OpenMetrics, false) => p.openmetrics.clone(),
                (Format::Prometheus, true) => {
                    let text = p.prometheus.clone();
                    p.prometheus_gz.get_or_insert_with(|| gzip(&text)).clone()
                }
                (Format::OpenMetrics, true) => {
                    let text = p.openmetrics.clone();
                    p.openmetrics_gz.get_or_insert_with(|| gzip(&text)).clone()
                }
            };
            let mut r = Response::new(Full::new(body));
            let h = r.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            h.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
            if gz {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        "/healthz" => {
            let (ok, why) = pages.borrow().health();
            plain(
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                why,
            )
        }
        "/" => {
            let mut r = Response::new(Full::new(pages.borrow().landing.clone()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /\n".into(),
        ),
    }
}

fn landing(probes: &[FamilyStatus]) -> String {
    let mut rows = String::new();
    for f in probes {
        let (state, why) = match &f.state {
            FamilyState::Attached => ("attached", String::new()),
            FamilyState::Disabled => ("disabled", String::new()),
            FamilyState::Unavailable(w) => ("unavailable", w.clone()),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html_escape(f.family.name()),
            state,
            html_escape(&why)
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>iomond</title></head><body>\n\
         <h1>iomond {}</h1>\n<p><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p>\n\
         <table border=\"1\" cellpadding=\"4\"><tr><th>probe family</th><th>state</th><th>reason</th></tr>\n{rows}</table>\n\
         </body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Non-blocking mio stream as hyper IO.
struct MioIo {
    stream: TcpStream,
    activity: Rc<RefCell<Instant>>,
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
struct ReadyQueue(Mutex<Vec<Token>>);

struct TokenWaker {
    token: Token,
    queue: Arc<ReadyQueue>,
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
struct LoopTimer {
    sleeps: Arc<Mutex<HashMap<u64, (Instant, Waker)>>>,
    next_id: Arc<AtomicU64>,
}

impl LoopTimer {
    fn next_deadline(&self) -> Option<Instant> {
        self.sleeps.lock().ok()?.values().map(|(d, _)| *d).min()
    }

    fn fire(&self, now: Instant) {
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

/// The pages, as a hyper service (a named type, so that connections can be
/// told to shut down gracefully).
struct PageService {
    pages: Rc<RefCell<Pages>>,
}

impl hyper::service::Service<Request<Incoming>> for PageService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(respond(&req, &self.pages)))
    }
}

type ConnFuture = Pin<Box<http1::Connection<MioIo, PageService>>>;

struct Conn {
    fut: ConnFuture,
    waker: Waker,
    activity: Rc<RefCell<Instant>>,
}

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
        })
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, _, a)| *a).collect()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Re-renders the pages (once per tick).
    pub fn publish(&mut self, v: &View) {
        let self_stats = SelfStats::read();
        let inputs = exposition::Inputs {
            totals: v.totals,
            probes: &v.probes,
            store: v.store.as_ref(),
            drain_seconds: v.drain_seconds,
            drain_lag_seconds: v.drain_lag_seconds,
            maps: &v.maps,
            self_stats: &self_stats,
        };
        let mut p = self.pages.borrow_mut();
        p.prometheus = Bytes::from(exposition::render(&inputs, Format::Prometheus));
        p.openmetrics = Bytes::from(exposition::render(&inputs, Format::OpenMetrics));
        p.prometheus_gz = None;
        p.openmetrics_gz = None;
        p.landing = Bytes::from(landing(&v.probes));
        p.last_tick = v.last_tick;
        p.interval = v.interval;
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
                // Dropping the stream closes it and takes it out of epoll.
                self.conns.remove(&token);
            }
        }
    }

    /// Fires due timers, polls woken connections, closes idle ones.
    pub fn poll_ready(&mut self, _registry: &Registry, until: Instant) {
        self.timer.fire(Instant::now());
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
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
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
    }
}
