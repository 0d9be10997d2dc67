/* SPDX-License-Identifier: MIT */
/*
 * gpamm/pgtable.h - the GPA page table: table pages, the generic walker,
 * and every table operation the MMU needs.
 *
 * The table is in the exact LoongArch format (gpamm/pte.h) for one of the
 * six layouts (gpamm/geom.h). An empty directory entry points at a shared
 * per-level "invalid table" (never 0), so a hardware walker never faults on
 * a directory. Entries are read and written as whole 64-bit atomics; a new
 * table is fully initialised before a release store links it.
 *
 * Locking: the table has no lock of its own. Unless a function says
 * otherwise, the caller serialises writers (the MMU lock). Lookups may run
 * concurrently with writers and see either the old or the new entry.
 *
 * Addresses are guest-physical byte addresses; every range is [start, end)
 * with an exclusive end, and an operation affects every entry that overlaps
 * the range (a huge leaf is affected whole). Ends past the GPA space are
 * clamped to it, so "the whole space" is simply [0, UINT64_MAX).
 *
 * TLB: no function here flushes a TLB. Operations that remove or downgrade
 * translations return how many entries they changed; the caller flushes when
 * that is non-zero, and only then frees unlinked tables.
 */
#ifndef GPAMM_PGTABLE_H
#define GPAMM_PGTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpamm/geom.h"
#include "gpamm/pte.h"

/* ---- table pages ------------------------------------------------------- */

/**
 * struct gpamm_tpage - what the library knows about one table page (the
 * part of Linux's struct page a page table uses). It lives outside the
 * page, so an unlinked table keeps its contents intact for a walker that
 * may still be reading it until it is freed.
 */
struct gpamm_tpage {
	struct gpamm_tpage *next; /* deferred-free list link */
	void *table;              /* the page itself */
	uint32_t level;           /* level of the entries it holds */
	uint32_t pad;
	void *rcu[2];             /* room for a deferred-free callback head */
};

/**
 * struct gpamm_mm_ops - where table pages come from.
 * @alloc_table: one page-aligned table page; contents undefined. NULL on
 *               failure. Context: may sleep; never called under the MMU lock.
 * @free_table:  give a table page back. Context: any, after every walker
 *               that could reach it has finished.
 * @table_meta:  the struct gpamm_tpage of a page @alloc_table returned.
 * @ctx:         passed to each.
 */
struct gpamm_mm_ops {
	void *(*alloc_table)(void *ctx);
	void (*free_table)(void *ctx, void *table);
	struct gpamm_tpage *(*table_meta)(void *ctx, void *table);
	void *ctx;
};

/**
 * struct gpamm_tpool - the default table-page allocator: page-aligned
 * chunks whose first page holds the metadata of the others, so page ->
 * metadata is arithmetic. Freed pages are kept for reuse until the pool is
 * destroyed. Counts every page it hands out; can be told to fail.
 * Context: all functions are thread-safe (one internal mutex).
 */
struct gpamm_tpool;

struct gpamm_tpool_stats {
	uint64_t live;        /* pages handed out and not yet freed */
	uint64_t allocs, frees, failed;
	uint64_t chunks;      /* chunks mapped */
	uint64_t bytes;       /* bytes mapped for chunks */
};

/** gpamm_tpool_create() - a pool of pages of 1 << @page_shift bytes. NULL on ENOMEM. */
struct gpamm_tpool *gpamm_tpool_create(unsigned page_shift);
/** gpamm_tpool_destroy() - unmap every chunk. Pages still live are reported by the return value (the count). */
uint64_t gpamm_tpool_destroy(struct gpamm_tpool *pool);
/** gpamm_tpool_ops() - an mm_ops that allocates from @pool. */
void gpamm_tpool_ops(struct gpamm_tpool *pool, struct gpamm_mm_ops *ops);
void gpamm_tpool_stats(struct gpamm_tpool *pool, struct gpamm_tpool_stats *st);
/**
 * gpamm_tpool_fail() - failure injection: after @after more successful
 * allocations, fail the next @count ones (count 0 turns injection off).
 */
void gpamm_tpool_fail(struct gpamm_tpool *pool, uint64_t after, uint64_t count);

/* ---- memcache ---------------------------------------------------------- */

#define GPAMM_MEMCACHE_MAX 8

/**
 * struct gpamm_memcache - table pages set aside before taking the MMU lock,
 * so that a map under the lock never allocates and never fails. One per
 * vCPU (or per caller thread). Not thread-safe.
 */
struct gpamm_memcache {
	const struct gpamm_mm_ops *mm;
	unsigned nr;
	void *pages[GPAMM_MEMCACHE_MAX];
};

void gpamm_memcache_init(struct gpamm_memcache *mc, const struct gpamm_mm_ops *mm);
/**
 * gpamm_memcache_topup() - make sure @mc holds at least @min pages.
 * Context: may sleep; call without the MMU lock.
 * Return: 0, -EINVAL if @min > GPAMM_MEMCACHE_MAX, or -ENOMEM (pages
 * already obtained stay in the cache).
 */
int gpamm_memcache_topup(struct gpamm_memcache *mc, unsigned min);
/** gpamm_memcache_release() - give every cached page back to mm. */
void gpamm_memcache_release(struct gpamm_memcache *mc);

/* ---- the table --------------------------------------------------------- */

/* The windows of gpamm_pgt_map_upgrade() a test may hold open (gpamm/inject.h). */
enum gpamm_pgt_race {
	GPAMM_PGT_RACE_TABLE, /* a new table is filled, not yet linked */
	GPAMM_PGT_RACE_LEAF,  /* the leaf is read and the new value made, not yet swapped */
};

struct gpamm_pgt {
	struct gpamm_geom geom;
	gpamm_pte_t *root;
	const gpamm_pte_t *invalid[GPAMM_MAX_LEVELS]; /* invalid table of each level */
	struct gpamm_mm_ops mm;
	uint64_t live_tables;  /* root included; read with __atomic loads */
	/* tests only: called in each race window of the install (NULL: never) */
	void (*race_hook)(void *arg, enum gpamm_pgt_race where, uint64_t gpa,
			  struct gpamm_memcache *mc);
	void *race_arg;
};

/** Tables unlinked by a flush, to be freed after the TLB flush. */
struct gpamm_pgt_freelist {
	struct gpamm_tpage *head;
	uint64_t nr;
};

/**
 * gpamm_pgt_init() - an empty table (a root whose entries are all empty).
 * Context: may sleep.
 * Return: 0 or -ENOMEM.
 */
int gpamm_pgt_init(struct gpamm_pgt *pgt, const struct gpamm_geom *g,
		   const struct gpamm_mm_ops *mm);
/**
 * gpamm_pgt_destroy() - free every table, root included.
 * Context: no walker, hardware or software, may use the table any more.
 */
void gpamm_pgt_destroy(struct gpamm_pgt *pgt);

/** Pages a map may take from the memcache: one per level below the root. */
static inline unsigned gpamm_pgt_map_pages(const struct gpamm_pgt *pgt)
{
	return pgt->geom.levels - 1u;
}

/**
 * gpamm_pgt_map() - install a leaf entry, allocating missing tables.
 * @gpa:   the address to map; aligned to the leaf's size
 * @level: 0 for a page, 1 for a huge (PMD) block; @pte must then carry HUGE
 * @pte:   the entry; must have GPAMM_PTE_PRESENT (PROTNONE alone is not
 *         enough: KVM never installs such entries)
 * @mc:    must hold as many pages as the map needs: one per missing level
 *         between the root and @level, at most gpamm_pgt_map_pages(). With
 *         fewer, -ENOMEM and nothing is done. Topping up to
 *         gpamm_pgt_map_pages() before taking the lock always suffices.
 *
 * An existing leaf at @level is replaced. A huge leaf is never installed
 * over a table of small pages, and a small page is never installed inside
 * a huge leaf: both give -EEXIST (the caller unmaps or splits first).
 * Context: MMU lock (writer).
 * Return: 1 if the entry changed, 0 if it already held @pte, -EINVAL
 * (gpa out of range or unaligned, bad level, no PRESENT bit, HUGE bit
 * not matching @level), -ENOMEM (memcache short), -EEXIST. On error the
 * table is unchanged.
 */
int gpamm_pgt_map(struct gpamm_pgt *pgt, uint64_t gpa, unsigned level,
		  gpamm_pte_t pte, struct gpamm_memcache *mc);

/**
 * gpamm_pgt_map_upgrade() - install the base-page entry @pte at @gpa, but
 * never take anything away from an entry that already maps the same page
 * there: its bits are kept and @pte's added (one compare-and-exchange on
 * the whole entry, so a bit set meanwhile, by a walker with PTW or by a
 * concurrent fault, survives). An entry for another page is replaced; the
 * caller then owes a remote flush. Missing tables come from @mc and are
 * linked with a compare-and-exchange of the empty directory entry: of two
 * threads that link a table at the same place one wins, and the other's
 * page, never seen by anyone, goes straight back to its cache.
 * @oldp, @nowp: the entry before (0: none) and after; not NULL.
 * Context: mmu_lock for read (concurrent calls are safe with each other
 * and with the lock-free walker), or for write.
 * Return: 1 if the entry changed, 0 if not, -EINVAL (GPA outside the space
 * or unaligned, no PRESENT bit, HUGE set), -ENOMEM (memcache short: what
 * was linked stays, empty), -EEXIST (inside a huge leaf), -EAGAIN (a frozen
 * entry on the way: another thread is changing it; retry). On -EINVAL,
 * -EEXIST and -EAGAIN no leaf is changed.
 */
int gpamm_pgt_map_upgrade(struct gpamm_pgt *pgt, uint64_t gpa, gpamm_pte_t pte,
			  struct gpamm_memcache *mc, gpamm_pte_t *oldp, gpamm_pte_t *nowp);

/**
 * gpamm_pgt_lookup() - the leaf entry that maps @gpa.
 * @level: if not NULL, the level of the entry found (0 when none)
 * Context: any; lock-free (sees a consistent entry, old or new).
 * Return: the entry, or 0 if nothing maps @gpa.
 */
gpamm_pte_t gpamm_pgt_lookup(const struct gpamm_pgt *pgt, uint64_t gpa,
			     unsigned *level);

/**
 * gpamm_pgt_flush_range() - remove every translation in [start, end) and
 * unlink every table that is empty afterwards onto @fl. The caller flushes
 * TLBs, then calls gpamm_pgt_free_deferred(). The root is never unlinked.
 * Context: MMU lock (writer).
 * Return: leaf entries cleared.
 */
uint64_t gpamm_pgt_flush_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end,
			       struct gpamm_pgt_freelist *fl);
/**
 * gpamm_pgt_free_deferred() - free what a flush unlinked.
 * Context: after the TLB flush and after every walker has left the tables.
 */
void gpamm_pgt_free_deferred(struct gpamm_pgt *pgt, struct gpamm_pgt_freelist *fl);

/**
 * gpamm_pgt_unmap_range() - clear leaf entries in [start, end); tables stay.
 * Context: MMU lock (writer). Return: entries cleared.
 */
uint64_t gpamm_pgt_unmap_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end);
/**
 * gpamm_pgt_mkclean_range() - clear DIRTY|WRITE of present leaves in range
 * (write-protect for dirty logging; MODIFIED stays, so a later write fault
 * may make the page dirty again). Context: MMU lock. Return: entries changed.
 */
uint64_t gpamm_pgt_mkclean_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end);
/**
 * gpamm_pgt_mkclean_mask() - mkclean exactly the pages gfn_base + i for
 * every bit i set in @mask (KVM's enable_log_dirty_pt_masked). A huge leaf
 * holding any of them is cleaned whole. Context: MMU lock. Return: entries changed.
 */
uint64_t gpamm_pgt_mkclean_mask(struct gpamm_pgt *pgt, uint64_t gfn_base, uint64_t mask);
/** gpamm_pgt_mkold_range() - clear VALID (young) in range. Context: MMU lock. Return: entries changed. */
uint64_t gpamm_pgt_mkold_range(struct gpamm_pgt *pgt, uint64_t start, uint64_t end);
/** gpamm_pgt_test_young() - is any present leaf in [start, end) young? Context: any. */
bool gpamm_pgt_test_young(struct gpamm_pgt *pgt, uint64_t start, uint64_t end);

/**
 * gpamm_pgt_update_leaf() - atomically set @set and clear @clear in the
 * present leaf mapping @gpa (compare-and-exchange on the whole entry, so a
 * concurrent update of another bit is never lost).
 * @old, @new: if not NULL, the entry before and after
 * Context: MMU lock (reader or writer).
 * Return: 1 if changed, 0 if the bits were already so, -ENOENT if no
 * present leaf maps @gpa.
 */
int gpamm_pgt_update_leaf(struct gpamm_pgt *pgt, uint64_t gpa, gpamm_pte_t set,
			  gpamm_pte_t clear, gpamm_pte_t *old, gpamm_pte_t *new);
/**
 * gpamm_pgt_access_fault() - the fast fault path's update, in one descent
 * and one compare-and-exchange: make the present leaf at @gpa young, and
 * for a @write also dirty, but only if it carries the "may be made
 * writable" marker (MODIFIED).
 * @old, @new: the entry before and after (not NULL)
 * Context: MMU lock.
 * Return: 1 changed, 0 nothing to do (already so), -ENOENT no present
 * leaf, -EPERM a write to an entry without the marker (nothing changed).
 */
int gpamm_pgt_access_fault(struct gpamm_pgt *pgt, uint64_t gpa, bool write,
			   gpamm_pte_t *old, gpamm_pte_t *new);

static inline int gpamm_pgt_mkyoung(struct gpamm_pgt *pgt, uint64_t gpa, gpamm_pte_t *new)
{
	return gpamm_pgt_update_leaf(pgt, gpa, GPAMM_PTE_VALID, 0, NULL, new);
}
static inline int gpamm_pgt_mkdirty(struct gpamm_pgt *pgt, uint64_t gpa, gpamm_pte_t *new)
{
	return gpamm_pgt_update_leaf(pgt, gpa, GPAMM_PTE_WRITEABLE, 0, NULL, new);
}

/* ---- the generic walker ------------------------------------------------ */

enum gpamm_walk_flags {
	GPAMM_WALK_LEAF = 1u << 0,       /* visit leaf and empty entries */
	GPAMM_WALK_TABLE_PRE = 1u << 1,  /* visit a table entry before descending */
	GPAMM_WALK_TABLE_POST = 1u << 2, /* visit a table entry after its table */
};

/**
 * struct gpamm_walk_ctx - what a visitor sees of one entry.
 * @ptep:  the entry
 * @old:   its value when read, just before the visit
 * @addr:  the first GPA the entry covers
 * @start, @end: the walk's range (clamped to the GPA space)
 * @level: 0 = leaf table
 */
struct gpamm_walk_ctx {
	struct gpamm_pgt *pgt;
	gpamm_pte_t *ptep;
	gpamm_pte_t old;
	uint64_t addr;
	uint64_t start, end;
	unsigned level;
	void *arg;
};

/* A visitor returns 0 to go on, GPAMM_WALK_STOP to end the walk with
 * success, or a negative errno to end it with that error. After a LEAF or
 * TABLE_PRE visit the entry is re-read: a visitor that installed a table is
 * followed into it. */
#define GPAMM_WALK_STOP 1
typedef int (*gpamm_walk_fn)(const struct gpamm_walk_ctx *ctx, enum gpamm_walk_flags visit);

/**
 * gpamm_pgt_walk() - visit every entry overlapping [start, end).
 * Context: as the visitor requires.
 * Return: 0, or the visitor's negative errno.
 */
int gpamm_pgt_walk(struct gpamm_pgt *pgt, uint64_t start, uint64_t end,
		   gpamm_walk_fn fn, void *arg, unsigned flags);

/** gpamm_pgt_entry_is_table() - does @e, read at @level, point to a table? */
static inline bool gpamm_pgt_entry_is_table(const struct gpamm_pgt *pgt,
					    gpamm_pte_t e, unsigned level)
{
	return level > 0 && !(e & GPAMM_PTE_HUGE) &&
	       e != (gpamm_pte_t)(uintptr_t)pgt->invalid[level - 1];
}
/** gpamm_pgt_entry_none() - is @e, read at @level, an empty entry? */
static inline bool gpamm_pgt_entry_none(const struct gpamm_pgt *pgt,
					gpamm_pte_t e, unsigned level)
{
	return level ? e == (gpamm_pte_t)(uintptr_t)pgt->invalid[level - 1] : e == 0;
}
/** gpamm_pgt_live_tables() - table pages linked in @pgt, root included. */
static inline uint64_t gpamm_pgt_live_tables(const struct gpamm_pgt *pgt)
{
	return __atomic_load_n(&pgt->live_tables, __ATOMIC_RELAXED);
}

/**
 * gpamm_pgt_freeze() - swap the entry at @level for @gpa (a base-page leaf
 * at 0, a PMD-level entry at 1) with the frozen value, if it still holds
 * @expect. The first step of a change made in several steps under
 * mmu_lock for read; the last is gpamm_pgt_thaw(). The caller owes the
 * remote flush if the old entry was present. Frozen entries never outlive
 * the read-side section that made them (writers never see one).
 * Return: 0, -EINVAL (no such level here, @gpa outside the space), -ENOENT
 * (the tables to @level do not exist), -EBUSY (the entry is not @expect).
 */
int gpamm_pgt_freeze(struct gpamm_pgt *pgt, uint64_t gpa, unsigned level, gpamm_pte_t expect);
/** gpamm_pgt_thaw() - replace the frozen entry (as above) with @val. Return: 0, -EINVAL. */
int gpamm_pgt_thaw(struct gpamm_pgt *pgt, uint64_t gpa, unsigned level, gpamm_pte_t val);

/** gpamm_pgt_invalid_table() - the shared empty table of @level for a page shift. */
const gpamm_pte_t *gpamm_pgt_invalid_table(unsigned page_shift, unsigned level);

#endif
