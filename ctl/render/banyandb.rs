//! `iomonctl banyandb`: is the page cache working for BanyanDB?

use std::fmt::Write;

use serde_json::{Map, Value};

use iomon::banyandb::{field, Row};
use iomon::family::hit_ratio;
use iomon::report::Report;
use iomon::sample::FileSample;

use super::{bytes, csv_field, file_json, json, pct, Output};
use crate::timespec::format_local;

/// A row as JSON: its scope and its pages by field name.
fn row_json(r: &Row) -> Value {
    let mut m = Map::new();
    m.insert("target".into(), json!(r.target));
    m.insert("engine".into(), json!(r.engine));
    m.insert("group".into(), json!(r.group));
    m.insert("class".into(), json!(r.class().name()));
    m.insert("files".into(), json!(r.files));
    for (i, name) in field::NAMES.iter().enumerate() {
        m.insert((*name).into(), json!(r.get(i)));
    }
    m.insert(
        "read_hit_ratio".into(),
        json!(hit_ratio(r.get(field::ASKED), r.get(field::MISSED))),
    );
    m.insert(
        "fault_hit_ratio".into(),
        json!(hit_ratio(r.get(field::MAP_ASKED), r.get(field::MAP_MISSED))),
    );
    Value::Object(m)
}

fn refaults(f: &FileSample) -> u64 {
    (0..field::CAUSES.len())
        .map(|c| f.get(field::REFAULT_BY + c))
        .sum()
}

/// "measure/sw_metric field_values (data)": where the file is in
/// BanyanDB's layout (its path says the segment, shard and part).
fn what(f: &FileSample) -> String {
    match &f.kind {
        Some(k) if !k.engine.is_empty() => {
            format!("{}/{} {} ({})", k.engine, k.group, k.kind, k.class().name())
        }
        _ => "other".into(),
    }
}

fn top_table(s: &mut String, title: &str, files: &[FileSample]) {
    let _ = writeln!(s, "\n{title}");
    if files.is_empty() {
        s.push_str("  (none in this window)\n");
        return;
    }
    let _ = writeln!(
        s,
        "  {:>8} {:>8} {:>8} {:>8} {:>9}  {:<40} FILE",
        "MISSED", "FAULTED", "EVICTED", "DROPPED", "REFAULTED", "WHAT"
    );
    for f in files {
        let _ = writeln!(
            s,
            "  {:>8} {:>8} {:>8} {:>8} {:>9}  {:<40} {}",
            f.get(field::MISSED),
            f.get(field::MAP_MISSED),
            f.get(field::EVICTED),
            f.get(field::DONTNEED_DROPPED),
            refaults(f),
            what(f),
            f.path.clone().unwrap_or_else(|| format!(
                "[{} inode {}, not found]",
                f.device(),
                f.ino
            ))
        );
    }
}

pub fn banyandb(r: &Report, out: Output) -> String {
    match out {
        Output::Json => json(&json!({
            "start_ms": r.start_ms,
            "end_ms": r.end_ms,
            "intervals": r.intervals,
            "families": r.families,
            "refault_window_ms": r.refault_window_ms,
            "answer": r.answer,
            "groups": r.groups,
            "rows": r.rows.iter().map(row_json).collect::<Vec<_>>(),
            "memcg": r.memcg,
            "host_mem": r.host_mem,
            "top_misses": r.top_misses.iter().map(file_json).collect::<Vec<_>>(),
            "top_refaults": r.top_refaults.iter().map(file_json).collect::<Vec<_>>(),
            "naming": r.naming,
            "files_truncated": r.files_truncated,
            "files_unresolved": r.files_unresolved,
            "refused": r.refused,
            "refault_dropped": r.refault_dropped,
        })),
        Output::Csv => {
            let mut s = String::from("target,engine,group,class,files");
            for name in field::NAMES {
                let _ = write!(s, ",{name}");
            }
            s.push_str(",read_hit_ratio,fault_hit_ratio\n");
            for row in &r.rows {
                let _ = write!(
                    s,
                    "{},{},{},{},{}",
                    csv_field(&row.target),
                    csv_field(&row.engine),
                    csv_field(&row.group),
                    row.class().name(),
                    row.files
                );
                for i in 0..field::NR {
                    let _ = write!(s, ",{}", row.get(i));
                }
                for h in [
                    hit_ratio(row.get(field::ASKED), row.get(field::MISSED)),
                    hit_ratio(row.get(field::MAP_ASKED), row.get(field::MAP_MISSED)),
                ] {
                    let _ = write!(s, ",{}", h.map(|h| format!("{h:.4}")).unwrap_or_default());
                }
                s.push('\n');
            }
            s
        }
        Output::Table => table(r),
    }
}

fn table(r: &Report) -> String {
    let mut s = format!(
        "{} .. {} ({} intervals): is the page cache working for BanyanDB?\n\n",
        format_local(r.start_ms),
        format_local(r.end_ms),
        r.intervals
    );
    for line in &r.answer {
        let _ = writeln!(s, "  {line}");
    }
    let groups: Vec<_> = r.groups.iter().filter(|g| !g.engine.is_empty()).collect();
    if !groups.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<12} {:<8} {:<20} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {:>6} {:>9}",
            "TARGET",
            "ENGINE",
            "GROUP",
            "IDX RD",
            "IDX FLT",
            "DATA RD",
            "DATA FLT",
            "DONTNEED",
            "DROPPED",
            "BACK",
            "IDX RECL"
        );
        for g in groups {
            let _ = writeln!(
                s,
                "{:<12} {:<8} {:<20} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {:>6} {:>9}",
                g.target,
                g.engine,
                g.group,
                pct(g.index_read_hit),
                pct(g.index_fault_hit),
                pct(g.data_read_hit),
                pct(g.data_fault_hit),
                g.dontneed_calls,
                g.dontneed_dropped,
                pct(g.dontneed_back()),
                g.index_reclaimed
            );
        }
        s.push_str("(hit ratios of index and data files, by buffered reads and by faults on mappings; DONTNEED calls and pages dropped, the share read back; index pages evicted by reclaim)\n");
    }
    if !r.memcg.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}  CGROUP",
            "MAX", "CURRENT", "FILE", "ACTIVE", "INACTIVE", "REFAULTS", "THRESHOLD"
        );
        for m in &r.memcg {
            let _ = writeln!(
                s,
                "{:<10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}  {}",
                m.max_bytes
                    .map(|b| bytes(b as f64))
                    .unwrap_or_else(|| "max".into()),
                bytes(m.current_bytes as f64),
                bytes(m.file_bytes as f64),
                bytes(m.active_file_bytes as f64),
                bytes(m.inactive_file_bytes as f64),
                m.refault_file,
                bytes(m.threshold_bytes as f64),
                m.cgroup
            );
            let _ = writeln!(s, "  DONTNEED threshold: {}", m.threshold_rule);
        }
    }
    if let Some(h) = &r.host_mem {
        let _ = writeln!(
            s,
            "\nhost: active_file {} pages, inactive_file {} pages, {} pages refaulted (/proc/vmstat)",
            h.active_file, h.inactive_file, h.refault_file
        );
    }
    top_table(&mut s, "files by misses (reads and faults):", &r.top_misses);
    top_table(&mut s, "files by refaults:", &r.top_refaults);
    if let Some(n) = &r.naming {
        let _ = writeln!(
            s,
            "\nnaming: {} BanyanDB processes, {} data directories, {} files known, {} passes{}",
            n.processes,
            n.data_dirs.len(),
            n.known,
            n.passes,
            if n.walking { " (walking)" } else { "" }
        );
    }
    let mut notes = Vec::new();
    if r.files_truncated > 0 {
        notes.push(format!(
            "{} file-intervals outside an interval's top files (files.top): in the group rows, not in the top lists",
            r.files_truncated
        ));
    }
    for n in notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
