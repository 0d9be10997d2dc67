/* SPDX-License-Identifier: MIT */
/*
 * Memslots inside the library, kept as KVM keeps them since 5.17: each set
 * indexes its slots by GFN (gfnidx.h: a B+tree of the slots' base GFNs,
 * whose ranges never overlap) and by HVA (mtree.h: an interval tree, as
 * slots may alias one HVA range). There are two sets: readers (RCU, or the
 * MMU lock) use the active one; a change is made to the inactive one,
 * which then becomes active, and once no reader can see the old one any
 * more the same change is made to it. A change costs O(log n) and its
 * grace period, never a copy of the whole set. A slot is in both sets at
 * once: in each set's GFN index as an entry, in its HVA tree through the
 * slot's node for that set.
 * Knows no VM internals (the VM is only passed through).
 */
#ifndef GPAMM_MEMSLOT_INT_H
#define GPAMM_MEMSLOT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "gfnidx.h"
#include "gpamm/gpamm.h"
#include "mtree.h"

struct gpamm_vm;
struct gpamm_vcpu;

#define GPAMM_MEMSLOT_INVALID (1u << 16) /* being deleted or moved: faults retry */

/*
 * A slot's fields never change while it is in a set: a change puts a new
 * slot in (a copy, for flags or an INVALID mark). A GFN index entry caches
 * its end and INVALID mark, so a look-up that misses reads no slot.
 */
struct gpamm_memslot {
	/* first: what a fault reads after the look-up, in one cache line */
	uint32_t id;
	uint32_t flags;          /* GPAMM_MEM_* | GPAMM_MEMSLOT_INVALID */
	uint64_t base_gfn;
	uint64_t npages;
	uint64_t userspace_addr;
	uint64_t *dirty_bitmap;  /* one bit per page while logging, else NULL */
	uint64_t *bitmap_mem;    /* its storage: allocated with the slot (bitmap mode),
				  * shared by every copy of the slot, freed on DELETE */
	struct mtree_node hva_node[2]; /* [userspace_addr, + size) in set 0 / 1 */
};

struct gpamm_memslots {
	/* by base GFN: each entry's word is base_gfn + npages | MEMSLOT_END_INVALID */
	struct gfnidx gfn;
	uint64_t generation;     /* grows at every change that makes a set active */
	uint32_t nr;
	unsigned idx;            /* which of a slot's hva_node belongs to this set */
	struct mtree_node *hva_root;
};

/* In a GFN index entry's word: the slot is INVALID (GFNs stay below 2^63). */
#define MEMSLOT_END_INVALID (1ULL << 63)

static inline struct gpamm_memslot *memslot_of_hva_node(struct mtree_node *n, unsigned idx)
{
	return (struct gpamm_memslot *)((char *)(n - idx) -
					__builtin_offsetof(struct gpamm_memslot, hva_node));
}

static inline bool memslot_contains(const struct gpamm_memslot *s, uint64_t gfn)
{
	return gfn - s->base_gfn < s->npages;
}
static inline uint64_t memslot_gfn_to_hva(const struct gpamm_memslot *s, uint64_t gfn,
					  unsigned page_shift)
{
	return s->userspace_addr + ((gfn - s->base_gfn) << page_shift);
}

/* memslot.c */
int gpamm_memslots_init(struct gpamm_vm *vm);
/* Checking mode: may @gpa be translated to @hva now? Context: RCU read lock held. */
bool gpamm_memslot_hva_legal(struct gpamm_vm *vm, uint64_t gpa, uint64_t hva);
void gpamm_memslots_destroy(struct gpamm_vm *vm);
/* Context: RCU read lock held. Returns NULL when no slot holds @gfn;
 * with @any, INVALID slots count too. */
struct gpamm_memslot *gpamm_memslot_lookup(struct gpamm_memslots *set, uint64_t gfn, bool any);
/* The same, through @vcpu's last-used slot first (KVM's last_used_slot). */
struct gpamm_memslot *gpamm_vcpu_memslot_lookup(struct gpamm_vcpu *vcpu, struct gpamm_memslots *set,
						uint64_t gfn, bool any);
/*
 * Call @fn on every slot of @set (INVALID ones too) whose HVA range meets
 * [start, end), until it returns true; whether it stopped early.
 * Context: RCU read lock or MMU lock (the set does not change under either).
 */
bool gpamm_memslots_hva_overlaps(struct gpamm_memslots *set, uint64_t start, uint64_t end,
				 bool (*fn)(struct gpamm_memslot *s, void *arg), void *arg);
/* Log @gfn of @slot as dirtied by @vcpu: bitmap bit, or ring entry. Context: MMU lock. */
void gpamm_mark_page_dirty(struct gpamm_vcpu *vcpu, struct gpamm_memslot *slot, uint64_t gfn);
static inline bool memslot_logging(const struct gpamm_memslot *s)
{
	return (s->flags & GPAMM_MEM_LOG_DIRTY_PAGES) && !(s->flags & GPAMM_MEM_READONLY);
}

#endif
