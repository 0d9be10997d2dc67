// SPDX-License-Identifier: MIT
/*
 * The table-page pool: the default source of table pages. Pages come from
 * chunks aligned to their own size; the first page of a chunk holds the
 * chunk header and a struct gpamm_tpage for every other page, so finding a
 * page's metadata is two arithmetic steps and needs no lookup structure.
 * Freed pages go on a free list and are reused; chunks are unmapped when
 * the pool is destroyed. In debug builds a freed page is filled with a
 * poison pattern (a stale walker reading it sees non-canonical pointers and
 * non-present leaves), and under ASan it is also poisoned for the sanitizer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gpamm/pgtable.h"
#include "util.h"

extern _Atomic uint64_t gpamm_live_tpools;

#ifdef GPAMM_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define TPOOL_POISON 0x5a5a5a5a5a5a5a5aULL
#define TPOOL_CHUNK (2ULL << 20)

struct tpool_chunk {
	struct gpamm_tpool *pool;
	struct tpool_chunk *next;
	struct gpamm_tpage meta[]; /* one per page; those of the header pages unused */
};

struct gpamm_tpool {
	pthread_mutex_t lock;
	unsigned page_shift;
	size_t page_size;
	unsigned chunk_pages;
	unsigned meta_pages; /* pages at the start of a chunk that hold the header */
	size_t chunk_bytes;
	struct gpamm_tpage *free;
	struct tpool_chunk *chunks;
	struct gpamm_tpool_stats st;
	uint64_t fail_after, fail_count;
};

struct gpamm_tpool *gpamm_tpool_create(unsigned page_shift)
{
	struct gpamm_tpool *pool;

	if (page_shift < 12 || page_shift > 16)
		return NULL;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return NULL;
	pthread_mutex_init(&pool->lock, NULL);
	pool->page_shift = page_shift;
	pool->page_size = (size_t)1 << page_shift;
	/*
	 * 2 MiB chunks, aligned, so that the kernel can back each with one
	 * huge page: a walk over many tables then costs no DTLB misses. The
	 * header and the metadata of every page take the first page(s).
	 */
	pool->chunk_bytes = TPOOL_CHUNK;
	pool->chunk_pages = (unsigned)(TPOOL_CHUNK >> page_shift);
	pool->meta_pages = (unsigned)((sizeof(struct tpool_chunk) +
				       pool->chunk_pages * sizeof(struct gpamm_tpage) +
				       pool->page_size - 1) >> page_shift);
	atomic_fetch_add_explicit(&gpamm_live_tpools, 1, memory_order_relaxed);
	return pool;
}

/* Map one chunk aligned to its size and thread its pages onto the free list. */
static int tpool_grow(struct gpamm_tpool *pool)
{
	size_t len = pool->chunk_bytes * 2;
	uint8_t *raw, *base;
	struct tpool_chunk *c;
	uintptr_t aligned;
	unsigned i;

	raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return -ENOMEM;
	aligned = ((uintptr_t)raw + pool->chunk_bytes - 1) & ~(uintptr_t)(pool->chunk_bytes - 1);
	base = (uint8_t *)aligned;
	if (base > raw)
		munmap(raw, (size_t)(base - raw));
	if (base + pool->chunk_bytes < raw + len)
		munmap(base + pool->chunk_bytes, (size_t)(raw + len - (base + pool->chunk_bytes)));
	madvise(base, pool->chunk_bytes, MADV_HUGEPAGE);

	c = (struct tpool_chunk *)base;
	c->pool = pool;
	c->next = pool->chunks;
	pool->chunks = c;
	for (i = pool->chunk_pages - 1; i >= pool->meta_pages; i--) {
		struct gpamm_tpage *m = &c->meta[i];
		m->table = base + ((size_t)i << pool->page_shift);
		m->next = pool->free;
		pool->free = m;
		POISON(m->table, pool->page_size);
	}
	pool->st.chunks++;
	pool->st.bytes += pool->chunk_bytes;
	return 0;
}

static void *tpool_alloc(void *ctx)
{
	struct gpamm_tpool *pool = ctx;
	struct gpamm_tpage *m = NULL;

	pthread_mutex_lock(&pool->lock);
	if (pool->fail_count) {
		if (pool->fail_after) {
			pool->fail_after--;
		} else {
			pool->fail_count--;
			pool->st.failed++;
			goto out;
		}
	}
	if (!pool->free && tpool_grow(pool)) {
		pool->st.failed++;
		goto out;
	}
	m = pool->free;
	pool->free = m->next;
	m->next = NULL;
	pool->st.live++;
	pool->st.allocs++;
out:
	pthread_mutex_unlock(&pool->lock);
	if (!m)
		return NULL;
	UNPOISON(m->table, pool->page_size);
	return m->table;
}

static struct gpamm_tpage *tpool_meta(void *ctx, void *table)
{
	struct gpamm_tpool *pool = ctx;
	uintptr_t p = (uintptr_t)table;
	struct tpool_chunk *c = (struct tpool_chunk *)(p & ~(uintptr_t)(pool->chunk_bytes - 1));
	size_t idx = (p - (uintptr_t)c) >> pool->page_shift;

	GPAMM_BUG_ON(c->pool != pool || idx < pool->meta_pages || (p & (pool->page_size - 1)));
	return &c->meta[idx];
}

static void tpool_free(void *ctx, void *table)
{
	struct gpamm_tpool *pool = ctx;
	struct gpamm_tpage *m = tpool_meta(pool, table);

#ifdef GPAMM_DEBUG
	{
		uint64_t *w = table;
		for (size_t i = 0; i < pool->page_size / 8; i++)
			w[i] = TPOOL_POISON;
	}
#endif
	POISON(table, pool->page_size);
	pthread_mutex_lock(&pool->lock);
	m->next = pool->free;
	pool->free = m;
	GPAMM_BUG_ON(pool->st.live == 0);
	pool->st.live--;
	pool->st.frees++;
	pthread_mutex_unlock(&pool->lock);
}

void gpamm_tpool_ops(struct gpamm_tpool *pool, struct gpamm_mm_ops *ops)
{
	ops->alloc_table = tpool_alloc;
	ops->free_table = tpool_free;
	ops->table_meta = tpool_meta;
	ops->ctx = pool;
}

void gpamm_tpool_stats(struct gpamm_tpool *pool, struct gpamm_tpool_stats *st)
{
	pthread_mutex_lock(&pool->lock);
	*st = pool->st;
	pthread_mutex_unlock(&pool->lock);
}

void gpamm_tpool_fail(struct gpamm_tpool *pool, uint64_t after, uint64_t count)
{
	pthread_mutex_lock(&pool->lock);
	pool->fail_after = after;
	pool->fail_count = count;
	pthread_mutex_unlock(&pool->lock);
}

uint64_t gpamm_tpool_destroy(struct gpamm_tpool *pool)
{
	uint64_t live;

	if (!pool)
		return 0;
	live = pool->st.live;
	while (pool->chunks) {
		struct tpool_chunk *c = pool->chunks;
		pool->chunks = c->next;
		UNPOISON(c, pool->chunk_bytes);
		munmap(c, pool->chunk_bytes);
	}
	pthread_mutex_destroy(&pool->lock);
	free(pool);
	atomic_fetch_sub_explicit(&gpamm_live_tpools, 1, memory_order_relaxed);
	return live;
}
