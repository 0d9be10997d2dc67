// SPDX-License-Identifier: MIT
/*
 * The software TLB as LoongArch has it (src/tlb.h): an STLB of 8 ways x
 * 256 sets of even/odd base-page pairs, a 64-entry MTLB of huge leaves
 * split into halves, a front cache; and the pair the refill reads
 * (la_walk_pair() in src/arch/loongarch/walker.h).
 *
 * The structure alone: the geometry; each half's own V, D and host
 * address; a flush by either half kills the pair; 8 VPPNs of one set stay
 * resident and a 9th evicts exactly one; 2048 entries reach 4096 pages;
 * 64 MTLB entries; a random sequence of fills and flushes checked against
 * a model (seeded: -s SEED or GPAMM_SEED=SEED replays it).
 *
 * The walk: the pair of a base leaf, an invalid neighbour, a huge leaf
 * split in two halves, and PTW setting DIRTY on the accessed entry only,
 * in all six layouts.
 *
 * Through a VM (vCPU statistics: one TLB miss is one walk and fill): the
 * odd neighbour of a pair hits without a walk; a half invalid at the fill
 * is walked again once another vCPU has mapped it, with no fault; the set
 * and reach capacities seen by the workload loops; huge leaves; and the
 * odd-half downgrades after a pair was filled by a miss on the even page:
 * a dirty-log write-protect of the odd page (the next store faults and is
 * logged), an MMU-notifier unmap, mprotect and aging of the odd page (the
 * next access faults).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"
#include "arch/loongarch/walker.h"
#include "tlb.h"
#include "vm.h" /* to install huge leaves by hand: the fault path maps base pages */

/* ---- the structure alone ------------------------------------------------- */

#define PS 12
#define PSZ (1ULL << PS)

static struct tlb *tlb_new(unsigned ps)
{
	struct tlb *t = aligned_alloc(64, (sizeof(*t) + 63) & ~(size_t)63);

	ASSERT(t);
	gpamm_tlb_init(t, ps);
	return t;
}

/* Host memory for the halves: real pages (the TLB only adds offsets), never touched. */
static uint8_t *arena(uint64_t pages)
{
	uint8_t *p = vt_alloc(pages * PSZ, PS);

	ASSERT(p);
	return p;
}

/* Fill the STLB pair of @gpa: even half state @st0 at @h0, odd @st1 at @h1. */
static void fill(struct tlb *t, uint64_t gpa, unsigned st0, uint8_t *h0, unsigned st1, uint8_t *h1)
{
	struct tlb_half half[2] = {
		{ .hptr = h0, .pfn = (uintptr_t)h0 >> PS, .hva = (uintptr_t)h0, .state = st0 },
		{ .hptr = h1, .pfn = (uintptr_t)h1 >> PS, .hva = (uintptr_t)h1, .state = st1 },
	};

	gpamm_tlb_fill(t, gpa, PS, half);
}

/* A look-up that the front cache does not answer. */
static uint8_t *look(struct tlb *t, uint64_t gpa, bool write)
{
	tlb_front_clear(t);
	return tlb_lookup(t, gpa, write);
}

static void test_geometry(void)
{
	struct tlb *t = tlb_new(PS);

	ASSERT_EQ(STLB_SETS * STLB_WAYS, 2048);
	ASSERT_EQ(STLB_WAYS, 8);
	ASSERT_EQ(MTLB_ENTRIES, 64);
	/* a set's tags are one cache line */
	ASSERT_EQ(sizeof(t->tag[0]), 64);
	ASSERT_EQ((uintptr_t)t->tag[0] % 64, 0);
	ASSERT_EQ((uintptr_t)t->tag[17] % 64, 0);
	/* a pair is two base pages: the tag is gpa >> (ps + 1), the set its low 8 bits */
	ASSERT_EQ(tlb_pos(t, 0x5000).vppn, 2);
	ASSERT_EQ(tlb_pos(t, 0x5000).half, 1);
	ASSERT_EQ(tlb_pos(t, 0x4fff).half, 0);
	ASSERT_EQ(tlb_pos(t, (256ULL + 3) << (PS + 1)).set, 3);
	/* an empty TLB answers nothing */
	ASSERT(!look(t, 0, false));
	ASSERT(!look(t, 0x123456000ULL, true));
	free(t);
}

static void test_pair_halves(void)
{
	struct tlb *t = tlb_new(PS);
	uint8_t *m = arena(8);
	uint8_t *h0 = m + 5 * PSZ, *h1 = m + 2 * PSZ; /* not contiguous, not in order */
	const uint64_t even = 0x40000000ULL, odd = even + PSZ;
	uint64_t pfn = 0, hva = 0;

	/* even: loads and stores; odd: loads only */
	fill(t, even, TLBH_V | TLBH_D, h0, TLBH_V, h1);
	ASSERT(look(t, even + 8, false) == h0 + 8);
	ASSERT(look(t, even + 8, true) == h0 + 8);
	ASSERT(look(t, odd + 16, false) == h1 + 16);
	ASSERT(!look(t, odd + 16, true));
	/* checking mode keeps each half's PFN and HVA (and sets no front) */
	t->checking = true;
	fill(t, even, TLBH_V | TLBH_D, h0, TLBH_V, h1);
	ASSERT(t->rbase == 1);
	ASSERT(tlb_lookup_slow(t, odd + 16, false, &pfn, &hva) == h1 + 16);
	ASSERT_EQ(pfn, (uintptr_t)h1 >> PS);
	ASSERT_EQ(hva, (uintptr_t)h1);
	ASSERT(tlb_lookup_slow(t, even, true, &pfn, &hva) == h0);
	ASSERT_EQ(pfn, (uintptr_t)h0 >> PS);
	ASSERT_EQ(hva, (uintptr_t)h0);
	t->checking = false;
	/* the front cache follows the half's D: a load on the odd page
	 * leaves the front a loads-only page */
	tlb_front_clear(t);
	ASSERT(tlb_lookup(t, odd, false) == h1);
	ASSERT(!tlb_lookup(t, odd, true));

	/* a half without V serves nothing; D alone (an aged dirty entry)
	 * serves no store either */
	fill(t, even, 0, NULL, TLBH_V | TLBH_D, h1);
	ASSERT(!look(t, even, false));
	ASSERT(!look(t, even, true));
	ASSERT(look(t, odd, true) == h1);
	fill(t, even, TLBH_D, h0, TLBH_V, h1);
	ASSERT(!look(t, even, false));
	ASSERT(!look(t, even, true));
	/* the refill replaced the pair in place: one way holds it */
	{
		struct tlb_pos p = tlb_pos(t, even);
		unsigned n = 0;

		for (unsigned w = 0; w < STLB_WAYS; w++)
			n += (t->tag[p.set][w] >> TLBT_SHIFT) == p.vppn;
		ASSERT_EQ(n, 1);
	}
	vt_free(m, 8 * PSZ);
	free(t);
}

static void test_flush_gpa_kills_pair(void)
{
	struct tlb *t = tlb_new(PS);
	uint8_t *m = arena(8);
	const uint64_t even = 0x7000000ULL, odd = even + PSZ;
	const uint64_t other = even + (256ULL << (PS + 1)); /* same set, another pair */
	const uint64_t next = even + 2 * PSZ;                /* the next set */

	for (unsigned by = 0; by < 2; by++) {
		fill(t, even, TLBH_V | TLBH_D, m, TLBH_V | TLBH_D, m + PSZ);
		fill(t, other, TLBH_V, m + 2 * PSZ, TLBH_V, m + 3 * PSZ);
		fill(t, next, TLBH_V, m + 4 * PSZ, TLBH_V, m + 5 * PSZ);
		/* the last fill set the front */
		ASSERT(tlb_lookup(t, next, false) == m + 4 * PSZ);
		gpamm_tlb_flush_gpa(t, (by ? odd : even) + 100);
		/* the front is cleared: nothing answers from it */
		ASSERT(t->rbase == 1 && t->wbase == 1);
		ASSERT(!look(t, even, false));
		ASSERT(!look(t, odd, false));
		ASSERT(look(t, other, false) == m + 2 * PSZ);
		ASSERT(look(t, next + PSZ, false) == m + 5 * PSZ);
	}
	gpamm_tlb_flush_all(t);
	ASSERT(!look(t, other, false));
	ASSERT(!look(t, next, false));
	vt_free(m, 8 * PSZ);
	free(t);
}

/* The pair number of the @i-th pair of set @set. */
static uint64_t set_pair(unsigned set, unsigned i)
{
	return ((uint64_t)i * STLB_SETS + set) << (PS + 1);
}

static void test_set_capacity(void)
{
	struct tlb *t = tlb_new(PS);
	uint8_t *m = arena(2 * 9);
	unsigned hits = 0;

	for (unsigned i = 0; i < 8; i++)
		fill(t, set_pair(77, i), TLBH_V, m + 2 * i * PSZ, TLBH_V, m + (2 * i + 1) * PSZ);
	for (unsigned i = 0; i < 8; i++) {
		ASSERT(look(t, set_pair(77, i), false) == m + 2 * i * PSZ);
		ASSERT(look(t, set_pair(77, i) + PSZ, false) == m + (2 * i + 1) * PSZ);
	}
	/* a 9th evicts exactly one; the other sets are not touched */
	ASSERT(!look(t, set_pair(76, 0), false));
	fill(t, set_pair(77, 8), TLBH_V, m + 16 * PSZ, TLBH_V, m + 17 * PSZ);
	for (unsigned i = 0; i < 9; i++)
		hits += look(t, set_pair(77, i), false) != NULL;
	ASSERT_EQ(hits, 8);
	ASSERT(look(t, set_pair(77, 8) + PSZ, false) == m + 17 * PSZ);
	/* a flushed way is free again: the next fill takes it, and evicts nothing */
	gpamm_tlb_flush_gpa(t, set_pair(77, 8));
	fill(t, set_pair(77, 8), TLBH_V, m + 16 * PSZ, TLBH_V, m + 17 * PSZ);
	hits = 0;
	for (unsigned i = 0; i < 9; i++)
		hits += look(t, set_pair(77, i), false) != NULL;
	ASSERT_EQ(hits, 8);
	vt_free(m, 2 * 9 * PSZ);
	free(t);
}

static void test_reach(void)
{
	struct tlb *t = tlb_new(PS);
	const uint64_t pages = 2 * STLB_SETS * STLB_WAYS, base = 1ULL << 32;
	uint8_t *m = arena(pages + 2);

	ASSERT_EQ(pages, 4096);
	for (uint64_t p = 0; p < pages; p += 2)
		fill(t, base + p * PSZ, TLBH_V | TLBH_D, m + p * PSZ, TLBH_V | TLBH_D,
		     m + (p + 1) * PSZ);
	for (uint64_t p = 0; p < pages; p++)
		ASSERT(look(t, base + p * PSZ + 8, true) == m + p * PSZ + 8);
	/* one pair more evicts one pair */
	fill(t, base + pages * PSZ, TLBH_V, m + pages * PSZ, TLBH_V, m + (pages + 1) * PSZ);
	uint64_t hits = 0;
	for (uint64_t p = 0; p < pages + 2; p++)
		hits += look(t, base + p * PSZ, false) != NULL;
	ASSERT_EQ(hits, pages);
	vt_free(m, (pages + 2) * PSZ);
	free(t);
}

/* Fill the MTLB with the huge leaf of 2^@hs bytes at @gpa, host address @h. */
static void fill_huge(struct tlb *t, uint64_t gpa, unsigned hs, uint8_t *h, unsigned st)
{
	const uint64_t half = 1ULL << (hs - 1);
	struct tlb_half hv[2] = {
		{ .hptr = h, .pfn = (uintptr_t)h >> PS, .hva = gpa, .state = st },
		{ .hptr = h + half, .pfn = ((uintptr_t)h + half) >> PS, .hva = gpa + half, .state = st },
	};

	gpamm_tlb_fill(t, gpa, hs, hv);
}

static void test_mtlb(void)
{
	const unsigned hs = 21; /* 2 MiB leaves of the 4K layouts */
	const uint64_t H = 1ULL << hs, base = 1ULL << 36;
	struct tlb *t = tlb_new(PS);
	uint8_t *m = arena(H >> PS); /* every leaf at the same host memory: only addresses matter */
	uint64_t pfn = 0, hva = 0;
	unsigned hits = 0;

	/* one leaf, two halves from the one entry */
	fill_huge(t, base, hs, m, TLBH_V);
	ASSERT(tlb_lookup_slow(t, base + 0x1234, false, &pfn, &hva) == m + 0x1234);
	ASSERT_EQ(pfn, ((uintptr_t)m >> PS) + 1);
	ASSERT_EQ(hva, base + 0x1000);
	ASSERT(tlb_lookup_slow(t, base + H / 2 + 0x2008, false, &pfn, &hva) == m + H / 2 + 0x2008);
	ASSERT_EQ(pfn, (((uintptr_t)m + H / 2) >> PS) + 2);
	ASSERT_EQ(hva, base + H / 2 + 0x2000);
	ASSERT(!tlb_lookup_slow(t, base, true, NULL, NULL)); /* no D */
	ASSERT(!look(t, base + H, false));
	/* through the access path's look-up too (the MTLB is behind the STLB) */
	ASSERT(look(t, base + H - 8, false) == m + H - 8);
	/* a flush by an address in either half kills the leaf */
	gpamm_tlb_flush_gpa(t, base + H - 1);
	ASSERT(!look(t, base, false));
	fill_huge(t, base, hs, m, TLBH_V | TLBH_D);
	ASSERT(look(t, base + H - 8, true) == m + H - 8);
	gpamm_tlb_flush_gpa(t, base + 5);
	ASSERT(!look(t, base + H - 8, false));
	gpamm_tlb_flush_all(t);

	/* 64 entries all stay; a 65th evicts exactly one */
	for (unsigned i = 0; i < MTLB_ENTRIES; i++)
		fill_huge(t, base + i * H, hs, m, TLBH_V);
	for (unsigned i = 0; i < MTLB_ENTRIES; i++)
		ASSERT(look(t, base + i * H + H / 2, false) == m + H / 2);
	/* a refill of a resident leaf takes its own slot */
	fill_huge(t, base + 9 * H, hs, m, TLBH_V | TLBH_D);
	for (unsigned i = 0; i < MTLB_ENTRIES; i++)
		ASSERT(look(t, base + i * H, false) == m);
	fill_huge(t, base + MTLB_ENTRIES * H, hs, m, TLBH_V);
	for (unsigned i = 0; i <= MTLB_ENTRIES; i++)
		hits += look(t, base + i * H, false) != NULL;
	ASSERT_EQ(hits, MTLB_ENTRIES);
	ASSERT(look(t, base + MTLB_ENTRIES * H, false) == m);
	vt_free(m, H);
	free(t);
}

/*
 * Random fills, flushes and look-ups over a few sets, against a model of
 * what each pair was last filled with (or nothing, once flushed). A hit
 * must be the last fill's half with the state the access needs; a half
 * just filled with that state must hit. Never a flushed pair.
 */
#define RM_PAIRS 48

struct rm_pair {
	bool live;
	unsigned st[2];
	uint8_t *h[2];
};

static void test_random_model(void)
{
	struct tap_rng r;
	struct tlb *t = tlb_new(PS);
	uint8_t *m = arena(2 * RM_PAIRS);
	struct rm_pair model[RM_PAIRS] = { 0 };
	const unsigned steps = (unsigned)(20000 * tap_scale());

	tap_rng_seed(&r, tap_seed());
	for (unsigned s = 0; s < steps; s++) {
		/* pairs over 3 sets (16 each, more than the 8 ways) */
		unsigned k = (unsigned)tap_below(&r, RM_PAIRS);
		uint64_t gpa = set_pair(10 + k % 3, k / 3) + tap_below(&r, 2) * PSZ + 8 * tap_below(&r, 8);
		unsigned h = (unsigned)(gpa >> PS) & 1, op = (unsigned)tap_below(&r, 100);
		bool write = tap_below(&r, 2);

		if (op < 30) {
			unsigned st0 = (unsigned)tap_below(&r, 4), st1 = (unsigned)tap_below(&r, 4);

			fill(t, gpa & ~(2 * PSZ - 1), st0, m + 2 * k * PSZ, st1, m + (2 * k + 1) * PSZ);
			model[k] = (struct rm_pair){ true, { st0, st1 },
						     { m + 2 * k * PSZ, m + (2 * k + 1) * PSZ } };
		} else if (op < 38) {
			gpamm_tlb_flush_gpa(t, gpa);
			model[k].live = false;
		} else if (op < 39) {
			gpamm_tlb_flush_all(t);
			for (unsigned i = 0; i < RM_PAIRS; i++)
				model[i].live = false;
		} else {
			const unsigned need = write ? TLBH_V | TLBH_D : TLBH_V;
			/* through the front cache sometimes, as the access path does */
			uint8_t *p = op < 70 ? tlb_lookup(t, gpa, write) : look(t, gpa, write);
			bool may = model[k].live && (model[k].st[h] & need) == need;

			ASSERT_MSG(!p || may, "step %u: pair %u half %u hit after a flush or beyond its state", s, k, h);
			if (p)
				ASSERT(p == model[k].h[h] + (gpa & (PSZ - 1)));
			/* never more than 8 pairs of a set live in it, so a just-filled pair may
			 * be gone only by eviction: check hits right after a fill instead */
		}
		if (op < 30) {
			const unsigned need = write ? TLBH_V | TLBH_D : TLBH_V;
			uint8_t *p = look(t, gpa, write);

			if ((model[k].st[h] & need) == need)
				ASSERT(p == model[k].h[h] + (gpa & (PSZ - 1)));
			else
				ASSERT(!p);
		}
	}
	vt_free(m, 2 * RM_PAIRS * PSZ);
	free(t);
}

/* ---- the walk ---------------------------------------------------------------- */

struct wenv {
	struct gpamm_geom g;
	struct gpamm_tpool *pool;
	struct gpamm_mm_ops mm;
	struct gpamm_pgt pgt;
	struct gpamm_memcache mc;
};

static void wmap(struct wenv *w, uint64_t gpa, unsigned level, gpamm_pte_t pte)
{
	ASSERT_EQ_INT(gpamm_memcache_topup(&w->mc, gpamm_pgt_map_pages(&w->pgt)), 0);
	ASSERT_EQ_INT(gpamm_pgt_map(&w->pgt, gpa, level, pte, &w->mc), 1);
}

static void test_walker_pair(void)
{
	const gpamm_pte_t base = GPAMM_PTE_PRESENT | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC;

	for (unsigned idx = 0; idx < 6; idx++) {
		struct wenv w;
		const unsigned ps = gpamm_geom_layouts[idx][0];
		gpamm_pte_t pair[2], *leafp;
		unsigned level = 99;

		memset(&w, 0, sizeof(w));
		ASSERT_EQ_INT(gpamm_geom_init(&w.g, ps, gpamm_geom_layouts[idx][1]), 0);
		w.pool = gpamm_tpool_create(ps);
		ASSERT(w.pool);
		gpamm_tpool_ops(w.pool, &w.mm);
		ASSERT_EQ_INT(gpamm_pgt_init(&w.pgt, &w.g, &w.mm), 0);
		gpamm_memcache_init(&w.mc, &w.mm);

		const uint64_t psz = w.g.page_size, H = 1ULL << w.g.shift[1];
		const uint64_t even = 6 * H + 4 * psz, odd = even + psz, lone = 6 * H + 10 * psz;
		const gpamm_pte_t pe = gpamm_pte_mk(0x777, ps, base | GPAMM_PTE_DIRTY | GPAMM_PTE_WRITE);
		const gpamm_pte_t po = gpamm_pte_mk(0x123, ps, base | GPAMM_PTE_WRITE | GPAMM_PTE_MODIFIED);

		wmap(&w, even, 0, pe);
		wmap(&w, odd, 0, po);
		wmap(&w, lone + psz, 0, po);
		/* both entries of the pair, from either page */
		ASSERT(la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, false, odd + 5, false, pair, &level));
		ASSERT_EQ(level, 0);
		ASSERT_EQ(pair[0], pe);
		ASSERT_EQ(pair[1], po);
		ASSERT(la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, false, even, true, pair, &level));
		ASSERT_EQ(pair[0], pe);
		ASSERT_EQ(pair[1], po);
		/* a store to the clean odd page faults without PTW */
		ASSERT(!la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, false, odd, true, pair, &level));
		/* an invalid neighbour gives an invalid half; an invalid page, a fault */
		ASSERT(la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, false, lone + psz, false, pair, &level));
		ASSERT_EQ(pair[0], 0);
		ASSERT_EQ(pair[1], po);
		ASSERT(!la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, false, lone, false, pair, &level));
		/* with PTW, a store to the WRITE-but-not-DIRTY odd page sets DIRTY on it alone */
		ASSERT(la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, true, odd, true, pair, &level));
		ASSERT_EQ(pair[1], po | GPAMM_PTE_DIRTY);
		ASSERT_EQ(pair[0], pe);
		ASSERT_EQ(gpamm_pgt_lookup(&w.pgt, odd, NULL), po | GPAMM_PTE_DIRTY);
		ASSERT_EQ(gpamm_pgt_lookup(&w.pgt, even, NULL), pe);
		/* beyond the space: a fault, nothing read */
		ASSERT(!la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, true, 1ULL << w.g.gpa_bits, false,
				     pair, &level));

		/* a huge leaf is split into two halves of half its size */
		const uint64_t hg = 2 * H;
		const gpamm_pte_t ph = gpamm_pte_mk((uint64_t)w.g.entries * 3, ps,
						    base | GPAMM_PTE_HUGE | GPAMM_PTE_WRITE);
		wmap(&w, hg, 1, ph);
		ASSERT(la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, false, hg + H - 1, false, pair, &level));
		ASSERT_EQ(level, 1);
		ASSERT_EQ(pair[0], ph);
		ASSERT_EQ(gpamm_pte_pfn(pair[1], ps), gpamm_pte_pfn(ph, ps) + w.g.entries / 2);
		ASSERT_EQ(pair[1] & ~gpamm_pte_pfn_mask(ps), ph & ~gpamm_pte_pfn_mask(ps));
		/* PTW on a huge leaf: the one entry, so both halves become dirty */
		ASSERT(la_walk_pair(w.pgt.root, idx, w.g.gpa_bits, true, hg + 8, true, pair, &level));
		ASSERT(pair[0] & pair[1] & GPAMM_PTE_DIRTY);
		ASSERT_EQ(gpamm_pgt_lookup(&w.pgt, hg, NULL), ph | GPAMM_PTE_DIRTY);
		/* LDPTE's address arithmetic: the pair is the aligned couple */
		leafp = la_walk_descend(w.pgt.root, idx, odd, false, pair, &level);
		la_ldpte_pair(leafp, pair);
		ASSERT_EQ(pair[0], pe);

		struct gpamm_pgt_freelist fl = { 0 };
		gpamm_pgt_flush_range(&w.pgt, 0, UINT64_MAX, &fl);
		gpamm_pgt_free_deferred(&w.pgt, &fl);
		gpamm_memcache_release(&w.mc);
		gpamm_pgt_destroy(&w.pgt);
		ASSERT_EQ(gpamm_tpool_destroy(w.pool), 0);
	}
}

/* ---- through a VM -------------------------------------------------------- */

struct one {
	uint64_t gpa, val;
	bool write;
};

static int guest_one(struct gpamm_vcpu *v, void *arg)
{
	struct one *o = arg;

	if (o->write)
		gpamm_guest_write(v, o->gpa, 8, o->val);
	else
		o->val = gpamm_guest_read(v, o->gpa, 8);
	return 0;
}

struct venv {
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v[2];
	uint64_t hva, gpa, psz, pages;
	struct one o[2]; /* lives across runs of a guest left at an exit */
};

static void venv_create(struct venv *e, enum vt_host_kind kind, bool checking, uint64_t pages,
			uint32_t flags)
{
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(e, 0, sizeof(*e));
	e->psz = PSZ;
	e->pages = pages;
	e->gpa = 1ULL << 30;
	if (kind == VT_SIM && !checking) {
		struct gpamm_sim_config sc = { .page_shift = PS, .frames = pages + 64 };

		e->vh.kind = VT_SIM;
		e->vh.h = gpamm_host_sim_create(&sc);
		ASSERT(e->vh.h);
	} else {
		vt_host_create(&e->vh, kind, PS, pages + 64);
	}
	cfg.host = e->vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &e->vm), 0);
	e->hva = vt_host_map(&e->vh, pages * PSZ, 0);
	if (flags & GPAMM_MEM_LOG_DIRTY_PAGES)
		ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(
				      e->vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(e->vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = flags, .guest_phys_addr = e->gpa,
		.memory_size = pages * PSZ, .userspace_addr = e->hva }), 0);
	for (unsigned i = 0; i < 2; i++)
		ASSERT_EQ_INT(gpamm_vcpu_create(e->vm, i, &e->v[i]), 0);
}

static void venv_destroy(struct venv *e)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(e->vm, &st);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(e->vm), 0);
	if (e->vh.kind == VT_DIRECT)
		vt_host_unmap(&e->vh, e->hva, e->pages * PSZ);
	vt_host_destroy(&e->vh);
}

static struct gpamm_vm_stats vstats(struct venv *e)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(e->vm, &st);
	return st;
}

/* One 8-byte access of page @page (+@off) by vCPU @c; returns the exit that ended it. */
static uint32_t acc(struct venv *e, unsigned c, uint64_t page, bool write, uint64_t val,
		    uint64_t *got)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(e->v[c]);

	e->o[c] = (struct one){ .gpa = e->gpa + page * PSZ + 8, .val = val, .write = write };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(e->v[c], guest_one, &e->o[c], 0), 0);
	ASSERT_EQ_INT(gpamm_vcpu_run(e->v[c]), 0);
	if (got)
		*got = e->o[c].val;
	return run->exit_reason;
}

static uint64_t rd(struct venv *e, unsigned c, uint64_t page)
{
	uint64_t v = 0;

	ASSERT_EQ(acc(e, c, page, false, 0, &v), GPAMM_EXIT_DONE);
	return v;
}

static void wr(struct venv *e, unsigned c, uint64_t page, uint64_t val)
{
	ASSERT_EQ(acc(e, c, page, true, val, NULL), GPAMM_EXIT_DONE);
}

/*
 * Leave vCPU 0 with the pair of pages 2 (even) and 3 (odd) filled by a miss
 * on the even page, both halves valid (and dirty when @dirty): both pages
 * mapped first, then every TLB flushed, then one access to page 2, which
 * must walk, and one to page 3, which must not.
 */
static void pair_from_even(struct venv *e, bool dirty)
{
	struct gpamm_vm_stats a, b, c;

	if (dirty) {
		wr(e, 0, 3, 0x33);
		wr(e, 0, 2, 0x22);
	} else {
		(void)rd(e, 0, 3);
		(void)rd(e, 0, 2);
	}
	gpamm_vm_flush_remote_tlbs(e->vm);
	a = vstats(e);
	if (dirty)
		wr(e, 0, 2, 0x22);
	else
		(void)rd(e, 0, 2);
	b = vstats(e);
	if (dirty)
		wr(e, 0, 3, 0x33);
	else
		(void)rd(e, 0, 3);
	c = vstats(e);
	ASSERT_EQ(b.tlb_misses, a.tlb_misses + 1);
	ASSERT_EQ(c.tlb_misses, b.tlb_misses); /* the odd half came with the even page's walk */
	ASSERT_EQ(c.faults, a.faults);
}

static const struct { enum vt_host_kind kind; bool checking; const char *name; } hosts[] = {
	{ VT_DIRECT, false, "direct" },
	{ VT_SIM, true, "sim, checking" },
	{ VT_SIM, false, "sim" },
};

static void test_vm_neighbour_no_walk(void)
{
	for (unsigned hk = 0; hk < 3; hk++) {
		struct venv e;
		struct gpamm_vm_stats a, b;

		tap_diag("%s host", hosts[hk].name);
		venv_create(&e, hosts[hk].kind, hosts[hk].checking, 64, 0);
		pair_from_even(&e, true);
		pair_from_even(&e, false);
		/* the odd page's walk fills its even neighbour too */
		gpamm_vm_flush_remote_tlbs(e.vm);
		a = vstats(&e);
		ASSERT_EQ(rd(&e, 0, 3), 0x33);
		ASSERT_EQ(rd(&e, 0, 2), 0x22);
		wr(&e, 0, 2, 0x44);
		b = vstats(&e);
		ASSERT_EQ(b.tlb_misses, a.tlb_misses + 1);
		ASSERT_EQ(b.faults, a.faults);
		venv_destroy(&e);
	}
}

static void test_vm_invalid_half_rewalk(void)
{
	for (unsigned hk = 0; hk < 3; hk++) {
		struct venv e;
		struct gpamm_vm_stats a, b, c;

		tap_diag("%s host", hosts[hk].name);
		venv_create(&e, hosts[hk].kind, hosts[hk].checking, 64, 0);
		/* vCPU 0 fills the pair of pages 4/5 while page 5 is unmapped */
		wr(&e, 0, 4, 0x44);
		a = vstats(&e);
		/* vCPU 1 maps page 5 (an upgrade: only vCPU 1 flushes) */
		wr(&e, 1, 5, 0x55);
		b = vstats(&e);
		ASSERT_EQ(b.faults, a.faults + 1);
		/* vCPU 0's half of page 5 is invalid: a miss and a walk, no fault */
		ASSERT_EQ(rd(&e, 0, 5), 0x55);
		wr(&e, 0, 5, 0x56);
		c = vstats(&e);
		ASSERT_EQ(c.faults, b.faults);
		ASSERT_EQ(c.tlb_misses, b.tlb_misses + 1);
		/* and the refill brought page 4 along, in the same way */
		ASSERT_EQ(rd(&e, 0, 4), 0x44);
		ASSERT_EQ(vstats(&e).tlb_misses, c.tlb_misses);
		/* a half still invalid after the walk faults, as before */
		wr(&e, 0, 6, 0x66);
		b = vstats(&e);
		ASSERT_EQ(rd(&e, 0, 7), 0);
		c = vstats(&e);
		ASSERT_EQ(c.faults, b.faults + 1);
		venv_destroy(&e);
	}
}

/* @passes of the workload over @pages pages at @first, one store each, @stride pages apart. */
static void workload(struct venv *e, uint64_t first, uint64_t pages, uint64_t stride,
		     uint64_t passes)
{
	struct gpamm_workload w = {
		.gpa = e->gpa + first * PSZ, .size = pages * stride * PSZ, .write_percent = 100,
		.order = GPAMM_ORDER_SEQUENTIAL, .passes = passes, .stride = stride * PSZ,
	};

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(e->v[0], gpamm_workload_guest, &w, 0), 0);
	ASSERT_EQ_INT(gpamm_vcpu_run(e->v[0]), 0);
	ASSERT_EQ(gpamm_vcpu_run_state(e->v[0])->exit_reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(w.accesses, pages * passes);
}

/* Misses of @passes passes after a populate pass and a flush of every TLB. */
static uint64_t workload_misses(struct venv *e, uint64_t first, uint64_t pages, uint64_t stride,
				uint64_t passes)
{
	uint64_t m0;

	workload(e, first, pages, stride, 1);
	gpamm_vm_flush_remote_tlbs(e->vm);
	m0 = vstats(e).tlb_misses;
	workload(e, first, pages, stride, passes);
	return vstats(e).tlb_misses - m0;
}

static void test_vm_set_capacity(void)
{
	/* pages 2 * 256 apart share a set: 8 pairs stay, a 9th evicts one */
	for (unsigned hk = 0; hk < 2; hk++) {
		struct venv e;
		uint64_t m8, m9;

		tap_diag("%s host", hosts[hk].name);
		venv_create(&e, hosts[hk].kind, hosts[hk].checking, 9 * 2 * STLB_SETS, 0);
		m8 = workload_misses(&e, 0, 8, 2 * STLB_SETS, 4);
		m9 = workload_misses(&e, 0, 9, 2 * STLB_SETS, 4);
		tap_diag("misses over 4 passes after a flush: 8 pairs %llu, 9 pairs %llu",
			 (unsigned long long)m8, (unsigned long long)m9);
		ASSERT_EQ(m8, 8);
		ASSERT(m9 > 9);
		venv_destroy(&e);
	}
}

static void test_vm_reach(void)
{
	for (unsigned hk = 0; hk < 2; hk++) {
		struct venv e;
		const uint64_t reach = 2 * STLB_SETS * STLB_WAYS;
		uint64_t m;

		tap_diag("%s host", hosts[hk].name);
		venv_create(&e, hosts[hk].kind, hosts[hk].checking, reach + 2, 0);
		/* 4096 pages: one walk per pair on the first pass, none after */
		m = workload_misses(&e, 0, reach, 1, 3);
		ASSERT_EQ(m, reach / 2);
		/* one pair more than the reach: later passes miss too */
		m = workload_misses(&e, 0, reach + 2, 1, 3);
		tap_diag("4098 pages, 3 passes: %llu misses", (unsigned long long)m);
		ASSERT(m > reach / 2 + 1);
		venv_destroy(&e);
	}
}

/* Install huge leaves by hand (the fault path maps base pages only). */
static void map_huge(struct venv *e, uint64_t gpa, uint64_t hva)
{
	struct gpamm_memcache mc;
	const gpamm_pte_t pte = gpamm_pte_mk(hva >> PS, PS, GPAMM_PTE_PRESENT | GPAMM_PTE_VALID |
						GPAMM_PTE_MAT_CC | GPAMM_PTE_HUGE | GPAMM_PTE_DIRTY |
						GPAMM_PTE_WRITE | GPAMM_PTE_MODIFIED);

	gpamm_memcache_init(&mc, &e->vm->mm);
	ASSERT_EQ_INT(gpamm_memcache_topup(&mc, gpamm_pgt_map_pages(&e->vm->pgt)), 0);
	mmu_write_lock(&e->vm->mmu_lock);
	ASSERT_EQ_INT(gpamm_pgt_map(&e->vm->pgt, gpa, 1, pte, &mc), 1);
	mmu_write_unlock(&e->vm->mmu_lock);
	gpamm_memcache_release(&mc);
}

static void test_vm_mtlb(void)
{
	const uint64_t H = 1ULL << 21, n = MTLB_ENTRIES + 1;
	struct venv e;
	uint8_t *mem = vt_alloc(n * H, 21);
	uint64_t m0, m1;

	/* the direct host: a leaf's PFN is its host address */
	ASSERT(mem);
	memset(&e, 0, sizeof(e));
	e.vm = vt_vm_direct(PS, 3, &e.vh.h);
	e.vh.kind = VT_DIRECT;
	e.gpa = 1ULL << 32;
	ASSERT_EQ_INT(gpamm_vcpu_create(e.vm, 0, &e.v[0]), 0);
	for (uint64_t i = 0; i < n; i++) {
		map_huge(&e, e.gpa + i * H, (uintptr_t)mem + i * H);
		memcpy(mem + i * H + 8, &(uint64_t){ 0x1000 + i }, 8);
		memcpy(mem + i * H + H / 2 + 8, &(uint64_t){ 0x2000 + i }, 8);
	}
	/* both halves of a leaf from one walk: one entry */
	m0 = vstats(&e).tlb_misses;
	ASSERT_EQ(rd(&e, 0, 0), 0x1000);
	ASSERT_EQ(rd(&e, 0, H / 2 / PSZ), 0x2000);
	ASSERT_EQ(rd(&e, 0, (H - PSZ) / PSZ), 0);
	ASSERT_EQ(vstats(&e).tlb_misses, m0 + 1);
	wr(&e, 0, H / 2 / PSZ, 0x2100);
	ASSERT_EQ(*(uint64_t *)(mem + H / 2 + 8), 0x2100);
	ASSERT_EQ(vstats(&e).tlb_misses, m0 + 1);
	/* 64 leaves stay resident */
	for (uint64_t i = 0; i < MTLB_ENTRIES; i++)
		(void)rd(&e, 0, i * H / PSZ);
	m0 = vstats(&e).tlb_misses;
	for (uint64_t i = 0; i < MTLB_ENTRIES; i++) {
		ASSERT_EQ(rd(&e, 0, i * H / PSZ + H / 2 / PSZ), i ? 0x2000 + i : 0x2100);
		ASSERT_EQ(rd(&e, 0, i * H / PSZ), 0x1000 + i);
	}
	m1 = vstats(&e).tlb_misses;
	ASSERT_EQ(m1, m0);
	/* a 65th evicts */
	(void)rd(&e, 0, MTLB_ENTRIES * H / PSZ);
	m0 = vstats(&e).tlb_misses;
	for (uint64_t i = 0; i < n; i++)
		(void)rd(&e, 0, i * H / PSZ);
	ASSERT(vstats(&e).tlb_misses > m0);
	/* a flush of a leaf's upper half drops the whole leaf (the VMM's flush: all) */
	gpamm_vm_flush_remote_tlbs(e.vm);
	m0 = vstats(&e).tlb_misses;
	(void)rd(&e, 0, H / 2 / PSZ);
	ASSERT_EQ(vstats(&e).tlb_misses, m0 + 1);
	venv_destroy(&e);
	vt_free(mem, n * H);
}

static void test_vm_odd_wrprotect_logged(void)
{
	for (unsigned hk = 0; hk < 3; hk++) {
		struct venv e;
		struct gpamm_vm_stats a, b;
		uint64_t bm[1] = { 0 };

		tap_diag("%s host", hosts[hk].name);
		venv_create(&e, hosts[hk].kind, hosts[hk].checking, 64, GPAMM_MEM_LOG_DIRTY_PAGES);
		pair_from_even(&e, true);
		ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, bm), 0);
		ASSERT_EQ(bm[0], 0xcULL);
		/* write-protect the odd page only */
		bm[0] = 1ULL << 3;
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(e.vm, 0, 0, 64, bm), 0);
		a = vstats(&e);
		wr(&e, 0, 3, 0x3333);
		b = vstats(&e);
		ASSERT_EQ(b.faults, a.faults + 1);
		memset(bm, 0, sizeof(bm));
		ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, bm), 0);
		ASSERT_EQ(bm[0], 0xcULL); /* page 2 was never cleared; page 3 logged again */
		ASSERT_EQ(rd(&e, 0, 3), 0x3333);
		/* the even page kept D: a walk, no fault */
		wr(&e, 0, 2, 0x2222);
		ASSERT_EQ(vstats(&e).faults, b.faults);
		/* the same from the other side: the even page write-protected */
		pair_from_even(&e, true);
		bm[0] = 1ULL << 2;
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(e.vm, 0, 0, 64, bm), 0);
		a = vstats(&e);
		wr(&e, 0, 3, 0x3434);
		ASSERT_EQ(vstats(&e).faults, a.faults);
		wr(&e, 0, 2, 0x2424);
		ASSERT_EQ(vstats(&e).faults, a.faults + 1);
		memset(bm, 0, sizeof(bm));
		ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, bm), 0);
		ASSERT(bm[0] & (1ULL << 2));

		/* an odd page clean at the fill gives a half without D: the
		 * store to it faults and is logged, by an access and by the
		 * workload loops' own refill */
		for (unsigned how = 0; how < 2; how++) {
			const uint64_t ev = 8 + 4 * how, od = ev + 1;

			wr(&e, 0, ev, 1);
			(void)rd(&e, 0, od); /* mapped clean under logging */
			memset(bm, 0, sizeof(bm));
			ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, bm), 0);
			ASSERT_EQ(bm[0] & (3ULL << ev), 1ULL << ev);
			gpamm_vm_flush_remote_tlbs(e.vm);
			a = vstats(&e);
			if (!how) {
				wr(&e, 0, ev, 2);  /* fills the pair */
				wr(&e, 0, od, 3);
			} else {
				workload(&e, ev, 2, 1, 1);
			}
			b = vstats(&e);
			ASSERT_EQ(b.faults, a.faults + 1);
			memset(bm, 0, sizeof(bm));
			ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, bm), 0);
			ASSERT(bm[0] & (1ULL << od));
		}
		venv_destroy(&e);
	}
}

static void test_vm_odd_unmap_faults(void)
{
	for (unsigned hk = 1; hk < 3; hk++) {
		struct venv e;
		struct gpamm_vm_stats a, b;
		bool young;
		uint64_t odd;

		tap_diag("%s host", hosts[hk].name);
		venv_create(&e, VT_SIM, hosts[hk].checking, 64, 0);
		odd = e.hva + 3 * PSZ;

		/* the notifier unmaps the odd page: the next access faults, and reads the new page */
		pair_from_even(&e, true);
		a = vstats(&e);
		ASSERT_EQ_INT(gpamm_sim_madv_dontneed(e.vh.h, odd, PSZ), 0);
		ASSERT_EQ(rd(&e, 0, 3), 0);
		b = vstats(&e);
		ASSERT_EQ(b.faults, a.faults + 1);
		ASSERT_EQ(rd(&e, 0, 2), 0x22);

		/* mprotect of the odd page: a store to it exits as a memory fault */
		pair_from_even(&e, true);
		ASSERT_EQ_INT(gpamm_sim_mprotect(e.vh.h, odd, PSZ, false), 0);
		a = vstats(&e);
		ASSERT_EQ(acc(&e, 0, 3, true, 0x77, NULL), GPAMM_EXIT_MEMORY_FAULT);
		ASSERT(vstats(&e).faults > a.faults);
		ASSERT_EQ_INT(gpamm_sim_mprotect(e.vh.h, odd, PSZ, true), 0);
		ASSERT_EQ_INT(gpamm_vcpu_run(e.v[0]), 0);
		ASSERT_EQ(gpamm_vcpu_run_state(e.v[0])->exit_reason, GPAMM_EXIT_DONE);
		ASSERT_EQ(rd(&e, 0, 3), 0x77);

		/* aging of the odd page (clear_flush_young, and mark_idle): the next access faults */
		pair_from_even(&e, true);
		ASSERT_EQ_INT(gpamm_sim_clear_young(e.vh.h, odd, PSZ, true, &young), 0);
		ASSERT(young);
		a = vstats(&e);
		ASSERT_EQ(rd(&e, 0, 3), 0x33);
		ASSERT_EQ(vstats(&e).faults, a.faults + 1);
		pair_from_even(&e, true);
		ASSERT_EQ(gpamm_vm_mark_idle(e.vm, e.gpa + 3 * PSZ, PSZ), 1);
		a = vstats(&e);
		wr(&e, 0, 3, 0x34);
		ASSERT_EQ(vstats(&e).faults, a.faults + 1);
		ASSERT_EQ(gpamm_vm_test_young(e.vm, e.gpa + 3 * PSZ, PSZ, NULL), 1);
		venv_destroy(&e);
	}
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_geometry);
	TEST(test_pair_halves);
	TEST(test_flush_gpa_kills_pair);
	TEST(test_set_capacity);
	TEST(test_reach);
	TEST(test_mtlb);
	TEST(test_random_model);
	TEST(test_walker_pair);
	TEST(test_vm_neighbour_no_walk);
	TEST(test_vm_invalid_half_rewalk);
	TEST(test_vm_set_capacity);
	TEST(test_vm_reach);
	TEST(test_vm_mtlb);
	TEST(test_vm_odd_wrprotect_logged);
	TEST(test_vm_odd_unmap_faults);
	return tap_done();
}
