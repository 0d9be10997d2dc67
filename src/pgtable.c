// SPDX-License-Identifier: MIT
/*
 * The GPA page table. Traversal is written once, in walk(): an iterative
 * walker (no recursion, so it can be inlined) that visits every entry
 * overlapping a range and calls a visitor before a table (PRE), after it
 * (POST) or on a leaf or empty entry (LEAF). Each table operation is a small
 * visitor plus a small private struct; because walk() is always inlined with
 * a constant visitor, the compiler turns each operation into its own tight
 * loop, and the run of leaf entries inside one leaf table is a plain loop.
 *
 * Empty directory entries hold the address of the shared invalid table of
 * the level below. Those tables are process-wide, one set per page size,
 * and are never written after they are built.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/pgtable.h"
#include "memcache.h"
#include "util.h"

/* ---- invalid tables ---------------------------------------------------- */

#define INVALID_LEVELS (GPAMM_MAX_LEVELS - 1) /* levels 0..2 can be pointed at */

static pthread_mutex_t invalid_lock = PTHREAD_MUTEX_INITIALIZER;
static gpamm_pte_t *invalid_tables[3][INVALID_LEVELS]; /* [4K,16K,64K][level] */

static gpamm_pte_t **invalid_set(unsigned page_shift)
{
	unsigned ps = (page_shift - 12) / 2;
	size_t size = (size_t)1 << page_shift, n = size / sizeof(gpamm_pte_t);
	gpamm_pte_t **set;

	if (page_shift < 12 || page_shift > 16 || (page_shift & 1))
		return NULL;
	set = invalid_tables[ps];
	pthread_mutex_lock(&invalid_lock);
	for (unsigned l = 0; l < INVALID_LEVELS; l++) {
		gpamm_pte_t *t;
		if (__atomic_load_n(&set[l], __ATOMIC_ACQUIRE))
			continue;
		t = aligned_alloc(size, size);
		if (!t) {
			set = NULL;
			break;
		}
		for (size_t i = 0; i < n; i++)
			t[i] = l ? (gpamm_pte_t)(uintptr_t)set[l - 1] : 0;
		__atomic_store_n(&set[l], t, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&invalid_lock);
	return set;
}

const gpamm_pte_t *gpamm_pgt_invalid_table(unsigned page_shift, unsigned level)
{
	gpamm_pte_t **set = invalid_set(page_shift);

	return set && level < INVALID_LEVELS ? set[level] : NULL;
}

/* ---- helpers ----------------------------------------------------------- */

/* The value of an empty entry at @level. */
static inline gpamm_pte_t pgt_empty(const struct gpamm_pgt *pgt, unsigned level)
{
	return level ? (gpamm_pte_t)(uintptr_t)pgt->invalid[level - 1] : 0;
}

/* Fill a fresh table so that every entry is empty for its level. */
static void pgt_init_table(const struct gpamm_pgt *pgt, gpamm_pte_t *t, unsigned level)
{
	gpamm_pte_t e = pgt_empty(pgt, level);
	uint32_t n = pgt->geom.entries;

	if (!e) {
		memset(t, 0, (size_t)n * sizeof(*t));
		return;
	}
	for (uint32_t i = 0; i < n; i++)
		t[i] = e;
}

static bool pgt_table_empty(const struct gpamm_pgt *pgt, const gpamm_pte_t *t,
			    unsigned level)
{
	gpamm_pte_t e = pgt_empty(pgt, level);

	for (uint32_t i = 0; i < pgt->geom.entries; i++)
		if (pte_read(&t[i]) != e)
			return false;
	return true;
}

static inline void pgt_count_tables(struct gpamm_pgt *pgt, int64_t delta)
{
	__atomic_fetch_add(&pgt->live_tables, (uint64_t)delta, __ATOMIC_RELAXED);
}

/* ---- the walker -------------------------------------------------------- */

static ALWAYS_INLINE int walk(struct gpamm_pgt *pgt, uint64_t start, uint64_t end,
			      gpamm_walk_fn fn, void *arg, unsigned flags)
{
	const struct gpamm_geom *g = &pgt->geom;
	const unsigned top = g->levels - 1u;
	const uint64_t idx_mask = g->entries - 1u;
	const uint64_t leaf_span = gpamm_geom_level_size(g, 1);
	gpamm_pte_t *tables[GPAMM_MAX_LEVELS];
	struct gpamm_walk_ctx ctx;
	gpamm_pte_t *table = pgt->root;
	unsigned level = top;
	uint64_t addr = start;
	int ret = 0;

	if (end > gpamm_geom_space(g))
		end = gpamm_geom_space(g);
	if (start >= end)
		return 0;
	ctx.pgt = pgt;
	ctx.start = start;
	ctx.end = end;
	ctx.arg = arg;

	for (;;) {
		if (level == 0) {
			/* A run of leaf entries within one leaf table. */
			uint64_t psz = g->page_size, a = addr & ~(psz - 1);
			uint64_t tend = (addr | (leaf_span - 1)) + 1;
			gpamm_pte_t *p = &table[(addr >> g->page_shift) & idx_mask];

			if (tend > end)
				tend = end;
			if (flags & GPAMM_WALK_LEAF) {
				ctx.level = 0;
#pragma GCC unroll 4
				for (; a < tend; a += psz, p++) {
					ctx.ptep = p;
					ctx.old = pte_read(p);
					ctx.addr = a;
					ret = fn(&ctx, GPAMM_WALK_LEAF);
					if (ret)
						goto out;
				}
			}
			addr = tend;
		} else {
			unsigned shift = g->shift[level];
			uint64_t size = 1ULL << shift;
			gpamm_pte_t *ptep = &table[(addr >> shift) & idx_mask];
			gpamm_pte_t old = pte_read_acquire(ptep);

			ctx.ptep = ptep;
			ctx.old = old;
			ctx.addr = addr & ~(size - 1);
			ctx.level = level;
			if (gpamm_pgt_entry_is_table(pgt, old, level)) {
				if (flags & GPAMM_WALK_TABLE_PRE) {
					ret = fn(&ctx, GPAMM_WALK_TABLE_PRE);
					if (ret)
						goto out;
					old = pte_read_acquire(ptep);
				}
			} else if (flags & GPAMM_WALK_LEAF) {
				ret = fn(&ctx, GPAMM_WALK_LEAF);
				if (ret)
					goto out;
				old = pte_read_acquire(ptep);
			}
			if (gpamm_pgt_entry_is_table(pgt, old, level)) {
				tables[level] = table;
				table = (gpamm_pte_t *)(uintptr_t)old;
				level--;
				continue;
			}
			addr = ctx.addr + size;
		}

		/* Leave every table we have finished, visiting its entry after. */
		while (level < top &&
		       (addr >= end || !(addr & (gpamm_geom_level_size(g, level + 1) - 1)))) {
			level++;
			table = tables[level];
			if (flags & GPAMM_WALK_TABLE_POST) {
				unsigned shift = g->shift[level];
				uint64_t last = addr - 1;

				ctx.ptep = &table[(last >> shift) & idx_mask];
				ctx.old = pte_read(ctx.ptep);
				ctx.addr = last & ~((1ULL << shift) - 1);
				ctx.level = level;
				ret = fn(&ctx, GPAMM_WALK_TABLE_POST);
				if (ret)
					goto out;
			}
		}
		if (addr >= end)
			break;
	}
out:
	/* The one place the walk's error policy lives: STOP is success. */
	return ret < 0 ? ret : 0;
}

int gpamm_pgt_walk(struct gpamm_pgt *pgt, uint64_t start, uint64_t end,
		   gpamm_walk_fn fn, void *arg, unsigned flags)
{
	return walk(pgt, start, end, fn, arg, flags);
}

/*
 * The entry that ends a descent to @gpa: a leaf-table slot, a huge leaf, or
 * an empty directory entry. Lock-free: each directory entry is read once
 * with acquire, so a table linked concurrently is seen initialised.
 */
static ALWAYS_INLINE gpamm_pte_t *pgt_find(const struct gpamm_pgt *pgt, uint64_t gpa,
					   unsigned *levelp)
{
	const struct gpamm_geom *g = &pgt->geom;
	gpamm_pte_t *table = pgt->root;
	unsigned level = g->levels - 1u;

	for (;;) {
		gpamm_pte_t *ptep = &table[(gpa >> g->shift[level]) & (g->entries - 1u)];
		gpamm_pte_t e;

		if (level == 0) {
			*levelp = 0;
			return ptep;
		}
		e = pte_read_acquire(ptep);
		if (!gpamm_pgt_entry_is_table(pgt, e, level)) {
			*levelp = level;
			return ptep;
		}
		table = (gpamm_pte_t *)(uintptr_t)e;
		level--;
	}
}

/* ---- life cycle -------------------------------------------------------- */

int gpamm_pgt_init(struct gpamm_pgt *pgt, const struct gpamm_geom *g,
		   const struct gpamm_mm_ops *mm)
{
	gpamm_pte_t **inv = invalid_set(g->page_shift);

	memset(pgt, 0, sizeof(*pgt));
	if (!inv)
		return -ENOMEM;
	pgt->geom = *g;
	pgt->mm = *mm;
	for (unsigned l = 0; l < INVALID_LEVELS; l++)
		pgt->invalid[l] = inv[l];
	pgt->root = mm->alloc_table(mm->ctx);
	if (!pgt->root)
		return -ENOMEM;
	pgt_init_table(pgt, pgt->root, g->levels - 1u);
	pgt->live_tables = 1;
	return 0;
}

static int destroy_visit(const struct gpamm_walk_ctx *ctx, enum gpamm_walk_flags visit)
{
	struct gpamm_pgt *pgt = ctx->pgt;

	pte_write(ctx->ptep, pgt_empty(pgt, ctx->level));
	pgt->mm.free_table(pgt->mm.ctx, (void *)(uintptr_t)ctx->old);
	pgt_count_tables(pgt, -1);
	return 0;
}

void gpamm_pgt_destroy(struct gpamm_pgt *pgt)
{
	if (!pgt->root)
		return;
	walk(pgt, 0, UINT64_MAX, destroy_visit, NULL, GPAMM_WALK_TABLE_POST);
	pgt->mm.free_table(pgt->mm.ctx, pgt->root);
	pgt_count_tables(pgt, -1);
	GPAMM_BUG_ON(pgt->live_tables != 0);
	pgt->root = NULL;
}

/* ---- map --------------------------------------------------------------- */

struct map_data {
	unsigned level;
	gpamm_pte_t pte;
	struct gpamm_memcache *mc;
	int changed;
};

static int map_visit(const struct gpamm_walk_ctx *ctx, enum gpamm_walk_flags visit)
{
	struct map_data *d = ctx->arg;
	struct gpamm_pgt *pgt = ctx->pgt;
	gpamm_pte_t *child;

	if (visit == GPAMM_WALK_TABLE_PRE)
		/* A table where the huge leaf would go: never map over it. */
		return ctx->level == d->level ? -EEXIST : 0;

	if (ctx->level == d->level) {
		if (ctx->old != d->pte) {
			pte_write(ctx->ptep, d->pte);
			d->changed = 1;
		}
		return 0;
	}
	/* Above the target: a huge leaf is in the way, or a level is missing. */
	if (!gpamm_pgt_entry_none(pgt, ctx->old, ctx->level))
		return -EEXIST;
	child = gpamm_memcache_take(d->mc);
	if (!child)
		return -ENOMEM;
	pgt_init_table(pgt, child, ctx->level - 1);
	pte_publish(ctx->ptep, (gpamm_pte_t)(uintptr_t)child);
	pgt_count_tables(pgt, 1);
	return 0; /* the walker re-reads the entry and descends into child */
}

int gpamm_pgt_map(struct gpamm_pgt *pgt, uint64_t gpa, unsigned level,
		  gpamm_pte_t pte, struct gpamm_memcache *mc)
{
	const struct gpamm_geom *g = &pgt->geom;
	struct map_data d = { .level = level, .pte = pte, .mc = mc };
	gpamm_pte_t *ptep, e;
	unsigned at, need = 0;
	int ret;

	if (level > 1 || gpa >= gpamm_geom_space(g) ||
	    (gpa & (gpamm_geom_level_size(g, level) - 1)) ||
	    !(pte & GPAMM_PTE_PRESENT) || !!(pte & GPAMM_PTE_HUGE) != (level == 1))
		return -EINVAL;
	/*
	 * One descent tells what the map needs. The common case, the slot at
	 * @level exists already, is done here without the walker.
	 */
	ptep = pgt_find(pgt, gpa, &at);
	e = pte_read(ptep);
	if (at == level) {
		if (e == pte)
			return 0;
		pte_write(ptep, pte);
		return 1;
	}
	if (at > level && gpamm_pgt_entry_none(pgt, e, at))
		need = at - level;
	/* Check the cache first, so an error changes nothing. */
	if (need > (mc ? mc->nr : 0))
		return -ENOMEM;
	ret = walk(pgt, gpa, gpa + 1, map_visit, &d,
		   GPAMM_WALK_LEAF | GPAMM_WALK_TABLE_PRE);
	return ret ? ret : d.changed;
}

int gpamm_pgt_map_upgrade(struct gpamm_pgt *pgt, uint64_t gpa, gpamm_pte_t pte,
			  struct gpamm_memcache *mc, gpamm_pte_t *oldp, gpamm_pte_t *nowp)
{
	const struct gpamm_geom *g = &pgt->geom;
	const unsigned ps = g->page_shift;
	gpamm_pte_t *table = pgt->root, *ptep, old, new;
	unsigned level = g->levels - 1u;

	*oldp = *nowp = 0;
	if (gpa >= gpamm_geom_space(g) || (gpa & (g->page_size - 1)) ||
	    !(pte & GPAMM_PTE_PRESENT) || (pte & GPAMM_PTE_HUGE))
		return -EINVAL;
	/* One descent; a missing level is linked by cmpxchg on the way. */
	for (; level > 0; level--) {
		gpamm_pte_t e, *child;

		ptep = &table[(gpa >> g->shift[level]) & (g->entries - 1u)];
		e = pte_read_acquire(ptep);
		while (!gpamm_pgt_entry_is_table(pgt, e, level)) {
			if (gpamm_pte_frozen(e, level))
				return -EAGAIN;
			if (!gpamm_pgt_entry_none(pgt, e, level))
				return -EEXIST; /* a huge leaf */
			child = mc && mc->nr ? gpamm_memcache_take(mc) : NULL;
			if (!child)
				return -ENOMEM;
			pgt_init_table(pgt, child, level - 1);
			if (unlikely(pgt->race_hook != NULL))
				pgt->race_hook(pgt->race_arg, GPAMM_PGT_RACE_TABLE, gpa, mc);
			/* release: the empty entries are seen before the link */
			if (__atomic_compare_exchange_n(ptep, &e, (gpamm_pte_t)(uintptr_t)child, 0,
							__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
				pgt_count_tables(pgt, 1);
				e = (gpamm_pte_t)(uintptr_t)child;
				break;
			}
			/* lost the race: nobody saw the page; e is the winner's entry */
			gpamm_memcache_put(mc, child);
		}
		table = (gpamm_pte_t *)(uintptr_t)e;
	}
	ptep = &table[(gpa >> ps) & (g->entries - 1u)];
	/* keep what the entry has when it maps the same page */
	old = pte_read(ptep);
	do {
		if (gpamm_pte_frozen(old, 0))
			return -EAGAIN;
		new = gpamm_pte_present(old) && gpamm_pte_pfn(old, ps) == gpamm_pte_pfn(pte, ps)
			? old | pte : pte;
		if (new == old)
			break;
		if (unlikely(pgt->race_hook != NULL))
			pgt->race_hook(pgt->race_arg, GPAMM_PGT_RACE_LEAF, gpa, mc);
	} while (!pte_cmpxchg(ptep, &old, new));
	*oldp = old;
	*nowp = new;
	return new != old;
}

/* The entry at @level on the way to @gpa, or NULL when a table above is missing. */
static gpamm_pte_t *pgt_entry_at(const struct gpamm_pgt *pgt, uint64_t gpa, unsigned level)
{
	const struct gpamm_geom *g = &pgt->geom;
	gpamm_pte_t *table = pgt->root;

	for (unsigned l = g->levels - 1u;; l--) {
		gpamm_pte_t *ptep = &table[(gpa >> g->shift[l]) & (g->entries - 1u)];
		gpamm_pte_t e;

		if (l == level)
			return ptep;
		e = pte_read_acquire(ptep);
		if (!gpamm_pgt_entry_is_table(pgt, e, l))
			return NULL;
		table = (gpamm_pte_t *)(uintptr_t)e;
	}
}

int gpamm_pgt_freeze(struct gpamm_pgt *pgt, uint64_t gpa, unsigned level, gpamm_pte_t expect)
{
	gpamm_pte_t *ptep;

	if (level > 1 || level >= pgt->geom.levels || gpa >= gpamm_geom_space(&pgt->geom))
		return -EINVAL;
	ptep = pgt_entry_at(pgt, gpa, level);
	if (!ptep)
		return -ENOENT;
	return pte_cmpxchg(ptep, &expect, level ? GPAMM_PTE_FROZEN_DIR : GPAMM_PTE_FROZEN)
		? 0 : -EBUSY;
}

int gpamm_pgt_thaw(struct gpamm_pgt *pgt, uint64_t gpa, unsigned level, gpamm_pte_t val)
{
	gpamm_pte_t *ptep;

	if (level > 1 || level >= pgt->geom.levels || gpa >= gpamm_geom_space(&pgt->geom))
		return -EINVAL;
	ptep = pgt_entry_at(pgt, gpa, level);
	if (!ptep || !gpamm_pte_frozen(pte_read(ptep), level))
		return -EINVAL;
	/* release: what the freezer wrote (a new table) is seen before the value */
	pte_publish(ptep, val);
	return 0;
}

/* ---- lookup and single-entry updates ----------------------------------- */

gpamm_pte_t gpamm_pgt_lookup(const struct gpamm_pgt *pgt, uint64_t gpa, unsigned *levelp)
{
	unsigned level = 0;
	gpamm_pte_t e = 0;

	if (likely(gpa < gpamm_geom_space(&pgt->geom))) {
		e = pte_read(pgt_find(pgt, gpa, &level));
		if (!(e & GPAMM_PTE_PRESENT)) {
			e = 0;
			level = 0;
		}
	}
	if (levelp)
		*levelp = level;
	return e;
}

/*
 * Read-modify-write of the present leaf at @gpa as one compare-and-exchange
 * on the whole entry, so a concurrent update of another bit is never lost.
 * @fn computes the new value (or a negative errno to give up).
 */
typedef int (*leaf_fn)(gpamm_pte_t old, gpamm_pte_t *new, const void *arg);

static ALWAYS_INLINE int leaf_rmw(struct gpamm_pgt *pgt, uint64_t gpa, leaf_fn fn,
				  const void *arg, gpamm_pte_t *oldp, gpamm_pte_t *newp)
{
	gpamm_pte_t *ptep, old, new;
	unsigned level;
	int r;

	if (gpa >= gpamm_geom_space(&pgt->geom))
		return -ENOENT;
	ptep = pgt_find(pgt, gpa, &level);
	old = pte_read(ptep);
	do {
		if (!(old & GPAMM_PTE_PRESENT))
			return -ENOENT;
		r = fn(old, &new, arg);
		if (r < 0)
			return r;
		if (new == old)
			break;
	} while (!pte_cmpxchg(ptep, &old, new));
	if (oldp)
		*oldp = old;
	if (newp)
		*newp = new;
	return new != old;
}

struct set_clear {
	gpamm_pte_t set, clear;
};

static ALWAYS_INLINE int set_clear_fn(gpamm_pte_t old, gpamm_pte_t *new, const void *arg)
{
	const struct set_clear *sc = arg;

	*new = (old | sc->set) & ~sc->clear;
	return 0;
}

int gpamm_pgt_update_leaf(struct gpamm_pgt *pgt, uint64_t gpa, gpamm_pte_t set,
			  gpamm_pte_t clear, gpamm_pte_t *oldp, gpamm_pte_t *newp)
{
	const struct set_clear sc = { set, clear };

	return leaf_rmw(pgt, gpa, set_clear_fn, &sc, oldp, newp);
}

/* young always; dirty for a write, if the entry may be made writable */
static ALWAYS_INLINE int access_fn(gpamm_pte_t old, gpamm_pte_t *new, const void *arg)
{
	const bool write = *(const bool *)arg;

	*new = old | GPAMM_PTE_VALID;
	if (write && !gpamm_pte_dirty(old)) {
		if (!gpamm_pte_writeable(old))
			return -EPERM;
		*new |= GPAMM_PTE_WRITEABLE;
	}
	return 0;
}

int gpamm_pgt_access_fault(struct gpamm_pgt *pgt, uint64_t gpa, bool write,
			   gpamm_pte_t *oldp, gpamm_pte_t *newp)
{
	return leaf_rmw(pgt, gpa, access_fn, &write, oldp, newp);
}

/* ---- range operations -------------------------------------------------- */

struct flush_data {
	uint64_t cleared;
	struct gpamm_pgt_freelist *fl;
};

static ALWAYS_INLINE int flush_visit(const struct gpamm_walk_ctx *ctx,
				       enum gpamm_walk_flags visit)
{
	struct flush_data *d = ctx->arg;
	struct gpamm_pgt *pgt = ctx->pgt;
	gpamm_pte_t *child;
	struct gpamm_tpage *meta;
	uint64_t span;

	if (visit == GPAMM_WALK_LEAF) {
		if (!gpamm_pgt_entry_none(pgt, ctx->old, ctx->level)) {
			pte_write(ctx->ptep, pgt_empty(pgt, ctx->level));
			d->cleared++;
		}
		return 0;
	}
	/*
	 * After a table: a table the range covered whole is empty now; one it
	 * covered in part is scanned. Unlink, but do not free: a walker may
	 * still be inside it until the caller's TLB flush.
	 */
	child = (gpamm_pte_t *)(uintptr_t)ctx->old;
	span = gpamm_geom_level_size(&pgt->geom, ctx->level);
	if ((ctx->addr < ctx->start || ctx->addr + span > ctx->end) &&
	    !pgt_table_empty(pgt, child, ctx->level - 1))
		return 0;
	pte_write(ctx->ptep, pgt_empty(pgt, ctx->level));
	meta = pgt->mm.table_meta(pgt->mm.ctx, child);
	meta->level = ctx->level - 1;
	meta->next = d->fl->head;
	d->fl->head = meta;
	d->fl->nr++;
	pgt_count_tables(pgt, -1);
	return 0;
}

uint64_t gpamm_pgt_flush_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end,
			       struct gpamm_pgt_freelist *fl)
{
	struct flush_data d = { .fl = fl };

	walk(pgt, start, end, flush_visit, &d, GPAMM_WALK_LEAF | GPAMM_WALK_TABLE_POST);
	return d.cleared;
}

void gpamm_pgt_free_deferred(struct gpamm_pgt *pgt, struct gpamm_pgt_freelist *fl)
{
	while (fl->head) {
		struct gpamm_tpage *m = fl->head;
		fl->head = m->next;
		m->next = NULL;
		pgt->mm.free_table(pgt->mm.ctx, m->table);
	}
	fl->nr = 0;
}

static ALWAYS_INLINE int unmap_visit(const struct gpamm_walk_ctx *ctx,
				       enum gpamm_walk_flags visit)
{
	uint64_t *n = ctx->arg;

	if (!gpamm_pgt_entry_none(ctx->pgt, ctx->old, ctx->level)) {
		pte_write(ctx->ptep, pgt_empty(ctx->pgt, ctx->level));
		(*n)++;
	}
	return 0;
}

uint64_t gpamm_pgt_unmap_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end)
{
	uint64_t n = 0;

	walk(pgt, start, end, unmap_visit, &n, GPAMM_WALK_LEAF);
	return n;
}

/*
 * Clearing bits with a plain store is safe here: writers hold the MMU lock
 * exclusively, and the only concurrent writer of an entry, a PTW-style
 * hardware walker, sets DIRTY only when WRITE is set, which mkclean clears
 * in the same store.
 */
#define CLEAR_BITS_VISIT(name, bits)                                           \
	static int name(const struct gpamm_walk_ctx *ctx, enum gpamm_walk_flags v) \
	{                                                                      \
		uint64_t *n = ctx->arg;                                        \
		gpamm_pte_t old = ctx->old;                                    \
		if ((old & GPAMM_PTE_PRESENT) && (old & (bits))) {             \
			pte_write(ctx->ptep, old & ~(gpamm_pte_t)(bits));      \
			(*n)++;                                                \
		}                                                              \
		return 0;                                                      \
	}

CLEAR_BITS_VISIT(mkclean_visit, GPAMM_PTE_WRITEABLE)
CLEAR_BITS_VISIT(mkold_visit, GPAMM_PTE_VALID)

uint64_t gpamm_pgt_mkclean_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end)
{
	uint64_t n = 0;

	walk(pgt, start, end, mkclean_visit, &n, GPAMM_WALK_LEAF);
	return n;
}

uint64_t gpamm_pgt_mkold_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end)
{
	uint64_t n = 0;

	walk(pgt, start, end, mkold_visit, &n, GPAMM_WALK_LEAF);
	return n;
}

struct mask_data {
	uint64_t base; /* gfn of bit 0 */
	uint64_t mask;
	uint64_t n;
	unsigned page_shift;
};

static ALWAYS_INLINE int mkclean_mask_visit(const struct gpamm_walk_ctx *ctx,
				       enum gpamm_walk_flags visit)
{
	struct mask_data *d = ctx->arg;
	gpamm_pte_t old = ctx->old;
	uint64_t bits;

	if (!(old & GPAMM_PTE_PRESENT) || !(old & GPAMM_PTE_WRITEABLE))
		return 0;
	if (ctx->level == 0) {
		bits = 1ULL << ((ctx->addr >> d->page_shift) - d->base);
	} else {
		/* A huge leaf: cleaned whole if it holds any page of the mask. */
		uint64_t first = ctx->addr >> d->page_shift;
		uint64_t last = (ctx->addr + gpamm_geom_level_size(&ctx->pgt->geom, ctx->level))
				>> d->page_shift;
		uint64_t lo = first > d->base ? first - d->base : 0;
		uint64_t hi = last - d->base < 64 ? last - d->base : 64;
		bits = (hi >= 64 ? ~0ULL : (1ULL << hi) - 1) & ~((1ULL << lo) - 1);
	}
	if (d->mask & bits) {
		pte_write(ctx->ptep, old & ~GPAMM_PTE_WRITEABLE);
		d->n++;
	}
	return 0;
}

uint64_t gpamm_pgt_mkclean_mask(struct gpamm_pgt *pgt, uint64_t gfn_base, uint64_t mask)
{
	unsigned ps = pgt->geom.page_shift;
	struct mask_data d = { .base = gfn_base, .mask = mask, .page_shift = ps };
	uint64_t first, last;

	if (!mask || gfn_base >= gpamm_geom_space(&pgt->geom) >> ps)
		return 0;
	first = gfn_base + (uint64_t)__builtin_ctzll(mask);
	last = gfn_base + 64 - (uint64_t)__builtin_clzll(mask);
	/*
	 * The pages of one bitmap word normally share one leaf table (always,
	 * for a 64-aligned base): find it once and run down the mask.
	 */
	if (!((first ^ (last - 1)) >> pgt->geom.bits_per_level) &&
	    last <= gpamm_geom_space(&pgt->geom) >> ps) {
		unsigned level;
		gpamm_pte_t *p = pgt_find(pgt, first << ps, &level);

		if (level == 0) {
			uint64_t m = mask >> (first - gfn_base), n = 0;

			if (!~m) {
				/* a full word, the common case of an all-dirty CLEAR */
				for (gpamm_pte_t *end = p + 64; p < end; p++) {
					gpamm_pte_t old = pte_read(p);

					if ((old & GPAMM_PTE_PRESENT) && (old & GPAMM_PTE_WRITEABLE)) {
						pte_write(p, old & ~GPAMM_PTE_WRITEABLE);
						n++;
					}
				}
				return n;
			}
			/* otherwise visit only the pages whose bits are set */
			for (; m; m &= m - 1) {
				gpamm_pte_t *q = p + __builtin_ctzll(m), old = pte_read(q);

				if ((old & GPAMM_PTE_PRESENT) && (old & GPAMM_PTE_WRITEABLE)) {
					pte_write(q, old & ~GPAMM_PTE_WRITEABLE);
					n++;
				}
			}
			return n;
		}
	}
	walk(pgt, first << ps, last << ps, mkclean_mask_visit, &d, GPAMM_WALK_LEAF);
	return d.n;
}

static ALWAYS_INLINE int young_visit(const struct gpamm_walk_ctx *ctx,
				       enum gpamm_walk_flags visit)
{
	bool *young = ctx->arg;

	if ((ctx->old & GPAMM_PTE_PRESENT) && (ctx->old & GPAMM_PTE_VALID)) {
		*young = true;
		return GPAMM_WALK_STOP;
	}
	return 0;
}

bool gpamm_pgt_test_young(struct gpamm_pgt *pgt, uint64_t start, uint64_t end)
{
	bool young = false;

	walk(pgt, start, end, young_visit, &young, GPAMM_WALK_LEAF);
	return young;
}
