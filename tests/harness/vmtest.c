// SPDX-License-Identifier: MIT
/* Helpers shared by the VM-level tests. */
#include "vmtest.h"
#include "tap.h"

#include <string.h>
#include <sys/mman.h>

void *vt_alloc(size_t len, unsigned align_shift)
{
	size_t align = (size_t)1 << align_shift, total = len + align;
	uint8_t *raw = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *p;

	if (raw == MAP_FAILED)
		return NULL;
	p = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	if (p + len < raw + total)
		munmap(p + len, (size_t)(raw + total - (p + len)));
	return p;
}

void vt_free(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

void vt_run_to_done(struct gpamm_vcpu *v, uint64_t mmio_val, unsigned *mmio_exits)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(v);

	for (;;) {
		ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
		if (run->exit_reason == GPAMM_EXIT_DONE)
			return;
		if (run->exit_reason == GPAMM_EXIT_MMIO) {
			if (mmio_exits)
				(*mmio_exits)++;
			if (!run->mmio.is_write)
				memcpy(run->mmio.data, &mmio_val, 8);
			continue;
		}
		tap_diag("unexpected exit %u", run->exit_reason);
		ASSERT(0);
	}
}

struct gpamm_vm *vt_vm_direct(unsigned page_shift, unsigned levels, struct gpamm_host **hostp)
{
	struct gpamm_vm_config cfg = { .page_shift = page_shift, .levels = levels };
	struct gpamm_vm *vm = NULL;

	*hostp = gpamm_host_direct_create(page_shift);
	ASSERT(*hostp);
	cfg.host = *hostp;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	return vm;
}

void vt_host_create(struct vt_host *vh, enum vt_host_kind kind, unsigned page_shift,
		    uint64_t frames)
{
	vh->kind = kind;
	if (kind == VT_DIRECT) {
		vh->h = gpamm_host_direct_create(page_shift);
	} else {
		struct gpamm_sim_config cfg = {
			.page_shift = page_shift, .frames = frames,
			.swap_pages = frames, .checking = true,
		};
		vh->h = gpamm_host_sim_create(&cfg);
	}
	ASSERT(vh->h);
}

uint64_t vt_host_map(struct vt_host *vh, uint64_t len, unsigned sim_flags)
{
	uint64_t hva = 0;

	if (vh->kind == VT_DIRECT) {
		void *p = vt_alloc(len, vh->h->page_shift);
		ASSERT(p);
		return (uintptr_t)p;
	}
	ASSERT_EQ_INT(gpamm_sim_mmap(vh->h, len, sim_flags, &hva), 0);
	return hva;
}

void vt_host_unmap(struct vt_host *vh, uint64_t hva, uint64_t len)
{
	if (vh->kind == VT_DIRECT)
		vt_free((void *)(uintptr_t)hva, len);
	else
		ASSERT_EQ_INT(gpamm_sim_munmap(vh->h, hva, len), 0);
}

void vt_host_read(struct vt_host *vh, uint64_t hva, void *buf, uint64_t len)
{
	if (vh->kind == VT_DIRECT)
		memcpy(buf, (void *)(uintptr_t)hva, len);
	else
		ASSERT_EQ_INT(gpamm_sim_read(vh->h, hva, buf, len), 0);
}

void vt_host_write(struct vt_host *vh, uint64_t hva, const void *buf, uint64_t len)
{
	if (vh->kind == VT_DIRECT)
		memcpy((void *)(uintptr_t)hva, buf, len);
	else
		ASSERT_EQ_INT(gpamm_sim_write(vh->h, hva, buf, len), 0);
}

void vt_host_destroy(struct vt_host *vh)
{
	gpamm_host_destroy(vh->h);
	vh->h = NULL;
}

const char *vt_host_name(enum vt_host_kind kind)
{
	return kind == VT_DIRECT ? "direct" : "sim";
}

int vt_guest_script(struct gpamm_vcpu *v, void *arg)
{
	for (struct vt_op *o = arg; o->kind != VT_OP_END; o++) {
		if (o->kind == VT_OP_READ)
			o->val = gpamm_guest_read(v, o->gpa, 8);
		else if (o->kind == VT_OP_WRITE)
			gpamm_guest_write(v, o->gpa, 8, o->val);
		else if (o->kind == VT_OP_EXIT)
			gpamm_guest_exit(v);
	}
	return 0;
}

uint32_t vt_run_once(struct gpamm_vcpu *v, uint8_t mmio_fill)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(v);

	for (;;) {
		int r = gpamm_vcpu_run(v);

		if (r)
			return 1000 + (uint32_t)-r;
		if (run->exit_reason != GPAMM_EXIT_MMIO)
			return run->exit_reason;
		if (!run->mmio.is_write)
			memset(run->mmio.data, mmio_fill, sizeof(run->mmio.data));
	}
}

uint64_t vt_ring_harvest(struct gpamm_vcpu *v, uint64_t *fetch, uint32_t slot, uint64_t npages,
			 uint64_t *bm, uint64_t *foreign)
{
	uint32_t size;
	struct gpamm_dirty_gfn *ring = gpamm_vcpu_dirty_ring(v, &size);
	uint64_t n = 0;

	while (ring) {
		struct gpamm_dirty_gfn *e = &ring[*fetch & (size - 1)];

		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & GPAMM_DIRTY_GFN_F_DIRTY))
			break;
		if (e->slot == slot && e->offset < npages)
			bm[e->offset / 64] |= 1ULL << (e->offset % 64);
		else
			(*foreign)++;
		__atomic_store_n(&e->flags, GPAMM_DIRTY_GFN_F_DIRTY | GPAMM_DIRTY_GFN_F_RESET,
				 __ATOMIC_RELEASE);
		(*fetch)++;
		n++;
	}
	return n;
}
