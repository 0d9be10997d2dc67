/* SPDX-License-Identifier: MIT */
/* Internal side of the memcache: taking and returning pages under the lock. */
#ifndef GPAMM_MEMCACHE_INT_H
#define GPAMM_MEMCACHE_INT_H

#include "gpamm/pgtable.h"

/* Context: owner thread; never fails when topped up (BUG otherwise). */
void *gpamm_memcache_take(struct gpamm_memcache *mc);
/* Context: owner thread; a page that lost a race goes back for next time. */
void gpamm_memcache_put(struct gpamm_memcache *mc, void *page);

#endif
