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
 * series adds up, interval by interval; the settings come back as given.
 * The binary form round-trips (same report, sample by sample); page-
 * crossing accesses are split; the text report says what the JSON says;
 * malformed, empty and unreadable traces and bad flags fail with a clear
 * message and the right exit status.
 *
 * Runs go through the shared harness (harness/clitest.h): the binary is
 * $GPAMM_BIN, or BUILD/gpamm next to this test's BUILD/tests/.
 */
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness/clitest.h"
#include "harness/tap.h"

static char data_trace[PATH_MAX + 64];
static char tmpdir[] = "/tmp/gpamm-replay-test-XXXXXX";

/* ---- running the binary ---------------------------------------------------- */

/* The last run and its report: freed by the next run, so a failed ASSERT leaks nothing. */
static struct result last;
static struct jv *last_json;

static void tmp_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* A report kept across the next run (until the one after that, or the end). */
static struct jv *held;

static struct jv *hold(void)
{
	jv_free(held);
	held = last_json;
	last_json = NULL;
	return held;
}

static void forget_last(void)
{
	jv_free(last_json);
	last_json = NULL;
	result_free(&last);
	memset(&last, 0, sizeof(last));
}

/*
 * Run gpamm with @args (NULL-terminated, without argv[0]), its stdin from
 * @in. run_gpamm() hands the child our own stdin, which main() pointed at
 * /dev/null; for a file it is pointed there for the one run.
 */
static const struct result *run(const char *in, const char *const *args)
{
	int saved = -1, fd;

	forget_last();
	if (in) {
		fd = open(in, O_RDONLY);
		ASSERT(fd >= 0);
		saved = dup(0);
		ASSERT(saved >= 0);
		ASSERT_EQ_INT(dup2(fd, 0), 0);
		close(fd);
	}
	last = run_gpamm(NULL, args);
	if (in) {
		dup2(saved, 0);
		close(saved);
	}
	return &last;
}

#define RUN(in, ...) run(in, (const char *const[]){ __VA_ARGS__, NULL })

/* The last run succeeded and printed one JSON report: return it. */
static struct jv *report(void)
{
	jv_free(last_json);
	last_json = NULL; /* json_ok() may end the test */
	last_json = json_ok(&last);
	return last_json;
}

static uint64_t ju(struct jv *j, const char *key)
{
	double v = jnum(j, key);

	ASSERT(v >= 0 && v == floor(v));
	return (uint64_t)v;
}

struct series {
	uint64_t n, young, slow, fast, last_end, max_young;
};

/*
 * The working-set series: intervals numbered 0, 1, ..., each ending at
 * the next multiple of @interval accesses (the last one at the end of the
 * trace, and the only one with @interval 0); with one vCPU a page is
 * young in an interval exactly when it faulted in it, once.
 */
static struct series jseries(struct jv *j, uint64_t interval, uint64_t accesses, bool one_vcpu)
{
	struct jv *ws = jget(j, "working_set");
	struct series s = { 0 };

	ASSERT(ws && ws->t == J_ARR);
	for (unsigned i = 0; i < ws->n; i++) {
		struct jv *x = ws->items[i];
		uint64_t y = ju(x, "young"), end = ju(x, "accesses");
		uint64_t want = interval && (i + 1) * interval < accesses ? (i + 1) * interval
									  : accesses;

		ASSERT_EQ(ju(x, "interval"), i);
		if (accesses)
			ASSERT_EQ(end, want);
		ASSERT_LE(y, ju(j, "pages_touched"));
		if (one_vcpu)
			ASSERT_EQ(y, ju(x, "slow_faults") + ju(x, "fast_faults"));
		s.last_end = end;
		s.young += y;
		s.max_young = y > s.max_young ? y : s.max_young;
		s.slow += ju(x, "slow_faults");
		s.fast += ju(x, "fast_faults");
		s.n++;
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
static void check_counts(struct jv *j, const struct expect *e)
{
	uint64_t translations = ju(j, "translations"), hits = ju(j, "tlb_hits");

	ASSERT_EQ(ju(j, "records"), e->records);
	ASSERT_EQ(ju(j, "ifetches"), e->count[0]);
	ASSERT_EQ(ju(j, "loads"), e->count[1]);
	ASSERT_EQ(ju(j, "stores"), e->count[2]);
	ASSERT_EQ(ju(j, "modifies"), e->count[3]);
	ASSERT_EQ(ju(j, "accesses"), e->accesses);
	ASSERT_EQ(ju(j, "guest_loads"), e->loads);
	ASSERT_EQ(ju(j, "guest_stores"), e->stores);
	ASSERT_EQ(translations, e->translations);
	ASSERT_EQ(ju(j, "pages_touched"), e->touched);
	ASSERT_EQ(ju(j, "pages_written"), e->written);
	ASSERT_EQ(hits + ju(j, "tlb_misses"), e->translations);
	/* the rate is hits / translations, printed to six places */
	ASSERT(fabs(jnum(j, "tlb_hit_rate") - (double)hits / (double)translations) < 1e-6);
	/* a first touch cannot hit */
	ASSERT_GE(ju(j, "tlb_misses"), ju(j, "pages_touched"));
	ASSERT_EQ(ju(j, "mmio_exits"), 0);
	ASSERT_EQ(ju(j, "fault_retries"), 0);
	ASSERT_GE(ju(j, "slot_pages"), e->touched);
	ASSERT_EQ(ju(j, "slot_pages") % 64, 0);
	ASSERT_LT(ju(j, "slot_pages"), e->touched + 64);
	ASSERT_EQ(ju(j, "faults"), ju(j, "slow_faults") + ju(j, "fast_faults"));
	/* at least one table per level maps the slot */
	ASSERT_GE(ju(j, "table_pages"), ju(j, "levels"));
	ASSERT(jnum(j, "seconds") >= 0);
}

/* The run's settings come back as given. */
static void check_config(struct jv *j, const char *format, unsigned page_shift, unsigned levels,
			 unsigned vcpus, bool ifetch, uint64_t age_interval)
{
	ASSERT(!strcmp(jstr(j, "format"), format));
	ASSERT_EQ(ju(j, "page_shift"), page_shift);
	ASSERT_EQ(ju(j, "levels"), levels);
	ASSERT_EQ(ju(j, "vcpus"), vcpus);
	ASSERT_EQ(jbool(j, "ifetch"), ifetch);
	ASSERT_EQ(ju(j, "age_interval"), age_interval);
}

/* ---- tests ------------------------------------------------------------------ */

/* No aging inside the trace: every page faults once, on its first touch. */
static void test_lackey_counts(void)
{
	static const char *const shifts[] = { "12", "14", "16" };

	for (int i = 0; i < 3; i++) {
		const struct result *o = RUN(NULL, "replay", "--json", "--page-shift", shifts[i],
					     data_trace);
		struct expect e = parse_trace(data_trace, (unsigned)atoi(shifts[i]), false);
		struct jv *j = report();
		struct series s;

		/* (an ASan build warns about swapcontext on stderr: only our own words count) */
		ASSERT(!strstr(o->err, "gpamm"));
		ASSERT_EQ(e.records, 4000);
		ASSERT(!strcmp(jstr(j, "trace"), data_trace));
		check_config(j, "lackey", (unsigned)atoi(shifts[i]), 3, 1, false, 100000);
		ASSERT_EQ(ju(j, "chunk"), 1024);
		check_counts(j, &e);
		ASSERT_EQ(ju(j, "faults"), e.touched);
		ASSERT_EQ(ju(j, "slow_faults"), e.touched);
		ASSERT_EQ(ju(j, "fast_faults"), 0);
		s = jseries(j, 100000, e.accesses, true);
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
	struct expect e = parse_trace(data_trace, 14, true);
	struct series s;
	struct jv *j;

	RUN(NULL, "replay", "--json", "--ifetch", "--age-interval", "250", "--levels", "2",
	    data_trace);
	j = report();
	check_config(j, "lackey", 14, 2, 1, true, 250);
	check_counts(j, &e);
	ASSERT_EQ(e.accesses, 4000);
	ASSERT_EQ(ju(j, "slow_faults"), e.touched);
	s = jseries(j, 250, e.accesses, true);
	ASSERT_EQ(s.n, (e.accesses + 249) / 250);
	ASSERT_EQ(s.last_end, e.accesses);
	ASSERT_EQ(s.slow, e.touched);
	ASSERT_EQ(s.fast, ju(j, "fast_faults"));
	/* one vCPU: a page young in an interval faulted exactly once in it */
	ASSERT_EQ(s.young, ju(j, "faults"));
	ASSERT_GE(ju(j, "fast_faults"), 1);
	ASSERT_LE(s.max_young, e.touched);
	/* the first interval sees only first touches */
	ASSERT_EQ(ju(j, "working_set.0.fast_faults"), 0);
}

/* Several vCPUs: the same pages, whatever the interleaving. */
static void test_vcpus(void)
{
	struct expect e = parse_trace(data_trace, 12, false);
	struct series s;
	struct jv *j;

	RUN(NULL, "replay", "--json", "--vcpus", "3", "--chunk", "64", "--age-interval", "300",
	    "--page-shift", "12", data_trace);
	j = report();
	check_config(j, "lackey", 12, 3, 3, false, 300);
	ASSERT_EQ(ju(j, "chunk"), 64);
	check_counts(j, &e);
	/* two vCPUs may take the first fault on a page at once */
	ASSERT_GE(ju(j, "slow_faults"), e.touched);
	s = jseries(j, 300, e.accesses, false);
	ASSERT_EQ(s.n, (e.accesses + 299) / 300);
	ASSERT_EQ(s.slow, ju(j, "slow_faults"));
	ASSERT_EQ(s.fast, ju(j, "fast_faults"));
}

/* The keys that must not depend on the input's format. */
static const char *const count_keys[] = {
	"records", "ifetches", "loads", "stores", "modifies", "accesses", "guest_loads",
	"guest_stores", "translations", "pages_touched", "pages_written", "slot_pages",
	"faults", "slow_faults", "fast_faults", "tlb_misses", "tlb_hits", "table_pages",
};

static void same_counts(struct jv *a, struct jv *b)
{
	struct jv *wa = jget(a, "working_set"), *wb = jget(b, "working_set");
	static const char *const sample_keys[] = {
		"accesses", "young", "slow_faults", "fast_faults",
	};

	for (size_t i = 0; i < sizeof(count_keys) / sizeof(count_keys[0]); i++)
		ASSERT_EQ(ju(a, count_keys[i]), ju(b, count_keys[i]));
	/* one vCPU: the same series, sample by sample */
	ASSERT(wa && wb);
	ASSERT_EQ(wa->n, wb->n);
	for (unsigned i = 0; i < wa->n; i++)
		for (size_t k = 0; k < sizeof(sample_keys) / sizeof(sample_keys[0]); k++)
			ASSERT_EQ(ju(wa->items[i], sample_keys[k]), ju(wb->items[i], sample_keys[k]));
}

static void test_binary_roundtrip(void)
{
	char bin[PATH_MAX], bin2[PATH_MAX];
	struct stat st_text, st_bin;
	struct jv *text_json, *j;
	size_t blen, b2len;
	const struct result *o;
	char *b1, *b2;
	bool same;

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
	/* with --json the "wrote" line goes to stderr: stdout is the report alone */
	ASSERT(strstr(o->err, "wrote 4000 records"));
	j = report();
	check_config(j, "lackey", 12, 3, 1, false, 200);
	text_json = hold();
	RUN(NULL, "replay", "--json", "--page-shift", "12", "--age-interval", "200", bin);
	j = report();
	check_config(j, "binary", 12, 3, 1, false, 200);
	ASSERT(!strcmp(jstr(j, "trace"), bin));
	same_counts(text_json, j);

	/* both writes are byte for byte the same; stdin and stdout work too */
	b1 = read_file(bin, &blen);
	b2 = read_file(bin2, &b2len);
	ASSERT(b1 && b2);
	same = blen == b2len && !memcmp(b1, b2, blen);
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
		struct expect e = parse_trace(path, 12, ifetch);
		struct jv *j;

		if (ifetch)
			RUN(NULL, "replay", "--json", "--page-shift", "12", "--ifetch", path);
		else
			RUN(NULL, "replay", "--json", "--page-shift", "12", path);
		j = report();
		ASSERT_EQ(e.records, 8);
		ASSERT_EQ(e.touched, 10 + 2 * ifetch);
		ASSERT_EQ(e.written, 5);
		check_config(j, "lackey", 12, 3, 1, ifetch, 100000);
		check_counts(j, &e);
		ASSERT_EQ(ju(j, "faults"), e.touched);
		/* a crossing access is two translations, a crossing modify four: S 2, L 2,
		 * M 4, L 2, S 1, L 1, S 1 (the top one ends at 2^64 - 1), and I 2 */
		ASSERT_EQ(ju(j, "translations"), 13 + 2 * ifetch);
	}
}

/* The run failed with @status, saying @msg1 and @msg2 (if not NULL), and reported nothing. */
static void expect_fail(const struct result *o, int status, const char *msg1, const char *msg2)
{
	const char *msgs[5] = { "gpamm replay", msg1 };
	unsigned n = 2;

	if (msg2)
		msgs[n++] = msg2;
	if (status == 2)
		msgs[n++] = "Try 'gpamm replay --help'.";
	msgs[n] = NULL;
	expect_error(o, status, msgs);
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
	const struct result *o;
	struct jv *j;
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
	RUN(NULL, "replay", "--json", "--ifetch", path);
	j = report();
	ASSERT_EQ(ju(j, "faults"), 1);
	ASSERT_EQ(ju(j, "records"), 2);
	ASSERT_EQ(ju(j, "ifetches"), 2);
	ASSERT_EQ(ju(j, "accesses"), 2);
	ASSERT_EQ(ju(j, "guest_loads"), 2);
	ASSERT_EQ(ju(j, "guest_stores"), 0);
	ASSERT_EQ(ju(j, "pages_written"), 0);

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
	b = read_file(bin, &blen);
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

/* The text report says what the JSON says. */
static void test_text_report(void)
{
	struct expect e = parse_trace(data_trace, 12, false);
	char want[PATH_MAX + 200];
	const struct result *o;

	o = RUN(NULL, "replay", "--page-shift", "12", data_trace);
	ASSERT_EQ_INT(o->status, 0);
	ASSERT(strstr(o->out, "working set"));
	ASSERT(strstr(o->out, "hit rate"));
	snprintf(want, sizeof(want), "gpamm replay: %s (lackey), 4K/3-level, 1 vCPU\n", data_trace);
	ASSERT(strstr(o->out, want));
	snprintf(want, sizeof(want), "records       %llu: %llu ifetch, %llu load, %llu store, "
		 "%llu modify\n", (unsigned long long)e.records, (unsigned long long)e.count[0],
		 (unsigned long long)e.count[1], (unsigned long long)e.count[2],
		 (unsigned long long)e.count[3]);
	ASSERT(strstr(o->out, want));
	snprintf(want, sizeof(want), "pages         %llu touched, %llu written (4 KiB pages",
		 (unsigned long long)e.touched, (unsigned long long)e.written);
	ASSERT(strstr(o->out, want));
	snprintf(want, sizeof(want), "faults        %llu: %llu slow (first touches), 0 fast",
		 (unsigned long long)e.touched, (unsigned long long)e.touched);
	ASSERT(strstr(o->out, want));
	snprintf(want, sizeof(want), "peak %llu pages of %llu touched\n",
		 (unsigned long long)e.touched, (unsigned long long)e.touched);
	ASSERT(strstr(o->out, want));
	ASSERT(strstr(o->out, "(--age-interval 0)") == NULL);
	o = RUN(NULL, "replay", "--age-interval", "0", data_trace);
	ASSERT_EQ_INT(o->status, 0);
	ASSERT(strstr(o->out, "the whole trace (--age-interval 0)"));
}

static void test_usage(void)
{
	expect_stdout(NULL, ARGS("replay", "--help"), ARGS("first-touch", "GPAMMTR", "--age-interval"));
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
	expect_fail(RUN(NULL, "replay", "--write-binary", "", data_trace), 2, "needs a file name",
		    NULL);
	expect_fail(RUN(NULL, "replay", ""), 2, "empty TRACE name", NULL);
}

/* ---- setup -------------------------------------------------------------------- */

/* tests/data/lackey-true.trace: in the source tree above BUILD, or under the current directory. */
static bool find_trace(void)
{
	static const char rel[] = "tests/data/lackey-true.trace";
	char src[PATH_MAX];

	if (!clitest_srcdir(src, sizeof(src), rel))
		return false;
	snprintf(data_trace, sizeof(data_trace), "%s/%s", src, rel);
	return true;
}

static void rm_tmpdir(void)
{
	static const char *const names[] = {
		"trace.bin", "trace2.bin", "cross.trace", "bad.trace", "bad.bin", "good.bin",
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
	int ret, fd;

	if (!clitest_init(argc, argv))
		return 1;
	if (!find_trace())
		return clitest_setup_failed("lackey trace present");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	/* a child reading "-" without a file given must see an empty stdin, not ours */
	fd = open("/dev/null", O_RDONLY);
	if (fd < 0 || dup2(fd, 0) < 0) {
		perror("/dev/null");
		return 1;
	}
	close(fd);
	printf("# trace: %s\n", data_trace);
	TEST(test_lackey_counts);
	TEST(test_aging_series);
	TEST(test_vcpus);
	TEST(test_binary_roundtrip);
	TEST(test_page_crossing);
	TEST(test_bad_traces);
	TEST(test_text_report);
	TEST(test_usage);
	ret = tap_done();
	forget_last();
	jv_free(held);
	rm_tmpdir();
	return ret;
}
