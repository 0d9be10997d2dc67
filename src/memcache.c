// SPDX-License-Identifier: MIT
/*
 * The pre-filled table-page cache. Topping up may sleep and may fail, so it
 * happens before the MMU lock is taken; taking a page under the lock then
 * cannot fail. A cache belongs to one thread (a vCPU); it is not locked.
 */
#include <errno.h>

#include "gpamm/pgtable.h"
#include "memcache.h"
#include "util.h"

void gpamm_memcache_init(struct gpamm_memcache *mc, const struct gpamm_mm_ops *mm)
{
	mc->mm = mm;
	mc->nr = 0;
}

int gpamm_memcache_topup(struct gpamm_memcache *mc, unsigned min)
{
	if (min > GPAMM_MEMCACHE_MAX)
		return -EINVAL;
	while (mc->nr < min) {
		void *p = mc->mm->alloc_table(mc->mm->ctx);
		if (!p)
			return -ENOMEM;
		mc->pages[mc->nr++] = p;
	}
	return 0;
}

void *gpamm_memcache_take(struct gpamm_memcache *mc)
{
	GPAMM_BUG_ON(mc->nr == 0);
	return mc->nr ? mc->pages[--mc->nr] : NULL;
}

void gpamm_memcache_put(struct gpamm_memcache *mc, void *page)
{
	if (mc->nr < GPAMM_MEMCACHE_MAX)
		mc->pages[mc->nr++] = page;
	else
		mc->mm->free_table(mc->mm->ctx, page);
}

void gpamm_memcache_release(struct gpamm_memcache *mc)
{
	while (mc->nr)
		mc->mm->free_table(mc->mm->ctx, mc->pages[--mc->nr]);
}
