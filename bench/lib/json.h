/* SPDX-License-Identifier: MIT */
/*
 * A small streaming JSON writer for "gpamm bench --json": objects and
 * arrays nest, commas and indentation are handled here, strings are
 * escaped, and a number that is not finite is written as null.
 * Pass key = NULL inside an array (and for the top-level value).
 */
#ifndef GPAMM_BENCH_JSON_H
#define GPAMM_BENCH_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JW_MAX_DEPTH 32

struct jw {
	FILE *f;
	int depth;
	bool need_comma[JW_MAX_DEPTH];
};

void jw_init(struct jw *w, FILE *f);
void jw_obj(struct jw *w, const char *key);
void jw_obj_end(struct jw *w);
void jw_arr(struct jw *w, const char *key);
void jw_arr_end(struct jw *w);
void jw_str(struct jw *w, const char *key, const char *s);
void jw_num(struct jw *w, const char *key, double v);
void jw_u64(struct jw *w, const char *key, uint64_t v);
void jw_bool(struct jw *w, const char *key, bool b);
void jw_null(struct jw *w, const char *key);
/* After the top-level value: the final newline, and a flush. */
void jw_finish(struct jw *w);

#endif
