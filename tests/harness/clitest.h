/* SPDX-License-Identifier: MIT */
/*
 * Testing the gpamm command from the outside: find the built binary, run
 * it with arguments and capture its exit status, stdout and stderr, and
 * read the JSON it prints.
 *
 * The binary is $GPAMM_BIN, or BUILD/gpamm for a test at
 * BUILD/tests/<dir>/<test>; files of the source tree are looked for in
 * the parent of BUILD, then under the current directory. The JSON reader
 * handles what the command writes (objects, arrays, strings with \" \\ \n
 * \t \u00XX escapes, numbers, true/false/null); jget() takes a dotted path
 * ("runs.0.backend"). The expect_*() checks fail the current test like
 * ASSERT, after a diagnostic naming what was missing.
 *
 * Context: the test's own thread (failures end the current test).
 */
#ifndef GPAMM_CLITEST_H
#define GPAMM_CLITEST_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/* A NULL-terminated vector of strings in place: run_gpamm(NULL, ARGS("info", "--json")). */
#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

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

/* Parse a whole JSON text; NULL when it is not valid JSON. */
struct jv *json_parse(const char *text);
void jv_free(struct jv *v);
/* "a.b.0.c": object keys and array indexes; NULL when missing. */
struct jv *jget(struct jv *v, const char *path);
/* The number / string at @path; a failed test when missing or of another type. */
double jnum(struct jv *v, const char *path);
const char *jstr(struct jv *v, const char *path);
/* The true/false at @path; a failed test when missing or of another type. */
bool jbool(struct jv *v, const char *path);
/* Whether @path is there and null. */
bool jis_null(struct jv *v, const char *path);

extern char gpamm_bin[PATH_MAX];
/* Set gpamm_bin (see above). */
void find_binary(void);
/* Print the binary's path; false (after a diagnostic) when it is not executable. */
bool gpamm_bin_present(void);

/*
 * A CLI test's main() starts here: tap_init(), find_binary() and
 * gpamm_bin_present(). False when the binary is missing, after the TAP
 * lines that fail the run (see clitest_setup_failed()).
 */
bool clitest_init(int argc, char **argv);
/* Fail the run before its tests: "not ok 1 - @what" and the plan; main()'s status. */
int clitest_setup_failed(const char *what);

/*
 * The source tree: SRC (the parent of BUILD) when SRC/@probe is readable,
 * else "."; into @dir. False (after a diagnostic) when @probe is in neither.
 */
bool clitest_srcdir(char *dir, size_t len, const char *probe);
/* A whole file, NUL-terminated, its length in *@lenp if not NULL; NULL when unreadable. */
char *read_file(const char *path, size_t *lenp);

struct result {
	int status; /* exit code, or 128 + signal */
	char *out, *err;
};

/* Run "gpamm ARGS..." (NULL-terminated), with @kvm_dev as $GPAMM_KVM_DEVICE if not NULL. */
struct result run_gpamm(const char *kvm_dev, const char *const *args);
void result_free(struct result *r);

/* @r exited 0 and printed one JSON text on stdout: its value (jv_free() it). */
struct jv *json_ok(const struct result *r);
/* run_gpamm() into *@r, then json_ok(): the caller frees both. */
struct jv *run_json(const char *kvm_dev, const char *const *args, struct result *r);

/* Each of @want (NULL-terminated) is in @text. */
void expect_strings(const char *text, const char *const *want);
/* "gpamm ARGS" (run as by run_gpamm()) exits 0 with each of @want (NULL-terminated) on stdout. */
void expect_stdout(const char *kvm_dev, const char *const *args, const char *const *want);
/*
 * @r exited with @status, printed nothing on stdout, and on stderr each
 * of @msgs (NULL-terminated, at least one) and more than the first.
 */
void expect_error(const struct result *r, int status, const char *const *msgs);
/* "gpamm ARGS" is bad usage: expect_error() with status 2. */
void expect_usage_error(const char *const *args, const char *const *msgs);
/*
 * expect_usage_error() for "gpamm PREFIX... ROW..." with each row of
 * @rows, an array of @nrows rows of @width strings (NULL-terminated unless
 * full); EXPECT_USAGE_ERRORS() takes the sizes from the array.
 */
void expect_usage_errors(const char *const *prefix, const void *rows, size_t nrows, size_t width,
			 const char *const *msgs);
#define EXPECT_USAGE_ERRORS(prefix, rows, msgs)                                        \
	expect_usage_errors(prefix, rows, sizeof(rows) / sizeof((rows)[0]),            \
			    sizeof((rows)[0]) / sizeof((rows)[0][0]), msgs)

/* ---- "gpamm bench" reports (@j: the whole --json report) ---------------------------- */

/*
 * The phase @key of @run (one run of a report): there, with a time > 0, a
 * time per page > 0 and "per_iteration" as @per_iter, with one sample
 * (> 0) per iteration of @iters, or one in all. Returns the phase.
 */
struct jv *check_phase(struct jv *run, const char *key, bool per_iter, unsigned iters);
/*
 * The sweep's summary of @phase for gpamm: @npts figures (ns per page,
 * > 0), max/min >= 1, and "flat" exactly when max/min is within the
 * sweep's flat limit.
 */
void check_sweep_phase(struct jv *j, const char *phase, unsigned npts);
/*
 * A --peer kvm run without the peer: the peer says "skipped" with a
 * reason, the point's second run is its skip (with a reason), and there is
 * no comparison.
 */
void check_peer_skipped(struct jv *j);

#endif
