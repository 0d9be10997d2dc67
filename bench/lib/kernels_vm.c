// SPDX-License-Identifier: MIT
/*
 * Guest-access measurement kernels: a timed workload run on a vCPU, and
 * the native loops it is measured against (see kernels_vm.h). The native
 * loops are kept out of line and, for the scalar ones, out of the
 * vectoriser's reach, so that they do what the guest does: one 8-byte
 * store at a time.
 */
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "gpamm/gpamm.h"
#include "kernels_vm.h"
#include "vm.h" /* the memslot lookup is measured directly (src/memslot.h) */


/* The workload's seed when it is given none (src/vcpu.c), so both sides agree. */
#define WL_DEFAULT_SEED 0x9e3779b97f4a7c15ULL

double bk_run_workload(struct gpamm_vcpu *v, struct gpamm_workload *w)
{
	double t0 = now_ns(), t;

	if (gpamm_vcpu_set_guest(v, gpamm_workload_guest, w, 0) || gpamm_vcpu_run(v))
		return -1;
	t = now_ns() - t0;
	if (gpamm_vcpu_run_state(v)->exit_reason != GPAMM_EXIT_DONE ||
	    gpamm_vcpu_run_state(v)->guest_ret)
		return -1;
	return t > 0 ? t : 1;
}

double bk_populate(struct gpamm_vcpu *v, uint64_t gpa, uint64_t len)
{
	struct gpamm_workload w = { .gpa = gpa, .size = len, .write_percent = 100, .passes = 1 };

	return bk_run_workload(v, &w);
}

/* ---- TLB hits ------------------------------------------------------------------- */

BK_SCALAR_FN void bk_native_stores(uint64_t *q, uint64_t words, uint64_t passes)
{
	for (uint64_t p = 0; p < passes; p++) {
		BK_SCALAR_FOR (uint64_t k = 0; k < words; k++)
			q[k] = (k * 8) ^ (p << 48);
		__asm__ __volatile__("" ::: "memory");
	}
}

__attribute__((noinline))
void bk_native_stores_simd(uint64_t *q, uint64_t words, uint64_t passes)
{
	for (uint64_t p = 0; p < passes; p++) {
		for (uint64_t k = 0; k < words; k++)
			q[k] = (k * 8) ^ (p << 48);
		__asm__ __volatile__("" ::: "memory");
	}
}

static uint64_t tlb_misses(struct gpamm_vcpu *v)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(gpamm_vcpu_vm(v), &st);
	return st.tlb_misses;
}

/* The guest side of a measurement: the run's time, accesses and TLB misses. */
static int run_counted(struct gpamm_vcpu *v, struct gpamm_workload *w, struct bk_access *a)
{
	uint64_t m0 = tlb_misses(v);

	a->guest_ns = bk_run_workload(v, w);
	if (a->guest_ns < 0)
		return -1;
	a->tlb_misses = tlb_misses(v) - m0;
	a->accesses = w->accesses;
	return 0;
}

int bk_tlb_hit(struct gpamm_vcpu *v, uint64_t gpa, uint8_t *hva, uint64_t len,
	       uint64_t passes, struct bk_access *a)
{
	struct gpamm_workload w = { .gpa = gpa, .size = len, .write_percent = 100,
				    .passes = passes, .stride = 8 };
	double t0;

	if (run_counted(v, &w, a))
		return -1;
	t0 = now_ns();
	bk_native_stores((uint64_t *)hva, len / 8, passes);
	a->native_ns = now_ns() - t0;
	return 0;
}

/* ---- TLB misses ------------------------------------------------------------------ */

/* The workload's xorshift64*, step for step, so the native loop visits the same pages. */
__attribute__((noinline))
void bk_native_random_stores(uint8_t *mem, uint64_t pages, unsigned page_shift, uint64_t n,
			     uint64_t seed)
{
	uint64_t s = seed ? seed : WL_DEFAULT_SEED;

	for (uint64_t k = 0; k < n; k++) {
		uint64_t idx;

		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		/* as the workload maps a draw to a page: the high half of the
		 * product (a multiply; a division here would slow this side) */
		idx = (uint64_t)(((unsigned __int128)(s * 0x2545f4914f6cdd1dULL) * pages) >> 64);
		*(volatile uint64_t *)(mem + (idx << page_shift)) = idx;
	}
}

int bk_tlb_miss(struct gpamm_vcpu *v, uint64_t gpa, uint8_t *hva, uint64_t len,
		unsigned page_shift, uint64_t passes, uint64_t seed, struct bk_access *a)
{
	const uint64_t pages = len >> page_shift;
	struct gpamm_workload w = { .gpa = gpa, .size = len, .write_percent = 100,
				    .passes = passes, .order = GPAMM_ORDER_RANDOM,
				    .seed = seed };
	double t0;

	if (run_counted(v, &w, a))
		return -1;
	t0 = now_ns();
	bk_native_random_stores(hva, pages, page_shift, passes * pages, seed);
	a->native_ns = now_ns() - t0;
	return 0;
}

BK_SCALAR_FN void bk_native_first_touch(uint8_t *mem, uint64_t len, unsigned page_shift)
{
	BK_SCALAR_FOR (uint64_t p = 0; p < len >> page_shift; p++)
		*(volatile uint64_t *)(mem + (p << page_shift)) = p;
}

uint64_t bk_memslot_lookups(struct gpamm_vm *vm, const uint64_t *gfns, uint64_t n)
{
	struct gpamm_memslots *set;
	uint64_t found = 0;

	gpamm_rcu_read_lock();
	set = atomic_load_explicit(&vm->slots, memory_order_acquire);
	for (uint64_t k = 0; k < n; k++)
		found += gpamm_memslot_lookup(set, gfns[k], false) != NULL;
	gpamm_rcu_read_unlock();
	return found;
}
