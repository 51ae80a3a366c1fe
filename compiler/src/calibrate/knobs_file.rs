//! Knob files: the TOML that `d2nnc calibrate -o` writes and that `run`,
//! `bench` and `compile` read with `--knobs-file`.
//!
//! ```toml
//! [knobs]
//! exit1_threshold = 0.62
//! "/Constant_4_output_0" = 0.3
//!
//! [calibration]      # what calibrate measured; informational, not read back
//! accuracy = 0.953
//! ```

use super::CalibrateError;
use std::path::Path;

fn file_err(path: &Path, message: impl Into<String>) -> CalibrateError {
    CalibrateError::KnobsFile { path: path.to_path_buf(), message: message.into() }
}

/// Reads the `[knobs]` table of a knob file: `NAME = VALUE` pairs, in file
/// order. Every value must be a finite number.
pub fn read_knobs_file(path: &Path) -> Result<Vec<(String, f32)>, CalibrateError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read it: {e}")))?;
    parse_knobs(&text).map_err(|message| file_err(path, message))
}

fn parse_knobs(text: &str) -> Result<Vec<(String, f32)>, String> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message().trim()))?;
    let knobs = match doc.get("knobs") {
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(format!("`knobs` must be a table of NAME = VALUE, not a {}", other.type_str())),
        None => return Err("no [knobs] table (expected `[knobs]` followed by NAME = VALUE lines)".into()),
    };
    let mut out = Vec::with_capacity(knobs.len());
    for (name, value) in knobs {
        let v = match value {
            toml::Value::Float(f) => *f as f32,
            toml::Value::Integer(i) => *i as f32,
            other => return Err(format!("knob `{name}`: {other} is not a number")),
        };
        if !v.is_finite() {
            return Err(format!("knob `{name}`: {value} is not a finite f32"));
        }
        out.push((name.clone(), v));
    }
    Ok(out)
}

/// The f32 as the shortest decimal that reads back to it, as an f64 TOML float.
fn exact_float(v: f32) -> toml::Value {
    toml::Value::Float(format!("{v}").parse::<f64>().unwrap_or(v as f64))
}

/// Renders a knob file: a comment header, `[knobs]`, and a `[calibration]`
/// table of what was measured.
pub fn render_knobs_file(comment: &str, knobs: &[(String, f32)], calibration: toml::Table) -> String {
    let mut doc = toml::Table::new();
    doc.insert("knobs".into(), toml::Value::Table(knobs.iter().map(|(n, v)| (n.clone(), exact_float(*v))).collect()));
    doc.insert("calibration".into(), toml::Value::Table(calibration));
    let mut text: String = comment.lines().map(|l| format!("# {l}\n")).collect();
    text.push('\n');
    text.push_str(&toml::to_string(&doc).unwrap_or_default());
    text
}

/// Writes a knob file (see [`render_knobs_file`]).
pub fn write_knobs_file(path: &Path, comment: &str, knobs: &[(String, f32)], calibration: toml::Table) -> Result<(), CalibrateError> {
    std::fs::write(path, render_knobs_file(comment, knobs, calibration)).map_err(|e| file_err(path, format!("cannot write it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(parse_knobs("threshold = 0.5").unwrap_err().contains("no [knobs] table"));
        assert!(parse_knobs("knobs = 3").unwrap_err().contains("must be a table"));
        assert!(parse_knobs("[knobs]\nthreshold = \"high\"").unwrap_err().contains("knob `threshold`"));
        assert!(parse_knobs("[knobs]\nthreshold = inf").unwrap_err().contains("not a finite"));
        assert!(parse_knobs("[knobs]\nthreshold = 1e300").unwrap_err().contains("not a finite"));
        assert!(parse_knobs("[knobs\n").unwrap_err().contains("not valid TOML"));
        assert_eq!(parse_knobs("[knobs]\nt = 1\n").unwrap(), vec![("t".to_string(), 1.0)]);
    }

    proptest! {
        /// Every finite f32 survives writing and reading back bit for bit,
        /// whatever characters the (ONNX initializer) name holds.
        #[test]
        fn knob_files_round_trip(name in "[ -~]{1,20}", bits in any::<u32>()) {
            let v = f32::from_bits(bits);
            prop_assume!(v.is_finite());
            let text = render_knobs_file("test\nfile", &[(name.clone(), v)], toml::Table::new());
            let back = parse_knobs(&text).unwrap();
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(&back[0].0, &name);
            prop_assert_eq!(back[0].1.to_bits(), v.to_bits());
        }
    }
}
