// Guided filter of many channels, covariance, projection and normalization on the GPU.
//
// The rules are the CPU exact mode's (kernels/cpu_guided_filter.c, sss_rt/postprocess/cpu.py):
// (2r+1)² boxes truncated at the image border and divided by their true pixel count N(x); the
// guide's (Σ + εU)⁻¹ computed once for all channels; covariance and projections accumulated in
// float64 (one direction of these features often carries 10⁴–10⁵× the variance of the next:
// float32 or tensor-core products lose the weak directions, so this is a tiled FP64 reduction
// rather than a tensor-core GEMM).
//
// Layouts: planes are [P][H][W] float32 (row-major, x fastest). Features are [C][H][W], float32
// or float16 (suffixes _f32 / _f16), accumulation always in float32 or float64. A band: H rows
// of the image starting at image row `row0` of `height` (the box counts N(x) are the whole
// image's; rows within 2r of a band edge that is not an image edge are context, not output).
// `ld`: the distance between two channels' first elements (H·W for a whole band).
// Launch geometry is chosen by sss_rt/postprocess/cuda.py; every kernel checks its bounds.
// The same source runs on the CPU under kernels/emulation (tests/test_cuda_emulated.py).

#include <cuda_fp16.h>

#ifndef DYNAMIC_SHARED  // the host emulation (kernels/emulation) defines its own
#define DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#define ROW_TILE 256  // outputs per block of the horizontal box pass
#define GRAM_TILE 16  // the covariance is computed in GRAM_TILE × GRAM_TILE tiles
#define GRAM_STEP 64  // pixels staged in shared memory per step of the covariance
#define REDUCE_THREADS 256

__device__ __forceinline__ float load(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float load(const __half *p, size_t i) { return __half2float(p[i]); }

// ---------------------------------------------------------------------------------------------
// Guide: uint8 RGB H×W×3 → planes I0, I1, I2, I0I0, I0I1, I0I2, I1I1, I1I2, I2I2 ([9][H][W]).
extern "C" __global__ void guide_planes(const unsigned char *__restrict__ rgb,
                                        float *__restrict__ planes, int H, int W)
{
    const size_t n = (size_t)H * W;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float r = rgb[3 * i] * (1.0f / 255.0f);
        const float g = rgb[3 * i + 1] * (1.0f / 255.0f);
        const float b = rgb[3 * i + 2] * (1.0f / 255.0f);
        planes[i] = r;
        planes[n + i] = g;
        planes[2 * n + i] = b;
        planes[3 * n + i] = r * r;
        planes[4 * n + i] = r * g;
        planes[5 * n + i] = r * b;
        planes[6 * n + i] = g * g;
        planes[7 * n + i] = g * b;
        planes[8 * n + i] = b * b;
    }
}

// ---------------------------------------------------------------------------------------------
// Horizontal box sums over [x-r, x+r] ∩ [0, W) of P planes. Grid (ceil(W/ROW_TILE), H, P),
// block ROW_TILE threads, dynamic shared memory (ROW_TILE + 2r) floats. Loads are coalesced;
// each output sums 2r+1 staged values.
extern "C" __global__ void box_rows(const float *__restrict__ in, float *__restrict__ out, int H,
                                    int W, int r)
{
    DYNAMIC_SHARED(float, tile);
    const int x0 = blockIdx.x * ROW_TILE, y = blockIdx.y;
    const size_t row = ((size_t)blockIdx.z * H + y) * W;
    for (int i = threadIdx.x; i < ROW_TILE + 2 * r; i += blockDim.x) {
        const int x = x0 - r + i;
        tile[i] = (x >= 0 && x < W) ? in[row + x] : 0.0f;
    }
    __syncthreads();
    const int x = x0 + threadIdx.x;
    if (x >= W)
        return;
    float s = 0.0f;
    for (int d = 0; d <= 2 * r; ++d)
        s += tile[threadIdx.x + d];
    out[row + x] = s;
}

// The same pass fused with the products a channel's filter needs: for channel c of the chunk
// starting at c0, out[c][q] = box_rows(p, p·I0, p·I1, p·I2)[q] (out is [C][4][H][W]; channel
// c of p at p + c·ld).
template <typename T>
__device__ void box_rows_products(const T *__restrict__ p, const float *__restrict__ guide,
                                  float *__restrict__ out, int c0, int H, int W, int r,
                                  long long ld)
{
    DYNAMIC_SHARED(float, staged);  // 4 × (ROW_TILE + 2r)
    const int span = ROW_TILE + 2 * r;
    const int x0 = blockIdx.x * ROW_TILE, y = blockIdx.y, c = blockIdx.z;
    const size_t plane = (size_t)H * W, off = (size_t)y * W;
    const T *src = p + (size_t)(c0 + c) * ld;
    for (int i = threadIdx.x; i < span; i += blockDim.x) {
        const int x = x0 - r + i;
        float v = 0.0f, g0 = 0.0f, g1 = 0.0f, g2 = 0.0f;
        if (x >= 0 && x < W) {
            v = load(src, off + x);
            g0 = guide[off + x];
            g1 = guide[plane + off + x];
            g2 = guide[2 * plane + off + x];
        }
        staged[i] = v;
        staged[span + i] = v * g0;
        staged[2 * span + i] = v * g1;
        staged[3 * span + i] = v * g2;
    }
    __syncthreads();
    const int x = x0 + threadIdx.x;
    if (x >= W)
        return;
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int d = 0; d <= 2 * r; ++d)
        for (int q = 0; q < 4; ++q)
            s[q] += staged[q * span + threadIdx.x + d];
    float *o = out + (size_t)c * 4 * plane + off + x;
    for (int q = 0; q < 4; ++q)
        o[q * plane] = s[q];
}

extern "C" __global__ void box_rows_products_f32(const float *p, const float *guide, float *out,
                                                 int c0, int H, int W, int r, long long ld)
{
    box_rows_products(p, guide, out, c0, H, W, r, ld);
}

extern "C" __global__ void box_rows_products_f16(const __half *p, const float *guide, float *out,
                                                 int c0, int H, int W, int r, long long ld)
{
    box_rows_products(p, guide, out, c0, H, W, r, ld);
}

// ---------------------------------------------------------------------------------------------
// Vertical box sums over [y-r, y+r] ∩ [0, H) of P planes: one thread per column, a float64
// running sum down the column (no drift over tall images). Grid (ceil(W/blockDim), P). Loads
// and stores of neighbouring threads are neighbouring addresses (coalesced).
extern "C" __global__ void box_cols(const float *__restrict__ in, float *__restrict__ out, int H,
                                    int W, int r)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= W)
        return;
    const size_t base = (size_t)blockIdx.y * H * W + x;
    double s = 0.0;
    for (int y = 0; y < r && y < H; ++y)
        s += in[base + (size_t)y * W];
    for (int y = 0; y < H; ++y) {
        if (y + r < H)
            s += in[base + (size_t)(y + r) * W];
        if (y - r - 1 >= 0)
            s -= in[base + (size_t)(y - r - 1) * W];
        out[base + (size_t)y * W] = (float)s;
    }
}

__device__ __forceinline__ float inv_count(int x, int y, int H, int W, int r)
{
    const int ny = min(H, y + r + 1) - max(0, y - r);
    const int nx = min(W, x + r + 1) - max(0, x - r);
    return 1.0f / (float)(nx * ny);
}

// ---------------------------------------------------------------------------------------------
// Guide statistics from the box sums of guide_planes: window mean of I ([3][H][W]) and the
// symmetric (Σ + εU)⁻¹ as (00, 01, 02, 11, 12, 22) ([6][H][W]), in float64 like the CPU path.
extern "C" __global__ void guide_inverse(const float *__restrict__ sums, float *__restrict__ mean,
                                         float *__restrict__ inv, int H, int W, int r, float eps,
                                         int row0, int height)
{
    const size_t n = (size_t)H * W;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const int y = (int)(i / W), x = (int)(i % W);
        const double k = inv_count(x, row0 + y, height, W, r);
        const double m0 = sums[i] * k, m1 = sums[n + i] * k, m2 = sums[2 * n + i] * k;
        const double a = sums[3 * n + i] * k - m0 * m0 + eps;
        const double b = sums[4 * n + i] * k - m0 * m1;
        const double c = sums[5 * n + i] * k - m0 * m2;
        const double d = sums[6 * n + i] * k - m1 * m1 + eps;
        const double e = sums[7 * n + i] * k - m1 * m2;
        const double f = sums[8 * n + i] * k - m2 * m2 + eps;
        const double i00 = d * f - e * e, i01 = c * e - b * f, i02 = b * e - c * d;
        const double i11 = a * f - c * c, i12 = b * c - a * e, i22 = a * d - b * b;
        const double det = a * i00 + b * i01 + c * i02;
        mean[i] = (float)m0;
        mean[n + i] = (float)m1;
        mean[2 * n + i] = (float)m2;
        inv[i] = (float)(i00 / det);
        inv[n + i] = (float)(i01 / det);
        inv[2 * n + i] = (float)(i02 / det);
        inv[3 * n + i] = (float)(i11 / det);
        inv[4 * n + i] = (float)(i12 / det);
        inv[5 * n + i] = (float)(i22 / det);
    }
}

// ---------------------------------------------------------------------------------------------
// Per channel of a chunk: box sums (p, pI0, pI1, pI2) → coefficients (a0, a1, a2, b), in place
// in the [C][4][H][W] buffer.
extern "C" __global__ void coefficients(float *__restrict__ buf, const float *__restrict__ mean,
                                        const float *__restrict__ inv, int C, int H, int W, int r,
                                        int row0, int height)
{
    const size_t n = (size_t)H * W, total = n * C;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        const size_t c = t / n, i = t % n;
        const int y = (int)(i / W), x = (int)(i % W);
        float *s = buf + c * 4 * n + i;
        const double k = inv_count(x, row0 + y, height, W, r);
        const double m0 = mean[i], m1 = mean[n + i], m2 = mean[2 * n + i];
        const double mp = s[0] * k;
        const double c0 = s[n] * k - m0 * mp, c1 = s[2 * n] * k - m1 * mp;
        const double c2 = s[3 * n] * k - m2 * mp;
        const double a0 = inv[i] * c0 + inv[n + i] * c1 + inv[2 * n + i] * c2;
        const double a1 = inv[n + i] * c0 + inv[3 * n + i] * c1 + inv[4 * n + i] * c2;
        const double a2 = inv[2 * n + i] * c0 + inv[4 * n + i] * c1 + inv[5 * n + i] * c2;
        s[0] = (float)a0;
        s[n] = (float)a1;
        s[2 * n] = (float)a2;
        s[3 * n] = (float)(mp - a0 * m0 - a1 * m1 - a2 * m2);
    }
}

// Output of a chunk: q = (Σ_k box(a_k)·I_k + box(b)) / N(x), written to channel c0 + c of out.
extern "C" __global__ void apply_output(const float *__restrict__ buf,
                                        const float *__restrict__ guide, float *__restrict__ out,
                                        int c0, int C, int H, int W, int r, int row0, int height)
{
    const size_t n = (size_t)H * W, total = n * C;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        const size_t c = t / n, i = t % n;
        const int y = (int)(i / W), x = (int)(i % W);
        const float *s = buf + c * 4 * n + i;
        const float q = s[0] * guide[i] + s[n] * guide[n + i] + s[2 * n] * guide[2 * n + i] +
                        s[3 * n];
        out[(c0 + c) * n + i] = q * inv_count(x, row0 + y, height, W, r);
    }
}

// ---------------------------------------------------------------------------------------------
// Channel sums of N elements per channel (float64 partials per block): partial[blockIdx.x][c].
template <typename T>
__device__ void channel_sums(const T *__restrict__ p, double *__restrict__ partial, int C,
                             long long N, long long ld)
{
    __shared__ double acc[REDUCE_THREADS];
    const int c = blockIdx.y;
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < N;
         i += (long long)gridDim.x * blockDim.x)
        s += load(p, (size_t)c * ld + i);
    acc[threadIdx.x] = s;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            acc[threadIdx.x] += acc[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        partial[(size_t)blockIdx.x * C + c] = acc[0];
}

extern "C" __global__ void channel_sums_f32(const float *p, double *partial, int C, long long N,
                                            long long ld)
{
    channel_sums(p, partial, C, N, ld);
}

extern "C" __global__ void channel_sums_f16(const __half *p, double *partial, int C, long long N,
                                            long long ld)
{
    channel_sums(p, partial, C, N, ld);
}

// Covariance about a shift: partial[blockIdx.z] = Σ_n (q_i − s_i)(q_j − s_j) over this block's
// range of the N pixels (channel c at q + c·ld), for the GRAM_TILE × GRAM_TILE tile (blockIdx.y, blockIdx.x) of the C × C matrix,
// float64 accumulation. Block GRAM_TILE × GRAM_TILE threads. The host sums the partials.
extern "C" __global__ void gram_partial(const float *__restrict__ q, const float *__restrict__ shift,
                                        double *__restrict__ partial, int C, long long N,
                                        long long ld, long long per_block)
{
    __shared__ double a[GRAM_TILE][GRAM_STEP + 1];
    __shared__ double b[GRAM_TILE][GRAM_STEP + 1];
    const int ti = threadIdx.y, tj = threadIdx.x;
    const int i0 = blockIdx.y * GRAM_TILE, j0 = blockIdx.x * GRAM_TILE;
    const long long n0 = blockIdx.z * per_block;
    const long long n1 = min(N, n0 + per_block);
    const int lane = ti * GRAM_TILE + tj, lanes = GRAM_TILE * GRAM_TILE;
    double acc = 0.0;
    for (long long base = n0; base < n1; base += GRAM_STEP) {
        for (int e = lane; e < GRAM_TILE * GRAM_STEP; e += lanes) {
            const int row = e / GRAM_STEP, col = e % GRAM_STEP;
            const long long n = base + col;
            const int ci = i0 + row, cj = j0 + row;
            a[row][col] = (n < n1 && ci < C) ? (double)q[(size_t)ci * ld + n] - shift[ci] : 0.0;
            b[row][col] = (n < n1 && cj < C) ? (double)q[(size_t)cj * ld + n] - shift[cj] : 0.0;
        }
        __syncthreads();
        for (int k = 0; k < GRAM_STEP; ++k)
            acc += a[ti][k] * b[tj][k];
        __syncthreads();
    }
    const int i = i0 + ti, j = j0 + tj;
    if (i < C && j < C)
        partial[(size_t)blockIdx.z * C * C + (size_t)i * C + j] = acc;
}

// ---------------------------------------------------------------------------------------------
// Projection of the unfiltered features on the PCA basis: out[k][n] = Σ_c V[k][c](p[c][n] − s[c])
// in float64 (V: K × C, row-major; channel c of p at p + c·ld; K ≤ 4). One thread per pixel.
template <typename T>
__device__ void project(const T *__restrict__ p, const double *__restrict__ V,
                        const double *__restrict__ s, float *__restrict__ out, int C, int K,
                        long long N, long long ld)
{
    for (long long n = blockIdx.x * (long long)blockDim.x + threadIdx.x; n < N;
         n += (long long)gridDim.x * blockDim.x) {
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        for (int c = 0; c < C; ++c) {
            const double v = (double)load(p, (size_t)c * ld + n) - s[c];
            for (int k = 0; k < K && k < 4; ++k)
                acc[k] += V[k * C + c] * v;
        }
        for (int k = 0; k < K && k < 4; ++k)
            out[(size_t)k * N + n] = (float)acc[k];
    }
}

extern "C" __global__ void project_f32(const float *p, const double *V, const double *s,
                                       float *out, int C, int K, long long N, long long ld)
{
    project(p, V, s, out, C, K, N, ld);
}

extern "C" __global__ void project_f16(const __half *p, const double *V, const double *s,
                                       float *out, int C, int K, long long N, long long ld)
{
    project(p, V, s, out, C, K, N, ld);
}

// ---------------------------------------------------------------------------------------------
// Per-component minimum and maximum of y − offset ([K][N]): partial[blockIdx.x][k] = (min, max).
extern "C" __global__ void minmax_partial(const float *__restrict__ y,
                                          const float *__restrict__ offset,
                                          float *__restrict__ partial, int K, long long N)
{
    __shared__ float lo[REDUCE_THREADS], hi[REDUCE_THREADS];
    const int k = blockIdx.y;
    float a = __int_as_float(0x7f800000), b = __int_as_float(0xff800000);
    for (long long n = blockIdx.x * (long long)blockDim.x + threadIdx.x; n < N;
         n += (long long)gridDim.x * blockDim.x) {
        const float v = y[(size_t)k * N + n] - offset[k];
        a = fminf(a, v);
        b = fmaxf(b, v);
    }
    lo[threadIdx.x] = a;
    hi[threadIdx.x] = b;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            lo[threadIdx.x] = fminf(lo[threadIdx.x], lo[threadIdx.x + half]);
            hi[threadIdx.x] = fmaxf(hi[threadIdx.x], hi[threadIdx.x + half]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partial[((size_t)blockIdx.x * K + k) * 2] = lo[0];
        partial[((size_t)blockIdx.x * K + k) * 2 + 1] = hi[0];
    }
}

// [0, 1] output, pixel-interleaved (H×W×K): out[n][k] = (y[k][n] − offset[k] − lo[k]) / span[k]
// (0 where span[k] is 0: a constant or degenerate component), as the CPU modes divide.
extern "C" __global__ void normalize(const float *__restrict__ y, const float *__restrict__ offset,
                                     const float *__restrict__ lo, const float *__restrict__ span,
                                     float *__restrict__ out, int K, long long N)
{
    for (long long n = blockIdx.x * (long long)blockDim.x + threadIdx.x; n < N;
         n += (long long)gridDim.x * blockDim.x)
        for (int k = 0; k < K; ++k)
            out[(size_t)n * K + k] =
                span[k] > 0.0f ? ((y[(size_t)k * N + n] - offset[k]) - lo[k]) / span[k] : 0.0f;
}
