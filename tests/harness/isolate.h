/* SPDX-License-Identifier: MIT */
/*
 * Tests whose body runs in a forked child, for defects that crash or hang
 * the process: the parent reports a signal, a non-zero exit or a hang
 * (after ISO_GUARD_SEC, a hang guard, never an ordering device) as a clean
 * "not ok" naming the last step() the child reached, and the other tests
 * of the binary still run. The child checks with CHECK* (fatal: the child
 * exits) and EXPECT* (it goes on, and fails at the end), never with tap's
 * ASSERT, whose longjmp would run the rest of the test list in the child.
 */
#ifndef GPAMM_ISOLATE_H
#define GPAMM_ISOLATE_H

#include <stdbool.h>
#include <stdio.h>

#define ISO_GUARD_SEC 10

/* What the child is doing now (shown if it dies or hangs). */
void step(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A failed child-side check; @fatal ends the child. */
void ck_failed(bool fatal, const char *file, int line, const char *expr, const char *detail);
/* Child: whether an EXPECT* has failed so far. */
bool iso_failed(void);
/* Run @body in a child and report how it ended (tap_fail on any failure). */
void isolate(const char *name, void (*body)(void));

#define CK__TRUE(fatal, e)                                                    \
	do {                                                                  \
		if (!(e))                                                     \
			ck_failed(fatal, __FILE__, __LINE__, #e, NULL);       \
	} while (0)

#define CK__EQ(fatal, a, b)                                                   \
	do {                                                                  \
		unsigned long long ck_a__ = (unsigned long long)(a);          \
		unsigned long long ck_b__ = (unsigned long long)(b);          \
		if (ck_a__ != ck_b__) {                                       \
			char ck_d__[160];                                     \
			snprintf(ck_d__, sizeof(ck_d__),                      \
				 "left %#llx (%llu), right %#llx (%llu)",     \
				 ck_a__, ck_a__, ck_b__, ck_b__);             \
			ck_failed(fatal, __FILE__, __LINE__, #a " == " #b, ck_d__); \
		}                                                             \
	} while (0)

#define CK__EQ_INT(fatal, a, b)                                               \
	do {                                                                  \
		long long ck_a__ = (long long)(a), ck_b__ = (long long)(b);   \
		if (ck_a__ != ck_b__) {                                       \
			char ck_d__[96];                                      \
			snprintf(ck_d__, sizeof(ck_d__), "left %lld, right %lld", \
				 ck_a__, ck_b__);                             \
			ck_failed(fatal, __FILE__, __LINE__, #a " == " #b, ck_d__); \
		}                                                             \
	} while (0)

#define CHECK(e) CK__TRUE(true, e)
#define CHECK_EQ(a, b) CK__EQ(true, a, b)
#define CHECK_EQ_INT(a, b) CK__EQ_INT(true, a, b)
#define EXPECT(e) CK__TRUE(false, e)
#define EXPECT_EQ(a, b) CK__EQ(false, a, b)
#define EXPECT_EQ_INT(a, b) CK__EQ_INT(false, a, b)

/* A test whose body runs in a forked child. */
#define ISOLATED_TEST(name)                                                   \
	static void name##_body(void);                                        \
	static void name(void)                                                \
	{                                                                     \
		isolate(#name, name##_body);                                  \
	}                                                                     \
	static void name##_body(void)

#endif
