//! Builds the BPF side and what the daemon shares with it.
//!
//! 1. Reads the declarations (`bpf/core.toml`, `bpf/families/*.toml`;
//!    `build/decl.rs`): each family's counters, histograms and per-process
//!    fields with their dimensions, units, help and metric names, its
//!    history series, its per-thread state and its routes.
//! 2. Generates from them, into OUT_DIR (`build/gen_c.rs`,
//!    `build/gen_rust.rs`): `iomon_schema.h` (the C indices),
//!    `iomon_threads.h` (`struct thread_state`), `iomon_families.h` (every
//!    family's programs), `schema.rs` (the same as Rust data and
//!    constants, included by `daemon/abi.rs`) and `families.rs` (the
//!    families in their order, included by `daemon/family/mod.rs`).
//! 3. Compiles `bpf/iomon.bpf.c` (which includes every family) into one
//!    object and its libbpf-rs skeleton (libbpf-cargo), then holds the
//!    object to the declarations (`build/check.rs`): every program at the
//!    `SEC()` of its declared event, every named map present.
//!
//! Needs clang (and libelf/zlib for libbpf-sys); never kernel headers or
//! bpftool: `bpf/vmlinux.h` is committed. A declaration that is wrong
//! fails the build with the file and what is wrong. The modules' unit
//! tests run with `cargo test --test build_script`.

#[path = "build/check.rs"]
mod check;
#[path = "build/decl.rs"]
mod decl;
#[path = "build/gen_c.rs"]
mod gen_c;
#[path = "build/gen_rust.rs"]
mod gen_rust;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/iomon.bpf.c";

fn fail(file: &Path, msg: impl std::fmt::Display) -> ! {
    panic!("{}: {msg}", file.display())
}

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=build");

    // Declarations: core first, then families in file-name order (their
    // places in the kernel's maps; `order` is their display order).
    let mut files = vec![PathBuf::from("bpf/core.toml")];
    let mut fams: Vec<PathBuf> = fs::read_dir("bpf/families")
        .expect("bpf/families exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    fams.sort();
    files.extend(fams);
    let arm64 = env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("aarch64");
    let mut decls = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_else(|e| fail(&file, e));
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let mut d = decl::parse(stem, &text).unwrap_or_else(|e| fail(&file, e));
        for p in d.route.iter_mut().flat_map(|r| r.programs.iter_mut()) {
            if let (true, Some(e)) = (arm64, p.event_arm64.take()) {
                p.event = e;
            }
        }
        if d.name != "core" {
            let c = file.with_extension("bpf.c");
            match fs::read_to_string(&c) {
                Ok(src) => check::host_only(&d, &src).unwrap_or_else(|e| fail(&file, e)),
                Err(e) => fail(
                    &file,
                    format!("its programs belong in {}: {e}", c.display()),
                ),
            }
        }
        decls.push((file.display().to_string(), d));
    }
    let families = decl::layout(decls).unwrap_or_else(|e| panic!("{e}"));

    write_if_changed(&out_dir.join("iomon_schema.h"), &gen_c::header(&families));
    write_if_changed(&out_dir.join("iomon_threads.h"), &gen_c::threads(&families));
    write_if_changed(
        &out_dir.join("iomon_families.h"),
        &gen_c::includes(&families),
    );
    write_if_changed(&out_dir.join("iomon_hooks.h"), &gen_c::shared(&families));
    write_if_changed(&out_dir.join("schema.rs"), &gen_rust::schema(&families));
    write_if_changed(&out_dir.join("families.rs"), &gen_rust::families(&families));

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("iomon has no BPF build for target arch {other}"),
        Err(_) => panic!("CARGO_CFG_TARGET_ARCH is not set"),
    };
    let obj = out_dir.join("iomon.bpf.o");
    SkeletonBuilder::new()
        .source(SRC)
        .obj(&obj)
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

    protos();

    let open = libbpf_rs::ObjectBuilder::default()
        .open_file(&obj)
        .unwrap_or_else(|e| panic!("failed to open the BPF object {}: {e:#}", obj.display()));
    let seen = check::Object {
        programs: open
            .progs()
            .map(|p| {
                (
                    p.name().to_string_lossy().into_owned(),
                    p.section().to_string_lossy().into_owned(),
                )
            })
            .collect(),
        maps: open
            .maps()
            .map(|m| m.name().to_string_lossy().into_owned())
            .collect(),
    };
    if let Err(errors) = check::object(&families, &seen) {
        panic!(
            "the BPF programs and their declarations disagree:\n  {}",
            errors.join("\n  ")
        );
    }
}

/// The BanyanDB exporter's gRPC messages and services, from iomon's own
/// definitions of them (client and server: the tests' stand-in for
/// BanyanDB serves the same definitions).
fn protos() {
    const DIR: &str = "daemon/export/proto";
    println!("cargo:rerun-if-changed={DIR}");
    let files = [
        "banyandb/common/v1/common.proto",
        "banyandb/model/v1/common.proto",
        "banyandb/database/v1/database.proto",
        "banyandb/measure/v1/measure.proto",
    ]
    .map(|f| format!("{DIR}/{f}"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&files, &[DIR.to_string()])
        .unwrap_or_else(|e| {
            panic!(
                "failed to compile the gRPC definitions in {DIR} (is protoc installed? \
                 scripts/deps installs protobuf-compiler): {e}"
            )
        });
}

/// Writes only when the content changes (keeps rebuilds incremental).
fn write_if_changed(path: &Path, content: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(content) {
        fs::write(path, content).unwrap_or_else(|e| fail(path, e));
    }
}
