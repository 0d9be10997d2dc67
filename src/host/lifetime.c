// SPDX-License-Identifier: MIT
/*
 * A host's lifetime, common to every host: the owner's gpamm_host_destroy()
 * is the address space going away, which the attached VMs hear of through
 * release(); the memory is freed by whoever lets go last, the owner or the
 * last VM (KVM keeps the mm_struct the same way: the VM holds it with
 * mmgrab(), and release() only zaps). One atomic word decides: bit 0 is
 * "the owner is done", each holder adds 2, so exactly one of the owner's
 * or a holder's update sees the word fall to "owner done, no holder".
 */
#include <stdatomic.h>

#include "gpamm/host.h"
#include "guestcall.h"

void gpamm_host_hold(struct gpamm_host *h)
{
	atomic_fetch_add(&h->lifetime, 2);
}

void gpamm_host_drop(struct gpamm_host *h)
{
	if (atomic_fetch_sub(&h->lifetime, 2) == 3)
		h->ops->destroy(h);
}

void gpamm_host_destroy(struct gpamm_host *h)
{
	struct gpamm_vcpu *g;

	if (!h)
		return;
	g = gpamm_guest_call_begin(); /* release() flushes TLBs: not in guest mode */
	if (h->ops->exit)
		h->ops->exit(h);
	gpamm_guest_call_end(g);
	if (atomic_fetch_add(&h->lifetime, 1) == 0)
		h->ops->destroy(h);
}
