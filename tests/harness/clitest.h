/* SPDX-License-Identifier: MIT */
/*
 * Testing the gpamm command from the outside: find the built binary, run
 * it with arguments and capture its exit status, stdout and stderr, and
 * read the JSON it prints.
 *
 * The binary is $GPAMM_BIN, or BUILD/gpamm for a test at
 * BUILD/tests/<dir>/<test>. The JSON reader handles what the command
 * writes (objects, arrays, strings with \" \\ \n \t \u00XX escapes,
 * numbers, true/false/null); jget() takes a dotted path ("runs.0.backend").
 *
 * Context: the test's own thread (failures end the current test).
 */
#ifndef GPAMM_CLITEST_H
#define GPAMM_CLITEST_H

#include <limits.h>
#include <stdbool.h>

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

extern char gpamm_bin[PATH_MAX];
/* Set gpamm_bin (see above). */
void find_binary(void);
/* Print the binary's path; false (after a diagnostic) when it is not executable. */
bool gpamm_bin_present(void);

struct result {
	int status; /* exit code, or 128 + signal */
	char *out, *err;
};

/* Run "gpamm ARGS..." (NULL-terminated), with @kvm_dev as $GPAMM_KVM_DEVICE if not NULL. */
struct result run_gpamm(const char *kvm_dev, const char *const *args);
void result_free(struct result *r);

#endif
