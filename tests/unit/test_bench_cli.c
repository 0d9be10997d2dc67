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
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/tap.h"

/* ---- a small JSON reader ------------------------------------------------------- */

enum jt { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jt t;
	double num;
	bool b;
	char *str;
	unsigned n;
	char **keys;       /* objects */
	struct jv **items; /* arrays and objects */
};

static void jv_free(struct jv *v)
{
	if (!v)
		return;
	for (unsigned i = 0; i < v->n; i++) {
		if (v->keys)
			free(v->keys[i]);
		jv_free(v->items[i]);
	}
	free(v->keys);
	free(v->items);
	free(v->str);
	free(v);
}

static void skip_ws(const char **p)
{
	while (**p && isspace((unsigned char)**p))
		(*p)++;
}

static char *parse_string(const char **p)
{
	size_t cap = 16, n = 0;
	char *s;

	if (**p != '"')
		return NULL;
	(*p)++;
	s = malloc(cap);
	while (s && **p && **p != '"') {
		char c = *(*p)++;

		if (c == '\\') {
			c = *(*p)++;
			switch (c) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'u': /* \u00XX only: what the writer emits */
				c = (char)strtol((char[]){ (*p)[2], (*p)[3], 0 }, NULL, 16);
				*p += 4;
				break;
			default: break; /* \" \\ \/ */
			}
		}
		if (n + 2 > cap) {
			char *t = realloc(s, cap *= 2);
			if (!t) {
				free(s);
				return NULL;
			}
			s = t;
		}
		s[n++] = c;
	}
	if (!s || **p != '"') {
		free(s);
		return NULL;
	}
	(*p)++;
	s[n] = '\0';
	return s;
}

static struct jv *parse_value(const char **p);

static bool push(struct jv *v, char *key, struct jv *item)
{
	struct jv **it = realloc(v->items, (v->n + 1) * sizeof(*it));
	char **k = v->t == J_OBJ ? realloc(v->keys, (v->n + 1) * sizeof(*k)) : NULL;

	if (it)
		v->items = it;
	if (k)
		v->keys = k;
	if (!it || (v->t == J_OBJ && !k))
		return false;
	if (k)
		v->keys[v->n] = key;
	v->items[v->n++] = item;
	return true;
}

static struct jv *parse_container(const char **p, enum jt t)
{
	struct jv *v = calloc(1, sizeof(*v));
	char close = t == J_OBJ ? '}' : ']';

	if (!v)
		return NULL;
	v->t = t;
	(*p)++;
	skip_ws(p);
	if (**p == close) {
		(*p)++;
		return v;
	}
	for (;;) {
		char *key = NULL;
		struct jv *item;

		skip_ws(p);
		if (t == J_OBJ) {
			key = parse_string(p);
			skip_ws(p);
			if (!key || **p != ':') {
				free(key);
				goto bad;
			}
			(*p)++;
		}
		item = parse_value(p);
		if (!item || !push(v, key, item)) {
			free(key);
			jv_free(item);
			goto bad;
		}
		skip_ws(p);
		if (**p == ',') {
			(*p)++;
			continue;
		}
		if (**p == close) {
			(*p)++;
			return v;
		}
		goto bad;
	}
bad:
	jv_free(v);
	return NULL;
}

static struct jv *parse_value(const char **p)
{
	struct jv *v;

	skip_ws(p);
	if (**p == '{')
		return parse_container(p, J_OBJ);
	if (**p == '[')
		return parse_container(p, J_ARR);
	v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	if (**p == '"') {
		v->t = J_STR;
		v->str = parse_string(p);
		if (!v->str) {
			free(v);
			return NULL;
		}
	} else if (!strncmp(*p, "true", 4) || !strncmp(*p, "false", 5)) {
		v->t = J_BOOL;
		v->b = **p == 't';
		*p += v->b ? 4 : 5;
	} else if (!strncmp(*p, "null", 4)) {
		v->t = J_NULL;
		*p += 4;
	} else {
		char *end;

		v->t = J_NUM;
		v->num = strtod(*p, &end);
		if (end == *p) {
			free(v);
			return NULL;
		}
		*p = end;
	}
	return v;
}

static struct jv *json_parse(const char *text)
{
	const char *p = text;
	struct jv *v = parse_value(&p);

	skip_ws(&p);
	if (v && *p) {
		jv_free(v);
		return NULL;
	}
	return v;
}

/* "a.b.0.c": object keys and array indexes; NULL when missing. */
static struct jv *jget(struct jv *v, const char *path)
{
	char buf[256], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); v && tok; tok = strtok_r(NULL, ".", &save)) {
		struct jv *next = NULL;

		if (v->t == J_OBJ) {
			for (unsigned i = 0; i < v->n; i++)
				if (!strcmp(v->keys[i], tok))
					next = v->items[i];
		} else if (v->t == J_ARR && isdigit((unsigned char)*tok)) {
			unsigned i = (unsigned)strtoul(tok, NULL, 10);
			next = i < v->n ? v->items[i] : NULL;
		}
		v = next;
	}
	return v;
}

static double jnum(struct jv *v, const char *path)
{
	struct jv *x = jget(v, path);

	if (!x || x->t != J_NUM)
		tap_fail(__FILE__, __LINE__, path, "missing or not a number");
	return x->num;
}

static const char *jstr(struct jv *v, const char *path)
{
	struct jv *x = jget(v, path);

	if (!x || x->t != J_STR)
		tap_fail(__FILE__, __LINE__, path, "missing or not a string");
	return x->str;
}

/* ---- running the binary ----------------------------------------------------------- */

static char gpamm_bin[PATH_MAX];

static void find_binary(void)
{
	const char *env = getenv("GPAMM_BIN");
	char self[PATH_MAX - 16];
	ssize_t n;

	if (env && *env) {
		snprintf(gpamm_bin, sizeof(gpamm_bin), "%s", env);
		return;
	}
	/* build/tests/unit/test_bench_cli -> build/gpamm */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		snprintf(gpamm_bin, sizeof(gpamm_bin), "build/gpamm");
		return;
	}
	self[n] = '\0';
	for (int up = 0; up < 3; up++) {
		char *slash = strrchr(self, '/');
		if (slash)
			*slash = '\0';
	}
	snprintf(gpamm_bin, sizeof(gpamm_bin), "%s/gpamm", self);
}

struct result {
	int status; /* exit code, or 128 + signal */
	char *out, *err;
};

static char *slurp(int fd)
{
	size_t cap = 4096, n = 0;
	char *s = malloc(cap);
	ssize_t r;

	lseek(fd, 0, SEEK_SET);
	while (s && (r = read(fd, s + n, cap - n - 1)) > 0) {
		n += (size_t)r;
		if (cap - n < 2) {
			char *t = realloc(s, cap *= 2);
			if (!t) {
				free(s);
				return NULL;
			}
			s = t;
		}
	}
	if (s)
		s[n] = '\0';
	return s;
}

/* Run "gpamm ARGS..." (NULL-terminated) with @kvm_dev as $GPAMM_KVM_DEVICE if not NULL. */
static struct result run_gpamm(const char *kvm_dev, const char *const *args)
{
	char outp[] = "/tmp/test_bench_out.XXXXXX", errp[] = "/tmp/test_bench_err.XXXXXX";
	int ofd = mkstemp(outp), efd = mkstemp(errp), st = 0;
	const char *argv[40];
	struct result r = { -1, NULL, NULL };
	unsigned n = 0;
	pid_t pid;

	ASSERT(ofd >= 0 && efd >= 0);
	unlink(outp);
	unlink(errp);
	argv[n++] = gpamm_bin;
	for (; *args && n < 39; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	fflush(stdout);
	pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		dup2(ofd, 1);
		dup2(efd, 2);
		if (kvm_dev)
			setenv("GPAMM_KVM_DEVICE", kvm_dev, 1);
		else
			unsetenv("GPAMM_KVM_DEVICE");
		execv(gpamm_bin, (char *const *)argv);
		_exit(127);
	}
	ASSERT(waitpid(pid, &st, 0) == pid);
	r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	r.out = slurp(ofd);
	r.err = slurp(efd);
	close(ofd);
	close(efd);
	ASSERT(r.out && r.err);
	return r;
}

static void result_free(struct result *r)
{
	free(r->out);
	free(r->err);
}

/* ---- checks ------------------------------------------------------------------------ */

static const char *const all_phases[] = { "populate", "enable", "dirty", "get", "clear", "disable" };

/* A run that ran: phases present with times > 0, counts consistent. */
static void check_run(struct jv *run, const char *backend, uint64_t pages, unsigned iters,
		      bool manual, bool faults)
{
	char path[96];
	struct jv *det;

	ASSERT(!strcmp(jstr(run, "backend"), backend));
	ASSERT(!strcmp(jstr(run, "status"), "ran"));
	ASSERT_EQ(jnum(run, "pages"), pages);
	ASSERT_EQ(jnum(run, "iterations"), iters);
	for (unsigned i = 0; i < sizeof(all_phases) / sizeof(all_phases[0]); i++) {
		const char *ph = all_phases[i];
		struct jv *p;

		snprintf(path, sizeof(path), "phases.%s", ph);
		p = jget(run, path);
		if (!strcmp(ph, "clear") && !manual) {
			ASSERT(p == NULL); /* classic GET clears; there is no CLEAR phase */
			continue;
		}
		ASSERT(p != NULL);
		ASSERT(jnum(p, "ns") > 0);
		ASSERT(jnum(p, "ns_per_page") > 0);
		ASSERT_EQ(jget(p, "samples_ns")->n,
			  (!strcmp(ph, "dirty") || !strcmp(ph, "get") || !strcmp(ph, "clear")) ? iters : 1);
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
		if (faults)
			ASSERT(jnum(it, "write_faults") >= (double)pages);
	}
}

static struct jv *parse_ok(struct result *r)
{
	struct jv *j;

	if (r->status != 0)
		tap_diag("stderr: %s", r->err);
	ASSERT_EQ_INT(r->status, 0);
	j = json_parse(r->out);
	if (!j)
		tap_diag("not JSON: %.400s", r->out);
	ASSERT(j != NULL);
	return j;
}

static void test_json_manual(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "-b", "16M", "-i", "2",
					 "--json", NULL };
	struct result r = run_gpamm(NULL, a);
	struct jv *j = parse_ok(&r);

	ASSERT(!strcmp(jstr(j, "suite"), "dirty_log_perf"));
	ASSERT(jget(j, "peer") && jget(j, "peer")->t == J_NULL);
	ASSERT_EQ(jget(j, "points")->n, 1);
	ASSERT_EQ(jget(j, "points.0.runs")->n, 1);
	ASSERT_EQ(jnum(j, "config.total_bytes"), 16u << 20);
	ASSERT(jget(j, "config.pretouched")->b);
	ASSERT_EQ(jnum(j, "points.0.runs.0.pages_per_vcpu"), 4096);
	check_run(jget(j, "points.0.runs.0"), "gpamm", 4096, 2, true, true);
	jv_free(j);
	result_free(&r);
}

static void test_json_classic_vcpus_slots(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "-v", "2", "-b", "8M", "-m", "2",
					 "-i", "3", "--no-manual-protect", "--page-shift", "14",
					 "--json", NULL };
	struct result r = run_gpamm(NULL, a);
	struct jv *j = parse_ok(&r);
	struct jv *run = jget(j, "points.0.runs.0");

	/* 2 x 8 MiB of 16K pages */
	ASSERT_EQ(jnum(run, "pages"), 1024);
	ASSERT_EQ(jnum(run, "pages_per_vcpu"), 512);
	ASSERT_EQ(jnum(run, "vcpus"), 2);
	ASSERT_EQ(jnum(run, "slots"), 2);
	ASSERT_EQ(jnum(run, "page_size"), 16384);
	ASSERT(!jget(j, "config.manual_protect")->b);
	check_run(run, "gpamm", 1024, 3, false, true);
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
		"Clear dirty log over 2 iterations took ", "ns/page", "pre-touched",
	};
	struct result r = run_gpamm(NULL, a);

	ASSERT_EQ_INT(r.status, 0);
	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (!strstr(r.out, want[i]))
			tap_diag("missing '%s' in:\n%s", want[i], r.out);
		ASSERT(strstr(r.out, want[i]) != NULL);
	}
	result_free(&r);
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

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct result r = run_gpamm(NULL, bad[i]);

		if (r.status != 2)
			tap_diag("case %u (%s %s %s): status %d, stderr: %s", i, bad[i][1],
				 bad[i][2] ? bad[i][2] : "", bad[i][2] && bad[i][3] ? bad[i][3] : "",
				 r.status, r.err);
		ASSERT_EQ_INT(r.status, 2);
		ASSERT(strstr(r.err, "gpamm bench: ") != NULL); /* a message naming the command */
		ASSERT(strlen(r.err) > strlen("gpamm bench: \n"));
		ASSERT_EQ(strlen(r.out), 0); /* nothing ran */
		result_free(&r);
	}
}

static void test_help(void)
{
	static const char *const a[] = { "bench", "--help", NULL };
	struct result r = run_gpamm(NULL, a);

	ASSERT_EQ_INT(r.status, 0);
	ASSERT(strstr(r.out, "dirty_log_perf") && strstr(r.out, "--peer kvm") &&
	       strstr(r.out, "--sweep"));
	result_free(&r);
}

static void test_peer_kvm(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "--peer", "kvm", "-b", "16M",
					 "-i", "2", "--json", NULL };
	struct result r = run_gpamm(NULL, a);
	struct jv *j = parse_ok(&r);
	struct jv *runs = jget(j, "points.0.runs"), *tg;

	ASSERT(!strcmp(jstr(j, "peer.name"), "kvm"));
	check_run(runs->items[0], "gpamm", 4096, 2, true, true);
	ASSERT_EQ(runs->n, 2);
	if (!strcmp(jstr(j, "peer.status"), "skipped")) {
		tap_diag("KVM peer skipped: %s", jstr(j, "peer.reason"));
		ASSERT(strlen(jstr(j, "peer.reason")) > 0);
		ASSERT(!strcmp(jstr(runs->items[1], "status"), "skipped"));
		ASSERT(strlen(jstr(runs->items[1], "reason")) > 0);
		ASSERT(jget(j, "points.0.comparison") == NULL);
	} else {
		ASSERT(!strcmp(jstr(j, "peer.status"), "ran"));
		/* KVM's run has every phase, and its GET saw every page written */
		check_run(runs->items[1], "kvm", 4096, 2, true, false);
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
	struct result r = run_gpamm("/nonexistent/kvm", aj);
	struct jv *j = parse_ok(&r);

	ASSERT(!strcmp(jstr(j, "peer.status"), "skipped"));
	ASSERT(strstr(jstr(j, "peer.reason"), "/nonexistent/kvm") != NULL);
	check_run(jget(j, "points.0.runs.0"), "gpamm", 2048, 1, true, true);
	jv_free(j);
	result_free(&r);

	r = run_gpamm("/nonexistent/kvm", at);
	ASSERT_EQ_INT(r.status, 0);
	ASSERT(strstr(r.out, "KVM peer: skipped: cannot open /nonexistent/kvm") != NULL);
	result_free(&r);
}

static void test_sweep(void)
{
	static const char *const a[] = { "bench", "dirty_log_perf", "--sweep", "mem=8M,16M", "-i",
					 "1", "--json", NULL };
	static const char *const at[] = { "bench", "dirty_log_perf", "--sweep", "vcpus=1,2", "-b",
					  "8M", "-i", "1", NULL };
	struct result r = run_gpamm(NULL, a);
	struct jv *j = parse_ok(&r), *ph;

	ASSERT_EQ(jget(j, "points")->n, 2);
	ASSERT(!strcmp(jstr(j, "points.0.label"), "8M"));
	check_run(jget(j, "points.0.runs.0"), "gpamm", 2048, 1, true, true);
	check_run(jget(j, "points.1.runs.0"), "gpamm", 4096, 1, true, true);
	ASSERT(!strcmp(jstr(j, "sweep.param"), "mem"));
	ASSERT_EQ(jget(j, "sweep.values")->n, 2);
	for (unsigned i = 0; i < sizeof(all_phases) / sizeof(all_phases[0]); i++) {
		char path[96];

		snprintf(path, sizeof(path), "sweep.backends.gpamm.%s", all_phases[i]);
		ph = jget(j, path);
		ASSERT(ph != NULL);
		ASSERT_EQ(jget(ph, "ns_per_page")->n, 2);
		ASSERT(jget(ph, "flat")->t == J_BOOL);
		ASSERT(jnum(ph, "max_over_min") >= 1.0);
		/* flat exactly when max/min is within the limit */
		ASSERT(jget(ph, "flat")->b == (jnum(ph, "max_over_min") <= jnum(j, "sweep.flat_limit")));
	}
	jv_free(j);
	result_free(&r);

	r = run_gpamm(NULL, at);
	ASSERT_EQ_INT(r.status, 0);
	ASSERT(strstr(r.out, "Sweep vcpus, gpamm") != NULL);
	ASSERT(strstr(r.out, "stayed flat") != NULL);
	result_free(&r);
}

int main(int argc, char **argv)
{
	struct stat st;

	tap_init(argc, argv);
	find_binary();
	printf("# binary: %s\n", gpamm_bin);
	if (stat(gpamm_bin, &st) || !(st.st_mode & S_IXUSR)) {
		printf("# %s is missing: build it first (make), or set GPAMM_BIN\n", gpamm_bin);
		printf("not ok 1 - gpamm binary present\n1..1\n");
		return 1;
	}
	TEST(test_help);
	TEST(test_bad_usage);
	TEST(test_json_manual);
	TEST(test_json_classic_vcpus_slots);
	TEST(test_text_selftest_lines);
	TEST(test_sweep);
	TEST(test_peer_kvm_missing_device);
	TEST(test_peer_kvm);
	return tap_done();
}
