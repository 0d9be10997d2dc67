// SPDX-License-Identifier: MIT
/*
 * "gpamm replay" end to end: the built binary is run on a real lackey trace
 * (tests/data/lackey-true.trace: valgrind --tool=lackey --trace-mem=yes
 * /bin/true, valgrind 3.19 on x86-64, cut to its 5 header lines, 4000
 * access lines from the middle of the run and its trailer) and on small
 * traces written here, and its JSON report is checked against what this
 * test computes from the trace on its own: record counts; pages touched
 * = faults (= slow faults, = the one working-set sample) when nothing is
 * aged; pages written = the distinct pages stored to (S or M); the aging
 * series adds up. The binary form round-trips; page-crossing accesses
 * are split; malformed, empty and unreadable traces and bad flags fail
 * with a clear message and the right exit status.
 *
 * The binary is GPAMM_BIN, or BUILD/gpamm next to this test's BUILD/tests/.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/tap.h"

extern char **environ;

static char gpamm_bin[PATH_MAX + 64];
static char data_trace[PATH_MAX + 64];
static char tmpdir[] = "/tmp/gpamm-replay-test-XXXXXX";

/* ---- running the binary ---------------------------------------------------- */

struct out {
	int status; /* exit status, or 128 + signal */
	char *out, *err;
};

static struct out last; /* freed by the next run, so a failed ASSERT leaks nothing */

static char *slurp(const char *path, size_t *lenp)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		return NULL;
	do {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n);
	fclose(f);
	buf[len] = '\0';
	if (lenp)
		*lenp = len;
	return buf;
}

static void tmp_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* Run gpamm with @args (NULL-terminated, without argv[0]), stdin from @in (or /dev/null). */
static const struct out *run(const char *in, const char *const *args)
{
	char outp[PATH_MAX], errp[PATH_MAX];
	const char *argv[32];
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st, i, r;

	free(last.out);
	free(last.err);
	memset(&last, 0, sizeof(last));
	argv[0] = gpamm_bin;
	for (i = 0; args[i]; i++)
		argv[i + 1] = args[i];
	argv[i + 1] = NULL;
	tmp_path(outp, sizeof(outp), "stdout");
	tmp_path(errp, sizeof(errp), "stderr");
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, in ? in : "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	r = posix_spawn(&pid, gpamm_bin, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	ASSERT_EQ_INT(r, 0);
	while (waitpid(pid, &st, 0) < 0)
		ASSERT_EQ_INT(errno, EINTR);
	last.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	last.out = slurp(outp, NULL);
	last.err = slurp(errp, NULL);
	ASSERT(last.out && last.err);
	return &last;
}

#define RUN(in, ...) run(in, (const char *const[]){ __VA_ARGS__, NULL })

/* ---- reading the JSON report (flat keys; the series is parsed separately) ---- */

static uint64_t jget(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	p = strstr(json, pat);
	if (!p) {
		tap_diag("no key %s in:\n%s", key, json);
		tap_fail(__FILE__, __LINE__, "key in report", key);
	}
	return strtoull(p + strlen(pat), NULL, 10);
}

struct series {
	uint64_t n, young, slow, fast, last_end, max_young;
};

static struct series jseries(const char *json)
{
	struct series s = { 0 };
	const char *p = strstr(json, "\"working_set\": [");

	ASSERT(p);
	while ((p = strstr(p, "{\"interval\": "))) {
		uint64_t idx = strtoull(p + 13, NULL, 10), y;

		ASSERT_EQ(idx, s.n);
		s.last_end = jget(p, "accesses");
		y = jget(p, "young");
		s.young += y;
		s.max_young = y > s.max_young ? y : s.max_young;
		s.slow += jget(p, "slow_faults");
		s.fast += jget(p, "fast_faults");
		s.n++;
		p++;
	}
	return s;
}

/* ---- the trace, parsed here on its own ---------------------------------------- */

struct expect {
	uint64_t records, count[4]; /* I L S M */
	uint64_t accesses, loads, stores, translations;
	uint64_t touched, written;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t distinct(uint64_t *v, uint64_t n)
{
	uint64_t d = 0;

	qsort(v, n, sizeof(*v), cmp_u64);
	for (uint64_t i = 0; i < n; i++)
		d += !i || v[i] != v[i - 1];
	return d;
}

static struct expect parse_trace(const char *path, unsigned page_shift, bool ifetch)
{
	static uint64_t touched[1 << 16], written[1 << 16];
	uint64_t nt = 0, nw = 0;
	struct expect e = { 0 };
	char line[256];
	FILE *f = fopen(path, "r");

	ASSERT(f);
	while (fgets(line, sizeof(line), f)) {
		const char *p = line;
		unsigned long long addr, size;
		int type;
		char c;

		if (!strncmp(line, "==", 2) || !strncmp(line, "--", 2) || line[0] == '\n')
			continue;
		while (*p == ' ')
			p++;
		c = *p;
		type = c == 'I' ? 0 : c == 'L' ? 1 : c == 'S' ? 2 : c == 'M' ? 3 : -1;
		ASSERT(type >= 0);
		ASSERT_EQ(sscanf(p + 1, " %llx,%llu", &addr, &size), 2);
		e.records++;
		e.count[type]++;
		if (type == 0 && !ifetch)
			continue;
		e.accesses++;
		uint64_t first = addr >> page_shift, last_pg = (addr + size - 1) >> page_shift;
		uint64_t parts = last_pg - first + 1;

		e.loads += type != 2;
		e.stores += type >= 2;
		e.translations += parts * (type == 3 ? 2 : 1);
		for (uint64_t pg = first; pg <= last_pg; pg++) {
			ASSERT_LT(nt, sizeof(touched) / sizeof(touched[0]));
			touched[nt++] = pg;
			if (type >= 2)
				written[nw++] = pg;
		}
	}
	fclose(f);
	e.touched = distinct(touched, nt);
	e.written = distinct(written, nw);
	return e;
}

/* What the report must say about the trace, whatever the run's settings. */
static void check_counts(const char *json, const struct expect *e)
{
	ASSERT_EQ(jget(json, "records"), e->records);
	ASSERT_EQ(jget(json, "ifetches"), e->count[0]);
	ASSERT_EQ(jget(json, "loads"), e->count[1]);
	ASSERT_EQ(jget(json, "stores"), e->count[2]);
	ASSERT_EQ(jget(json, "modifies"), e->count[3]);
	ASSERT_EQ(jget(json, "accesses"), e->accesses);
	ASSERT_EQ(jget(json, "guest_loads"), e->loads);
	ASSERT_EQ(jget(json, "guest_stores"), e->stores);
	ASSERT_EQ(jget(json, "translations"), e->translations);
	ASSERT_EQ(jget(json, "pages_touched"), e->touched);
	ASSERT_EQ(jget(json, "pages_written"), e->written);
	ASSERT_EQ(jget(json, "tlb_hits") + jget(json, "tlb_misses"), e->translations);
	ASSERT_EQ(jget(json, "mmio_exits"), 0);
	ASSERT_EQ(jget(json, "fault_retries"), 0);
	ASSERT_GE(jget(json, "slot_pages"), e->touched);
	ASSERT_EQ(jget(json, "slot_pages") % 64, 0);
	ASSERT_EQ(jget(json, "faults"), jget(json, "slow_faults") + jget(json, "fast_faults"));
}

/* ---- tests ------------------------------------------------------------------ */

/* No aging inside the trace: every page faults once, on its first touch. */
static void test_lackey_counts(void)
{
	static const char *const shifts[] = { "12", "14", "16" };

	for (int i = 0; i < 3; i++) {
		const struct out *o = RUN(NULL, "replay", "--json", "--page-shift", shifts[i],
					  data_trace);
		struct expect e = parse_trace(data_trace, (unsigned)atoi(shifts[i]), false);
		struct series s;

		ASSERT_EQ_INT(o->status, 0);
		/* (an ASan build warns about swapcontext on stderr: only our own words count) */
		ASSERT(!strstr(o->err, "gpamm"));
		ASSERT_EQ(e.records, 4000);
		check_counts(o->out, &e);
		ASSERT_EQ(jget(o->out, "faults"), e.touched);
		ASSERT_EQ(jget(o->out, "slow_faults"), e.touched);
		s = jseries(o->out);
		ASSERT_EQ(s.n, 1);
		ASSERT_EQ(s.young, e.touched);
		ASSERT_EQ(s.last_end, e.accesses);
		tap_diag("page shift %s: %llu records, %llu accesses, %llu pages touched, %llu written",
			 shifts[i], (unsigned long long)e.records, (unsigned long long)e.accesses,
			 (unsigned long long)e.touched, (unsigned long long)e.written);
	}
}

/* Aging every 250 accesses, fetches replayed: the series adds up. */
static void test_aging_series(void)
{
	const struct out *o = RUN(NULL, "replay", "--json", "--ifetch", "--age-interval", "250",
				  "--levels", "2", data_trace);
	struct expect e = parse_trace(data_trace, 14, true);
	struct series s;

	ASSERT_EQ_INT(o->status, 0);
	check_counts(o->out, &e);
	ASSERT_EQ(e.accesses, 4000);
	ASSERT_EQ(jget(o->out, "slow_faults"), e.touched);
	s = jseries(o->out);
	ASSERT_EQ(s.n, (e.accesses + 249) / 250);
	ASSERT_EQ(s.last_end, e.accesses);
	ASSERT_EQ(s.slow, e.touched);
	ASSERT_EQ(s.fast, jget(o->out, "fast_faults"));
	/* one vCPU: a page young in an interval faulted exactly once in it */
	ASSERT_EQ(s.young, jget(o->out, "faults"));
	ASSERT_GE(jget(o->out, "fast_faults"), 1);
	ASSERT_LE(s.max_young, e.touched);
}

/* Several vCPUs: the same pages, whatever the interleaving. */
static void test_vcpus(void)
{
	const struct out *o = RUN(NULL, "replay", "--json", "--vcpus", "3", "--chunk", "64",
				  "--age-interval", "300", "--page-shift", "12", data_trace);
	struct expect e = parse_trace(data_trace, 12, false);
	struct series s;

	ASSERT_EQ_INT(o->status, 0);
	check_counts(o->out, &e);
	ASSERT_EQ(jget(o->out, "vcpus"), 3);
	/* two vCPUs may take the first fault on a page at once */
	ASSERT_GE(jget(o->out, "slow_faults"), e.touched);
	s = jseries(o->out);
	ASSERT_EQ(s.n, (e.accesses + 299) / 300);
	ASSERT_EQ(s.slow, jget(o->out, "slow_faults"));
}

/* The keys that must not depend on the input's format. */
static const char *const count_keys[] = {
	"records", "ifetches", "loads", "stores", "modifies", "accesses", "guest_loads",
	"guest_stores", "translations", "pages_touched", "pages_written", "slot_pages",
	"faults", "slow_faults", "fast_faults", "tlb_misses", "tlb_hits", "table_pages",
};

static void same_counts(const char *a, const char *b)
{
	struct series sa = jseries(a), sb = jseries(b);

	for (size_t i = 0; i < sizeof(count_keys) / sizeof(count_keys[0]); i++)
		ASSERT_EQ(jget(a, count_keys[i]), jget(b, count_keys[i]));
	ASSERT_EQ(sa.n, sb.n);
	ASSERT_EQ(sa.young, sb.young);
	ASSERT_EQ(sa.slow, sb.slow);
	ASSERT_EQ(sa.fast, sb.fast);
}

static void test_binary_roundtrip(void)
{
	char bin[PATH_MAX], bin2[PATH_MAX], *text_json, *a;
	struct stat st_text, st_bin;
	size_t blen, b2len;
	const struct out *o;
	char *b1, *b2;

	tmp_path(bin, sizeof(bin), "trace.bin");
	tmp_path(bin2, sizeof(bin2), "trace2.bin");
	o = RUN(NULL, "replay", "--write-binary", bin, "--no-replay", data_trace);
	ASSERT_EQ_INT(o->status, 0);
	ASSERT(strstr(o->out, "wrote 4000 records"));
	ASSERT_EQ(stat(data_trace, &st_text), 0);
	ASSERT_EQ(stat(bin, &st_bin), 0);
	tap_diag("lackey %lld bytes, binary %lld bytes", (long long)st_text.st_size,
		 (long long)st_bin.st_size);
	ASSERT_LT(st_bin.st_size * 3, st_text.st_size);

	/* replaying text (writing the binary again on the way) and binary: same report */
	o = RUN(NULL, "replay", "--json", "--page-shift", "12", "--age-interval", "200",
		"--write-binary", bin2, data_trace);
	ASSERT_EQ_INT(o->status, 0);
	ASSERT(strstr(o->out, "\"format\": \"lackey\""));
	text_json = strdup(o->out);
	ASSERT(text_json);
	o = RUN(NULL, "replay", "--json", "--page-shift", "12", "--age-interval", "200", bin);
	a = strdup(o->out);
	if (!a || o->status || !strstr(a, "\"format\": \"binary\"")) {
		free(a);
		free(text_json);
		ASSERT(!"binary replay failed");
	}
	same_counts(text_json, a);
	free(a);
	free(text_json);

	/* both writes are byte for byte the same; stdin and stdout work too */
	b1 = slurp(bin, &blen);
	b2 = slurp(bin2, &b2len);
	ASSERT(b1 && b2);
	bool same = blen == b2len && !memcmp(b1, b2, blen);
	free(b1);
	free(b2);
	ASSERT(same);
	o = RUN(bin, "replay", "--write-binary", "-", "--no-replay", "-");
	ASSERT_EQ_INT(o->status, 0);
	ASSERT(strstr(o->err, "wrote 4000 records to <stdout>"));
	ASSERT(!memcmp(o->out, "\x89GPAMMTR\x01", 9));
}

/* Accesses that cross pages: split, each part on its own page's frame. */
static void test_page_crossing(void)
{
	static const char trace[] =
		"==42== Command: handmade\n"
		" S 7ffc0ffc,8\n"        /* crosses 0x7ffc0 -> 0x7ffc1 */
		"I  401ffe,6\n"          /* crosses, fetch: not replayed */
		" L 10000ff0,32\n"       /* crosses */
		" M 0x20000ffa,16\n"     /* crosses, load + store */
		" L 30000001,4096\n"     /* a whole page's worth, crossing */
		" S 7ffc1000,1\n"        /* the second page of the first access again */
		"   L   50000000,8\r\n"  /* blanks and CRLF tolerated */
		"\n"
		"--42-- a valgrind warning\n"
		" S fffffffffffffff0,16\n"; /* the very top of the address space */
	char path[PATH_MAX];
	FILE *f;

	tmp_path(path, sizeof(path), "cross.trace");
	f = fopen(path, "w");
	ASSERT(f);
	fputs(trace, f);
	fclose(f);

	for (int ifetch = 0; ifetch < 2; ifetch++) {
		const struct out *o = ifetch ? RUN(NULL, "replay", "--json", "--page-shift", "12",
						   "--ifetch", path)
					     : RUN(NULL, "replay", "--json", "--page-shift", "12", path);
		struct expect e = parse_trace(path, 12, ifetch);

		ASSERT_EQ_INT(o->status, 0);
		ASSERT_EQ(e.records, 8);
		ASSERT_EQ(e.touched, 10 + 2 * ifetch);
		ASSERT_EQ(e.written, 5);
		check_counts(o->out, &e);
		ASSERT_EQ(jget(o->out, "faults"), e.touched);
	}
}

static void expect_fail(const struct out *o, int status, const char *msg1, const char *msg2)
{
	if (o->status != status || !strstr(o->err, msg1) || (msg2 && !strstr(o->err, msg2)))
		tap_diag("exit %d, stderr: %s", o->status, o->err);
	ASSERT_EQ_INT(o->status, status);
	ASSERT(strstr(o->err, "gpamm replay"));
	ASSERT(strstr(o->err, msg1));
	ASSERT(!msg2 || strstr(o->err, msg2));
	ASSERT_EQ(o->out[0], '\0'); /* nothing half-reported */
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	ASSERT(f);
	ASSERT_EQ(fwrite(data, 1, len, f), len);
	ASSERT_EQ(fclose(f), 0);
}

static void test_bad_traces(void)
{
	char path[PATH_MAX], out[PATH_MAX], bin[PATH_MAX];
	static const char malformed[] = "==1== x\nI  0401ab70,3\n L 1fff000708,8\n X 12,4\n";
	static const char zero[] = " L 1000,0\n";
	static const char noise[] = "==7== Lackey, an example Valgrind tool\n==7== \n\n";
	static const char fetches[] = "I  0401ab70,3\nI  0401ab73,5\n";
	const struct out *o;
	char *b;
	size_t blen;

	tmp_path(path, sizeof(path), "bad.trace");
	tmp_path(out, sizeof(out), "bad.bin");
	write_file(path, malformed, sizeof(malformed) - 1);
	o = RUN(NULL, "replay", path);
	expect_fail(o, 1, ":4: malformed line \" X 12,4\"", "expected");
	/* a binary being written is removed when the trace turns out bad */
	o = RUN(NULL, "replay", "--write-binary", out, path);
	expect_fail(o, 1, ":4: malformed", NULL);
	ASSERT(access(out, F_OK) != 0);
	o = RUN(path, "replay", "-");
	expect_fail(o, 1, "<stdin>:4: malformed", NULL);

	write_file(path, zero, sizeof(zero) - 1);
	expect_fail(RUN(NULL, "replay", path), 1, ":1: malformed line \" L 1000,0\"", "size");

	write_file(path, noise, sizeof(noise) - 1);
	expect_fail(RUN(NULL, "replay", path), 1, "empty trace", NULL);
	write_file(path, "", 0);
	expect_fail(RUN(NULL, "replay", path), 1, "empty trace", NULL);
	expect_fail(RUN(NULL, "replay", "-"), 1, "<stdin>: empty trace", NULL);

	write_file(path, fetches, sizeof(fetches) - 1);
	expect_fail(RUN(NULL, "replay", path), 1, "nothing to replay", "--ifetch");
	o = RUN(NULL, "replay", "--json", "--ifetch", path);
	ASSERT_EQ_INT(o->status, 0);
	ASSERT_EQ(jget(o->out, "faults"), 1);

	expect_fail(RUN(NULL, "replay", "/nonexistent/trace"), 1, "cannot open /nonexistent/trace",
		    "No such file");
	expect_fail(RUN(NULL, "replay", tmpdir), 1, "cannot read", "Is a directory");
	if (geteuid() != 0) { /* root reads anything */
		ASSERT_EQ(chmod(path, 0), 0);
		expect_fail(RUN(NULL, "replay", path), 1, "cannot open", "Permission denied");
	}

	/* a binary trace cut short, with a bad tail, of another version */
	tmp_path(bin, sizeof(bin), "good.bin");
	o = RUN(NULL, "replay", "--write-binary", bin, "--no-replay", data_trace);
	ASSERT_EQ_INT(o->status, 0);
	b = slurp(bin, &blen);
	ASSERT(b && blen > 100);
	write_file(path, b, 100);
	write_file(out, b, blen - 1);
	expect_fail(RUN(NULL, "replay", path), 1, "truncated", NULL);
	expect_fail(RUN(NULL, "replay", out), 1, "truncated", NULL);
	b = realloc(b, blen + 1);
	ASSERT(b);
	b[blen] = 0;
	write_file(path, b, blen + 1);    /* a byte after the end record */
	expect_fail(RUN(NULL, "replay", path), 1, "data after the end record", NULL);
	b[blen - 2] ^= 1;                 /* the end record's count, 4000 -> 4001 */
	write_file(path, b, blen);
	expect_fail(RUN(NULL, "replay", path), 1, "says 4001 records, 4000 were read", NULL);
	b[8] = 9;
	write_file(out, b, blen);
	free(b);
	expect_fail(RUN(NULL, "replay", out), 1, "version 9", NULL);
}

static void test_usage(void)
{
	const struct out *o;

	o = RUN(NULL, "replay", "--help");
	ASSERT_EQ_INT(o->status, 0);
	ASSERT(strstr(o->out, "first-touch"));
	ASSERT(strstr(o->out, "GPAMMTR"));
	ASSERT(strstr(o->out, "--age-interval"));
	expect_fail(RUN(NULL, "replay"), 2, "no TRACE", NULL);
	expect_fail(RUN(NULL, "replay", "--page-shift", "13", data_trace), 2, "--page-shift", NULL);
	expect_fail(RUN(NULL, "replay", "--page-shift", "14", "--levels", "4", data_trace), 2,
		    "layout", NULL);
	expect_fail(RUN(NULL, "replay", "--vcpus", "0", data_trace), 2, "--vcpus", NULL);
	expect_fail(RUN(NULL, "replay", "--chunk", "x", data_trace), 2, "--chunk", NULL);
	expect_fail(RUN(NULL, "replay", "--age-interval", "-1", data_trace), 2, "--age-interval",
		    NULL);
	expect_fail(RUN(NULL, "replay", "--bogus", data_trace), 2, "unknown option", NULL);
	expect_fail(RUN(NULL, "replay", data_trace, data_trace), 2, "one TRACE", NULL);
	expect_fail(RUN(NULL, "replay", "--no-replay", data_trace), 2, "--write-binary", NULL);
	expect_fail(RUN(NULL, "replay", "--write-binary", "-", data_trace), 2, "--no-replay", NULL);
	expect_fail(RUN(NULL, "replay", "--write-binary", data_trace, "--no-replay", data_trace), 2,
		    "overwrite", NULL);
	o = RUN(NULL, "replay", "--page-shift", "12", data_trace);
	ASSERT_EQ_INT(o->status, 0);
	ASSERT(strstr(o->out, "working set"));
	ASSERT(strstr(o->out, "hit rate"));
}

/* ---- setup -------------------------------------------------------------------- */

static bool find_paths(void)
{
	char exe[PATH_MAX], build[PATH_MAX];
	const char *env = getenv("GPAMM_BIN");
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *s;

	build[0] = '\0';
	if (n > 0) {
		exe[n] = '\0';
		/* BUILD/tests/unit/test_replay_cli -> BUILD */
		for (int up = 0; up < 3 && (s = strrchr(exe, '/')); up++)
			*s = '\0';
		snprintf(build, sizeof(build), "%s", exe);
	}
	if (env && *env)
		snprintf(gpamm_bin, sizeof(gpamm_bin), "%s", env);
	else
		snprintf(gpamm_bin, sizeof(gpamm_bin), "%s/gpamm", build);
	/* the source tree is BUILD's parent, or the current directory */
	if ((s = strrchr(build, '/')))
		*s = '\0';
	snprintf(data_trace, sizeof(data_trace), "%s/tests/data/lackey-true.trace", build);
	if (access(data_trace, R_OK))
		snprintf(data_trace, sizeof(data_trace), "tests/data/lackey-true.trace");
	if (access(gpamm_bin, X_OK)) {
		printf("# %s not found or not executable: build it (make %s) or set GPAMM_BIN\n",
		       gpamm_bin, gpamm_bin);
		return false;
	}
	if (access(data_trace, R_OK)) {
		printf("# tests/data/lackey-true.trace not found (run from the source tree)\n");
		return false;
	}
	return true;
}

static void rm_tmpdir(void)
{
	static const char *const names[] = {
		"stdout", "stderr", "trace.bin", "trace2.bin", "cross.trace", "bad.trace",
		"bad.bin", "good.bin",
	};
	char p[PATH_MAX];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		tmp_path(p, sizeof(p), names[i]);
		unlink(p);
	}
	rmdir(tmpdir);
}

int main(int argc, char **argv)
{
	int ret;

	tap_init(argc, argv);
	if (!find_paths()) {
		printf("not ok 1 - setup\n");
		return 1;
	}
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	printf("# gpamm: %s\n# trace: %s\n", gpamm_bin, data_trace);
	TEST(test_lackey_counts);
	TEST(test_aging_series);
	TEST(test_vcpus);
	TEST(test_binary_roundtrip);
	TEST(test_page_crossing);
	TEST(test_bad_traces);
	TEST(test_usage);
	ret = tap_done();
	free(last.out);
	free(last.err);
	rm_tmpdir();
	return ret;
}
