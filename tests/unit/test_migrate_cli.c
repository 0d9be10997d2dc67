// SPDX-License-Identifier: MIT
/*
 * The main job from the outside: `gpamm migrate` on small sizes in every
 * dirty-log mode, its JSON checked (exact copy, no stale access, counts that
 * add up, nothing left after destroy), and its refusal of bad flags.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/tap.h"

static char bin[4096];

static void find_bin(const char *argv0)
{
	const char *env = getenv("GPAMM_BIN");
	char *slash;

	if (env) {
		snprintf(bin, sizeof(bin), "%s", env);
		return;
	}
	/* build/tests/unit/test_migrate_cli -> build/gpamm */
	snprintf(bin, sizeof(bin), "%s", argv0);
	slash = strrchr(bin, '/');
	if (slash)
		*slash = 0;
	strncat(bin, "/../../gpamm", sizeof(bin) - strlen(bin) - 1);
}

/* Run gpamm with @args; stdout into @out; returns the exit status. */
static int run_gpamm(const char *args, char *out, size_t len)
{
	char cmd[8192];
	FILE *p;
	size_t n = 0;
	int st;

	snprintf(cmd, sizeof(cmd), "%s %s 2>/dev/null", bin, args);
	p = popen(cmd, "r");
	ASSERT(p);
	while (n + 1 < len && !feof(p))
		n += fread(out + n, 1, len - 1 - n, p);
	out[n] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The number after "key": in a flat JSON text (first occurrence). */
static long long json_num(const char *js, const char *key)
{
	char pat[128];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	ASSERT(p);
	return strtoll(p + strlen(pat), NULL, 10);
}

static void check_mode(const char *mode)
{
	static char out[1 << 16];
	char args[256];
	uint64_t seed = tap_seed();

	snprintf(args, sizeof(args), "migrate --mem 32M --page-shift 12 --mode %s --json --seed %llu",
		 mode, (unsigned long long)seed);
	ASSERT_EQ_INT(run_gpamm(args, out, sizeof(out)), 0);
	ASSERT(strstr(out, "\"verdict\":\"exact\""));
	ASSERT_EQ(json_num(out, "mismatched_pages"), 0);
	ASSERT_EQ(json_num(out, "stale_accesses"), 0);
	ASSERT_EQ(json_num(out, "frames_live"), 0);
	ASSERT_EQ(json_num(out, "pinned"), 0);
	ASSERT_EQ(json_num(out, "vms"), 0);
	ASSERT_EQ(json_num(out, "table_pools"), 0);
	/* round 0 copies everything; the total is the sum of the rounds */
	long long total = 0;
	const char *p = strstr(out, "\"rounds\":[");
	ASSERT(p);
	long long first = -1;
	while ((p = strstr(p, "{\"pages\":")) && p < strstr(out, "]")) {
		long long v = strtoll(p + 9, NULL, 10);
		if (first < 0)
			first = v;
		total += v;
		p += 9;
	}
	ASSERT_EQ(first, 32ULL << 20 >> 12);
	ASSERT_EQ(json_num(out, "pages_copied"), total);
	ASSERT_EQ(json_num(out, "bytes_copied"), total << 12);
}

static void test_migrate_manual(void) { check_mode("manual"); }
static void test_migrate_classic(void) { check_mode("classic"); }
static void test_migrate_ring(void) { check_mode("ring"); }

static void test_migrate_bad_flags(void)
{
	static char out[4096];
	static const char *bad[] = {
		"migrate --bogus", "migrate --mem 0", "migrate --mem 10Q", "migrate --mode fast",
		"migrate --vcpus 0", "migrate --page-shift 13", "migrate extra",
		"migrate --mem 12K", "migrate --max-rounds 0", "migrate --link-gbps -1",
	};

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = run_gpamm(bad[i], out, sizeof(out));
		if (rc != 2)
			tap_diag("'%s' exited %d", bad[i], rc);
		ASSERT_EQ_INT(rc, 2);
	}
	ASSERT_EQ_INT(run_gpamm("migrate --help", out, sizeof(out)), 0);
	ASSERT(strstr(out, "usage: gpamm migrate"));
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	find_bin(argv[0]);
	if (access(bin, X_OK))
		tap_diag("no gpamm binary at %s", bin);
	TEST(test_migrate_manual);
	TEST(test_migrate_classic);
	TEST(test_migrate_ring);
	TEST(test_migrate_bad_flags);
	return tap_done();
}
