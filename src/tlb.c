// SPDX-License-Identifier: MIT
/*
 * The per-vCPU software TLB. It mirrors LoongArch's: a set-associative
 * STLB of even/odd base-page pairs (8 ways x 256 sets) and a 64-entry
 * fully associative MTLB of split huge pages, with a one-entry front cache
 * for the last base page (the structure and its contract are in tlb.h,
 * with the inline fast path). Here: init, the flushes, the general fill
 * and the look-up that also reports the PFN and HVA (checking mode, huge
 * pages). The shootdown is the vCPU's, in vcpu.c.
 */

#include <string.h>

#include "tlb.h"

void gpamm_tlb_init(struct tlb *t, unsigned page_shift)
{
	memset(t, 0, sizeof(*t));
	t->page_shift = page_shift;
	t->pair_shift = page_shift + 1;
	t->pmask = ~((1ULL << page_shift) - 1);
	gpamm_tlb_flush_all(t);
}

void gpamm_tlb_flush_all(struct tlb *t)
{
	/* the tags alone: a free way's host addresses are never read */
	memset(t->tag, 0xff, sizeof(t->tag));
	t->mtlb_nr = 0; /* an MTLB slot is looked at only below mtlb_nr, and written whole */
	t->mtlb_victim = 0;
	tlb_front_clear(t);
}

void gpamm_tlb_flush_gpa(struct tlb *t, uint64_t gpa)
{
	const struct tlb_pos p = tlb_pos(t, gpa);
	int w = tlb_find(t, p);

	/* the whole pair goes, whichever half @gpa is in (INVTLB by address) */
	if (w >= 0)
		t->tag[p.set][w] = TLBT_FREE;
	for (unsigned i = 0; i < t->mtlb_nr; i++) {
		struct mtlb_entry *e = &t->mtlb[i];
		if ((e->tag >> TLBT_SHIFT) == gpa >> e->shift)
			e->tag = TLBT_FREE;
	}
	tlb_front_clear(t);
}

uint8_t *tlb_lookup_slow(struct tlb *t, uint64_t gpa, bool write, uint64_t *pfn, uint64_t *hva)
{
	const unsigned ps = t->page_shift;
	const struct tlb_pos p = tlb_pos(t, gpa);
	int w = tlb_probe(t, p, write);

	if (w >= 0) {
		const struct tlb_extra *x = &t->extra[p.set][w][p.half];

		if (pfn)
			*pfn = x->pfn;
		if (hva)
			*hva = x->hva;
		return t->hptr[p.set][w][p.half] + (gpa & ((1ULL << ps) - 1));
	}
	for (unsigned i = 0; i < t->mtlb_nr; i++) {
		const struct mtlb_entry *e = &t->mtlb[i];
		const unsigned hs = e->shift - 1; /* a half's size */
		const unsigned h = (unsigned)(gpa >> hs) & 1;
		const uint64_t need = tlb_need(h, write);
		const uint64_t off = gpa & ((1ULL << hs) - 1);

		if ((e->tag >> TLBT_SHIFT) != gpa >> e->shift || (e->tag & need) != need)
			continue;
		/* report the base page inside the half */
		if (pfn)
			*pfn = e->pfn[h] + (off >> ps);
		if (hva)
			*hva = e->hva[h] + (off & ~((1ULL << ps) - 1));
		return e->hptr[h] + off;
	}
	return NULL;
}

static void mtlb_fill(struct tlb *t, uint64_t gpa, unsigned shift, const struct tlb_half half[2])
{
	const uint64_t tag = tlb_pair_tag(gpa >> shift, half[0].state, half[1].state);
	struct mtlb_entry *e = NULL, *free_e = NULL;

	/* a stale copy of the pair first (never two copies), else a free slot */
	for (unsigned i = 0; i < t->mtlb_nr && !e; i++) {
		struct mtlb_entry *x = &t->mtlb[i];
		if (x->tag == TLBT_FREE)
			free_e = free_e ? free_e : x;
		else if (x->shift == shift && (x->tag >> TLBT_SHIFT) == gpa >> shift)
			e = x;
	}
	if (!e)
		e = free_e;
	if (!e && t->mtlb_nr < MTLB_ENTRIES)
		e = &t->mtlb[t->mtlb_nr++];
	if (!e) {
		e = &t->mtlb[t->mtlb_victim];
		t->mtlb_victim = (t->mtlb_victim + 1) % MTLB_ENTRIES;
	}
	e->tag = tag;
	e->shift = shift;
	for (unsigned h = 0; h < 2; h++) {
		e->hptr[h] = half[h].hptr;
		e->pfn[h] = half[h].pfn;
		e->hva[h] = half[h].hva;
	}
}

uint8_t *gpamm_tlb_fill(struct tlb *t, uint64_t gpa, unsigned shift, const struct tlb_half half[2])
{
	if (shift == t->page_shift) {
		const struct tlb_pos p = tlb_pos(t, gpa);
		const struct tlb_half *a = &half[p.half];
		unsigned w = tlb_fill_pair(t, gpa, half[0].state, half[1].state, half[0].hptr,
					   half[1].hptr);

		if (t->checking) {
			for (unsigned i = 0; i < 2; i++) {
				t->extra[p.set][w][i].pfn = half[i].pfn;
				t->extra[p.set][w][i].hva = half[i].hva;
			}
		} else {
			tlb_front_set(t, gpa, a->state & TLBH_D, a->hptr);
		}
		return a->hptr + (gpa & ((1ULL << shift) - 1));
	}
	mtlb_fill(t, gpa, shift, half);
	return half[(gpa >> (shift - 1)) & 1].hptr + (gpa & ((1ULL << (shift - 1)) - 1));
}
