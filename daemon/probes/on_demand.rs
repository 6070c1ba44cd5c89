//! Programs attached on demand (a route's `when`): not at load, but at
//! the first tick whose Sample shows the family's counter of that name
//! counted, the sign that their work is needed.

use super::{family, FamilyState, Probes};

impl Probes {
    /// Attaches the programs waiting on demand whose counter counted in
    /// `sample` (a tick's): one log line for each, saying what it
    /// attached and why, or that it failed (not tried again: the family
    /// goes on without it, its requests counted as before).
    pub fn attach_wanted(&mut self, sample: &crate::sample::Sample) -> Vec<(log::Level, String)> {
        let mut lines = Vec::new();
        for fi in 0..self.status.len() {
            if self.status[fi].state != FamilyState::Attached {
                continue;
            }
            let family = self.status[fi].family.clone();
            let Some(f) = family::by_name(&family) else {
                continue;
            };
            for pi in 0..self.status[fi].programs.len() {
                let p = &self.status[fi].programs[pi];
                let Some(counter) = p.on_demand.clone() else {
                    continue;
                };
                if p.attached || p.reason.is_some() {
                    continue;
                }
                let n = sample
                    .section(&family)
                    .and_then(|s| s.total(f.schema, &counter))
                    .unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let Some(name) = route_programs_named(f, &p.name) else {
                    continue;
                };
                let event = p.event.clone();
                let r = self.attach(name);
                let p = &mut self.status[fi].programs[pi];
                p.attached = r.is_ok();
                lines.push(match r {
                    Ok(()) => (
                        log::Level::Info,
                        format!("{family}: attached {name} ({event}) on demand: {n} {counter} in the last tick"),
                    ),
                    Err(e) => {
                        let line = format!(
                            "{family}: {name} ({event}) failed to attach on demand ({n} {counter} in the last tick): {e}; the family goes on without it"
                        );
                        p.reason = Some(e);
                        (log::Level::Warn, line)
                    }
                });
            }
        }
        lines
    }
}

/// The name, as declared (static), of a family's program attached on
/// demand.
fn route_programs_named(f: &family::Family, name: &str) -> Option<&'static str> {
    f.schema
        .routes
        .iter()
        .flat_map(|r| r.programs)
        .find(|p| p.name == name && p.when.is_some())
        .map(|p| p.name)
}
