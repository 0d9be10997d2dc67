// SPDX-License-Identifier: MIT
/*
 * The host's KVM as a benchmark peer: dirty_log_perf on a real KVM VM.
 *
 * The VM: data memslots 0..n-1 covering guest-physical [0, total) (4K
 * pages, anonymous memory pre-touched by the host exactly as gpamm's is),
 * one more slot with a single code page at 0xFFFFF000, and one vCPU per
 * bench vCPU, each run by its own thread. The guest is a few bytes of
 * 32-bit protected-mode code without paging (flat 4 GiB segments), so
 * guest-virtual = guest-physical and KVM's MMU maps guest-physical pages
 * directly -- the closest x86 analogue of a guest touching memory through
 * the second-level table only. Being 32-bit code without paging, it
 * reaches only the first 4 GiB of guest-physical memory: larger runs skip
 * the peer (with the reason).
 *
 * Each pass the guest writes one 32-bit word per 4K page of its slice and
 * executes OUT 0x10 to tell the host the pass is done; the host's KVM_RUN
 * returns with KVM_EXIT_IO and the vCPU thread waits for the next pass. The
 * next KVM_RUN resumes after the OUT, where the guest starts the next pass.
 * Only <linux/kvm.h> (the system UAPI header) is used; nothing here comes
 * from the kernel's sources.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <linux/kvm.h>
#define KVM_PEER_X86 1
#endif

#include "kvm_peer.h"

static const char *kvm_device(void)
{
	const char *d = getenv("GPAMM_KVM_DEVICE");

	return d && *d ? d : "/dev/kvm";
}

static bool module_loaded(const char *name)
{
	char path[128];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/module/%s", name);
	return !stat(path, &st);
}

/* First character of /sys/module/@mod/parameters/@param, or 0. */
static char module_param(const char *mod, const char *param)
{
	char path[160], c = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/module/%s/parameters/%s", mod, param);
	f = fopen(path, "r");
	if (f) {
		if (fread(&c, 1, 1, f) != 1)
			c = 0;
		fclose(f);
	}
	return c;
}

const char *kvm_peer_flavour(char *buf, size_t len)
{
	if (module_loaded("kvm_pvm") && !module_loaded("kvm_intel") && !module_loaded("kvm_amd")) {
		snprintf(buf, len, "kvm_pvm (software switcher, shadow paging)");
	} else if (module_loaded("kvm_intel")) {
		char ept = module_param("kvm_intel", "ept"), pml = module_param("kvm_intel", "pml");

		snprintf(buf, len, "kvm_intel (VMX%s%s)", ept == 'Y' ? ", EPT" : ", shadow paging",
			 ept == 'Y' && pml == 'Y' ? ", PML" : "");
	} else if (module_loaded("kvm_amd")) {
		char npt = module_param("kvm_amd", "npt");

		snprintf(buf, len, "kvm_amd (SVM, %s)", npt == 'Y' || npt == '1' ? "NPT"
									 : "shadow paging");
	} else {
		snprintf(buf, len, "kvm");
	}
	return buf;
}

const char *kvm_peer_exit_note(char *buf, size_t len)
{
	char fl[96];

	kvm_peer_flavour(fl, sizeof(fl));
	if (!strncmp(fl, "kvm_pvm", 7))
		snprintf(buf, len,
			 "KVM's dirty-write faults include a VM exit and entry per fault; gpamm's do "
			 "not (a fault is a call on the vCPU thread). Here the host's KVM is %s: "
			 "no hardware VM exits (EPT violations / PML), but each fault is a #PF world "
			 "switch out of the guest into KVM's shadow MMU and back.", fl);
	else
		snprintf(buf, len,
			 "KVM's dirty-write faults include hardware VM exits (EPT violations / NPT "
			 "faults, PML-full exits) and entries; gpamm's do not (a fault is a call on "
			 "the vCPU thread). Host KVM: %s.", fl);
	return buf;
}

#ifdef KVM_PEER_X86

/*
 * The guest, loaded at guest-physical 0xFFFFF000 and entered there in
 * 32-bit protected mode (CR0.PE = 1, paging off, CS/DS/ES/SS flat 4 GiB).
 * On entry (set by the host): ESI = first byte of this vCPU's slice,
 * EBP = pages in the slice (> 0), EAX = value to store (the pass tag).
 *
 *   offset  bytes              instruction           what it does
 *   0x00    89 F7              mov  edi, esi         EDI = cursor, at the slice start
 *   0x02    89 E9              mov  ecx, ebp         ECX = pages left in this pass
 *   0x04    89 07              mov  [edi], eax       one 32-bit store into this page
 *   0x06    81 C7 00 10 00 00  add  edi, 0x1000      next 4 KiB page
 *   0x0C    49                 dec  ecx              one page fewer (0x49 = DEC ECX in 32-bit mode)
 *   0x0D    75 F5              jnz  0x04             pages left: loop (rel8 -11 from 0x0F)
 *   0x0F    40                 inc  eax              the next pass stores a new value
 *   0x10    E6 10              out  0x10, al         I/O exit: "pass done" (AL = tag)
 *   0x12    EB EC              jmp  0x00             resumed by the next KVM_RUN: next pass
 *                                                    (rel8 -20 from 0x14)
 */
static const uint8_t guest_code[] = {
	0x89, 0xF7,
	0x89, 0xE9,
	0x89, 0x07,
	0x81, 0xC7, 0x00, 0x10, 0x00, 0x00,
	0x49,
	0x75, 0xF5,
	0x40,
	0xE6, 0x10,
	0xEB, 0xEC,
};

#define KP_CODE_GPA  0xFFFFF000ULL
#define KP_PORT      0x10
#define KP_PAGE      4096ULL
#define CR0_PE       (1ULL << 0)
#define CR0_NW       (1ULL << 29)
#define CR0_CD       (1ULL << 30)

int kvm_peer_probe(char *why, size_t len)
{
	const char *dev = kvm_device();
	int fd = open(dev, O_RDWR | O_CLOEXEC), v;

	if (fd < 0) {
		snprintf(why, len, "cannot open %s: %s", dev, strerror(errno));
		return -1;
	}
	v = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		snprintf(why, len, "%s: KVM_GET_API_VERSION %s %d (want %d)", dev,
			 v < 0 ? "failed:" : "returned", v < 0 ? errno : v, KVM_API_VERSION);
		close(fd);
		return -1;
	}
	if (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0) {
		snprintf(why, len, "%s: no KVM_CAP_USER_MEMORY", dev);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

struct kvm_peer {
	const struct bench_cfg *cfg;
	struct bench_run *r;
	int kvm, vm;
	int *vcpu_fd;
	struct kvm_run **run;
	size_t run_size;
	struct bench_mem mem;
	uint8_t *code;
	uint64_t slot_bytes, slot_pages;
	uint64_t **bitmap;
	char (*verr)[200];
};

static const char *exit_name(uint32_t r)
{
	switch (r) {
	case KVM_EXIT_UNKNOWN: return "UNKNOWN";
	case KVM_EXIT_EXCEPTION: return "EXCEPTION";
	case KVM_EXIT_IO: return "IO";
	case KVM_EXIT_HLT: return "HLT";
	case KVM_EXIT_MMIO: return "MMIO";
	case KVM_EXIT_SHUTDOWN: return "SHUTDOWN (triple fault)";
	case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
	case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
	default: return "other";
	}
}

/* One pass of vCPU @i: KVM_RUN until the guest's OUT to KP_PORT. */
static int kp_vcpu_pass(void *ctx, unsigned i, uint64_t gen)
{
	struct kvm_peer *k = ctx;
	struct kvm_run *run = k->run[i];

	for (;;) {
		if (ioctl(k->vcpu_fd[i], KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(k->verr[i], sizeof(k->verr[i]), "vCPU %u: KVM_RUN: %s", i,
				 strerror(errno));
			return -1;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.port == KP_PORT && run->io.direction == KVM_EXIT_IO_OUT &&
			    run->io.size == 1) {
				uint8_t tag = *((uint8_t *)run + run->io.data_offset);

				/* the guest's pass counter started at 1 and was bumped once per pass */
				if (tag != (uint8_t)(gen + 1)) {
					snprintf(k->verr[i], sizeof(k->verr[i]),
						 "vCPU %u: guest reported pass tag %u, expected %u",
						 i, tag, (unsigned)(uint8_t)(gen + 1));
					return -1;
				}
				return 0;
			}
			snprintf(k->verr[i], sizeof(k->verr[i]), "vCPU %u: unexpected I/O port 0x%x",
				 i, run->io.port);
			return -1;
		case KVM_EXIT_INTR:
			continue;
		case KVM_EXIT_FAIL_ENTRY:
			snprintf(k->verr[i], sizeof(k->verr[i]),
				 "vCPU %u: KVM_EXIT_FAIL_ENTRY (hardware reason 0x%llx)", i,
				 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			return -1;
		case KVM_EXIT_INTERNAL_ERROR:
			snprintf(k->verr[i], sizeof(k->verr[i]),
				 "vCPU %u: KVM_EXIT_INTERNAL_ERROR (suberror %u)", i,
				 run->internal.suberror);
			return -1;
		default:
			snprintf(k->verr[i], sizeof(k->verr[i]), "vCPU %u: exit reason %u (%s)", i,
				 run->exit_reason, exit_name(run->exit_reason));
			return -1;
		}
	}
}

static const char *kp_gang_error(struct kvm_peer *k)
{
	for (unsigned i = 0; i < k->cfg->vcpus; i++)
		if (k->verr[i][0])
			return k->verr[i];
	return "a vCPU failed";
}

static int kp_set_slot(struct kvm_peer *k, unsigned s, uint32_t flags)
{
	struct kvm_userspace_memory_region reg = {
		.slot = s,
		.flags = flags,
		.guest_phys_addr = s * k->slot_bytes,
		.memory_size = k->slot_bytes,
		.userspace_addr = (uintptr_t)(k->mem.p + s * k->slot_bytes),
	};

	return ioctl(k->vm, KVM_SET_USER_MEMORY_REGION, &reg);
}

static int kp_skip(struct kvm_peer *k, const char *what)
{
	return bench_run_fail(k->r, BENCH_SKIPPED, "KVM: %s: %s", what, strerror(errno));
}

static int kp_vcpu_setup(struct kvm_peer *k, unsigned i)
{
	struct kvm_segment code = {
		.base = 0, .limit = 0xFFFFFFFF, .selector = 0x08,
		.type = 0xB, /* execute/read, accessed */
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_segment data = code;
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	k->vcpu_fd[i] = ioctl(k->vm, KVM_CREATE_VCPU, (unsigned long)i);
	if (k->vcpu_fd[i] < 0)
		return kp_skip(k, "KVM_CREATE_VCPU");
	k->run[i] = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->vcpu_fd[i], 0);
	if (k->run[i] == MAP_FAILED) {
		k->run[i] = NULL;
		return kp_skip(k, "mmap of kvm_run");
	}
	if (ioctl(k->vcpu_fd[i], KVM_GET_SREGS, &sregs) < 0)
		return kp_skip(k, "KVM_GET_SREGS");
	/* flat 32-bit protected mode, paging off, caches on */
	data.type = 0x3; /* read/write, accessed */
	data.selector = 0x10;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr0 = (sregs.cr0 | CR0_PE) & ~(CR0_CD | CR0_NW);
	if (ioctl(k->vcpu_fd[i], KVM_SET_SREGS, &sregs) < 0)
		return kp_skip(k, "KVM_SET_SREGS (32-bit protected mode)");
	memset(&regs, 0, sizeof(regs));
	regs.rip = KP_CODE_GPA;
	regs.rflags = 0x2; /* bit 1 is always set; interrupts off */
	regs.rsi = i * k->cfg->bytes_per_vcpu;
	regs.rbp = k->cfg->bytes_per_vcpu / KP_PAGE;
	regs.rax = 1;
	if (ioctl(k->vcpu_fd[i], KVM_SET_REGS, &regs) < 0)
		return kp_skip(k, "KVM_SET_REGS");
	return 0;
}

static int kp_body(struct kvm_peer *k, struct bench_gang *gang)
{
	const struct bench_cfg *c = k->cfg;
	struct bench_run *r = k->r;
	const uint64_t words = (k->slot_pages + 63) / 64;
	double t0, t;

	t = bench_gang_step(gang);
	if (t < 0)
		return bench_run_fail(r, BENCH_SKIPPED, "KVM guest: populate: %s", kp_gang_error(k));
	bench_phase_record(r, "populate", 0, t);

	t0 = bench_now_ns();
	for (unsigned s = 0; s < c->slots; s++)
		if (kp_set_slot(k, s, KVM_MEM_LOG_DIRTY_PAGES) < 0)
			return kp_skip(k, "KVM_SET_USER_MEMORY_REGION (enable KVM_MEM_LOG_DIRTY_PAGES)");
	bench_phase_record(r, "enable", 0, bench_now_ns() - t0);

	for (unsigned it = 1; it <= c->iterations; it++) {
		uint64_t dirty = 0;

		if (c->out)
			fputc('\n', c->out);
		t = bench_gang_step(gang);
		if (t < 0)
			return bench_run_fail(r, BENCH_SKIPPED, "KVM guest: iteration %u: %s", it,
					      kp_gang_error(k));
		bench_phase_record(r, "dirty", it, t);

		t0 = bench_now_ns();
		for (unsigned s = 0; s < c->slots; s++) {
			struct kvm_dirty_log log = { .slot = s };

			log.dirty_bitmap = k->bitmap[s];
			if (ioctl(k->vm, KVM_GET_DIRTY_LOG, &log) < 0)
				return kp_skip(k, "KVM_GET_DIRTY_LOG");
		}
		bench_phase_record(r, "get", it, bench_now_ns() - t0);

		if (c->manual_protect) {
			t0 = bench_now_ns();
			for (unsigned s = 0; s < c->slots; s++) {
				struct kvm_clear_dirty_log cl = {
					.slot = s,
					.num_pages = (uint32_t)k->slot_pages,
					.first_page = 0,
				};

				cl.dirty_bitmap = k->bitmap[s];
				if (ioctl(k->vm, KVM_CLEAR_DIRTY_LOG, &cl) < 0)
					return kp_skip(k, "KVM_CLEAR_DIRTY_LOG");
			}
			bench_phase_record(r, "clear", it, bench_now_ns() - t0);
		}
		for (unsigned s = 0; s < c->slots; s++)
			for (uint64_t w = 0; w < words; w++)
				dirty += (uint64_t)__builtin_popcountll(k->bitmap[s][w]);
		bench_count_record(r, "pages_dirty", it, dirty);
	}
	if (c->out)
		fputc('\n', c->out);

	t0 = bench_now_ns();
	for (unsigned s = 0; s < c->slots; s++)
		if (kp_set_slot(k, s, 0) < 0)
			return kp_skip(k, "KVM_SET_USER_MEMORY_REGION (disable logging)");
	bench_phase_record(r, "disable", 0, bench_now_ns() - t0);
	return 0;
}

int kvm_peer_dirty_log_perf(const struct bench_cfg *c, struct bench_run *r)
{
	const uint64_t total = bench_total_bytes(c);
	struct kvm_peer k;
	struct bench_gang gang;
	bool gang_on = false;
	char err[256], sz[32], fl[96];
	int ret = -1, v;

	memset(&k, 0, sizeof(k));
	k.cfg = c;
	k.r = r;
	k.kvm = k.vm = -1;
	if (total > KVM_PEER_MAX_BYTES)
		return bench_run_fail(r, BENCH_SKIPPED,
				      "the KVM peer's guest is 32-bit code without paging and reaches "
				      "only guest-physical memory below 4 GiB (%s here); run it with "
				      "less than 4 GiB", bench_size_str(total, sz, sizeof(sz)));
	if (kvm_peer_probe(err, sizeof(err)))
		return bench_run_fail(r, BENCH_SKIPPED, "%s", err);
	k.slot_bytes = total / c->slots;
	k.slot_pages = k.slot_bytes / KP_PAGE;
	r->gpa_base = 0;

	k.kvm = open(kvm_device(), O_RDWR | O_CLOEXEC);
	if (k.kvm < 0) {
		ret = kp_skip(&k, kvm_device());
		goto out;
	}
	v = ioctl(k.kvm, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	if (v > 0 && (unsigned)v < c->slots + 1) {
		ret = bench_run_fail(r, BENCH_SKIPPED, "KVM allows %d memslots; the peer needs %u",
				     v, c->slots + 1);
		goto out;
	}
	v = ioctl(k.kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (v <= 0)
		v = ioctl(k.kvm, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (v > 0 && (unsigned)v < c->vcpus) {
		ret = bench_run_fail(r, BENCH_SKIPPED, "KVM allows %d vCPUs; the run has %u", v,
				     c->vcpus);
		goto out;
	}
	if (c->manual_protect &&
	    !(ioctl(k.kvm, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) &
	      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
		ret = bench_run_fail(r, BENCH_SKIPPED, "KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 "
				     "(try --no-manual-protect)");
		goto out;
	}
	v = ioctl(k.kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (v < (int)sizeof(struct kvm_run)) {
		ret = kp_skip(&k, "KVM_GET_VCPU_MMAP_SIZE");
		goto out;
	}
	k.run_size = (size_t)v;
	k.vm = ioctl(k.kvm, KVM_CREATE_VM, 0UL);
	if (k.vm < 0) {
		ret = kp_skip(&k, "KVM_CREATE_VM");
		goto out;
	}
	if (c->manual_protect) {
		/* The same flags as the gpamm run: manual protect, and
		 * INITIALLY_SET unless --no-initially-set (the selftest asks for
		 * both when the capability offers them). */
		struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
					      .args = { KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE } };
		int have = ioctl(k.vm, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);

		if (c->initially_set) {
			if (have < 0 || !(have & KVM_DIRTY_LOG_INITIALLY_SET)) {
				ret = bench_run_fail(r, BENCH_SKIPPED, "KVM does not offer "
						     "KVM_DIRTY_LOG_INITIALLY_SET "
						     "(try --no-initially-set)");
				goto out;
			}
			cap.args[0] |= KVM_DIRTY_LOG_INITIALLY_SET;
		}
		if (ioctl(k.vm, KVM_ENABLE_CAP, &cap) < 0) {
			ret = kp_skip(&k, "KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)");
			goto out;
		}
	}

	if (c->out && total >= (4ULL << 30)) {
		fprintf(c->out, "(%s: pre-touching %s of host memory first; this can take a while)\n",
			r->backend, bench_size_str(total, sz, sizeof(sz)));
		fflush(c->out);
	}
	if (bench_mem_alloc(&k.mem, total, KP_PAGE, c->thp, err, sizeof(err))) {
		ret = bench_run_fail(r, BENCH_SKIPPED, "KVM guest RAM: %s", err);
		goto out;
	}
	r->touch_s = k.mem.touch_s;
	snprintf(r->host_desc, sizeof(r->host_desc),
		 "anonymous %s, MAP_NORESERVE, memslots of 4K guest pages",
		 c->thp ? "THP-backed" : "4K host pages (THP off)");
	k.code = mmap(NULL, KP_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (k.code == MAP_FAILED) {
		k.code = NULL;
		ret = kp_skip(&k, "mmap of the code page");
		goto out;
	}
	memset(k.code, 0xF4, KP_PAGE); /* HLT everywhere else: a stray jump stops the vCPU */
	memcpy(k.code, guest_code, sizeof(guest_code));

	for (unsigned s = 0; s < c->slots; s++) {
		if (kp_set_slot(&k, s, 0) < 0) {
			ret = kp_skip(&k, "KVM_SET_USER_MEMORY_REGION (data slot)");
			goto out;
		}
	}
	{
		struct kvm_userspace_memory_region reg = {
			.slot = c->slots, .flags = 0, .guest_phys_addr = KP_CODE_GPA,
			.memory_size = KP_PAGE, .userspace_addr = (uintptr_t)k.code,
		};

		if (ioctl(k.vm, KVM_SET_USER_MEMORY_REGION, &reg) < 0) {
			ret = kp_skip(&k, "KVM_SET_USER_MEMORY_REGION (code slot)");
			goto out;
		}
	}

	k.vcpu_fd = malloc(c->vcpus * sizeof(*k.vcpu_fd));
	for (unsigned i = 0; k.vcpu_fd && i < c->vcpus; i++)
		k.vcpu_fd[i] = -1;
	k.run = calloc(c->vcpus, sizeof(*k.run));
	k.verr = calloc(c->vcpus, sizeof(*k.verr));
	k.bitmap = bench_bitmaps_alloc(c->slots, k.slot_pages);
	if (!k.vcpu_fd || !k.run || !k.verr || !k.bitmap) {
		ret = bench_run_fail(r, BENCH_SKIPPED, "KVM peer: out of memory");
		goto out;
	}
	for (unsigned i = 0; i < c->vcpus; i++)
		if ((ret = kp_vcpu_setup(&k, i)))
			goto out;

	if (c->out) {
		char tot[32], per[32];

		fprintf(c->out, "== KVM (%s, %s): 4K pages, %u vCPU%s x %s = %s (%llu pages), "
			"%u slot%s, %u iteration%s, %s\n",
			kvm_device(), kvm_peer_flavour(fl, sizeof(fl)), c->vcpus,
			c->vcpus == 1 ? "" : "s", bench_size_str(c->bytes_per_vcpu, per, sizeof(per)),
			bench_size_str(total, tot, sizeof(tot)), (unsigned long long)r->pages,
			c->slots, c->slots == 1 ? "" : "s", c->iterations,
			c->iterations == 1 ? "" : "s", bench_protect_mode(c));
		fprintf(c->out, "host: %s; pre-touched by the host in %.2fs before the VM "
			"started, so no phase includes a host page fault\n",
			r->host_desc, r->touch_s);
		fprintf(c->out, "guest: 32-bit protected mode, paging off, one 32-bit store per "
			"4K page, OUT 0x%x per pass; code page at 0x%llx\n", KP_PORT,
			(unsigned long long)KP_CODE_GPA);
		fprintf(c->out, "guest physical test memory: [0x0, 0x%llx)\n",
			(unsigned long long)total);
	}
	if (bench_gang_start(&gang, c->vcpus, kp_vcpu_pass, &k)) {
		ret = bench_run_fail(r, BENCH_SKIPPED, "KVM peer: cannot start the vCPU threads");
		goto out;
	}
	gang_on = true;
	ret = kp_body(&k, &gang);
out:
	if (gang_on)
		bench_gang_stop(&gang);
	for (unsigned i = 0; k.vcpu_fd && i < c->vcpus; i++) {
		if (k.run && k.run[i])
			munmap(k.run[i], k.run_size);
		if (k.vcpu_fd[i] >= 0)
			close(k.vcpu_fd[i]);
	}
	if (k.vm >= 0)
		close(k.vm);
	if (k.kvm >= 0)
		close(k.kvm);
	bench_bitmaps_free(k.bitmap, c->slots);
	free(k.vcpu_fd);
	free(k.run);
	free(k.verr);
	if (k.code)
		munmap(k.code, KP_PAGE);
	bench_mem_free(&k.mem);
	return ret;
}

#else /* not x86 */

int kvm_peer_probe(char *why, size_t len)
{
	snprintf(why, len, "the KVM peer's guest is x86 machine code; this host is not x86");
	return -1;
}

int kvm_peer_dirty_log_perf(const struct bench_cfg *c, struct bench_run *r)
{
	char why[160];

	kvm_peer_probe(why, sizeof(why));
	return bench_run_fail(r, BENCH_SKIPPED, "%s", why);
}

#endif
