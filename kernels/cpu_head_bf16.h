/*
 * The network head's full-resolution rows in bf16, fused: for each tile of TILE output pixels
 * the 512-channel hidden layer ReLU(fuse_input·t_in + up(P1) + up(D) + bias) is formed in fp32
 * registers, rounded to bf16 straight into the pair-interleaved layout the dot-product units
 * read (B[k/2][pixel][2], one 64-byte row per channel pair and 16 pixels) and multiplied by the
 * packed head weights at once — the hidden layer never leaves the L1 cache.
 *
 * Two GEMM variants read the same layouts:
 *   amx-bf16     AMX tiles (TDPBF16PS): 2×2 blocks of 16×16 fp32 accumulators, 32 channels
 *                of K per step;
 *   avx512-bf16  VDPBF16PS: 8 output channels × 2 vectors of 16 pixels per K pair.
 * Accumulation is fp32 in both; the accumulators start at the head's bias.
 *
 * A third variant runs the head in int8 (for CPUs with AVX-512 VNNI and no AMX, where
 * VPDPBUSD does ~7× VDPBF16PS's multiply-adds per cycle):
 *   avx512-vnni-int8  the tile's hidden layer staged in fp32 (K×TILE floats, L2) with each
 *                pixel's max over the channels; then quantized to uint8 by max / 255 (rounded
 *                to nearest even), four channels per 32-bit lane (B[k/4][pixel][4]); VPDPBUSD
 *                against the int8 weights, 8 output channels × 2 vectors of 16 pixels per K
 *                quad, int32 sums; out = sum · pixel scale · channel scale + bias.
 *
 * Upsampling: each output row first blends its two low-resolution rows per block at low width
 * (K×w floats per block, in L2); each 16-pixel group then takes its columns from one 16-float
 * window of those rows by two in-register permutes (the group's taps span < 16 low columns at
 * any upscaling of 8/7 or more; a group that spans more is gathered instead).
 *
 * Layouts (entry point head_rows_bf16 in cpu_guided_filter.c):
 *   wpack  uint16 bf16 [Mt][K/32][16][32]: A tiles of the head weights, rows = output channels
 *          (Mt = M rounded up to a multiple of 32, divided by 16; padding rows zero);
 *          int8 variant: int8 [Mt·16][K], w ≈ int8 · its row's scale
 *   hbias  float32 [Mt·16] (padding zero); int8 variant: [2][Mt·16], the bias then the scales
 *   out    float32 [M][nout][W]: chunk rows r0 .. r1-1 written as out rows row0 + r
 */
#if defined(HAVE_X86_VARIANTS) && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || \
                                   (defined(__clang__) && __clang_major__ >= 12))
#define HAVE_HEAD_BF16 1
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TILE 32 /* output pixels per tile: two 16-pixel B tiles */
#ifndef CHUNK
#define CHUNK 256 /* output pixels whose hidden layer is formed before it is multiplied */
#endif

typedef struct {
    const float *tin;   /* [cin][H][W] */
    int cin;
    size_t plane_in;
    int first;          /* image row of chunk row 0 in tin */
    const float *fin;   /* [K][cin] */
    const float *bias;  /* [K] */
    const Upsample *up; /* [2] */
    const uint16_t *wpack; /* int8: int8 [Mt·16][K] */
    const float *hbias;    /* int8: [2][Mt·16] bias, then each output channel's weight scale */
    int K, M, Mt, W, n;
    float *out;         /* [M][nout][W]: chunk row r is out row row0 + r */
    int nout, row0;
} HeadArgs;

/* Per-thread scratch: the current output row blended at low width per block, the column taps
 * of each 16-pixel group, the B buffer, the bias tiles. */
typedef struct {
    float *vrow[2];  /* [K][w + 16] */
    int vstride[2];
    int32_t *base[2]; /* [groups] first low column of the group's window, -1: gather */
    int32_t *i0[2], *i1[2]; /* [groups·16] taps within the window (absolute when gathering) */
    float *wx[2];           /* [groups·16] */
    uint16_t *b;     /* [groups][K/2][32]: the output row's hidden layer, B tiles per group
                        (int8: [groups][K/4][16][4] bytes) */
    float *ctile;    /* [Mt][16][16] bias tiles, then one 16×16 store buffer */
    float *stage;    /* int8: [K][TILE] the tile's hidden layer in fp32 */
    float *pscale;   /* int8: [groups·16] each pixel's hidden-layer scale (its max / 255) */
    int groups;
} HeadScratch;

static void head_scratch_free(HeadScratch *s)
{
    for (int u = 0; u < 2; ++u) {
        free(s->vrow[u]);
        free(s->base[u]);
        free(s->i0[u]);
        free(s->i1[u]);
        free(s->wx[u]);
    }
    free(s->b);
    free(s->ctile);
    free(s->stage);
    free(s->pscale);
}

static int head_scratch_init(HeadScratch *s, const HeadArgs *a)
{
    memset(s, 0, sizeof(*s));
    s->groups = (a->W + TILE - 1) / TILE * (TILE / 16);
    const size_t cols = (size_t)s->groups * 16;
    int ok = 1;
    for (int u = 0; u < 2; ++u) {
        const Upsample *U = a->up + u;
        s->vstride[u] = (U->w + 16 + 15) / 16 * 16;
        s->vrow[u] = alloc_aligned(sizeof(float) * (size_t)a->K * s->vstride[u]);
        s->base[u] = alloc_aligned(sizeof(int32_t) * (size_t)s->groups);
        s->i0[u] = alloc_aligned(sizeof(int32_t) * cols);
        s->i1[u] = alloc_aligned(sizeof(int32_t) * cols);
        s->wx[u] = alloc_aligned(sizeof(float) * cols);
        ok &= s->vrow[u] && s->base[u] && s->i0[u] && s->i1[u] && s->wx[u];
        if (!ok)
            break;
        memset(s->vrow[u], 0, sizeof(float) * (size_t)a->K * s->vstride[u]);
        for (int g = 0; g < s->groups; ++g) {
            int lo = U->w, hi = 0;
            for (int j = 0; j < 16 && g * 16 + j < a->W; ++j) {
                lo = imin(lo, U->xi0[g * 16 + j]);
                hi = imax(hi, U->xi1[g * 16 + j]);
            }
            const int window = hi - lo < 16 && lo < U->w; /* else gather, absolute taps */
            s->base[u][g] = window ? lo : -1;
            for (int j = 0; j < 16; ++j) {
                const int x = g * 16 + j, in = x < a->W;
                const int off = window ? lo : 0;
                s->i0[u][x] = in ? U->xi0[x] - off : 0;
                s->i1[u][x] = in ? U->xi1[x] - off : 0;
                s->wx[u][x] = in ? U->xw[x] : 0.0f;
            }
        }
    }
    s->b = alloc_aligned(sizeof(uint16_t) * (size_t)a->K * 16 * s->groups);
    s->ctile = alloc_aligned(sizeof(float) * 256 * ((size_t)a->Mt + 1));
    s->stage = alloc_aligned(sizeof(float) * (size_t)a->K * TILE);
    s->pscale = alloc_aligned(sizeof(float) * cols);
    ok &= s->b && s->ctile && s->stage && s->pscale;
    if (!ok) {
        head_scratch_free(s);
        return -1;
    }
    for (int mt = 0; mt < a->Mt; ++mt)
        for (int i = 0; i < 16; ++i)
            for (int j = 0; j < 16; ++j)
                s->ctile[(size_t)mt * 256 + i * 16 + j] = a->hbias[mt * 16 + i];
    return 0;
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,fma")
#endif

/* Output row r of block u blended from its two low-resolution rows, at low width. */
static void vertical_blend(const HeadArgs *a, HeadScratch *s, int u, int r)
{
    const Upsample *U = a->up + u;
    const float wy = U->yw[r], wv = 1.0f - wy;
    for (int c = 0; c < a->K; ++c) {
        const float *top = U->src + ((size_t)c * U->rows + U->yi0[r]) * U->w;
        const float *bot = U->src + ((size_t)c * U->rows + U->yi1[r]) * U->w;
        float *restrict d = s->vrow[u] + (size_t)c * s->vstride[u];
        for (int x = 0; x < U->w; ++x)
            d[x] = top[x] * wv + bot[x] * wy;
    }
}

/* 32 channels' worth of pairs for 16 pixels: interleave (a0 b0 a1 b1 ...) as bf16 */
static inline __m512i pack_pair(__m512 a, __m512 b)
{
    static const uint16_t order[32] __attribute__((aligned(64))) = {
        0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i idx = _mm512_load_si512((const void *)order);
    const __m512i ab = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* low 16: a, high 16: b */
    return _mm512_permutexvar_epi16(idx, ab);
}

/* The column taps of one block at one 16-pixel group, loaded once per tile. */
typedef struct {
    __m512i i0, i1;
    __m512 w;
    int base; /* first column of the 16-float window, -1: gather */
} GroupTaps;

static inline GroupTaps group_taps(const HeadScratch *s, int u, int g)
{
    GroupTaps t;
    t.i0 = _mm512_load_si512((const void *)(s->i0[u] + g * 16));
    t.i1 = _mm512_load_si512((const void *)(s->i1[u] + g * 16));
    t.w = _mm512_load_ps(s->wx[u] + g * 16);
    t.base = s->base[u][g];
    return t;
}

/* One block's upsampled values of a channel's blended row (a vrow) at a group. */
static inline __m512 up_group(const GroupTaps *t, const float *row)
{
    __m512 left, right;
    if (t->base >= 0) {
        const __m512 win = _mm512_loadu_ps(row + t->base);
        left = _mm512_permutexvar_ps(t->i0, win);
        right = _mm512_permutexvar_ps(t->i1, win);
    } else {
        left = _mm512_i32gather_ps(t->i0, row, 4);
        right = _mm512_i32gather_ps(t->i1, row, 4);
    }
    return _mm512_fmadd_ps(_mm512_sub_ps(right, left), t->w, left);
}

/* The tile's input tap values and each block's column taps (two 16-pixel halves). */
static inline void tile_inputs(const HeadArgs *a, const HeadScratch *s, int r, int x0,
                               __m512 t[2][8], GroupTaps taps[2][2])
{
    const int cin = a->cin, g0 = x0 / 16;
    for (int h = 0; h < 2; ++h) {
        const int x = x0 + 16 * h, left = a->W - x;
        const __mmask16 m = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        for (int j = 0; j < cin && j < 8; ++j)
            t[h][j] = _mm512_maskz_loadu_ps(
                m, a->tin + (size_t)j * a->plane_in + (size_t)(a->first + r) * a->W + x);
        for (int u = 0; u < 2; ++u)
            taps[u][h] = group_taps(s, u, g0 + h);
    }
}

/* Hidden channel c at the tile's half h: ReLU(fuse_input·t_in + up(P1) + up(D) + bias). */
static inline __m512 hidden_value(const HeadArgs *a, const HeadScratch *s, GroupTaps taps[2][2],
                                  __m512 t[2][8], int c, int h)
{
    const int cin = a->cin;
    const float *f = a->fin + (size_t)c * cin;
    const float *p = s->vrow[0] + (size_t)c * s->vstride[0];
    const float *d = s->vrow[1] + (size_t)c * s->vstride[1];
    __m512 acc = _mm512_add_ps(up_group(&taps[0][h], p), up_group(&taps[1][h], d));
    acc = _mm512_add_ps(acc, _mm512_set1_ps(a->bias[c]));
    for (int j = 0; j < cin && j < 8; ++j)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(f[j]), t[h][j], acc);
    return _mm512_max_ps(acc, _mm512_setzero_ps());
}

/* The hidden layer of pixels x0 .. x0+TILE-1 of chunk row r into s->b. */
static void hidden_tile(const HeadArgs *a, HeadScratch *s, int r, int x0)
{
    const int g0 = x0 / 16;
    __m512 t[2][8];
    GroupTaps taps[2][2]; /* [block][half] */
    tile_inputs(a, s, r, x0, t, taps);
    for (int c = 0; c < a->K; c += 2) {
        __m512 v[2][2];
        for (int q = 0; q < 2; ++q)
            for (int h = 0; h < 2; ++h)
                v[q][h] = hidden_value(a, s, taps, t, c + q, h);
        for (int h = 0; h < 2; ++h)
            _mm512_store_si512((void *)(s->b + ((size_t)(g0 + h) * (a->K / 2) + c / 2) * 32),
                               pack_pair(v[0][h], v[1][h]));
    }
}

/* int8: the tile's hidden layer in fp32 (staged, each pixel's max over channels taken on the
 * way), then each pixel's values scaled to [0, 255] by its max, rounded, four channels to a
 * 32-bit lane: B[k/4][pixel][4] bytes, the layout VPDPBUSD reads */
static void hidden_tile_u8(const HeadArgs *a, HeadScratch *s, int r, int x0)
{
    const int g0 = x0 / 16;
    __m512 t[2][8];
    GroupTaps taps[2][2];
    tile_inputs(a, s, r, x0, t, taps);
    __m512 mx[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int c = 0; c < a->K; ++c)
        for (int h = 0; h < 2; ++h) {
            const __m512 v = hidden_value(a, s, taps, t, c, h);
            mx[h] = _mm512_max_ps(mx[h], v);
            _mm512_store_ps(s->stage + (size_t)c * TILE + 16 * h, v);
        }
    const __m512 tiny = _mm512_set1_ps(1e-30f), top = _mm512_set1_ps(255.0f);
    const __m512i cap = _mm512_set1_epi32(255);
    for (int h = 0; h < 2; ++h) {
        const __m512 m = _mm512_max_ps(mx[h], tiny);
        _mm512_store_ps(s->pscale + (size_t)(g0 + h) * 16, _mm512_div_ps(m, top));
        const __m512 inv = _mm512_div_ps(top, m);
        uint8_t *dst = (uint8_t *)s->b + (size_t)(g0 + h) * a->K * 16;
        for (int c = 0; c < a->K; c += 4) {
            __m512i word = _mm512_setzero_si512();
            for (int j = 0; j < 4; ++j) {
                const __m512 v = _mm512_load_ps(s->stage + (size_t)(c + j) * TILE + 16 * h);
                const __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), cap);
                word = _mm512_or_si512(word, _mm512_slli_epi32(q, 8 * j));
            }
            _mm512_store_si512((void *)(dst + (size_t)c * 16), word);
        }
    }
}

/* out rows: channel m, chunk row r, pixels x0 .. x0+count-1 from a 16×16 fp32 block */
static void store_block(const HeadArgs *a, const float *blk, int m0, int r, int x0, int count)
{
    for (int i = 0; i < 16 && m0 + i < a->M; ++i)
        memcpy(a->out + ((size_t)(m0 + i) * a->nout + a->row0 + r) * a->W + x0, blk + i * 16,
               sizeof(float) * (size_t)count);
}

static void gemm_tile_avx512bf16(const HeadArgs *a, const HeadScratch *s, int r, int x0)
{
    const int KP = a->K / 2, KT = a->K / 32;
    const uint16_t *bt = s->b + (size_t)(x0 / 16) * KP * 32;
    const uint32_t *wp = (const uint32_t *)a->wpack;
    const int n0 = imin(16, a->W - x0), n1 = imin(16, a->W - x0 - 16);
    const __mmask16 k0 = (__mmask16)((1u << n0) - 1);
    const __mmask16 k1 = n1 <= 0 ? 0 : n1 >= 16 ? 0xFFFF : (__mmask16)((1u << n1) - 1);
    for (int m0 = 0; m0 < a->M; m0 += 8) {
        __m512 acc[8][2];
        for (int i = 0; i < 8; ++i)
            acc[i][0] = acc[i][1] = _mm512_set1_ps(a->hbias[m0 + i < a->Mt * 16 ? m0 + i : 0]);
        for (int kp = 0; kp < KP; ++kp) {
            const __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(bt + (size_t)kp * 32));
            const __m512bh b1 =
                (__m512bh)_mm512_load_si512((const void *)(bt + ((size_t)KP + kp) * 32));
            const int kt = kp / 16, kk = kp % 16;
            for (int i = 0; i < 8; ++i) {
                const int m = m0 + i, mt = m / 16;
                const __m512bh w = (__m512bh)_mm512_set1_epi32(
                    (int)wp[((size_t)mt * KT + kt) * 256 + (m % 16) * 16 + kk]);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], w, b0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], w, b1);
            }
        }
        for (int i = 0; i < 8 && m0 + i < a->M; ++i) {
            float *o = a->out + ((size_t)(m0 + i) * a->nout + a->row0 + r) * a->W + x0;
            _mm512_mask_storeu_ps(o, k0, acc[i][0]);
            if (k1)
                _mm512_mask_storeu_ps(o + 16, k1, acc[i][1]);
        }
    }
}

/* int8: 8 output channels × 2 vectors of 16 pixels per K quad, VPDPBUSD (u8 hidden × s8
 * weights, int32 sums), then out = sum · pixel scale · channel scale + bias */
static void gemm_tile_vnni(const HeadArgs *a, const HeadScratch *s, int r, int x0)
{
    const int KQ = a->K / 4;
    const uint8_t *bt = (const uint8_t *)s->b + (size_t)(x0 / 16) * KQ * 64;
    const int32_t *wq = (const int32_t *)(const void *)a->wpack; /* [Mt·16][K/4] */
    const float *scale = a->hbias + (size_t)a->Mt * 16;
    const int n0 = imin(16, a->W - x0), n1 = imin(16, a->W - x0 - 16);
    const __mmask16 k0 = (__mmask16)((1u << n0) - 1);
    const __mmask16 k1 = n1 <= 0 ? 0 : n1 >= 16 ? 0xFFFF : (__mmask16)((1u << n1) - 1);
    const __m512 p0 = _mm512_load_ps(s->pscale + x0), p1 = _mm512_load_ps(s->pscale + x0 + 16);
    for (int m0 = 0; m0 < a->M; m0 += 8) {
        __m512i acc[8][2];
        for (int i = 0; i < 8; ++i)
            acc[i][0] = acc[i][1] = _mm512_setzero_si512();
        for (int kq = 0; kq < KQ; ++kq) {
            const __m512i b0 = _mm512_load_si512((const void *)(bt + (size_t)kq * 64));
            const __m512i b1 = _mm512_load_si512((const void *)(bt + ((size_t)KQ + kq) * 64));
            for (int i = 0; i < 8; ++i) {
                const __m512i w = _mm512_set1_epi32(wq[(size_t)(m0 + i) * KQ + kq]);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], b0, w);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], b1, w);
            }
        }
        for (int i = 0; i < 8 && m0 + i < a->M; ++i) {
            const __m512 cs = _mm512_set1_ps(scale[m0 + i]), bias = _mm512_set1_ps(a->hbias[m0 + i]);
            float *o = a->out + ((size_t)(m0 + i) * a->nout + a->row0 + r) * a->W + x0;
            _mm512_mask_storeu_ps(
                o, k0, _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][0]), cs), p0, bias));
            if (k1)
                _mm512_mask_storeu_ps(
                    o + 16, k1,
                    _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][1]), cs), p1, bias));
        }
    }
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("amx-tile,amx-bf16,avx512f"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f")
#endif
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

static void amx_configure(void)
{
    TileConfig cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette_id = 1;
    for (int i = 0; i < 8; ++i) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    /* the whole struct as the operand: GCC's _tile_loadconfig names only its first 8 bytes,
     * so the stores to the rest may be dropped as dead */
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
}

static void amx_release(void) { _tile_release(); }

/* Output row r: for each pair of 16-channel tiles, every 32-pixel tile of the row (the pair's
 * weights stay in L1, each channel's output row is written front to back). */
static void gemm_row_amx(const HeadArgs *a, HeadScratch *s, int r, int xa, int xb)
{
    const int KT = a->K / 32;
    const size_t group = (size_t)(a->K / 2) * 32; /* uint16 per 16-pixel group */
    const long ostride = (long)a->nout * a->W * (long)sizeof(float);
    float *buf = s->ctile + (size_t)a->Mt * 256;
    for (int mt = 0; mt < a->Mt; mt += 2) {
        const uint16_t *a0 = a->wpack + (size_t)mt * KT * 512;
        const uint16_t *a1 = a0 + (size_t)KT * 512;
        for (int x0 = xa; x0 < xb; x0 += TILE) {
            const uint16_t *b0 = s->b + (size_t)(x0 / 16) * group, *b1 = b0 + group;
            _tile_loadd(0, s->ctile + (size_t)mt * 256, 64);
            _tile_loadd(1, s->ctile + (size_t)mt * 256, 64);
            _tile_loadd(2, s->ctile + (size_t)(mt + 1) * 256, 64);
            _tile_loadd(3, s->ctile + (size_t)(mt + 1) * 256, 64);
            for (int kt = 0; kt < KT; ++kt) {
                _tile_loadd(4, a0 + (size_t)kt * 512, 64);
                _tile_loadd(5, a1 + (size_t)kt * 512, 64);
                _tile_loadd(6, b0 + (size_t)kt * 512, 64);
                _tile_loadd(7, b1 + (size_t)kt * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            float *o = a->out + ((size_t)mt * 16 * a->nout + a->row0 + r) * a->W + x0;
            if (x0 + TILE <= a->W && (mt + 2) * 16 <= a->M) {
                _tile_stored(0, o, ostride);
                _tile_stored(1, o + 16, ostride);
                _tile_stored(2, o + 16 * (size_t)a->nout * a->W, ostride);
                _tile_stored(3, o + 16 * (size_t)a->nout * a->W + 16, ostride);
                continue;
            }
            const int n0 = imin(16, a->W - x0), n1 = imin(16, a->W - x0 - 16);
            _tile_stored(0, buf, 64);
            store_block(a, buf, mt * 16, r, x0, n0);
            _tile_stored(2, buf, 64);
            store_block(a, buf, (mt + 1) * 16, r, x0, n0);
            if (n1 > 0) {
                _tile_stored(1, buf, 64);
                store_block(a, buf, mt * 16, r, x0 + 16, n1);
                _tile_stored(3, buf, 64);
                store_block(a, buf, (mt + 1) * 16, r, x0 + 16, n1);
            }
        }
    }
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static int amx_supported(void)
{
    static int state = -1; /* -1 unknown, 0 no, 1 yes */
    if (state < 0) {
        __builtin_cpu_init();
        int ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
        ok = ok && (d >> 22 & 1) && (d >> 24 & 1); /* AMX-BF16, AMX-TILE */
        /* Linux hands out the tile state on request (ARCH_REQ_XCOMP_PERM, XTILEDATA) */
        ok = ok && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
        state = ok;
    }
    return state;
}

static int avx512bf16_supported(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw"))
        return 0;
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
    return a >> 5 & 1; /* AVX512_BF16 */
}

static int avx512vnni_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}

/* Rows r0 .. r1-1 of the chunk; variant 0: AMX, 1: AVX512-BF16, 2: int8 on AVX512-VNNI.
 * Returns -1 without memory. */
static int head_range_bf16(const HeadArgs *a, int r0, int r1, int variant)
{
    HeadScratch s;
    if (head_scratch_init(&s, a) < 0)
        return -1;
    if (variant == 0)
        amx_configure();
    for (int r = r0; r < r1; ++r) {
        vertical_blend(a, &s, 0, r);
        vertical_blend(a, &s, 1, r);
        /* columns a chunk at a time: its 512-channel layer (CHUNK·1 KB) stays in L2 */
        for (int xa = 0; xa < a->W; xa += CHUNK) {
            const int xb = imin(a->W, xa + CHUNK);
            if (variant == 2) { /* int8: its own per-pixel scales, then the tiles' GEMM */
                for (int x0 = xa; x0 < xb; x0 += TILE) {
                    hidden_tile_u8(a, &s, r, x0);
                    gemm_tile_vnni(a, &s, r, x0);
                }
                continue;
            }
            for (int x0 = xa; x0 < xb; x0 += TILE)
                hidden_tile(a, &s, r, x0);
            if (variant == 0)
                gemm_row_amx(a, &s, r, xa, xb);
            else
                for (int x0 = xa; x0 < xb; x0 += TILE)
                    gemm_tile_avx512bf16(a, &s, r, x0);
        }
    }
    if (variant == 0)
        amx_release();
    head_scratch_free(&s);
    return 0;
}
#endif
