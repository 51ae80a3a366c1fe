//! `d2nnc calibrate` end to end: the sweep's table, knob file and plot, the
//! knob file read back by `run`, `bench` and `compile`, and every kind of bad
//! data or argument rejected with an error naming the array, shape or knob.

use ndarray::{Array1, ArrayD, IxDyn};
use ndarray_npy::NpzWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn d2nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_d2nnc")).args(args).output().expect("spawn d2nnc")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("d2nnc-calibrate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/early_exit_where/model.onnx").to_str().unwrap().to_string()
}

/// Inputs spread over the three exits (per-sample offsets, as the fixture's
/// own input), arbitrary labels of 6 classes.
fn inputs(n: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[n, 3, 16, 16]), |i| {
        let offset = -1.5 + 3.0 * i[0] as f32 / n as f32;
        offset + ((i[1] * 7 + i[2] * 3 + i[3] * 5 + i[0] * 11) % 13) as f32 / 13.0 - 0.5
    })
}

fn write_npz(path: &Path, arrays: Vec<(&str, NpzArray)>) {
    let mut w = NpzWriter::new(std::fs::File::create(path).unwrap());
    for (name, a) in arrays {
        match a {
            NpzArray::F32(a) => w.add_array(name, &a).unwrap(),
            NpzArray::I64(a) => w.add_array(name, &a).unwrap(),
        }
    }
    w.finish().unwrap();
}

enum NpzArray {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

fn labels(n: usize) -> NpzArray {
    NpzArray::I64(Array1::from_shape_fn(n, |i| (i % 6) as i64).into_dyn())
}

fn good_data(dir: &Path) -> String {
    let path = dir.join("val.npz");
    write_npz(&path, vec![("x", NpzArray::F32(inputs(40))), ("y", labels(40))]);
    path.to_str().unwrap().to_string()
}

#[test]
fn calibrate_writes_a_knob_file_that_run_bench_and_compile_read() {
    let dir = temp_dir("flow");
    let data = good_data(&dir);
    let knobs = dir.join("knobs.toml");
    let plot = dir.join("curve.svg");
    let o = d2nnc(&["calibrate", &model(), "--data", &data, "--max-flops", "0.6", "--steps", "9", "--repeats", "1", "--batch", "16", "-o", knobs.to_str().unwrap(), "--plot", plot.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for needle in ["knob threshold = 0.5 (swept", "10 settings", "dense model (every node)", "Pareto frontier", "full network (most FLOPs)", "chosen (the most accurate at most 60.00% of the dense FLOPs)"] {
        assert!(t.contains(needle), "missing `{needle}` in:\n{t}");
    }
    let file = std::fs::read_to_string(&knobs).unwrap();
    assert!(file.contains("[knobs]\nthreshold = ") && file.contains("[calibration]"), "{file}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Pareto frontier") && svg.contains("chosen ("), "plot lacks its legend");
    let value: f32 = file.lines().find_map(|l| l.strip_prefix("threshold = ")).unwrap().parse().unwrap();

    // run: the knob file sets the knob; --knob overrides it.
    let report = dir.join("report.json");
    let input = dir.join("input.npy");
    d2nn_runtime::npy::write_npy(&input, &d2nn_runtime::Tensor::from_f32(&[4, 3, 16, 16], inputs(4).into_raw_vec_and_offset().0).unwrap()).unwrap();
    let spec = format!("input={}", input.display());
    let o = d2nnc(&["run", &model(), "--input", &spec, "-o", dir.to_str().unwrap(), "--knobs-file", knobs.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["knobs"]["threshold"].as_f64().unwrap() as f32, value);
    let o = d2nnc(&["run", &model(), "--input", &spec, "-o", dir.to_str().unwrap(), "--knobs-file", knobs.to_str().unwrap(), "--knob", "threshold=0.25", "--report", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["knobs"]["threshold"].as_f64().unwrap(), 0.25);

    // bench accepts it, and --cycle times every sample at batch 1: the
    // mean FLOPs lie strictly between the cheapest and the dearest sample's.
    let o = d2nnc(&["bench", &model(), "--input", &spec, "--knobs-file", knobs.to_str().unwrap(), "--iters", "2", "--warmup", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d2nnc(&["bench", &model(), "--input", &spec, "--batch", "1", "--cycle", "--knob", "threshold=0.5", "--iters", "8", "--warmup", "0", "--json"]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("cycling through 4 windows"), "{t}");
    let json: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(json["windows"], 4);
    let mut per_sample = Vec::new();
    for i in 0..4 {
        let one = dir.join(format!("one{i}.npy"));
        let rows = inputs(4);
        let sample = rows.index_axis(ndarray::Axis(0), i).to_owned().insert_axis(ndarray::Axis(0));
        d2nn_runtime::npy::write_npy(&one, &d2nn_runtime::Tensor::from_f32(sample.shape(), sample.iter().copied().collect()).unwrap()).unwrap();
        let o = d2nnc(&["bench", &model(), "--input", &format!("input={}", one.display()), "--knob", "threshold=0.5", "--iters", "1", "--warmup", "0", "--json"]);
        let j: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
        per_sample.push(j["flops_executed"].as_u64().unwrap());
    }
    assert_eq!(json["flops_executed"].as_u64().unwrap(), per_sample.iter().sum::<u64>() / 4, "mean of {per_sample:?}");
    let o = d2nnc(&["bench", &model(), "--input", &spec, "--cycle"]);
    assert!(!o.status.success() && text(&o).contains("--batch"), "{}", text(&o));

    // compile: the crate's knob starts at the file's value.
    let krate = dir.join("crate");
    let o = d2nnc(&["compile", &model(), "-o", krate.to_str().unwrap(), "--name", "calibrated", "--knobs-file", knobs.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let lib = std::fs::read_to_string(krate.join("src/lib.rs")).unwrap();
    assert!(lib.contains(&format!("{value}")) || lib.contains(&format!("{value:?}")), "the crate does not start the knob at {value}");
}

#[test]
fn bad_data_is_rejected_naming_the_array_and_shape() {
    let dir = temp_dir("bad");
    type Case<'a> = (&'a str, Vec<(&'a str, NpzArray)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        ("short_labels", vec![("x", NpzArray::F32(inputs(10))), ("y", labels(7))], vec![], "array `y` has shape [7] but `x` has 10 samples"),
        ("float_labels", vec![("x", NpzArray::F32(inputs(4))), ("y", NpzArray::F32(ArrayD::zeros(IxDyn(&[4]))))], vec![], "array `y` holds f32 elements"),
        ("wrong_image", vec![("x", NpzArray::F32(ArrayD::zeros(IxDyn(&[4, 3, 8, 8])))), ("y", labels(4))], vec![], "array `x` has shape [4, 3, 8, 8]; the model's input `input` takes"),
        ("label_range", vec![("x", NpzArray::F32(inputs(4))), ("y", NpzArray::I64(Array1::from(vec![0i64, 1, 9, 2]).into_dyn()))], vec![], "sample 2 has label 9, but the model's output scores 6 classes"),
        ("negative_label", vec![("x", NpzArray::F32(inputs(2))), ("y", NpzArray::I64(Array1::from(vec![0i64, -1]).into_dyn()))], vec![], "sample 1 has label -1"),
        ("no_y", vec![("x", NpzArray::F32(inputs(2))), ("target", labels(2))], vec![], "no label array (looked for y"),
        ("named_keys", vec![("images", NpzArray::F32(inputs(2))), ("classes", labels(2))], vec!["--x", "pixels", "--y", "classes"], "no array named `pixels`"),
        ("unknown_knob", vec![("x", NpzArray::F32(inputs(2))), ("y", labels(2))], vec!["--knobs", "thresh"], "`thresh` is not a knob of this model (knobs: threshold)"),
    ];
    for (name, arrays, extra, want) in cases {
        let path = dir.join(format!("{name}.npz"));
        write_npz(&path, arrays);
        let mut args = ["calibrate", &model(), "--data", path.to_str().unwrap()].iter().map(|s| s.to_string()).collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = Command::new(env!("CARGO_BIN_EXE_d2nnc")).args(&args).output().unwrap();
        let t = text(&o);
        assert!(!o.status.success(), "{name}: accepted:\n{t}");
        assert!(t.contains(want), "{name}: expected `{want}` in:\n{t}");
        assert!(!t.contains("panicked"), "{name}: {t}");
    }
    // Not an archive at all, and a truncated one.
    let corrupt = dir.join("corrupt.npz");
    std::fs::write(&corrupt, b"PK\x03\x04 not really").unwrap();
    let o = d2nnc(&["calibrate", &model(), "--data", corrupt.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("corrupt.npz"), "{}", text(&o));
    let data = good_data(&dir);
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let o = d2nnc(&["calibrate", &model(), "--data", corrupt.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("corrupt.npz") && !text(&o).contains("panicked"), "{}", text(&o));
}

#[test]
fn bad_arguments_and_knob_files_are_readable_errors() {
    let dir = temp_dir("args");
    let data = good_data(&dir);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let dense_model = fixtures.join("resnet_tiny/model.onnx");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--max-flops".into(), "1.5".into()], "not a fraction between 0 and 1"),
        (vec!["--max-flops".into(), "0.5".into(), "--max-accuracy-drop".into(), "0.01".into()], "cannot be used with"),
        (vec!["--max-flops".into(), "0.0".into(), "--steps".into(), "3".into()], "no knob setting meets the constraint (at most 0.0% of the dense FLOPs); the cheapest setting measured executes"),
        (vec!["--scores".into(), "probs".into()], "has no output `probs` (outputs: logits)"),
    ];
    for (extra, want) in cases {
        let mut args: Vec<String> = vec!["calibrate".into(), model(), "--data".into(), data.clone(), "--repeats".into(), "1".into()];
        args.extend(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_d2nnc")).args(&args).output().unwrap();
        assert!(!o.status.success() && text(&o).contains(want), "{args:?}: expected `{want}` in:\n{}", text(&o));
    }
    let o = d2nnc(&["calibrate", dense_model.to_str().unwrap(), "--data", &data]);
    assert!(!o.status.success() && text(&o).contains("has no knobs (decision thresholds) to calibrate"), "{}", text(&o));

    let input = format!("input={}", fixtures.join("early_exit_where/input_0.npy").display());
    for (content, want) in [
        ("[knobs]\nthreshhold = 0.3\n", "`threshhold` is not a knob of this model (knobs: threshold)"),
        ("[knobs]\nthreshold = \"low\"\n", "knob `threshold`: \"low\" is not a number"),
        ("threshold = 0.3\n", "no [knobs] table"),
        ("[knobs\nthreshold = 0.3\n", "not valid TOML"),
    ] {
        let file = dir.join("knobs.toml");
        std::fs::write(&file, content).unwrap();
        for command in ["run", "compile"] {
            let args: Vec<&str> = match command {
                "run" => vec!["run", Box::leak(model().into_boxed_str()), "--input", &input, "-o", dir.to_str().unwrap(), "--knobs-file", file.to_str().unwrap()],
                _ => vec!["compile", Box::leak(model().into_boxed_str()), "-o", Box::leak(dir.join("c").to_str().unwrap().to_string().into_boxed_str()), "--knobs-file", file.to_str().unwrap()],
            };
            let o = d2nnc(&args);
            assert!(!o.status.success() && text(&o).contains(want), "{command} {content:?}: expected `{want}` in:\n{}", text(&o));
        }
    }
    let o = d2nnc(&["run", &model(), "--input", &input, "--knobs-file", dir.join("missing.toml").to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("missing.toml: cannot read it"), "{}", text(&o));
}

#[test]
fn ctrl_c_stops_the_sweep_and_writes_nothing() {
    let dir = temp_dir("sigint");
    let data = dir.join("val.npz");
    write_npz(&data, vec![("x", NpzArray::F32(inputs(400))), ("y", labels(400))]);
    let knobs = dir.join("knobs.toml");
    let plot = dir.join("curve.svg");
    // Thousands of passes: far longer than the wait before the interrupt.
    let child = Command::new(env!("CARGO_BIN_EXE_d2nnc"))
        .args(["calibrate", &model(), "--data", data.to_str().unwrap(), "--steps", "400", "--repeats", "100", "-o", knobs.to_str().unwrap(), "--plot", plot.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // The shell's built-in `kill`: no procps needed.
    let killed = Command::new("sh").args(["-c", &format!("kill -INT {}", child.id())]).status().unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(t.contains("nothing written"), "{t}");
    assert!(!knobs.exists() && !plot.exists(), "files written after the interrupt");
}
