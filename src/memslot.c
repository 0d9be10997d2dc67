// SPDX-License-Identifier: MIT
/*
 * Memslots: validation of KVM_SET_USER_MEMORY_REGION-style requests, the
 * published slot set, GFN lookup, and the order of a change. A set is
 * immutable: a change builds a new set and publishes it with RCU, so a fault
 * looking a GFN up without any lock sees either the old set or the new one,
 * never half of each. DELETE and MOVE go in two steps, as in KVM: first a
 * set in which the old slot is marked INVALID (faults on it retry), then,
 * after every reader of the old set has left and the old translations are
 * flushed, the final set.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-bp.h>

#include "vm.h"

int gpamm_memslots_init(struct gpamm_vm *vm)
{
	struct gpamm_memslots *set = calloc(1, sizeof(*set));

	/* an empty set: base points past the (empty) pointer array */
	if (set)
		set->base = set->end = set->top = (uint64_t *)&set->by_gfn[0];

	vm->by_id = calloc(GPAMM_USER_MEM_SLOTS, sizeof(*vm->by_id));
	if (!set || !vm->by_id) {
		free(set);
		free(vm->by_id);
		return -ENOMEM;
	}
	atomic_store(&vm->slots, set);
	vm->slots_locked = set;
	/* checking mode keeps the last completed set too (hva_legal) */
	atomic_store(&vm->slots_done, vm->host->checking ? set : NULL);
	pthread_mutex_init(&vm->slots_lock, NULL);
	return 0;
}

void gpamm_memslots_destroy(struct gpamm_vm *vm)
{
	struct gpamm_memslots *set = atomic_load(&vm->slots);
	struct gpamm_memslots *done = atomic_load(&vm->slots_done);

	if (done != set)
		free(done);
	for (uint32_t i = 0; set && i < set->nr; i++) {
		free(set->by_gfn[i]->bitmap_mem);
		free(set->by_gfn[i]);
	}
	free(set);
	free(vm->by_id);
	pthread_mutex_destroy(&vm->slots_lock);
}

/* Index of the last key <= x in k[0..n), n >= 1, k[0] <= x; branch-free. */
static inline uint32_t last_le(const uint64_t *k, uint32_t n, uint64_t x)
{
	const uint64_t *p = k;

	while (n > 1) {
		uint32_t half = n / 2;
		p = p[half] <= x ? p + half : p;
		n -= half;
	}
	return (uint32_t)(p - k);
}

/*
 * The slot holding @gfn: the index of every 64th key first, then one block.
 * The comparisons select with conditional moves, so a random GFN costs no
 * mispredicted branches; log2(nr) steps in all.
 */
struct gpamm_memslot *gpamm_memslot_lookup(struct gpamm_memslots *set, uint64_t gfn, bool any)
{
	uint32_t b, first, n;
	uint64_t e;

	if (!set->nr || gfn < set->base[0])
		return NULL;
	b = last_le(set->top, set->ntop, gfn);
	first = b * MEMSLOT_BLOCK;
	n = set->nr - first < MEMSLOT_BLOCK ? set->nr - first : MEMSLOT_BLOCK;
	first += last_le(set->base + first, n, gfn);
	e = set->end[first];
	if (gfn >= (e & ~MEMSLOT_END_INVALID) || (!any && (e & MEMSLOT_END_INVALID)))
		return NULL;
	return set->by_gfn[first];
}

bool gpamm_memslot_hva_legal(struct gpamm_vm *vm, uint64_t gpa, uint64_t hva)
{
	const unsigned ps = vm->geom.page_shift;
	struct gpamm_memslots *sets[2] = {
		atomic_load_explicit(&vm->slots_done, memory_order_consume),
		atomic_load_explicit(&vm->slots, memory_order_consume),
	};

	for (unsigned i = 0; i < 2; i++) {
		struct gpamm_memslot *s = sets[i] ? gpamm_memslot_lookup(sets[i], gpa >> ps, true) : NULL;

		if (s && memslot_gfn_to_hva(s, gpa >> ps, ps) == (hva & ~(vm->geom.page_size - 1)))
			return true;
	}
	return false;
}

void gpamm_mark_page_dirty(struct gpamm_vcpu *vcpu, struct gpamm_memslot *slot, uint64_t gfn)
{
	uint64_t rel = gfn - slot->base_gfn;
	struct dirty_ring *r = &vcpu->ring;

	if (slot->dirty_bitmap) {
		__atomic_fetch_or(&slot->dirty_bitmap[rel / 64], 1ULL << (rel % 64),
				  __ATOMIC_RELAXED);
	} else if (r->gfns) {
		struct gpamm_dirty_gfn *e = &r->gfns[r->push & (r->size - 1)];

		/* The reserved entries guarantee room: the vCPU exits before. */
		GPAMM_BUG_ON(r->push - atomic_load(&r->reset) >= r->size);
		e->slot = slot->id;
		e->offset = rel;
		__atomic_store_n(&e->flags, GPAMM_DIRTY_GFN_F_DIRTY, __ATOMIC_RELEASE);
		r->push++;
		if (gpamm_dirty_ring_soft_full(vcpu))
			atomic_fetch_or(&vcpu->requests, REQ_RING_FULL);
	}
}

/* A new set: @old with @remove taken out and @add put in (either may be NULL). */
static struct gpamm_memslots *set_replace(const struct gpamm_memslots *old,
					  const struct gpamm_memslot *remove,
					  struct gpamm_memslot *add)
{
	uint32_t n = old->nr - (remove ? 1 : 0) + (add ? 1 : 0), j = 0;
	uint32_t ntop = (n + MEMSLOT_BLOCK - 1) / MEMSLOT_BLOCK;
	struct gpamm_memslots *set = malloc(sizeof(*set) + n * sizeof(set->by_gfn[0]) +
					    (2 * n + ntop) * sizeof(uint64_t));
	bool placed = !add;

	if (!set)
		return NULL;
	set->base = (uint64_t *)&set->by_gfn[n];
	set->end = set->base + n;
	set->top = set->end + n;
	set->ntop = ntop;
	for (uint32_t i = 0; i < old->nr; i++) {
		struct gpamm_memslot *s = old->by_gfn[i];
		if (s == remove)
			continue;
		if (!placed && add->base_gfn < s->base_gfn) {
			set->by_gfn[j++] = add;
			placed = true;
		}
		set->by_gfn[j++] = s;
	}
	if (!placed)
		set->by_gfn[j++] = add;
	set->nr = j;
	for (uint32_t i = 0; i < j; i++) {
		const struct gpamm_memslot *m = set->by_gfn[i];
		set->base[i] = m->base_gfn;
		set->end[i] = (m->base_gfn + m->npages) |
			      ((m->flags & GPAMM_MEMSLOT_INVALID) ? MEMSLOT_END_INVALID : 0);
	}
	for (uint32_t b = 0; b < ntop; b++)
		set->top[b] = set->base[b * MEMSLOT_BLOCK];
	set->generation = old->generation + 1;
	return set;
}

/*
 * Readers find the set two ways: faults without a lock through the RCU
 * pointer, code that holds the MMU lock (the fast fault path, the notifier)
 * through slots_locked, swapped under that lock. The old set is freed when
 * neither can still hold it.
 */
static void publish(struct gpamm_vm *vm, struct gpamm_memslots *set)
{
	struct gpamm_memslots *old = atomic_load(&vm->slots);

	pthread_mutex_lock(&vm->mmu_lock);
	vm->slots_locked = set;
	pthread_mutex_unlock(&vm->mmu_lock);
	atomic_store_explicit(&vm->slots, set, memory_order_release);
	urcu_bp_synchronize_rcu(); /* every fault that could see @old has finished */
	if (old != atomic_load(&vm->slots_done))
		free(old);
}

/*
 * Checking mode: the change has returned, so the current set is now the
 * last completed one; translations only the previous one allowed (of a
 * deleted or moved slot) are stale from here on. Context: slots_lock.
 */
static void complete(struct gpamm_vm *vm)
{
	struct gpamm_memslots *prev = atomic_load(&vm->slots_done);
	struct gpamm_memslots *cur = atomic_load(&vm->slots);

	if (!prev || prev == cur)
		return;
	atomic_store_explicit(&vm->slots_done, cur, memory_order_release);
	urcu_bp_synchronize_rcu(); /* no checker still reads @prev */
	free(prev);
}

static bool overlaps(const struct gpamm_memslots *set, uint32_t id, uint64_t base,
		     uint64_t npages)
{
	for (uint32_t i = 0; i < set->nr; i++) {
		const struct gpamm_memslot *s = set->by_gfn[i];
		if (s->id != id && base < s->base_gfn + s->npages && s->base_gfn < base + npages)
			return true;
	}
	return false;
}

/*
 * Zeroed by writing, not by calloc(): a large calloc() hands back untouched
 * pages, whose faults would then land in the call that turns logging on.
 */
static uint64_t *bitmap_alloc(uint64_t npages)
{
	size_t len = (npages + 63) / 64 * sizeof(uint64_t);
	uint64_t *b = malloc(len);

	/* opaque, or the compiler folds malloc + memset back into calloc */
	__asm__("" : "+r"(b));
	if (b)
		memset(b, 0, len);
	return b;
}

static void bitmap_set_all(uint64_t *b, uint64_t npages)
{
	for (uint64_t i = 0; i < npages / 64; i++)
		b[i] = ~0ULL;
	if (npages % 64)
		b[npages / 64] = (1ULL << (npages % 64)) - 1;
}

int gpamm_vm_set_memory_region(struct gpamm_vm *vm,
			       const struct gpamm_userspace_memory_region *r)
{
	struct gpamm_memslot *old, *new = NULL, *inval = NULL;
	struct gpamm_memslots *cur, *set;
	uint64_t npages, base_gfn, psz, ps;
	int ret = 0;

	if (!vm || !r)
		return -EINVAL;
	psz = vm->geom.page_size;
	ps = vm->geom.page_shift;
	if (r->flags & ~(uint32_t)(GPAMM_MEM_LOG_DIRTY_PAGES | GPAMM_MEM_READONLY))
		return -EINVAL;
	if (r->slot >= GPAMM_USER_MEM_SLOTS)
		return -EINVAL;
	if ((r->memory_size | r->guest_phys_addr | r->userspace_addr) & (psz - 1))
		return -EINVAL;
	if (r->guest_phys_addr + r->memory_size < r->guest_phys_addr ||
	    r->userspace_addr + r->memory_size < r->userspace_addr)
		return -EINVAL;
	npages = r->memory_size >> ps;
	base_gfn = r->guest_phys_addr >> ps;
	if (npages > GPAMM_MEM_MAX_NR_PAGES)
		return -EINVAL;
	if (vm_is_dead(vm))
		return -EIO;

	pthread_mutex_lock(&vm->slots_lock);
	cur = atomic_load(&vm->slots);
	old = vm->by_id[r->slot];

	if (!npages) {
		/* DELETE: both sets are built first, so nothing can fail later. */
		struct gpamm_memslots *fin = NULL;

		if (!old) {
			ret = -EINVAL;
			goto out;
		}
		inval = malloc(sizeof(*inval));
		if (inval) {
			*inval = *old;
			inval->flags |= GPAMM_MEMSLOT_INVALID;
		}
		set = inval ? set_replace(cur, old, inval) : NULL;
		fin = set ? set_replace(set, inval, NULL) : NULL;
		if (!fin) {
			free(set);
			free(inval);
			ret = -ENOMEM;
			goto out;
		}
		publish(vm, set);
		gpamm_mmu_flush_gfn_range(vm, old->base_gfn, old->npages, true);
		publish(vm, fin);
		vm->by_id[r->slot] = NULL;
		complete(vm); /* before the slot is freed: the completed set has it */
		free(inval);
		free(old->bitmap_mem);
		free(old);
		goto out;
	}

	if (old) {
		if (r->userspace_addr != old->userspace_addr || npages != old->npages ||
		    ((r->flags ^ old->flags) & GPAMM_MEM_READONLY)) {
			ret = -EINVAL;
			goto out;
		}
		if (base_gfn == old->base_gfn && r->flags == old->flags)
			goto out; /* nothing to change */
	}
	if ((!old || base_gfn != old->base_gfn) && overlaps(cur, r->slot, base_gfn, npages)) {
		ret = -EEXIST;
		goto out;
	}
	if (base_gfn + npages > gpamm_geom_space(&vm->geom) >> ps) {
		ret = -EFAULT;
		goto out;
	}

	new = calloc(1, sizeof(*new));
	if (!new) {
		ret = -ENOMEM;
		goto out;
	}
	new->id = r->slot;
	new->flags = r->flags;
	new->base_gfn = base_gfn;
	new->npages = npages;
	new->userspace_addr = r->userspace_addr;
	/*
	 * Bitmap mode: the bitmap's storage comes with the slot (one bit per
	 * page), so that turning logging on allocates nothing, cannot fail
	 * and costs a pass over the bitmap only. A logging slot points at it
	 * (read-only ones too, always clear); its bits carry over while
	 * logging stays on, and start clear (or all set, INITIALLY_SET) when
	 * logging is turned on.
	 */
	new->bitmap_mem = old ? old->bitmap_mem : NULL;
	if (!new->bitmap_mem && !vm->dirty_ring_size) {
		new->bitmap_mem = bitmap_alloc(npages);
		if (!new->bitmap_mem) {
			free(new);
			ret = -ENOMEM;
			goto out;
		}
	}
	if ((r->flags & GPAMM_MEM_LOG_DIRTY_PAGES) && new->bitmap_mem && !vm->dirty_ring_size) {
		if (old && old->dirty_bitmap) {
			new->dirty_bitmap = old->dirty_bitmap;
		} else {
			new->dirty_bitmap = new->bitmap_mem;
			if ((vm->dirty_log_flags & GPAMM_DIRTY_LOG_INITIALLY_SET) &&
			    !(r->flags & GPAMM_MEM_READONLY))
				bitmap_set_all(new->dirty_bitmap, npages);
			else if (old)
				memset(new->dirty_bitmap, 0, (npages + 63) / 64 * sizeof(uint64_t));
		}
	}

	if (!old) {
		/* CREATE */
		set = set_replace(cur, NULL, new);
		if (!set)
			goto nomem;
		publish(vm, set);
	} else if (base_gfn != old->base_gfn) {
		/* MOVE: hide the old range, flush it, then show the new one. */
		inval = malloc(sizeof(*inval));
		if (inval) {
			*inval = *old;
			inval->flags |= GPAMM_MEMSLOT_INVALID;
		}
		set = inval ? set_replace(cur, old, inval) : NULL;
		if (!set) {
			free(inval);
			goto nomem;
		}
		/* The final set is built before anything is published, so that
		 * nothing after this point can fail. */
		{
			struct gpamm_memslots *fin = set_replace(set, inval, new);
			if (!fin) {
				free(set);
				free(inval);
				goto nomem;
			}
			publish(vm, set);
			gpamm_mmu_flush_gfn_range(vm, old->base_gfn, old->npages, true);
			publish(vm, fin);
		}
		complete(vm);
		free(inval);
		free(old);
	} else {
		/* FLAGS_ONLY */
		bool log_on = (new->flags & GPAMM_MEM_LOG_DIRTY_PAGES) &&
			      !(old->flags & GPAMM_MEM_LOG_DIRTY_PAGES);
		set = set_replace(cur, old, new);
		if (!set)
			goto nomem;
		publish(vm, set);
		/* With INITIALLY_SET every bit is set instead (pages stay writable
		 * until the VMM clears them); read-only slots have nothing to protect. */
		if (log_on && !(new->flags & GPAMM_MEM_READONLY) &&
		    !(new->dirty_bitmap && (vm->dirty_log_flags & GPAMM_DIRTY_LOG_INITIALLY_SET)))
			gpamm_mmu_wrprotect_gfn_range(vm, new->base_gfn, new->npages);
		complete(vm);
		free(old);
	}
	vm->by_id[r->slot] = new;
	complete(vm);
	goto out;

nomem:
	if (!old)
		free(new->bitmap_mem);
	free(new);
	ret = -ENOMEM;
out:
	pthread_mutex_unlock(&vm->slots_lock);
	return ret;
}
