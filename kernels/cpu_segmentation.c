/*
 * The soft segmentation's two hot loops on the CPU, driven over threads by
 * sss_rt/segmentation/native.py (every entry point releases the GIL).
 *
 * tri_solve(fptr, fidx, fval, bptr, bidx, bval, x, n, fnz, bnz, R)
 *   Solves F·B·z = b in place for R right-hand sides, F lower and B upper triangular, sparse,
 *   by rows in dot form: row i gathers the rows of x it depends on and sums them in registers
 *   (no stores but one per row), forward with F, then backward with B. For a symmetric A with
 *   SuperLU's Pr·A·Pc = L·U, Aᵀ = A gives A = Pc·Uᵀ·Lᵀ·Pr: F = Uᵀ and B = Lᵀ are U's and L's
 *   columns as SuperLU stores them, no transposed copy needed.
 *   fptr int64 [n+1], fidx int32, fval float64   F by rows, each row ending with its diagonal
 *   bptr int64 [n+1], bidx int32, bval float64   B by rows, each row starting with its diagonal
 *   x    float64 [n][R]                           b on entry, z on return; row-major, so that the
 *                                                 R values of a row are one vector
 *   (indices within [0, n) are the caller's to guarantee; the sweeps check the diagonals' places)
 *   R = 1, 4, 8, 16 or 32 run loops unrolled for it, any other R ≤ 32 a generic one. A call
 *   streams the factors once whatever R is, so it costs about the same for 4 or 16 right-hand
 *   sides (at 320×240, 34M non-zeros: 0.07 s for 16 on two threads; SuperLU's solve 0.27 s).
 *
 * weighted_grams(e, c, out, n, mp, m, K, p0, p1[, level]); grams_variant() names the loop
 *   that runs here (avx512, avx2 or generic)
 *   out[k][a][b] += Σ_i c[k][i] · e[i][a] · e[i][b] over pixels i in [p0, p1), for every
 *   segment k, pixels of weight 0 skipped (never read), in float32 sums over chunks of CHUNK
 *   pixels added into float64. Of each symmetric
 *   m×m Gram, with m = 8q + t, it writes the upper triangle of the first 8q columns to 8-column
 *   granularity (in row a < 8q, the columns from 8⌊a/8⌋ to 8q) and the t rows a ≥ 8q whole (the
 *   rest of the triangle by symmetry); other entries are left as they were or hold partial sums.
 *   e   float32 [n][mp]   the eigenvectors by pixel, m columns padded with zeros to mp, the
 *                          next multiple of 16
 *   c   float32 [K][n]    each segment's weights
 *   out float64 [K][m][mp]
 *   Per chunk and segment, its pixels of non-zero weight packed into panels of PIX (their rows
 *   of e and of c_k ⊙ e), then tiles held in registers over each panel (one broadcast per row
 *   and pixel): with AVX-512, 8 rows × up to 48 columns (three 16-float vectors, or two and an
 *   8-float half) in 24 registers; with AVX2 and FMA, 4 rows × 24 columns in 12; elsewhere
 *   plain C. (At m = 100: 5408 products per pixel for the triangle's 5050.) level caps the loop: 2 (default)
 *   the best this CPU has, 1 at most AVX2, 0 plain C. Every loop adds each entry's products
 *   pixel by pixel in the same order with one rounding per multiply-add (FMA; fmaf in plain C),
 *   so all three give the same bits on any CPU. Threads take pixel ranges, each with its own out.
 *
 * layer_operator(ptr, idx, val, diag, x, out, n, nnz, R, delta, r0, r1)
 *   out[i] = Σ_j A_ij x[j] + diag[i] ⊙ x[i] + δ·(Σ_r x[i][r]) for rows i in [r0, r1): the
 *   relaxed sparsification's operator blkdiag(A + diag_r) + δ·CᵀC on R layers at once.
 *   ptr int64 [n+1], idx int32, val float64   A by rows (CSR)
 *   diag, x, out  float64 [n][R]             row-major: a pixel's R layers are one vector
 *   Each row is summed on its own in a fixed order: threads taking row ranges change no bit.
 *   Returns Σ_i x[i]·out[i] over its rows (the CG's pᵀAp).
 *
 * cg_residual(x, r, p, q, inv, coupling, z, n, R, alpha, r0, r1) -> (Σ r·z, Σ r·r)
 *   The rest of a step of the relaxed sparsification's conjugate gradients, rows [r0, r1):
 *   x += α·p, r −= α·q, then z = M·r with M the exact inverse of each pixel's block
 *   diag(d_i) + δ·11ᵀ: z_i = inv_i ⊙ r_i − inv_i · coupling_i · Σ_l inv_il r_il (inv = 1/d,
 *   coupling = δ / (1 + δ Σ_l inv_il)); returns its rows' Σ r·z and Σ r·r (after the update).
 *   x, r, p, q, inv, z float64 [n][R] row-major; coupling float64 [n].
 *
 * irls_terms(alpha, delta, e, rhs, K, n, mp, g, s1, s0, tau, base, last, p0, p1)
 *   What an iteration of the constrained sparsification needs from α, for pixels [p0, p1) of
 *   every segment k < K, in one pass: with last, first α's last row as 1 − Σ of the others
 *   (added in row order); then the IRLS weights a = (float)α, e1 = s1 · max(|a − 1|, τ)^g,
 *   e0 = s0 · max(|a|, τ)^g (float32, libm's powf; at the floor the power is taken once, and
 *   1^g is 1), the Grams' weights as departures from the floor's, delta = (e1 + e0) − base,
 *   and the right-hand sides: rhs[k] += Σ_i e1[k][i] · e[i] for k < K − 1 and
 *   rhs[K − 1] += Σ_i e0[K − 1][i] · e[i] (float32 sums over chunks of CHUNK pixels, each
 *   entry's products added pixel by pixel in order with fmaf, added into float64).
 *   alpha float64 [K][n] (written with last); delta float32 [K][n]; e float32 [n][mp] as
 *   weighted_grams reads it; rhs float64 [K][mp].
 *
 * csr_matmul(ptr, idx, val, x, out, n, nnz, R, r0, r1)
 *   out[i] = Σ_j A_ij x[j] for rows i in [r0, r1), x and out float64 [n][R] row-major, A by
 *   rows as above, any R ≥ 1: the eigensolver's L·Q for a block of vectors (SciPy's CSR product
 *   runs on one thread and copies a column-major block first). Each row summed alone, in order.
 *
 * matting_windows(image, win, h, w, eps, y0, y1)
 *   For every 3×3 window whose top-left pixel is in rows [y0, y1) (y1 ≤ h − 2): its colour mean
 *   μ and M = (Σ + ε/9·I)⁻¹, Σ = (1/9)·Σ_i (I_i − μ)(I_i − μ)ᵀ over its pixels, as M⁻¹'s
 *   Cholesky factor.
 *   image float64 [h][w][3]
 *   win   float64 [h−2][w−2][9]   per window μ0 μ1 μ2, then M's Cholesky factor G (GGᵀ = M⁻¹,
 *                                  lower) as 1/G00 G10 G20 1/G11 G21 1/G22
 * matting_rows(image, win, indptr, indices, values, h, w, y0, y1)
 *   The closed-form matting affinity W as CSR, for the pixels p of image rows [y0, y1): row p's
 *   columns (every in-image pixel within 2 rows and columns of p, p itself excepted, in column
 *   order), and for each later such neighbour q (after p in row-major order)
 *   W_pq = Σ (1 + (I_p − μ)ᵀM(I_q − μ))/9 over the windows holding both (in row-major order),
 *   written at (p, q) in row p and at (q, p) in row q. Each pair is computed once, by its earlier
 *   pixel, so W is exactly symmetric and row ranges may run on any threads with the same bits
 *   (the windows must all be computed first).
 *   indptr int64 [h·w + 1]   given: row p holds ny·nx − 1 entries (the neighbourhood's size)
 *   indices int32, values float64 [indptr[h·w]]   written
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define GRAM_CLONES __attribute__((target_clones("avx512f", "fma", "default"))) /* fma: AVX + FMA */
#else
#define CLONES
#define GRAM_CLONES
#endif

/* ---- tri_solve ---------------------------------------------------------------------------- */

/* dot form: each row gathers the rows of x it depends on and sums in registers (two sums in
 * flight), one store per row. F's rows end with their diagonal, B's start with theirs. */

/* row i: x_i = (x_i − Σ_{p in [p0, p1)} val_p · x_{idx_p}) / diag */
#define ROW(R, i, p0, p1, idx, val, diag)                                                         \
    do {                                                                                          \
        for (int r = 0; r < (R); ++r) {                                                           \
            a0[r] = x[(i) * (R) + r];                                                             \
            a1[r] = 0.0;                                                                          \
        }                                                                                         \
        int64_t p = (p0);                                                                         \
        const int64_t e = (p1);                                                                   \
        for (; p + 1 < e; p += 2) {                                                               \
            const double v0 = val[p], v1 = val[p + 1];                                            \
            const double *x0 = x + (int64_t)idx[p] * (R), *x1 = x + (int64_t)idx[p + 1] * (R);    \
            for (int r = 0; r < (R); ++r) {                                                       \
                a0[r] -= v0 * x0[r];                                                              \
                a1[r] -= v1 * x1[r];                                                              \
            }                                                                                     \
        }                                                                                         \
        if (p < e)                                                                                \
            for (int r = 0; r < (R); ++r)                                                         \
                a0[r] -= val[p] * x[(int64_t)idx[p] * (R) + r];                                   \
        const double d = 1.0 / (diag);                                                            \
        for (int r = 0; r < (R); ++r)                                                             \
            x[(i) * (R) + r] = (a0[r] + a1[r]) * d;                                               \
    } while (0)

#define DEFINE_SWEEPS(NAME, R_ARG, R)                                                             \
    CLONES static void NAME(const int64_t *fptr, const int32_t *fidx, const double *fval,        \
                            const int64_t *bptr, const int32_t *bidx, const double *bval,        \
                            double *x, int64_t n R_ARG)                                          \
    {                                                                                             \
        double a0[32], a1[32];                                                                    \
        for (int64_t i = 0; i < n; ++i)                                                           \
            ROW(R, i, fptr[i], fptr[i + 1] - 1, fidx, fval, fval[fptr[i + 1] - 1]);               \
        for (int64_t i = n - 1; i >= 0; --i)                                                      \
            ROW(R, i, bptr[i] + 1, bptr[i + 1], bidx, bval, bval[bptr[i]]);                       \
    }

#define FIXED_R
#define RUNTIME_R , int R
DEFINE_SWEEPS(sweeps_1, FIXED_R, 1)
DEFINE_SWEEPS(sweeps_4, FIXED_R, 4)
DEFINE_SWEEPS(sweeps_8, FIXED_R, 8)
DEFINE_SWEEPS(sweeps_16, FIXED_R, 16)
DEFINE_SWEEPS(sweeps_32, FIXED_R, 32)
DEFINE_SWEEPS(sweeps_any, RUNTIME_R, R)

/* ---- weighted_grams ----------------------------------------------------------------------- */

#define PIX 128   /* pixels per panel: the tiles' reduction length */
#define CHUNK 2048 /* pixels per chunk: every segment packs its panels from the chunk's rows of e
                    * (CHUNK × mp floats, cache-resident meanwhile); float32 sums go into float64
                    * once per segment and chunk */

/* A panel holds up to PIX pixels of one segment, a row of mp floats each:
 *   xp [PIX][mp]   c_i · e[i]
 *   ep [PIX][mp]   e[i] */

/* The entries of one segment's Gram each loop computes over a panel, in blocks of up to 8 rows
 * aligned to 8. With m = 8q + t: the blocks of rows a < 8q over the columns from the block's
 * first row to 8q (the upper triangle, to 8-column granularity), the block of the t rows ≥ 8q
 * over every column to 8⌈m/8⌉ (entries (a < 8q, b ≥ 8q) are taken from (b, a) by symmetry).
 * A block's columns go in pieces of at most 48: 16-float vectors and, where a multiple of 16
 * does not fit, one 8-float half. BODY sees a0 (first row), A (rows), c (first column),
 * V (16-float vectors) and H (1 with the 8-float half). */
#define FOR_PIECES(BODY)                                                                          \
    do {                                                                                          \
        const int full = 8 * (m / 8), all = 8 * ((m + 7) / 8);                                    \
        for (int a0 = 0; a0 < m; a0 += 8) {                                                       \
            const int A = a0 < full ? 8 : m - a0;                                                 \
            const int cend = a0 < full ? full : all;                                              \
            for (int c = a0 < full ? a0 : 0; c < cend;) {                                         \
                const int w = cend - c < 48 ? cend - c : 48;                                      \
                const int V = w / 16, H = (w % 16) / 8;                                           \
                BODY;                                                                             \
                c += w;                                                                           \
            }                                                                                     \
        }                                                                                         \
    } while (0)

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX512_GRAMS 1
/* acc rows a0 .. a0+A-1, columns c .. c+16V+8H-1, += Σ_i x[i][a] e[i][b]: A×(V + H) registers */
__attribute__((always_inline, target("avx512f,fma"))) static inline void
tile_avx512(const float *xp, const float *ep, int npix, int mp, int a0, int c, const int A, const int V,
            const int H, float *acc, int ldo)
{
    __m512 z[8][3];
    __m256 y[8];
    for (int r = 0; r < A; ++r) {
        for (int v = 0; v < V; ++v)
            z[r][v] = _mm512_setzero_ps();
        y[r] = _mm256_setzero_ps();
    }
    for (int i = 0; i < npix; ++i) {
        const float *ei = ep + (int64_t)i * mp + c, *xi = xp + (int64_t)i * mp + a0;
        __m512 ev[3];
        __m256 eh = _mm256_setzero_ps();
        for (int v = 0; v < V; ++v)
            ev[v] = _mm512_loadu_ps(ei + 16 * v);
        if (H)
            eh = _mm256_loadu_ps(ei + 16 * V);
        for (int r = 0; r < A; ++r) {
            const __m512 s = _mm512_set1_ps(xi[r]);
            for (int v = 0; v < V; ++v)
                z[r][v] = _mm512_fmadd_ps(s, ev[v], z[r][v]);
            if (H)
                y[r] = _mm256_fmadd_ps(_mm512_castps512_ps256(s), eh, y[r]);
        }
    }
    for (int r = 0; r < A; ++r) {
        float *o = acc + (int64_t)(a0 + r) * ldo + c;
        for (int v = 0; v < V; ++v)
            _mm512_storeu_ps(o + 16 * v, _mm512_add_ps(_mm512_loadu_ps(o + 16 * v), z[r][v]));
        if (H)
            _mm256_storeu_ps(o + 16 * V, _mm256_add_ps(_mm256_loadu_ps(o + 16 * V), y[r]));
    }
}

#define TILE_CASE(A, V, H)                                                                        \
    case (A) * 8 + (V) * 2 + (H):                                                                 \
        tile_avx512(xp, ep, npix, mp, a0, c, A, V, H, acc, mp);                                   \
        break;
#define TILE_ROW(A)                                                                               \
    TILE_CASE(A, 3, 0) TILE_CASE(A, 2, 1) TILE_CASE(A, 2, 0) TILE_CASE(A, 1, 1) TILE_CASE(A, 1, 0) \
    TILE_CASE(A, 0, 1)

__attribute__((target("avx512f,fma"))) static void panel_avx512(const float *xp, const float *ep, int npix,
                                                            int mp, int m, float *acc)
{
    FOR_PIECES(switch (A * 8 + V * 2 + H) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4) TILE_ROW(5) TILE_ROW(6) TILE_ROW(7)
        TILE_ROW(8)
    });
}

/* AVX2: rows r0 .. r0+R-1 (R ≤ 4) of W 8-float vectors (W ≤ 3) from column c: R×W registers */
__attribute__((always_inline, target("avx2,fma"))) static inline void
tile_avx2(const float *xp, const float *ep, int npix, int mp, int r0, int c, const int R, const int W,
          float *acc, int ldo)
{
    __m256 z[4][3];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < W; ++v)
            z[r][v] = _mm256_setzero_ps();
    for (int i = 0; i < npix; ++i) {
        const float *ei = ep + (int64_t)i * mp + c, *xi = xp + (int64_t)i * mp + r0;
        __m256 ev[3];
        for (int v = 0; v < W; ++v)
            ev[v] = _mm256_loadu_ps(ei + 8 * v);
        for (int r = 0; r < R; ++r) {
            const __m256 s = _mm256_broadcast_ss(xi + r);
            for (int v = 0; v < W; ++v)
                z[r][v] = _mm256_fmadd_ps(s, ev[v], z[r][v]);
        }
    }
    for (int r = 0; r < R; ++r) {
        float *o = acc + (int64_t)(r0 + r) * ldo + c;
        for (int v = 0; v < W; ++v)
            _mm256_storeu_ps(o + 8 * v, _mm256_add_ps(_mm256_loadu_ps(o + 8 * v), z[r][v]));
    }
}

#define TILE2_CASE(R, W)                                                                          \
    case (R) * 4 + (W):                                                                           \
        tile_avx2(xp, ep, npix, mp, r0, cc, R, W, acc, mp);                                       \
        break;

/* a piece's rows in groups of up to 4, its columns in runs of up to three 8-float vectors */
__attribute__((target("avx2,fma"))) static void panel_avx2(const float *xp, const float *ep, int npix,
                                                          int mp, int m, float *acc)
{
    FOR_PIECES({
        const int cend = c + 16 * V + 8 * H;
        for (int r0 = a0; r0 < a0 + A; r0 += 4) {
            const int R = a0 + A - r0 < 4 ? a0 + A - r0 : 4;
            for (int cc = c; cc < cend; cc += 24) {
                const int W = cend - cc < 24 ? (cend - cc) / 8 : 3;
                switch (R * 4 + W) {
                    TILE2_CASE(1, 1) TILE2_CASE(1, 2) TILE2_CASE(1, 3) TILE2_CASE(2, 1)
                    TILE2_CASE(2, 2) TILE2_CASE(2, 3) TILE2_CASE(3, 1) TILE2_CASE(3, 2)
                    TILE2_CASE(3, 3) TILE2_CASE(4, 1) TILE2_CASE(4, 2) TILE2_CASE(4, 3)
                }
            }
        }
    });
}
#endif

/* the same sums in plain C (any CPU): fmaf rounds once as the tiles' FMA do, so every loop
 * gives the same bits (where the CPU has no FMA unit, fmaf is libm's exact and slow one) */
GRAM_CLONES static void panel_generic(const float *xp, const float *ep, int npix, int mp, int m,
                                      float *acc)
{
    FOR_PIECES({
        const int width = 16 * V + 8 * H;
        for (int a = a0; a < a0 + A; ++a) {
            float sum[48] = {0};
            for (int i = 0; i < npix; ++i) {
                const float s = xp[(int64_t)i * mp + a];
                const float *ev = ep + (int64_t)i * mp + c;
                for (int t = 0; t < width; ++t)
                    sum[t] = fmaf(s, ev[t], sum[t]);
            }
            for (int t = 0; t < width; ++t)
                acc[(int64_t)a * mp + c + t] += sum[t];
        }
    });
}

/* pixel row ei (mp floats) with weight w into slot `slot` of the panel (xp, ep) */
static inline void pack_pixel(const float *ei, float w, int mp, int slot, float *xp, float *ep)
{
    float *x = xp + (int64_t)slot * mp, *y = ep + (int64_t)slot * mp;
    for (int a = 0; a < mp; ++a) {
        x[a] = w * ei[a];
        y[a] = ei[a];
    }
}

/* all segments' Grams over pixels [p0, p1): per chunk of pixels and segment, the pixels of
 * non-zero weight packed into panels, each panel's tiles added into float32 sums (acc), which
 * go into float64 at the end of the chunk */
static int grams_run(const float *e, const float *c, double *out, int64_t n, int mp, int m, int K,
                     int64_t p0, int64_t p1, int level)
{
    const size_t gram = (size_t)m * mp;
    float *xp = aligned_alloc(64, sizeof(float) * (size_t)mp * PIX);
    float *ep = aligned_alloc(64, sizeof(float) * (size_t)mp * PIX);
    float *acc = calloc(gram, sizeof(float));
    if (!xp || !ep || !acc) {
        free(xp);
        free(ep);
        free(acc);
        return -1;
    }
#ifdef HAVE_AVX512_GRAMS
    __builtin_cpu_init();
    const int wide = level >= 2 && __builtin_cpu_supports("avx512f");
    const int avx2 = !wide && level >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    const int wide = 0, avx2 = 0;
    (void)level;
#endif
#ifdef HAVE_AVX512_GRAMS
#define RUN_PANEL(npix)                                                                           \
    do {                                                                                          \
        if (wide)                                                                                 \
            panel_avx512(xp, ep, (npix), mp, m, acc);                                             \
        else if (avx2)                                                                            \
            panel_avx2(xp, ep, (npix), mp, m, acc);                                               \
        else                                                                                      \
            panel_generic(xp, ep, (npix), mp, m, acc);                                            \
    } while (0)
#else
#define RUN_PANEL(npix) panel_generic(xp, ep, (npix), mp, m, acc)
#endif
    for (int64_t c0 = p0; c0 < p1; c0 += CHUNK) {
        const int64_t c1 = p1 - c0 < CHUNK ? p1 : c0 + CHUNK;
        for (int k = 0; k < K; ++k) {
            const float *w = c + (int64_t)k * n;
            int slot = 0, used = 0;
            for (int64_t i = c0; i < c1; ++i) {
                if (w[i] == 0.0f) /* adds nothing: skipped */
                    continue;
                pack_pixel(e + i * mp, w[i], mp, slot, xp, ep);
                if (++slot == PIX) {
                    RUN_PANEL(PIX);
                    slot = 0;
                    used = 1;
                }
            }
            if (slot) {
                RUN_PANEL(slot);
                used = 1;
            }
            if (used) {
                double *o = out + k * gram;
                for (size_t j = 0; j < gram; ++j) {
                    o[j] += acc[j];
                    acc[j] = 0.0f;
                }
            }
        }
    }
#undef RUN_PANEL
    free(xp);
    free(ep);
    free(acc);
    (void)wide;
    (void)avx2;
    return 0;
}

/* ---- layer_operator ---------------------------------------------------------------------- */

#define LAYER_ROWS(R)                                                                             \
    CLONES static int layer_rows_##R(const int64_t *ptr, const int32_t *idx, const double *val,    \
                                     const double *diag, const double *x, double *out,             \
                                     double delta, int64_t n, int64_t r0, int64_t r1, double *dot) \
    {                                                                                             \
        int bad = 0;                                                                              \
        double xo = 0.0;                                                                          \
        for (int64_t i = r0; i < r1; ++i) {                                                       \
            double acc[R], sum = 0.0;                                                             \
            for (int r = 0; r < (R); ++r)                                                         \
                acc[r] = diag[i * (R) + r] * x[i * (R) + r];                                      \
            for (int64_t p = ptr[i]; p < ptr[i + 1]; ++p) {                                       \
                const double a = val[p];                                                          \
                const int64_t j = idx[p];                                                         \
                if (j < 0 || j >= n) { /* a column out of range: reported, not read */            \
                    bad = 1;                                                                      \
                    continue;                                                                     \
                }                                                                                 \
                const double *xj = x + j * (R);                                                   \
                for (int r = 0; r < (R); ++r)                                                     \
                    acc[r] += a * xj[r];                                                          \
            }                                                                                     \
            for (int r = 0; r < (R); ++r)                                                         \
                sum += x[i * (R) + r];                                                            \
            for (int r = 0; r < (R); ++r) {                                                       \
                out[i * (R) + r] = acc[r] + delta * sum;                                          \
                xo += x[i * (R) + r] * out[i * (R) + r];                                          \
            }                                                                                     \
        }                                                                                         \
        *dot = xo;                                                                                \
        return bad;                                                                               \
    }
LAYER_ROWS(1)
LAYER_ROWS(2)
LAYER_ROWS(3)
LAYER_ROWS(4)
LAYER_ROWS(5)
LAYER_ROWS(6)
LAYER_ROWS(7)
LAYER_ROWS(8)

/* ---- csr_matmul --------------------------------------------------------------------------- */

/* ACC: where each row's sums are kept as they grow — in a local array (registers, for a fixed
 * R: stores through o could alias x, so the compiler would store and reload them every entry)
 * or straight in the output row (any R) */
#define CSR_ROWS(NAME, R_ARG, R, ACC_DECL, ACC)                                                   \
    CLONES static int NAME(const int64_t *ptr, const int32_t *idx, const double *val,              \
                           const double *x, double *out, int64_t n, int64_t r0, int64_t r1 R_ARG)  \
    {                                                                                             \
        int bad = 0;                                                                              \
        for (int64_t i = r0; i < r1; ++i) {                                                       \
            double *o = out + i * (R);                                                            \
            ACC_DECL;                                                                             \
            for (int r = 0; r < (R); ++r)                                                         \
                ACC[r] = 0.0;                                                                     \
            for (int64_t p = ptr[i]; p < ptr[i + 1]; ++p) {                                       \
                const int64_t j = idx[p];                                                         \
                if (j < 0 || j >= n) {                                                            \
                    bad = 1;                                                                      \
                    continue;                                                                     \
                }                                                                                 \
                const double a = val[p], *xj = x + j * (R);                                       \
                for (int r = 0; r < (R); ++r)                                                     \
                    ACC[r] += a * xj[r];                                                          \
            }                                                                                     \
            for (int r = 0; r < (R); ++r)                                                         \
                o[r] = ACC[r];                                                                    \
        }                                                                                         \
        return bad;                                                                               \
    }
CSR_ROWS(csr_rows_16, FIXED_R, 16, double acc[16], acc)
CSR_ROWS(csr_rows_any, RUNTIME_R, R, (void)0, o)

/* ---- matting affinity ---------------------------------------------------------------------- */

/* No target clones and no fused multiply-adds here: the affinity has the same bits on every
 * machine (it is ~1% of the segmentation's time). */
#if defined(__GNUC__) && !defined(__clang__)
#define UNFUSED __attribute__((optimize("fp-contract=off")))
#else
#define UNFUSED
#pragma STDC FP_CONTRACT OFF
#endif

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* the offsets lo .. hi (within −2 .. 2) from coordinate c that stay inside 0 .. size − 1: a
 * pixel's neighbourhood along one axis */
static inline void neighbourhood(int64_t c, int64_t size, int *lo, int *hi)
{
    *lo = (int)max64(-2, -c);
    *hi = (int)min64(2, size - 1 - c);
}

/* windows with top-left rows [y0, y1): colour mean and Cholesky factor of Σ + ε/9·I */
UNFUSED static void windows_rows(const double *img, double *win, int64_t w, double eps, int64_t y0, int64_t y1)
{
    for (int64_t wy = y0; wy < y1; ++wy)
        for (int64_t wx = 0; wx < w - 2; ++wx) {
            double mu[3] = {0.0, 0.0, 0.0}, d[9][3], s[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
            for (int a = 0; a < 9; ++a) {
                const double *px = img + ((wy + a / 3) * w + wx + a % 3) * 3;
                for (int c = 0; c < 3; ++c)
                    mu[c] += px[c];
            }
            for (int c = 0; c < 3; ++c)
                mu[c] /= 9.0;
            for (int a = 0; a < 9; ++a) {
                const double *px = img + ((wy + a / 3) * w + wx + a % 3) * 3;
                for (int c = 0; c < 3; ++c)
                    d[a][c] = px[c] - mu[c];
                s[0] += d[a][0] * d[a][0];
                s[1] += d[a][0] * d[a][1];
                s[2] += d[a][0] * d[a][2];
                s[3] += d[a][1] * d[a][1];
                s[4] += d[a][1] * d[a][2];
                s[5] += d[a][2] * d[a][2];
            }
            /* Cholesky factor G (lower) of Σ + ε/9·I, kept as its off-diagonal entries and the
             * reciprocals of its diagonal: backward stable where cofactors are not (a window of
             * one colour line has eigenvalues ε/9, ε/9 and ~0.3; its cofactor determinant lost
             * 1% and a pair's affinity 3e-3) */
            const double reg = eps / 9.0;
            const double g00 = sqrt(s[0] / 9.0 + reg);
            const double g10 = (s[1] / 9.0) / g00, g20 = (s[2] / 9.0) / g00;
            const double g11 = sqrt((s[3] / 9.0 + reg) - g10 * g10);
            const double g21 = ((s[4] / 9.0) - g20 * g10) / g11;
            const double g22 = sqrt((s[5] / 9.0 + reg) - g20 * g20 - g21 * g21);
            double *o = win + (wy * (w - 2) + wx) * 9;
            o[0] = mu[0];
            o[1] = mu[1];
            o[2] = mu[2];
            o[3] = 1.0 / g00;
            o[4] = g10;
            o[5] = g20;
            o[6] = 1.0 / g11;
            o[7] = g21;
            o[8] = 1.0 / g22;
        }
}

/* W between pixels p (earlier) and q: the windows holding both, in row-major order */
UNFUSED static double pair_affinity(const double *img, const double *win, int64_t h, int64_t w, int64_t yp,
                            int64_t xp, int64_t yq, int64_t xq)
{
    /* top-left corners holding both pixels, inside the image */
    const int64_t wy0 = max64(max64(yp, yq) - 2, 0), wy1 = min64(min64(yp, yq), h - 3);
    const int64_t wx0 = max64(max64(xp, xq) - 2, 0), wx1 = min64(min64(xp, xq), w - 3);
    const double *ip = img + (yp * w + xp) * 3, *iq = img + (yq * w + xq) * 3;
    double v = 0.0;
    for (int64_t wy = wy0; wy <= wy1; ++wy)
        for (int64_t wx = wx0; wx <= wx1; ++wx) {
            const double *c = win + (wy * (w - 2) + wx) * 9;
            /* (I_p − μ)ᵀ(GGᵀ)⁻¹(I_q − μ) = (G⁻¹(I_p − μ))·(G⁻¹(I_q − μ)) */
            const double a0 = (ip[0] - c[0]) * c[3];
            const double a1 = ((ip[1] - c[1]) - c[4] * a0) * c[6];
            const double a2 = ((ip[2] - c[2]) - c[5] * a0 - c[7] * a1) * c[8];
            const double b0 = (iq[0] - c[0]) * c[3];
            const double b1 = ((iq[1] - c[1]) - c[4] * b0) * c[6];
            const double b2 = ((iq[2] - c[2]) - c[5] * b0 - c[7] * b1) * c[8];
            v += (1.0 + (a0 * b0 + a1 * b1 + a2 * b2)) / 9.0;
        }
    return v;
}

/* pixel rows [y0, y1): their rows' column indices, and W with each later neighbour written at
 * both (p, q) and (q, p) */
UNFUSED static void affinity_rows(const double *img, const double *win, const int64_t *indptr, int32_t *indices,
                          double *values, int64_t h, int64_t w, int64_t y0, int64_t y1)
{
    for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = 0; x < w; ++x) {
            const int64_t p = y * w + x;
            int dy0, dy1, dx0, dx1;
            neighbourhood(y, h, &dy0, &dy1);
            neighbourhood(x, w, &dx0, &dx1);
            const int nx = dx1 - dx0 + 1;
            int64_t slot = indptr[p];
            for (int dy = dy0; dy <= dy1; ++dy)
                for (int dx = dx0; dx <= dx1; ++dx)
                    if (dy || dx)
                        indices[slot++] = (int32_t)(p + dy * w + dx);
            for (int dy = 0; dy <= dy1; ++dy)
                for (int dx = dy ? dx0 : 1; dx <= dx1; ++dx) {
                    const int64_t yq = y + dy, xq = x + dx, q = yq * w + xq;
                    const double v = pair_affinity(img, win, h, w, y, x, yq, xq);
                    /* in row p, q comes after p itself (one slot fewer); in row q, p before q */
                    values[indptr[p] + (dy - dy0) * nx + (dx - dx0) - 1] = v;
                    int qy0, qy1, qx0, qx1;
                    neighbourhood(yq, h, &qy0, &qy1);
                    neighbourhood(xq, w, &qx0, &qx1);
                    values[indptr[q] + (-dy - qy0) * (qx1 - qx0 + 1) + (-dx - qx0)] = v;
                }
        }
}

#if !(defined(__GNUC__) && !defined(__clang__))
#pragma STDC FP_CONTRACT ON
#endif

/* ---- Python glue -------------------------------------------------------------------------- */

#include "buffer_args.h"

/* a CSR matrix of n rows holding nnz entries, its rows [r0, r1) well formed (the kernels then
 * check each column index as they read it) */
static int csr_rows_valid(const int64_t *ptr, int64_t n, int64_t nnz, int64_t r0, int64_t r1)
{
    int ok = ptr[0] == 0 && ptr[n] == nnz;
    for (int64_t i = r0; ok && i < r1; ++i)
        ok = ptr[i + 1] >= ptr[i];
    return ok;
}

static PyObject *tri_solve(PyObject *self, PyObject *args)
{
    PyObject *objs[7];
    Py_ssize_t n, lnz, unz;
    int R;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnni", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &objs[6], &n, &lnz, &unz, &R))
        return NULL;
    if (n < 1 || R < 1 || R > 32 || lnz < n || unz < n) {
        PyErr_SetString(PyExc_ValueError, "tri_solve: inconsistent sizes (R must be 1 .. 32)");
        return NULL;
    }
    const BufferArg specs[7] = {{"lptr", n + 1, 8, 0}, {"lidx", lnz, 4, 0}, {"lval", lnz, 8, 0},
                           {"uptr", n + 1, 8, 0}, {"uidx", unz, 4, 0}, {"uval", unz, 8, 0},
                           {"x", n * R, 8, 1}};
    Py_buffer v[7];
    if (get_buffers(objs, v, specs, 7) < 0)
        return NULL;
    const int64_t *lptr = v[0].buf, *uptr = v[3].buf;
    const int32_t *lidx = v[1].buf, *uidx = v[4].buf;
    int ok = lptr[0] == 0 && lptr[n] == lnz && uptr[0] == 0 && uptr[n] == unz;
    /* every row holds its diagonal where the sweeps read it */
    for (int64_t i = 0; ok && i < n; ++i)
        ok = lptr[i + 1] > lptr[i] && uptr[i + 1] > uptr[i] && lidx[lptr[i + 1] - 1] == i &&
             uidx[uptr[i]] == i;
    if (!ok) {
        release_buffers(v, 7);
        PyErr_SetString(PyExc_ValueError, "tri_solve: the factors are not in the expected layout");
        return NULL;
    }
    const double *lval = v[2].buf, *uval = v[5].buf;
    double *x = v[6].buf;
    Py_BEGIN_ALLOW_THREADS
    switch (R) {
    case 1: sweeps_1(lptr, lidx, lval, uptr, uidx, uval, x, n); break;
    case 4: sweeps_4(lptr, lidx, lval, uptr, uidx, uval, x, n); break;
    case 8: sweeps_8(lptr, lidx, lval, uptr, uidx, uval, x, n); break;
    case 16: sweeps_16(lptr, lidx, lval, uptr, uidx, uval, x, n); break;
    case 32: sweeps_32(lptr, lidx, lval, uptr, uidx, uval, x, n); break;
    default: sweeps_any(lptr, lidx, lval, uptr, uidx, uval, x, n, R);
    }
    Py_END_ALLOW_THREADS
    release_buffers(v, 7);
    Py_RETURN_NONE;
}

static PyObject *weighted_grams(PyObject *self, PyObject *args)
{
    PyObject *objs[3];
    Py_ssize_t n, p0, p1;
    int mp, m, K, level = 2;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOniiinn|i", &objs[0], &objs[1], &objs[2], &n, &mp, &m, &K, &p0,
                          &p1, &level))
        return NULL;
    if (n < 1 || m < 1 || mp < m || mp % 16 || mp > m + 15 || K < 1 || p0 < 0 || p1 > n || p0 > p1) {
        PyErr_SetString(PyExc_ValueError, "weighted_grams: inconsistent sizes or ranges");
        return NULL;
    }
    const BufferArg specs[3] = {
        {"e", n * mp, 4, 0}, {"c", (Py_ssize_t)K * n, 4, 0}, {"out", (Py_ssize_t)K * m * mp, 8, 1}};
    Py_buffer v[3];
    if (get_buffers(objs, v, specs, 3) < 0)
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = grams_run(v[0].buf, v[1].buf, v[2].buf, n, mp, m, K, p0, p1, level);
    Py_END_ALLOW_THREADS
    release_buffers(v, 3);
    if (status < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *layer_operator(PyObject *self, PyObject *args)
{
    PyObject *objs[6];
    Py_ssize_t n, nnz, r0, r1;
    int R;
    double delta;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOnnidnn", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &n, &nnz, &R, &delta, &r0, &r1))
        return NULL;
    if (n < 1 || nnz < 0 || R < 1 || R > 8 || r0 < 0 || r1 > n || r0 > r1) {
        PyErr_SetString(PyExc_ValueError, "layer_operator: inconsistent sizes (R must be 1 .. 8)");
        return NULL;
    }
    const BufferArg specs[6] = {{"ptr", n + 1, 8, 0},  {"idx", nnz, 4, 0},   {"val", nnz, 8, 0},
                                {"diag", n * R, 8, 0}, {"x", n * R, 8, 0},   {"out", n * R, 8, 1}};
    Py_buffer v[6];
    if (get_buffers(objs, v, specs, 6) < 0)
        return NULL;
    const int64_t *ptr = v[0].buf;
    const int32_t *idx = v[1].buf;
    if (!csr_rows_valid(ptr, n, nnz, r0, r1)) {
        release_buffers(v, 6);
        PyErr_SetString(PyExc_ValueError, "layer_operator: not a CSR matrix of n rows");
        return NULL;
    }
    const double *val = v[2].buf, *diag = v[3].buf, *x = v[4].buf;
    double *out = v[5].buf, dot = 0.0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    switch (R) {
    case 1: bad = layer_rows_1(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot); break;
    case 2: bad = layer_rows_2(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot); break;
    case 3: bad = layer_rows_3(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot); break;
    case 4: bad = layer_rows_4(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot); break;
    case 5: bad = layer_rows_5(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot); break;
    case 6: bad = layer_rows_6(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot); break;
    case 7: bad = layer_rows_7(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot); break;
    default: bad = layer_rows_8(ptr, idx, val, diag, x, out, delta, n, r0, r1, &dot);
    }
    Py_END_ALLOW_THREADS
    release_buffers(v, 6);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "layer_operator: a column index out of range");
        return NULL;
    }
    return PyFloat_FromDouble(dot);
}

/* cg_residual(x, r, p, q, inv, coupling, z, n, R, alpha, r0, r1) -> (Σ r·z, Σ r·r) */
CLONES static void cg_rows(double *x, double *r, const double *p, const double *q, const double *inv,
                           const double *coupling, double *z, int R, double alpha, int64_t r0,
                           int64_t r1, double *rz, double *rr)
{
    double s_rz = 0.0, s_rr = 0.0;
    for (int64_t i = r0; i < r1; ++i) {
        double *xi = x + i * R, *ri = r + i * R, *zi = z + i * R, t = 0.0;
        const double *pi = p + i * R, *qi = q + i * R, *wi = inv + i * R;
        for (int l = 0; l < R; ++l) {
            xi[l] += alpha * pi[l];
            ri[l] -= alpha * qi[l];
            zi[l] = wi[l] * ri[l];
            t += zi[l];
        }
        t *= coupling[i];
        for (int l = 0; l < R; ++l) {
            zi[l] -= wi[l] * t;
            s_rz += ri[l] * zi[l];
            s_rr += ri[l] * ri[l];
        }
    }
    *rz = s_rz;
    *rr = s_rr;
}

static PyObject *cg_residual(PyObject *self, PyObject *args)
{
    PyObject *objs[7];
    Py_ssize_t n, r0, r1;
    int R;
    double alpha;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOnidnn", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &objs[6], &n, &R, &alpha, &r0, &r1))
        return NULL;
    if (n < 1 || R < 1 || r0 < 0 || r1 > n || r0 > r1) {
        PyErr_SetString(PyExc_ValueError, "cg_residual: inconsistent sizes");
        return NULL;
    }
    const BufferArg specs[7] = {{"x", n * R, 8, 1},   {"r", n * R, 8, 1},        {"p", n * R, 8, 0},
                                {"q", n * R, 8, 0},   {"inv", n * R, 8, 0},      {"coupling", n, 8, 0},
                                {"z", n * R, 8, 1}};
    Py_buffer v[7];
    if (get_buffers(objs, v, specs, 7) < 0)
        return NULL;
    double rz, rr;
    Py_BEGIN_ALLOW_THREADS
    cg_rows(v[0].buf, v[1].buf, v[2].buf, v[3].buf, v[4].buf, v[5].buf, v[6].buf, R, alpha, r0, r1,
            &rz, &rr);
    Py_END_ALLOW_THREADS
    release_buffers(v, 7);
    return Py_BuildValue("(dd)", rz, rr);
}

/* matting_windows(image, win, h, w, eps, y0, y1) */
static PyObject *matting_windows(PyObject *self, PyObject *args)
{
    PyObject *objs[2];
    Py_ssize_t h, w, y0, y1;
    double eps;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnndnn", &objs[0], &objs[1], &h, &w, &eps, &y0, &y1))
        return NULL;
    if (h < 3 || w < 3 || y0 < 0 || y1 > h - 2 || y0 > y1 || !(eps > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "matting_windows: inconsistent sizes or ε");
        return NULL;
    }
    const BufferArg specs[2] = {{"image", h * w * 3, 8, 0}, {"win", (h - 2) * (w - 2) * 9, 8, 1}};
    Py_buffer v[2];
    if (get_buffers(objs, v, specs, 2) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    windows_rows(v[0].buf, v[1].buf, w, eps, y0, y1);
    Py_END_ALLOW_THREADS
    release_buffers(v, 2);
    Py_RETURN_NONE;
}

/* matting_rows(image, win, indptr, indices, values, h, w, y0, y1) */
static PyObject *matting_rows(PyObject *self, PyObject *args)
{
    PyObject *objs[5];
    Py_ssize_t h, w, y0, y1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOnnnn", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &h,
                          &w, &y0, &y1))
        return NULL;
    if (h < 3 || w < 3 || y0 < 0 || y1 > h || y0 > y1 || h * w > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "matting_rows: inconsistent sizes");
        return NULL;
    }
    const Py_ssize_t n = h * w;
    const BufferArg head[3] = {{"image", n * 3, 8, 0}, {"win", (h - 2) * (w - 2) * 9, 8, 0},
                               {"indptr", n + 1, 8, 0}};
    Py_buffer v[5];
    if (get_buffers(objs, v, head, 3) < 0)
        return NULL;
    /* the layout the kernel writes: every in-image neighbour within 2 rows and columns */
    const int64_t *indptr = v[2].buf;
    int ok = indptr[0] == 0;
    for (Py_ssize_t y = 0; ok && y < h; ++y) {
        int dy0, dy1;
        neighbourhood(y, h, &dy0, &dy1);
        for (Py_ssize_t x = 0; ok && x < w; ++x) {
            int dx0, dx1;
            neighbourhood(x, w, &dx0, &dx1);
            ok = indptr[y * w + x + 1] - indptr[y * w + x] ==
                 (int64_t)(dy1 - dy0 + 1) * (dx1 - dx0 + 1) - 1;
        }
    }
    if (!ok) {
        release_buffers(v, 3);
        PyErr_SetString(PyExc_ValueError, "matting_rows: indptr is not the 5×5 neighbourhoods'");
        return NULL;
    }
    const BufferArg tail[2] = {{"indices", indptr[n], 4, 1}, {"values", indptr[n], 8, 1}};
    if (get_buffers(objs + 3, v + 3, tail, 2) < 0) {
        release_buffers(v, 3);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    affinity_rows(v[0].buf, v[1].buf, indptr, v[3].buf, v[4].buf, h, w, y0, y1);
    Py_END_ALLOW_THREADS
    release_buffers(v, 5);
    Py_RETURN_NONE;
}

/* grams_variant(): the loop weighted_grams runs here by default: avx512, avx2 or generic */
static PyObject *grams_variant(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
#ifdef HAVE_AVX512_GRAMS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return PyUnicode_FromString("avx512");
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return PyUnicode_FromString("avx2");
#endif
    return PyUnicode_FromString("generic");
}

static PyObject *csr_matmul(PyObject *self, PyObject *args)
{
    PyObject *objs[5];
    Py_ssize_t n, nnz, r0, r1;
    int R;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOnninn", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &n,
                          &nnz, &R, &r0, &r1))
        return NULL;
    if (n < 1 || nnz < 0 || R < 1 || r0 < 0 || r1 > n || r0 > r1) {
        PyErr_SetString(PyExc_ValueError, "csr_matmul: inconsistent sizes");
        return NULL;
    }
    const BufferArg specs[5] = {{"ptr", n + 1, 8, 0}, {"idx", nnz, 4, 0},    {"val", nnz, 8, 0},
                                {"x", n * R, 8, 0},    {"out", n * R, 8, 1}};
    Py_buffer v[5];
    if (get_buffers(objs, v, specs, 5) < 0)
        return NULL;
    const int64_t *ptr = v[0].buf;
    const int32_t *idx = v[1].buf;
    if (!csr_rows_valid(ptr, n, nnz, r0, r1)) {
        release_buffers(v, 5);
        PyErr_SetString(PyExc_ValueError, "csr_matmul: not a CSR matrix of n rows");
        return NULL;
    }
    const double *val = v[2].buf, *x = v[3].buf;
    double *out = v[4].buf;
    int bad;
    Py_BEGIN_ALLOW_THREADS
    bad = R == 16 ? csr_rows_16(ptr, idx, val, x, out, n, r0, r1)
                  : csr_rows_any(ptr, idx, val, x, out, n, r0, r1, R);
    Py_END_ALLOW_THREADS
    release_buffers(v, 5);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "csr_matmul: a column index out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- irls_terms --------------------------------------------------------------------------- */

#define TERM_PIX 8 /* pixels whose right-hand-side products are added per pass over the sums */

/* x^g for a finite x ≥ FLT_MIN, computed in float64 without a call or a branch (so that the
 * pixel loops vectorize): ln x from x's exponent and the series 2·atanh(t) of its mantissa m in
 * [√½, √2) (t = (m − 1)/(m + 1), |t| ≤ 0.172, terms to t¹³), then e^(g ln x) = 2^j·e^r with
 * |r| ≤ ln2/2 and Taylor's polynomial to r¹² — relative error below 1e-14, so that the float
 * result is x^g correctly rounded unless x^g lies within 1e-14 of a rounding boundary. Every
 * multiply-add is an fma: the same bits in every clone. */
static inline float pow_series(float x, double g)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t mu = (u & 0x7fffffu) | 0x3f800000u;
    float mf;
    memcpy(&mf, &mu, sizeof mf);
    const int big = mf > 1.41421356f;
    const double m = big ? 0.5 * (double)mf : (double)mf;
    const int ex = (int)(u >> 23) - 127 + big;
    const double t = (m - 1.0) / (m + 1.0), t2 = t * t;
    double s = 1.0 / 13.0;
    s = fma(s, t2, 1.0 / 11.0);
    s = fma(s, t2, 1.0 / 9.0);
    s = fma(s, t2, 1.0 / 7.0);
    s = fma(s, t2, 1.0 / 5.0);
    s = fma(s, t2, 1.0 / 3.0);
    s = fma(s, t2, 1.0);
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double z = g * fma((double)ex, ln2_hi, fma(2.0 * t, s, (double)ex * ln2_lo));
    const double shifter = 6755399441055744.0; /* 1.5·2^52: adding it rounds to an integer */
    const double j = fma(z, 1.44269504088896338700, shifter) - shifter;
    const double r = fma(-j, ln2_lo, fma(-j, ln2_hi, z));
    double q = 1.0 / 479001600.0; /* Σ r^d / d! for d ≤ 12, by Horner */
    q = fma(q, r, 1.0 / 39916800.0);
    q = fma(q, r, 1.0 / 3628800.0);
    q = fma(q, r, 1.0 / 362880.0);
    q = fma(q, r, 1.0 / 40320.0);
    q = fma(q, r, 1.0 / 5040.0);
    q = fma(q, r, 1.0 / 720.0);
    q = fma(q, r, 1.0 / 120.0);
    q = fma(q, r, 1.0 / 24.0);
    q = fma(q, r, 1.0 / 6.0);
    q = fma(q, r, 0.5);
    q = fma(q, r, 1.0);
    q = fma(q, r, 1.0);
    const int64_t bits = (int64_t)((int)j + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return (float)(q * scale);
}

/* the weights' constants: g = γ − 2, s1 = w₁^γ, s0 = w₀^γ, the floor τ and the floor's weights */
typedef struct {
    double g;
    float s1, s0, tau, floor1, floor0, base;
} IrlsScales;

static IrlsScales irls_scales(double g, double s1, double s0, double tau)
{
    IrlsScales c = {g, (float)s1, (float)s0, (float)tau, 0, 0, 0};
    const float at_floor = pow_series(c.tau, g);
    c.floor1 = at_floor * c.s1;
    c.floor0 = at_floor * c.s0;
    c.base = c.s1 + c.floor0; /* e1 + e0 at α = 0 */
    return c;
}

/* pixels [c0, c1) (at most CHUNK) of every segment: the last row (with last; sum: CHUNK
 * doubles), the weights, delta, each segment's right-hand-side weight into w[k][i − c0]
 * (K × CHUNK floats), then their products with e's rows into sums[k] (pixel by pixel in order,
 * one rounding per multiply-add: fmaf in every clone, the same bits) */
GRAM_CLONES static void terms_chunk(double *alpha, float *delta, const float *e, float *sums, float *w,
                                    double *sum, int64_t K, int64_t n, int mp, const IrlsScales *sc,
                                    int last, int64_t c0, int64_t c1)
{
    const int64_t len = c1 - c0;
    if (last) { /* the last segment: 1 − Σ others, added in row order */
        for (int64_t i = 0; i < len; ++i)
            sum[i] = alpha[c0 + i];
        for (int64_t k = 1; k < K - 1; ++k)
            for (int64_t i = 0; i < len; ++i)
                sum[i] += alpha[k * n + c0 + i];
        for (int64_t i = 0; i < len; ++i)
            alpha[(K - 1) * n + c0 + i] = 1.0 - sum[i];
    }
    const double g = sc->g;
    const float s1 = sc->s1, s0 = sc->s0, tau = sc->tau, floor1 = sc->floor1, floor0 = sc->floor0;
    const float base = sc->base;
    for (int64_t k = 0; k < K; ++k) {
        const double *ak = alpha + k * n + c0;
        float *dk = delta + k * n + c0, *wk = w + k * CHUNK;
        const int rhs1 = k < K - 1;
        for (int64_t i = 0; i < len; ++i) {
            const float a = (float)ak[i], b = fabsf(a - 1.0f), c = fabsf(a);
            /* pow_series reads finite values from τ up (∞ as 3e38, giving 0); NaN stays NaN */
            const float xb = b > tau ? (b < 3.0e38f ? b : 3.0e38f) : tau;
            const float xc = c > tau ? (c < 3.0e38f ? c : 3.0e38f) : tau;
            const float pb = pow_series(xb, g) * s1, pc = pow_series(xc, g) * s0;
            const float e1 = b != b ? b : b <= tau ? floor1 : pb;
            const float e0 = c != c ? c : c <= tau ? floor0 : pc;
            dk[i] = (e1 + e0) - base;
            wk[i] = rhs1 ? e1 : e0;
        }
    }
    for (int64_t i0 = 0; i0 < len; i0 += TERM_PIX) {
        const int np = len - i0 < TERM_PIX ? (int)(len - i0) : TERM_PIX;
        const float *ei = e + (c0 + i0) * mp;
        for (int64_t k = 0; k < K; ++k) {
            const float *wk = w + k * CHUNK + i0;
            float *sk = sums + k * mp;
            if (np == TERM_PIX) { /* a constant count: the pixel loop unrolls, sums in registers */
                for (int a = 0; a < mp; ++a) {
                    float t = sk[a];
                    for (int p = 0; p < TERM_PIX; ++p)
                        t = fmaf(wk[p], ei[(int64_t)p * mp + a], t);
                    sk[a] = t;
                }
            } else {
                for (int a = 0; a < mp; ++a) {
                    float t = sk[a];
                    for (int p = 0; p < np; ++p)
                        t = fmaf(wk[p], ei[(int64_t)p * mp + a], t);
                    sk[a] = t;
                }
            }
        }
    }
}

static int terms_run(double *alpha, float *delta, const float *e, double *rhs, int64_t K, int64_t n,
                     int mp, const IrlsScales *sc, int last, int64_t p0, int64_t p1)
{
    float *w = malloc(sizeof(float) * (size_t)K * CHUNK);
    float *sums = calloc((size_t)K * mp, sizeof(float));
    double *sum = malloc(sizeof(double) * CHUNK);
    if (!w || !sums || !sum) {
        free(w);
        free(sums);
        free(sum);
        return -1;
    }
    for (int64_t c0 = p0; c0 < p1; c0 += CHUNK) {
        const int64_t c1 = p1 - c0 < CHUNK ? p1 : c0 + CHUNK;
        terms_chunk(alpha, delta, e, sums, w, sum, K, n, mp, sc, last, c0, c1);
        const size_t all = (size_t)K * mp;
        for (size_t j = 0; j < all; ++j) {
            rhs[j] += sums[j];
            sums[j] = 0.0f;
        }
    }
    free(w);
    free(sums);
    free(sum);
    return 0;
}

/* irls_floor(g, s1, s0, tau) -> float: e1 + e0 at α = 0, the Grams' base weight */
static PyObject *irls_floor(PyObject *self, PyObject *args)
{
    double g, s1, s0, tau;
    (void)self;
    if (!PyArg_ParseTuple(args, "dddd", &g, &s1, &s0, &tau))
        return NULL;
    if (!(tau >= 1.2e-38 && tau < 1.0)) {
        PyErr_SetString(PyExc_ValueError, "irls_floor: the floor must be in [FLT_MIN, 1)");
        return NULL;
    }
    return PyFloat_FromDouble(irls_scales(g, s1, s0, tau).base);
}

static PyObject *irls_terms(PyObject *self, PyObject *args)
{
    PyObject *objs[4];
    Py_ssize_t K, n, mp, p0, p1;
    double g, s1, s0, tau;
    int last;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOnnnddddpnn", &objs[0], &objs[1], &objs[2], &objs[3], &K, &n,
                          &mp, &g, &s1, &s0, &tau, &last, &p0, &p1))
        return NULL;
    if (K < 1 || n < 1 || mp < 1 || mp % 16 || p0 < 0 || p1 > n || p0 > p1 || (last && K < 2) ||
        !(tau >= 1.2e-38 && tau < 1.0)) {
        PyErr_SetString(PyExc_ValueError, "irls_terms: inconsistent sizes or floor");
        return NULL;
    }
    const BufferArg specs[4] = {{"alpha", K * n, 8, last}, {"delta", K * n, 4, 1},
                                {"e", n * mp, 4, 0},       {"rhs", K * mp, 8, 1}};
    Py_buffer v[4];
    if (get_buffers(objs, v, specs, 4) < 0)
        return NULL;
    const IrlsScales sc = irls_scales(g, s1, s0, tau);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = terms_run(v[0].buf, v[1].buf, v[2].buf, v[3].buf, K, n, (int)mp, &sc, last, p0, p1);
    Py_END_ALLOW_THREADS
    release_buffers(v, 4);
    if (status) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"tri_solve", tri_solve, METH_VARARGS,
     "Solve F·B·z = b in place for R right-hand sides (see the module source for the layout)."},
    {"weighted_grams", weighted_grams, METH_VARARGS,
     "Add Σ_i c[k][i]·e[i]ᵀe[i] over pixels [p0, p1) into out[k] (see the module source)."},
    {"layer_operator", layer_operator, METH_VARARGS,
     "out = A·x + diag ⊙ x + δ·rowsum(x) on rows [r0, r1) (see the module source)."},
    {"cg_residual", cg_residual, METH_VARARGS,
     "x += αp; r −= αq; z = M·r on rows [r0, r1); returns (Σ r·z, Σ r·r) (see the module source)."},
    {"irls_floor", irls_floor, METH_VARARGS,
     "e1 + e0 at α = 0: the weight irls_terms gives every pixel at the floor."},
    {"irls_terms", irls_terms, METH_VARARGS,
     "The constrained sparsification's IRLS terms of α over pixels [p0, p1) (see the module source)."},
    {"csr_matmul", csr_matmul, METH_VARARGS,
     "out = A·x on rows [r0, r1), x and out row-major (see the module source)."},
    {"matting_windows", matting_windows, METH_VARARGS,
     "Each 3×3 window's colour mean and inverse regularized covariance (see the module source)."},
    {"matting_rows", matting_rows, METH_VARARGS,
     "The matting affinity's CSR rows of image rows [y0, y1) (see the module source)."},
    {"grams_variant", grams_variant, METH_NOARGS,
     "Which weighted_grams loop runs on this CPU: avx512, avx2 or generic."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_segmentation",
                                    "Sparse triangular solves and weighted Grams for soft segmentation.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cpu_segmentation(void) { return PyModule_Create(&module); }
