//! Helpers shared by the integration tests, included with `mod common;`.

use std::path::Path;

/// Compares `actual` with `tests/golden/<name>.txt`, or rewrites that file
/// when `D2NNC_BLESS` is set. `name` may contain folders (`ir/…`, `passes/…`).
pub fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.txt"));
    if std::env::var_os("D2NNC_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("create golden dir");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "golden {} differs at line {}:\n  expected: {:?}\n  actual:   {:?}\nfull output:\n{actual}\nrun with D2NNC_BLESS=1 to update",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}
