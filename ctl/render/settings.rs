//! What `iomonctl strategy`, `interval` and `reload` changed.

use std::fmt::Write;

use iomon::drain::Strategy;
use iomon::units::format_duration;

use super::{csv_field, json, Output};

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
