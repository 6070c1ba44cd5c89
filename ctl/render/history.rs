//! `iomonctl history`: one series over time, per second like sar.

use std::fmt::Write;

use iomon::family::{self, Scope, Series};
use iomon::proto::HistoryReport;
use iomon::sample::Sample;

use iomon::units::format_duration;

use super::{json, sample_json, target_names, Output};
use crate::timespec::format_local;

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

/// The rows' label of block devices (`--device`).
pub const DEVICE: &str = "device";

/// History of one row key (a block device: `label` [`DEVICE`]): its
/// families' numbers alone; points where it had none are left out.
pub fn history_of_row(r: &HistoryReport, label: &str, key: &str) -> Result<HistoryReport, String> {
    let points: Vec<Sample> = r
        .points
        .iter()
        .filter_map(|p| p.for_row(label, key))
        .collect();
    if points.is_empty() && !r.points.is_empty() {
        let mut keys: Vec<&str> = r.points.iter().flat_map(|p| p.row_keys(label)).collect();
        keys.sort_unstable();
        keys.dedup();
        return Err(format!(
            "no {label} {key:?} in this range ({label}s: {})",
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        ));
    }
    Ok(HistoryReport {
        points,
        ..r.clone()
    })
}

/// Whether the series' family keeps rows with this label.
pub fn has_rows(s: &Series, label: &str) -> bool {
    family::with_rows(label).any(|f| f.name() == s.family.name())
}

/// The families that keep rows with this label, for a message.
pub fn families_with_rows(label: &str) -> String {
    family::with_rows(label)
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
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

/// One block per value, scaled to the largest.
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
    fn rates_print_with_their_precision() {
        assert_eq!(rate_text(0.25), "0.25");
        assert_eq!(rate_text(42.26), "42.3");
        assert_eq!(rate_text(12345.6), "12346");
    }
}
