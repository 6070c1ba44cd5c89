//! The family declarations (`bpf/core.toml`, `bpf/families/<name>.toml`):
//! their types, how they are read and what makes one wrong. Pure: no file
//! system, no environment; errors are strings the build prints after the
//! file's name.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Decl {
    pub name: String,
    pub about: String,
    /// Place in every list of families (snapshot, history columns, top):
    /// ascending. Families only; `core` has none.
    pub order: Option<u32>,
    #[serde(default)]
    pub default_on: bool,
    /// C members of this family's part of the per-thread state (`struct
    /// thread_state`, a member named after the family).
    pub thread: Option<String>,
    #[serde(default)]
    pub counter: Vec<FieldDecl>,
    #[serde(default)]
    pub hist: Vec<HistDecl>,
    #[serde(default)]
    pub proc: Vec<FieldDecl>,
    #[serde(default)]
    pub series: Vec<SeriesDecl>,
    #[serde(default)]
    pub route: Vec<RouteDecl>,
    /// Events several families hook into (core only): one program each,
    /// which calls the hooks of the routes loaded.
    #[serde(default)]
    pub shared: Vec<SharedDecl>,
    /// The family's counters and histograms also kept per key (a block
    /// device): a row per key in a bounded map `<name>_rows`.
    pub rows: Option<RowsDecl>,
}

/// Rows of a family's numbers per key: `label` names the key in metrics
/// (`iomon_<label>_...{<label>="..."}`) and JSON; `max` bounds the kernel's
/// map (a key past it is counted in core's `rows_dropped`, in no row).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RowsDecl {
    pub label: String,
    pub max: u32,
    /// What a key is, so that the daemon can name it (`ROW_KEYS`).
    pub key: String,
}

/// Kinds of row keys the daemon can name: `dev_t`, a block device as the
/// kernel encodes it (named as /sys/dev/block names it).
pub const ROW_KEYS: &[&str] = &["dev_t"];

/// The most rows a family may declare (each is a map entry of the
/// family's counters and histograms).
pub const MAX_ROWS: u32 = 1024;

/// An event more than one family counts: one program runs on it and
/// calls each loaded route's hook (a C function taking `struct
/// <name>_event *`). It may be seen several ways, best first; the loader
/// takes the first this kernel has.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SharedDecl {
    pub name: String,
    pub ways: Vec<WayDecl>,
}

/// One way to see a shared event: its program, its event, and for a typed
/// tracepoint the struct its first argument must point to (`folio`). The
/// event is made by core's `<name>_event_init[_<arg>](e, ctx)`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WayDecl {
    pub prog: String,
    pub event: String,
    pub arg: Option<String>,
}

/// A route's part in a shared event: the C function the event's program
/// calls when the route is loaded.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct HookDecl {
    pub on: String,
    pub call: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FieldDecl {
    pub name: String,
    pub unit: String,
    pub help: String,
    #[serde(default)]
    pub dims: Vec<DimDecl>,
    pub metric: Option<String>,
    pub shown: Option<String>,
    pub rank: Option<String>,
    #[serde(default)]
    pub activity: bool,
    /// Counted for the host only (not in a target's slots): the event has
    /// no task of its own (a flusher, an eviction by reclaim).
    #[serde(default)]
    pub host_only: bool,
}

#[derive(Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct DimDecl {
    pub label: String,
    pub values: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct HistDecl {
    pub name: String,
    pub help: String,
    pub sum: Option<String>,
    pub metric: Option<String>,
    pub shown: Option<String>,
    #[serde(default)]
    pub quantiles: Vec<f64>,
    #[serde(default)]
    pub host_only: bool,
    /// What the kernel must tell the daemon for this histogram to be
    /// measured (`kernel_hz`); without it the histogram is absent.
    pub needs: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SeriesDecl {
    pub name: String,
    pub sum: Vec<String>,
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RouteDecl {
    pub name: String,
    pub programs: Vec<ProgDecl>,
    #[serde(default)]
    pub needs: Vec<String>,
    /// Maps only this route's programs use: created only when the route is
    /// loaded (every map no route names is always created).
    #[serde(default)]
    pub maps: Vec<String>,
    /// Its parts in shared events (`core`'s `shared`).
    #[serde(default)]
    pub hooks: Vec<HookDecl>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ProgDecl {
    pub prog: String,
    pub event: String,
    /// The event on arm64 where its name differs (the generic syscall
    /// table names some syscalls apart: fadvise64_64). The program's
    /// `SEC()` must name the same.
    pub event_arm64: Option<String>,
    /// For a `tp_btf` event: the struct its first argument must point to
    /// (`request`); a kernel whose event passes another lacks the route.
    pub arg: Option<String>,
    /// Attached on demand: once the family's host counter of this name (a
    /// counter without dimensions) has counted, or, as `vmstat:A+B`, once
    /// one of those items of /proc/vmstat is above zero. For a program
    /// whose work is needed only in cases the family's other programs, or
    /// the kernel's own counts, notice.
    pub when: Option<String>,
}

/// Hooks are bits of one u64 in the programs' read-only data.
pub const MAX_HOOKS: usize = 64;

/// Every hook, once, in declaration order (its bit in `iomon_hooks`):
/// (C function, shared event).
pub fn hooks(families: &[Family]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for h in families
        .iter()
        .flat_map(|f| &f.decl.route)
        .flat_map(|r| &r.hooks)
    {
        if !v.iter().any(|(c, _)| *c == h.call) {
            v.push((h.call.clone(), h.on.clone()));
        }
    }
    v
}

/// What the daemon can be asked to provide for a histogram (`needs`).
pub const HIST_NEEDS: &[&str] = &["kernel_hz"];

/// A declaration with its offsets in the kernel's maps.
pub struct Family {
    pub file: String,
    pub decl: Decl,
    pub counter_base: usize,
    pub hist_base: usize,
    pub proc_base: usize,
}

pub fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

pub fn len_of(f: &FieldDecl) -> usize {
    f.dims.iter().map(|d| d.values.len()).product()
}

/// `FOO_BAR` from `foo-bar`.
pub fn upper(s: &str) -> String {
    s.replace('-', "_").to_ascii_uppercase()
}

/// The `SEC()` libbpf needs for an event: `tracepoint:a:b` is
/// `tracepoint/a/b`, `tp_btf:e` is `tp_btf/e`, and so on.
pub fn section(event: &str) -> String {
    event.replace(':', "/")
}

/// Reads one declaration; `stem` is its file name without `.toml`, which
/// must be the family's name.
pub fn parse(stem: &str, text: &str) -> Result<Decl, String> {
    let d: Decl = toml::from_str(text).map_err(|e| e.to_string())?;
    if d.name != stem {
        return Err(format!(
            "declares family {:?}: name it {}.toml",
            d.name, d.name
        ));
    }
    validate(&d)?;
    Ok(d)
}

/// An event as the kernel names it: `tracepoint:CAT:EV`, `tp_btf:EV`,
/// `fentry:FN`, `fexit:FN`, `kprobe:FN`, `kretprobe:FN`.
pub fn event_ok(event: &str) -> bool {
    let parts: Vec<&str> = event.split(':').collect();
    let named = parts.iter().skip(1).all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    });
    named
        && match parts[0] {
            "tracepoint" => parts.len() == 3,
            "tp_btf" | "raw_tp" | "fentry" | "fexit" | "kprobe" | "kretprobe" => parts.len() == 2,
            _ => false,
        }
}

pub fn validate(d: &Decl) -> Result<(), String> {
    if !ident_ok(&d.name) {
        return Err(format!("family name {:?} must be [a-z0-9_]", d.name));
    }
    let core = d.name == "core";
    if core != d.order.is_none() {
        return Err(if core {
            "core has no `order`: it is not a family".into()
        } else {
            "a family needs `order` (its place in lists of families)".into()
        });
    }
    if let Some(t) = &d.thread {
        // Members only: braces may open and close a member's own struct,
        // never close thread_state's.
        let mut depth = 0i32;
        for c in t.chars() {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            if depth < 0 {
                break;
            }
        }
        if depth != 0 {
            return Err("`thread` holds C struct members only (unbalanced braces)".into());
        }
    }
    let mut labels: BTreeMap<&str, &DimDecl> = BTreeMap::new();
    for (kind, fields) in [("counter", &d.counter), ("proc", &d.proc)] {
        let mut seen = BTreeSet::new();
        for f in fields {
            if !ident_ok(&f.name) || !seen.insert(f.name.as_str()) {
                return Err(format!(
                    "{kind} {:?}: not [a-z0-9_] or declared twice",
                    f.name
                ));
            }
            for dim in &f.dims {
                if !ident_ok(&dim.label)
                    || dim.values.is_empty()
                    || !dim.values.iter().all(|v| ident_ok(v))
                {
                    return Err(format!(
                        "{kind} {}: dimension {:?} needs a [a-z0-9_] label and [a-z0-9_] values",
                        f.name, dim.label
                    ));
                }
                if let Some(prev) = labels.insert(&dim.label, dim) {
                    if prev != dim {
                        return Err(format!(
                            "dimension {} has two different value lists",
                            dim.label
                        ));
                    }
                }
            }
            if let Some(m) = &f.metric {
                metric_ok(m)?;
                if f.unit == "ns" && !m.ends_with("_seconds") {
                    return Err(format!(
                        "metric {m} counts ns: exported in seconds, name it _seconds"
                    ));
                }
            }
            if let Some(s) = &f.shown {
                if f.dims.len() > 1 {
                    return Err(format!(
                        "{kind} {}: `shown` takes at most one dimension",
                        f.name
                    ));
                }
                if f.dims.len() == 1 && !s.contains(&format!("{{{}}}", f.dims[0].label)) {
                    return Err(format!(
                        "{kind} {}: `shown` must name {{{}}}",
                        f.name, f.dims[0].label
                    ));
                }
            }
        }
    }
    let counter = |n: &str| d.counter.iter().find(|c| c.name == n);
    let mut seen = BTreeSet::new();
    for h in &d.hist {
        if !ident_ok(&h.name) || !seen.insert(h.name.as_str()) {
            return Err(format!(
                "hist {:?}: not [a-z0-9_] or declared twice",
                h.name
            ));
        }
        if let Some(s) = &h.sum {
            match counter(s) {
                Some(c) if c.dims.is_empty() && c.unit == "ns" => {}
                _ => {
                    return Err(format!(
                        "hist {}: sum {s:?} must be a scalar ns counter",
                        h.name
                    ))
                }
            }
        }
        if let Some(m) = &h.metric {
            metric_ok(m)?;
        }
        if h.quantiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return Err(format!("hist {}: quantiles are in 0..=1", h.name));
        }
        if let Some(n) = &h.needs {
            if !HIST_NEEDS.contains(&n.as_str()) {
                return Err(format!(
                    "hist {}: needs {n:?} is not one of {HIST_NEEDS:?}",
                    h.name
                ));
            }
        }
    }
    for s in &d.series {
        if !ident_ok(&s.name) {
            return Err(format!("series {:?}: not [a-z0-9_]", s.name));
        }
        for c in &s.sum {
            let Some(c) = counter(c) else {
                return Err(format!("series {}: no counter {c}", s.name));
            };
            for (label, value) in &s.filter {
                match c.dims.iter().find(|dim| &dim.label == label) {
                    Some(dim) if dim.values.contains(value) => {}
                    _ => {
                        return Err(format!(
                            "series {}: counter {} has no {label} = {value:?}",
                            s.name, c.name
                        ))
                    }
                }
            }
        }
    }
    let mut route_names = BTreeSet::new();
    for r in &d.route {
        if !route_names.insert(r.name.as_str()) || r.programs.is_empty() && r.hooks.is_empty() {
            return Err(format!(
                "route {:?}: named twice or without programs or hooks",
                r.name
            ));
        }
        for p in &r.programs {
            if !ident_ok(&p.prog) {
                return Err(format!(
                    "route {}: program {:?} is not a C name [a-z0-9_]",
                    r.name, p.prog
                ));
            }
            if p.arg
                .as_deref()
                .is_some_and(|a| !ident_ok(a) || !p.event.starts_with("tp_btf:"))
            {
                return Err(format!(
                    "route {}: program {}: `arg` is a [a-z0-9_] struct name, for a tp_btf event",
                    r.name, p.prog
                ));
            }
            if let Some(w) = &p.when {
                let sign_ok = match w.strip_prefix("vmstat:") {
                    Some(items) => items.split('+').all(ident_ok),
                    None => counter(w).is_some_and(|c| c.dims.is_empty()),
                };
                if !sign_ok {
                    return Err(format!(
                        "route {}: program {}: `when` names no counter of this family without dimensions, nor vmstat:ITEM[+ITEM...]: {w:?}",
                        r.name, p.prog
                    ));
                }
            }
            for e in std::iter::once(&p.event).chain(&p.event_arm64) {
                if !event_ok(e) {
                    return Err(format!(
                        "route {}: event {e:?} is not tracepoint:CAT:EV, tp_btf:EV, fentry:FN, fexit:FN, kprobe:FN or kretprobe:FN",
                        r.name
                    ));
                }
            }
        }
        for n in &r.needs {
            let arch_ok = n
                .strip_prefix("arch:")
                .is_some_and(|a| ["x86_64", "aarch64"].contains(&a));
            let named = ["helper:", "kfunc:"]
                .iter()
                .any(|p| n.strip_prefix(p).is_some_and(ident_ok));
            if !named && !arch_ok {
                return Err(format!(
                    "route {}: need {n:?} is not helper:NAME, kfunc:NAME or arch:x86_64|aarch64",
                    r.name
                ));
            }
        }
        for m in &r.maps {
            if !ident_ok(m) {
                return Err(format!("route {}: map {m:?} is not a C name", r.name));
            }
        }
    }
    if !core && d.route.is_empty() {
        return Err("a family needs at least one route".into());
    }
    if let Some(r) = &d.rows {
        if core || !ident_ok(&r.label) || r.max == 0 || r.max > MAX_ROWS {
            return Err(format!(
                "rows: a family's, with a [a-z0-9_] label and 1 <= max <= {MAX_ROWS}"
            ));
        }
        if !ROW_KEYS.contains(&r.key.as_str()) {
            return Err(format!("rows: key {:?} is not one of {ROW_KEYS:?}", r.key));
        }
    }
    if !core && !d.shared.is_empty() {
        return Err("only core declares shared events".into());
    }
    for sh in &d.shared {
        if !ident_ok(&sh.name) || sh.ways.is_empty() {
            return Err(format!(
                "shared event {:?}: a [a-z0-9_] name and at least one way",
                sh.name
            ));
        }
        for w in &sh.ways {
            if !ident_ok(&w.prog)
                || !event_ok(&w.event)
                || w.arg.as_deref().is_some_and(|a| !ident_ok(a))
            {
                return Err(format!(
                    "shared event {}: way {:?}: a [a-z0-9_] program and arg, and an event like tracepoint:CAT:EV",
                    sh.name, w.prog
                ));
            }
        }
    }
    for r in &d.route {
        for h in &r.hooks {
            if !ident_ok(&h.on) || !ident_ok(&h.call) {
                return Err(format!(
                    "route {}: hook {:?} on {:?}: [a-z0-9_] names",
                    r.name, h.call, h.on
                ));
            }
        }
    }
    Ok(())
}

fn metric_ok(m: &str) -> Result<(), String> {
    let chars = m
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !m.starts_with("iomon_") || m.ends_with("_total") || !chars {
        return Err(format!(
            "metric {m}: [a-z0-9_] with the iomon_ prefix, no _total suffix"
        ));
    }
    Ok(())
}

/// Lays the declarations out in the kernel's maps, in the order given
/// (core first, then the families by file name), and checks what only
/// the whole set can show: a program declared by two families, two
/// families in one place of the order.
pub fn layout(decls: Vec<(String, Decl)>) -> Result<Vec<Family>, String> {
    let mut out: Vec<Family> = Vec::new();
    let (mut cb, mut hb, mut pb) = (0, 0, 0);
    for (file, decl) in decls {
        let nc: usize = decl.counter.iter().map(len_of).sum();
        let np: usize = decl.proc.iter().map(len_of).sum();
        let nh = decl.hist.len();
        if let Some(o) = decl.order {
            if let Some(f) = out.iter().find(|f| f.decl.order == Some(o)) {
                return Err(format!(
                    "{file}: order {o} is {}'s too: give each family its own place",
                    f.decl.name
                ));
            }
        }
        out.push(Family {
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
    let shared: Vec<&str> = out
        .iter()
        .flat_map(|f| &f.decl.shared)
        .map(|s| s.name.as_str())
        .collect();
    let mut hooks: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for f in &out {
        for h in f.decl.route.iter().flat_map(|r| &r.hooks) {
            if !shared.contains(&h.on.as_str()) {
                return Err(format!(
                    "{}: hook {} is on {:?}, which core does not share (shared: {shared:?})",
                    f.file, h.call, h.on
                ));
            }
            let here = (f.decl.name.as_str(), h.on.as_str());
            if let Some(other) = hooks.insert(&h.call, here) {
                if other != here {
                    return Err(format!(
                        "{}: hook {} is also declared elsewhere ({}, on {})",
                        f.file, h.call, other.0, other.1
                    ));
                }
            }
        }
    }
    if hooks.len() > MAX_HOOKS {
        return Err(format!("{} hooks: at most {MAX_HOOKS}", hooks.len()));
    }
    let mut progs: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for f in &out {
        for p in f.decl.route.iter().flat_map(|r| &r.programs) {
            let here = (f.decl.name.as_str(), p.event.as_str());
            if let Some(other) = progs.insert(&p.prog, here) {
                if other != here {
                    return Err(format!(
                        "{}: program {} is also declared elsewhere ({}, {})",
                        f.file, p.prog, other.0, other.1
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Element indices of a series: every element of the summed counters that
/// matches the filter.
pub fn series_elements(d: &Decl, s: &SeriesDecl) -> Vec<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "demo"
about = "a demo"
order = 10
[[counter]]
name = "calls"
unit = "calls"
help = "Calls."
dims = [{ label = "kind", values = ["a", "b"] }, { label = "result", values = ["ok", "error"] }]
[[series]]
name = "b_calls"
sum = ["calls"]
where = { kind = "b" }
[[route]]
name = "tp"
programs = [{ prog = "demo_tp", event = "tp_btf:demo_event" }]
"#;

    fn with(extra: &str) -> Result<Decl, String> {
        parse("demo", &format!("{MINIMAL}\n{extra}"))
    }

    #[test]
    fn a_minimal_declaration_reads_and_lays_out_row_major() {
        let d = parse("demo", MINIMAL).unwrap();
        assert_eq!(len_of(&d.counter[0]), 4);
        // kind=b is elements 2 and 3 (row-major: kind outer, result inner).
        assert_eq!(series_elements(&d, &d.series[0]), vec![2, 3]);
    }

    #[test]
    fn the_file_name_is_the_family_name() {
        let e = parse("other", MINIMAL).unwrap_err();
        assert!(e.contains("name it demo.toml"), "{e}");
    }

    #[test]
    fn wrong_declarations_say_what_is_wrong() {
        let cases = [
            ("[[counter]]\nname = \"calls\"\nunit = \"x\"\nhelp = \"h\"", "declared twice"),
            ("[[counter]]\nname = \"lat\"\nunit = \"ns\"\nhelp = \"h\"\nmetric = \"iomon_lat\"", "_seconds"),
            ("[[counter]]\nname = \"x\"\nunit = \"x\"\nhelp = \"h\"\nmetric = \"iomon_x_total\"", "no _total"),
            ("[[counter]]\nname = \"x\"\nunit = \"x\"\nhelp = \"h\"\nmetric = \"iomon x\"", "[a-z0-9_]"),
            ("[[hist]]\nname = \"h\"\nhelp = \"h\"\nsum = \"calls\"", "scalar ns counter"),
            ("[[hist]]\nname = \"h\"\nhelp = \"h\"\nneeds = \"moon\"", "needs \"moon\""),
            ("[[series]]\nname = \"s\"\nsum = [\"nope\"]", "no counter nope"),
            ("[[series]]\nname = \"s\"\nsum = [\"calls\"]\nwhere = { kind = \"z\" }", "no kind = \"z\""),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe\" }]", "is not tracepoint"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"tracepoint:a\" }]", "is not tracepoint"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\", event_arm64 = \"x:y\" }]", "\"x:y\""),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p-q\", event = \"kprobe:f\" }]", "not a C name"),
            ("[[route]]\nname = \"tp\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\" }]", "named twice"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\" }]\nneeds = [\"bpf_x\"]", "helper:NAME"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\" }]\nneeds = [\"kfunc:\"]", "kfunc:NAME"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\" }]\nneeds = [\"arch:mips\"]", "arch:x86_64|aarch64"),
            ("bogus = 1", "unknown field"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\", arg = \"request\" }]", "for a tp_btf event"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\", when = \"nope\" }]", "`when` names no counter"),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\", when = \"calls\" }]", "nor vmstat:ITEM[+ITEM...]: \"calls\""),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\", when = \"vmstat:nr_x+\" }]", "nor vmstat:ITEM[+ITEM...]: \"vmstat:nr_x+\""),
            ("[[route]]\nname = \"k\"\nprograms = [{ prog = \"p\", event = \"kprobe:f\", when = \"vmstat:\" }]", "nor vmstat:ITEM"),
            ("[rows]\nlabel = \"device\"\nmax = 0\nkey = \"dev_t\"", "1 <= max <= 1024"),
            ("[rows]\nlabel = \"device\"\nmax = 8\nkey = \"inode\"", "key \"inode\""),
            ("[rows]\nlabel = \"dev ice\"\nmax = 8\nkey = \"dev_t\"", "[a-z0-9_] label"),
        ];
        for (extra, want) in cases {
            let e = with(extra).expect_err(extra);
            assert!(e.contains(want), "{extra}: {e} (wanted {want:?})");
        }
        let e = parse(
            "demo",
            &MINIMAL.replace(
                "order = 10",
                "order = 10\nthread = \"u64 x; }; struct evil {\"",
            ),
        )
        .unwrap_err();
        assert!(e.contains("unbalanced braces"), "{e}");
        let ok = MINIMAL.replace(
            "order = 10",
            "order = 10\nthread = \"struct { u64 s, e; } r[2];\"",
        );
        assert!(parse("demo", &ok).is_ok());
        let arch = format!(
            "{MINIMAL}\n[[route]]\nname = \"k\"\nprograms = [{{ prog = \"p\", event = \"kprobe:f\" }}]\nneeds = [\"arch:aarch64\", \"helper:task_pt_regs\", \"kfunc:bpf_rdonly_cast\"]"
        );
        assert!(
            parse("demo", &arch).is_ok(),
            "{:?}",
            parse("demo", &arch).err()
        );
        assert!(with("[rows]\nlabel = \"device\"\nmax = 64\nkey = \"dev_t\"").is_ok());
        let e = parse(
            "core",
            "name = \"core\"\nabout = \"c\"\n[rows]\nlabel = \"device\"\nmax = 8\nkey = \"dev_t\"",
        )
        .unwrap_err();
        assert!(e.contains("a family's"), "{e}");
        let e = parse("demo", &MINIMAL.replace("order = 10", "")).unwrap_err();
        assert!(e.contains("needs `order`"), "{e}");
        let e = parse(
            "demo",
            &MINIMAL.replace("[[route]]\nname = \"tp\"\nprograms = [{ prog = \"demo_tp\", event = \"tp_btf:demo_event\" }]", ""),
        )
        .unwrap_err();
        assert!(e.contains("at least one route"), "{e}");
    }

    #[test]
    fn events_are_checked_by_kind() {
        for ok in [
            "tracepoint:syscalls:sys_exit_fadvise64",
            "tp_btf:block_rq_issue",
            "fentry:vfs_fadvise",
            "kretprobe:filemap_read",
        ] {
            assert!(event_ok(ok), "{ok}");
        }
        for bad in [
            "tracepoint:x",
            "tp_btf:",
            "uprobe:x",
            "fentry:a b",
            "kprobe:a:b",
        ] {
            assert!(!event_ok(bad), "{bad}");
        }
    }

    #[test]
    fn the_whole_set_refuses_shared_places_and_programs() {
        let a = parse("demo", MINIMAL).unwrap();
        let b = parse("demo", MINIMAL).unwrap();
        let e = layout(vec![("a.toml".into(), a), ("b.toml".into(), b)])
            .err()
            .unwrap();
        assert!(e.contains("order 10"), "{e}");
        let a = parse("demo", MINIMAL).unwrap();
        let b = parse(
            "demo",
            &MINIMAL
                .replace("order = 10", "order = 20")
                .replace("tp_btf:demo_event", "tp_btf:other"),
        )
        .unwrap();
        let e = layout(vec![("a.toml".into(), a), ("b.toml".into(), b)])
            .err()
            .unwrap();
        assert!(e.contains("program demo_tp is also declared"), "{e}");
    }

    #[test]
    fn bases_follow_each_other() {
        let a = parse("demo", MINIMAL).unwrap();
        let b = parse(
            "demo",
            &MINIMAL
                .replace("order = 10", "order = 20")
                .replace("demo_tp", "demo_tp2"),
        )
        .unwrap();
        let l = layout(vec![("a".into(), a), ("b".into(), b)]).unwrap();
        assert_eq!(
            (l[1].counter_base, l[1].hist_base, l[1].proc_base),
            (4, 0, 0)
        );
    }
}
