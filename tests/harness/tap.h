/* SPDX-License-Identifier: MIT */
/*
 * A small TAP test harness. Each test binary registers its tests with
 * TEST(fn) from main() between tap_init() and tap_done(). A failed ASSERT
 * prints file:line and the expression (and both values for the _EQ forms)
 * and ends the current test. Random tests take their seed from tap_seed(),
 * which is printed once and can be replayed with -s SEED or GPAMM_SEED=SEED.
 *
 * Context: single-threaded runner; ASSERT may be used from the test's own
 * thread only (helper threads record failures with tap_fail_async()).
 */
#ifndef GPAMM_TAP_H
#define GPAMM_TAP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

void tap_init(int argc, char **argv);
uint64_t tap_seed(void);
/* Scale for test sizes: GPAMM_TEST_SCALE (default 1). */
double tap_scale(void);
void tap_run(const char *name, void (*fn)(void));
int tap_done(void);

_Noreturn void tap_fail(const char *file, int line, const char *expr, const char *detail);
_Noreturn void tap_skip(const char *why);
void tap_fail_async(const char *file, int line, const char *what);
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TEST(fn) tap_run(#fn, fn)

#define ASSERT(expr)                                                          \
	do {                                                                  \
		if (!(expr))                                                  \
			tap_fail(__FILE__, __LINE__, #expr, 0);               \
	} while (0)

#define TAP__CMP(a, op, b, fmt, type)                                         \
	do {                                                                  \
		type tap_a__ = (type)(a), tap_b__ = (type)(b);                \
		if (!(tap_a__ op tap_b__)) {                                  \
			char tap_d__[160];                                    \
			tap_fmt2(tap_d__, sizeof tap_d__, fmt, tap_a__, tap_b__); \
			tap_fail(__FILE__, __LINE__, #a " " #op " " #b, tap_d__); \
		}                                                             \
	} while (0)

/* unsigned 64-bit comparisons, printed in hex and decimal */
#define ASSERT_EQ(a, b) TAP__CMP(a, ==, b, "u", unsigned long long)
#define ASSERT_NE(a, b) TAP__CMP(a, !=, b, "u", unsigned long long)
#define ASSERT_LE(a, b) TAP__CMP(a, <=, b, "u", unsigned long long)
#define ASSERT_LT(a, b) TAP__CMP(a, <, b, "u", unsigned long long)
#define ASSERT_GE(a, b) TAP__CMP(a, >=, b, "u", unsigned long long)
/* signed comparisons (errnos) */
#define ASSERT_EQ_INT(a, b) TAP__CMP(a, ==, b, "d", long long)

void tap_fmt2(char *buf, unsigned len, const char *kind, ...);

/* A failed assertion with a sentence of explanation. */
#define ASSERT_MSG(expr, ...)                                                 \
	do {                                                                  \
		if (!(expr)) {                                                \
			char msg__[400];                                      \
			snprintf(msg__, sizeof(msg__), __VA_ARGS__);          \
			tap_fail(__FILE__, __LINE__, #expr, msg__);           \
		}                                                             \
	} while (0)

/* A failed check that lets the test go on (to clean up, or to show more). */
#define CHECK_MSG(expr, ...)                                                  \
	do {                                                                  \
		if (!(expr)) {                                                \
			char msg__[400];                                      \
			int n__ = snprintf(msg__, sizeof(msg__),              \
					   "check failed: %s: ", #expr);      \
			snprintf(msg__ + n__, sizeof(msg__) - n__, __VA_ARGS__); \
			tap_fail_async(__FILE__, __LINE__, msg__);            \
		}                                                             \
	} while (0)


/* ---- replayable pseudo-random numbers (splitmix64 seeded xoshiro256**) ---- */
struct tap_rng { uint64_t s[4]; };
void tap_rng_seed(struct tap_rng *r, uint64_t seed);
uint64_t tap_rand(struct tap_rng *r);
/* uniform in [0, n); n > 0 */
uint64_t tap_below(struct tap_rng *r, uint64_t n);

/* One step of xorshift64 on *@s (not 0): a cheap generator for guest loops. */
static inline uint64_t tap_xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

#endif
