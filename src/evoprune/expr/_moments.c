/* Fused streaming moments for evoprune.expr.stats.ClassStats (optional; built at install time).
 *
 * One pass over a batch of feature maps [B, C, D] (float32 or float64, C-contiguous): each value is read
 * once, converted to double and added to the per-class, per-position sums pos_sum[L, C, D], and its square
 * to sq_parts[L, C, K] (K = D: per position; K = 1: summed over the positions). The pure-torch path of
 * ClassStats does the same in three passes (convert, index_add_, squared norm). The square of a float32
 * value is exact in double, so both paths differ only by the order of float64 additions.
 *
 * The GIL is released: callers may split the channel range [c0, c1) over threads (disjoint rows).
 * On x86-64 with GCC or Clang, rows are summed with AVX2 vectors when the CPU has them (chosen at import),
 * else with portable C that the compiler vectorises for the baseline instruction set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Portable row kernel: add x[0..d) to p and return the sum of squares, in eight independent lanes. */
#define LANES 8
#define PLAIN_ROW(T)                                                                          \
    static double row_plain_##T(const T *restrict x, double *restrict p, Py_ssize_t d) {      \
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
    }
PLAIN_ROW(float)
PLAIN_ROW(double)

/* Portable run kernel for K = D: add x[0..n) to p and its squares to q. */
#define PLAIN_ROWSQ(T)                                                                        \
    static void rowsq_plain_##T(const T *restrict x, double *restrict p, double *restrict q,  \
                                Py_ssize_t n) {                                               \
        for (Py_ssize_t i = 0; i < n; i++) {                                                  \
            double v = (double)x[i];                                                          \
            p[i] += v;                                                                        \
            q[i] += v * v;                                                                    \
        }                                                                                     \
    }
PLAIN_ROWSQ(float)
PLAIN_ROWSQ(double)

typedef double (*row_fn_f)(const float *restrict, double *restrict, Py_ssize_t);
typedef double (*row_fn_d)(const double *restrict, double *restrict, Py_ssize_t);
typedef void (*rowsq_fn_f)(const float *restrict, double *restrict, double *restrict, Py_ssize_t);
typedef void (*rowsq_fn_d)(const double *restrict, double *restrict, double *restrict, Py_ssize_t);
static row_fn_f row_float = row_plain_float;
static row_fn_d row_double = row_plain_double;
static rowsq_fn_f rowsq_float = rowsq_plain_float;
static rowsq_fn_d rowsq_double = rowsq_plain_double;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_PATH 1
typedef double v4d __attribute__((vector_size(32)));
/* AVX2 row kernel: eight values per step as two 4-wide double vectors. */
#define AVX2_ROW(T)                                                                           \
    __attribute__((target("avx2,fma"))) static double row_avx2_##T(                           \
        const T *restrict x, double *restrict p, Py_ssize_t d) {                              \
        typedef T v4t __attribute__((vector_size(4 * sizeof(T))));                            \
        v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0;                                               \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= d; i += 8) {                                                          \
            v4t xa, xb;                                                                       \
            v4d pa, pb;                                                                       \
            __builtin_memcpy(&xa, x + i, sizeof xa);                                          \
            __builtin_memcpy(&xb, x + i + 4, sizeof xb);                                      \
            v4d va = __builtin_convertvector(xa, v4d), vb = __builtin_convertvector(xb, v4d); \
            __builtin_memcpy(&pa, p + i, sizeof pa);                                          \
            __builtin_memcpy(&pb, p + i + 4, sizeof pb);                                      \
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
    }
AVX2_ROW(float)
AVX2_ROW(double)
/* The same loop as the portable one, compiled for AVX2 (the compiler vectorises it 4 doubles wide). */
#define AVX2_ROWSQ(T)                                                                         \
    __attribute__((target("avx2,fma"))) static void rowsq_avx2_##T(                           \
        const T *restrict x, double *restrict p, double *restrict q, Py_ssize_t n) {          \
        for (Py_ssize_t i = 0; i < n; i++) {                                                  \
            double v = (double)x[i];                                                          \
            p[i] += v;                                                                        \
            q[i] += v * v;                                                                    \
        }                                                                                     \
    }
AVX2_ROWSQ(float)
AVX2_ROWSQ(double)
#endif

/* Small D (K = D): squares are kept per position, so a sample's channel range is one flat run. */
#define RUN(T)                                                                                \
    static void run_##T(const T *f, const int64_t *lab, double *pos, double *sq, Py_ssize_t b, \
                        Py_ssize_t c, Py_ssize_t d, Py_ssize_t k, Py_ssize_t c0, Py_ssize_t c1) { \
        for (Py_ssize_t n = 0; n < b; n++) {                                                  \
            Py_ssize_t base = (Py_ssize_t)lab[n] * c;                                         \
            if (k == d) {                                                                     \
                rowsq_##T(f + (n * c + c0) * d, pos + (base + c0) * d, sq + (base + c0) * d,  \
                          (c1 - c0) * d);                                                     \
                continue;                                                                     \
            }                                                                                 \
            for (Py_ssize_t j = c0; j < c1; j++)                                              \
                sq[base + j] += row_##T(f + (n * c + j) * d, pos + (base + j) * d, d);        \
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
    Py_BEGIN_ALLOW_THREADS
    if (fk == 'f')
        run_float((const float *)f.buf, lab, (double *)p.buf, (double *)s.buf, b, c, d, k, c0, c1);
    else
        run_double((const double *)f.buf, lab, (double *)p.buf, (double *)s.buf, b, c, d, k, c0, c1);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
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
    row_float = avx2 ? row_avx2_float : row_plain_float;
    row_double = avx2 ? row_avx2_double : row_plain_double;
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
