// SPDX-License-Identifier: MIT
/*
 * The invalidation-sequence retry of the slow fault path (REFERENCE.md §4),
 * made deterministic: a host wrapped around the sim host that, right after
 * it pinned a page for a fault, has the host drop that page (MADV_DONTNEED:
 * invalidate start, page freed once unpinned, invalidate end). The fault
 * sampled the sequence before the pin, so under the MMU lock it must see the
 * sequence moved, give the page back and fault again; the guest then reads
 * the zeros the host now has there, never the dropped page (which the sim
 * host's checking mode would report as a stale access).
 */
#include <errno.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

struct wrap_host {
	struct gpamm_host h;      /* first: what the VM sees */
	struct gpamm_host *inner; /* the sim host doing the work */
	struct gpamm_host_ops ops;
	int drop_on_get;          /* drop the page after this many more pins */
	unsigned gets;
};

static struct gpamm_host *inner_of(struct gpamm_host *h)
{
	return ((struct wrap_host *)h)->inner;
}

static int wrap_get_page(struct gpamm_host *h, uint64_t hva, bool write, struct gpamm_host_page *out)
{
	struct wrap_host *w = (struct wrap_host *)h;
	int r = w->inner->ops->get_page(w->inner, hva, write, out);

	w->gets++;
	if (!r && w->drop_on_get-- == 0) {
		/* the host changes the page right after the pin: a fault that
		 * used this pin would map a page the host no longer has there */
		ASSERT_EQ_INT(gpamm_sim_madv_dontneed(w->inner, hva & ~(uint64_t)((1u << h->page_shift) - 1),
						      1ULL << h->page_shift), 0);
	}
	return r;
}

#define FWD(name, ret, params, args)                                          \
	static ret wrap_##name params { return inner_of(h)->ops->name args; }
FWD(page_ptr, void *, (struct gpamm_host *h, uint64_t pfn), (inner_of(h), pfn))
FWD(check_access, int, (struct gpamm_host *h, uint64_t hva, uint64_t pfn, bool write),
    (inner_of(h), hva, pfn, write))
FWD(notifier_register, int,
    (struct gpamm_host *h, const struct gpamm_mmu_notifier_ops *ops, void *mn),
    (inner_of(h), ops, mn))

static void wrap_put_page(struct gpamm_host *h, uint64_t pfn, bool a, bool d)
{
	inner_of(h)->ops->put_page(inner_of(h), pfn, a, d);
}
static void wrap_mark_page(struct gpamm_host *h, uint64_t pfn, bool a, bool d)
{
	inner_of(h)->ops->mark_page(inner_of(h), pfn, a, d);
}
static void wrap_notifier_unregister(struct gpamm_host *h, void *mn)
{
	inner_of(h)->ops->notifier_unregister(inner_of(h), mn);
}
static void wrap_stats(struct gpamm_host *h, struct gpamm_host_stats *st)
{
	inner_of(h)->ops->stats(inner_of(h), st);
}
static void wrap_destroy(struct gpamm_host *h)
{
	(void)h;
}

static void wrap_init(struct wrap_host *w, struct gpamm_host *inner)
{
	memset(w, 0, sizeof(*w));
	w->inner = inner;
	w->ops = (struct gpamm_host_ops){
		.name = "wrap", .get_page = wrap_get_page, .put_page = wrap_put_page,
		.mark_page = wrap_mark_page, .page_ptr = wrap_page_ptr,
		.check_access = wrap_check_access, .notifier_register = wrap_notifier_register,
		.notifier_unregister = wrap_notifier_unregister, .stats = wrap_stats,
		.destroy = wrap_destroy,
	};
	w->h.ops = &w->ops;
	w->h.page_shift = inner->page_shift;
	w->h.checking = inner->checking;
	w->h.pfn_linear = inner->pfn_linear;
	w->h.pfn_linear_off = inner->pfn_linear_off;
	w->drop_on_get = -1;
}

struct probe {
	uint64_t gpa, val;
	bool write;
};

static int guest_probe(struct gpamm_vcpu *v, void *arg)
{
	struct probe *p = arg;

	if (p->write)
		gpamm_guest_write(v, p->gpa, 8, 0x1234);
	p->val = gpamm_guest_read(v, p->gpa, 8);
	return 0;
}

static void one_case(bool write)
{
	struct gpamm_sim_config sc = { .page_shift = 12, .frames = 64, .swap_pages = 0,
				       .checking = true };
	struct gpamm_host *sim = gpamm_host_sim_create(&sc);
	struct wrap_host w;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct gpamm_vm_config cfg = { .page_shift = 12, .levels = 3 };
	struct gpamm_vm_stats st;
	uint64_t hva, pattern = 0xfeedfacecafebeefULL;
	struct probe p = { .gpa = 0x100000, .write = write };

	ASSERT(sim);
	wrap_init(&w, sim);
	cfg.host = &w.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(sim, 16 << 12, 0, &hva), 0);
	ASSERT_EQ_INT(gpamm_sim_write(sim, hva, &pattern, 8), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = p.gpa, .memory_size = 16 << 12, .userspace_addr = hva }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);

	w.drop_on_get = 0; /* the first pin is followed by a DONTNEED */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, guest_probe, &p, 0), 0);
	vt_run_to_done(v, 0, NULL);
	gpamm_vm_stats(vm, &st);
	tap_diag("%s: %u pins, %llu retries", write ? "write" : "read", w.gets,
		 (unsigned long long)st.fault_retries);
	ASSERT(st.fault_retries >= 1);       /* the fault noticed the change */
	ASSERT(w.gets >= 2);                 /* and pinned again */
	ASSERT_EQ(st.stale_accesses, 0);     /* never reached the dropped frame */
	ASSERT_EQ(p.val, write ? 0x1234 : 0); /* DONTNEED: the host has zeros now */
	ASSERT_EQ(st.pinned, 0);

	gpamm_vm_destroy(vm);
	ASSERT_EQ_INT(gpamm_sim_munmap(sim, hva, 16 << 12), 0);
	struct gpamm_host_stats hs;
	gpamm_host_stats(sim, &hs);
	ASSERT_EQ(hs.frames_live, 0);
	ASSERT_EQ(hs.pinned, 0);
	gpamm_host_destroy(sim);
}

static void test_retry_after_invalidate_read(void)
{
	one_case(false);
}

static void test_retry_after_invalidate_write(void)
{
	one_case(true);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_retry_after_invalidate_read);
	TEST(test_retry_after_invalidate_write);
	return tap_done();
}
