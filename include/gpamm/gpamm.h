/* SPDX-License-Identifier: MIT */
/*
 * gpamm/gpamm.h - the VMM-facing API: VMs, memslots, vCPUs and their exits,
 * guest memory accesses, and statistics. Names and semantics follow KVM's
 * UAPI (KVM_SET_USER_MEMORY_REGION, KVM_RUN and struct kvm_run) so that a
 * VMM author feels at home.
 *
 * Errors: every fallible call returns 0 or a negative errno whose meaning is
 * listed at each function (and in docs/errors.md); on error nothing changed.
 *
 * Threads: a vCPU is run by one thread at a time (like KVM_RUN). The guest
 * code of a vCPU runs on that thread, inside gpamm_vcpu_run(), on a stack of
 * its own; it must not block except inside gpamm calls, because a remote TLB
 * flush waits for every vCPU in guest mode to reach its next memory access.
 */
#ifndef GPAMM_GPAMM_H
#define GPAMM_GPAMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpamm/geom.h"
#include "gpamm/host.h"
#include "gpamm/pte.h"

struct gpamm_vm;
struct gpamm_vcpu;

/* ---- VM ---------------------------------------------------------------- */

/* gpamm_vm_config.flags */
#define GPAMM_VM_PTW (1u << 0) /* emulate a walker with PTW: a write to a WRITE-but-not-DIRTY entry sets DIRTY itself */

#define GPAMM_MAX_VCPUS 256
#define GPAMM_USER_MEM_SLOTS 32764 /* KVM's x86 limit */

struct gpamm_vm_config {
	unsigned page_shift;   /* 12, 14, 16; 0 = 14 */
	unsigned levels;       /* see gpamm_geom_init(); 0 = 3 */
	struct gpamm_host *host; /* required; of the same page shift */
	unsigned max_vcpus;    /* 0 = 64 */
	unsigned flags;
};

/**
 * gpamm_vm_create() - a VM with an empty GPA table.
 * Context: any thread; may sleep.
 * Return: 0 and *@out, -EINVAL (unsupported geometry, no host, host page
 * shift differs, max_vcpus too large, unknown flags), -ENOMEM.
 */
int gpamm_vm_create(const struct gpamm_vm_config *cfg, struct gpamm_vm **out);
/**
 * gpamm_vm_destroy() - remove every translation, release every pin and
 * table page, free every vCPU. No vCPU may be running.
 * Context: any thread; may sleep.
 */
void gpamm_vm_destroy(struct gpamm_vm *vm);
const struct gpamm_geom *gpamm_vm_geom(const struct gpamm_vm *vm);
struct gpamm_host *gpamm_vm_host(const struct gpamm_vm *vm);

/* ---- memslots (KVM_SET_USER_MEMORY_REGION) ------------------------------ */

#define GPAMM_MEM_LOG_DIRTY_PAGES (1u << 0)
#define GPAMM_MEM_READONLY        (1u << 1)

struct gpamm_userspace_memory_region {
	uint32_t slot;
	uint32_t flags;
	uint64_t guest_phys_addr;
	uint64_t memory_size;   /* bytes; 0 deletes the slot */
	uint64_t userspace_addr;
};

/**
 * gpamm_vm_set_memory_region() - create, delete (size 0), move (new GPA) or
 * change the flags of a slot, as KVM does. Old translations of a deleted or
 * moved slot are gone (and their TLB entries flushed) when this returns;
 * turning dirty logging on write-protects the slot.
 * Context: any thread (VMM); serialised with other memslot changes.
 * Return: 0, or
 *  -EINVAL: unknown flags; slot id >= GPAMM_USER_MEM_SLOTS; GPA, size or HVA
 *           not page aligned; GPA + size or HVA + size overflows; delete of a
 *           slot that does not exist; change of size, HVA or READONLY of an
 *           existing slot;
 *  -EEXIST: the new range overlaps another slot;
 *  -EFAULT: the range lies beyond the VM's GPA space;
 *  -ENOMEM.
 */
int gpamm_vm_set_memory_region(struct gpamm_vm *vm,
			       const struct gpamm_userspace_memory_region *r);

/* ---- vCPUs and their exits (KVM_RUN, struct kvm_run) ------------------- */

enum gpamm_exit_reason {
	GPAMM_EXIT_NONE = 0,
	GPAMM_EXIT_MMIO,          /* no slot, or a write to a read-only slot */
	GPAMM_EXIT_MEMORY_FAULT,  /* the host cannot provide the page */
	GPAMM_EXIT_REQUEST,       /* the VMM asked the vCPU to stop (gpamm_vcpu_kick) */
	GPAMM_EXIT_DONE,          /* the guest program returned */
	GPAMM_EXIT_DIRTY_RING_FULL,
	GPAMM_EXIT_INTERNAL_ERROR,
};

/* memory_fault.flags */
#define GPAMM_MEMORY_EXIT_FLAG_WRITE (1u << 0)

struct gpamm_run {
	uint32_t exit_reason;
	union {
		/* MMIO: for a read the VMM fills data[] before the next run */
		struct {
			uint64_t phys_addr;
			uint8_t data[8];
			uint32_t len;
			uint8_t is_write;
		} mmio;
		struct {
			uint64_t flags;
			uint64_t gpa;
			uint64_t size;
			int32_t error; /* the host's errno */
		} memory_fault;
		struct {
			int32_t suberror;
		} internal;
	};
	int guest_ret;           /* GPAMM_EXIT_DONE: what the guest program returned */
	bool immediate_exit;     /* like kvm_run.immediate_exit */
};

/** A guest program: runs on the vCPU thread, accesses memory through @vcpu. */
typedef int (*gpamm_guest_fn)(struct gpamm_vcpu *vcpu, void *arg);

/**
 * gpamm_vcpu_create() - vCPU @id (0 <= id < max_vcpus, unused).
 * Context: VMM thread. Return: 0, -EINVAL (bad id), -EEXIST (id in use), -ENOMEM.
 */
int gpamm_vcpu_create(struct gpamm_vm *vm, unsigned id, struct gpamm_vcpu **out);
/**
 * gpamm_vcpu_set_guest() - the program the vCPU runs from its next run on
 * (replaces a finished or never-started program; -EBUSY if one is mid-run).
 * @stack_size: 0 for the default (256 KiB).
 */
int gpamm_vcpu_set_guest(struct gpamm_vcpu *vcpu, gpamm_guest_fn fn, void *arg,
			 size_t stack_size);
/**
 * gpamm_vcpu_run() - run the guest until it exits; the reason is in
 * gpamm_vcpu_run_state(vcpu)->exit_reason. An access that exited (MMIO,
 * memory fault) is resumed where it stopped: an MMIO read returns the data
 * the VMM put in run->mmio.data; a memory-fault access is retried.
 * Context: the vCPU's thread (one at a time).
 * Return: 0, -EINVAL (no guest program set), -EBUSY (run on two threads).
 */
int gpamm_vcpu_run(struct gpamm_vcpu *vcpu);
struct gpamm_run *gpamm_vcpu_run_state(struct gpamm_vcpu *vcpu);
/** gpamm_vcpu_kick() - make a running vCPU exit with GPAMM_EXIT_REQUEST at its next access. Context: any thread. */
void gpamm_vcpu_kick(struct gpamm_vcpu *vcpu);
unsigned gpamm_vcpu_id(const struct gpamm_vcpu *vcpu);
struct gpamm_vm *gpamm_vcpu_vm(const struct gpamm_vcpu *vcpu);

/* ---- guest accesses (from guest code, on the vCPU thread) -------------- */

/** gpamm_guest_read() - load @size (1, 2, 4 or 8) bytes at @gpa; little-endian; may cross a page. */
uint64_t gpamm_guest_read(struct gpamm_vcpu *vcpu, uint64_t gpa, unsigned size);
/** gpamm_guest_write() - store the low @size bytes of @val at @gpa. */
void gpamm_guest_write(struct gpamm_vcpu *vcpu, uint64_t gpa, unsigned size, uint64_t val);
void gpamm_guest_read_buf(struct gpamm_vcpu *vcpu, uint64_t gpa, void *buf, size_t len);
void gpamm_guest_write_buf(struct gpamm_vcpu *vcpu, uint64_t gpa, const void *buf, size_t len);
/** gpamm_guest_exit() - leave the guest with GPAMM_EXIT_REQUEST (a guest-initiated exit, like a hypercall). */
void gpamm_guest_exit(struct gpamm_vcpu *vcpu);

/* ---- built-in workloads (the KVM selftests' memstress) ------------------ */

enum gpamm_access_order { GPAMM_ORDER_SEQUENTIAL, GPAMM_ORDER_RANDOM };

struct gpamm_workload {
	uint64_t gpa;            /* this vCPU's region */
	uint64_t size;
	unsigned write_percent;  /* 0..100 */
	enum gpamm_access_order order;
	uint64_t passes;         /* passes over the region; 0 = until kicked */
	uint64_t seed;           /* random order / write choice */
	uint64_t stride;         /* bytes between accesses; 0 = one per page */
	/* filled by the workload */
	uint64_t accesses, writes, passes_done;
};

/** gpamm_workload_guest - a gpamm_guest_fn running the struct gpamm_workload given as arg. */
int gpamm_workload_guest(struct gpamm_vcpu *vcpu, void *arg);

/* ---- statistics and accounting ----------------------------------------- */

struct gpamm_vm_stats {
	uint64_t table_pages;     /* live GPA table pages, root included */
	uint64_t pinned;          /* host pins held by the MMU right now */
	uint64_t faults, fast_faults, slow_faults, fault_retries, mmio_exits, memory_fault_exits;
	uint64_t remote_flushes, gpa_flushes;
	uint64_t tlb_misses;      /* each one is a walk; hits are not counted: the hit path stays lean */
	uint64_t slots;
	uint64_t vcpus;
	uint64_t threads;         /* threads the library started and has not joined */
	uint64_t stale_accesses;  /* from the host's checking mode */
};

void gpamm_vm_stats(struct gpamm_vm *vm, struct gpamm_vm_stats *st);
/** gpamm_live_objects() - process-wide live VMs, vCPUs, table pools and library threads; all 0 after everything is destroyed. */
struct gpamm_live { uint64_t vms, vcpus, tpools, threads; };
void gpamm_live_objects(struct gpamm_live *l);

/* ---- TLB (exposed for tests and tools) ---------------------------------- */

/**
 * gpamm_vm_flush_remote_tlbs() - every vCPU drops every translation; returns
 * when no vCPU can still use one made before the call (contract 1).
 * Context: any thread except a vCPU thread inside guest code.
 */
void gpamm_vm_flush_remote_tlbs(struct gpamm_vm *vm);

#endif
