// SPDX-License-Identifier: MIT
/*
 * vCPUs: guest mode, the run loop, guest memory accesses and the emulated
 * hardware page-table walker.
 *
 * The guest program of a vCPU runs on a stack of its own (a ucontext), so
 * that an access that must exit to the VMM (MMIO, a memory fault, a kick)
 * can switch back to gpamm_vcpu_run() from deep inside the guest and be
 * resumed at the same access on the next run. The guest is "in guest mode"
 * while it runs; a translation fault is a VM exit handled on the same
 * thread: guest mode is left, the MMU's fault handler runs, guest mode is
 * entered again (processing pending TLB requests) and the access retried.
 *
 * An access: check requests -> TLB -> on a miss the walker reads the real
 * LoongArch entries (following invalid tables as hardware does) and, when
 * the accessed entry is VALID (and DIRTY for a store), fills the TLB with
 * the pair that holds it (both entries, as LDPTE loads them) -> otherwise
 * a fault.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "arch/loongarch/walker.h"
#include "vm.h"

#ifdef GPAMM_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef GPAMM_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#define DEFAULT_GUEST_STACK (256u << 10)

static inline void vstat_inc(uint64_t *c)
{
	__atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

/* ---- guest mode and requests -------------------------------------------- */

static void vcpu_service_requests(struct gpamm_vcpu *v);

/*
 * Guest mode is one RCU read-side section: the emulated walker's refill,
 * the workload loops' inline refill and their one-ahead prefetch descent
 * all run in guest mode, so a table freed through call_rcu is never freed
 * under them, at no cost per walk. The section is left at every exit and
 * for a moment at each access while a grace period waits (REQ_RCU_QS,
 * raised by gpamm_rcu_wait_begin(), served as a TLB flush request is).
 */
/* Grace periods waited for now: while any, vCPUs pass quiescent states. */
static _Atomic unsigned rcu_waiters;

static void vcpu_enter_guest(struct gpamm_vcpu *v)
{
	if (!v->rcu_held) {
		gpamm_rcu_read_lock();
		v->rcu_held = true;
	}
	atomic_store(&v->mode, IN_GUEST_MODE);
	if (atomic_load(&rcu_waiters)) /* one flip of a grace period may follow */
		atomic_fetch_or(&v->requests, REQ_RCU_QS);
	if (atomic_load(&v->requests) & REQ_TLB_FLUSH) {
		gpamm_tlb_flush_all(&v->tlb);
		atomic_fetch_and(&v->requests, ~REQ_TLB_FLUSH);
	}
	if (v->gpa_flush_all) {
		gpamm_tlb_flush_all(&v->tlb);
	} else {
		for (unsigned i = 0; i < v->gpa_flush_nr; i++)
			gpamm_tlb_flush_gpa(&v->tlb, v->gpa_flush[i]);
	}
	v->st_gpa_flushes += v->gpa_flush_nr + v->gpa_flush_all;
	v->gpa_flush_nr = 0;
	v->gpa_flush_all = false;
}

static void vcpu_leave_guest(struct gpamm_vcpu *v)
{
	atomic_store_explicit(&v->mode, OUTSIDE_GUEST_MODE, memory_order_release);
	if (v->rcu_held) {
		v->rcu_held = false;
		gpamm_rcu_read_unlock();
	}
}


static void rcu_kick_one(struct gpamm_vcpu *v)
{
	atomic_fetch_or(&v->requests, REQ_RCU_QS);
}

void gpamm_rcu_wait_begin(void)
{
	/* the count first: a vCPU clears its bit, then looks at the count */
	atomic_fetch_add(&rcu_waiters, 1);
	gpamm_vms_for_each_vcpu(rcu_kick_one);
}

void gpamm_rcu_wait_end(void)
{
	atomic_fetch_sub(&rcu_waiters, 1);
}

/* ---- TLB shootdown --------------------------------------------------------- */

/*
 * A remote flush sets REQ_TLB_FLUSH on every vCPU and then waits for each
 * vCPU that is in guest mode to acknowledge it. A vCPU checks its requests
 * at every guest memory access (the emulated interrupt boundary) and on
 * every guest entry; entry stores IN_GUEST_MODE before it reads the
 * requests, and the flusher sets the request before it reads the mode, so
 * (both sequentially consistent) either the flusher waits for the vCPU or
 * the vCPU sees the request before it uses its TLB. An access in flight
 * finishes before its vCPU acknowledges; so when the flush returns, no vCPU
 * can use a translation removed before the call (DESIGN.md contract 1), and
 * no emulated walker is still inside an unlinked table.
 */

/* Per-GPA flushes are local and deferred to this vCPU's next guest entry. */
void gpamm_vcpu_queue_gpa_flush(struct gpamm_vcpu *vcpu, uint64_t gpa)
{
	if (vcpu->gpa_flush_nr < TLB_GPA_QUEUE)
		vcpu->gpa_flush[vcpu->gpa_flush_nr++] = gpa;
	else
		vcpu->gpa_flush_all = true;
}

void gpamm_flush_remote_tlbs(struct gpamm_vm *vm)
{
	unsigned n = atomic_load(&vm->nr_vcpus);

	for (unsigned i = 0; i < n; i++)
		atomic_fetch_or(&vm->vcpus[i]->requests, REQ_TLB_FLUSH);
	for (unsigned i = 0; i < n; i++) {
		struct gpamm_vcpu *v = vm->vcpus[i];
		unsigned spins = 0;

		while (atomic_load(&v->mode) == IN_GUEST_MODE &&
		       (atomic_load(&v->requests) & REQ_TLB_FLUSH)) {
			if (++spins > 64)
				sched_yield();
			else
				cpu_relax();
		}
	}
	atomic_fetch_add_explicit(&vm->st_remote_flushes, 1, memory_order_relaxed);
}

void gpamm_vm_flush_remote_tlbs(struct gpamm_vm *vm)
{
	struct gpamm_vcpu *g;

	if (!vm)
		return;
	g = gpamm_guest_call_begin();

	gpamm_flush_remote_tlbs(vm);
	gpamm_guest_call_end(g);
}

/* ---- switching between the VMM's stack and the guest's ------------------ */

/*
 * The sanitizers are told about each switch: ASan of the stack it moves
 * to (fake stacks, stack bounds), TSan of the fiber, so that the guest's
 * accesses are attributed to a context of their own which the switches
 * order with the VMM thread that runs it (one thread in effect).
 */
static void switch_to_guest(struct gpamm_vcpu *v)
{
#ifdef GPAMM_TSAN
	v->tsan_host_fiber = __tsan_get_current_fiber();
	__tsan_switch_to_fiber(v->tsan_fiber, 0);
#endif
#ifdef GPAMM_ASAN
	void *fake = NULL;
	__sanitizer_start_switch_fiber(&fake, v->stack, v->stack_size);
	swapcontext(&v->host_uc, &v->guest_uc);
	__sanitizer_finish_switch_fiber(fake, NULL, NULL);
#else
	swapcontext(&v->host_uc, &v->guest_uc);
#endif
}

#ifdef GPAMM_ASAN
static __thread const void *host_stack_bottom;
static __thread size_t host_stack_size;
#endif

/* From guest code: back to gpamm_vcpu_run(); returns when run again. */
static void switch_to_host(struct gpamm_vcpu *v, bool final)
{
#ifdef GPAMM_TSAN
	__tsan_switch_to_fiber(v->tsan_host_fiber, 0);
#endif
#ifdef GPAMM_ASAN
	void *fake = NULL;
	__sanitizer_start_switch_fiber(final ? NULL : &fake, host_stack_bottom, host_stack_size);
	swapcontext(&v->guest_uc, &v->host_uc);
	__sanitizer_finish_switch_fiber(fake, &host_stack_bottom, &host_stack_size);
#else
	(void)final;
	swapcontext(&v->guest_uc, &v->host_uc);
#endif
}

/* Exit to the VMM with the reason already in v->run. */
static void vcpu_exit(struct gpamm_vcpu *v, uint32_t reason)
{
	v->run.exit_reason = reason;
	vcpu_leave_guest(v);
	switch_to_host(v, false);
	/* gpamm_vcpu_run() entered guest mode again before switching back */
}

static void guest_trampoline(unsigned hi, unsigned lo)
{
	struct gpamm_vcpu *v = (struct gpamm_vcpu *)(((uintptr_t)hi << 32) | lo);

#ifdef GPAMM_ASAN
	__sanitizer_finish_switch_fiber(NULL, &host_stack_bottom, &host_stack_size);
#endif
	v->run.guest_ret = v->guest_fn(v, v->guest_arg);
	v->gstate = GUEST_DONE;
	v->run.exit_reason = GPAMM_EXIT_DONE;
	vcpu_leave_guest(v);
	switch_to_host(v, true);
	abort(); /* a finished guest is never resumed */
}

static void vcpu_service_requests(struct gpamm_vcpu *v)
{
	uint32_t r = atomic_load(&v->requests);

	if (r & REQ_RCU_QS) {
		atomic_fetch_and(&v->requests, ~REQ_RCU_QS);
		if (v->rcu_held) { /* a quiescent state: the next section is a new one */
			gpamm_rcu_read_unlock();
			gpamm_rcu_read_lock();
		}
		/* another one at the next access while a grace period still waits */
		if (atomic_load(&rcu_waiters))
			atomic_fetch_or(&v->requests, REQ_RCU_QS);
	}
	if (r & REQ_TLB_FLUSH) {
		gpamm_tlb_flush_all(&v->tlb);
		atomic_fetch_and(&v->requests, ~REQ_TLB_FLUSH);
	}
	if (r & REQ_EXIT) {
		atomic_fetch_and(&v->requests, ~REQ_EXIT);
		vcpu_exit(v, GPAMM_EXIT_REQUEST);
	}
	/* read again: an exit above may have lasted while the VMM reset the ring */
	if (atomic_load(&v->requests) & REQ_RING_FULL) {
		atomic_fetch_and(&v->requests, ~REQ_RING_FULL);
		/* Only if still soft-full (KVM checks again too): the VMM may have
		 * harvested and reset the ring since the push that asked for it.
		 * No guest entry until the VMM has reset it (see run). */
		if (gpamm_dirty_ring_soft_full(v))
			vcpu_exit(v, GPAMM_EXIT_DIRTY_RING_FULL);
	}
}

/* ---- the emulated hardware walker (arch/loongarch/walker.h) --------------- */

static ALWAYS_INLINE gpamm_pte_t *hw_descend(const struct gpamm_vm *vm, uint64_t gpa,
					     bool read_leaf, gpamm_pte_t *ep, unsigned *levelp)
{
	return la_walk_descend(vm->pgt.root, vm->layout, gpa, read_leaf, ep, levelp);
}

/*
 * The refill's walk, in guest mode and so inside the vCPU's RCU read-side
 * section, as every lock-free walker of the tables (the prefetch descent,
 * wl_refill): a table a range operation unlinks is freed only after a
 * grace period (mmu.c). A function of its own: the miss path's code stays
 * small.
 */
static bool hw_walk(struct gpamm_vcpu *v, uint64_t gpa, bool write, gpamm_pte_t pair[2],
		    unsigned *levelp)
{
	struct gpamm_vm *vm = v->vm;
	/* in guest mode: inside the vCPU's RCU read-side section */
	return la_walk_pair(vm->pgt.root, vm->layout, vm->geom.gpa_bits, vm->flags & GPAMM_VM_PTW,
			    gpa, write, pair, levelp);
}

/*
 * A TLB half's state from its entry, as the CPU loads it: V from VALID, D
 * from DIRTY. The bits are the same, so it is one and.
 */
_Static_assert(GPAMM_PTE_VALID == TLBH_V && GPAMM_PTE_DIRTY == TLBH_D, "half state = entry bits");
static ALWAYS_INLINE unsigned pte_half_state(gpamm_pte_t e)
{
	return (unsigned)e & (TLBH_V | TLBH_D);
}

/* The halves' size for a leaf at @level: a base page, or half a huge leaf. */
static ALWAYS_INLINE unsigned half_shift(const struct gpamm_vm *vm, unsigned level)
{
	return level ? vm->geom.shift[level] - 1 : vm->geom.page_shift;
}

/* ---- translation ----------------------------------------------------------- */

/* XL_STALE: checking mode found the translation stale; the access is dropped */
enum xlate_exit { XL_OK = 0, XL_RETRY, XL_MMIO, XL_MEMORY, XL_STALE };

/* Checking mode: the HVA a GFN is expected at (INVALID slots count: their
 * translations live until the delete has flushed them). */
static uint64_t expected_hva(struct gpamm_vm *vm, uint64_t gpa)
{
	const unsigned ps = vm->geom.page_shift;
	struct gpamm_memslot *s;
	uint64_t hva = ~0ULL;

	gpamm_rcu_read_lock();
	s = gpamm_memslot_lookup(atomic_load_explicit(&vm->slots, memory_order_consume),
				 gpa >> ps, true);
	if (s)
		hva = memslot_gfn_to_hva(s, gpa >> ps, ps);
	gpamm_rcu_read_unlock();
	return hva;
}

/*
 * Checking mode: verify the translation the access would use with the
 * host (the page is live and still what maps @hva) and, for a TLB hit
 * (@hit), the GPA -> HVA part against the memslots (a translation that
 * outlived its slot: a missed DELETE/MOVE flush). A stale access is
 * counted and dropped: NULL with *@ex = XL_STALE.
 */
static uint8_t *check_stale(struct gpamm_vcpu *v, uint8_t *p, uint64_t gpa, uint64_t pfn,
			    uint64_t hva, bool write, bool hit, enum xlate_exit *ex)
{
	struct gpamm_vm *vm = v->vm;
	struct gpamm_host *host = vm->host;
	bool legal = true;

	if (hit) {
		gpamm_rcu_read_lock();
		legal = gpamm_memslot_hva_legal(vm, gpa, hva);
		gpamm_rcu_read_unlock();
		if (!legal)
			atomic_fetch_add_explicit(&vm->st_stale_slot, 1, memory_order_relaxed);
	}
	if (!legal || host->ops->check_access(host, hva, pfn, write) < 0) {
		*ex = XL_STALE;
		return NULL;
	}
	return p;
}

/* A VM exit for a translation fault, handled on this thread. */
static __attribute__((noinline)) uint8_t *xlate_fault(struct gpamm_vcpu *v, uint64_t gpa,
						      bool write, enum xlate_exit *ex)
{
	enum fault_result fr;

	vcpu_leave_guest(v);
	fr = gpamm_mmu_fault(v, gpa, write);
	if (fr == FAULT_OK) {
		vcpu_enter_guest(v);
		*ex = XL_RETRY;
	} else {
		*ex = fr == FAULT_MMIO ? XL_MMIO : XL_MEMORY;
	}
	return NULL;
}

/*
 * Checking mode: every access comes here, is translated and verified. A
 * fill records, for each half of the pair, the PFN its entry names and
 * the HVA its memslot has for it now, so that a later hit on either half
 * (the one not accessed now too) is checked against what it should map.
 */
static __attribute__((noinline)) uint8_t *xlate_checked(struct gpamm_vcpu *v, uint64_t gpa,
							bool write, enum xlate_exit *ex)
{
	struct gpamm_vm *vm = v->vm;
	const unsigned ps = vm->geom.page_shift;
	struct tlb_half half[2];
	uint64_t pfn, hva, off;
	gpamm_pte_t pair[2];
	unsigned level, hs, h;
	uint8_t *p = tlb_lookup_slow(&v->tlb, gpa, write, &pfn, &hva);

	if (p)
		return check_stale(v, p, gpa, pfn, hva, write, true, ex);
	if (!hw_walk(v, gpa, write, pair, &level))
		return xlate_fault(v, gpa, write, ex);
	vstat_inc(&v->st_tlb_misses);
	hs = half_shift(vm, level);
	for (unsigned i = 0; i < 2; i++) {
		uint64_t hbase = ((gpa >> (hs + 1)) << (hs + 1)) + ((uint64_t)i << hs);

		half[i].pfn = gpamm_pte_pfn(pair[i], ps);
		half[i].state = pte_half_state(pair[i]);
		half[i].hptr = half[i].state ? gpamm_host_page_ptr(vm->host, half[i].pfn) : NULL;
		half[i].hva = half[i].state ? expected_hva(vm, hbase) : ~0ULL;
	}
	p = gpamm_tlb_fill(&v->tlb, gpa, vm->geom.shift[level], half);
	h = (unsigned)(gpa >> hs) & 1;
	off = (gpa & ((1ULL << hs) - 1)) & ~((1ULL << ps) - 1);
	return check_stale(v, p, gpa, half[h].pfn + (off >> ps), half[h].hva + off, write, false,
			   ex);
}

/*
 * A TLB miss: walk and fill, returning the host address, or take the fault
 * (NULL with *ex set: XL_RETRY when the fault was handled and the access
 * should look again). The walk and a base-page fill are inline here, so a
 * miss costs one call: few stores, which matters when the store of the
 * access itself waits for DRAM and stores retire in order.
 */
static ALWAYS_INLINE uint8_t *xlate_miss(struct gpamm_vcpu *v, uint64_t gpa, bool write,
					  enum xlate_exit *ex)
{
	struct gpamm_vm *vm = v->vm;
	const unsigned ps = vm->geom.page_shift;
	struct tlb_half half[2];
	gpamm_pte_t pair[2];
	unsigned level;

	if (unlikely(v->checking))
		return xlate_checked(v, gpa, write, ex);
	if (unlikely(!hw_walk(v, gpa, write, pair, &level)))
		return xlate_fault(v, gpa, write, ex);
	vstat_inc(&v->st_tlb_misses);
	for (unsigned i = 0; i < 2; i++) {
		half[i].state = pte_half_state(pair[i]);
		half[i].pfn = gpamm_pte_pfn(pair[i], ps);
		/* a half without V is never read: no host look-up for it */
		half[i].hptr = half[i].state ? gpamm_host_page_ptr(vm->host, half[i].pfn) : NULL;
		half[i].hva = 0;
	}
	if (likely(level == 0)) {
		struct tlb *t = &v->tlb;
		const unsigned h = tlb_pos(t, gpa).half;

		tlb_fill_pair(t, gpa, half[0].state, half[1].state, half[0].hptr, half[1].hptr);
		tlb_front_set(t, gpa, half[h].state & TLBH_D, half[h].hptr);
		return half[h].hptr + (gpa & ~t->pmask);
	}
	return gpamm_tlb_fill(&v->tlb, gpa, vm->geom.shift[level], half);
}

/*
 * Host bytes for an access at @gpa (within one page), or NULL when the
 * access exits to the VMM (then *ex says why; the caller fills v->run).
 */
static ALWAYS_INLINE uint8_t *xlate(struct gpamm_vcpu *v, uint64_t gpa, bool write,
				    enum xlate_exit *ex)
{
	for (;;) {
		uint8_t *p;

		if (unlikely(atomic_load_explicit(&v->requests, memory_order_relaxed)))
			vcpu_service_requests(v);
		p = tlb_lookup(&v->tlb, gpa, write);
		if (likely(p))
			return p;
		*ex = XL_OK;
		p = xlate_miss(v, gpa, write, ex);
		if (p)
			return p;
		if (*ex != XL_RETRY)
			return NULL;
	}
}

/* An access that could not complete in guest memory: exit, then finish it. */
static __attribute__((noinline)) bool access_exit(struct gpamm_vcpu *v, enum xlate_exit ex,
						  uint64_t gpa, unsigned len, bool write,
						  uint64_t *val)
{
	struct gpamm_run *run = &v->run;

	if (ex == XL_MMIO) {
		vstat_inc(&v->st_mmio);
		run->mmio.phys_addr = gpa;
		run->mmio.len = len;
		run->mmio.is_write = write;
		memset(run->mmio.data, 0, sizeof(run->mmio.data));
		if (write)
			memcpy(run->mmio.data, val, len);
		vcpu_exit(v, GPAMM_EXIT_MMIO);
		if (!write) {
			*val = 0;
			memcpy(val, run->mmio.data, len);
		}
		return true; /* done */
	}
	vstat_inc(&v->st_memfault);
	run->memory_fault.flags = write ? GPAMM_MEMORY_EXIT_FLAG_WRITE : 0;
	run->memory_fault.gpa = gpa & ~(v->vm->geom.page_size - 1);
	run->memory_fault.size = v->vm->geom.page_size;
	vcpu_exit(v, GPAMM_EXIT_MEMORY_FAULT);
	return false; /* retry the access */
}

/*
 * One access of 1..8 bytes inside one page, the whole way: requests, TLB,
 * walk and fill, fault, exit. Returns what a load read.
 */
static __attribute__((noinline)) uint64_t access_slow(struct gpamm_vcpu *v, uint64_t gpa,
						      unsigned len, bool write, uint64_t val)
{
	for (;;) {
		enum xlate_exit ex = XL_OK;
		uint8_t *p = xlate(v, gpa, write, &ex);

		if (likely(p)) {
			if (write)
				guest_mem_store(p, val, len);
			else
				val = guest_mem_load(p, len);
			return val;
		}
		if (ex == XL_STALE)
			return 0; /* dropped (counted): a load reads zero */
		if (access_exit(v, ex, gpa, len, write, &val))
			return val;
	}
}

/*
 * The front cache as the hit path uses it: a copy that a loop of accesses
 * can keep in registers, read again after every slow path (the only place
 * it can change: only the vCPU's own thread writes its TLB; other threads
 * only post requests, which are read on every access).
 */
struct front {
	uint64_t pm, rb, wb;
	intptr_t d; /* host address = gpa + d */
};

static ALWAYS_INLINE void front_load(const struct gpamm_vcpu *v, struct front *f)
{
	f->pm = v->tlb.pmask;
	f->rb = v->tlb.rbase;
	f->wb = v->tlb.wbase;
	f->d = v->tlb.front_delta;
}

/* A hit: no request pending and @gpa in the front page (with D, for a store). */
static ALWAYS_INLINE bool front_ok(const struct gpamm_vcpu *v, const struct front *f,
				   uint64_t gpa, bool write)
{
	return !(((gpa & f->pm) ^ (write ? f->wb : f->rb)) |
		 atomic_load_explicit(&v->requests, memory_order_relaxed));
}

static ALWAYS_INLINE uint8_t *front_ptr(const struct front *f, uint64_t gpa)
{
	return (uint8_t *)(uintptr_t)((intptr_t)gpa + f->d);
}

static ALWAYS_INLINE void access_store(struct gpamm_vcpu *v, uint64_t gpa, unsigned len,
				       uint64_t val)
{
	struct front f;

	front_load(v, &f);
	if (likely(front_ok(v, &f, gpa, true)))
		guest_mem_store(front_ptr(&f, gpa), val, len);
	else
		access_slow(v, gpa, len, true, val);
}

static ALWAYS_INLINE uint64_t access_load(struct gpamm_vcpu *v, uint64_t gpa, unsigned len)
{
	struct front f;

	front_load(v, &f);
	if (likely(front_ok(v, &f, gpa, false)))
		return guest_mem_load(front_ptr(&f, gpa), len);
	return access_slow(v, gpa, len, false, 0);
}

/*
 * The random loops know their next address one access ahead, as an
 * out-of-order core's page walkers see the next load while this one
 * waits: start its walk (the STLB set and the leaf entry into the cache;
 * the directory levels are read, nothing is written) so that the two
 * overlap instead of queueing.
 */
static ALWAYS_INLINE void wl_prefetch(const struct gpamm_vcpu *v, uint64_t gpa)
{
	const struct tlb *t = &v->tlb;

	gpamm_pte_t e, *ptep;
	unsigned level;

	__builtin_prefetch(t->tag[tlb_pos(t, gpa).set]);
	if (likely(v->fast_refill && !(gpa >> v->vm->geom.gpa_bits))) {
		ptep = hw_descend(v->vm, gpa, false, &e, &level); /* in guest mode: RCU reader */
		if (!level)
			__builtin_prefetch(ptep); /* a prefetch of a freed table is harmless */
	}
}

/* Add the misses a workload loop counted to the statistics. */
static ALWAYS_INLINE void wl_flush_misses(struct gpamm_vcpu *v, uint64_t *misses)
{
	if (*misses) {
		__atomic_store_n(&v->st_tlb_misses, v->st_tlb_misses + *misses, __ATOMIC_RELAXED);
		*misses = 0;
	}
}

/* The loop's front copy set to the page of @gpa at host address @hptr. */
static ALWAYS_INLINE uint8_t *wl_front(struct front *f, uint64_t gpa, bool dirty, uint8_t *hptr)
{
	const uint64_t page = gpa & f->pm;

	f->rb = page;
	f->wb = dirty ? page : 1;
	f->d = (intptr_t)hptr - (intptr_t)page;
	return front_ptr(f, gpa);
}

/*
 * The workload loops' refill of a front miss, inline and with as few
 * stores as it can (each store of a miss holds a store-buffer slot while
 * the access's own store waits for memory, and a value kept across the
 * walk is a spill, a store): one look at the set (the pair's way serves a
 * hit; else the way the refill will take), the walk, the pair read (both
 * entries are in one cache line) and a pair fill (three stores). The new
 * front goes to the loop's copy only; the TLB's own front keeps an older
 * page, which is as valid (every flush clears it and reaches the loop as
 * a request first). Misses are counted in the loop and added to the
 * statistics when it ends or leaves for the slow path. Anything else --
 * checking mode, a pending request, huge entries, a leaf that would fault
 * (or a PTW update), a host whose frames are not linear -- returns NULL
 * for access_slow().
 */
static ALWAYS_INLINE uint8_t *wl_refill(struct gpamm_vcpu *v, struct front *f, uint64_t gpa,
					bool write, uint64_t *misses)
{
	struct gpamm_vm *vm = v->vm;
	struct tlb *t = &v->tlb;
	gpamm_pte_t pair[2], e, *ptep;
	struct tlb_pos pos;
	unsigned level, slot;
	int way;

	/* Opaque to the hit test's computations: shared with it, the
	 * compiler keeps them on the stack, a store on every hit. */
	__asm__("" : "+r"(gpa));

	if (unlikely(!v->fast_refill | !!t->mtlb_nr |
		     !!atomic_load_explicit(&v->requests, memory_order_relaxed)))
		return NULL;
	pos = tlb_pos(t, gpa);
	way = tlb_scan(t, pos, &slot);
	if (way >= 0) {
		const uint64_t tag = t->tag[pos.set][way], need = tlb_need(pos.half, write);

		if ((tag & need) == need)
			return wl_front(f, gpa, tlb_tag_dirty(tag, pos.half),
					t->hptr[pos.set][way][pos.half]);
	}
	if (unlikely(gpa >> vm->geom.gpa_bits))
		return NULL;
	if (way >= 0)
		slot = (unsigned)way;
	ptep = hw_descend(vm, gpa, false, &e, &level); /* in guest mode: RCU reader */
	if (unlikely(level))
		return NULL;
	la_ldpte_pair(ptep, pair);
	/* The position again rather than kept across the walk (see above),
	 * and each value used as soon as it is made: in this order the fill
	 * needs no spill. Scalars, not pair[h], so the pair stays in registers. */
	__asm__("" : "+r"(gpa));
	const gpamm_pte_t e0 = pair[0], e1 = pair[1];
	const bool odd = (gpa >> t->page_shift) & 1;

	e = odd ? e1 : e0;
	if (unlikely(!(e & GPAMM_PTE_VALID) || (write && !(e & GPAMM_PTE_DIRTY))))
		return NULL;
	pos = tlb_pos(t, gpa);
	t->tag[pos.set][slot] = tlb_pair_tag(pos.vppn, pte_half_state(e0), pte_half_state(e1));
	/* linear frames: the host address is the entry's address field plus
	 * an offset (a half without V gets a meaningless one, never read) */
	const uint64_t amask = ((1ULL << GPAMM_PTE_PFN_END) - 1) & f->pm;
	const intptr_t off = vm->host->pfn_linear_off;
	uint8_t *h0 = (uint8_t *)(uintptr_t)((intptr_t)(e0 & amask) + off);
	uint8_t *h1 = (uint8_t *)(uintptr_t)((intptr_t)(e1 & amask) + off);

	t->hptr[pos.set][slot][0] = h0;
	t->hptr[pos.set][slot][1] = h1;
	(*misses)++;
	return wl_front(f, gpa, e & GPAMM_PTE_DIRTY, odd ? h1 : h0);
}

/* The workload loops' 8-aligned accesses, with the front copy kept by the loop. */
static ALWAYS_INLINE void wl_store8(struct gpamm_vcpu *v, struct front *f, uint64_t gpa,
				    uint64_t val, uint64_t *misses)
{
	uint8_t *p;

	if (likely(front_ok(v, f, gpa, true))) {
		__atomic_store_n((uint64_t *)front_ptr(f, gpa), val, __ATOMIC_RELAXED);
	} else if (likely((p = wl_refill(v, f, gpa, true, misses)) != NULL)) {
		__atomic_store_n((uint64_t *)p, val, __ATOMIC_RELAXED);
	} else {
		wl_flush_misses(v, misses);
		access_slow(v, gpa, 8, true, val);
		front_load(v, f);
	}
}

static ALWAYS_INLINE uint64_t wl_load8(struct gpamm_vcpu *v, struct front *f, uint64_t gpa,
				       uint64_t *misses)
{
	const uint8_t *p;
	uint64_t val;

	if (likely(front_ok(v, f, gpa, false)))
		return __atomic_load_n((const uint64_t *)front_ptr(f, gpa), __ATOMIC_RELAXED);
	if (likely((p = wl_refill(v, f, gpa, false, misses)) != NULL))
		return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
	wl_flush_misses(v, misses);
	val = access_slow(v, gpa, 8, false, 0);
	front_load(v, f);
	return val;
}

static void access_split(struct gpamm_vcpu *v, uint64_t gpa, uint8_t *buf, size_t len, bool write)
{
	const uint64_t psz = v->vm->geom.page_size;

	while (len) {
		size_t chunk = psz - (gpa & (psz - 1));
		enum xlate_exit ex = XL_OK;
		uint8_t *p;

		if (chunk > len)
			chunk = len;
		p = xlate(v, gpa, write, &ex);
		if (p) {
			if (write)
				guest_mem_copy(p, buf, chunk);
			else
				guest_mem_copy(buf, p, chunk);
		} else if (ex == XL_STALE) {
			/* dropped (counted): nothing is written, a load reads zeros */
			if (!write)
				memset(buf, 0, chunk);
		} else {
			/* Not RAM: go on 8 bytes (or less) at a time, as MMIO does. */
			chunk = chunk > 8 ? 8 : chunk;
			if (ex == XL_MMIO || ex == XL_MEMORY) {
				uint64_t val = 0;
				if (write)
					memcpy(&val, buf, chunk);
				if (!access_exit(v, ex, gpa, (unsigned)chunk, write, &val))
					continue;
				if (!write)
					memcpy(buf, &val, chunk);
			}
		}
		gpa += chunk;
		buf += chunk;
		len -= chunk;
	}
}

uint64_t gpamm_guest_read(struct gpamm_vcpu *v, uint64_t gpa, unsigned size)
{
	uint64_t val = 0;

	if (size == 0 || size > 8)
		return 0;
	if (likely((gpa & (v->vm->geom.page_size - 1)) + size <= v->vm->geom.page_size))
		val = access_load(v, gpa, size);
	else
		access_split(v, gpa, (uint8_t *)&val, size, false);
	return val;
}

void gpamm_guest_write(struct gpamm_vcpu *v, uint64_t gpa, unsigned size, uint64_t val)
{
	if (size == 0 || size > 8)
		return;
	if (likely((gpa & (v->vm->geom.page_size - 1)) + size <= v->vm->geom.page_size))
		access_store(v, gpa, size, val);
	else
		access_split(v, gpa, (uint8_t *)&val, size, true);
}

void gpamm_guest_read_buf(struct gpamm_vcpu *v, uint64_t gpa, void *buf, size_t len)
{
	access_split(v, gpa, buf, len, false);
}

void gpamm_guest_write_buf(struct gpamm_vcpu *v, uint64_t gpa, const void *buf, size_t len)
{
	access_split(v, gpa, (uint8_t *)buf, len, true);
}

void gpamm_guest_exit(struct gpamm_vcpu *v)
{
	vcpu_exit(v, GPAMM_EXIT_REQUEST);
}

/* ---- built-in workload ------------------------------------------------------ */

static inline uint64_t wl_rand(uint64_t *s)
{
	/* xorshift64*: cheap enough to sit in the access loop */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/*
 * A random value below @n from the high bits of @r: a multiply, not a
 * division (a 64-bit division costs more than the rest of a TLB hit).
 */
static inline uint64_t wl_below(uint64_t r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

/*
 * One pass of the workload. The common shapes (all stores, all loads, at
 * 8-byte aligned addresses) get loops of their own, with the counters in
 * locals, so that what is measured is the access and not the workload.
 */
static ALWAYS_INLINE void wl_pass(struct gpamm_vcpu *v, const struct gpamm_workload *w,
				  uint64_t pass, uint64_t n, uint64_t stride, uint64_t *seed,
				  int kind, bool random, uint64_t *writes)
{
	const uint64_t base = w->gpa, tag = pass << 48;
	const unsigned pct = w->write_percent;
	uint64_t s = *seed, wr = 0, sum = 0, misses = 0;
	struct front f;

	/* As few values live across the loop as possible: every one that does
	 * not fit in a register is a store on the miss path. */
	front_load(v, &f);
	/* sequential: the address is the loop variable; random: a count, and
	 * the 8-aligned shapes draw each address one access early */
	const bool ahead = random && kind >= 0;
	uint64_t next = ahead ? base + wl_below(wl_rand(&s), n) * stride : 0;

	for (uint64_t gpa = base, i = 0; random ? i < n : gpa < base + n * stride;
	     random ? i++ : (gpa += stride)) {
		uint64_t at = ahead ? next : random ? base + wl_below(wl_rand(&s), n) * stride : gpa;
		bool write = kind == 1 ? true : kind == 0 ? false : wl_rand(&s) % 100 < pct;

		if (ahead && i + 1 < n) {
			next = base + wl_below(wl_rand(&s), n) * stride;
			wl_prefetch(v, next);
		}

		/* kind 0 and 1: the caller made sure every address is 8-aligned */
		if (kind == 1)
			wl_store8(v, &f, at, at ^ tag, &misses);
		else if (kind == 0)
			sum += wl_load8(v, &f, at, &misses);
		else if (write)
			gpamm_guest_write(v, at, 1, at ^ tag);
		else
			(void)gpamm_guest_read(v, at, 1);
		if (kind < 0)
			wr += write;
	}
	if (kind == 1)
		wr = n;
	wl_flush_misses(v, &misses);
	*seed = s;
	*writes += wr;
	__asm__ __volatile__("" : : "r"(sum)); /* the loads are real */
}

int gpamm_workload_guest(struct gpamm_vcpu *v, void *arg)
{
	struct gpamm_workload *w = arg;
	const uint64_t stride = w->stride ? w->stride : v->vm->geom.page_size;
	const uint64_t n = w->size / stride;
	uint64_t s = w->seed ? w->seed : 0x9e3779b97f4a7c15ULL;
	const bool aligned = !(w->gpa & 7) && !(stride & 7);

	if (!n)
		return -EINVAL;
	for (uint64_t pass = w->passes_done; !w->passes || pass < w->passes; pass++) {
		uint64_t writes = 0;

		const bool rnd = w->order == GPAMM_ORDER_RANDOM;
		const int kind = !aligned ? -1 : w->write_percent >= 100 ? 1 :
				 w->write_percent == 0 ? 0 : -1;

		/* each shape its own loop, so nothing is decided per access */
		if (kind == 1 && !rnd)
			wl_pass(v, w, pass, n, stride, &s, 1, false, &writes);
		else if (kind == 1)
			wl_pass(v, w, pass, n, stride, &s, 1, true, &writes);
		else if (kind == 0 && !rnd)
			wl_pass(v, w, pass, n, stride, &s, 0, false, &writes);
		else if (kind == 0)
			wl_pass(v, w, pass, n, stride, &s, 0, true, &writes);
		else
			wl_pass(v, w, pass, n, stride, &s, -1, rnd, &writes);
		w->writes += writes;
		w->accesses += n;
		w->passes_done = pass + 1;
	}
	return 0;
}

/* ---- vCPU life cycle and the run loop ------------------------------------ */

int gpamm_vcpu_create(struct gpamm_vm *vm, unsigned id, struct gpamm_vcpu **out)
{
	struct gpamm_vcpu *v;
	int ret = 0;

	if (!vm || !out || id >= vm->max_vcpus)
		return -EINVAL;
	pthread_mutex_lock(&vm->vcpus_lock);
	for (unsigned i = 0; i < atomic_load(&vm->nr_vcpus); i++) {
		if (vm->vcpus[i]->id == id) {
			ret = -EEXIST;
			goto out;
		}
	}
	v = aligned_alloc(64, (sizeof(*v) + 63) & ~(size_t)63);
	if (v)
		memset(v, 0, sizeof(*v));
	if (!v) {
		ret = -ENOMEM;
		goto out;
	}
	gpamm_tlb_init(&v->tlb, vm->geom.page_shift);
	v->vm = vm;
	v->id = id;
	v->checking = vm->host->checking && vm->host->ops->check_access;
	v->tlb.checking = v->checking;
	v->fast_refill = !v->checking && vm->host->pfn_linear;
	gpamm_memcache_init(&v->mc, &vm->mm);
	if (gpamm_dirty_ring_alloc(v)) {
		free(v);
		ret = -ENOMEM;
		goto out;
	}
	/* one slot per vCPU ever created: ids are unique and below max_vcpus */
	ret = mmu_rwlock_add_reader(&vm->mmu_lock);
	GPAMM_BUG_ON(ret < 0);
	v->mmu_slot = (unsigned)ret;
	ret = 0;
	vm->vcpus[atomic_load(&vm->nr_vcpus)] = v;
	atomic_fetch_add(&vm->nr_vcpus, 1);
	atomic_fetch_add(&gpamm_live_vcpus, 1);
	*out = v;
out:
	pthread_mutex_unlock(&vm->vcpus_lock);
	return ret;
}

static void vcpu_tsan_fiber_drop(struct gpamm_vcpu *v)
{
#ifdef GPAMM_TSAN
	if (v->tsan_fiber)
		__tsan_destroy_fiber(v->tsan_fiber);
#endif
	v->tsan_fiber = NULL;
}

static void vcpu_free_stack(struct gpamm_vcpu *v)
{
	vcpu_tsan_fiber_drop(v);
	if (v->stack)
		munmap((uint8_t *)v->stack - 4096, v->stack_size + 4096);
	v->stack = NULL;
}

void gpamm_vcpu_free(struct gpamm_vcpu *v)
{
	gpamm_memcache_release(&v->mc);
	gpamm_dirty_ring_free(v);
	vcpu_free_stack(v);
	free(v);
	atomic_fetch_sub(&gpamm_live_vcpus, 1);
}

/* No stack can be larger than a 47-bit user address space; checked before
 * the size is rounded up and the guard page added, which could wrap. */
#define MAX_GUEST_STACK (1ULL << 47)
/* Room for the deepest path a guest access takes (a fault, the host's
 * get_page, lazy symbol binding, sanitizer frames): smaller sizes are
 * raised to this. */
#define MIN_GUEST_STACK (64u << 10)

int gpamm_vcpu_set_guest(struct gpamm_vcpu *v, gpamm_guest_fn fn, void *arg, size_t stack_size)
{
	uint8_t *m;

	if (!v || !fn)
		return -EINVAL;
	if (v->gstate == GUEST_RUNNING)
		return -EBUSY;
	if (!stack_size)
		stack_size = DEFAULT_GUEST_STACK;
	if (stack_size > MAX_GUEST_STACK)
		return -ENOMEM;
	if (stack_size < MIN_GUEST_STACK)
		stack_size = MIN_GUEST_STACK;
	stack_size = (stack_size + 4095) & ~(size_t)4095;
	/* Prepare, then commit: the old stack goes only once the new one exists. */
	if (!v->stack || v->stack_size != stack_size) {
		/* one guard page below the stack */
		m = mmap(NULL, stack_size + 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			return -ENOMEM;
		mprotect(m, 4096, PROT_NONE);
		vcpu_free_stack(v);
		v->stack = m + 4096;
		v->stack_size = stack_size;
	}
	v->guest_fn = fn;
	v->guest_arg = arg;
	v->gstate = GUEST_READY;
	return 0;
}

/* The vCPU whose guest code runs on this thread (NULL outside guest code). */
static __thread struct gpamm_vcpu *thread_guest;

struct gpamm_vcpu *gpamm_guest_call_begin(void)
{
	struct gpamm_vcpu *v = thread_guest;

	if (!v || atomic_load_explicit(&v->mode, memory_order_relaxed) != IN_GUEST_MODE)
		return NULL;
	vcpu_leave_guest(v);
	return v;
}

void gpamm_guest_call_end(struct gpamm_vcpu *v)
{
	if (v)
		vcpu_enter_guest(v); /* takes the flushes the call asked for */
}

int gpamm_vcpu_run(struct gpamm_vcpu *v)
{
	struct gpamm_vcpu *outer;
	struct gpamm_run *run;
	int idle = 0;

	if (!v)
		return -EINVAL;
	if (v->gstate != GUEST_READY && v->gstate != GUEST_RUNNING)
		return -EINVAL;
	/* 0 -> 1; another run holds 1, a VM destroy in progress 2 */
	if (!atomic_compare_exchange_strong(&v->running, &idle, 1))
		return -EBUSY;
	if (vm_is_dead(v->vm)) {
		atomic_store(&v->running, 0);
		return -EIO;
	}
	run = &v->run;
	run->exit_reason = GPAMM_EXIT_NONE;
	if (run->immediate_exit || (atomic_load(&v->requests) & REQ_EXIT)) {
		atomic_fetch_and(&v->requests, ~REQ_EXIT);
		run->exit_reason = GPAMM_EXIT_REQUEST;
		goto out;
	}
	if (gpamm_dirty_ring_soft_full(v)) {
		atomic_fetch_and(&v->requests, ~REQ_RING_FULL);
		run->exit_reason = GPAMM_EXIT_DIRTY_RING_FULL;
		goto out;
	}
	if (v->gstate == GUEST_READY) {
		uintptr_t p = (uintptr_t)v;
		getcontext(&v->guest_uc);
		v->guest_uc.uc_stack.ss_sp = v->stack;
		v->guest_uc.uc_stack.ss_size = v->stack_size;
		v->guest_uc.uc_link = NULL;
		makecontext(&v->guest_uc, (void (*)(void))guest_trampoline, 2,
			    (unsigned)(p >> 32), (unsigned)(p & 0xffffffffu));
		vcpu_tsan_fiber_drop(v); /* a finished guest's */
#ifdef GPAMM_TSAN
		v->tsan_fiber = __tsan_create_fiber(0);
#endif
		v->gstate = GUEST_RUNNING;
	}
	outer = thread_guest;
	thread_guest = v;
	vcpu_enter_guest(v);
	switch_to_guest(v);
	/* the guest left guest mode before switching back */
	thread_guest = outer;
out:
	atomic_store(&v->running, 0);
	return 0;
}

struct gpamm_run *gpamm_vcpu_run_state(struct gpamm_vcpu *v)
{
	return &v->run;
}

void gpamm_vcpu_kick(struct gpamm_vcpu *v)
{
	if (!v)
		return;
	atomic_fetch_or(&v->requests, REQ_EXIT);
}

/* The register block is the vCPU's while no run is in progress: claim it
 * as a run does (KVM's vcpu->mutex), copy, give it back. */
static int regs_copy(struct gpamm_vcpu *v, struct gpamm_regs *out, const struct gpamm_regs *in)
{
	int idle = 0;

	if (!v || !(out || in))
		return -EINVAL;
	if (!atomic_compare_exchange_strong(&v->running, &idle, 1))
		return -EBUSY;
	if (out)
		*out = v->regs;
	else
		v->regs = *in;
	atomic_store(&v->running, 0);
	return 0;
}

int gpamm_vcpu_get_regs(struct gpamm_vcpu *v, struct gpamm_regs *regs)
{
	return regs ? regs_copy(v, regs, NULL) : -EINVAL;
}

int gpamm_vcpu_set_regs(struct gpamm_vcpu *v, const struct gpamm_regs *regs)
{
	return regs ? regs_copy(v, NULL, regs) : -EINVAL;
}

struct gpamm_regs *gpamm_vcpu_regs(struct gpamm_vcpu *v)
{
	return v ? &v->regs : NULL;
}

unsigned gpamm_vcpu_id(const struct gpamm_vcpu *v)
{
	return v ? v->id : 0;
}

struct gpamm_vm *gpamm_vcpu_vm(const struct gpamm_vcpu *v)
{
	return v ? v->vm : NULL;
}
