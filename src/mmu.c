// SPDX-License-Identifier: MIT
/*
 * The MMU proper: the guest fault handler (fast path: make a present entry
 * young or dirty; slow path: memslot -> HVA -> pinned host page -> entry,
 * with the invalidation-sequence retry), the MMU-notifier handlers through
 * which the host takes pages away, and the flush / write-protect helpers
 * used by memslot changes. Every change that removes or downgrades a
 * translation is followed by a remote TLB flush before the MMU lock is
 * dropped; unlinked tables are freed after that flush, outside the lock.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <urcu/compiler.h>

#include "memcache.h"
#include "vm.h"

/* Range operations, the notifier, the VMM: mmu_lock for write. */
static inline void mmu_lock(struct gpamm_vm *vm) { mmu_write_lock(&vm->mmu_lock); }
static inline void mmu_unlock(struct gpamm_vm *vm) { mmu_write_unlock(&vm->mmu_lock); }
/* Faults: for read, in this vCPU's slot (for write in the serialised mode). */
static inline void fault_lock(struct gpamm_vcpu *v) { mmu_read_lock(&v->vm->mmu_lock, v->mmu_slot); }
static inline void fault_unlock(struct gpamm_vcpu *v) { mmu_read_unlock(&v->vm->mmu_lock, v->mmu_slot); }

static inline struct gpamm_memslots *slots_deref(struct gpamm_vm *vm)
{
	return atomic_load_explicit(&vm->slots, memory_order_consume);
}

static inline void vstat_inc(uint64_t *c)
{
	__atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

/* A per-vCPU count (only its vCPU writes it): no shared line per fault. */
static inline void vstat_add(int64_t *c, int64_t d)
{
	__atomic_store_n(c, *c + d, __ATOMIC_RELAXED);
}

/* ---- fault path ---------------------------------------------------------- */

/*
 * Fast path: the entry is present, the access faulted only because it is
 * old, or clean on a write. Return true when handled.
 */
static bool fault_fast(struct gpamm_vcpu *vcpu, uint64_t gpa, bool write)
{
	struct gpamm_vm *vm = vcpu->vm;
	struct gpamm_host *host = vm->host;
	const unsigned ps = vm->geom.page_shift;
	struct gpamm_memslot *slot;
	gpamm_pte_t old, new;
	int r;

	/*
	 * Under the read lock the entry is updated by one cmpxchg of the whole
	 * entry (gpamm_pgt_access_fault): a write-protect (write lock) cannot
	 * run meanwhile, and a concurrent fault's bits are never lost.
	 */
	fault_lock(vcpu);
	vm_pause_point(vcpu, GPAMM_PAUSE_FAST, gpa);
	r = gpamm_pgt_access_fault(&vm->pgt, gpa, write, &old, &new);
	if (r > 0) {
		bool dirtied = !gpamm_pte_dirty(old) && gpamm_pte_dirty(new);

		/* The host page stays while it is mapped and we hold the lock:
		 * the notifier's unmap takes it for write. */
		host->ops->mark_page(host, gpamm_pte_pfn(new, ps), true, dirtied);
		if (dirtied) {
			/* under mmu_lock the set cannot change: no RCU needed */
			slot = gpamm_vcpu_memslot_lookup(vcpu, vm->slots_locked, gpa >> ps, true);
			if (slot && memslot_logging(slot))
				gpamm_mark_page_dirty(vcpu, slot, gpa >> ps);
		}
	}
	fault_unlock(vcpu);
	/* 0: spurious (another vCPU fixed it); the TLB flush after suffices.
	 * -ENOENT, -EPERM: absent, or a write the slow path must decide on. */
	return r >= 0;
}

/*
 * The pages an HVA byte range [start, end) touches, as the page-aligned
 * range [*ps, *pe): the one rule for both sides of an invalidation, the
 * unmap and the fault's retry check.
 */
static inline void hva_pages(const struct gpamm_vm *vm, uint64_t start, uint64_t end,
			     uint64_t *ps, uint64_t *pe)
{
	const uint64_t pmask = vm->geom.page_size - 1;

	*ps = start & ~pmask;
	*pe = end > UINT64_MAX - pmask ? UINT64_MAX & ~pmask : (end + pmask) & ~pmask;
}

/*
 * Must a fault that sampled @seq before pinning the page at @hva (page
 * aligned) start over? Yes while an invalidation of that page is in
 * progress, or when one ended since the sample. Context: MMU lock.
 */
static bool fault_must_retry(struct gpamm_vm *vm, uint64_t seq, uint64_t hva)
{
	if (vm->mmu_invalidate_in_progress && hva >= vm->inv_hva_start && hva < vm->inv_hva_end)
		return true;
	return atomic_load_explicit(&vm->mmu_invalidate_seq, memory_order_relaxed) != seq;
}

/*
 * Install the entry a slow fault computed, @want, at the page of @gpa.
 * The page may have been mapped by another vCPU since this fault looked:
 * then the entry is never downgraded (a write fault may have made it dirty
 * and logged it, and that vCPU's TLB may cache it writable): only the bits
 * this fault adds are set (gpamm_pgt_map_upgrade). Another page there
 * (which the retry check rules out) is replaced, with a remote flush before
 * the lock is dropped. Context: mmu_lock held (for read: the table and
 * the leaf are changed by compare-and-exchange), retry check passed.
 * Return: 0 with *@nowp the entry the page is mapped with now and *@oldp
 * the one before (0: none); -EAGAIN when a frozen entry is in the way.
 */
static int fault_install(struct gpamm_vcpu *vcpu, uint64_t gpa, gpamm_pte_t want,
			 gpamm_pte_t *oldp, gpamm_pte_t *nowp)
{
	struct gpamm_vm *vm = vcpu->vm;
	const unsigned ps = vm->geom.page_shift;
	int r = gpamm_pgt_map_upgrade(&vm->pgt, gpa, want, &vcpu->mc, oldp, nowp);

	if (r == -EAGAIN)
		return r; /* a frozen entry: another thread is changing it */
	GPAMM_BUG_ON(r < 0);
	if (gpamm_pte_present(*oldp) && gpamm_pte_pfn(*oldp, ps) != gpamm_pte_pfn(want, ps))
		gpamm_flush_remote_tlbs(vm); /* a different page: a removal */
	return 0;
}

static enum fault_result fault_slow(struct gpamm_vcpu *vcpu, uint64_t gpa, bool write)
{
	struct gpamm_vm *vm = vcpu->vm;
	struct gpamm_host *host = vm->host;
	const unsigned ps = vm->geom.page_shift;
	const uint64_t gfn = gpa >> ps;
	enum fault_result res = FAULT_OK;
	struct gpamm_host_page hp;
	struct gpamm_memslot *slot;
	bool slot_writable, logging;
	gpamm_pte_t prot, old, now;
	uint64_t hva, seq;
	unsigned tries;
	int r;

	gpamm_rcu_read_lock();
	for (;;) {
		slot = gpamm_vcpu_memslot_lookup(vcpu, slots_deref(vm), gfn, true);
		if (!slot || !(slot->flags & GPAMM_MEMSLOT_INVALID))
			break;
		/* A delete or move of this slot is under way: let it finish. */
		gpamm_rcu_read_unlock();
		sched_yield();
		gpamm_rcu_read_lock();
	}
	slot_writable = slot && !(slot->flags & GPAMM_MEM_READONLY);
	if (!slot || (write && !slot_writable)) {
		res = FAULT_MMIO;
		goto out_rcu;
	}
	logging = memslot_logging(slot);
	hva = memslot_gfn_to_hva(slot, gfn, ps);

	r = gpamm_memcache_topup(&vcpu->mc, gpamm_pgt_map_pages(&vm->pgt));
	if (r)
		goto memfault;

	for (tries = 0;; tries++) {
again:
		seq = atomic_load_explicit(&vm->mmu_invalidate_seq, memory_order_acquire);
		vm_pause_point(vcpu, GPAMM_PAUSE_FAULT_SEQ, gpa);
		r = host->ops->get_page(host, hva, write, &hp);
		if (r)
			goto memfault;
		vstat_add(&vcpu->st_pins, 1);
		vm_pause_point(vcpu, GPAMM_PAUSE_FAULT_PINNED, gpa);
		fault_lock(vcpu);
		if (!fault_must_retry(vm, seq, hva))
			break;
		fault_unlock(vcpu);
		host->ops->put_page(host, hp.pfn, false, false);
		vstat_add(&vcpu->st_pins, -1);
		vstat_inc(&vcpu->st_retries);
		if (tries % 100 == 99)
			sched_yield();
	}
	if (unlikely(vm_is_dead(vm))) {
		/* The address space went away (release): nothing is mapped again. */
		fault_unlock(vcpu);
		host->ops->put_page(host, hp.pfn, false, false);
		vstat_add(&vcpu->st_pins, -1);
		r = -EFAULT;
		goto memfault;
	}
	vm_pause_point(vcpu, GPAMM_PAUSE_FAULT_INSTALL, gpa);

	prot = GPAMM_PTE_PRESENT | GPAMM_PTE_VALID |
	       ((hp.flags & GPAMM_HOST_PAGE_UNCACHED) ? GPAMM_PTE_MAT_SUC : GPAMM_PTE_MAT_CC);
	if (slot_writable && (hp.flags & GPAMM_HOST_PAGE_WRITABLE)) {
		prot |= GPAMM_PTE_WR_MARKER;
		/* Without logging a writable page is mapped dirty at once (saves
		 * the second fault); with logging only a write makes it dirty. */
		if (write || !logging)
			prot |= GPAMM_PTE_WRITEABLE;
	}
	if (fault_install(vcpu, gpa & ~(vm->geom.page_size - 1), gpamm_pte_mk(hp.pfn, ps, prot),
			  &old, &now)) {
		/* frozen: wait for the thaw outside the lock, then start over */
		fault_unlock(vcpu);
		host->ops->put_page(host, hp.pfn, false, false);
		vstat_add(&vcpu->st_pins, -1);
		vstat_inc(&vcpu->st_retries);
		sched_yield();
		/* tables linked on the way came from the cache */
		r = gpamm_memcache_topup(&vcpu->mc, gpamm_pgt_map_pages(&vm->pgt));
		if (r)
			goto memfault;
		tries++;
		goto again;
	}
	/* Logged when this fault made the page dirty (an entry that was
	 * dirty already was logged by the fault that made it so). */
	if (logging && gpamm_pte_dirty(now) && !gpamm_pte_dirty(old))
		gpamm_mark_page_dirty(vcpu, slot, gfn);
	fault_unlock(vcpu);
	/* Accessed/dirty are set while the pin is still held. */
	host->ops->put_page(host, hp.pfn, true, gpamm_pte_dirty(now));
	vstat_add(&vcpu->st_pins, -1);
	goto out_rcu;

memfault:
	vcpu->run.memory_fault.error = r;
	res = FAULT_MEMORY;
out_rcu:
	gpamm_rcu_read_unlock();
	return res;
}

enum fault_result gpamm_mmu_fault(struct gpamm_vcpu *vcpu, uint64_t gpa, bool write)
{
	enum fault_result res = FAULT_OK;

	vstat_inc(&vcpu->st_faults);
	if (fault_fast(vcpu, gpa, write)) {
		vstat_inc(&vcpu->st_fast);
	} else {
		vstat_inc(&vcpu->st_slow);
		res = fault_slow(vcpu, gpa, write);
	}
	if (res == FAULT_OK)
		/* Drop this vCPU's stale entry at its next guest entry (§6.7). */
		gpamm_vcpu_queue_gpa_flush(vcpu, gpa);
	return res;
}

/* ---- freeing unlinked tables --------------------------------------------- */

/* Tables a range operation unlinked, waiting for their grace period. */
struct rcu_tables {
	struct rcu_head head;
	struct gpamm_pgt *pgt;
	struct gpamm_pgt_freelist fl;
};

static void rcu_tables_free(struct rcu_head *head)
{
	struct rcu_tables *t = caa_container_of(head, struct rcu_tables, head);

	gpamm_rcu_callback_begin();
	gpamm_pgt_free_deferred(t->pgt, &t->fl);
	free(t);
	gpamm_rcu_wait_end();
	gpamm_rcu_callback_end();
}

/*
 * Free the tables in @fl, which were unlinked and covered by a remote
 * flush: after an RCU grace period, since the lock-free walkers (the
 * emulated hardware walker, the refill, the prefetch descent) may still be
 * inside one; they are RCU readers (guest mode is one read-side section,
 * vcpu.c). The VM waits for the callbacks before
 * its pool goes (gpamm_vm_destroy: gpamm_rcu_barrier). Context: no lock, not
 * in a read-side section (the fallback waits for a grace period).
 */
static void mmu_free_tables(struct gpamm_vm *vm, struct gpamm_pgt_freelist *fl)
{
	struct rcu_tables *t;

	if (!fl->nr)
		return;
	if (unlikely(vm->inject & GPAMM_INJECT_NO_GRACE)) {
		gpamm_pgt_free_deferred(&vm->pgt, fl);
		return;
	}
	t = malloc(sizeof(*t));
	if (!t) {
		gpamm_rcu_wait_begin();
		gpamm_rcu_synchronize();
		gpamm_rcu_wait_end();
		gpamm_pgt_free_deferred(&vm->pgt, fl);
		return;
	}
	t->pgt = &vm->pgt;
	t->fl = *fl;
	fl->head = NULL;
	fl->nr = 0;
	gpamm_rcu_wait_begin(); /* ended by the callback */
	gpamm_rcu_call(&t->head, rcu_tables_free);
}

/* ---- range operations for memslot changes ------------------------------- */

void gpamm_mmu_flush_gfn_range(struct gpamm_vm *vm, uint64_t gfn, uint64_t npages,
			       bool free_tables)
{
	const unsigned ps = vm->geom.page_shift;
	struct gpamm_pgt_freelist fl = { 0 };
	uint64_t n;

	mmu_lock(vm);
	if (free_tables)
		n = gpamm_pgt_flush_range(&vm->pgt, gfn << ps, (gfn + npages) << ps, &fl);
	else
		n = gpamm_pgt_unmap_range(&vm->pgt, gfn << ps, (gfn + npages) << ps);
	if ((n || fl.nr) && !(vm->inject & GPAMM_INJECT_SKIP_SLOT_FLUSH))
		gpamm_flush_remote_tlbs(vm);
	mmu_unlock(vm);
	mmu_free_tables(vm, &fl);
}

void gpamm_mmu_wrprotect_gfn_range(struct gpamm_vm *vm, uint64_t gfn, uint64_t npages)
{
	const unsigned ps = vm->geom.page_shift;

	mmu_lock(vm);
	if (gpamm_pgt_mkclean_range(&vm->pgt, gfn << ps, (gfn + npages) << ps))
		gpamm_flush_remote_tlbs(vm);
	mmu_unlock(vm);
}

/* ---- MMU notifier ----------------------------------------------------------- */

/* What a notifier call does to the translations of an HVA range. */
enum hva_op { HVA_UNMAP, HVA_MKOLD, HVA_TEST_YOUNG };

struct hva_range_op {
	struct gpamm_vm *vm;
	uint64_t start, end; /* page aligned */
	enum hva_op op;
	uint64_t n;
};

/* One slot that maps part of the range: its GFNs of the range's pages. */
static bool hva_range_slot(struct gpamm_memslot *s, void *arg)
{
	struct hva_range_op *o = arg;
	struct gpamm_vm *vm = o->vm;
	const unsigned ps = vm->geom.page_shift;
	uint64_t ua = s->userspace_addr, ue = ua + (s->npages << ps);
	uint64_t lo = o->start > ua ? o->start : ua, hi = o->end < ue ? o->end : ue;
	uint64_t gs = s->base_gfn + ((lo - ua) >> ps), ge = s->base_gfn + ((hi - ua) >> ps);

	switch (o->op) {
	case HVA_UNMAP:
		o->n += gpamm_pgt_unmap_range(&vm->pgt, gs << ps, ge << ps);
		break;
	case HVA_MKOLD:
		o->n += gpamm_pgt_mkold_range(&vm->pgt, gs << ps, ge << ps);
		break;
	case HVA_TEST_YOUNG:
		if (gpamm_pgt_test_young(&vm->pgt, gs << ps, ge << ps)) {
			o->n = 1;
			return true; /* one young page answers the question */
		}
		break;
	}
	return false;
}

/*
 * Apply @op to the GFNs of every slot (INVALID ones too: their translations
 * may still exist) that maps part of the page-aligned HVA range [start,
 * end) (hva_pages() made it so): only the
 * slots the range meets, found through the set's HVA interval tree.
 * Return: leaf entries changed (HVA_TEST_YOUNG: 1 if any was young).
 * Context: MMU lock held.
 */
static uint64_t for_each_hva_range(struct gpamm_vm *vm, uint64_t start, uint64_t end,
				   enum hva_op op)
{
	struct hva_range_op o = { .vm = vm, .start = start, .end = end, .op = op };

	gpamm_memslots_hva_overlaps(vm->slots_locked, o.start, o.end, hva_range_slot, &o);
	return o.n;
}

static void mn_invalidate_range_start(void *mn, uint64_t start, uint64_t end)
{
	struct gpamm_vm *vm = mn;

	/* Faults retry on the same pages this unmaps: whole pages, end exclusive. */
	hva_pages(vm, start, end, &start, &end);
	mmu_lock(vm);
	if (vm->mmu_invalidate_in_progress++ == 0) {
		vm->inv_hva_start = start;
		vm->inv_hva_end = end;
	} else {
		if (start < vm->inv_hva_start)
			vm->inv_hva_start = start;
		if (end > vm->inv_hva_end)
			vm->inv_hva_end = end;
	}
	if (for_each_hva_range(vm, start, end, HVA_UNMAP))
		gpamm_flush_remote_tlbs(vm);
	mmu_unlock(vm);
}

static void mn_invalidate_range_end(void *mn, uint64_t start, uint64_t end)
{
	struct gpamm_vm *vm = mn;

	mmu_lock(vm);
	/* A fault that pinned a page before the change sees the new sequence. */
	atomic_fetch_add_explicit(&vm->mmu_invalidate_seq, 1, memory_order_release);
	GPAMM_BUG_ON(vm->mmu_invalidate_in_progress <= 0);
	vm->mmu_invalidate_in_progress--;
	mmu_unlock(vm);
}

static bool mn_age(struct gpamm_vm *vm, uint64_t start, uint64_t end, enum hva_op op, bool flush)
{
	uint64_t n;

	hva_pages(vm, start, end, &start, &end);
	mmu_lock(vm);
	n = for_each_hva_range(vm, start, end, op);
	if (n && flush)
		gpamm_flush_remote_tlbs(vm);
	else if (n && op == HVA_MKOLD)
		/* Old entries behind TLB entries that still let accesses through
		 * without a fault: the host accepts that (as Linux does for
		 * clear_young); gpamm_vm_mark_idle() does not. */
		vm->aged_unflushed = true;
	mmu_unlock(vm);
	return n != 0;
}

static bool mn_clear_flush_young(void *mn, uint64_t start, uint64_t end)
{
	return mn_age(mn, start, end, HVA_MKOLD, true);
}

static bool mn_clear_young(void *mn, uint64_t start, uint64_t end)
{
	return mn_age(mn, start, end, HVA_MKOLD, false);
}

static bool mn_test_young(void *mn, uint64_t start, uint64_t end)
{
	return mn_age(mn, start, end, HVA_TEST_YOUNG, false);
}

/*
 * The address space is going away: flush everything, under the lock
 * (§6.9), and mark the VM dead, so that no fault maps anything again and
 * the VMM calls fail with -EIO. The registration stays until the VM is
 * destroyed (the host lives as long as a VM holds it, gpamm_host_hold()).
 */
static void mn_release(void *mn)
{
	struct gpamm_vm *vm = mn;
	struct gpamm_pgt_freelist fl = { 0 };

	mmu_lock(vm);
	__atomic_store_n(&vm->dead, true, __ATOMIC_RELEASE);
	/* a fault that pinned a page before this retries, and then sees dead */
	atomic_fetch_add_explicit(&vm->mmu_invalidate_seq, 1, memory_order_release);
	gpamm_pgt_flush_range(&vm->pgt, 0, UINT64_MAX, &fl);
	gpamm_flush_remote_tlbs(vm);
	mmu_unlock(vm);
	mmu_free_tables(vm, &fl);
}

static const struct gpamm_mmu_notifier_ops mn_ops = {
	.invalidate_range_start = mn_invalidate_range_start,
	.invalidate_range_end = mn_invalidate_range_end,
	.clear_flush_young = mn_clear_flush_young,
	.clear_young = mn_clear_young,
	.test_young = mn_test_young,
	.release = mn_release,
};

int gpamm_mmu_notifier_attach(struct gpamm_vm *vm)
{
	int r = vm->host->ops->notifier_register(vm->host, &mn_ops, vm);

	vm->notifier_registered = !r;
	return r;
}

void gpamm_mmu_notifier_detach(struct gpamm_vm *vm)
{
	if (vm->notifier_registered)
		vm->host->ops->notifier_unregister(vm->host, vm);
	vm->notifier_registered = false;
}
