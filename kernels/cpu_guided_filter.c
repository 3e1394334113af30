/*
 * Color guided filter (He et al. 2013) of many channels with one RGB guide, on the CPU.
 *
 * Exact rule of the project: (2r+1)² boxes truncated at the border and normalized by their
 * true pixel count N(x). The guide's statistics (window mean of I and (Σ + εU)⁻¹) are computed
 * once by the caller and shared by every channel.
 *
 * Each channel is streamed row by row: vertical box sums are running column sums held in
 * float64 (no drift over tall images), horizontal box sums are float64 running sums along
 * the row, and the coefficients a, b of the last 2r+2 rows live in a small ring buffer.
 * The working set is a few rows, so any band of output rows [y0, y1) can be produced on its
 * own (its inputs are rows y0-2r .. y1+2r), which bounds memory for large images.
 *
 * Python entry point: filter_rows(src, guide, mean, inv_cov, inv_count, out,
 *                                 C, H, W, radius, y0, y1, c0, c1)
 *   src       float32 [C][H][W]     channels to filter
 *   guide     float32 [3][H][W]     guide in [0, 1] (planar)
 *   mean      float32 [3][H][W]     window mean of the guide
 *   inv_cov   float32 [6][H][W]     (Σ + εU)⁻¹ as (00, 01, 02, 11, 12, 22)
 *   inv_count float32 [H][W]        1 / N(x)
 *   out       float32 [C][y1-y0][W] filtered rows y0 .. y1-1 (channels c0 .. c1-1 written)
 * The GIL is released while filtering, so channel ranges can run on several threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const float *guide, *mean, *inv, *inv_count; /* planar: [3][H][W], [3][H][W], [6][H][W] */
    int H, W, r;
} Guide;

typedef struct {
    double *col1, *col2; /* [4][W + 2r] running column sums, zero outside [r, r + W) */
    double *box;         /* [4][W] box sums of the current row */
    float *ring;         /* [2r+2][4][W] a0, a1, a2, b of recent rows */
    int next;            /* next coefficient row to compute */
} Scratch;


static int imax(int a, int b) { return a > b ? a : b; }
static int imin(int a, int b) { return a < b ? a : b; }

/* col += (p, p·I0, p·I1, p·I2) of row `in` − the same of row `out` (either may be -1: none) */
static void slide_input(const Guide *g, double *col, const float *p, int in, int out)
{
    const int W = g->W, stride = W + 2 * g->r;
    const size_t plane = (size_t)g->H * W;
    double *c0 = col + g->r, *c1 = c0 + stride, *c2 = c1 + stride, *c3 = c2 + stride;
    if (in >= 0) {
        const float *pv = p + (size_t)in * W, *I0 = g->guide + (size_t)in * W;
        const float *I1 = I0 + plane, *I2 = I1 + plane;
        for (int x = 0; x < W; ++x) {
            const double v = pv[x];
            c0[x] += v;
            c1[x] += v * I0[x];
            c2[x] += v * I1[x];
            c3[x] += v * I2[x];
        }
    }
    if (out >= 0) {
        const float *pv = p + (size_t)out * W, *I0 = g->guide + (size_t)out * W;
        const float *I1 = I0 + plane, *I2 = I1 + plane;
        for (int x = 0; x < W; ++x) {
            const double v = pv[x];
            c0[x] -= v;
            c1[x] -= v * I0[x];
            c2[x] -= v * I1[x];
            c3[x] -= v * I2[x];
        }
    }
}

/* col += ring row `in` − ring row `out` (either may be NULL) */
static void slide_coef(const Guide *g, double *col, const float *in, const float *out)
{
    const int W = g->W, stride = W + 2 * g->r;
    for (int q = 0; q < 4; ++q) {
        double *c = col + (size_t)q * stride + g->r;
        if (in) {
            const float *v = in + (size_t)q * W;
            for (int x = 0; x < W; ++x)
                c[x] += v[x];
        }
        if (out) {
            const float *v = out + (size_t)q * W;
            for (int x = 0; x < W; ++x)
                c[x] -= v[x];
        }
    }
}

/* box[q][x] = Σ col[q][x'] over x' in [x-r, x+r] (the zero padding truncates the window).
 * A running sum per quantity; the four quantities advance together so that their dependency
 * chains overlap. */
static void horizontal_box(const Guide *g, const double *col, double *box)
{
    const int W = g->W, r = g->r, stride = W + 2 * r;
    const double *c0 = col, *c1 = c0 + stride, *c2 = c1 + stride, *c3 = c2 + stride;
    double *b0 = box, *b1 = b0 + W, *b2 = b1 + W, *b3 = b2 + W;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (int i = 0; i <= 2 * r; ++i) {
        s0 += c0[i];
        s1 += c1[i];
        s2 += c2[i];
        s3 += c3[i];
    }
    b0[0] = s0;
    b1[0] = s1;
    b2[0] = s2;
    b3[0] = s3;
    for (int x = 1; x < W; ++x) {
        const int hi = x + 2 * r, lo = x - 1;
        s0 += c0[hi] - c0[lo];
        s1 += c1[hi] - c1[lo];
        s2 += c2[hi] - c2[lo];
        s3 += c3[hi] - c3[lo];
        b0[x] = s0;
        b1[x] = s1;
        b2[x] = s2;
        b3[x] = s3;
    }
}

/* a = (Σ + εU)⁻¹ cov(I, p), b = mean(p) − a·mean(I) for row t, from its box sums */
static void coefficients(const Guide *g, const double *box, float *dst, int t)
{
    const int W = g->W;
    const size_t plane = (size_t)g->H * W, off = (size_t)t * W;
    const float *n = g->inv_count + off;
    const float *m0 = g->mean + off, *m1 = m0 + plane, *m2 = m1 + plane;
    const float *v00 = g->inv + off, *v01 = v00 + plane, *v02 = v01 + plane;
    const float *v11 = v02 + plane, *v12 = v11 + plane, *v22 = v12 + plane;
    const double *s0 = box, *s1 = box + W, *s2 = s1 + W, *s3 = s2 + W;
    float *a0 = dst, *a1 = dst + W, *a2 = a1 + W, *b = a2 + W;
    for (int x = 0; x < W; ++x) {
        const double k = n[x];
        const double mp = s0[x] * k;
        const double c0 = s1[x] * k - m0[x] * mp;
        const double c1 = s2[x] * k - m1[x] * mp;
        const double c2 = s3[x] * k - m2[x] * mp;
        const double e0 = v00[x] * c0 + v01[x] * c1 + v02[x] * c2;
        const double e1 = v01[x] * c0 + v11[x] * c1 + v12[x] * c2;
        const double e2 = v02[x] * c0 + v12[x] * c1 + v22[x] * c2;
        a0[x] = (float)e0;
        a1[x] = (float)e1;
        a2[x] = (float)e2;
        b[x] = (float)(mp - e0 * m0[x] - e1 * m1[x] - e2 * m2[x]);
    }
}

/* Start a channel's stream: column sums of the input rows around the first coefficient row. */
static void start_channel(const Guide *g, const float *p, int y0, Scratch *s)
{
    const int r = g->r, ya0 = imax(0, y0 - r);
    memset(s->col1, 0, sizeof(double) * (size_t)(g->W + 2 * r) * 4);
    for (int i = imax(0, ya0 - r); i < imin(g->H, ya0 + r + 1); ++i)
        slide_input(g, s->col1, p, i, -1);
    s->next = ya0;
}

/* Produce output row y of one channel (rows are produced in order from y0). */
static void channel_row(const Guide *g, const float *p, float *out, int y0, int y, Scratch *s)
{
    const int H = g->H, W = g->W, r = g->r, R = 2 * r + 2;
    const size_t plane = (size_t)H * W, rowlen = (size_t)W * 4;
    const int ya0 = imax(0, y0 - r), need = imin(H, y + r + 1);
    for (; s->next < need; ++s->next) {
        const int t = s->next;
        if (t > ya0)
            slide_input(g, s->col1, p, t + r < H ? t + r : -1, t - r - 1);
        horizontal_box(g, s->col1, s->box);
        coefficients(g, s->box, s->ring + (size_t)(t % R) * rowlen, t);
    }
    if (y == y0) {
        memset(s->col2, 0, sizeof(double) * (size_t)(W + 2 * r) * 4);
        for (int i = imax(0, y - r); i < need; ++i)
            slide_coef(g, s->col2, s->ring + (size_t)(i % R) * rowlen, NULL);
    } else {
        slide_coef(g, s->col2, y + r < H ? s->ring + (size_t)((y + r) % R) * rowlen : NULL,
                   y - r - 1 >= 0 ? s->ring + (size_t)((y - r - 1) % R) * rowlen : NULL);
    }
    horizontal_box(g, s->col2, s->box);
    const size_t off = (size_t)y * W;
    const float *I0 = g->guide + off, *I1 = I0 + plane, *I2 = I1 + plane;
    const float *n = g->inv_count + off;
    const double *b0 = s->box, *b1 = b0 + W, *b2 = b1 + W, *b3 = b2 + W;
    float *o = out + (size_t)(y - y0) * W;
    for (int x = 0; x < W; ++x)
        o[x] = (float)((b0[x] * I0[x] + b1[x] * I1[x] + b2[x] * I2[x] + b3[x]) * n[x]);
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t floats,
                      const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->itemsize != 4 || view->len < floats * 4) {
        PyErr_Format(PyExc_ValueError, "%s: expected at least %zd contiguous float32 values", name,
                     floats);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *filter_rows(PyObject *self, PyObject *args)
{
    PyObject *objs[6];
    int C, H, W, r, y0, y1, c0, c1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOiiiiiiii", &objs[0], &objs[1], &objs[2], &objs[3],
                          &objs[4], &objs[5], &C, &H, &W, &r, &y0, &y1, &c0, &c1))
        return NULL;
    if (C < 0 || H < 1 || W < 1 || r < 0 || y0 < 0 || y1 > H || y0 >= y1 || c0 < 0 || c1 > C ||
        c0 > c1) {
        PyErr_SetString(PyExc_ValueError, "filter_rows: inconsistent sizes or ranges");
        return NULL;
    }
    const Py_ssize_t plane = (Py_ssize_t)H * W;
    const Py_ssize_t sizes[6] = {C * plane, plane * 3, plane * 3, plane * 6, plane,
                                 (Py_ssize_t)C * (y1 - y0) * W};
    const char *names[6] = {"src", "guide", "mean", "inv_cov", "inv_count", "out"};
    Py_buffer views[6];
    int got = 0;
    for (; got < 6; ++got)
        if (get_buffer(objs[got], &views[got], got == 5, sizes[got], names[got]) < 0)
            break;
    if (got < 6) {
        for (int i = 0; i < got; ++i)
            PyBuffer_Release(&views[i]);
        return NULL;
    }

    const size_t rowlen = (size_t)W * 4, collen = (size_t)(W + 2 * r) * 4;
    double *dbuf = malloc(sizeof(double) * (collen * 2 + rowlen));
    float *ring = malloc(sizeof(float) * rowlen * (size_t)(2 * r + 2));
    if (!dbuf || !ring) {
        free(dbuf);
        free(ring);
        for (int i = 0; i < 6; ++i)
            PyBuffer_Release(&views[i]);
        return PyErr_NoMemory();
    }
    Guide g = {views[1].buf, views[2].buf, views[3].buf, views[4].buf, H, W, r};
    Scratch s = {dbuf, dbuf + collen, dbuf + collen * 2, ring, 0};
    const float *src = views[0].buf;
    float *out = views[5].buf;
    const size_t out_plane = (size_t)(y1 - y0) * W;

    Py_BEGIN_ALLOW_THREADS
    for (int c = c0; c < c1; ++c) {
        const float *p = src + (size_t)c * plane;
        start_channel(&g, p, y0, &s);
        for (int y = y0; y < y1; ++y)
            channel_row(&g, p, out + (size_t)c * out_plane, y0, y, &s);
    }
    Py_END_ALLOW_THREADS

    free(dbuf);
    free(ring);
    for (int i = 0; i < 6; ++i)
        PyBuffer_Release(&views[i]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"filter_rows", filter_rows, METH_VARARGS,
     "Guided-filter rows y0..y1-1 of channels c0..c1-1 (see the module source for the layout)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_guided_filter",
                                    "Streaming color guided filter of many channels (float32).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__cpu_guided_filter(void) { return PyModule_Create(&module); }
