//! Retention: each tier's age limit, and the total size cap (the oldest
//! data of the finest tier goes first; the file is compacted when it
//! stays over the cap although the live data fits).
//!
//! These run wherever the store commits (on its writer thread, or inline
//! for a flush that must be done when it returns): they take the database
//! and the ledger of what it holds, nothing else of the store's.

use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::{db_err, Ledger, StoreError, StoreOptions, Tier, AMPLIFICATION};

/// What retention keeps, decided when the flush is handed over.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retention {
    /// Per tier: entries with keys below are too old.
    cutoffs: [u64; 3],
    /// Bytes of live keys and values the size cap allows.
    budget: u64,
}

impl Retention {
    pub(super) fn new(opts: &StoreOptions, now_ms: u64) -> Retention {
        let mut cutoffs = [0u64; 3];
        for (tier, keep) in [
            (Tier::Raw, opts.retention_raw),
            (Tier::Minute, opts.retention_1m),
            (Tier::Hour, opts.retention_1h),
        ] {
            cutoffs[tier as usize] = now_ms.saturating_sub(keep.as_millis() as u64);
        }
        Retention {
            cutoffs,
            budget: opts.max_bytes / AMPLIFICATION,
        }
    }

    /// Deletes what is too old, then trims the oldest data of the finest
    /// tier first until the live data fits in cap / AMPLIFICATION.
    pub(super) fn apply(&self, db: &Database, ledger: &mut Ledger) -> Result<(), StoreError> {
        delete(db, ledger, |tier, ms| ms < self.cutoffs[tier as usize])?;
        let mut guard = 0;
        while ledger.live_bytes > self.budget && guard < 64 {
            guard += 1;
            let Some(tier) = Tier::ALL
                .into_iter()
                .find(|t| ledger.counts[*t as usize] > 1)
            else {
                break;
            };
            let n = (ledger.counts[tier as usize] / 20).max(1);
            let cutoff = nth_key(db, tier, n)?;
            delete(db, ledger, |t, ms| t == tier && ms < cutoff)?;
        }
        Ok(())
    }
}

/// The key of the `n`th oldest entry of a tier (u64::MAX past the end).
fn nth_key(db: &Database, tier: Tier, n: u64) -> Result<u64, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let t = tx.open_table(tier.table()).map_err(db_err)?;
    for (i, item) in t.iter().map_err(db_err)?.enumerate() {
        let (k, _) = item.map_err(db_err)?;
        if i as u64 == n {
            return Ok(k.value());
        }
    }
    Ok(u64::MAX)
}

/// Deletes every entry (of any tier) for which `doomed` says so, in one
/// durable transaction (none when nothing is doomed: a commit costs an
/// fsync). Only prefixes of each tier are
/// ever deleted.
fn delete(
    db: &Database,
    ledger: &mut Ledger,
    doomed: impl Fn(Tier, u64) -> bool,
) -> Result<(), StoreError> {
    let mut tx = db.begin_write().map_err(db_err)?;
    tx.set_durability(Durability::Immediate).map_err(db_err)?;
    let mut freed = 0u64;
    let mut removed = [0u64; 3];
    for tier in Tier::ALL {
        let mut t = tx.open_table(tier.table()).map_err(db_err)?;
        // Find the end of the doomed prefix, then delete it.
        let mut end = None;
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            if !doomed(tier, k.value()) {
                break;
            }
            end = Some(k.value());
            freed += 8 + v.value().len() as u64;
            removed[tier as usize] += 1;
        }
        if let Some(end) = end {
            t.retain_in(..=end, |_, _| false).map_err(db_err)?;
        }
    }
    if removed == [0; 3] {
        tx.abort().map_err(db_err)?;
        return Ok(());
    }
    tx.commit().map_err(db_err)?;
    ledger.live_bytes = ledger.live_bytes.saturating_sub(freed);
    for (c, n) in ledger.counts.iter_mut().zip(removed) {
        *c = c.saturating_sub(n);
    }
    Ok(())
}
