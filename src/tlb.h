/* SPDX-License-Identifier: MIT */
/*
 * The per-vCPU software TLB: its structure and the inline fast path (front
 * cache, STLB probe and fill); the rest is in tlb.c. Knows nothing of
 * vCPUs, VMs or page-table entries: the shootdown that asks vCPUs to flush
 * is the vCPU's request protocol (vcpu.c), and the walk that feeds a fill
 * is the architecture's (arch/loongarch/walker.h).
 *
 * The geometry is LoongArch's (REFERENCE.md §9):
 *
 *   STLB   8 ways x 256 sets = 2048 entries, base pages only (its page
 *          size is the VM's base page size). An entry maps an even/odd
 *          PAIR of adjacent base pages, as LDPTE fills it: tag = the VPPN
 *          (gpa >> (page_shift + 1)), set = VPPN & 255. Each half has its
 *          own V (loads allowed) and D (stores allowed, with V) and its
 *          own host address: the two host pages of a pair are not
 *          contiguous. 2048 entries reach 4096 pages.
 *   MTLB   64 entries, fully associative, huge (PMD-level) leaves only.
 *          Also pairs: the refill splits a leaf of 2^S bytes into two
 *          halves of 2^(S-1), both from the one entry; the tag is
 *          gpa >> S and the entry keeps S.
 *   front  the last base page used, for a hit in two compares.
 *
 * Contract:
 * - A fill writes one whole pair: the walk read both entries (an entry
 *   that is not VALID gives a half without V; without DIRTY, a half
 *   without D). Every half is therefore implied by what its leaf was at
 *   the fill, never by its neighbour's.
 * - A half without V (for a store: without D) is a miss, not a fault: the
 *   caller walks again, since the leaf may have been upgraded since the
 *   fill (another vCPU's fault is an upgrade and flushes only its own
 *   TLB), and faults only if the walk still fails. The refill replaces the
 *   pair in place (same VPPN, same way).
 * - gpamm_tlb_flush_gpa() kills the whole pair that holds @gpa, in the
 *   STLB and in the MTLB (INVTLB by address), and the front cache; so a
 *   flush of either page of a pair drops its neighbour too, and a
 *   downgrade of the odd page flushes an entry a miss on the even page
 *   filled. gpamm_tlb_flush_all() drops everything.
 * - Replacement in a set: a stale copy of the same VPPN (at most one way
 *   of a set holds a VPPN), else a free way, else a stateless
 *   pseudo-random way (from the VPPN's bits above the index). The MTLB
 *   takes a stale copy or a free slot, else the next one round robin.
 *
 * Context: every function runs on the vCPU's own thread (or before it
 * runs); nothing here is shared.
 */
#ifndef GPAMM_TLB_H
#define GPAMM_TLB_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define STLB_SETS 256
#define STLB_WAYS 8 /* the tags of a set are one 64-byte cache line */
#define MTLB_ENTRIES 64
#define TLB_GPA_QUEUE 8

/*
 * A half's state, as a fill is given it (the entry's VALID and DIRTY): a
 * load may use a half with V, a store one with V and D (D alone serves
 * nothing: an aged dirty entry has DIRTY without VALID).
 */
#define TLBH_V 1u
#define TLBH_D 2u

/*
 * An STLB tag is one word: (vppn << TLBT_SHIFT) | the even half's state in
 * bits 0-1 | the odd half's in bits 2-3. A free way holds TLBT_FREE, all
 * ones, whose VPPN part no address has (a VPPN has at most 55 - 13 bits),
 * so finding a pair is one and + compare per way with no test for free
 * ways, and a free way is found with one compare per way.
 */
#define TLBT_SHIFT 4
#define TLBT_STATE ((1ULL << TLBT_SHIFT) - 1)
#define TLBT_FREE (~0ULL)
#define TLBT_V(h) ((uint64_t)TLBH_V << (2 * (h)))
#define TLBT_D(h) ((uint64_t)TLBH_D << (2 * (h)))

/* Checking mode only: what a half should map, for the stale check. */
struct tlb_extra {
	uint64_t pfn;
	uint64_t hva; /* the HVA the page is expected at (its memslot's, at the fill) */
};

struct mtlb_entry {
	uint64_t tag; /* ((gpa >> shift) << TLBT_SHIFT) | the halves' states, or TLBT_FREE */
	unsigned shift; /* the leaf's size; a half is 2^(shift - 1) */
	uint8_t *hptr[2];
	uint64_t pfn[2], hva[2];
};

/* What a fill is told about one half of a pair. */
struct tlb_half {
	uint8_t *hptr;  /* host address of the half's first byte */
	uint64_t pfn;   /* checking mode and MTLB: its first base page's PFN */
	uint64_t hva;   /* checking mode: the HVA it is expected at */
	unsigned state; /* TLBH_V | TLBH_D */
};

struct tlb {
	/*
	 * The front cache: the last base page used. A load hits when
	 * (gpa & pmask) == rbase, a store when it equals wbase (the page base
	 * if the half has D, else 1, which no masked address equals). Masks
	 * instead of shifts keep the hit path to loads, an and and a compare.
	 */
	uint64_t pmask;
	uint64_t rbase, wbase;
	intptr_t front_delta; /* host address of gpa in the front page = gpa + delta */
	unsigned page_shift; /* base page size of the STLB */
	unsigned pair_shift; /* page_shift + 1: a pair */
	bool checking;       /* every access goes the slow way (and is checked) */
	unsigned mtlb_nr, mtlb_victim;
	/* 16 KiB of tags, then the host addresses (a way's two halves side by
	 * side, so a fill writes one line of them), 32 KiB */
	uint64_t tag[STLB_SETS][STLB_WAYS] __attribute__((aligned(64)));
	uint8_t *hptr[STLB_SETS][STLB_WAYS][2] __attribute__((aligned(64)));
	struct tlb_extra extra[STLB_SETS][STLB_WAYS][2]; /* written in checking mode only */
	struct mtlb_entry mtlb[MTLB_ENTRIES]; /* fully associative, huge pages */
};

/* tlb.c */
void gpamm_tlb_init(struct tlb *t, unsigned page_shift);
void gpamm_tlb_flush_all(struct tlb *t);
void gpamm_tlb_flush_gpa(struct tlb *t, uint64_t gpa);
/*
 * Fill the pair (STLB when @shift is the base page shift, MTLB for a huge
 * leaf of 2^@shift bytes) that holds @gpa with @half[0] (even) and
 * @half[1] (odd), and the front cache when the accessed half is a base
 * page and not in checking mode. The accessed half must have V.
 * Return: the host address of @gpa.
 */
uint8_t *gpamm_tlb_fill(struct tlb *t, uint64_t gpa, unsigned shift, const struct tlb_half half[2]);

/*
 * Look-up on the access path: the host address for @gpa, or NULL on a miss
 * (a half without V, and for a store one without D, is a miss). Checking
 * mode looks up with tlb_lookup_slow(), which also gives the half's PFN
 * and HVA (of the base page that holds @gpa).
 */
uint8_t *tlb_lookup_slow(struct tlb *t, uint64_t gpa, bool write, uint64_t *pfn, uint64_t *hva);

static inline void tlb_front_set(struct tlb *t, uint64_t gpa, bool dirty, uint8_t *hptr)
{
	uint64_t base = gpa & t->pmask;

	t->rbase = base;
	t->wbase = dirty ? base : 1;
	t->front_delta = (intptr_t)hptr - (intptr_t)base;
}

static inline void tlb_front_clear(struct tlb *t)
{
	t->rbase = t->wbase = 1;
}

/* Where the pair of an address lives: its VPPN, its set, and which half the address is in. */
struct tlb_pos {
	uint64_t vppn;
	unsigned set;
	unsigned half; /* 0 even, 1 odd */
};

static ALWAYS_INLINE struct tlb_pos tlb_pos(const struct tlb *t, uint64_t gpa)
{
	struct tlb_pos p;

	p.vppn = gpa >> t->pair_shift;
	p.set = (unsigned)p.vppn & (STLB_SETS - 1);
	p.half = (unsigned)(gpa >> t->page_shift) & 1;
	return p;
}

static ALWAYS_INLINE uint64_t tlb_pair_tag(uint64_t vppn, unsigned st0, unsigned st1)
{
	return (vppn << TLBT_SHIFT) | st0 | ((uint64_t)st1 << 2);
}

/* The state bits of a tag that an access of half @half needs: V, and D for a store. */
static ALWAYS_INLINE uint64_t tlb_need(unsigned half, bool write)
{
	return write ? TLBT_V(half) | TLBT_D(half) : TLBT_V(half);
}

/* Whether half @half of the pair tagged @tag has D. */
static ALWAYS_INLINE bool tlb_tag_dirty(uint64_t tag, unsigned half)
{
	return (tag >> (2 * half)) & TLBH_D;
}

/*
 * The way of @p's set that holds its pair, whatever its halves' states, or
 * -1 (a VPPN is in at most one way of its set). One line of tags.
 */
static ALWAYS_INLINE int tlb_find(const struct tlb *t, struct tlb_pos p)
{
	const uint64_t *row = t->tag[p.set];
	const uint64_t want = p.vppn << TLBT_SHIFT;

#pragma GCC unroll 8
	for (unsigned w = 0; w < STLB_WAYS; w++)
		if ((row[w] & ~TLBT_STATE) == want)
			return (int)w;
	return -1;
}

/*
 * tlb_find() for a fill: the way of the pair's stale copy, or -1 and in
 * *@fillp the way the fill takes instead: a free way, else one picked
 * from the VPPN's bits above the set index (a stateless pseudo-random
 * choice: no replacement state to store on every miss). The free ways are
 * looked for only when the pair is not there, in a second look at the
 * line (one compare per way, the tags read again rather than kept in
 * registers: kept, they are spilled, and so are the caller's values).
 */
static ALWAYS_INLINE int tlb_scan(const struct tlb *t, struct tlb_pos p, unsigned *fillp)
{
	const uint64_t *row = t->tag[p.set];
	const uint64_t v = p.vppn;
	int w = tlb_find(t, p);

	if (w >= 0)
		return w;
	__asm__("" : "+r"(row)); /* read the tags again */
#pragma GCC unroll 8
	for (unsigned i = 0; i < STLB_WAYS; i++) {
		if (row[i] == TLBT_FREE) {
			*fillp = i;
			return -1;
		}
	}
	*fillp = (unsigned)((v >> 8) ^ (v >> 11) ^ (v >> 14)) & (STLB_WAYS - 1);
	return -1;
}

/*
 * Write a pair into way @way of its set (outside checking mode this is the
 * whole fill: the tag and the two host addresses, three stores; a half
 * without V keeps whatever host address it is given: it is never read).
 */
static ALWAYS_INLINE void tlb_put(struct tlb *t, struct tlb_pos p, unsigned way, unsigned st0,
				  unsigned st1, uint8_t *h0, uint8_t *h1)
{
	t->tag[p.set][way] = tlb_pair_tag(p.vppn, st0, st1);
	t->hptr[p.set][way][0] = h0;
	t->hptr[p.set][way][1] = h1;
}

/*
 * Fill the pair of @gpa into its set, without touching the front cache:
 * the way of a stale copy of the same pair, else a free or a
 * pseudo-random one (tlb_scan()).
 * Return: the way.
 */
static ALWAYS_INLINE unsigned tlb_fill_pair(struct tlb *t, uint64_t gpa, unsigned st0,
					    unsigned st1, uint8_t *h0, uint8_t *h1)
{
	const struct tlb_pos p = tlb_pos(t, gpa);
	unsigned way;
	int w = tlb_scan(t, p, &way);

	if (w >= 0)
		way = (unsigned)w;
	tlb_put(t, p, way, st0, st1, h0, h1);
	return way;
}

/*
 * The STLB way that serves an access at @gpa (its half with V, and D for a
 * store), or -1. Looks at neither the front cache nor the MTLB.
 */
static ALWAYS_INLINE int tlb_probe(const struct tlb *t, struct tlb_pos p, bool write)
{
	const uint64_t need = tlb_need(p.half, write);
	int w = tlb_find(t, p);

	return w >= 0 && (t->tag[p.set][w] & need) == need ? w : -1;
}

static ALWAYS_INLINE uint8_t *tlb_lookup(struct tlb *t, uint64_t gpa, bool write)
{
	struct tlb_pos p;
	int w;

	if (likely((gpa & t->pmask) == (write ? t->wbase : t->rbase)))
		return (uint8_t *)(uintptr_t)((intptr_t)gpa + t->front_delta);
	if (unlikely(t->checking))
		return NULL; /* the front cache is never set in checking mode */
	p = tlb_pos(t, gpa);
	w = tlb_probe(t, p, write);
	if (w >= 0) {
		uint8_t *hptr = t->hptr[p.set][w][p.half];

		tlb_front_set(t, gpa, tlb_tag_dirty(t->tag[p.set][w], p.half), hptr);
		return hptr + (gpa & ~t->pmask);
	}
	if (unlikely(t->mtlb_nr))
		return tlb_lookup_slow(t, gpa, write, NULL, NULL);
	return NULL;
}

#endif
