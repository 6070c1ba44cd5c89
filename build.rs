//! Builds the BPF side and what the daemon shares with it.
//!
//! 1. Reads the family declarations (`bpf/core.toml`, `bpf/families/*.toml`):
//!    each declares its counters, histograms and per-process fields once,
//!    with their dimensions, units, help and metric names, plus its history
//!    series and its routes (attach points per kernel).
//! 2. Generates from them, into OUT_DIR:
//!    - `iomon_schema.h`: the C indices the BPF programs count into;
//!    - `iomon_families.h`: the `#include` of every family's `.bpf.c`;
//!    - `schema.rs`: the same declarations as Rust data and index
//!      constants (included by `daemon/abi.rs`).
//! 3. Compiles `bpf/iomon.bpf.c` (which includes every family) into one
//!    object and its libbpf-rs skeleton (libbpf-cargo).
//!
//! Needs clang (and libelf/zlib for libbpf-sys); never kernel headers or
//! bpftool: `bpf/vmlinux.h` is committed. A declaration that is wrong
//! fails the build with the file and what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;
use serde::Deserialize;

const SRC: &str = "bpf/iomon.bpf.c";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decl {
    name: String,
    about: String,
    #[serde(default)]
    default_on: bool,
    #[serde(default)]
    counter: Vec<FieldDecl>,
    #[serde(default)]
    hist: Vec<HistDecl>,
    #[serde(default)]
    proc: Vec<FieldDecl>,
    #[serde(default)]
    series: Vec<SeriesDecl>,
    #[serde(default)]
    route: Vec<RouteDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDecl {
    name: String,
    unit: String,
    help: String,
    #[serde(default)]
    dims: Vec<DimDecl>,
    metric: Option<String>,
    shown: Option<String>,
    rank: Option<String>,
    #[serde(default)]
    activity: bool,
    /// Counted for the host only (not in a target's slots): the event has
    /// no task of its own (a flusher, an eviction by reclaim).
    #[serde(default)]
    host_only: bool,
}

#[derive(Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct DimDecl {
    label: String,
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistDecl {
    name: String,
    help: String,
    sum: Option<String>,
    metric: Option<String>,
    shown: Option<String>,
    #[serde(default)]
    quantiles: Vec<f64>,
    #[serde(default)]
    host_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesDecl {
    name: String,
    sum: Vec<String>,
    #[serde(default, rename = "where")]
    filter: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDecl {
    name: String,
    programs: Vec<ProgDecl>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    maps: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgDecl {
    prog: String,
    event: String,
    /// The event on arm64 where its name differs (the generic syscall
    /// table names some syscalls apart: fadvise64_64). The program's
    /// `SEC()` must name the same.
    event_arm64: Option<String>,
}

/// A declaration with its offsets in the kernel's maps.
struct Family {
    file: PathBuf,
    decl: Decl,
    counter_base: usize,
    hist_base: usize,
    proc_base: usize,
}

fn fail(file: &Path, msg: impl std::fmt::Display) -> ! {
    panic!("{}: {msg}", file.display())
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn len_of(f: &FieldDecl) -> usize {
    f.dims.iter().map(|d| d.values.len()).product()
}

fn validate(file: &Path, d: &Decl) {
    if !ident_ok(&d.name) {
        fail(file, format!("family name {:?} must be [a-z0-9_]", d.name));
    }
    let mut labels: BTreeMap<&str, &DimDecl> = BTreeMap::new();
    for (kind, fields) in [("counter", &d.counter), ("proc", &d.proc)] {
        let mut seen = BTreeSet::new();
        for f in fields {
            if !ident_ok(&f.name) || !seen.insert(f.name.as_str()) {
                fail(
                    file,
                    format!("{kind} {:?}: not [a-z0-9_] or declared twice", f.name),
                );
            }
            for dim in &f.dims {
                if !ident_ok(&dim.label) || dim.values.is_empty() {
                    fail(
                        file,
                        format!(
                            "{kind} {}: dimension {:?} needs a [a-z0-9_] label and values",
                            f.name, dim.label
                        ),
                    );
                }
                if let Some(prev) = labels.insert(&dim.label, dim) {
                    if prev != dim {
                        fail(
                            file,
                            format!("dimension {} has two different value lists", dim.label),
                        );
                    }
                }
            }
            if let Some(m) = &f.metric {
                if !m.starts_with("iomon_") || m.ends_with("_total") {
                    fail(file, format!("metric {m}: iomon_ prefix, no _total suffix"));
                }
                if f.unit == "ns" && !m.ends_with("_seconds") {
                    fail(
                        file,
                        format!("metric {m} counts ns: exported in seconds, name it _seconds"),
                    );
                }
            }
            if let Some(s) = &f.shown {
                if f.dims.len() > 1 {
                    fail(
                        file,
                        format!("{kind} {}: `shown` takes at most one dimension", f.name),
                    );
                }
                if f.dims.len() == 1 && !s.contains(&format!("{{{}}}", f.dims[0].label)) {
                    fail(
                        file,
                        format!(
                            "{kind} {}: `shown` must name {{{}}}",
                            f.name, f.dims[0].label
                        ),
                    );
                }
            }
        }
    }
    let counter = |n: &str| d.counter.iter().find(|c| c.name == n);
    let mut seen = BTreeSet::new();
    for h in &d.hist {
        if !ident_ok(&h.name) || !seen.insert(h.name.as_str()) {
            fail(
                file,
                format!("hist {:?}: not [a-z0-9_] or declared twice", h.name),
            );
        }
        if let Some(s) = &h.sum {
            match counter(s) {
                Some(c) if c.dims.is_empty() && c.unit == "ns" => {}
                _ => fail(
                    file,
                    format!("hist {}: sum {s:?} must be a scalar ns counter", h.name),
                ),
            }
        }
        if h.quantiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
            fail(file, format!("hist {}: quantiles are in 0..=1", h.name));
        }
    }
    for s in &d.series {
        for c in &s.sum {
            let Some(c) = counter(c) else {
                fail(file, format!("series {}: no counter {c}", s.name));
            };
            for (label, value) in &s.filter {
                match c.dims.iter().find(|dim| &dim.label == label) {
                    Some(dim) if dim.values.contains(value) => {}
                    _ => fail(
                        file,
                        format!(
                            "series {}: counter {} has no {label} = {value:?}",
                            s.name, c.name
                        ),
                    ),
                }
            }
        }
    }
    let mut route_names = BTreeSet::new();
    for r in &d.route {
        if !route_names.insert(r.name.as_str()) || r.programs.is_empty() {
            fail(
                file,
                format!("route {:?}: named twice or without programs", r.name),
            );
        }
        for p in &r.programs {
            let kind = p.event.split(':').next().unwrap_or("");
            let parts = p.event.split(':').count();
            let ok = match kind {
                "tracepoint" => parts == 3,
                "tp_btf" | "raw_tp" | "fentry" | "fexit" | "kprobe" | "kretprobe" => parts == 2,
                _ => false,
            };
            if !ok {
                fail(
                    file,
                    format!("route {}: event {:?} is not tracepoint:CAT:EV, tp_btf:EV, fentry:FN, fexit:FN, kprobe:FN or kretprobe:FN", r.name, p.event),
                );
            }
        }
        for n in &r.needs {
            if !n.starts_with("helper:") {
                fail(
                    file,
                    format!("route {}: need {n:?} is not helper:NAME", r.name),
                );
            }
        }
        for m in &r.maps {
            if !matches!(m.as_str(), "thread_states" | "ra_windows") {
                fail(file, format!("route {}: unknown shared map {m:?}", r.name));
            }
        }
    }
    if d.name != "core" && d.route.is_empty() {
        fail(file, "a family needs at least one route");
    }
}

fn read_decl(path: &Path) -> Decl {
    let text = fs::read_to_string(path).unwrap_or_else(|e| fail(path, e));
    let d: Decl = toml::from_str(&text).unwrap_or_else(|e| fail(path, e));
    validate(path, &d);
    d
}

fn upper(s: &str) -> String {
    s.replace('-', "_").to_ascii_uppercase()
}

/// Rust string literal.
fn lit(s: &str) -> String {
    format!("{s:?}")
}

fn c_header(families: &[Family]) -> String {
    let mut h = String::from(
        "/* Generated by build.rs from bpf/core.toml and bpf/families/<name>.toml: do not edit. */\n\
         #ifndef IOMON_SCHEMA_H\n#define IOMON_SCHEMA_H\n\n",
    );
    let mut nc = 0;
    let mut nh = 0;
    let mut np = 0;
    let mut dims_done = BTreeSet::new();
    for f in families {
        let fam = upper(&f.decl.name);
        let _ = writeln!(h, "/* {}: {} */", f.decl.name, f.decl.about);
        let mut off = f.counter_base;
        for c in &f.decl.counter {
            let _ = writeln!(
                h,
                "#define IOMON_C_{fam}_{} {off} /* {} */",
                upper(&c.name),
                c.help
            );
            off += len_of(c);
        }
        nc = nc.max(off);
        for (i, hd) in f.decl.hist.iter().enumerate() {
            let _ = writeln!(
                h,
                "#define IOMON_H_{fam}_{} {}",
                upper(&hd.name),
                f.hist_base + i
            );
        }
        nh = nh.max(f.hist_base + f.decl.hist.len());
        let mut off = f.proc_base;
        for p in &f.decl.proc {
            let _ = writeln!(h, "#define IOMON_P_{fam}_{} {off}", upper(&p.name));
            off += len_of(p);
        }
        np = np.max(off);
        for field in f.decl.counter.iter().chain(&f.decl.proc) {
            for d in &field.dims {
                if !dims_done.insert((f.decl.name.clone(), d.label.clone())) {
                    continue;
                }
                let _ = writeln!(
                    h,
                    "#define IOMON_{fam}_{}_N {}",
                    upper(&d.label),
                    d.values.len()
                );
                for (i, v) in d.values.iter().enumerate() {
                    let _ = writeln!(
                        h,
                        "#define IOMON_{fam}_{}_{} {i}",
                        upper(&d.label),
                        upper(v)
                    );
                }
            }
        }
        h.push('\n');
    }
    // Room for the per-process fields: a power of two, so that an index
    // masked with IOMON_P_CAP - 1 is in bounds for every kernel's verifier.
    let _ = writeln!(
        h,
        "#define IOMON_C_NR {nc}\n#define IOMON_H_NR {nh}\n#define IOMON_P_NR {}\n#define IOMON_P_CAP {}\n",
        np.max(1),
        np.max(1).next_power_of_two()
    );
    h.push_str("#endif\n");
    h
}

fn rust_field(f: &FieldDecl, offset: usize) -> String {
    let dims: Vec<String> = f
        .dims
        .iter()
        .map(|d| {
            let vals: Vec<String> = d.values.iter().map(|v| lit(v)).collect();
            format!(
                "Dim {{ label: {}, values: &[{}] }}",
                lit(&d.label),
                vals.join(", ")
            )
        })
        .collect();
    let opt = |o: &Option<String>| match o {
        Some(s) => format!("Some({})", lit(s)),
        None => "None".into(),
    };
    format!(
        "Field {{ name: {}, unit: {}, help: {}, dims: &[{}], offset: {offset}, len: {}, metric: {}, shown: {}, rank: {}, activity: {}, host_only: {} }}",
        lit(&f.name),
        lit(&f.unit),
        lit(&f.help),
        dims.join(", "),
        len_of(f),
        opt(&f.metric),
        opt(&f.shown),
        opt(&f.rank),
        f.activity,
        f.host_only
    )
}

/// Element indices of a series: every element of the summed counters that
/// matches the filter.
fn series_elements(d: &Decl, s: &SeriesDecl) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    for c in &d.counter {
        let n = len_of(c);
        if s.sum.contains(&c.name) {
            for e in 0..n {
                // Decode e into per-dimension indices (row-major).
                let mut rest = e;
                let mut keep = true;
                for (di, dim) in c.dims.iter().enumerate() {
                    let inner: usize = c.dims[di + 1..].iter().map(|x| x.values.len()).product();
                    let idx = rest / inner;
                    rest %= inner;
                    if let Some(want) = s.filter.get(&dim.label) {
                        keep &= &dim.values[idx] == want;
                    }
                }
                if keep {
                    out.push(off + e);
                }
            }
        }
        off += n;
    }
    out
}

fn rust_schema(families: &[Family]) -> String {
    let mut r = String::from(
        "// Generated by build.rs from bpf/core.toml and bpf/families/*.toml: do not edit.\n\n",
    );
    let mut statics = Vec::new();
    let (mut nc, mut nh, mut np) = (0, 0, 0);
    for f in families {
        let d = &f.decl;
        let stat = upper(&d.name);
        let mut off = 0;
        let counters: Vec<String> = d
            .counter
            .iter()
            .map(|c| {
                let s = rust_field(c, off);
                off += len_of(c);
                s
            })
            .collect();
        nc = nc.max(f.counter_base + off);
        let counter_offset = |name: &str| {
            let mut o = 0;
            for c in &d.counter {
                if c.name == name {
                    return o;
                }
                o += len_of(c);
            }
            unreachable!("validated")
        };
        let hists: Vec<String> = d
            .hist
            .iter()
            .map(|h| {
                let sum = match &h.sum {
                    Some(s) => format!("Some({})", counter_offset(s)),
                    None => "None".into(),
                };
                let q: Vec<String> = h.quantiles.iter().map(|q| format!("{q:?}")).collect();
                format!(
                    "Hist {{ name: {}, help: {}, sum: {sum}, metric: {}, shown: {}, quantiles: &[{}], host_only: {} }}",
                    lit(&h.name),
                    lit(&h.help),
                    h.metric.as_deref().map_or("None".into(), |m| format!("Some({})", lit(m))),
                    h.shown.as_deref().map_or("None".into(), |m| format!("Some({})", lit(m))),
                    q.join(", "),
                    h.host_only
                )
            })
            .collect();
        nh = nh.max(f.hist_base + d.hist.len());
        let mut poff = 0;
        let procs: Vec<String> = d
            .proc
            .iter()
            .map(|p| {
                let s = rust_field(p, poff);
                poff += len_of(p);
                s
            })
            .collect();
        np = np.max(f.proc_base + poff);
        let series: Vec<String> = d
            .series
            .iter()
            .map(|s| {
                let el: Vec<String> = series_elements(d, s)
                    .iter()
                    .map(|e| e.to_string())
                    .collect();
                // A series is the host's only when everything it sums is.
                let host_only = d
                    .counter
                    .iter()
                    .filter(|c| s.sum.contains(&c.name))
                    .all(|c| c.host_only);
                format!(
                    "SeriesDecl {{ name: {}, elements: &[{}], host_only: {host_only} }}",
                    lit(&s.name),
                    el.join(", ")
                )
            })
            .collect();
        let routes: Vec<String> = d
            .route
            .iter()
            .map(|rt| {
                let progs: Vec<String> = rt
                    .programs
                    .iter()
                    .map(|p| {
                        format!(
                            "Program {{ name: {}, event: {} }}",
                            lit(&p.prog),
                            lit(&p.event)
                        )
                    })
                    .collect();
                let needs: Vec<String> = rt.needs.iter().map(|n| lit(n)).collect();
                let maps: Vec<String> = rt.maps.iter().map(|n| lit(n)).collect();
                format!(
                    "Route {{ name: {}, programs: &[{}], needs: &[{}], maps: &[{}] }}",
                    lit(&rt.name),
                    progs.join(", "),
                    needs.join(", "),
                    maps.join(", ")
                )
            })
            .collect();
        let _ = writeln!(
            r,
            "pub static {stat}: Schema = Schema {{\n    name: {},\n    about: {},\n    default_on: {},\n    counters: &[\n        {}\n    ],\n    ncounters: {off},\n    hists: &[\n        {}\n    ],\n    proc: &[\n        {}\n    ],\n    nproc: {poff},\n    series: &[\n        {}\n    ],\n    routes: &[\n        {}\n    ],\n    counter_base: {},\n    hist_base: {},\n    proc_base: {},\n}};\n",
            lit(&d.name),
            lit(&d.about),
            d.default_on,
            counters.join(",\n        "),
            hists.join(",\n        "),
            procs.join(",\n        "),
            series.join(",\n        "),
            routes.join(",\n        "),
            f.counter_base,
            f.hist_base,
            f.proc_base,
        );
        // Index constants, for the Rust that derives ratios and rows.
        let _ = writeln!(
            r,
            "/// Indices into the `{}` section (see `{}`).",
            d.name,
            f.file.display()
        );
        let _ = writeln!(r, "pub mod {} {{", d.name);
        let _ = writeln!(r, "    pub use super::{stat} as SCHEMA;");
        let mut off = 0;
        for c in &d.counter {
            let _ = writeln!(
                r,
                "    /// {}\n    pub const {}: usize = {off};",
                c.help,
                upper(&c.name)
            );
            off += len_of(c);
        }
        let mut dims_done = BTreeSet::new();
        for field in d.counter.iter().chain(&d.proc) {
            for dim in &field.dims {
                if !dims_done.insert(dim.label.clone()) {
                    continue;
                }
                let _ = writeln!(
                    r,
                    "    /// Values of the `{}` dimension.\n    pub mod {} {{",
                    dim.label, dim.label
                );
                let _ = writeln!(r, "        pub const N: usize = {};", dim.values.len());
                for (i, v) in dim.values.iter().enumerate() {
                    let _ = writeln!(r, "        pub const {}: usize = {i};", upper(v));
                }
                let _ = writeln!(r, "    }}");
            }
        }
        let _ = writeln!(r, "    /// Histograms.\n    pub mod hist {{");
        for (i, h) in d.hist.iter().enumerate() {
            let _ = writeln!(r, "        pub const {}: usize = {i};", upper(&h.name));
        }
        let _ = writeln!(
            r,
            "    }}\n    /// Per-process fields.\n    pub mod proc {{"
        );
        let mut off = 0;
        for p in &d.proc {
            let _ = writeln!(r, "        pub const {}: usize = {off};", upper(&p.name));
            off += len_of(p);
        }
        let _ = writeln!(r, "    }}\n}}\n");
        statics.push(format!("&{stat}"));
    }
    let _ = writeln!(
        r,
        "/// Every declaration, `core` first, then the families by name.\npub static SCHEMAS: &[&Schema] = &[{}];\n\
         /// Slots of the kernel's `counters` map.\npub const COUNTERS_NR: usize = {nc};\n\
         /// Histograms in the kernel's `hists` map.\npub const HISTS_NR: usize = {nh};\n\
         /// u64 fields of `struct iomon_proc` after the name.\npub const PROC_NR: usize = {};\n\
         /// Room for them in `struct iomon_proc` (a power of two).\npub const PROC_CAP: usize = {};",
        statics.join(", "),
        np.max(1),
        np.max(1).next_power_of_two()
    );
    r
}

/// Every `count(slots, IOMON_C_…)` and `hist_add(slots, IOMON_H_…)` of a
/// family's programs: (constant, first argument).
fn counted(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for call in ["count(", "hist_add("] {
        let mut rest = src;
        while let Some(i) = rest.find(call) {
            let before = rest[..i].chars().last();
            rest = &rest[i + call.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let Some((first, tail)) = rest.split_once(',') else {
                break;
            };
            let name: String = tail
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((name, first.trim().to_string()));
        }
    }
    out
}

/// A counter declared `host_only` is counted for the host alone
/// (`count(0, …)`), and every other one for the targets too: the
/// declaration and the programs agree.
fn check_host_only(file: &Path, d: &Decl, src: &str) {
    let calls = counted(src);
    let fam = upper(&d.name);
    let decls = d
        .counter
        .iter()
        .map(|c| {
            (
                format!("IOMON_C_{fam}_{}", upper(&c.name)),
                c.host_only,
                &c.name,
            )
        })
        .chain(d.hist.iter().map(|h| {
            (
                format!("IOMON_H_{fam}_{}", upper(&h.name)),
                h.host_only,
                &h.name,
            )
        }));
    for (constant, host_only, name) in decls {
        for (_, slots) in calls.iter().filter(|(c, _)| *c == constant) {
            if host_only != (slots == "0") {
                fail(
                    file,
                    format!(
                        "{name}: declared {}, but its program counts it with `{slots}` (use {})",
                        if host_only {
                            "host_only"
                        } else {
                            "for targets too"
                        },
                        if host_only {
                            "count(0, …)"
                        } else {
                            "the event's target mask"
                        }
                    ),
                );
            }
        }
    }
}

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    println!("cargo:rerun-if-changed=bpf");

    // Declarations: core first, then families in file-name order.
    let mut files = vec![PathBuf::from("bpf/core.toml")];
    let mut fams: Vec<PathBuf> = fs::read_dir("bpf/families")
        .expect("bpf/families exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    fams.sort();
    files.extend(fams);
    let mut families = Vec::new();
    let (mut cb, mut hb, mut pb) = (0, 0, 0);
    let arm64 = env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("aarch64");
    for file in files {
        let mut decl = read_decl(&file);
        for p in decl.route.iter_mut().flat_map(|r| r.programs.iter_mut()) {
            if let (true, Some(e)) = (arm64, p.event_arm64.take()) {
                p.event = e;
            }
        }
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if decl.name != stem {
            fail(
                &file,
                format!(
                    "declares family {:?}: name it {}.toml",
                    decl.name, decl.name
                ),
            );
        }
        if decl.name != "core" {
            let c = file.with_extension("bpf.c");
            match fs::read_to_string(&c) {
                Ok(src) => check_host_only(&file, &decl, &src),
                Err(e) => fail(
                    &file,
                    format!("its programs belong in {}: {e}", c.display()),
                ),
            }
        }
        let nc: usize = decl.counter.iter().map(len_of).sum();
        let np: usize = decl.proc.iter().map(len_of).sum();
        let nh = decl.hist.len();
        families.push(Family {
            file,
            decl,
            counter_base: cb,
            hist_base: hb,
            proc_base: pb,
        });
        cb += nc;
        hb += nh;
        pb += np;
    }
    let mut progs = BTreeMap::new();
    for f in &families {
        for r in &f.decl.route {
            for p in &r.programs {
                if let Some(other) =
                    progs.insert(p.prog.clone(), (f.decl.name.clone(), p.event.clone()))
                {
                    if other != (f.decl.name.clone(), p.event.clone()) {
                        fail(
                            &f.file,
                            format!(
                                "program {} is also declared elsewhere ({}, {})",
                                p.prog, other.0, other.1
                            ),
                        );
                    }
                }
            }
        }
    }

    write_if_changed(&out_dir.join("iomon_schema.h"), &c_header(&families));
    let mut inc = String::from("/* Generated by build.rs: every family's programs. */\n");
    for f in families.iter().filter(|f| f.decl.name != "core") {
        let _ = writeln!(inc, "#include \"families/{}.bpf.c\"", f.decl.name);
    }
    write_if_changed(&out_dir.join("iomon_families.h"), &inc);
    write_if_changed(&out_dir.join("schema.rs"), &rust_schema(&families));

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("iomon has no BPF build for target arch {other}"),
        Err(_) => panic!("CARGO_CFG_TARGET_ARCH is not set"),
    };
    SkeletonBuilder::new()
        .source(SRC)
        .obj(out_dir.join("iomon.bpf.o"))
        .clang_args([
            format!("-D__TARGET_ARCH_{arch}"),
            "-Ibpf".to_string(),
            format!("-I{}", out_dir.display()),
            "-Wall".to_string(),
        ])
        .build_and_generate(out_dir.join("iomon.skel.rs"))
        .unwrap_or_else(|e| {
            panic!("failed to build the BPF skeleton from {SRC} (is clang installed?): {e:#}")
        });
}

/// Writes only when the content changes (keeps rebuilds incremental).
fn write_if_changed(path: &Path, content: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(content) {
        fs::write(path, content).unwrap_or_else(|e| fail(path, e));
    }
}
