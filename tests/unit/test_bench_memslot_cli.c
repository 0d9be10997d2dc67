// SPDX-License-Identifier: MIT
/*
 * test_bench_memslot_cli - "gpamm bench memslot_perf" from the outside: the
 * built binary (or $GPAMM_BIN) runs the suite with small sizes and its JSON
 * report is checked: every test of the selftest (setup, map, unmap, unmap
 * chunked, move active/inactive area, RW) has a time > 0 with one sample per
 * iteration (each the time per turn of the test's loop), and the counts are the suite's invariants (each map iteration
 * faults every page once, each unmap iteration exactly the pages the guest
 * re-touched, RW on mapped memory none). -m 1 stands for the default of 32
 * slots, an explicit -m is kept. The text has the selftest's lines; bad
 * options exit 2, a size the suite cannot split exits 1 with the reason,
 * and the suite has no KVM peer, which --peer kvm reports as a skip.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/clitest.h"
#include "harness/tap.h"

static const char *const phases[] = {
	"setup", "map", "unmap", "unmap_chunked", "move_active", "move_inactive", "rw",
};
#define NPHASES (sizeof(phases) / sizeof(phases[0]))

/* A gpamm run of the suite that ran: every phase, every count as it must be. */
static void check_run(struct jv *run, uint64_t pages, unsigned vcpus, unsigned slots,
		      unsigned iters)
{
	struct jv *det;
	char path[96];

	ASSERT(!strcmp(jstr(run, "backend"), "gpamm"));
	ASSERT(!strcmp(jstr(run, "status"), "ran"));
	ASSERT_EQ(jnum(run, "pages"), pages);
	ASSERT_EQ(jnum(run, "vcpus"), vcpus);
	ASSERT_EQ(jnum(run, "slots"), slots);
	ASSERT_EQ(jnum(run, "iterations"), iters);
	ASSERT(strstr(jstr(run, "host"), "MADV_DONTNEED") != NULL);
	for (unsigned i = 0; i < NPHASES; i++)
		check_phase(run, phases[i], true, iters); /* one sample per iteration, setup too */
	/* map is each vCPU's cost per page, the rest per page of all memory */
	ASSERT(!strcmp(jstr(run, "phases.map.per_page_unit"), "ns per page per vCPU"));
	ASSERT(!strcmp(jstr(run, "phases.unmap.per_page_unit"), "ns per page"));

	det = jget(run, "iterations_detail");
	ASSERT(det && det->t == J_ARR);
	ASSERT_EQ(det->n, iters);
	for (unsigned k = 0; k < iters; k++) {
		struct jv *it = det->items[k];

		ASSERT_EQ(jnum(it, "iteration"), k + 1);
		for (unsigned i = 0; i < NPHASES; i++) {
			snprintf(path, sizeof(path), "%s_ns", phases[i]);
			ASSERT(jnum(it, path) > 0);
		}
		ASSERT_EQ(jnum(it, "map_faults"), pages);    /* every page mapped again */
		ASSERT_EQ(jnum(it, "unmap_faults"), 4 * vcpus); /* 2 re-touches x 2 tests */
		ASSERT_EQ(jnum(it, "rw_faults"), 0);         /* everything stayed mapped */
		ASSERT(jnum(it, "move_exits") >= 0);
	}
}

static void test_list_and_help(void)
{
	expect_stdout(NULL, ARGS("bench", "--list"), ARGS("memslot_perf", "dirty_log_perf"));
	expect_stdout(NULL, ARGS("bench", "--help"), ARGS("memslot_perf"));
}

/* -m left at 1: the suite's default of 32 slots. */
static void test_json_default_slots(void)
{
	static const char *const a[] = { "bench", "memslot_perf", "-b", "16M", "-i", "2", "--json",
					 NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(!strcmp(jstr(j, "suite"), "memslot_perf"));
	ASSERT(jget(j, "peer") && jget(j, "peer")->t == J_NULL);
	ASSERT_EQ(jget(j, "points")->n, 1);
	ASSERT_EQ(jget(j, "points.0.runs")->n, 1);
	ASSERT_EQ(jnum(j, "config.slots"), 1); /* what was asked */
	check_run(jget(j, "points.0.runs.0"), 4096, 1, 32, 2);
	jv_free(j);
	result_free(&r);
}

/* Several vCPUs, an explicit slot count, 16K pages. */
static void test_json_vcpus_slots_16k(void)
{
	static const char *const a[] = { "bench", "memslot_perf", "-v", "2", "-b", "8M", "-m", "4",
					 "-i", "3", "--page-shift", "14", "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);
	struct jv *run = jget(j, "points.0.runs.0");

	/* 2 x 8 MiB of 16K pages */
	ASSERT_EQ(jnum(run, "page_size"), 16384);
	ASSERT_EQ(jnum(run, "pages_per_vcpu"), 512);
	check_run(run, 1024, 2, 4, 3);
	jv_free(j);
	result_free(&r);
}

/* 64K pages on two levels, THP backing, many small slots. */
static void test_json_64k_thp(void)
{
	static const char *const a[] = { "bench", "memslot_perf", "-b", "16M", "-m", "64", "-i",
					 "1", "--page-shift", "16", "--levels", "2", "--backing",
					 "thp", "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(!strcmp(jstr(j, "config.backing"), "thp"));
	check_run(jget(j, "points.0.runs.0"), 256, 1, 64, 1);
	jv_free(j);
	result_free(&r);
}

static void test_text_selftest_lines(void)
{
	static const char *const a[] = { "bench", "memslot_perf", "-b", "16M", "-i", "2", NULL };
	static const char *const want[] = {
		"32 memslots of 512 KiB", "Testing slot setup with 2 iterations, 32 slots",
		"Iteration 1 slot setup time: ", "Iteration 2 slot setup time: ",
		"Testing map performance with 2 iterations of at least 50 ms of loop turns, 32 slots",
		"Testing unmap performance with 2 iterations of at least 50 ms of loop turns, 32 slots",
		"Testing unmap chunked performance with 2 iterations of at least 50 ms of loop turns",
		"Testing move active area performance with 2 iterations of",
		"Testing move inactive area performance with 2 iterations of",
		"Testing RW performance with 2 iterations of",
		"Iteration 1 map time: ", "Iteration 2 map time: ", "Iteration 2 unmap time: ",
		"Iteration 2 unmap chunked time: ", "Iteration 2 move active area time: ",
		"Iteration 2 move inactive area time: ", "Iteration 2 RW time: ",
		"loop turns in 2 iterations, avg ", "Best runtime result was ",
		"s per turn (with 2 iterations, 32 slots)",
		"Best slot setup time for the whole test area was ",
		"Slot setup over 2 iterations took ", "Map over 2 iterations took ",
		"RW over 2 iterations took ",
		"4096 MADV_DONTNEED calls of up to 4 KiB",
		"32 MADV_DONTNEED calls of up to 2 MiB", /* split at the slots */
		"Guest faults per turn of map per iteration: 4096 4096 (every page once",
		"Guest faults per turn of unmap + unmap chunked per iteration: 4 4",
		"Guest faults per turn of RW per iteration: 0 0", "ns/page per vCPU", NULL,
	};
	struct result r = run_gpamm(NULL, a);

	ASSERT_EQ_INT(r.status, 0);
	expect_strings(r.out, want);
	/* nothing went wrong (a sanitizer build may warn about swapcontext) */
	ASSERT(strstr(r.err, "gpamm bench") == NULL && strstr(r.err, "ERROR") == NULL &&
	       strstr(r.err, "runtime error") == NULL);
	result_free(&r);
}

static void test_sweep(void)
{
	static const char *const a[] = { "bench", "memslot_perf", "--sweep", "mem=8M,16M", "-i",
					 "1", "--json", NULL };
	static const char *const at[] = { "bench", "memslot_perf", "--sweep", "mem=8M,16M", "-i",
					  "1", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT_EQ(jget(j, "points")->n, 2);
	check_run(jget(j, "points.0.runs.0"), 2048, 1, 32, 1);
	check_run(jget(j, "points.1.runs.0"), 4096, 1, 32, 1);
	ASSERT(!strcmp(jstr(j, "sweep.param"), "mem"));
	for (unsigned i = 0; i < NPHASES; i++)
		check_sweep_phase(j, phases[i], 2);
	jv_free(j);
	result_free(&r);

	/* the suite says which phases are fixed costs, in time per turn */
	expect_stdout(NULL, at, ARGS("Sweep mem, gpamm", "unmap chunked (avg)",
				     "memslot_perf: time per turn of the phases with a fixed cost "
				     "at 32 slots"));
}

/*
 * A sweep over the slot count, as the "--sweep slots=32,1024,32767"
 * in small: pages that do not split evenly go to the last slot (as in the
 * selftest), setup is timed per slot, and both the slot and the
 * flatness tables come out.
 */
static void test_sweep_slots(void)
{
	static const char *const a[] = { "bench", "memslot_perf", "-b", "1M", "--sweep",
					 "slots=2,7,128", "-i", "1", "--json", NULL };
	static const char *const at[] = { "bench", "memslot_perf", "-b", "1M", "--sweep",
					  "slots=2,128", "-i", "1", NULL };
	static const unsigned slots[] = { 2, 7, 128 };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);
	char path[64];

	ASSERT_EQ(jget(j, "points")->n, 3);
	ASSERT(!strcmp(jstr(j, "sweep.param"), "slots"));
	for (unsigned i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "points.%u.runs.0", i);
		check_run(jget(j, path), 256, 1, slots[i], 1);
		snprintf(path, sizeof(path), "points.%u.runs.0.phases.setup.per_page_unit", i);
		ASSERT(!strcmp(jstr(j, path), "ns per op")); /* per slot created */
	}
	for (unsigned i = 0; i < NPHASES; i++)
		check_sweep_phase(j, phases[i], 3);
	jv_free(j);
	result_free(&r);
	expect_stdout(NULL, at, ARGS("Sweep slots, gpamm", "slot setup (avg)", "slot churn (avg)",
				     "creates + deletes per second", "slot setup, per slot"));
}

static void test_bad_usage(void)
{
	static const char *const bad[][12] = {
		{ "bench", "memslot_perf", "-m", "0", NULL },
		{ "bench", "memslot_perf", "-m", "x", NULL },
		{ "bench", "memslot_perf", "--sweep", "slots=0,8", NULL },
		{ "bench", "memslot_perf", "--sweep", "slots=8,32768", NULL },
		{ "bench", "memslot_perf", "-i", "0", NULL },
		{ "bench", "memslot_perf", "-v", "0", NULL },
		{ "bench", "memslot_perf", "-b", "5000", NULL },
		{ "bench", "memslot_perf", "--page-shift", "13", NULL },
		{ "bench", "memslot_perf", "--sweep", "mem=8M,y", NULL },
		{ "bench", "memslot_perf", "memslot_perf", NULL },
		{ "bench", "memslot_perf", "--nonsense", NULL },
	};

	EXPECT_USAGE_ERRORS(ARGS(NULL), bad, ARGS("gpamm bench: "));
}

/* Valid options the suite cannot use: the run fails (exit 1) and says why. */
static void test_too_small(void)
{
	static const char *const one_page[] = { "bench", "memslot_perf", "-b", "4K", NULL };
	static const char *const thin_slots[] = { "bench", "memslot_perf", "-b", "64K", "-m", "16",
						  NULL };
	struct result r = run_gpamm(NULL, one_page);

	expect_error(&r, 1, ARGS("at least 2 pages per vCPU"));
	result_free(&r);
	r = run_gpamm(NULL, thin_slots);
	expect_error(&r, 1, ARGS("at least 2 pages per slot"));
	result_free(&r);
}

/* No KVM peer for this suite: a skip with the reason, never a failure. */
static void test_peer_skipped(void)
{
	static const char *const a[] = { "bench", "memslot_perf", "--peer", "kvm", "-b", "8M", "-i",
					 "1", "--json", NULL };
	struct result r;
	struct jv *j = run_json("/nonexistent/kvm", a, &r);

	check_peer_skipped(j);
	check_run(jget(j, "points.0.runs.0"), 2048, 1, 32, 1);
	jv_free(j);
	result_free(&r);

	j = run_json(NULL, a, &r);
	check_peer_skipped(j);
	jv_free(j);
	result_free(&r);
}

int main(int argc, char **argv)
{
	if (!clitest_init(argc, argv))
		return 1;
	TEST(test_list_and_help);
	TEST(test_sweep_slots);
	TEST(test_bad_usage);
	TEST(test_json_default_slots);
	TEST(test_json_vcpus_slots_16k);
	TEST(test_json_64k_thp);
	TEST(test_text_selftest_lines);
	TEST(test_sweep);
	TEST(test_too_small);
	TEST(test_peer_skipped);
	return tap_done();
}
