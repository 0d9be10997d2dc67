/* SPDX-License-Identifier: MIT */
/*
 * The guest-access measurement kernels of the access_cost suite of
 * "gpamm bench" (and memslot_perf's lookup): one timed run of the memstress
 * workload on a vCPU, and the native loops a guest access is compared
 * with. A native loop does the same 8-byte stores to the same host memory
 * in the same order as the guest does, only without the translation, so
 * the ratio of the two is what the MMU costs per access.
 *
 * The caller owns the VM, the memory, the repetitions and the reporting:
 * a kernel times one repetition and nothing else. All timing is wall time
 * (CLOCK_MONOTONIC); pin the thread first (common.h).
 *
 * Context: the vCPU's thread (the caller's own: the guest runs on it).
 */
#ifndef GPAMM_BENCH_KERNELS_VM_H
#define GPAMM_BENCH_KERNELS_VM_H

#include <stdint.h>

struct gpamm_vcpu;
struct gpamm_workload;

/* One repetition of a guest access loop and its native twin. */
struct bk_access {
	double guest_ns;     /* whole guest run */
	double native_ns;    /* whole native loop */
	uint64_t accesses;   /* guest accesses; the native loop does as many stores */
	uint64_t tlb_misses; /* guest TLB misses during the guest run */
};

/**
 * bk_run_workload() - run @w on @v until the guest program returns.
 * Return: the elapsed ns, or -1 if the vCPU exited for another reason
 * (gpamm_vcpu_run_state() says which) or could not run.
 */
double bk_run_workload(struct gpamm_vcpu *v, struct gpamm_workload *w);

/**
 * bk_populate() - the first access of every page: one sequential 8-byte
 * store per page of [@gpa, @gpa + @len), each taking the mapping fault.
 * Return: the elapsed ns, or -1 as bk_run_workload().
 */
double bk_populate(struct gpamm_vcpu *v, uint64_t gpa, uint64_t len);

/**
 * bk_tlb_hit() - @passes passes of one 8-byte store per word over the
 * @len bytes at @gpa (few enough pages to stay in the guest TLB), then the
 * native loop over the same host bytes at @hva: scalar stores, as the
 * guest does them one by one (the compiler may not vectorise it).
 * Return: 0, or -1 if the guest run failed.
 */
int bk_tlb_hit(struct gpamm_vcpu *v, uint64_t gpa, uint8_t *hva, uint64_t len,
	       uint64_t passes, struct bk_access *a);

/* The native stores of bk_tlb_hit() alone, scalar or as the compiler vectorises them. */
void bk_native_stores(uint64_t *q, uint64_t words, uint64_t passes);
void bk_native_stores_simd(uint64_t *q, uint64_t words, uint64_t passes);

/**
 * bk_tlb_miss() - @passes passes of one 8-byte store per page at random
 * pages of the @len bytes at @gpa (the workload's random order: as many
 * stores as pages per pass, pages drawn with replacement from @seed), then
 * the native loop storing to the same pages of @hva in the same order.
 * The pages must be mapped already (populated), so no store faults.
 * @page_shift: the guest page size, which is also the native loop's step.
 * Return: 0, or -1 if the guest run failed.
 */
int bk_tlb_miss(struct gpamm_vcpu *v, uint64_t gpa, uint8_t *hva, uint64_t len,
		unsigned page_shift, uint64_t passes, uint64_t seed, struct bk_access *a);

/*
 * The native side of bk_tlb_miss() alone: @n stores, each to the first
 * word of a page of @mem picked as the workload picks it from @seed.
 */
void bk_native_random_stores(uint8_t *mem, uint64_t pages, unsigned page_shift, uint64_t n,
			     uint64_t seed);

/* One 8-byte store to the first word of every page of @len bytes at @mem (a first touch). */
void bk_native_first_touch(uint8_t *mem, uint64_t len, unsigned page_shift);

struct gpamm_vm;

/*
 * bk_memslot_lookups() - the GFN -> memslot lookup of the fault path (the
 * active set's tree, no per-vCPU cache) for each of @n GFNs.
 * Context: any thread; an RCU reader for the duration.
 * Return: how many GFNs found a slot.
 */
uint64_t bk_memslot_lookups(struct gpamm_vm *vm, const uint64_t *gfns, uint64_t n);

#endif
