/* SPDX-License-Identifier: MIT */
/*
 * The per-vCPU software TLB: its structure and the inline fast path (front
 * cache, STLB probe and fill); the rest is in tlb.c. Knows nothing of
 * vCPUs or VMs: the shootdown that asks vCPUs to flush is the vCPU's
 * request protocol (vcpu.c).
 */
#ifndef GPAMM_TLB_H
#define GPAMM_TLB_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define TLB_SETS 512
#define TLB_WAYS 4 /* a set is one 64-byte cache line */
#define MTLB_ENTRIES 64
#define TLB_GPA_QUEUE 8

/*
 * A base-page entry is two words: a tag, (vpn << 2) | (D << 1) | 1 (0 when
 * empty), and the host address of the page. 2048 of them fill 32 KiB, an
 * L1 data cache. What only the checking mode needs lives beside them.
 */
#define TLBT_VALID 1ULL
#define TLBT_WRITE 2ULL  /* hardware D bit: stores allowed */

struct tlb_entry {
	uint64_t tag;
	uint8_t *hptr;
};

struct tlb_extra {
	uint64_t pfn;
	uint64_t hva;      /* checking mode: the HVA the page should be mapped at */
};

struct mtlb_entry {
	uint64_t tag;      /* as above, vpn in the entry's own page size */
	uint8_t *hptr;
	uint64_t pfn, hva;
	unsigned shift;
};

struct tlb {
	/*
	 * The front cache: the last base page used. A load hits when
	 * (gpa & pmask) == rbase, a store when it equals wbase (the page base
	 * if the entry has D, else 1, which no masked address equals). Masks
	 * instead of shifts keep the hit path to loads, an and and a compare.
	 */
	uint64_t pmask;
	uint64_t rbase, wbase;
	intptr_t front_delta; /* host address of gpa in the front page = gpa + delta */
	unsigned page_shift; /* base page size of the STLB */
	bool checking;       /* every access goes the slow way (and is checked) */
	unsigned mtlb_nr, mtlb_victim;
	struct tlb_entry set[TLB_SETS][TLB_WAYS] __attribute__((aligned(64)));
	struct tlb_extra extra[TLB_SETS][TLB_WAYS]; /* written in checking mode only */
	struct mtlb_entry mtlb[MTLB_ENTRIES]; /* fully associative, huge pages */
};

static inline uint64_t tlb_tag(uint64_t vpn)
{
	return (vpn << 2) | TLBT_VALID;
}

/* tlb.c */
void gpamm_tlb_init(struct tlb *t, unsigned page_shift);
void gpamm_tlb_flush_all(struct tlb *t);
void gpamm_tlb_flush_gpa(struct tlb *t, uint64_t gpa);
/* Return: the host address of the page. */
uint8_t *gpamm_tlb_fill(struct tlb *t, uint64_t gpa, unsigned shift, uint8_t *hptr, uint64_t pfn,
			uint64_t hva, bool writable);

/*
 * Look-up on the access path: the host address for @gpa, or NULL on a miss
 * (for a store, an entry without D is a miss). Checking mode looks up with
 * tlb_lookup_slow(), which also gives the entry's PFN and HVA.
 */
uint8_t *tlb_lookup_slow(struct tlb *t, uint64_t gpa, bool write, uint64_t *pfn, uint64_t *hva);

static inline void tlb_front_set(struct tlb *t, uint64_t gpa, uint64_t tag, uint8_t *hptr)
{
	uint64_t base = gpa & t->pmask;

	t->rbase = base;
	t->wbase = (tag & TLBT_WRITE) ? base : 1;
	t->front_delta = (intptr_t)hptr - (intptr_t)base;
}

static inline void tlb_front_clear(struct tlb *t)
{
	t->rbase = t->wbase = 1;
}

/*
 * The way a base-page fill takes in its set: a stale copy of the same page,
 * else a free way, else one picked from the VPN's higher bits (a stateless
 * pseudo-random choice: no replacement state to store on every miss).
 */
static ALWAYS_INLINE unsigned tlb_pick_way(const struct tlb_entry *row, uint64_t vpn,
					   uint64_t tag)
{
	unsigned free_way = TLB_WAYS;

	for (unsigned w = 0; w < TLB_WAYS; w++) {
		uint64_t et = row[w].tag;
		if (!((et ^ tag) & ~TLBT_WRITE))
			return w;
		if (!et)
			free_way = w;
	}
	if (free_way < TLB_WAYS)
		return free_way;
	return (unsigned)((vpn >> 9) ^ (vpn >> 11) ^ (vpn >> 13)) & (TLB_WAYS - 1);
}

/*
 * Put a base-page entry in its set (outside checking mode), without
 * touching the front cache. Return: the entry's tag.
 */
static ALWAYS_INLINE uint64_t tlb_fill_entry(struct tlb *t, uint64_t gpa, uint8_t *hptr,
					     bool writable)
{
	uint64_t vpn = gpa >> t->page_shift;
	uint64_t tag = tlb_tag(vpn) | (writable ? TLBT_WRITE : 0);
	struct tlb_entry *row = t->set[vpn & (TLB_SETS - 1)];
	unsigned way = tlb_pick_way(row, vpn, tag);

	row[way].tag = tag;
	row[way].hptr = hptr;
	return tag;
}

/* Fill a base-page entry and the front; returns the host address of @gpa. */
static ALWAYS_INLINE uint8_t *tlb_fill_base(struct tlb *t, uint64_t gpa, uint8_t *hptr,
					    bool writable)
{
	tlb_front_set(t, gpa, tlb_fill_entry(t, gpa, hptr, writable), hptr);
	return hptr + (gpa & ~t->pmask);
}

/*
 * The STLB entry that serves an access at @gpa (for a store, one with D),
 * or NULL. Looks at neither the front cache nor the MTLB.
 */
static ALWAYS_INLINE const struct tlb_entry *tlb_probe(const struct tlb *t, uint64_t gpa,
						       bool write)
{
	const uint64_t ign = write ? 0 : TLBT_WRITE; /* a load does not need D */
	uint64_t vpn = gpa >> t->page_shift, want = tlb_tag(vpn) | TLBT_WRITE;
	const struct tlb_entry *row = t->set[vpn & (TLB_SETS - 1)];

	for (unsigned w = 0; w < TLB_WAYS; w++)
		if ((row[w].tag | ign) == want)
			return &row[w];
	return NULL;
}

static ALWAYS_INLINE uint8_t *tlb_lookup(struct tlb *t, uint64_t gpa, bool write)
{
	const struct tlb_entry *e;

	if (likely((gpa & t->pmask) == (write ? t->wbase : t->rbase)))
		return (uint8_t *)(uintptr_t)((intptr_t)gpa + t->front_delta);
	if (unlikely(t->checking))
		return NULL; /* the front cache is never set in checking mode */
	e = tlb_probe(t, gpa, write);
	if (e) {
		tlb_front_set(t, gpa, e->tag, e->hptr);
		return e->hptr + (gpa & ~t->pmask);
	}
	if (unlikely(t->mtlb_nr))
		return tlb_lookup_slow(t, gpa, write, NULL, NULL);
	return NULL;
}

#endif
