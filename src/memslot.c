// SPDX-License-Identifier: MIT
/*
 * Memslots: validation of KVM_SET_USER_MEMORY_REGION-style requests, the
 * two slot sets (memslot.h), GFN and HVA lookup, and the order of a change.
 * A change is made to the inactive set, which is then made active; after a
 * grace period (every reader of the old active set has left) the same
 * change is made to the old one, so both agree again: O(log n) and one
 * grace period per step, as KVM's since 5.17. A fault looking a GFN up
 * without any lock sees either set whole, never half of a change. DELETE
 * and MOVE go in two steps, as in KVM: first the old slot is replaced by
 * an INVALID copy (faults on it wait), then, once the old translations are
 * flushed, the copy is removed (and, for a MOVE, the new slot put in).
 * The GFN index allocates its nodes: what an insert may need is reserved
 * in both sets before a change touches either, so a change that has begun
 * cannot fail.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

int gpamm_memslots_init(struct gpamm_vm *vm)
{
	vm->by_id = calloc(GPAMM_USER_MEM_SLOTS, sizeof(*vm->by_id));
	if (!vm->by_id)
		return -ENOMEM;
	for (unsigned i = 0; i < 2; i++) {
		vm->sets[i] = (struct gpamm_memslots){ .idx = i };
		gfnidx_init(&vm->sets[i].gfn);
	}
	atomic_store(&vm->slots, &vm->sets[0]);
	vm->slots_locked = &vm->sets[0];
	pthread_mutex_init(&vm->slots_lock, NULL);
	return 0;
}

void gpamm_memslots_destroy(struct gpamm_vm *vm)
{
	/* every slot is in by_id (an INVALID copy lives only inside a change) */
	for (uint32_t i = 0; i < GPAMM_USER_MEM_SLOTS; i++) {
		if (vm->by_id[i]) {
			free(vm->by_id[i]->bitmap_mem);
			free(vm->by_id[i]);
		}
	}
	free(vm->by_id);
	for (unsigned i = 0; i < 2; i++)
		gfnidx_destroy(&vm->sets[i].gfn);
	pthread_mutex_destroy(&vm->slots_lock);
}

struct gpamm_memslot *gpamm_memslot_lookup(struct gpamm_memslots *set, uint64_t gfn, bool any)
{
	uint64_t end;
	struct gpamm_memslot *s = gfnidx_floor(&set->gfn, gfn, &end);

	/* the entry's word answers both questions: the slot itself is not read */
	if (gfn >= (end & ~MEMSLOT_END_INVALID) || (!any && (end & MEMSLOT_END_INVALID)))
		return NULL;
	return s;
}

struct gpamm_memslot *gpamm_vcpu_memslot_lookup(struct gpamm_vcpu *vcpu, struct gpamm_memslots *set,
						uint64_t gfn, bool any)
{
	struct gpamm_memslot *s = vcpu->last_slot;

	/* A slot found in this very generation is still in the set (slots
	 * leave only through a change, which makes a new generation active). */
	if (s && vcpu->last_slot_gen == set->generation && memslot_contains(s, gfn) &&
	    (any || !(s->flags & GPAMM_MEMSLOT_INVALID)))
		return s;
	s = gpamm_memslot_lookup(set, gfn, any);
	if (s) {
		vcpu->last_slot = s;
		vcpu->last_slot_gen = set->generation;
	}
	return s;
}

struct hva_visit {
	unsigned idx;
	bool (*fn)(struct gpamm_memslot *s, void *arg);
	void *arg;
};

static bool hva_visit_one(struct mtree_node *n, void *arg)
{
	struct hva_visit *v = arg;

	return v->fn(memslot_of_hva_node(n, v->idx), v->arg);
}

bool gpamm_memslots_hva_overlaps(struct gpamm_memslots *set, uint64_t start, uint64_t end,
				 bool (*fn)(struct gpamm_memslot *s, void *arg), void *arg)
{
	struct hva_visit v = { .idx = set->idx, .fn = fn, .arg = arg };

	return mtree_overlaps(set->hva_root, start, end, hva_visit_one, &v);
}

/*
 * The active set is enough: a DELETE or MOVE first replaces the slot by an
 * INVALID copy with the same GPA and HVA (lookups with any), and removes it
 * only after the remote flush, which no vCPU acknowledges in the middle of
 * an access. So while an old translation may legally be used, the active
 * set still maps its GPA to its HVA; once the copy is gone, nothing may.
 */
bool gpamm_memslot_hva_legal(struct gpamm_vm *vm, uint64_t gpa, uint64_t hva)
{
	const unsigned ps = vm->geom.page_shift;
	struct gpamm_memslot *s =
		gpamm_memslot_lookup(atomic_load_explicit(&vm->slots, memory_order_consume),
				     gpa >> ps, true);

	return s && memslot_gfn_to_hva(s, gpa >> ps, ps) == (hva & ~(vm->geom.page_size - 1));
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
		/* release: a reset that reads the new index sees the entry */
		__atomic_store_n(&r->push, r->push + 1, __ATOMIC_RELEASE);
		if (gpamm_dirty_ring_soft_full(vcpu))
			atomic_fetch_or(&vcpu->requests, REQ_RING_FULL);
	}
}

static uint64_t gfn_word(const struct gpamm_memslot *s)
{
	return (s->base_gfn + s->npages) | (s->flags & GPAMM_MEMSLOT_INVALID ? MEMSLOT_END_INVALID : 0);
}

/*
 * Set aside in both sets' GFN indexes what one insert may take, so that a
 * step that inserts cannot fail, neither in the first set nor in the
 * replay after the grace period. Whatever one step frees stays there for
 * the next, so this seldom allocates. A failure changes no set (spares
 * are not slots). Context: slots_lock.
 */
static int reserve_insert(struct gpamm_vm *vm)
{
	for (unsigned i = 0; i < 2; i++)
		if (gfnidx_reserve(&vm->sets[i].gfn))
			return -ENOMEM;
	return 0;
}

/*
 * Take @remove out of @set and put @add in (either may be NULL). A slot
 * replaced by another at the same base GFN (an INVALID copy, new flags)
 * keeps its index entry: no allocation. An insert takes what
 * reserve_insert() set aside. Context: no reader sees @set.
 */
static void set_apply(struct gpamm_memslots *set, struct gpamm_memslot *remove,
		      struct gpamm_memslot *add, unsigned page_shift)
{
	const unsigned i = set->idx;

	if (remove) {
		if (!add || add->base_gfn != remove->base_gfn)
			GPAMM_BUG_ON(gfnidx_remove(&set->gfn, remove->base_gfn) != remove);
		set->hva_root = mtree_remove(set->hva_root, &remove->hva_node[i]);
		set->nr--;
	}
	if (add) {
		if (remove && add->base_gfn == remove->base_gfn)
			GPAMM_BUG_ON(gfnidx_replace(&set->gfn, add->base_gfn, gfn_word(add), add) !=
				     remove);
		else
			GPAMM_BUG_ON(gfnidx_insert(&set->gfn, add->base_gfn, gfn_word(add), add));
		add->hva_node[i].key = add->userspace_addr;
		add->hva_node[i].end = add->userspace_addr + (add->npages << page_shift);
		set->hva_root = mtree_insert(set->hva_root, &add->hva_node[i]);
		set->nr++;
	}
}

/*
 * One step of a change: make it in the inactive set, make that set active
 * (for lock-free readers through the RCU pointer, for readers holding the
 * MMU lock through slots_locked, swapped under that lock), wait until no
 * reader can still be in the old one, and make the change there too.
 * Afterwards no reader can hold @remove. Cannot fail: a step that inserts
 * follows reserve_insert(). Context: slots_lock.
 */
static void commit(struct gpamm_vm *vm, struct gpamm_memslot *remove, struct gpamm_memslot *add)
{
	struct gpamm_memslots *old = atomic_load(&vm->slots);
	struct gpamm_memslots *next = &vm->sets[old->idx ^ 1];
	const unsigned ps = vm->geom.page_shift;

	set_apply(next, remove, add, ps);
	next->generation = old->generation + 1;
	mmu_write_lock(&vm->mmu_lock);
	vm->slots_locked = next;
	mmu_write_unlock(&vm->mmu_lock);
	atomic_store_explicit(&vm->slots, next, memory_order_release);
	gpamm_rcu_wait_begin(); /* vCPUs in guest mode pass quiescent states meanwhile */
	gpamm_rcu_synchronize(); /* every fault that could see @old has finished */
	gpamm_rcu_wait_end();
	set_apply(old, remove, add, ps);
}

/* A copy of @old marked INVALID, for the first step of a DELETE or MOVE (NULL: no memory). */
static struct gpamm_memslot *invalid_copy(const struct gpamm_memslot *old)
{
	struct gpamm_memslot *c = aligned_alloc(64, sizeof(*c));

	if (c) {
		*c = *old;
		c->flags |= GPAMM_MEMSLOT_INVALID;
	}
	return c;
}

/* Does [base, base + npages) meet a slot other than @id's? O(log n). */
static bool overlaps(struct gpamm_memslots *set, uint32_t id, uint64_t base, uint64_t npages)
{
	uint64_t last = base + npages - 1;

	/*
	 * The slot with the largest base <= last meets the range if any slot
	 * does (slots do not overlap one another); if that is @id's own slot,
	 * the part below it is asked the same way.
	 */
	for (;;) {
		uint64_t end;
		struct gpamm_memslot *s = gfnidx_floor(&set->gfn, last, &end);

		if (!s)
			return false;
		if ((end & ~MEMSLOT_END_INVALID) <= base)
			return false;
		if (s->id != id)
			return true;
		if (s->base_gfn <= base)
			return false;
		last = s->base_gfn - 1;
	}
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
	struct gpamm_memslots *cur;
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
		/* DELETE: the INVALID copy first, so nothing can fail later */
		if (!old) {
			ret = -EINVAL;
			goto out;
		}
		inval = invalid_copy(old);
		if (!inval) {
			ret = -ENOMEM;
			goto out;
		}
		commit(vm, old, inval);
		gpamm_mmu_flush_gfn_range(vm, old->base_gfn, old->npages, true);
		commit(vm, inval, NULL);
		vm->by_id[r->slot] = NULL;
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
	/* CREATE and MOVE insert into the GFN index: its nodes first, so that no step can fail */
	if ((!old || base_gfn != old->base_gfn) && reserve_insert(vm)) {
		ret = -ENOMEM;
		goto out;
	}

	new = aligned_alloc(64, sizeof(*new)); /* its HVA tree nodes are cache lines */
	if (new)
		memset(new, 0, sizeof(*new));
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
		commit(vm, NULL, new);
	} else if (base_gfn != old->base_gfn) {
		/* MOVE: hide the old range, flush it, then show the new one. */
		inval = invalid_copy(old);
		if (!inval)
			goto nomem;
		commit(vm, old, inval);
		gpamm_mmu_flush_gfn_range(vm, old->base_gfn, old->npages, true);
		commit(vm, inval, new);
		free(inval);
		free(old);
	} else {
		/* FLAGS_ONLY */
		bool log_on = (new->flags & GPAMM_MEM_LOG_DIRTY_PAGES) &&
			      !(old->flags & GPAMM_MEM_LOG_DIRTY_PAGES);

		commit(vm, old, new);
		/* With INITIALLY_SET every bit is set instead (pages stay writable
		 * until the VMM clears them); read-only slots have nothing to protect. */
		if (log_on && !(new->flags & GPAMM_MEM_READONLY) &&
		    !(new->dirty_bitmap && (vm->dirty_log_flags & GPAMM_DIRTY_LOG_INITIALLY_SET)))
			gpamm_mmu_wrprotect_gfn_range(vm, new->base_gfn, new->npages);
		free(old);
	}
	vm->by_id[r->slot] = new;
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
