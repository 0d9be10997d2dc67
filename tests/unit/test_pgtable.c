// SPDX-License-Identifier: MIT
/*
 * test_pgtable - every operation of gpamm/pgtable.h at the edges that broke
 * the 2023 code, in all six layouts: the first and last page of the GPA
 * space, ranges that cross a leaf-table and a root-entry boundary, single
 * pages, empty and inverted ranges, the whole space and a range ending
 * exactly at 1 << gpa_bits, unaligned byte ranges, and huge leaves touched
 * by one byte. Table pages come from gpamm_tpool so that every page is
 * accounted: maps take exactly the missing tables from the memcache, a flush
 * only unlinks (the pool's live count drops at gpamm_pgt_free_deferred, not
 * before) and everything is returned at the end. The table is also read
 * directly, through pgt->root, to check what a hardware walker would see:
 * an empty directory entry is the address of the next level's invalid
 * table, never 0. Expected results are derived from REFERENCE.md and the
 * header contracts (an operation affects every entry overlapping [start,
 * end), a huge leaf whole); the regression tests carry the names of the
 * seed defects of REFERENCE.md section 7.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/geom.h"
#include "gpamm/pgtable.h"
#include "gpamm/pte.h"
#include "harness/tap.h"
#include "harness/where.h"

/* ---- environment ---------------------------------------------------------- */

#define PROT_W (GPAMM_PTE_PRESENT | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC | \
		GPAMM_PTE_MODIFIED | GPAMM_PTE_DIRTY | GPAMM_PTE_WRITE) /* 0x393 */
#define PROT_R (GPAMM_PTE_PRESENT | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC | \
		GPAMM_PTE_MODIFIED)                                     /* 0x291 */

struct env {
	unsigned idx;
	struct gpamm_geom g;
	struct gpamm_tpool *pool;
	struct gpamm_mm_ops mm;
	struct gpamm_pgt pgt;
	struct gpamm_memcache mc;
	unsigned ps, levels;
	uint64_t pg;    /* page size */
	uint64_t H;     /* huge size = span of one leaf table */
	uint64_t R;     /* span of one root entry */
	uint64_t space; /* 1 << gpa_bits */
	/* Taken by map_expect() between its top-up and the map, so checks do
	 * not depend on how generously a top-up fills the cache. */
	uint64_t mc_before, pool_before;
	char name[24];
};

/*
 * A failed CHECK leaves the test by longjmp, past env_fini(). Pools still
 * open (they hold every table page) are destroyed after each test, so a
 * failure is not followed by a leak report that hides it.
 */
static struct gpamm_tpool *open_pools[8];
static void *walk_buf;

static void pool_track(struct gpamm_tpool *pool, bool add)
{
	unsigned i;

	for (i = 0; i < 8; i++) {
		if (add && !open_pools[i]) {
			open_pools[i] = pool;
			return;
		}
		if (!add && open_pools[i] == pool) {
			open_pools[i] = NULL;
			return;
		}
	}
}

static void reap(void)
{
	unsigned i;

	for (i = 0; i < 8; i++) {
		if (open_pools[i])
			gpamm_tpool_destroy(open_pools[i]);
		open_pools[i] = NULL;
	}
	free(walk_buf);
	walk_buf = NULL;
}

static uint64_t pool_live(const struct env *e)
{
	struct gpamm_tpool_stats st;

	gpamm_tpool_stats(e->pool, &st);
	return st.live;
}

static void env_init(struct env *e, unsigned idx)
{
	memset(e, 0, sizeof(*e));
	e->idx = idx;
	e->ps = gpamm_geom_layouts[idx][0];
	e->levels = gpamm_geom_layouts[idx][1];
	snprintf(e->name, sizeof(e->name), "%uK/%u-level", 1u << (e->ps - 10), e->levels);
	WHERE("%s init", e->name);
	CHECK_INT(gpamm_geom_init(&e->g, e->ps, e->levels), 0);
	e->pg = e->g.page_size;
	e->H = gpamm_geom_huge_size(&e->g);
	e->R = gpamm_geom_level_size(&e->g, e->levels - 1);
	e->space = gpamm_geom_space(&e->g);
	e->pool = gpamm_tpool_create(e->ps);
	CHECK(e->pool);
	pool_track(e->pool, true);
	gpamm_tpool_ops(e->pool, &e->mm);
	CHECK_INT(gpamm_pgt_init(&e->pgt, &e->g, &e->mm), 0);
	gpamm_memcache_init(&e->mc, &e->mm);
	CHECK_EQ(gpamm_pgt_live_tables(&e->pgt), 1);
	CHECK_EQ(pool_live(e), 1);
}

static void env_fini(struct env *e)
{
	struct gpamm_pgt_freelist fl = { 0 };

	WHERE("%s fini", e->name);
	gpamm_pgt_flush_range(&e->pgt, 0, UINT64_MAX, &fl);
	gpamm_pgt_free_deferred(&e->pgt, &fl);
	CHECK_EQ(gpamm_pgt_live_tables(&e->pgt), 1);
	gpamm_memcache_release(&e->mc);
	CHECK_EQ(e->mc.nr, 0);
	CHECK_EQ(pool_live(e), 1);
	gpamm_pgt_destroy(&e->pgt);
	CHECK_EQ(pool_live(e), 0);
	pool_track(e->pool, false);
	CHECK_EQ(gpamm_tpool_destroy(e->pool), 0);
	e->pool = NULL;
}

static uint64_t pfn_max(const struct env *e)
{
	return (1ULL << (GPAMM_PTE_PFN_END - e->ps)) - 1;
}

/* A distinct, realistic small entry per GPA, so mix-ups show. */
static gpamm_pte_t spte(const struct env *e, uint64_t gpa, uint64_t prot)
{
	uint64_t pfn = (((gpa >> e->ps) * 3) + 0x101) & pfn_max(e);

	return gpamm_pte_mk(pfn, e->ps, prot);
}

/* A huge entry: HUGE set, PFN aligned to the huge size. */
static gpamm_pte_t hpte(const struct env *e, uint64_t gpa, uint64_t prot)
{
	uint64_t pfn = (((gpa >> e->ps) * 5) + ((uint64_t)e->g.entries << 3)) &
		       pfn_max(e) & ~((uint64_t)e->g.entries - 1);

	return gpamm_pte_mk(pfn, e->ps, prot | GPAMM_PTE_HUGE);
}

static void topup(struct env *e)
{
	CHECK_INT(gpamm_memcache_topup(&e->mc, gpamm_pgt_map_pages(&e->pgt)), 0);
	CHECK(e->mc.nr >= gpamm_pgt_map_pages(&e->pgt));
}

static void map_expect(struct env *e, uint64_t gpa, unsigned level, gpamm_pte_t pte,
		       int expect)
{
	int ret;

	WHERE("%s map gpa=%#llx level=%u pte=%#llx", e->name,
	      (unsigned long long)gpa, level, (unsigned long long)pte);
	topup(e);
	e->mc_before = e->mc.nr;
	e->pool_before = pool_live(e);
	ret = gpamm_pgt_map(&e->pgt, gpa, level, pte, &e->mc);
	CHECK_INT(ret, expect);
}

static void expect_entry(struct env *e, uint64_t gpa, gpamm_pte_t pte, unsigned level)
{
	unsigned l = 77;
	gpamm_pte_t got;

	WHERE("%s lookup gpa=%#llx", e->name, (unsigned long long)gpa);
	got = gpamm_pgt_lookup(&e->pgt, gpa, &l);
	CHECK_EQ(got, pte);
	CHECK_EQ(l, pte ? level : 0);
	got = gpamm_pgt_lookup(&e->pgt, gpa, NULL);
	CHECK_EQ(got, pte);
}

/* Span of a table holding entries of @level. */
static uint64_t tspan(const struct env *e, unsigned level)
{
	return level + 1 < e->levels ? gpamm_geom_level_size(&e->g, level + 1) : e->space;
}

static const gpamm_pte_t *inv(const struct env *e, unsigned level)
{
	return gpamm_pgt_invalid_table(e->ps, level);
}

static bool is_none(const struct env *e, gpamm_pte_t v, unsigned level)
{
	return level ? v == (gpamm_pte_t)(uintptr_t)inv(e, level - 1) : v == 0;
}

/*
 * Read the table the way hardware does, without the library: from the
 * root, follow directory entries (the address of the next table). Checks
 * on the way that no directory entry is 0.
 */
static gpamm_pte_t hw_lookup(struct env *e, uint64_t gpa, unsigned *level)
{
	const gpamm_pte_t *t = e->pgt.root;
	unsigned l;

	for (l = e->levels - 1; ; l--) {
		gpamm_pte_t v = __atomic_load_n(&t[gpamm_geom_index(&e->g, gpa, l)],
						__ATOMIC_RELAXED);

		*level = l;
		if (l == 0)
			return v;
		CHECK(v != 0);
		if (is_none(e, v, l)) {
			*level = 0;
			return 0;
		}
		if (v & GPAMM_PTE_HUGE) {
			CHECK_EQ(l, 1);
			return v;
		}
		t = (const gpamm_pte_t *)(uintptr_t)v;
	}
}

/*
 * Count every table reachable from the root (root included), checking
 * each directory entry is a table, a huge leaf at level 1, or the invalid
 * table of the level below; never 0. Leaf entries are 0 or present.
 */
static uint64_t hw_count_tables(struct env *e, const gpamm_pte_t *t, unsigned level)
{
	uint64_t n = 1;
	unsigned i;

	for (i = 0; i < e->g.entries; i++) {
		gpamm_pte_t v = t[i];

		if (level == 0) {
			CHECK(v == 0 || gpamm_pte_present(v));
			continue;
		}
		CHECK(v != 0);
		if (is_none(e, v, level))
			continue;
		if (v & GPAMM_PTE_HUGE) {
			CHECK_EQ(level, 1);
			CHECK(gpamm_pte_present(v));
			continue;
		}
		CHECK_EQ(v & (e->pg - 1), 0); /* a table address is page aligned */
		n += hw_count_tables(e, (const gpamm_pte_t *)(uintptr_t)v, level - 1);
	}
	return n;
}

static void check_structure(struct env *e)
{
	uint64_t n = hw_count_tables(e, e->pgt.root, e->levels - 1);

	CHECK_EQ(n, gpamm_pgt_live_tables(&e->pgt));
}

/* ---- a set of tables, (level, base) ------------------------------------- */

struct tset {
	unsigned n;
	struct { unsigned level; uint64_t base; } t[64];
};

static unsigned tset_add_path(const struct env *e, struct tset *s, uint64_t gpa,
			      unsigned target)
{
	unsigned added = 0;
	int l;

	/* Tables at levels levels-2 .. target exist for a leaf at @target. */
	for (l = (int)e->levels - 2; l >= (int)target; l--) {
		uint64_t base = gpa & ~(tspan(e, (unsigned)l) - 1);
		unsigned i;

		for (i = 0; i < s->n; i++)
			if (s->t[i].level == (unsigned)l && s->t[i].base == base)
				break;
		if (i == s->n) {
			s->t[s->n].level = (unsigned)l;
			s->t[s->n].base = base;
			s->n++;
			added++;
		}
	}
	return added;
}

/* ---- flush with every check a flush allows ------------------------------ */

struct flush_res {
	uint64_t cleared;
	uint64_t unlinked;
	uint64_t per_level[GPAMM_MAX_LEVELS];
};

/*
 * Check what a flush unlinked, before it is freed: each page is still
 * there (not reused, contents intact) and empty for its level, so a walker
 * that still holds it finds no translation.
 */
static void check_freelist(struct env *e, const struct gpamm_pgt_freelist *fl,
			   struct flush_res *r)
{
	const struct gpamm_tpage *tp;
	uint64_t n = 0;
	unsigned i;

	for (tp = fl->head; tp; tp = tp->next) {
		const gpamm_pte_t *t = tp->table;

		n++;
		CHECK(n <= 1000);
		CHECK(t != NULL);
		CHECK(t != e->pgt.root);
		CHECK(tp->level + 2 <= e->levels); /* never the root's level */
		r->per_level[tp->level]++;
		for (i = 0; i < e->g.entries; i++)
			CHECK(is_none(e, t[i], tp->level));
	}
	CHECK_EQ(n, fl->nr);
}

static struct flush_res do_flush(struct env *e, uint64_t start, uint64_t end)
{
	struct gpamm_pgt_freelist fl = { 0 };
	struct flush_res r;
	uint64_t live0 = pool_live(e), tables0 = gpamm_pgt_live_tables(&e->pgt);

	memset(&r, 0, sizeof(r));
	WHERE("%s flush [%#llx, %#llx)", e->name, (unsigned long long)start,
	      (unsigned long long)end);
	r.cleared = gpamm_pgt_flush_range(&e->pgt, start, end, &fl);
	/* Unlinked, not freed: the pool still counts every page. */
	CHECK_EQ(pool_live(e), live0);
	check_freelist(e, &fl, &r);
	r.unlinked = fl.nr;
	gpamm_pgt_free_deferred(&e->pgt, &fl);
	CHECK_EQ(pool_live(e), live0 - r.unlinked);
	CHECK_EQ(gpamm_pgt_live_tables(&e->pgt), tables0 - r.unlinked);
	CHECK(gpamm_pgt_live_tables(&e->pgt) >= 1);
	return r;
}

static void check_root_empty(struct env *e)
{
	const gpamm_pte_t *want = inv(e, e->levels - 2);
	unsigned i;

	WHERE("%s root entries after flushing everything", e->name);
	CHECK(want != NULL);
	CHECK(want == e->pgt.invalid[e->levels - 2]);
	for (i = 0; i < e->g.entries; i++)
		CHECK_EQ(e->pgt.root[i], (gpamm_pte_t)(uintptr_t)want);
}

/* ---- init, invalid tables -------------------------------------------------- */

static void test_init_and_invalid_tables(void)
{
	unsigned i, l, j;

	for (i = 0; i < 6; i++) {
		struct env e, e2;

		env_init(&e, i);
		WHERE("%s invalid tables", e.name);
		for (l = 0; l + 1 < e.levels; l++) {
			const gpamm_pte_t *t = inv(&e, l);

			CHECK(t != NULL);
			CHECK(e.pgt.invalid[l] == t);
			/* A hardware walker reads it as a table: page aligned. */
			CHECK_EQ((uintptr_t)t & (e.pg - 1), 0);
			/* All entries empty: 0 at level 0, the next invalid table above. */
			for (j = 0; j < e.g.entries; j++)
				CHECK_EQ(t[j], l ? (gpamm_pte_t)(uintptr_t)inv(&e, l - 1) : 0);
			if (l)
				CHECK(t != inv(&e, l - 1));
		}
		check_root_empty(&e);
		CHECK_EQ(hw_count_tables(&e, e.pgt.root, e.levels - 1), 1);
		/* Shared: a second table of the same page size uses the same ones. */
		env_init(&e2, i);
		for (l = 0; l + 1 < e.levels; l++)
			CHECK(e2.pgt.invalid[l] == e.pgt.invalid[l]);
		CHECK(e2.pgt.root != e.pgt.root);
		env_fini(&e2);
		expect_entry(&e, 0, 0, 0);
		expect_entry(&e, e.space - e.pg, 0, 0);
		CHECK(!gpamm_pgt_test_young(&e.pgt, 0, UINT64_MAX));
		env_fini(&e);
	}
}

static void test_init_enomem(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct gpamm_geom g;
		struct gpamm_mm_ops mm;
		struct gpamm_pgt pgt;
		struct gpamm_tpool *pool;
		struct gpamm_tpool_stats st;

		WHERE("layout %u", i);
		CHECK_INT(gpamm_geom_init(&g, gpamm_geom_layouts[i][0], gpamm_geom_layouts[i][1]), 0);
		pool = gpamm_tpool_create(g.page_shift);
		CHECK(pool);
		pool_track(pool, true);
		gpamm_tpool_ops(pool, &mm);
		gpamm_tpool_fail(pool, 0, 1);
		CHECK_INT(gpamm_pgt_init(&pgt, &g, &mm), -ENOMEM);
		gpamm_tpool_stats(pool, &st);
		CHECK_EQ(st.live, 0);
		CHECK(st.failed >= 1);
		/* The injection was one-shot: the next init works. */
		CHECK_INT(gpamm_pgt_init(&pgt, &g, &mm), 0);
		CHECK_EQ(gpamm_pgt_live_tables(&pgt), 1);
		gpamm_pgt_destroy(&pgt);
		pool_track(pool, false);
		CHECK_EQ(gpamm_tpool_destroy(pool), 0);
	}
}

/* ---- map ------------------------------------------------------------------ */

static void test_map_small_paths(void)
{
	unsigned i, k;

	for (i = 0; i < 6; i++) {
		struct env e;
		struct tset ts = { 0 };
		uint64_t gpas[8];

		env_init(&e, i);
		gpas[0] = 0;
		gpas[1] = e.pg;
		gpas[2] = e.H - e.pg;
		gpas[3] = e.H;
		gpas[4] = e.R - e.pg;
		gpas[5] = e.R;
		gpas[6] = e.space / 2;
		gpas[7] = e.space - e.pg;
		env_fini(&e);

		for (k = 0; k < 8; k++) {
			uint64_t gpa = gpas[k];
			gpamm_pte_t pte, pte2;
			unsigned r, ri;

			env_init(&e, i);
			pte = spte(&e, gpa, PROT_W);
			map_expect(&e, gpa, 0, pte, 1);
			/* Exactly one table per level below the root came from the cache. */
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), e.levels);
			CHECK_EQ(e.mc.nr, e.mc_before - (e.levels - 1));
			CHECK_EQ(pool_live(&e), e.pool_before);
			expect_entry(&e, gpa, pte, 0);
			expect_entry(&e, gpa + e.pg - 1, pte, 0);
			expect_entry(&e, gpa + e.pg / 2, pte, 0);
			if (gpa)
				expect_entry(&e, gpa - 1, 0, 0);
			if (gpa + e.pg < e.space)
				expect_entry(&e, gpa + e.pg, 0, 0);
			{
				unsigned hl;

				CHECK_EQ(hw_lookup(&e, gpa, &hl), pte);
				CHECK_EQ(hl, 0);
			}
			/* The root: one table entry, every other entry the invalid table. */
			ri = gpamm_geom_index(&e.g, gpa, e.levels - 1);
			WHERE("%s root after map gpa=%#llx", e.name, (unsigned long long)gpa);
			for (r = 0; r < e.g.entries; r++) {
				gpamm_pte_t v = e.pgt.root[r];

				if (r == ri) {
					CHECK(gpamm_pgt_entry_is_table(&e.pgt, v, e.levels - 1));
					CHECK(!is_none(&e, v, e.levels - 1));
				} else {
					CHECK_EQ(v, (gpamm_pte_t)(uintptr_t)inv(&e, e.levels - 2));
					CHECK(gpamm_pgt_entry_none(&e.pgt, v, e.levels - 1));
				}
			}
			check_structure(&e);
			/* Same entry again: no change. A different one: replaced. */
			map_expect(&e, gpa, 0, pte, 0);
			pte2 = spte(&e, gpa + 7 * e.pg, PROT_R);
			CHECK(pte2 != pte);
			map_expect(&e, gpa, 0, pte2, 1);
			expect_entry(&e, gpa, pte2, 0);
			CHECK_EQ(e.mc.nr, e.mc_before);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), e.levels);
			/* A neighbour in the same leaf table needs no new table. */
			map_expect(&e, gpa ^ e.pg, 0, pte, 1);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), e.levels);
			CHECK_EQ(e.mc.nr, e.mc_before);
			expect_entry(&e, gpa, pte2, 0);
			env_fini(&e);
		}

		/* All of them in one table: tables are shared along common paths. */
		env_init(&e, i);
		for (k = 0; k < 8; k++) {
			uint64_t live = gpamm_pgt_live_tables(&e.pgt);
			unsigned added = tset_add_path(&e, &ts, gpas[k], 0), j;
			bool dup = false;

			for (j = 0; j < k; j++) /* 2-level: R == H */
				dup |= gpas[j] == gpas[k];
			map_expect(&e, gpas[k], 0, spte(&e, gpas[k], PROT_W), dup ? 0 : 1);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), live + added);
			CHECK_EQ(e.mc.nr, e.mc_before - added);
		}
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1 + ts.n);
		check_structure(&e);
		for (k = 0; k < 8; k++)
			expect_entry(&e, gpas[k], spte(&e, gpas[k], PROT_W), 0);
		env_fini(&e);
	}
}

static void test_map_huge(void)
{
	unsigned i, k;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t blocks[4];

		env_init(&e, i);
		blocks[0] = 0;
		blocks[1] = e.R > e.H ? e.R - e.H : e.H;
		blocks[2] = e.R < e.space / 2 ? e.R : e.space / 2;
		blocks[3] = e.space - e.H;
		env_fini(&e);

		for (k = 0; k < 4; k++) {
			uint64_t b = blocks[k], tables0;
			gpamm_pte_t pte, pte2;
			unsigned hl;

			env_init(&e, i);
			pte = hpte(&e, b, PROT_W);
			map_expect(&e, b, 1, pte, 1);
			/* Tables at levels levels-2 .. 1: none in 2-level layouts. */
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), e.levels - 1);
			CHECK_EQ(e.mc.nr, e.mc_before - (e.levels - 2));
			CHECK_EQ(pool_live(&e), e.pool_before);
			expect_entry(&e, b, pte, 1);
			expect_entry(&e, b + e.pg, pte, 1);
			expect_entry(&e, b + e.H / 2 + 3, pte, 1);
			expect_entry(&e, b + e.H - 1, pte, 1);
			if (b)
				expect_entry(&e, b - 1, 0, 0);
			if (b + e.H < e.space)
				expect_entry(&e, b + e.H, 0, 0);
			CHECK_EQ(hw_lookup(&e, b + e.H - e.pg, &hl), pte);
			CHECK_EQ(hl, 1);
			if (e.levels == 2) /* the block lives in the root itself */
				CHECK_EQ(e.pgt.root[gpamm_geom_index(&e.g, b, 1)], pte);
			check_structure(&e);

			/* A small page inside the huge leaf: -EEXIST, nothing changes. */
			tables0 = gpamm_pgt_live_tables(&e.pgt);
			map_expect(&e, b, 0, spte(&e, b, PROT_W), -EEXIST);
			map_expect(&e, b + e.H - e.pg, 0, spte(&e, b, PROT_W), -EEXIST);
			map_expect(&e, b + 5 * e.pg, 0, spte(&e, b, PROT_R), -EEXIST);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), tables0);
			CHECK_EQ(e.mc.nr, e.mc_before);
			CHECK_EQ(pool_live(&e), e.pool_before);
			expect_entry(&e, b + 5 * e.pg, pte, 1);
			check_structure(&e);

			/* Same again: 0; another huge entry: replaced. */
			map_expect(&e, b, 1, pte, 0);
			pte2 = hpte(&e, b + 3 * e.H, PROT_R);
			CHECK(pte2 != pte);
			map_expect(&e, b, 1, pte2, 1);
			expect_entry(&e, b + e.H - 1, pte2, 1);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), tables0);

			/* Flushing one byte of it removes all of it, and its table. */
			{
				struct flush_res r = do_flush(&e, b + e.H - 1, b + e.H);

				CHECK_EQ(r.cleared, 1);
				CHECK_EQ(r.unlinked, e.levels - 2);
			}
			expect_entry(&e, b, 0, 0);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
			check_root_empty(&e);
			env_fini(&e);
		}
	}
}

/*
 * gpamm_pgt_map_upgrade(): a fresh page is installed; over the same page
 * the entry only gains bits (a clean entry becomes dirty, a dirty one stays
 * dirty when the new entry is clean, an old one young); another page is
 * replaced and reported; bad arguments and a page inside a huge leaf fail
 * and change nothing. In every layout.
 */
static void test_map_upgrade(void)
{
	for (unsigned i = 0; i < 6; i++) {
		struct env e;
		gpamm_pte_t old, now, clean, dirty, other;
		uint64_t gpa, b;

		env_init(&e, i);
		gpa = 7 * e.pg;
		clean = spte(&e, gpa, PROT_R);
		dirty = spte(&e, gpa, PROT_W);
		other = spte(&e, gpa + 9 * e.pg, PROT_R);
		CHECK(gpamm_pte_pfn(other, e.ps) != gpamm_pte_pfn(clean, e.ps));

		topup(&e);
		CHECK_EQ(gpamm_pgt_map_upgrade(&e.pgt, gpa, clean, &e.mc, &old, &now), 1);
		CHECK_EQ(old, 0);
		CHECK_EQ(now, clean);
		/* clean -> dirty: gains DIRTY|WRITE */
		CHECK_EQ(gpamm_pgt_map_upgrade(&e.pgt, gpa, dirty, &e.mc, &old, &now), 1);
		CHECK_EQ(old, clean);
		CHECK_EQ(now, dirty);
		/* a clean entry over a dirty one: no downgrade, nothing changes */
		CHECK_EQ(gpamm_pgt_map_upgrade(&e.pgt, gpa, clean, &e.mc, &old, &now), 0);
		CHECK_EQ(old, dirty);
		CHECK_EQ(now, dirty);
		expect_entry(&e, gpa, dirty, 0);
		/* old (not VALID) -> young again, dirty kept */
		CHECK_EQ(gpamm_pgt_update_leaf(&e.pgt, gpa, 0, GPAMM_PTE_VALID, NULL, NULL), 1);
		CHECK_EQ(gpamm_pgt_map_upgrade(&e.pgt, gpa, clean, &e.mc, &old, &now), 1);
		CHECK_EQ(old, dirty & ~GPAMM_PTE_VALID);
		CHECK_EQ(now, dirty);
		/* another page: replaced, the old entry reported */
		CHECK_EQ(gpamm_pgt_map_upgrade(&e.pgt, gpa, other, &e.mc, &old, &now), 1);
		CHECK_EQ(old, dirty);
		CHECK_EQ(now, other);
		expect_entry(&e, gpa, other, 0);
		/* bad arguments: nothing changes */
		CHECK_INT(gpamm_pgt_map_upgrade(&e.pgt, gpa + 1, clean, &e.mc, &old, &now), -EINVAL);
		CHECK_INT(gpamm_pgt_map_upgrade(&e.pgt, e.space, clean, &e.mc, &old, &now), -EINVAL);
		CHECK_INT(gpamm_pgt_map_upgrade(&e.pgt, gpa, clean & ~GPAMM_PTE_PRESENT, &e.mc,
						   &old, &now), -EINVAL);
		CHECK_INT(gpamm_pgt_map_upgrade(&e.pgt, gpa, clean | GPAMM_PTE_HUGE, &e.mc, &old,
						   &now), -EINVAL);
		expect_entry(&e, gpa, other, 0);
		/* inside a huge leaf: -EEXIST */
		b = e.space - e.H;
		map_expect(&e, b, 1, hpte(&e, b, PROT_W), 1);
		CHECK_INT(gpamm_pgt_map_upgrade(&e.pgt, b + e.pg, spte(&e, b + e.pg, PROT_R), &e.mc,
						   &old, &now), -EEXIST);
		expect_entry(&e, b + e.pg, hpte(&e, b, PROT_W), 1);
		check_structure(&e);
		env_fini(&e);
	}
}

static void test_map_huge_over_table_eexist(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t b, tables0;
		gpamm_pte_t small;

		env_init(&e, i);
		b = e.H; /* second block: its own leaf table */
		small = spte(&e, b + 9 * e.pg, PROT_W);
		map_expect(&e, b + 9 * e.pg, 0, small, 1);
		tables0 = gpamm_pgt_live_tables(&e.pgt);
		/* Never over a table of small pages. */
		map_expect(&e, b, 1, hpte(&e, b, PROT_W), -EEXIST);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), tables0);
		expect_entry(&e, b + 9 * e.pg, small, 0);
		expect_entry(&e, b, 0, 0);
		/*
		 * Unmapped, the leaf table stays (unmap_range keeps tables). A
		 * huge map must still refuse: replacing the table would free it
		 * under the lock, before any TLB flush (REFERENCE §6.2).
		 */
		CHECK_EQ(gpamm_pgt_unmap_range(&e.pgt, b, b + e.H), 1);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), tables0);
		map_expect(&e, b, 1, hpte(&e, b, PROT_W), -EEXIST);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), tables0);
		expect_entry(&e, b, 0, 0);
		check_structure(&e);
		/* After a flush removed the table, the huge map goes in. */
		do_flush(&e, b, b + e.pg);
		map_expect(&e, b, 1, hpte(&e, b, PROT_W), 1);
		expect_entry(&e, b + 9 * e.pg, hpte(&e, b, PROT_W), 1);
		check_structure(&e);
		env_fini(&e);
	}
}

static void test_map_einval(void)
{
	unsigned i, k;

	for (i = 0; i < 6; i++) {
		struct env e;
		struct {
			uint64_t gpa;
			unsigned level;
			gpamm_pte_t pte;
		} bad[20];
		unsigned n = 0;

		env_init(&e, i);
		/* Unaligned. */
		bad[n].gpa = e.pg + 1; bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W);
		bad[n].gpa = e.pg / 2; bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W);
		bad[n].gpa = e.space - 1; bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W);
		bad[n].gpa = e.pg; bad[n].level = 1; bad[n++].pte = hpte(&e, 0, PROT_W);
		bad[n].gpa = e.H + e.H / 2; bad[n].level = 1; bad[n++].pte = hpte(&e, 0, PROT_W);
		/* Out of the GPA space. */
		bad[n].gpa = e.space; bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W);
		bad[n].gpa = e.space + e.pg; bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W);
		bad[n].gpa = e.space; bad[n].level = 1; bad[n++].pte = hpte(&e, 0, PROT_W);
		bad[n].gpa = ~(e.H - 1); bad[n].level = 1; bad[n++].pte = hpte(&e, 0, PROT_W);
		bad[n].gpa = ~(e.pg - 1); bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W);
		/* Bad level. */
		bad[n].gpa = 0; bad[n].level = 2; bad[n++].pte = hpte(&e, 0, PROT_W);
		bad[n].gpa = 0; bad[n].level = 7; bad[n++].pte = spte(&e, 0, PROT_W);
		/* Not present. */
		bad[n].gpa = 0; bad[n].level = 0; bad[n++].pte = 0;
		bad[n].gpa = 0; bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W & ~GPAMM_PTE_PRESENT);
		bad[n].gpa = e.H; bad[n].level = 1;
		bad[n++].pte = hpte(&e, 0, PROT_W) & ~GPAMM_PTE_PRESENT;
		/* HUGE not matching the level. */
		bad[n].gpa = 0; bad[n].level = 0; bad[n++].pte = spte(&e, 0, PROT_W) | GPAMM_PTE_HUGE;
		bad[n].gpa = e.H; bad[n].level = 1; bad[n++].pte = hpte(&e, 0, PROT_W) & ~GPAMM_PTE_HUGE;

		for (k = 0; k < n; k++) {
			map_expect(&e, bad[k].gpa, bad[k].level, bad[k].pte, -EINVAL);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
			CHECK_EQ(e.mc.nr, e.mc_before);
			CHECK_EQ(pool_live(&e), e.pool_before);
			if (bad[k].gpa < e.space)
				expect_entry(&e, bad[k].gpa, 0, 0);
		}
		check_root_empty(&e);
		env_fini(&e);
	}
}

/* Put exactly @n pages in the memcache, going through the pool. */
static void mc_set(struct env *e, unsigned n)
{
	while (e->mc.nr > n)
		e->mm.free_table(e->mm.ctx, e->mc.pages[--e->mc.nr]);
	while (e->mc.nr < n) {
		void *p = e->mm.alloc_table(e->mm.ctx);

		CHECK(p != NULL);
		e->mc.pages[e->mc.nr++] = p;
	}
}

static void test_map_enomem(void)
{
	unsigned i, k;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t gpas[3];

		env_init(&e, i);
		gpas[0] = 0;
		gpas[1] = e.space - e.pg;
		gpas[2] = e.R;
		for (k = 0; k < 3; k++) {
			unsigned have;

			/* Every short fill, down to empty: nothing is linked. */
			for (have = 0; have < e.levels - 1; have++) {
				uint64_t live0;
				int ret;

				mc_set(&e, have);
				live0 = pool_live(&e);
				WHERE("%s map gpa=%#llx with %u cached pages", e.name,
				      (unsigned long long)gpas[k], have);
				ret = gpamm_pgt_map(&e.pgt, gpas[k], 0, spte(&e, gpas[k], PROT_W), &e.mc);
				CHECK_INT(ret, -ENOMEM);
				CHECK_EQ(e.mc.nr, have);
				CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
				CHECK_EQ(pool_live(&e), live0);
				expect_entry(&e, gpas[k], 0, 0);
				check_root_empty(&e);
			}
			/* Huge maps need levels-2 new tables here. */
			for (have = 0; have + 2 < e.levels; have++) {
				int ret;

				mc_set(&e, have);
				WHERE("%s huge map gpa=%#llx with %u cached pages", e.name,
				      (unsigned long long)gpas[k], have);
				ret = gpamm_pgt_map(&e.pgt, gpas[k] & ~(e.H - 1), 1,
						    hpte(&e, gpas[k], PROT_W), &e.mc);
				CHECK_INT(ret, -ENOMEM);
				CHECK_EQ(e.mc.nr, have);
				CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
				check_root_empty(&e);
			}
		}
		/* Enough pages: it works. */
		mc_set(&e, e.levels - 1);
		map_expect(&e, 0, 0, spte(&e, 0, PROT_W), 1);
		expect_entry(&e, 0, spte(&e, 0, PROT_W), 0);
		env_fini(&e);
	}
}

/*
 * The header: @mc "must hold as many pages as the map needs ... With fewer,
 * -ENOMEM and nothing is done". A map into an existing table needs none;
 * a map that needs one more table than the cache holds changes nothing.
 */
static void test_map_memcache_need_is_exact(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		gpamm_pte_t a, b, c;
		uint64_t live;
		int ret;

		env_init(&e, i);
		a = spte(&e, 0, PROT_W);
		b = spte(&e, e.pg, PROT_W);
		map_expect(&e, 0, 0, a, 1);
		mc_set(&e, 0);
		WHERE("%s map into an existing leaf table with an empty memcache", e.name);
		ret = gpamm_pgt_map(&e.pgt, e.pg, 0, b, &e.mc);
		CHECK_INT(ret, 1);
		expect_entry(&e, e.pg, b, 0);
		/* the last page of the space: a whole new path below the root */
		mc_set(&e, e.levels - 2);
		live = gpamm_pgt_live_tables(&e.pgt);
		c = spte(&e, e.space - e.pg, PROT_W);
		WHERE("%s map needing %u tables with %u cached", e.name, e.levels - 1, e.levels - 2);
		ret = gpamm_pgt_map(&e.pgt, e.space - e.pg, 0, c, &e.mc);
		CHECK_INT(ret, -ENOMEM);
		expect_entry(&e, e.space - e.pg, 0, 0);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), live);
		CHECK_EQ(e.mc.nr, e.levels - 2);
		if (e.levels == 2) {
			/* A huge map in the root needs no table at all. */
			mc_set(&e, 0);
			ret = gpamm_pgt_map(&e.pgt, e.H, 1, hpte(&e, e.H, PROT_W), &e.mc);
			CHECK_INT(ret, 1);
		}
		env_fini(&e);
	}
}

static void test_lookup_outside_space(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		gpamm_pte_t first, last;

		env_init(&e, i);
		first = spte(&e, 0, PROT_W);
		last = spte(&e, e.space - e.pg, PROT_W);
		map_expect(&e, 0, 0, first, 1);
		map_expect(&e, e.space - e.pg, 0, last, 1);
		/* No aliasing: addresses past the space map nothing. */
		expect_entry(&e, e.space, 0, 0);
		expect_entry(&e, e.space + e.pg - 1, 0, 0);
		expect_entry(&e, 2 * e.space - e.pg, 0, 0);
		expect_entry(&e, UINT64_MAX, 0, 0);
		expect_entry(&e, UINT64_MAX & ~(e.pg - 1), 0, 0);
		expect_entry(&e, 0, first, 0);
		expect_entry(&e, e.space - 1, last, 0);
		env_fini(&e);
	}
}

/*
 * pte.h defines "present" as PRESENT or PROTNONE, and map rejects only a
 * pte that is not present: a PROTNONE entry is a valid leaf, and range
 * operations count it like any other present leaf.
 */
/*
 * The header: @pte "must have GPAMM_PTE_PRESENT (PROTNONE alone is not
 * enough)". Such a map is refused and leaves the table as it was.
 */
static void test_map_rejects_protnone_only(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		gpamm_pte_t p, h;
		uint64_t live;

		env_init(&e, i);
		p = spte(&e, e.pg, GPAMM_PTE_PROTNONE | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC |
			 GPAMM_PTE_MODIFIED | GPAMM_PTE_WRITEABLE);
		h = hpte(&e, e.H, GPAMM_PTE_PROTNONE | GPAMM_PTE_MAT_CC);
		CHECK(gpamm_pte_present(p) && gpamm_pte_present(h));
		live = gpamm_pgt_live_tables(&e.pgt);
		map_expect(&e, e.pg, 0, p, -EINVAL);
		map_expect(&e, e.H, 1, h, -EINVAL);
		expect_entry(&e, e.pg, 0, 0);
		expect_entry(&e, e.H, 0, 0);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), live);
		env_fini(&e);
	}
}

/* ---- range operations at the boundaries ------------------------------------ */

enum rop { OP_UNMAP, OP_FLUSH, OP_MKCLEAN, OP_MKOLD, OP_YOUNG, NR_OPS };
static const char *const rop_name[NR_OPS] = {
	"unmap", "flush", "mkclean", "mkold", "test_young",
};

struct pop {
	unsigned n;
	struct { uint64_t gpa; unsigned level; gpamm_pte_t pte; } e[24];
};

static void pop_add(const struct env *e, struct pop *p, uint64_t gpa, unsigned level)
{
	unsigned i, k = p->n;
	uint64_t prot = GPAMM_PTE_PRESENT | GPAMM_PTE_MAT_CC | GPAMM_PTE_MODIFIED;

	for (i = 0; i < p->n; i++)
		if (p->e[i].gpa == gpa)
			return;
	/* A mix of young/old and dirty/clean, so counts differ per op. */
	if (k % 3 != 1)
		prot |= GPAMM_PTE_VALID;
	if (k % 2 == 0)
		prot |= GPAMM_PTE_WRITEABLE;
	p->e[k].gpa = gpa;
	p->e[k].level = level;
	p->e[k].pte = level ? hpte(e, gpa, prot) : spte(e, gpa, prot);
	p->n++;
}

/* Pages at every edge: first and last GFN, both sides of a leaf-table and
 * a root-entry boundary, two huge blocks. */
static void pop_build(struct env *e, struct pop *p)
{
	unsigned i;

	p->n = 0;
	pop_add(e, p, 0, 0);
	pop_add(e, p, e->pg, 0);
	pop_add(e, p, e->H - e->pg, 0);
	pop_add(e, p, e->H, 0);
	pop_add(e, p, e->R - e->pg, 0);
	pop_add(e, p, e->R, 0);
	pop_add(e, p, e->R + e->pg, 0);
	pop_add(e, p, e->space - 2 * e->pg, 0);
	pop_add(e, p, e->space - e->pg, 0);
	pop_add(e, p, 2 * e->H, 1);
	pop_add(e, p, e->space - 4 * e->H, 1);
	for (i = 0; i < p->n; i++)
		map_expect(e, p->e[i].gpa, p->e[i].level, p->e[i].pte, 1);
}

static uint64_t entry_size(const struct env *e, unsigned level)
{
	return level ? e->H : e->pg;
}

/* The header's rule: an entry is affected iff it overlaps [start, end),
 * end clamped to the space. */
static bool overlaps(const struct env *e, uint64_t a, uint64_t size, uint64_t start,
		     uint64_t end)
{
	if (end > e->space)
		end = e->space;
	return start < end && a < end && start < a + size;
}

struct range {
	const char *name;
	uint64_t start, end;
};

static unsigned build_ranges(const struct env *e, struct range *r)
{
	unsigned n = 0;
	uint64_t pg = e->pg, H = e->H, R = e->R, S = e->space;

#define RANGE(nm, s, en) do { r[n].name = nm; r[n].start = (s); r[n].end = (en); n++; } while (0)
	RANGE("first page", 0, pg);
	RANGE("last page", S - pg, S);
	RANGE("last page to UINT64_MAX", S - pg, UINT64_MAX);
	RANGE("last page, end past space", S - pg, S + pg);
	RANGE("last huge-size bytes, end == 1<<gpa_bits", S - H, S);
	RANGE("last 4 huge-size bytes to end", S - 4 * H, S);
	RANGE("cross leaf-table boundary", H - pg, H + pg);
	RANGE("cross root-entry boundary", R - pg, R + pg);
	RANGE("cross root-entry boundary wide", R - 3 * pg, R + 3 * pg);
	RANGE("end at leaf-table boundary", H - pg, H);
	RANGE("end at root-entry boundary", R - 2 * pg, R);
	RANGE("start at root-entry boundary", R, R + pg);
	RANGE("single page", pg, 2 * pg);
	RANGE("empty start == end", H, H);
	RANGE("empty at 0", 0, 0);
	RANGE("inverted", H + pg, H - pg);
	RANGE("inverted whole", UINT64_MAX, 0);
	RANGE("beyond space", S, UINT64_MAX);
	RANGE("far beyond", UINT64_MAX - 1, UINT64_MAX);
	RANGE("whole space", 0, UINT64_MAX);
	RANGE("exactly the space", 0, S);
	RANGE("inside a huge leaf", 2 * H + 5 * pg, 2 * H + 6 * pg);
	RANGE("one byte into a huge leaf", 2 * H - pg, 2 * H + 1);
	RANGE("the byte before a huge leaf", 2 * H - 1, 2 * H);
	RANGE("last byte of a huge leaf", 3 * H - 1, 3 * H);
	RANGE("unaligned inside page 0", 1, 2);
	RANGE("unaligned across pages 0-1", pg - 1, pg + 1);
	RANGE("unaligned last page", S - pg + 1, S + 1);
	RANGE("first leaf table", 0, H);
	RANGE("second page to leaf boundary", pg, H);
	RANGE("first root entry", 0, R);
#undef RANGE
	return n;
}

static void run_range_case(unsigned idx, enum rop op, const struct range *rg)
{
	struct env e;
	struct pop p;
	struct tset after = { 0 };
	uint64_t want = 0, got = 0, tables0;
	bool young = false;
	unsigned i;

	env_init(&e, idx);
	pop_build(&e, &p);
	tables0 = gpamm_pgt_live_tables(&e.pgt);
	for (i = 0; i < p.n; i++) {
		gpamm_pte_t v = p.e[i].pte;

		if (!overlaps(&e, p.e[i].gpa, entry_size(&e, p.e[i].level), rg->start, rg->end)) {
			tset_add_path(&e, &after, p.e[i].gpa, p.e[i].level);
			continue;
		}
		switch (op) {
		case OP_UNMAP:
		case OP_FLUSH:
			want++;
			p.e[i].pte = 0;
			break;
		case OP_MKCLEAN:
			want += gpamm_pte_dirty(v);
			p.e[i].pte = gpamm_pte_mkclean(v);
			break;
		case OP_MKOLD:
			want += gpamm_pte_young(v);
			p.e[i].pte = gpamm_pte_mkold(v);
			break;
		case OP_YOUNG:
			young |= gpamm_pte_young(v);
			break;
		default:
			break;
		}
		if (p.e[i].pte)
			tset_add_path(&e, &after, p.e[i].gpa, p.e[i].level);
	}

	WHERE("%s %s %s [%#llx, %#llx)", e.name, rop_name[op], rg->name,
	      (unsigned long long)rg->start, (unsigned long long)rg->end);
	switch (op) {
	case OP_UNMAP:
		got = gpamm_pgt_unmap_range(&e.pgt, rg->start, rg->end);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), tables0);
		break;
	case OP_FLUSH: {
		struct flush_res fr = do_flush(&e, rg->start, rg->end);

		got = fr.cleared;
		WHERE("%s %s %s [%#llx, %#llx)", e.name, rop_name[op], rg->name,
		      (unsigned long long)rg->start, (unsigned long long)rg->end);
		/* What stays is exactly the paths of the surviving leaves. */
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1 + after.n);
		CHECK_EQ(fr.unlinked, tables0 - 1 - after.n);
		break;
	}
	case OP_MKCLEAN:
		got = gpamm_pgt_mkclean_range(&e.pgt, rg->start, rg->end);
		break;
	case OP_MKOLD:
		got = gpamm_pgt_mkold_range(&e.pgt, rg->start, rg->end);
		break;
	case OP_YOUNG:
		got = gpamm_pgt_test_young(&e.pgt, rg->start, rg->end);
		want = young;
		break;
	default:
		break;
	}
	CHECK_EQ(got, want);
	if (op != OP_FLUSH)
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), tables0);
	check_structure(&e);
	for (i = 0; i < p.n; i++) {
		uint64_t a = p.e[i].gpa, last = a + entry_size(&e, p.e[i].level) - e.pg;

		expect_entry(&e, a, p.e[i].pte, p.e[i].level);
		expect_entry(&e, last, p.e[i].pte, p.e[i].level);
	}
	env_fini(&e);
}

static void test_range_ops_boundaries(void)
{
	unsigned i, k, op;
	struct range r[40];

	for (i = 0; i < 6; i++) {
		struct env e;
		unsigned n;

		env_init(&e, i);
		n = build_ranges(&e, r);
		env_fini(&e);
		for (op = 0; op < NR_OPS; op++)
			for (k = 0; k < n; k++)
				run_range_case(i, (enum rop)op, &r[k]);
	}
}

/* ---- flush: tables ---------------------------------------------------------- */

static void test_flush_frees_tables(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		struct flush_res r;
		uint64_t mid, t0;

		/* a. a single page out of three: the table still holds two. */
		env_init(&e, i);
		mid = e.H / 2;
		map_expect(&e, mid - e.pg, 0, spte(&e, mid - e.pg, PROT_W), 1);
		map_expect(&e, mid, 0, spte(&e, mid, PROT_W), 1);
		map_expect(&e, mid + e.pg, 0, spte(&e, mid + e.pg, PROT_W), 1);
		t0 = gpamm_pgt_live_tables(&e.pgt);
		r = do_flush(&e, mid, mid + e.pg);
		CHECK_EQ(r.cleared, 1);
		CHECK_EQ(r.unlinked, 0);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), t0);
		expect_entry(&e, mid - e.pg, spte(&e, mid - e.pg, PROT_W), 0);
		expect_entry(&e, mid, 0, 0);
		expect_entry(&e, mid + e.pg, spte(&e, mid + e.pg, PROT_W), 0);
		env_fini(&e);

		/* b. across a leaf-table boundary, the second table kept alive. */
		env_init(&e, i);
		map_expect(&e, e.H - e.pg, 0, spte(&e, e.H - e.pg, PROT_W), 1);
		map_expect(&e, e.H, 0, spte(&e, e.H, PROT_W), 1);
		map_expect(&e, e.H + 2 * e.pg, 0, spte(&e, e.H + 2 * e.pg, PROT_W), 1);
		t0 = gpamm_pgt_live_tables(&e.pgt);
		CHECK_EQ(t0, e.levels + 1);
		r = do_flush(&e, e.H - e.pg, e.H + e.pg);
		CHECK_EQ(r.cleared, 2);
		CHECK_EQ(r.unlinked, 1);
		CHECK_EQ(r.per_level[0], 1);
		expect_entry(&e, e.H + 2 * e.pg, spte(&e, e.H + 2 * e.pg, PROT_W), 0);
		check_structure(&e);
		env_fini(&e);

		/* c. across a root-entry boundary: both paths go. */
		env_init(&e, i);
		map_expect(&e, e.R - e.pg, 0, spte(&e, e.R - e.pg, PROT_W), 1);
		map_expect(&e, e.R, 0, spte(&e, e.R, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1 + 2 * (e.levels - 1));
		r = do_flush(&e, e.R - e.pg, e.R + e.pg);
		CHECK_EQ(r.cleared, 2);
		CHECK_EQ(r.unlinked, 2 * (e.levels - 1));
		CHECK_EQ(r.per_level[0], 2);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
		check_root_empty(&e);
		env_fini(&e);

		/* d. first and last GFN, one at a time. */
		env_init(&e, i);
		map_expect(&e, 0, 0, spte(&e, 0, PROT_W), 1);
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		r = do_flush(&e, 0, e.pg);
		CHECK_EQ(r.cleared, 1);
		CHECK_EQ(r.unlinked, e.levels - 1);
		expect_entry(&e, e.space - e.pg, spte(&e, e.space - e.pg, PROT_W), 0);
		r = do_flush(&e, e.space - e.pg, e.space);
		CHECK_EQ(r.cleared, 1);
		CHECK_EQ(r.unlinked, e.levels - 1);
		check_root_empty(&e);

		/* e. a range ending exactly at 1 << gpa_bits, and past it. */
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		r = do_flush(&e, e.space - e.H, e.space);
		CHECK_EQ(r.cleared, 1);
		CHECK_EQ(r.unlinked, e.levels - 1);
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		r = do_flush(&e, e.space - e.pg, UINT64_MAX);
		CHECK_EQ(r.cleared, 1);
		CHECK_EQ(r.unlinked, e.levels - 1);
		check_root_empty(&e);

		/* f. empty and inverted ranges change nothing, not even tables. */
		map_expect(&e, e.H, 0, spte(&e, e.H, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_unmap_range(&e.pgt, e.H, e.H + e.pg), 1);
		t0 = gpamm_pgt_live_tables(&e.pgt);
		r = do_flush(&e, e.H, e.H);
		CHECK_EQ(r.cleared, 0);
		CHECK_EQ(r.unlinked, 0);
		r = do_flush(&e, e.H + e.pg, e.H);
		CHECK_EQ(r.cleared, 0);
		CHECK_EQ(r.unlinked, 0);
		r = do_flush(&e, e.space, UINT64_MAX);
		CHECK_EQ(r.cleared, 0);
		CHECK_EQ(r.unlinked, 0);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), t0);

		/* i. a table emptied by unmap goes with the next flush over it,
		 * though no leaf is cleared. */
		r = do_flush(&e, e.H + 5 * e.pg, e.H + 6 * e.pg);
		CHECK_EQ(r.cleared, 0);
		CHECK_EQ(r.unlinked, e.levels - 1);
		check_root_empty(&e);
		env_fini(&e);

		/* h. a huge leaf overlapped by one page goes whole; in 2-level
		 * layouts it sits in the root, which never goes. */
		env_init(&e, i);
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		map_expect(&e, e.H, 0, spte(&e, e.H, PROT_W), 1);
		r = do_flush(&e, 2 * e.H + e.pg, 2 * e.H + 2 * e.pg);
		CHECK_EQ(r.cleared, 1);
		CHECK_EQ(r.unlinked, 0);
		expect_entry(&e, 2 * e.H, 0, 0);
		expect_entry(&e, e.H, spte(&e, e.H, PROT_W), 0);
		check_structure(&e);
		env_fini(&e);
	}
}

static void test_flush_all_leaves_only_root(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		struct pop p;
		struct tset ts = { 0 };
		struct flush_res r;
		unsigned k;

		env_init(&e, i);
		pop_build(&e, &p);
		for (k = 0; k < p.n; k++)
			tset_add_path(&e, &ts, p.e[k].gpa, p.e[k].level);
		/* And a whole leaf table full of pages. */
		for (k = 0; k < e.g.entries; k++) {
			uint64_t gpa = e.R + 3 * e.H + k * e.pg;

			tset_add_path(&e, &ts, gpa, 0);
			map_expect(&e, gpa, 0, spte(&e, gpa, PROT_W), 1);
		}
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1 + ts.n);
		check_structure(&e);
		r = do_flush(&e, 0, UINT64_MAX);
		CHECK_EQ(r.cleared, p.n + e.g.entries);
		CHECK_EQ(r.unlinked, ts.n);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
		check_root_empty(&e);
		CHECK_EQ(hw_count_tables(&e, e.pgt.root, e.levels - 1), 1);
		for (k = 0; k < p.n; k++)
			expect_entry(&e, p.e[k].gpa, 0, 0);
		/* Nothing left to flush. */
		r = do_flush(&e, 0, UINT64_MAX);
		CHECK_EQ(r.cleared, 0);
		CHECK_EQ(r.unlinked, 0);
		env_fini(&e);
	}
}

static void test_unmap_keeps_tables(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		struct pop p;
		uint64_t t0, nr0;
		unsigned k;

		env_init(&e, i);
		pop_build(&e, &p);
		t0 = gpamm_pgt_live_tables(&e.pgt);
		nr0 = pool_live(&e);
		WHERE("%s unmap everything", e.name);
		CHECK_EQ(gpamm_pgt_unmap_range(&e.pgt, 0, UINT64_MAX), p.n);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), t0);
		CHECK_EQ(pool_live(&e), nr0);
		check_structure(&e);
		for (k = 0; k < p.n; k++)
			expect_entry(&e, p.e[k].gpa, 0, 0);
		CHECK_EQ(gpamm_pgt_unmap_range(&e.pgt, 0, UINT64_MAX), 0);
		/* The tables are reused by the next map: no new ones needed. */
		for (k = 0; k < p.n; k++)
			map_expect(&e, p.e[k].gpa, p.e[k].level, p.e[k].pte, 1);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), t0);
		env_fini(&e);
	}
}

/* ---- mkclean / mkold / test_young / update ---------------------------------- */

static void test_mkclean_values(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t a;

		env_init(&e, i);
		a = e.H - e.pg;
		map_expect(&e, a, 0, spte(&e, a, PROT_W), 1);
		map_expect(&e, e.H, 0, spte(&e, e.H, PROT_R), 1);
		map_expect(&e, e.H + e.pg, 0, spte(&e, e.H + e.pg, PROT_W & ~GPAMM_PTE_WRITE), 1);
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		WHERE("%s mkclean", e.name);
		/* 0x393 -> 0x291; an already clean entry does not count. */
		CHECK_EQ(gpamm_pgt_mkclean_range(&e.pgt, a, 3 * e.H), 3);
		expect_entry(&e, a, spte(&e, a, PROT_R), 0);
		CHECK_EQ(gpamm_pgt_lookup(&e.pgt, a, NULL) & 0xfff, 0x291);
		expect_entry(&e, e.H, spte(&e, e.H, PROT_R), 0);
		expect_entry(&e, e.H + e.pg, spte(&e, e.H + e.pg, PROT_R), 0);
		expect_entry(&e, 2 * e.H + e.H / 2, hpte(&e, 2 * e.H, PROT_R), 1);
		/* MODIFIED stays, so the next write fault may dirty it again. */
		CHECK(gpamm_pte_writeable(gpamm_pgt_lookup(&e.pgt, a, NULL)));
		CHECK_EQ(gpamm_pgt_mkclean_range(&e.pgt, 0, UINT64_MAX), 0);
		env_fini(&e);
	}
}

static void test_mkclean_mask(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t gH, k, S;
		static const struct {
			int64_t off;  /* gfn_base relative to the leaf boundary */
			uint64_t mask;
		} cases[] = {
			{ -64, 1 },
			{ -64, 1ULL << 63 },
			{ -3, 0xf },       /* crosses the leaf-table boundary */
			{ -33, 0x5555555555555555ULL },
			{ -10, ~0ULL },
			{ -1, 0x3 },
			{ 0, 0 },
			{ 7, 0x8000000000000001ULL },
			{ -64, 0xaaaaaaaaaaaaaaaaULL },
		};
		unsigned c;

		env_init(&e, i);
		gH = e.H >> e.ps;
		S = e.space >> e.ps;
		/* Pages gH-70 .. gH+70, all dirty, across a leaf-table boundary. */
		for (k = gH - 70; k < gH + 70; k++)
			map_expect(&e, k << e.ps, 0, spte(&e, k << e.ps, PROT_W), 1);
		for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
			uint64_t base = gH + (uint64_t)cases[c].off, want = 0;

			/* Bits whose page is mapped (the population is finite). */
			for (k = 0; k < 64; k++)
				want += ((cases[c].mask >> k) & 1) &&
					base + k >= gH - 70 && base + k < gH + 70;
			WHERE("%s mkclean_mask base=gH%+lld mask=%#llx", e.name,
			      (long long)cases[c].off, (unsigned long long)cases[c].mask);
			CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, base, cases[c].mask), want);
			for (k = gH - 70; k < gH + 70; k++) {
				bool bit = k >= base && k < base + 64 && ((cases[c].mask >> (k - base)) & 1);

				expect_entry(&e, k << e.ps, spte(&e, k << e.ps, bit ? PROT_R : PROT_W), 0);
			}
			/* Again: nothing left to change. */
			CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, base, cases[c].mask), 0);
			/* Make them dirty again for the next case (the map replaces). */
			for (k = gH - 70; k < gH + 70; k++) {
				gpamm_pte_t want_pte = spte(&e, k << e.ps, PROT_W);

				if (gpamm_pgt_lookup(&e.pgt, k << e.ps, NULL) != want_pte)
					map_expect(&e, k << e.ps, 0, want_pte, 1);
			}
		}

		/* Huge: any page of it cleans it whole, counted once. */
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		WHERE("%s mkclean_mask huge", e.name);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 2 * gH + 12, 1ULL << 5), 1);
		expect_entry(&e, 2 * e.H, hpte(&e, 2 * e.H, PROT_R), 1);
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 2 * gH, ~0ULL), 1);
		expect_entry(&e, 3 * e.H - e.pg, hpte(&e, 2 * e.H, PROT_R), 1);
		/* Only the bit of its first page, from below: still the whole leaf. */
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 2 * gH - 3, 1ULL << 3), 1);
		expect_entry(&e, 2 * e.H, hpte(&e, 2 * e.H, PROT_R), 1);
		/* Only the bit of its last page. */
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 3 * gH - 64, 1ULL << 63), 1);
		expect_entry(&e, 2 * e.H, hpte(&e, 2 * e.H, PROT_R), 1);
		/* Bits just around it, none in it: untouched. */
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 2 * gH - 63, 1ULL << 62), 0);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 3 * gH, ~0ULL), 0);
		expect_entry(&e, 2 * e.H, hpte(&e, 2 * e.H, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkclean_range(&e.pgt, 3 * e.H - 1, 3 * e.H), 1);
		/* Straddling its end: two bits in it, two in the (empty) next block. */
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 3 * gH - 2, 0xf), 1);
		expect_entry(&e, 2 * e.H, hpte(&e, 2 * e.H, PROT_R), 1);
		/* Huge and small pages in one mask. */
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		map_expect(&e, 2 * e.H - e.pg, 0, spte(&e, 2 * e.H - e.pg, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 2 * gH - 1, 0x7), 2);
		expect_entry(&e, 2 * e.H - e.pg, spte(&e, 2 * e.H - e.pg, PROT_R), 0);

		/* The last GFNs: bits past the space are ignored, never wrapped. */
		map_expect(&e, 0, 0, spte(&e, 0, PROT_W), 1);
		map_expect(&e, e.space - 2 * e.pg, 0, spte(&e, e.space - 2 * e.pg, PROT_W), 1);
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		WHERE("%s mkclean_mask at the end of the space", e.name);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, S, ~0ULL), 0);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, S + 1, 1), 0);
		expect_entry(&e, 0, spte(&e, 0, PROT_W), 0);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, S - 1, ~0ULL), 1);
		expect_entry(&e, e.space - e.pg, spte(&e, e.space - e.pg, PROT_R), 0);
		expect_entry(&e, e.space - 2 * e.pg, spte(&e, e.space - 2 * e.pg, PROT_W), 0);
		expect_entry(&e, 0, spte(&e, 0, PROT_W), 0);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, S - 2, ~0ULL), 1);
		expect_entry(&e, e.space - 2 * e.pg, spte(&e, e.space - 2 * e.pg, PROT_R), 0);
		expect_entry(&e, 0, spte(&e, 0, PROT_W), 0);
		/* The first GFN. */
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 0, 1), 1);
		expect_entry(&e, 0, spte(&e, 0, PROT_R), 0);
		CHECK_EQ(gpamm_pgt_mkclean_mask(&e.pgt, 0, 1), 0);
		env_fini(&e);
	}
}

static void test_mkold_values(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t a;

		env_init(&e, i);
		a = e.R - e.pg;
		map_expect(&e, a, 0, spte(&e, a, PROT_W), 1);
		map_expect(&e, e.R, 0, spte(&e, e.R, PROT_W & ~GPAMM_PTE_VALID), 1);
		map_expect(&e, e.R + e.pg, 0, spte(&e, e.R + e.pg, PROT_R), 1);
		map_expect(&e, e.space - e.H, 1, hpte(&e, e.space - e.H, PROT_W), 1);
		WHERE("%s mkold", e.name);
		CHECK_EQ(gpamm_pgt_mkold_range(&e.pgt, 0, UINT64_MAX), 3);
		/* Only bit 0 goes. */
		expect_entry(&e, a, spte(&e, a, PROT_W & ~GPAMM_PTE_VALID), 0);
		CHECK_EQ(gpamm_pgt_lookup(&e.pgt, a, NULL) & 0xfff, 0x392);
		expect_entry(&e, e.R, spte(&e, e.R, PROT_W & ~GPAMM_PTE_VALID), 0);
		expect_entry(&e, e.R + e.pg, spte(&e, e.R + e.pg, PROT_R & ~GPAMM_PTE_VALID), 0);
		expect_entry(&e, e.space - 1, hpte(&e, e.space - e.H, PROT_W & ~GPAMM_PTE_VALID), 1);
		CHECK_EQ(gpamm_pgt_mkold_range(&e.pgt, 0, UINT64_MAX), 0);
		CHECK(!gpamm_pgt_test_young(&e.pgt, 0, UINT64_MAX));
		env_fini(&e);
	}
}

static void test_test_young(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t b, old = PROT_W & ~GPAMM_PTE_VALID;

		env_init(&e, i);
		b = 2 * e.H;
		map_expect(&e, b, 1, hpte(&e, b, PROT_W), 1);
		map_expect(&e, b - e.pg, 0, spte(&e, b - e.pg, old), 1);
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		WHERE("%s test_young", e.name);
		CHECK(gpamm_pgt_test_young(&e.pgt, 0, UINT64_MAX));
		CHECK(gpamm_pgt_test_young(&e.pgt, b - e.pg, b + 1));    /* one byte of the huge */
		CHECK(gpamm_pgt_test_young(&e.pgt, b + e.H - 1, b + e.H));
		CHECK(!gpamm_pgt_test_young(&e.pgt, b - e.pg, b));       /* end is exclusive */
		CHECK(!gpamm_pgt_test_young(&e.pgt, 0, b));
		CHECK(!gpamm_pgt_test_young(&e.pgt, b + e.H, e.space - e.pg));
		CHECK(gpamm_pgt_test_young(&e.pgt, b + e.H, e.space));   /* only the last page */
		CHECK(gpamm_pgt_test_young(&e.pgt, e.space - e.pg, UINT64_MAX));
		CHECK(gpamm_pgt_test_young(&e.pgt, e.space - 1, e.space));
		CHECK(!gpamm_pgt_test_young(&e.pgt, b + 4, b + 4));       /* empty */
		CHECK(!gpamm_pgt_test_young(&e.pgt, b + e.pg, b));        /* inverted */
		CHECK(!gpamm_pgt_test_young(&e.pgt, e.space, UINT64_MAX));
		/* Testing does not age. */
		CHECK(gpamm_pgt_test_young(&e.pgt, b, b + e.pg));
		expect_entry(&e, b, hpte(&e, b, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_mkold_range(&e.pgt, b, b + 1), 1);
		CHECK(!gpamm_pgt_test_young(&e.pgt, 0, e.space - e.pg));
		env_fini(&e);
	}
}

static void test_update_leaf(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		gpamm_pte_t o, n, p0, h0;
		uint64_t a, b;
		int ret;

		env_init(&e, i);
		a = e.space - e.pg;
		b = e.H;
		p0 = spte(&e, a, PROT_R & ~GPAMM_PTE_VALID); /* 0x290 */
		h0 = hpte(&e, b, PROT_R);

		WHERE("%s update_leaf absent", e.name);
		CHECK_INT(gpamm_pgt_update_leaf(&e.pgt, a, GPAMM_PTE_VALID, 0, &o, &n), -ENOENT);
		CHECK_INT(gpamm_pgt_mkyoung(&e.pgt, 0, NULL), -ENOENT);
		CHECK_INT(gpamm_pgt_mkdirty(&e.pgt, b, NULL), -ENOENT);
		map_expect(&e, a, 0, p0, 1);
		map_expect(&e, b, 1, h0, 1);
		WHERE("%s update_leaf", e.name);
		/* A neighbour in the same (existing) leaf table, and past the space. */
		CHECK_INT(gpamm_pgt_mkyoung(&e.pgt, a - e.pg, NULL), -ENOENT);
		CHECK_INT(gpamm_pgt_mkyoung(&e.pgt, e.space, NULL), -ENOENT);
		CHECK_INT(gpamm_pgt_mkyoung(&e.pgt, UINT64_MAX, NULL), -ENOENT);

		o = n = 0xdead;
		ret = gpamm_pgt_mkyoung(&e.pgt, a + 3, &n);
		CHECK_INT(ret, 1);
		CHECK_EQ(n, p0 | GPAMM_PTE_VALID);
		expect_entry(&e, a, p0 | GPAMM_PTE_VALID, 0);
		ret = gpamm_pgt_mkyoung(&e.pgt, a, &n);
		CHECK_INT(ret, 0);
		CHECK_EQ(n, p0 | GPAMM_PTE_VALID);
		/* 0x291 -> 0x393 and back. */
		ret = gpamm_pgt_mkdirty(&e.pgt, a, &n);
		CHECK_INT(ret, 1);
		CHECK_EQ(n & 0xfff, 0x393);
		CHECK_EQ(n, spte(&e, a, PROT_W));
		ret = gpamm_pgt_mkdirty(&e.pgt, a, NULL);
		CHECK_INT(ret, 0);
		ret = gpamm_pgt_update_leaf(&e.pgt, a, 0, GPAMM_PTE_WRITEABLE, &o, &n);
		CHECK_INT(ret, 1);
		CHECK_EQ(o, spte(&e, a, PROT_W));
		CHECK_EQ(n, spte(&e, a, PROT_R));
		/* Set and clear together. */
		ret = gpamm_pgt_update_leaf(&e.pgt, a, GPAMM_PTE_SPECIAL, GPAMM_PTE_MODIFIED, &o, &n);
		CHECK_INT(ret, 1);
		CHECK_EQ(o, spte(&e, a, PROT_R));
		CHECK_EQ(n, (spte(&e, a, PROT_R) | GPAMM_PTE_SPECIAL) & ~GPAMM_PTE_MODIFIED);
		expect_entry(&e, a, n, 0);
		ret = gpamm_pgt_update_leaf(&e.pgt, a, 0, 0, &o, &n);
		CHECK_INT(ret, 0);
		CHECK_EQ(o, n);

		/* A huge leaf, through any address inside it. */
		ret = gpamm_pgt_mkdirty(&e.pgt, b + e.H - 1, &n);
		CHECK_INT(ret, 1);
		CHECK_EQ(n, hpte(&e, b, PROT_W));
		expect_entry(&e, b, hpte(&e, b, PROT_W), 1);
		ret = gpamm_pgt_update_leaf(&e.pgt, b + e.H / 2, 0, GPAMM_PTE_VALID, &o, &n);
		CHECK_INT(ret, 1);
		CHECK_EQ(o, hpte(&e, b, PROT_W));
		CHECK_EQ(n, hpte(&e, b, PROT_W) & ~GPAMM_PTE_VALID);
		expect_entry(&e, b + e.pg, n, 1);
		/* Neither neighbour changed. */
		expect_entry(&e, b - e.pg, 0, 0);
		expect_entry(&e, b + e.H, 0, 0);
		env_fini(&e);
	}
}

/* ---- the walker --------------------------------------------------------------- */

struct visit {
	uint64_t addr;
	gpamm_pte_t old;
	unsigned level, kind;
};

struct wrec {
	struct gpamm_pgt *pgt;
	uint64_t start, end; /* expected ctx->start, ctx->end */
	unsigned n, cap;
	int stop_at;         /* visit number returning ret_at, or -1 */
	int ret_at;
	bool bad_ctx;
	struct visit *v;
};

static int rec_fn(const struct gpamm_walk_ctx *ctx, enum gpamm_walk_flags visit)
{
	struct wrec *w = ctx->arg;
	unsigned k = w->n++;

	if (ctx->pgt != w->pgt || ctx->start != w->start || ctx->end != w->end ||
	    ctx->old != *ctx->ptep)
		w->bad_ctx = true;
	if (k < w->cap) {
		w->v[k].addr = ctx->addr;
		w->v[k].old = ctx->old;
		w->v[k].level = ctx->level;
		w->v[k].kind = visit;
	}
	if ((int)k == w->stop_at)
		return w->ret_at;
	return 0;
}

static void walk_check(struct env *e, struct wrec *w, uint64_t start, uint64_t end,
		       unsigned flags)
{
	uint64_t cend = end > e->space ? e->space : end, next = 0, tables = 0;
	struct { unsigned level; uint64_t addr; } stack[GPAMM_MAX_LEVELS + 1];
	/* With both PRE and POST the visits nest and can be matched up. */
	bool nest = (flags & GPAMM_WALK_TABLE_PRE) && (flags & GPAMM_WALK_TABLE_POST);
	unsigned sp = 0, k, leaves = 0;
	int ret;

	w->pgt = &e->pgt;
	w->start = start;
	w->end = cend;
	w->n = 0;
	w->stop_at = -1;
	w->bad_ctx = false;
	WHERE("%s walk [%#llx, %#llx) flags %#x", e->name, (unsigned long long)start,
	      (unsigned long long)end, flags);
	ret = gpamm_pgt_walk(&e->pgt, start, end, rec_fn, w, flags);
	CHECK_INT(ret, 0);
	CHECK(!w->bad_ctx);
	CHECK(w->n <= w->cap);
	if (start >= cend) {
		CHECK_EQ(w->n, 0);
		return;
	}
	for (k = 0; k < w->n; k++) {
		const struct visit *v = &w->v[k];
		uint64_t size = gpamm_geom_level_size(&e->g, v->level);

		CHECK(v->level < e->levels);
		CHECK_EQ(v->addr & (size - 1), 0);
		CHECK(v->addr < cend && v->addr + size > start); /* overlaps */
		if (nest && sp && v->kind != GPAMM_WALK_TABLE_POST) {
			/* Inside the table whose PRE visit came last. */
			CHECK(v->level < stack[sp - 1].level);
			CHECK(v->addr >= stack[sp - 1].addr);
			CHECK(v->addr < stack[sp - 1].addr +
			      gpamm_geom_level_size(&e->g, stack[sp - 1].level));
		}
		switch (v->kind) {
		case GPAMM_WALK_LEAF:
			CHECK(flags & GPAMM_WALK_LEAF);
			/* Leaves and empty entries tile the range, in order. */
			if (!leaves)
				CHECK(v->addr <= start);
			else
				CHECK_EQ(v->addr, next);
			next = v->addr + size;
			leaves++;
			CHECK(!gpamm_pgt_entry_is_table(&e->pgt, v->old, v->level));
			if (v->level && !is_none(e, v->old, v->level))
				CHECK(gpamm_pte_huge(v->old) && v->level == 1);
			if (gpamm_pte_present(v->old) && (v->level == 0 || gpamm_pte_huge(v->old)))
				CHECK_EQ(gpamm_pgt_lookup(&e->pgt, v->addr, NULL), v->old);
			else
				CHECK_EQ(gpamm_pgt_lookup(&e->pgt, v->addr, NULL), 0);
			break;
		case GPAMM_WALK_TABLE_PRE:
			CHECK(flags & GPAMM_WALK_TABLE_PRE);
			CHECK(gpamm_pgt_entry_is_table(&e->pgt, v->old, v->level));
			tables++;
			if (nest) {
				CHECK(sp < GPAMM_MAX_LEVELS);
				stack[sp].level = v->level;
				stack[sp].addr = v->addr;
				sp++;
			}
			break;
		case GPAMM_WALK_TABLE_POST:
			CHECK(flags & GPAMM_WALK_TABLE_POST);
			if (nest) {
				CHECK(sp > 0);
				sp--;
				CHECK_EQ(stack[sp].level, v->level);
				CHECK_EQ(stack[sp].addr, v->addr);
			} else {
				tables++;
			}
			break;
		default:
			CHECK(0);
		}
	}
	CHECK_EQ(sp, 0);
	if (flags & GPAMM_WALK_LEAF) {
		CHECK(leaves > 0);
		CHECK(next >= cend);
	} else {
		CHECK_EQ(leaves, 0);
	}
	if (start == 0 && cend == e->space &&
	    (flags & (GPAMM_WALK_TABLE_PRE | GPAMM_WALK_TABLE_POST)))
		CHECK_EQ(tables, gpamm_pgt_live_tables(&e->pgt) - 1);
}

static void test_walk(void)
{
	unsigned i;
	struct wrec w = { .cap = 1u << 18 };

	w.v = walk_buf = calloc(w.cap, sizeof(*w.v));
	ASSERT(w.v);
	for (i = 0; i < 6; i++) {
		struct env e;
		static const unsigned fl[] = {
			GPAMM_WALK_LEAF,
			GPAMM_WALK_LEAF | GPAMM_WALK_TABLE_PRE | GPAMM_WALK_TABLE_POST,
			GPAMM_WALK_TABLE_PRE,
			GPAMM_WALK_TABLE_POST,
		};
		unsigned f, r, present;
		uint64_t rs[8][2];

		env_init(&e, i);
		map_expect(&e, e.H - e.pg, 0, spte(&e, e.H - e.pg, PROT_W), 1);
		map_expect(&e, e.H, 0, spte(&e, e.H, PROT_W), 1);
		if (e.R != e.H) {
			map_expect(&e, e.R - e.pg, 0, spte(&e, e.R - e.pg, PROT_W), 1);
			map_expect(&e, e.R, 0, spte(&e, e.R, PROT_W), 1);
		}
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		map_expect(&e, 2 * e.H, 1, hpte(&e, 2 * e.H, PROT_W), 1);
		rs[0][0] = 0;                 rs[0][1] = UINT64_MAX;
		rs[1][0] = e.H - e.pg;        rs[1][1] = e.H + e.pg;
		rs[2][0] = e.R - e.pg - 1;    rs[2][1] = e.R + 1;
		rs[3][0] = e.space - e.pg;    rs[3][1] = UINT64_MAX;
		rs[4][0] = e.H;               rs[4][1] = e.H;
		rs[5][0] = e.space;           rs[5][1] = UINT64_MAX;
		rs[6][0] = e.H + e.pg;        rs[6][1] = e.H;
		rs[7][0] = 2 * e.H + 3;       rs[7][1] = 2 * e.H + 4;
		for (f = 0; f < sizeof(fl) / sizeof(fl[0]); f++)
			for (r = 0; r < 8; r++)
				walk_check(&e, &w, rs[r][0], rs[r][1], fl[f]);

		/* Every present leaf of the whole space, and nothing else. */
		walk_check(&e, &w, 0, UINT64_MAX, GPAMM_WALK_LEAF);
		present = 0;
		for (r = 0; r < w.n; r++)
			present += gpamm_pte_present(w.v[r].old) &&
				   (w.v[r].level == 0 || gpamm_pte_huge(w.v[r].old));
		CHECK_EQ(present, e.R == e.H ? 4 : 6);

		/* STOP ends the walk with success; an errno ends it with that. */
		w.n = 0;
		w.stop_at = 2;
		w.ret_at = GPAMM_WALK_STOP;
		w.start = 0;
		w.end = e.space;
		WHERE("%s walk stop", e.name);
		CHECK_INT(gpamm_pgt_walk(&e.pgt, 0, UINT64_MAX, rec_fn, &w, GPAMM_WALK_LEAF), 0);
		CHECK_EQ(w.n, 3);
		w.n = 0;
		w.stop_at = 4;
		w.ret_at = -EIO;
		CHECK_INT(gpamm_pgt_walk(&e.pgt, 0, UINT64_MAX, rec_fn, &w, GPAMM_WALK_LEAF), -EIO);
		CHECK_EQ(w.n, 5);
		w.n = 0;
		w.stop_at = 0;
		w.ret_at = -E2BIG;
		CHECK_INT(gpamm_pgt_walk(&e.pgt, 0, UINT64_MAX, rec_fn, &w,
					 GPAMM_WALK_TABLE_PRE), -E2BIG);
		CHECK_EQ(w.n, 1);
		env_fini(&e);
	}
	free(walk_buf);
	walk_buf = NULL;
}

/* ---- memcache ---------------------------------------------------------------- */

static void test_memcache_topup_failure(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		struct gpamm_tpool_stats st0, st;
		int ret;

		env_init(&e, i);
		WHERE("%s memcache", e.name);
		CHECK_INT(gpamm_memcache_topup(&e.mc, GPAMM_MEMCACHE_MAX + 1), -EINVAL);
		CHECK_EQ(e.mc.nr, 0);
		CHECK_EQ(pool_live(&e), 1);
		CHECK_INT(gpamm_memcache_topup(&e.mc, 0), 0);

		/* One page, then failures: -ENOMEM, the page obtained stays. */
		gpamm_tpool_stats(e.pool, &st0);
		gpamm_tpool_fail(e.pool, 1, 1000);
		ret = gpamm_memcache_topup(&e.mc, 3);
		CHECK_INT(ret, -ENOMEM);
		CHECK_EQ(e.mc.nr, 1);
		gpamm_tpool_stats(e.pool, &st);
		CHECK(st.failed > st0.failed);
		CHECK_EQ(st.live, 1 + 1);
		/* A map that needs more than is there does nothing. */
		if (e.levels > 2) {
			ret = gpamm_pgt_map(&e.pgt, 0, 0, spte(&e, 0, PROT_W), &e.mc);
			CHECK_INT(ret, -ENOMEM);
			CHECK_EQ(e.mc.nr, 1);
			CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
		}
		/* Injection off: a later top-up succeeds. */
		gpamm_tpool_fail(e.pool, 0, 0);
		CHECK_INT(gpamm_memcache_topup(&e.mc, 3), 0);
		CHECK(e.mc.nr >= 3);
		CHECK_EQ(pool_live(&e), 1 + e.mc.nr);
		gpamm_memcache_release(&e.mc);
		CHECK_EQ(e.mc.nr, 0);
		CHECK_EQ(pool_live(&e), 1);

		/* One-shot injection: the first fails, the next top-up works. */
		gpamm_tpool_fail(e.pool, 0, 1);
		CHECK_INT(gpamm_memcache_topup(&e.mc, 1), -ENOMEM);
		CHECK_EQ(e.mc.nr, 0);
		CHECK_EQ(pool_live(&e), 1);
		CHECK_INT(gpamm_memcache_topup(&e.mc, 1), 0);
		CHECK(e.mc.nr >= 1);
		CHECK_INT(gpamm_memcache_topup(&e.mc, GPAMM_MEMCACHE_MAX), 0);
		CHECK_EQ(e.mc.nr, GPAMM_MEMCACHE_MAX);
		CHECK_EQ(pool_live(&e), 1 + GPAMM_MEMCACHE_MAX);
		/* And the cache feeds a map. */
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		CHECK_EQ(e.mc.nr, e.mc_before - (e.levels - 1));
		CHECK_EQ(pool_live(&e), e.pool_before);
		env_fini(&e);
	}
}

/* ---- REFERENCE.md §7 regressions --------------------------------------------- */

/* §7.1: the seed hit BUG() on an empty top-level entry; 4-level crashed. */
static void test_regress_empty_top_level_entry_4level(void)
{
	struct env e;
	uint64_t a = 5ULL << 39, top = 511ULL << 39;
	unsigned i;

	env_init(&e, 1);
	CHECK_EQ(e.levels, 4);
	CHECK_EQ(e.space, 1ULL << 48);
	map_expect(&e, a, 0, spte(&e, a, PROT_W), 1);
	CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 4);
	expect_entry(&e, a, spte(&e, a, PROT_W), 0);
	/* The highest root entry: first page, last page, a huge block. */
	map_expect(&e, top, 0, spte(&e, top, PROT_W), 1);
	map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
	map_expect(&e, top + (7ULL << 30), 1, hpte(&e, top + (7ULL << 30), PROT_W), 1);
	expect_entry(&e, top, spte(&e, top, PROT_W), 0);
	expect_entry(&e, e.space - e.pg, spte(&e, e.space - e.pg, PROT_W), 0);
	expect_entry(&e, top + (7ULL << 30) + 12345, hpte(&e, top + (7ULL << 30), PROT_W), 1);
	CHECK(e.pgt.root[511] != (gpamm_pte_t)(uintptr_t)inv(&e, 2));
	CHECK(e.pgt.root[5] != (gpamm_pte_t)(uintptr_t)inv(&e, 2));
	check_structure(&e);
	env_fini(&e);

	/* The same in every layout: the highest root entry, first and last page. */
	for (i = 0; i < 6; i++) {
		uint64_t t;

		env_init(&e, i);
		t = e.space - e.R;
		map_expect(&e, t, 0, spte(&e, t, PROT_W), 1);
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		expect_entry(&e, t, spte(&e, t, PROT_W), 0);
		expect_entry(&e, e.space - e.pg, spte(&e, e.space - e.pg, PROT_W), 0);
		check_structure(&e);
		env_fini(&e);
	}
}

/* §7.2: tables were freed inside the walk, before the TLB flush. */
static void test_regress_tables_freed_before_flush(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		struct gpamm_pgt_freelist fl = { 0 };
		struct gpamm_tpool_stats st0, st1, st2;
		struct flush_res r;
		uint64_t n;

		env_init(&e, i);
		map_expect(&e, 0, 0, spte(&e, 0, PROT_W), 1);
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1 + 2 * (e.levels - 1));
		gpamm_tpool_stats(e.pool, &st0);
		WHERE("%s flush before free_deferred", e.name);
		n = gpamm_pgt_flush_range(&e.pgt, 0, UINT64_MAX, &fl);
		CHECK_EQ(n, 2);
		gpamm_tpool_stats(e.pool, &st1);
		/* Unlinked from the table, not given back to the allocator. */
		CHECK_EQ(st1.live, st0.live);
		CHECK_EQ(st1.frees, st0.frees);
		CHECK_EQ(fl.nr, 2 * (e.levels - 1));
		/* "Table pages linked in @pgt": the unlinked ones no longer are. */
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
		check_root_empty(&e);
		memset(&r, 0, sizeof(r));
		check_freelist(&e, &fl, &r);
		CHECK_EQ(r.per_level[0], 2);
		gpamm_pgt_free_deferred(&e.pgt, &fl);
		gpamm_tpool_stats(e.pool, &st2);
		CHECK_EQ(st2.live, st0.live - 2 * (e.levels - 1));
		CHECK_EQ(st2.frees, st0.frees + 2 * (e.levels - 1));
		CHECK_EQ(gpamm_pgt_live_tables(&e.pgt), 1);
		env_fini(&e);
	}
}

/* Four pages [p, p+4pg) mapped, and the page at the range end too. */
static void exclusive_end_case(struct env *e, uint64_t end, bool mkold)
{
	uint64_t p = end - 3 * e->pg, k;

	for (k = 0; k < 4; k++)
		map_expect(e, p + k * e->pg, 0, spte(e, p + k * e->pg, PROT_W), 1);
	WHERE("%s %s [%#llx, %#llx)", e->name, mkold ? "mkold" : "unmap",
	      (unsigned long long)p, (unsigned long long)end);
	if (mkold)
		CHECK_EQ(gpamm_pgt_mkold_range(&e->pgt, p, end), 3);
	else
		CHECK_EQ(gpamm_pgt_unmap_range(&e->pgt, p, end), 3);
	for (k = 0; k < 3; k++)
		expect_entry(e, p + k * e->pg,
			     mkold ? spte(e, p + k * e->pg, PROT_W & ~GPAMM_PTE_VALID) : 0, 0);
	expect_entry(e, end, spte(e, end, PROT_W), 0);
	do_flush(e, 0, UINT64_MAX);
}

static void regress_exclusive_end(bool mkold)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;

		env_init(&e, i);
		exclusive_end_case(&e, e.H / 2, mkold);
		exclusive_end_case(&e, e.H, mkold);          /* end at a leaf-table boundary */
		exclusive_end_case(&e, e.R, mkold);          /* end at a root-entry boundary */
		exclusive_end_case(&e, e.space - e.pg, mkold); /* the last page stays */
		env_fini(&e);
	}
}

/* §7.9: unmap and age touched one page too many. */
static void test_regress_exclusive_end_unmap(void)
{
	regress_exclusive_end(false);
}

static void test_regress_exclusive_end_mkold(void)
{
	regress_exclusive_end(true);
}

/* §7.9: test_age looked only at the first page of the range. */
static void test_regress_test_young_whole_range(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		uint64_t bounds[2], k;
		unsigned b;

		env_init(&e, i);
		bounds[0] = e.H;
		bounds[1] = e.R;
		for (b = 0; b < 2; b++) {
			uint64_t s = bounds[b] - 4 * e.pg, end = bounds[b] + 4 * e.pg;

			for (k = s; k <= end; k += e.pg)
				map_expect(&e, k, 0, spte(&e, k, PROT_W & ~GPAMM_PTE_VALID), 1);
			WHERE("%s test_young [%#llx, %#llx)", e.name,
			      (unsigned long long)s, (unsigned long long)end);
			CHECK(!gpamm_pgt_test_young(&e.pgt, s, end));
			/* Young only at the last page of the range. */
			CHECK_INT(gpamm_pgt_mkyoung(&e.pgt, end - e.pg, NULL), 1);
			CHECK(gpamm_pgt_test_young(&e.pgt, s, end));
			CHECK(gpamm_pgt_test_young(&e.pgt, s, end - e.pg + 1));
			CHECK(!gpamm_pgt_test_young(&e.pgt, s, end - e.pg));
			/* Only at the page just past the range: not young. */
			CHECK_EQ(gpamm_pgt_mkold_range(&e.pgt, s, end + e.pg), 1);
			CHECK_INT(gpamm_pgt_mkyoung(&e.pgt, end, NULL), 1);
			CHECK(!gpamm_pgt_test_young(&e.pgt, s, end));
			CHECK(gpamm_pgt_test_young(&e.pgt, s, end + 1));
			do_flush(&e, 0, UINT64_MAX);
		}
		/* Over the whole space, young only at the last GFN. */
		map_expect(&e, 0, 0, spte(&e, 0, PROT_W & ~GPAMM_PTE_VALID), 1);
		map_expect(&e, e.space - e.pg, 0, spte(&e, e.space - e.pg, PROT_W), 1);
		CHECK(gpamm_pgt_test_young(&e.pgt, 0, UINT64_MAX));
		CHECK(gpamm_pgt_test_young(&e.pgt, 0, e.space));
		CHECK(!gpamm_pgt_test_young(&e.pgt, 0, e.space - e.pg));
		env_fini(&e);
	}
}

/* An empty directory entry is the next level's invalid table, never 0:
 * after init, after unmap (tables stay) and after flush (parents reset). */
static void test_directory_entries_never_zero(void)
{
	unsigned i;

	for (i = 0; i < 6; i++) {
		struct env e;
		const gpamm_pte_t *t;
		gpamm_pte_t v;
		unsigned l, k;
		uint64_t gpa;

		env_init(&e, i);
		gpa = e.R + e.H + 3 * e.pg;
		map_expect(&e, gpa, 0, spte(&e, gpa, PROT_W), 1);
		/* Along the path, every entry but the one on it is empty. */
		t = e.pgt.root;
		for (l = e.levels - 1; l > 0; l--) {
			unsigned on = gpamm_geom_index(&e.g, gpa, l);

			WHERE("%s level %u table", e.name, l);
			for (k = 0; k < e.g.entries; k++) {
				v = t[k];
				CHECK(v != 0);
				if (k != on)
					CHECK_EQ(v, (gpamm_pte_t)(uintptr_t)e.pgt.invalid[l - 1]);
			}
			t = (const gpamm_pte_t *)(uintptr_t)t[on];
		}
		CHECK_EQ(t[gpamm_geom_index(&e.g, gpa, 0)], spte(&e, gpa, PROT_W));
		CHECK_EQ(gpamm_pgt_unmap_range(&e.pgt, 0, UINT64_MAX), 1);
		CHECK_EQ(t[gpamm_geom_index(&e.g, gpa, 0)], 0);
		check_structure(&e);
		do_flush(&e, 0, UINT64_MAX);
		check_root_empty(&e);
		env_fini(&e);
	}
}

/* Each test, then whatever a failure left open. */
#define RUN(fn) do { TEST(fn); reap(); } while (0)

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	RUN(test_init_and_invalid_tables);
	RUN(test_init_enomem);
	RUN(test_map_small_paths);
	RUN(test_map_huge);
	RUN(test_map_huge_over_table_eexist);
	RUN(test_map_upgrade);
	RUN(test_map_einval);
	RUN(test_map_enomem);
	RUN(test_map_memcache_need_is_exact);
	RUN(test_lookup_outside_space);
	RUN(test_map_rejects_protnone_only);
	RUN(test_range_ops_boundaries);
	RUN(test_flush_frees_tables);
	RUN(test_flush_all_leaves_only_root);
	RUN(test_unmap_keeps_tables);
	RUN(test_mkclean_values);
	RUN(test_mkclean_mask);
	RUN(test_mkold_values);
	RUN(test_test_young);
	RUN(test_update_leaf);
	RUN(test_walk);
	RUN(test_memcache_topup_failure);
	RUN(test_regress_empty_top_level_entry_4level);
	RUN(test_regress_tables_freed_before_flush);
	RUN(test_regress_exclusive_end_unmap);
	RUN(test_regress_exclusive_end_mkold);
	RUN(test_regress_test_young_whole_range);
	RUN(test_directory_entries_never_zero);
	return tap_done();
}
