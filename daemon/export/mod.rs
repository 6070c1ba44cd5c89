//! Native export into BanyanDB: every Sample of the history, written as
//! data points of one measure per family, from a persisted cursor.
//!
//! Where it sits: after the store. The history is the source; the
//! exporter asks for the raw Samples after its cursor, the event loop
//! answers once per tick with at most one batch read from the store (a
//! bounded read, like a `history` query), and the cursor moves only when
//! BanyanDB has acknowledged a whole batch. So an outage of BanyanDB or of
//! the network, or a restart of iomond, loses nothing the store still
//! holds: it is sent late, oldest first, at a bounded rate.
//!
//! Why a thread of its own: gRPC needs HTTP/2 and an async runtime
//! (tonic on tokio). On the event loop, every call would have to be cut
//! into non-blocking steps, and a slow server's TLS handshake or flow
//! control would share the turn with ticks, control requests and scrapes.
//! On its own thread, with a current-thread runtime, the exporter can
//! wait on a hung server as long as its timeout says while the loop never
//! waits for it: the loop's side is a `try_send` and a lock held for a
//! copy (BENCHMARKS.md, "Export").

mod client;
pub mod config;
mod cursor;
#[allow(clippy::all, clippy::pedantic)]
pub mod pb;
pub mod schema;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sample::Sample;
pub use client::ExportError;
use config::BanyanDbExport;
use cursor::Cursor;
use schema::MeasureDef;

/// The exporter's state, for `iomonctl status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportStatus {
    /// "connecting", "connected", "retrying", "stopped".
    pub state: String,
    /// The endpoint in use (or last tried).
    pub endpoint: String,
    pub group: String,
    /// The end of the newest Sample BanyanDB acknowledged (ms).
    pub newest_written_ms: Option<u64>,
    /// The end of the newest Sample the history holds (ms), when known.
    pub newest_stored_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    pub points_written: u64,
    /// Data points BanyanDB refused for good (invalid, ...).
    pub points_refused: u64,
    pub samples_written: u64,
    pub batches: u64,
    /// Schema revisions re-read after `STATUS_EXPIRED_SCHEMA`.
    pub schema_rereads: u64,
    /// Connections opened (the first included).
    pub connects: u64,
    /// Time the history no longer held when the exporter got to it
    /// (retention dropped it before it was sent), in ms.
    pub skipped_ms: u64,
    /// Measures written, and those left out (a conflicting schema).
    pub measures: u32,
    pub measures_unusable: u32,
}

impl ExportStatus {
    /// How far behind the history the export is (ms).
    pub fn behind_ms(&self) -> Option<u64> {
        match (self.newest_stored_ms, self.newest_written_ms) {
            (Some(s), Some(w)) => Some(s.saturating_sub(w)),
            (Some(_), None) => None,
            _ => Some(0),
        }
    }
}

/// A batch from the store: the Samples after the cursor (at most the
/// batch size), and the oldest Sample the raw history still holds.
#[derive(Debug, Default)]
pub struct Batch {
    pub samples: Vec<Sample>,
    pub oldest_start_ms: Option<u64>,
    pub newest_end_ms: Option<u64>,
}

/// What the exporter asks the loop for: raw Samples whose start is after
/// `after_start_ms` (all with `None`), at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub after_start_ms: Option<u64>,
    pub max: usize,
}

struct Shared {
    status: ExportStatus,
    want: Option<Want>,
}

/// The event loop's handle on the exporter thread.
pub struct Exporter {
    shared: Arc<Mutex<Shared>>,
    tx: tokio::sync::mpsc::Sender<Batch>,
    /// Ends the thread's work at once, a call in flight included.
    halt: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic on the exporter thread while it held the lock leaves the
    // state as it was: still the best there is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Exporter {
    /// Starts the exporter thread. `interval` is the drain interval (the
    /// measures' declared interval).
    pub fn start(
        cfg: BanyanDbExport,
        state_dir: PathBuf,
        interval: Duration,
    ) -> std::io::Result<Exporter> {
        let shared = Arc::new(Mutex::new(Shared {
            status: ExportStatus {
                state: "connecting".into(),
                endpoint: cfg.endpoint.list().first().cloned().unwrap_or_default(),
                group: cfg.group.clone(),
                ..Default::default()
            },
            want: None,
        }));
        // One batch in flight between the loop and the thread.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let halt = Arc::new(tokio::sync::Notify::new());
        let (s2, h2) = (shared.clone(), halt.clone());
        let thread = std::thread::Builder::new()
            .name("iomond-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("export: cannot start its runtime ({e}); not exporting");
                        lock(&s2).status.state = "stopped".into();
                        return;
                    }
                };
                let mut run = Run::new(cfg, state_dir, interval, s2.clone(), rx);
                rt.block_on(async {
                    tokio::select! {
                        _ = run.run() => {}
                        _ = h2.notified() => {}
                    }
                });
                run.save_cursor();
                lock(&s2).status.state = "stopped".into();
                // A name lookup in flight (tonic resolves on the blocking
                // pool) is not waited for past a second.
                rt.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Exporter {
            shared,
            tx,
            halt,
            thread: Some(thread),
        })
    }

    /// What the exporter wants from the store, if anything (taken: the
    /// answer is [`Exporter::answer`]).
    pub fn wants(&self) -> Option<Want> {
        let mut s = lock(&self.shared);
        if self.tx.capacity() == 0 {
            return None;
        }
        s.want.take()
    }

    /// The loop's answer to [`Exporter::wants`]; never blocks.
    pub fn answer(&self, b: Batch) {
        if let Err(e) = self.tx.try_send(b) {
            log::debug!("export: batch not handed over ({e})");
        }
    }

    /// The newest Sample stored (ms), for how far behind the export is.
    pub fn stored(&self, newest_end_ms: u64) {
        lock(&self.shared).status.newest_stored_ms = Some(newest_end_ms);
    }

    pub fn status(&self) -> ExportStatus {
        lock(&self.shared).status.clone()
    }

    /// Stops the thread at once: a batch in flight is given up (its
    /// cursor stays where it was: it is sent again at the next start).
    pub fn stop(&mut self) {
        // The thread's future is dropped where it waits: nothing else to
        // signal.
        self.halt.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reconnect delays: doubling from 1 s to `retry_max`, each with up to a quarter
/// of jitter (nodes restarted together do not retry together).
struct Backoff {
    next: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);

    fn new(max: Duration) -> Backoff {
        let seed = crate::units::now_ms() ^ u64::from(std::process::id()) << 32;
        Backoff {
            next: Self::FIRST.min(max),
            max,
            seed: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }

    fn delay(&mut self) -> Duration {
        // xorshift: jitter needs no more.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.as_millis() as u64 / 4;
        base + Duration::from_millis(self.seed % (jitter + 1))
    }
}

/// The cursor's file is rewritten (and synced) at most this often: a
/// crash resends at most this much, which BanyanDB overwrites.
const CURSOR_EVERY: Duration = Duration::from_secs(5);

/// The exporter thread's state.
struct Run {
    cfg: BanyanDbExport,
    defs: Vec<MeasureDef>,
    host: String,
    interval: String,
    cursor_file: PathBuf,
    cursor: Option<Cursor>,
    /// When the cursor was last written (it is written at most every
    /// [`CURSOR_EVERY`], and when the exporter stops).
    saved: Option<Instant>,
    dirty: bool,
    shared: Arc<Mutex<Shared>>,
    rx: tokio::sync::mpsc::Receiver<Batch>,
    endpoints: Vec<String>,
    at: usize,
    backoff: Backoff,
    /// The last error logged (one line per change of state, not per try).
    logged: Option<String>,
    /// Refusals logged once per status.
    refusals_logged: std::collections::BTreeSet<String>,
    skipped_logged: bool,
}

impl Run {
    fn new(
        cfg: BanyanDbExport,
        state_dir: PathBuf,
        interval: Duration,
        shared: Arc<Mutex<Shared>>,
        rx: tokio::sync::mpsc::Receiver<Batch>,
    ) -> Run {
        let defs = schema::measures(&cfg);
        let host = cfg.host.clone().unwrap_or_else(hostname);
        let cursor_file = cursor::path(&state_dir);
        let cursor = Cursor::load(&cursor_file, &cfg.group);
        {
            let mut s = lock(&shared);
            s.status.newest_written_ms = cursor.as_ref().map(|c| c.end_ms);
            s.status.measures = defs.len() as u32;
        }
        let backoff = Backoff::new(cfg.retry_max.0);
        Run {
            endpoints: cfg.endpoint.list(),
            cfg,
            defs,
            host,
            interval: crate::units::format_duration(interval),
            cursor_file,
            cursor,
            saved: None,
            dirty: false,
            shared,
            rx,
            at: 0,
            backoff,
            logged: None,
            refusals_logged: Default::default(),
            skipped_logged: false,
        }
    }

    /// Writes the cursor if it moved since it was last written. A failure
    /// keeps it in memory: a restart sends those Samples again.
    fn save_cursor(&mut self) {
        let Some(c) = self.cursor.as_ref().filter(|_| self.dirty) else {
            return;
        };
        if let Err(e) = c.save(&self.cursor_file) {
            log::warn!("export: {}", crate::error_chain(&e));
        }
        self.saved = Some(Instant::now());
        self.dirty = false;
    }

    /// Sleeps `d` (a stop drops the whole future, this wait with it).
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn failed(&mut self, e: &ExportError) {
        let msg = e.to_string();
        if self.logged.as_deref() != Some(msg.as_str()) {
            log::warn!("export: {msg}; retrying with backoff");
            self.logged = Some(msg.clone());
        }
        let mut s = lock(&self.shared);
        s.status.state = "retrying".into();
        s.status.last_error = Some(msg);
        s.status.last_error_ms = Some(crate::units::now_ms());
    }

    async fn run(&mut self) {
        let mut session: Option<client::Session> = None;
        // A batch not acknowledged yet: sent again, not asked for again.
        let mut pending: Option<Vec<Sample>> = None;
        loop {
            if session.is_none() {
                let ep = self.endpoints[self.at % self.endpoints.len()].clone();
                {
                    let mut s = lock(&self.shared);
                    s.status.endpoint = ep.clone();
                    s.status.connects += 1;
                }
                match client::Session::open(&self.cfg, &ep, &self.defs, &self.interval).await {
                    Ok(s) => {
                        let unusable = s.revisions.iter().filter(|r| r.is_none()).count();
                        log::info!(
                            "export: writing to BanyanDB at {ep}, group {} ({} measures{})",
                            self.cfg.group,
                            s.revisions.len() - unusable,
                            if unusable > 0 {
                                format!(", {unusable} left out")
                            } else {
                                String::new()
                            }
                        );
                        self.logged = None;
                        self.backoff.reset();
                        let mut st = lock(&self.shared);
                        st.status.state = "connected".into();
                        st.status.measures_unusable = unusable as u32;
                        session = Some(s);
                    }
                    Err(e) => {
                        self.failed(&e);
                        self.at += 1;
                        let d = self.backoff.delay();
                        self.sleep(d).await;
                        continue;
                    }
                }
            }
            let samples = match pending.take() {
                Some(p) => p,
                None => match self.next_batch().await {
                    Some(b) => b,
                    None => break,
                },
            };
            // Caught up: what is new goes out every send_interval.
            let caught_up = samples.len() < self.cfg.batch;
            if samples.is_empty() {
                self.sleep(self.cfg.send_interval.0).await;
                continue;
            }
            let Some(s) = session.as_mut() else { continue };
            match self.send(s, &samples).await {
                Ok(true) if caught_up => self.sleep(self.cfg.send_interval.0).await,
                Ok(true) => {}
                Ok(false) => {
                    // Not applied yet: the same batch, later.
                    pending = Some(samples);
                    let d = self.backoff.delay();
                    self.sleep(d).await;
                }
                Err(e) => {
                    self.failed(&e);
                    pending = Some(samples);
                    session = None;
                    self.at += 1;
                    let d = self.backoff.delay();
                    self.sleep(d).await;
                }
            }
        }
        lock(&self.shared).status.state = "stopped".into();
    }

    /// Asks the loop for the Samples after the cursor and waits for them
    /// (the loop answers at its next tick); `None` when the loop's side
    /// is gone.
    async fn next_batch(&mut self) -> Option<Vec<Sample>> {
        lock(&self.shared).want = Some(Want {
            after_start_ms: self.cursor.as_ref().map(|c| c.start_ms),
            max: self.cfg.batch,
        });
        let b = self.rx.recv().await?;
        if let Some(n) = b.newest_end_ms {
            lock(&self.shared).status.newest_stored_ms = Some(n);
        }
        // Retention dropped what the cursor points past: the first Sample
        // after the cursor is the oldest the history holds, and it starts
        // later than the cursor ends. Counted, logged once. (An upper
        // bound: if iomond was also stopped in that gap, the time it did
        // not run is in it too.)
        if let (Some(c), Some(first)) = (&self.cursor, b.samples.first()) {
            if first.start_ms > c.end_ms && b.oldest_start_ms == Some(first.start_ms) {
                let gap = first.start_ms - c.end_ms;
                // Consecutive Samples meet; a second is a tick's jitter.
                if gap > 1_000 {
                    lock(&self.shared).status.skipped_ms += gap;
                    if !self.skipped_logged {
                        log::warn!(
                            "export: the history no longer holds {} of Samples after the last one BanyanDB has ({}); \
                             retention dropped them before they could be sent",
                            crate::units::format_duration(Duration::from_millis(gap)),
                            crate::units::format_utc(c.end_ms)
                        );
                        self.skipped_logged = true;
                    }
                }
            }
        }
        Some(b.samples)
    }

    /// Sends one batch; `Ok(true)` when it is done with (acknowledged, or
    /// refused for good), `Ok(false)` when BanyanDB asks for it later.
    async fn send(
        &mut self,
        s: &mut client::Session,
        samples: &[Sample],
    ) -> Result<bool, ExportError> {
        let started = Instant::now();
        let mut points = Vec::new();
        for smp in samples {
            points.extend(schema::points(smp, &self.defs, &self.cfg));
        }
        let mut out = s.write(&self.host, &self.defs, &points).await?;
        if !out.expired.is_empty() {
            // The schema changed under us: re-read each revision, send
            // the batch again (writes are idempotent).
            for m in out.expired.clone() {
                s.reread(m, &self.defs[m]).await?;
                lock(&self.shared).status.schema_rereads += 1;
                log::info!(
                    "export: BanyanDB's schema of {}/{} is newer than ours; re-read its revision",
                    self.cfg.group,
                    self.defs[m].name
                );
            }
            out = s.write(&self.host, &self.defs, &points).await?;
            if !out.expired.is_empty() {
                return Err(ExportError::Call {
                    endpoint: s.endpoint.clone(),
                    what: "writing",
                    why: "the schema's revision is still expired after re-reading it".into(),
                });
            }
        }
        if out.not_applied {
            let mut st = lock(&self.shared);
            st.status.last_error = Some(
                "BanyanDB has not applied the schema yet (STATUS_SCHEMA_NOT_APPLIED); retrying"
                    .into(),
            );
            st.status.last_error_ms = Some(crate::units::now_ms());
            return Ok(false);
        }
        let refused: u64 = out.refused.values().map(|(n, _)| n).sum();
        for (status, (n, first)) in &out.refused {
            if self.refusals_logged.insert(status.clone()) {
                log::error!(
                    "export: BanyanDB refused {n} data points with {status} (first: {first}); a bug in iomon: please report it"
                );
            }
        }
        let last = samples.last().map(|l| (l.start_ms, l.end_ms));
        if let Some((start_ms, end_ms)) = last {
            let c = Cursor {
                start_ms,
                end_ms,
                group: self.cfg.group.clone(),
            };
            self.cursor = Some(c);
            self.dirty = true;
            if self.saved.is_none_or(|t| t.elapsed() >= CURSOR_EVERY) {
                self.save_cursor();
            }
        }
        {
            let mut st = lock(&self.shared);
            st.status.points_written += out.succeeded;
            st.status.points_refused += refused;
            st.status.samples_written += samples.len() as u64;
            st.status.batches += 1;
            st.status.newest_written_ms = last.map(|l| l.1);
            st.status.state = "connected".into();
        }
        self.backoff.reset();
        // The rate bound: this batch's share of a second per point.
        let budget = Duration::from_secs_f64(
            points.len() as f64 / f64::from(self.cfg.max_points_per_second),
        );
        if let Some(rest) = budget.checked_sub(started.elapsed()) {
            self.sleep(rest).await;
        }
        Ok(true)
    }
}

/// The machine's name (the `host` tag).
fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let d: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        for (d, base) in d.iter().zip([1u64, 2, 4, 8, 8, 8]) {
            let base = Duration::from_secs(base);
            assert!(*d >= base && *d <= base + base / 4, "{d:?} for {base:?}");
        }
        b.reset();
        assert!(b.delay() < Duration::from_millis(1251));
    }

    #[test]
    fn behind_is_what_the_history_has_past_what_was_written() {
        let mut s = ExportStatus {
            newest_stored_ms: Some(10_000),
            newest_written_ms: Some(7_500),
            ..Default::default()
        };
        assert_eq!(s.behind_ms(), Some(2_500));
        s.newest_written_ms = None;
        assert_eq!(s.behind_ms(), None);
    }
}
