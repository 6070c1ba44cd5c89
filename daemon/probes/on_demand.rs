//! Programs attached on demand (a route's `when`): not at load, but at
//! the first tick whose Sample shows the family's counter of that name
//! counted, the sign that their work is needed.

use super::{family, FamilyState, Probes};
use crate::abi::Program;

impl Probes {
    /// Attaches the programs waiting on demand whose counter counted in
    /// `sample` (a tick's): one log line for each, saying what it
    /// attached and why, or that it failed (not tried again: the family
    /// goes on without it, its requests counted as before).
    pub fn attach_wanted(&mut self, sample: &crate::sample::Sample) -> Vec<(log::Level, String)> {
        // (family, program, its counter, the count) of each to attach.
        let mut wanted: Vec<(&'static str, &'static Program, &'static str, u64)> = Vec::new();
        for fs in self
            .status
            .iter()
            .filter(|f| f.state == FamilyState::Attached)
        {
            let Some(f) = family::by_name(&fs.family) else {
                continue;
            };
            for p in fs.programs.iter().filter(|p| p.is_waiting()) {
                let Some((decl, counter)) = declared(f, &p.name) else {
                    continue;
                };
                let n = sample
                    .section(f.name())
                    .and_then(|s| s.total(f.schema, counter))
                    .unwrap_or(0);
                if n > 0 {
                    wanted.push((f.name(), decl, counter, n));
                }
            }
        }
        let mut lines = Vec::new();
        for (family, p, counter, n) in wanted {
            let r = self.attach(p.name);
            let (name, event) = (p.name, p.event);
            lines.push(match &r {
                Ok(()) => (
                    log::Level::Info,
                    format!("{family}: attached {name} ({event}) on demand: {n} {counter} in the last tick"),
                ),
                Err(e) => (
                    log::Level::Warn,
                    format!("{family}: {name} ({event}) failed to attach on demand ({n} {counter} in the last tick): {e}; the family goes on without it"),
                ),
            });
            let status = self
                .status
                .iter_mut()
                .filter(|f| f.family == family)
                .flat_map(|f| f.programs.iter_mut())
                .find(|s| s.name == name);
            if let Some(s) = status {
                s.attached = r.is_ok();
                s.reason = r.err();
            }
        }
        lines
    }
}

/// A family's program attached on demand, as declared, and its counter.
fn declared(f: &family::Family, name: &str) -> Option<(&'static Program, &'static str)> {
    f.schema
        .routes
        .iter()
        .flat_map(|r| r.programs)
        .find(|p| p.name == name)
        .and_then(|p| Some((p, p.when?)))
}
