//! `iomonctl top`: the busiest processes, a column per family field.

use std::fmt::Write;

use iomon::family::{self, Cell};
use iomon::proto::TopReport;
use iomon::sample::ProcSample;

use super::{bytes, csv_field, json, pct, proc_json, Output};
use crate::timespec::format_local;

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
