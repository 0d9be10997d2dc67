/* SPDX-License-Identifier: MIT */
/*
 * The VM inside the library: its table, locks, memslot set, vCPUs,
 * invalidation state and dirty-log mode, and what mmu.c offers the rest.
 */
#ifndef GPAMM_VM_INT_H
#define GPAMM_VM_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "gpamm/gpamm.h"
#include "gpamm/inject.h"
#include "gpamm/pgtable.h"
#include "memslot.h"
#include "mmulock.h"
#include "rcu.h"
#include "util.h"
#include "vcpu.h"

struct gpamm_vm {
	struct gpamm_geom geom;
	unsigned layout; /* index of the geometry in gpamm_geom_layouts[] */
	struct gpamm_host *host;
	unsigned flags;
	struct gpamm_tpool *tpool;
	struct gpamm_mm_ops mm;
	struct gpamm_pgt pgt;

	struct mmu_rwlock mmu_lock; /* faults read, range operations write (mmulock.h) */
	/* MMU-notifier invalidation state, written under mmu_lock */
	_Atomic uint64_t mmu_invalidate_seq;
	int64_t mmu_invalidate_in_progress;
	uint64_t inv_hva_start, inv_hva_end;

	pthread_mutex_t slots_lock;         /* serialises memslot changes */
	struct gpamm_memslots sets[2];        /* active and inactive (memslot.h) */
	struct gpamm_memslots *_Atomic slots; /* the active set, RCU-published */
	struct gpamm_memslots *slots_locked;  /* the same set, for readers holding mmu_lock */
	struct gpamm_memslot **by_id;        /* under slots_lock */

	struct gpamm_vm *next_vm;   /* the process's VMs (vm.c) */
	pthread_mutex_t vcpus_lock;
	unsigned max_vcpus;
	struct gpamm_vcpu **vcpus;
	_Atomic unsigned nr_vcpus;

	_Atomic uint64_t st_remote_flushes, st_stale_slot;
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

/* mmu.c */
enum fault_result { FAULT_OK = 0, FAULT_MMIO, FAULT_MEMORY };
/* Context: vCPU thread, outside guest mode, no lock held. */
enum fault_result gpamm_mmu_fault(struct gpamm_vcpu *vcpu, uint64_t gpa, bool write);
/* Context: slots_lock held. Unmap [gfn, gfn + npages), remote flush, free tables. */
void gpamm_mmu_flush_gfn_range(struct gpamm_vm *vm, uint64_t gfn, uint64_t npages, bool free_tables);
void gpamm_mmu_wrprotect_gfn_range(struct gpamm_vm *vm, uint64_t gfn, uint64_t npages);
int gpamm_mmu_notifier_attach(struct gpamm_vm *vm);
void gpamm_mmu_notifier_detach(struct gpamm_vm *vm);

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
