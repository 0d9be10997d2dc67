// SPDX-License-Identifier: MIT
/*
 * test_bench_tracking_cli - the access_tracking_perf and demand_paging
 * suites of "gpamm bench", from the outside: the built binary (build/gpamm
 * next to this test's build directory, or $GPAMM_BIN) is run with small
 * sizes and its JSON report is checked. Every phase of each selftest is
 * there with a time > 0 and the per-page figure its normalisation says
 * (all pages for marking idle, one vCPU's pages for the vCPU passes); the
 * counts add up: marking makes every page idle, fewer than 10% of the pages
 * still look idle after an access (the selftest's verdict; in fact none
 * do), and demand paging takes one fault per page and leaves every page
 * mapped. The text has the selftest's lines; the layout, vCPU, slot,
 * backing and sweep options reach both suites; neither suite has a KVM
 * peer, so --peer kvm reports a skip with a reason; bad flags exit 2.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/clitest.h"
#include "harness/tap.h"

/* ---- checks ------------------------------------------------------------------------ */

struct phase_want {
	const char *key;
	bool per_iter;
	bool all_pages; /* ns_per_page is per page of all memory (else per page of one vCPU) */
};

static const struct phase_want at_phases[] = {
	{ "populate", false, false },
	{ "write_populated", false, false },
	{ "read_populated", false, false },
	{ "mark_idle_1", true, true },
	{ "write_idle", true, false },
	{ "mark_idle_2", true, true },
	{ "read_idle", true, false },
};

static const struct phase_want dp_phases[] = {
	{ "total", true, false },
	{ "vcpu", true, false },
};

#define NWANT(a) (sizeof(a) / sizeof((a)[0]))

static bool close_to(double a, double b)
{
	return fabs(a - b) <= 1e-6 * fabs(b) + 1e-9;
}

/* The run ran, with the expected sizes and every phase (time > 0, normalised as declared). */
static void check_phases(struct jv *run, const struct phase_want *want, unsigned nwant,
			 uint64_t pages, uint64_t per_vcpu, unsigned iters)
{
	ASSERT(!strcmp(jstr(run, "backend"), "gpamm"));
	ASSERT(!strcmp(jstr(run, "status"), "ran"));
	ASSERT_EQ(jnum(run, "pages"), pages);
	ASSERT_EQ(jnum(run, "pages_per_vcpu"), per_vcpu);
	ASSERT_EQ(jnum(run, "iterations"), iters);
	ASSERT(jnum(run, "pretouch_s") >= 0);
	ASSERT(strstr(jstr(run, "host"), "direct host") != NULL);
	ASSERT_EQ(jget(run, "phases")->n, nwant);
	for (unsigned i = 0; i < nwant; i++) {
		struct jv *p = check_phase(run, want[i].key, want[i].per_iter, iters);

		ASSERT(close_to(jnum(p, "ns_per_page"),
				jnum(p, "ns") / (double)(want[i].all_pages ? pages : per_vcpu)));
		ASSERT(!strcmp(jstr(p, "per_page_unit"),
			       want[i].all_pages ? "ns per page" : "ns per page per vCPU"));
	}
	ASSERT_EQ(jget(run, "iterations_detail")->n, iters);
}

/* access_tracking_perf: counts of every idle cycle. */
static void check_access_run(struct jv *run, uint64_t pages, uint64_t per_vcpu, unsigned iters)
{
	check_phases(run, at_phases, NWANT(at_phases), pages, per_vcpu, iters);
	for (unsigned k = 0; k < iters; k++) {
		struct jv *it = jget(run, "iterations_detail")->items[k];

		ASSERT_EQ(jnum(it, "iteration"), k + 1);
		ASSERT(jnum(it, "mark_idle_1_ns") > 0 && jnum(it, "mark_idle_2_ns") > 0);
		ASSERT(jnum(it, "write_idle_ns") > 0 && jnum(it, "read_idle_ns") > 0);
		/* marking leaves no page young */
		ASSERT_EQ(jnum(it, "idle_after_mark"), pages);
		/* the selftest's verdict: under 10% still idle after an access ... */
		ASSERT_LT(jnum(it, "still_idle") * 10, pages);
		ASSERT_GE(jnum(it, "young_after_write") * 10, pages * 9);
		ASSERT_GE(jnum(it, "young_after_read") * 10, pages * 9);
		/* ... and still idle is what the fewer young pages leave */
		ASSERT_EQ(jnum(it, "still_idle"),
			  pages - fmin(jnum(it, "young_after_write"), jnum(it, "young_after_read")));
		/* nothing moves memory behind a direct host: every access makes its page young */
		ASSERT_EQ(jnum(it, "young_after_write"), pages);
		ASSERT_EQ(jnum(it, "young_after_read"), pages);
	}
}

/* demand_paging: one first-time fault per page, every page mapped, a table was built. */
static void check_demand_run(struct jv *run, uint64_t pages, uint64_t per_vcpu, unsigned iters)
{
	check_phases(run, dp_phases, NWANT(dp_phases), pages, per_vcpu, iters);
	for (unsigned k = 0; k < iters; k++) {
		struct jv *it = jget(run, "iterations_detail")->items[k];

		ASSERT_EQ(jnum(it, "iteration"), k + 1);
		ASSERT_EQ(jnum(it, "faults"), pages);
		ASSERT_EQ(jnum(it, "pages_mapped"), pages);
		ASSERT(jnum(it, "table_pages") >= 2); /* the root and at least one more */
		/* the slowest vCPU bounds the wall time: the mean vCPU time is not above it */
		ASSERT(jnum(it, "vcpu_ns") <= jnum(it, "total_ns"));
	}
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_list_and_help(void)
{
	expect_stdout(NULL, ARGS("bench", "--list"),
		      ARGS("access_tracking_perf ", "demand_paging "));
	expect_stdout(NULL, ARGS("bench", "--help"),
		      ARGS("access_tracking_perf", "demand_paging", "pre-touched"));
}

static void test_access_json(void)
{
	static const char *const a[] = { "bench", "access_tracking_perf", "-b", "16M", "-i", "2",
					 "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(!strcmp(jstr(j, "suite"), "access_tracking_perf"));
	ASSERT(jget(j, "peer") && jget(j, "peer")->t == J_NULL);
	ASSERT_EQ(jget(j, "points")->n, 1);
	ASSERT_EQ(jget(j, "points.0.runs")->n, 1);
	ASSERT_EQ(jnum(j, "config.total_bytes"), 16u << 20);
	check_access_run(jget(j, "points.0.runs.0"), 4096, 4096, 2);
	jv_free(j);
	result_free(&r);
}

/* vCPUs, slots, 16K pages, 4 levels, THP backing: the options reach the suite. */
static void test_access_options(void)
{
	static const char *const a[] = { "bench", "access_tracking_perf", "-v", "2", "-b", "8M",
					 "-m", "2", "--page-shift", "14", "-i", "1", "--json", NULL };
	static const char *const b[] = { "bench", "access_tracking_perf", "-v", "2", "-b", "4M",
					 "--levels", "4", "--backing", "thp", "-i", "1", "--json",
					 NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);
	struct jv *run = jget(j, "points.0.runs.0");

	ASSERT_EQ(jnum(run, "page_size"), 16384);
	ASSERT_EQ(jnum(run, "vcpus"), 2);
	ASSERT_EQ(jnum(run, "slots"), 2);
	check_access_run(run, 1024, 512, 1);
	jv_free(j);
	result_free(&r);

	j = run_json(NULL, b, &r);
	run = jget(j, "points.0.runs.0");
	ASSERT_EQ(jnum(j, "config.levels"), 4);
	ASSERT(!strcmp(jstr(j, "config.backing"), "thp"));
	ASSERT(strstr(jstr(run, "host"), "THP-backed") != NULL);
	check_access_run(run, 2048, 1024, 1);
	jv_free(j);
	result_free(&r);
}

static void test_demand_json(void)
{
	static const char *const a[] = { "bench", "demand_paging", "-b", "16M", "-i", "2", "--json",
					 NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(!strcmp(jstr(j, "suite"), "demand_paging"));
	ASSERT(jget(j, "peer")->t == J_NULL);
	check_demand_run(jget(j, "points.0.runs.0"), 4096, 4096, 2);
	jv_free(j);
	result_free(&r);
}

static void test_demand_options(void)
{
	static const char *const a[] = { "bench", "demand_paging", "-v", "2", "-b", "8M", "-m", "4",
					 "--page-shift", "16", "--levels", "2", "-i", "1", "--json",
					 NULL };
	static const char *const b[] = { "bench", "demand_paging", "-v", "3", "-b", "4M",
					 "--levels", "4", "--backing", "thp", "-i", "3", "--json",
					 NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);
	struct jv *run = jget(j, "points.0.runs.0");

	/* 2 x 8 MiB of 64K pages in 4 slots */
	ASSERT_EQ(jnum(run, "page_size"), 65536);
	ASSERT_EQ(jnum(run, "slots"), 4);
	ASSERT_EQ(jnum(j, "config.levels"), 2);
	check_demand_run(run, 256, 128, 1);
	jv_free(j);
	result_free(&r);

	j = run_json(NULL, b, &r);
	run = jget(j, "points.0.runs.0");
	ASSERT_EQ(jnum(run, "vcpus"), 3);
	check_demand_run(run, 3072, 1024, 3);
	jv_free(j);
	result_free(&r);
}

static unsigned count_of(const char *s, const char *what)
{
	unsigned n = 0;

	for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
		n++;
	return n;
}

static void test_text_selftest_lines(void)
{
	static const char *const at[] = { "bench", "access_tracking_perf", "-b", "8M", "-i", "2",
					  NULL };
	static const char *const dp[] = { "bench", "demand_paging", "-v", "2", "-b", "4M", "-i", "1",
					  NULL };
	static const char *const at_want[] = {
		"Populating memory: ", "Writing to populated memory: ",
		"Reading from populated memory: ", "Iteration 1 Mark memory idle: ",
		"Iteration 1 Writing to idle memory: ", "Iteration 1 Reading from idle memory: ",
		"Iteration 2 Mark memory idle: ", "Iteration 2 Writing to idle memory: ",
		"Iteration 2 Reading from idle memory: ",
		"Mark memory idle (before writing) over 2 iterations took ",
		"Mark memory idle (before reading) over 2 iterations took ",
		"Writing to idle memory over 2 iterations took ",
		"Reading from idle memory over 2 iterations took ",
		"Pages still idle after being accessed", "ns/page per vCPU", "pre-touched",
		"gpamm_vm_mark_idle", NULL,
	};
	static const char *const dp_want[] = {
		"vCPU 0 execution time: ", "vCPU 1 execution time: ",
		"Iteration 1 Total guest execution time: ",
		"Iteration 1 Overall demand paging rate: ", " pgs/sec",
		"Overall demand paging rate over 1 iteration: ",
		"Faults taken by the vCPUs per iteration: 2048 (every page once",
		"Pages mapped after the pass per iteration: 2048 (every page once",
		"fresh VM", "pre-touched", NULL,
	};
	struct result r = run_gpamm(NULL, at);

	ASSERT_EQ_INT(r.status, 0);
	expect_strings(r.out, at_want);
	/* two marks per idle cycle */
	ASSERT_EQ(count_of(r.out, "Iteration 1 Mark memory idle: "), 2);
	ASSERT_EQ(count_of(r.out, "Iteration 2 Mark memory idle: "), 2);
	ASSERT(strstr(r.out, "per iteration: 0 0 (") != NULL); /* still idle: none */
	result_free(&r);

	expect_stdout(NULL, dp, dp_want);
}

static void check_sweep_phases(struct jv *j, const struct phase_want *want, unsigned nwant,
			       unsigned npts)
{
	for (unsigned i = 0; i < nwant; i++)
		check_sweep_phase(j, want[i].key, npts);
}

static void test_sweeps(void)
{
	static const char *const a[] = { "bench", "access_tracking_perf", "--sweep", "mem=4M,16M",
					 "-i", "1", "--json", NULL };
	static const char *const d[] = { "bench", "demand_paging", "--sweep", "vcpus=1,2", "-b",
					 "8M", "-i", "1", "--json", NULL };
	static const char *const dt[] = { "bench", "demand_paging", "--sweep", "mem=4M,8M", "-i",
					  "1", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT_EQ(jget(j, "points")->n, 2);
	ASSERT(!strcmp(jstr(j, "sweep.param"), "mem"));
	check_access_run(jget(j, "points.0.runs.0"), 1024, 1024, 1);
	check_access_run(jget(j, "points.1.runs.0"), 4096, 4096, 1);
	check_sweep_phases(j, at_phases, NWANT(at_phases), 2);
	jv_free(j);
	result_free(&r);

	/* vcpus=1,2 of 8 MiB total: the memory is split, pages per vCPU halve */
	j = run_json(NULL, d, &r);
	ASSERT(!strcmp(jstr(j, "sweep.param"), "vcpus"));
	check_demand_run(jget(j, "points.0.runs.0"), 2048, 2048, 1);
	check_demand_run(jget(j, "points.1.runs.0"), 2048, 1024, 1);
	check_sweep_phases(j, dp_phases, NWANT(dp_phases), 2);
	jv_free(j);
	result_free(&r);

	expect_stdout(NULL, dt, ARGS("=== sweep mem=8M (2 of 2) ===", "Sweep mem, gpamm",
				     "total execution (avg)", "phases across mem=4M..8M"));
}

/* Neither suite has a KVM peer: the peer is reported skipped, with a reason, exit 0. */
static void test_peer_skipped(void)
{
	static const char *const suites[] = { "access_tracking_perf", "demand_paging" };

	for (unsigned s = 0; s < 2; s++) {
		const char *a[] = { "bench", suites[s], "--peer", "kvm", "-b", "4M", "-i", "1",
				    "--json", NULL };
		struct result r;
		struct jv *j = run_json(NULL, a, &r);

		check_peer_skipped(j);
		ASSERT(!strcmp(jstr(j, "points.0.runs.0.status"), "ran"));
		jv_free(j);
		result_free(&r);
	}
}

static void test_bad_usage(void)
{
	static const char *const suites[] = { "access_tracking_perf", "demand_paging" };
	static const char *const bad[][8] = {
		{ "-v", "0", NULL },
		{ "-v", "257", NULL },
		{ "-i", "0", NULL },
		{ "-b", "1000", NULL },
		{ "-b", "0", NULL },
		{ "-b", "16M", "-m", "3", NULL },
		{ "--page-shift", "13", NULL },
		{ "--page-shift", "16", "--levels", "4", NULL },
		{ "--levels", "5", NULL },
		{ "--backing", "hugetlb", NULL },
		{ "--sweep", "mem=", NULL },
		{ "--sweep", "vcpus=1,0", NULL },
		{ "-v", "3", "--sweep", "mem=16M", NULL },
		{ "--peer", "xen", NULL },
		{ "--json=yes", NULL },
		{ "--bogus", NULL },
	};

	/* nothing ran */
	for (unsigned s = 0; s < 2; s++)
		EXPECT_USAGE_ERRORS(ARGS("bench", suites[s]), bad, ARGS("gpamm bench: "));
}

int main(int argc, char **argv)
{
	if (!clitest_init(argc, argv))
		return 1;
	TEST(test_list_and_help);
	TEST(test_bad_usage);
	TEST(test_access_json);
	TEST(test_access_options);
	TEST(test_demand_json);
	TEST(test_demand_options);
	TEST(test_text_selftest_lines);
	TEST(test_sweeps);
	TEST(test_peer_skipped);
	return tap_done();
}
