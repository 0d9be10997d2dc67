// SPDX-License-Identifier: MIT
/*
 * test_pgtable_model - a differential test of the GPA table against a flat
 * reference model, in all six layouts. The model keeps a few "windows" of
 * the GPA space as plain arrays (the first two huge blocks, two blocks
 * straddling a root-entry boundary -- for 2-level layouts one in the middle
 * of the space -- for 4-level also a level-2 boundary, and the last two
 * blocks), each entry either a small leaf or, per block, a huge leaf, plus
 * the set of tables that must exist: a map creates the path of tables down
 * to its level, an unmap leaves them, a flush clears the leaves it overlaps
 * (a huge leaf whole) and then, bottom-up, drops every table whose span
 * meets the range and that holds no leaf and no child table. Random
 * sequences of every operation (map small and huge, flush, unmap, mkclean
 * by range and by mask, mkold, test_young, update_leaf, lookup, top-up
 * failures, memcache release, deferred frees held across later operations)
 * run with ranges inside one window -- single pages, short runs, runs across
 * the window's middle table boundary, whole blocks, unaligned bytes, empty
 * and inverted -- or over the whole space. After every step the return
 * value, the entries of the affected range plus one guard page each side,
 * the live table count and the pool's page accounting are compared; every
 * 1000 steps and at the end the whole state is, with lookups over every
 * window and a full walk that finds every table and every present leaf (and
 * none outside the windows). The seed is printed; -s SEED replays a run.
 * Expectations come from the header contracts and REFERENCE.md only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/geom.h"
#include "gpamm/pgtable.h"
#include "gpamm/pte.h"
#include "harness/tap.h"
#include "harness/where.h"

#define TOTAL_OPS    1000000.0 /* across the six layouts, at scale 1 */
#define CHECK_EVERY  1000
#define MAX_WIN      4
#define MAX_TABLES   64
#define MAX_PENDING  4

/* ---- the model ---------------------------------------------------------- */

struct win {
	uint64_t base;       /* GPA, huge-aligned */
	gpamm_pte_t *small;  /* 2 * entries small leaves */
	gpamm_pte_t huge[2]; /* a huge leaf per block, or 0 */
	uint32_t nsmall[2];  /* small leaves per block */
};

struct mtable {
	unsigned level;      /* level of the entries it holds */
	uint64_t base;
};

enum op {
	OP_MAP, OP_MAP_HUGE, OP_FLUSH, OP_UNMAP, OP_MKCLEAN, OP_MASK, OP_MKOLD,
	OP_YOUNG, OP_UPDATE, OP_LOOKUP, OP_TOPUP_FAIL, OP_RELEASE, NR_OP,
};
static const char *const op_name[NR_OP] = {
	"map", "map_huge", "flush", "unmap", "mkclean", "mkclean_mask", "mkold",
	"test_young", "update_leaf", "lookup", "topup_fail", "release",
};

struct stats {
	uint64_t ops[NR_OP];
	uint64_t map_ok, map_same, map_eexist, map_enomem, huge_ok, huge_eexist;
	uint64_t tables_created, tables_removed, leaves_flushed, changed;
	uint64_t young_true, update_enoent, topup_enomem, whole_space, full_checks;
	uint64_t max_tables;
};

struct model {
	struct gpamm_geom g;
	struct gpamm_tpool *pool;
	struct gpamm_mm_ops mm;
	struct gpamm_pgt pgt;
	struct gpamm_memcache mc;
	unsigned ps, levels, nwin, ntab, npend;
	uint64_t pg, H, E, space, step;
	struct win w[MAX_WIN];
	struct mtable tab[MAX_TABLES];
	struct gpamm_pgt_freelist pend[MAX_PENDING];
	uint64_t pend_pages;
	struct tap_rng rng;
	struct stats st;
	char name[24];
};

static uint64_t rnd(struct model *m, uint64_t n)
{
	return tap_below(&m->rng, n);
}

static uint64_t pool_live(struct model *m)
{
	struct gpamm_tpool_stats s;

	gpamm_tpool_stats(m->pool, &s);
	return s.live;
}

/* Span of a table holding entries of @level. */
static uint64_t tspan(const struct model *m, unsigned level)
{
	return level + 1 < m->levels ? gpamm_geom_level_size(&m->g, level + 1) : m->space;
}

static int find_win(const struct model *m, uint64_t gpa)
{
	unsigned i;

	for (i = 0; i < m->nwin; i++)
		if (gpa >= m->w[i].base && gpa - m->w[i].base < 2 * m->H)
			return (int)i;
	return -1;
}

/* The model's entry for @gpa, and its level. */
static gpamm_pte_t model_get(const struct model *m, uint64_t gpa, unsigned *level)
{
	int wi = find_win(m, gpa);
	const struct win *w;
	uint64_t off;

	*level = 0;
	if (gpa >= m->space || wi < 0)
		return 0;
	w = &m->w[wi];
	off = gpa - w->base;
	if (w->huge[off / m->H]) {
		*level = 1;
		return w->huge[off / m->H];
	}
	return w->small[off >> m->ps];
}

static int tab_find(const struct model *m, unsigned level, uint64_t base)
{
	unsigned i;

	for (i = 0; i < m->ntab; i++)
		if (m->tab[i].level == level && m->tab[i].base == base)
			return (int)i;
	return -1;
}

/* Tables a map at @gpa, @target would create: levels-2 .. target. */
static unsigned path_missing(const struct model *m, uint64_t gpa, unsigned target)
{
	unsigned n = 0;
	int l;

	for (l = (int)m->levels - 2; l >= (int)target; l--)
		if (tab_find(m, (unsigned)l, gpa & ~(tspan(m, (unsigned)l) - 1)) < 0)
			n++;
	return n;
}

static void path_create(struct model *m, uint64_t gpa, unsigned target)
{
	int l;

	for (l = (int)m->levels - 2; l >= (int)target; l--) {
		uint64_t base = gpa & ~(tspan(m, (unsigned)l) - 1);

		if (tab_find(m, (unsigned)l, base) < 0) {
			CHECK(m->ntab < MAX_TABLES);
			m->tab[m->ntab].level = (unsigned)l;
			m->tab[m->ntab].base = base;
			m->ntab++;
		}
	}
	if (m->ntab > m->st.max_tables)
		m->st.max_tables = m->ntab;
}

/* Does the table (@level, @base) hold any leaf or child table? */
static bool table_busy(const struct model *m, unsigned level, uint64_t base)
{
	uint64_t span = tspan(m, level);
	unsigned i, b;

	if (level == 0) {
		int wi = find_win(m, base);

		/* Leaf tables only ever exist for window blocks. */
		CHECK(wi >= 0);
		return m->w[wi].nsmall[(base - m->w[wi].base) / m->H] != 0;
	}
	for (i = 0; i < m->ntab; i++)
		if (m->tab[i].level == level - 1 && m->tab[i].base >= base &&
		    m->tab[i].base - base < span)
			return true;
	if (level == 1)
		for (i = 0; i < m->nwin; i++)
			for (b = 0; b < 2; b++) {
				uint64_t a = m->w[i].base + b * m->H;

				if (m->w[i].huge[b] && a >= base && a - base < span)
					return true;
			}
	return false;
}

/* A flush's table removal: bottom-up, every empty table meeting [s, e). */
static uint64_t model_drop_tables(struct model *m, uint64_t s, uint64_t e,
				  uint64_t per_level[GPAMM_MAX_LEVELS])
{
	uint64_t removed = 0;
	unsigned l, i;

	if (e > m->space)
		e = m->space;
	if (s >= e)
		return 0;
	for (l = 0; l + 1 < m->levels; l++) {
		for (i = 0; i < m->ntab;) {
			struct mtable *t = &m->tab[i];

			if (t->level == l && t->base < e && s < t->base + tspan(m, l) &&
			    !table_busy(m, l, t->base)) {
				*t = m->tab[--m->ntab];
				per_level[l]++;
				removed++;
				continue;
			}
			i++;
		}
	}
	return removed;
}

/*
 * Apply @fn to every present model leaf overlapping [s, e) (end clamped),
 * a huge leaf once. Returns how many @fn reported changed.
 */
typedef bool (*leaf_fn)(struct model *m, gpamm_pte_t *leaf, struct win *w,
			unsigned blk, bool huge, void *arg);

static uint64_t model_range(struct model *m, uint64_t s, uint64_t e, leaf_fn fn, void *arg)
{
	uint64_t n = 0, fp, lp;
	unsigned i, b;

	if (e > m->space)
		e = m->space;
	if (s >= e)
		return 0;
	fp = s >> m->ps;
	lp = (e + m->pg - 1) >> m->ps;
	for (i = 0; i < m->nwin; i++) {
		struct win *w = &m->w[i];
		uint64_t w0 = w->base >> m->ps;

		for (b = 0; b < 2; b++) {
			uint64_t ba = w0 + b * m->E, bb = ba + m->E;
			uint64_t ia = fp > ba ? fp : ba, ib = lp < bb ? lp : bb, p;

			if (ia >= ib)
				continue;
			if (w->huge[b]) {
				n += fn(m, &w->huge[b], w, b, true, arg);
				continue;
			}
			if (!w->nsmall[b])
				continue;
			for (p = ia; p < ib; p++)
				if (w->small[p - w0])
					n += fn(m, &w->small[p - w0], w, b, false, arg);
		}
	}
	return n;
}

static bool fn_clear(struct model *m, gpamm_pte_t *leaf, struct win *w, unsigned blk,
		     bool huge, void *arg)
{
	*leaf = 0;
	if (!huge)
		w->nsmall[blk]--;
	return true;
}

static bool fn_mkclean(struct model *m, gpamm_pte_t *leaf, struct win *w, unsigned blk,
		       bool huge, void *arg)
{
	gpamm_pte_t old = *leaf;

	*leaf = gpamm_pte_mkclean(old);
	return *leaf != old;
}

static bool fn_mkold(struct model *m, gpamm_pte_t *leaf, struct win *w, unsigned blk,
		     bool huge, void *arg)
{
	gpamm_pte_t old = *leaf;

	*leaf = gpamm_pte_mkold(old);
	return *leaf != old;
}

static bool fn_young(struct model *m, gpamm_pte_t *leaf, struct win *w, unsigned blk,
		     bool huge, void *arg)
{
	return gpamm_pte_young(*leaf);
}

/* ---- comparing ------------------------------------------------------------ */

static void compare_entry(struct model *m, uint64_t gpa, gpamm_pte_t want, unsigned lm)
{
	unsigned li = 77;
	gpamm_pte_t got = gpamm_pgt_lookup(&m->pgt, gpa, &li);

	if (got != want || li != lm) {
		tap_diag("lookup %#" PRIx64 ": got %#" PRIx64 " level %u, model %#" PRIx64
			 " level %u", gpa, got, li, want, lm);
		CHECK_EQ(got, want);
		CHECK_EQ(li, lm);
	}
}

static void compare_gpa(struct model *m, uint64_t gpa)
{
	unsigned lm;
	gpamm_pte_t want = model_get(m, gpa, &lm);

	compare_entry(m, gpa, want, lm);
}

/* Compare the pages of window @w in [a, b) (page indices in the window). */
static void compare_pages(struct model *m, struct win *w, uint64_t a, uint64_t b)
{
	uint64_t p;

	for (p = a; p < b; p++) {
		uint64_t gpa = w->base + (p << m->ps);
		unsigned blk = (unsigned)(p / m->E);
		gpamm_pte_t h = w->huge[blk];

		if (h) {
			/* One huge leaf: its first, last and a middle page suffice. */
			uint64_t last = (blk + 1) * m->E;

			compare_entry(m, gpa, h, 1);
			if (b > last) {
				compare_entry(m, w->base + ((last - 1) << m->ps) + m->pg - 1, h, 1);
				p = last - 1;
			} else {
				compare_entry(m, w->base + ((b - 1) << m->ps), h, 1);
				p = b - 1;
			}
			continue;
		}
		/* Some byte of the page, not always the first. */
		compare_entry(m, gpa + (p & (m->pg - 1)), w->small[p], 0);
	}
}

/* The entries of [s, e) plus a guard page on each side, in every window. */
static void compare_range(struct model *m, uint64_t s, uint64_t e)
{
	uint64_t fp, lp;
	unsigned i;

	if (e > m->space)
		e = m->space;
	if (s >= e) {
		/* An empty range: still look at where it points. */
		if (s < m->space)
			compare_gpa(m, s);
		return;
	}
	fp = s >> m->ps;
	lp = (e + m->pg - 1) >> m->ps;
	fp = fp ? fp - 1 : 0;
	lp++;
	for (i = 0; i < m->nwin; i++) {
		uint64_t w0 = m->w[i].base >> m->ps, w1 = w0 + 2 * m->E;
		uint64_t a = fp > w0 ? fp : w0, b = lp < w1 ? lp : w1;

		if (a < b)
			compare_pages(m, &m->w[i], a - w0, b - w0);
	}
}

static void check_counts(struct model *m)
{
	CHECK_EQ(gpamm_pgt_live_tables(&m->pgt), 1 + m->ntab);
	/* Every page the pool handed out is a linked table, in the cache,
	 * or unlinked and waiting for its deferred free. */
	CHECK_EQ(pool_live(m), 1 + m->ntab + m->mc.nr + m->pend_pages);
}

struct full_walk {
	struct model *m;
	uint64_t leaves, outside, tables, bad;
	uint64_t first_bad;
};

static int full_visit(const struct gpamm_walk_ctx *ctx, enum gpamm_walk_flags visit)
{
	struct full_walk *fw = ctx->arg;
	struct model *m = fw->m;
	unsigned lm;

	if (visit == GPAMM_WALK_TABLE_PRE) {
		/* The table this entry points to holds entries of level-1. */
		fw->tables++;
		if (tab_find(m, ctx->level - 1, ctx->addr) < 0 && !fw->bad++)
			fw->first_bad = ctx->addr;
		return 0;
	}
	if (ctx->level && gpamm_pgt_entry_none(ctx->pgt, ctx->old, ctx->level))
		return 0; /* an empty directory entry */
	if (ctx->level > 1 || (ctx->level == 1 && !gpamm_pte_huge(ctx->old))) {
		/* A LEAF visit of a table, or a leaf above level 1. */
		if (!fw->bad++)
			fw->first_bad = ctx->addr;
		return 0;
	}
	if (!ctx->old)
		return 0;
	if (find_win(m, ctx->addr) < 0) {
		fw->outside++;
		if (!fw->bad++)
			fw->first_bad = ctx->addr;
		return 0;
	}
	fw->leaves++;
	if ((model_get(m, ctx->addr, &lm) != ctx->old || lm != ctx->level) && !fw->bad++)
		fw->first_bad = ctx->addr;
	return 0;
}

static uint64_t model_leaves(const struct model *m)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < m->nwin; i++)
		n += m->w[i].nsmall[0] + m->w[i].nsmall[1] +
		     !!m->w[i].huge[0] + !!m->w[i].huge[1];
	return n;
}

static void full_check(struct model *m)
{
	struct full_walk fw = { .m = m };
	unsigned i;
	int ret;

	m->st.full_checks++;
	for (i = 0; i < m->nwin; i++)
		compare_pages(m, &m->w[i], 0, 2 * m->E);
	ret = gpamm_pgt_walk(&m->pgt, 0, UINT64_MAX, full_visit, &fw,
			     GPAMM_WALK_LEAF | GPAMM_WALK_TABLE_PRE);
	CHECK_INT(ret, 0);
	if (fw.bad)
		tap_diag("full walk: first mismatch at %#" PRIx64, fw.first_bad);
	CHECK_EQ(fw.bad, 0);
	CHECK_EQ(fw.outside, 0);
	CHECK_EQ(fw.tables, m->ntab);
	CHECK_EQ(fw.leaves, model_leaves(m));
	check_counts(m);
}

/* ---- random choices --------------------------------------------------------- */

static gpamm_pte_t rand_prot(struct model *m)
{
	static const uint64_t mat[4] = {
		GPAMM_PTE_MAT_CC, GPAMM_PTE_MAT_CC, GPAMM_PTE_MAT_SUC, GPAMM_PTE_MAT_WUC,
	};
	gpamm_pte_t p = GPAMM_PTE_PRESENT | mat[rnd(m, 4)];

	if (rnd(m, 4))
		p |= GPAMM_PTE_VALID;
	if (rnd(m, 4)) {
		p |= GPAMM_PTE_MODIFIED;
		if (rnd(m, 2))
			p |= GPAMM_PTE_WRITEABLE;
	}
	if (!rnd(m, 16))
		p |= GPAMM_PTE_SPECIAL;
	if (!rnd(m, 16))
		p |= GPAMM_PTE_NO_EXEC;
	return p;
}

static uint64_t pfn_max(const struct model *m)
{
	return (1ULL << (GPAMM_PTE_PFN_END - m->ps)) - 1;
}

static gpamm_pte_t rand_small(struct model *m)
{
	return gpamm_pte_mk(tap_rand(&m->rng) & pfn_max(m), m->ps, rand_prot(m));
}

static gpamm_pte_t rand_huge(struct model *m)
{
	uint64_t pfn = tap_rand(&m->rng) & pfn_max(m) & ~(m->E - 1);

	return gpamm_pte_mk(pfn, m->ps, rand_prot(m) | GPAMM_PTE_HUGE);
}

/* A page of window @w: anywhere, near its middle boundary, or near an edge. */
static uint64_t rand_page(struct model *m, const struct win *w)
{
	uint64_t n = 2 * m->E, p;

	switch (rnd(m, 4)) {
	case 0:
		p = m->E - 8 + rnd(m, 16);
		break;
	case 1:
		p = rnd(m, 2) ? rnd(m, 8) : n - 1 - rnd(m, 8);
		break;
	default:
		p = rnd(m, n);
		break;
	}
	return w->base + (p << m->ps);
}

/* A range: mostly inside one window, sometimes the whole space. */
static void rand_range(struct model *m, uint64_t *sp, uint64_t *ep)
{
	const struct win *w = &m->w[rnd(m, m->nwin)];
	uint64_t k = rnd(m, 1000), n = 2 * m->E, pg = m->pg, s, e, p, len;

	if (k < 4) {
		*sp = 0;
		*ep = rnd(m, 2) ? UINT64_MAX : m->space;
		m->st.whole_space++;
		return;
	}
	if (k < 20) { /* empty or inverted */
		s = w->base + rnd(m, 2 * m->H);
		*sp = s;
		*ep = rnd(m, 2) || !s ? s : s - 1 - rnd(m, s < pg ? s : pg);
		return;
	}
	if (k < 300) { /* one page */
		s = rand_page(m, w);
		e = s + pg;
	} else if (k < 550) { /* a short run */
		p = rnd(m, n);
		len = 1 + rnd(m, 32);
		if (p + len > n)
			len = n - p;
		s = w->base + p * pg;
		e = s + len * pg;
	} else if (k < 750) { /* across the window's middle table boundary */
		s = w->base + m->H - (1 + rnd(m, 32)) * pg;
		e = s + (2 + rnd(m, 64)) * pg;
	} else if (k < 850) { /* a random stretch of the window */
		uint64_t a = rnd(m, n + 1), b = rnd(m, n + 1);

		if (a > b) {
			uint64_t t = a;

			a = b;
			b = t;
		}
		if (a == b) {
			if (b < n)
				b++;
			else
				a--;
		}
		s = w->base + a * pg;
		e = w->base + b * pg;
	} else if (k < 930) { /* one whole block, maybe a page more each side */
		s = w->base + rnd(m, 2) * m->H;
		e = s + m->H;
		if (rnd(m, 2) && s >= pg)
			s -= pg;
		if (rnd(m, 2) && e + pg <= m->space)
			e += pg;
	} else { /* the whole window, maybe stretched beyond */
		s = w->base;
		e = s + 2 * m->H;
		if (rnd(m, 2) && s >= 64 * pg)
			s -= rnd(m, 64) * pg;
		if (e == m->space && rnd(m, 2))
			e = rnd(m, 2) ? UINT64_MAX : m->space + rnd(m, 64) * pg;
		else if (rnd(m, 2) && e + 64 * pg <= m->space)
			e += rnd(m, 64) * pg;
	}
	/* Sometimes unaligned bytes: every overlapped entry is still affected. */
	if (!rnd(m, 10) && e - s >= 2 * pg) {
		s += rnd(m, pg);
		e -= rnd(m, pg);
	}
	*sp = s;
	*ep = e;
}

/* ---- operations ----------------------------------------------------------- */

static void describe(struct model *m, enum op op, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void describe(struct model *m, enum op op, const char *fmt, ...)
{
	int n;
	va_list ap;

	n = WHERE("%s step %" PRIu64 " %s ", m->name, m->step, op_name[op]);
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(tap_where))
		vsnprintf(tap_where + n, sizeof(tap_where) - (size_t)n, fmt, ap);
	va_end(ap);
}

static void topup_maybe(struct model *m)
{
	unsigned need = gpamm_pgt_map_pages(&m->pgt);

	/* Usually the caller tops up first; sometimes it is left short. */
	if (rnd(m, 10)) {
		CHECK_INT(gpamm_memcache_topup(&m->mc, need), 0);
		CHECK(m->mc.nr >= need);
	}
}

static void do_map(struct model *m, bool huge)
{
	const struct win *w = &m->w[rnd(m, m->nwin)];
	uint64_t gpa = huge ? w->base + rnd(m, 2) * m->H : rand_page(m, w);
	unsigned level = huge, lold, blk;

	if (huge && rnd(m, 2)) {
		/* Half the time, a block with no leaf table, if there is one:
		 * huge leaves must exist for the other operations to meet. */
		unsigned i, k = (unsigned)rnd(m, 2 * m->nwin);

		for (i = 0; i < 2 * m->nwin; i++) {
			unsigned j = (k + i) % (2 * m->nwin);
			uint64_t a = m->w[j / 2].base + (j % 2) * m->H;

			if (tab_find(m, 0, a) < 0) {
				gpa = a;
				break;
			}
		}
	}
	gpamm_pte_t old = model_get(m, gpa, &lold), pte;
	struct win *mw = &m->w[find_win(m, gpa)];
	uint64_t nr0, missing;
	bool short_mc, blocked;
	int ret;

	blk = (unsigned)((gpa - mw->base) / m->H);
	pte = huge ? rand_huge(m) : rand_small(m);
	if (old && lold == level && !rnd(m, 8))
		pte = old; /* the same entry again: no change */
	topup_maybe(m);
	nr0 = m->mc.nr;
	blocked = huge ? tab_find(m, 0, gpa) >= 0 : mw->huge[blk] != 0;
	missing = path_missing(m, gpa, level);
	short_mc = nr0 < missing;

	describe(m, huge ? OP_MAP_HUGE : OP_MAP, "gpa=%#" PRIx64 " pte=%#" PRIx64
		 " mc=%" PRIu64, gpa, pte, nr0);
	ret = gpamm_pgt_map(&m->pgt, gpa, level, pte, &m->mc);
	if (short_mc && blocked) {
		/* Two errors at once; either may be reported. */
		CHECK(ret == -ENOMEM || ret == -EEXIST);
	} else if (short_mc) {
		/* "@mc: must hold as many pages as the map needs ... With fewer,
		 * -ENOMEM and nothing is done" */
		CHECK_INT(ret, -ENOMEM);
	} else if (blocked) {
		CHECK_INT(ret, -EEXIST);
	} else {
		CHECK_INT(ret, old != pte);
		path_create(m, gpa, level);
		if (huge) {
			mw->huge[blk] = pte;
		} else {
			uint64_t p = (gpa - mw->base) >> m->ps;

			if (!mw->small[p])
				mw->nsmall[blk]++;
			mw->small[p] = pte;
		}
		m->st.tables_created += missing;
	}
	if (ret < 0) {
		CHECK_EQ(m->mc.nr, nr0);
		if (ret == -EEXIST)
			huge ? m->st.huge_eexist++ : m->st.map_eexist++;
		else
			m->st.map_enomem++;
	} else {
		/* Exactly the missing tables came out of the cache. */
		CHECK_EQ(m->mc.nr, nr0 - missing);
		if (ret == 0)
			m->st.map_same++;
		else
			huge ? m->st.huge_ok++ : m->st.map_ok++;
	}
	compare_range(m, gpa, gpa + (huge ? m->H : m->pg));
}

/* An unlinked table is intact and empty until freed (no reuse meanwhile). */
static void check_freelist(struct model *m, const struct gpamm_pgt_freelist *fl,
			   uint64_t per_level[GPAMM_MAX_LEVELS])
{
	const struct gpamm_tpage *tp;
	uint64_t n = 0;
	unsigned i;

	for (tp = fl->head; tp; tp = tp->next) {
		const gpamm_pte_t *t = tp->table;
		gpamm_pte_t none = tp->level ?
			(gpamm_pte_t)(uintptr_t)gpamm_pgt_invalid_table(m->ps, tp->level - 1) : 0;

		CHECK(++n <= MAX_TABLES);
		CHECK(t && t != m->pgt.root);
		CHECK(tp->level + 1 < m->levels);
		if (per_level)
			per_level[tp->level]++;
		for (i = 0; i < m->E; i++)
			if (t[i] != none)
				CHECK_EQ(t[i], none);
	}
	CHECK_EQ(n, fl->nr);
}

static void free_pending(struct model *m)
{
	unsigned i;

	for (i = 0; i < m->npend; i++) {
		uint64_t live = pool_live(m), nr = m->pend[i].nr;

		check_freelist(m, &m->pend[i], NULL);
		gpamm_pgt_free_deferred(&m->pgt, &m->pend[i]);
		CHECK_EQ(pool_live(m), live - nr);
		m->pend_pages -= nr;
	}
	m->npend = 0;
}

static void do_flush(struct model *m, uint64_t s, uint64_t e)
{
	struct gpamm_pgt_freelist fl = { 0 };
	uint64_t want, got, removed, live0 = pool_live(m);
	uint64_t want_lv[GPAMM_MAX_LEVELS] = { 0 }, got_lv[GPAMM_MAX_LEVELS] = { 0 };
	unsigned l;

	describe(m, OP_FLUSH, "[%#" PRIx64 ", %#" PRIx64 ")", s, e);
	want = model_range(m, s, e, fn_clear, NULL);
	removed = model_drop_tables(m, s, e, want_lv);
	got = gpamm_pgt_flush_range(&m->pgt, s, e, &fl);
	CHECK_EQ(got, want);
	/* Unlinked only: the pool still counts every page. */
	CHECK_EQ(pool_live(m), live0);
	CHECK_EQ(fl.nr, removed);
	check_freelist(m, &fl, got_lv);
	for (l = 0; l < GPAMM_MAX_LEVELS; l++)
		CHECK_EQ(got_lv[l], want_lv[l]);
	m->st.leaves_flushed += want;
	m->st.tables_removed += removed;
	if (fl.nr && rnd(m, 10) < 3) {
		/* Hold it, as if the TLB flush were still in progress. */
		if (m->npend == MAX_PENDING)
			free_pending(m);
		m->pend[m->npend++] = fl;
		m->pend_pages += fl.nr;
	} else {
		gpamm_pgt_free_deferred(&m->pgt, &fl);
		CHECK_EQ(pool_live(m), live0 - removed);
	}
	compare_range(m, s, e);
}

static void do_range(struct model *m, enum op op, uint64_t s, uint64_t e)
{
	uint64_t want, got;

	describe(m, op, "[%#" PRIx64 ", %#" PRIx64 ")", s, e);
	switch (op) {
	case OP_UNMAP:
		want = model_range(m, s, e, fn_clear, NULL);
		got = gpamm_pgt_unmap_range(&m->pgt, s, e);
		break;
	case OP_MKCLEAN:
		want = model_range(m, s, e, fn_mkclean, NULL);
		got = gpamm_pgt_mkclean_range(&m->pgt, s, e);
		break;
	case OP_MKOLD:
		want = model_range(m, s, e, fn_mkold, NULL);
		got = gpamm_pgt_mkold_range(&m->pgt, s, e);
		break;
	case OP_YOUNG:
		want = model_range(m, s, e, fn_young, NULL) != 0;
		got = gpamm_pgt_test_young(&m->pgt, s, e);
		m->st.young_true += want;
		break;
	default:
		CHECK(0);
		return;
	}
	CHECK_EQ(got, want);
	if (op != OP_YOUNG)
		m->st.changed += want;
	compare_range(m, s, e);
}

static void do_mask(struct model *m)
{
	const struct win *w = &m->w[rnd(m, m->nwin)];
	uint64_t base, mask, want = 0, got;
	unsigned i;

	if (rnd(m, 3)) {
		base = (w->base >> m->ps) + rnd(m, 2 * m->E + 64);
		base = base >= 32 ? base - 32 : 0;
	} else {
		/* Just below a block boundary, so low bits fall before a huge
		 * leaf or leaf table and high bits in it. */
		uint64_t b = (w->base >> m->ps) + rnd(m, 3) * m->E, back = rnd(m, 64);

		base = b >= back ? b - back : 0;
	}
	switch (rnd(m, 5)) {
	case 4:
		mask = 1ULL << (63 - rnd(m, 40));
		break;
	case 0:
		mask = 1ULL << rnd(m, 64);
		break;
	case 1:
		mask = tap_rand(&m->rng);
		break;
	case 2:
		mask = ~0ULL;
		break;
	default:
		mask = tap_rand(&m->rng) & tap_rand(&m->rng) & tap_rand(&m->rng);
		break;
	}
	describe(m, OP_MASK, "gfn_base=%#" PRIx64 " mask=%#" PRIx64, base, mask);
	for (i = 0; i < 64; i++) {
		uint64_t gpa = (base + i) << m->ps;
		int wi;
		struct win *mw;
		gpamm_pte_t *leaf, old;
		uint64_t off;

		if (!((mask >> i) & 1) || gpa >= m->space)
			continue; /* no such page */
		wi = find_win(m, gpa);
		if (wi < 0)
			continue;
		mw = &m->w[wi];
		off = gpa - mw->base;
		leaf = mw->huge[off / m->H] ? &mw->huge[off / m->H] : &mw->small[off >> m->ps];
		old = *leaf;
		*leaf = gpamm_pte_mkclean(old);
		want += *leaf != old; /* a huge leaf changes once */
	}
	got = gpamm_pgt_mkclean_mask(&m->pgt, base, mask);
	CHECK_EQ(got, want);
	m->st.changed += want;
	compare_range(m, base << m->ps, (base + 64) << m->ps);
}

static void do_update(struct model *m)
{
	static const gpamm_pte_t bits[] = {
		GPAMM_PTE_VALID, GPAMM_PTE_DIRTY, GPAMM_PTE_WRITE, GPAMM_PTE_MODIFIED,
		GPAMM_PTE_SPECIAL,
	};
	const struct win *w = &m->w[rnd(m, m->nwin)];
	uint64_t gpa = rand_page(m, w) + rnd(m, m->pg);
	gpamm_pte_t set = 0, clear = 0, o = 0x5a5a, n = 0xa5a5, want;
	unsigned lm, i, kind = (unsigned)rnd(m, 10);
	gpamm_pte_t cur = model_get(m, gpa, &lm);
	int ret;

	if (kind < 3) {
		set = GPAMM_PTE_VALID;
	} else if (kind < 5) {
		set = GPAMM_PTE_WRITEABLE;
	} else {
		for (i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
			switch (rnd(m, 4)) {
			case 0:
				set |= bits[i];
				break;
			case 1:
				clear |= bits[i];
				break;
			default:
				break;
			}
		}
	}
	describe(m, OP_UPDATE, "gpa=%#" PRIx64 " set=%#" PRIx64 " clear=%#" PRIx64 " kind=%u",
		 gpa, set, clear, kind);
	if (kind < 3)
		ret = gpamm_pgt_mkyoung(&m->pgt, gpa, &n);
	else if (kind < 5)
		ret = gpamm_pgt_mkdirty(&m->pgt, gpa, &n);
	else
		ret = gpamm_pgt_update_leaf(&m->pgt, gpa, set, clear, &o, &n);
	if (!cur) {
		CHECK_INT(ret, -ENOENT);
		m->st.update_enoent++;
	} else {
		struct win *mw = &m->w[find_win(m, gpa)];
		uint64_t off = gpa - mw->base;
		gpamm_pte_t *leaf = lm ? &mw->huge[off / m->H] : &mw->small[off >> m->ps];

		want = (cur | set) & ~clear;
		CHECK_INT(ret, want != cur);
		CHECK_EQ(n, want);
		if (kind >= 5)
			CHECK_EQ(o, cur);
		*leaf = want;
		m->st.changed += want != cur;
	}
	compare_range(m, gpa, gpa + 1);
}

static void do_lookup(struct model *m)
{
	uint64_t k = rnd(m, 10), gpa;

	if (k < 7) {
		gpa = m->w[rnd(m, m->nwin)].base + rnd(m, 2 * m->H);
	} else if (k < 8) {
		gpa = rnd(m, m->space);
	} else if (k < 9) {
		gpa = m->space + rnd(m, UINT64_MAX - m->space);
	} else {
		/* A window address plus a multiple of the space: never aliases. */
		uint64_t a = m->w[rnd(m, m->nwin)].base + rnd(m, 2 * m->H);
		uint64_t most = (UINT64_MAX - a) / m->space;

		gpa = a + m->space * (1 + rnd(m, most < 256 ? most : 256));
	}
	describe(m, OP_LOOKUP, "gpa=%#" PRIx64, gpa);
	compare_gpa(m, gpa);
}

static void do_topup_fail(struct model *m)
{
	unsigned min = gpamm_pgt_map_pages(&m->pgt);
	uint64_t k = rnd(m, min + 1), old = m->mc.nr;
	struct gpamm_tpool_stats s0, s1;
	int ret;

	describe(m, OP_TOPUP_FAIL, "after=%" PRIu64 " nr=%" PRIu64 " min=%u", k, old, min);
	gpamm_tpool_stats(m->pool, &s0);
	gpamm_tpool_fail(m->pool, k, 1000);
	ret = gpamm_memcache_topup(&m->mc, min);
	gpamm_tpool_fail(m->pool, 0, 0);
	gpamm_tpool_stats(m->pool, &s1);
	if (old >= min || old + k >= min) {
		CHECK_INT(ret, 0);
		CHECK(m->mc.nr >= min);
	} else {
		/* Fails after k pages, and keeps them. */
		CHECK_INT(ret, -ENOMEM);
		CHECK_EQ(m->mc.nr, old + k);
		CHECK(s1.failed > s0.failed);
		m->st.topup_enomem++;
	}
}

static void do_release(struct model *m)
{
	uint64_t live = pool_live(m), nr = m->mc.nr;

	describe(m, OP_RELEASE, "nr=%" PRIu64 " pending=%u", nr, m->npend);
	if (rnd(m, 2)) {
		gpamm_memcache_release(&m->mc);
		CHECK_EQ(m->mc.nr, 0);
		CHECK_EQ(pool_live(m), live - nr);
	} else {
		free_pending(m);
	}
}

static void step(struct model *m)
{
	uint64_t k = rnd(m, 1000), s, e;
	enum op op;

	if (k < 260)
		op = OP_MAP;
	else if (k < 310)
		op = OP_MAP_HUGE;
	else if (k < 370)
		op = OP_FLUSH;
	else if (k < 420)
		op = OP_UNMAP;
	else if (k < 500)
		op = OP_MKCLEAN;
	else if (k < 580)
		op = OP_MASK;
	else if (k < 660)
		op = OP_MKOLD;
	else if (k < 740)
		op = OP_YOUNG;
	else if (k < 850)
		op = OP_UPDATE;
	else if (k < 960)
		op = OP_LOOKUP;
	else if (k < 980)
		op = OP_TOPUP_FAIL;
	else
		op = OP_RELEASE;
	m->st.ops[op]++;
	switch (op) {
	case OP_MAP:
		do_map(m, false);
		break;
	case OP_MAP_HUGE:
		do_map(m, true);
		break;
	case OP_FLUSH:
		rand_range(m, &s, &e);
		do_flush(m, s, e);
		break;
	case OP_UNMAP:
	case OP_MKCLEAN:
	case OP_MKOLD:
	case OP_YOUNG:
		rand_range(m, &s, &e);
		do_range(m, op, s, e);
		break;
	case OP_MASK:
		do_mask(m);
		break;
	case OP_UPDATE:
		do_update(m);
		break;
	case OP_LOOKUP:
		do_lookup(m);
		break;
	case OP_TOPUP_FAIL:
		do_topup_fail(m);
		break;
	default:
		do_release(m);
		break;
	}
	check_counts(m);
}

/* ---- per layout ------------------------------------------------------------ */

/* The model of the running layout, for cleanup after a failed check. */
static struct model *cur;

static void reap(void)
{
	unsigned w;

	if (!cur)
		return;
	if (cur->pool)
		gpamm_tpool_destroy(cur->pool);
	for (w = 0; w < cur->nwin; w++)
		free(cur->w[w].small);
	free(cur);
	cur = NULL;
}

static void add_win(struct model *m, uint64_t base)
{
	struct win *w = &m->w[m->nwin++];

	CHECK(m->nwin <= MAX_WIN);
	CHECK_EQ(base & (m->H - 1), 0);
	CHECK(base + 2 * m->H <= m->space);
	w->base = base;
	w->small = calloc(2 * m->E, sizeof(*w->small));
	CHECK(w->small);
}

static void run_layout(unsigned idx)
{
	struct model *m = calloc(1, sizeof(*m));
	uint64_t seed = tap_seed(), steps, i, s;

	ASSERT(m);
	cur = m;
	m->ps = gpamm_geom_layouts[idx][0];
	m->levels = gpamm_geom_layouts[idx][1];
	snprintf(m->name, sizeof(m->name), "%uK/%u-level", 1u << (m->ps - 10), m->levels);
	WHERE("%s setup", m->name);
	tap_rng_seed(&m->rng, seed ^ (0x9e3779b97f4a7c15ULL * (idx + 1)));
	CHECK_INT(gpamm_geom_init(&m->g, m->ps, m->levels), 0);
	m->pg = m->g.page_size;
	m->H = gpamm_geom_huge_size(&m->g);
	m->E = m->g.entries;
	m->space = gpamm_geom_space(&m->g);
	m->pool = gpamm_tpool_create(m->ps);
	CHECK(m->pool);
	gpamm_tpool_ops(m->pool, &m->mm);
	CHECK_INT(gpamm_pgt_init(&m->pgt, &m->g, &m->mm), 0);
	gpamm_memcache_init(&m->mc, &m->mm);

	/* Windows: the start; every directory boundary above the leaf tables
	 * that is not the start (a root-entry boundary in >= 3 levels, the
	 * middle of the root in 2 levels); the end. */
	add_win(m, 0);
	if (m->levels == 2) {
		add_win(m, m->space / 2 - m->H);
	} else {
		unsigned l;

		for (l = 2; l < m->levels; l++)
			add_win(m, gpamm_geom_level_size(&m->g, l) - m->H);
	}
	add_win(m, m->space - 2 * m->H);

	/* Rounded up, so that the six layouts together reach the total. */
	steps = (uint64_t)(TOTAL_OPS * tap_scale() / 6.0) + 1;
	for (i = 0; i < steps; i++) {
		m->step = i;
		step(m);
		if ((i + 1) % CHECK_EVERY == 0) {
			WHERE("%s full check after step %" PRIu64,
				 m->name, i);
			full_check(m);
		}
	}
	WHERE("%s final full check", m->name);
	full_check(m);

	/* Everything goes; only the root stays. */
	m->step = steps;
	do_flush(m, 0, UINT64_MAX);
	WHERE("%s teardown", m->name);
	free_pending(m);
	full_check(m);
	CHECK_EQ(m->ntab, 0);
	CHECK_EQ(gpamm_pgt_live_tables(&m->pgt), 1);
	CHECK_EQ(model_leaves(m), 0);
	gpamm_memcache_release(&m->mc);
	CHECK_EQ(pool_live(m), 1);
	gpamm_pgt_destroy(&m->pgt);
	CHECK_EQ(pool_live(m), 0);
	s = gpamm_tpool_destroy(m->pool);
	m->pool = NULL;
	CHECK_EQ(s, 0);

	tap_diag("%s: %" PRIu64 " ops; maps %" PRIu64 " ok / %" PRIu64 " same / %" PRIu64
		 " EEXIST / %" PRIu64 " ENOMEM; huge %" PRIu64 " ok / %" PRIu64
		 " EEXIST; tables +%" PRIu64 " -%" PRIu64 " (max %" PRIu64 "); "
		 "flushed %" PRIu64 "; whole-space %" PRIu64 "; topup ENOMEM %" PRIu64
		 "; full checks %" PRIu64, m->name, steps, m->st.map_ok, m->st.map_same,
		 m->st.map_eexist, m->st.map_enomem, m->st.huge_ok, m->st.huge_eexist,
		 m->st.tables_created, m->st.tables_removed, m->st.max_tables,
		 m->st.leaves_flushed, m->st.whole_space, m->st.topup_enomem,
		 m->st.full_checks);
	/* A long run that never reached a path proves nothing about it. */
	if (steps >= 50000) {
		WHERE("%s coverage", m->name);
		CHECK(m->st.map_ok && m->st.map_same && m->st.map_eexist && m->st.map_enomem);
		CHECK(m->st.huge_ok && m->st.huge_eexist);
		CHECK(m->st.tables_removed && m->st.topup_enomem && m->st.young_true);
		CHECK(m->st.update_enoent && m->st.whole_space);
	}
	reap();
}

#define LAYOUT_TEST(n, i) static void n(void) { reap(); run_layout(i); }
LAYOUT_TEST(test_model_4k_3level, 0)
LAYOUT_TEST(test_model_4k_4level, 1)
LAYOUT_TEST(test_model_16k_2level, 2)
LAYOUT_TEST(test_model_16k_3level, 3)
LAYOUT_TEST(test_model_64k_2level, 4)
LAYOUT_TEST(test_model_64k_3level, 5)

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	tap_seed();
	TEST(test_model_4k_3level);
	TEST(test_model_4k_4level);
	TEST(test_model_16k_2level);
	TEST(test_model_16k_3level);
	TEST(test_model_64k_2level);
	TEST(test_model_64k_3level);
	reap();
	return tap_done();
}
