//! Graph inputs given on the command line as `NAME=FILE.npy`, shared by `run` and `bench`.

use d2nn_runtime::{npy, Tensor};
use d2nnc::Error;
use std::collections::HashMap;
use std::path::PathBuf;

/// One `--input NAME=FILE.npy` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub file: PathBuf,
}

/// clap value parser for `--input`: splits at the first `=` (so a file name
/// may contain `=`, an input name may not); both sides must be non-empty.
pub fn parse_input_spec(spec: &str) -> Result<InputSpec, String> {
    match spec.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok(InputSpec { name: name.to_string(), file: PathBuf::from(file) })
        }
        _ => Err("must look like NAME=FILE.npy".to_string()),
    }
}

/// Reads every input file; an input named twice is an error.
pub fn read_inputs(specs: &[InputSpec]) -> Result<HashMap<String, Tensor>, Error> {
    let mut feeds = HashMap::new();
    for spec in specs {
        if feeds.contains_key(&spec.name) {
            return Err(Error::Usage(format!("input `{}` is given more than once", spec.name)));
        }
        feeds.insert(spec.name.clone(), npy::read_npy(&spec.file)?);
    }
    Ok(feeds)
}

#[cfg(test)]
mod tests {
    use super::{parse_input_spec, InputSpec};
    use std::path::PathBuf;

    #[test]
    fn specs_split_at_the_first_equals_sign() {
        assert_eq!(parse_input_spec("x=a=b.npy"), Ok(InputSpec { name: "x".into(), file: PathBuf::from("a=b.npy") }));
        for bad in ["x", "=a.npy", "x=", ""] {
            assert_eq!(parse_input_spec(bad), Err("must look like NAME=FILE.npy".to_string()), "{bad:?}");
        }
    }
}
