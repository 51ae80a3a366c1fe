/* main.c: a C program that runs a model compiled by `d2nnc compile --emit
 * object` (linked in as MODEL.o with libd2nn_runtime.a) on a .npy batch.
 *
 *   c-app [--threads N] [--knob NAME=VALUE]... [--output OUT.npy]
 *         [--atol A] [--rtol R] INPUT.npy [EXPECTED.npy]
 *   c-app [--threads N] --bad-input
 *
 * It prints, per sample, the argmax of the first output and the path the
 * sample took, then the rows each guarded region ran on and the FLOPs
 * executed against the dense model's. With EXPECTED.npy it compares the
 * first output with it (|got - expected| <= atol + rtol * |expected|,
 * 1e-4 and 1e-4 by default) and exits 1 on a mismatch. --output writes the
 * first output as [batch, elements per sample]. --bad-input runs
 * bad_input.c's checks of the API's error handling instead.
 *
 * Exit status: 0 success, 1 failure (mismatch, model error, failed check),
 * 2 bad usage. See model_select.h for how the model is chosen at build time. */
#include "model_select.h"
#include "npy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KNOBS 32

struct options {
    size_t threads;
    const char *knob_names[MAX_KNOBS];
    float knob_values[MAX_KNOBS];
    size_t knobs;
    const char *output;
    double atol, rtol;
    const char *input, *expected;
    int bad_input;
};

static void usage(void) {
    fprintf(stderr,
            "usage: c-app [--threads N] [--knob NAME=VALUE]... [--output OUT.npy] [--atol A] [--rtol R] INPUT.npy [EXPECTED.npy]\n"
            "       c-app [--threads N] --bad-input\n"
            "model: %s (%d input(s), %d output(s), %d knob(s), %d region(s), %d path(s))\n",
            CAPP_STR(MODEL), (int)MODEL_INPUT_COUNT, (int)MODEL_OUTPUT_COUNT, (int)MODEL_KNOB_COUNT, (int)MODEL_REGION_COUNT, (int)MODEL_PATH_COUNT);
}

/* Parses a whole string as a finite double; returns 0 or -1. */
static int parse_number(const char *text, double *out) {
    char *end;
    errno = 0;
    *out = strtod(text, &end);
    return end == text || *end != '\0' || errno != 0 || !isfinite(*out) ? -1 : 0;
}

/* Returns 0, or 2 (the usage exit status) after printing why. */
static int parse_args(int argc, char **argv, struct options *o) {
    int i;
    double value;
    memset(o, 0, sizeof *o);
    o->threads = 1;
    o->atol = 1e-4;
    o->rtol = 1e-4;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(a, "--bad-input") == 0) {
            o->bad_input = 1;
        } else if (strcmp(a, "--threads") == 0 && has_value) {
            if (parse_number(argv[++i], &value) != 0 || value < 1 || value > 1024 || value != floor(value)) {
                fprintf(stderr, "c-app: --threads wants a whole number from 1 to 1024, got %s\n", argv[i]);
                return 2;
            }
            o->threads = (size_t)value;
        } else if (strcmp(a, "--knob") == 0 && has_value) {
            char *eq = strchr(argv[++i], '=');
            if (eq == NULL || o->knobs == MAX_KNOBS || parse_number(eq + 1, &value) != 0) {
                fprintf(stderr, "c-app: --knob wants NAME=VALUE with a finite number (at most %d knobs), got %s\n", MAX_KNOBS, argv[i]);
                return 2;
            }
            *eq = '\0';
            o->knob_names[o->knobs] = argv[i];
            o->knob_values[o->knobs++] = (float)value;
        } else if (strcmp(a, "--output") == 0 && has_value) {
            o->output = argv[++i];
        } else if ((strcmp(a, "--atol") == 0 || strcmp(a, "--rtol") == 0) && has_value) {
            if (parse_number(argv[++i], &value) != 0 || value < 0) {
                fprintf(stderr, "c-app: %s wants a number >= 0, got %s\n", a, argv[i]);
                return 2;
            }
            *(a[2] == 'a' ? &o->atol : &o->rtol) = value;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "c-app: unknown option or missing value: %s\n", a);
            usage();
            return 2;
        } else if (o->input == NULL) {
            o->input = a;
        } else if (o->expected == NULL) {
            o->expected = a;
        } else {
            fprintf(stderr, "c-app: unexpected argument %s\n", a);
            usage();
            return 2;
        }
    }
    if (!o->bad_input && o->input == NULL) {
        usage();
        return 2;
    }
    return 0;
}

/* The index of the largest of n floats (the first one on ties; NaN never wins). */
static size_t argmax(const float *x, size_t n) {
    size_t i, best = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Prints the model's error and returns 1. */
static int fail(const char *what, int status) {
    fprintf(stderr, "c-app: %s failed with status %d: %s\n", what, status, d2nn_last_error());
    return 1;
}

/* Compares output 0 with the expected array; returns 0 if it matches. */
static int compare(const float *got, size_t n, const npy_array *expected, double atol, double rtol) {
    size_t i, bad = 0, worst = 0;
    double max_diff = 0;
    if (expected->count != n) {
        fprintf(stderr, "c-app: the expected array holds %zu floats, output 0 %zu\n", expected->count, n);
        return 1;
    }
    for (i = 0; i < n; i++) {
        double e = expected->data[i], diff = fabs((double)got[i] - e);
        /* A NaN difference counts as a mismatch: !(diff <= tol). */
        if (!(diff <= atol + rtol * fabs(e))) {
            if (bad == 0)
                worst = i;
            bad++;
        }
        if (diff > max_diff || diff != diff)
            max_diff = diff;
    }
    printf("compare: max |diff| %.3g over %zu floats (atol %g, rtol %g): %s\n", max_diff, n, atol, rtol, bad == 0 ? "match" : "MISMATCH");
    if (bad != 0)
        fprintf(stderr, "c-app: %zu of %zu floats differ; first at %zu: got %.9g, expected %.9g\n", bad, n, worst, (double)got[worst], (double)expected->data[worst]);
    return bad != 0;
}

/* Runs the model on the input file and reports; returns the exit status. */
static int run(const struct options *o) {
    char err[512];
    npy_array input, expected;
    d2nn_model *model = NULL;
    const float *inputs[1];
    float *outputs[MODEL_OUTPUT_COUNT];
    size_t input_lens[1], output_lens[MODEL_OUTPUT_COUNT];
    /* In variables: a loop bound of 0 written as a literal draws -Wtype-limits. */
    const size_t regions = MODEL_REGION_COUNT, paths = MODEL_PATH_COUNT;
    size_t batch = 1, ran = 0, i, r, per_sample;
    uint64_t executed = 0, dense = 0;
    int status, result = 1;
    memset(outputs, 0, sizeof outputs);
    memset(&expected, 0, sizeof expected);
    if (MODEL_INPUT_COUNT != 1) {
        fprintf(stderr, "c-app: the model has %d inputs; this program feeds exactly one\n", (int)MODEL_INPUT_COUNT);
        return 1;
    }
    if (npy_read_f32(o->input, &input, err, sizeof err) != 0) {
        fprintf(stderr, "c-app: %s\n", err);
        return 1;
    }
    if (o->expected != NULL && npy_read_f32(o->expected, &expected, err, sizeof err) != 0) {
        fprintf(stderr, "c-app: %s\n", err);
        goto done;
    }
    /* The batch is the input's length over the per-sample length, as the
     * runtime computes it; the outputs are sized for it before the run. */
    per_sample = MODEL_INPUT_0_ELEMENTS_PER_SAMPLE;
    if (MODEL_INPUT_0_BATCHED) {
        if (per_sample == 0 || input.count % per_sample != 0) {
            fprintf(stderr, "c-app: %s holds %zu floats, not a whole number of samples of %zu (input `%s`)\n", o->input, input.count, per_sample, MODEL_INPUT_0_NAME);
            goto done;
        }
        batch = input.count / per_sample;
    }
    inputs[0] = input.data;
    input_lens[0] = input.count;
    for (i = 0; i < MODEL_OUTPUT_COUNT; i++) {
        output_lens[i] = MODEL_OUTPUT_ELEMENTS(i, batch);
        /* One spare float: malloc(0) may return NULL, which the runtime
         * accepts only together with a length of 0 (and that is the length). */
        outputs[i] = malloc((output_lens[i] + 1) * sizeof(float));
        if (outputs[i] == NULL) {
            fprintf(stderr, "c-app: out of memory\n");
            goto done;
        }
    }
    status = MODEL_CREATE(o->threads, &model);
    if (status != D2NN_OK) {
        result = fail("d2nn_model_create", status);
        goto done;
    }
    for (i = 0; i < o->knobs; i++) {
        status = d2nn_model_set_knob(model, o->knob_names[i], o->knob_values[i]);
        if (status != D2NN_OK) {
            result = fail("d2nn_model_set_knob", status);
            goto done;
        }
    }
    status = d2nn_model_run(model, inputs, input_lens, 1, outputs, output_lens, MODEL_OUTPUT_COUNT, &ran);
    if (status != D2NN_OK) {
        result = fail("d2nn_model_run", status);
        goto done;
    }
    if (ran != batch) {
        fprintf(stderr, "c-app: the runtime ran batch %zu, expected %zu\n", ran, batch);
        goto done;
    }
    printf("model %s: batch %zu, %zu thread(s)\n", CAPP_STR(MODEL), batch, o->threads);
    /* A batched output has one row per sample; an unbatched one is one row. */
    per_sample = MODEL_OUTPUT_0_BATCHED ? MODEL_OUTPUT_0_ELEMENTS_PER_SAMPLE : output_lens[0];
    for (i = 0; i < (MODEL_OUTPUT_0_BATCHED ? batch : 1); i++) {
        size_t path;
        printf("sample %zu: class %zu", i, per_sample == 0 ? (size_t)0 : argmax(outputs[0] + i * per_sample, per_sample));
        status = d2nn_model_sample_path(model, i, &path);
        if (status == D2NN_OK) {
            printf(", path %zu\n", path);
        } else if (status == D2NN_OUT_OF_RANGE && paths == 0) {
            /* The model lists no paths (dense, or too many to list). */
            printf(", path -\n");
        } else {
            printf("\n");
            result = fail("d2nn_model_sample_path", status);
            goto done;
        }
    }
    for (r = 0; r < regions; r++) {
        size_t rows;
        status = d2nn_model_region_rows(model, r, &rows);
        if (status != D2NN_OK) {
            result = fail("d2nn_model_region_rows", status);
            goto done;
        }
        printf("region %zu: %zu of %zu samples\n", r, rows, batch);
    }
    status = d2nn_model_flops(model, &executed, &dense);
    if (status != D2NN_OK) {
        result = fail("d2nn_model_flops", status);
        goto done;
    }
    printf("FLOPs: %llu executed of %llu dense (%.1f%% saved)\n", (unsigned long long)executed, (unsigned long long)dense, dense == 0 ? 0.0 : 100.0 * (1.0 - (double)executed / (double)dense));
    if (o->output != NULL) {
        size_t shape[2];
        shape[0] = MODEL_OUTPUT_0_BATCHED ? batch : 1;
        shape[1] = per_sample;
        if (npy_write_f32(o->output, outputs[0], shape, 2, err, sizeof err) != 0) {
            fprintf(stderr, "c-app: %s\n", err);
            goto done;
        }
        printf("wrote output 0 (`%s`) to %s\n", MODEL_OUTPUT_0_NAME, o->output);
    }
    result = o->expected != NULL ? compare(outputs[0], output_lens[0], &expected, o->atol, o->rtol) : 0;
done:
    d2nn_model_free(model);
    for (i = 0; i < MODEL_OUTPUT_COUNT; i++)
        free(outputs[i]);
    npy_free(&input);
    npy_free(&expected);
    return result;
}

int main(int argc, char **argv) {
    struct options o;
    int status = parse_args(argc, argv, &o);
    if (status != 0)
        return status;
    if (o.bad_input) {
        int failures = bad_input_checks(o.threads);
        printf("bad-input checks: %d failure(s)\n", failures);
        return failures == 0 ? 0 : 1;
    }
    return run(&o);
}
