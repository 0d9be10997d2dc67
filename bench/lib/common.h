/* SPDX-License-Identifier: MIT */
/*
 * What every benchmark needs: a clock, a median, and staying on one CPU.
 * The bench programs, the measurement kernels in bench/lib/ and the
 * "gpamm bench" command all take them from here.
 */
#ifndef GPAMM_BENCH_COMMON_H
#define GPAMM_BENCH_COMMON_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

static inline double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Sorts @v in place. */
static inline double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * Stay on CPU @cpu (a VM's CPUs can differ 2x in speed; a move in the
 * middle of a run would mix both into one median). @saved, if not NULL,
 * gets the affinity to restore. Return: @cpu, or -1 if it cannot pin
 * (then the thread runs where it did).
 */
static inline int bench_pin_cpu(int cpu, cpu_set_t *saved)
{
	cpu_set_t one;

	if (saved)
		sched_getaffinity(0, sizeof(*saved), saved);
	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return -1;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	return sched_setaffinity(0, sizeof(one), &one) ? -1 : cpu;
}

/* Stay on the CPU we run on; as bench_pin_cpu(). */
static inline int bench_pin_here(cpu_set_t *saved)
{
	return bench_pin_cpu(sched_getcpu(), saved);
}

/*
 * A loop that must stay scalar (one store per element, as a guest does
 * them), whichever compiler builds it: BK_SCALAR_FN on the function,
 * BK_SCALAR_FOR in place of the loop's "for".
 */
#ifdef __clang__
#define BK_SCALAR_FN  __attribute__((noinline))
#define BK_SCALAR_FOR _Pragma("clang loop vectorize(disable) interleave(disable)") for
#else
#define BK_SCALAR_FN  __attribute__((noinline, optimize("no-tree-vectorize")))
#define BK_SCALAR_FOR for
#endif

/* The options of a benchmark program: [--quick] [--json]. Return: 0, or -1 after usage on stderr. */
static inline int bench_parse_quick_json(int argc, char **argv, bool *quick, bool *json)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			*quick = true;
		} else if (!strcmp(argv[i], "--json")) {
			*json = true;
		} else {
			fprintf(stderr, "usage: %s [--quick] [--json]\n", argv[0]);
			return -1;
		}
	}
	return 0;
}

#endif
