/* SPDX-License-Identifier: MIT */
/*
 * The LoongArch page-table walk, as the CPU does it for a guest's second
 * level: what the TLB refill handler does with LDDIR (one per directory
 * level: the entry is the next table's address, or, at the PMD level, a
 * leaf when HUGE is set) and LDPTE (the base-level entry), and what the
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
 * A translation for an access at @gpa: the leaf must be VALID, and DIRTY
 * for a store. With @ptw (a CPU with the hardware walker), a store to an
 * entry with WRITE but not DIRTY sets DIRTY itself, atomically, instead of
 * faulting: the reason KVM's "may be made writable" marker must not be
 * WRITE (REFERENCE.md §6.6). @gpa_bits bounds the space.
 * Return: true and the entry and its level, or false for a fault.
 */
static inline bool la_walk(gpamm_pte_t *root, unsigned layout, unsigned gpa_bits, bool ptw,
			   uint64_t gpa, bool write, gpamm_pte_t *out, unsigned *levelp)
{
	gpamm_pte_t *ptep, e;
	unsigned level;

	if (unlikely(gpa >> gpa_bits))
		return false;
again:
	ptep = la_walk_descend(root, layout, gpa, true, &e, &level);
	if (!(e & GPAMM_PTE_VALID))
		return false;
	if (write && !(e & GPAMM_PTE_DIRTY)) {
		if (!ptw || !(e & GPAMM_PTE_WRITE))
			return false;
		if (!pte_cmpxchg(ptep, &e, e | GPAMM_PTE_DIRTY))
			goto again;
		e |= GPAMM_PTE_DIRTY;
	}
	*out = e;
	*levelp = level;
	return true;
}

#endif
