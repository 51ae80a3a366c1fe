/* model_select.h: includes the header of the model this program is built
 * for and gives its declarations model-independent names, so main.c and
 * bad_input.c work with any model `d2nnc compile --emit object` wrote.
 *
 * Build with the model's name (the --name given to d2nnc) twice, as it is
 * and in upper case, because the header's macros are upper case and the
 * preprocessor cannot change case:
 *
 *     cc -DMODEL=skip_chain -DMODEL_UPPER=SKIP_CHAIN -Ipath/to/model/dir ...
 *
 * The header is MODEL.h, found on the include path; -DMODEL_HEADER='"x.h"'
 * names another. */
#ifndef C_APP_MODEL_SELECT_H
#define C_APP_MODEL_SELECT_H

#if !defined(MODEL) || !defined(MODEL_UPPER)
#error "build with -DMODEL=<name> -DMODEL_UPPER=<NAME>, e.g. -DMODEL=skip_chain -DMODEL_UPPER=SKIP_CHAIN"
#endif

#define CAPP_STR2(x) #x
#define CAPP_STR(x) CAPP_STR2(x)
#define CAPP_CAT2(a, b) a##b
#define CAPP_CAT(a, b) CAPP_CAT2(a, b)

#ifndef MODEL_HEADER
#define MODEL_HEADER CAPP_STR(MODEL.h)
#endif
#include MODEL_HEADER

/* The model's functions and record. */
#define MODEL_COMPILED CAPP_CAT(MODEL, _compiled)
#define MODEL_CREATE CAPP_CAT(MODEL, _create)
#define MODEL_INPUT_ELEMENTS CAPP_CAT(MODEL, _input_elements)
#define MODEL_OUTPUT_ELEMENTS CAPP_CAT(MODEL, _output_elements)

/* The model's description (see the header for their meaning). */
#define MODEL_INPUT_COUNT CAPP_CAT(MODEL_UPPER, _INPUT_COUNT)
#define MODEL_OUTPUT_COUNT CAPP_CAT(MODEL_UPPER, _OUTPUT_COUNT)
#define MODEL_KNOB_COUNT CAPP_CAT(MODEL_UPPER, _KNOB_COUNT)
#define MODEL_REGION_COUNT CAPP_CAT(MODEL_UPPER, _REGION_COUNT)
#define MODEL_PATH_COUNT CAPP_CAT(MODEL_UPPER, _PATH_COUNT)
#define MODEL_INPUT_0_NAME CAPP_CAT(MODEL_UPPER, _INPUT_0_NAME)
#define MODEL_INPUT_0_BATCHED CAPP_CAT(MODEL_UPPER, _INPUT_0_BATCHED)
#define MODEL_INPUT_0_ELEMENTS_PER_SAMPLE CAPP_CAT(MODEL_UPPER, _INPUT_0_ELEMENTS_PER_SAMPLE)
#define MODEL_OUTPUT_0_NAME CAPP_CAT(MODEL_UPPER, _OUTPUT_0_NAME)
#define MODEL_OUTPUT_0_BATCHED CAPP_CAT(MODEL_UPPER, _OUTPUT_0_BATCHED)
#define MODEL_OUTPUT_0_ELEMENTS_PER_SAMPLE CAPP_CAT(MODEL_UPPER, _OUTPUT_0_ELEMENTS_PER_SAMPLE)
#define MODEL_KNOB_0_NAME CAPP_CAT(MODEL_UPPER, _KNOB_0_NAME)
#define MODEL_KNOB_0_DEFAULT CAPP_CAT(MODEL_UPPER, _KNOB_0_DEFAULT)

#if MODEL_INPUT_COUNT < 1 || MODEL_OUTPUT_COUNT < 1
#error "c-app needs a model with at least one input and one output"
#endif

/* bad_input.c: calls every API function with bad arguments and checks the
 * status codes; returns the number of failed checks. */
int bad_input_checks(size_t threads);

#endif /* C_APP_MODEL_SELECT_H */
