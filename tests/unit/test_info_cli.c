// SPDX-License-Identifier: MIT
/*
 * "gpamm info" and "gpamm decode" from the outside. info --json must list
 * the six layouts of REFERENCE.md section 3 with exactly the geometry
 * written there (typed in below from the table, not computed from the
 * library, so a wrong derivation in geom.c and a wrong tool cannot agree
 * by accident), and its text table must say the same. decode --json must
 * name every bit of section 2 by its value alone, read the fields (MAT,
 * PLV, PFN at each page shift), give KVM's verdict on the entries the
 * fault path makes (0x393, 0x291) and flag the ones it never makes; its
 * "text" is the first line of the text output. Bad usage exits 2 with a
 * message and prints nothing on stdout.
 *
 * The binary is $GPAMM_BIN, or BUILD/gpamm next to this test's BUILD/tests/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/pte.h"
#include "harness/clitest.h"
#include "harness/tap.h"

/* ---- info ---------------------------------------------------------------------- */

/* REFERENCE.md section 3, row by row. */
static const struct {
	const char *name;
	unsigned page_shift, levels, entries, shifts[4], gpa_bits;
	unsigned long long huge_size;
	bool huge_top, linux_default;
} layouts[6] = {
	{ "4K/3-level", 12, 3, 512, { 12, 21, 30 }, 39, 2ULL << 20, false, false },
	{ "4K/4-level", 12, 4, 512, { 12, 21, 30, 39 }, 48, 2ULL << 20, false, false },
	{ "16K/2-level", 14, 2, 2048, { 14, 25 }, 36, 32ULL << 20, true, false },
	{ "16K/3-level", 14, 3, 2048, { 14, 25, 36 }, 47, 32ULL << 20, false, true },
	{ "64K/2-level", 16, 2, 8192, { 16, 29 }, 42, 512ULL << 20, true, false },
	{ "64K/3-level", 16, 3, 8192, { 16, 29, 42 }, 55, 512ULL << 20, false, false },
};

static void test_info_json(void)
{
	struct result r;
	struct jv *j = run_json(NULL, ARGS("info", "--json"), &r), *ls = jget(j, "layouts");
	char p[64];

	ASSERT(ls && ls->t == J_ARR);
	ASSERT_EQ(ls->n, 6);
	ASSERT_EQ(jnum(j, "pfn_end_bit"), 48);
	for (unsigned i = 0; i < 6; i++) {
		struct jv *l = ls->items[i], *sh = jget(l, "shifts");
		unsigned lv = layouts[i].levels;

		tap_diag("%s", layouts[i].name);
		ASSERT(!strcmp(jstr(l, "name"), layouts[i].name));
		ASSERT_EQ(jnum(l, "page_shift"), layouts[i].page_shift);
		ASSERT_EQ(jnum(l, "page_size"), 1ULL << layouts[i].page_shift);
		ASSERT_EQ(jnum(l, "levels"), lv);
		/* every table is one page of 8-byte entries */
		ASSERT_EQ(jnum(l, "entries"), layouts[i].entries);
		ASSERT_EQ(jnum(l, "entries") * 8, jnum(l, "page_size"));
		ASSERT_EQ(jnum(l, "bits_per_level"), layouts[i].page_shift - 3);
		ASSERT(sh && sh->t == J_ARR);
		ASSERT_EQ(sh->n, lv);
		for (unsigned k = 0; k < lv; k++) {
			snprintf(p, sizeof(p), "shifts.%u", k);
			ASSERT_EQ(jnum(l, p), layouts[i].shifts[k]);
			/* level shift i = PAGE_SHIFT + i * (PAGE_SHIFT - 3) */
			ASSERT_EQ(jnum(l, p), layouts[i].page_shift + k * (layouts[i].page_shift - 3));
		}
		ASSERT_EQ(jnum(l, "gpa_bits"), layouts[i].gpa_bits);
		ASSERT_EQ(jnum(l, "gpa_space"), 1ULL << layouts[i].gpa_bits);
		/* a huge leaf is one level above the PTE level: 2^shift[1] */
		ASSERT_EQ(jnum(l, "huge_size"), layouts[i].huge_size);
		ASSERT_EQ(jnum(l, "huge_size"), 1ULL << layouts[i].shifts[1]);
		ASSERT_EQ(jbool(l, "huge_in_top_level"), layouts[i].huge_top);
		ASSERT_EQ(jnum(l, "fault_pages"), lv - 1);
		ASSERT_EQ(jbool(l, "linux_default"), layouts[i].linux_default);
		/* only 64K/3-level addresses more than the PFN field (PALEN 48) reaches */
		ASSERT_EQ(jbool(l, "pfn_capped"), layouts[i].gpa_bits > 48);
	}
	jv_free(j);
	result_free(&r);
}

/* The text table: one row per layout, saying what the JSON says. */
static void test_info_text(void)
{
	struct result r = run_gpamm(NULL, ARGS("info"));
	unsigned rows = 0;
	char *line, *save = NULL;

	ASSERT_EQ_INT(r.status, 0);
	ASSERT_EQ(r.err[0], '\0');
	for (line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[32], page[16], unit[8], shifts[64] = "", want[64] = "";
		char want_shifts[64];
		unsigned levels, entries, gpa;
		int n = 0, i;

		if (sscanf(line, "%31s %15s %7s %u %u %n", name, page, unit, &levels, &entries, &n) != 5)
			continue;
		for (i = 0; i < 6 && strcmp(name, layouts[i].name); i++)
			;
		ASSERT(i < 6);
		rows++;
		ASSERT_EQ(levels, layouts[i].levels);
		ASSERT_EQ(entries, layouts[i].entries);
		for (unsigned k = 0; k < levels; k++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%u", k ? " " : "",
				 layouts[i].shifts[k]);
		snprintf(shifts, sizeof(shifts), "%s", line + n);
		ASSERT(!strncmp(shifts, want, strlen(want)));
		snprintf(want_shifts, sizeof(want_shifts), "%s", want);
		snprintf(want, sizeof(want), "%llu MiB", layouts[i].huge_size >> 20);
		ASSERT(strstr(line, want));
		ASSERT_EQ(strstr(line, "(top level)") != NULL, layouts[i].huge_top);
		ASSERT_EQ(strstr(line, "(Linux default)") != NULL, layouts[i].linux_default);
		/* GPA bits follow the shifts; a '*' marks the PFN cap */
		ASSERT_EQ(sscanf(shifts + strlen(want_shifts), "%u", &gpa), 1);
		ASSERT_EQ(gpa, layouts[i].gpa_bits);
		ASSERT_EQ(strstr(line, " *") != NULL, layouts[i].gpa_bits > 48);
	}
	ASSERT_EQ(rows, 6);
	result_free(&r);
}

/* Bad usage: exit 2, @msg and a pointer to --help on stderr, nothing on stdout. */
static void expect_usage(const char *const *args, const char *msg)
{
	expect_usage_error(args, ARGS(msg, "--help"));
}

static void test_info_usage(void)
{
	expect_stdout(NULL, ARGS("info", "--help"), ARGS("usage: gpamm info [--json]"));
	expect_usage(ARGS("info", "extra"), "unexpected argument 'extra'");
	expect_usage(ARGS("info", "--bogus"), "unknown option '--bogus'");
	expect_usage(ARGS("info", "--json=yes"), "takes no value");
}

/* ---- decode ------------------------------------------------------------------------ */

/* Decode one value with @opt (or none) and return its entry; *@all to free. */
static struct jv *decode1(const char *value, const char *opt, const char *shift,
			  struct jv **all)
{
	struct result r = shift ? run_gpamm(NULL, ARGS("decode", "--json", "--page-shift", shift,
						      opt ? opt : "--json", value))
				: run_gpamm(NULL, ARGS("decode", "--json", opt ? opt : "--json",
						      value));
	struct jv *j = json_ok(&r);

	result_free(&r);
	ASSERT_EQ(jget(j, "entries")->n, 1);
	*all = j;
	return jget(j, "entries.0");
}

/* @e's flags are exactly @names (in the order the library prints them). */
static void flags_are(struct jv *e, const char *const *names)
{
	struct jv *f = jget(e, "flags");
	unsigned n = 0;

	ASSERT(f && f->t == J_ARR);
	for (; names[n]; n++) {
		if (n >= f->n || strcmp(f->items[n]->str, names[n]))
			tap_diag("flag %u: want %s, text %s", n, names[n], jstr(e, "text"));
		ASSERT(n < f->n);
		ASSERT(!strcmp(f->items[n]->str, names[n]));
	}
	ASSERT_EQ(f->n, n);
}

/* Every single bit of REFERENCE.md section 2 by its own name. */
static void test_decode_bit_names(void)
{
	static const struct {
		unsigned long long v;
		const char *leaf, *dir; /* the name in a leaf / with --huge */
	} bits[] = {
		{ GPAMM_PTE_VALID, "VALID", "VALID" },
		{ GPAMM_PTE_DIRTY, "DIRTY", "DIRTY" },
		{ GPAMM_PTE_GLOBAL, "GLOBAL", "HUGE" },
		{ GPAMM_PTE_PRESENT, "PRESENT", "PRESENT" },
		{ GPAMM_PTE_WRITE, "WRITE", "WRITE" },
		{ GPAMM_PTE_MODIFIED, "MODIFIED", "MODIFIED" },
		{ GPAMM_PTE_PROTNONE, "PROTNONE", "PROTNONE" },
		{ GPAMM_PTE_SPECIAL, "SPECIAL", "SPECIAL" },
		{ GPAMM_PTE_HGLOBAL, NULL, "HGLOBAL" }, /* in a leaf: PFN (4K) or unknown */
		{ GPAMM_PTE_NO_READ, "NO_READ", "NO_READ" },
		{ GPAMM_PTE_NO_EXEC, "NO_EXEC", "NO_EXEC" },
		{ GPAMM_PTE_RPLV, "RPLV", "RPLV" },
	};

	/* the exact values of section 2 */
	ASSERT_EQ(GPAMM_PTE_VALID, 0x1);
	ASSERT_EQ(GPAMM_PTE_DIRTY, 0x2);
	ASSERT_EQ(GPAMM_PTE_GLOBAL, 0x40);
	ASSERT_EQ(GPAMM_PTE_PRESENT, 0x80);
	ASSERT_EQ(GPAMM_PTE_WRITE, 0x100);
	ASSERT_EQ(GPAMM_PTE_MODIFIED, 0x200);
	ASSERT_EQ(GPAMM_PTE_PROTNONE, 0x400);
	ASSERT_EQ(GPAMM_PTE_SPECIAL, 0x800);
	ASSERT_EQ(GPAMM_PTE_HGLOBAL, 0x1000);
	for (unsigned i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
		for (int huge = 0; huge < 2; huge++) {
			const char *name = huge ? bits[i].dir : bits[i].leaf;
			char val[24];
			struct jv *all, *e;

			if (!name)
				continue;
			snprintf(val, sizeof(val), "0x%llx", bits[i].v);
			e = decode1(val, huge ? "--huge" : NULL, NULL, &all);
			flags_are(e, (const char *const[]){ name, NULL });
			ASSERT(!strcmp(jstr(e, "value"), val));
			ASSERT(jis_null(e, "unknown"));
			jv_free(all);
		}
	}
}

static void test_decode_fields(void)
{
	static const struct {
		unsigned long long v;
		const char *mat;
		unsigned plv;
	} f[] = {
		{ 0x00, "SUC", 0 }, { 0x10, "CC", 0 }, { 0x20, "WUC", 0 }, { 0x30, "RESERVED", 0 },
		{ 0x04, "SUC", 1 }, { 0x08, "SUC", 2 }, { 0x0c, "SUC", 3 }, { 0x3c, "RESERVED", 3 },
	};
	struct jv *all, *e;
	char val[32];

	for (unsigned i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		snprintf(val, sizeof(val), "%llu", f[i].v); /* decimal input too */
		e = decode1(val, NULL, NULL, &all);
		ASSERT(!strcmp(jstr(e, "mat"), f[i].mat));
		ASSERT_EQ(jnum(e, "plv"), f[i].plv);
		flags_are(e, (const char *const[]){ NULL });
		jv_free(all);
	}
	/* the PFN starts at the page shift and ends below bit 48 */
	for (unsigned ps = 12; ps <= 16; ps += 2) {
		char shift[8];

		snprintf(shift, sizeof(shift), "%u", ps);
		snprintf(val, sizeof(val), "0x%llx",
			 (unsigned long long)gpamm_pte_mk(0x1234, ps, 0x393));
		e = decode1(val, NULL, shift, &all);
		ASSERT_EQ(jnum(all, "page_shift"), ps);
		ASSERT_EQ(jnum(e, "pfn"), 0x1234);
		ASSERT(jis_null(e, "unknown"));
		jv_free(all);
	}
	/* bits 48..60 belong to nothing: reported, never folded into the PFN */
	e = decode1("0x1000000000393", NULL, NULL, &all);
	ASSERT(!strcmp(jstr(e, "unknown"), "0x1000000000000"));
	ASSERT_EQ(jnum(e, "pfn"), 0);
	jv_free(all);
	/* the largest value there is comes back exactly (a string, not a double) */
	e = decode1("0xffffffffffffffff", NULL, NULL, &all);
	ASSERT(!strcmp(jstr(e, "value"), "0xffffffffffffffff"));
	jv_free(all);
}

/* What KVM makes of the entries the fault path installs, and of bad ones. */
static void test_decode_verdicts(void)
{
	struct jv *all, *e;

	/* after a write fault: PRESENT|VALID|CC|MODIFIED|DIRTY|WRITE */
	e = decode1("0x393", NULL, NULL, &all);
	flags_are(e, (const char *const[]){ "PRESENT", "VALID", "DIRTY", "WRITE", "MODIFIED", NULL });
	ASSERT(!strcmp(jstr(e, "mat"), "CC"));
	ASSERT(!strcmp(jstr(e, "kind"), "leaf"));
	ASSERT(jbool(e, "present") && jbool(e, "young") && jbool(e, "dirty"));
	ASSERT(jbool(e, "writeable"));
	ASSERT_EQ(jget(e, "notes")->n, 0);
	ASSERT(strstr(jstr(e, "kvm"), "coherent cached"));
	jv_free(all);

	/* after a read fault on a writable slot: clean, may be made writable */
	e = decode1("0x291", NULL, NULL, &all);
	flags_are(e, (const char *const[]){ "PRESENT", "VALID", "MODIFIED", NULL });
	ASSERT(jbool(e, "present") && jbool(e, "young"));
	ASSERT(!jbool(e, "dirty"));
	ASSERT(jbool(e, "writeable"));
	ASSERT(strstr(jstr(e, "kvm"), "clean (a write faults)"));
	ASSERT_EQ(jget(e, "notes")->n, 0);
	jv_free(all);

	/* aged: old */
	e = decode1("0x290", NULL, NULL, &all);
	ASSERT(!jbool(e, "young"));
	ASSERT(strstr(jstr(e, "kvm"), "old"));
	jv_free(all);

	/* empty, and not present but with bits */
	e = decode1("0", NULL, NULL, &all);
	ASSERT(!strcmp(jstr(e, "kind"), "empty"));
	ASSERT(!jbool(e, "present"));
	ASSERT(jis_null(e, "young") && jis_null(e, "dirty") && jis_null(e, "writeable"));
	ASSERT_EQ(jget(e, "notes")->n, 0);
	jv_free(all);
	e = decode1("0x40", NULL, NULL, &all);
	ASSERT(!strcmp(jstr(e, "kind"), "not present"));
	ASSERT_EQ(jget(e, "notes")->n, 1);
	ASSERT(strstr(jstr(e, "notes.0"), "clears an entry to 0"));
	jv_free(all);

	/* PROTNONE counts as present (pte_present), and is flagged */
	e = decode1("0x411", NULL, NULL, &all);
	ASSERT(jbool(e, "present"));
	ASSERT(strstr(jstr(e, "notes.0"), "PROTNONE"));
	jv_free(all);

	/* hardware-writable without the marker: a read-only slot made dirty */
	e = decode1("0x193", NULL, NULL, &all);
	ASSERT(jbool(e, "dirty") && !jbool(e, "writeable"));
	ASSERT(strstr(jstr(e, "notes.0"), "read-only slot must never be dirty"));
	jv_free(all);

	/* half of DIRTY|WRITE, and the reserved MAT */
	e = decode1("0x2b3", NULL, NULL, &all);
	ASSERT_EQ(jget(e, "notes")->n, 2);
	ASSERT(strstr(jstr(e, "notes.0"), "only DIRTY of DIRTY|WRITE"));
	ASSERT(strstr(jstr(e, "notes.1"), "MAT 3 is reserved"));
	jv_free(all);

	/* a huge leaf read from a directory, and a directory entry that is a table */
	e = decode1("0x13d3", "--huge", NULL, &all);
	ASSERT(jbool(all, "huge"));
	flags_are(e, (const char *const[]){ "PRESENT", "VALID", "DIRTY", "WRITE", "MODIFIED",
					    "HUGE", "HGLOBAL", NULL });
	ASSERT(!strcmp(jstr(e, "kind"), "huge leaf"));
	ASSERT_EQ(jnum(e, "pfn"), 0);
	jv_free(all);
	e = decode1("0x1234000", "--huge", NULL, &all);
	ASSERT(!strcmp(jstr(e, "kind"), "table"));
	ASSERT(jis_null(e, "present"));
	ASSERT(strstr(jstr(e, "kvm"), "next-level table"));
	jv_free(all);
	/* the same bit 6 in a leaf: GLOBAL, and a hint to try --huge */
	e = decode1("0x3d3", NULL, NULL, &all);
	ASSERT(strstr(jstr(e, "notes.0"), "--huge"));
	jv_free(all);
}

/* Several values: one entry each, in order; "text" = the text output's first line. */
static void test_decode_text_matches(void)
{
	static const char *const vals[] = { "0x393", "0x291", "0", "0x40", "0x2b3", "0x1ad3" };
	struct result rj = run_gpamm(NULL, ARGS("decode", "--json", vals[0], vals[1], vals[2],
						vals[3], vals[4], vals[5]));
	struct result rt = run_gpamm(NULL, ARGS("decode", vals[0], vals[1], vals[2], vals[3],
						vals[4], vals[5]));
	struct jv *j = json_ok(&rj);
	char *line, *save = NULL;
	unsigned k = 0;

	ASSERT_EQ_INT(rt.status, 0);
	ASSERT_EQ(jget(j, "entries")->n, 6);
	for (line = strtok_r(rt.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char p[32];

		if (line[0] == ' ') {
			/* the kvm: and note: lines, in the JSON's order */
			snprintf(p, sizeof(p), "entries.%u.kvm", k - 1);
			if (!strncmp(line, "  kvm: ", 7))
				ASSERT(!strcmp(line + 7, jstr(j, p)));
			else
				ASSERT(!strncmp(line, "  note: ", 8));
			continue;
		}
		ASSERT(k < 6);
		snprintf(p, sizeof(p), "entries.%u.text", k);
		if (strcmp(line, jstr(j, p)))
			tap_diag("text '%s' json '%s'", line, jstr(j, p));
		ASSERT(!strcmp(line, jstr(j, p)));
		k++;
	}
	ASSERT_EQ(k, 6);
	jv_free(j);
	result_free(&rj);
	result_free(&rt);
}

static void test_decode_usage(void)
{
	expect_stdout(NULL, ARGS("decode", "--help"), ARGS("usage: gpamm decode", "--json"));
	expect_usage(ARGS("decode"), "no VALUE given");
	expect_usage(ARGS("decode", "--json"), "no VALUE given");
	expect_usage(ARGS("decode", "--page-shift", "13", "0x393"), "--page-shift");
	expect_usage(ARGS("decode", "0x393", "zz"), "'zz' is not a 64-bit entry value");
	expect_usage(ARGS("decode", "-1"), "unknown option '-1'");
	expect_usage(ARGS("decode", "0x10000000000000000"), "is not a 64-bit entry value");
	expect_usage(ARGS("decode", "--page-shift"), "needs a value");
}

int main(int argc, char **argv)
{
	if (!clitest_init(argc, argv))
		return 1;
	TEST(test_info_json);
	TEST(test_info_text);
	TEST(test_info_usage);
	TEST(test_decode_bit_names);
	TEST(test_decode_fields);
	TEST(test_decode_verdicts);
	TEST(test_decode_text_matches);
	TEST(test_decode_usage);
	return tap_done();
}
