//! Build script: gives the macro crate an `OUT_DIR` for the weights files it writes.

fn main() {
    // Gives the macro a directory of its own inside the target directory
    // (`env!("OUT_DIR")`), where it writes the weights files it embeds.
    println!("cargo:rerun-if-changed=build.rs");
}
