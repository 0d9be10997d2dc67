/* SPDX-License-Identifier: MIT */
/*
 * A vCPU inside the library: its TLB, requests, dirty ring, deferred
 * per-GPA flushes, guest context and statistics.
 */
#ifndef GPAMM_VCPU_INT_H
#define GPAMM_VCPU_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <ucontext.h>

#include "gpamm/gpamm.h"
#include "gpamm/pgtable.h"
#include "guestcall.h"
#include "tlb.h"

enum vcpu_mode { OUTSIDE_GUEST_MODE = 0, IN_GUEST_MODE = 1 };

#define REQ_TLB_FLUSH (1u << 0) /* remote flush: drop everything */
#define REQ_EXIT      (1u << 1) /* kick: exit to the VMM */
#define REQ_RING_FULL (1u << 2) /* own dirty ring is soft-full: exit */
#define REQ_RCU_QS    (1u << 3) /* a grace period waits: leave the read-side section a moment */

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
	unsigned mmu_slot; /* this vCPU's reader slot of mmu_lock */
	bool checking;
	bool fast_refill; /* the workload loops may refill inline (wl_refill) */
	_Atomic uint32_t mode;
	bool rcu_held;     /* in guest mode: inside an RCU read-side section */
	_Atomic uint32_t requests;
	struct tlb tlb;
	_Atomic int running;
	uint64_t gpa_flush[TLB_GPA_QUEUE]; /* deferred per-GPA flushes (local) */
	unsigned gpa_flush_nr;
	bool gpa_flush_all;
	struct gpamm_memcache mc;
	/* the slot of the last slow fault and the set generation it was found
	 * in (KVM's last_used_slot): valid only while that set is active */
	struct gpamm_memslot *last_slot;
	uint64_t last_slot_gen;
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
	void *tsan_fiber, *tsan_host_fiber; /* ThreadSanitizer's view of the two stacks */
	struct gpamm_regs regs; /* the guest program's state (gpamm_vcpu_get_regs) */

	/* statistics, written only by the vCPU thread (relaxed) */
	uint64_t st_tlb_misses, st_faults, st_fast, st_slow,
		 st_retries, st_mmio, st_memfault, st_gpa_flushes;
	int64_t st_pins; /* host pages this vCPU's fault holds pinned now */
};

/* vcpu.c */
void gpamm_vcpu_free(struct gpamm_vcpu *vcpu);
/* Drop this vCPU's TLB entry for @gpa at its next guest entry (local, deferred). */
void gpamm_vcpu_queue_gpa_flush(struct gpamm_vcpu *vcpu, uint64_t gpa);
/* The shootdown: returns when no vCPU of @vm can use a translation removed
 * before the call. Context: VMM/MMU side, any thread not in guest mode. */
void gpamm_flush_remote_tlbs(struct gpamm_vm *vm);

/*
 * A grace period is waited for (synchronize_rcu) or asked for (call_rcu):
 * between begin and end, every vCPU of every VM in guest mode, which is
 * one RCU read-side section, passes a quiescent state at each access (a
 * grace period of liburcu needs two from a long reader). For call_rcu, the
 * callback calls the end. Context: any thread, not in a read-side section.
 */
void gpamm_rcu_wait_begin(void);
void gpamm_rcu_wait_end(void);
/* vm.c: the VMs of the process, for the kick above */
void gpamm_vms_for_each_vcpu(void (*fn)(struct gpamm_vcpu *v));

/* dirty.c */
int gpamm_dirty_ring_alloc(struct gpamm_vcpu *vcpu);
void gpamm_dirty_ring_free(struct gpamm_vcpu *vcpu);
bool gpamm_dirty_ring_soft_full(const struct gpamm_vcpu *vcpu);

#endif
