// SPDX-License-Identifier: MIT
/*
 * The Promela model of the MMU's concurrency protocol, tests/spin/mmu.pml,
 * checked by spin on every `make test`: the model as it is must have no
 * error in an exhaustive search (every state, no bitstate hashing, no
 * depth cut), and each mutation (a -D switch of the model that removes
 * one step of the protocol) must break the contract it guards, named by
 * the assertion pan reports. A mutation that passes would mean the model
 * no longer sees the bug, so it fails the test like an error in the model.
 *
 * Each run copies the model into a directory of its own under a temporary
 * directory, runs `spin -a`, compiles pan.c with the system C compiler and
 * runs ./pan; the counts pan prints are passed on as TAP diagnostics. spin
 * is a build dependency (scripts/deps.sh spin, run by make): without it
 * the test fails, it does not skip. The temporary directory is removed
 * when every run passed, kept (and named) otherwise.
 *
 * The model is SRC/tests/spin/mmu.pml, SRC the parent of BUILD (or the
 * current directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness/clitest.h"
#include "harness/tap.h"

#define MODEL "tests/spin/mmu.pml"

/* pan's limits: far beyond what the model needs, so that reaching one
 * means the model grew, which the test reports instead of waiting */
#define PAN_DEPTH   "-m100000"  /* a cut search would not be exhaustive */
#define PAN_HASH    "-w21"      /* 2M slots: the clean model stores ~1.8M states */
#define PAN_MEMLIM  "-DMEMLIM=1024"
#define CHILD_CPU_S 300

struct variant {
	const char *name;      /* the model's -D switch; NULL: the model as is */
	const char *what;      /* the step it removes */
	const char *expect[3]; /* the assertions of which one must fail */
};

static const struct variant mutations[] = {
	{ "NO_RETRY", "no retry check after the pin",
	  { "c3_frame_current" } },
	{ "NO_SEQ_CHECK", "retry only while an invalidation is in progress",
	  { "c3_frame_current" } },
	{ "NO_INPROGRESS_CHECK", "retry only when the sequence moved",
	  { "c3_frame_current" } },
	{ "SEQ_AFTER_PIN", "the sequence sampled after get_page",
	  { "c3_frame_current" } },
	{ "NO_INV_FLUSH", "invalidate_range_start without the remote flush",
	  { "c3_frame_current", "c1_tlb_backed" } },
	{ "NO_WP_FLUSH", "write-protect without the remote flush",
	  { "c1_tlb_backed", "c2_write_logged" } },
	{ "NO_WP", "harvest without write-protect",
	  { "c2_write_logged" } },
	{ "NO_CMPXCHG", "plain stores instead of compare-and-exchange",
	  { "c1_tlb_backed" } },
	{ "FLUSH_MODE_FIRST", "the flusher reads guest mode before it sets the requests",
	  { "c1_tlb_backed", "c2_write_logged", "c3_frame_current" } },
};

static char srcdir[PATH_MAX];
static char workdir[PATH_MAX];
static char spin_bin[PATH_MAX], cc_bin[PATH_MAX];
static char *model_text;
static size_t model_len;
/* the last pan output: kept here, not on a stack a failed ASSERT unwinds */
static char *pan_text;

/* @name on $PATH, into @out; false when it is nowhere. */
static bool find_on_path(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	char dir[PATH_MAX];

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		if (snprintf(dir, sizeof(dir), "%.*s", (int)n, n ? path : ".") < (int)sizeof(dir) &&
		    snprintf(out, len, "%s/%s", dir, name) < (int)len && !access(out, X_OK))
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/*
 * Run @argv (NULL-terminated) in @dir with stdout and stderr into
 * @dir/@log; its exit status (128 + signal when killed). The CPU limit
 * keeps a model that grew too large from holding the machine.
 */
static int run_in(const char *dir, const char *log, const char *const *argv)
{
	char path[PATH_MAX + 64];
	int st = 0, fd;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/%s", dir, log);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ASSERT_MSG(fd >= 0, "%.200s: %s", path, strerror(errno));
	fflush(stdout);
	pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		struct rlimit cpu = { CHILD_CPU_S, CHILD_CPU_S };

		setrlimit(RLIMIT_CPU, &cpu);
		if (chdir(dir) || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fd);
	ASSERT(waitpid(pid, &st, 0) == pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The file @dir/@log, for a failure message; NULL if unreadable. Caller frees. */
static char *log_text(const char *dir, const char *log)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", dir, log);
	return read_file(path, NULL);
}

/* Fail, after the last lines of @dir/@log as diagnostics, when @status is not 0. */
static void expect_ran(int status, const char *dir, const char *log, const char *what)
{
	char *text;
	const char *p;
	size_t n;

	if (status == 0)
		return;
	printf("# %s exited with %d; the end of %s/%s:\n", what, status, dir, log);
	text = log_text(dir, log);
	p = text ? text : "";
	n = strlen(p);
	if (n > 600)
		p += n - 600;
	while (*p) {
		size_t len = strcspn(p, "\n");

		printf("#   %.*s\n", (int)len, p);
		p += len + (p[len] == '\n');
	}
	free(text);
	ASSERT_MSG(0, "%s failed", what);
}

struct pan_report {
	unsigned long long states, transitions, depth;
	long errors;          /* -1: no "errors:" line */
	double seconds;       /* pan's own elapsed time */
	bool full;            /* "Full statespace search" */
	bool depth_cut;       /* "max search depth too small" */
	char violated[64];    /* the failed assertion's name, or "invalid end state" */
	const char *text;     /* the whole output (pan_text) */
};

static unsigned long long number_before(const char *text, const char *what)
{
	const char *at = strstr(text, what);

	if (!at)
		return 0;
	while (at > text && at[-1] == ' ')
		at--;
	while (at > text && (at[-1] >= '0' && at[-1] <= '9'))
		at--;
	return strtoull(at, NULL, 10);
}

static void parse_pan(struct pan_report *r, const char *text)
{
	const char *p;

	memset(r, 0, sizeof(*r));
	r->text = text;
	r->errors = -1;
	if ((p = strstr(text, "errors: ")))
		r->errors = strtol(p + 8, NULL, 10);
	if ((p = strstr(text, "depth reached ")))
		r->depth = strtoull(p + 14, NULL, 10);
	r->states = number_before(text, " states, stored");
	r->transitions = number_before(text, " transitions (= stored+matched)");
	if ((p = strstr(text, "pan: elapsed time ")))
		r->seconds = strtod(p + 18, NULL);
	r->full = strstr(text, "Full statespace search") != NULL;
	r->depth_cut = strstr(text, "max search depth too small") != NULL;
	if ((p = strstr(text, "assertion violated "))) {
		p += strlen("assertion violated ");
		snprintf(r->violated, sizeof(r->violated), "%.*s", (int)strcspn(p, " \n"), p);
	} else if (strstr(text, ": invalid end state (")) {
		snprintf(r->violated, sizeof(r->violated), "invalid end state");
	}
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/*
 * Check the model with @name defined (NULL: as it is): spin -a, cc, pan.
 * The model as it is is compiled with -O2 (its search is the long part);
 * a mutation with -O0 (it stops at its first error: compiling is the long part).
 */
static void check_model(const char *name, struct pan_report *r)
{
	const char *label = name ? name : "model";
	char dir[PATH_MAX + 32], path[PATH_MAX + 48], def[80];
	const char *spin_argv[] = { spin_bin, "-a", name ? def : "mmu.pml", name ? "mmu.pml" : NULL,
				    NULL };
	const char *cc_argv[] = { cc_bin, name ? "-O0" : "-O2", "-w", "-DSAFETY", "-DCOLLAPSE",
				  PAN_MEMLIM, "-o", "pan", "pan.c", NULL };
	const char *pan_argv[] = { "./pan", PAN_DEPTH, PAN_HASH, NULL };
	double t0 = now_s();
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/%s", workdir, label);
	ASSERT_MSG(!mkdir(dir, 0755), "%.200s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/mmu.pml", dir);
	f = fopen(path, "w");
	ASSERT(f);
	ASSERT(fwrite(model_text, 1, model_len, f) == model_len);
	ASSERT(!fclose(f));

	snprintf(def, sizeof(def), "-D%s", name ? name : "");
	expect_ran(run_in(dir, "spin.log", spin_argv), dir, "spin.log", "spin -a");
	expect_ran(run_in(dir, "cc.log", cc_argv), dir, "cc.log", "cc pan.c");
	expect_ran(run_in(dir, "pan.log", pan_argv), dir, "pan.log", "./pan");
	free(pan_text);
	pan_text = log_text(dir, "pan.log");
	ASSERT_MSG(pan_text, "%.200s/pan.log unreadable", dir);
	parse_pan(r, pan_text);
	tap_diag("%s: %llu states, %llu transitions, depth %llu, errors %ld%s%s; pan %.2f s, "
		 "spin + cc + pan %.1f s", label, r->states, r->transitions, r->depth, r->errors,
		 r->violated[0] ? ": " : "", r->violated, r->seconds, now_s() - t0);
	ASSERT_MSG(r->errors >= 0, "no summary in %.200s/pan.log", dir);
	ASSERT_MSG(r->full, "%.200s/pan.log: not a full state-space search", dir);
	ASSERT_MSG(!r->depth_cut, "%.200s/pan.log: the depth limit %s cut the search", dir,
		   PAN_DEPTH);
}

/* Line @n (from 1) of the model, into @buf ("" past the end). */
static void model_line(unsigned n, char *buf, size_t len)
{
	const char *l = model_text;

	while (l && --n)
		l = (l = strchr(l, '\n')) ? l + 1 : NULL;
	snprintf(buf, len, "%.*s", l ? (int)strcspn(l, "\n") : 0, l ? l : "");
}

/*
 * The one step of the model that no run reaches: fault_install()'s
 * replacement of another page, with its remote flush, which the retry
 * check rules out. Anything else unreached means the model lost coverage.
 * @stmt is pan's text of the statement, @line its line in the model.
 */
static bool unreached_ok(const char *stmt, unsigned line)
{
	char text[256];

	if (!strcmp(stmt, "flushing[p] = 1") || !strcmp(stmt, "flushing[p] = 0"))
		return true;
	/* flush_remote_tlbs(), which a vCPU calls only there: its waits and
	 * the step that sets the requests */
	if (strstr(stmt, "req[0])") || strstr(stmt, "req[1])"))
		return true;
	model_line(line, text, sizeof(text));
	return !strncmp(stmt, "D_STEP", 6) && strstr(text, "req[0] = 1; req[1] = 1");
}

/* pan's "unreached in proctype" report: only unreached_ok() statements. */
static void check_reached(const char *text)
{
	const char *p = strstr(text, "unreached in proctype");
	const char *tag = "\tmmu.pml:";
	unsigned bad = 0, seen = 0;

	ASSERT_MSG(p, "pan printed no reachability report");
	for (; p && *p; p = (p = strchr(p, '\n')) ? p + 1 : NULL) {
		const char *q;
		char stmt[160];
		unsigned line;

		if (strncmp(p, tag, strlen(tag)))
			continue;
		line = (unsigned)strtoul(p + strlen(tag), NULL, 10);
		q = strchr(p, '"');
		if (!q || q > strchr(p, '\n'))
			continue;
		q++;
		snprintf(stmt, sizeof(stmt), "%.*s", (int)strcspn(q, "\"\n"), q);
		seen++;
		if (unreached_ok(stmt, line))
			continue;
		printf("# unreached: line %u: %s\n", line, stmt);
		bad++;
	}
	tap_diag("unreached statements: %u of the page replacement, %u others", seen - bad, bad);
	ASSERT_MSG(!bad, "%u statement(s) of the model never run", bad);
}

static void test_model_has_no_error(void)
{
	struct pan_report r;

	check_model(NULL, &r);
	if (r.errors)
		printf("# the model fails: %s (replay: cd %s/model && spin -t -p mmu.pml)\n",
		       r.violated, workdir);
	ASSERT_MSG(!r.errors, "errors in the model as it is");
	check_reached(r.text);
}

static const struct variant *cur;

static void test_mutation(void)
{
	struct pan_report r;
	bool expected = false;

	check_model(cur->name, &r);
	for (unsigned i = 0; i < 3 && cur->expect[i]; i++)
		expected |= !strcmp(r.violated, cur->expect[i]);
	if (!r.errors || !expected)
		printf("# %s (%s): expected a failed %s%s, pan found %s\n", cur->name, cur->what,
		       cur->expect[0], cur->expect[1] ? " (or another one listed)" : "",
		       r.errors ? r.violated : "no error");
	ASSERT_MSG(r.errors && expected, "%s is not caught as expected", cur->name);
}

/* Remove one entry of the work directory (nftw, depth first). */
static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path);
}

static bool setup(void)
{
	char path[PATH_MAX + 32];
	const char *tmp;
	bool ok = true;

	if (!clitest_srcdir(srcdir, sizeof(srcdir), MODEL))
		return false;
	snprintf(path, sizeof(path), "%s/%s", srcdir, MODEL);
	model_text = read_file(path, &model_len);
	if (!model_text) {
		printf("# %s: unreadable\n", path);
		return false;
	}
	if (!find_on_path("spin", spin_bin, sizeof(spin_bin))) {
		printf("# spin is not installed: scripts/deps.sh spin installs it "
		       "(make does, as root), or apt-get install -y spin\n");
		ok = false;
	}
	if (!find_on_path("cc", cc_bin, sizeof(cc_bin)) &&
	    !find_on_path("gcc", cc_bin, sizeof(cc_bin))) {
		printf("# no C compiler (cc or gcc) on PATH for pan.c\n");
		ok = false;
	}
	if (!ok)
		return false;
	/* the runs write a few MB each: $TMPDIR when set */
	tmp = getenv("TMPDIR");
	snprintf(workdir, sizeof(workdir), "%s/gpamm-spin-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(workdir)) {
		printf("# mkdtemp %s: %s\n", workdir, strerror(errno));
		return false;
	}
	printf("# model: %s\n# spin: %s, cc: %s, runs in %s\n", path, spin_bin, cc_bin, workdir);
	return true;
}

int main(int argc, char **argv)
{
	int ret;

	tap_init(argc, argv);
	if (!setup()) {
		free(model_text);
		return clitest_setup_failed("spin, a C compiler and the model present");
	}
	TEST(test_model_has_no_error);
	for (unsigned i = 0; i < sizeof(mutations) / sizeof(mutations[0]); i++) {
		char name[96];

		cur = &mutations[i];
		snprintf(name, sizeof(name), "test_mutation_%s", cur->name);
		tap_run(name, test_mutation);
	}
	ret = tap_done();
	if (ret)
		printf("# the runs are kept in %s\n", workdir);
	else
		nftw(workdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(pan_text);
	free(model_text);
	return ret;
}
