/* SPDX-License-Identifier: MIT */
/*
 * The page-table measurement kernels of the pgtable suite of "gpamm
 * bench": the GPA table's hot operations
 * (include/gpamm/pgtable.h) timed over every page of a range, and the
 * "limit" they are measured against, a plain pass clearing one bit in as
 * many 8-byte words as there are pages: what a range operation would cost
 * if the table walk were free.
 *
 * A struct bk_pgt holds one table over [0, bytes) of GPA, mapped with fake
 * frame numbers (no guest RAM behind it), a table-page pool and memcache,
 * the random lookup addresses and the limit's words. Each kernel times one
 * operation over the whole range and returns the elapsed ns; it also checks
 * what the operation returned (entries changed, addresses found), leaves
 * that count in bk_pgt.count, and returns -1 with a message in bk_pgt.err
 * when it is wrong, since then the time means nothing. The caller sequences
 * the kernels (a map first) and owns the repetitions and the reporting; pin
 * the thread first (common.h).
 *
 * Context: one thread per struct bk_pgt; the table's lock rules are the
 * caller's to keep, and a single thread keeps them trivially.
 */
#ifndef GPAMM_BENCH_KERNELS_PGTABLE_H
#define GPAMM_BENCH_KERNELS_PGTABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "gpamm/geom.h"
#include "gpamm/pgtable.h"

/* A write-faulted, cached, writable, young page: what most of guest RAM looks like. */
#define BK_PROT_DIRTY (GPAMM_PTE_PRESENT | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC | \
		       GPAMM_PTE_WR_MARKER | GPAMM_PTE_WRITEABLE)
#define BK_PFN_BASE   0x1000ULL

struct bk_pgt {
	struct gpamm_geom g;
	struct gpamm_tpool *pool;
	struct gpamm_mm_ops mm;
	struct gpamm_memcache mc;
	struct gpamm_pgt pgt;
	bool live;              /* pgt is initialised */
	uint64_t pages, bytes;
	unsigned shift;
	uint64_t *gpas;         /* random lookup addresses */
	uint64_t nr_lookups;
	uint64_t *words;        /* the limit's array: one word per page */
	uint64_t count;         /* the last kernel's entries changed or addresses found */
	char err[160];
};

/**
 * bk_pgt_setup() - a pool, a memcache and the arrays for @bytes of GPA in
 * the (@page_shift, @levels) layout, and the lookup addresses, drawn from
 * @seed: @nr_lookups random bytes of the range, or with @nr_lookups 0
 * every page once, in random order, each at a random byte of the page.
 * The table itself is not made yet (bk_pgt_start()).
 * Return: 0, or -1 with a message in b->err (bad layout, no memory).
 */
int bk_pgt_setup(struct bk_pgt *b, unsigned page_shift, unsigned levels, uint64_t bytes,
		 uint64_t nr_lookups, uint64_t seed);
/* Destroy the table if live, release the memcache, free the pool and arrays. */
void bk_pgt_teardown(struct bk_pgt *b);

/* An empty table (one repetition starts here). Return: 0 or -1. */
int bk_pgt_start(struct bk_pgt *b);
/* Destroy the table; the pool keeps its pages for the next bk_pgt_start(). */
void bk_pgt_stop(struct bk_pgt *b);

/*
 * The kernels. Each returns the elapsed ns of one operation over every
 * page (bk_pgt_lookups(): of every lookup), or -1 with b->err set.
 */

/* Map every page as a fault does: memcache top-up, then map; both timed. */
double bk_pgt_map_all(struct bk_pgt *b);
/* Every lookup address once; each must find its page. */
double bk_pgt_lookups(struct bk_pgt *b);
/*
 * Write-protect the whole range in one call (enable logging, classic GET),
 * or 64 pages per call by mask (KVM_CLEAR_DIRTY_LOG's hook). Both first
 * dirty every page again, untimed, the way guest writes between two log
 * rounds do: through the fast fault path's mkdirty.
 */
double bk_pgt_mkclean_range(struct bk_pgt *b);
double bk_pgt_mkclean_mask(struct bk_pgt *b);
/* Clear the young bit of every page in one call (aging). */
double bk_pgt_mkold_range(struct bk_pgt *b);
/* Test the whole range for a young page when none is: the full scan. */
double bk_pgt_test_young(struct bk_pgt *b);
/* Clear every leaf; the tables stay (an unmap notifier's range). */
double bk_pgt_unmap_range(struct bk_pgt *b);
/* Clear every leaf and free the emptied tables after the "TLB flush" (memslot delete). */
double bk_pgt_flush_range(struct bk_pgt *b);

/*
 * The limit: one pass clearing a bit in each of b->pages words, word by
 * word as the table operations must (entries are whole 64-bit atomics),
 * or as the compiler vectorises the same loop, for information.
 */
double bk_pgt_limit(struct bk_pgt *b);
double bk_pgt_limit_simd(struct bk_pgt *b);

#endif
