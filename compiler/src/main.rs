//! The `d2nnc` command-line tool.

fn main() {}
