//! Rollups: the 1-minute and 1-hour buckets in progress, merged from the
//! raw Samples as they come and rebuilt from the raw tier on open.

use redb::ReadableDatabase;

use super::codec::decode_sample;
use super::{db_err, Store, StoreError, Tier, HOUR_MS, MINUTE_MS};
use crate::sample::Sample;

impl Store {
    /// The rollups of the current minute and hour, from the raw samples.
    pub(super) fn rebuild_open_buckets(&mut self) -> Result<(), StoreError> {
        let newest = self.newest[Tier::Raw as usize];
        if self.ledger.counts[Tier::Raw as usize] == 0 {
            return Ok(());
        }
        let hour = newest - newest % HOUR_MS;
        let minute = newest - newest % MINUTE_MS;
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(Tier::Raw.table()).map_err(db_err)?;
        let top = self.opts.top_k;
        for item in t.range(hour..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let Some(s) = decode_sample(v.value()) else {
                continue;
            };
            if k.value() >= minute {
                merge_into(&mut self.open_minute, minute, &s, top);
            }
            merge_into(&mut self.open_hour, hour, &s, top);
        }
        Ok(())
    }
}

pub(super) fn merge_into(slot: &mut Option<(u64, Sample)>, bucket: u64, s: &Sample, top: usize) {
    match slot {
        Some((b, acc)) if *b == bucket => acc.merge(s, top),
        _ => {
            let mut first = s.clone();
            crate::sample::top_k(&mut first.procs, crate::sample::TopBy::Activity, top);
            *slot = Some((bucket, first));
        }
    }
}
