/* npy.h: reads and writes little-endian float32 .npy files (NumPy's array
 * format, versions 1.0 to 3.0), so the C example can use the same inputs
 * and expected outputs as the rest of the test suite. C99, no dependencies.
 *
 * Only what the example needs: dtype '<f4', C (row-major) order, at most
 * NPY_MAX_DIMS dimensions. Anything else is refused with a message rather
 * than misread. The data is converted from little-endian byte by byte, so
 * the code also works on a big-endian host. */
#ifndef C_APP_NPY_H
#define C_APP_NPY_H

#include <stddef.h>

#define NPY_MAX_DIMS 16

/* An array read from a .npy file. */
typedef struct npy_array {
    size_t ndim;
    size_t shape[NPY_MAX_DIMS];
    /* The product of the dims (1 for a 0-d array). */
    size_t count;
    /* count floats, owned by the array (free with npy_free); NULL if count is 0. */
    float *data;
} npy_array;

/* Reads `path` into `*out`. Returns 0, or -1 with a message in err (err_len
 * bytes, always NUL-terminated) and `*out` zeroed. */
int npy_read_f32(const char *path, npy_array *out, char *err, size_t err_len);

/* Writes `data`, an array of the given shape (ndim <= NPY_MAX_DIMS), to
 * `path` as a version 1.0 file. Returns 0, or -1 with a message in err. */
int npy_write_f32(const char *path, const float *data, const size_t *shape, size_t ndim, char *err, size_t err_len);

/* Frees an array's data and zeroes it (safe on a zeroed array). */
void npy_free(npy_array *a);

#endif /* C_APP_NPY_H */
