//! The loop's side of the BanyanDB exporter (`crate::export`): start it,
//! answer its asks for Samples from the store once per tick, restart it
//! when a reload changes its section.

use super::Daemon;
use crate::config::Config;
use crate::export::{Batch, Exporter};

/// The exporter the config asks for (none without `[export.banyandb]`).
pub(super) fn start(cfg: &Config) -> Option<Exporter> {
    let b = cfg.export.banyandb.clone()?;
    match Exporter::start(b, cfg.daemon.state_dir.clone(), cfg.daemon.interval.0) {
        Ok(e) => Some(e),
        Err(e) => {
            log::error!("export: cannot start its thread ({e}); not exporting");
            None
        }
    }
}

impl Daemon {
    /// Hands the exporter the Samples it asked for: one bounded read of
    /// the store per tick, never a wait.
    pub(super) fn serve_exporter(&mut self) {
        let (Some(ex), Some(st)) = (&self.exporter, &self.store) else {
            return;
        };
        let newest = self.totals.last.as_ref().map(|l| l.end_ms);
        if let Some(n) = newest {
            ex.stored(n);
        }
        let Some(want) = ex.wants() else {
            return;
        };
        match st.raw_after(want.after_start_ms, want.max) {
            Ok(samples) => ex.answer(Batch {
                newest_end_ms: newest,
                oldest_start_ms: st.oldest_raw_ms(),
                samples,
            }),
            Err(e) => {
                // Asked again next tick.
                log::warn!(
                    "export: cannot read the history ({})",
                    crate::error_chain(&e)
                );
                ex.answer(Batch::default());
            }
        }
    }

    /// A reload that changed `[export]` restarts the exporter (from its
    /// cursor: nothing is sent twice or lost).
    pub(super) fn reload_exporter(&mut self, old: &Config) -> Option<String> {
        if self.cfg.export == old.export {
            return None;
        }
        if let Some(mut e) = self.exporter.take() {
            e.stop();
        }
        self.exporter = start(&self.cfg);
        Some(match self.exporter {
            Some(_) => "BanyanDB export restarted".into(),
            None => "BanyanDB export off".into(),
        })
    }
}
