// SPDX-License-Identifier: MIT
/*
 * test_pte - the LoongArch entry helpers of gpamm/pte.h and the layout math
 * of gpamm/geom.h, checked against the literal values of REFERENCE.md
 * sections 2 and 3 rather than against each other: every bit constant, the
 * composed entries KVM installs (0x393 after a write fault, 0x291 after a
 * read fault under dirty logging), each predicate and transformation on
 * exactly the bits it owns, the PFN field for the three page sizes up to the
 * architectural bit 48 (and what happens above it), HGLOBAL in huge entries,
 * the text formatter, and the six layouts plus the ones Linux does not
 * build. Expected numbers are written out by hand from the reference so
 * that a shared mistake in a helper and its caller cannot hide.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gpamm/geom.h"
#include "gpamm/pte.h"
#include "harness/tap.h"

/* Bits 0..12 and 61..63 by their REFERENCE.md names. */
#define B_PRESENT  0x80ULL
#define B_VALID    0x1ULL
#define B_CC       0x10ULL
#define B_MODIFIED 0x200ULL
#define B_DIRTY    0x2ULL
#define B_WRITE    0x100ULL

static void test_bit_constants(void)
{
	ASSERT_EQ(GPAMM_PTE_VALID, 0x1);
	ASSERT_EQ(GPAMM_PTE_DIRTY, 0x2);
	ASSERT_EQ(GPAMM_PTE_PLV_MASK, 0xc);
	ASSERT_EQ(GPAMM_PTE_PLV_SHIFT, 2);
	ASSERT_EQ(GPAMM_PTE_MAT_MASK, 0x30);
	ASSERT_EQ(GPAMM_PTE_MAT_SUC, 0x00);
	ASSERT_EQ(GPAMM_PTE_MAT_CC, 0x10);
	ASSERT_EQ(GPAMM_PTE_MAT_WUC, 0x20);
	ASSERT_EQ(GPAMM_PTE_GLOBAL, 0x40);
	ASSERT_EQ(GPAMM_PTE_HUGE, 0x40);
	ASSERT_EQ(GPAMM_PTE_PRESENT, 0x80);
	ASSERT_EQ(GPAMM_PTE_WRITE, 0x100);
	ASSERT_EQ(GPAMM_PTE_MODIFIED, 0x200);
	ASSERT_EQ(GPAMM_PTE_PROTNONE, 0x400);
	ASSERT_EQ(GPAMM_PTE_SPECIAL, 0x800);
	ASSERT_EQ(GPAMM_PTE_HGLOBAL, 0x1000);
	ASSERT_EQ(GPAMM_PTE_PFN_END, 48);
	ASSERT_EQ(GPAMM_PTE_NO_READ, 0x2000000000000000ULL);
	ASSERT_EQ(GPAMM_PTE_NO_EXEC, 0x4000000000000000ULL);
	ASSERT_EQ(GPAMM_PTE_RPLV, 0x8000000000000000ULL);
	/* Derived names (REFERENCE §2 "Derived", §6.6). */
	ASSERT_EQ(GPAMM_PTE_READABLE, 0x1);
	ASSERT_EQ(GPAMM_PTE_WRITEABLE, 0x102);
	ASSERT_EQ(GPAMM_PTE_WR_MARKER, 0x200);
	/* PLV really is the field at bits 2-3. */
	ASSERT_EQ(3ULL << GPAMM_PTE_PLV_SHIFT, GPAMM_PTE_PLV_MASK);
}

/* The two entries the fault path builds, spelled with the library's names. */
static void test_composed_entries(void)
{
	gpamm_pte_t wr = GPAMM_PTE_PRESENT | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC |
			 GPAMM_PTE_MODIFIED | GPAMM_PTE_DIRTY | GPAMM_PTE_WRITE;
	gpamm_pte_t rd = GPAMM_PTE_PRESENT | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC |
			 GPAMM_PTE_MODIFIED;

	ASSERT_EQ(wr, 0x393);
	ASSERT_EQ(rd, 0x291);
	ASSERT_EQ(GPAMM_PTE_PRESENT | GPAMM_PTE_READABLE | GPAMM_PTE_MAT_CC |
		  GPAMM_PTE_WR_MARKER | GPAMM_PTE_WRITEABLE, 0x393);
	ASSERT_EQ(B_PRESENT | B_VALID | B_CC | B_MODIFIED | B_DIRTY | B_WRITE, 0x393);
	/* A read fault then a write fault: mkdirty turns one into the other. */
	ASSERT_EQ(gpamm_pte_mkdirty(rd), 0x393);
	ASSERT_EQ(gpamm_pte_mkclean(wr), 0x291);
}

static void test_mkclean_mkdirty(void)
{
	unsigned b;

	ASSERT_EQ(gpamm_pte_mkclean(0x393), 0x291);
	ASSERT_EQ(gpamm_pte_mkclean(0x291), 0x291);
	ASSERT_EQ(gpamm_pte_mkclean(0x102), 0);
	ASSERT_EQ(gpamm_pte_mkclean(~0ULL), ~0x102ULL);
	ASSERT_EQ(gpamm_pte_mkdirty(0), 0x102);
	ASSERT_EQ(gpamm_pte_mkdirty(0x291), 0x393);
	ASSERT_EQ(gpamm_pte_mkdirty(0x393), 0x393);
	/* Only bits 1 and 8 belong to them; MODIFIED (the marker) must survive. */
	for (b = 0; b < 64; b++) {
		gpamm_pte_t bit = 1ULL << b;
		bool owned = b == 1 || b == 8;

		ASSERT_EQ(gpamm_pte_mkclean(bit), owned ? 0 : bit);
		ASSERT_EQ(gpamm_pte_mkdirty(bit), bit | 0x102);
	}
	ASSERT_EQ(gpamm_pte_mkclean(0x200), 0x200);
}

static void test_mkold_mkyoung(void)
{
	unsigned b;

	/* Aging clears bit 0 and nothing else. */
	ASSERT_EQ(gpamm_pte_mkold(0x393), 0x392);
	ASSERT_EQ(gpamm_pte_mkold(0x392), 0x392);
	ASSERT_EQ(gpamm_pte_mkold(~0ULL), ~1ULL);
	ASSERT_EQ(gpamm_pte_mkyoung(0x392), 0x393);
	ASSERT_EQ(gpamm_pte_mkyoung(0), 1);
	for (b = 0; b < 64; b++) {
		gpamm_pte_t bit = 1ULL << b;

		ASSERT_EQ(gpamm_pte_mkold(bit), b == 0 ? 0 : bit);
		ASSERT_EQ(gpamm_pte_mkold(~bit), ~bit & ~1ULL);
		ASSERT_EQ(gpamm_pte_mkyoung(bit), bit | 1);
	}
}

static void test_mkhuge_mksmall_mat(void)
{
	ASSERT_EQ(gpamm_pte_mkhuge(0x393), 0x3d3);
	ASSERT_EQ(gpamm_pte_mksmall(0x3d3), 0x393);
	ASSERT_EQ(gpamm_pte_mksmall(~0ULL), ~0x40ULL);
	ASSERT_EQ(gpamm_pte_mat(0x393), 0x10);
	ASSERT_EQ(gpamm_pte_mat(0x3a3), 0x20);
	ASSERT_EQ(gpamm_pte_mat(0x383), 0x00);
	ASSERT_EQ(gpamm_pte_mat(~0ULL), 0x30);
}

static void test_predicates(void)
{
	unsigned b;

	/* present: PRESENT or PROTNONE, nothing else. */
	ASSERT(gpamm_pte_present(0x80));
	ASSERT(gpamm_pte_present(0x400));
	ASSERT(gpamm_pte_present(0x480));
	ASSERT(gpamm_pte_present(0x393));
	ASSERT(!gpamm_pte_present(0));
	ASSERT(!gpamm_pte_present(0x1)); /* VALID alone is not "present" */
	ASSERT(!gpamm_pte_present(~0x480ULL));
	/* young: VALID. */
	ASSERT(gpamm_pte_young(0x1));
	ASSERT(gpamm_pte_young(0x393));
	ASSERT(!gpamm_pte_young(0x392));
	ASSERT(!gpamm_pte_young(~1ULL));
	/* dirty: either hardware-write bit (__WRITEABLE); MODIFIED is not dirty. */
	ASSERT(gpamm_pte_dirty(0x2));
	ASSERT(gpamm_pte_dirty(0x100));
	ASSERT(gpamm_pte_dirty(0x393));
	ASSERT(!gpamm_pte_dirty(0x291));
	ASSERT(!gpamm_pte_dirty(0x200));
	ASSERT(!gpamm_pte_dirty(~0x102ULL));
	/* writeable marker: MODIFIED only; WRITE must not count (REFERENCE §7.7). */
	ASSERT(gpamm_pte_writeable(0x200));
	ASSERT(gpamm_pte_writeable(0x291));
	ASSERT(!gpamm_pte_writeable(0x100));
	ASSERT(!gpamm_pte_writeable(0x193));
	ASSERT(!gpamm_pte_writeable(~0x200ULL));
	/* huge: bit 6. */
	ASSERT(gpamm_pte_huge(0x40));
	ASSERT(!gpamm_pte_huge(~0x40ULL));
	/* Each single bit: which predicates it turns on. */
	for (b = 0; b < 64; b++) {
		gpamm_pte_t bit = 1ULL << b;

		ASSERT_EQ(gpamm_pte_present(bit), b == 7 || b == 10);
		ASSERT_EQ(gpamm_pte_young(bit), b == 0);
		ASSERT_EQ(gpamm_pte_dirty(bit), b == 1 || b == 8);
		ASSERT_EQ(gpamm_pte_writeable(bit), b == 9);
		ASSERT_EQ(gpamm_pte_huge(bit), b == 6);
	}
}

static void test_pfn_mask(void)
{
	ASSERT_EQ(gpamm_pte_pfn_mask(12), 0x0000fffffffff000ULL);
	ASSERT_EQ(gpamm_pte_pfn_mask(14), 0x0000ffffffffc000ULL);
	ASSERT_EQ(gpamm_pte_pfn_mask(16), 0x0000ffffffff0000ULL);
}

static void test_pfn_round_trip(void)
{
	static const unsigned shifts[] = { 12, 14, 16 };
	/* The largest PFN below bit 48, written out per shift. */
	static const uint64_t max_pfn[] = { 0xfffffffffULL, 0x3ffffffffULL, 0xffffffffULL };
	unsigned i;

	for (i = 0; i < 3; i++) {
		unsigned ps = shifts[i];
		uint64_t max = max_pfn[i];
		uint64_t pfns[] = { 0, 1, 2, 0x12345, max >> 1, max - 1, max };
		unsigned j;

		ASSERT_EQ(max, (1ULL << (48 - ps)) - 1);
		for (j = 0; j < sizeof(pfns) / sizeof(pfns[0]); j++) {
			gpamm_pte_t e = gpamm_pte_mk(pfns[j], ps, 0x393);

			ASSERT_EQ(e, (pfns[j] << ps) | 0x393);
			ASSERT_EQ(gpamm_pte_pfn(e, ps), pfns[j]);
			ASSERT_EQ(e & 0xfff, 0x393);
			/* High attribute bits ride along outside the PFN field. */
			e = gpamm_pte_mk(pfns[j], ps, GPAMM_PTE_NO_EXEC | GPAMM_PTE_RPLV | 0x80);
			ASSERT_EQ(gpamm_pte_pfn(e, ps), pfns[j]);
			ASSERT_EQ(e >> 61, 0x6);
		}
		/* The maximum PFN fills bits [ps, 48) exactly. */
		ASSERT_EQ(gpamm_pte_mk(max, ps, 0), 0x0000ffffffffffffULL & ~((1ULL << ps) - 1));
		/* Bits >= 48 of a too-large pfn are dropped, not carried into 61-63. */
		ASSERT_EQ(gpamm_pte_mk(max + 1, ps, 0), 0);
		ASSERT_EQ(gpamm_pte_mk((max + 1) | 5, ps, 0x80), (5ULL << ps) | 0x80);
		ASSERT_EQ(gpamm_pte_pfn(gpamm_pte_mk((max + 1) | 5, ps, 0x80), ps), 5);
		ASSERT_EQ(gpamm_pte_mk(~0ULL, ps, 0), gpamm_pte_pfn_mask(ps));
		ASSERT_EQ(gpamm_pte_pfn(gpamm_pte_mk(~0ULL, ps, 0), ps), max);
		/* pfn() reads only the PFN field: attribute and high bits ignored. */
		ASSERT_EQ(gpamm_pte_pfn(~0ULL & ~GPAMM_PTE_HUGE, ps), max);
		ASSERT_EQ(gpamm_pte_pfn((1ULL << ps) - 1, ps), 0);
		ASSERT_EQ(gpamm_pte_pfn(0xffff000000000000ULL, ps), 0);
	}
}

static void test_pfn_hglobal(void)
{
	/* 4K: HGLOBAL is bit 12, i.e. PFN bit 0. A huge entry's PFN is 2M
	 * aligned, so the bit is free there and must not read as PFN. */
	gpamm_pte_t huge = gpamm_pte_mk(0x200, 12, 0x80 | 0x40) | GPAMM_PTE_HGLOBAL;

	ASSERT_EQ(huge, 0x2000c0ULL | 0x1000);
	ASSERT_EQ(gpamm_pte_pfn(huge, 12), 0x200);
	/* The same bit in a small entry is PFN bit 0. */
	ASSERT_EQ(gpamm_pte_pfn(0x201080ULL, 12), 0x201);
	/* 16K and 64K: bit 12 is below the PFN field either way. */
	ASSERT_EQ(gpamm_pte_pfn(gpamm_pte_mk(0x800, 14, 0xc0) | 0x1000, 14), 0x800);
	ASSERT_EQ(gpamm_pte_pfn(gpamm_pte_mk(0x800, 14, 0x80) | 0x1000, 14), 0x800);
	ASSERT_EQ(gpamm_pte_pfn(gpamm_pte_mk(0x2000, 16, 0xc0) | 0x1000, 16), 0x2000);
	/* Huge with the maximum PFN and HGLOBAL: still the maximum minus bit 0. */
	ASSERT_EQ(gpamm_pte_pfn(0x0000fffffffff0c0ULL, 12), 0xffffffffeULL);
}

/* True if @tok is a whole space-separated word of @s. */
static bool has_token(const char *s, const char *tok)
{
	size_t n = strlen(tok);
	const char *p = s;

	while ((p = strstr(p, tok))) {
		bool start = p == s || p[-1] == ' ';
		bool end = p[n] == '\0' || p[n] == ' ';

		if (start && end)
			return true;
		p += n;
	}
	return false;
}

static void test_format(void)
{
	char buf[256], small[8];
	int n, m;

	n = gpamm_pte_format(0x393, 12, false, buf, sizeof(buf));
	ASSERT_EQ(n, strlen(buf));
	ASSERT(!strncmp(buf, "0x393", 5));
	ASSERT(buf[5] == ' ' || buf[5] == '\0');
	ASSERT(has_token(buf, "PRESENT"));
	ASSERT(has_token(buf, "VALID"));
	ASSERT(has_token(buf, "DIRTY"));
	ASSERT(has_token(buf, "WRITE"));
	ASSERT(has_token(buf, "MODIFIED"));
	ASSERT(!has_token(buf, "PROTNONE"));
	ASSERT(!has_token(buf, "SPECIAL"));
	ASSERT(!has_token(buf, "HUGE"));
	ASSERT(!has_token(buf, "GLOBAL"));

	n = gpamm_pte_format(0x291, 12, false, buf, sizeof(buf));
	ASSERT_EQ(n, strlen(buf));
	ASSERT(!has_token(buf, "DIRTY"));
	ASSERT(!has_token(buf, "WRITE"));
	ASSERT(has_token(buf, "MODIFIED"));

	n = gpamm_pte_format(0xc00, 14, false, buf, sizeof(buf));
	ASSERT_EQ(n, strlen(buf));
	ASSERT(has_token(buf, "PROTNONE"));
	ASSERT(has_token(buf, "SPECIAL"));
	ASSERT(!has_token(buf, "PRESENT"));

	/* Bit 6 is read by where the entry sits. */
	gpamm_pte_format(0xc0, 14, true, buf, sizeof(buf));
	ASSERT(has_token(buf, "HUGE"));
	ASSERT(!has_token(buf, "GLOBAL"));
	gpamm_pte_format(0xc0, 14, false, buf, sizeof(buf));
	ASSERT(has_token(buf, "GLOBAL"));
	ASSERT(!has_token(buf, "HUGE"));

	/* snprintf convention: the full length, a NUL-terminated prefix. */
	n = gpamm_pte_format(0x393, 12, false, buf, sizeof(buf));
	memset(small, 'x', sizeof(small));
	m = gpamm_pte_format(0x393, 12, false, small, sizeof(small));
	ASSERT_EQ(m, n);
	ASSERT_EQ(small[sizeof(small) - 1], '\0');
	ASSERT(!strncmp(small, buf, sizeof(small) - 1));
	memset(small, 'x', sizeof(small));
	m = gpamm_pte_format(0x393, 12, false, small, 0);
	ASSERT_EQ(m, n);
	ASSERT_EQ(small[0], 'x'); /* len 0: nothing written */
	m = gpamm_pte_format(0x393, 12, false, small, 1);
	ASSERT_EQ(m, n);
	ASSERT_EQ(small[0], '\0');
	ASSERT_EQ(small[1], 'x');
}

/* ---- geometry ----------------------------------------------------------- */

static const struct layout_expect {
	unsigned ps, levels, bpl, gpa_bits, entries;
	unsigned shift[GPAMM_MAX_LEVELS];
	uint64_t huge;
} layouts[6] = {
	/* REFERENCE.md §3, row by row. */
	{ 12, 3, 9, 39, 512, { 12, 21, 30 }, 2ULL << 20 },
	{ 12, 4, 9, 48, 512, { 12, 21, 30, 39 }, 2ULL << 20 },
	{ 14, 2, 11, 36, 2048, { 14, 25 }, 32ULL << 20 },
	{ 14, 3, 11, 47, 2048, { 14, 25, 36 }, 32ULL << 20 },
	{ 16, 2, 13, 42, 8192, { 16, 29 }, 512ULL << 20 },
	{ 16, 3, 13, 55, 8192, { 16, 29, 42 }, 512ULL << 20 },
};

static void test_geom_layouts_table(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		ASSERT_EQ(gpamm_geom_layouts[i][0], layouts[i].ps);
		ASSERT_EQ(gpamm_geom_layouts[i][1], layouts[i].levels);
	}
}

static void test_geom_init_six(void)
{
	unsigned i, l;

	for (i = 0; i < 6; i++) {
		const struct layout_expect *x = &layouts[i];
		struct gpamm_geom g;

		memset(&g, 0xa5, sizeof(g));
		ASSERT_EQ_INT(gpamm_geom_init(&g, x->ps, x->levels), 0);
		ASSERT_EQ(g.page_shift, x->ps);
		ASSERT_EQ(g.levels, x->levels);
		ASSERT_EQ(g.bits_per_level, x->bpl);
		ASSERT_EQ(g.gpa_bits, x->gpa_bits);
		ASSERT_EQ(g.entries, x->entries);
		ASSERT_EQ(g.page_size, 1ULL << x->ps);
		ASSERT_EQ(g.entries * 8ULL, g.page_size); /* a table is one page */
		for (l = 0; l < x->levels; l++) {
			ASSERT_EQ(g.shift[l], x->shift[l]);
			ASSERT_EQ(gpamm_geom_level_size(&g, l), 1ULL << x->shift[l]);
		}
		ASSERT_EQ(gpamm_geom_huge_size(&g), x->huge);
		ASSERT_EQ(gpamm_geom_space(&g), 1ULL << x->gpa_bits);
		/* The root's entries exactly cover the GPA space. */
		ASSERT_EQ((uint64_t)g.entries << x->shift[x->levels - 1], 1ULL << x->gpa_bits);
	}
}

static void test_geom_index(void)
{
	struct gpamm_geom g;
	uint64_t gpa;

	ASSERT_EQ_INT(gpamm_geom_init(&g, 12, 4), 0);
	gpa = (5ULL << 39) | (7ULL << 30) | (9ULL << 21) | (11ULL << 12) | 0x123;
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 3), 5);
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 2), 7);
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 1), 9);
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 0), 11);
	ASSERT_EQ(gpamm_geom_index(&g, (1ULL << 48) - 1, 3), 511);
	ASSERT_EQ(gpamm_geom_index(&g, (1ULL << 48) - 1, 0), 511);

	ASSERT_EQ_INT(gpamm_geom_init(&g, 16, 3), 0);
	gpa = (8191ULL << 42) | (3ULL << 29) | (8190ULL << 16) | 0xffff;
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 2), 8191);
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 1), 3);
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 0), 8190);

	ASSERT_EQ_INT(gpamm_geom_init(&g, 14, 2), 0);
	gpa = (2047ULL << 25) | (1ULL << 14);
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 1), 2047);
	ASSERT_EQ(gpamm_geom_index(&g, gpa, 0), 1);
}

static void test_geom_rejects(void)
{
	static const unsigned bad[][2] = {
		{ 12, 2 }, { 14, 4 }, { 16, 4 }, { 13, 3 }, { 12, 5 },
		{ 12, 1 }, { 14, 1 }, { 16, 1 }, { 0, 0 }, { 12, 0 },
		{ 15, 3 }, { 17, 2 }, { 11, 3 }, { 64, 3 }, { 16, 5 },
	};
	unsigned i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct gpamm_geom g, ref;

		memset(&g, 0x5a, sizeof(g));
		memcpy(&ref, &g, sizeof(g));
		ASSERT_EQ_INT(gpamm_geom_init(&g, bad[i][0], bad[i][1]), -EINVAL);
		ASSERT(!memcmp(&g, &ref, sizeof(g)));
	}
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_bit_constants);
	TEST(test_composed_entries);
	TEST(test_mkclean_mkdirty);
	TEST(test_mkold_mkyoung);
	TEST(test_mkhuge_mksmall_mat);
	TEST(test_predicates);
	TEST(test_pfn_mask);
	TEST(test_pfn_round_trip);
	TEST(test_pfn_hglobal);
	TEST(test_format);
	TEST(test_geom_layouts_table);
	TEST(test_geom_init_six);
	TEST(test_geom_index);
	TEST(test_geom_rejects);
	return tap_done();
}
