/* bad_input.c: `c-app --bad-input`. Calls every function of the d2nn C API
 * with bad arguments — null pointers, wrong lengths and counts, unknown
 * knobs, non-finite knob values, out-of-range samples and regions, trace
 * queries before the first run, damaged compiled records — and checks the
 * exact status code of each call, that d2nn_last_error() then says
 * something (and names the culprit where the message must), and that the
 * model still works afterwards. Each check prints one line; the function
 * returns the number that failed. */
#include "model_select.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

/* Checks that a call returned `want`; for a failure also that the error
 * message is non-empty and, if `needle` is given, contains it (a name or a
 * word the message must carry, so a stale message from an earlier call
 * does not pass). */
static void expect(const char *what, int got, int want, const char *needle) {
    const char *message = d2nn_last_error();
    if (got != want) {
        printf("FAIL %s: status %d, expected %d (last error: %s)\n", what, got, want, message != NULL ? message : "(null)");
        failures++;
    } else if (want != D2NN_OK && (message == NULL || message[0] == '\0')) {
        printf("FAIL %s: status %d as expected, but d2nn_last_error() is empty\n", what, got);
        failures++;
    } else if (want != D2NN_OK && needle != NULL && strstr(message, needle) == NULL) {
        printf("FAIL %s: status %d as expected, but the message does not mention \"%s\": %s\n", what, got, needle, message);
        failures++;
    } else {
        printf("ok   %s: %d%s%s\n", what, got, want != D2NN_OK ? ", " : "", want != D2NN_OK ? message : "");
    }
}

/* Checks a condition that is not a status code. */
static void check(const char *what, int ok) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    failures += !ok;
}

/* A record with the layout of d2nn_runtime::abi::Compiled, which the
 * header keeps opaque: lets the test hand the runtime damaged models. */
struct fake_compiled {
    uint32_t abi_version;
    uint32_t reserved;
    const unsigned char *meta;
    size_t meta_len;
    const unsigned char *weights;
    size_t weights_len;
    int (*run)(const void *frame);
};

/* Never called: the records it appears in are refused before any run. */
static int fake_run(const void *frame) {
    (void)frame;
    return 0;
}

static const unsigned char garbage[4] = {0xff, 0xff, 0xff, 0xff};

/* Damaged records: another ABI version, no code, undecodable metadata. */
static void check_damaged_records(void) {
    struct fake_compiled version = {0xffff, 0, garbage, sizeof garbage, garbage, 0, fake_run};
    struct fake_compiled no_code = {D2NN_ABI_VERSION, 0, garbage, sizeof garbage, garbage, 0, NULL};
    struct fake_compiled bad_meta = {D2NN_ABI_VERSION, 0, garbage, sizeof garbage, garbage, 0, fake_run};
    d2nn_model *m = NULL;
    expect("create: record of another ABI version", d2nn_model_create((const d2nn_compiled *)&version, 1, &m), D2NN_BAD_MODEL, "version");
    expect("create: record without code", d2nn_model_create((const d2nn_compiled *)&no_code, 1, &m), D2NN_BAD_MODEL, "code");
    expect("create: undecodable metadata", d2nn_model_create((const d2nn_compiled *)&bad_meta, 1, &m), D2NN_BAD_MODEL, "decode");
    check("create: *out untouched on failure", m == NULL);
}

/* Buffers for one run: inputs for batch `in_batch`, outputs for `out_batch`,
 * one spare pointer and length each so counts one too high stay in bounds. */
struct buffers {
    const float *inputs[MODEL_INPUT_COUNT + 1];
    float *outputs[MODEL_OUTPUT_COUNT + 1];
    size_t input_lens[MODEL_INPUT_COUNT + 1];
    size_t output_lens[MODEL_OUTPUT_COUNT + 1];
};

/* Zero-filled buffers; returns 0, or -1 when out of memory. */
static int alloc_buffers(struct buffers *b, size_t in_batch, size_t out_batch) {
    size_t i;
    memset(b, 0, sizeof *b);
    for (i = 0; i <= MODEL_INPUT_COUNT; i++) {
        b->input_lens[i] = i < MODEL_INPUT_COUNT ? MODEL_INPUT_ELEMENTS(i, in_batch) : 1;
        /* +1 float: lengths one too long stay readable. */
        b->inputs[i] = calloc(b->input_lens[i] + 1, sizeof(float));
        if (b->inputs[i] == NULL)
            return -1;
    }
    for (i = 0; i <= MODEL_OUTPUT_COUNT; i++) {
        b->output_lens[i] = i < MODEL_OUTPUT_COUNT ? MODEL_OUTPUT_ELEMENTS(i, out_batch) : 1;
        b->outputs[i] = calloc(b->output_lens[i] + 1, sizeof(float));
        if (b->outputs[i] == NULL)
            return -1;
    }
    return 0;
}

static void free_buffers(struct buffers *b) {
    size_t i;
    for (i = 0; i <= MODEL_INPUT_COUNT; i++)
        free((void *)b->inputs[i]);
    for (i = 0; i <= MODEL_OUTPUT_COUNT; i++)
        free(b->outputs[i]);
}

static int run(d2nn_model *m, const struct buffers *b, size_t *batch) {
    return d2nn_model_run(m, b->inputs, b->input_lens, MODEL_INPUT_COUNT, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT, batch);
}

/* The trace queries of a model that has not run successfully yet. */
static void check_not_run(d2nn_model *m, const char *when) {
    char what[160];
    uint64_t executed, dense;
    size_t path, rows;
    snprintf(what, sizeof what, "flops %s", when);
    expect(what, d2nn_model_flops(m, &executed, &dense), D2NN_OUT_OF_RANGE, "not run");
    snprintf(what, sizeof what, "sample_path %s", when);
    expect(what, d2nn_model_sample_path(m, 0, &path), D2NN_OUT_OF_RANGE, "not run");
    snprintf(what, sizeof what, "region_rows %s", when);
    expect(what, d2nn_model_region_rows(m, 0, &rows), D2NN_OUT_OF_RANGE, "not run");
}

/* Null arguments of every function. */
static void check_null_pointers(d2nn_model *m, const struct buffers *b) {
    uint64_t executed, dense;
    size_t path, rows, batch;
    float value;
    d2nn_model *out = NULL;
    expect("create: null compiled", d2nn_model_create(NULL, 1, &out), D2NN_NULL_POINTER, "compiled");
    expect("create: null out", d2nn_model_create(&MODEL_COMPILED, 1, NULL), D2NN_NULL_POINTER, "out");
    check("create: *out untouched on failure", out == NULL);
    expect("run: null model", d2nn_model_run(NULL, b->inputs, b->input_lens, MODEL_INPUT_COUNT, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT, &batch), D2NN_NULL_POINTER, "model");
    expect("run: null inputs", d2nn_model_run(m, NULL, b->input_lens, MODEL_INPUT_COUNT, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT, &batch), D2NN_NULL_POINTER, "inputs");
    expect("run: null input_lens", d2nn_model_run(m, b->inputs, NULL, MODEL_INPUT_COUNT, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT, &batch), D2NN_NULL_POINTER, "input_lens");
    expect("run: null outputs", d2nn_model_run(m, b->inputs, b->input_lens, MODEL_INPUT_COUNT, NULL, b->output_lens, MODEL_OUTPUT_COUNT, &batch), D2NN_NULL_POINTER, "outputs");
    expect("run: null output_lens", d2nn_model_run(m, b->inputs, b->input_lens, MODEL_INPUT_COUNT, b->outputs, NULL, MODEL_OUTPUT_COUNT, &batch), D2NN_NULL_POINTER, "output_lens");
    {
        /* One null buffer among valid ones. */
        struct buffers copy = *b;
        copy.inputs[0] = NULL;
        expect("run: inputs[0] null with a non-zero length", run(m, &copy, &batch), D2NN_NULL_POINTER, "inputs[0]");
        copy = *b;
        copy.outputs[0] = NULL;
        expect("run: outputs[0] null with a non-zero length", run(m, &copy, &batch), D2NN_NULL_POINTER, "outputs[0]");
    }
    expect("set_knob: null model", d2nn_model_set_knob(NULL, "x", 0.5f), D2NN_NULL_POINTER, "model");
    expect("set_knob: null name", d2nn_model_set_knob(m, NULL, 0.5f), D2NN_NULL_POINTER, "name");
    expect("get_knob: null model", d2nn_model_get_knob(NULL, "x", &value), D2NN_NULL_POINTER, "model");
    expect("get_knob: null name", d2nn_model_get_knob(m, NULL, &value), D2NN_NULL_POINTER, "name");
    expect("flops: null model", d2nn_model_flops(NULL, &executed, &dense), D2NN_NULL_POINTER, "model");
    expect("sample_path: null model", d2nn_model_sample_path(NULL, 0, &path), D2NN_NULL_POINTER, "model");
    expect("region_rows: null model", d2nn_model_region_rows(NULL, 0, &rows), D2NN_NULL_POINTER, "model");
    d2nn_model_free(NULL);
    check("free: null is ignored", 1);
}

/* Wrong counts and lengths; nothing must run. */
static void check_sizes(d2nn_model *m, const struct buffers *b) {
    struct buffers copy;
    size_t batch = 12345;
    expect("run: one input too few", d2nn_model_run(m, b->inputs, b->input_lens, MODEL_INPUT_COUNT - 1, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT, &batch), D2NN_BAD_SIZE, "inputs");
    expect("run: one input too many", d2nn_model_run(m, b->inputs, b->input_lens, MODEL_INPUT_COUNT + 1, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT, &batch), D2NN_BAD_SIZE, "inputs");
    expect("run: one output too few", d2nn_model_run(m, b->inputs, b->input_lens, MODEL_INPUT_COUNT, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT - 1, &batch), D2NN_BAD_SIZE, "outputs");
    expect("run: one output too many", d2nn_model_run(m, b->inputs, b->input_lens, MODEL_INPUT_COUNT, b->outputs, b->output_lens, MODEL_OUTPUT_COUNT + 1, &batch), D2NN_BAD_SIZE, "outputs");
    copy = *b;
    copy.input_lens[0] += 1;
    expect("run: input 0 one float too long", run(m, &copy, &batch), D2NN_BAD_SIZE, NULL);
    copy = *b;
    copy.input_lens[0] -= 1;
    expect("run: input 0 one float too short", run(m, &copy, &batch), D2NN_BAD_SIZE, NULL);
    copy = *b;
    copy.output_lens[0] += 1;
    expect("run: output 0 one float too long", run(m, &copy, &batch), D2NN_BAD_SIZE, MODEL_OUTPUT_0_NAME);
    copy = *b;
    copy.output_lens[0] -= 1;
    expect("run: output 0 one float too short", run(m, &copy, &batch), D2NN_BAD_SIZE, MODEL_OUTPUT_0_NAME);
    check("run: *batch untouched by refused runs", batch == 12345);
}

/* The outputs sized for another batch than the inputs. */
static void check_batch_mismatch(d2nn_model *m) {
    struct buffers b;
    size_t batch;
    if (!MODEL_INPUT_0_BATCHED || !MODEL_OUTPUT_0_BATCHED) {
        printf("skip run with outputs for another batch: input 0 or output 0 does not scale with the batch\n");
        return;
    }
    if (alloc_buffers(&b, 3, 2) != 0) {
        check("allocate buffers", 0);
    } else {
        expect("run: inputs at batch 3, outputs at batch 2", run(m, &b, &batch), D2NN_BAD_SIZE, MODEL_OUTPUT_0_NAME);
    }
    free_buffers(&b);
}

/* Knob names and values. */
static void check_knobs(d2nn_model *m) {
    float value = 0;
    expect("set_knob: unknown name", d2nn_model_set_knob(m, "no_such_knob", 0.5f), D2NN_BAD_KNOB, "no_such_knob");
    expect("get_knob: unknown name", d2nn_model_get_knob(m, "no_such_knob_either", &value), D2NN_BAD_KNOB, "no_such_knob_either");
    expect("set_knob: name that is not UTF-8", d2nn_model_set_knob(m, "\xff\xfe", 0.5f), D2NN_BAD_KNOB, "UTF-8");
    expect("set_knob: empty name", d2nn_model_set_knob(m, "", 0.5f), D2NN_BAD_KNOB, NULL);
#if MODEL_KNOB_COUNT > 0
    expect("set_knob: NaN", d2nn_model_set_knob(m, MODEL_KNOB_0_NAME, NAN), D2NN_BAD_KNOB, "finite");
    expect("set_knob: +infinity", d2nn_model_set_knob(m, MODEL_KNOB_0_NAME, INFINITY), D2NN_BAD_KNOB, "finite");
    expect("set_knob: -infinity", d2nn_model_set_knob(m, MODEL_KNOB_0_NAME, -INFINITY), D2NN_BAD_KNOB, "finite");
    expect("get_knob: null value", d2nn_model_get_knob(m, MODEL_KNOB_0_NAME, NULL), D2NN_NULL_POINTER, "value");
    expect("get_knob: knob 0", d2nn_model_get_knob(m, MODEL_KNOB_0_NAME, &value), D2NN_OK, NULL);
    check("get_knob: refused values left the default", value == MODEL_KNOB_0_DEFAULT);
    expect("set_knob: knob 0 to its default", d2nn_model_set_knob(m, MODEL_KNOB_0_NAME, MODEL_KNOB_0_DEFAULT), D2NN_OK, NULL);
#else
    printf("skip non-finite knob values: the model has no knobs\n");
#endif
}

/* The trace after a successful run at `batch`. */
static void check_trace(d2nn_model *m, size_t batch) {
    uint64_t executed = 0, dense = 0;
    size_t path = 0, rows = 0;
    expect("flops: null executed", d2nn_model_flops(m, NULL, &dense), D2NN_NULL_POINTER, "executed");
    expect("flops: null dense", d2nn_model_flops(m, &executed, NULL), D2NN_NULL_POINTER, "dense");
    expect("flops", d2nn_model_flops(m, &executed, &dense), D2NN_OK, NULL);
    check("flops: 0 < executed <= dense", executed > 0 && executed <= dense);
    expect("sample_path: sample == batch", d2nn_model_sample_path(m, batch, &path), D2NN_OUT_OF_RANGE, "sample");
    expect("sample_path: sample SIZE_MAX", d2nn_model_sample_path(m, SIZE_MAX, &path), D2NN_OUT_OF_RANGE, "sample");
    expect("sample_path: null path", d2nn_model_sample_path(m, 0, NULL), D2NN_NULL_POINTER, "path");
#if MODEL_PATH_COUNT > 0
    expect("sample_path: last sample", d2nn_model_sample_path(m, batch - 1, &path), D2NN_OK, NULL);
    check("sample_path: a listed path", path < MODEL_PATH_COUNT);
#else
    expect("sample_path: the model lists no paths", d2nn_model_sample_path(m, 0, &path), D2NN_OUT_OF_RANGE, NULL);
#endif
    expect("region_rows: region == REGION_COUNT", d2nn_model_region_rows(m, MODEL_REGION_COUNT, &rows), D2NN_OUT_OF_RANGE, "region");
    expect("region_rows: region SIZE_MAX", d2nn_model_region_rows(m, SIZE_MAX, &rows), D2NN_OUT_OF_RANGE, "region");
    expect("region_rows: null rows", d2nn_model_region_rows(m, 0, NULL), D2NN_NULL_POINTER, "rows");
#if MODEL_REGION_COUNT > 0
    expect("region_rows: last region", d2nn_model_region_rows(m, MODEL_REGION_COUNT - 1, &rows), D2NN_OK, NULL);
    check("region_rows: at most the batch", rows <= batch);
#endif
}

int bad_input_checks(size_t threads) {
    struct buffers b;
    d2nn_model *m = NULL;
    size_t batch = 0, expected_batch = MODEL_INPUT_0_BATCHED ? 2 : 1;
    uint64_t executed = 0, dense = 0;
    failures = 0;
    printf("model %s: checking the C API's error handling\n", CAPP_STR(MODEL));
    check("d2nn_last_error() is never null", d2nn_last_error() != NULL);
    check_damaged_records();
    expect("create with 0 threads (counts as 1)", MODEL_CREATE(0, &m), D2NN_OK, NULL);
    d2nn_model_free(m);
    m = NULL;
    expect("create", MODEL_CREATE(threads, &m), D2NN_OK, NULL);
    if (m == NULL)
        return failures + 1;
    if (alloc_buffers(&b, 2, 2) != 0) {
        check("allocate buffers", 0);
        free_buffers(&b);
        d2nn_model_free(m);
        return failures;
    }
    check_not_run(m, "before the first run");
    check_null_pointers(m, &b);
    check_sizes(m, &b);
    check_batch_mismatch(m);
    check_knobs(m);
    check_not_run(m, "after refused runs only");
    expect("run at batch 2", run(m, &b, &batch), D2NN_OK, NULL);
    check("run: *batch is the batch", batch == expected_batch);
    expect("run without a batch pointer", run(m, &b, NULL), D2NN_OK, NULL);
    check_trace(m, batch);
    /* A run refused for its arguments leaves the last run's trace. */
    b.input_lens[0] += 1;
    expect("run: refused after a successful run", run(m, &b, &batch), D2NN_BAD_SIZE, NULL);
    b.input_lens[0] -= 1;
    expect("flops: still the last successful run's", d2nn_model_flops(m, &executed, &dense), D2NN_OK, NULL);
    expect("run again after the errors", run(m, &b, &batch), D2NN_OK, NULL);
    free_buffers(&b);
    d2nn_model_free(m);
    return failures;
}
