// SPDX-License-Identifier: MIT
/*
 * The per-vCPU software TLB. It mirrors LoongArch's split: a
 * set-associative STLB for base pages and a small fully associative MTLB
 * for huge pages, with a one-entry front cache for the last base page. The
 * inline fast path is in tlb.h; the shootdown in vcpu.c.
 */

#include <string.h>

#include "tlb.h"

void gpamm_tlb_init(struct tlb *t, unsigned page_shift)
{
	memset(t, 0, sizeof(*t));
	t->page_shift = page_shift;
	t->pmask = ~((1ULL << page_shift) - 1);
	tlb_front_clear(t);
}

void gpamm_tlb_flush_all(struct tlb *t)
{
	for (unsigned s = 0; s < TLB_SETS; s++)
		for (unsigned w = 0; w < TLB_WAYS; w++)
			t->set[s][w].tag = 0;
	for (unsigned i = 0; i < t->mtlb_nr; i++)
		t->mtlb[i].tag = 0;
	t->mtlb_nr = 0;
	tlb_front_clear(t);
}

static inline bool same_page(uint64_t tag_a, uint64_t tag_b)
{
	return ((tag_a ^ tag_b) & ~TLBT_WRITE) == 0;
}

void gpamm_tlb_flush_gpa(struct tlb *t, uint64_t gpa)
{
	uint64_t vpn = gpa >> t->page_shift, tag = tlb_tag(vpn);
	struct tlb_entry *row = t->set[vpn & (TLB_SETS - 1)];

	for (unsigned w = 0; w < TLB_WAYS; w++)
		if (same_page(row[w].tag, tag))
			row[w].tag = 0;
	for (unsigned i = 0; i < t->mtlb_nr; i++) {
		struct mtlb_entry *e = &t->mtlb[i];
		if (same_page(e->tag, tlb_tag(gpa >> e->shift)))
			e->tag = 0;
	}
	tlb_front_clear(t);
}

uint8_t *tlb_lookup_slow(struct tlb *t, uint64_t gpa, bool write, uint64_t *pfn, uint64_t *hva)
{
	const unsigned ps = t->page_shift;
	uint64_t vpn = gpa >> ps, need = write ? TLBT_WRITE : 0;
	struct tlb_entry *row = t->set[vpn & (TLB_SETS - 1)];

	for (unsigned w = 0; w < TLB_WAYS; w++) {
		if (same_page(row[w].tag, tlb_tag(vpn)) && (row[w].tag & need) == need) {
			struct tlb_extra *x = &t->extra[vpn & (TLB_SETS - 1)][w];
			if (pfn)
				*pfn = x->pfn;
			if (hva)
				*hva = x->hva;
			return row[w].hptr + (gpa & ((1ULL << ps) - 1));
		}
	}
	for (unsigned i = 0; i < t->mtlb_nr; i++) {
		struct mtlb_entry *e = &t->mtlb[i];
		uint64_t off = gpa & ((1ULL << e->shift) - 1);

		if (same_page(e->tag, tlb_tag(gpa >> e->shift)) && (e->tag & need) == need) {
			/* report the base page inside the huge one */
			if (pfn)
				*pfn = e->pfn + (off >> ps);
			if (hva)
				*hva = e->hva + (off & ~((1ULL << ps) - 1));
			return e->hptr + off;
		}
	}
	return NULL;
}

uint8_t *gpamm_tlb_fill(struct tlb *t, uint64_t gpa, unsigned shift, uint8_t *hptr, uint64_t pfn,
			uint64_t hva, bool writable)
{
	uint64_t vpn = gpa >> shift, tag = tlb_tag(vpn) | (writable ? TLBT_WRITE : 0);

	if (shift == t->page_shift) {
		unsigned set = vpn & (TLB_SETS - 1);
		struct tlb_entry *row = t->set[set];
		unsigned way = tlb_pick_way(row, vpn, tag);

		row[way].tag = tag;
		row[way].hptr = hptr;
		if (t->checking) {
			t->extra[set][way].pfn = pfn;
			t->extra[set][way].hva = hva;
		} else {
			tlb_front_set(t, gpa, tag, hptr);
		}
	} else {
		struct mtlb_entry *e = NULL;

		for (unsigned i = 0; i < t->mtlb_nr && !e; i++)
			if (!t->mtlb[i].tag || same_page(t->mtlb[i].tag, tag))
				e = &t->mtlb[i];
		if (!e && t->mtlb_nr < MTLB_ENTRIES)
			e = &t->mtlb[t->mtlb_nr++];
		if (!e) {
			e = &t->mtlb[t->mtlb_victim];
			t->mtlb_victim = (t->mtlb_victim + 1) % MTLB_ENTRIES;
		}
		e->tag = tag;
		e->hptr = hptr;
		e->pfn = pfn;
		e->hva = hva;
		e->shift = shift;
	}
	return hptr + (gpa & ((1ULL << shift) - 1));
}
