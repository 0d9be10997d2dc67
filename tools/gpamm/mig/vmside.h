/* SPDX-License-Identifier: MIT */
/*
 * One side of a migration: a sim host, a VM with one memslot of guest RAM,
 * and vCPU threads running the migration workload (guest.h), which the
 * VMM can pause at a stop point (every vCPU out of guest mode), resume and
 * throttle (auto-converge). Both gpamm migrate and gpamm receive use it.
 */
#ifndef GPAMM_MIG_VMSIDE_H
#define GPAMM_MIG_VMSIDE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "gpamm/gpamm.h"
#include "gpamm/host.h"
#include "mig/guest.h"

struct mig_vm_cfg {
	unsigned page_shift, levels, vcpus;
	uint64_t mem;            /* bytes of guest RAM (slot 0) */
	uint64_t gpa;            /* its guest-physical base */
	bool checking;           /* the sim host checks every access */
	uint32_t ring_size;      /* dirty rings (0: none) */
	bool manual_protect;     /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 */
	bool prefault;           /* the host's RAM is faulted in at creation */
	struct gpamm_host *host; /* a sim host made already (mig_vm_host()): used and owned */
};

struct mig_vm {
	struct mig_vm_cfg c;
	uint64_t npages, psz, hva;
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu **vcpu;
	pthread_t *th, throttle_th;
	bool started, throttle_on;
	struct mig_guest_ctl ctl;
	atomic_int stop, vcpu_error, throttle_pct;
	atomic_uint parked, exited; /* at a stop point; gone (finished or failed) */
	_Atomic uint64_t first_stop_ns; /* CLOCK_MONOTONIC of the first vCPU parked (0: none yet) */
	_Atomic uint64_t throttled_ns;  /* sleep imposed by the throttle */
};

uint64_t mig_now_ns(void);
/* The sim host a VM of @mem bytes with @page_shift pages needs (frames for
 * migration targets and copy-on-write, swap). NULL: no memory. */
struct gpamm_host *mig_vm_host(unsigned page_shift, uint64_t mem, bool checking, bool prefault);
/* Host, VM, slot 0 (no logging) and the vCPUs. Return: 0 or -errno (m is then destroyed). */
int mig_vm_create(struct mig_vm *m, const struct mig_vm_cfg *c);
/* Start one thread per vCPU, each running the workload from its register block. */
int mig_vm_start(struct mig_vm *m);
/* Every vCPU parked outside guest mode at a stop point; returns 0, or -EIO when a vCPU failed. */
int mig_vm_pause(struct mig_vm *m);
void mig_vm_resume(struct mig_vm *m);
/* Auto-converge: vCPUs sleep @pct/(100-@pct) of every 10 ms they run (0: off). */
void mig_vm_set_throttle(struct mig_vm *m, int pct);
/* Stop and join the vCPU threads (they finish at their next stop point). */
void mig_vm_join(struct mig_vm *m);
void mig_vm_destroy(struct mig_vm *m);
/* XXH3-64 chained over every page of guest RAM, in order (the VM paused or stopped). */
int mig_vm_hash(struct mig_vm *m, uint64_t *hash);

#endif
