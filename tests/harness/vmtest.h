/* SPDX-License-Identifier: MIT */
/* Helpers for tests that build VMs: aligned guest RAM, hosts, run loops. */
#ifndef GPAMM_VMTEST_H
#define GPAMM_VMTEST_H

#include <stdint.h>
#include <stddef.h>

#include "gpamm/gpamm.h"

/* Anonymous memory aligned to 1 << align_shift; free with vt_free(). */
void *vt_alloc(size_t len, unsigned align_shift);
void vt_free(void *p, size_t len);

/* Run until the guest program is done; answers MMIO reads with @mmio_val
 * and counts MMIO exits; fails the test on any other exit. */
void vt_run_to_done(struct gpamm_vcpu *v, uint64_t mmio_val, unsigned *mmio_exits);

/* A VM over the direct host; *hostp gets the host to destroy afterwards. */
struct gpamm_vm *vt_vm_direct(unsigned page_shift, unsigned levels, struct gpamm_host **hostp);

/* ---- scripted guests ------------------------------------------------------ */

/* A guest program as data: 8-byte reads and writes, and exits. */
enum vt_op_kind { VT_OP_END, VT_OP_READ, VT_OP_WRITE, VT_OP_EXIT };

struct vt_op {
	enum vt_op_kind kind;
	uint64_t gpa;
	uint64_t val; /* written, or what a read returned */
};

/* A gpamm_guest_fn running the vt_op array @arg in order, up to VT_OP_END;
 * VT_OP_EXIT leaves with GPAMM_EXIT_REQUEST and the next run goes on after it. */
int vt_guest_script(struct gpamm_vcpu *v, void *arg);
/* Run until an exit other than MMIO (MMIO reads get @mmio_fill in every
 * byte); returns the exit reason, or 1000 + errno when a run fails. Any
 * thread: it never ASSERTs. */
uint32_t vt_run_once(struct gpamm_vcpu *v, uint8_t mmio_fill);

/*
 * Harvest @v's dirty ring from *@fetch on, as a VMM does: each entry with
 * DIRTY is collected (its bit set in @bm when it names slot @slot and an
 * offset below @npages; otherwise counted in *@foreign) and marked RESET.
 * Returns the entries harvested; the caller then calls
 * gpamm_vm_reset_dirty_rings().
 */
uint64_t vt_ring_harvest(struct gpamm_vcpu *v, uint64_t *fetch, uint32_t slot, uint64_t npages,
			 uint64_t *bm, uint64_t *foreign);

/* ---- one interface over both hosts, for tests that run on each ---------- */

enum vt_host_kind { VT_DIRECT, VT_SIM };

struct vt_host {
	enum vt_host_kind kind;
	struct gpamm_host *h;
};

void vt_host_create(struct vt_host *vh, enum vt_host_kind kind, unsigned page_shift,
		    uint64_t frames);
/* Guest RAM of @len bytes; returns its HVA (the sim host's flags apply to sim only). */
uint64_t vt_host_map(struct vt_host *vh, uint64_t len, unsigned sim_flags);
void vt_host_unmap(struct vt_host *vh, uint64_t hva, uint64_t len);
void vt_host_read(struct vt_host *vh, uint64_t hva, void *buf, uint64_t len);
void vt_host_write(struct vt_host *vh, uint64_t hva, const void *buf, uint64_t len);
void vt_host_destroy(struct vt_host *vh);
const char *vt_host_name(enum vt_host_kind kind);

#endif
