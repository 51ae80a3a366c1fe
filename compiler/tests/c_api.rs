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
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-api");
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let out = Command::new("bash")
            .arg(workspace().join("examples/c-app/build.sh"))
            .arg(fixture)
            .env("CC", &cc)
            .env("CARGO", env!("CARGO"))
            .env("CARGO_TARGET_DIR", &target)
            .env("D2NNC", env!("CARGO_BIN_EXE_d2nnc"))
            .current_dir(workspace())
            .output()
            .expect("run bash examples/c-app/build.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // The run printed what the program promises: classes, paths, FLOPs.
            assert!(stdout.contains("sample 0: class ") && stdout.contains("FLOPs: ") && stdout.contains("bad-input checks: 0 failure(s)"), "{fixture}: unexpected output:\n{stdout}");
            eprintln!("{fixture}: ok");
        } else {
            eprintln!("{fixture}: FAILED ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
            failures.push(fixture.clone());
        }
    }
    assert!(failures.is_empty(), "build.sh failed for {failures:?} (output above)");
}
