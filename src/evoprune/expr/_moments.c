/* Fused streaming moments for evoprune.expr.stats.ClassStats (optional; built at install time).
 *
 * One pass over a batch of feature maps [B, C, D] (float32 or float64, C-contiguous): each value is read
 * once, converted to double and added to the per-class, per-position sums pos_sum[L, C, D], and its square
 * to sq_parts[L, C, K] (K = D: per position; K = 1: summed over the positions). The pure-torch path of
 * ClassStats does the same in three passes (convert, index_add_, squared norm). The square of a float32
 * value is exact in double, so both paths differ only by the order of float64 additions.
 *
 * Rows of the batch are visited class by class (a stable counting sort of the labels) and, for K = 1,
 * four rows of the same class at a time: their sum goes into pos_sum with one read-modify-write instead
 * of four, which is what bounds a plain one-row-at-a-time loop once pos_sum leaves the L2 cache.
 *
 * The GIL is released: callers may split the channel range [c0, c1) over threads (disjoint rows).
 * On x86-64 with GCC or Clang, rows are summed with AVX2 vectors when the CPU has them (chosen at import),
 * else with portable C that the compiler vectorises for the baseline instruction set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

/* Portable kernels, T = float or double:
 *   row1: add x[0..d) to p, return the sum of its squares (eight independent lanes);
 *   row4: add x0 + x1 + x2 + x3 to p, return the sum of all their squares;
 *   rowsq: add x[0..n) to p and the squares to q (K = D: per-position squares). */
#define LANES 8
#define PLAIN(T)                                                                              \
    static double row1_plain_##T(const T *restrict x, double *restrict p, Py_ssize_t d) {     \
        double acc[LANES] = {0.0};                                                            \
        Py_ssize_t i = 0;                                                                     \
        for (; i + LANES <= d; i += LANES)                                                    \
            for (int j = 0; j < LANES; j++) {                                                 \
                double v = (double)x[i + j];                                                  \
                p[i + j] += v;                                                                \
                acc[j] += v * v;                                                              \
            }                                                                                 \
        double s = 0.0;                                                                       \
        for (int j = 0; j < LANES; j++) s += acc[j];                                          \
        for (; i < d; i++) {                                                                  \
            double v = (double)x[i];                                                          \
            p[i] += v;                                                                        \
            s += v * v;                                                                       \
        }                                                                                     \
        return s;                                                                             \
    }                                                                                         \
    static double row4_plain_##T(const T *restrict x0, const T *restrict x1,                  \
                                 const T *restrict x2, const T *restrict x3,                  \
                                 double *restrict p, Py_ssize_t d) {                          \
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;                                        \
        for (Py_ssize_t i = 0; i < d; i++) {                                                  \
            double v0 = (double)x0[i], v1 = (double)x1[i];                                    \
            double v2 = (double)x2[i], v3 = (double)x3[i];                                    \
            p[i] += (v0 + v1) + (v2 + v3);                                                    \
            s0 += v0 * v0;                                                                    \
            s1 += v1 * v1;                                                                    \
            s2 += v2 * v2;                                                                    \
            s3 += v3 * v3;                                                                    \
        }                                                                                     \
        return (s0 + s1) + (s2 + s3);                                                         \
    }                                                                                         \
    static void rowsq_plain_##T(const T *restrict x, double *restrict p, double *restrict q,  \
                                Py_ssize_t n) {                                               \
        for (Py_ssize_t i = 0; i < n; i++) {                                                  \
            double v = (double)x[i];                                                          \
            p[i] += v;                                                                        \
            q[i] += v * v;                                                                    \
        }                                                                                     \
    }
PLAIN(float)
PLAIN(double)

/* The kernels in use (portable by default, AVX2 after set_simd(True) on a CPU that has it). */
#define TABLE(T)                                                                              \
    static double (*row1_##T)(const T *restrict, double *restrict, Py_ssize_t) = row1_plain_##T; \
    static double (*row4_##T)(const T *restrict, const T *restrict, const T *restrict,        \
                              const T *restrict, double *restrict, Py_ssize_t) = row4_plain_##T; \
    static void (*rowsq_##T)(const T *restrict, double *restrict, double *restrict,           \
                             Py_ssize_t) = rowsq_plain_##T;
TABLE(float)
TABLE(double)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_PATH 1
typedef double v4d __attribute__((vector_size(32)));
#define LOAD4(dst, src) __builtin_memcpy(&(dst), (src), sizeof(dst))
/* AVX2 kernels: the same sums with 4-wide double vectors (x converted 4 values at a time). */
#define AVX2(T)                                                                               \
    typedef T v4_##T __attribute__((vector_size(4 * sizeof(T))));                             \
    __attribute__((target("avx2,fma"))) static inline v4d load_##T(const T *x) {              \
        v4_##T v;                                                                             \
        LOAD4(v, x);                                                                          \
        return __builtin_convertvector(v, v4d);                                               \
    }                                                                                         \
    __attribute__((target("avx2,fma"))) static double row1_avx2_##T(                          \
        const T *restrict x, double *restrict p, Py_ssize_t d) {                              \
        v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, pa, pb;                                       \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= d; i += 8) {                                                          \
            v4d va = load_##T(x + i), vb = load_##T(x + i + 4);                               \
            LOAD4(pa, p + i);                                                                 \
            LOAD4(pb, p + i + 4);                                                             \
            pa += va;                                                                         \
            pb += vb;                                                                         \
            __builtin_memcpy(p + i, &pa, sizeof pa);                                          \
            __builtin_memcpy(p + i + 4, &pb, sizeof pb);                                      \
            a0 += va * va;                                                                    \
            a1 += vb * vb;                                                                    \
        }                                                                                     \
        v4d a = a0 + a1;                                                                      \
        double s = (a[0] + a[1]) + (a[2] + a[3]);                                             \
        for (; i < d; i++) {                                                                  \
            double v = (double)x[i];                                                          \
            p[i] += v;                                                                        \
            s += v * v;                                                                       \
        }                                                                                     \
        return s;                                                                             \
    }                                                                                         \
    __attribute__((target("avx2,fma"))) static double row4_avx2_##T(                          \
        const T *restrict x0, const T *restrict x1, const T *restrict x2, const T *restrict x3, \
        double *restrict p, Py_ssize_t d) {                                                   \
        v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0, pa;                         \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 4 <= d; i += 4) {                                                          \
            v4d v0 = load_##T(x0 + i), v1 = load_##T(x1 + i);                                 \
            v4d v2 = load_##T(x2 + i), v3 = load_##T(x3 + i);                                 \
            LOAD4(pa, p + i);                                                                 \
            pa += (v0 + v1) + (v2 + v3);                                                      \
            __builtin_memcpy(p + i, &pa, sizeof pa);                                          \
            a0 += v0 * v0;                                                                    \
            a1 += v1 * v1;                                                                    \
            a2 += v2 * v2;                                                                    \
            a3 += v3 * v3;                                                                    \
        }                                                                                     \
        v4d a = (a0 + a1) + (a2 + a3);                                                        \
        double s = (a[0] + a[1]) + (a[2] + a[3]);                                             \
        for (; i < d; i++) {                                                                  \
            double v0 = (double)x0[i], v1 = (double)x1[i];                                    \
            double v2 = (double)x2[i], v3 = (double)x3[i];                                    \
            p[i] += (v0 + v1) + (v2 + v3);                                                    \
            s += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3);                                   \
        }                                                                                     \
        return s;                                                                             \
    }                                                                                         \
    /* the portable loop, compiled for AVX2 (the compiler vectorises it 4 doubles wide) */    \
    __attribute__((target("avx2,fma"))) static void rowsq_avx2_##T(                           \
        const T *restrict x, double *restrict p, double *restrict q, Py_ssize_t n) {          \
        for (Py_ssize_t i = 0; i < n; i++) {                                                  \
            double v = (double)x[i];                                                          \
            p[i] += v;                                                                        \
            q[i] += v * v;                                                                    \
        }                                                                                     \
    }
AVX2(float)
AVX2(double)
#endif

/* One batch: rows[order[start[l]] .. order[start[l + 1]]) have label l (a stable counting sort). */
#define RUN(T)                                                                                \
    static void run_##T(const T *f, const Py_ssize_t *order, const Py_ssize_t *start,         \
                        double *pos, double *sq, Py_ssize_t nl, Py_ssize_t c, Py_ssize_t d,   \
                        Py_ssize_t k, Py_ssize_t c0, Py_ssize_t c1) {                         \
        Py_ssize_t row = c * d;                                                               \
        for (Py_ssize_t l = 0; l < nl; l++) {                                                 \
            Py_ssize_t r = start[l], end = start[l + 1], base = l * c;                        \
            if (k == d) { /* per-position squares: a row's channel range is one flat run */   \
                for (; r < end; r++)                                                          \
                    rowsq_##T(f + order[r] * row + c0 * d, pos + (base + c0) * d,             \
                              sq + (base + c0) * d, (c1 - c0) * d);                           \
                continue;                                                                     \
            }                                                                                 \
            for (; r + 4 <= end; r += 4) {                                                    \
                const T *x0 = f + order[r] * row, *x1 = f + order[r + 1] * row;               \
                const T *x2 = f + order[r + 2] * row, *x3 = f + order[r + 3] * row;           \
                for (Py_ssize_t j = c0; j < c1; j++)                                          \
                    sq[base + j] += row4_##T(x0 + j * d, x1 + j * d, x2 + j * d, x3 + j * d,  \
                                             pos + (base + j) * d, d);                        \
            }                                                                                 \
            for (; r < end; r++)                                                              \
                for (Py_ssize_t j = c0; j < c1; j++)                                          \
                    sq[base + j] += row1_##T(f + order[r] * row + j * d, pos + (base + j) * d, d); \
        }                                                                                     \
    }
RUN(float)
RUN(double)

static int get(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous%s buffer", name, writable ? " writable" : "");
        return -1;
    }
    return 0;
}

/* 'f' float32, 'd' float64, 'i' 64-bit integer, 0 anything else. */
static char kind(const Py_buffer *v) {
    const char *fmt = v->format ? v->format : "B";
    if (*fmt == '@' || *fmt == '=' || *fmt == '<') fmt++;
    if ((*fmt == 'f' && v->itemsize == 4) || (*fmt == 'd' && v->itemsize == 8)) return *fmt;
    if ((*fmt == 'l' || *fmt == 'q') && v->itemsize == 8) return 'i';
    return 0;
}

PyDoc_STRVAR(accumulate_doc,
"accumulate(features, labels, pos_sum, sq_parts, c0, c1)\n\n"
"Add features [B, C, D] (float32/float64) with int64 labels [B] into pos_sum [L, C, D] and sq_parts\n"
"[L, C, K] (float64, K = 1 or D), for channels c0 <= j < c1. All C-contiguous; the GIL is released.");

static PyObject *accumulate(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *fo, *lo, *po, *so;
    Py_ssize_t c0, c1;
    if (!PyArg_ParseTuple(args, "OOOOnn", &fo, &lo, &po, &so, &c0, &c1)) return NULL;
    Py_buffer f, l, p, s;
    if (get(fo, &f, 0, "features")) return NULL;
    if (get(lo, &l, 0, "labels")) {
        PyBuffer_Release(&f);
        return NULL;
    }
    if (get(po, &p, 1, "pos_sum")) {
        PyBuffer_Release(&f);
        PyBuffer_Release(&l);
        return NULL;
    }
    if (get(so, &s, 1, "sq_parts")) {
        PyBuffer_Release(&f);
        PyBuffer_Release(&l);
        PyBuffer_Release(&p);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t *order = NULL, *start = NULL;
    char fk = kind(&f);
    if (f.ndim != 3 || l.ndim != 1 || p.ndim != 3 || s.ndim != 3 || (fk != 'f' && fk != 'd') ||
        kind(&l) != 'i' || kind(&p) != 'd' || kind(&s) != 'd') {
        PyErr_SetString(PyExc_TypeError, "expected features [B, C, D] float32/float64, labels [B] int64, "
                                         "pos_sum [L, C, D] and sq_parts [L, C, K] float64");
        goto done;
    }
    Py_ssize_t b = f.shape[0], c = f.shape[1], d = f.shape[2], nl = p.shape[0], k = s.shape[2];
    if (l.shape[0] != b || p.shape[1] != c || p.shape[2] != d || s.shape[0] != nl || s.shape[1] != c ||
        (k != 1 && k != d) || c0 < 0 || c1 > c || c0 > c1) {
        PyErr_SetString(PyExc_ValueError, "shapes of features, labels, pos_sum, sq_parts or the channel "
                                          "range do not agree");
        goto done;
    }
    const int64_t *lab = (const int64_t *)l.buf;
    for (Py_ssize_t n = 0; n < b; n++) {
        if (lab[n] < 0 || lab[n] >= nl) {
            PyErr_Format(PyExc_ValueError, "label %lld at row %zd is outside [0, %zd)", (long long)lab[n], n, nl);
            goto done;
        }
    }
    order = PyMem_Malloc(sizeof(Py_ssize_t) * (b + 1));
    start = PyMem_Calloc(nl + 2, sizeof(Py_ssize_t));
    if (order == NULL || start == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t n = 0; n < b; n++) start[lab[n] + 2]++; /* counts, shifted by two */
    for (Py_ssize_t i = 2; i < nl + 2; i++) start[i] += start[i - 1];
    for (Py_ssize_t n = 0; n < b; n++) order[start[lab[n] + 1]++] = n; /* start[l + 1] ends as l's end */
    Py_BEGIN_ALLOW_THREADS
    if (fk == 'f')
        run_float((const float *)f.buf, order, start, (double *)p.buf, (double *)s.buf, nl, c, d, k, c0, c1);
    else
        run_double((const double *)f.buf, order, start, (double *)p.buf, (double *)s.buf, nl, c, d, k, c0, c1);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(order);
    PyMem_Free(start);
    PyBuffer_Release(&f);
    PyBuffer_Release(&l);
    PyBuffer_Release(&p);
    PyBuffer_Release(&s);
    return result;
}

static PyObject *set_simd(PyObject *self, PyObject *arg) {
    (void)self;
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    int avx2 = 0;
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    avx2 = on && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    row1_float = avx2 ? row1_avx2_float : row1_plain_float;
    row1_double = avx2 ? row1_avx2_double : row1_plain_double;
    row4_float = avx2 ? row4_avx2_float : row4_plain_float;
    row4_double = avx2 ? row4_avx2_double : row4_plain_double;
    rowsq_float = avx2 ? rowsq_avx2_float : rowsq_plain_float;
    rowsq_double = avx2 ? rowsq_avx2_double : rowsq_plain_double;
#endif
    return PyUnicode_FromString(avx2 ? "avx2" : "plain");
}

static PyMethodDef methods[] = {
    {"accumulate", accumulate, METH_VARARGS, accumulate_doc},
    {"set_simd", set_simd, METH_O,
     "set_simd(on) -> 'avx2' or 'plain': use AVX2 rows where the CPU has them (the default), or not."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_moments",
    "Fused float64 streaming moments of feature maps (see evoprune.expr.stats).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__moments(void) {
    PyObject *mode = set_simd(NULL, Py_True);
    if (mode == NULL) return NULL;
    Py_DECREF(mode);
    return PyModule_Create(&module);
}
