// SPDX-License-Identifier: MIT
/* The harness behind tap.h: TAP lines, failure unwinding, seeds. */
#include "tap.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

static struct {
	unsigned run, passed, failed, skipped;
	uint64_t seed;
	bool seed_printed;
	const char *filter;
	const char *current;
	jmp_buf env;
	int outcome; /* 0 pass, 1 fail, 2 skip */
	int async_failed;
	char skip_why[200];
	pthread_mutex_t lock;
} T = { .lock = PTHREAD_MUTEX_INITIALIZER };

void tap_init(int argc, char **argv)
{
	const char *env = getenv("GPAMM_SEED");
	int i;

	T.seed = 0;
	if (env && *env)
		T.seed = strtoull(env, NULL, 0);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-s") && i + 1 < argc)
			T.seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-f") && i + 1 < argc)
			T.filter = argv[++i];
		else if (!strcmp(argv[i], "-h")) {
			printf("usage: %s [-s SEED] [-f NAME-SUBSTRING]\n", argv[0]);
			exit(0);
		}
	}
	if (!T.seed) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		T.seed = ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec;
		T.seed &= 0xffffffffffffULL;
		if (!T.seed)
			T.seed = 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
}

uint64_t tap_seed(void)
{
	if (!T.seed_printed) {
		printf("# seed %" PRIu64 " (replay: -s %" PRIu64 " or GPAMM_SEED=%" PRIu64 ")\n",
		       T.seed, T.seed, T.seed);
		T.seed_printed = true;
	}
	return T.seed;
}

double tap_scale(void)
{
	const char *s = getenv("GPAMM_TEST_SCALE");
	double v = s ? atof(s) : 1.0;
	return v > 0 ? v : 1.0;
}

void tap_diag(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("# ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
}

void tap_fmt2(char *buf, unsigned len, const char *kind, ...)
{
	va_list ap;
	va_start(ap, kind);
	if (kind[0] == 'd') {
		long long a = va_arg(ap, long long), b = va_arg(ap, long long);
		snprintf(buf, len, "left %lld, right %lld", a, b);
	} else {
		unsigned long long a = va_arg(ap, unsigned long long);
		unsigned long long b = va_arg(ap, unsigned long long);
		snprintf(buf, len, "left 0x%llx (%llu), right 0x%llx (%llu)", a, a, b, b);
	}
	va_end(ap);
}

void tap_fail(const char *file, int line, const char *expr, const char *detail)
{
	printf("# %s: %s:%d: assertion failed: %s%s%s\n", T.current ? T.current : "?",
	       file, line, expr, detail ? ": " : "", detail ? detail : "");
	if (T.seed_printed)
		printf("#   (seed %" PRIu64 ")\n", T.seed);
	T.outcome = 1;
	longjmp(T.env, 1);
}

void tap_fail_async(const char *file, int line, const char *what)
{
	pthread_mutex_lock(&T.lock);
	printf("# %s: %s:%d: %s\n", T.current ? T.current : "?", file, line, what);
	T.async_failed = 1;
	pthread_mutex_unlock(&T.lock);
}

void tap_skip(const char *why)
{
	snprintf(T.skip_why, sizeof T.skip_why, "%s", why);
	T.outcome = 2;
	longjmp(T.env, 1);
}

void tap_run(const char *name, void (*fn)(void))
{
	if (T.filter && !strstr(name, T.filter))
		return;
	T.current = name;
	T.outcome = 0;
	T.async_failed = 0;
	T.run++;
	if (!setjmp(T.env))
		fn();
	if (T.async_failed && T.outcome == 0)
		T.outcome = 1;
	switch (T.outcome) {
	case 0:
		T.passed++;
		printf("ok %u - %s\n", T.run, name);
		break;
	case 1:
		T.failed++;
		printf("not ok %u - %s\n", T.run, name);
		break;
	default:
		T.skipped++;
		printf("ok %u - %s # SKIP %s\n", T.run, name, T.skip_why);
		break;
	}
	T.current = NULL;
}

int tap_done(void)
{
	printf("1..%u\n", T.run);
	printf("# %u passed, %u failed, %u skipped\n", T.passed, T.failed, T.skipped);
	return T.failed ? 1 : 0;
}

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void tap_rng_seed(struct tap_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tap_rand(struct tap_rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

uint64_t tap_below(struct tap_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)tap_rand(r) * n) >> 64);
}
