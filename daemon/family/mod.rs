//! Probe families: the unit of extension (DESIGN.md, "Families").
//!
//! A family is its BPF programs (`bpf/families/<name>.bpf.c`), its
//! declaration (`bpf/families/<name>.toml`: counters, histograms,
//! per-process fields, history series, routes) and one module here for
//! what is derived from its numbers: ratios, snapshot rows, the top
//! columns, the `--dev` tick line, metrics that are not plain counters.
//! Everything declared (layout, decode, delta, merge, metric names, help
//! and labels, history columns, JSON field names) is handled once, here,
//! from the declaration. Registering a family is one line below: its
//! module; [`ALL`] is generated from the declarations (their `order`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::abi::{self, Field, Schema};
use crate::hist;
use crate::promtext::{Kind, Out};

// The registration line of each family: its module.
pub mod block;
pub mod fadvise;
pub mod mmap;
pub mod pagecache;
pub mod reads;
pub mod reclaim;
pub mod writeback;

include!(concat!(env!("OUT_DIR"), "/families.rs"));

/// A family's part of a Sample: its counters and histograms over one
/// interval (or summed over several), laid out as declared. A counter the
/// vector is too short for is absent (the data is older than the counter),
/// never zero; an empty histogram vector is a histogram that was not
/// measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub counters: Vec<u64>,
    pub hists: Vec<Vec<u64>>,
}

impl Section {
    pub fn get(&self, i: usize) -> Option<u64> {
        self.counters.get(i).copied()
    }

    /// The sum of some elements; `None` if none of them is present.
    /// Every element of the counter `name` of `schema` summed: a
    /// dimensioned counter's total.
    pub fn total(&self, schema: &Schema, name: &str) -> Option<u64> {
        let f = schema.counters.iter().find(|c| c.name == name)?;
        self.sum(&(f.offset..f.offset + f.len).collect::<Vec<_>>())
    }

    pub fn sum(&self, elements: &[usize]) -> Option<u64> {
        let mut any = false;
        let mut total = 0u64;
        for e in elements {
            if let Some(v) = self.get(*e) {
                any = true;
                total = total.saturating_add(v);
            }
        }
        any.then_some(total)
    }

    /// A histogram's buckets; `None` where it was not measured.
    pub fn hist(&self, i: usize) -> Option<&[u64]> {
        self.hists
            .get(i)
            .map(Vec::as_slice)
            .filter(|h| !h.is_empty())
    }

    /// Adds `o` element-wise, growing to the longer layout.
    pub fn merge(&mut self, o: &Section) {
        add_slice(&mut self.counters, &o.counters);
        if self.hists.len() < o.hists.len() {
            self.hists.resize(o.hists.len(), Vec::new());
        }
        for (a, b) in self.hists.iter_mut().zip(&o.hists) {
            add_slice(a, b);
        }
    }
}

/// Adds `other` into `acc` element-wise, growing `acc` if needed.
pub fn add_slice(acc: &mut Vec<u64>, other: &[u64]) {
    if acc.len() < other.len() {
        acc.resize(other.len(), 0);
    }
    for (a, b) in acc.iter_mut().zip(other) {
        *a = a.saturating_add(*b);
    }
}

/// Whose numbers a section holds: the host's, or a target's (which has
/// no host-only counters: see [`Field::host_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Host,
    Target,
}

impl Scope {
    /// Whether a field measured `host_only` has a value in this scope.
    pub fn has(self, host_only: bool) -> bool {
        self == Scope::Host || !host_only
    }
}

/// A value `iomonctl snapshot` shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shown {
    /// An event or page count: shown per second and as a total.
    Count(Option<u64>),
    /// A ratio in [0, 1]; `None` when it is undefined (nothing asked).
    Ratio(Option<f64>),
    /// A latency quantile in microseconds (histogram bucket bound).
    Micros(Option<u64>),
}

/// Snapshot rows: (name, value).
pub type Rows = Vec<(String, Shown)>;

/// A history series a family derives (a ratio), beside its declared sums.
#[derive(Debug)]
pub struct Derived {
    pub name: &'static str,
    pub value: fn(&Section) -> Option<f64>,
    /// Shown as a percentage, on a 0–100 % scale.
    pub ratio: bool,
}

/// A counter a family derives: its name, help, and values by labels.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedMetric {
    pub name: &'static str,
    pub help: &'static str,
    pub values: Vec<(Vec<(&'static str, &'static str)>, u64)>,
}

/// A cell of `iomonctl top`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Count(u64),
    Bytes(u64),
    Ratio(Option<f64>),
}

/// A column of `iomonctl top`, from a process's per-process fields of the
/// family (`None`: the process did nothing the family saw).
#[derive(Debug)]
pub struct Column {
    pub header: &'static str,
    /// CSV and JSON name.
    pub name: &'static str,
    pub value: fn(Option<&[u64]>) -> Cell,
}

/// Per process name, a family's per-process fields (`None`: the name did
/// nothing the family saw).
pub type ProcRows<'a> = [(&'a str, Option<&'a [u64]>)];

/// What a family derives from its numbers; the rest comes from its
/// declaration ([`Family::schema`]).
pub struct Family {
    pub schema: &'static Schema,
    /// Snapshot rows shown before the declared ones (ratios).
    pub rows: fn(&Section) -> Rows,
    /// Derived history series (ratios).
    pub derived: &'static [Derived],
    /// Metrics that are not plain counters (hit/miss splits). Written only
    /// where the family's section is present, for the host and each
    /// target.
    pub metrics: fn(&Section) -> Vec<DerivedMetric>,
    /// The same per process name: (name, that name's per-process fields).
    pub proc_metrics: fn(&ProcRows, &mut Out),
    /// Its part of the `--dev` tick line, over an interval of `secs`.
    pub tick: fn(&Section, f64) -> String,
    /// Its columns in `iomonctl top`.
    pub columns: &'static [Column],
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.schema.name)
            .finish_non_exhaustive()
    }
}

impl Family {
    pub fn name(&self) -> &'static str {
        self.schema.name
    }
}

pub fn by_name(name: &str) -> Option<&'static Family> {
    ALL.iter().copied().find(|f| f.name() == name)
}

/// The families that keep rows with this label (`device`: the block
/// family's per device).
pub fn with_rows(label: &str) -> impl Iterator<Item = &'static Family> + '_ {
    ALL.iter()
        .copied()
        .filter(move |f| f.schema.rows.as_ref().is_some_and(|r| r.label == label))
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|f| f.name()).collect()
}

/// A field's name in a row, with `{label}` replaced by a dimension value.
fn shown_name(template: &str, dims: &[&abi::Dim], values: &[&str]) -> String {
    let mut s = template.to_string();
    for (d, v) in dims.iter().zip(values) {
        s = s.replace(&format!("{{{}}}", d.label), v);
    }
    s
}

/// Every snapshot row of a family: the derived ones, then each declared
/// counter that is shown (an element per row), then the quantiles of each
/// shown histogram; those the scope has.
pub fn rows(f: &Family, s: &Section, scope: Scope) -> Rows {
    let mut rows = (f.rows)(s);
    for c in f.schema.counters {
        let Some(template) = c.shown else { continue };
        if !scope.has(c.host_only) {
            continue;
        }
        let dims: Vec<&abi::Dim> = c.dims.iter().collect();
        for (e, values) in c.elements() {
            rows.push((shown_name(template, &dims, &values), Shown::Count(s.get(e))));
        }
    }
    for (i, h) in f.schema.hists.iter().enumerate() {
        let Some(name) = h.shown else { continue };
        if !scope.has(h.host_only) {
            continue;
        }
        for q in h.quantiles {
            rows.push((
                format!("{name} p{}", (q * 100.0).round() as u64),
                Shown::Micros(s.hist(i).and_then(|b| hist::quantile_us(b, *q))),
            ));
        }
    }
    rows
}

/// A series `iomonctl history --metric` can chart (also a CSV column).
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub family: &'static Family,
    pub name: &'static str,
    pub ratio: bool,
    /// Sums counters measured for the host only.
    pub host_only: bool,
    kind: SeriesKind,
}

#[derive(Debug, Clone, Copy)]
enum SeriesKind {
    Sum(&'static [usize]),
    Derived(fn(&Section) -> Option<f64>),
}

impl Series {
    /// The value over a section of its family; `None` when the family was
    /// not attached (no section) or the counters are absent.
    pub fn value(&self, s: Option<&Section>) -> Option<f64> {
        let s = s?;
        match self.kind {
            SeriesKind::Sum(el) => s.sum(el).map(|v| v as f64),
            SeriesKind::Derived(f) => f(s),
        }
    }
}

/// Every series, family by family: derived ratios first, then the
/// declared sums.
pub fn all_series() -> Vec<Series> {
    let mut v = Vec::new();
    for f in ALL.iter().copied() {
        for d in f.derived {
            v.push(Series {
                family: f,
                name: d.name,
                ratio: d.ratio,
                host_only: false,
                kind: SeriesKind::Derived(d.value),
            });
        }
        for s in f.schema.series {
            v.push(Series {
                family: f,
                name: s.name,
                ratio: false,
                host_only: s.host_only,
                kind: SeriesKind::Sum(s.elements),
            });
        }
    }
    v
}

/// Labels of an element: its dimension labels and values.
fn element_labels<'a>(field: &'a Field, values: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    field
        .dims
        .iter()
        .map(|d| d.label)
        .zip(values.iter().copied())
        .collect()
}

/// A value in the unit it is exported in (ns as seconds).
fn exported(field: &Field, v: u64) -> f64 {
    if field.unit == "ns" {
        v as f64 / 1e9
    } else {
        v as f64
    }
}

/// One metric family's series, ready to write.
#[derive(Debug, Clone)]
pub struct MetricOut {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub series: Vec<(Vec<(String, String)>, MetricValue)>,
}

#[derive(Debug, Clone)]
pub enum MetricValue {
    Counter(f64),
    /// Buckets (upper bound in seconds, count), and the sum in seconds.
    Histogram(Vec<(Option<f64>, u64)>, f64),
}

/// A family's metrics over one section: each declared counter and
/// histogram that has a metric name, then the derived ones. Counters absent
/// from the section, or not measured in its scope, are left out.
pub fn metrics_of(f: &Family, s: &Section, scope: Scope) -> Vec<MetricOut> {
    let mut v = section_metrics(f.schema, s, scope);
    for d in (f.metrics)(s) {
        v.push(MetricOut {
            name: d.name.to_string(),
            help: d.help.to_string(),
            kind: Kind::Counter,
            series: d
                .values
                .into_iter()
                .map(|(l, n)| {
                    let l = l
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    (l, MetricValue::Counter(n as f64))
                })
                .collect(),
        });
    }
    v
}

/// The declared metrics of any section (`core` too).
pub fn section_metrics(schema: &Schema, s: &Section, scope: Scope) -> Vec<MetricOut> {
    let mut v = Vec::new();
    for c in schema.counters {
        let Some(metric) = c.metric else { continue };
        if !scope.has(c.host_only) {
            continue;
        }
        let series: Vec<_> = c
            .elements()
            .into_iter()
            .filter_map(|(e, values)| {
                let n = s.get(e)?;
                let l = element_labels(c, &values)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Some((l, MetricValue::Counter(exported(c, n))))
            })
            .collect();
        if !series.is_empty() {
            v.push(MetricOut {
                name: metric.to_string(),
                help: c.help.to_string(),
                kind: Kind::Counter,
                series,
            });
        }
    }
    for (i, h) in schema.hists.iter().enumerate() {
        let (Some(metric), Some(buckets)) = (h.metric, s.hist(i)) else {
            continue;
        };
        if !scope.has(h.host_only) {
            continue;
        }
        let sum_ns = h.sum.and_then(|e| s.get(e)).unwrap_or(0);
        v.push(MetricOut {
            name: metric.to_string(),
            help: h.help.to_string(),
            kind: Kind::Histogram,
            series: vec![(
                Vec::new(),
                MetricValue::Histogram(bucket_list(buckets), sum_ns as f64 / 1e9),
            )],
        });
    }
    v
}

/// Writes metric families.
pub fn write_out(families: &[MetricOut], o: &mut Out) {
    for m in families {
        o.family(&m.name, m.kind, &m.help);
        for (labels, value) in &m.series {
            let l: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match value {
                MetricValue::Counter(v) => o.counter_f64(&m.name, &l, *v),
                MetricValue::Histogram(b, sum) => o.histogram(&m.name, &l, b, *sum),
            }
        }
    }
}

/// The same metrics for targets: `iomon_target_<name>` with a `target`
/// label first, each family once with every target's series.
pub fn target_metrics(per_target: &[(&str, Vec<MetricOut>)]) -> Vec<MetricOut> {
    labelled(
        "target",
        "Counted for a target (see [targets]).",
        per_target,
    )
}

/// A family's metrics per row key: `iomon_<label>_<name>` with the key
/// under `label` first (`iomon_device_block_requests_total{device="vda"}`).
pub fn row_metrics(label: &str, per_key: &[(&str, Vec<MetricOut>)]) -> Vec<MetricOut> {
    labelled(label, &format!("Per {label}."), per_key)
}

/// Metrics of several scopes as one family each: `iomon_<label>_<name>`,
/// with the scope's name as the first label.
fn labelled(label: &str, help: &str, per: &[(&str, Vec<MetricOut>)]) -> Vec<MetricOut> {
    let mut out: Vec<MetricOut> = Vec::new();
    for (scope, families) in per {
        for m in families {
            let name = format!("iomon_{label}_{}", m.name.trim_start_matches("iomon_"));
            let idx = match out.iter().position(|o| o.name == name) {
                Some(i) => i,
                None => {
                    out.push(MetricOut {
                        name,
                        help: format!("{} {help}", m.help),
                        kind: m.kind,
                        series: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            for (labels, value) in &m.series {
                let mut l = vec![(label.to_string(), scope.to_string())];
                l.extend(labels.iter().cloned());
                out[idx].series.push((l, value.clone()));
            }
        }
    }
    out
}

/// What the per-name series are, for their help text.
pub const PER_NAME: &str = "By process name: the targets' names and metrics.targets always, then the busiest names up to metrics.max_series; every other name under comm=\"other\".";

/// Buckets as (upper bound in seconds, count).
pub fn bucket_list(buckets: &[u64]) -> Vec<(Option<f64>, u64)> {
    (0..hist::BUCKETS)
        .map(|b| {
            (
                hist::bucket_upper_us(b).map(|us| us as f64 / 1e6),
                buckets.get(b).copied().unwrap_or(0),
            )
        })
        .collect()
}

/// Writes a family's per-process-name metrics: each declared per-process
/// field that has a metric name (label `comm` first), then the derived
/// ones.
pub fn write_proc_metrics(f: &Family, comms: &ProcRows, o: &mut Out) {
    for p in f.schema.proc {
        let Some(metric) = p.metric else { continue };
        o.family(metric, Kind::Counter, &format!("{} {PER_NAME}", p.help));
        for (comm, v) in comms {
            for (e, values) in p.elements() {
                let mut l = vec![("comm", *comm)];
                l.extend(element_labels(p, &values));
                let n = v.and_then(|v| v.get(e).copied()).unwrap_or(0);
                o.counter_f64(metric, &l, exported(p, n));
            }
        }
    }
    (f.proc_metrics)(comms, o);
}

fn named_fields(
    fields: &[Field],
    scope: Scope,
    get: impl Fn(usize) -> Option<u64>,
) -> Map<String, Value> {
    let mut m = Map::new();
    for field in fields.iter().filter(|f| scope.has(f.host_only)) {
        if field.dims.is_empty() {
            m.insert(field.name.into(), json!(get(field.offset)));
            continue;
        }
        // Nested by dimension value, outermost first.
        let mut root = Value::Object(Map::new());
        for (e, values) in field.elements() {
            let mut node = &mut root;
            for (i, v) in values.iter().enumerate() {
                let obj = node.as_object_mut().expect("built as objects");
                node = if i + 1 == values.len() {
                    obj.insert((*v).into(), json!(get(e)));
                    break;
                } else {
                    obj.entry(*v).or_insert_with(|| Value::Object(Map::new()))
                };
            }
        }
        m.insert(field.name.into(), root);
    }
    m
}

/// A section with named fields, for scripts: counters by name (nested by
/// dimension values), histograms with their bucket bounds, and the
/// derived ratios. Absent counters are `null`; those not measured in the
/// scope are left out.
pub fn named(schema: &Schema, derived: &[Derived], s: &Section, scope: Scope) -> Value {
    let mut m = named_fields(schema.counters, scope, |e| s.get(e));
    for (i, h) in schema.hists.iter().enumerate() {
        if !scope.has(h.host_only) {
            continue;
        }
        let v = match s.hist(i) {
            None => Value::Null,
            Some(b) => {
                let buckets: Vec<Value> = (0..hist::BUCKETS)
                    .map(|i| json!({"le_us": hist::bucket_upper_us(i), "count": b.get(i).copied().unwrap_or(0)}))
                    .collect();
                json!({
                    "count": b.iter().sum::<u64>(),
                    "sum_ns": h.sum.and_then(|e| s.get(e)),
                    "buckets": buckets,
                })
            }
        };
        m.insert(h.name.into(), v);
    }
    for d in derived {
        m.insert(d.name.into(), json!((d.value)(s)));
    }
    Value::Object(m)
}

/// A process's per-process fields of a family, named.
pub fn named_proc(schema: &Schema, v: &[u64]) -> Value {
    Value::Object(named_fields(schema.proc, Scope::Host, |e| {
        v.get(e).copied()
    }))
}

/// `iomonctl top --by` keys: "activity", then each declared rank.
pub fn ranks() -> Vec<&'static str> {
    let mut v = vec!["activity"];
    for f in ALL {
        v.extend(f.schema.proc.iter().filter_map(|p| p.rank));
    }
    v
}

/// The (family, field) a rank key stands for.
pub fn rank_field(key: &str) -> Option<(&'static Family, &'static Field)> {
    ALL.iter().copied().find_map(|f| {
        f.schema
            .proc
            .iter()
            .find(|p| p.rank == Some(key))
            .map(|p| (f, p))
    })
}

/// `1 - missed / asked`, clamped to [0, 1]; `None` when nothing was asked.
pub fn hit_ratio(asked: u64, missed: u64) -> Option<f64> {
    if asked == 0 {
        return None;
    }
    Some(1.0 - (missed.min(asked) as f64 / asked as f64))
}

/// A hit ratio in pages, as the pagecache and mmap families count it:
/// pages *asked* for, and of those the pages that had to be brought in
/// (*missed*: the sum of some counters). One derivation for both: the
/// ratio, the snapshot rows, the hit/miss split (missed never more than
/// asked, so hit + miss = asked), the same per process name, and the top
/// columns' values.
#[derive(Debug)]
pub struct HitMiss {
    /// The asked counter and the counters summed as missed.
    pub asked: usize,
    pub missed: &'static [usize],
    /// The same among the per-process fields.
    pub proc_asked: usize,
    pub proc_missed: usize,
    /// The hit/miss split's metric name and help, for the host (and the
    /// targets), and per process name.
    pub metric: &'static str,
    pub proc_metric: &'static str,
    pub help: &'static str,
}

impl HitMiss {
    /// Pages asked for that had to be brought in.
    pub fn missed(&self, s: &Section) -> Option<u64> {
        s.sum(self.missed)
    }

    /// `None` when no page was asked for.
    pub fn ratio(&self, s: &Section) -> Option<f64> {
        hit_ratio(s.get(self.asked)?, self.missed(s)?)
    }

    /// (hit, miss), adding up to asked.
    fn split(asked: u64, missed: u64) -> (u64, u64) {
        let miss = missed.min(asked);
        (asked - miss, miss)
    }

    pub fn rows(&self, s: &Section) -> Rows {
        vec![
            ("hit ratio".into(), Shown::Ratio(self.ratio(s))),
            ("pages missed".into(), Shown::Count(self.missed(s))),
        ]
    }

    pub fn metrics(&self, s: &Section) -> Vec<DerivedMetric> {
        let (Some(asked), Some(missed)) = (s.get(self.asked), self.missed(s)) else {
            return Vec::new();
        };
        let (hit, miss) = Self::split(asked, missed);
        vec![DerivedMetric {
            name: self.metric,
            help: self.help,
            values: vec![
                (vec![("result", "hit")], hit),
                (vec![("result", "miss")], miss),
            ],
        }]
    }

    /// A process's (asked, missed) pages.
    pub fn of_proc(&self, v: Option<&[u64]>) -> (u64, u64) {
        let get = |i: usize| v.and_then(|v| v.get(i).copied()).unwrap_or(0);
        (get(self.proc_asked), get(self.proc_missed))
    }

    pub fn proc_ratio(&self, v: Option<&[u64]>) -> Cell {
        let (asked, missed) = self.of_proc(v);
        Cell::Ratio(hit_ratio(asked, missed))
    }

    pub fn proc_metrics(&self, comms: &ProcRows, o: &mut Out) {
        o.family(
            self.proc_metric,
            Kind::Counter,
            &format!("{} {PER_NAME}", self.help),
        );
        for (c, v) in comms {
            let (asked, missed) = self.of_proc(*v);
            let (hit, miss) = Self::split(asked, missed);
            o.counter(self.proc_metric, &[("comm", c), ("result", "hit")], hit);
            o.counter(self.proc_metric, &[("comm", c), ("result", "miss")], miss);
        }
    }

    /// `<what> hit 99.5% (asked N missed M`: the start of a tick line.
    pub fn tick(&self, what: &str, s: &Section) -> String {
        let r = self
            .ratio(s)
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "n/a".into());
        format!(
            "{what} hit {r} (asked {} missed {}",
            s.get(self.asked).unwrap_or(0),
            self.missed(s).unwrap_or(0)
        )
    }
}

/// Sections by family name (what a Sample holds).
pub type Sections = BTreeMap<String, Section>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declaration_is_registered_once() {
        let declared: Vec<&str> = abi::SCHEMAS
            .iter()
            .map(|s| s.name)
            .filter(|n| *n != "core")
            .collect();
        let mut registered = names();
        registered.sort_unstable();
        let mut d = declared.clone();
        d.sort_unstable();
        assert_eq!(registered, d, "bpf/families/*.toml and family::ALL differ");
        let orders: Vec<u32> = ALL.iter().map(|f| f.schema.order).collect();
        assert!(orders.windows(2).all(|w| w[0] < w[1]), "{orders:?}");
    }

    #[test]
    fn ratio_is_none_without_reads_and_clamped() {
        assert_eq!(hit_ratio(0, 0), None);
        assert_eq!(hit_ratio(100, 0), Some(1.0));
        assert_eq!(hit_ratio(100, 50), Some(0.5));
        assert_eq!(hit_ratio(100, 150), Some(0.0));
    }

    #[test]
    fn absent_counters_are_absent_not_zero() {
        let old = Section {
            counters: vec![1, 2],
            hists: vec![],
        };
        assert_eq!(old.get(5), None);
        assert_eq!(old.sum(&[0, 1, 5]), Some(3));
        assert_eq!(old.sum(&[5, 6]), None);
        assert!(old.hist(0).is_none());
        let mut acc = old.clone();
        acc.merge(&Section {
            counters: vec![1, 1, 1],
            hists: vec![vec![0, 2]],
        });
        assert_eq!(acc.counters, vec![2, 3, 1]);
        assert_eq!(acc.hist(0), Some(&[0, 2][..]));
    }

    #[test]
    fn named_sections_nest_by_dimension() {
        let mut s = Section {
            counters: vec![0; abi::FADVISE.ncounters],
            hists: vec![],
        };
        s.counters[abi::FADVISE.counters[0]
            .at(&[abi::fadvise::advice::DONTNEED, abi::fadvise::result::OK])] = 37;
        let v = named(&abi::FADVISE, fadvise::FAMILY.derived, &s, Scope::Host);
        assert_eq!(v["calls"]["dontneed"]["ok"], 37);
        assert_eq!(v["calls"]["normal"]["error"], 0);
    }

    #[test]
    fn a_target_shows_no_host_only_number_rather_than_a_zero() {
        let f = by_name("writeback").unwrap();
        let s = Section {
            counters: vec![0; f.schema.ncounters],
            hists: vec![vec![0; hist::BUCKETS]; f.schema.hists.len()],
        };
        let host = named(f.schema, f.derived, &s, Scope::Host);
        let target = named(f.schema, f.derived, &s, Scope::Target);
        for k in ["written", "inodes", "age_ns", "dirty_age"] {
            assert!(host.get(k).is_some() && target.get(k).is_none(), "{k}");
        }
        assert!(target.get("dirtied").is_some());
        let names = |scope| {
            metrics_of(f, &s, scope)
                .into_iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
        };
        assert!(names(Scope::Host).contains(&"iomon_writeback_written_pages".to_string()));
        assert!(!names(Scope::Target).contains(&"iomon_writeback_written_pages".to_string()));
        assert!(!names(Scope::Target).contains(&"iomon_writeback_dirty_age_seconds".to_string()));
        let rows = |scope| {
            rows(f, &s, scope)
                .into_iter()
                .map(|r| r.0)
                .collect::<Vec<_>>()
        };
        assert!(rows(Scope::Host).iter().any(|r| r.contains("written")));
        assert!(!rows(Scope::Target).iter().any(|r| r.contains("written")));
        let series = all_series();
        let written = series.iter().find(|s| s.name == "written_pages").unwrap();
        let dirtied = series.iter().find(|s| s.name == "dirtied_pages").unwrap();
        assert!(written.host_only && !dirtied.host_only);
    }

    #[test]
    fn hit_and_miss_add_up_to_asked_in_both_families() {
        // More missed than asked (read-ahead counted for a page asked in
        // an earlier interval): the split still adds up to asked.
        for (f, hm) in [
            ("pagecache", &pagecache::HIT_MISS),
            ("mmap", &mmap::HIT_MISS),
        ] {
            let f = by_name(f).unwrap();
            let mut s = Section {
                counters: vec![0; f.schema.ncounters],
                hists: vec![],
            };
            s.counters[hm.asked] = 10;
            s.counters[hm.missed[0]] = 8;
            s.counters[hm.missed[1]] = 7;
            let m = (f.metrics)(&s);
            let v: Vec<u64> = m[0].values.iter().map(|(_, n)| *n).collect();
            assert_eq!(v, vec![0, 10], "{}", f.name());
            assert_eq!((f.derived[0].value)(&s), Some(0.0));
            let mut procs = vec![0u64; f.schema.nproc];
            procs[hm.proc_asked] = 4;
            procs[hm.proc_missed] = 6;
            let mut out = Out::new(false, 0.0);
            (f.proc_metrics)(&[("x", Some(&procs[..]))], &mut out);
            let text = out.finish();
            let hit = format!("{}_total{{comm=\"x\",result=\"hit\"}} 0", hm.proc_metric);
            let miss = format!("{}_total{{comm=\"x\",result=\"miss\"}} 4", hm.proc_metric);
            assert!(text.contains(&hit) && text.contains(&miss), "{text}");
        }
    }

    #[test]
    fn a_dimensioned_counter_totals_every_element() {
        let mut c = vec![0; abi::BLOCK.ncounters];
        c[abi::block::REQUESTS + abi::block::op::READ] = 3;
        c[abi::block::REQUESTS + abi::block::op::FLUSH] = 2;
        c[abi::block::BYTES] = 100;
        let s = Section {
            counters: c,
            hists: Vec::new(),
        };
        assert_eq!(s.total(&abi::BLOCK, "requests"), Some(5));
        assert_eq!(s.total(&abi::BLOCK, "no_such_counter"), None);
        assert_eq!((block::FAMILY.tick)(&s, 1.0), "block 5 req/s 0.0 MiB/s");
    }

    #[test]
    fn rows_are_exported_per_key_under_the_label_with_the_key_first() {
        let mut c = vec![0; abi::BLOCK.ncounters];
        c[abi::block::REQUESTS + abi::block::op::READ] = 7;
        let sec = Section {
            counters: c,
            hists: Vec::new(),
        };
        let per_key = vec![("vda", section_metrics(&abi::BLOCK, &sec, Scope::Host))];
        let out = row_metrics("device", &per_key);
        let m = out
            .iter()
            .find(|m| m.name == "iomon_device_block_requests")
            .expect("requests per device");
        let (labels, v) = &m.series[abi::block::op::READ];
        assert_eq!(labels[0], ("device".to_string(), "vda".to_string()));
        assert_eq!(labels[1], ("op".to_string(), "read".to_string()));
        assert!(matches!(v, MetricValue::Counter(n) if *n == 7.0));
        assert!(m.help.ends_with("Per device."), "{}", m.help);
    }

    #[test]
    fn ranks_resolve_to_fields() {
        for r in ranks().into_iter().skip(1) {
            let (f, p) = rank_field(r).unwrap();
            assert!(f.schema.proc.iter().any(|q| std::ptr::eq(q, p)));
        }
        assert!(ranks().contains(&"misses"));
    }
}
