//! The C header (`NAME.h`) and the `README.md` that `d2nnc compile --emit
//! object` writes next to the object file `NAME.o`.
//!
//! The header has two parts. The runtime part declares the C API of the
//! static library `libd2nn_runtime.a` (`d2nn_runtime::abi::capi`): the
//! status codes, the opaque handles and the functions, documented one by
//! one. It sits behind its own guard, `D2NN_RUNTIME_API`, so a program can
//! include the headers of several models. The model part declares the
//! `NAME_compiled` record the object file exports and describes the model
//! with macros (ports, knobs, regions, paths) and two `static inline`
//! helpers, so C code can size its buffers without hard-coding shapes.
//!
//! Everything that comes from the ONNX file (port, knob and node names) is
//! escaped before it lands in C: string literals get octal escapes for
//! every byte outside printable ASCII (octal escapes stop after three
//! digits, unlike `\x`, so a following digit cannot join them) and `\?` for
//! every `?` (no trigraph can form under `-std=c99`); comments are kept
//! ASCII and cannot be closed or nested by the text they quote.

use d2nn_runtime::abi::{ModelMeta, Port, ABI_VERSION};
use d2nn_runtime::compiled::Dim;
use d2nn_runtime::DType;
use std::fmt::Write;

/// The system libraries a C program must link after `-ld2nn_runtime` on
/// Linux with glibc: what `cargo rustc -p d2nn-runtime-c --release --
/// --print native-static-libs` prints there (the Rust standard library's
/// dependencies).
pub const LINUX_NATIVE_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

/// The runtime part of every header: identical in all of them, so the
/// first header included declares it and the others skip it.
const RUNTIME_API: &str = r#"#ifndef D2NN_RUNTIME_API
#define D2NN_RUNTIME_API 1

/* ------------------------------------------------------------------------
 * The d2nn runtime C API (libd2nn_runtime.a). Shared by every model header.
 *
 * Ownership: a d2nn_model is created by d2nn_model_create (or a model's
 * NAME_create) and freed by d2nn_model_free; the caller owns it and every
 * buffer it passes. The runtime never keeps a pointer to a caller's buffer
 * after a call returns. The d2nn_compiled record belongs to the object file
 * and is never freed.
 *
 * Threads: a model is NOT safe to use from two threads at once (a run
 * writes its scratch memory, knobs and trace). Create one model per thread;
 * models are independent, and any number of them may be created from the
 * same compiled record and run concurrently. A model may move between
 * threads between calls.
 *
 * Errors: every function but d2nn_model_free and d2nn_last_error returns a
 * d2nn_status code (as an int) and, when it is not D2NN_OK, leaves a message
 * for d2nn_last_error on the calling thread. No function aborts or unwinds
 * on a bad argument.
 * ---------------------------------------------------------------------- */

/* The version of the binary interface between compiled models and the
 * runtime; d2nn_model_create refuses a model compiled for another one. */
#define D2NN_ABI_VERSION ABI_VERSION_VALUE

/* Return codes of the runtime functions. */
typedef enum d2nn_status {
    /* Success. */
    D2NN_OK = 0,
    /* A required pointer argument was null. */
    D2NN_NULL_POINTER = 1,
    /* A buffer's length, or the number of buffers, does not fit the model. */
    D2NN_BAD_SIZE = 2,
    /* Unknown knob name, a name that is not UTF-8, or a value that is not finite. */
    D2NN_BAD_KNOB = 3,
    /* A kernel refused its operands while running. */
    D2NN_KERNEL = 4,
    /* The compiled model is damaged, from another ABI version, or has
     * ports that are not float (the C API runs float models only). */
    D2NN_BAD_MODEL = 5,
    /* A sample or region index is out of range, or nothing has run yet. */
    D2NN_OUT_OF_RANGE = 6,
    /* The runtime panicked (a bug): free the model and do not run it again. */
    D2NN_PANIC = 7
} d2nn_status;

/* A model loaded for running: packed weights, scratch memory, knobs and the
 * trace of the last run. Opaque. */
typedef struct d2nn_model d2nn_model;

/* A compiled model as an object file exports it (NAME_compiled). Opaque. */
typedef struct d2nn_compiled d2nn_compiled;

/* Creates a model from a compiled record.
 *   compiled: the record, e.g. &NAME_compiled (not null).
 *   threads:  threads the kernels run on, the calling thread included;
 *             0 counts as 1. With more than 1, the model starts
 *             threads - 1 worker threads, which it stops when freed.
 *   out:      receives the new model (not null); untouched on failure.
 * Returns D2NN_OK; D2NN_NULL_POINTER if compiled or out is null;
 * D2NN_BAD_MODEL if the record is damaged or from another ABI version;
 * D2NN_PANIC on a runtime bug.
 * The caller owns *out and frees it with d2nn_model_free. Safe to call from
 * any thread, also concurrently. */
int d2nn_model_create(const d2nn_compiled *compiled, size_t threads, d2nn_model **out);

/* Frees a model and stops its worker threads. Null is ignored. The model
 * must not be in use on another thread, and must not be used afterwards. */
void d2nn_model_free(d2nn_model *model);

/* Runs the model on one batch.
 *   model:        the model (not null).
 *   inputs:       input_count pointers, one per graph input in order; inputs[i]
 *                 holds input_lens[i] floats, the input's elements in
 *                 row-major order of its shape. Null only if input_count and
 *                 output_count are both 0; an entry may be null only if its
 *                 length is 0.
 *   input_lens:   input_count lengths, in floats (not bytes).
 *   input_count:  must be the model's input count (NAME_INPUT_COUNT).
 *   outputs:      output_count pointers, one per graph output in order;
 *                 outputs[j] receives output_lens[j] floats.
 *   output_lens:  output_count lengths, in floats.
 *   output_count: must be the model's output count (NAME_OUTPUT_COUNT).
 *   batch:        receives the batch size of the run; may be null.
 * The batch is the length of the first input that scales with the batch
 * over its per-sample length (1 if none does); every length must then be
 * its port's length at that batch (NAME_input_elements and
 * NAME_output_elements compute them). Buffers must be aligned for float and
 * must not overlap.
 * Returns D2NN_OK; D2NN_NULL_POINTER if model or a needed array or buffer is
 * null; D2NN_BAD_SIZE on a wrong count or length (nothing is written);
 * D2NN_BAD_MODEL if a port is not float; D2NN_KERNEL if a kernel refused its
 * operands (the outputs are then unspecified); D2NN_PANIC on a runtime bug.
 * Uses the knobs' current values; records the trace that d2nn_model_flops,
 * d2nn_model_sample_path and d2nn_model_region_rows read. A run that fails
 * inside the model clears the trace; one refused for its arguments leaves
 * the previous run's trace. Not safe concurrently with any other call on the
 * same model. */
int d2nn_model_run(d2nn_model *model, const float *const *inputs, const size_t *input_lens, size_t input_count,
                   float *const *outputs, const size_t *output_lens, size_t output_count, size_t *batch);

/* Sets a knob (a threshold of the model's decisions) for the following runs.
 *   model: the model (not null).
 *   name:  the knob's name, NUL-terminated UTF-8 (NAME_KNOB_<i>_NAME; not null).
 *   value: the new value; must be finite.
 * Returns D2NN_OK; D2NN_NULL_POINTER if model or name is null;
 * D2NN_BAD_KNOB for an unknown name or a value that is not finite (the knob
 * keeps its value); D2NN_PANIC on a runtime bug.
 * Not safe concurrently with any other call on the same model. */
int d2nn_model_set_knob(d2nn_model *model, const char *name, float value);

/* Reads a knob's current value.
 *   model: the model (not null).
 *   name:  the knob's name, NUL-terminated UTF-8 (not null).
 *   value: receives the value (not null).
 * Returns D2NN_OK; D2NN_NULL_POINTER if model, name or value is null;
 * D2NN_BAD_KNOB for an unknown name; D2NN_PANIC on a runtime bug.
 * Not safe concurrently with a call that modifies the model. */
int d2nn_model_get_knob(const d2nn_model *model, const char *name, float *value);

/* The floating-point operations of the last successful run.
 *   model:    the model (not null).
 *   executed: receives the FLOPs the run executed (not null).
 *   dense:    receives the FLOPs the dense model (every region run on every
 *             sample) would have executed at the same batch (not null).
 * Returns D2NN_OK; D2NN_NULL_POINTER if model, executed or dense is null;
 * D2NN_OUT_OF_RANGE if the model has not run successfully yet (checked
 * before the output pointers); D2NN_PANIC on a runtime bug.
 * Not safe concurrently with a call that modifies the model. */
int d2nn_model_flops(const d2nn_model *model, uint64_t *executed, uint64_t *dense);

/* The path a sample took in the last successful run: an index into the
 * model's list of paths (NAME_PATH_COUNT; the header's comment lists them).
 *   model:  the model (not null).
 *   sample: the sample's index: a row of the first input's first axis in
 *           the last run (0 .. batch - 1 when that axis is the batch).
 *   path:   receives the path's index (not null).
 * Returns D2NN_OK; D2NN_NULL_POINTER if model or path is null;
 * D2NN_OUT_OF_RANGE if the model has not run successfully yet, if sample is
 * out of range, or if the model does not list its paths
 * (NAME_PATH_COUNT is 0); D2NN_PANIC on a runtime bug.
 * Not safe concurrently with a call that modifies the model. */
int d2nn_model_sample_path(const d2nn_model *model, size_t sample, size_t *path);

/* The number of samples whose guard held for a region in the last
 * successful run.
 *   model:  the model (not null).
 *   region: the region's index (0 .. NAME_REGION_COUNT - 1).
 *   rows:   receives the number of samples (not null).
 * Returns D2NN_OK; D2NN_NULL_POINTER if model or rows is null;
 * D2NN_OUT_OF_RANGE if the model has not run successfully yet or region is
 * out of range; D2NN_PANIC on a runtime bug.
 * Not safe concurrently with a call that modifies the model. */
int d2nn_model_region_rows(const d2nn_model *model, size_t region, size_t *rows);

/* The message of the last failed call on the calling thread, "" if none
 * failed yet; never null. The string belongs to the runtime and stays valid
 * until the next failing call on the same thread. Each thread has its own. */
const char *d2nn_last_error(void);

#endif /* D2NN_RUNTIME_API */
"#;

/// Writes the C header `NAME.h` of a model whose object file exports
/// `NAME_compiled` (see the module docs). `source` names the ONNX file it
/// was compiled from, for the header's first comment.
pub fn header(meta: &ModelMeta, name: &str, source: &str) -> String {
    let id = ident(name);
    let up = id.to_ascii_uppercase();
    let mut h = String::new();
    let w = &mut h;
    wl(w, format!("/* {id}.h: the C interface of the model `{}`, compiled by d2nnc from {}.", comment(name), comment(source)));
    wl(w, " *");
    wl(w, format!(" * {id}.o holds its code and weights and exports `{id}_compiled`. Link it with"));
    wl(w, " * the d2nn runtime static library (`cargo build --release -p d2nn-runtime-c` in");
    wl(w, " * the d2nnc repository builds target/release/libd2nn_runtime.a):");
    wl(w, " *");
    wl(w, format!(" *     cc main.c {id}.o -Lpath/to/d2nnc/target/release -ld2nn_runtime {LINUX_NATIVE_LIBS}"));
    wl(w, " *");
    wl(w, " * (on Linux with glibc; `cargo rustc -p d2nn-runtime-c --release -- --print");
    wl(w, " * native-static-libs` prints the system libraries for other platforms). C99 or");
    wl(w, " * C++; the headers of several models may be included in one program.");
    wl(w, " *");
    wl(w, " * Generated by d2nnc; do not edit. */");
    wl(w, format!("#ifndef D2NN_MODEL_{up}_H"));
    wl(w, format!("#define D2NN_MODEL_{up}_H"));
    wl(w, "");
    wl(w, "#include <stddef.h>");
    wl(w, "#include <stdint.h>");
    let non_finite = meta.knobs.iter().any(|k| !k.default.is_finite());
    if non_finite {
        wl(w, "#include <math.h> /* HUGE_VALF and NAN for knob defaults */");
    }
    wl(w, "");
    wl(w, "#ifdef __cplusplus");
    wl(w, "extern \"C\" {");
    wl(w, "#endif");
    wl(w, "");
    w.push_str(&RUNTIME_API.replace("ABI_VERSION_VALUE", &ABI_VERSION.to_string()));
    wl(w, "");
    model_part(w, meta, &id, &up);
    wl(w, "");
    wl(w, "#ifdef __cplusplus");
    wl(w, "} /* extern \"C\" */");
    wl(w, "#endif");
    wl(w, "");
    wl(w, format!("#endif /* D2NN_MODEL_{up}_H */"));
    h
}

/// The model's own declarations: its record, macros and helpers.
fn model_part(w: &mut String, meta: &ModelMeta, id: &str, up: &str) {
    wl(w, "/* ------------------------------------------------------------------------");
    wl(w, format!(" * The model `{}`.", comment(&meta.name)));
    wl(w, " *");
    wl(w, " * Each buffer holds its port's elements in row-major order of the shape");
    wl(w, " * below, N being the batch. A port with BATCHED 1 holds ELEMENTS_PER_SAMPLE");
    wl(w, " * floats per sample (N times as many in all); one with BATCHED 0 holds");
    wl(w, " * ELEMENTS_PER_SAMPLE floats whatever the batch.");
    wl(w, " * The counts are unsigned integer constants, usable in #if.");
    if let Some(p) = meta.inputs.iter().chain(&meta.outputs).find(|p| p.dtype != DType::F32) {
        wl(w, " *");
        wl(w, format!(" * NOTE: port `{}` holds {} elements. d2nn_model_run runs float models only", comment(&p.name), p.dtype.name()));
        wl(w, " * and returns D2NN_BAD_MODEL for this one.");
    }
    wl(w, " * ---------------------------------------------------------------------- */");
    wl(w, "");
    wl(w, "/* The compiled model; pass its address to d2nn_model_create. */");
    wl(w, format!("extern const d2nn_compiled {id}_compiled;"));
    wl(w, "");
    for (kind, upper, ports) in [("input", "INPUT", &meta.inputs), ("output", "OUTPUT", &meta.outputs)] {
        wl(w, format!("/* Number of {kind}s: the {kind}_count d2nn_model_run expects. */"));
        wl(w, format!("#define {up}_{upper}_COUNT {}", ports.len()));
        for (i, p) in ports.iter().enumerate() {
            wl(w, format!("/* {kind} {i}: `{}`, {} {} */", comment(&p.name), p.dtype.name(), shape_text(p)));
            wl(w, format!("#define {up}_{upper}_{i}_NAME {}", c_string(&p.name)));
            match p.elements(1) {
                Some(n) => wl(w, format!("#define {up}_{upper}_{i}_ELEMENTS_PER_SAMPLE {n}u")),
                None => wl(w, format!("#error \"{kind} {i} has more elements than size_t holds\"")),
            }
            wl(w, format!("#define {up}_{upper}_{i}_BATCHED {}", u8::from(p.is_batched())));
        }
        wl(w, "");
    }
    wl(w, "/* Knobs: thresholds of the model's decisions, set with d2nn_model_set_knob. */");
    wl(w, format!("#define {up}_KNOB_COUNT {}", meta.knobs.len()));
    for (i, k) in meta.knobs.iter().enumerate() {
        wl(w, format!("/* knob {i}: `{}`, used by {} */", comment(&k.name), comment(&k.used_by)));
        wl(w, format!("#define {up}_KNOB_{i}_NAME {}", c_string(&k.name)));
        wl(w, format!("#define {up}_KNOB_{i}_DEFAULT {}", c_float(k.default)));
    }
    wl(w, "");
    let regions = meta.trace.regions.len();
    let paths = meta.trace.paths.as_ref().map_or(0, Vec::len);
    wl(w, "/* Guarded regions: parts of the network that run only for the samples whose");
    wl(w, " * guard holds (d2nn_model_region_rows counts them).");
    for (r, text) in meta.region_text.iter().enumerate().take(regions) {
        wl(w, format!(" *   region {r}: {}", comment(text)));
    }
    if regions == 0 {
        wl(w, " * This model has none: every sample runs the whole network.");
    }
    wl(w, " */");
    wl(w, format!("#define {up}_REGION_COUNT {regions}"));
    wl(w, "/* Paths: the distinct sets of regions a sample can run (d2nn_model_sample_path");
    wl(w, " * gives each sample's index in this list).");
    match &meta.trace.paths {
        Some(list) => {
            for (i, regions) in list.iter().enumerate() {
                let text = meta.path_text.get(i).map(|t| comment(t)).unwrap_or_else(|| {
                    let r: Vec<String> = regions.iter().map(|r| format!("R{r}")).collect();
                    format!("regions [{}]", r.join(", "))
                });
                wl(w, format!(" *   path {i}: {text}"));
            }
        }
        None if regions == 0 => wl(w, " * This model has no regions, hence no paths to tell apart."),
        None => wl(w, " * This model has too many to list; d2nn_model_sample_path returns D2NN_OUT_OF_RANGE."),
    }
    wl(w, " */");
    wl(w, format!("#define {up}_PATH_COUNT {paths}"));
    wl(w, "");
    for (kind, upper, ports) in [("input", "INPUT", &meta.inputs), ("output", "OUTPUT", &meta.outputs)] {
        wl(w, format!("/* Floats of {kind} `index` at batch `batch` (0 if there is no such {kind}):"));
        wl(w, format!(" * the {kind}_lens entry d2nn_model_run expects. Overflows like any size_t product. */"));
        wl(w, format!("static inline size_t {id}_{kind}_elements(size_t index, size_t batch) {{"));
        wl(w, "    (void)batch;");
        wl(w, "    switch (index) {");
        for i in 0..ports.len() {
            wl(w, format!("    case {i}: return {up}_{upper}_{i}_ELEMENTS_PER_SAMPLE * ({up}_{upper}_{i}_BATCHED ? batch : 1);"));
        }
        wl(w, "    default: return 0;");
        wl(w, "    }");
        wl(w, "}");
        wl(w, "");
    }
    wl(w, format!("/* Creates a `{}` model: d2nn_model_create(&{id}_compiled, threads, out); see there. */", comment(&meta.name)));
    wl(w, format!("static inline int {id}_create(size_t threads, d2nn_model **out) {{"));
    wl(w, format!("    return d2nn_model_create(&{id}_compiled, threads, out);"));
    wl(w, "}");
}

/// Writes the `README.md` of the output folder: what the files are, how to
/// build and link, a minimal C program, and the model's ports and knobs.
pub fn readme(meta: &ModelMeta, name: &str, source: &str) -> String {
    let id = ident(name);
    let up = id.to_ascii_uppercase();
    let mut r = String::new();
    let w = &mut r;
    wl(w, format!("# `{id}`: a d2nnc-compiled model for C"));
    wl(w, "");
    wl(w, format!("Compiled by `d2nnc compile --emit object` from {}.", code(source)));
    wl(w, "");
    wl(w, "| file | what it is |");
    wl(w, "|---|---|");
    wl(w, format!("| `{id}.o` | the model's machine code and weights; exports `{id}_compiled` and calls into the d2nn runtime |"));
    wl(w, format!("| `{id}.h` | the C API of the runtime and this model's ports, knobs, regions and paths, documented |"));
    wl(w, "| `README.md` | this file |");
    wl(w, "");
    wl(w, "## Building a program");
    wl(w, "");
    wl(w, "The object file needs the d2nn runtime, a static library built from the d2nnc");
    wl(w, "repository (Rust toolchain required):");
    wl(w, "");
    wl(w, "```sh");
    wl(w, "cargo build --release -p d2nn-runtime-c   # writes target/release/libd2nn_runtime.a");
    wl(w, "```");
    wl(w, "");
    wl(w, "Then compile and link (C99 or later; `c++` works the same for C++):");
    wl(w, "");
    wl(w, "```sh");
    wl(w, format!("cc -O2 main.c {id}.o -L/path/to/d2nnc/target/release -ld2nn_runtime {LINUX_NATIVE_LIBS} -o main"));
    wl(w, "```");
    wl(w, "");
    wl(w, "The libraries after `-ld2nn_runtime` are those the Rust standard library needs on");
    wl(w, "Linux with glibc. On another platform, ask the Rust toolchain:");
    wl(w, "`cargo rustc -p d2nn-runtime-c --release -- --print native-static-libs`.");
    wl(w, "");
    wl(w, "## Using it");
    wl(w, "");
    wl(w, format!("Create a model with `{id}_create` (one per thread: a model must not run on two"));
    wl(w, "threads at once), run it with `d2nn_model_run` on float buffers, read the trace");
    wl(w, "(`d2nn_model_flops`, `d2nn_model_sample_path`, `d2nn_model_region_rows`), free it");
    wl(w, "with `d2nn_model_free`. Every function returns a `d2nn_status`; on failure");
    wl(w, "`d2nn_last_error()` says why. The header documents each function.");
    wl(w, "");
    wl(w, "```c");
    w.push_str(&example_c(meta, &id, &up));
    wl(w, "```");
    wl(w, "");
    wl(w, "## Ports");
    wl(w, "");
    wl(w, "Buffers hold the elements in row-major order of the shape; `N` is the batch.");
    wl(w, "");
    wl(w, "| port | name | type | shape | floats per sample | scales with the batch |");
    wl(w, "|---|---|---|---|---|---|");
    for (kind, ports) in [("input", &meta.inputs), ("output", &meta.outputs)] {
        for (i, p) in ports.iter().enumerate() {
            let per_sample = p.elements(1).map_or_else(|| "overflow".to_string(), |n| n.to_string());
            wl(w, format!("| {kind} {i} | {} | {} | `{}` | {per_sample} | {} |", cell(&p.name), p.dtype.name(), shape_text(p), if p.is_batched() { "yes" } else { "no" }));
        }
    }
    wl(w, "");
    wl(w, "## Knobs");
    wl(w, "");
    if meta.knobs.is_empty() {
        wl(w, "None.");
    } else {
        wl(w, "Thresholds of the model's decisions; `d2nn_model_set_knob` moves them.");
        wl(w, "");
        wl(w, "| knob | name | default | used by |");
        wl(w, "|---|---|---|---|");
        for (i, k) in meta.knobs.iter().enumerate() {
            wl(w, format!("| {i} | {} | {} | {} |", cell(&k.name), k.default, cell(&k.used_by)));
        }
    }
    wl(w, "");
    wl(w, "## Regions and paths");
    wl(w, "");
    if meta.trace.regions.is_empty() {
        wl(w, "None: every sample runs the whole network.");
    } else {
        for (r, text) in meta.region_text.iter().enumerate().take(meta.trace.regions.len()) {
            wl(w, format!("- region {r}: {}", code(text)));
        }
        wl(w, "");
        match &meta.trace.paths {
            Some(paths) => {
                for (i, regions) in paths.iter().enumerate() {
                    let text = meta.path_text.get(i).map(|t| code(t)).unwrap_or_else(|| format!("regions {regions:?}"));
                    wl(w, format!("- path {i}: {text}"));
                }
            }
            None => wl(w, "The model has too many paths to list them."),
        }
    }
    r
}

/// A minimal C program for the README: run the model once on zeros at batch
/// 1 and print the first output.
fn example_c(meta: &ModelMeta, id: &str, up: &str) -> String {
    let mut c = String::new();
    let w = &mut c;
    wl(w, "#include <stdio.h>");
    wl(w, "#include <stdlib.h>");
    wl(w, format!("#include \"{id}.h\""));
    wl(w, "");
    wl(w, "int main(void) {");
    wl(w, "    /* One spare entry each: C has no zero-length arrays, calloc(0) may return NULL. */");
    wl(w, "    const size_t batch = 1;");
    wl(w, format!("    const float *inputs[{up}_INPUT_COUNT + 1];"));
    wl(w, format!("    float *outputs[{up}_OUTPUT_COUNT + 1];"));
    wl(w, format!("    size_t input_lens[{up}_INPUT_COUNT + 1], output_lens[{up}_OUTPUT_COUNT + 1], i;"));
    wl(w, "    d2nn_model *model = NULL;");
    wl(w, "    int status;");
    wl(w, format!("    for (i = 0; i < {up}_INPUT_COUNT; i++) {{ /* zeros: put your data here */"));
    wl(w, format!("        input_lens[i] = {id}_input_elements(i, batch);"));
    wl(w, "        inputs[i] = calloc(input_lens[i] + 1, sizeof(float));");
    wl(w, "    }");
    wl(w, format!("    for (i = 0; i < {up}_OUTPUT_COUNT; i++) {{"));
    wl(w, format!("        output_lens[i] = {id}_output_elements(i, batch);"));
    wl(w, "        outputs[i] = calloc(output_lens[i] + 1, sizeof(float));");
    wl(w, "    }");
    wl(w, format!("    status = {id}_create(1, &model);"));
    wl(w, "    if (status == D2NN_OK)");
    wl(w, format!("        status = d2nn_model_run(model, inputs, input_lens, {up}_INPUT_COUNT, outputs, output_lens, {up}_OUTPUT_COUNT, NULL);"));
    wl(w, "    if (status != D2NN_OK) {");
    wl(w, "        fprintf(stderr, \"d2nn error %d: %s\\n\", status, d2nn_last_error());");
    wl(w, "        d2nn_model_free(model);");
    wl(w, "        return 1;");
    wl(w, "    }");
    if !meta.outputs.is_empty() {
        wl(w, format!("    for (i = 0; i < output_lens[0]; i++) /* output 0, {} */", comment(&meta.outputs[0].name)));
        wl(w, "        printf(\"%g\\n\", outputs[0][i]);");
    }
    wl(w, "    d2nn_model_free(model);");
    wl(w, format!("    for (i = 0; i < {up}_INPUT_COUNT; i++) free((void *)inputs[i]);"));
    wl(w, format!("    for (i = 0; i < {up}_OUTPUT_COUNT; i++) free(outputs[i]);"));
    wl(w, "    return 0;");
    wl(w, "}");
    c
}

/// Appends a line.
fn wl(w: &mut String, line: impl AsRef<str>) {
    w.push_str(line.as_ref());
    w.push('\n');
}

/// `name` as a C identifier. The caller passes `[A-Za-z0-9_]+` not starting
/// with a digit; anything else is replaced rather than trusted, so the
/// header stays valid C even if that promise breaks.
fn ident(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// A C string literal holding `text`'s UTF-8 bytes (see the module docs).
fn c_string(text: &str) -> String {
    let mut s = String::from("\"");
    for &b in text.as_bytes() {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'?' => s.push_str("\\?"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\{b:03o}");
            }
        }
    }
    s.push('"');
    s
}

/// `text` made safe inside a `/* */` comment: ASCII only (other characters
/// as `\u{…}`), no line breaks, no `*/` or `/*`, no `??` (a trigraph could
/// form).
fn comment(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ' '..='~' => s.push(c),
            '\n' | '\r' | '\t' => s.push(' '),
            _ => {
                let _ = write!(s, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    // Loop: replacing one pair can form another (`*/*/` → `* /*/`).
    loop {
        let next = s.replace("*/", "* /").replace("/*", "/ *").replace("??", "? ?");
        if next == s {
            return s;
        }
        s = next;
    }
}

/// A float constant of type `float` that reads back as `v` exactly.
fn c_float(v: f32) -> String {
    if v.is_nan() {
        "((float)NAN)".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "HUGE_VALF" } else { "(-HUGE_VALF)" }.to_string()
    } else {
        // `{:?}` is the shortest text that round-trips (`0.5`, `1e-7`, `3.0`);
        // C reads both forms, and the `f` suffix keeps it a float. A negative
        // value is parenthesised so the macro is one operand wherever it goes.
        let text = format!("{v:?}f");
        if v.is_sign_negative() {
            format!("({text})")
        } else {
            text
        }
    }
}

/// A port's shape as text, the batch written `N` (`[N, 3, 16, 16]`).
fn shape_text(p: &Port) -> String {
    let dims: Vec<String> = p
        .dims
        .iter()
        .map(|d| match *d {
            Dim::Known(n) => n.to_string(),
            Dim::Batch(1) => "N".to_string(),
            Dim::Batch(k) => format!("{k}N"),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// `text` as a Markdown code span, or as escaped text if it holds a
/// backtick or a line break (which a simple code span cannot).
fn code(text: &str) -> String {
    if text.contains(['`', '\n', '\r']) {
        md(text)
    } else {
        format!("`{text}`")
    }
}

/// [`code`] for a table cell: GitHub's tables split cells on `|` even in
/// a code span unless it is escaped (and then show it unescaped).
fn cell(text: &str) -> String {
    code(text).replace('|', "\\|").replace("\\\\|", "\\|")
}

/// `text` as Markdown text: characters Markdown would interpret are
/// escaped, line breaks become spaces (a table row is one line).
fn md(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '|' | '<' | '>' | '[' | ']' | '#' => {
                s.push('\\');
                s.push(c);
            }
            '\n' | '\r' | '\t' => s.push(' '),
            _ => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2nn_runtime::abi::Knob;
    use d2nn_runtime::trace::{RegionCost, TraceSpec};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A small model with awkward names: quotes, backslashes, `?`s that
    /// would form trigraphs, comment delimiters and non-ASCII text.
    fn meta(name: &str) -> ModelMeta {
        ModelMeta {
            name: name.into(),
            inputs: vec![
                Port { name: "image \"x\\y\" ??/ é".into(), dtype: DType::F32, dims: vec![Dim::Batch(1), Dim::Known(3), Dim::Known(4), Dim::Known(4)] },
                Port { name: "scale".into(), dtype: DType::F32, dims: vec![Dim::Known(2)] },
            ],
            outputs: vec![Port { name: "logits */ /* ok".into(), dtype: DType::F32, dims: vec![Dim::Batch(2), Dim::Known(5)] }],
            knobs: vec![
                Knob { name: "threshold".into(), default: 0.5, elements: 1, used_by: "gate */ 1".into() },
                Knob { name: "neg\u{7f}".into(), default: -1e-7, elements: 3, used_by: "g2".into() },
            ],
            trace: TraceSpec {
                root: RegionCost { flops_per_sample: 10, flops_fixed: 0 },
                regions: vec![RegionCost { flops_per_sample: 5, flops_fixed: 1 }, RegionCost { flops_per_sample: 7, flops_fixed: 0 }],
                paths: Some(vec![vec![], vec![0], vec![0, 1]]),
            },
            dense: RegionCost { flops_per_sample: 22, flops_fixed: 1 },
            region_text: vec!["R0: where g > 0.5 [routed]: conv /* x */".into(), "R1: where ??= [routed]: ü".into()],
            path_text: vec!["g=0 -> regions [], 10 FLOPs per sample".into(), "g=1 -> regions [R0]".into(), "g=1, h=1 -> regions [R0, R1]".into()],
            arena_bytes_per_batch: 64,
            arena_fixed_bytes: 0,
            blocks: 2,
            samples: Dim::Batch(1),
            consts: vec![],
            kernels: vec![],
        }
    }

    /// A dense model: no knobs, regions or paths; one non-float port.
    fn dense(name: &str) -> ModelMeta {
        ModelMeta {
            name: name.into(),
            inputs: vec![Port { name: "ids".into(), dtype: DType::I64, dims: vec![Dim::Batch(1), Dim::Known(8)] }],
            outputs: vec![Port { name: "y".into(), dtype: DType::F32, dims: vec![Dim::Known(3)] }],
            knobs: vec![Knob { name: "inf".into(), default: f32::INFINITY, elements: 1, used_by: "g".into() }],
            trace: TraceSpec { root: RegionCost { flops_per_sample: 1, flops_fixed: 0 }, regions: vec![], paths: None },
            dense: RegionCost { flops_per_sample: 1, flops_fixed: 0 },
            region_text: vec![],
            path_text: vec![],
            arena_bytes_per_batch: 0,
            arena_fixed_bytes: 0,
            blocks: 0,
            samples: Dim::Batch(1),
            consts: vec![],
            kernels: vec![],
        }
    }

    /// A fresh scratch directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("d2nnc-header-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    /// Whether `tool` runs; the C tests are skipped (with a notice) without one.
    fn have(tool: &str) -> bool {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("note: `{tool}` not found on PATH; skipping its part of the test");
        }
        found
    }

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// A translation unit that includes both headers (one of them twice)
    /// and uses every declaration, so each prototype is type-checked.
    const USE_ALL: &str = r#"
#include "alpha.h"
#include "beta.h"
#include "alpha.h"

int use_all(void);
int use_all(void) {
    d2nn_model *m = 0;
    const float *in[2] = {0, 0};
    float *out[1] = {0};
    size_t in_lens[2] = {0, 0}, out_lens[1] = {0}, batch = 0, path = 0, rows = 0;
    uint64_t executed = 0, dense = 0;
    float v = ALPHA_KNOB_0_DEFAULT + ALPHA_KNOB_1_DEFAULT + BETA_KNOB_0_DEFAULT;
    int s = alpha_create(2, &m) + beta_create(0, &m) + d2nn_model_create(&alpha_compiled, 1, &m);
    const char *names[] = {ALPHA_INPUT_0_NAME, ALPHA_INPUT_1_NAME, ALPHA_OUTPUT_0_NAME, ALPHA_KNOB_0_NAME, ALPHA_KNOB_1_NAME, BETA_INPUT_0_NAME, BETA_OUTPUT_0_NAME, BETA_KNOB_0_NAME};
    s += d2nn_model_run(m, in, in_lens, ALPHA_INPUT_COUNT, out, out_lens, ALPHA_OUTPUT_COUNT, &batch);
    s += d2nn_model_set_knob(m, ALPHA_KNOB_0_NAME, v);
    s += d2nn_model_get_knob(m, ALPHA_KNOB_0_NAME, &v);
    s += d2nn_model_flops(m, &executed, &dense);
    s += d2nn_model_sample_path(m, 0, &path);
    s += d2nn_model_region_rows(m, ALPHA_REGION_COUNT - 1, &rows);
    s += (int)(alpha_input_elements(0, 3) + alpha_output_elements(0, 3) + beta_input_elements(1, 3) + beta_output_elements(0, 3));
    s += ALPHA_INPUT_0_BATCHED + ALPHA_INPUT_1_BATCHED + ALPHA_OUTPUT_0_BATCHED + BETA_INPUT_0_BATCHED + BETA_OUTPUT_0_BATCHED;
    s += (int)(ALPHA_INPUT_0_ELEMENTS_PER_SAMPLE + ALPHA_INPUT_1_ELEMENTS_PER_SAMPLE + ALPHA_OUTPUT_0_ELEMENTS_PER_SAMPLE + BETA_INPUT_0_ELEMENTS_PER_SAMPLE + BETA_OUTPUT_0_ELEMENTS_PER_SAMPLE);
    s += ALPHA_KNOB_COUNT + BETA_KNOB_COUNT + ALPHA_PATH_COUNT + BETA_PATH_COUNT + BETA_REGION_COUNT + BETA_INPUT_COUNT + BETA_OUTPUT_COUNT + D2NN_ABI_VERSION;
    s += names[0][0] + d2nn_last_error()[0];
    d2nn_model_free(m);
    return s == D2NN_OK || s == D2NN_NULL_POINTER || s == D2NN_BAD_SIZE || s == D2NN_BAD_KNOB || s == D2NN_KERNEL || s == D2NN_BAD_MODEL || s == D2NN_OUT_OF_RANGE || s == D2NN_PANIC;
}
"#;

    fn write_headers(dir: &Path) {
        std::fs::write(dir.join("alpha.h"), header(&meta("alpha model"), "alpha", "models/alpha */.onnx")).unwrap();
        std::fs::write(dir.join("beta.h"), header(&dense("beta"), "beta", "beta.onnx")).unwrap();
        std::fs::write(dir.join("use_all.c"), USE_ALL).unwrap();
        std::fs::copy(dir.join("use_all.c"), dir.join("use_all.cpp")).unwrap();
    }

    #[test]
    fn headers_compile_as_c_and_cpp() {
        let dir = scratch("compile");
        write_headers(&dir);
        if have("cc") {
            run(Command::new("cc").current_dir(&dir).args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "use_all.c"]));
        }
        if have("c++") {
            run(Command::new("c++").current_dir(&dir).args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "use_all.cpp"]));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The escaped strings and float constants hold exactly the model's
    /// names and defaults: a program prints them and the test reads them back.
    #[test]
    fn strings_and_defaults_survive_escaping() {
        if !have("cc") {
            return;
        }
        let dir = scratch("strings");
        write_headers(&dir);
        let main = r#"
#include <stdio.h>
#include "alpha.h"
#include "beta.h"
int main(void) {
    printf("%s\n%s\n%s\n%s\n%s\n", ALPHA_INPUT_0_NAME, ALPHA_INPUT_1_NAME, ALPHA_OUTPUT_0_NAME, ALPHA_KNOB_0_NAME, ALPHA_KNOB_1_NAME);
    printf("%.9g\n%.9g\n%.9g\n", (double)ALPHA_KNOB_0_DEFAULT, (double)ALPHA_KNOB_1_DEFAULT, (double)BETA_KNOB_0_DEFAULT);
    printf("%lu %lu %lu\n", (unsigned long)alpha_input_elements(0, 3), (unsigned long)alpha_input_elements(1, 3), (unsigned long)alpha_output_elements(0, 3));
    printf("%lu %lu %d %d\n", (unsigned long)alpha_input_elements(2, 3), (unsigned long)beta_input_elements(0, 2), ALPHA_REGION_COUNT, ALPHA_PATH_COUNT);
    return 0;
}
"#;
        std::fs::write(dir.join("main.c"), main).unwrap();
        run(Command::new("cc").current_dir(&dir).args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "main.c", "-o", "main"]));
        let out = run(&mut Command::new(dir.join("main")));
        let m = meta("alpha");
        let expected = format!(
            "{}\n{}\n{}\n{}\n{}\n0.5\n-1.00000001e-07\ninf\n144 2 30\n0 16 2 3\n",
            m.inputs[0].name, m.inputs[1].name, m.outputs[0].name, m.knobs[0].name, m.knobs[1].name
        );
        assert_eq!(out, expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The README's C program compiles against the header it describes.
    #[test]
    fn readme_example_compiles() {
        let text = readme(&meta("alpha"), "alpha", "alpha.onnx");
        assert!(text.contains("-ld2nn_runtime"), "{text}");
        assert!(text.contains("cargo build --release -p d2nn-runtime-c"), "{text}");
        assert!(text.contains("| input 0 | `image \"x\\y\" ??/ é` | f32 | `[N, 3, 4, 4]` | 48 | yes |"), "{text}");
        assert!(text.contains("| 0 | `threshold` | 0.5 | `gate */ 1` |"), "{text}");
        assert!(text.contains("- path 2: `g=1, h=1 -> regions [R0, R1]`"), "{text}");
        let example = text.split("```c\n").nth(1).and_then(|s| s.split("```").next()).expect("a C block");
        if !have("cc") {
            return;
        }
        let dir = scratch("readme");
        write_headers(&dir);
        std::fs::write(dir.join("main.c"), example).unwrap();
        run(Command::new("cc").current_dir(&dir).args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "main.c"]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn escaping() {
        assert_eq!(c_string("a\"b\\c??/d\u{e9}\n1"), "\"a\\\"b\\\\c\\?\\?/d\\303\\251\\0121\"");
        assert_eq!(comment("x */ y /* z ?? \u{e9}\n"), "x * / y / * z ? ? \\u{e9} ");
        assert_eq!(comment("*/*/"), "* / * /");
        assert_eq!(c_float(0.5), "0.5f");
        assert_eq!(c_float(3.0), "3.0f");
        assert_eq!(c_float(-2.5), "(-2.5f)");
        assert_eq!(ident("9lives-x"), "_9lives_x");
        assert_eq!(md("a|b_c"), "a\\|b\\_c");
        assert_eq!(cell("a|b"), "`a\\|b`");
        assert_eq!(cell("a`|b"), "a\\`\\|b");
        assert_eq!(code("a|b"), "`a|b`");
    }

    #[test]
    fn header_lists_the_model() {
        let h = header(&meta("alpha"), "alpha", "alpha.onnx");
        for needle in [
            "#ifndef D2NN_MODEL_ALPHA_H",
            "#ifndef D2NN_RUNTIME_API",
            "extern const d2nn_compiled alpha_compiled;",
            "#define ALPHA_INPUT_COUNT 2",
            "#define ALPHA_OUTPUT_0_ELEMENTS_PER_SAMPLE 10u",
            "#define ALPHA_INPUT_1_BATCHED 0",
            "#define ALPHA_KNOB_0_NAME \"threshold\"",
            "#define ALPHA_REGION_COUNT 2",
            "#define ALPHA_PATH_COUNT 3",
            " *   path 2: g=1, h=1 -> regions [R0, R1]",
            "static inline int alpha_create(size_t threads, d2nn_model **out) {",
            "D2NN_PANIC = 7",
        ] {
            assert!(h.contains(needle), "missing {needle:?} in:\n{h}");
        }
        let d = header(&dense("beta"), "beta", "beta.onnx");
        assert!(d.contains("returns D2NN_BAD_MODEL for this one"), "{d}");
        assert!(d.contains("#include <math.h>"), "{d}");
    }
}
