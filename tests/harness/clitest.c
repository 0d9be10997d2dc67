// SPDX-License-Identifier: MIT
/* The command-line test helpers: see clitest.h. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clitest.h"
#include "tap.h"

void jv_free(struct jv *v)
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

struct jv *json_parse(const char *text)
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
struct jv *jget(struct jv *v, const char *path)
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

double jnum(struct jv *v, const char *path)
{
	struct jv *x = jget(v, path);

	if (!x || x->t != J_NUM)
		tap_fail(__FILE__, __LINE__, path, "missing or not a number");
	return x->num;
}

const char *jstr(struct jv *v, const char *path)
{
	struct jv *x = jget(v, path);

	if (!x || x->t != J_STR)
		tap_fail(__FILE__, __LINE__, path, "missing or not a string");
	return x->str;
}

bool jbool(struct jv *v, const char *path)
{
	struct jv *x = jget(v, path);

	if (!x || x->t != J_BOOL)
		tap_fail(__FILE__, __LINE__, path, "missing or not true/false");
	return x->b;
}

bool jis_null(struct jv *v, const char *path)
{
	struct jv *x = jget(v, path);

	return x && x->t == J_NULL;
}

char gpamm_bin[PATH_MAX];

/* This program's path less its last @up components; false when it cannot be read. */
static bool exe_up(char *buf, size_t len, int up)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	char *slash;

	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (int i = 0; i < up && (slash = strrchr(buf, '/')); i++)
		*slash = '\0';
	return true;
}

void find_binary(void)
{
	const char *env = getenv("GPAMM_BIN");
	char self[PATH_MAX - 16];

	if (env && *env) {
		snprintf(gpamm_bin, sizeof(gpamm_bin), "%s", env);
		return;
	}
	/* build/tests/unit/test_bench_cli -> build/gpamm */
	if (!exe_up(self, sizeof(self), 3)) {
		snprintf(gpamm_bin, sizeof(gpamm_bin), "build/gpamm");
		return;
	}
	snprintf(gpamm_bin, sizeof(gpamm_bin), "%s/gpamm", self);
}

bool clitest_srcdir(char *dir, size_t len, const char *probe)
{
	char exe[PATH_MAX], path[PATH_MAX + 256];

	snprintf(dir, len, ".");
	/* SRC/BUILD/tests/unit/test_x -> SRC */
	if (exe_up(exe, sizeof(exe), 4)) {
		snprintf(path, sizeof(path), "%s/%s", exe, probe);
		if (!access(path, R_OK))
			snprintf(dir, len, "%s", exe);
	}
	snprintf(path, sizeof(path), "%s/%s", dir, probe);
	if (access(path, R_OK)) {
		printf("# %s not found (run from the source tree)\n", probe);
		return false;
	}
	return true;
}

static char *slurp(int fd, size_t *lenp)
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
	if (lenp)
		*lenp = n;
	return s;
}

char *read_file(const char *path, size_t *lenp)
{
	int fd = open(path, O_RDONLY);
	char *s;

	if (fd < 0)
		return NULL;
	s = slurp(fd, lenp);
	close(fd);
	return s;
}

/* Run "gpamm ARGS..." (NULL-terminated) with @kvm_dev as $GPAMM_KVM_DEVICE if not NULL. */
struct result run_gpamm(const char *kvm_dev, const char *const *args)
{
	char outp[] = "/tmp/gpamm_cli_out.XXXXXX", errp[] = "/tmp/gpamm_cli_err.XXXXXX";
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
	r.out = slurp(ofd, NULL);
	r.err = slurp(efd, NULL);
	close(ofd);
	close(efd);
	ASSERT(r.out && r.err);
	return r;
}

void result_free(struct result *r)
{
	free(r->out);
	free(r->err);
}

bool gpamm_bin_present(void)
{
	struct stat st;

	printf("# binary: %s\n", gpamm_bin);
	if (stat(gpamm_bin, &st) || !(st.st_mode & S_IXUSR)) {
		printf("# %s is missing: build it first (make), or set GPAMM_BIN\n", gpamm_bin);
		return false;
	}
	return true;
}

bool clitest_init(int argc, char **argv)
{
	tap_init(argc, argv);
	find_binary();
	if (gpamm_bin_present())
		return true;
	clitest_setup_failed("gpamm binary present");
	return false;
}

int clitest_setup_failed(const char *what)
{
	printf("not ok 1 - %s\n1..1\n", what);
	return 1;
}

/* ---- checks of a run ---------------------------------------------------------------- */

struct jv *json_ok(const struct result *r)
{
	struct jv *j;

	if (r->status != 0)
		tap_diag("exit %d, stderr: %s", r->status, r->err);
	ASSERT_EQ_INT(r->status, 0);
	j = json_parse(r->out);
	if (!j)
		tap_diag("not JSON: %.400s", r->out);
	ASSERT(j != NULL);
	return j;
}

struct jv *run_json(const char *kvm_dev, const char *const *args, struct result *r)
{
	*r = run_gpamm(kvm_dev, args);
	return json_ok(r);
}

void expect_strings(const char *text, const char *const *want)
{
	for (unsigned i = 0; want[i]; i++) {
		if (!strstr(text, want[i]))
			tap_diag("missing '%s' in:\n%s", want[i], text);
		ASSERT(strstr(text, want[i]) != NULL);
	}
}

void expect_stdout(const char *kvm_dev, const char *const *args, const char *const *want)
{
	struct result r = run_gpamm(kvm_dev, args);

	if (r.status != 0)
		tap_diag("exit %d, stderr: %s", r.status, r.err);
	ASSERT_EQ_INT(r.status, 0);
	expect_strings(r.out, want);
	result_free(&r);
}

static bool error_is(const struct result *r, int status, const char *const *msgs)
{
	if (r->status != status || r->out[0] || strlen(r->err) <= strlen(msgs[0]) + 1)
		return false;
	for (unsigned i = 0; msgs[i]; i++)
		if (!strstr(r->err, msgs[i]))
			return false;
	return true;
}

void expect_error(const struct result *r, int status, const char *const *msgs)
{
	if (!error_is(r, status, msgs))
		tap_diag("exit %d (want %d), stderr: %s", r->status, status, r->err);
	ASSERT_EQ_INT(r->status, status);
	for (unsigned i = 0; msgs[i]; i++)
		ASSERT(strstr(r->err, msgs[i]) != NULL);
	/* a message, not a bare prefix */
	ASSERT(strlen(r->err) > strlen(msgs[0]) + 1);
	ASSERT_EQ(r->out[0], '\0'); /* nothing ran, nothing half-reported */
}

void expect_usage_error(const char *const *args, const char *const *msgs)
{
	struct result r = run_gpamm(NULL, args);

	if (!error_is(&r, 2, msgs)) {
		char cmd[512] = "gpamm";

		for (unsigned i = 0; args[i]; i++)
			snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s", args[i]);
		tap_diag("'%s'", cmd);
	}
	expect_error(&r, 2, msgs);
	result_free(&r);
}

void expect_usage_errors(const char *const *prefix, const void *rows, size_t nrows, size_t width,
			 const char *const *msgs)
{
	for (size_t i = 0; i < nrows; i++) {
		const char *const *row =
			(const void *)((const char *)rows + i * width * sizeof(const char *));
		const char *args[40];
		unsigned n = 0;

		for (; prefix[n]; n++)
			args[n] = prefix[n];
		for (size_t k = 0; k < width && row[k]; k++) {
			ASSERT(n + 1 < sizeof(args) / sizeof(args[0]));
			args[n++] = row[k];
		}
		args[n] = NULL;
		expect_usage_error(args, msgs);
	}
}

/* ---- "gpamm bench" reports ---------------------------------------------------------- */

/* The member @key of the object at @path in @v, which must be there. */
static struct jv *jmember(struct jv *v, const char *path, const char *key)
{
	char full[160];
	struct jv *m;

	snprintf(full, sizeof(full), "%s.%s", path, key);
	m = jget(v, full);
	if (!m)
		tap_diag("no %s", full);
	ASSERT(m != NULL);
	return m;
}

struct jv *check_phase(struct jv *run, const char *key, bool per_iter, unsigned iters)
{
	struct jv *p = jmember(run, "phases", key), *s;

	ASSERT(jnum(p, "ns") > 0);
	ASSERT(jnum(p, "ns_per_page") > 0);
	ASSERT(jbool(p, "per_iteration") == per_iter);
	s = jget(p, "samples_ns");
	ASSERT(s && s->t == J_ARR);
	ASSERT_EQ(s->n, per_iter ? iters : 1);
	for (unsigned k = 0; k < s->n; k++)
		ASSERT(s->items[k]->t == J_NUM && s->items[k]->num > 0);
	return p;
}

void check_sweep_phase(struct jv *j, const char *phase, unsigned npts)
{
	struct jv *ph = jmember(j, "sweep.backends.gpamm", phase), *v;

	v = jget(ph, "ns_per_page");
	ASSERT(v && v->t == J_ARR);
	ASSERT_EQ(v->n, npts);
	for (unsigned k = 0; k < npts; k++)
		ASSERT(v->items[k]->t == J_NUM && v->items[k]->num > 0);
	ASSERT(jnum(ph, "max_over_min") >= 1.0);
	/* flat exactly when max/min is within the limit */
	ASSERT(jbool(ph, "flat") == (jnum(ph, "max_over_min") <= jnum(j, "sweep.flat_limit")));
}

void check_peer_skipped(struct jv *j)
{
	struct jv *runs = jget(j, "points.0.runs");

	ASSERT(!strcmp(jstr(j, "peer.status"), "skipped"));
	ASSERT(strlen(jstr(j, "peer.reason")) > 0);
	ASSERT(runs && runs->t == J_ARR);
	ASSERT_EQ(runs->n, 2);
	ASSERT(!strcmp(jstr(runs->items[1], "status"), "skipped"));
	ASSERT(strlen(jstr(runs->items[1], "reason")) > 0);
	ASSERT(jget(j, "points.0.comparison") == NULL);
}
