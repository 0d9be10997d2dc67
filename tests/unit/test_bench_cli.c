// SPDX-License-Identifier: MIT
/*
 * test_bench_cli - "gpamm bench" from the outside: the built binary
 * (build/gpamm next to this test's build directory, or $GPAMM_BIN) is run
 * with small sizes and its JSON report is parsed and checked for
 * consistency: the counts add up (every iteration's GET reports every
 * page, each page took a write fault), every phase of the selftest is
 * there with a time > 0, classic mode has no CLEAR, the sweep reports one
 * point per value. Bad flags exit 2 with a message. "--peer kvm" either
 * runs on the host's KVM (its run has all the KVM phases and the targets
 * have verdicts) or reports a skip with a reason; a missing device
 * ($GPAMM_KVM_DEVICE) must always be a skip with exit 0.
 */
#include <stdio.h>
#include <string.h>

#include "harness/clitest.h"
#include "harness/tap.h"

/* ---- checks ------------------------------------------------------------------------ */

static const char *const all_phases[] = { "populate", "enable", "dirty", "get", "clear", "disable" };

enum faults { NO_FAULT_COUNT, FAULTS_EVERY_ITER, FAULTS_FROM_ITER2 };

/*
 * A run that ran: phases present with times > 0, counts consistent.
 * @faults: whether the run counts write faults and from which iteration
 * every page takes one (with INITIALLY_SET nothing is write-protected
 * before the first CLEAR, so iteration 1 takes none).
 */
static void check_run(struct jv *run, const char *backend, uint64_t pages, unsigned iters,
		      bool manual, enum faults faults)
{
	struct jv *det;

	ASSERT(!strcmp(jstr(run, "backend"), backend));
	ASSERT(!strcmp(jstr(run, "status"), "ran"));
	ASSERT_EQ(jnum(run, "pages"), pages);
	ASSERT_EQ(jnum(run, "iterations"), iters);
	for (unsigned i = 0; i < sizeof(all_phases) / sizeof(all_phases[0]); i++) {
		const char *ph = all_phases[i];

		if (!strcmp(ph, "clear") && !manual) {
			/* classic GET clears; there is no CLEAR phase */
			ASSERT(jget(run, "phases.clear") == NULL);
			continue;
		}
		check_phase(run, ph, !strcmp(ph, "dirty") || !strcmp(ph, "get") ||
				     !strcmp(ph, "clear"), iters);
	}
	det = jget(run, "iterations_detail");
	ASSERT(det && det->t == J_ARR);
	ASSERT_EQ(det->n, iters);
	for (unsigned k = 0; k < iters; k++) {
		struct jv *it = det->items[k];

		ASSERT_EQ(jnum(it, "iteration"), k + 1);
		ASSERT(jnum(it, "dirty_ns") > 0);
		ASSERT(jnum(it, "get_ns") > 0);
		if (manual)
			ASSERT(jnum(it, "clear_ns") > 0);
		else
			ASSERT(jget(it, "clear_ns") == NULL);
		/* every page was written once: GET reports each one */
		ASSERT_EQ(jnum(it, "pages_dirty"), pages);
		if (faults == FAULTS_FROM_ITER2 && k == 0)
			ASSERT_EQ(jnum(it, "write_faults"), 0);
		else if (faults != NO_FAULT_COUNT)
			ASSERT(jnum(it, "write_faults") >= (double)pages);
	}
}

static void test_json_manual(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "-b", "16M", "-i", "2",
					 "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(!strcmp(jstr(j, "suite"), "dirty_log_perf"));
	ASSERT(jget(j, "peer") && jget(j, "peer")->t == J_NULL);
	ASSERT_EQ(jget(j, "points")->n, 1);
	ASSERT_EQ(jget(j, "points.0.runs")->n, 1);
	ASSERT_EQ(jnum(j, "config.total_bytes"), 16u << 20);
	ASSERT(jget(j, "config.pretouched")->b);
	ASSERT(jget(j, "config.initially_set")->b);
	ASSERT_EQ(jnum(j, "points.0.runs.0.pages_per_vcpu"), 4096);
	check_run(jget(j, "points.0.runs.0"), "gpamm", 4096, 2, true, FAULTS_FROM_ITER2);
	jv_free(j);
	result_free(&r);
}

/* Manual protect without INITIALLY_SET: enabling logging protects every page. */
static void test_json_no_initially_set(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "-b", "8M", "-i", "2",
					 "--no-initially-set", "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT(jget(j, "config.manual_protect")->b);
	ASSERT(!jget(j, "config.initially_set")->b);
	check_run(jget(j, "points.0.runs.0"), "gpamm", 2048, 2, true, FAULTS_EVERY_ITER);
	jv_free(j);
	result_free(&r);
}

static void test_json_classic_vcpus_slots(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "-v", "2", "-b", "8M", "-m", "2",
					 "-i", "3", "--no-manual-protect", "--page-shift", "14",
					 "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);
	struct jv *run = jget(j, "points.0.runs.0");

	/* 2 x 8 MiB of 16K pages */
	ASSERT_EQ(jnum(run, "pages"), 1024);
	ASSERT_EQ(jnum(run, "pages_per_vcpu"), 512);
	ASSERT_EQ(jnum(run, "vcpus"), 2);
	ASSERT_EQ(jnum(run, "slots"), 2);
	ASSERT_EQ(jnum(run, "page_size"), 16384);
	ASSERT(!jget(j, "config.manual_protect")->b);
	check_run(run, "gpamm", 1024, 3, false, FAULTS_EVERY_ITER);
	jv_free(j);
	result_free(&r);
}

static void test_text_selftest_lines(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "-b", "8M", "-i", "2", NULL };
	static const char *const want[] = {
		"Populate memory time: ", "Enabling dirty logging time: ",
		"Iteration 1 dirty memory time: ", "Iteration 1 get dirty log time: ",
		"Iteration 1 clear dirty log time: ", "Iteration 2 dirty memory time: ",
		"Iteration 2 get dirty log time: ", "Iteration 2 clear dirty log time: ",
		"Disabling dirty logging time: ", "Get dirty log over 2 iterations took ",
		"Clear dirty log over 2 iterations took ", "ns/page", "pre-touched", NULL,
	};

	expect_stdout(NULL, a, want);
}

static void test_bad_usage(void)
{
	static const char *const bad[][12] = {
		{ "bench", NULL },
		{ "bench", "nosuch", NULL },
		{ "bench", "dirty_log_perf", "dirty_log_perf", NULL },
		{ "bench", "dirty_log_perf", "--bogus", NULL },
		{ "bench", "dirty_log_perf", "-i", "0", NULL },
		{ "bench", "dirty_log_perf", "-i", NULL },
		{ "bench", "dirty_log_perf", "-v", "0", NULL },
		{ "bench", "dirty_log_perf", "-b", "12Q", NULL },
		{ "bench", "dirty_log_perf", "-b", "1000", NULL },
		{ "bench", "dirty_log_perf", "-b", "16M", "-m", "3", NULL },
		{ "bench", "dirty_log_perf", "--page-shift", "13", NULL },
		{ "bench", "dirty_log_perf", "--page-shift", "14", "--levels", "4", NULL },
		{ "bench", "dirty_log_perf", "--sweep", "foo=1,2", NULL },
		{ "bench", "dirty_log_perf", "--sweep", "mem=16M,,32M", NULL },
		{ "bench", "dirty_log_perf", "--sweep", "vcpus=1,x", NULL },
		{ "bench", "dirty_log_perf", "--peer", "xen", NULL },
		{ "bench", "dirty_log_perf", "--backing", "hugetlb", NULL },
		{ "bench", "dirty_log_perf", "--json=yes", NULL },
	};

	/* a message naming the command, and nothing ran */
	EXPECT_USAGE_ERRORS(ARGS(NULL), bad, ARGS("gpamm bench: "));
}

static void test_help(void)
{
	expect_stdout(NULL, ARGS("bench", "--help"), ARGS("dirty_log_perf", "--peer kvm", "--sweep"));
}

static void test_peer_kvm(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "--peer", "kvm", "-b", "16M",
					 "-i", "2", "--json", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);
	struct jv *runs = jget(j, "points.0.runs"), *tg;

	ASSERT(!strcmp(jstr(j, "peer.name"), "kvm"));
	check_run(runs->items[0], "gpamm", 4096, 2, true, FAULTS_FROM_ITER2);
	ASSERT_EQ(runs->n, 2);
	if (!strcmp(jstr(j, "peer.status"), "skipped")) {
		tap_diag("KVM peer skipped: %s", jstr(j, "peer.reason"));
		check_peer_skipped(j);
	} else {
		ASSERT(!strcmp(jstr(j, "peer.status"), "ran"));
		/* KVM's run has every phase, and its GET saw every page written */
		check_run(runs->items[1], "kvm", 4096, 2, true, NO_FAULT_COUNT);
		ASSERT_EQ(jnum(runs->items[1], "page_size"), 4096);
		tg = jget(j, "points.0.comparison.targets");
		ASSERT(tg && tg->n == 4);
		for (unsigned i = 0; i < tg->n; i++) {
			const char *v = jstr(tg->items[i], "verdict");
			ASSERT(!strcmp(v, "PASS") || !strcmp(v, "MISS"));
			ASSERT(jnum(tg->items[i], "ratio") > 0);
		}
		ASSERT(jnum(j, "points.0.comparison.phases.dirty.ratio") > 0);
		ASSERT(strstr(jstr(j, "points.0.comparison.note"), "VM exit") != NULL);
	}
	jv_free(j);
	result_free(&r);
}

static void test_peer_kvm_missing_device(void)
{
	static const char *const aj[] = { "bench", "dirty_log_perf", "--peer", "kvm", "-b", "8M",
					  "-i", "1", "--json", NULL };
	static const char *const at[] = { "bench", "dirty_log_perf", "--peer", "kvm", "-b", "8M",
					  "-i", "1", NULL };
	struct result r;
	struct jv *j = run_json("/nonexistent/kvm", aj, &r);

	check_peer_skipped(j);
	ASSERT(strstr(jstr(j, "peer.reason"), "/nonexistent/kvm") != NULL);
	check_run(jget(j, "points.0.runs.0"), "gpamm", 2048, 1, true, FAULTS_FROM_ITER2);
	jv_free(j);
	result_free(&r);

	expect_stdout("/nonexistent/kvm", at,
		      ARGS("KVM peer: skipped: cannot open /nonexistent/kvm"));
}

static void test_sweep(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "--sweep", "mem=8M,16M", "-i",
					 "1", "--json", NULL };
	static const char *const at[] = { "bench", "dirty_log_perf", "--sweep", "vcpus=1,2", "-b",
					  "8M", "-i", "1", NULL };
	struct result r;
	struct jv *j = run_json(NULL, a, &r);

	ASSERT_EQ(jget(j, "points")->n, 2);
	ASSERT(!strcmp(jstr(j, "points.0.label"), "8M"));
	check_run(jget(j, "points.0.runs.0"), "gpamm", 2048, 1, true, FAULTS_FROM_ITER2);
	check_run(jget(j, "points.1.runs.0"), "gpamm", 4096, 1, true, FAULTS_FROM_ITER2);
	ASSERT(!strcmp(jstr(j, "sweep.param"), "mem"));
	ASSERT_EQ(jget(j, "sweep.values")->n, 2);
	for (unsigned i = 0; i < sizeof(all_phases) / sizeof(all_phases[0]); i++)
		check_sweep_phase(j, all_phases[i], 2);
	jv_free(j);
	result_free(&r);

	expect_stdout(NULL, at, ARGS("Sweep vcpus, gpamm", "stayed flat"));
}

int main(int argc, char **argv)
{
	if (!clitest_init(argc, argv))
		return 1;
	TEST(test_help);
	TEST(test_bad_usage);
	TEST(test_json_manual);
	TEST(test_json_no_initially_set);
	TEST(test_json_classic_vcpus_slots);
	TEST(test_text_selftest_lines);
	TEST(test_sweep);
	TEST(test_peer_kvm_missing_device);
	TEST(test_peer_kvm);
	return tap_done();
}
