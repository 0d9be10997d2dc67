// SPDX-License-Identifier: MIT
/*
 * test_bench_cost_cli - the access_cost and pgtable suites of "gpamm
 * bench" from the outside: the built binary (see harness/clitest.h) runs
 * them with small sizes and their JSON is checked for consistency rather
 * than speed. access_cost: every phase ran with a time > 0, each native
 * loop did exactly as many stores as the guest loop it is compared with,
 * populate faulted every page once, the TLB-hit loop stayed in the TLB,
 * the TLB-miss loop missed, and both ratios have a verdict. pgtable: every
 * operation ran with a time > 0 and every page was mapped, found by a
 * lookup, cleaned and flushed once per iteration. Sweeps report the ratios
 * at every value and explain what is not flat; bad options exit 2; the
 * KVM peer is a skip with a reason (neither suite has one).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/clitest.h"
#include "harness/tap.h"

static const char *const ac_phases[] = { "populate", "tlb_hit", "native_hit", "tlb_miss",
					 "native_miss", "populate_fresh", "first_touch" };
static const char *const pt_phases[] = { "map", "lookup", "mkclean_range", "mkclean_mask",
					 "mkold", "test_young", "limit", "unmap", "flush" };
static const char *const pt_counts[] = { "pages_mapped", "lookups_found", "pages_cleaned",
					 "pages_flushed" };

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct jv *phase(struct jv *run, const char *key)
{
	char path[96];

	snprintf(path, sizeof(path), "phases.%s", key);
	return jget(run, path);
}

/* Every phase there, per iteration, with times > 0. */
static void check_phases(struct jv *run, const char *const *keys, unsigned n, unsigned iters)
{
	for (unsigned i = 0; i < n; i++)
		check_phase(run, keys[i], true, iters);
}

/*
 * Each ratio (and bound: a figure against an absolute limit) has its
 * value, and a verdict that agrees with it when there is a target.
 */
static void check_ratios(struct jv *run, unsigned nratios, unsigned nbounds)
{
	struct jv *rt = jget(run, "ratios");
	unsigned nr = 0, nb = 0;

	ASSERT(rt && rt->t == J_ARR);
	ASSERT_EQ(rt->n, nratios + nbounds);
	for (unsigned i = 0; i < rt->n; i++) {
		struct jv *e = rt->items[i];
		bool bound = !!jget(e, "value");
		double v = jnum(e, bound ? "value" : "ratio");
		const char *max = bound ? "max" : "max_ratio";

		nb += bound;
		nr += !bound;
		ASSERT(v > 0);
		if (!jget(e, max))
			continue;
		ASSERT(!strcmp(jstr(e, "verdict"), v <= jnum(e, max) ? "PASS" : "MISS"));
	}
	ASSERT_EQ(nr, nratios);
	ASSERT_EQ(nb, nbounds);
}

/* ---- access_cost ------------------------------------------------------------------- */

static void check_access_cost(struct jv *run, uint64_t pages, unsigned iters)
{
	struct jv *det = jget(run, "iterations_detail");
	double hit_ops, miss_ops;

	ASSERT(!strcmp(jstr(run, "backend"), "gpamm"));
	ASSERT(!strcmp(jstr(run, "status"), "ran"));
	ASSERT_EQ(jnum(run, "pages"), pages);
	check_phases(run, ac_phases, N(ac_phases), iters);
	ASSERT(!strcmp(jstr(phase(run, "populate"), "per_page_unit"), "ns per page"));
	ASSERT(!strcmp(jstr(phase(run, "tlb_hit"), "per_page_unit"), "ns per op"));

	/* each native loop did exactly the guest loop's stores */
	hit_ops = jnum(phase(run, "tlb_hit"), "ops");
	miss_ops = jnum(phase(run, "tlb_miss"), "ops");
	ASSERT(hit_ops >= 1 << 20);
	ASSERT_EQ(jnum(phase(run, "native_hit"), "ops"), hit_ops);
	ASSERT_EQ(jnum(phase(run, "native_miss"), "ops"), miss_ops);
	/* whole passes over memory, at least a million stores */
	ASSERT(miss_ops >= 1 << 20);
	ASSERT_EQ(fmod(miss_ops, (double)pages), 0);
	/* ns per op is the time over the stores */
	ASSERT(fabs(jnum(phase(run, "tlb_hit"), "ns_per_page") -
		    jnum(phase(run, "tlb_hit"), "ns") / hit_ops) < 1e-6);

	ASSERT(det && det->n == iters);
	for (unsigned k = 0; k < iters; k++) {
		struct jv *it = det->items[k];

		ASSERT(jnum(it, "populate_ns") > 0);
		ASSERT(jnum(it, "tlb_miss_ns") > 0);
		/* nothing was mapped before each populate: one fault per page */
		ASSERT_EQ(jnum(it, "populate_faults"), pages);
		/* 32 pages at most: in the TLB after their first miss */
		ASSERT_LE(jnum(it, "hit_tlb_misses"), 32);
		/* never more than once a store; with more pages than the TLB
		 * reaches (2048 pairs = 4096 pages), often; within its reach, a
		 * page misses once at most (the populate left them all in it) */
		ASSERT_LE(jnum(it, "miss_tlb_misses"), miss_ops);
		if (pages > 4096)
			ASSERT(jnum(it, "miss_tlb_misses") > 0);
		else
			ASSERT_LE(jnum(it, "miss_tlb_misses"), pages);
		ASSERT(jnum(it, "table_pages") >= 2);
	}
	check_ratios(run, 3, 1);
	ASSERT(!strcmp(jstr(run, "ratios.0.phase"), "tlb_hit"));
	ASSERT(!strcmp(jstr(run, "ratios.0.base"), "native_hit"));
	ASSERT_EQ(jnum(run, "ratios.0.max_ratio"), 2);
	ASSERT(!strcmp(jstr(run, "ratios.1.phase"), "tlb_miss"));
	ASSERT_EQ(jnum(run, "ratios.1.max_ratio"), 5);
}

static void test_access_cost_json(void)
{
	static const char *const a[] = { "bench", "access_cost", "-b", "32M", "-i", "2", "--json",
					 NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(!strcmp(jstr(j, "suite"), "access_cost"));
	ASSERT_EQ(jget(j, "points")->n, 1);
	ASSERT_EQ(jget(j, "points.0.runs")->n, 1);
	check_access_cost(jget(j, "points.0.runs.0"), 8192, 2);
	jv_free(j);
	result_free(&r);
}

/* Another layout, two slots, two vCPUs' worth of memory: the one vCPU has it all. */
static void test_access_cost_layout(void)
{
	static const char *const a[] = { "bench", "access_cost", "--page-shift", "14", "--levels",
					 "2", "-v", "2", "-b", "4M", "-m", "2", "-i", "1",
					 "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);
	struct jv *run = jget(j, "points.0.runs.0");

	ASSERT_EQ(jnum(run, "page_size"), 16384);
	ASSERT_EQ(jnum(run, "slots"), 2);
	check_access_cost(run, 512, 1);
	jv_free(j);
	result_free(&r);
}

static void test_access_cost_text(void)
{
	static const char *const a[] = { "bench", "access_cost", "-b", "8M", "-i", "1", NULL };
	static const char *const want[] = {
		"Iteration 1 populate memory time: ", "Iteration 1 TLB-hit access time: ",
		"Iteration 1 native store time: ", "Iteration 1 TLB-miss access time: ",
		"Iteration 1 native random store time: ", "ns/op", "ns/page", "CPU 0",
		"pre-touched", "Targets and ratios within the run",
		"TLB-hit access / native store", "TLB-miss access / native random store",
		"<= 2.00x", "<= 5.00x", NULL,
	};
	struct result r = run_gpamm(NULL, a);

	ASSERT_EQ_INT(r.status, 0);
	expect_strings(r.out, want);
	ASSERT(strstr(r.out, "PASS") || strstr(r.out, "MISS"));
	result_free(&r);
}

/* ---- pgtable ------------------------------------------------------------------------ */

static void check_pgtable(struct jv *run, uint64_t pages, unsigned iters)
{
	struct jv *det = jget(run, "iterations_detail");

	ASSERT(!strcmp(jstr(run, "status"), "ran"));
	ASSERT_EQ(jnum(run, "pages"), pages);
	check_phases(run, pt_phases, N(pt_phases), iters);
	ASSERT(det && det->n == iters);
	for (unsigned k = 0; k < iters; k++)
		for (unsigned c = 0; c < N(pt_counts); c++)
			ASSERT_EQ(jnum(det->items[k], pt_counts[c]), pages);
	check_ratios(run, 8, 2);
	for (unsigned i = 0; i < 8; i++) {
		char path[64];

		snprintf(path, sizeof(path), "ratios.%u.base", i);
		ASSERT(!strcmp(jstr(run, path), "limit"));
	}
}

static void test_pgtable_json(void)
{
	static const char *const a[] = { "bench", "pgtable", "-b", "16M", "-i", "3", "--json",
					 NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(!strcmp(jstr(j, "suite"), "pgtable"));
	check_pgtable(jget(j, "points.0.runs.0"), 4096, 3);
	jv_free(j);
	result_free(&r);
}

/* Layouts whose page count is not a multiple of 64 (the mask's last word is short). */
static void test_pgtable_layouts(void)
{
	static const char *const layouts[][4] = {
		{ "16", "2", "1M", "16" }, { "14", "3", "1M", "64" }, { "12", "4", "40K", "10" },
	};

	for (unsigned i = 0; i < N(layouts); i++) {
		const char *a[] = { "bench", "pgtable", "--page-shift", layouts[i][0], "--levels",
				    layouts[i][1], "-b", layouts[i][2], "-i", "2", "--json", NULL };
		struct result r;
		struct jv *j = run_json(NULL, a, &r);

		ASSERT_EQ(jnum(j, "config.page_shift"), strtoul(layouts[i][0], NULL, 10));
		check_pgtable(jget(j, "points.0.runs.0"), strtoul(layouts[i][3], NULL, 10), 2);
		jv_free(j);
		result_free(&r);
	}
}

static void test_pgtable_text(void)
{
	static const char *const a[] = { "bench", "pgtable", "-b", "4M", "-i", "1", NULL };
	static const char *const want[] = {
		"Iteration 1 map time", "Iteration 1 random lookup time: ",
		"Iteration 1 mkclean range time: ", "Iteration 1 mkclean by mask time: ",
		"Iteration 1 mkold range time: ", "Iteration 1 test_young time: ",
		"Iteration 1 limit pass time: ", "Iteration 1 unmap range time: ",
		"Iteration 1 flush + free_deferred time: ", "table pages live",
		"mkclean range / limit", "<= 1.60x", NULL,
	};

	expect_stdout(NULL, a, want);
}

/* ---- both ------------------------------------------------------------------------------ */

static void test_sweep(void)
{
	static const char *const aj[] = { "bench", "access_cost", "--sweep", "mem=8M,32M", "-i",
					  "1", "--json", NULL };
	static const char *const at[] = { "bench", "pgtable", "--sweep", "mem=4M,8M,16M", "-i",
					  "1", NULL };
	struct result r;
	struct jv *j = run_json(NULL, aj, &r), *rt;

	ASSERT_EQ(jget(j, "points")->n, 2);
	check_access_cost(jget(j, "points.0.runs.0"), 2048, 1);
	check_access_cost(jget(j, "points.1.runs.0"), 8192, 1);
	for (unsigned i = 0; i < N(ac_phases); i++)
		check_sweep_phase(j, ac_phases[i], 2);
	rt = jget(j, "sweep.ratios.gpamm.tlb_hit/native_hit");
	ASSERT(rt != NULL);
	ASSERT_EQ(jget(rt, "values")->n, 2);
	ASSERT(jnum(rt, "max_over_min") >= 1.0);
	ASSERT(jget(rt, "flat")->b == (jnum(rt, "max_over_min") <= jnum(j, "sweep.flat_limit")));
	ASSERT(jget(j, "sweep.ratios.gpamm.tlb_miss/native_miss") != NULL);
	jv_free(j);
	result_free(&r);

	/* and the suite's own account of what grows with memory, with the cache sizes */
	expect_stdout(NULL, at, ARGS("Sweep mem, gpamm", "ratios within each run",
				     "mkclean_range/limit", "what the operations meet",
				     "why: from 4M to 16M a random lookup went"));
}

static void test_no_peer(void)
{
	static const char *const a[] = { "bench", "access_cost", "--peer", "kvm", "-b", "4M",
					 "-i", "1", "--json", NULL };
	struct result r;
	struct jv *j = run_json("/nonexistent/kvm", a, &r);

	check_peer_skipped(j);
	ASSERT(!strcmp(jstr(j, "points.0.runs.0.status"), "ran"));
	jv_free(j);
	result_free(&r);
}

static void test_list(void)
{
	expect_stdout(NULL, ARGS("bench", "--list"), ARGS("access_cost", "pgtable"));
}

static void test_bad_usage(void)
{
	static const char *const bad[][8] = {
		{ "bench", "access_cost", "--page-shift", "13", NULL },
		{ "bench", "pgtable", "--page-shift", "14", "--levels", "4", NULL },
		{ "bench", "pgtable", "--levels", "5", NULL },
		{ "bench", "access_cost", "-b", "1000", NULL },
		{ "bench", "pgtable", "-b", "12Q", NULL },
		{ "bench", "access_cost", "-i", "0", NULL },
		{ "bench", "pgtable", "--sweep", "mem=4M,x", NULL },
		{ "bench", "access_cost", "--sweep", "size=4M", NULL },
		{ "bench", "pgtable", "access_cost", NULL },
		{ "bench", "access_cost", "--bogus", NULL },
	};

	EXPECT_USAGE_ERRORS(ARGS(NULL), bad, ARGS("gpamm bench: "));
}

int main(int argc, char **argv)
{
	if (!clitest_init(argc, argv))
		return 1;
	TEST(test_list);
	TEST(test_bad_usage);
	TEST(test_access_cost_json);
	TEST(test_access_cost_layout);
	TEST(test_access_cost_text);
	TEST(test_pgtable_json);
	TEST(test_pgtable_layouts);
	TEST(test_pgtable_text);
	TEST(test_sweep);
	TEST(test_no_peer);
	return tap_done();
}
