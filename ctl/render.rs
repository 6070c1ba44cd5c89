//! Rendering replies for people (tables) and scripts (json, csv). JSON
//! names every field: families' counters by their declared names (nested
//! by dimension values), histograms with their bucket bounds, derived
//! ratios beside them. CSV has a header line and one row per item.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use iomon::abi;
use iomon::drain::Strategy;
use iomon::family::{self, Cell, Scope, Series, Shown};
use iomon::probes::{FamilyState, FamilyStatus};
use iomon::proto::{FilesReport, HistoryReport, SnapshotReport, StatusReport, TopReport};
use iomon::sample::{file, FileSample, ProcSample, Sample};
use iomon::units::format_duration;

use crate::timespec::format_local;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Csv,
}

/// Pretty JSON, newline-terminated.
pub fn json<T: serde::Serialize>(v: &T) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn bytes(n: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn us(v: Option<u64>) -> String {
    match v {
        None => "n/a".into(),
        Some(u) if u >= 1_000_000 => format!("{:.1}s", u as f64 / 1e6),
        Some(u) if u >= 1000 => format!("{:.1}ms", u as f64 / 1000.0),
        Some(u) => format!("{u}us"),
    }
}

fn state_str(s: &FamilyState) -> (&'static str, String) {
    match s {
        FamilyState::Attached => ("attached", String::new()),
        FamilyState::Disabled => ("disabled", "switched off in the config".into()),
        FamilyState::Unavailable(w) => ("unavailable", w.clone()),
        FamilyState::Failed(w) => ("failed", w.clone()),
    }
}

/// A Sample with named fields: its interval, each family present by name
/// (absent families are absent: not attached then), `core`, processes.
/// A Sample with named fields; `scope`: whose numbers its sections are.
pub fn sample_json(s: &Sample, scope: Scope) -> Value {
    let mut m = Map::new();
    m.insert("start_ms".into(), json!(s.start_ms));
    m.insert("end_ms".into(), json!(s.end_ms));
    for f in family::ALL {
        if let Some(sec) = s.section(f.name()) {
            m.insert(
                f.name().into(),
                family::named(f.schema, f.derived, sec, scope),
            );
        }
    }
    if let Some(core) = s.section("core") {
        m.insert(
            "core".into(),
            family::named(&abi::CORE, &[], core, Scope::Host),
        );
    }
    if !s.targets.is_empty() {
        let mut t = Map::new();
        for (name, secs) in &s.targets {
            let mut fm = Map::new();
            for f in family::ALL {
                if let Some(sec) = secs.get(f.name()) {
                    fm.insert(
                        f.name().into(),
                        family::named(f.schema, f.derived, sec, Scope::Target),
                    );
                }
            }
            t.insert(name.clone(), Value::Object(fm));
        }
        m.insert("targets".into(), Value::Object(t));
    }
    if !s.files.is_empty() || s.files_truncated > 0 || s.files_unresolved > 0 {
        m.insert(
            "files".into(),
            Value::Array(s.files.iter().map(file_json).collect()),
        );
        m.insert("files_truncated".into(), json!(s.files_truncated));
        m.insert("files_unresolved".into(), json!(s.files_unresolved));
    }
    m.insert("procs_seen".into(), json!(s.procs_seen));
    m.insert("procs_truncated".into(), json!(s.procs_truncated));
    m.insert("proc_read_errors".into(), json!(s.proc_read_errors));
    m.insert(
        "procs".into(),
        Value::Array(s.procs.iter().map(proc_json).collect()),
    );
    Value::Object(m)
}

/// A process with its per-process fields named, family by family.
pub fn proc_json(p: &ProcSample) -> Value {
    let mut m = Map::new();
    m.insert("tgid".into(), json!(p.tgid));
    m.insert("comm".into(), json!(p.comm));
    m.insert("targets_mask".into(), json!(p.targets));
    for f in family::ALL {
        if let Some(v) = p.of(f.name()) {
            m.insert(f.name().into(), family::named_proc(f.schema, v));
        }
    }
    Value::Object(m)
}

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
    ];
    for f in &r.families {
        let (st, why) = state_str(&f.state);
        let st = match (&f.route, &f.state) {
            (Some(route), FamilyState::Attached) => format!("{st} (route {route})"),
            _ => st.to_string(),
        };
        let text = if why.is_empty() {
            st
        } else {
            format!("{st}: {why}")
        };
        v.push((format!("probe {}", f.family), text));
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

/// Per family: its rows as (metric, last interval, since start), or
/// `None` when the family was not attached.
type FamilyPairs = Vec<(&'static str, Option<Vec<(String, Shown, Shown)>>)>;

/// Each family's rows for the last interval and since start, side by side,
/// with the last interval's length in seconds. The table and CSV format the
/// same walk.
fn snapshot_pairs(r: &SnapshotReport, scope: Scope) -> (f64, FamilyPairs) {
    let last = r.last.clone().unwrap_or_default();
    let secs = (last.duration_ms() as f64 / 1000.0).max(0.001);
    let empty = family::Section::default();
    let fams = family::ALL
        .iter()
        .map(|f| {
            let name = f.name();
            let rows = r.totals.section(name).map(|tt| {
                let l = family::rows(f, last.section(name).unwrap_or(&empty), scope);
                l.into_iter()
                    .zip(family::rows(f, tt, scope))
                    .map(|((metric, lv), (_, tv))| (metric, lv, tv))
                    .collect()
            });
            (name, rows)
        })
        .collect();
    (secs, fams)
}

/// (section, name, last-interval rate per second, total since start).
fn snapshot_rows(r: &SnapshotReport, scope: Scope) -> Vec<(String, String, String, String)> {
    let (secs, fams) = snapshot_pairs(r, scope);
    let count = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into());
    let mut rows = Vec::new();
    for (name, pairs) in fams {
        let Some(pairs) = pairs else {
            rows.push((name.into(), "unavailable".into(), "".into(), "".into()));
            continue;
        };
        for (metric, lv, tv) in pairs {
            rows.push(match (lv, tv) {
                (Shown::Count(lv), Shown::Count(tv)) => (
                    name.into(),
                    metric,
                    lv.map(|v| format!("{:.2}", v as f64 / secs))
                        .unwrap_or_else(|| "n/a".into()),
                    count(tv),
                ),
                (Shown::Ratio(lv), Shown::Ratio(tv)) => (name.into(), metric, pct(lv), pct(tv)),
                (Shown::Micros(lv), Shown::Micros(tv)) => (name.into(), metric, us(lv), us(tv)),
                _ => (name.into(), metric, "".into(), "".into()),
            });
        }
    }
    rows
}

/// `snapshot_rows` as numbers: rates with 4 decimals, ratios as
/// fractions, quantiles in microseconds, undefined as empty.
fn snapshot_csv_rows(r: &SnapshotReport, scope: Scope) -> Vec<(String, String, String, String)> {
    let (secs, fams) = snapshot_pairs(r, scope);
    let mut rows = Vec::new();
    for (name, pairs) in fams {
        for (metric, lv, tv) in pairs.unwrap_or_default() {
            let (a, b) = match (lv, tv) {
                (Shown::Count(lv), Shown::Count(tv)) => (
                    lv.map(|v| format!("{:.4}", v as f64 / secs)),
                    tv.map(|v| v.to_string()),
                ),
                (Shown::Ratio(lv), Shown::Ratio(tv)) => {
                    (lv.map(|v| format!("{v:.4}")), tv.map(|v| format!("{v:.4}")))
                }
                (Shown::Micros(lv), Shown::Micros(tv)) => {
                    (lv.map(|v| v.to_string()), tv.map(|v| v.to_string()))
                }
                _ => (None, None),
            };
            rows.push((
                name.into(),
                metric,
                a.unwrap_or_default(),
                b.unwrap_or_default(),
            ));
        }
    }
    rows
}

/// Every number of a family section's JSON divided by `secs`, except
/// ratios (`*_ratio`) and histogram bucket bounds (`le_us`).
fn per_second(v: &Value, secs: f64) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let keep = k.ends_with("_ratio") || k == "le_us";
                    (
                        k.clone(),
                        if keep { v.clone() } else { per_second(v, secs) },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| per_second(v, secs)).collect()),
        Value::Number(n) => n
            .as_f64()
            .map(|x| json!((x / secs * 10_000.0).round() / 10_000.0))
            .unwrap_or(Value::Null),
        other => other.clone(),
    }
}

/// Names of the targets in a set of Samples.
fn target_names<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    let mut names: Vec<&str> = samples
        .flat_map(|s| s.targets.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A snapshot of one target's numbers.
pub fn snapshot_of_target(r: &SnapshotReport, target: &str) -> Result<SnapshotReport, String> {
    let totals = r.totals.for_target(target).ok_or_else(|| {
        format!(
            "no target {target:?} (targets: {}; see iomonctl status)",
            target_names(std::iter::once(&r.totals))
        )
    })?;
    Ok(SnapshotReport {
        started_ms: r.started_ms,
        ticks: r.ticks,
        last: r.last.as_ref().and_then(|l| l.for_target(target)),
        totals,
    })
}

/// History of one target's numbers (points where it was not counted are
/// left out).
pub fn history_of_target(r: &HistoryReport, target: &str) -> Result<HistoryReport, String> {
    let points: Vec<Sample> = r
        .points
        .iter()
        .filter_map(|p| p.for_target(target))
        .collect();
    if points.is_empty() && !r.points.is_empty() {
        return Err(format!(
            "no target {target:?} in this range (targets: {})",
            target_names(r.points.iter())
        ));
    }
    Ok(HistoryReport {
        points,
        ..r.clone()
    })
}

/// `scope`: the host's snapshot, or a target's ([`snapshot_of_target`]).
pub fn snapshot(r: &SnapshotReport, out: Output, scope: Scope) -> String {
    match out {
        Output::Json => {
            let last = r.last.as_ref().map(|l| sample_json(l, scope));
            // The last interval's family sections again, per second.
            let rates = r.last.as_ref().zip(last.as_ref()).map(|(l, j)| {
                let secs = (l.duration_ms() as f64 / 1000.0).max(0.001);
                let mut m = Map::new();
                m.insert("seconds".into(), json!(secs));
                for f in family::ALL {
                    if let Some(sec) = j.get(f.name()) {
                        m.insert(f.name().into(), per_second(sec, secs));
                    }
                }
                Value::Object(m)
            });
            json(&json!({
                "started_ms": r.started_ms,
                "ticks": r.ticks,
                "last": last,
                "last_per_second": rates,
                "totals": sample_json(&r.totals, scope),
            }))
        }
        Output::Csv => {
            // Numbers only: counts per second and in total, ratios as
            // fractions, latencies in microseconds; empty when undefined.
            let mut s = String::from("section,metric,per_second_last_interval,total_since_start\n");
            for (a, b, c, d) in snapshot_csv_rows(r, scope) {
                let _ = writeln!(s, "{},{},{},{}", csv_field(&a), csv_field(&b), c, d);
            }
            s
        }
        Output::Table => {
            let last_secs = r
                .last
                .as_ref()
                .map(|l| l.duration_ms() as f64 / 1000.0)
                .unwrap_or(0.0);
            let mut s = format!(
                "{:<10} {:<22} {:>16} {:>18}\n",
                "",
                "",
                format!("/s last {last_secs:.1}s"),
                "since start"
            );
            let mut prev = String::new();
            for (sec, name, last, total) in snapshot_rows(r, scope) {
                let shown = if sec == prev {
                    String::new()
                } else {
                    sec.clone()
                };
                prev = sec;
                let _ = writeln!(s, "{shown:<10} {name:<22} {last:>16} {total:>18}");
            }
            s
        }
    }
}

pub fn top(r: &TopReport, out: Output) -> String {
    let columns: Vec<(&str, &family::Column)> = family::ALL
        .iter()
        .flat_map(|f| f.columns.iter().map(move |c| (f.name(), c)))
        .collect();
    // A family not measured in the window has no numbers, not zeros.
    let measured = |fam: &str| r.families.iter().any(|f| f == fam);
    let cell = |p: &ProcSample, (fam, c): &(&str, &family::Column)| {
        measured(fam).then(|| (c.value)(p.of(fam)))
    };
    match out {
        Output::Json => json(&json!({
            "start_ms": r.start_ms,
            "end_ms": r.end_ms,
            "by": r.by,
            "families": r.families,
            "procs": r.procs.iter().map(proc_json).collect::<Vec<_>>(),
        })),
        Output::Csv => {
            let mut s = String::from("pid,comm");
            for (_, c) in &columns {
                let _ = write!(s, ",{}", c.name);
            }
            s.push('\n');
            for p in &r.procs {
                let _ = write!(s, "{},{}", p.tgid, csv_field(&p.comm));
                for c in &columns {
                    let v = match cell(p, c) {
                        Some(Cell::Count(n) | Cell::Bytes(n)) => n.to_string(),
                        Some(Cell::Ratio(r)) => r.map(|r| format!("{r:.4}")).unwrap_or_default(),
                        None => String::new(),
                    };
                    let _ = write!(s, ",{v}");
                }
                s.push('\n');
            }
            s
        }
        Output::Table => {
            let mut s = format!(
                "{} .. {}, by {}\n{:>8} {:<16}",
                format_local(r.start_ms),
                format_local(r.end_ms),
                r.by,
                "PID",
                "COMM"
            );
            for (_, c) in &columns {
                let _ = write!(s, " {:>10}", c.header);
            }
            s.push('\n');
            for p in &r.procs {
                let _ = write!(s, "{:>8} {:<16}", p.tgid, p.comm);
                for c in &columns {
                    let v = match cell(p, c) {
                        Some(Cell::Count(n)) => n.to_string(),
                        Some(Cell::Bytes(n)) => bytes(n as f64),
                        Some(Cell::Ratio(r)) => pct(r),
                        None => "n/a".into(),
                    };
                    let _ = write!(s, " {v:>10}");
                }
                s.push('\n');
            }
            if r.procs.is_empty() {
                s.push_str("(no process activity in this window)\n");
            }
            s
        }
    }
}

/// A target file as JSON: its file, path (null: not found) and pages.
fn file_json(f: &FileSample) -> Value {
    let mut m = Map::new();
    m.insert("target".into(), json!(f.target));
    m.insert("device".into(), json!(f.device()));
    m.insert("ino".into(), json!(f.ino));
    m.insert("path".into(), json!(f.path));
    for (i, name) in file::NAMES.iter().enumerate() {
        m.insert((*name).into(), json!(f.get(i)));
    }
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

/// Every series `history --metric` can chart, family by family.
pub fn all_series() -> Vec<Series> {
    family::all_series()
}

/// The `--metric` name of a series: its column name in kebab case.
pub fn series_arg(s: &Series) -> String {
    s.name.replace('_', "-")
}

/// Finds a series by its `--metric` name or column name; a few short
/// names are kept for the first release's command lines.
pub fn find_series(name: &str) -> Option<Series> {
    let name = match name {
        "asked" => "pages-asked",
        "missed" => "pages-missed",
        "readahead" => "readahead-pages",
        "fadvise" => "fadvise-calls",
        "dontneed" => "dontneed-calls",
        "reads" => "read-calls",
        "scanned" => "scanned-pages",
        "reclaimed" => "reclaimed-pages",
        "stalls" => "reclaim-stalls",
        n => n,
    };
    all_series()
        .into_iter()
        .find(|s| series_arg(s) == name || s.name == name)
}

/// One block per value, scaled to the largest.
/// A rate: two decimals below 10/s, one below 100/s, whole above.
fn rate_text(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

pub fn bar(v: Option<f64>, max: f64, width: usize) -> String {
    const BLOCKS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let Some(v) = v else { return String::new() };
    if max <= 0.0 || v <= 0.0 {
        return String::new();
    }
    let eighths = ((v / max) * (width * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(BLOCKS[eighths % 8 - 1]);
    }
    s
}

fn series_value(m: &Series, p: &Sample) -> Option<f64> {
    m.value(p.section(m.family.name()))
}

/// How `history` shows counts: per second of each point (like sar), or as
/// the point's count. Ratios are ratios either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Step,
}

/// A series' value at a point, per `per`.
fn point_value(m: &Series, p: &Sample, per: Per) -> Option<f64> {
    let v = series_value(m, p)?;
    if m.ratio || per == Per::Step {
        return Some(v);
    }
    let secs = p.duration_ms() as f64 / 1000.0;
    (secs > 0.0).then(|| v / secs)
}

/// `scope`: the host's history, or a target's ([`history_of_target`]).
pub fn history(r: &HistoryReport, metric: &Series, out: Output, scope: Scope, per: Per) -> String {
    match out {
        Output::Json => json(&json!({
            "resolution_ms": r.resolution_ms,
            "step_ms": r.step_ms,
            "oldest_ms": r.oldest_ms,
            "points": r.points.iter().map(|p| sample_json(p, scope)).collect::<Vec<_>>(),
        })),
        Output::Csv => {
            let columns: Vec<Series> = all_series()
                .into_iter()
                .filter(|m| scope.has(m.host_only))
                .collect();
            // Rates are named `<series>_per_s`; ratios and --counts keep
            // the series' name.
            let mut s = String::from("start_ms,end_ms");
            for m in &columns {
                let suffix = if m.ratio || per == Per::Step {
                    ""
                } else {
                    "_per_s"
                };
                let _ = write!(s, ",{}{suffix}", m.name);
            }
            s.push('\n');
            for p in &r.points {
                let _ = write!(s, "{},{}", p.start_ms, p.end_ms);
                for m in &columns {
                    let _ = write!(
                        s,
                        ",{}",
                        point_value(m, p, per)
                            .map(|v| {
                                if m.ratio || per == Per::Second {
                                    format!("{v:.4}")
                                } else {
                                    format!("{v:.0}")
                                }
                            })
                            .unwrap_or_default()
                    );
                }
                s.push('\n');
            }
            s
        }
        Output::Table => {
            let mut s = format!(
                "{} points, step {}, from the {} tier",
                r.points.len(),
                format_duration(std::time::Duration::from_millis(r.step_ms)),
                match r.resolution_ms {
                    60_000 => "1-minute".to_string(),
                    3_600_000 => "1-hour".to_string(),
                    ms => format!(
                        "raw ({})",
                        format_duration(std::time::Duration::from_millis(ms))
                    ),
                }
            );
            if let (Some(first), Some(oldest)) = (r.points.first(), r.oldest_ms) {
                if oldest > first.start_ms {
                    let _ = write!(s, "; history starts at {}", format_local(oldest));
                }
            }
            if r.points.is_empty() {
                let _ = write!(
                    s,
                    "\nno data in this range{}",
                    r.oldest_ms
                        .map(|o| format!(" (history starts at {})", format_local(o)))
                        .unwrap_or_else(|| " (the store is empty)".into())
                );
                s.push('\n');
                return s;
            }
            s.push('\n');
            let vals: Vec<Option<f64>> = r
                .points
                .iter()
                .map(|p| point_value(metric, p, per))
                .collect();
            // Ratios on their absolute scale (a full bar is 100 %); rates
            // and counts against the largest point, which the header names.
            let max = if metric.ratio {
                1.0
            } else {
                vals.iter().flatten().copied().fold(0.0, f64::max)
            };
            let (head, scale) = match (metric.ratio, per) {
                (true, _) => (metric.name.to_string(), "bar: 0-100 %".to_string()),
                (false, Per::Second) => (
                    format!("{}/s", metric.name),
                    format!("bar: 0-{}/s", rate_text(max)),
                ),
                (false, Per::Step) => (
                    format!("{} per step", metric.name),
                    format!("bar: 0-{max:.0}"),
                ),
            };
            let _ = writeln!(s, "{:<19} {:>18}  {scale}", "time", head);
            for (p, v) in r.points.iter().zip(&vals) {
                let shown = match v {
                    None => "n/a".to_string(),
                    Some(v) if metric.ratio => format!("{:.1}%", v * 100.0),
                    Some(v) if per == Per::Second => rate_text(*v),
                    Some(v) => format!("{v:.0}"),
                };
                let _ = writeln!(
                    s,
                    "{:<19} {shown:>18}  {}",
                    format_local(p.start_ms),
                    bar(*v, max, 40)
                );
            }
            s
        }
    }
}

pub fn probes(fams: &[FamilyStatus], out: Output, stats_on: Option<bool>) -> String {
    match out {
        Output::Json => json(&fams),
        Output::Csv => {
            let mut s = String::from(
                "family,state,route,program,event,attached,reason,run_count,run_time_ns\n",
            );
            for f in fams {
                let (st, why) = state_str(&f.state);
                for p in &f.programs {
                    let _ = writeln!(
                        s,
                        "{},{},{},{},{},{},{},{},{}",
                        f.family,
                        st,
                        f.route.as_deref().unwrap_or(""),
                        p.name,
                        p.event,
                        p.attached,
                        csv_field(p.reason.as_deref().unwrap_or(&why)),
                        p.run_count.map(|v| v.to_string()).unwrap_or_default(),
                        p.run_time_ns.map(|v| v.to_string()).unwrap_or_default()
                    );
                }
            }
            s
        }
        Output::Table => {
            let mut s = format!(
                "{:<10} {:<12} {:<13} {:<24} {:<52} {:>12} {:>9}\n",
                "FAMILY", "STATE", "ROUTE", "PROGRAM", "EVENT", "RUNS", "NS/RUN"
            );
            for f in fams {
                let (st, why) = state_str(&f.state);
                for (i, p) in f.programs.iter().enumerate() {
                    let runs = p
                        .run_count
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into());
                    let per = match (p.run_count, p.run_time_ns) {
                        (Some(c), Some(t)) if c > 0 => format!("{}", t / c),
                        _ => "-".into(),
                    };
                    let first = i == 0;
                    let _ = writeln!(
                        s,
                        "{:<10} {:<12} {:<13} {:<24} {:<52} {:>12} {:>9}",
                        if first { f.family.as_str() } else { "" },
                        if first { st } else { "" },
                        if first {
                            f.route.as_deref().unwrap_or("-")
                        } else {
                            ""
                        },
                        p.name,
                        p.event,
                        runs,
                        per
                    );
                }
                if !why.is_empty() {
                    let _ = writeln!(s, "{:<10} reason: {why}", "");
                }
                for sk in &f.skipped {
                    let _ = writeln!(s, "{:<10} not route {}: {}", "", sk.route, sk.why);
                }
            }
            if stats_on == Some(false) {
                s.push_str("(run counts need `sysctl kernel.bpf_stats_enabled=1`)\n");
            }
            s
        }
    }
}

/// How long `interval set` and `strategy set` last.
const LASTS: &str = "until iomond restarts or reloads its config";

pub fn strategy(current: Strategy, previous: Option<Strategy>, out: Output) -> String {
    match out {
        Output::Json => json(&serde_json::json!({
            "current": current.name(),
            "previous": previous.map(|p| p.name()),
            "lasts": previous.map(|_| LASTS),
        })),
        Output::Csv => format!(
            "current,previous\n{},{}\n",
            current.name(),
            previous.map(|p| p.name()).unwrap_or("")
        ),
        Output::Table => match previous {
            Some(p) if p != current => format!(
                "strategy: {} -> {} (from the next tick, {LASTS}; to keep it, set strategy in iomond's config file)\n",
                p.name(),
                current.name()
            ),
            Some(_) => format!("strategy: {} (unchanged)\n", current.name()),
            None => format!("strategy: {}\n", current.name()),
        },
    }
}

pub fn interval(current_ms: u64, previous_ms: Option<u64>, out: Output) -> String {
    let f = |ms: u64| format_duration(std::time::Duration::from_millis(ms));
    match out {
        Output::Json => json(&serde_json::json!({
            "current_ms": current_ms,
            "previous_ms": previous_ms,
            "lasts": previous_ms.map(|_| LASTS),
        })),
        Output::Csv => format!(
            "current_ms,previous_ms\n{current_ms},{}\n",
            previous_ms.map(|v| v.to_string()).unwrap_or_default()
        ),
        Output::Table => match previous_ms {
            Some(p) if p != current_ms => format!(
                "interval: {} -> {} (from the next tick, {LASTS}; to keep it, set interval in iomond's config file)\n",
                f(p),
                f(current_ms)
            ),
            Some(_) => format!("interval: {} (unchanged)\n", f(current_ms)),
            None => format!("interval: {}\n", f(current_ms)),
        },
    }
}

pub fn reloaded(changes: &[String], out: Output) -> String {
    match out {
        Output::Json => json(&serde_json::json!({ "changes": changes })),
        Output::Csv => {
            let mut s = String::from("change\n");
            for c in changes {
                let _ = writeln!(s, "{}", csv_field(c));
            }
            s
        }
        Output::Table if changes.is_empty() => "reloaded: nothing changed\n".into(),
        Output::Table => format!("reloaded:\n  {}\n", changes.join("\n  ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_maximum() {
        assert_eq!(bar(Some(10.0), 10.0, 4), "████");
        assert_eq!(bar(Some(5.0), 10.0, 4), "██");
        assert_eq!(bar(Some(0.0), 10.0, 4), "");
        assert_eq!(bar(None, 10.0, 4), "");
    }

    #[test]
    fn per_second_divides_counts_but_not_ratios_or_bucket_bounds() {
        let v = json!({
            "asked": 300, "hit_ratio": 0.5,
            "calls": {"dontneed": {"ok": 6, "error": 0}},
            "stall": {"buckets": [{"le_us": 64, "count": 3}]}
        });
        assert_eq!(
            per_second(&v, 3.0),
            json!({
                "asked": 100.0, "hit_ratio": 0.5,
                "calls": {"dontneed": {"ok": 2.0, "error": 0.0}},
                "stall": {"buckets": [{"le_us": 64, "count": 1.0}]}
            })
        );
    }

    #[test]
    fn rates_print_with_their_precision() {
        assert_eq!(rate_text(0.25), "0.25");
        assert_eq!(rate_text(42.26), "42.3");
        assert_eq!(rate_text(12345.6), "12346");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
