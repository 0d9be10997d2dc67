/* SPDX-License-Identifier: MIT */
/*
 * gpamm/inject.h - race and fault injection, for tests.
 *
 * Pause points are named places in the production fault path where a test
 * may stop a vCPU thread, so that an interleaving with another vCPU, a host
 * event or a VMM call is forced rather than hoped for. With no hook set a
 * pause point is one predictable, not-taken branch on a field of the VM.
 *
 * Fault injection switches off one step of a protocol, so that a test can
 * show that a checker notices the step missing. Never set in production.
 */
#ifndef GPAMM_INJECT_H
#define GPAMM_INJECT_H

#include <stdbool.h>
#include <stdint.h>

#include "gpamm/gpamm.h"

enum gpamm_pause_point {
	/* slow fault path: the invalidation sequence is sampled, nothing is
	 * pinned, no lock is held */
	GPAMM_PAUSE_FAULT_SEQ,
	/* slow fault path: the host page is pinned, the MMU lock not yet taken */
	GPAMM_PAUSE_FAULT_PINNED,
	/* slow fault path: the MMU lock is held and the retry check passed;
	 * nothing is written yet. The hook must not call into the VM. */
	GPAMM_PAUSE_FAULT_INSTALL,
	/* slow fault path, mmu_lock held for read: a new table is filled and
	 * about to be linked by compare-and-exchange (another fault may link
	 * one at the same place meanwhile) */
	GPAMM_PAUSE_TABLE_LINK,
	/* slow fault path, mmu_lock held for read: the leaf was read and the
	 * entry to install computed; the compare-and-exchange comes next */
	GPAMM_PAUSE_LEAF_INSTALL,
	/* fast fault path (young/dirty), mmu_lock held for read, before the
	 * entry is read and updated */
	GPAMM_PAUSE_FAST,
	/* gpamm_vm_translate(), which walks the table lock-free as the
	 * hardware walker does, in an RCU read-side section: the directory
	 * entries are read down to the leaf table, the leaf is read after the
	 * hook returns. @vcpu is NULL. */
	GPAMM_PAUSE_WALK,
	GPAMM_PAUSE_NR
};

/**
 * typedef gpamm_pause_fn - called at each pause point a vCPU thread passes;
 * it may block (that is the point). @gpa is the faulting address.
 */
typedef void (*gpamm_pause_fn)(void *arg, enum gpamm_pause_point pp, struct gpamm_vcpu *vcpu,
			       uint64_t gpa);

/**
 * gpamm_vm_set_pause_hook() - call @fn (NULL: none) at every pause point.
 * Context: VMM thread, while no vCPU is inside gpamm_vcpu_run().
 * Return: 0, -EINVAL (no VM).
 */
int gpamm_vm_set_pause_hook(struct gpamm_vm *vm, gpamm_pause_fn fn, void *arg);

/* gpamm_vm_inject() flags */
/* DELETE and MOVE of a memslot unmap its range but skip the remote TLB
 * flush: a stale translation survives the call (checking mode must see it). */
#define GPAMM_INJECT_SKIP_SLOT_FLUSH (1u << 0)
/* Tables a range operation unlinked are freed right after its flush,
 * without waiting for an RCU grace period: a lock-free walker still inside
 * one reads freed memory (ASan must see it). */
#define GPAMM_INJECT_NO_GRACE (1u << 1)

/**
 * gpamm_vm_mmu_lock_state() - what mmu_lock is doing now: how many vCPU
 * reader slots are held (*@readers) and whether a writer holds the lock or
 * waits for the readers to leave (*@writer). A test uses it to know that a
 * thread it started is blocked on the lock (not merely slow).
 * Return: 0, -EINVAL (no VM).
 */
int gpamm_vm_mmu_lock_state(struct gpamm_vm *vm, unsigned *readers, bool *writer);

/**
 * gpamm_vm_inject() - switch the given protocol steps off (0: none).
 * Return: 0, -EINVAL (no VM, unknown flag).
 */
int gpamm_vm_inject(struct gpamm_vm *vm, unsigned flags);

#endif
