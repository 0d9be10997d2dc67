// SPDX-License-Identifier: MIT
/*
 * Page-table measurement kernels: the GPA table's range operations, map
 * and lookup, each timed over every page of a range, and the limit pass
 * they are compared with (see kernels_pgtable.h). A kernel checks what
 * the library returned before its time is used: a count that does not
 * match makes every figure of the run meaningless.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gpamm/pte.h"
#include "kernels_pgtable.h"

/* Keeps the compiler from dropping computed results. */
static volatile uint64_t sink;

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

__attribute__((format(printf, 2, 3)))
static double fail(struct bk_pgt *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b->err, sizeof(b->err), fmt, ap);
	va_end(ap);
	return -1;
}

static double fail_count(struct bk_pgt *b, const char *what, uint64_t got, uint64_t want)
{
	return fail(b, "%s: got %llu, expected %llu", what, (unsigned long long)got,
		    (unsigned long long)want);
}

/* ---- set-up ------------------------------------------------------------------------ */

/* Every page once, in random order (Fisher-Yates), at a random byte of each. */
static void lookup_every_page(struct bk_pgt *b, uint64_t *seed)
{
	const uint64_t mask = (1ULL << b->shift) - 1;
	uint64_t i;

	for (i = 0; i < b->pages; i++)
		b->gpas[i] = i << b->shift;
	for (i = b->pages; i > 1; i--) {
		uint64_t j = splitmix64(seed) % i, t = b->gpas[i - 1];

		b->gpas[i - 1] = b->gpas[j];
		b->gpas[j] = t;
	}
	for (i = 0; i < b->pages; i++)
		b->gpas[i] |= splitmix64(seed) & mask;
}

int bk_pgt_setup(struct bk_pgt *b, unsigned page_shift, unsigned levels, uint64_t bytes,
		 uint64_t nr_lookups, uint64_t seed)
{
	uint64_t i;

	memset(b, 0, sizeof(*b));
	if (gpamm_geom_init(&b->g, page_shift, levels))
		return (int)fail(b, "no layout with %u-byte pages and %u levels",
				 1u << page_shift, levels);
	if (!bytes || bytes > gpamm_geom_space(&b->g) || bytes & ((1ULL << page_shift) - 1))
		return (int)fail(b, "%llu bytes of GPA do not fit this layout",
				 (unsigned long long)bytes);
	b->shift = page_shift;
	b->bytes = bytes;
	b->pages = bytes >> page_shift;
	b->nr_lookups = nr_lookups ? nr_lookups : b->pages;
	b->pool = gpamm_tpool_create(page_shift);
	b->gpas = malloc(b->nr_lookups * sizeof(*b->gpas));
	b->words = malloc(b->pages * sizeof(*b->words));
	if (!b->pool || !b->gpas || !b->words) {
		bk_pgt_teardown(b);
		return (int)fail(b, "out of memory");
	}
	gpamm_tpool_ops(b->pool, &b->mm);
	gpamm_memcache_init(&b->mc, &b->mm);
	if (!nr_lookups)
		lookup_every_page(b, &seed);
	else if (!(bytes & (bytes - 1)))
		for (i = 0; i < nr_lookups; i++)
			b->gpas[i] = splitmix64(&seed) & (bytes - 1);
	else
		for (i = 0; i < nr_lookups; i++)
			b->gpas[i] = splitmix64(&seed) % bytes;
	return 0;
}

void bk_pgt_teardown(struct bk_pgt *b)
{
	bk_pgt_stop(b);
	if (b->pool) {
		gpamm_memcache_release(&b->mc);
		gpamm_tpool_destroy(b->pool);
	}
	free(b->gpas);
	free(b->words);
	b->pool = NULL;
	b->gpas = NULL;
	b->words = NULL;
}

int bk_pgt_start(struct bk_pgt *b)
{
	if (gpamm_pgt_init(&b->pgt, &b->g, &b->mm))
		return (int)fail(b, "gpamm_pgt_init: out of memory");
	b->live = true;
	return 0;
}

void bk_pgt_stop(struct bk_pgt *b)
{
	if (b->live)
		gpamm_pgt_destroy(&b->pgt);
	b->live = false;
}

/* ---- the table's operations ----------------------------------------------------------- */

/*
 * Map every page as a fault does: top up (a no-op unless a table was
 * taken), then map. Both calls are what a vCPU pays per fault, so both
 * are inside the timed region.
 */
double bk_pgt_map_all(struct bk_pgt *b)
{
	unsigned need = gpamm_pgt_map_pages(&b->pgt);
	uint64_t i, n = 0;
	double t0, t1;
	int err = 0;

	t0 = now_ns();
	for (i = 0; i < b->pages; i++) {
		int ret;

		err |= gpamm_memcache_topup(&b->mc, need);
		ret = gpamm_pgt_map(&b->pgt, i << b->shift, 0,
				    gpamm_pte_mk(BK_PFN_BASE + i, b->shift, BK_PROT_DIRTY),
				    &b->mc);
		n += ret == 1;
	}
	t1 = now_ns();
	b->count = n;
	if (err || n != b->pages)
		return fail_count(b, "map: pages installed", n, b->pages);
	return t1 - t0;
}

double bk_pgt_lookups(struct bk_pgt *b)
{
	const uint64_t *gpas = b->gpas;
	const uint64_t n = b->nr_lookups;
	uint64_t i, sum = 0, found = 0;
	double t0, t1;

	t0 = now_ns();
	for (i = 0; i < n; i++) {
		gpamm_pte_t pte = gpamm_pgt_lookup(&b->pgt, gpas[i], NULL);

		sum += pte;
		found += pte != 0;
	}
	t1 = now_ns();
	sink = sum;
	b->count = found;
	if (found != n)
		return fail_count(b, "lookup: addresses found mapped", found, n);
	return t1 - t0;
}

/* Dirty every page again as guest writes between two log rounds do: an atomic update each. */
static int redirty_all(struct bk_pgt *b)
{
	uint64_t i;

	for (i = 0; i < b->pages; i++)
		if (gpamm_pgt_mkdirty(&b->pgt, i << b->shift, NULL) != 1)
			return (int)fail(b, "mkdirty before a timed mkclean: page %llu not made "
					 "dirty", (unsigned long long)i);
	return 0;
}

double bk_pgt_mkclean_range(struct bk_pgt *b)
{
	uint64_t n;
	double t0, t1;

	if (redirty_all(b))
		return -1;
	t0 = now_ns();
	n = gpamm_pgt_mkclean_range(&b->pgt, 0, b->bytes);
	t1 = now_ns();
	b->count = n;
	if (n != b->pages)
		return fail_count(b, "mkclean_range: entries changed", n, b->pages);
	return t1 - t0;
}

/* One call per 64-page word of the dirty bitmap; a short last word gets a short mask. */
double bk_pgt_mkclean_mask(struct bk_pgt *b)
{
	const uint64_t full = b->pages / 64, rest = b->pages % 64;
	uint64_t g, n = 0;
	double t0, t1;

	if (redirty_all(b))
		return -1;
	t0 = now_ns();
	for (g = 0; g < full; g++)
		n += gpamm_pgt_mkclean_mask(&b->pgt, g * 64, ~0ULL);
	if (rest)
		n += gpamm_pgt_mkclean_mask(&b->pgt, full * 64, (1ULL << rest) - 1);
	t1 = now_ns();
	b->count = n;
	if (n != b->pages)
		return fail_count(b, "mkclean_mask: entries changed", n, b->pages);
	return t1 - t0;
}

double bk_pgt_mkold_range(struct bk_pgt *b)
{
	uint64_t n;
	double t0, t1;

	t0 = now_ns();
	n = gpamm_pgt_mkold_range(&b->pgt, 0, b->bytes);
	t1 = now_ns();
	b->count = n;
	if (n != b->pages)
		return fail_count(b, "mkold_range: entries made old (every page was young)", n,
				  b->pages);
	return t1 - t0;
}

/* After bk_pgt_mkold_range() nothing is young, so the walk cannot stop early. */
double bk_pgt_test_young(struct bk_pgt *b)
{
	double t0, t1;
	bool young;

	t0 = now_ns();
	young = gpamm_pgt_test_young(&b->pgt, 0, b->bytes);
	t1 = now_ns();
	b->count = b->pages;
	if (young)
		return fail(b, "test_young: found a young page after mkold of the whole range");
	return t1 - t0;
}

double bk_pgt_unmap_range(struct bk_pgt *b)
{
	uint64_t n;
	double t0, t1;

	t0 = now_ns();
	n = gpamm_pgt_unmap_range(&b->pgt, 0, b->bytes);
	t1 = now_ns();
	b->count = n;
	if (n != b->pages)
		return fail_count(b, "unmap_range: entries cleared", n, b->pages);
	return t1 - t0;
}

/* Memslot delete: clear, unlink the emptied tables, free them after the "TLB flush". */
double bk_pgt_flush_range(struct bk_pgt *b)
{
	struct gpamm_pgt_freelist fl = { NULL, 0 };
	uint64_t n;
	double t0, t1;

	t0 = now_ns();
	n = gpamm_pgt_flush_range(&b->pgt, 0, b->bytes, &fl);
	gpamm_pgt_free_deferred(&b->pgt, &fl);
	t1 = now_ns();
	b->count = n;
	if (n != b->pages)
		return fail_count(b, "flush_range: entries cleared", n, b->pages);
	if (gpamm_pgt_live_tables(&b->pgt) != 1)
		return fail_count(b, "flush_range: tables left besides the root",
				  gpamm_pgt_live_tables(&b->pgt), 1);
	return t1 - t0;
}

/* ---- the limit ---------------------------------------------------------------------- */

static BK_SCALAR_FN void clear_bit_scalar(uint64_t *w, uint64_t n)
{
	BK_SCALAR_FOR (uint64_t i = 0; i < n; i++)
		w[i] &= ~GPAMM_PTE_DIRTY;
	__asm__ volatile("" : : "r"(w) : "memory");
}

static __attribute__((noinline)) void clear_bit_simd(uint64_t *w, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		w[i] &= ~GPAMM_PTE_DIRTY;
	__asm__ volatile("" : : "r"(w) : "memory");
}

static double limit_with(struct bk_pgt *b, void (*pass)(uint64_t *, uint64_t))
{
	uint64_t *w = b->words;
	const uint64_t n = b->pages; /* a local: the stores cannot alias it */
	uint64_t i;
	double t0, t1;

	for (i = 0; i < n; i++)
		w[i] = BK_PROT_DIRTY;
	t0 = now_ns();
	pass(w, n);
	t1 = now_ns();
	b->count = n;
	return t1 - t0;
}

double bk_pgt_limit(struct bk_pgt *b)
{
	return limit_with(b, clear_bit_scalar);
}

double bk_pgt_limit_simd(struct bk_pgt *b)
{
	return limit_with(b, clear_bit_simd);
}
