//! The crate's modules read as the data flow: each may use only modules
//! before it in [`ORDER`] (no cycle, by construction), and the leaves use
//! no other module of the crate. Read from the sources, so a new
//! `use crate::...` that breaks the order fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const LEAVES: &[&str] = &["units", "hist", "abi", "promtext"];

/// The data flow, first to last (the module list in `daemon/lib.rs`'s
/// documentation; rustfmt sorts the declarations themselves).
const ORDER: &[&str] = &[
    "units",
    "hist",
    "abi",
    "promtext",
    "family",
    "banyandb",
    "sample",
    "probes",
    "drain",
    "file_paths",
    "totals",
    "store",
    "export",
    "report",
    "proto",
    "exposition",
    "control",
    "http",
    "config",
    "logging",
    "event_loop",
];

fn daemon() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("daemon")
}

/// Top-level modules lib.rs declares.
fn declared() -> Vec<String> {
    let lib = std::fs::read_to_string(daemon().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// module -> the modules of the crate it uses (from `crate::<module>`).
fn uses(modules: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut files = Vec::new();
    rust_files(&daemon(), &mut files);
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(daemon()).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if !modules.contains(&top) {
            continue; // lib.rs itself, main.rs (the binary)
        }
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("crate::{"),
            "{}: name each module in its own `crate::<module>` path",
            rel.display()
        );
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) && name != top && !deps.contains(&name) {
                deps.push(name);
            }
        }
    }
    graph
}

#[test]
fn modules_use_only_modules_before_them() {
    let mut order: Vec<String> = ORDER.iter().map(|s| s.to_string()).collect();
    let mut lib = declared();
    lib.sort();
    order.sort();
    assert_eq!(
        lib, order,
        "a module of lib.rs is missing from ORDER, or the reverse"
    );
    let order: Vec<String> = ORDER.iter().map(|s| s.to_string()).collect();
    let graph = uses(&order);
    let pos = |m: &str| order.iter().position(|x| x == m).unwrap();
    let mut report = Vec::new();
    for (m, deps) in &graph {
        for d in deps {
            if pos(d) > pos(m) {
                report.push(format!("{m} uses {d}, declared after it"));
            }
        }
        if LEAVES.contains(&m.as_str()) && !deps.is_empty() {
            report.push(format!("leaf {m} uses {deps:?}"));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
    for m in &order {
        println!(
            "{m:<12} <- {}",
            graph.get(m).map(|d| d.join(", ")).unwrap_or_default()
        );
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lines of code of a source file: not blank, not only a comment, and not
/// its own tests (a `#[cfg(test)]` module, to the end of the file).
fn code_lines(text: &str) -> usize {
    let mut n = 0;
    for l in text.lines() {
        let t = l.trim();
        if t == "#[cfg(test)]" {
            break;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        n += 1;
    }
    n
}

/// A file that has grown past this does several things: split it by what
/// they are (as `ctl/render/` is split by command).
const MAX_CODE_LINES: usize = 800;

#[test]
fn no_source_file_is_over_800_lines_of_code() {
    let mut files = Vec::new();
    rust_files(&root().join("daemon"), &mut files);
    rust_files(&root().join("ctl"), &mut files);
    let mut over = Vec::new();
    for f in &files {
        let n = code_lines(&std::fs::read_to_string(f).unwrap());
        if n > MAX_CODE_LINES {
            over.push(format!(
                "{}: {n}",
                f.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(
        over.is_empty(),
        "over {MAX_CODE_LINES} lines of code (tests not counted):\n{}",
        over.join("\n")
    );
    assert_eq!(
        code_lines("a\n\n// c\n  /// d\nb\n#[cfg(test)]\nmod tests {\n x\n}\n"),
        2
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// `cargo fmt --check` (what CI runs) follows `mod` declarations from each
/// target's root; a module declared where rustfmt does not look (inside a
/// macro, say) is never checked. So: every source file of a copy of the
/// crate is formatted badly on purpose, and cargo fmt must name each one.
#[test]
fn cargo_fmt_checks_every_source_file() {
    let copy = tempfile::tempdir().unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "build.rs"] {
        std::fs::copy(root().join(f), copy.path().join(f)).unwrap();
    }
    for d in ["build", "daemon", "ctl", "tests", "benches"] {
        copy_tree(&root().join(d), &copy.path().join(d));
    }
    let mut files = Vec::new();
    for d in ["build", "daemon", "ctl"] {
        rust_files(&copy.path().join(d), &mut files);
    }
    for f in &files {
        let mut text = std::fs::read_to_string(f).unwrap();
        text.push_str("\nfn   iomon_badly_formatted ( ) {   }\n");
        std::fs::write(f, text).unwrap();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["fmt", "--check"])
        .current_dir(copy.path())
        .output()
        .expect("cargo fmt runs");
    assert!(
        !out.status.success(),
        "cargo fmt --check passed a mangled crate"
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let unseen: Vec<String> = files
        .iter()
        .filter(|f| !report.contains(&format!("Diff in {}:", f.display())))
        .map(|f| f.strip_prefix(copy.path()).unwrap().display().to_string())
        .collect();
    assert!(
        unseen.is_empty(),
        "cargo fmt --check does not look at these files (declare their modules with a plain `mod x;`):\n{}\n{}",
        unseen.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}
