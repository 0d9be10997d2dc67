/* SPDX-License-Identifier: MIT */
/*
 * The LoongArch page-table walk, as the CPU does it for a guest's second
 * level: what the TLB refill handler does with LDDIR (one per directory
 * level: the entry is the next table's address, or, at the PMD level, a
 * leaf when HUGE is set) and LDPTE (the base-level pair: the even and
 * odd entries, or a huge leaf split into two halves), and what the
 * hardware walker of a PTW-capable CPU does in its place. An empty
 * directory entry points at an invalid table, so every level is followed
 * without a test; the walk fails only at the leaf. Architecture only: it
 * knows tables and entries, nothing of VMs, vCPUs or TLBs.
 */
#ifndef GPAMM_ARCH_LOONGARCH_WALKER_H
#define GPAMM_ARCH_LOONGARCH_WALKER_H

#include <stdbool.h>
#include <stdint.h>

#include "gpamm/pte.h"
#include "util.h"

/*
 * The descent for one layout, its shifts constants (so a walk keeps only
 * the address, the table and the entry in registers): from @root one
 * entry per level, until the base level or a HUGE directory entry, which
 * is a leaf. With @read_leaf false the base-level entry is located but not
 * read (a prefetch).
 * Return: the leaf's address, its value in *@ep (0 when not read) and its
 * level in *@levelp.
 */
static ALWAYS_INLINE gpamm_pte_t *la_walk_descend_k(gpamm_pte_t *root, uint64_t gpa, unsigned ps,
						    unsigned levels, bool read_leaf,
						    gpamm_pte_t *ep, unsigned *levelp)
{
	const unsigned bits = ps - 3;
	const uint64_t mask = (1ULL << bits) - 1;
	gpamm_pte_t *table = root, *ptep, e = 0;
	unsigned level;

	/* LDDIR per directory level, then LDPTE */
#pragma GCC unroll 4
	for (level = levels - 1; level > 0; level--) {
		ptep = &table[(gpa >> (ps + level * bits)) & mask];
		e = pte_read_acquire(ptep);
		if (e & GPAMM_PTE_HUGE)
			goto leaf;
		table = (gpamm_pte_t *)(uintptr_t)e;
	}
	ptep = &table[(gpa >> ps) & mask];
	if (read_leaf)
		e = pte_read_acquire(ptep);
leaf:
	*ep = e;
	*levelp = level;
	return ptep;
}

/* la_walk_descend_k() for layout @layout (gpamm_geom_layouts[] order); @gpa inside the space. */
static ALWAYS_INLINE gpamm_pte_t *la_walk_descend(gpamm_pte_t *root, unsigned layout, uint64_t gpa,
						  bool read_leaf, gpamm_pte_t *ep,
						  unsigned *levelp)
{
	switch (layout) {
	case 0: return la_walk_descend_k(root, gpa, 12, 3, read_leaf, ep, levelp);
	case 1: return la_walk_descend_k(root, gpa, 12, 4, read_leaf, ep, levelp);
	case 2: return la_walk_descend_k(root, gpa, 14, 2, read_leaf, ep, levelp);
	case 3: return la_walk_descend_k(root, gpa, 14, 3, read_leaf, ep, levelp);
	case 4: return la_walk_descend_k(root, gpa, 16, 2, read_leaf, ep, levelp);
	default: return la_walk_descend_k(root, gpa, 16, 3, read_leaf, ep, levelp);
	}
}

/*
 * LDPTE's load: the even and odd entries of the base-level pair @ptep is
 * one of, ptep[i & ~1] into @pair[0] and ptep[i | 1] into @pair[1]. A
 * table is page aligned, so the pair is the 16-byte aligned couple around
 * @ptep (one cache line). Each entry is read atomically; the two are not
 * one snapshot, as on the CPU: a change of either after its read is
 * followed by a flush of the pair.
 */
static ALWAYS_INLINE void la_ldpte_pair(const gpamm_pte_t *ptep, gpamm_pte_t pair[2])
{
	const gpamm_pte_t *even =
		(const gpamm_pte_t *)((uintptr_t)ptep & ~(uintptr_t)(2 * sizeof(*ptep) - 1));

	pair[0] = pte_read_acquire(even);
	pair[1] = pte_read_acquire(even + 1);
}

/*
 * The refill's split of a huge leaf @e of 2^@shift bytes into a pair of
 * halves of 2^(@shift - 1): the even half is the entry, the odd one the
 * entry with its address moved up by a half (the PFN field; a huge leaf's
 * address is aligned, so no other bit changes).
 */
static ALWAYS_INLINE void la_huge_pair(gpamm_pte_t e, unsigned shift, gpamm_pte_t pair[2])
{
	pair[0] = e;
	pair[1] = e + (1ULL << (shift - 1));
}

/*
 * la_walk_descend_k() as the refill does it, LDDIR then LDPTE: the pair
 * that holds @gpa in @pair (a base-level pair, or a huge leaf split in two
 * halves), which half @gpa is in (*@halfp), the accessed leaf entry's
 * address and its value (*@ep: the huge entry itself for a huge leaf),
 * and the level (*@levelp).
 */
static ALWAYS_INLINE gpamm_pte_t *la_walk_pair_k(gpamm_pte_t *root, uint64_t gpa, unsigned ps,
						 unsigned levels, gpamm_pte_t pair[2],
						 unsigned *halfp, gpamm_pte_t *ep,
						 unsigned *levelp)
{
	gpamm_pte_t *ptep, e;
	unsigned level, h;

	ptep = la_walk_descend_k(root, gpa, ps, levels, false, &e, &level);
	if (likely(!level)) {
		la_ldpte_pair(ptep, pair);
		h = (unsigned)(gpa >> ps) & 1;
		e = pair[h];
	} else {
		const unsigned shift = ps + level * (ps - 3);

		la_huge_pair(e, shift, pair);
		h = (unsigned)(gpa >> (shift - 1)) & 1;
	}
	*halfp = h;
	*ep = e;
	*levelp = level;
	return ptep;
}

/* la_walk_pair_k() for layout @layout (gpamm_geom_layouts[] order); @gpa inside the space. */
static ALWAYS_INLINE gpamm_pte_t *la_walk_descend_pair(gpamm_pte_t *root, unsigned layout,
						       uint64_t gpa, gpamm_pte_t pair[2],
						       unsigned *halfp, gpamm_pte_t *ep,
						       unsigned *levelp)
{
	switch (layout) {
	case 0: return la_walk_pair_k(root, gpa, 12, 3, pair, halfp, ep, levelp);
	case 1: return la_walk_pair_k(root, gpa, 12, 4, pair, halfp, ep, levelp);
	case 2: return la_walk_pair_k(root, gpa, 14, 2, pair, halfp, ep, levelp);
	case 3: return la_walk_pair_k(root, gpa, 14, 3, pair, halfp, ep, levelp);
	case 4: return la_walk_pair_k(root, gpa, 16, 2, pair, halfp, ep, levelp);
	default: return la_walk_pair_k(root, gpa, 16, 3, pair, halfp, ep, levelp);
	}
}

/*
 * A translation for an access at @gpa, as the TLB refill finds it: the
 * accessed leaf must be VALID, and DIRTY for a store. With @ptw (a CPU
 * with the hardware walker), a store to an entry with WRITE but not DIRTY
 * sets DIRTY itself, atomically, instead of faulting: the reason KVM's
 * "may be made writable" marker must not be WRITE (REFERENCE.md §6.6).
 * It sets DIRTY on the accessed entry only: the other half of a
 * base-level pair keeps its own state (both halves of a huge leaf are the
 * one entry). @gpa_bits bounds the space.
 * Return: true, the pair a TLB entry is filled from in @pair
 * (la_walk_descend_pair()) and its level, or false for a fault.
 */
static inline bool la_walk_pair(gpamm_pte_t *root, unsigned layout, unsigned gpa_bits, bool ptw,
				uint64_t gpa, bool write, gpamm_pte_t pair[2], unsigned *levelp)
{
	gpamm_pte_t *ptep, e;
	unsigned level, h;

	if (unlikely(gpa >> gpa_bits))
		return false;
again:
	ptep = la_walk_descend_pair(root, layout, gpa, pair, &h, &e, &level);
	if (!(e & GPAMM_PTE_VALID))
		return false;
	if (write && !(e & GPAMM_PTE_DIRTY)) {
		if (!ptw || !(e & GPAMM_PTE_WRITE))
			return false;
		if (!pte_cmpxchg(ptep, &e, e | GPAMM_PTE_DIRTY))
			goto again;
		if (level) {
			pair[0] |= GPAMM_PTE_DIRTY;
			pair[1] |= GPAMM_PTE_DIRTY;
		} else {
			pair[h] |= GPAMM_PTE_DIRTY;
		}
	}
	*levelp = level;
	return true;
}

#endif
