//! Programs attached on demand (a route's `when`): not at load, but once
//! the sign that their work is needed shows: the family's counter of that
//! name counted in a tick's Sample, or (`vmstat:A+B`) one of those items
//! of /proc/vmstat, the kernel's own counts, is above zero, at start or
//! at a tick.

use super::{family, FamilyState, Probes};
use crate::abi::Program;

/// Where the kernel's own counts are read for a `vmstat:` sign.
pub const VMSTAT: &str = "/proc/vmstat";

/// What attaches a program on demand: its route's `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign<'a> {
    /// The family's host counter of this name counted in a tick.
    Counter(&'a str),
    /// One of these `+`-separated items of /proc/vmstat is above zero.
    Vmstat(&'a str),
}

impl<'a> Sign<'a> {
    pub fn of(when: &'a str) -> Sign<'a> {
        match when.strip_prefix("vmstat:") {
            Some(items) => Sign::Vmstat(items),
            None => Sign::Counter(when),
        }
    }

    /// What it waits for, in words (`iomonctl probes`).
    pub fn describe(&self) -> String {
        match self {
            Sign::Counter(c) => format!("attached once `{c}` counts"),
            Sign::Vmstat(items) => format!(
                "attached once {VMSTAT} shows {} above 0",
                items.replace('+', " or ")
            ),
        }
    }

    /// Whether it shows in `vmstat` (/proc/vmstat's text; `None`: it could
    /// not be read), and what showed it. An item the kernel does not have
    /// (or an unreadable file) counts as shown: without the kernel's
    /// count, the program's work cannot be ruled out.
    pub fn in_vmstat(&self, vmstat: Option<&str>) -> Option<String> {
        let Sign::Vmstat(items) = self else {
            return None;
        };
        let Some(text) = vmstat else {
            return Some(format!("{VMSTAT} could not be read"));
        };
        let mut seen = Vec::new();
        let mut shown = false;
        for item in items.split('+') {
            match crate::banyandb::memcg::stat_value(text, item) {
                Some(n) => {
                    shown |= n > 0;
                    seen.push(format!("{item} {n}"));
                }
                None => {
                    shown = true;
                    seen.push(format!("no {item}"));
                }
            }
        }
        shown.then(|| format!("{} in {VMSTAT}", seen.join(", ")))
    }
}

impl Probes {
    /// Attaches the programs waiting on demand whose sign shows in
    /// `sample` (a tick's) or in /proc/vmstat now: one log line for each,
    /// saying what it attached and why, or that it failed (not tried
    /// again: the family goes on without it, its events counted as
    /// before).
    pub fn attach_wanted(&mut self, sample: &crate::sample::Sample) -> Vec<(log::Level, String)> {
        self.attach_signed(Some(sample), None)
    }

    /// The same with /proc/vmstat's text as the caller read it this tick
    /// (`None`: it could not be read), not read again.
    pub fn attach_wanted_given(
        &mut self,
        sample: &crate::sample::Sample,
        vmstat: Option<&str>,
    ) -> Vec<(log::Level, String)> {
        self.attach_signed(Some(sample), Some(vmstat.map(str::to_string)))
    }

    /// At start, before any tick: the programs whose sign already shows in
    /// /proc/vmstat (a counter's cannot yet).
    pub fn attach_wanted_at_start(&mut self) -> Vec<(log::Level, String)> {
        self.attach_signed(None, None)
    }

    /// `vmstat`: its text if the caller has it, else read here once, and
    /// only if a program waits on it.
    fn attach_signed(
        &mut self,
        sample: Option<&crate::sample::Sample>,
        mut vmstat: Option<Option<String>>,
    ) -> Vec<(log::Level, String)> {
        // (family, program, what showed the sign) of each to attach.
        let mut wanted: Vec<(&'static str, &'static Program, String)> = Vec::new();
        for fs in self
            .status
            .iter()
            .filter(|f| f.state == FamilyState::Attached)
        {
            let Some(f) = family::by_name(&fs.family) else {
                continue;
            };
            for p in fs.programs.iter().filter(|p| p.is_waiting()) {
                let Some((decl, when)) = declared(f, &p.name) else {
                    continue;
                };
                let shown = match Sign::of(when) {
                    Sign::Counter(counter) => sample
                        .and_then(|s| s.section(f.name()))
                        .and_then(|s| s.total(f.schema, counter))
                        .filter(|n| *n > 0)
                        .map(|n| format!("{n} {counter} in the last tick")),
                    sign @ Sign::Vmstat(_) => {
                        let text =
                            vmstat.get_or_insert_with(|| std::fs::read_to_string(VMSTAT).ok());
                        sign.in_vmstat(text.as_deref())
                    }
                };
                if let Some(why) = shown {
                    wanted.push((f.name(), decl, why));
                }
            }
        }
        let mut lines = Vec::new();
        for (family, p, why) in wanted {
            let r = self.attach(p.name);
            let (name, event) = (p.name, p.event);
            lines.push(match &r {
                Ok(()) => (
                    log::Level::Info,
                    format!("{family}: attached {name} ({event}) on demand: {why}"),
                ),
                Err(e) => (
                    log::Level::Warn,
                    format!("{family}: {name} ({event}) failed to attach on demand ({why}): {e}; the family goes on without it"),
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

/// A family's program attached on demand, as declared, and its sign.
fn declared(f: &family::Family, name: &str) -> Option<(&'static Program, &'static str)> {
    f.schema
        .routes
        .iter()
        .flat_map(|r| r.programs)
        .find(|p| p.name == name)
        .and_then(|p| Some((p, p.when?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "nr_free_pages 100\nnr_shmem_hugepages 0\nnr_file_hugepages 3\nnr_anon_transparent_hugepages 0\n";

    #[test]
    fn a_vmstat_sign_shows_when_an_item_is_above_zero_or_missing() {
        let s = Sign::of("vmstat:nr_file_hugepages+nr_shmem_hugepages");
        assert_eq!(s, Sign::Vmstat("nr_file_hugepages+nr_shmem_hugepages"));
        assert_eq!(
            s.in_vmstat(Some(VM)).as_deref(),
            Some("nr_file_hugepages 3, nr_shmem_hugepages 0 in /proc/vmstat")
        );
        let none = VM.replace("nr_file_hugepages 3", "nr_file_hugepages 0");
        assert_eq!(s.in_vmstat(Some(&none)), None);
        // Not a prefix of another item's name.
        assert_eq!(
            Sign::of("vmstat:nr_file").in_vmstat(Some(&none)).as_deref(),
            Some("no nr_file in /proc/vmstat")
        );
        assert_eq!(
            Sign::of("vmstat:nr_shmem_hugepages+nr_gone")
                .in_vmstat(Some(&none))
                .as_deref(),
            Some("nr_shmem_hugepages 0, no nr_gone in /proc/vmstat")
        );
        assert_eq!(
            s.in_vmstat(None).as_deref(),
            Some("/proc/vmstat could not be read")
        );
        assert_eq!(
            s.describe(),
            "attached once /proc/vmstat shows nr_file_hugepages or nr_shmem_hugepages above 0"
        );
    }

    #[test]
    fn a_counter_sign_is_not_read_from_vmstat() {
        let s = Sign::of("unstamped");
        assert_eq!(s, Sign::Counter("unstamped"));
        assert_eq!(s.in_vmstat(Some(VM)), None);
        assert_eq!(s.describe(), "attached once `unstamped` counts");
    }
}
