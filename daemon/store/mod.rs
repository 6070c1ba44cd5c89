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

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::sample::Sample;
pub use codec::{decode_sample, encode_sample, v1, v2};
use recovery::aside_path;
use rollup::merge_into;

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

pub struct Store {
    dir: PathBuf,
    db: Database,
    opts: StoreOptions,
    /// Rollup buckets in progress: (bucket start, merged Sample).
    open_minute: Option<(u64, Sample)>,
    open_hour: Option<(u64, Sample)>,
    /// Samples not yet committed because the disk refused them.
    pending: VecDeque<(Tier, u64, Vec<u8>)>,
    /// Newest key written per tier: timestamps never go backwards in a tier.
    newest: [u64; 3],
    pub write_errors: u64,
    in_error: bool,
    /// The database must be reopened after an I/O error (redb refuses
    /// further writes until then).
    reopen: bool,
    pub moved_aside: Option<PathBuf>,
    /// Bytes of keys and values held, all tiers.
    live_bytes: u64,
    counts: [u64; 3],
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
            db,
            opts,
            open_minute: None,
            open_hour: None,
            pending: VecDeque::new(),
            newest: [0; 3],
            write_errors: 0,
            in_error: false,
            reopen: false,
            moved_aside,
            live_bytes: 0,
            counts: [0; 3],
        };
        store.scan()?;
        store.rebuild_open_buckets()?;
        Ok(store)
    }

    /// Counts entries and live bytes, and finds the newest key per tier.
    fn scan(&mut self) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        self.live_bytes = 0;
        for tier in Tier::ALL {
            let t = tx.open_table(tier.table()).map_err(db_err)?;
            self.counts[tier as usize] = t.len().map_err(db_err)?;
            if let Some((k, _)) = t.last().map_err(db_err)? {
                self.newest[tier as usize] = k.value();
            }
            for item in t.iter().map_err(db_err)? {
                let (_, v) = item.map_err(db_err)?;
                self.live_bytes += 8 + v.value().len() as u64;
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

    fn write_pending(&mut self, durability: Durability) {
        if !self.try_reopen() {
            self.write_errors += 1;
            return;
        }
        let result = (|| -> Result<(u64, [u64; 3]), StoreError> {
            let mut tx = self.db.begin_write().map_err(db_err)?;
            tx.set_durability(durability).map_err(db_err)?;
            let mut added = 0u64;
            let mut counts = [0u64; 3];
            for tier in Tier::ALL {
                let mut t = tx.open_table(tier.table()).map_err(db_err)?;
                for (_, ms, value) in self.pending.iter().filter(|(t, _, _)| *t == tier) {
                    let old = t.insert(*ms, value.as_slice()).map_err(db_err)?;
                    match old {
                        Some(old) => {
                            added = (added + value.len() as u64)
                                .saturating_sub(old.value().len() as u64)
                        }
                        None => {
                            added += 8 + value.len() as u64;
                            counts[tier as usize] += 1;
                        }
                    }
                }
            }
            tx.commit().map_err(db_err)?;
            Ok((added, counts))
        })();
        match result {
            Ok((added, counts)) => {
                self.pending.clear();
                self.live_bytes += added;
                for (c, n) in self.counts.iter_mut().zip(counts) {
                    *c += n;
                }
                if self.in_error {
                    log::info!("history store {}: writing again", self.dir.display());
                    self.in_error = false;
                }
            }
            Err(e) => {
                self.note_error("write", e);
                while self.pending.len() > MAX_PENDING {
                    self.pending.pop_front();
                }
            }
        }
    }

    /// Commits durably (fsync). Also applies retention and the size cap.
    pub fn flush(&mut self, now_ms: u64) {
        self.write_pending(Durability::Immediate);
        if self.in_error {
            return;
        }
        if let Err(e) = self.enforce_retention(now_ms) {
            self.note_error("retention", e);
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
        self.live_bytes
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
        (self.counts[Tier::Raw as usize] > 0).then_some(self.newest[Tier::Raw as usize])
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
        self.counts[tier as usize] as usize
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
    /// merged to `step` (buckets aligned to multiples of it), oldest first.
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
        let mut points: Vec<Sample> = Vec::new();
        let mut cur: Option<(u64, Sample)> = None;
        let top = self.opts.top_k;
        let mut scan = |ms: u64, s: &Sample, points: &mut Vec<Sample>| {
            // Buckets on multiples of the step (not of the query's start):
            // the same Samples give the same points whenever it is asked.
            let bucket = ms - ms % step;
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
        {
            let tx = self.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(tier.table()).map_err(db_err)?;
            for item in t.range(since_ms..until_ms).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let Some(s) = decode_sample(v.value()) else {
                    continue;
                };
                scan(k.value(), &s, &mut points);
            }
        }
        // Not committed yet: the rollup in progress, and ticks the disk
        // refused.
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
        for (t, ms, v) in &self.pending {
            if *t == tier && *ms >= since_ms && *ms < until_ms {
                if let Some(s) = decode_sample(v) {
                    scan(*ms, &s, &mut points);
                }
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
