/*
 * crc64.c — CRC-64/GO-ISO (Go's hash/crc64 with the ISO table).
 *
 * Two implementations compute the same function:
 *
 *   1. crc64_raw_table(): slicing-by-16. Sixteen 256-entry tables let the
 *      loop consume 16 bytes with 16 independent lookups per iteration
 *      instead of a serial chain of 16 dependent ones. Portable; it is the
 *      reference that every other path is tested against.
 *
 *   2. crc64_raw_pclmul() (x86_64 with PCLMULQDQ): carry-less multiplication
 *      "folding" as in Intel's white paper "Fast CRC Computation for Generic
 *      Polynomials Using PCLMULQDQ". Eight 128-bit lanes are each folded
 *      forward by 1024 bits per iteration, the lanes are folded into one,
 *      and the last 16-byte remainder plus the tail are finished with the
 *      table code, which avoids a Barrett reduction and its extra constants.
 *
 * The math, in the bit-reflected representation used throughout (bit i of
 * a 64-bit value is the coefficient of x^(63-i), so 1<<63 is x^0):
 *
 *   - A 16-byte block loaded little-endian is the 128-bit polynomial
 *     R(lo) * x^64 + R(hi), lo being the first 8 bytes of the message.
 *   - clmul(a, b) = x * R(a) * R(b) (reflection costs one factor of x).
 *   - Folding a block forward by D bits therefore needs
 *       k_lo = x^(D+63) mod P   (multiplies the lo half)
 *       k_hi = x^(D-1)  mod P   (multiplies the hi half)
 *     and the two products XORed with the block D bits later stand for
 *     the same value mod P.
 *   - The register (the inverted running CRC) is XORed into the first 8
 *     message bytes, exactly as the table loop XORs it into its input.
 *
 * The constants are derived at start-up from the polynomial by
 * crc64_xpow_mod() rather than typed in, so there is no table of magic
 * numbers to get wrong. Dispatch happens once (pthread_once) using
 * __builtin_cpu_supports().
 *
 * Semantics follow Go's crc64.Update: the value in and out is the
 * finalised CRC; internally the register is ~crc.
 */
#include <pthread.h>
#include <string.h>

#include "ltx/crc64.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC64_HAVE_PCLMUL 1
#include <immintrin.h>
#else
#define CRC64_HAVE_PCLMUL 0
#endif

/* Reflected ISO polynomial x^64 + x^4 + x^3 + x + 1 without its x^64 term. */
#define CRC64_POLY 0xD800000000000000ull

static uint64_t crc64_table[16][256];
static pthread_once_t crc64_once = PTHREAD_ONCE_INIT;
static uint64_t (*crc64_impl)(uint64_t state, const uint8_t *p, size_t len);

static inline uint64_t crc64_load_le64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
#else
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
	       (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
#endif
}

/* Table-driven update of the raw (inverted) register. */
static uint64_t crc64_raw_table(uint64_t state, const uint8_t *p, size_t len)
{
	while (len >= 16) {
		uint64_t a = crc64_load_le64(p) ^ state;
		uint64_t b = crc64_load_le64(p + 8);

		state = crc64_table[15][a & 0xff] ^ crc64_table[14][(a >> 8) & 0xff] ^
			crc64_table[13][(a >> 16) & 0xff] ^ crc64_table[12][(a >> 24) & 0xff] ^
			crc64_table[11][(a >> 32) & 0xff] ^ crc64_table[10][(a >> 40) & 0xff] ^
			crc64_table[9][(a >> 48) & 0xff] ^ crc64_table[8][a >> 56] ^
			crc64_table[7][b & 0xff] ^ crc64_table[6][(b >> 8) & 0xff] ^
			crc64_table[5][(b >> 16) & 0xff] ^ crc64_table[4][(b >> 24) & 0xff] ^
			crc64_table[3][(b >> 32) & 0xff] ^ crc64_table[2][(b >> 40) & 0xff] ^
			crc64_table[1][(b >> 48) & 0xff] ^ crc64_table[0][b >> 56];
		p += 16;
		len -= 16;
	}
	while (len--)
		state = crc64_table[0][(state ^ *p++) & 0xff] ^ (state >> 8);
	return state;
}

/* x^n mod P in the reflected representation (1<<63 is x^0). Only used at
 * start-up, so the bit-serial loop is fine. */
static uint64_t crc64_xpow_mod(unsigned n)
{
	uint64_t v = 1ull << 63;

	while (n--)
		v = (v >> 1) ^ ((v & 1) ? CRC64_POLY : 0);
	return v;
}

#if CRC64_HAVE_PCLMUL
/* Fold constants: [0] for D = 128 bits, [1] for D = 1024 bits (8 lanes).
 * Element 0 of each pair multiplies the lo half, element 1 the hi half. */
static uint64_t crc64_fold_k[2][2];

__attribute__((target("pclmul,sse4.1")))
static inline __m128i crc64_fold(__m128i x, __m128i k, __m128i next)
{
	__m128i lo = _mm_clmulepi64_si128(x, k, 0x00);
	__m128i hi = _mm_clmulepi64_si128(x, k, 0x11);

	return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

__attribute__((target("pclmul,sse4.1")))
static uint64_t crc64_raw_pclmul(uint64_t state, const uint8_t *p, size_t len)
{
	/* Below a few lanes' worth, set-up costs more than the table loop. */
	if (len < 256)
		return crc64_raw_table(state, p, len);

	const __m128i k128 = _mm_set_epi64x((long long)crc64_fold_k[0][1], (long long)crc64_fold_k[0][0]);
	const __m128i k1024 = _mm_set_epi64x((long long)crc64_fold_k[1][1], (long long)crc64_fold_k[1][0]);
	__m128i x0 = _mm_loadu_si128((const __m128i *)(const void *)(p + 0));
	__m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
	__m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 32));
	__m128i x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 48));
	__m128i x4 = _mm_loadu_si128((const __m128i *)(const void *)(p + 64));
	__m128i x5 = _mm_loadu_si128((const __m128i *)(const void *)(p + 80));
	__m128i x6 = _mm_loadu_si128((const __m128i *)(const void *)(p + 96));
	__m128i x7 = _mm_loadu_si128((const __m128i *)(const void *)(p + 112));

	x0 = _mm_xor_si128(x0, _mm_cvtsi64_si128((long long)state));
	p += 128;
	len -= 128;
	while (len >= 128) {
		x0 = crc64_fold(x0, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 0)));
		x1 = crc64_fold(x1, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
		x2 = crc64_fold(x2, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 32)));
		x3 = crc64_fold(x3, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 48)));
		x4 = crc64_fold(x4, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 64)));
		x5 = crc64_fold(x5, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 80)));
		x6 = crc64_fold(x6, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 96)));
		x7 = crc64_fold(x7, k1024, _mm_loadu_si128((const __m128i *)(const void *)(p + 112)));
		p += 128;
		len -= 128;
	}
	/* Lanes are consecutive 16-byte blocks, so fold them one into the next. */
	x1 = crc64_fold(x0, k128, x1);
	x2 = crc64_fold(x1, k128, x2);
	x3 = crc64_fold(x2, k128, x3);
	x4 = crc64_fold(x3, k128, x4);
	x5 = crc64_fold(x4, k128, x5);
	x6 = crc64_fold(x5, k128, x6);
	x7 = crc64_fold(x6, k128, x7);
	while (len >= 16) {
		x7 = crc64_fold(x7, k128, _mm_loadu_si128((const __m128i *)(const void *)p));
		p += 16;
		len -= 16;
	}

	uint8_t rest[16];

	_mm_storeu_si128((__m128i *)(void *)rest, x7);
	state = crc64_raw_table(0, rest, sizeof(rest));
	return crc64_raw_table(state, p, len);
}
#endif

static void crc64_init(void)
{
	for (unsigned b = 0; b < 256; b++) {
		uint64_t v = b;

		for (int i = 0; i < 8; i++)
			v = (v >> 1) ^ ((v & 1) ? CRC64_POLY : 0);
		crc64_table[0][b] = v;
	}
	for (unsigned b = 0; b < 256; b++)
		for (int k = 1; k < 16; k++) {
			uint64_t prev = crc64_table[k - 1][b];

			crc64_table[k][b] = (prev >> 8) ^ crc64_table[0][prev & 0xff];
		}
	crc64_impl = crc64_raw_table;

#if CRC64_HAVE_PCLMUL
	crc64_fold_k[0][0] = crc64_xpow_mod(128 + 63);
	crc64_fold_k[0][1] = crc64_xpow_mod(128 - 1);
	crc64_fold_k[1][0] = crc64_xpow_mod(1024 + 63);
	crc64_fold_k[1][1] = crc64_xpow_mod(1024 - 1);
	__builtin_cpu_init();
	if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1"))
		crc64_impl = crc64_raw_pclmul;
#else
	(void)crc64_xpow_mod;
#endif
}

uint64_t crc64_update_generic(uint64_t crc, const void *buf, size_t len)
{
	pthread_once(&crc64_once, crc64_init);
	return ~crc64_raw_table(~crc, buf, len);
}

uint64_t crc64_update(uint64_t crc, const void *buf, size_t len)
{
	pthread_once(&crc64_once, crc64_init);
	return ~crc64_impl(~crc, buf, len);
}
