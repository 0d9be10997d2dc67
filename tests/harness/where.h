/* SPDX-License-Identifier: MIT */
/*
 * Checks that say where they failed. ASSERT names only the line; a test
 * that loops over layouts, cases or random steps says what it is doing
 * with WHERE(fmt, ...) (or writes tap_where itself), and CHECK, CHECK_EQ
 * and CHECK_INT print "at: <tap_where>" before they fail the test like
 * ASSERT, ASSERT_EQ and ASSERT_EQ_INT. Each argument is evaluated exactly
 * once.
 *
 * Context: the test's own thread.
 */
#ifndef GPAMM_WHERE_H
#define GPAMM_WHERE_H

#include <stdio.h>

extern char tap_where[320];

#define WHERE(...) snprintf(tap_where, sizeof(tap_where), __VA_ARGS__)

_Noreturn void where_fail_cmp(const char *file, int line, const char *expr, const char *kind,
			      unsigned long long a, unsigned long long b);
_Noreturn void where_fail_expr(const char *file, int line, const char *expr);

#define CHECK(c)                                                              \
	do {                                                                  \
		if (!(c))                                                     \
			where_fail_expr(__FILE__, __LINE__, #c);              \
	} while (0)
#define CHECK_EQ(a, b)                                                        \
	do {                                                                  \
		unsigned long long ca_ = (unsigned long long)(a);             \
		unsigned long long cb_ = (unsigned long long)(b);             \
		if (ca_ != cb_)                                               \
			where_fail_cmp(__FILE__, __LINE__, #a " == " #b, "u", ca_, cb_); \
	} while (0)
#define CHECK_INT(a, b)                                                       \
	do {                                                                  \
		long long ca_ = (long long)(a), cb_ = (long long)(b);         \
		if (ca_ != cb_)                                               \
			where_fail_cmp(__FILE__, __LINE__, #a " == " #b, "d",  \
				       (unsigned long long)ca_, (unsigned long long)cb_); \
	} while (0)

#endif
