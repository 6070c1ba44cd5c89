//! BanyanDB's view of iomon's numbers, derived from the family
//! declarations: one measure per family, its fields the family's declared
//! counters (each element of a dimensioned counter a field of its own,
//! named as the JSON nests it, `calls_dontneed_ok`), after
//! `interval_ms` (the Sample's length, for rates). Tags `host` and `scope`
//! (one tag family, `default`) are the entity. A counter appended to a
//! declaration appends a field here, and an existing measure is updated by
//! appending it (see `client`): nothing else to edit.
//!
//! Plus the measure `banyandb`: the targets' files by BanyanDB engine,
//! group and kind (`crate::banyandb::field`), when that view exists.
//!
//! Pure: Samples in, data points out (unit-tested without a server).

use crate::abi::{self, Schema};
use crate::banyandb;
use crate::family::Section;
use crate::sample::Sample;

use super::config::BanyanDbExport;

/// The tag family every measure has, and its tags (the entity).
pub const TAG_FAMILY: &str = "default";
pub const TAGS: [&str; 2] = ["host", "scope"];
/// The first field of every measure.
pub const INTERVAL_FIELD: &str = "interval_ms";
/// The measure of the BanyanDB view.
pub const BANYANDB_MEASURE: &str = "banyandb";

/// A measure: its name, its fields in order, and the family it is made
/// from (`None`: the BanyanDB view).
#[derive(Debug, Clone)]
pub struct MeasureDef {
    pub name: String,
    pub fields: Vec<String>,
    pub schema: Option<&'static Schema>,
}

/// A field's values: `None` where the Sample does not have it (older data,
/// fewer counters): sent as null, never as zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub measure: usize,
    /// The Sample's start (ms since the epoch): the data point's time.
    pub ts_ms: u64,
    pub scope: String,
    pub values: Vec<Option<i64>>,
}

/// Field names of a family's counters, flattened by dimension.
pub fn counter_fields(s: &Schema) -> Vec<(String, usize)> {
    let mut v = Vec::new();
    for c in s.counters {
        if c.dims.is_empty() {
            v.push((c.name.to_string(), c.offset));
            continue;
        }
        for (e, values) in c.elements() {
            v.push((format!("{}_{}", c.name, values.join("_")), e));
        }
    }
    v
}

/// The measures iomon writes, for the families it sends.
pub fn measures(cfg: &BanyanDbExport) -> Vec<MeasureDef> {
    let mut out = Vec::new();
    for s in abi::SCHEMAS.iter().filter(|s| s.name != "core") {
        if !cfg.families.is_empty() && !cfg.families.iter().any(|f| f == s.name) {
            continue;
        }
        let mut fields = vec![INTERVAL_FIELD.to_string()];
        fields.extend(counter_fields(s).into_iter().map(|(n, _)| n));
        out.push(MeasureDef {
            name: s.name.to_string(),
            fields,
            schema: Some(*s),
        });
    }
    if cfg.sends_scope("banyandb") {
        let mut fields = vec![INTERVAL_FIELD.to_string(), "files".to_string()];
        fields.extend(banyandb::field::NAMES.iter().map(|n| n.to_string()));
        out.push(MeasureDef {
            name: BANYANDB_MEASURE.into(),
            fields,
            schema: None,
        });
    }
    out
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn section_values(s: &Schema, sec: &Section, interval: i64) -> Vec<Option<i64>> {
    let mut v = vec![Some(interval)];
    v.extend(
        counter_fields(s)
            .into_iter()
            .map(|(_, e)| sec.get(e).map(clamp)),
    );
    v
}

/// Every data point of one Sample, measure by measure, in a fixed order.
/// `measures` is [`measures`]' list.
pub fn points(sample: &Sample, measures: &[MeasureDef], cfg: &BanyanDbExport) -> Vec<Point> {
    let interval = clamp(sample.duration_ms());
    let ts_ms = sample.start_ms;
    let mut out = Vec::new();
    for (i, m) in measures.iter().enumerate() {
        let Some(schema) = m.schema else {
            for r in &sample.banyandb {
                let mut values = vec![Some(interval), Some(clamp(r.files))];
                values.extend((0..banyandb::field::NR).map(|f| Some(clamp(r.get(f)))));
                out.push(Point {
                    measure: i,
                    ts_ms,
                    scope: format!(
                        "{}:{}/{}/{}",
                        r.target,
                        if r.engine.is_empty() { "-" } else { &r.engine },
                        if r.group.is_empty() { "-" } else { &r.group },
                        r.class().name()
                    ),
                    values,
                });
            }
            continue;
        };
        if cfg.sends_scope("host") {
            if let Some(sec) = sample.section(schema.name) {
                out.push(Point {
                    measure: i,
                    ts_ms,
                    scope: "host".into(),
                    values: section_values(schema, sec, interval),
                });
            }
        }
        if cfg.sends_scope("targets") {
            for (t, secs) in &sample.targets {
                if let Some(sec) = secs.get(schema.name) {
                    // A target's section has no host-only counters: those
                    // are null, not zero.
                    let mut values = section_values(schema, sec, interval);
                    for (k, c) in counter_fields(schema).iter().enumerate() {
                        if schema
                            .counters
                            .iter()
                            .any(|f| f.host_only && (f.offset..f.offset + f.len).contains(&c.1))
                        {
                            values[k + 1] = None;
                        }
                    }
                    out.push(Point {
                        measure: i,
                        ts_ms,
                        scope: format!("target:{t}"),
                        values,
                    });
                }
            }
        }
        if cfg.sends_scope("rows") {
            if let (Some(rows), Some(decl)) = (sample.rows.get(schema.name), schema.rows.as_ref()) {
                for (key, sec) in rows {
                    out.push(Point {
                        measure: i,
                        ts_ms,
                        scope: format!("{}:{key}", decl.label),
                        values: section_values(schema, sec, interval),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Section;

    fn cfg() -> BanyanDbExport {
        BanyanDbExport::default()
    }

    #[test]
    fn a_measure_per_family_its_fields_the_declared_counters_flattened() {
        let ms = measures(&cfg());
        let fadvise = ms.iter().find(|m| m.name == "fadvise").unwrap();
        assert_eq!(fadvise.fields[0], INTERVAL_FIELD);
        assert_eq!(fadvise.fields[1], "calls_normal_ok");
        assert!(fadvise.fields.contains(&"calls_dontneed_error".to_string()));
        assert!(fadvise
            .fields
            .contains(&"dontneed_kept_partial".to_string()));
        // Every element of every counter, once.
        let s = abi::SCHEMAS.iter().find(|s| s.name == "fadvise").unwrap();
        assert_eq!(
            fadvise.fields.len(),
            1 + s.counters.iter().map(|c| c.len).sum::<usize>()
        );
        assert!(ms.iter().all(|m| m.name != "core"));
        assert_eq!(ms.last().unwrap().name, BANYANDB_MEASURE);
        let mut c = cfg();
        c.families = vec!["reads".into()];
        c.scopes = vec!["host".into()];
        let names: Vec<_> = measures(&c).into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["reads"]);
    }

    #[test]
    fn points_carry_the_sections_values_and_null_where_absent() {
        let ms = measures(&cfg());
        let fi = ms.iter().position(|m| m.name == "fadvise").unwrap();
        let mut s = Sample {
            start_ms: 1_000,
            end_ms: 2_000,
            ..Default::default()
        };
        // An old Sample: only the first three counters.
        s.sections.insert(
            "fadvise".into(),
            Section {
                counters: vec![5, 0, 7],
                hists: vec![],
            },
        );
        let mut t = crate::family::Sections::new();
        t.insert(
            "fadvise".into(),
            Section {
                counters: vec![1],
                hists: vec![],
            },
        );
        s.targets.insert("banyand".into(), t);
        let p = points(&s, &ms, &cfg());
        let host = p
            .iter()
            .find(|p| p.measure == fi && p.scope == "host")
            .unwrap();
        assert_eq!(host.ts_ms, 1_000);
        assert_eq!(
            &host.values[..5],
            &[Some(1000), Some(5), Some(0), Some(7), None]
        );
        assert_eq!(host.values.len(), ms[fi].fields.len());
        let tgt = p
            .iter()
            .find(|p| p.measure == fi && p.scope == "target:banyand")
            .unwrap();
        assert_eq!(&tgt.values[..3], &[Some(1000), Some(1), None]);
        // Families without a section send nothing.
        assert!(p.iter().all(|p| ms[p.measure].name == "fadvise"));
    }
}
