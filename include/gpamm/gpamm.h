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
 * Guest code may call the sim host's calls (gpamm_sim_*), the host's
 * destroy and gpamm_vm_flush_remote_tlbs(): they leave guest mode for the
 * call, as the exit a real guest takes to reach its host. Other VMM calls
 * belong on VMM threads.
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
/* one fault at a time: every fault takes mmu_lock for write, as the 2023
 * code did (the same code as the parallel mode, to measure side by side) */
#define GPAMM_VM_SERIAL_FAULTS (1u << 1)

#define GPAMM_MAX_VCPUS 256
#define GPAMM_USER_MEM_SLOTS 32767 /* KVM_USER_MEM_SLOTS on LoongArch */
#define GPAMM_MEM_MAX_NR_PAGES ((1ULL << 31) - 1) /* pages in one slot (KVM_MEM_MAX_NR_PAGES) */

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
 * table page, free every vCPU, and let go of the host (which is freed
 * here if its owner destroyed it first).
 * Context: any thread but a vCPU's in guest code; may sleep.
 * Return: 0 (also for a NULL @vm), -EBUSY (a thread is inside
 * gpamm_vcpu_run() of one of its vCPUs; nothing was changed).
 */
int gpamm_vm_destroy(struct gpamm_vm *vm);
const struct gpamm_geom *gpamm_vm_geom(const struct gpamm_vm *vm);
/**
 * gpamm_vm_translate() - the leaf entry that maps @gpa now, and its level
 * (0 for a base page; either out pointer may be NULL).
 * Context: any thread; lock-free (it reads the table as the hardware walker
 * does, so it may run while a fault holds or waits for mmu_lock).
 * Return: 0, -ENOENT (no present entry maps @gpa), -EINVAL (no VM, @gpa
 * beyond the GPA space).
 */
int gpamm_vm_translate(struct gpamm_vm *vm, uint64_t gpa, gpamm_pte_t *pte, unsigned *level);
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
 * change the flags of a slot, as KVM does; at most GPAMM_MEM_MAX_NR_PAGES
 * pages. Old translations of a deleted or
 * moved slot are gone (and their TLB entries flushed) when this returns;
 * turning dirty logging on write-protects the slot.
 * Context: any thread (VMM); serialised with other memslot changes.
 * Return: 0, or
 *  -EINVAL: unknown flags; slot id >= GPAMM_USER_MEM_SLOTS; GPA, size or HVA
 *           not page aligned; GPA + size or HVA + size overflows; more than
 *           GPAMM_MEM_MAX_NR_PAGES pages; delete of a
 *           slot that does not exist; change of size, HVA or READONLY of an
 *           existing slot;
 *  -EEXIST: the new range overlaps another slot;
 *  -EFAULT: the range lies beyond the VM's GPA space;
 *  -EIO:    the host's address space is gone (gpamm_host_destroy());
 *  -ENOMEM.
 */
int gpamm_vm_set_memory_region(struct gpamm_vm *vm,
			       const struct gpamm_userspace_memory_region *r);

/* ---- dirty logging (KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG, dirty ring) -- */

/*
 * Bitmap mode (the default): a slot created or changed with
 * GPAMM_MEM_LOG_DIRTY_PAGES gets a bitmap, one bit per page, bit i of
 * word w for page w * 64 + i of the slot. Turning logging on write-protects
 * the slot, so the next write to each page faults and is logged. A
 * read-only slot may log too: its bitmap exists (GET returns 0) and stays
 * clear, and nothing there is write-protected or ever writable.
 */

/* gpamm_vm_enable_manual_dirty_log_protect() flags (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) */
#define GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE (1u << 0)
#define GPAMM_DIRTY_LOG_INITIALLY_SET         (1u << 1)

/**
 * gpamm_vm_enable_manual_dirty_log_protect() - choose how GET behaves.
 * With MANUAL_PROTECT_ENABLE, GET only reports; CLEAR re-protects exactly
 * the pages it is given. With INITIALLY_SET too, turning logging on sets
 * every bit instead of write-protecting (pages stay writable until CLEAR).
 * 0 turns both off.
 * Context: VMM thread.
 * Return: 0, -EINVAL (unknown flag, INITIALLY_SET without MANUAL_PROTECT).
 */
int gpamm_vm_enable_manual_dirty_log_protect(struct gpamm_vm *vm, unsigned flags);

/**
 * gpamm_vm_get_dirty_log() - copy slot @slot's bitmap to @bitmap
 * (ceil(npages / 64) words). Classic mode also clears what it reported
 * and write-protects those pages, flushing TLBs before it returns.
 * Context: VMM thread; vCPUs may run.
 * Return: 0, -EINVAL (slot id out of range, NULL bitmap), -ENOENT (no
 * such slot, or it does not log), -ENXIO (the VM uses the dirty ring),
 * -EIO (the host's address space is gone).
 */
int gpamm_vm_get_dirty_log(struct gpamm_vm *vm, uint32_t slot, uint64_t *bitmap);

/**
 * gpamm_vm_clear_dirty_log() - for every bit set in @bitmap (bit i is page
 * @first_page + i of the slot), clear that page's dirty bit and
 * write-protect it, 64 pages at a time; TLBs are flushed before it returns.
 * Context: VMM thread; vCPUs may run.
 * Return: 0, -EINVAL (slot id out of range, @first_page not a multiple of
 * 64 -- checked before the slot is looked up, as KVM does --, @num_pages
 * not a multiple of 64 unless the range ends at the end of the slot, range
 * beyond the slot, NULL bitmap), -ENOENT, -ENXIO, -EIO as above.
 */
int gpamm_vm_clear_dirty_log(struct gpamm_vm *vm, uint32_t slot, uint64_t first_page,
			     uint64_t num_pages, const uint64_t *bitmap);

/*
 * Ring mode (KVM_CAP_DIRTY_LOG_RING): instead of bitmaps, each vCPU pushes
 * the pages it dirties onto a ring of its own. The VMM harvests entries
 * whose flags have DIRTY, marks them RESET, and calls
 * gpamm_vm_reset_dirty_rings(), which write-protects those pages again and
 * frees the entries. A vCPU whose ring is nearly full exits with
 * GPAMM_EXIT_DIRTY_RING_FULL and will not run until entries are reset:
 * "nearly full" is entries - GPAMM_DIRTY_RING_RSVD entries pushed and not
 * yet reset. Harvested entries are marked with F_RESET (F_DIRTY may stay).
 */
#define GPAMM_DIRTY_GFN_F_DIRTY (1u << 0)
#define GPAMM_DIRTY_GFN_F_RESET (1u << 1)

struct gpamm_dirty_gfn {
	uint32_t flags;   /* read with acquire, written with release */
	uint32_t slot;
	uint64_t offset;  /* page index within the slot */
};

#define GPAMM_DIRTY_RING_RSVD 64 /* entries kept free: the vCPU exits before it needs them */
#define GPAMM_DIRTY_RING_MAX_ENTRIES 65536 /* KVM_DIRTY_RING_MAX_ENTRIES */

/**
 * gpamm_vm_enable_dirty_ring() - use per-vCPU rings of @entries entries
 * (a power of two, 2 * GPAMM_DIRTY_RING_RSVD .. GPAMM_DIRTY_RING_MAX_ENTRIES)
 * instead of bitmaps.
 * Context: VMM thread, before any vCPU is created and any slot logs.
 * Return: 0, -EINVAL (not a power of two or too small; a ring is already
 * enabled; vCPUs or logging slots exist), -E2BIG (more than
 * GPAMM_DIRTY_RING_MAX_ENTRIES), as KVM's KVM_CAP_DIRTY_LOG_RING.
 */
int gpamm_vm_enable_dirty_ring(struct gpamm_vm *vm, uint32_t entries);
/** gpamm_vcpu_dirty_ring() - the vCPU's ring (KVM's mmap of it); *@entries its size; NULL without ring mode. */
struct gpamm_dirty_gfn *gpamm_vcpu_dirty_ring(struct gpamm_vcpu *vcpu, uint32_t *entries);
/**
 * gpamm_vm_reset_dirty_rings() - on every vCPU's ring, starting where the
 * last reset stopped, write-protect the page of each entry marked RESET
 * and free the entry; stops at the first entry not marked. TLBs are
 * flushed before it returns (whenever an entry was reset).
 * Context: VMM thread; vCPUs may run.
 * Return: the number of entries reset (>= 0), -EINVAL without ring mode
 * (as KVM), -EIO (the host's address space is gone).
 */
int64_t gpamm_vm_reset_dirty_rings(struct gpamm_vm *vm);

/* ---- access tracking (working-set estimation) -------------------------- */

/**
 * gpamm_vm_mark_idle() - make every page of [@gpa, @gpa + @size) old
 * (clear VALID) and flush TLBs, so that the next access to each faults and
 * makes it young again. The flush is skipped only when no TLB can hold an
 * entry for an old page: nothing was young here, and the host has not aged
 * pages without a flush (clear_young) since the last such flush.
 * Context: VMM thread; vCPUs may run.
 * Return: the number of leaf entries that were young (>= 0; a huge leaf
 * counts once), -EINVAL (unaligned, zero size, overflow, beyond the GPA
 * space), -EIO (the host's address space is gone).
 */
int64_t gpamm_vm_mark_idle(struct gpamm_vm *vm, uint64_t gpa, uint64_t size);
/**
 * gpamm_vm_test_young() - which pages of [@gpa, @gpa + @size) were accessed
 * since they were last marked idle (or mapped). @bitmap, if not NULL, gets
 * one bit per page (bit i of word w for page w * 64 + i).
 * Context: any thread.
 * Return: the number of young pages (>= 0), -EINVAL, -EIO as above.
 */
int64_t gpamm_vm_test_young(struct gpamm_vm *vm, uint64_t gpa, uint64_t size, uint64_t *bitmap);

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

/**
 * struct gpamm_regs - a vCPU's register state (LoongArch's general
 * registers and PC), as KVM_GET_REGS / KVM_SET_REGS give it. The library
 * does not interpret it: guest programs keep their state in it (see
 * gpamm_vcpu_regs()), so that a VMM can save it at an exit and load it
 * into another vCPU, in another process, to go on from there.
 */
struct gpamm_regs {
	uint64_t gpr[32];
	uint64_t pc;
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
 * (replaces a finished or never-started program).
 * @stack_size: 0 for the default (256 KiB); less than 64 KiB is raised to
 * 64 KiB (the deepest path of a guest access, a fault into the host, needs it).
 * Return: 0, -EINVAL (no vCPU or function), -EBUSY (a program is mid-run),
 * -ENOMEM (no stack of that size can be mapped). On error the program set
 * before, and its stack, are untouched.
 */
int gpamm_vcpu_set_guest(struct gpamm_vcpu *vcpu, gpamm_guest_fn fn, void *arg,
			 size_t stack_size);
/**
 * gpamm_vcpu_run() - run the guest until it exits; the reason is in
 * gpamm_vcpu_run_state(vcpu)->exit_reason. An access that exited (MMIO,
 * memory fault) is resumed where it stopped: an MMIO read returns the data
 * the VMM put in run->mmio.data; a memory-fault access is retried.
 * Context: the vCPU's thread (one at a time).
 * Return: 0, -EINVAL (no guest program set), -EBUSY (run on two threads,
 * or the VM is being destroyed), -EIO (the host's address space is gone:
 * gpamm_host_destroy() came first; a run in progress then exits with
 * GPAMM_EXIT_MEMORY_FAULT, error -EFAULT, at its next fault).
 */
int gpamm_vcpu_run(struct gpamm_vcpu *vcpu);
struct gpamm_run *gpamm_vcpu_run_state(struct gpamm_vcpu *vcpu);
/** gpamm_vcpu_kick() - make a running vCPU exit with GPAMM_EXIT_REQUEST at its next access. Context: any thread. */
void gpamm_vcpu_kick(struct gpamm_vcpu *vcpu);
/* The vCPU's id and VM (0 and NULL for a NULL vCPU; the calls without an
 * errno do nothing on NULL: kick, flush_remote_tlbs, stats zeroes *st). */
unsigned gpamm_vcpu_id(const struct gpamm_vcpu *vcpu);
struct gpamm_vm *gpamm_vcpu_vm(const struct gpamm_vcpu *vcpu);

/* ---- guest accesses (from guest code, on the vCPU thread) -------------- */

/** gpamm_guest_read() - load @size (1, 2, 4 or 8) bytes at @gpa; little-endian; may cross a page. */
uint64_t gpamm_guest_read(struct gpamm_vcpu *vcpu, uint64_t gpa, unsigned size);
/** gpamm_guest_write() - store the low @size bytes of @val at @gpa. */
void gpamm_guest_write(struct gpamm_vcpu *vcpu, uint64_t gpa, unsigned size, uint64_t val);
void gpamm_guest_read_buf(struct gpamm_vcpu *vcpu, uint64_t gpa, void *buf, size_t len);
void gpamm_guest_write_buf(struct gpamm_vcpu *vcpu, uint64_t gpa, const void *buf, size_t len);
/**
 * gpamm_vcpu_get_regs() / gpamm_vcpu_set_regs() - copy the register block
 * out or in (KVM_GET_REGS / KVM_SET_REGS). Context: outside
 * gpamm_vcpu_run() of this vCPU. Return: 0, -EINVAL (NULL), -EBUSY (the
 * vCPU is running).
 */
int gpamm_vcpu_get_regs(struct gpamm_vcpu *vcpu, struct gpamm_regs *regs);
int gpamm_vcpu_set_regs(struct gpamm_vcpu *vcpu, const struct gpamm_regs *regs);
/** gpamm_vcpu_regs() - from guest code: the running vCPU's own registers. */
struct gpamm_regs *gpamm_vcpu_regs(struct gpamm_vcpu *vcpu);

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
	uint64_t stale_accesses;  /* checking mode: the host's (a dead or moved frame) and the
				   * VM's (GPA -> HVA no longer what the memslots say); each was dropped */
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
