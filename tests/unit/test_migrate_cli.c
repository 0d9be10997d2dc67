// SPDX-License-Identifier: MIT
/*
 * The main job from the outside: `gpamm migrate` to a destination process
 * it starts, on small sizes in every dirty-log mode, its JSON checked
 * (exact verdict by replay, no stale access, counts that add up, measured
 * downtime, the configuration echoed back, nothing left after destroy),
 * auto-converge, post-copy, a dropped page caught, its text report and
 * progress lines, and its refusal of bad flags.
 *
 * The binary is $GPAMM_BIN, or BUILD/gpamm next to this test's BUILD/tests/.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/clitest.h"
#include "harness/tap.h"

/*
 * What every report must say: the destination's memory is exactly the
 * source's image plus the writes its vCPUs made there, nothing was stale,
 * the rounds add up, the downtime was measured, the destination exited 0
 * and destroy left nothing. @pages: guest pages; @psz: page size.
 */
static void check_report(struct jv *j, uint64_t pages, uint64_t psz, unsigned max_rounds)
{
	struct jv *rounds = jget(j, "rounds");
	uint64_t total = 0, bytes = 0;

	ASSERT(!strcmp(jstr(j, "verdict"), "exact"));
	ASSERT(!strcmp(jstr(j, "expected_hash"), jstr(j, "destination_hash")));
	ASSERT_EQ(jnum(j, "stale_accesses"), 0);
	ASSERT_EQ(jnum(j, "mem_bytes"), pages * psz);
	ASSERT_EQ(jnum(j, "destination_status"), 0);

	/* round 0 is the full copy, the last one the switchover */
	ASSERT(rounds && rounds->t == J_ARR);
	ASSERT_GE(rounds->n, 2);
	ASSERT_LE(rounds->n, max_rounds + 3);
	ASSERT_EQ(jnum(rounds->items[0], "pages"), pages);
	for (unsigned i = 0; i < rounds->n; i++) {
		uint64_t n = (uint64_t)jnum(rounds->items[i], "pages");

		ASSERT_LE(n, pages);
		ASSERT_LE(jnum(rounds->items[i], "zero_pages"), n);
		ASSERT(jnum(rounds->items[i], "seconds") >= 0);
		total += n;
		bytes += (uint64_t)jnum(rounds->items[i], "bytes");
	}
	ASSERT_EQ(jnum(j, "pages_sent"), total);
	ASSERT_EQ(jnum(j, "bytes_sent"), bytes);
	/* guest RAM starts full: the page bytes go on the wire, plus headers */
	ASSERT_GE(bytes, pages * psz);
	ASSERT(jnum(j, "downtime_ms") > 0);
	ASSERT(jnum(j, "downtime_ms") < 10000);
	ASSERT_GE(jnum(j, "replayed_writes"), 0);
	ASSERT(jnum(j, "guest_writes") > 0);
	ASSERT(jnum(j, "faults") > 0);
	ASSERT(jnum(j, "total_s") > 0);
	ASSERT_EQ(jnum(j, "after_destroy.frames_live"), 0);
	ASSERT_EQ(jnum(j, "after_destroy.pinned"), 0);
	ASSERT_EQ(jnum(j, "after_destroy.vms"), 0);
	ASSERT_EQ(jnum(j, "after_destroy.vcpus"), 0);
	ASSERT_EQ(jnum(j, "after_destroy.table_pools"), 0);
	ASSERT_EQ(jnum(j, "after_destroy.threads"), 0);
}

static void check_mode(const char *mode)
{
	char seed[32];
	struct result r;
	struct jv *j;

	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)tap_seed());
	j = run_json(NULL, ARGS("migrate", "--mem", "32M", "--page-shift", "12", "--mode", mode,
				"--json", "--seed", seed), &r);
	check_report(j, 32ULL << 20 >> 12, 4096, 30);
	/* the configuration comes back as given, defaults filled in */
	ASSERT(!strcmp(jstr(j, "mode"), mode));
	ASSERT(!strcmp(jstr(j, "layout"), "4K/3-level"));
	ASSERT_EQ(jnum(j, "seed"), strtoull(seed, NULL, 10));
	ASSERT_EQ(jnum(j, "vcpus"), 2);
	ASSERT_EQ(jnum(j, "rate"), 20000);
	ASSERT(jbool(j, "checking"));
	ASSERT(!jbool(j, "postcopy"));
	ASSERT_EQ(jnum(j, "postcopy_requests"), 0);
	/* the destination ran the guest on: it made writes, replayed here */
	ASSERT(jnum(j, "replayed_writes") > 0);
	/* --json keeps stderr free of progress lines */
	ASSERT(!strstr(r.err, "round"));
	jv_free(j);
	result_free(&r);
}

static void test_migrate_manual(void) { check_mode("manual"); }
static void test_migrate_classic(void) { check_mode("classic"); }
static void test_migrate_ring(void) { check_mode("ring"); }

/* Everything optional off, an unthrottled guest, one pre-copy round, 4 levels. */
static void test_migrate_options(void)
{
	struct result r;
	struct jv *j = run_json(NULL, ARGS("migrate", "--mem", "16M", "--page-shift", "12",
					   "--levels", "4", "-v", "3", "--rate", "0",
					   "--max-rounds", "1", "--no-checking", "--no-host-events",
					   "--hot", "5", "--hot-writes", "50", "--downtime-limit", "5",
					   "-s", "7", "--json"), &r);

	check_report(j, 16ULL << 20 >> 12, 4096, 1);
	ASSERT(!strcmp(jstr(j, "layout"), "4K/4-level"));
	ASSERT_EQ(jnum(j, "vcpus"), 3);
	ASSERT_EQ(jnum(j, "rate"), 0);
	ASSERT_EQ(jnum(j, "seed"), 7);
	ASSERT(!jbool(j, "checking"));
	ASSERT_EQ(jnum(j, "host_reclaimed"), 0);
	ASSERT_EQ(jnum(j, "host_migrated"), 0);
	jv_free(j);
	result_free(&r);

	/* 64K pages, 2 levels */
	j = run_json(NULL, ARGS("migrate", "--mem", "64M", "--page-shift", "16", "--levels", "2",
				"--json", "--seed", "11"), &r);
	check_report(j, 64ULL << 20 >> 16, 65536, 30);
	ASSERT(!strcmp(jstr(j, "layout"), "64K/2-level"));
	jv_free(j);
	result_free(&r);
}

/* An unthrottled guest converges by auto-converge; the throttle shows in the rounds. */
static void test_migrate_auto_converge(void)
{
	struct result r;
	struct jv *j = run_json(NULL, ARGS("migrate", "--mem", "32M", "--page-shift", "12",
					   "--rate", "0", "--hot", "50", "--hot-writes", "100",
					   "--max-bandwidth", "64M", "--downtime-limit", "20",
					   "--max-rounds", "60", "--no-host-events", "-s", "5",
					   "--json"), &r);
	struct jv *rounds;
	double max_throttle = 0;

	check_report(j, 32ULL << 20 >> 12, 4096, 60);
	rounds = jget(j, "rounds");
	for (unsigned i = 0; i < rounds->n; i++)
		max_throttle = fmax(max_throttle, jnum(rounds->items[i], "throttle"));
	ASSERT(max_throttle >= 20);
	jv_free(j);
	result_free(&r);
}

/* Post-copy from the start: the destination resumes with no page sent and pulls them. */
static void test_migrate_postcopy(void)
{
	struct result r;
	struct jv *j = run_json(NULL, ARGS("migrate", "--mem", "32M", "--page-shift", "12",
					   "--postcopy", "--rate", "0", "--run-ms", "300", "-s", "9",
					   "--json"), &r);
	struct jv *rounds;

	ASSERT(!strcmp(jstr(j, "verdict"), "exact"));
	ASSERT(jbool(j, "postcopy"));
	rounds = jget(j, "rounds");
	ASSERT_EQ(jnum(rounds->items[0], "pages"), 0); /* nothing before the switchover */
	ASSERT(jbool(rounds->items[rounds->n - 1], "postcopy"));
	ASSERT(jnum(j, "postcopy_requests") > 0);
	ASSERT(jnum(j, "postcopy_served") > 0);
	ASSERT(jnum(j, "request_p50_us") > 0);
	ASSERT_EQ(jnum(j, "stale_accesses"), 0);
	jv_free(j);
	result_free(&r);
}

/* One dirty page lost on the way: the verdict must say so. */
static void test_migrate_dropped_page_fails(void)
{
	struct result r = run_gpamm(NULL, ARGS("migrate", "--mem", "16M", "--page-shift", "12",
					       "--inject-drop-page", "--no-host-events", "-s", "3",
					       "--json"));

	ASSERT_EQ_INT(r.status, 1);
	ASSERT(strstr(r.out, "\"verdict\":\"MISMATCH\""));
	result_free(&r);
}

/* The text report: one progress line per round on stderr, the verdict on stdout. */
static void test_migrate_text(void)
{
	struct result r = run_gpamm(NULL, ARGS("migrate", "--mem", "16M", "--seed", "3"));

	if (r.status)
		tap_diag("exit %d, stderr: %s", r.status, r.err);
	ASSERT_EQ_INT(r.status, 0);
	expect_strings(r.out, ARGS("gpamm migrate: 16 MiB of guest memory, 16K/3-level, 2 vCPUs, "
				   "manual dirty log",
				   "(a destination process started here)",
				   "seed 3", "(full copy)", "(switchover)", "downtime: ",
				   "verdict: exact\n", "stale accesses 0\n",
				   "destination exit status 0",
				   "after destroy: 0 frames live, 0 pins, 0 VMs, 0 vCPUs, "
				   "0 table pools, 0 library threads"));
	expect_strings(r.err, ARGS("full copy      round   0:     1024 pages"));
	result_free(&r);
}

static void test_migrate_bad_flags(void)
{
	static const char *const bad[][4] = {
		{ "--bogus" }, { "--mem", "0" }, { "--mem", "10Q" }, { "--mode", "fast" },
		{ "--vcpus", "0" }, { "--page-shift", "13" }, { "extra" }, { "--mem", "12K" },
		{ "--max-rounds", "0" }, { "--downtime-limit", "-1" }, { "--levels", "5" },
		{ "--hot", "101" }, { "--hot-writes", "x" }, { "--rate", "-5" },
		{ "--max-bandwidth", "0" }, { "--seed", "abc" }, { "--mem" }, { "--to", "nowhere" },
		{ "--postcopy-at", "101" }, { "--timeout", "0" }, { "--run-ms", "x" },
		{ "--page-shift", "14", "--levels", "4" }, { "--vcpus", "65" }, { "--mem", "65G" },
	};

	EXPECT_USAGE_ERRORS(ARGS("migrate"), bad,
			    ARGS("gpamm migrate: ", "Try 'gpamm migrate --help'."));
	expect_stdout(NULL, ARGS("migrate", "--help"), ARGS("usage: gpamm migrate"));
}

int main(int argc, char **argv)
{
	if (!clitest_init(argc, argv))
		return 1;
	TEST(test_migrate_manual);
	TEST(test_migrate_classic);
	TEST(test_migrate_ring);
	TEST(test_migrate_options);
	TEST(test_migrate_auto_converge);
	TEST(test_migrate_postcopy);
	TEST(test_migrate_dropped_page_fails);
	TEST(test_migrate_text);
	TEST(test_migrate_bad_flags);
	return tap_done();
}
