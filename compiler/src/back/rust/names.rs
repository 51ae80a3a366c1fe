//! Rust identifiers for ONNX names: readable, valid, and unique within
//! their namespace (fields, constants, struct fields of inputs and outputs).

use std::collections::HashSet;

/// Hands out unique identifiers in one namespace.
#[derive(Default)]
pub struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// A fresh snake_case identifier derived from `name`.
    pub fn snake(&mut self, name: &str) -> String {
        self.unique(snake_case(name))
    }

    /// A fresh SCREAMING_SNAKE_CASE identifier derived from `name`.
    pub fn screaming(&mut self, name: &str) -> String {
        self.unique(snake_case(name).to_uppercase())
    }

    /// Marks `ident` as used (a name the generated code defines itself).
    pub fn reserve(&mut self, ident: &str) {
        self.taken.insert(ident.to_string());
    }

    fn unique(&mut self, base: String) -> String {
        let mut candidate = base.clone();
        let mut k = 2;
        while !self.taken.insert(candidate.clone()) {
            candidate = format!("{base}_{k}");
            k += 1;
        }
        candidate
    }
}

/// `name` in lower snake case: runs of anything but ASCII letters and
/// digits become one `_`, leading digits get a prefix, keywords a suffix.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            // `ConvTranspose` → `conv_transpose`: split camel case humps.
            if c.is_ascii_uppercase() && prev_lower && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        } else {
            prev_lower = false;
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("value");
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "v_");
    }
    if syn::parse_str::<syn::Ident>(&out).is_err() || out == "self" || out == "crate" || out == "super" || out == "_" {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_unique_identifiers() {
        assert_eq!(snake_case("/layer1/layer1.0/conv1/Conv"), "layer1_layer1_0_conv1_conv");
        assert_eq!(snake_case("ConvTranspose_output_0"), "conv_transpose_output_0");
        assert_eq!(snake_case("0weird"), "v_0weird");
        assert_eq!(snake_case("type"), "type_");
        assert_eq!(snake_case("---"), "value");
        let mut n = Names::default();
        n.reserve("model");
        assert_eq!(n.snake("model"), "model_2");
        assert_eq!(n.snake("a.b"), "a_b");
        assert_eq!(n.snake("a/b"), "a_b_2");
        assert_eq!(n.screaming("/conv1/Conv"), "CONV1_CONV");
    }
}
