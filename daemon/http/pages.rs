//! The pages iomond serves: /metrics (rendered once per tick from the
//! in-memory totals, in both text formats, gzip on demand), /healthz and
//! the landing page. A scrape never touches BPF maps or changes state.

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
    pub drain_seconds: f64,
    pub drain_lag_seconds: f64,
    pub page_size_bytes: u64,
    pub last_tick: Option<Instant>,
    pub interval: Duration,
    pub maps: Vec<MapGauge>,
}

/// Entries-vs-capacity of the BPF maps, for the gauges.
pub fn map_gauges(maps: &crate::probes::Maps, procs_seen: u64, files_seen: u64) -> Vec<MapGauge> {
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
            "target_file_set".to_string(),
            crate::drain::count_entries(&maps.file_set),
            u64::from(maps.file_set.max_entries()),
        ),
    ];
    for (name, m) in &maps.others {
        v.push((
            name.clone(),
            crate::drain::count_entries(m),
            u64::from(m.max_entries()),
        ));
    }
    v
}

#[derive(Default)]
pub(super) struct Pages {
    pub(super) prometheus: Bytes,
    pub(super) openmetrics: Bytes,
    pub(super) prometheus_gz: Option<Bytes>,
    pub(super) openmetrics_gz: Option<Bytes>,
    pub(super) landing: Bytes,
    pub(super) started: Option<Instant>,
    pub(super) last_tick: Option<Instant>,
    pub(super) interval: Duration,
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

pub(super) fn respond(req: &Request<Incoming>, pages: &RefCell<Pages>) -> Response<Full<Bytes>> {
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
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(respond(&req, &self.pages)))
    }
}
