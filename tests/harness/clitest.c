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

char gpamm_bin[PATH_MAX];

void find_binary(void)
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
	r.out = slurp(ofd);
	r.err = slurp(efd);
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
