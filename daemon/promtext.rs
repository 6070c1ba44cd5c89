//! Writing Prometheus text (0.0.4) and OpenMetrics 1.0: metric families
//! with `# HELP`/`# TYPE`, counters with `_total` (and `_created` in
//! OpenMetrics), histograms with cumulative buckets, label values escaped.
//! A leaf: knows nothing of what is being exported.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The text being rendered; exporters write their metrics through it.
pub struct Out {
    s: String,
    om: bool,
    created: f64,
}

pub fn escape_label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Out {
    /// `openmetrics`: OpenMetrics 1.0 rather than text 0.0.4; `created`:
    /// when the counters started (seconds since the epoch).
    pub fn new(openmetrics: bool, created: f64) -> Out {
        Out {
            s: String::with_capacity(16 * 1024),
            om: openmetrics,
            created,
        }
    }

    pub fn openmetrics(&self) -> bool {
        self.om
    }

    /// `name` is the family name without `_total`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (t, shown) = match kind {
            Kind::Counter if self.om => ("counter", name.to_string()),
            Kind::Counter => ("counter", format!("{name}_total")),
            Kind::Gauge => ("gauge", name.to_string()),
            Kind::Histogram => ("histogram", name.to_string()),
        };
        let _ = writeln!(self.s, "# HELP {shown} {help}");
        let _ = writeln!(self.s, "# TYPE {shown} {t}");
    }

    fn line(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.s, "{name}{} {}", labels(l), num(v));
    }

    pub fn gauge(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        self.line(name, l, v);
    }

    pub fn counter(&mut self, name: &str, l: &[(&str, &str)], v: u64) {
        self.counter_f64(name, l, v as f64);
    }

    /// A counter of a non-integer quantity (seconds).
    pub fn counter_f64(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        self.line(&format!("{name}_total"), l, v);
        if self.om {
            self.line(&format!("{name}_created"), l, self.created);
        }
    }

    /// A histogram: per bucket, its upper bound (`None`: +Inf, the last)
    /// and its count (not cumulative); the sum of the observed values.
    pub fn histogram(
        &mut self,
        name: &str,
        l: &[(&str, &str)],
        buckets: &[(Option<f64>, u64)],
        sum: f64,
    ) {
        let mut cum = 0u64;
        for (upper, n) in buckets {
            cum += n;
            let le = match upper {
                Some(u) => format!("{u}"),
                None => "+Inf".to_string(),
            };
            let mut ll: Vec<(&str, &str)> = l.to_vec();
            ll.push(("le", &le));
            self.line(&format!("{name}_bucket"), &ll, cum as f64);
        }
        self.line(&format!("{name}_count"), l, cum as f64);
        self.line(&format!("{name}_sum"), l, sum);
        if self.om {
            self.line(&format!("{name}_created"), l, self.created);
        }
    }

    /// The text, with OpenMetrics' `# EOF` where it is due.
    pub fn finish(mut self) -> String {
        if self.om {
            self.s.push_str("# EOF\n");
        }
        self.s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn counters_get_total_and_created() {
        let mut o = Out::new(true, 1.0);
        o.family("iomon_ticks", Kind::Counter, "Drain ticks.");
        o.counter("iomon_ticks", &[], 0);
        assert_eq!(
            o.finish(),
            "# HELP iomon_ticks Drain ticks.\n# TYPE iomon_ticks counter\niomon_ticks_total 0\niomon_ticks_created 1\n# EOF\n"
        );
    }
}
