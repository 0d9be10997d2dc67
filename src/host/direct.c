// SPDX-License-Identifier: MIT
/*
 * The direct host: guest RAM is this process's own memory. The VMM mmaps
 * guest RAM itself and hands its address to a memslot; the page behind HVA h
 * is the page at address h and its PFN is h >> page_shift, so page_ptr() is
 * the inverse shift. Nothing here moves memory behind the MMU's back: there
 * are no host events, notifiers are only remembered (and told release() when
 * the owner destroys the host, the mm-exit path), and check_access is absent (checking = false).
 *
 * get_page() is on every slow fault, so it takes no lock and never touches
 * the page: it validates the address, counts the pin with one relaxed atomic
 * on a counter of the calling thread's shard and returns. The pin count exists so that tests and VM teardown can prove
 * every pin was dropped (DESIGN.md contract 6), not to keep memory alive:
 * the VMM owns that memory and must keep it mapped while a VM uses it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/host.h"
#include "util.h"

#define DIRECT_MAX_NOTIFIERS 16
#define DIRECT_PIN_SHARDS    16

/* The calling thread's shard, handed out round robin at its first pin. */
static unsigned pin_shard(void)
{
	static _Atomic unsigned next;
	static _Thread_local unsigned mine; /* 1 + shard; 0: not yet */

	if (unlikely(!mine))
		mine = 1 + atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) %
			       DIRECT_PIN_SHARDS;
	return mine - 1;
}

struct direct_notifier {
	const struct gpamm_mmu_notifier_ops *ops;
	void *mn;
};

struct direct_host {
	struct gpamm_host h;
	uint64_t page_mask;
	/*
	 * Outstanding pins, in shards of a cache line each: vCPUs faulting in
	 * parallel would otherwise bounce one line between them twice a
	 * fault. A thread counts on its own shard (a put on another thread's
	 * shard may take it below zero); the total is the sum.
	 */
	struct {
		int64_t n;
	} __attribute__((aligned(64))) pinned[DIRECT_PIN_SHARDS];
	pthread_mutex_t lock; /* the notifier registry only; never on the fault path */
	unsigned nr_notifiers;
	struct direct_notifier notifiers[DIRECT_MAX_NOTIFIERS];
};

static inline struct direct_host *to_direct(struct gpamm_host *h)
{
	return (struct direct_host *)h;
}

static int64_t direct_pins(struct direct_host *d)
{
	int64_t sum = 0;

	for (unsigned i = 0; i < DIRECT_PIN_SHARDS; i++)
		sum += __atomic_load_n(&d->pinned[i].n, __ATOMIC_RELAXED);
	return sum;
}

static int direct_get_page(struct gpamm_host *h, uint64_t hva, bool write,
			   struct gpamm_host_page *out)
{
	struct direct_host *d = to_direct(h);

	/* Page 0 is never guest RAM; a misaligned HVA is a caller bug. */
	if (unlikely(!hva || (hva & d->page_mask)))
		return -EFAULT;
	__atomic_add_fetch(&d->pinned[pin_shard()].n, 1, __ATOMIC_RELAXED);
	out->pfn = hva >> h->page_shift;
	out->flags = GPAMM_HOST_PAGE_WRITABLE;
	out->map_shift = h->page_shift;
	return 0;
}

static void direct_put_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	struct direct_host *d = to_direct(h);
	int64_t *n = &d->pinned[pin_shard()].n;

	/* An unbalanced put would make the total wrong and hide every later
	 * leak: checked on the total when this shard goes below zero. */
	if (unlikely(__atomic_sub_fetch(n, 1, __ATOMIC_RELAXED) < 0) && direct_pins(d) < 0) {
		GPAMM_BUG_ON(1);
		__atomic_add_fetch(n, 1, __ATOMIC_RELAXED);
	}
}

static void direct_mark_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	/* The process's own page tables track accessed/dirty for real. */
}

static void *direct_page_ptr(struct gpamm_host *h, uint64_t pfn)
{
	return (void *)(uintptr_t)(pfn << h->page_shift);
}

static int direct_notifier_register(struct gpamm_host *h,
				    const struct gpamm_mmu_notifier_ops *ops, void *mn)
{
	struct direct_host *d = to_direct(h);
	int ret = 0;
	unsigned i;

	if (!ops || !mn)
		return -EINVAL;
	pthread_mutex_lock(&d->lock);
	for (i = 0; i < d->nr_notifiers; i++)
		if (d->notifiers[i].mn == mn)
			ret = -EEXIST;
	if (!ret && d->nr_notifiers == DIRECT_MAX_NOTIFIERS)
		ret = -ENOSPC;
	if (!ret)
		d->notifiers[d->nr_notifiers++] = (struct direct_notifier){ ops, mn };
	pthread_mutex_unlock(&d->lock);
	return ret;
}

static void direct_notifier_unregister(struct gpamm_host *h, void *mn)
{
	struct direct_host *d = to_direct(h);
	unsigned i;

	pthread_mutex_lock(&d->lock);
	for (i = 0; i < d->nr_notifiers; i++) {
		if (d->notifiers[i].mn == mn) {
			d->notifiers[i] = d->notifiers[--d->nr_notifiers];
			break;
		}
	}
	pthread_mutex_unlock(&d->lock);
}

static void direct_stats(struct gpamm_host *h, struct gpamm_host_stats *st)
{
	struct direct_host *d = to_direct(h);

	*st = (struct gpamm_host_stats){
		.pinned = (uint64_t)direct_pins(d),
	};
}

/*
 * A notifier still registered sees the address space go away, as an MMU
 * does when its process exits before the VM is torn down.
 */
static void direct_exit(struct gpamm_host *h)
{
	struct direct_host *d = to_direct(h);

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < d->nr_notifiers; i++)
		if (d->notifiers[i].ops->release)
			d->notifiers[i].ops->release(d->notifiers[i].mn);
	pthread_mutex_unlock(&d->lock);
}

static void direct_destroy(struct gpamm_host *h)
{
	struct direct_host *d = to_direct(h);

	pthread_mutex_destroy(&d->lock);
	free(d);
}

static const struct gpamm_host_ops direct_ops = {
	.name = "direct",
	.get_page = direct_get_page,
	.put_page = direct_put_page,
	.mark_page = direct_mark_page,
	.page_ptr = direct_page_ptr,
	.check_access = NULL,
	.notifier_register = direct_notifier_register,
	.notifier_unregister = direct_notifier_unregister,
	.stats = direct_stats,
	.exit = direct_exit,
	.destroy = direct_destroy,
};

/*
 * gpamm_host_direct_create() - see host.h.
 * Context: any thread; allocates.
 */
struct gpamm_host *gpamm_host_direct_create(unsigned page_shift)
{
	struct direct_host *d;

	if (page_shift != 12 && page_shift != 14 && page_shift != 16)
		return NULL;
	d = aligned_alloc(64, (sizeof(*d) + 63) & ~(size_t)63); /* the shards' lines */
	if (!d)
		return NULL;
	memset(d, 0, sizeof(*d));
	d->h.ops = &direct_ops;
	d->h.page_shift = page_shift;
	d->h.checking = false;
	d->h.pfn_linear = true;
	d->h.pfn_linear_off = 0;
	d->page_mask = (1ULL << page_shift) - 1;
	pthread_mutex_init(&d->lock, NULL);
	return &d->h;
}
