/* SPDX-License-Identifier: MIT */
/*
 * Internal structures of a VM: the memslot set, the vCPU with its TLB and
 * guest context, and the VM itself with its MMU lock and invalidation
 * state. Shared by vm.c, memslot.c, mmu.c, tlb.c and vcpu.c; not public.
 */
#ifndef GPAMM_VM_INT_H
#define GPAMM_VM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <ucontext.h>

#include "gpamm/gpamm.h"
#include "gpamm/inject.h"
#include "gpamm/pgtable.h"
#include "util.h"

/* ---- memslots ---------------------------------------------------------- */

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

/* ---- TLB ---------------------------------------------------------------- */

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

/* ---- vCPU --------------------------------------------------------------- */

enum vcpu_mode { OUTSIDE_GUEST_MODE = 0, IN_GUEST_MODE = 1 };

#define REQ_TLB_FLUSH (1u << 0) /* remote flush: drop everything */
#define REQ_EXIT      (1u << 1) /* kick: exit to the VMM */
#define REQ_RING_FULL (1u << 2) /* own dirty ring is soft-full: exit */

/* A vCPU's dirty ring: the vCPU pushes, the VMM harvests and resets. */
struct dirty_ring {
	struct gpamm_dirty_gfn *gfns;
	uint32_t size;                /* a power of two */
	uint32_t push;                /* next entry to fill (vCPU thread only) */
	_Atomic uint32_t reset;       /* next entry to reset (VMM, under dirty_lock) */
};

enum guest_state { GUEST_NONE, GUEST_READY, GUEST_RUNNING, GUEST_DONE };

struct gpamm_vcpu {
	struct gpamm_vm *vm;
	unsigned id;
	bool checking;
	bool fast_refill; /* the workload loops may refill inline (wl_refill) */
	_Atomic uint32_t mode;
	_Atomic uint32_t requests;
	struct tlb tlb;
	_Atomic int running;
	uint64_t gpa_flush[TLB_GPA_QUEUE]; /* deferred per-GPA flushes (local) */
	unsigned gpa_flush_nr;
	bool gpa_flush_all;
	struct gpamm_memcache mc;
	struct gpamm_run run;
	struct dirty_ring ring;

	/* guest context */
	gpamm_guest_fn guest_fn;
	void *guest_arg;
	enum guest_state gstate;
	ucontext_t host_uc, guest_uc;
	void *stack;
	size_t stack_size;
	void *asan_fake_stack;

	/* statistics, written only by the vCPU thread (relaxed) */
	uint64_t st_tlb_misses, st_faults, st_fast, st_slow,
		 st_retries, st_mmio, st_memfault, st_gpa_flushes;
};

/* ---- VM ----------------------------------------------------------------- */

struct gpamm_vm {
	struct gpamm_geom geom;
	unsigned layout; /* index of the geometry in gpamm_geom_layouts[] */
	struct gpamm_host *host;
	unsigned flags;
	struct gpamm_tpool *tpool;
	struct gpamm_mm_ops mm;
	struct gpamm_pgt pgt;

	pthread_mutex_t mmu_lock;
	/* MMU-notifier invalidation state, written under mmu_lock */
	_Atomic uint64_t mmu_invalidate_seq;
	int64_t mmu_invalidate_in_progress;
	uint64_t inv_hva_start, inv_hva_end;

	pthread_mutex_t slots_lock;         /* serialises memslot changes */
	struct gpamm_memslots *_Atomic slots; /* RCU-published */
	struct gpamm_memslots *slots_locked;  /* the same set, for readers holding mmu_lock */
	/* Checking mode only: the set of the last memslot change that has
	 * returned (RCU-published too); the translations it allows stay legal
	 * while a DELETE or MOVE is still under way. NULL otherwise. */
	struct gpamm_memslots *_Atomic slots_done;
	struct gpamm_memslot **by_id;        /* under slots_lock */

	pthread_mutex_t vcpus_lock;
	unsigned max_vcpus;
	struct gpamm_vcpu **vcpus;
	_Atomic unsigned nr_vcpus;

	_Atomic uint64_t st_remote_flushes, st_pinned, st_stale_slot;
	bool notifier_registered;
	/* under mmu_lock: the host's address space went away (release());
	 * nothing is mapped again and VMM calls return -EIO */
	bool dead;
	/* under mmu_lock: clear_young made entries old without a flush, so
	 * TLB entries may still let accesses through without a fault */
	bool aged_unflushed;

	/* race and fault injection (gpamm/inject.h); NULL and 0 in production */
	gpamm_pause_fn pause_fn;
	void *pause_arg;
	unsigned inject;

	/* dirty logging: set before use, read by faults */
	unsigned dirty_log_flags;    /* GPAMM_DIRTY_LOG_* */
	uint32_t dirty_ring_size;    /* 0: bitmap mode */
	pthread_mutex_t dirty_lock;  /* serialises ring resets */
};

/* The host's address space went away: VMM calls answer -EIO (as KVM's do
 * from a process that is not the VM's mm). */
static inline bool vm_is_dead(struct gpamm_vm *vm)
{
	return __atomic_load_n(&vm->dead, __ATOMIC_ACQUIRE);
}

/* memslot.c */
int gpamm_memslots_init(struct gpamm_vm *vm);
/* Checking mode: the HVA that @gpa may be translated to right now, by the
 * set of the last completed change or by the current one (~0: neither).
 * Context: RCU read lock held. */
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

/* dirty.c */
int gpamm_dirty_ring_alloc(struct gpamm_vcpu *vcpu);
void gpamm_dirty_ring_free(struct gpamm_vcpu *vcpu);
bool gpamm_dirty_ring_soft_full(const struct gpamm_vcpu *vcpu);

/* mmu.c */
enum fault_result { FAULT_OK = 0, FAULT_MMIO, FAULT_MEMORY };
/* Context: vCPU thread, outside guest mode, no lock held. */
enum fault_result gpamm_mmu_fault(struct gpamm_vcpu *vcpu, uint64_t gpa, bool write);
/* Context: slots_lock held. Unmap [gfn, gfn + npages), remote flush, free tables. */
void gpamm_mmu_flush_gfn_range(struct gpamm_vm *vm, uint64_t gfn, uint64_t npages, bool free_tables);
void gpamm_mmu_wrprotect_gfn_range(struct gpamm_vm *vm, uint64_t gfn, uint64_t npages);
int gpamm_mmu_notifier_attach(struct gpamm_vm *vm);
void gpamm_mmu_notifier_detach(struct gpamm_vm *vm);

/* tlb.c */
void gpamm_tlb_init(struct tlb *t, unsigned page_shift);
void gpamm_tlb_flush_all(struct tlb *t);
void gpamm_tlb_flush_gpa(struct tlb *t, uint64_t gpa);
/* Return: the host address of the page. */
uint8_t *gpamm_tlb_fill(struct tlb *t, uint64_t gpa, unsigned shift, uint8_t *hptr, uint64_t pfn,
			uint64_t hva, bool writable);
void gpamm_vcpu_queue_gpa_flush(struct gpamm_vcpu *vcpu, uint64_t gpa);
/* Context: VMM/MMU side, any thread that is not in guest mode. */
void gpamm_flush_remote_tlbs(struct gpamm_vm *vm);

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

/* vcpu.c */
void gpamm_vcpu_free(struct gpamm_vcpu *vcpu);
#include "guestcall.h"

/* A named pause point (gpamm/inject.h): one not-taken branch without a hook. */
static ALWAYS_INLINE void vm_pause_point(struct gpamm_vcpu *vcpu, enum gpamm_pause_point pp,
					 uint64_t gpa)
{
	struct gpamm_vm *vm = vcpu->vm;

	if (unlikely(vm->pause_fn != NULL))
		vm->pause_fn(vm->pause_arg, pp, vcpu, gpa);
}

/* vm.c: process-wide accounting */
extern _Atomic uint64_t gpamm_live_vms, gpamm_live_vcpus, gpamm_live_tpools, gpamm_live_threads;

#endif
