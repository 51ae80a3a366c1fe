/* npy.c: the little-endian float32 .npy reader and writer declared in npy.h.
 *
 * File layout (NumPy's format spec): the magic "\x93NUMPY", a major and a
 * minor version byte, the header length (2 bytes little-endian in version
 * 1.0, 4 bytes in 2.0 and 3.0), the header itself (an ASCII Python dict
 * literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (8, 6), }
 * padded with spaces and a newline), then the raw elements. */
#include "npy.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* A header longer than this is not one NumPy wrote for a float array. */
#define NPY_MAX_HEADER ((size_t)1 << 20)

/* Bytes converted per fread/fwrite call: the data goes through a small
 * buffer instead of a second copy of the whole array. */
#define NPY_CHUNK 4096

static void set_err(char *err, size_t err_len, const char *fmt, ...) {
    va_list args;
    if (err == NULL || err_len == 0)
        return;
    va_start(args, fmt);
    vsnprintf(err, err_len, fmt, args);
    va_end(args);
}

/* The value after `'key':` (or `"key":`) in the header, or NULL. */
static const char *find_value(const char *header, const char *key) {
    size_t key_len = strlen(key);
    const char *p = header;
    while ((p = strstr(p, key)) != NULL) {
        int quoted = p > header && (p[-1] == '\'' || p[-1] == '"') && p[key_len] == p[-1];
        if (quoted) {
            const char *v = p + key_len + 1;
            while (*v == ' ')
                v++;
            if (*v == ':') {
                v++;
                while (*v == ' ')
                    v++;
                return v;
            }
        }
        p += key_len;
    }
    return NULL;
}

/* Parses `(d0, d1, ...)` into shape; returns 0 or -1. */
static int parse_shape(const char *p, npy_array *a) {
    if (*p++ != '(')
        return -1;
    a->ndim = 0;
    for (;;) {
        size_t dim = 0;
        int digits = 0;
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')')
            return 0;
        while (*p >= '0' && *p <= '9') {
            size_t digit = (size_t)(*p - '0');
            if (dim > (SIZE_MAX - digit) / 10)
                return -1;
            dim = dim * 10 + digit;
            digits++;
            p++;
        }
        /* Python 2 era files may write longs as `8L`. */
        if (*p == 'L')
            p++;
        if (digits == 0 || a->ndim == NPY_MAX_DIMS)
            return -1;
        a->shape[a->ndim++] = dim;
        if (*p != ',' && *p != ')' && *p != ' ')
            return -1;
    }
}

static uint32_t load_le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void store_le32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v & 0xff);
    b[1] = (unsigned char)(v >> 8 & 0xff);
    b[2] = (unsigned char)(v >> 16 & 0xff);
    b[3] = (unsigned char)(v >> 24 & 0xff);
}

void npy_free(npy_array *a) {
    if (a == NULL)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* Parses the header dict into shape and count; checks dtype and order. */
static int parse_header(const char *path, const char *header, npy_array *a, char *err, size_t err_len) {
    const char *descr = find_value(header, "descr");
    const char *order = find_value(header, "fortran_order");
    const char *shape = find_value(header, "shape");
    size_t i;
    if (descr == NULL || order == NULL || shape == NULL) {
        set_err(err, err_len, "%s: the .npy header lacks descr, fortran_order or shape: %s", path, header);
        return -1;
    }
    if (!((descr[0] == '\'' || descr[0] == '"') && strncmp(descr + 1, "<f4", 3) == 0 && descr[4] == descr[0])) {
        set_err(err, err_len, "%s: holds elements of dtype %.12s, not little-endian float32 ('<f4'); convert it with .astype('<f4')", path, descr);
        return -1;
    }
    if (parse_shape(shape, a) != 0) {
        set_err(err, err_len, "%s: cannot read the shape (at most %d dims): %.60s", path, NPY_MAX_DIMS, shape);
        return -1;
    }
    if (strncmp(order, "True", 4) == 0 && a->ndim > 1) {
        set_err(err, err_len, "%s: is in Fortran (column-major) order; save it with np.ascontiguousarray", path);
        return -1;
    }
    a->count = 1;
    for (i = 0; i < a->ndim; i++) {
        if (a->shape[i] != 0 && a->count > SIZE_MAX / sizeof(float) / a->shape[i]) {
            set_err(err, err_len, "%s: the array is larger than the address space", path);
            return -1;
        }
        a->count *= a->shape[i];
    }
    return 0;
}

int npy_read_f32(const char *path, npy_array *out, char *err, size_t err_len) {
    unsigned char pre[12], chunk[NPY_CHUNK];
    size_t header_len, len_bytes, done = 0;
    char *header = NULL;
    npy_array a;
    FILE *f;
    memset(&a, 0, sizeof a);
    memset(out, 0, sizeof *out);
    f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, err_len, "%s: cannot open it", path);
        return -1;
    }
    if (fread(pre, 1, 8, f) != 8 || memcmp(pre, npy_magic, sizeof npy_magic) != 0 || pre[6] < 1 || pre[6] > 3) {
        set_err(err, err_len, "%s: not a .npy file of version 1, 2 or 3", path);
        goto fail;
    }
    len_bytes = pre[6] == 1 ? 2 : 4;
    if (fread(pre + 8, 1, len_bytes, f) != len_bytes) {
        set_err(err, err_len, "%s: the file is truncated", path);
        goto fail;
    }
    header_len = len_bytes == 2 ? (size_t)pre[8] | (size_t)pre[9] << 8 : (size_t)load_le32(pre + 8);
    if (header_len > NPY_MAX_HEADER) {
        set_err(err, err_len, "%s: the header is implausibly long (%zu bytes)", path, header_len);
        goto fail;
    }
    header = malloc(header_len + 1);
    if (header == NULL || fread(header, 1, header_len, f) != header_len) {
        set_err(err, err_len, "%s: the header is truncated", path);
        goto fail;
    }
    header[header_len] = '\0';
    if (parse_header(path, header, &a, err, err_len) != 0)
        goto fail;
    if (a.count > 0) {
        a.data = malloc(a.count * sizeof(float));
        if (a.data == NULL) {
            set_err(err, err_len, "%s: out of memory for %zu floats", path, a.count);
            goto fail;
        }
    }
    while (done < a.count) {
        size_t n = a.count - done, i;
        if (n > NPY_CHUNK / 4)
            n = NPY_CHUNK / 4;
        if (fread(chunk, 4, n, f) != n) {
            set_err(err, err_len, "%s: the data is truncated (%zu of %zu floats)", path, done, a.count);
            goto fail;
        }
        for (i = 0; i < n; i++) {
            uint32_t bits = load_le32(chunk + 4 * i);
            memcpy(&a.data[done + i], &bits, sizeof bits);
        }
        done += n;
    }
    free(header);
    fclose(f);
    *out = a;
    return 0;
fail:
    free(header);
    npy_free(&a);
    fclose(f);
    return -1;
}

int npy_write_f32(const char *path, const float *data, const size_t *shape, size_t ndim, char *err, size_t err_len) {
    /* 16 dims of up to 20 digits each fit with room to spare. */
    char header[640];
    unsigned char pre[10], chunk[NPY_CHUNK];
    size_t len, i, count = 1, done = 0;
    FILE *f;
    if (ndim > NPY_MAX_DIMS) {
        set_err(err, err_len, "%s: %zu dims, at most %d supported", path, ndim, NPY_MAX_DIMS);
        return -1;
    }
    len = (size_t)snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (i = 0; i < ndim; i++) {
        len += (size_t)snprintf(header + len, sizeof header - len, "%s%zu", i > 0 ? ", " : "", shape[i]);
        count *= shape[i];
    }
    /* A 1-tuple needs its comma in Python syntax: (6,). */
    len += (size_t)snprintf(header + len, sizeof header - len, "%s), }", ndim == 1 ? "," : "");
    /* Pad with spaces so that the data starts at a multiple of 64 bytes, then end with '\n'. */
    while ((10 + len + 1) % 64 != 0)
        header[len++] = ' ';
    header[len++] = '\n';
    memcpy(pre, npy_magic, sizeof npy_magic);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(len & 0xff);
    pre[9] = (unsigned char)(len >> 8);
    f = fopen(path, "wb");
    if (f == NULL) {
        set_err(err, err_len, "%s: cannot create it", path);
        return -1;
    }
    if (fwrite(pre, 1, sizeof pre, f) != sizeof pre || fwrite(header, 1, len, f) != len)
        goto fail;
    while (done < count) {
        size_t n = count - done;
        if (n > NPY_CHUNK / 4)
            n = NPY_CHUNK / 4;
        for (i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &data[done + i], sizeof bits);
            store_le32(chunk + 4 * i, bits);
        }
        if (fwrite(chunk, 4, n, f) != n)
            goto fail;
        done += n;
    }
    if (fclose(f) != 0) {
        set_err(err, err_len, "%s: cannot finish writing it", path);
        return -1;
    }
    return 0;
fail:
    set_err(err, err_len, "%s: cannot write it", path);
    fclose(f);
    return -1;
}
