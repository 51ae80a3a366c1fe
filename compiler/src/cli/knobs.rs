//! `--knob NAME=VALUE` and `--fix NAME=VALUE`, shared by `run`, `bench` and
//! `inspect`: parsing, and loading a model with its fixes baked in and its
//! dynamic schedule analysed.

use d2nnc::dynamic::Analysis;
use d2nnc::ir::Graph;
use d2nnc::Error;
use std::path::Path;

/// clap value parser for `--knob`/`--fix`: `NAME=VALUE` with a finite number.
pub fn parse_knob(spec: &str) -> Result<(String, f32), String> {
    let (name, value) = spec.rsplit_once('=').ok_or("must look like NAME=VALUE")?;
    if name.is_empty() {
        return Err("the knob name is empty".into());
    }
    let v: f32 = value.trim().parse().map_err(|_| format!("`{value}` is not a number"))?;
    if !v.is_finite() {
        return Err(format!("`{value}` is not a finite number"));
    }
    Ok((name.to_string(), v))
}

/// Loads and optimises `model`, bakes in the `fixes`, and analyses its
/// dynamic structure.
pub fn load(model: &Path, fixes: &[(String, f32)]) -> Result<(Graph, Analysis), Error> {
    let mut graph = d2nnc::load_and_optimize(model)?.graph;
    let fixed = d2nnc::dynamic::fix_knobs(&mut graph, fixes)?;
    let analysis = d2nnc::dynamic::analyze(&graph, &fixed);
    Ok((graph, analysis))
}

/// The knobs of a `--knobs-file` (if given) followed by the `--knob`s, the
/// later value winning for a name given twice.
pub fn with_file(file: Option<&Path>, knobs: Vec<(String, f32)>) -> Result<Vec<(String, f32)>, Error> {
    let mut all = match file {
        Some(path) => d2nnc::calibrate::read_knobs_file(path)?,
        None => Vec::new(),
    };
    for (name, value) in knobs {
        match all.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => all.push((name, value)),
        }
    }
    Ok(all)
}

/// Checks that every `--knob` names a knob of the model.
pub fn check_knobs(analysis: &Analysis, knobs: &[(String, f32)]) -> Result<(), Error> {
    for (name, _) in knobs {
        if analysis.knob(name).is_none() {
            let available = if analysis.knobs.is_empty() {
                "none".to_string()
            } else {
                analysis.knobs.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
            };
            return Err(d2nnc::dynamic::KnobError::Unknown { name: name.clone(), available }.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_knob;

    #[test]
    fn knob_specs_parse_or_say_why_not() {
        assert_eq!(parse_knob("threshold=0.7"), Ok(("threshold".into(), 0.7)));
        assert_eq!(parse_knob("/Constant_output_0=1e-3"), Ok(("/Constant_output_0".into(), 1e-3)));
        assert!(parse_knob("threshold").is_err());
        assert!(parse_knob("=1").is_err());
        assert!(parse_knob("t=abc").unwrap_err().contains("not a number"));
        assert!(parse_knob("t=NaN").unwrap_err().contains("finite"));
    }
}
