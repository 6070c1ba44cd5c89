//! `iomonctl status`.

use std::fmt::Write;

use iomon::probes::{FamilyState, FamilyStatus};
use iomon::proto::StatusReport;
use iomon::units::format_duration;

use super::{bytes, csv_field, json, state_str, Output};
use crate::timespec::format_local;

pub fn status(r: &StatusReport, out: Output) -> String {
    match out {
        Output::Json => json(r),
        Output::Csv => {
            let mut s = String::from("key,value\n");
            for (k, v) in status_pairs(r) {
                let _ = writeln!(s, "{},{}", csv_field(&k), csv_field(&v));
            }
            s
        }
        Output::Table => {
            let mut s = String::new();
            for (k, v) in status_pairs(r) {
                let _ = writeln!(s, "{k:<18} {v}");
            }
            s
        }
    }
}

fn status_pairs(r: &StatusReport) -> Vec<(String, String)> {
    let mut v = vec![
        ("version".into(), r.version.clone()),
        ("pid".into(), r.pid.to_string()),
        (
            "uptime".into(),
            format_duration(std::time::Duration::from_secs(
                r.now_ms.saturating_sub(r.started_ms) / 1000,
            )),
        ),
        (
            "interval".into(),
            format_duration(std::time::Duration::from_millis(r.interval_ms)),
        ),
        ("strategy".into(), r.strategy.name().into()),
        (
            "kernel".into(),
            format!(
                "{} (pages of {}: every count of pages is in these)",
                r.kernel,
                bytes(r.page_size_bytes as f64)
            ),
        ),
        ("ticks".into(), r.ticks.to_string()),
        (
            "last tick".into(),
            r.last_tick_ms
                .map(|t| {
                    format!(
                        "{} ({:.1}s ago, drain took {}us)",
                        format_local(t),
                        r.now_ms.saturating_sub(t) as f64 / 1000.0,
                        r.last_drain_us
                    )
                })
                .unwrap_or_else(|| "none yet".into()),
        ),
        ("tick parts".into(), {
            let p = &r.tick_parts;
            format!(
                "switch {}us (waited off the event loop), read {}us, store {}us, publish {}us",
                p.switch_us, p.read_us, p.store_us, p.publish_us
            )
        }),
    ];
    for f in &r.families {
        v.push((format!("probe {}", f.family), family_text(f)));
    }
    match &r.store {
        Some(st) => {
            v.push(("store".into(), st.path.clone()));
            v.push(("store size".into(), bytes(st.bytes as f64)));
            v.push((
                "store oldest".into(),
                st.oldest_ms
                    .map(format_local)
                    .unwrap_or_else(|| "empty".into()),
            ));
            v.push(("store errors".into(), st.write_errors.to_string()));
        }
        None => v.push(("store".into(), "disabled".into())),
    }
    match &r.export {
        Some(e) => v.extend(export_pairs(e)),
        None => v.push(("export".into(), "off".into())),
    }
    v.push(("socket".into(), r.socket.clone()));
    v.push((
        "http".into(),
        if r.http.is_empty() {
            "off".into()
        } else {
            r.http.join(" ")
        },
    ));
    v.push((
        "processes".into(),
        format!(
            "{} tracked (kernel map capacity {})",
            r.proc_table_len, r.proc_map_capacity
        ),
    ));
    for t in &r.targets {
        v.push((
            format!("target {}", t.name),
            match &t.inactive {
                None => format!("{} (counted)", t.matches),
                Some(why) => format!("{} (not counted now: {why})", t.matches),
            },
        ));
    }
    let b = &r.banyandb;
    let n = &b.naming;
    v.push((
        "banyandb".into(),
        if n.processes == 0 && n.data_dirs.is_empty() {
            "no BanyanDB process among the targets, no files.data_dirs".into()
        } else {
            format!(
                "{} processes, data directories {}; {} files named ({} entries walked, {} passes{})",
                n.processes,
                if n.data_dirs.is_empty() {
                    "none".into()
                } else {
                    n.data_dirs.join(" ")
                },
                n.known,
                n.walked,
                n.passes,
                if n.walking { ", walking" } else { "" }
            )
        },
    ));
    v.push((
        "refaults".into(),
        format!(
            "window {}, {} blocks of evicted pages remembered of {}",
            iomon::units::format_duration(std::time::Duration::from_millis(b.refault_window_ms)),
            b.evicted_blocks,
            b.evicted_blocks_max
        ),
    ));
    for m in &b.memcg {
        v.push((
            format!("cgroup {}", m.cgroup),
            format!(
                "memory.max {}, file cache {}, DONTNEED threshold {} ({})",
                m.max_bytes
                    .map(|x| iomon::units::format_bytes(x as f64))
                    .unwrap_or_else(|| "max".into()),
                iomon::units::format_bytes(m.file_bytes as f64),
                iomon::units::format_bytes(m.threshold_bytes as f64),
                m.threshold_rule
            ),
        ));
    }
    let t = &r.truncated;
    v.push((
        "bounds".into(),
        format!(
            "{} processes past a Sample's top-K, {} per-process totals and {} names forgotten, {} name series ended, {} per-process events the kernel could not record",
            t.sample_procs, t.proc_table, t.names, t.name_series, r.proc_dropped
        ),
    ));
    for w in &r.warnings {
        v.push(("warning".into(), w.clone()));
    }
    v
}

/// A family's state, its route, and the events the kernel did not run its
/// programs for (when any: its counts are low by as many).
/// The BanyanDB exporter: where, how far, what failed.
fn export_pairs(e: &iomon::proto::ExportStatus) -> Vec<(String, String)> {
    let mut v = vec![(
        "export".into(),
        format!("BanyanDB {} group {}: {}", e.endpoint, e.group, e.state),
    )];
    v.push((
        "export newest".into(),
        match (e.newest_written_ms, e.behind_ms()) {
            (Some(t), Some(b)) => format!(
                "{} ({} behind the history)",
                format_local(t),
                format_duration(std::time::Duration::from_millis(b))
            ),
            (Some(t), None) => format_local(t),
            (None, _) => "nothing written yet".into(),
        },
    ));
    v.push((
        "export points".into(),
        format!(
            "{} written, {} refused, {} Samples in {} batches; {} measures{}",
            e.points_written,
            e.points_refused,
            e.samples_written,
            e.batches,
            e.measures - e.measures_unusable,
            if e.measures_unusable > 0 {
                format!(" ({} left out: schema conflict)", e.measures_unusable)
            } else {
                String::new()
            }
        ),
    ));
    if e.skipped_ms > 0 {
        v.push((
            "export skipped".into(),
            format!(
                "{} of history retention dropped before it was sent",
                format_duration(std::time::Duration::from_millis(e.skipped_ms))
            ),
        ));
    }
    if let Some(err) = &e.last_error {
        v.push((
            "export last error".into(),
            match e.last_error_ms {
                Some(t) => format!("{} ({err})", format_local(t)),
                None => err.clone(),
            },
        ));
    }
    v
}

fn family_text(f: &FamilyStatus) -> String {
    let (st, why) = state_str(&f.state);
    let mut text = match (&f.route, &f.state) {
        (Some(route), FamilyState::Attached) => format!("{st} (route {route})"),
        _ => st.to_string(),
    };
    if !why.is_empty() {
        let _ = write!(text, ": {why}");
    }
    let missed: u64 = f.programs.iter().filter_map(|p| p.missed).sum();
    if missed > 0 {
        let _ = write!(
            text,
            "; {missed} events the kernel did not run its programs for, not in its counts (iomonctl probes)"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use iomon::probes::ProgramStatus;

    fn program(missed: Option<u64>) -> ProgramStatus {
        ProgramStatus {
            name: "blk_complete".into(),
            event: "tracepoint:block:block_rq_complete".into(),
            attached: true,
            reason: None,
            run_count: None,
            run_time_ns: None,
            missed,
            on_demand: None,
        }
    }

    #[test]
    fn a_family_says_its_route_and_the_events_it_missed() {
        let mut f = FamilyStatus {
            family: "block".into(),
            about: String::new(),
            state: FamilyState::Attached,
            route: Some("tracepoint".into()),
            programs: vec![program(Some(0)), program(None)],
            skipped: Vec::new(),
        };
        assert_eq!(family_text(&f), "attached (route tracepoint)");
        f.programs = vec![program(Some(40)), program(Some(13))];
        assert_eq!(
            family_text(&f),
            "attached (route tracepoint); 53 events the kernel did not run its programs for, not in its counts (iomonctl probes)"
        );
    }
}
