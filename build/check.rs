//! What the declarations say, held against what the programs do: a
//! counter declared `host_only` is counted for the host alone (read off
//! the family's C), and every declared program is in the compiled object
//! at the `SEC()` its route names, every map a route names exists, and
//! nothing in the object belongs to no route (read off the object). Pure:
//! the caller reads the C and the object.

use super::decl::{section, upper, Decl, Family};

/// Every `count(slots, IOMON_C_…)` and `hist_add(slots, IOMON_H_…)` call
/// in C source: (constant, first argument). Comments are skipped.
pub fn counted(src: &str) -> Vec<(String, String)> {
    let src = strip_comments(src);
    let mut out = Vec::new();
    for call in ["count(", "hist_add("] {
        let mut rest = src.as_str();
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

/// C source without its comments (block and line), lines kept.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        let (i, end, keep) = match (block, line) {
            (Some(b), Some(l)) if l < b => (l, "\n", "\n"),
            (Some(b), _) => (b, "*/", ""),
            (None, Some(l)) => (l, "\n", "\n"),
            (None, None) => break,
        };
        out.push_str(&rest[..i]);
        match rest[i + 2..].find(end) {
            Some(j) => {
                let gone = &rest[i..i + 2 + j];
                out.extend(gone.chars().filter(|c| *c == '\n'));
                out.push_str(keep);
                rest = &rest[i + 2 + j + end.len()..];
            }
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A counter declared `host_only` is counted for the host alone
/// (`count(0, …)`), and every other one for the targets too: the
/// declaration and the programs agree.
pub fn host_only(d: &Decl, src: &str) -> Result<(), String> {
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
                return Err(format!(
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
                ));
            }
        }
    }
    Ok(())
}

/// What the compiled object holds: each program's name and `SEC()`, and
/// the maps' names.
pub struct Object {
    pub programs: Vec<(String, String)>,
    pub maps: Vec<String>,
}

/// Every declared program is in the object with the `SEC()` of its
/// declared event; every map a route names exists; every program in the
/// object is some route's. All the mismatches, each with its file.
pub fn object(families: &[Family], obj: &Object) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for f in families {
        for sh in &f.decl.shared {
            for w in &sh.ways {
                let want = section(&w.event);
                match obj.programs.iter().find(|(n, _)| *n == w.prog) {
                    Some((_, sec)) if *sec == want => {}
                    found => errors.push(format!(
                        "{}: shared event {}: program {} is {} (want SEC(\"{want}\"))",
                        f.file,
                        sh.name,
                        w.prog,
                        found.map_or("not in the BPF object".to_string(), |(_, s)| {
                            format!("at SEC(\"{s}\")")
                        })
                    )),
                }
            }
        }
        for r in &f.decl.route {
            for p in &r.programs {
                let want = section(&p.event);
                match obj.programs.iter().find(|(n, _)| *n == p.prog) {
                    None => errors.push(format!(
                        "{}: route {}: program {} is not in the BPF object (no function of that name with SEC(\"{want}\"))",
                        f.file, r.name, p.prog
                    )),
                    Some((_, sec)) if *sec != want => errors.push(format!(
                        "{}: route {}: program {} is declared at {} but its SEC() is \"{sec}\" (want \"{want}\")",
                        f.file, r.name, p.prog, p.event
                    )),
                    Some(_) => {}
                }
            }
            for m in &r.maps {
                if !obj.maps.contains(m) {
                    errors.push(format!(
                        "{}: route {}: map {m} is not in the BPF object",
                        f.file, r.name
                    ));
                }
            }
        }
    }
    for (name, sec) in &obj.programs {
        let declared = families
            .iter()
            .flat_map(|f| &f.decl.route)
            .flat_map(|r| &r.programs)
            .any(|p| p.prog == *name)
            || families
                .iter()
                .flat_map(|f| &f.decl.shared)
                .flat_map(|s| &s.ways)
                .any(|w| w.prog == *name);
        if !declared {
            errors.push(format!(
                "program {name} (SEC(\"{sec}\")) belongs to no route: declare it in a route of its family"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::decl::{layout, parse};
    use super::*;

    const DEMO: &str = r#"
name = "demo"
about = "a"
order = 1
[[counter]]
name = "calls"
unit = "calls"
help = "h"
[[counter]]
name = "flushed"
unit = "pages"
help = "h"
host_only = true
[[route]]
name = "tp"
programs = [
  { prog = "demo_a", event = "tracepoint:block:block_rq_issue" },
  { prog = "demo_b", event = "tp_btf:block_rq_complete" },
]
maps = ["demo_starts"]
"#;

    #[test]
    fn host_only_counters_are_counted_for_the_host_alone() {
        let d = parse("demo", DEMO).unwrap();
        let good = "count(tm, IOMON_C_DEMO_CALLS, 1);\ncount(0, IOMON_C_DEMO_FLUSHED, n);";
        assert!(host_only(&d, good).is_ok());
        let bad = "count(tm, IOMON_C_DEMO_FLUSHED, n);";
        let e = host_only(&d, bad).unwrap_err();
        assert!(
            e.contains("flushed: declared host_only") && e.contains("`tm`"),
            "{e}"
        );
        let bad = "count(0, IOMON_C_DEMO_CALLS, 1);";
        assert!(host_only(&d, bad).unwrap_err().contains("for targets too"));
        // Calls in comments and other functions ending in count( are not
        // calls.
        let commented = "/* count(tm, IOMON_C_DEMO_FLUSHED, n) */\n// count(tm, IOMON_C_DEMO_FLUSHED, 1)\nmy_count(tm, IOMON_C_DEMO_FLUSHED, 1);";
        assert!(host_only(&d, commented).is_ok());
    }

    #[test]
    fn comments_go_and_lines_stay() {
        assert_eq!(strip_comments("a /* b\nc */ d // e\nf"), "a \n d \nf");
        assert_eq!(strip_comments("x /* never closed"), "x ");
    }

    #[test]
    fn sections_are_compared_with_declared_events() {
        let l = layout(vec![("demo.toml".into(), parse("demo", DEMO).unwrap())]).unwrap();
        let obj = |a: &str, maps: &[&str], extra: Option<(&str, &str)>| Object {
            programs: [("demo_a", a), ("demo_b", "tp_btf/block_rq_complete")]
                .into_iter()
                .chain(extra)
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
            maps: maps.iter().map(|m| m.to_string()).collect(),
        };
        assert!(object(
            &l,
            &obj("tracepoint/block/block_rq_issue", &["demo_starts"], None)
        )
        .is_ok());
        let e = object(&l, &obj("tp_btf/block_rq_issue", &["demo_starts"], None)).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("demo_a is declared at tracepoint:block:block_rq_issue but its SEC() is \"tp_btf/block_rq_issue\""), "{e:?}");
        let e = object(&l, &obj("tracepoint/block/block_rq_issue", &[], None)).unwrap_err();
        assert!(
            e[0].contains("map demo_starts is not in the BPF object"),
            "{e:?}"
        );
        let e = object(
            &l,
            &obj(
                "tracepoint/block/block_rq_issue",
                &["demo_starts"],
                Some(("stray", "kprobe/x")),
            ),
        )
        .unwrap_err();
        assert!(
            e[0].contains("stray") && e[0].contains("belongs to no route"),
            "{e:?}"
        );
        let missing = Object {
            programs: vec![],
            maps: vec!["demo_starts".into()],
        };
        assert_eq!(object(&l, &missing).unwrap_err().len(), 2);
    }
}
