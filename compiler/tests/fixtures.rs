//! Real-model fixtures (torch.onnx exports under `tests/fixtures/`): the
//! interpreter must match ONNX Runtime's stored outputs, both on the graph as
//! loaded and after the optimisation pipeline, and so must the plan executor.

use d2nn_runtime::npy::read_npy;
use d2nnc::compare::compare;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn load_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("parse json")
}

/// One run of a fixture: (input name, file) pairs and the expected output files.
type FixtureCase = (Vec<(String, String)>, Vec<String>);

/// The file sets of a fixture: the main case plus any alternates.
fn cases(manifest: &Json) -> Vec<FixtureCase> {
    let files = |list: &Json, with_name: bool| -> Vec<(String, String)> {
        list.as_array()
            .expect("array")
            .iter()
            .map(|e| {
                let name = if with_name { e["name"].as_str().expect("name").to_string() } else { String::new() };
                (name, e["file"].as_str().expect("file").to_string())
            })
            .collect()
    };
    let mut out = vec![(files(&manifest["inputs"], true), files(&manifest["outputs"], false).into_iter().map(|p| p.1).collect())];
    if let Some(alts) = manifest.get("alt_cases").and_then(Json::as_array) {
        for alt in alts {
            out.push((files(&alt["inputs"], true), files(&alt["outputs"], false).into_iter().map(|p| p.1).collect()));
        }
    }
    out
}

fn check_fixture(name: &str) -> Result<(), String> {
    let dir = fixtures_dir().join(name);
    let manifest = load_json(&dir.join("fixture.json"));
    let (atol, rtol) = (manifest["atol"].as_f64().unwrap_or(1e-4), manifest["rtol"].as_f64().unwrap_or(1e-3));
    let raw = d2nnc::front::onnx::load(&dir.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    d2nnc::ir::verify::verify(&raw.graph).map_err(|e| format!("verify (as loaded): {e}"))?;
    let mut optimized = raw.clone();
    d2nnc::passes::optimize(&mut optimized.graph).map_err(|e| format!("optimize: {e}"))?;
    d2nnc::ir::verify::verify(&optimized.graph).map_err(|e| format!("verify (optimized): {e}"))?;
    let program = d2nnc::plan::lower(&optimized.graph).map_err(|e| format!("plan: {e}"))?;
    let mut executor = d2nnc::plan::Executor::new(std::sync::Arc::new(program));
    for (inputs, outputs) in cases(&manifest) {
        let feeds: HashMap<_, _> = inputs
            .iter()
            .map(|(n, f)| (n.clone(), read_npy(&dir.join(f)).expect("read fixture input")))
            .collect();
        let runs = [
            ("interp, as loaded", d2nnc::interp::run(&raw.graph, &feeds).map_err(|e| e.to_string())),
            ("interp, optimized", d2nnc::interp::run(&optimized.graph, &feeds).map_err(|e| e.to_string())),
            ("plan", executor.run(&feeds).map_err(|e| e.to_string())),
        ];
        for (label, got) in runs {
            let got = got.map_err(|e| format!("{label}: {e}"))?;
            for (k, file) in outputs.iter().enumerate() {
                let want = read_npy(&dir.join(file)).expect("read fixture output");
                compare(&got[k], &want, atol, rtol).map_err(|m| format!("{label}, {file}: {m}"))?;
            }
        }
    }
    Ok(())
}

#[test]
fn every_fixture_matches_onnx_runtime() {
    let index = load_json(&fixtures_dir().join("index.json"));
    let names: Vec<&str> = index.as_array().expect("index is a list").iter().map(|v| v.as_str().expect("name")).collect();
    assert!(!names.is_empty());
    let failures: Vec<String> =
        names.iter().filter_map(|n| check_fixture(n).err().map(|e| format!("{n}: {e}"))).collect();
    assert!(failures.is_empty(), "fixtures that do not match ONNX Runtime:\n{}", failures.join("\n"));
}
