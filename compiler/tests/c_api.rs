//! The C path end to end: for every dynamic fixture the C example can feed
//! (float32 ports, one input; `If` models included), `examples/c-app/build.sh` compiles the model
//! with `d2nnc compile --emit object`, links the C program with the object
//! file and `libd2nn_runtime.a`, checks its outputs against the fixture's
//! stored ones and runs the bad-input checks of the C API. Skipped, with a
//! notice, when there is no C compiler.
//!
//! The script builds the static library in its own target directory under
//! `CARGO_TARGET_TMPDIR`: a nested cargo must not wait for the lock that
//! the `cargo test` running this test may hold on the workspace's. It uses
//! the `d2nnc` binary cargo built for this test rather than building a
//! release one. The fixtures run one after another because they share
//! that library, which each run rebuilds in place.

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("workspace root")
}

/// The C compiler build.sh will use, if it runs.
fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    Command::new(&cc).arg("--version").output().ok().filter(|o| o.status.success()).map(|_| cc)
}

/// The fixtures to run: dynamic models (gated, early exit, or a
/// data-dependent `If`) whose ports are all float32, with one input (what
/// the C example feeds).
fn c_fixtures() -> Vec<String> {
    let dir = workspace().join("tests/fixtures");
    let index: Vec<String> = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).expect("read index.json")).expect("parse index.json");
    index
        .into_iter()
        .filter(|name| {
            let json: Json = serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("fixture.json")).expect("read fixture.json")).expect("parse fixture.json");
            let ports = |key: &str| json[key].as_array().cloned().unwrap_or_default();
            let float = ports("inputs").iter().chain(ports("outputs").iter()).all(|p| p["dtype"] == "float32");
            matches!(json["family"].as_str(), Some("dynamic" | "control_flow")) && float && ports("inputs").len() == 1
        })
        .collect()
}

/// The tests share one target directory and the machine's cores: one at a time.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `build.sh NAME` (with `FIXTURE_DIR` when given); `Err` holds its output.
fn build_and_run(cc: &str, name: &str, fixture_dir: Option<&Path>) -> Result<String, String> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-api");
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("examples/c-app/build.sh"))
        .arg(name)
        .env("CC", cc)
        .env("CARGO", env!("CARGO"))
        .env("CARGO_TARGET_DIR", &target)
        .env("D2NNC", env!("CARGO_BIN_EXE_d2nnc"))
        .current_dir(workspace());
    if let Some(dir) = fixture_dir {
        cmd.env("FIXTURE_DIR", dir);
    }
    let out = cmd.output().expect("run bash examples/c-app/build.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}\n--- stdout\n{stdout}\n--- stderr\n{}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// The trained networks of `examples/train/` (dynamic form, the whole test
/// set as one batch) through the C program, against ONNX Runtime's logits.
#[test]
fn c_program_runs_the_trained_models() {
    let Some(cc) = c_compiler() else {
        eprintln!("note: no C compiler (`cc`, or $CC) on PATH; skipping the C API test");
        return;
    };
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let train = workspace().join("examples/train");
    let names: Vec<String> = serde_json::from_str(&std::fs::read_to_string(train.join("models/index.json")).expect("read index.json")).expect("parse index.json");
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-api-trained");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let mut test = d2nn_runtime::npy::Npz::open(&train.join("data/test.npz")).expect("open test.npz");
    let x = test.read("x").expect("test x");
    let mut failures = Vec::new();
    for name in &names {
        // A fixture-shaped folder: model.onnx, input_0.npy, output_0.npy.
        let dir = scratch.join(name);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let model = train.join("models").join(name);
        std::fs::copy(model.join("dynamic.onnx"), dir.join("model.onnx")).expect("copy model");
        std::fs::copy(model.join("ref_dynamic.npy"), dir.join("output_0.npy")).expect("copy reference");
        d2nn_runtime::npy::write_npy(&dir.join("input_0.npy"), &x).expect("write input");
        match build_and_run(&cc, &format!("trained_{name}"), Some(&dir)) {
            Ok(stdout) if stdout.contains("sample 359: class ") && stdout.contains("bad-input checks: 0 failure(s)") => eprintln!("{name}: ok"),
            Ok(stdout) => failures.push(format!("{name}: unexpected output:\n{stdout}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "the C program disagrees on trained models:\n{}", failures.join("\n\n"));
}

#[test]
fn c_program_runs_dynamic_fixtures() {
    let Some(cc) = c_compiler() else {
        eprintln!("note: no C compiler (`cc`, or $CC) on PATH; skipping the C API test");
        return;
    };
    let fixtures = c_fixtures();
    for required in ["skip_chain", "early_exit_where"] {
        assert!(fixtures.iter().any(|f| f == required), "fixture {required} should qualify for the C test; found {fixtures:?}");
    }
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut failures = Vec::new();
    for fixture in &fixtures {
        match build_and_run(&cc, fixture, None) {
            Ok(stdout) => {
                // The run printed what the program promises: classes, paths, FLOPs.
                assert!(stdout.contains("sample 0: class ") && stdout.contains("FLOPs: ") && stdout.contains("bad-input checks: 0 failure(s)"), "{fixture}: unexpected output:\n{stdout}");
                eprintln!("{fixture}: ok");
            }
            Err(e) => {
                eprintln!("{fixture}: FAILED {e}");
                failures.push(fixture.clone());
            }
        }
    }
    assert!(failures.is_empty(), "build.sh failed for {failures:?} (output above)");
}
