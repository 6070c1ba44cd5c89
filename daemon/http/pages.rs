//! The pages iomond serves: /metrics (rendered from the in-memory totals
//! when first asked for after a tick, once per tick and format, gzip on
//! demand: a tick nobody scrapes costs no rendering), /healthz and the
//! landing page. A scrape never touches BPF maps or changes state.

use std::cell::RefCell;
use std::convert::Infallible;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY,
};
use hyper::{Method, Request, Response, StatusCode};

use crate::exposition::{Format, MapGauge};
use crate::probes::{FamilyState, FamilyStatus};
use crate::store::StoreStatus;
use crate::totals::Totals;

/// What the HTTP pages are rendered from.
pub struct View<'a> {
    pub totals: &'a Totals,
    pub probes: Vec<FamilyStatus>,
    pub store: Option<StoreStatus>,
    pub export: Option<crate::export::ExportStatus>,
    pub drain_seconds: f64,
    pub drain_lag_seconds: f64,
    /// The event loop's turn times: buckets and sum.
    pub loop_turns: (Vec<(Option<f64>, u64)>, f64),
    pub page_size_bytes: u64,
    pub last_tick: Option<Instant>,
    pub interval: Duration,
    pub maps: Vec<MapGauge>,
    /// The daemon's open file descriptors as last counted off the loop
    /// (`None`: counted when rendering).
    pub open_fds: Option<u64>,
}

/// Entries-vs-capacity of the BPF maps, for the gauges: the maps the
/// drain empties by what it took at the last tick, the others as last
/// counted off the loop (`counted`, see [`crate::drain::upkeep`]).
pub fn map_gauges(
    maps: &crate::probes::Maps,
    procs_seen: u64,
    files_seen: u64,
    evicted_blocks: u64,
    counted: Vec<MapGauge>,
) -> Vec<MapGauge> {
    use libbpf_rs::MapCore;
    let mut v = vec![
        (
            "procs".to_string(),
            procs_seen,
            u64::from(maps.procs[0].max_entries()),
        ),
        (
            "target_files".to_string(),
            files_seen,
            u64::from(maps.files[0].max_entries()),
        ),
        (
            // As of the last minute's expiry.
            "evicted_blocks".to_string(),
            evicted_blocks,
            u64::from(maps.evicted_blocks.max_entries()),
        ),
    ];
    v.extend(counted);
    v
}

/// The maps whose entries are counted off the loop: the set of targets'
/// files and every other hash the programs fill.
pub fn counted_maps(maps: &crate::probes::Maps) -> Vec<(&str, &libbpf_rs::MapHandle)> {
    let mut v = vec![("target_file_set", &maps.file_set)];
    v.extend(maps.others.iter().map(|(n, m)| (n.as_str(), m)));
    v
}

/// The pages of the last tick; `None`: not rendered since it (the event
/// loop renders what requests are waiting for, see [`Pages::wanted`]).
#[derive(Default)]
pub(super) struct Pages {
    pub(super) prometheus: Option<Bytes>,
    pub(super) openmetrics: Option<Bytes>,
    pub(super) prometheus_gz: Option<Bytes>,
    pub(super) openmetrics_gz: Option<Bytes>,
    pub(super) landing: Option<Bytes>,
    pub(super) started: Option<Instant>,
    pub(super) last_tick: Option<Instant>,
    pub(super) interval: Duration,
    /// Pages requests wait for, and their connections' wakers.
    pub(super) wanted: Vec<Page>,
    pub(super) waiters: Vec<std::task::Waker>,
}

/// A page rendered from the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Metrics(Format),
    Landing,
}

impl Pages {
    /// The page's bytes if rendered since the last tick.
    fn get(&self, page: Page) -> Option<Bytes> {
        match page {
            Page::Metrics(Format::Prometheus) => self.prometheus.clone(),
            Page::Metrics(Format::OpenMetrics) => self.openmetrics.clone(),
            Page::Landing => self.landing.clone(),
        }
    }

    pub(super) fn set(&mut self, page: Page, b: Bytes) {
        match page {
            Page::Metrics(Format::Prometheus) => self.prometheus = Some(b),
            Page::Metrics(Format::OpenMetrics) => self.openmetrics = Some(b),
            Page::Landing => self.landing = Some(b),
        }
    }

    /// A tick happened: every page is to be rendered again when asked.
    pub(super) fn invalidate(&mut self) {
        self.prometheus = None;
        self.openmetrics = None;
        self.prometheus_gz = None;
        self.openmetrics_gz = None;
        self.landing = None;
    }
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

/// What a request asks for, read once from its head.
pub(super) struct Asked {
    method_ok: bool,
    path: String,
    format: Format,
    gz: bool,
}

impl Asked {
    pub(super) fn of(req: &Request<Incoming>) -> Asked {
        let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
        Asked {
            method_ok: req.method() == Method::GET || req.method() == Method::HEAD,
            path: req.uri().path().to_string(),
            format: Format::negotiate(accept),
            gz: accepts_gzip(req),
        }
    }

    /// The rendered page it needs, if any.
    fn page(&self) -> Option<Page> {
        if !self.method_ok {
            return None;
        }
        match self.path.as_str() {
            "/metrics" => Some(Page::Metrics(self.format)),
            "/" => Some(Page::Landing),
            _ => None,
        }
    }
}

pub(super) fn respond(asked: &Asked, pages: &RefCell<Pages>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if !asked.method_ok {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match asked.path.as_str() {
        "/metrics" => {
            let (format, gz) = (asked.format, asked.gz);
            let mut p = pages.borrow_mut();
            let text = p.get(Page::Metrics(format)).unwrap_or_default();
            let body = match (format, gz) {
                (_, false) => text,
                (Format::Prometheus, true) => {
                    p.prometheus_gz.get_or_insert_with(|| gzip(&text)).clone()
                }
                (Format::OpenMetrics, true) => {
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
            let mut r = Response::new(Full::new(
                pages.borrow().landing.clone().unwrap_or_default(),
            ));
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

pub(super) fn landing(probes: &[FamilyStatus]) -> String {
    let mut rows = String::new();
    for f in probes {
        let (state, why) = match &f.state {
            FamilyState::Attached => ("attached", String::new()),
            FamilyState::Disabled => ("disabled", String::new()),
            FamilyState::Unavailable(w) => ("unavailable on this kernel", w.clone()),
            FamilyState::Failed(w) => ("failed", w.clone()),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html_escape(&f.family),
            state,
            html_escape(f.route.as_deref().unwrap_or("")),
            html_escape(&why)
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>iomond</title></head><body>\n\
         <h1>iomond {}</h1>\n<p><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p>\n\
         <table border=\"1\" cellpadding=\"4\"><tr><th>probe family</th><th>state</th><th>route</th><th>reason</th></tr>\n{rows}</table>\n\
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

/// The pages, as a hyper service (a named type, so that connections can be
/// told to shut down gracefully).
pub(super) struct PageService {
    pub(super) pages: Rc<RefCell<Pages>>,
}

impl hyper::service::Service<Request<Incoming>> for PageService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = PageFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        PageFuture {
            asked: Asked::of(&req),
            pages: self.pages.clone(),
        }
    }
}

/// A response, ready once the page it needs is rendered for this tick:
/// until then the request is listed in `wanted` and its connection woken
/// when the event loop has rendered it.
pub(super) struct PageFuture {
    asked: Asked,
    pages: Rc<RefCell<Pages>>,
}

impl std::future::Future for PageFuture {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let Some(page) = self.asked.page() {
            let mut p = self.pages.borrow_mut();
            if p.get(page).is_none() {
                if !p.wanted.contains(&page) {
                    p.wanted.push(page);
                }
                p.waiters.push(cx.waker().clone());
                return std::task::Poll::Pending;
            }
        }
        std::task::Poll::Ready(Ok(respond(&self.asked, &self.pages)))
    }
}
