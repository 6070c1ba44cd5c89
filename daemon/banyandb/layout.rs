//! BanyanDB's on-disk layout, read from its declaration
//! (`packaging/banyandb-layout.toml`, compiled in): which engine, group,
//! segment, shard, part and kind of file a path is, and whether the kind is
//! index or data. Pure: paths in, names out.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The layout iomond is built with.
pub const BUILT_IN: &str = include_str!("../../packaging/banyandb-layout.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Decl {
    banyandb: String,
    engine: Vec<EngineDecl>,
    place: Vec<PlaceDecl>,
    kinds: BTreeMap<String, Vec<KindDecl>>,
}

/// An engine and the command-line flags that say where its files are.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EngineDecl {
    pub name: String,
    pub root_flag: String,
    pub data_flag: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceDecl {
    engines: Vec<String>,
    pattern: String,
    files: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KindDecl {
    name: Option<String>,
    ext: Option<String>,
    kind: String,
    class: Class,
}

/// Whether a file is what queries look up or what they read once found.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Index,
    Data,
    /// Under a root, but no place or kind of the layout.
    Other,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Index, Class::Data, Class::Other];

    pub fn name(self) -> &'static str {
        match self {
            Class::Index => "index",
            Class::Data => "data",
            Class::Other => "other",
        }
    }
}

/// One component of a place's pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// A literal prefix, then a named value (`seg-{segment}`: prefix
    /// "seg-", name "segment"); a bare `{x}` has an empty prefix.
    Var(String, String),
    Literal(String),
}

#[derive(Debug, Clone)]
struct Place {
    engines: Vec<String>,
    parts: Vec<Part>,
    files: String,
}

/// The layout, validated.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Which BanyanDB source it was read from.
    pub banyandb: String,
    pub engines: Vec<EngineDecl>,
    places: Vec<Place>,
    kinds: BTreeMap<String, Vec<KindDecl>>,
}

/// What a path is, as far as the layout says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub engine: String,
    pub group: Option<String>,
    pub segment: Option<String>,
    pub shard: Option<u32>,
    pub part: Option<String>,
    pub file: String,
    pub kind: String,
    pub class: Class,
}

const VARS: &[&str] = &["group", "rule", "segment", "shard", "part", "file"];

fn parse_part(s: &str) -> Result<Part, String> {
    match s.find('{') {
        None => Ok(Part::Literal(s.to_string())),
        Some(i) => {
            let rest = &s[i + 1..];
            let name = rest
                .strip_suffix('}')
                .filter(|n| !n.contains(['{', '}']))
                .ok_or_else(|| {
                    format!("{s:?}: a component is a prefix and one {{name}} at its end")
                })?;
            if !VARS.contains(&name) {
                return Err(format!("{s:?}: {{{name}}} is not one of {VARS:?}"));
            }
            Ok(Part::Var(s[..i].to_string(), name.to_string()))
        }
    }
}

/// Whether `v` can be the value of `name`.
fn value_ok(name: &str, v: &str) -> bool {
    let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    match name {
        "segment" => digits(v) && (v.len() == 8 || v.len() == 10),
        "shard" => digits(v) && v.len() <= 9,
        "part" => v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => !v.is_empty(),
    }
}

impl Layout {
    pub fn parse(text: &str) -> Result<Layout, String> {
        let d: Decl = toml::from_str(text).map_err(|e| e.to_string())?;
        let names: Vec<&str> = d.engine.iter().map(|e| e.name.as_str()).collect();
        let mut places = Vec::new();
        for p in &d.place {
            let parts = p
                .pattern
                .split('/')
                .map(parse_part)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("place {:?}: {e}", p.pattern))?;
            if parts.last() != Some(&Part::Var(String::new(), "file".into())) {
                return Err(format!(
                    "place {:?}: the last component is {{file}}",
                    p.pattern
                ));
            }
            if let Some(e) = p.engines.iter().find(|e| !names.contains(&e.as_str())) {
                return Err(format!("place {:?}: no engine {e:?}", p.pattern));
            }
            if !d.kinds.contains_key(&p.files) {
                return Err(format!(
                    "place {:?}: no list of kinds {:?}",
                    p.pattern, p.files
                ));
            }
            places.push(Place {
                engines: p.engines.clone(),
                parts,
                files: p.files.clone(),
            });
        }
        for (list, kinds) in &d.kinds {
            for k in kinds {
                if k.name.is_some() == k.ext.is_some() {
                    return Err(format!(
                        "kinds {list}: {:?}: give `name` or `ext`, one",
                        k.kind
                    ));
                }
                if k.class == Class::Other {
                    return Err(format!(
                        "kinds {list}: {:?}: class is index or data",
                        k.kind
                    ));
                }
            }
        }
        Ok(Layout {
            banyandb: d.banyandb,
            engines: d.engine,
            places,
            kinds: d.kinds,
        })
    }

    pub fn built_in() -> Layout {
        Layout::parse(BUILT_IN).expect("the built-in layout is checked by a test")
    }

    /// What `rel` (a path under `engine`'s data directory) is. A path the
    /// layout does not place is `other` (its group, when it has one, is
    /// its first component).
    pub fn name(&self, engine: &str, rel: &Path) -> Named {
        let comps: Vec<&str> = rel
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .collect();
        let file = comps.last().copied().unwrap_or("").to_string();
        for p in self
            .places
            .iter()
            .filter(|p| p.engines.iter().any(|e| e == engine))
        {
            let Some(vars) = match_place(&p.parts, &comps) else {
                continue;
            };
            let (kind, class) = self.kinds[&p.files]
                .iter()
                .find(|k| match (&k.name, &k.ext) {
                    (Some(n), _) => *n == file,
                    (_, Some(x)) => file.len() > x.len() && file.ends_with(x.as_str()),
                    _ => false,
                })
                .map_or(("other".to_string(), Class::Other), |k| {
                    (k.kind.clone(), k.class)
                });
            return Named {
                engine: engine.to_string(),
                group: vars.get("group").cloned(),
                segment: vars.get("segment").cloned(),
                shard: vars.get("shard").and_then(|s| s.parse().ok()),
                part: vars.get("part").cloned(),
                file,
                kind,
                class,
            };
        }
        Named {
            engine: engine.to_string(),
            group: (comps.len() > 1).then(|| comps[0].to_string()),
            segment: None,
            shard: None,
            part: None,
            file,
            kind: "other".into(),
            class: Class::Other,
        }
    }
}

fn match_place(parts: &[Part], comps: &[&str]) -> Option<BTreeMap<String, String>> {
    if parts.len() != comps.len() {
        return None;
    }
    let mut vars = BTreeMap::new();
    for (p, c) in parts.iter().zip(comps) {
        match p {
            Part::Literal(l) if l == c => {}
            Part::Literal(_) => return None,
            Part::Var(prefix, name) => {
                let v = c.strip_prefix(prefix.as_str())?;
                if !value_ok(name, v) {
                    return None;
                }
                vars.insert(name.clone(), v.to_string());
            }
        }
    }
    Some(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(engine: &str, rel: &str) -> Named {
        Layout::built_in().name(engine, Path::new(rel))
    }

    #[test]
    fn the_built_in_layout_reads() {
        let l = Layout::built_in();
        assert!(l.banyandb.contains("9ebac451"));
        let names: Vec<&str> = l.engines.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["measure", "stream", "trace", "property"]);
    }

    #[test]
    fn parts_of_each_engine_are_named_by_kind_and_class() {
        let m = n(
            "measure",
            "sw_metric/seg-20261201/shard-3/00000000000000a1/primary.bin",
        );
        assert_eq!(
            (
                m.group.as_deref(),
                m.segment.as_deref(),
                m.shard,
                m.part.as_deref()
            ),
            (
                Some("sw_metric"),
                Some("20261201"),
                Some(3),
                Some("00000000000000a1")
            )
        );
        assert_eq!((m.kind.as_str(), m.class), ("primary", Class::Index));
        let cases = [
            (
                "measure",
                "g/seg-2026120110/shard-0/00000000000000a1/fv.bin",
                "field_values",
                Class::Data,
            ),
            (
                "measure",
                "g/seg-20261201/shard-0/00000000000000a1/default.tf",
                "tag_family",
                Class::Data,
            ),
            (
                "measure",
                "g/seg-20261201/shard-0/00000000000000a1/default.tfm",
                "tag_family_meta",
                Class::Index,
            ),
            (
                "stream",
                "g/seg-20261201/shard-0/00000000000000a1/searchable.tff",
                "tag_family_filter",
                Class::Index,
            ),
            (
                "stream",
                "g/seg-20261201/shard-0/idx/000000000001.seg",
                "inverted_segment",
                Class::Index,
            ),
            (
                "trace",
                "g/seg-20261201/shard-0/00000000000000a1/spans.bin",
                "spans",
                Class::Data,
            ),
            (
                "trace",
                "g/seg-20261201/shard-0/00000000000000a1/service.t",
                "tag",
                Class::Data,
            ),
            (
                "trace",
                "g/seg-20261201/shard-0/00000000000000a1/traceID.filter",
                "trace_id_filter",
                Class::Index,
            ),
            (
                "trace",
                "g/seg-20261201/shard-0/sidx/duration/00000000000000a1/keys.bin",
                "keys",
                Class::Data,
            ),
            (
                "trace",
                "g/seg-20261201/shard-0/sidx/duration/00000000000000a1/x.tf",
                "tag_filter",
                Class::Index,
            ),
            (
                "measure",
                "g/seg-20261201/sidx/00000000000c.seg",
                "inverted_segment",
                Class::Index,
            ),
            (
                "property",
                "g/shard-0/00000000000c.seg",
                "inverted_segment",
                Class::Index,
            ),
        ];
        for (engine, rel, kind, class) in cases {
            let got = n(engine, rel);
            assert_eq!(
                (got.kind.as_str(), got.class),
                (kind, class),
                "{engine} {rel}"
            );
        }
    }

    #[test]
    fn what_the_layout_does_not_place_is_other_and_keeps_its_group() {
        // Not a part id, a lock, a segment's own metadata, an unknown file.
        for rel in [
            "g/seg-20261201/shard-0/not-a-part/meta.bin",
            "g/lock",
            "g/seg-20261201/metadata",
            "g/seg-20261201/shard-0/00000000000000a1/new-in-a-later-banyandb.bin",
            "g/seg-2026/shard-0/00000000000000a1/meta.bin",
        ] {
            let got = n("measure", rel);
            assert_eq!(
                (got.kind.as_str(), got.class),
                ("other", Class::Other),
                "{rel}"
            );
            assert_eq!(got.group.as_deref(), Some("g"), "{rel}");
        }
        assert_eq!(n("measure", "stray").group, None);
    }

    #[test]
    fn a_wrong_layout_says_what_is_wrong() {
        let base = Layout::built_in();
        let _ = base;
        let cases = [
            (BUILT_IN.replace("{group}/seg-{segment}/sidx/{file}", "{group}/seg-{segment}/sidx/{nope}"), "not one of"),
            (BUILT_IN.replace("{group}/shard-{shard}/{file}", "{group}/shard-{shard}"), "last component"),
            (BUILT_IN.replace("files = \"inverted\"\n\n# Property", "files = \"nowhere\"\n\n# Property"), "no list of kinds"),
            (BUILT_IN.replace("{ ext = \".tm\", kind = \"tag_meta\", class = \"index\" },\n  { name = \"spans.bin\"", "{ name = \"x\", ext = \".tm\", kind = \"tag_meta\", class = \"index\" },\n  { name = \"spans.bin\""), "one"),
            (BUILT_IN.replace("engines = [\"property\"]", "engines = [\"propery\"]"), "no engine"),
        ];
        for (text, want) in cases {
            let e = Layout::parse(&text).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
