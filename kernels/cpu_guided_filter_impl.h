/*
 * The streaming guided filter for one vector width, included once per instruction set by
 * cpu_guided_filter.c with LANES (channels per vector: 2, 4 or 8) and V(name) (the variant's
 * name for `name`) defined. See cpu_guided_filter.c for the algorithm and the layouts.
 */
#define VD V(vd)
#define VF V(vf)
#define VFU V(vfu)
typedef double VD __attribute__((vector_size(LANES * sizeof(double))));
typedef float VF __attribute__((vector_size(LANES * sizeof(float))));
typedef float VFU __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

/* float → double lanes: GCC 12 lowers __builtin_convertvector for 4 and 8 lanes to two
 * half-width conversions and a shuffle; the intrinsics are one instruction */
#if LANES == 8 && defined(HAVE_X86_VARIANTS)
#define WIDEN(x) ((VD)_mm512_cvtps_pd((__m256)(x)))
#elif LANES == 4 && defined(HAVE_X86_VARIANTS)
#define WIDEN(x) ((VD)_mm256_cvtps_pd((__m128)(x)))
#else
#define WIDEN(x) __builtin_convertvector(x, VD)
#endif

typedef struct {
    VD *col1;         /* [c1 − c0 + 2r][4] column sums of (p, p·I0, p·I1, p·I2) */
    VD *col2;         /* [x1 − x0 + 2r][4] column sums of (a0, a1, a2, b) */
    VF *ring;         /* [2r+2][c1 − c0][4] a0, a1, a2, b of recent rows */
    VF *inputs;       /* [2r+2][i1 − i0] recent input rows of the group, lanes interleaved */
    VF *tmp;          /* [4][x1 − x0] output rows before scattering */
    size_t span;      /* entries per row buffer */
    size_t coef;      /* 0: write the filtered output; else the four coefficient means, each
                         set of channel planes `coef` floats after the previous */
    int next;         /* next coefficient row to compute */
} V(Scratch);

/* In-register transpose of a LANES×LANES block: r[k][x] becomes r[x][k] (butterfly stages,
 * each swapping one bit of the row index with the same bit of the column index). */
static inline void V(transpose)(VF r[LANES])
{
#if LANES == 8
    for (int k = 0; k < 8; k += 2) {
        const VF a = r[k], b = r[k + 1];
        r[k] = SHUFFLE8(a, b, 0, 8, 2, 10, 4, 12, 6, 14);
        r[k + 1] = SHUFFLE8(a, b, 1, 9, 3, 11, 5, 13, 7, 15);
    }
    for (int k = 0; k < 8; k += 4)
        for (int j = k; j < k + 2; ++j) {
            const VF a = r[j], b = r[j + 2];
            r[j] = SHUFFLE8(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
            r[j + 2] = SHUFFLE8(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int j = 0; j < 4; ++j) {
        const VF a = r[j], b = r[j + 4];
        r[j] = SHUFFLE8(a, b, 0, 1, 2, 3, 8, 9, 10, 11);
        r[j + 4] = SHUFFLE8(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
    }
#elif LANES == 4
    for (int k = 0; k < 4; k += 2) {
        const VF a = r[k], b = r[k + 1];
        r[k] = SHUFFLE4(a, b, 0, 4, 2, 6);
        r[k + 1] = SHUFFLE4(a, b, 1, 5, 3, 7);
    }
    for (int j = 0; j < 2; ++j) {
        const VF a = r[j], b = r[j + 2];
        r[j] = SHUFFLE4(a, b, 0, 1, 4, 5);
        r[j + 2] = SHUFFLE4(a, b, 2, 3, 6, 7);
    }
#elif LANES == 2
    const VF a = r[0], b = r[1];
    r[0] = SHUFFLE2(a, b, 0, 2);
    r[1] = SHUFFLE2(a, b, 1, 3);
#else
#error "LANES must be 2, 4 or 8"
#endif
}

/* dst[x][k] = channel k of the group at row y, column `from` + x, for x < n; lanes past the
 * group's stay zero */
static void V(gather_row)(const Group *grp, size_t plane, int W, int y, int from, int n, VF *dst)
{
    const float *s[LANES];
    for (int k = 0; k < grp->lanes; ++k)
        s[k] = grp->src + (size_t)k * plane + (size_t)y * W + from;
    int x = 0;
    for (; x + LANES <= n; x += LANES) {
        VF blk[LANES] = {{0}};
        for (int k = 0; k < grp->lanes; ++k)
            blk[k] = *(const VFU *)(s[k] + x);
        V(transpose)(blk);
        for (int j = 0; j < LANES; ++j)
            dst[x + j] = blk[j];
    }
    float *d = (float *)dst;
    for (; x < n; ++x)
        for (int k = 0; k < grp->lanes; ++k)
            d[(size_t)x * LANES + k] = s[k][x];
}

/* o[k·out_plane + x] = lane k of src[x], for x < n and the group's lanes */
static void V(scatter_row)(const Group *grp, int n, const VF *src, float *o, size_t out_plane)
{
    int x = 0;
    for (; x + LANES <= n; x += LANES) {
        VF blk[LANES];
        for (int j = 0; j < LANES; ++j)
            blk[j] = src[x + j];
        V(transpose)(blk);
        for (int k = 0; k < grp->lanes; ++k)
            *(VFU *)(o + (size_t)k * out_plane + x) = blk[k];
    }
    const float *t = (const float *)src;
    for (; x < n; ++x)
        for (int k = 0; k < grp->lanes; ++k)
            o[(size_t)k * out_plane + x] = t[(size_t)x * LANES + k];
}

/* col1 += (p, p·I0, p·I1, p·I2) of row `in` − the same of row `out` (either may be -1: none) */
static void V(slide_input)(const Guide *g, const Group *grp, const Strip *st, V(Scratch) *s, int in,
                        int out)
{
    const int W = g->W, n = st->i1 - st->i0;
    const size_t plane = (size_t)g->H * W;
    VD *col = s->col1 + (size_t)4 * (st->i0 - st->c0 + g->r);
    /* a row is gathered once, when it enters the window, and read back when it leaves */
    const int R = 2 * g->r + 2;
    VF *row_in = in >= 0 ? s->inputs + (size_t)(in % R) * s->span : NULL;
    const VF *row_out = out >= 0 ? s->inputs + (size_t)(out % R) * s->span : NULL;
    if (row_in)
        V(gather_row)(grp, plane, W, in, st->i0, n, row_in);
    if (in >= 0 && out >= 0) {
        const double *I = g->pixel + PIX * ((size_t)in * W + st->i0);
        const double *J = g->pixel + PIX * ((size_t)out * W + st->i0);
        for (int x = 0; x < n; ++x) {
            const VD v = WIDEN(row_in[x]);
            const VD u = WIDEN(row_out[x]);
            const double *i = I + PIX * x, *j = J + PIX * x;
            VD *c = col + (size_t)4 * x;
            c[0] += v - u;
            c[1] += v * i[0] - u * j[0];
            c[2] += v * i[1] - u * j[1];
            c[3] += v * i[2] - u * j[2];
        }
        return;
    }
    const int row = in >= 0 ? in : out;
    if (row < 0)
        return;
    const double sign = in >= 0 ? 1.0 : -1.0;
    const VF *vals = in >= 0 ? row_in : row_out;
    const double *I = g->pixel + PIX * ((size_t)row * W + st->i0);
    for (int x = 0; x < n; ++x) {
        const VD v = WIDEN(vals[x]) * sign;
        const double *i = I + PIX * x;
        VD *c = col + (size_t)4 * x;
        c[0] += v;
        c[1] += v * i[0];
        c[2] += v * i[1];
        c[3] += v * i[2];
    }
}

/* col2 += ring row `in` − ring row `out` (either may be NULL) */
static void V(slide_coef)(const Guide *g, const Strip *st, VD *col, const VF *in, const VF *out)
{
    const int n = 4 * (st->c1 - st->c0);
    col += (size_t)4 * (st->c0 - st->x0 + g->r);
    if (in && out) {
        for (int i = 0; i < n; ++i)
            col[i] += WIDEN(in[i]) - WIDEN(out[i]);
    } else if (in) {
        for (int i = 0; i < n; ++i)
            col[i] += WIDEN(in[i]);
    } else if (out) {
        for (int i = 0; i < n; ++i)
            col[i] -= WIDEN(out[i]);
    }
}

/* The four running horizontal sums before the first column of a row: Σ col[i][q], i < 2r. */
static inline void V(prime)(const VD *col, int r, VD *s0, VD *s1, VD *s2, VD *s3)
{
    VD a = {0}, b = {0}, c = {0}, d = {0};
    for (int i = 0; i < 2 * r; ++i) {
        a += col[4 * i];
        b += col[4 * i + 1];
        c += col[4 * i + 2];
        d += col[4 * i + 3];
    }
    *s0 = a;
    *s1 = b;
    *s2 = c;
    *s3 = d;
}

/* Row t's coefficients a = (Σ + εU)⁻¹ cov(I, p), b = mean(p) − a·mean(I) on [c0, c1), from
 * running horizontal sums of the column sums (the zero padding truncates the window). */
static void V(coefficients)(const Guide *g, const Strip *st, const VD *col, VF *dst, int t)
{
    const int W = g->W, r = g->r, n = st->c1 - st->c0;
    const double *cf = g->coef + COEF * ((size_t)t * W + st->c0);
    VD s0, s1, s2, s3;
    V(prime)(col, r, &s0, &s1, &s2, &s3);
    for (int x = 0; x < n; ++x, cf += COEF) {
        const VD *hi = col + (size_t)4 * (x + 2 * r), *lo = col + (size_t)4 * x;
        s0 += hi[0];
        s1 += hi[1];
        s2 += hi[2];
        s3 += hi[3];
        const double k = cf[0], M0 = cf[1], M1 = cf[2], M2 = cf[3];
        const VD mp = s0 * k;
        const VD c0 = s1 * k - M0 * mp;
        const VD c1 = s2 * k - M1 * mp;
        const VD c2 = s3 * k - M2 * mp;
        const double V00 = cf[4], V01 = cf[5], V02 = cf[6];
        const double V11 = cf[7], V12 = cf[8], V22 = cf[9];
        const VD e0 = V00 * c0 + V01 * c1 + V02 * c2;
        const VD e1 = V01 * c0 + V11 * c1 + V12 * c2;
        const VD e2 = V02 * c0 + V12 * c1 + V22 * c2;
        VF *d = dst + (size_t)4 * x;
        d[0] = __builtin_convertvector(e0, VF);
        d[1] = __builtin_convertvector(e1, VF);
        d[2] = __builtin_convertvector(e2, VF);
        d[3] = __builtin_convertvector(mp - e0 * M0 - e1 * M1 - e2 * M2, VF);
        s0 -= lo[0];
        s1 -= lo[1];
        s2 -= lo[2];
        s3 -= lo[3];
    }
}

/* Output row y on [x0, x1): (box(a)·I + box(b)) / N from running horizontal sums of col2,
 * written to the group's output planes (`out` points at the row's column x0 of lane 0). */
static void V(output_row)(const Guide *g, const Group *grp, const Strip *st, const VD *col,
                       VF *tmp, size_t span, size_t coef, float *out, size_t out_plane, int y)
{
    const int W = g->W, r = g->r, n = st->x1 - st->x0;
    const double *px = g->pixel + PIX * ((size_t)y * W + st->x0);
    VD s0, s1, s2, s3;
    V(prime)(col, r, &s0, &s1, &s2, &s3);
    for (int x = 0; x < n; ++x, px += PIX) {
        const VD *hi = col + (size_t)4 * (x + 2 * r), *lo = col + (size_t)4 * x;
        s0 += hi[0];
        s1 += hi[1];
        s2 += hi[2];
        s3 += hi[3];
        const double k = px[3];
        if (coef) {
            tmp[x] = __builtin_convertvector(s0 * k, VF);
            tmp[span + x] = __builtin_convertvector(s1 * k, VF);
            tmp[2 * span + x] = __builtin_convertvector(s2 * k, VF);
            tmp[3 * span + x] = __builtin_convertvector(s3 * k, VF);
        } else {
            const VD o = s0 * px[0] + s1 * px[1] + s2 * px[2] + s3;
            tmp[x] = __builtin_convertvector(o * k, VF);
        }
        s0 -= lo[0];
        s1 -= lo[1];
        s2 -= lo[2];
        s3 -= lo[3];
    }
    for (int q = 0; q < (coef ? 4 : 1); ++q)
        V(scatter_row)(grp, n, tmp + q * span, out + q * coef, out_plane);
}

/* Start a strip's stream: column sums of the input rows around the first coefficient row. */
static void V(start_strip)(const Guide *g, const Group *grp, const Strip *st, int y0, V(Scratch) *s)
{
    const int r = g->r, ya0 = imax(0, y0 - r);
    memset(s->col1, 0, sizeof(VD) * (size_t)(st->c1 - st->c0 + 2 * r) * 4);
    for (int i = imax(0, ya0 - r); i < imin(g->H, ya0 + r + 1); ++i)
        V(slide_input)(g, grp, st, s, i, -1);
    s->next = ya0;
}

/* Produce output row y of one group on one strip (rows are produced in order from y0). */
static void V(strip_row)(const Guide *g, const Group *grp, const Strip *st, float *out,
                      size_t out_plane, int y0, int y, V(Scratch) *s)
{
    const int H = g->H, r = g->r, R = 2 * r + 2;
    const size_t rowlen = (size_t)(st->c1 - st->c0) * 4;
    const int ya0 = imax(0, y0 - r), need = imin(H, y + r + 1);
    for (; s->next < need; ++s->next) {
        const int t = s->next;
        if (t > ya0)
            V(slide_input)(g, grp, st, s, t + r < H ? t + r : -1, t - r - 1);
        V(coefficients)(g, st, s->col1, s->ring + (size_t)(t % R) * rowlen, t);
    }
    if (y == y0) {
        memset(s->col2, 0, sizeof(VD) * (size_t)(st->x1 - st->x0 + 2 * r) * 4);
        for (int i = imax(0, y - r); i < need; ++i)
            V(slide_coef)(g, st, s->col2, s->ring + (size_t)(i % R) * rowlen, NULL);
    } else {
        V(slide_coef)(g, st, s->col2,
                   y + r < H ? s->ring + (size_t)((y + r) % R) * rowlen : NULL,
                   y - r - 1 >= 0 ? s->ring + (size_t)((y - r - 1) % R) * rowlen : NULL);
    }
    V(output_row)(g, grp, st, s->col2, s->tmp, s->span, s->coef,
               out + (size_t)(y - y0) * g->W + st->x0, out_plane,
               y);
}

/* Filter rows [y0, y1) of channels [c0, c1), group by group, strip by strip. Returns -1 when
 * the scratch buffers cannot be allocated, 0 otherwise. */
static int V(filter_range)(const Guide *g, const float *src, float *out, int y0, int y1, int c0,
                           int c1, size_t coef)
{
    const size_t plane = (size_t)g->H * g->W, out_plane = (size_t)(y1 - y0) * g->W;
    /* the widest strip: STRIP output columns, 2r more coefficient and 4r more input columns */
    const size_t span = (size_t)imin(g->W, STRIP) + 4 * (size_t)g->r;
    VD *col = alloc_aligned(sizeof(VD) * span * 4 * 2);
    VF *ring = alloc_aligned(sizeof(VF) * span * 4 * (size_t)(2 * g->r + 2));
    const size_t nrows = (size_t)(2 * g->r + 2) + 4; /* input ring, then 4 output rows */
    VF *rows = alloc_aligned(sizeof(VF) * span * nrows);
    if (!col || !ring || !rows) {
        free(col);
        free(ring);
        free(rows);
        return -1;
    }
    V(Scratch) s = {col, col + span * 4, ring, rows, rows + (nrows - 4) * span, span, coef, 0};
    for (int c = c0; c < c1; c += LANES) {
        const Group grp = {src + (size_t)c * plane, imin(LANES, c1 - c)};
        memset(rows, 0, sizeof(VF) * span * nrows); /* lanes past the group's read as zeros */
        for (int x0 = 0; x0 < g->W; x0 += STRIP) {
            const Strip st = make_strip(x0, imin(g->W, x0 + STRIP), g->W, g->r);
            V(start_strip)(g, &grp, &st, y0, &s);
            for (int y = y0; y < y1; ++y)
                V(strip_row)(g, &grp, &st, out + (size_t)c * out_plane, out_plane, y0, y, &s);
        }
    }
    free(col);
    free(ring);
    free(rows);
    return 0;
}

/* Σd and the lower triangle of Σddᵀ over pixels [x0, x1), d = src[:, x] − shift, in float64.
 * Each chunk of KC pixels is packed in panels of LANES channels (panel-major, then pixel, then
 * channel: each panel is one contiguous stream; channels padded with zeros), then register tiles
 * of GRAM_MR channels (GRAM_MV vectors) × GRAM_NR channels accumulate outer products, so each
 * loaded value feeds several FMAs. gram is [C][C]: entry [j][i] for i ≤ j (and within diagonal
 * tiles) is added to; the rest is left alone. Returns -1 when the
 * scratch buffers cannot be allocated, 0 otherwise. */
#if LANES == 8
#define GRAM_MV 2 /* vectors (of LANES channels) per tile; 4×4 measured no faster */
#define GRAM_NR 8
#else
#define GRAM_MV 2
#define GRAM_NR 4
#endif
#define GRAM_MR (GRAM_MV * LANES)
static int V(moments_range)(const float *src, size_t stride, int C, const double *shift,
                            size_t x0, size_t x1, double *gram, double *sum)
{
    enum { KC = 512 };
    const int Cp = (C + GRAM_MR - 1) / GRAM_MR * GRAM_MR;
    double *pack = alloc_aligned(sizeof(double) * KC * (size_t)Cp);
    double *acc_g = alloc_aligned(sizeof(double) * (size_t)Cp * Cp);
    if (!pack || !acc_g) {
        free(pack);
        free(acc_g);
        return -1;
    }
    memset(pack, 0, sizeof(double) * KC * (size_t)Cp); /* padded channels stay zero */
    memset(acc_g, 0, sizeof(double) * (size_t)Cp * Cp);
    for (size_t p0 = x0; p0 < x1; p0 += KC) {
        const int kc = x1 - p0 < KC ? (int)(x1 - p0) : KC;
        for (int c = 0; c < C; c += LANES) {
            /* LANES channels × LANES pixels at a time, transposed in registers */
            const int lanes = C - c < LANES ? C - c : LANES;
            VD sh = {0}, acc = {0};
            for (int k = 0; k < lanes; ++k)
                sh[k] = shift[c + k];
            int p = 0;
            for (; p + LANES <= kc; p += LANES) {
                VF blk[LANES] = {{0}};
                for (int k = 0; k < lanes; ++k)
                    blk[k] = *(const VFU *)(src + (size_t)(c + k) * stride + p0 + p);
                V(transpose)(blk);
                for (int j = 0; j < LANES; ++j) {
                    const VD d = WIDEN(blk[j]) - sh;
                    *(VD *)(pack + (size_t)c * KC + (size_t)(p + j) * LANES) = d;
                    acc += d;
                }
            }
            for (; p < kc; ++p)
                for (int k = 0; k < lanes; ++k) {
                    const double d = (double)src[(size_t)(c + k) * stride + p0 + p] - sh[k];
                    pack[(size_t)c * KC + (size_t)p * LANES + k] = d;
                    acc[k] += d;
                }
            for (int k = 0; k < lanes; ++k)
                sum[c + k] += acc[k];
        }
        for (int ib = 0; ib < Cp; ib += GRAM_MR)
            for (int jb = ib; jb < Cp; jb += GRAM_NR) {
                VD a[GRAM_MV][GRAM_NR];
                for (int m = 0; m < GRAM_MV; ++m)
                    for (int j = 0; j < GRAM_NR; ++j)
                        a[m][j] = (VD){0};
                const double *bp[GRAM_NR];
                for (int j = 0; j < GRAM_NR; ++j)
                    bp[j] = pack + (size_t)((jb + j) / LANES) * LANES * KC + (jb + j) % LANES;
                const double *ap = pack + (size_t)ib * KC;
#pragma GCC unroll 4
                for (int p = 0; p < kc; ++p) {
                    VD u[GRAM_MV];
                    for (int m = 0; m < GRAM_MV; ++m)
                        u[m] = *(const VD *)(ap + (size_t)m * LANES * KC + (size_t)p * LANES);
                    for (int j = 0; j < GRAM_NR; ++j)
                        for (int m = 0; m < GRAM_MV; ++m)
                            a[m][j] += u[m] * bp[j][(size_t)p * LANES];
                }
                for (int j = 0; j < GRAM_NR; ++j) {
                    VD *g = (VD *)(acc_g + (size_t)(jb + j) * Cp + ib);
                    for (int m = 0; m < GRAM_MV; ++m)
                        g[m] += a[m][j];
                }
            }
    }
    for (int j = 0; j < C; ++j)
        for (int i = 0; i < C; ++i)
            gram[(size_t)j * C + i] += acc_g[(size_t)j * Cp + i];
    free(pack);
    free(acc_g);
    return 0;
}
#undef GRAM_MR
#undef GRAM_MV
#undef GRAM_NR

#undef VD
#undef VF
#undef VFU
#undef WIDEN
