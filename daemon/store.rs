//! Rolling history in sled: every Sample kept raw, rolled up per minute and
//! per hour, retained by age per tier and by a total size cap.
//!
//! Layout: one sled tree per tier (`raw`, `1m`, `1h`); keys are the
//! big-endian start time (ms) of the Sample or bucket, so ordered range
//! scans are time-range scans; values are a format byte followed by the
//! bincode Sample. The rollup buckets in progress live in memory and are
//! written when they close; on open they are rebuilt from the raw tier, so
//! a crash loses nothing that was flushed.
//!
//! A database that will not open, or carries another format version, is
//! renamed aside (never deleted) and a fresh one is started.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bincode::Options;

use crate::proto::{HistoryReport, StoreStatus};
use crate::sample::Sample;

/// Bumped when the on-disk layout or the Sample encoding changes.
pub const FORMAT_VERSION: u32 = 1;
const VALUE_TAG: u8 = 1;
/// A stored Sample larger than this is refused on decode.
const MAX_VALUE: u64 = 4 << 20;
/// Samples kept in memory while the disk refuses writes.
const MAX_PENDING: usize = 4096;

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the history store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the history store at {0} is locked by another process (is another iomond running with this state directory?)")]
    Locked(PathBuf),
    #[error("failed to move the unreadable store {from} aside to {to}: {source}")]
    MoveAside {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history store I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("until ({until_ms}) is before since ({since_ms})")]
    BadRange { since_ms: u64, until_ms: u64 },
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

    fn tree(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Hour => "1h",
        }
    }
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_VALUE)
}

pub fn encode_sample(s: &Sample) -> Vec<u8> {
    let mut v = vec![VALUE_TAG];
    v.extend(codec().serialize(s).expect("Samples always serialize"));
    v
}

pub fn decode_sample(bytes: &[u8]) -> Option<Sample> {
    match bytes.split_first() {
        Some((&VALUE_TAG, rest)) => codec().deserialize(rest).ok(),
        _ => None,
    }
}

fn key(ms: u64) -> [u8; 8] {
    ms.to_be_bytes()
}

fn key_ms(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

pub struct Store {
    path: PathBuf,
    db: sled::Db,
    trees: [sled::Tree; 3],
    opts: StoreOptions,
    /// Rollup buckets in progress: (bucket start, merged Sample).
    open_minute: Option<(u64, Sample)>,
    open_hour: Option<(u64, Sample)>,
    /// Samples not yet written because the disk refused them.
    pending: VecDeque<(Tier, u64, Vec<u8>)>,
    /// Newest key written per tier: timestamps never go backwards in a tier.
    newest: [u64; 3],
    pub write_errors: u64,
    in_error: bool,
    pub moved_aside: Option<PathBuf>,
}

impl Store {
    /// Opens (or creates) the store in `dir`. An unreadable or foreign
    /// database is moved aside and a fresh one started; a store another
    /// process holds, or one this process may not read, is an error (never
    /// moved).
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
                            source: sled::Error::Unsupported(why),
                        })
                    }
                }
            }
        };
        let trees = [
            db.open_tree(Tier::Raw.tree())?,
            db.open_tree(Tier::Minute.tree())?,
            db.open_tree(Tier::Hour.tree())?,
        ];
        let mut store = Store {
            path: dir.to_path_buf(),
            db,
            trees,
            opts,
            open_minute: None,
            open_hour: None,
            pending: VecDeque::new(),
            newest: [0; 3],
            write_errors: 0,
            in_error: false,
            moved_aside,
        };
        for (i, t) in store.trees.iter().enumerate() {
            if let Some((k, _)) = t.last()? {
                store.newest[i] = key_ms(&k).unwrap_or(0);
            }
        }
        store.rebuild_open_buckets()?;
        Ok(store)
    }

    /// `Ok(Ok(db))`, `Ok(Err(why))` when the database is unreadable and
    /// should be moved aside, or `Err` for what moving would not fix. A lock
    /// held by a process that is going away (a restart) is waited for.
    fn open_retrying(dir: &Path) -> Result<Result<sled::Db, String>, StoreError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Self::try_open(dir) {
                Err(OpenFailure::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(OpenFailure::Locked) => return Err(StoreError::Locked(dir.to_path_buf())),
                Err(OpenFailure::Fatal(source)) => {
                    return Err(StoreError::Open {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
                Err(OpenFailure::Unreadable(why)) => return Ok(Err(why)),
                Ok(db) => return Ok(Ok(db)),
            }
        }
    }

    fn try_open(dir: &Path) -> Result<sled::Db, OpenFailure> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 << 20)
            .flush_every_ms(None)
            .open()
            .map_err(OpenFailure::classify)?;
        match db.get("format_version").map_err(OpenFailure::classify)? {
            None => {
                if db.tree_names().len() > 1 || !db.is_empty() {
                    return Err(OpenFailure::Unreadable("it has no format version".into()));
                }
                db.insert("format_version", &FORMAT_VERSION.to_be_bytes())
                    .map_err(OpenFailure::classify)?;
                db.flush().map_err(OpenFailure::classify)?;
            }
            Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(OpenFailure::Unreadable(format!(
                    "format version {:?}, this iomond reads {FORMAT_VERSION}",
                    v.as_ref()
                )))
            }
        }
        Ok(db)
    }

    fn tree(&self, t: Tier) -> &sled::Tree {
        &self.trees[t as usize]
    }

    /// The rollups of the current minute and hour, from the raw samples.
    fn rebuild_open_buckets(&mut self) -> Result<(), StoreError> {
        let Some(newest) = self.newest_ms()? else {
            return Ok(());
        };
        let hour = newest - newest % HOUR_MS;
        let minute = newest - newest % MINUTE_MS;
        for item in self.tree(Tier::Raw).range(key(hour)..) {
            let (k, v) = item?;
            let (Some(ms), Some(s)) = (key_ms(&k), decode_sample(&v)) else {
                continue;
            };
            let top = self.opts.top_k;
            if ms >= minute {
                merge_into(&mut self.open_minute, minute, &s, top);
            }
            merge_into(&mut self.open_hour, hour, &s, top);
        }
        Ok(())
    }

    fn newest_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.tree(Tier::Raw).last()?.and_then(|(k, _)| key_ms(&k)))
    }

    /// Appends one tick's Sample and updates the rollups; closed rollup
    /// buckets are written. Write errors are counted and retried later.
    pub fn append(&mut self, s: &Sample) {
        let ms = s.start_ms;
        // Timestamps never go backwards in a tier (clock set back).
        let ms = ms.max(self.newest[Tier::Raw as usize] + 1);
        self.pending.push_back((Tier::Raw, ms, encode_sample(s)));
        self.newest[Tier::Raw as usize] = ms;
        let top = self.opts.top_k;
        for (tier, width) in [(Tier::Minute, MINUTE_MS), (Tier::Hour, HOUR_MS)] {
            let bucket = ms - ms % width;
            let slot = match tier {
                Tier::Minute => &mut self.open_minute,
                _ => &mut self.open_hour,
            };
            if let Some((start, _)) = slot {
                if *start != bucket {
                    // Bucket starts follow the raw keys, which never go
                    // backwards, so closed buckets are in order too.
                    let (start, merged) = slot.take().expect("checked above");
                    self.pending
                        .push_back((tier, start, encode_sample(&merged)));
                    self.newest[tier as usize] = start;
                }
            }
            let slot = match tier {
                Tier::Minute => &mut self.open_minute,
                _ => &mut self.open_hour,
            };
            merge_into(slot, bucket, s, top);
        }
        self.write_pending();
    }

    fn write_pending(&mut self) {
        while let Some((tier, ms, value)) = self.pending.front() {
            match self.trees[*tier as usize].insert(key(*ms), value.as_slice()) {
                Ok(_) => {
                    self.pending.pop_front();
                    if self.in_error {
                        log::info!("history store {}: writing again", self.path.display());
                        self.in_error = false;
                    }
                }
                Err(e) => {
                    self.write_errors += 1;
                    if !self.in_error {
                        log::error!(
                            "history store {}: write failed ({e}); keeping up to {MAX_PENDING} samples in memory and retrying",
                            self.path.display()
                        );
                        self.in_error = true;
                    }
                    break;
                }
            }
        }
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
        }
    }

    /// Writes to disk. Also applies retention and the size cap.
    pub fn flush(&mut self, now_ms: u64) {
        self.write_pending();
        if let Err(e) = self.enforce_retention(now_ms) {
            log::warn!(
                "history store {}: retention failed: {e}",
                self.path.display()
            );
        }
        if let Err(e) = self.db.flush() {
            self.write_errors += 1;
            if !self.in_error {
                log::error!(
                    "history store {}: flush failed ({e}); will retry",
                    self.path.display()
                );
                self.in_error = true;
            }
        }
    }

    fn enforce_retention(&mut self, now_ms: u64) -> Result<(), StoreError> {
        for (tier, keep) in [
            (Tier::Raw, self.opts.retention_raw),
            (Tier::Minute, self.opts.retention_1m),
            (Tier::Hour, self.opts.retention_1h),
        ] {
            let cutoff = now_ms.saturating_sub(keep.as_millis() as u64);
            self.delete_before(tier, cutoff, usize::MAX)?;
        }
        // Size cap: trim the oldest data of the finest tier first.
        let mut guard = 0;
        while self.db.size_on_disk()? > self.opts.max_bytes && guard < 64 {
            guard += 1;
            let mut trimmed = false;
            for tier in Tier::ALL {
                let n = self.tree(tier).len();
                if n > 1 {
                    self.delete_oldest(tier, (n / 10).max(1))?;
                    trimmed = true;
                    break;
                }
            }
            if !trimmed {
                break;
            }
        }
        Ok(())
    }

    fn delete_before(&self, tier: Tier, cutoff_ms: u64, max: usize) -> Result<usize, StoreError> {
        let tree = self.tree(tier);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in tree.range(..key(cutoff_ms)).keys().take(max) {
            batch.remove(item?);
            n += 1;
        }
        if n > 0 {
            tree.apply_batch(batch)?;
        }
        Ok(n)
    }

    fn delete_oldest(&self, tier: Tier, count: usize) -> Result<usize, StoreError> {
        self.delete_before(tier, u64::MAX, count)
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    pub fn oldest_ms(&self) -> Option<u64> {
        Tier::ALL
            .iter()
            .filter_map(|t| self.tree(*t).first().ok().flatten())
            .filter_map(|(k, _)| key_ms(&k))
            .min()
    }

    pub fn status(&self) -> StoreStatus {
        StoreStatus {
            path: self.path.display().to_string(),
            bytes: self.size_on_disk(),
            oldest_ms: self.oldest_ms(),
            newest_ms: self.newest_ms().ok().flatten(),
            write_errors: self.write_errors,
            moved_aside: self.moved_aside.as_ref().map(|p| p.display().to_string()),
        }
    }

    pub fn len(&self, tier: Tier) -> usize {
        self.tree(tier).len()
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
    /// merged to `step`, oldest first. Without a step, one that gives at
    /// most about 500 points.
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
        let mut scan = |ms: u64, s: &Sample, points: &mut Vec<Sample>| {
            let bucket = since_ms + (ms - since_ms) / step * step;
            match &mut cur {
                Some((b, acc)) if *b == bucket => acc.merge(s, self.opts.top_k),
                _ => {
                    if let Some((_, done)) = cur.take() {
                        points.push(done);
                    }
                    cur = Some((bucket, s.clone()));
                }
            }
        };
        for item in self.tree(tier).range(key(since_ms)..key(until_ms)) {
            let (k, v) = item?;
            let (Some(ms), Some(s)) = (key_ms(&k), decode_sample(&v)) else {
                continue;
            };
            scan(ms, &s, &mut points);
        }
        // The rollup in progress is not on disk yet.
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

enum OpenFailure {
    /// Garbage, truncated, or another format: move it aside.
    Unreadable(String),
    /// Another process holds the lock.
    Locked,
    /// Permissions, disk errors: moving would not help.
    Fatal(sled::Error),
}

impl OpenFailure {
    fn classify(e: sled::Error) -> OpenFailure {
        use std::io::ErrorKind as K;
        match e {
            // sled wraps the flock failure in an error of kind Other.
            sled::Error::Io(ref io)
                if io.kind() == K::WouldBlock
                    || io.to_string().contains("could not acquire lock") =>
            {
                OpenFailure::Locked
            }
            sled::Error::Io(ref io)
                if matches!(
                    io.kind(),
                    K::InvalidData | K::UnexpectedEof | K::InvalidInput
                ) =>
            {
                OpenFailure::Unreadable(format!("sled: {e}"))
            }
            sled::Error::Io(_) => OpenFailure::Fatal(e),
            other => OpenFailure::Unreadable(format!("sled: {other}")),
        }
    }
}

fn merge_into(slot: &mut Option<(u64, Sample)>, bucket: u64, s: &Sample, top: usize) {
    match slot {
        Some((b, acc)) if *b == bucket => acc.merge(s, top),
        _ => {
            let mut first = s.clone();
            crate::sample::top_k(&mut first.procs, crate::sample::TopBy::Activity, top);
            *slot = Some((bucket, first));
        }
    }
}

fn aside_path(dir: &Path) -> PathBuf {
    let stamp = crate::now_ms() / 1000;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let mut p = dir.with_file_name(format!("{name}.unreadable-{stamp}"));
    let mut i = 1;
    while p.exists() {
        p = dir.with_file_name(format!("{name}.unreadable-{stamp}.{i}"));
        i += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::fadvise::FadviseStats;

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
        let mut f = FadviseStats::default();
        f.calls[4][0] = dontneed;
        Sample {
            start_ms,
            end_ms: start_ms + 10_000,
            fadvise: Some(f),
            ..Default::default()
        }
    }

    fn total(r: &HistoryReport) -> u64 {
        r.points
            .iter()
            .map(|p| p.fadvise.as_ref().unwrap().calls[4][0])
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
        std::fs::write(path.join("conf"), b"\xff\x00garbage").unwrap();
        std::fs::write(path.join("db"), vec![0xa5u8; 4096]).unwrap();
        let mut st = Store::open(&path, opts()).unwrap();
        let aside = st.moved_aside.clone().expect("moved aside");
        assert!(aside.exists(), "kept, not deleted");
        assert!(aside.join("db").exists());
        st.append(&sample(T0, 1));
        st.flush(T0 + 10_000);
        assert_eq!(st.len(Tier::Raw), 1, "fresh store works");
    }

    #[test]
    fn foreign_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).unwrap();
            db.insert("format_version", &999u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let st = Store::open(&path, opts()).unwrap();
        assert!(st.moved_aside.is_some());
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
    fn decode_refuses_garbage_and_oversize() {
        assert!(decode_sample(&[]).is_none());
        assert!(decode_sample(&[9, 1, 2]).is_none());
        let mut big = vec![VALUE_TAG];
        big.extend_from_slice(&[0xff; 64]);
        assert!(decode_sample(&big).is_none());
        let s = sample(T0, 3);
        assert_eq!(decode_sample(&encode_sample(&s)), Some(s));
    }
}
