//! `iomonctl snapshot`: the last interval per second beside the totals
//! since start.

use std::fmt::Write;

use serde_json::{Map, Value};

use iomon::family::{self, Scope, Shown};
use iomon::proto::SnapshotReport;

use super::{csv_field, json, pct, sample_json, target_names, us, Output};

/// Per family: its rows as (metric, last interval, since start), or
/// `None` when the family was not attached.
type FamilyPairs = Vec<(String, Option<Vec<(String, Shown, Shown)>>)>;

/// Each family's rows for the last interval and since start, side by side,
/// with the last interval's length in seconds. The table and CSV format the
/// same walk.
fn snapshot_pairs(r: &SnapshotReport, scope: Scope) -> (f64, FamilyPairs) {
    let last = r.last.clone().unwrap_or_default();
    let secs = (last.duration_ms() as f64 / 1000.0).max(0.001);
    let empty = family::Section::default();
    let pairs = |f: &family::Family, l: &family::Section, t: &family::Section| {
        family::rows(f, l, scope)
            .into_iter()
            .zip(family::rows(f, t, scope))
            .map(|((metric, lv), (_, tv))| (metric, lv, tv))
            .collect::<Vec<_>>()
    };
    let mut fams = Vec::new();
    for f in family::ALL {
        let name = f.name();
        let rows = r
            .totals
            .section(name)
            .map(|tt| pairs(f, last.section(name).unwrap_or(&empty), tt));
        fams.push((name.to_string(), rows));
        // Its rows (per device: the host's), what they counted at all.
        for (key, tt) in r.totals.rows.get(name).into_iter().flatten() {
            let l = last.rows.get(name).and_then(|m| m.get(key));
            let counted: Vec<_> = pairs(f, l.unwrap_or(&empty), tt)
                .into_iter()
                .filter(|(_, _, tv)| !matches!(tv, Shown::Count(None | Some(0))))
                .collect();
            fams.push((format!("{name} {key}"), Some(counted)));
        }
    }
    (secs, fams)
}

/// (section, name, last-interval rate per second, total since start).
fn snapshot_rows(r: &SnapshotReport, scope: Scope) -> Vec<(String, String, String, String)> {
    let (secs, fams) = snapshot_pairs(r, scope);
    let count = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into());
    let mut rows = Vec::new();
    for (name, pairs) in fams {
        let Some(pairs) = pairs else {
            rows.push((name, "unavailable".into(), "".into(), "".into()));
            continue;
        };
        for (metric, lv, tv) in pairs {
            rows.push(match (lv, tv) {
                (Shown::Count(lv), Shown::Count(tv)) => (
                    name.clone(),
                    metric,
                    lv.map(|v| format!("{:.2}", v as f64 / secs))
                        .unwrap_or_else(|| "n/a".into()),
                    count(tv),
                ),
                (Shown::Ratio(lv), Shown::Ratio(tv)) => (name.clone(), metric, pct(lv), pct(tv)),
                (Shown::Micros(lv), Shown::Micros(tv)) => (name.clone(), metric, us(lv), us(tv)),
                _ => (name.clone(), metric, "".into(), "".into()),
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
                name.clone(),
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
            let rows = snapshot_rows(r, scope);
            // The names' column as wide as the longest (declared names
            // vary: a fixed width shifted the numbers of the long ones).
            let w = rows
                .iter()
                .map(|(_, n, _, _)| n.chars().count())
                .max()
                .unwrap_or(0)
                .max(22);
            let mut s = format!(
                "{:<10} {:<w$} {:>16} {:>18}\n",
                "",
                "",
                format!("/s last {last_secs:.1}s"),
                "since start"
            );
            let mut prev = String::new();
            for (sec, name, last, total) in rows {
                let shown = if sec == prev {
                    String::new()
                } else {
                    sec.clone()
                };
                prev = sec;
                let _ = writeln!(s, "{shown:<10} {name:<w$} {last:>16} {total:>18}");
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_s_numbers_line_up_however_long_a_name() {
        let mut totals = iomon::sample::Sample::default();
        for f in family::ALL {
            totals
                .sections
                .insert(f.name().into(), family::Section::default());
        }
        let r = SnapshotReport {
            started_ms: 0,
            ticks: 1,
            last: Some(totals.clone()),
            totals,
        };
        let t = snapshot(&r, Output::Table, Scope::Host);
        assert!(t.lines().count() > 50, "{t}");
        let widths: std::collections::BTreeSet<usize> =
            t.lines().map(|l| l.chars().count()).collect();
        assert_eq!(widths.len(), 1, "lines of different widths:\n{t}");
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
}
