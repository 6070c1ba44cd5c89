//! `iomonctl files`: the targets' files.

use std::fmt::Write;

use serde_json::{Map, Value};

use iomon::proto::FilesReport;
use iomon::sample::{file, FileSample};

use super::{csv_field, json, pct, Output};
use crate::timespec::format_local;

/// A target file as JSON: its file, path (null: not found) and pages.
pub(super) fn file_json(f: &FileSample) -> Value {
    let mut m = Map::new();
    m.insert("target".into(), json!(f.target));
    m.insert("device".into(), json!(f.device()));
    m.insert("ino".into(), json!(f.ino));
    m.insert("path".into(), json!(f.path));
    for (i, name) in file::NAMES.iter().enumerate() {
        m.insert((*name).into(), json!(f.get(i)));
    }
    // What it is in BanyanDB's layout (null: under no BanyanDB root).
    m.insert(
        "banyandb".into(),
        match &f.kind {
            Some(k) if !k.engine.is_empty() => json!({
                "engine": k.engine,
                "group": k.group,
                "segment": k.segment,
                "shard": k.shard,
                "part": k.part,
                "kind": k.kind,
                "class": k.class().name(),
            }),
            _ => Value::Null,
        },
    );
    Value::Object(m)
}

/// How a file is shown: its path, else `dev:ino` and that it was not found.
fn file_name(f: &FileSample) -> String {
    f.path
        .clone()
        .unwrap_or_else(|| format!("[{} inode {}, not found]", f.device(), f.ino))
}

pub fn files(r: &FilesReport, out: Output) -> String {
    match out {
        Output::Json => json(&json!({
            "start_ms": r.start_ms,
            "end_ms": r.end_ms,
            "by": r.by.name(),
            "truncated": r.truncated,
            "unresolved": r.unresolved,
            "refused": r.refused,
            "files": r.files.iter().map(file_json).collect::<Vec<_>>(),
        })),
        Output::Csv => {
            let mut s = String::from("target,device,ino,path");
            for name in file::NAMES {
                let _ = write!(s, ",{name}");
            }
            s.push('\n');
            for f in &r.files {
                let _ = write!(
                    s,
                    "{},{},{},{}",
                    csv_field(&f.target),
                    f.device(),
                    f.ino,
                    csv_field(f.path.as_deref().unwrap_or(""))
                );
                for i in 0..file::NR {
                    let _ = write!(s, ",{}", f.get(i));
                }
                s.push('\n');
            }
            s
        }
        Output::Table => {
            let mut s = format!(
                "{} .. {}, targets' files by {} (pages)\n",
                format_local(r.start_ms),
                format_local(r.end_ms),
                r.by.name()
            );
            let _ = writeln!(
                s,
                "{:<16} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9}  FILE",
                "TARGET", "ASKED", "MISSED", "HIT", "EVICTED", "DONTNEED", "DROPPED"
            );
            for f in &r.files {
                let asked = f.get(file::ASKED);
                let hit =
                    (asked > 0).then(|| 1.0 - f.get(file::MISSED).min(asked) as f64 / asked as f64);
                let _ = writeln!(
                    s,
                    "{:<16} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9}  {}",
                    f.target,
                    asked,
                    f.get(file::MISSED),
                    pct(hit),
                    f.get(file::EVICTED),
                    f.get(file::DONTNEED_COVERED),
                    f.get(file::DONTNEED_DROPPED),
                    file_name(f)
                );
            }
            if r.files.is_empty() {
                s.push_str("(no target file activity in this window)\n");
            }
            let mut notes = Vec::new();
            if r.truncated > 0 {
                notes.push(format!(
                    "{} file-intervals outside an interval's top files (files.top) are not in these sums",
                    r.truncated
                ));
            }
            if r.unresolved > 0 {
                notes.push(format!(
                    "{} file-intervals whose file was not found (not open by the target, not under files.data_dirs)",
                    r.unresolved
                ));
            }
            if r.refused > 0 {
                notes.push(format!(
                    "{} per-file events the kernel could not record (its per-file map or file set was full)",
                    r.refused
                ));
            }
            for n in notes {
                let _ = writeln!(s, "note: {n}");
            }
            s
        }
    }
}
