/* SPDX-License-Identifier: MIT */
/*
 * The benchmark driver: the suite table, one request (a suite, its
 * configuration, an optional sweep, an optional KVM peer) run end to end
 * with the selftest-style text, the side-by-side table, the sweep tables
 * and the JSON report, and the plan that `make bench` runs (every suite at
 * small sizes, every target with PASS or MISS). The command line
 * (tools/gpamm/cmd_bench.c) only turns arguments into a request.
 */
#ifndef GPAMM_BENCH_DRIVER_H
#define GPAMM_BENCH_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "suite.h"

/* Exit statuses, as every gpamm command's. */
#define BENCH_EXIT_OK    0
#define BENCH_EXIT_FAIL  1 /* a run failed or its counts do not add up */
#define BENCH_EXIT_USAGE 2

#define BENCH_MAX_SWEEP 16

enum bench_sweep { BENCH_SWEEP_NONE, BENCH_SWEEP_MEM, BENCH_SWEEP_VCPUS, BENCH_SWEEP_SLOTS };

struct bench_request {
	const struct bench_suite *suite;
	struct bench_cfg cfg;
	bool json, peer_kvm;
	enum bench_sweep sweep;
	unsigned nsweep;
	uint64_t sweep_val[BENCH_MAX_SWEEP];
	char sweep_txt[BENCH_MAX_SWEEP][24];
};

extern const struct bench_suite *const bench_suites[];
extern const unsigned bench_nsuites;

/* The suite called @name, or NULL. */
const struct bench_suite *bench_find_suite(const char *name);
/* The defaults of a request: 1 vCPU x 1 GiB, 2 iterations, 4K/3-level, manual protect. */
void bench_request_init(struct bench_request *rq);
/* Run @rq. Return: a BENCH_EXIT_* status. */
int bench_execute(const struct bench_request *rq);
/*
 * `make bench`: every suite at small sizes, one after the other, then one
 * table of every target with its figure, its same-run ratio and PASS or
 * MISS (a MISS is reported, not a failure: the machines are shared).
 * Return: BENCH_EXIT_FAIL if a run failed, else BENCH_EXIT_OK.
 */
int bench_all(bool peer_kvm);

/* "gpamm bench: <message>" and the hint, on stderr. Return: BENCH_EXIT_USAGE. */
__attribute__((format(printf, 1, 2)))
int bench_usage_error(const char *fmt, ...);

#endif
