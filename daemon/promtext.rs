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

/// Appends a label value, escaped (`\\`, `\"`, `\n`).
fn push_escaped(s: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        s.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
}

/// Appends `{k="v",...}` (nothing without labels); `extra` last.
fn push_labels(s: &mut String, l: &[(&str, &str)], extra: Option<(&str, &str)>) {
    if l.is_empty() && extra.is_none() {
        return;
    }
    s.push('{');
    for (i, (k, v)) in l.iter().chain(extra.iter()).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        push_escaped(s, v);
        s.push('"');
    }
    s.push('}');
}

/// Appends a sample value: integers without a fraction.
fn push_num(s: &mut String, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(s, "{}", v as i64);
    } else {
        let _ = write!(s, "{v}");
    }
}

impl Out {
    /// `openmetrics`: OpenMetrics 1.0 rather than text 0.0.4; `created`:
    /// when the counters started (seconds since the epoch).
    pub fn new(openmetrics: bool, created: f64) -> Out {
        Out {
            s: String::with_capacity(64 * 1024),
            om: openmetrics,
            created,
        }
    }

    pub fn openmetrics(&self) -> bool {
        self.om
    }

    /// `name` is the family name without `_total`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (t, suffix) = match kind {
            Kind::Counter if self.om => ("counter", ""),
            Kind::Counter => ("counter", "_total"),
            Kind::Gauge => ("gauge", ""),
            Kind::Histogram => ("histogram", ""),
        };
        for (what, text) in [("# HELP ", help), ("# TYPE ", t)] {
            self.s.push_str(what);
            self.s.push_str(name);
            self.s.push_str(suffix);
            self.s.push(' ');
            self.s.push_str(text);
            self.s.push('\n');
        }
    }

    /// One sample line: `name` + `suffix`, the labels (`extra` last), the value.
    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        l: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        v: f64,
    ) {
        self.s.push_str(name);
        self.s.push_str(suffix);
        push_labels(&mut self.s, l, extra);
        self.s.push(' ');
        push_num(&mut self.s, v);
        self.s.push('\n');
    }

    pub fn gauge(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        self.line(name, "", l, None, v);
    }

    pub fn counter(&mut self, name: &str, l: &[(&str, &str)], v: u64) {
        self.counter_f64(name, l, v as f64);
    }

    /// A counter of a non-integer quantity (seconds).
    pub fn counter_f64(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        self.line(name, "_total", l, None, v);
        if self.om {
            self.line(name, "_created", l, None, self.created);
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
        let mut le = String::new();
        for (upper, n) in buckets {
            cum += n;
            le.clear();
            match upper {
                Some(u) => {
                    let _ = write!(le, "{u}");
                }
                None => le.push_str("+Inf"),
            }
            self.line(name, "_bucket", l, Some(("le", &le)), cum as f64);
        }
        self.line(name, "_count", l, None, cum as f64);
        self.line(name, "_sum", l, None, sum);
        if self.om {
            self.line(name, "_created", l, None, self.created);
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
        let mut o = Out::new(false, 0.0);
        o.gauge("g", &[("a", "a\"b\\c\nd"), ("b", "plain")], 0.5);
        assert_eq!(o.finish(), "g{a=\"a\\\"b\\\\c\\nd\",b=\"plain\"} 0.5\n");
    }

    #[test]
    fn histograms_are_cumulative_with_le_last() {
        let mut o = Out::new(false, 0.0);
        o.histogram(
            "h_seconds",
            &[("dev", "vda")],
            &[(Some(0.001), 2), (Some(0.25), 0), (None, 1)],
            1.5,
        );
        assert_eq!(
            o.finish(),
            "h_seconds_bucket{dev=\"vda\",le=\"0.001\"} 2\n\
             h_seconds_bucket{dev=\"vda\",le=\"0.25\"} 2\n\
             h_seconds_bucket{dev=\"vda\",le=\"+Inf\"} 3\n\
             h_seconds_count{dev=\"vda\"} 3\n\
             h_seconds_sum{dev=\"vda\"} 1.5\n"
        );
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
