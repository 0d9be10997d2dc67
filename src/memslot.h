/* SPDX-License-Identifier: MIT */
/*
 * Memslots inside the library: a slot, the immutable RCU-published set
 * with its two-level GFN index, and what memslot.c offers the rest.
 * Knows no VM internals (the VM is only passed through).
 */
#ifndef GPAMM_MEMSLOT_INT_H
#define GPAMM_MEMSLOT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "gpamm/gpamm.h"

struct gpamm_vm;
struct gpamm_vcpu;

#define GPAMM_MEMSLOT_INVALID (1u << 16) /* being deleted or moved: faults retry */

struct gpamm_memslot {
	uint32_t id;
	uint32_t flags;          /* GPAMM_MEM_* | GPAMM_MEMSLOT_INVALID */
	uint64_t base_gfn;
	uint64_t npages;
	uint64_t userspace_addr;
	uint64_t *dirty_bitmap;  /* one bit per page while logging, else NULL */
	uint64_t *bitmap_mem;    /* its storage: allocated with the slot (bitmap mode),
				  * shared by every copy of the slot, freed on DELETE */
};

/*
 * An immutable set, published whole; readers hold the RCU read lock. The
 * base GFNs are kept in an array of their own, with a small index of every
 * 64th key in front of it (4 KiB at 32764 slots, so it stays in L1): a
 * look-up searches the index, then one block of 64 keys (eight cache
 * lines), instead of chasing a pointer per step. The ends (and whether
 * the slot is INVALID) are dense too, so a look-up touches no slot.
 */
#define MEMSLOT_BLOCK 64 /* keys per block of the two-level index */
#define MEMSLOT_END_INVALID (1ULL << 63)

struct gpamm_memslots {
	uint64_t generation;
	uint32_t nr, ntop;
	uint64_t *base;                 /* base[i] == by_gfn[i]->base_gfn */
	uint64_t *end;                  /* base + npages, | MEMSLOT_END_INVALID */
	uint64_t *top;                  /* top[b] == base[b * MEMSLOT_BLOCK] */
	struct gpamm_memslot *by_gfn[]; /* sorted by base_gfn, no overlaps */
};

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
/* Checking mode: may @gpa be translated to @hva now, by the set of the
 * last completed memslot change or by the current one? Context: RCU read
 * lock held. */
bool gpamm_memslot_hva_legal(struct gpamm_vm *vm, uint64_t gpa, uint64_t hva);
void gpamm_memslots_destroy(struct gpamm_vm *vm);
/* Context: RCU read lock held. Returns NULL when no slot holds @gfn;
 * with @any, INVALID slots count too. */
struct gpamm_memslot *gpamm_memslot_lookup(struct gpamm_memslots *set, uint64_t gfn, bool any);
/* Log @gfn of @slot as dirtied by @vcpu: bitmap bit, or ring entry. Context: MMU lock. */
void gpamm_mark_page_dirty(struct gpamm_vcpu *vcpu, struct gpamm_memslot *slot, uint64_t gfn);
static inline bool memslot_logging(const struct gpamm_memslot *s)
{
	return (s->flags & GPAMM_MEM_LOG_DIRTY_PAGES) && !(s->flags & GPAMM_MEM_READONLY);
}

#endif
