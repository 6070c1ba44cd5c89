//! Compiles bpf/iomon.bpf.c into a libbpf-rs skeleton in OUT_DIR.
//! Needs clang (and libelf/zlib for libbpf-sys); never kernel headers or
//! bpftool: bpf/vmlinux.h is committed.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/iomon.bpf.c";
const HEADER: &str = "bpf/iomon.h";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let out = out_dir.join("iomon.skel.rs");
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
            "-Wall".to_string(),
        ])
        .build_and_generate(&out)
        .unwrap_or_else(|e| {
            panic!("failed to build the BPF skeleton from {SRC} (is clang installed?): {e:#}")
        });
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed={HEADER}");
    println!("cargo:rerun-if-changed=bpf/vmlinux.h");
}
