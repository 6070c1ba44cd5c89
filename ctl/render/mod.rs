//! Rendering replies for people (tables) and scripts (json, csv), one
//! module per command. JSON names every field: families' counters by
//! their declared names (nested by dimension values), histograms with
//! their bucket bounds, derived ratios beside them. CSV has a header line
//! and one row per item.

mod banyandb;
mod files;
mod history;
mod probes;
mod settings;
mod snapshot;
mod status;
mod top;

use serde_json::{json, Map, Value};

use iomon::abi;
use iomon::family::{self, Scope};
use iomon::probes::FamilyState;
use iomon::sample::{ProcSample, Sample};

pub use banyandb::banyandb;
use files::file_json;
pub use files::files;
pub use history::{
    all_series, families_with_rows, find_series, has_rows, history, history_of_row,
    history_of_target, series_arg, Per, DEVICE,
};
pub use probes::probes;
pub use settings::{interval, reloaded, strategy};
pub use snapshot::{snapshot, snapshot_of_target};
pub use status::status;
pub use top::top;

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
    iomon::units::format_bytes(n)
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
    // Families' rows, the host's: {"block": {"device": {"vda": {...}}}}.
    if !s.rows.is_empty() {
        let mut r = Map::new();
        for f in family::ALL {
            let (Some(decl), Some(keyed)) = (&f.schema.rows, s.rows.get(f.name())) else {
                continue;
            };
            let by_key: Map<String, Value> = keyed
                .iter()
                .map(|(k, sec)| {
                    let v = family::named(f.schema, f.derived, sec, Scope::Host);
                    (k.clone(), v)
                })
                .collect();
            r.insert(f.name().into(), json!({ decl.label: by_key }));
        }
        m.insert("rows".into(), Value::Object(r));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
