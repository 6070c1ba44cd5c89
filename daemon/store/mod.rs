//! Rolling history: every Sample kept raw, rolled up per minute and per
//! hour, retained by age per tier and by a total size cap.
//!
//! Layout: one redb file (`history.redb`) with a table per tier (`raw`,
//! `1m`, `1h`); keys are the start time (ms) of the Sample or bucket, so
//! ordered range scans are time-range scans; values are a format byte and a
//! bincode Sample. The rollup buckets in progress live in memory and are
//! written when they close; on open they are rebuilt from the raw tier, so a
//! crash loses nothing that was flushed. Ticks are queued in memory; a flush
//! (timer, shutdown) commits them durably in one transaction.
//!
//! Why redb and not sled: with sled 0.34 the accelerated 30-day soak could
//! not hold a 64 MiB cap: with live data held at 21 MiB its files grew past
//! 128 MiB and kept growing (BENCHMARKS.md). redb reuses freed pages, and
//! when the file is still over the cap after trimming, it is compacted.
//!
//! A database that will not open, or carries another format version, is
//! renamed aside (never deleted) and a fresh one is started; a database
//! another process holds is waited for, then refused.

mod codec;
mod recovery;
mod retention;
mod rollup;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::sample::Sample;
pub use codec::{decode_sample, encode_sample, v1, v2};
use recovery::aside_path;
use retention::Retention;
use rollup::merge_into;
use writer::{Job, Outcome, Writer};

/// Where the store is and how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub path: String,
    pub bytes: u64,
    pub oldest_ms: Option<u64>,
    pub newest_ms: Option<u64>,
    pub write_errors: u64,
    /// Where a database that would not open was moved, if one was.
    pub moved_aside: Option<String>,
}

/// Samples of a time range, merged to a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryReport {
    /// Resolution of the tier the points come from.
    pub resolution_ms: u64,
    /// Step the points were merged to.
    pub step_ms: u64,
    /// Oldest data the store holds (any tier), if any.
    pub oldest_ms: Option<u64>,
    pub points: Vec<Sample>,
}

/// Bumped when the on-disk layout changes. A value's first byte says which
/// Sample encoding it holds (see [`codec`]), so a new Sample encoding does
/// not change this.
pub const FORMAT_VERSION: u32 = 2;
/// Samples kept in memory while the disk refuses writes.
const MAX_PENDING: usize = 4096;
/// The file is allowed this many times the live keys and values before the
/// oldest data is trimmed (B-tree pages are partly empty, and a commit needs
/// room for the pages it replaces).
const AMPLIFICATION: u64 = 2;
const FILE: &str = "history.redb";

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const TABLES: [TableDefinition<u64, &[u8]>; 3] = [
    TableDefinition::new("raw"),
    TableDefinition::new("1m"),
    TableDefinition::new("1h"),
];

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the history store at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("cannot read the history store at {path}")]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create the history store directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the history store at {0} is locked by another process (is another iomond running with this state directory?)")]
    Locked(PathBuf),
    #[error("failed to move the unreadable store {from} aside to {to}")]
    MoveAside {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history store I/O failed")]
    Db(#[source] redb::Error),
    #[error("the history store's writer thread stopped (a bug: please report it); committing on the event loop from now on")]
    WriterGone,
    #[error("the range ends ({}) before it starts ({}): ask for an end after the start", crate::units::format_utc(*until_ms), crate::units::format_utc(*since_ms))]
    BadRange { since_ms: u64, until_ms: u64 },
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    pub retention_raw: Duration,
    pub retention_1m: Duration,
    pub retention_1h: Duration,
    pub max_bytes: u64,
    /// Processes kept in rollups.
    pub top_k: usize,
    /// Resolution of the raw tier (the drain interval).
    pub raw_resolution_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Raw,
    Minute,
    Hour,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

    fn table(self) -> TableDefinition<'static, u64, &'static [u8]> {
        TABLES[self as usize]
    }
}

/// A value queued for the disk: its tier, its key (ms), the encoded Sample.
type Entry = (Tier, u64, Vec<u8>);

/// What the database holds, kept by whoever commits (the writer thread
/// while a commit is in flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ledger {
    /// Bytes of keys and values held, all tiers.
    live_bytes: u64,
    counts: [u64; 3],
}

pub struct Store {
    dir: PathBuf,
    /// Shared with the writer thread for the commit in flight only.
    db: Arc<Database>,
    opts: StoreOptions,
    /// Rollup buckets in progress: (bucket start, merged Sample).
    open_minute: Option<(u64, Sample)>,
    open_hour: Option<(u64, Sample)>,
    /// Samples not committed yet (queued since the last flush, or refused
    /// by the disk).
    pending: VecDeque<Entry>,
    /// Handed to the writer thread, not known to be committed yet.
    in_flight: Option<Arc<Vec<Entry>>>,
    /// Started by the first background flush (`None` until then, and for
    /// good if it stopped: then flushes commit on the caller's thread).
    writer: Option<Writer>,
    writer_failed: bool,
    /// Newest key written per tier: timestamps never go backwards in a tier.
    newest: [u64; 3],
    pub write_errors: u64,
    in_error: bool,
    /// The database must be reopened after an I/O error (redb refuses
    /// further writes until then).
    reopen: bool,
    pub moved_aside: Option<PathBuf>,
    ledger: Ledger,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let mut moved_aside = None;
        let db = match Self::open_retrying(dir)? {
            Ok(db) => db,
            Err(why) => {
                let to = aside_path(dir);
                std::fs::rename(dir, &to).map_err(|source| StoreError::MoveAside {
                    from: dir.to_path_buf(),
                    to: to.clone(),
                    source,
                })?;
                log::error!(
                    "history store {} could not be used ({why}); moved it to {} and started a fresh one",
                    dir.display(),
                    to.display()
                );
                moved_aside = Some(to);
                match Self::open_retrying(dir)? {
                    Ok(db) => db,
                    Err(why) => {
                        return Err(StoreError::Open {
                            path: dir.to_path_buf(),
                            source: redb::Error::Corrupted(why),
                        })
                    }
                }
            }
        };
        let mut store = Store {
            dir: dir.to_path_buf(),
            db: Arc::new(db),
            opts,
            open_minute: None,
            open_hour: None,
            pending: VecDeque::new(),
            in_flight: None,
            writer: None,
            writer_failed: false,
            newest: [0; 3],
            write_errors: 0,
            in_error: false,
            reopen: false,
            moved_aside,
            ledger: Ledger::default(),
        };
        store.scan()?;
        store.rebuild_open_buckets()?;
        Ok(store)
    }

    /// Counts entries and live bytes, and finds the newest key per tier.
    fn scan(&mut self) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        self.ledger.live_bytes = 0;
        for tier in Tier::ALL {
            let t = tx.open_table(tier.table()).map_err(db_err)?;
            self.ledger.counts[tier as usize] = t.len().map_err(db_err)?;
            if let Some((k, _)) = t.last().map_err(db_err)? {
                self.newest[tier as usize] = k.value();
            }
            for item in t.iter().map_err(db_err)? {
                let (_, v) = item.map_err(db_err)?;
                self.ledger.live_bytes += 8 + v.value().len() as u64;
            }
        }
        Ok(())
    }

    /// Appends one tick's Sample and updates the rollups; closed rollup
    /// buckets are queued too. Everything queued is committed by `flush`;
    /// a failed commit is counted and retried at the next flush.
    pub fn append(&mut self, s: &Sample) {
        // Timestamps never go backwards in a tier (clock set back).
        let ms = s.start_ms.max(self.newest[Tier::Raw as usize] + 1);
        self.pending.push_back((Tier::Raw, ms, encode_sample(s)));
        self.newest[Tier::Raw as usize] = ms;
        let top = self.opts.top_k;
        for (tier, width) in [(Tier::Minute, MINUTE_MS), (Tier::Hour, HOUR_MS)] {
            let bucket = ms - ms % width;
            let slot = match tier {
                Tier::Minute => &mut self.open_minute,
                _ => &mut self.open_hour,
            };
            if slot.as_ref().is_some_and(|(start, _)| *start != bucket) {
                // Bucket starts follow the raw keys, which never go
                // backwards, so closed buckets are in order too.
                let (start, merged) = slot.take().expect("checked above");
                self.pending
                    .push_back((tier, start, encode_sample(&merged)));
                self.newest[tier as usize] = start;
            }
            let slot = match tier {
                Tier::Minute => &mut self.open_minute,
                _ => &mut self.open_hour,
            };
            merge_into(slot, bucket, s, top);
        }
        // Committed at the next flush (queries see pending Samples too).
        if self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
            self.write_errors += 1;
        }
    }

    fn note_error(&mut self, what: &str, e: StoreError) {
        self.write_errors += 1;
        if let StoreError::Db(redb::Error::PreviousIo | redb::Error::Io(_)) = &e {
            self.reopen = true;
        }
        if !self.in_error {
            log::error!(
                "history store {}: {what} failed ({}); keeping up to {MAX_PENDING} samples in memory and retrying",
                self.dir.display(),
                crate::error_chain(&e)
            );
            self.in_error = true;
        }
    }

    /// Commits what is queued durably (fsync), then applies retention and
    /// the size cap, on this thread, after the commit in flight if there
    /// is one: done when it returns (shutdown, tests, a copy's store).
    pub fn flush(&mut self, now_ms: u64) {
        if let Some(r) = self.writer.as_mut().and_then(Writer::wait) {
            self.settle(r);
        }
        if let Some(job) = self.job(now_ms) {
            let r = job.run();
            self.settle(Ok(r));
        }
    }

    /// The same on the store's writer thread: returns at once, and
    /// [`Store::poll_flush`] takes the outcome at a later loop turn. While
    /// a commit is in flight, what was queued since waits for the next
    /// flush. Queries see everything in between.
    pub fn flush_in_background(&mut self, now_ms: u64) {
        self.poll_flush();
        if self.writer.as_ref().is_some_and(Writer::busy) {
            return;
        }
        if self.writer.is_none() && !self.writer_failed {
            match Writer::start() {
                Ok(w) => self.writer = Some(w),
                Err(e) => {
                    log::warn!(
                        "history store {}: could not start its writer thread ({e}); committing on the event loop",
                        self.dir.display()
                    );
                    self.writer_failed = true;
                }
            }
        }
        let Some(job) = self.job(now_ms) else {
            return;
        };
        let job = match self.writer.as_mut() {
            Some(w) => match w.submit(job) {
                Ok(()) => return,
                Err(job) => {
                    self.settle(Err(StoreError::WriterGone));
                    job
                }
            },
            None => job,
        };
        let r = job.run();
        self.settle(Ok(r));
    }

    /// Takes the outcome of a background flush if it is done (cheap: call
    /// it every loop turn).
    pub fn poll_flush(&mut self) {
        if let Some(r) = self.writer.as_mut().and_then(Writer::done) {
            self.settle(r);
        }
    }

    /// The next commit: everything queued moves in flight. `None` when the
    /// database needed reopening and could not be reopened.
    fn job(&mut self, now_ms: u64) -> Option<Job> {
        if !self.try_reopen() {
            self.write_errors += 1;
            return None;
        }
        let entries = Arc::new(self.pending.drain(..).collect::<Vec<Entry>>());
        self.in_flight = Some(Arc::clone(&entries));
        Some(Job {
            db: Arc::clone(&self.db),
            entries,
            retention: Retention::new(&self.opts, now_ms),
            ledger: self.ledger,
        })
    }

    /// What a commit did, applied: the ledger, the errors; entries that
    /// were not written go back to the head of the queue.
    fn settle(&mut self, r: Result<Outcome, StoreError>) {
        let entries = self.in_flight.take();
        let o = match r {
            Ok(o) => o,
            Err(e) => {
                if matches!(e, StoreError::WriterGone) && !self.writer_failed {
                    log::error!("history store {}: {e}", self.dir.display());
                    self.writer = None;
                    self.writer_failed = true;
                }
                Outcome {
                    ledger: self.ledger,
                    written: Err(e),
                    retained: Ok(()),
                }
            }
        };
        if let Err(e) = o.written {
            if let Some(entries) = entries {
                let entries = Arc::try_unwrap(entries).unwrap_or_else(|a| (*a).clone());
                for e in entries.into_iter().rev() {
                    self.pending.push_front(e);
                }
            }
            self.note_error("write", e);
            while self.pending.len() > MAX_PENDING {
                self.pending.pop_front();
            }
            return;
        }
        self.ledger = o.ledger;
        if self.in_error {
            log::info!("history store {}: writing again", self.dir.display());
            self.in_error = false;
        }
        if let Err(e) = o.retained {
            self.note_error("retention", e);
            return;
        }
        // The file does not shrink by itself: compact when it is over the
        // cap although the live data fits (rare; on this thread, with no
        // commit in flight: compaction needs the database to itself).
        let fits = self.ledger.live_bytes <= self.opts.max_bytes / AMPLIFICATION;
        if fits && self.size_on_disk() > self.opts.max_bytes {
            let Some(db) = Arc::get_mut(&mut self.db) else {
                return;
            };
            match db.compact() {
                Ok(_) => log::info!(
                    "history store {}: compacted to {} bytes",
                    self.dir.display(),
                    self.size_on_disk()
                ),
                Err(e) => log::warn!(
                    "history store {}: compaction failed: {e}",
                    self.dir.display()
                ),
            }
        }
    }

    /// Size of the database file.
    pub fn size_on_disk(&self) -> u64 {
        std::fs::metadata(self.dir.join(FILE))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Bytes of keys and values held (what the size cap bounds).
    pub fn live_bytes(&self) -> u64 {
        self.ledger.live_bytes
    }

    pub fn oldest_ms(&self) -> Option<u64> {
        let tx = self.db.begin_read().ok()?;
        Tier::ALL
            .iter()
            .filter_map(|t| {
                tx.open_table(t.table())
                    .ok()?
                    .first()
                    .ok()?
                    .map(|(k, _)| k.value())
            })
            .min()
    }

    fn newest_ms(&self) -> Option<u64> {
        (self.ledger.counts[Tier::Raw as usize] > 0).then_some(self.newest[Tier::Raw as usize])
    }

    pub fn status(&self) -> StoreStatus {
        StoreStatus {
            path: self.dir.join(FILE).display().to_string(),
            bytes: self.size_on_disk(),
            oldest_ms: self.oldest_ms(),
            newest_ms: self.newest_ms(),
            write_errors: self.write_errors,
            moved_aside: self.moved_aside.as_ref().map(|p| p.display().to_string()),
        }
    }

    /// Entries in a tier (committed).
    pub fn len(&self, tier: Tier) -> usize {
        self.ledger.counts[tier as usize] as usize
    }

    pub fn set_raw_resolution(&mut self, ms: u64) {
        self.opts.raw_resolution_ms = ms.max(1);
    }

    pub fn set_options(&mut self, opts: StoreOptions) {
        self.opts = opts;
    }

    fn resolution(&self, t: Tier) -> u64 {
        match t {
            Tier::Raw => self.opts.raw_resolution_ms,
            Tier::Minute => MINUTE_MS,
            Tier::Hour => HOUR_MS,
        }
    }

    /// Samples in [since, until), from the coarsest tier whose resolution
    /// is at most `step` (the finest tier if the step is finer still),
    /// merged to `step` (buckets aligned to multiples of it), oldest first;
    /// at the raw resolution itself each Sample is a point. A rollup is
    /// keyed by its bucket's start, so the part of the window before the
    /// tier's first whole bucket comes from the finer tiers ([`Self::window`]):
    /// the first point then covers less than a step, and says so in its
    /// start and duration.
    /// Without a step, one that gives at most about 500 points.
    pub fn range(
        &self,
        since_ms: u64,
        until_ms: u64,
        step_ms: Option<u64>,
    ) -> Result<HistoryReport, StoreError> {
        if until_ms < since_ms {
            return Err(StoreError::BadRange { since_ms, until_ms });
        }
        let span = until_ms - since_ms;
        let step = step_ms
            .unwrap_or_else(|| (span / 500).max(self.opts.raw_resolution_ms))
            .max(1);
        let tier = Tier::ALL
            .iter()
            .rev()
            .copied()
            .find(|t| self.resolution(*t) <= step)
            .unwrap_or(Tier::Raw);
        let step = step.max(self.resolution(tier));
        // At the raw tier's own resolution every Sample is a point: ticks
        // jitter around their phase, so buckets of one interval would now
        // and then hold two Samples and leave the next bucket empty.
        let each = tier == Tier::Raw && step == self.resolution(tier);
        let mut points: Vec<Sample> = Vec::new();
        let mut cur: Option<(u64, Sample)> = None;
        let top = self.opts.top_k;
        let mut scan = |ms: u64, s: &Sample, points: &mut Vec<Sample>| {
            // Buckets on multiples of the step (not of the query's start):
            // the same Samples give the same points whenever it is asked.
            let bucket = if each { ms } else { ms - ms % step };
            match &mut cur {
                Some((b, acc)) if *b == bucket => acc.merge(s, top),
                _ => {
                    if let Some((_, done)) = cur.take() {
                        points.push(done);
                    }
                    cur = Some((bucket, s.clone()));
                }
            }
        };
        // The window's head, before the tier's first whole bucket.
        if tier != Tier::Raw {
            let width = self.resolution(tier);
            let head_end = since_ms.div_ceil(width).saturating_mul(width).min(until_ms);
            if since_ms < head_end {
                for s in self.window(since_ms, head_end)? {
                    scan(s.start_ms, &s, &mut points);
                }
            }
        }
        // Keys read here that are in flight too (committed between the
        // commit's start and this read) are not scanned twice.
        let mut committed = std::collections::HashSet::new();
        {
            let tx = self.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(tier.table()).map_err(db_err)?;
            let first_in_flight = self
                .in_flight
                .iter()
                .flat_map(|v| v.iter())
                .filter(|(t, _, _)| *t == tier)
                .map(|(_, ms, _)| *ms)
                .min()
                .unwrap_or(u64::MAX);
            for item in t.range(since_ms..until_ms).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let Some(s) = decode_sample(v.value()) else {
                    continue;
                };
                if k.value() >= first_in_flight {
                    committed.insert(k.value());
                }
                scan(k.value(), &s, &mut points);
            }
        }
        // Not committed yet, oldest first: the commit in flight (what it
        // has written already was in the read above), what is queued, the
        // rollup in progress.
        let queued = self.in_flight.iter().flat_map(|v| v.iter());
        for (t, ms, v) in queued.chain(self.pending.iter()) {
            if *t == tier && *ms >= since_ms && *ms < until_ms && !committed.contains(ms) {
                if let Some(s) = decode_sample(v) {
                    scan(*ms, &s, &mut points);
                }
            }
        }
        let open = match tier {
            Tier::Minute => self.open_minute.as_ref(),
            Tier::Hour => self.open_hour.as_ref(),
            Tier::Raw => None,
        };
        if let Some((ms, s)) = open {
            if *ms >= since_ms && *ms < until_ms {
                scan(*ms, s, &mut points);
            }
        }
        if let Some((_, done)) = cur.take() {
            points.push(done);
        }
        Ok(HistoryReport {
            resolution_ms: self.resolution(tier),
            step_ms: step,
            oldest_ms: self.oldest_ms(),
            points,
        })
    }
}

impl Store {
    /// The Samples of [since, until) for one merged answer (`top
    /// --since`): every raw Sample whose start is in the window counted
    /// once, each part of the window from the coarsest tier whose buckets
    /// lie wholly in it: hour buckets between the first and the last hour
    /// boundary, minute buckets between those and the minute boundaries,
    /// raw Samples at the edges. (A rollup is keyed by its bucket's start:
    /// one tier's range leaves out the bucket that began before `since`
    /// and takes in all of the one `until` falls in; from the hour tier,
    /// up to an hour of the answer either way.) What a tier no longer
    /// keeps (retention) is missing from its part.
    pub fn window(&self, since_ms: u64, until_ms: u64) -> Result<Vec<Sample>, StoreError> {
        if until_ms < since_ms {
            return Err(StoreError::BadRange { since_ms, until_ms });
        }
        let ceil = |ms: u64, width: u64| ms.div_ceil(width).saturating_mul(width);
        let floor = |ms: u64, width: u64| ms - ms % width;
        let lo_m = ceil(since_ms, MINUTE_MS).min(until_ms);
        let hi_m = floor(until_ms, MINUTE_MS).max(lo_m);
        let lo_h = ceil(lo_m, HOUR_MS).min(hi_m);
        let hi_h = floor(hi_m, HOUR_MS).max(lo_h);
        let mut points = Vec::new();
        // A step of 1 takes the raw tier; a minute's, the minute tier.
        for (from, to, step) in [
            (since_ms, lo_m, 1),
            (lo_m, lo_h, MINUTE_MS),
            (lo_h, hi_h, HOUR_MS),
            (hi_h, hi_m, MINUTE_MS),
            (hi_m, until_ms, 1),
        ] {
            if from < to {
                points.extend(self.range(from, to, Some(step))?.points);
            }
        }
        Ok(points)
    }

    /// Raw Samples whose start is after `after_ms` (all, with `None`),
    /// oldest first, at most `max`: committed, in flight and queued alike
    /// (what the exporter sends from its cursor).
    pub fn raw_after(&self, after_ms: Option<u64>, max: usize) -> Result<Vec<Sample>, StoreError> {
        let from = after_ms.map_or(0, |a| a.saturating_add(1));
        let mut out: std::collections::BTreeMap<u64, Sample> = std::collections::BTreeMap::new();
        {
            let tx = self.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(Tier::Raw.table()).map_err(db_err)?;
            for item in t.range(from..).map_err(db_err)?.take(max) {
                let (k, v) = item.map_err(db_err)?;
                if let Some(s) = decode_sample(v.value()) {
                    out.insert(k.value(), s);
                }
            }
        }
        let queued = self.in_flight.iter().flat_map(|v| v.iter());
        for (t, ms, v) in queued.chain(self.pending.iter()) {
            if *t == Tier::Raw && *ms >= from && !out.contains_key(ms) {
                if let Some(s) = decode_sample(v) {
                    out.insert(*ms, s);
                }
            }
        }
        Ok(out.into_values().take(max).collect())
    }

    /// The start of the oldest raw Sample held (committed or not yet).
    pub fn oldest_raw_ms(&self) -> Option<u64> {
        let committed = (|| {
            let tx = self.db.begin_read().ok()?;
            let t = tx.open_table(Tier::Raw.table()).ok()?;
            let first = t.first().ok()?;
            first.map(|(k, _)| k.value())
        })();
        let queued = self.in_flight.iter().flat_map(|v| v.iter());
        let pending = queued
            .chain(self.pending.iter())
            .filter(|(t, _, _)| *t == Tier::Raw)
            .map(|(_, ms, _)| *ms)
            .min();
        committed.into_iter().chain(pending).min()
    }
}

/// A stopped iomond's history, read without touching it: the file is
/// copied into a private temporary directory and opened there, so a store
/// left by a crash is repaired in the copy, never in place. Refused when a
/// running iomond holds the file (then ask it). The copy goes on drop.
pub struct StoreCopy {
    pub store: Store,
    _dir: RemovedOnDrop,
}

/// A directory removed with everything in it when dropped.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl StoreCopy {
    /// `path`: the store's file or the directory holding `history.redb`.
    pub fn open(path: &Path) -> Result<StoreCopy, StoreError> {
        let file = if path.is_dir() {
            path.join(FILE)
        } else {
            path.to_path_buf()
        };
        let copy_err = |source| StoreError::Copy {
            path: file.clone(),
            source,
        };
        std::fs::metadata(&file).map_err(copy_err)?;
        // Held by a running iomond: its lock refuses even a reader. A file
        // that needs repair is opened (and repaired) as a copy below.
        if let Err(redb::DatabaseError::DatabaseAlreadyOpen) = redb::ReadOnlyDatabase::open(&file) {
            return Err(StoreError::Locked(file));
        }
        let dir = std::env::temp_dir().join(format!("iomonctl-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .map_err(copy_err)?;
        let guard = RemovedOnDrop(dir.clone());
        std::fs::copy(&file, dir.join(FILE)).map_err(copy_err)?;
        let opts = StoreOptions {
            retention_raw: Duration::MAX,
            retention_1m: Duration::MAX,
            retention_1h: Duration::MAX,
            max_bytes: u64::MAX,
            top_k: usize::MAX,
            raw_resolution_ms: 1000,
        };
        let mut store = Store::open(&dir, opts)?;
        if store.moved_aside.is_some() {
            return Err(StoreError::Open {
                path: file,
                source: redb::Error::Corrupted("not a history store iomond can read".into()),
            });
        }
        let raw = store.raw_resolution_of_data();
        store.set_raw_resolution(raw);
        Ok(StoreCopy { store, _dir: guard })
    }
}

impl Store {
    /// The drain interval the raw tier was written at: the median length
    /// of its newest Samples (1 s when it is empty).
    fn raw_resolution_of_data(&self) -> u64 {
        let lens = (|| -> Result<Vec<u64>, StoreError> {
            let tx = self.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(Tier::Raw.table()).map_err(db_err)?;
            let mut v = Vec::new();
            for item in t.iter().map_err(db_err)?.rev().take(32) {
                let (_, s) = item.map_err(db_err)?;
                if let Some(s) = decode_sample(s.value()) {
                    v.push(s.end_ms.saturating_sub(s.start_ms));
                }
            }
            Ok(v)
        })()
        .unwrap_or_default();
        let mut lens: Vec<u64> = lens.into_iter().filter(|l| *l > 0).collect();
        lens.sort_unstable();
        lens.get(lens.len() / 2).copied().unwrap_or(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi;
    use crate::family::Section;

    const DONTNEED_OK: usize = abi::fadvise::advice::DONTNEED * abi::fadvise::result::N;

    fn opts() -> StoreOptions {
        StoreOptions {
            retention_raw: Duration::from_secs(48 * 3600),
            retention_1m: Duration::from_secs(14 * 86400),
            retention_1h: Duration::from_secs(400 * 86400),
            max_bytes: 256 << 20,
            top_k: 10,
            raw_resolution_ms: 10_000,
        }
    }

    fn sample(start_ms: u64, dontneed: u64) -> Sample {
        let mut c = vec![0; abi::FADVISE.ncounters];
        c[DONTNEED_OK] = dontneed;
        Sample {
            start_ms,
            end_ms: start_ms + 10_000,
            sections: [(
                "fadvise".to_string(),
                Section {
                    counters: c,
                    hists: vec![],
                },
            )]
            .into(),
            ..Default::default()
        }
    }

    fn total(r: &HistoryReport) -> u64 {
        r.points
            .iter()
            .map(|p| p.section("fadvise").unwrap().get(DONTNEED_OK).unwrap())
            .sum()
    }

    const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;

    #[test]
    fn rollups_sum_and_queries_pick_tiers() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(&dir.path().join("db"), opts()).unwrap();
        // 2 hours of 10 s ticks, 1 call each.
        for i in 0..720 {
            st.append(&sample(T0 + i * 10_000, 1));
        }
        st.flush(T0 + 7_200_000);
        assert_eq!(st.len(Tier::Raw), 720);
        assert_eq!(st.len(Tier::Minute), 119, "the last minute is still open");
        assert_eq!(st.len(Tier::Hour), 1, "the second hour is still open");

        let raw = st.range(T0, T0 + 600_000, Some(10_000)).unwrap();
        assert_eq!(raw.resolution_ms, 10_000);
        assert_eq!(raw.points.len(), 60);
        assert_eq!(total(&raw), 60);

        let m = st.range(T0, T0 + 7_200_000, Some(300_000)).unwrap();
        assert_eq!(
            m.resolution_ms, MINUTE_MS,
            "coarsest tier finer than the step"
        );
        assert_eq!(m.points.len(), 24);
        assert_eq!(
            total(&m),
            720,
            "rollups keep every count, open bucket included"
        );

        let h = st.range(T0, T0 + 7_200_000, Some(HOUR_MS)).unwrap();
        assert_eq!(h.resolution_ms, HOUR_MS);
        assert_eq!(h.points.len(), 2);
        assert_eq!(total(&h), 720);

        // Ticks jitter: two Samples starting in one interval's bucket are
        // still two points at the raw resolution, merged only when asked
        // for a coarser step.
        let dir2 = tempfile::tempdir().unwrap();
        let mut j = Store::open(&dir2.path().join("db"), opts()).unwrap();
        for start in [T0 + 9_990, T0 + 10_005, T0 + 19_999, T0 + 30_010] {
            j.append(&sample(start, 1));
        }
        j.flush(T0 + 40_000);
        let each = j.range(T0, T0 + 40_000, Some(10_000)).unwrap();
        assert_eq!(each.points.len(), 4);
        assert_eq!(total(&each), 4);
        let merged = j.range(T0, T0 + 40_000, Some(20_000)).unwrap();
        assert_eq!(merged.points.len(), 2);
        assert_eq!(total(&merged), 4);

        // Step finer than the finest tier: the raw resolution is used.
        let fine = st.range(T0, T0 + 60_000, Some(1)).unwrap();
        assert_eq!(fine.step_ms, 10_000);
        assert_eq!(fine.points.len(), 6);

        // Empty range, range before the data, and until < since.
        assert!(st
            .range(T0 - 10_000, T0 - 5_000, None)
            .unwrap()
            .points
            .is_empty());
        let before = st.range(T0 - 3_600_000, T0 + 20_000, Some(10_000)).unwrap();
        assert_eq!(before.oldest_ms, Some(T0));
        assert_eq!(before.points.len(), 2);
        assert!(matches!(
            st.range(5, 4, None),
            Err(StoreError::BadRange { .. })
        ));
    }

    /// Polls until the background commit is settled (at most 10 s).
    fn settled(st: &mut Store) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while st.in_flight.is_some() {
            assert!(std::time::Instant::now() < deadline, "commit never settled");
            st.poll_flush();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_window_counts_every_sample_in_it_once_across_tier_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(&dir.path().join("db"), opts()).unwrap();
        // 10 s ticks from 50 minutes before an hour to 30 minutes after it,
        // call i counting i + 1 (each Sample told apart in the sums).
        let first = T0 + HOUR_MS - 50 * MINUTE_MS;
        let n = 80 * 6;
        for i in 0..n {
            st.append(&sample(first + i * 10_000, i + 1));
        }
        st.flush(first + n * 10_000);
        let count = |since: u64, until: u64| -> u64 {
            (0..n)
                .filter(|i| (since..until).contains(&(first + i * 10_000)))
                .map(|i| i + 1)
                .sum()
        };
        let sum = |points: &[Sample]| -> u64 {
            points
                .iter()
                .map(|p| p.section("fadvise").unwrap().get(DONTNEED_OK).unwrap())
                .sum()
        };
        // Windows that begin inside a minute, inside an hour, on a
        // boundary; end in the open hour, in a closed one, at a boundary.
        let end = first + n * 10_000;
        for (since, until) in [
            (first + 25 * MINUTE_MS + 35_000, end),
            (first + 7_000, end),
            (
                T0 + HOUR_MS - 20 * MINUTE_MS - 5_000,
                T0 + HOUR_MS + 10 * MINUTE_MS + 3_000,
            ),
            (T0 + HOUR_MS, end),
            (first + 95_000, T0 + HOUR_MS - 60_000),
            (first + 95_000, first + 95_000),
        ] {
            let got = sum(&st.window(since, until).unwrap());
            assert_eq!(got, count(since, until), "window [{since}, {until})");
        }
        // A range from a rollup tier takes the part of the window before
        // its first whole bucket from the finer tiers: every Sample once,
        // the first point no older than the window.
        for (since, until, step) in [
            (
                T0 + HOUR_MS - 40 * MINUTE_MS,
                end,
                end - (T0 + HOUR_MS - 40 * MINUTE_MS),
            ),
            (first + 25 * MINUTE_MS + 35_000, end, HOUR_MS),
            (first + 7_000, end, 2 * HOUR_MS),
            (first + 95_000, T0 + HOUR_MS - 60_000, 5 * MINUTE_MS),
            (T0 + HOUR_MS + 61_000, end, MINUTE_MS),
            (T0 + HOUR_MS, end, HOUR_MS),
        ] {
            let r = st.range(since, until, Some(step)).unwrap();
            assert!(r.resolution_ms > 10_000, "a rollup tier for step {step}");
            let what = format!("range [{since}, {until}) step {step}");
            assert_eq!(sum(&r.points), count(since, until), "{what}");
            let firsts = r.points.first().map(|p| p.start_ms);
            assert!(firsts.is_some_and(|f| f >= since), "{what}: {firsts:?}");
            assert!(
                r.points.windows(2).all(|w| w[0].end_ms <= w[1].start_ms),
                "{what}: points in order, apart"
            );
        }
        assert!(matches!(st.window(5, 4), Err(StoreError::BadRange { .. })));
    }

    #[test]
    fn a_background_flush_commits_on_its_thread_and_queries_see_each_sample_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(&dir.path().join("db"), opts()).unwrap();
        for i in 0..30 {
            st.append(&sample(T0 + i * 10_000, 1));
        }
        st.flush_in_background(T0 + 300_000);
        assert!(st.writer.as_ref().is_some_and(Writer::busy));
        // Queued after the hand-over: waits for the next flush.
        st.append(&sample(T0 + 300_000, 1));
        // Before, during and after the commit: 31 Samples, each once.
        let all = |st: &Store| total(&st.range(T0, T0 + 400_000, Some(10_000)).unwrap());
        assert_eq!(all(&st), 31);
        settled(&mut st);
        assert_eq!(st.len(Tier::Raw), 30);
        assert_eq!(all(&st), 31);
        st.flush_in_background(T0 + 310_000);
        settled(&mut st);
        assert_eq!(st.len(Tier::Raw), 31);
        assert_eq!(all(&st), 31);
        assert_eq!(st.write_errors, 0);
        assert!(st.live_bytes() > 0);
    }

    #[test]
    fn a_commit_done_but_not_yet_settled_is_not_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(&dir.path().join("db"), opts()).unwrap();
        for i in 0..10 {
            st.append(&sample(T0 + i * 10_000, 1));
        }
        // The writer thread's side done, the loop's not yet: the entries
        // are in the database and still in flight.
        let job = st.job(T0 + 100_000).unwrap();
        let outcome = job.run();
        st.append(&sample(T0 + 100_000, 1));
        let all = |st: &Store| total(&st.range(T0, T0 + 200_000, Some(10_000)).unwrap());
        assert_eq!(all(&st), 11);
        st.settle(Ok(outcome));
        assert_eq!((st.len(Tier::Raw), all(&st)), (10, 11));
    }

    #[test]
    fn a_commit_lost_with_its_thread_goes_back_to_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(&dir.path().join("db"), opts()).unwrap();
        for i in 0..10 {
            st.append(&sample(T0 + i * 10_000, 1));
        }
        let job = st.job(T0 + 100_000).unwrap();
        st.append(&sample(T0 + 100_000, 1));
        drop(job);
        st.settle(Err(StoreError::WriterGone));
        assert_eq!(st.write_errors, 1);
        assert!(st.writer_failed, "no thread is started again");
        let keys: Vec<u64> = st
            .pending
            .iter()
            .filter(|(t, _, _)| *t == Tier::Raw)
            .map(|(_, ms, _)| *ms)
            .collect();
        assert_eq!(keys.first(), Some(&T0), "oldest first");
        assert_eq!(keys.len(), 11);
        // Flushes commit on the caller's thread from now on.
        st.flush_in_background(T0 + 110_000);
        assert!(st.in_flight.is_none());
        assert_eq!(st.len(Tier::Raw), 11);
        assert_eq!(
            total(&st.range(T0, T0 + 200_000, Some(10_000)).unwrap()),
            11
        );
    }

    #[test]
    fn retention_drops_old_data_per_tier() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.retention_raw = Duration::from_secs(3600);
        let mut st = Store::open(&dir.path().join("db"), o).unwrap();
        for i in 0..720 {
            st.append(&sample(T0 + i * 10_000, 1));
        }
        st.flush(T0 + 7_200_000);
        // Exactly the last hour of raw samples is kept.
        assert_eq!(st.len(Tier::Raw), 360);
        assert_eq!(
            st.range(T0, T0 + 7_200_000, Some(10_000))
                .unwrap()
                .points
                .len(),
            360
        );
        assert_eq!(st.len(Tier::Minute), 119, "1m retention is longer");
    }

    #[test]
    fn restart_keeps_flushed_data_and_rebuilds_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let mut st = Store::open(&path, opts()).unwrap();
            for i in 0..30 {
                st.append(&sample(T0 + i * 10_000, 2));
            }
            st.flush(T0 + 300_000);
            // Dropped without a clean close (no flush after this).
        }
        let st = Store::open(&path, opts()).unwrap();
        assert_eq!(st.len(Tier::Raw), 30);
        let h = st.range(T0, T0 + HOUR_MS, Some(HOUR_MS)).unwrap();
        assert_eq!(total(&h), 60, "the open hour was rebuilt from raw");
        assert!(st.moved_aside.is_none());
    }

    #[test]
    fn garbage_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(FILE), vec![0xa5u8; 8192]).unwrap();
        let mut st = Store::open(&path, opts()).unwrap();
        let aside = st.moved_aside.clone().expect("moved aside");
        assert!(aside.exists(), "kept, not deleted");
        assert_eq!(std::fs::read(aside.join(FILE)).unwrap(), vec![0xa5u8; 8192]);
        st.append(&sample(T0, 1));
        st.flush(T0 + 10_000);
        assert_eq!(st.len(Tier::Raw), 1, "fresh store works");
    }

    #[test]
    fn foreign_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let st = Store::open(&path, opts()).unwrap();
            let tx = st.db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("format_version", 999)
                .unwrap();
            tx.commit().unwrap();
        }
        let st = Store::open(&path, opts()).unwrap();
        assert!(st.moved_aside.is_some());
        // A truncated file too.
        let dir2 = tempfile::tempdir().unwrap();
        let p2 = dir2.path().join("db");
        {
            let mut st = Store::open(&p2, opts()).unwrap();
            st.append(&sample(T0, 1));
            st.flush(T0 + 10_000);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(p2.join(FILE))
            .unwrap();
        f.set_len(1000).unwrap();
        drop(f);
        let st = Store::open(&p2, opts()).unwrap();
        assert!(st.moved_aside.is_some(), "truncated file moved aside");
    }

    #[test]
    fn a_store_held_by_another_opener_is_not_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _held = Store::open(&path, opts()).unwrap();
        let t = std::time::Instant::now();
        match Store::open(&path, opts()) {
            Err(StoreError::Locked(p)) => assert_eq!(p, path),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, got a second store"),
        }
        assert!(
            t.elapsed() >= Duration::from_secs(4),
            "waited for a restarting holder"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing moved aside"
        );
    }

    #[test]
    fn size_cap_trims_the_finest_tier_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.max_bytes = 1 << 20;
        let mut st = Store::open(&dir.path().join("db"), o).unwrap();
        for i in 0..20_000 {
            st.append(&sample(T0 + i * 10_000, 1));
            if i % 100 == 99 {
                st.flush(T0 + i * 10_000);
            }
        }
        st.flush(T0 + 20_000 * 10_000);
        assert!(
            st.live_bytes() <= (1 << 20) / AMPLIFICATION,
            "{}",
            st.live_bytes()
        );
        assert!(st.len(Tier::Raw) < 20_000, "raw trimmed");
        assert!(st.len(Tier::Hour) > 0, "coarse tiers kept");
        assert!(
            st.size_on_disk() <= 2 << 20,
            "file {} bytes",
            st.size_on_disk()
        );
    }
}
