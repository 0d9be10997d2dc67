// SPDX-License-Identifier: MIT
/*
 * The VM end to end, in all six geometries and on both hosts: guest bytes
 * written through one vCPU read back through another and straight from
 * host memory, across several slots (one at the very top of the GPA space)
 * and across page boundaries; MMIO exits for GPAs without a slot and for
 * writes to a read-only slot, with the right address, size, direction and
 * data; read-only slots never become writable; and after destroy no table
 * page, pin, frame or vCPU is left.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"
#include "vm.h" /* to inspect the GPA table of a VM */

#define NPAGES 8

struct layout {
	uint64_t psz;
	uint64_t gpa[3];   /* slot 0, slot 1 (top of the space), slot 2 (read-only) */
	uint64_t size;     /* bytes per slot */
	uint64_t hole;     /* a GPA with no slot */
};

struct script {
	const struct layout *L;
	int phase;         /* 0: writer, 1: reader */
	uint64_t errors;
	uint64_t ro_read;
};

/* The byte a given GPA should hold after the writer ran. */
static uint8_t pattern(uint64_t gpa)
{
	uint64_t x = gpa * 0x9e3779b97f4a7c15ULL;
	return (uint8_t)(x >> 56);
}

static int guest_writer(struct gpamm_vcpu *v, void *arg)
{
	struct script *s = arg;
	const struct layout *L = s->L;
	uint8_t buf[64];

	for (int sl = 0; sl < 2; sl++) {
		/* 8-byte stores on every page, then a buffer crossing each page boundary */
		for (uint64_t off = 0; off < L->size; off += L->psz / 2) {
			uint64_t gpa = L->gpa[sl] + off, val = 0;
			for (int b = 0; b < 8; b++)
				val |= (uint64_t)pattern(gpa + b) << (8 * b);
			gpamm_guest_write(v, gpa, 8, val);
		}
		for (uint64_t off = L->psz - 32; off + 64 <= L->size; off += L->psz) {
			uint64_t gpa = L->gpa[sl] + off;
			for (int b = 0; b < 64; b++)
				buf[b] = pattern(gpa + b);
			gpamm_guest_write_buf(v, gpa, buf, sizeof(buf));
		}
		/* an unaligned 4-byte store that straddles two pages */
		{
			uint64_t gpa = L->gpa[sl] + L->psz - 2, val = 0;
			for (int b = 0; b < 4; b++)
				val |= (uint64_t)pattern(gpa + b) << (8 * b);
			gpamm_guest_write(v, gpa, 4, val);
		}
	}
	return 0;
}

static int guest_reader(struct gpamm_vcpu *v, void *arg)
{
	struct script *s = arg;
	const struct layout *L = s->L;
	uint8_t buf[256];

	for (int sl = 0; sl < 2; sl++) {
		for (uint64_t off = 0; off < L->size; off += L->psz / 2) {
			uint64_t gpa = L->gpa[sl] + off;
			uint64_t got = gpamm_guest_read(v, gpa, 8);
			for (int b = 0; b < 8; b++)
				if ((uint8_t)(got >> (8 * b)) != pattern(gpa + b))
					s->errors++;
		}
		for (uint64_t off = L->psz - 128; off + 256 <= L->size; off += L->psz) {
			uint64_t gpa = L->gpa[sl] + off;
			gpamm_guest_read_buf(v, gpa, buf, sizeof(buf));
			for (int b = 96; b < 160; b++) /* the part the writer's buffers covered */
				if (buf[b] != pattern(gpa + b))
					s->errors++;
		}
	}
	s->ro_read = gpamm_guest_read(v, L->gpa[2] + 8, 8);
	return 0;
}

/* Writes to the read-only slot and to the hole: all must exit as MMIO. */
static int guest_mmio(struct gpamm_vcpu *v, void *arg)
{
	struct script *s = arg;
	const struct layout *L = s->L;

	gpamm_guest_write(v, L->gpa[2] + 16, 4, 0xa1b2c3d4);
	gpamm_guest_write(v, L->hole + 3, 2, 0xbeef);
	s->ro_read = gpamm_guest_read(v, L->hole, 8); /* answered by the VMM */
	gpamm_guest_write(v, L->gpa[2] + 16, 8, 0x0102030405060708ULL);
	return 0;
}

struct mmio_expect {
	uint64_t gpa;
	uint32_t len;
	uint8_t is_write;
	uint64_t data;
};

static void run_mmio_script(struct gpamm_vcpu *v, const struct mmio_expect *exp, unsigned n)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	unsigned i = 0;

	for (;;) {
		ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
		if (run->exit_reason == GPAMM_EXIT_DONE)
			break;
		ASSERT_EQ(run->exit_reason, GPAMM_EXIT_MMIO);
		ASSERT(i < n);
		ASSERT_EQ(run->mmio.phys_addr, exp[i].gpa);
		ASSERT_EQ(run->mmio.len, exp[i].len);
		ASSERT_EQ(run->mmio.is_write, exp[i].is_write);
		uint64_t d = 0;
		memcpy(&d, run->mmio.data, 8);
		if (exp[i].is_write)
			ASSERT_EQ(d, exp[i].data);
		else
			memcpy(run->mmio.data, &exp[i].data, 8);
		i++;
	}
	ASSERT_EQ(i, n);
}

static void one_config(unsigned ps, unsigned levels, enum vt_host_kind kind)
{
	struct gpamm_geom g;
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v0, *v1;
	struct gpamm_vm_config cfg = { .page_shift = ps, .levels = levels };
	struct layout L;
	uint64_t hva[3];
	struct script s;

	ASSERT_EQ_INT(gpamm_geom_init(&g, ps, levels), 0);
	L.psz = g.page_size;
	L.size = NPAGES * L.psz;
	L.gpa[0] = 0;
	L.gpa[1] = gpamm_geom_space(&g) - L.size;
	L.gpa[2] = gpamm_geom_space(&g) / 2;
	L.hole = gpamm_geom_space(&g) / 4;

	vt_host_create(&vh, kind, ps, 64);
	cfg.host = vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	for (int i = 0; i < 3; i++) {
		hva[i] = vt_host_map(&vh, L.size, 0);
		struct gpamm_userspace_memory_region r = {
			.slot = (uint32_t)i, .flags = i == 2 ? GPAMM_MEM_READONLY : 0,
			.guest_phys_addr = L.gpa[i], .memory_size = L.size, .userspace_addr = hva[i],
		};
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	}
	uint64_t ro_val = 0x5555aaaa12345678ULL;
	vt_host_write(&vh, hva[2] + 8, &ro_val, 8);

	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v0), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 1, &v1), 0);
	memset(&s, 0, sizeof(s));
	s.L = &L;
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v0, guest_writer, &s, 0), 0);
	vt_run_to_done(v0, 0, NULL);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v1, guest_reader, &s, 0), 0);
	vt_run_to_done(v1, 0, NULL);
	ASSERT_EQ(s.errors, 0);
	ASSERT_EQ(s.ro_read, ro_val);

	/* the host sees the same bytes */
	{
		uint8_t *buf = malloc(L.size);
		uint64_t bad = 0;
		for (int sl = 0; sl < 2; sl++) {
			vt_host_read(&vh, hva[sl], buf, L.size);
			for (uint64_t off = 0; off < L.size; off += L.psz / 2)
				for (int b = 0; b < 8; b++)
					bad += buf[off + b] != pattern(L.gpa[sl] + off + b);
		}
		free(buf);
		ASSERT_EQ(bad, 0);
	}

	/* MMIO: read-only slot writes and the hole, in order, with data */
	struct mmio_expect exp[] = {
		{ L.gpa[2] + 16, 4, 1, 0xa1b2c3d4 },
		{ L.hole + 3, 2, 1, 0xbeef },
		{ L.hole, 8, 0, 0x7766554433221100ULL },
		{ L.gpa[2] + 16, 8, 1, 0x0102030405060708ULL },
	};
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v0, guest_mmio, &s, 0), 0);
	run_mmio_script(v0, exp, 4);
	ASSERT_EQ(s.ro_read, 0x7766554433221100ULL);
	/* the read-only page is mapped (it was read) but not writable, and unchanged */
	{
		gpamm_pte_t e = gpamm_pgt_lookup(&vm->pgt, L.gpa[2], NULL);
		uint64_t now;
		ASSERT(e & GPAMM_PTE_PRESENT);
		ASSERT_EQ(e & (GPAMM_PTE_WRITEABLE | GPAMM_PTE_WR_MARKER), 0);
		vt_host_read(&vh, hva[2] + 8, &now, 8);
		ASSERT_EQ(now, ro_val);
		vt_host_read(&vh, hva[2] + 16, &now, 8);
		ASSERT_EQ(now, 0);
	}
	/* written pages are mapped cached, dirty, writable: 0x393 | pfn */
	{
		gpamm_pte_t e = gpamm_pgt_lookup(&vm->pgt, L.gpa[0], NULL);
		ASSERT_EQ(e & 0xfff, 0x393);
	}

	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(st.mmio_exits, 4);
	gpamm_vm_destroy(vm);
	for (int i = 0; i < 3; i++)
		vt_host_unmap(&vh, hva[i], L.size);
	{
		struct gpamm_host_stats hs;
		gpamm_host_stats(vh.h, &hs);
		ASSERT_EQ(hs.pinned, 0);
		ASSERT_EQ(hs.frames_live, 0);
		ASSERT_EQ(hs.stale_accesses, 0);
	}
	vt_host_destroy(&vh);
	struct gpamm_live l;
	gpamm_live_objects(&l);
	ASSERT_EQ(l.vms + l.vcpus + l.tpools + l.threads, 0);
}

static void test_guest_bytes_all_geometries_direct(void)
{
	for (int i = 0; i < 6; i++)
		one_config(gpamm_geom_layouts[i][0], gpamm_geom_layouts[i][1], VT_DIRECT);
}

static void test_guest_bytes_all_geometries_sim(void)
{
	for (int i = 0; i < 6; i++)
		one_config(gpamm_geom_layouts[i][0], gpamm_geom_layouts[i][1], VT_SIM);
}

/* Device memory is mapped uncached (SUC); a host read-only mapping is never writable. */
static int touch_two(struct gpamm_vcpu *v, void *arg)
{
	uint64_t *gpa = arg;
	(void)gpamm_guest_read(v, gpa[0], 8);
	gpamm_guest_write(v, gpa[0], 8, 1);
	(void)gpamm_guest_read(v, gpa[1], 8);
	return 0;
}

static void test_cache_type_and_host_readonly(void)
{
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct gpamm_vm_config cfg = { .page_shift = 14, .levels = 3 };
	uint64_t dev, ro, gpa[2] = { 1ULL << 30, 2ULL << 30 };

	vt_host_create(&vh, VT_SIM, 14, 16);
	cfg.host = vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	dev = vt_host_map(&vh, 4 << 14, GPAMM_SIM_DEVICE);
	ro = vt_host_map(&vh, 4 << 14, GPAMM_SIM_READONLY);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = gpa[0], .memory_size = 4 << 14, .userspace_addr = dev }), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 1, .guest_phys_addr = gpa[1], .memory_size = 4 << 14, .userspace_addr = ro }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, touch_two, gpa, 0), 0);
	vt_run_to_done(v, 0, NULL);
	gpamm_pte_t e = gpamm_pgt_lookup(&vm->pgt, gpa[0], NULL);
	ASSERT_EQ(gpamm_pte_mat(e), GPAMM_PTE_MAT_SUC);
	ASSERT(gpamm_pte_dirty(e));
	e = gpamm_pgt_lookup(&vm->pgt, gpa[1], NULL);
	ASSERT(e & GPAMM_PTE_PRESENT);
	ASSERT_EQ(gpamm_pte_mat(e), GPAMM_PTE_MAT_CC);
	ASSERT_EQ(e & (GPAMM_PTE_WRITEABLE | GPAMM_PTE_WR_MARKER), 0);
	gpamm_vm_destroy(vm);
	vt_host_unmap(&vh, dev, 4 << 14);
	vt_host_unmap(&vh, ro, 4 << 14);
	vt_host_destroy(&vh);
}

/* A guest write to a host read-only mapping exits as a memory fault; the
 * access completes once the VMM made the memory writable. */
static int write_one(struct gpamm_vcpu *v, void *arg)
{
	gpamm_guest_write(v, *(uint64_t *)arg, 8, 0x77);
	return 0;
}

static void test_memory_fault_exit(void)
{
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct gpamm_vm_config cfg = { .page_shift = 12, .levels = 3 };
	uint64_t hva, gpa = 0x10000, got = 0;

	vt_host_create(&vh, VT_SIM, 12, 16);
	cfg.host = vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	hva = vt_host_map(&vh, 4 << 12, 0);
	ASSERT_EQ_INT(gpamm_sim_mprotect(vh.h, hva, 4 << 12, false), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0x10000, .memory_size = 4 << 12, .userspace_addr = hva }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, write_one, &gpa, 0), 0);
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_MEMORY_FAULT);
	ASSERT_EQ(run->memory_fault.gpa, gpa);
	ASSERT_EQ(run->memory_fault.size, 4096);
	ASSERT_EQ(run->memory_fault.flags, GPAMM_MEMORY_EXIT_FLAG_WRITE);
	ASSERT_EQ_INT(run->memory_fault.error, -EFAULT);
	ASSERT_EQ_INT(gpamm_sim_mprotect(vh.h, hva, 4 << 12, true), 0);
	ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_DONE);
	vt_host_read(&vh, hva, &got, 8);
	ASSERT_EQ(got, 0x77);
	gpamm_vm_destroy(vm);
	vt_host_unmap(&vh, hva, 4 << 12);
	vt_host_destroy(&vh);
}

static void test_bad_vm_and_vcpu_args(void)
{
	struct gpamm_host *h = gpamm_host_direct_create(14);
	struct gpamm_vm *vm = NULL;
	struct gpamm_vcpu *v;
	struct gpamm_vm_config cfg = { .page_shift = 14, .levels = 4, .host = h };

	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), -EINVAL);   /* 16K has no 4 levels */
	cfg.levels = 3;
	cfg.page_shift = 12;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), -EINVAL);   /* host is 16K */
	cfg.page_shift = 14;
	cfg.host = NULL;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), -EINVAL);
	cfg.host = h;
	cfg.max_vcpus = GPAMM_MAX_VCPUS + 1;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), -EINVAL);
	cfg.max_vcpus = 2;
	cfg.flags = 0x80;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), -EINVAL);
	cfg.flags = 0;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 2, &v), -EINVAL);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 1, &v), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 1, &v), -EEXIST);
	ASSERT_EQ_INT(gpamm_vcpu_run(v), -EINVAL);             /* no guest yet */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, NULL, NULL, 0), -EINVAL);
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(h);
}

static int kicked_loop(struct gpamm_vcpu *v, void *arg)
{
	uint64_t *n = arg;
	for (*n = 0; *n < 3; (*n)++)
		gpamm_guest_exit(v);
	return 42;
}

static void test_guest_exit_and_resume(void)
{
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(14, 3, &h);
	struct gpamm_vcpu *v;
	uint64_t n;

	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, kicked_loop, &n, 0), 0);
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
		ASSERT_EQ(run->exit_reason, GPAMM_EXIT_REQUEST);
		ASSERT_EQ(n, (uint64_t)i);
	}
	gpamm_vcpu_kick(v); /* a pending kick exits before entering */
	ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_REQUEST);
	ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_DONE);
	ASSERT_EQ_INT(run->guest_ret, 42);
	ASSERT_EQ_INT(gpamm_vcpu_run(v), -EINVAL); /* finished */
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(h);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_guest_bytes_all_geometries_direct);
	TEST(test_guest_bytes_all_geometries_sim);
	TEST(test_cache_type_and_host_readonly);
	TEST(test_memory_fault_exit);
	TEST(test_bad_vm_and_vcpu_args);
	TEST(test_guest_exit_and_resume);
	return tap_done();
}
