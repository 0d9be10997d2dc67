// SPDX-License-Identifier: MIT
/*
 * The main job from the outside: `gpamm migrate` on small sizes in every
 * dirty-log mode, its JSON checked (exact copy, no stale access, counts that
 * add up, the configuration echoed back, nothing left after destroy), its
 * text report and progress lines, the options that switch parts of the run
 * off, and its refusal of bad flags.
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
 * What every report must say: the copy is exact, the rounds add up, the
 * downtime follows from the final round, and destroy left nothing.
 * @pages: guest pages; @psz: page size.
 */
static void check_report(struct jv *j, uint64_t pages, uint64_t psz, unsigned max_rounds)
{
	struct jv *rounds = jget(j, "rounds");
	uint64_t total = 0, last = 0;
	double want_ms;

	ASSERT(!strcmp(jstr(j, "verdict"), "exact"));
	ASSERT_EQ(jnum(j, "mismatched_pages"), 0);
	ASSERT_EQ(jnum(j, "stale_accesses"), 0);
	ASSERT_EQ(jnum(j, "mem_bytes"), pages * psz);

	/* round 0 is the full copy, the last one the stop-and-copy */
	ASSERT(rounds && rounds->t == J_ARR);
	ASSERT_GE(rounds->n, 2);
	ASSERT_LE(rounds->n, max_rounds + 2);
	ASSERT_EQ(jnum(j, "precopy_rounds"), rounds->n - 2);
	ASSERT_EQ(jnum(rounds->items[0], "pages"), pages);
	for (unsigned i = 0; i < rounds->n; i++) {
		last = (uint64_t)jnum(rounds->items[i], "pages");
		ASSERT_LE(last, pages);
		ASSERT(jnum(rounds->items[i], "seconds") >= 0);
		total += last;
	}
	ASSERT_EQ(jnum(j, "pages_copied"), total);
	ASSERT_EQ(jnum(j, "bytes_copied"), total * psz);
	ASSERT_EQ(jnum(j, "final_dirty_pages"), last);
	/* the final dirty set, sent at the link speed (printed to 1 us) */
	want_ms = (double)last * (double)psz * 8 / (jnum(j, "link_gbps") * 1e9) * 1e3;
	ASSERT(fabs(jnum(j, "downtime_ms") - want_ms) <= 0.0005 + want_ms * 1e-6);

	ASSERT(jnum(j, "guest_writes") > 0);
	ASSERT(jnum(j, "faults") > 0);
	ASSERT(jnum(j, "seconds") > 0);
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
	ASSERT_EQ(jnum(j, "link_gbps"), 10);
	ASSERT(jbool(j, "checking"));
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
					   "--hot", "5", "--hot-writes", "50", "--link-gbps", "2.5",
					   "-s", "7", "--json"), &r);

	check_report(j, 16ULL << 20 >> 12, 4096, 1);
	ASSERT(!strcmp(jstr(j, "layout"), "4K/4-level"));
	ASSERT_EQ(jnum(j, "vcpus"), 3);
	ASSERT_EQ(jnum(j, "rate"), 0);
	ASSERT_EQ(jnum(j, "seed"), 7);
	ASSERT_EQ(jnum(j, "link_gbps"), 2.5);
	ASSERT(!jbool(j, "checking"));
	ASSERT_EQ(jnum(j, "host_reclaimed"), 0);
	ASSERT_EQ(jnum(j, "host_migrated"), 0);
	ASSERT_LE(jnum(j, "precopy_rounds"), 1);
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

/* The text report: one progress line per round on stderr, the verdict on stdout. */
static void test_migrate_text(void)
{
	struct result r = run_gpamm(NULL, ARGS("migrate", "--mem", "16M", "--seed", "3"));

	if (r.status)
		tap_diag("exit %d, stderr: %s", r.status, r.err);
	ASSERT_EQ_INT(r.status, 0);
	expect_strings(r.out, ARGS("gpamm migrate: 16 MiB of guest memory, 16K/3-level, 2 vCPUs, "
				   "manual dirty log",
				   "seed 3", "(full copy)", "(stop-and-copy)",
				   "verification: exact copy (0 of 1024 pages differ)",
				   "stale accesses seen by the host: 0\n",
				   "after destroy: 0 frames live, 0 pins, 0 VMs, 0 vCPUs, "
				   "0 table pools, 0 library threads"));
	expect_strings(r.err, ARGS("full copy      round   0:     1024 pages dirty",
				   "stop-and-copy"));
	result_free(&r);
}

static void test_migrate_bad_flags(void)
{
	static const char *const bad[][4] = {
		{ "--bogus" }, { "--mem", "0" }, { "--mem", "10Q" }, { "--mode", "fast" },
		{ "--vcpus", "0" }, { "--page-shift", "13" }, { "extra" }, { "--mem", "12K" },
		{ "--max-rounds", "0" }, { "--link-gbps", "-1" }, { "--levels", "5" },
		{ "--hot", "101" }, { "--hot-writes", "x" }, { "--rate", "-5" },
		{ "--max-downtime-ms", "0" }, { "--seed", "abc" }, { "--mem" },
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
	TEST(test_migrate_text);
	TEST(test_migrate_bad_flags);
	return tap_done();
}
