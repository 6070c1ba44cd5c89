//! Retention: each tier's age limit, and the total size cap (the oldest
//! data of the finest tier goes first; the file is compacted when it
//! stays over the cap although the live data fits).

use redb::{Durability, ReadableDatabase, ReadableTable};

use super::{db_err, Store, StoreError, Tier, AMPLIFICATION};

impl Store {
    pub(super) fn enforce_retention(&mut self, now_ms: u64) -> Result<(), StoreError> {
        let mut cutoffs = [0u64; 3];
        for (tier, keep) in [
            (Tier::Raw, self.opts.retention_raw),
            (Tier::Minute, self.opts.retention_1m),
            (Tier::Hour, self.opts.retention_1h),
        ] {
            cutoffs[tier as usize] = now_ms.saturating_sub(keep.as_millis() as u64);
        }
        self.delete(|_, tier, ms| ms < cutoffs[tier as usize])?;
        // Size cap: trim the oldest data of the finest tier first until the
        // live data fits in cap / AMPLIFICATION.
        let budget = self.opts.max_bytes / AMPLIFICATION;
        let mut guard = 0;
        while self.live_bytes > budget && guard < 64 {
            guard += 1;
            let Some(tier) = Tier::ALL.into_iter().find(|t| self.counts[*t as usize] > 1) else {
                break;
            };
            let n = (self.counts[tier as usize] / 20).max(1);
            let cutoff = self.nth_key(tier, n)?;
            self.delete(|_, t, ms| t == tier && ms < cutoff)?;
        }
        // The file does not shrink by itself: compact when it is over the
        // cap although the live data fits.
        if self.size_on_disk() > self.opts.max_bytes && self.live_bytes <= budget {
            match self.db.compact() {
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
        Ok(())
    }

    /// The key of the `n`th oldest entry of a tier (u64::MAX past the end).
    fn nth_key(&self, tier: Tier, n: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
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
    /// durable transaction. Only prefixes of each tier are ever deleted.
    fn delete(&mut self, doomed: impl Fn(&Self, Tier, u64) -> bool) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(db_err)?;
        tx.set_durability(Durability::Immediate).map_err(db_err)?;
        let mut freed = 0u64;
        let mut removed = [0u64; 3];
        for tier in Tier::ALL {
            let mut t = tx.open_table(tier.table()).map_err(db_err)?;
            // Find the end of the doomed prefix, then delete it.
            let mut end = None;
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                if !doomed(self, tier, k.value()) {
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
        tx.commit().map_err(db_err)?;
        self.live_bytes = self.live_bytes.saturating_sub(freed);
        for (c, n) in self.counts.iter_mut().zip(removed) {
            *c = c.saturating_sub(n);
        }
        Ok(())
    }
}
