/*
 * Color guided filter (He et al. 2013) of many channels with one RGB guide, on the CPU.
 *
 * Exact rule of the project: (2r+1)² boxes truncated at the border and normalized by their
 * true pixel count N(x). The guide's statistics (window mean of I and (Σ + εU)⁻¹) are computed
 * once by the caller and shared by every channel.
 *
 * Channels are filtered in groups of LANES: the group's values at one pixel form one SIMD
 * vector, so every step (products with the guide, box sums, the 3×3 solve for a and b, the
 * output) handles LANES channels per instruction and reads the guide's statistics once per
 * group. Each group is streamed row by row over vertical strips of STRIP output columns:
 * vertical box sums are running column sums held in float64 (no drift over tall images),
 * horizontal box sums are float64 running sums fused with the step that consumes them, and
 * the coefficients a, b of the last 2r+2 rows live in a ring buffer that stays in the L2 cache.
 * Any band of output rows [y0, y1) can be produced on its own (its inputs are rows
 * y0-2r .. y1+2r), which bounds memory for large images.
 *
 * The kernel (cpu_guided_filter_impl.h) is compiled once per instruction set: 8 lanes with
 * AVX-512, 4 with AVX2, 2 with the baseline (SSE2, NEON, ...); the widest one the CPU runs is
 * chosen at run time.
 *
 * Python entry point: filter_rows(src, pixel, coef_table, out,
 *                                 C, H, W, radius, y0, y1, c0, c1[, variant[, coef]])
 *   src        float32 [C][H][W]    channels to filter
 *   pixel      float64 [H][W][4]    the guide in [0, 1] (I0, I1, I2) and 1 / N(x)
 *   coef_table float64 [H][W][10]   1 / N(x), the window mean of the guide (3) and
 *                                   (Σ + εU)⁻¹ as (00, 01, 02, 11, 12, 22)
 *   (float64, interleaved per pixel: each step reads one stream and broadcasts its values into
 *   float64 vectors straight from memory)
 *   out        float32 [C][y1-y0][W] filtered rows y0 .. y1-1 (channels c0 .. c1-1 written);
 *              with coef, float32 [4][C][y1-y0][W]: the window means of a0, a1, a2 and b
 *   variant    one of variants() (default: the first, the widest the CPU runs)
 *   coef       write the coefficient means instead of the output (default false)
 * The GIL is released while filtering, so channel ranges can run on several threads; ranges
 * that start at a multiple of lanes(variant) waste no vector lanes.
 *
 * guide_stats(guide, pixel, coef_table, H, W, radius, eps[, y0, y1]): from the planar float64
 *   guide [3][H][W], rows y0 .. y1-1 (default all) of the two tables above, from float64 running
 *   box sums.
 *
 * hidden_rows(...): rows of the network's full-resolution head before its last conv,
 *   ReLU(fuse_input·t_in + up(P1) + up(D) + bias), with ONNX Resize's bilinear rule given as
 *   per-row and per-column taps (sss_rt/head.py prepares them).
 *
 * head_rows_bf16(tin, fin, bias, wpack, hbias, out, up_p1, up_deep, cin, W, H_in, y0, n, K, M,
 *                r0, r1, variant): the head's output rows r0 .. r1-1 of a chunk of n rows
 *   (image rows y0 ..) into rows row0 .. of an out of nout rows, hidden layer and last conv fused in bf16 with fp32 accumulation on AMX
 *   or AVX512-BF16, or in int8 on AVX512-VNNI (variant avx512-vnni-int8: wpack int8 weights,
 *   hbias the bias then the weights' per-channel scales; layouts in cpu_head_bf16.h;
 *   head_variants() lists what runs here).
 *
 * moments_rows(src, shift, gram, sum, C, N, x0, x1[, variant]): float64 moments (Σd and Σddᵀ,
 *   d = src[:, x] − shift) of float32 [C][N] features over pixels [x0, x1), for the PCA.
 *
 * shrink_planes(src, out, C, H, W, s, c0, c1): s×s box means of float32 planes (the fast
 *   mode's subsampling when s divides H and W).
 *
 * apply_upsampled(means, guide, out, taps..., K, h, w, H, W, k0, k1, y0, y1): the fast mode's
 *   output, Σ_i up(mean a_i)·I_i + up(mean b), from low-resolution coefficient means.
 *
 * project_rows(src, comp, shift, out, C, K, N, x0, x1): the PCA projection of raw features,
 *   out[k][x] = Σ_c comp[k][c] · (src[c][x] − shift[c]) for pixels [x0, x1), summed in float64
 *   (src float32 [C][N], comp float64 [K][C], shift float64 [C], out float32 [K][N]).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#ifndef STRIP
#define STRIP 256 /* output columns per strip: keeps a group's working set in L2 */
#endif
#define ALIGN 64

typedef struct {
    const double *pixel; /* [H][W][PIX]: I0, I1, I2, 1/N */
    const double *coef;  /* [H][W][COEF]: 1/N, mean I0, I1, I2, (Σ + εU)⁻¹ 00, 01, 02, 11, 12, 22 */
    int H, W, r;
} Guide;
#define PIX 4
#define COEF 10

typedef struct {
    const float *src; /* first channel of the group, [H][W] planes */
    int lanes;        /* channels in the group (≤ LANES); unused lanes hold zeros */
} Group;

/* A vertical strip of the image. Output columns [x0, x1) need coefficients on
 * [c0, c1) = [x0 − r, x1 + r) ∩ [0, W), which need inputs on [i0, i1) = [c0 − r, c1 + r) ∩ [0, W).
 * Column sums are stored with r entries of zeros beyond each end of the span they serve. */
typedef struct {
    int x0, x1, c0, c1, i0, i1;
} Strip;

static int imax(int a, int b) { return a > b ? a : b; }
static int imin(int a, int b) { return a < b ? a : b; }

static Strip make_strip(int x0, int x1, int W, int r)
{
    Strip s = {x0, x1, imax(0, x0 - r), imin(W, x1 + r), 0, 0};
    s.i0 = imax(0, s.c0 - r);
    s.i1 = imin(W, s.c1 + r);
    return s;
}

static void *alloc_aligned(size_t bytes)
{
    void *p = NULL;
    return posix_memalign(&p, ALIGN, bytes ? bytes : ALIGN) == 0 ? p : NULL;
}

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#if defined(__clang__)
#define SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define SHUFFLE4(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int vi2 __attribute__((vector_size(2 * sizeof(int))));
typedef int vi4 __attribute__((vector_size(4 * sizeof(int))));
typedef int vi8 __attribute__((vector_size(8 * sizeof(int))));
#define SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, (vi2){__VA_ARGS__})
#define SHUFFLE4(a, b, ...) __builtin_shuffle(a, b, (vi4){__VA_ARGS__})
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (vi8){__VA_ARGS__})
#endif

typedef int (*filter_fn)(const Guide *, const float *, float *, int, int, int, int, size_t);
typedef int (*moments_fn)(const float *, size_t, int, const double *, size_t, size_t, double *,
                          double *);
typedef struct {
    const char *name;
    int lanes;
    filter_fn run;
    moments_fn moments;
    int (*supported)(void);
} Variant;

/* the baseline: 2 lanes, whatever the compiler targets by default */
#define LANES 2
#define V(name) CAT(name, base)
#include "cpu_guided_filter_impl.h"
#undef V
#undef LANES
static int supported_base(void) { return 1; }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_VARIANTS 1
#include <immintrin.h>
/* each variant's functions are compiled for its instruction set (GCC: target pragmas; clang,
 * which ignores those: a target attribute applied to every function in the region) */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define LANES 4
#define V(name) CAT(name, avx2)
#include "cpu_guided_filter_impl.h"
#undef V
#undef LANES
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
static int supported_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#endif
#define LANES 8
#define V(name) CAT(name, avx512)
#include "cpu_guided_filter_impl.h"
#undef V
#undef LANES
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
static int supported_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
}
#endif

/* widest first */
static const Variant VARIANTS[] = {
#ifdef HAVE_X86_VARIANTS
    {"avx512", 8, filter_range_avx512, moments_range_avx512, supported_avx512},
    {"avx2", 4, filter_range_avx2, moments_range_avx2, supported_avx2},
#endif
    {"baseline", 2, filter_range_base, moments_range_base, supported_base},
};
#define N_VARIANTS ((int)(sizeof(VARIANTS) / sizeof(VARIANTS[0])))

/* The named variant if the CPU runs it, else the widest it runs; NULL (with an exception set)
 * for an unknown or unsupported name. */
static const Variant *pick_variant(const char *name)
{
    for (int i = 0; i < N_VARIANTS; ++i) {
        if (!VARIANTS[i].supported())
            continue;
        if (!name || strcmp(name, VARIANTS[i].name) == 0)
            return &VARIANTS[i];
    }
    PyErr_Format(PyExc_ValueError, "variant %s is unknown or not supported by this CPU", name);
    return NULL;
}

#include "buffer_args.h"

static PyObject *filter_rows(PyObject *self, PyObject *args)
{
    PyObject *objs[4];
    int C, H, W, r, y0, y1, c0, c1, coef = 0;
    const char *name = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOiiiiiiii|zp", &objs[0], &objs[1], &objs[2], &objs[3], &C, &H,
                          &W, &r, &y0, &y1, &c0, &c1, &name, &coef))
        return NULL;
    if (C < 0 || H < 1 || W < 1 || r < 0 || y0 < 0 || y1 > H || y0 >= y1 || c0 < 0 || c1 > C ||
        c0 > c1) {
        PyErr_SetString(PyExc_ValueError, "filter_rows: inconsistent sizes or ranges");
        return NULL;
    }
    const Variant *variant = pick_variant(name);
    if (!variant)
        return NULL;
    const Py_ssize_t plane = (Py_ssize_t)H * W;
    const BufferArg specs[4] = {{"src", C * plane, 4, 0},
                                {"pixel", PIX * plane, 8, 0},
                                {"coef_table", COEF * plane, 8, 0},
                                {"out", (coef ? 4 : 1) * (Py_ssize_t)C * (y1 - y0) * W, 4, 1}};
    Py_buffer views[4];
    if (get_buffers(objs, views, specs, 4) < 0)
        return NULL;

    const Guide g = {views[1].buf, views[2].buf, H, W, r};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = variant->run(&g, views[0].buf, views[3].buf, y0, y1, c0, c1,
                          coef ? (size_t)C * (y1 - y0) * W : 0);
    Py_END_ALLOW_THREADS

    release_buffers(views, 4);
    if (status < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* moments_rows(src, shift, gram, sum, C, n, x0, x1[, variant]): adds Σ_x d and the lower
 * triangle of Σ_x ddᵀ, d = src[:, x] − shift, over pixels [x0, x1) of float32 [C][n] src, into
 * float64 gram [C][C] and sum [C]. */
static PyObject *moments_rows(PyObject *self, PyObject *args)
{
    PyObject *objs[4];
    int C;
    Py_ssize_t n, x0, x1;
    const char *name = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOinnn|z", &objs[0], &objs[1], &objs[2], &objs[3], &C, &n,
                          &x0, &x1, &name))
        return NULL;
    if (C < 1 || n < 1 || x0 < 0 || x1 > n || x0 > x1) {
        PyErr_SetString(PyExc_ValueError, "moments_rows: inconsistent sizes or ranges");
        return NULL;
    }
    const Variant *variant = pick_variant(name);
    if (!variant)
        return NULL;
    const BufferArg specs[4] = {
        {"src", C * n, 4, 0}, {"shift", C, 8, 0}, {"gram", (Py_ssize_t)C * C, 8, 1}, {"sum", C, 8, 1}};
    Py_buffer views[4];
    if (get_buffers(objs, views, specs, 4) < 0)
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = variant->moments(views[0].buf, (size_t)n, C, views[1].buf, (size_t)x0, (size_t)x1,
                              views[2].buf, views[3].buf);
    Py_END_ALLOW_THREADS
    release_buffers(views, 4);
    if (status < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* out[k][x] = Σ_c components[k][c] · (src[c][x] − shift[c]) for pixels [x0, x1), in float64 */
#if defined(HAVE_X86_VARIANTS) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void project_range(const float *src, const double *comp, const double *shift, float *out,
                          int C, int K, size_t n, size_t x0, size_t x1, double *acc)
{
    enum { BLOCK = 512 };
    double *centred = acc + (size_t)K * BLOCK;
    for (size_t b0 = x0; b0 < x1; b0 += BLOCK) {
        const size_t len = x1 - b0 < BLOCK ? x1 - b0 : BLOCK;
        memset(acc, 0, sizeof(double) * (size_t)K * BLOCK);
        for (int c = 0; c < C; ++c) {
            const float *p = src + (size_t)c * n + b0;
            const double s = shift[c];
            for (size_t x = 0; x < len; ++x)
                centred[x] = (double)p[x] - s;
            for (int k = 0; k < K; ++k) {
                const double v = comp[(size_t)k * C + c];
                double *a = acc + (size_t)k * BLOCK;
                for (size_t x = 0; x < len; ++x)
                    a[x] += v * centred[x];
            }
        }
        for (int k = 0; k < K; ++k)
            for (size_t x = 0; x < len; ++x)
                out[(size_t)k * n + b0 + x] = (float)acc[(size_t)k * BLOCK + x];
    }
}

/* out[c][Y][X] = mean of src[c][sY .. sY+s-1][sX .. sX+s-1] for planes [c0, c1); float32 sums,
 * rows first (acc holds W sums). H and W are multiples of s. */
#if defined(HAVE_X86_VARIANTS) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void shrink_range(const float *src, float *out, int H, int W, int s, int c0, int c1,
                         float *acc)
{
    const int h = H / s, w = W / s;
    const float scale = 1.0f / ((float)s * (float)s);
    for (int c = c0; c < c1; ++c)
        for (int y = 0; y < h; ++y) {
            const float *row = src + ((size_t)c * H + (size_t)y * s) * W;
            for (int x = 0; x < W; ++x)
                acc[x] = row[x];
            for (int k = 1; k < s; ++k)
                for (int x = 0; x < W; ++x)
                    acc[x] += row[(size_t)k * W + x];
            float *o = out + ((size_t)c * h + y) * w;
            if (s == 4) {
                for (int x = 0; x < w; ++x)
                    o[x] = ((acc[4 * x] + acc[4 * x + 1]) + (acc[4 * x + 2] + acc[4 * x + 3])) *
                           scale;
            } else {
                for (int x = 0; x < w; ++x) {
                    float t = 0.0f;
                    for (int k = 0; k < s; ++k)
                        t += acc[s * x + k];
                    o[x] = t * scale;
                }
            }
        }
}

/* shrink_planes(src, out, C, H, W, s, c0, c1): box means of s×s blocks of float32 planes */
static PyObject *shrink_planes(PyObject *self, PyObject *args)
{
    PyObject *objs[2];
    int C, H, W, s, c0, c1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiiiiii", &objs[0], &objs[1], &C, &H, &W, &s, &c0, &c1))
        return NULL;
    if (C < 1 || s < 1 || H < s || W < s || H % s || W % s || c0 < 0 || c1 > C || c0 >= c1) {
        PyErr_SetString(PyExc_ValueError, "shrink_planes: inconsistent sizes or ranges");
        return NULL;
    }
    const BufferArg specs[2] = {{"src", (Py_ssize_t)C * H * W, 4, 0},
                                {"out", (Py_ssize_t)C * (H / s) * (W / s), 4, 1}};
    Py_buffer views[2];
    if (get_buffers(objs, views, specs, 2) < 0)
        return NULL;
    float *acc = malloc(sizeof(float) * (size_t)W);
    if (acc) {
        Py_BEGIN_ALLOW_THREADS
        shrink_range(views[0].buf, views[1].buf, H, W, s, c0, c1, acc);
        Py_END_ALLOW_THREADS
        free(acc);
    }
    release_buffers(views, 2);
    if (!acc)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* The fast mode's output rows [y0, y1) of components [k0, k1):
 * out[k][y][x] = Σ_i up(A_i)[k][y][x]·I_i[y][x] + up(B)[k][y][x], where means = [A0, A1, A2, B]
 * (each [K][h][w]) are upsampled bilinearly with the given taps (half-pixel centres, clamped
 * edges) and the guide I is interleaved float32 [H][W][3]. Each low-resolution row is first
 * upsampled along x into `wide` ([2][4][W]: the two rows the current output row blends). */
#if defined(HAVE_X86_VARIANTS) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void apply_range(const float *means, int K, int h, int w, const float *guide, int W,
                        const int *yi0, const int *yi1, const float *yw, const int *xi0,
                        const int *xi1, const float *xw, float *out, int H, int k0, int k1,
                        int y0, int y1, float *wide)
{
    const size_t lowplane = (size_t)h * w, set = (size_t)K * lowplane;
    for (int k = k0; k < k1; ++k) {
        int held[2] = {-1, -1};
        for (int y = y0; y < y1; ++y) {
            const int want[2] = {yi0[y], yi1[y]};
            int slot[2];
            for (int j = 0; j < 2; ++j) {
                if (held[0] == want[j])
                    slot[j] = 0;
                else if (held[1] == want[j])
                    slot[j] = 1;
                else {
                    /* replace the row the other tap does not use */
                    slot[j] = (j == 1 && slot[0] == 0) || held[0] == want[1 - j] ? 1 : 0;
                    held[slot[j]] = want[j];
                    for (int q = 0; q < 4; ++q) {
                        const float *src = means + q * set + (size_t)k * lowplane +
                                           (size_t)want[j] * w;
                        float *dst = wide + ((size_t)slot[j] * 4 + q) * W;
                        for (int x = 0; x < W; ++x)
                            dst[x] = src[xi0[x]] * (1.0f - xw[x]) + src[xi1[x]] * xw[x];
                    }
                }
            }
            const float b = yw[y], a = 1.0f - b;
            const float *r0 = wide + (size_t)slot[0] * 4 * W, *r1 = wide + (size_t)slot[1] * 4 * W;
            const float *g = guide + (size_t)y * W * 3;
            float *restrict o = out + ((size_t)k * H + y) * W;
            for (int x = 0; x < W; ++x) {
                const float a0 = r0[x] * a + r1[x] * b;
                const float a1 = r0[W + x] * a + r1[W + x] * b;
                const float a2 = r0[2 * W + x] * a + r1[2 * W + x] * b;
                const float bb = r0[3 * W + x] * a + r1[3 * W + x] * b;
                o[x] = a0 * g[3 * x] + a1 * g[3 * x + 1] + a2 * g[3 * x + 2] + bb;
            }
        }
    }
}

/* apply_upsampled(means, guide, out, yi0, yi1, yw, xi0, xi1, xw, K, h, w, H, W, k0, k1, y0, y1) */
static PyObject *apply_upsampled(PyObject *self, PyObject *args)
{
    PyObject *objs[9];
    int K, h, w, H, W, k0, k1, y0, y1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOiiiiiiiii", &objs[0], &objs[1], &objs[2], &objs[3],
                          &objs[4], &objs[5], &objs[6], &objs[7], &objs[8], &K, &h, &w, &H, &W,
                          &k0, &k1, &y0, &y1))
        return NULL;
    if (K < 1 || h < 1 || w < 1 || H < 1 || W < 1 || k0 < 0 || k1 > K || k0 >= k1 || y0 < 0 ||
        y1 > H || y0 >= y1) {
        PyErr_SetString(PyExc_ValueError, "apply_upsampled: inconsistent sizes or ranges");
        return NULL;
    }
    const BufferArg specs[9] = {{"means", 4 * (Py_ssize_t)K * h * w, 4, 0},
                                {"guide", (Py_ssize_t)H * W * 3, 4, 0},
                                {"out", (Py_ssize_t)K * H * W, 4, 1},
                                {"yi0", H, 4, 0}, {"yi1", H, 4, 0}, {"yw", H, 4, 0},
                                {"xi0", W, 4, 0}, {"xi1", W, 4, 0}, {"xw", W, 4, 0}};
    Py_buffer views[9];
    if (get_buffers(objs, views, specs, 9) < 0)
        return NULL;
    const int *yi0 = views[3].buf, *yi1 = views[4].buf, *xi0 = views[6].buf, *xi1 = views[7].buf;
    int ok = 1;
    for (int i = 0; i < H; ++i)
        ok &= yi0[i] >= 0 && yi1[i] >= 0 && yi0[i] < h && yi1[i] < h;
    for (int i = 0; i < W; ++i)
        ok &= xi0[i] >= 0 && xi1[i] >= 0 && xi0[i] < w && xi1[i] < w;
    float *wide = ok ? malloc(sizeof(float) * 8 * (size_t)W) : NULL;
    if (wide) {
        Py_BEGIN_ALLOW_THREADS
        apply_range(views[0].buf, K, h, w, views[1].buf, W, yi0, yi1, views[5].buf, xi0, xi1,
                    views[8].buf, views[2].buf, H, k0, k1, y0, y1, wide);
        Py_END_ALLOW_THREADS
        free(wide);
    }
    release_buffers(views, 9);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "apply_upsampled: a tap index is out of range");
        return NULL;
    }
    if (!wide)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* col[q][x] += sign · (I0, I1, I2, I0², I0I1, I0I2, I1², I1I2, I2²)[q] of guide row y */
static void add_guide_row(double *col, const double *g, size_t plane, int W, int y, double sign)
{
    const double *I0 = g + (size_t)y * W, *I1 = I0 + plane, *I2 = I1 + plane;
    double *c[9];
    for (int q = 0; q < 9; ++q)
        c[q] = col + (size_t)q * W;
    for (int x = 0; x < W; ++x) {
        const double a = I0[x], b = I1[x], d = I2[x];
        c[0][x] += sign * a;
        c[1][x] += sign * b;
        c[2][x] += sign * d;
        c[3][x] += sign * a * a;
        c[4][x] += sign * a * b;
        c[5][x] += sign * a * d;
        c[6][x] += sign * b * b;
        c[7][x] += sign * b * d;
        c[8][x] += sign * d * d;
    }
}

/* The guide's window means, (Σ + εU)⁻¹ and 1/N(x) under the truncated-window rule, from float64
 * running box sums (column sums over rows, then running sums along each row). */
#if defined(HAVE_X86_VARIANTS) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void guide_statistics(const double *g, int H, int W, int r, double eps, int y0, int y1,
                             double *pixel, double *coef, double *col, double *box)
{
    const size_t plane = (size_t)H * W;
    memset(col, 0, sizeof(double) * 9 * (size_t)W);
    for (int i = imax(0, y0 - r); i <= y0 + r && i < H; ++i)
        add_guide_row(col, g, plane, W, i, 1.0);
    for (int y = y0; y < y1; ++y) {
        if (y > y0 && y + r < H)
            add_guide_row(col, g, plane, W, y + r, 1.0);
        if (y > y0 && y - r - 1 >= 0)
            add_guide_row(col, g, plane, W, y - r - 1, -1.0);
        for (int q = 0; q < 9; ++q) {
            const double *c = col + (size_t)q * W;
            double *b = box + (size_t)q * W, run = 0.0;
            for (int x = 0; x <= r && x < W; ++x)
                run += c[x];
            for (int x = 0; x < W; ++x) {
                b[x] = run;
                if (x + r + 1 < W)
                    run += c[x + r + 1];
                if (x - r >= 0)
                    run -= c[x - r];
            }
        }
        const int ny = imin(H - 1, y + r) - imax(0, y - r) + 1;
        const size_t off = (size_t)y * W;
        for (int x = 0; x < W; ++x) {
            const int nx = imin(W - 1, x + r) - imax(0, x - r) + 1;
            const double k = 1.0 / ((double)ny * nx);
            const double m0 = box[x] * k, m1 = box[W + x] * k, m2 = box[2 * (size_t)W + x] * k;
            const double *s2 = box + 3 * (size_t)W + x;
            const double a = s2[0] * k - m0 * m0 + eps, b = s2[W] * k - m0 * m1;
            const double c = s2[2 * (size_t)W] * k - m0 * m2;
            const double d = s2[3 * (size_t)W] * k - m1 * m1 + eps;
            const double e = s2[4 * (size_t)W] * k - m1 * m2;
            const double f = s2[5 * (size_t)W] * k - m2 * m2 + eps;
            /* symmetric 3×3 [[a b c] [b d e] [c e f]]: adjugate / determinant */
            const double i00 = d * f - e * e, i01 = c * e - b * f, i02 = b * e - c * d;
            const double i11 = a * f - c * c, i12 = b * c - a * e, i22 = a * d - b * b;
            const double det = 1.0 / (a * i00 + b * i01 + c * i02);
            double *px = pixel + PIX * (off + x), *cf = coef + COEF * (off + x);
            px[0] = g[off + x];
            px[1] = g[plane + off + x];
            px[2] = g[2 * plane + off + x];
            px[3] = k;
            cf[0] = k;
            cf[1] = m0;
            cf[2] = m1;
            cf[3] = m2;
            cf[4] = i00 * det;
            cf[5] = i01 * det;
            cf[6] = i02 * det;
            cf[7] = i11 * det;
            cf[8] = i12 * det;
            cf[9] = i22 * det;
        }
    }
}

static PyObject *guide_stats(PyObject *self, PyObject *args)
{
    PyObject *objs[3];
    int H, W, r, y0 = 0, y1 = -1;
    double eps;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOiiid|ii", &objs[0], &objs[1], &objs[2], &H, &W, &r, &eps, &y0,
                          &y1))
        return NULL;
    if (y1 < 0)
        y1 = H;
    if (H < 1 || W < 1 || r < 0 || !(eps > 0.0) || y0 < 0 || y1 > H || y0 >= y1) {
        PyErr_SetString(PyExc_ValueError, "guide_stats: inconsistent sizes, rows, radius or eps");
        return NULL;
    }
    const Py_ssize_t plane = (Py_ssize_t)H * W;
    const BufferArg specs[3] = {{"guide", 3 * plane, 8, 0},
                                {"pixel", PIX * plane, 8, 1},
                                {"coef_table", COEF * plane, 8, 1}};
    Py_buffer views[3];
    if (get_buffers(objs, views, specs, 3) < 0)
        return NULL;
    double *work = malloc(sizeof(double) * 18 * (size_t)W);
    if (work) {
        Py_BEGIN_ALLOW_THREADS
        guide_statistics(views[0].buf, H, W, r, eps, y0, y1, views[1].buf, views[2].buf, work,
                         work + 9 * (size_t)W);
        Py_END_ALLOW_THREADS
        free(work);
    }
    release_buffers(views, 3);
    if (!work)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *project_rows(PyObject *self, PyObject *args)
{
    PyObject *objs[4];
    int C, K;
    Py_ssize_t n, x0, x1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOiinnn", &objs[0], &objs[1], &objs[2], &objs[3], &C, &K, &n,
                          &x0, &x1))
        return NULL;
    if (C < 1 || K < 1 || n < 1 || x0 < 0 || x1 > n || x0 >= x1) {
        PyErr_SetString(PyExc_ValueError, "project_rows: inconsistent sizes or ranges");
        return NULL;
    }
    const BufferArg specs[4] = {{"src", C * n, 4, 0},
                                {"comp", (Py_ssize_t)K * C, 8, 0},
                                {"shift", C, 8, 0},
                                {"out", K * n, 4, 1}};
    Py_buffer views[4];
    if (get_buffers(objs, views, specs, 4) < 0)
        return NULL;
    double *acc = malloc(sizeof(double) * ((size_t)K + 1) * 512);
    if (acc) {
        Py_BEGIN_ALLOW_THREADS
        project_range(views[0].buf, views[1].buf, views[2].buf, views[3].buf, C, K, (size_t)n,
                      (size_t)x0, (size_t)x1, acc);
        Py_END_ALLOW_THREADS
        free(acc);
    }
    release_buffers(views, 4);
    if (!acc)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* One row of a bilinear upsampling (ONNX Resize, linear, half-pixel centres, clamped edges):
 * out[x] += lerp over the row mixed from low-resolution rows i0, i1 with weight wy of i1. */
typedef struct {
    const float *src;          /* [C][rows][w] low-resolution block */
    int rows, w;
    const int *yi0, *yi1;      /* [n] rows of the block for each output row */
    const float *yw;           /* [n] */
    const int *xi0, *xi1;      /* [W] */
    const float *xw;           /* [W] */
} Upsample;

/* Per channel: each low-resolution row of each block is first upsampled along x (W wide), so
 * that every output row is then a contiguous blend of two wide rows per block. */
#if defined(HAVE_X86_VARIANTS) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void hidden_range(const float *tin, int cin, size_t plane_in, const float *fin,
                         const Upsample up[2], const float *bias, int W, int n, int y0, int c0,
                         int c1, float *out, float *wide)
{
    for (int c = c0; c < c1; ++c) {
        float *w = wide;
        for (int u = 0; u < 2; ++u) {
            const Upsample *U = up + u;
            const float *blk = U->src + (size_t)c * U->rows * U->w;
            for (int r = 0; r < U->rows; ++r, w += W) {
                const float *src = blk + (size_t)r * U->w;
                for (int x = 0; x < W; ++x)
                    w[x] = src[U->xi0[x]] * (1.0f - U->xw[x]) + src[U->xi1[x]] * U->xw[x];
            }
        }
        const size_t rows0 = (size_t)up[0].rows * W;
        for (int y = 0; y < n; ++y) {
            float *restrict o = out + ((size_t)c * n + y) * W;
            const float b = bias[c];
            const float *restrict p0 = wide + (size_t)up[0].yi0[y] * W;
            const float *restrict p1 = wide + (size_t)up[0].yi1[y] * W;
            const float *restrict d0 = wide + rows0 + (size_t)up[1].yi0[y] * W;
            const float *restrict d1 = wide + rows0 + (size_t)up[1].yi1[y] * W;
            const float pw = up[0].yw[y], pv = 1.0f - pw, dw = up[1].yw[y], dv = 1.0f - dw;
            for (int x = 0; x < W; ++x)
                o[x] = b + p0[x] * pv + p1[x] * pw + d0[x] * dv + d1[x] * dw;
            for (int j = 0; j < cin; ++j) {
                const float f = fin[(size_t)c * cin + j];
                const float *restrict t = tin + (size_t)j * plane_in + (size_t)(y0 + y) * W;
                if (j + 1 < cin) {
                    for (int x = 0; x < W; ++x)
                        o[x] += f * t[x];
                } else { /* the last input channel also applies the ReLU */
                    for (int x = 0; x < W; ++x) {
                        const float v = o[x] + f * t[x];
                        o[x] = v > 0.0f ? v : 0.0f;
                    }
                }
            }
        }
    }
}

/* The two (block, yi0, yi1, yw, xi0, xi1, xw, rows, w) tuples of the head entry points: buffers
 * acquired into views (7 each; *got counts them), taps checked against their blocks. Returns the
 * total number of block rows, or -1 with an exception set. */
static long parse_ups(PyObject *const ups_o[2], Py_buffer *views, int *got, Upsample up[2],
                      int channels, int n, int W)
{
    long wide_rows = 0;
    for (int u = 0; u < 2; ++u) {
        int rows, w, ok = 1;
        PyObject *parts[7];
        if (!PyArg_ParseTuple(ups_o[u], "OOOOOOOii", &parts[0], &parts[1], &parts[2], &parts[3],
                              &parts[4], &parts[5], &parts[6], &rows, &w))
            return -1;
        if (rows < 1 || w < 1) {
            PyErr_SetString(PyExc_ValueError, "head: empty low-resolution block");
            return -1;
        }
        const BufferArg pspecs[7] = {
            {"block", (Py_ssize_t)channels * rows * w, 4, 0}, {"yi0", n, 4, 0}, {"yi1", n, 4, 0},
            {"yw", n, 4, 0}, {"xi0", W, 4, 0}, {"xi1", W, 4, 0}, {"xw", W, 4, 0}};
        if (get_buffers(parts, views + *got, pspecs, 7) < 0)
            return -1;
        *got += 7;
        Py_buffer *v = views + *got - 7;
        up[u] = (Upsample){v[0].buf, rows, w, v[1].buf, v[2].buf, v[3].buf,
                           v[4].buf, v[5].buf, v[6].buf};
        for (int i = 0; i < n; ++i)
            ok &= up[u].yi0[i] >= 0 && up[u].yi1[i] >= 0 && up[u].yi0[i] < rows && up[u].yi1[i] < rows;
        for (int i = 0; i < W; ++i)
            ok &= up[u].xi0[i] >= 0 && up[u].xi1[i] >= 0 && up[u].xi0[i] < w && up[u].xi1[i] < w;
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "head: a tap index is out of its block");
            return -1;
        }
        wide_rows += rows;
    }
    return wide_rows;
}

/* hidden_rows(tin, fin, bias, out, up_p1, up_deep, cin, W, H_in, y0, n, c0, c1) with each up
 * a tuple (block, yi0, yi1, yw, xi0, xi1, xw, rows, w). */
static PyObject *hidden_rows(PyObject *self, PyObject *args)
{
    PyObject *tin_o, *fin_o, *bias_o, *out_o, *ups_o[2];
    int cin, W, H, y0, n, c0, c1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOO!O!iiiiiii", &tin_o, &fin_o, &bias_o, &out_o,
                          &PyTuple_Type, &ups_o[0], &PyTuple_Type, &ups_o[1], &cin, &W, &H, &y0,
                          &n, &c0, &c1))
        return NULL;
    if (cin < 1 || W < 1 || H < 1 || n < 1 || y0 < 0 || y0 + n > H || c0 < 0 || c0 >= c1) {
        PyErr_SetString(PyExc_ValueError, "hidden_rows: inconsistent sizes or ranges");
        return NULL;
    }
    Py_buffer views[4 + 2 * 7];
    int got = 0;
    Upsample up[2];
    const Py_ssize_t plane = (Py_ssize_t)H * W;
    PyObject *const objs[4] = {tin_o, fin_o, bias_o, out_o};
    const BufferArg specs[4] = {{"tin", cin * plane, 4, 0},
                                {"fin", (Py_ssize_t)c1 * cin, 4, 0},
                                {"bias", c1, 4, 0},
                                {"out", (Py_ssize_t)c1 * n * W, 4, 1}};
    int ok = get_buffers(objs, views, specs, 4) == 0;
    got = ok ? 4 : 0;
    const long wide_rows = ok ? parse_ups(ups_o, views, &got, up, c1, n, W) : -1;
    ok = wide_rows >= 0;
    float *row = ok ? malloc(sizeof(float) * (size_t)wide_rows * (size_t)W) : NULL;
    if (ok && row) {
        Py_BEGIN_ALLOW_THREADS
        hidden_range(views[0].buf, cin, (size_t)plane, views[1].buf, up, views[2].buf, W, n, y0,
                     c0, c1, views[3].buf, row);
        Py_END_ALLOW_THREADS
    }
    free(row);
    release_buffers(views, got);
    if (!ok)
        return NULL;
    if (!row)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

#include "cpu_head_bf16.h"

/* head_variants(): the bf16 head variants this CPU (and OS) runs, fastest first. */
static PyObject *head_variants(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *list = PyList_New(0);
#ifdef HAVE_HEAD_BF16
    if (list && amx_supported() && PyList_Append(list, PyUnicode_FromString("amx-bf16")) < 0)
        Py_CLEAR(list);
    if (list && avx512bf16_supported() &&
        PyList_Append(list, PyUnicode_FromString("avx512-bf16")) < 0)
        Py_CLEAR(list);
    if (list && avx512vnni_supported() &&
        PyList_Append(list, PyUnicode_FromString("avx512-vnni-int8")) < 0)
        Py_CLEAR(list);
#endif
    return list;
}

/* head_rows_bf16(tin, fin, bias, wpack, hbias, out, up_p1, up_deep, cin, W, H_in, y0, n, K, M,
 *                r0, r1, variant, nout, row0) */
static PyObject *head_rows_bf16(PyObject *self, PyObject *args)
{
    PyObject *objs[6], *ups_o[2];
    int cin, W, H, y0, n, K, M, r0, r1, nout, row0;
    const char *variant;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOO!O!iiiiiiiiisii", &objs[0], &objs[1], &objs[2],
                          &objs[3], &objs[4], &objs[5], &PyTuple_Type, &ups_o[0], &PyTuple_Type,
                          &ups_o[1], &cin, &W, &H, &y0, &n, &K, &M, &r0, &r1, &variant, &nout,
                          &row0))
        return NULL;
#ifndef HAVE_HEAD_BF16
    PyErr_SetString(PyExc_RuntimeError, "head_rows_bf16: built without the bf16 head");
    return NULL;
#else
    int v = strcmp(variant, "amx-bf16") == 0      ? 0
            : strcmp(variant, "avx512-bf16") == 0 ? 1
            : strcmp(variant, "avx512-vnni-int8") == 0 ? 2
                                                   : -1;
    if (v < 0 || (v == 0 && !amx_supported()) || (v == 1 && !avx512bf16_supported()) ||
        (v == 2 && !avx512vnni_supported())) {
        PyErr_Format(PyExc_ValueError, "head variant %s is unknown or not supported here", variant);
        return NULL;
    }
    if (cin < 1 || cin > 8 || W < 1 || H < 1 || n < 1 || y0 < 0 || y0 + n > H || K < 32 ||
        K % 32 || M < 1 || r0 < 0 || r1 > n || r0 >= r1 || row0 < 0 || row0 + n > nout) {
        PyErr_SetString(PyExc_ValueError, "head_rows_bf16: inconsistent sizes or ranges");
        return NULL;
    }
    const int Mt = (M + 31) / 32 * 2;
    const Py_ssize_t plane = (Py_ssize_t)H * W;
    const BufferArg specs[6] = {{"tin", cin * plane, 4, 0},
                                {"fin", (Py_ssize_t)K * cin, 4, 0},
                                {"bias", K, 4, 0},
                                {"wpack", (Py_ssize_t)Mt * 16 * K, v == 2 ? 1 : 2, 0},
                                {"hbias", (Py_ssize_t)Mt * 16 * (v == 2 ? 2 : 1), 4, 0},
                                {"out", (Py_ssize_t)M * nout * W, 4, 1}};
    Py_buffer views[6 + 2 * 7];
    Upsample up[2];
    int got = 0;
    int ok = get_buffers(objs, views, specs, 6) == 0;
    got = ok ? 6 : 0;
    ok = ok && parse_ups(ups_o, views, &got, up, K, n, W) >= 0;
    int status = 0;
    if (ok) {
        const HeadArgs a = {views[0].buf, cin, (size_t)plane, y0, views[1].buf, views[2].buf, up,
                            views[3].buf, views[4].buf, K, M, Mt, W, n, views[5].buf, nout,
                            row0};
        Py_BEGIN_ALLOW_THREADS
        status = head_range_bf16(&a, r0, r1, v);
        Py_END_ALLOW_THREADS
    }
    release_buffers(views, got);
    if (!ok)
        return NULL;
    if (status < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
#endif
}

static PyObject *variants(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < N_VARIANTS; ++i) {
        if (!VARIANTS[i].supported())
            continue;
        PyObject *item = Py_BuildValue("(si)", VARIANTS[i].name, VARIANTS[i].lanes);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

static PyMethodDef methods[] = {
    {"filter_rows", filter_rows, METH_VARARGS,
     "Guided-filter rows y0..y1-1 of channels c0..c1-1 (see the module source for the layout)."},
    {"moments_rows", moments_rows, METH_VARARGS,
     "Add Σd and the lower triangle of Σddᵀ, d = src[:, x] − shift, over pixels [x0, x1)."},
    {"shrink_planes", shrink_planes, METH_VARARGS,
     "Box means of s×s blocks of float32 [C][H][W] planes, planes c0..c1-1."},
    {"apply_upsampled", apply_upsampled, METH_VARARGS,
     "The fast mode's output: upsampled coefficient means applied to the full-resolution guide."},
    {"project_rows", project_rows, METH_VARARGS,
     "out[k][x] = Σ_c comp[k][c]·(src[c][x] − shift[c]) for x in [x0, x1), float64 sums."},
    {"guide_stats", guide_stats, METH_VARARGS,
     "Window means, (Σ + εU)⁻¹ and 1/N of a planar [3][H][W] guide (truncated windows)."},
    {"hidden_rows", hidden_rows, METH_VARARGS,
     "ReLU(fuse) rows of the network's full-resolution head (see sss_rt/head.py)."},
    {"head_variants", head_variants, METH_NOARGS,
     "The bf16 head variants this CPU and OS run, fastest first."},
    {"head_rows_bf16", head_rows_bf16, METH_VARARGS,
     "The head's full-resolution rows in bf16, fused (see kernels/cpu_head_bf16.h)."},
    {"variants", variants, METH_NOARGS,
     "The kernel variants this CPU runs, widest first, as (name, lanes) pairs."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_guided_filter",
                                    "Streaming color guided filter of many channels (float32).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cpu_guided_filter(void) { return PyModule_Create(&module); }
