//! The build script's modules (`build/*.rs`), mounted here so that their
//! unit tests run: declarations read and refused, the generated C and
//! Rust (escaping included), and programs held to their declarations.

#[path = "../build/check.rs"]
mod check;
#[path = "../build/decl.rs"]
mod decl;
#[path = "../build/gen_c.rs"]
mod gen_c;
#[path = "../build/gen_rust.rs"]
mod gen_rust;
