// __half for the host emulation (cuda_emulation.h): IEEE binary16 storage, conversions to and
// from float rounded to nearest even, subnormals, infinities and NaN kept.
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
    std::uint16_t bits;
};

static inline float __half2float(__half h)
{
    const std::uint32_t sign = (std::uint32_t)(h.bits & 0x8000u) << 16;
    std::uint32_t exp = (h.bits >> 10) & 0x1fu, man = h.bits & 0x3ffu, out;
    if (exp == 0x1f) {
        out = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        out = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        out = sign;
    } else {  // subnormal: normalize
        int e = -1;
        do {
            ++e;
            man <<= 1;
        } while (!(man & 0x400u));
        out = sign | ((std::uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &out, sizeof f);
    return f;
}

static inline __half __float2half(float f)
{
    std::uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    const std::uint16_t sign = (std::uint16_t)((x >> 16) & 0x8000u);
    const std::uint32_t abs = x & 0x7fffffffu;
    __half h;
    if (abs >= 0x7f800000u) {  // inf or NaN
        h.bits = sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
    } else if (abs >= 0x477ff000u) {  // rounds to beyond the largest half
        h.bits = sign | 0x7c00u;
    } else if (abs >= 0x38800000u) {  // normal half
        const std::uint32_t mant = abs & 0x7fffffu, exp = (abs >> 23) - 112u;
        std::uint32_t v = (exp << 10) | (mant >> 13);
        const std::uint32_t rest = mant & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (v & 1u)))
            ++v;
        h.bits = sign | (std::uint16_t)v;
    } else {  // subnormal half or zero
        const int shift = 126 - (int)(abs >> 23);  // 14 .. for the smallest normal float
        if (shift > 24) {
            h.bits = sign;
        } else {
            const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
            std::uint32_t v = mant >> (shift);
            const std::uint32_t rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
            if (rest > half || (rest == half && (v & 1u)))
                ++v;
            h.bits = sign | (std::uint16_t)v;
        }
    }
    return h;
}
