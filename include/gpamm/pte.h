/* SPDX-License-Identifier: MIT */
/*
 * gpamm/pte.h - the LoongArch page-table entry as the GPA table stores it.
 *
 * The values are the architecture's (REFERENCE.md section 2). The names say
 * what KVM makes of each bit: VALID doubles as "young", DIRTY|WRITE together
 * are "dirty" (hardware may write), MODIFIED is the software marker for
 * "this page may be made writable on a write fault". The seed used WRITE as
 * that marker, which a PTW-capable walker treats as a hardware bit; keeping
 * the marker in MODIFIED is what lets write-protection stick.
 *
 * Everything here is a pure function of its arguments: no locks, any thread.
 */
#ifndef GPAMM_PTE_H
#define GPAMM_PTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t gpamm_pte_t;

#define GPAMM_PTE_VALID     0x1ULL   /* hardware valid; also "accessed"/young */
#define GPAMM_PTE_DIRTY     0x2ULL   /* hardware write-enable */
#define GPAMM_PTE_PLV_MASK  0xcULL   /* privilege level, bits 2-3 */
#define GPAMM_PTE_PLV_SHIFT 2
#define GPAMM_PTE_MAT_MASK  0x30ULL  /* memory access type, bits 4-5 */
#define GPAMM_PTE_MAT_SUC   0x00ULL  /* strongly-ordered uncached */
#define GPAMM_PTE_MAT_CC    0x10ULL  /* coherent cached */
#define GPAMM_PTE_MAT_WUC   0x20ULL  /* weakly-ordered uncached */
#define GPAMM_PTE_GLOBAL    0x40ULL  /* in a leaf (level 0) entry */
#define GPAMM_PTE_HUGE      0x40ULL  /* in a directory entry: a block leaf */
#define GPAMM_PTE_PRESENT   0x80ULL  /* software present */
#define GPAMM_PTE_WRITE     0x100ULL /* software write; hardware with PTW */
#define GPAMM_PTE_MODIFIED  0x200ULL /* software; KVM's "may be made writable" */
#define GPAMM_PTE_PROTNONE  0x400ULL
#define GPAMM_PTE_SPECIAL   0x800ULL
#define GPAMM_PTE_HGLOBAL   0x1000ULL /* global, in a huge entry */
#define GPAMM_PTE_PFN_END   48        /* PFN occupies [PAGE_SHIFT, 48) */
#define GPAMM_PTE_NO_READ   (1ULL << 61)
#define GPAMM_PTE_NO_EXEC   (1ULL << 62)
#define GPAMM_PTE_RPLV      (1ULL << 63)

#define GPAMM_PTE_READABLE  GPAMM_PTE_VALID
#define GPAMM_PTE_WRITEABLE (GPAMM_PTE_DIRTY | GPAMM_PTE_WRITE) /* 0x102 */
#define GPAMM_PTE_WR_MARKER GPAMM_PTE_MODIFIED                  /* 0x200 */

/** gpamm_pte_pfn_mask() - the PFN field of an entry for a page shift. */
static inline uint64_t gpamm_pte_pfn_mask(unsigned page_shift)
{
	return ((1ULL << GPAMM_PTE_PFN_END) - 1) & ~((1ULL << page_shift) - 1);
}

/** gpamm_pte_mk() - pfn_pte(): @pfn placed at @page_shift, or'ed with @prot. */
static inline gpamm_pte_t gpamm_pte_mk(uint64_t pfn, unsigned page_shift,
				       uint64_t prot)
{
	return ((pfn << page_shift) & gpamm_pte_pfn_mask(page_shift)) | prot;
}

/** gpamm_pte_pfn() - the PFN an entry maps (HGLOBAL is not part of it). */
static inline uint64_t gpamm_pte_pfn(gpamm_pte_t pte, unsigned page_shift)
{
	if (pte & GPAMM_PTE_HUGE)
		pte &= ~GPAMM_PTE_HGLOBAL;
	return (pte & gpamm_pte_pfn_mask(page_shift)) >> page_shift;
}

/* Predicates, with Linux's meaning for each. */
static inline bool gpamm_pte_present(gpamm_pte_t p)
{
	return p & (GPAMM_PTE_PRESENT | GPAMM_PTE_PROTNONE);
}
/*
 * Frozen entries: the value an entry holds while one thread changes it in
 * several steps (under mmu_lock for read; docs/pgtable.md). Neither looks
 * present, so every path that needs the entry faults, and a fault that
 * finds one waits for it to thaw. A leaf is SPECIAL alone: VALID clear (the
 * hardware faults), PRESENT and PROTNONE clear (pte_present() is false,
 * which PROTNONE would not give). A directory entry is HUGE | SPECIAL: the
 * walker follows every directory entry that is not HUGE as a table
 * address, so a frozen one must be HUGE, and with VALID clear the walk
 * ends there in a fault.
 */
#define GPAMM_PTE_FROZEN      GPAMM_PTE_SPECIAL
#define GPAMM_PTE_FROZEN_DIR  (GPAMM_PTE_HUGE | GPAMM_PTE_SPECIAL)
static inline bool gpamm_pte_frozen(gpamm_pte_t p, unsigned level)
{
	return p == (level ? GPAMM_PTE_FROZEN_DIR : GPAMM_PTE_FROZEN);
}
static inline bool gpamm_pte_young(gpamm_pte_t p) { return p & GPAMM_PTE_VALID; }
static inline bool gpamm_pte_dirty(gpamm_pte_t p) { return p & GPAMM_PTE_WRITEABLE; }
static inline bool gpamm_pte_writeable(gpamm_pte_t p) { return p & GPAMM_PTE_WR_MARKER; }
static inline bool gpamm_pte_huge(gpamm_pte_t p) { return p & GPAMM_PTE_HUGE; }

/* Transformations. mkdirty sets both hardware-write bits; mkclean clears both. */
static inline gpamm_pte_t gpamm_pte_mkyoung(gpamm_pte_t p) { return p | GPAMM_PTE_VALID; }
static inline gpamm_pte_t gpamm_pte_mkold(gpamm_pte_t p) { return p & ~GPAMM_PTE_VALID; }
static inline gpamm_pte_t gpamm_pte_mkdirty(gpamm_pte_t p) { return p | GPAMM_PTE_WRITEABLE; }
static inline gpamm_pte_t gpamm_pte_mkclean(gpamm_pte_t p) { return p & ~GPAMM_PTE_WRITEABLE; }
static inline gpamm_pte_t gpamm_pte_mkhuge(gpamm_pte_t p) { return p | GPAMM_PTE_HUGE; }
static inline gpamm_pte_t gpamm_pte_mksmall(gpamm_pte_t p) { return p & ~GPAMM_PTE_HUGE; }
static inline uint64_t gpamm_pte_mat(gpamm_pte_t p) { return p & GPAMM_PTE_MAT_MASK; }

/**
 * gpamm_pte_format() - write "0x393 PRESENT VALID DIRTY ..." into @buf.
 * @pte:        the entry
 * @page_shift: 12, 14 or 16 (decides where the PFN starts)
 * @huge:       read bit 6 as HUGE (a directory entry) rather than GLOBAL
 * @buf, @len:  output; always NUL-terminated when @len > 0
 *
 * Return: the length the full text needs (snprintf convention).
 */
int gpamm_pte_format(gpamm_pte_t pte, unsigned page_shift, bool huge,
		     char *buf, size_t len);

#endif
