//! `iomonctl probes`: each family, its route and programs.

use std::fmt::Write;

use iomon::probes::FamilyStatus;

use super::{csv_field, json, state_str, Output};

pub fn probes(fams: &[FamilyStatus], out: Output, stats_on: Option<bool>) -> String {
    match out {
        Output::Json => json(&fams),
        Output::Csv => {
            let mut s = String::from(
                "family,state,route,program,event,attached,reason,run_count,run_time_ns,missed\n",
            );
            for f in fams {
                let (st, why) = state_str(&f.state);
                for p in &f.programs {
                    let _ = writeln!(
                        s,
                        "{},{},{},{},{},{},{},{},{},{}",
                        f.family,
                        st,
                        f.route.as_deref().unwrap_or(""),
                        p.name,
                        p.event,
                        p.attached,
                        csv_field(
                            &p.reason
                                .clone()
                                .or_else(|| p.waiting())
                                .unwrap_or(why.clone())
                        ),
                        p.run_count.map(|v| v.to_string()).unwrap_or_default(),
                        p.run_time_ns.map(|v| v.to_string()).unwrap_or_default(),
                        p.missed.map(|v| v.to_string()).unwrap_or_default()
                    );
                }
            }
            s
        }
        Output::Table => {
            let mut s = format!(
                "{:<10} {:<12} {:<13} {:<24} {:<52} {:>12} {:>9} {:>8}\n",
                "FAMILY", "STATE", "ROUTE", "PROGRAM", "EVENT", "RUNS", "NS/RUN", "MISSED"
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
                        "{:<10} {:<12} {:<13} {:<24} {:<52} {:>12} {:>9} {:>8}",
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
                        per,
                        p.missed
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
                if !why.is_empty() {
                    let _ = writeln!(s, "{:<10} reason: {why}", "");
                }
                for p in &f.programs {
                    if let Some(w) = p.waiting() {
                        let _ = writeln!(s, "{:<10} {}: {w}", "", p.name);
                    }
                }
                for sk in &f.skipped {
                    let _ = writeln!(s, "{:<10} not route {}: {}", "", sk.route, sk.why);
                }
            }
            if fams
                .iter()
                .flat_map(|f| &f.programs)
                .any(|p| p.missed.unwrap_or(0) > 0)
            {
                s.push_str("(MISSED: events the kernel did not run the program for, because a BPF program or a bpf() call was already running on that CPU; they are not in the counts)\n");
            }
            if stats_on == Some(false) {
                s.push_str("(run counts need `sysctl kernel.bpf_stats_enabled=1`)\n");
            }
            s
        }
    }
}
