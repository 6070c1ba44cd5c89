//! The targets a drain counts for: set, applied between intervals (each
//! to a kernel slot), and their state.

use super::*;

impl Drain {
    /// The targets to count for, from the next tick on (the current
    /// interval stays with the targets it started with). At most
    /// [`tgt::SLOTS`]; the rest are ignored (the config refuses more).
    pub fn set_targets(&mut self, targets: Vec<(String, Matcher)>) {
        self.pending_targets = Some(targets);
    }

    /// Applies the targets now (at start: before the first interval).
    pub fn apply_targets_now(&mut self, targets: Vec<(String, Matcher)>) -> Result<(), DrainError> {
        self.pending_targets = Some(targets);
        self.update_targets()
    }

    /// Each target and whether it is counted.
    pub fn target_status(&self) -> Vec<TargetStatus> {
        self.targets
            .iter()
            .flatten()
            .map(|t| TargetStatus {
                name: t.name.clone(),
                matches: match &t.matcher {
                    Matcher::Comm(c) => format!("comm {c}"),
                    Matcher::Cgroup(c) => format!("cgroup {c}"),
                    Matcher::Pid(p) => format!("pid {p}"),
                },
                inactive: t.resolved.as_ref().err().cloned(),
            })
            .collect()
    }

    /// Applies pending targets and looks for inactive cgroups again; writes
    /// the kernel's target map when anything changed.
    pub(super) fn update_targets(&mut self) -> Result<(), DrainError> {
        let mut changed = false;
        let was_active = self.active_slots();
        if let Some(list) = self.pending_targets.take() {
            // A target that stays keeps its slot; new ones take free slots.
            let mut next: Vec<Option<TargetSlot>> = vec![None; tgt::SLOTS];
            let mut fresh = Vec::new();
            for (name, matcher) in list {
                match self.targets.iter().position(|t| {
                    t.as_ref()
                        .is_some_and(|t| t.name == name && t.matcher == matcher)
                }) {
                    Some(i) => next[i] = self.targets[i].take(),
                    None => fresh.push((name, matcher)),
                }
            }
            // A slot just given up is taken last: events counted in the
            // moment between the last read and the switch land in the slot's
            // next interval, which should not be a different target's.
            let vacated: Vec<bool> = self.targets.iter().map(Option::is_some).collect();
            for (name, matcher) in fresh {
                let free = |i: &usize| next[*i].is_none();
                let slot = (0..tgt::SLOTS)
                    .filter(free)
                    .find(|i| !vacated[*i])
                    .or_else(|| (0..tgt::SLOTS).find(free));
                if let Some(i) = slot {
                    let resolved = matcher.resolve(self.cgroup_root.as_deref());
                    next[i] = Some(TargetSlot {
                        name,
                        matcher,
                        resolved,
                    });
                }
            }
            changed = true;
            self.targets = next;
        }
        // A cgroup is looked up again every tick: one that did not exist
        // may have been created, and a service's cgroup is a new one (a
        // new id) after each restart.
        for t in self.targets.iter_mut().flatten() {
            if !matches!(t.matcher, Matcher::Cgroup(_)) && t.resolved.is_ok() {
                continue;
            }
            let r = t.matcher.resolve(self.cgroup_root.as_deref());
            if r.as_ref().ok() != t.resolved.as_ref().ok() {
                match (&r, &t.resolved) {
                    (Ok(res), _) => log::info!("target {}: counted as {res:?}", t.name),
                    (Err(e), Ok(_)) => log::info!("target {}: no longer counted: {e}", t.name),
                    _ => {}
                }
                changed = true;
            }
            t.resolved = r;
        }
        if changed {
            use libbpf_rs::{MapCore, MapFlags};
            // A slot that starts being counted starts from what it holds
            // now (read before the kernel counts the target there; what an
            // earlier target left in it is no one's).
            let fresh: Vec<usize> = self
                .active_slots()
                .into_iter()
                .filter(|s| *s != 0 && !was_active.contains(s))
                .collect();
            if !fresh.is_empty() {
                if let Ok((c, h)) = self.read_slots(&fresh) {
                    let (cn, hn) = (abi::COUNTERS_NR, abi::HISTS_NR * hist::BUCKETS);
                    for s in fresh {
                        self.prev_counters[s * cn..(s + 1) * cn]
                            .copy_from_slice(&c[s * cn..(s + 1) * cn]);
                        self.prev_hists[s * hn..(s + 1) * hn]
                            .copy_from_slice(&h[s * hn..(s + 1) * hn]);
                    }
                }
            }
            self.targets_gen += 1;
            let slots: Vec<Option<Resolved>> = self
                .targets
                .iter()
                .map(|t| t.as_ref().and_then(|t| t.resolved.as_ref().ok().copied()))
                .collect();
            self.maps
                .targets
                .update(
                    &0u32.to_ne_bytes(),
                    &tgt::encode(&slots, self.targets_gen),
                    MapFlags::ANY,
                )
                .map_err(DrainError::Targets)?;
        }
        Ok(())
    }
}
