// SPDX-License-Identifier: MIT
/*
 * test_host - the two hosts of gpamm/host.h, from the outside. The direct
 * host: PFN and page_ptr are the address shifted, pins are counted. The sim
 * host: fault-in gives zeroed pages; contents survive reclaim + swap-in,
 * migrate (with a new PFN) and merge (shared read-only until a write copies);
 * madv_dontneed reads zeros; mprotect, READONLY and DEVICE set exactly the
 * access and flags they should; pinned pages are never moved; the pool runs
 * dry with -ENOMEM; everything is accounted back to zero.
 *
 * The notifier contract is checked by a fake MMU registered as a notifier:
 * it remembers each translation the test "installs" after a get_page(), and
 * at every invalidate_range_start it asks check_access() whether each of its
 * translations in the range is still what the host maps. If the host changed
 * a page before telling the MMU, that lookup fails inside the callback. The
 * random test drives host events, guest accesses through those translations
 * and host reads/writes against a per-page model of the contents, from a
 * printed, replayable seed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/host.h"
#include "harness/tap.h"

#define POISON 0x6b /* what the sim writes over a freed frame in checking mode */

/* ---- page contents ----------------------------------------------------------- */

/* Tag 0 is the all-zero page; others fill every word from the tag. */
static uint64_t word_of(uint64_t tag, uint64_t k)
{
	return tag ? tag * 0x9e3779b97f4a7c15ULL + k : 0;
}

static void fill_page(void *p, uint64_t size, uint64_t tag)
{
	uint64_t *w = p, k;

	for (k = 0; k < size / 8; k++)
		w[k] = word_of(tag, k);
}

static bool page_is(const void *p, uint64_t size, uint64_t tag)
{
	const uint64_t *w = p;
	uint64_t k;

	for (k = 0; k < size / 8; k++)
		if (w[k] != word_of(tag, k))
			return false;
	return true;
}

static bool bytes_are(const void *p, uint64_t size, uint8_t v)
{
	const uint8_t *b = p;
	uint64_t k;

	for (k = 0; k < size; k++)
		if (b[k] != v)
			return false;
	return true;
}

/* ---- the fake MMU ---------------------------------------------------------- */

struct xlat {
	uint64_t hva, pfn;
	bool writable;
};

struct call {
	char kind; /* 's' start, 'e' end, 'r' release */
	uint64_t start, end;
};

struct fake_mn {
	struct gpamm_host *h;
	uint64_t ps;
	struct call log[256];
	unsigned nlog, depth;
	/* one watched page: check_access() of it at start and at end */
	bool probe;
	uint64_t probe_hva, probe_pfn;
	int probe_start, probe_end;
	/* translations "installed" by the test */
	struct xlat xl[512];
	unsigned nxl;
	/* failures inside callbacks (an ASSERT there would unwind the host) */
	unsigned errors;
	char err[200];
	unsigned releases;
};

static void mn_error(struct fake_mn *m, const char *what, uint64_t a, uint64_t b)
{
	if (!m->errors++)
		snprintf(m->err, sizeof m->err, "%s 0x%llx 0x%llx", what,
			 (unsigned long long)a, (unsigned long long)b);
}

static void mn_start(void *mn, uint64_t start, uint64_t end)
{
	struct fake_mn *m = mn;
	unsigned i;

	if (m->nlog < 256)
		m->log[m->nlog++] = (struct call){ 's', start, end };
	m->depth++;
	if (start >= end || (start | end) & (m->ps - 1))
		mn_error(m, "bad range", start, end);
	if (m->probe && m->probe_hva >= start && m->probe_hva < end)
		m->probe_start = m->h->ops->check_access(m->h, m->probe_hva, m->probe_pfn, false);
	/* Every translation about to go must still be the host's mapping. */
	for (i = 0; i < m->nxl;) {
		struct xlat *x = &m->xl[i];

		if (x->hva < start || x->hva >= end) {
			i++;
			continue;
		}
		if (m->h->ops->check_access(m->h, x->hva, x->pfn, x->writable))
			mn_error(m, "changed before invalidate_range_start", x->hva, x->pfn);
		*x = m->xl[--m->nxl];
	}
}

static void mn_end(void *mn, uint64_t start, uint64_t end)
{
	struct fake_mn *m = mn;

	if (m->nlog < 256)
		m->log[m->nlog++] = (struct call){ 'e', start, end };
	if (!m->depth)
		mn_error(m, "end without start", start, end);
	else
		m->depth--;
	if (m->probe && m->probe_hva >= start && m->probe_hva < end)
		m->probe_end = m->h->ops->check_access(m->h, m->probe_hva, m->probe_pfn, false);
}

static void mn_release(void *mn)
{
	struct fake_mn *m = mn;

	m->releases++;
	if (m->nlog < 256)
		m->log[m->nlog++] = (struct call){ 'r', 0, 0 };
}

static const struct gpamm_mmu_notifier_ops fake_ops = {
	.invalidate_range_start = mn_start,
	.invalidate_range_end = mn_end,
	.release = mn_release,
};

static void mn_init(struct fake_mn *m, struct gpamm_host *h)
{
	memset(m, 0, sizeof(*m));
	m->h = h;
	m->ps = 1ULL << h->page_shift;
	ASSERT_EQ_INT(h->ops->notifier_register(h, &fake_ops, m), 0);
}

static void mn_reset_log(struct fake_mn *m)
{
	m->nlog = 0;
	m->probe = false;
	m->probe_start = m->probe_end = 1;
}

static void mn_watch(struct fake_mn *m, uint64_t hva, uint64_t pfn)
{
	m->probe = true;
	m->probe_hva = hva;
	m->probe_pfn = pfn;
	m->probe_start = m->probe_end = 1; /* neither 0 nor an errno */
}

/* The log is exactly one start/end pair for [start, end). */
static void assert_one_pair(struct fake_mn *m, uint64_t start, uint64_t end)
{
	ASSERT_EQ(m->errors, 0);
	ASSERT_EQ(m->nlog, 2);
	ASSERT_EQ(m->log[0].kind, 's');
	ASSERT_EQ(m->log[0].start, start);
	ASSERT_EQ(m->log[0].end, end);
	ASSERT_EQ(m->log[1].kind, 'e');
	ASSERT_EQ(m->log[1].start, start);
	ASSERT_EQ(m->log[1].end, end);
	ASSERT_EQ(m->depth, 0);
}

/* Pin, note what we got, unpin: what an MMU does around installing an entry. */
static int touch(struct gpamm_host *h, uint64_t hva, bool write, struct gpamm_host_page *pg)
{
	int ret = h->ops->get_page(h, hva, write, pg);

	if (!ret)
		h->ops->put_page(h, pg->pfn, true, write);
	return ret;
}

static uint64_t pfn_of(struct gpamm_host *h, uint64_t hva)
{
	struct gpamm_host_page pg;

	ASSERT_EQ_INT(touch(h, hva, false, &pg), 0);
	return pg.pfn;
}

static struct gpamm_host_stats stats(struct gpamm_host *h)
{
	struct gpamm_host_stats st;

	gpamm_host_stats(h, &st);
	return st;
}

static struct gpamm_host *sim(unsigned shift, uint64_t frames, uint64_t swap)
{
	struct gpamm_sim_config cfg = {
		.page_shift = shift, .frames = frames, .swap_pages = swap, .checking = true,
	};
	struct gpamm_host *h = gpamm_host_sim_create(&cfg);

	ASSERT(h);
	return h;
}

static void write_tag(struct gpamm_host *h, uint64_t hva, uint64_t tag)
{
	uint64_t ps = 1ULL << h->page_shift;
	void *buf = malloc(ps);

	ASSERT(buf);
	fill_page(buf, ps, tag);
	ASSERT_EQ_INT(gpamm_sim_write(h, hva, buf, ps), 0);
	free(buf);
}

static bool read_is(struct gpamm_host *h, uint64_t hva, uint64_t tag)
{
	uint64_t ps = 1ULL << h->page_shift;
	void *buf = malloc(ps);
	bool ok;

	ASSERT(buf);
	ok = !gpamm_sim_read(h, hva, buf, ps) && page_is(buf, ps, tag);
	free(buf);
	return ok;
}

/* ---- direct ---------------------------------------------------------------- */

static void test_direct_create(void)
{
	static const unsigned shifts[] = { 12, 14, 16 };
	struct gpamm_host *h;
	unsigned i;

	ASSERT(!gpamm_host_direct_create(0));
	ASSERT(!gpamm_host_direct_create(13));
	ASSERT(!gpamm_host_direct_create(21));
	for (i = 0; i < 3; i++) {
		h = gpamm_host_direct_create(shifts[i]);
		ASSERT(h);
		ASSERT_EQ(h->page_shift, shifts[i]);
		ASSERT(!h->checking);
		ASSERT(!h->ops->check_access);
		ASSERT(!strcmp(h->ops->name, "direct"));
		gpamm_host_destroy(h);
	}
	gpamm_host_destroy(NULL);
}

static void test_direct_pins(void)
{
	const unsigned shift = 14;
	const uint64_t ps = 1ULL << shift;
	struct gpamm_host *h = gpamm_host_direct_create(shift);
	struct gpamm_host_page pg[4];
	uint8_t *mem = aligned_alloc(ps, 4 * ps);
	unsigned i;

	ASSERT(h && mem);
	for (i = 0; i < 4; i++) {
		uint64_t hva = (uint64_t)(uintptr_t)(mem + i * ps);

		ASSERT_EQ_INT(h->ops->get_page(h, hva, i & 1, &pg[i]), 0);
		ASSERT_EQ(pg[i].pfn, hva >> shift);
		ASSERT_EQ(pg[i].flags, GPAMM_HOST_PAGE_WRITABLE);
		ASSERT_EQ(pg[i].map_shift, shift);
		ASSERT(h->ops->page_ptr(h, pg[i].pfn) == mem + i * ps);
		ASSERT_EQ(stats(h).pinned, i + 1);
	}
	/* A second pin of the same page counts too. */
	ASSERT_EQ_INT(h->ops->get_page(h, pg[0].pfn << shift, true, &pg[0]), 0);
	ASSERT_EQ(stats(h).pinned, 5);
	h->ops->mark_page(h, pg[1].pfn, true, true);
	for (i = 0; i < 4; i++)
		h->ops->put_page(h, pg[i].pfn, true, false);
	ASSERT_EQ(stats(h).pinned, 1);
	h->ops->put_page(h, pg[0].pfn, false, false);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ(stats(h).events, 0);

	/* Page 0 and misaligned addresses are refused and pin nothing. */
	ASSERT_EQ_INT(h->ops->get_page(h, 0, false, &pg[0]), -EFAULT);
	ASSERT_EQ_INT(h->ops->get_page(h, (uint64_t)(uintptr_t)mem + 8, false, &pg[0]), -EFAULT);
	ASSERT_EQ_INT(h->ops->get_page(h, (uint64_t)(uintptr_t)mem + ps / 2, true, &pg[0]), -EFAULT);
	ASSERT_EQ(stats(h).pinned, 0);
	free(mem);
	gpamm_host_destroy(h);
}

static void test_direct_notifiers(void)
{
	struct gpamm_host *h = gpamm_host_direct_create(12);
	struct fake_mn a, b;

	ASSERT(h);
	mn_init(&a, h);
	mn_init(&b, h);
	ASSERT_EQ_INT(h->ops->notifier_register(h, &fake_ops, &a), -EEXIST);
	ASSERT_EQ_INT(h->ops->notifier_register(h, NULL, &a), -EINVAL);
	h->ops->notifier_unregister(h, &a);
	h->ops->notifier_unregister(h, &a); /* not registered: ignored */
	/* The direct host has no events; a notifier left over at destroy is released. */
	gpamm_host_destroy(h);
	ASSERT_EQ(a.nlog, 0);
	ASSERT_EQ(b.nlog, 1);
	ASSERT_EQ(b.log[0].kind, 'r');
}

/* ---- sim: creation and mappings -------------------------------------------- */

static void test_sim_create(void)
{
	struct gpamm_sim_config cfg = { .page_shift = 12, .frames = 8, .swap_pages = 0 };
	struct gpamm_host *h;

	ASSERT(!gpamm_host_sim_create(NULL));
	cfg.page_shift = 13;
	ASSERT(!gpamm_host_sim_create(&cfg));
	cfg.page_shift = 16;
	cfg.frames = 0;
	ASSERT(!gpamm_host_sim_create(&cfg));
	cfg.frames = 8;
	h = gpamm_host_sim_create(&cfg);
	ASSERT(h);
	ASSERT(!h->checking);
	ASSERT(h->ops->check_access);
	ASSERT(!strcmp(h->ops->name, "sim"));
	ASSERT_EQ(stats(h).frames_total, 8);
	ASSERT_EQ(stats(h).frames_live, 0);
	/* No swap: reclaim cannot work. */
	ASSERT_EQ_INT(gpamm_sim_reclaim(h, 1ULL << 40, 1ULL << 16, 1), -ENOSPC);
	gpamm_host_destroy(h);
}

static void test_sim_mmap(void)
{
	struct gpamm_host *h = sim(14, 16, 0);
	const uint64_t ps = 1ULL << 14;
	struct gpamm_host_page pg;
	uint64_t a, b, c, x;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 0, 0, &x), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, ps + 1, 0, &x), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, ps, 1u << 7, &x), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 3 * ps, 0, &a), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 5 * ps, GPAMM_SIM_HUGE, &b), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, ps, GPAMM_SIM_READONLY | GPAMM_SIM_DEVICE, &c), 0);
	ASSERT_EQ(a & (ps - 1), 0);
	ASSERT_EQ(b & (ps - 1), 0);
	ASSERT_LT(a + 3 * ps, b);  /* no overlap, no adjacency */
	ASSERT_LT(b + 5 * ps, c);
	ASSERT_LT(c + ps, 1ULL << 47);
	ASSERT_NE(a, 0);
	/* The gaps are not mapped. */
	ASSERT_EQ_INT(h->ops->get_page(h, a + 3 * ps, false, &pg), -EFAULT);
	ASSERT_EQ_INT(h->ops->get_page(h, b - ps, false, &pg), -EFAULT);
	ASSERT_EQ_INT(h->ops->get_page(h, 0, false, &pg), -EFAULT);
	ASSERT_EQ_INT(h->ops->get_page(h, a + 1, false, &pg), -EFAULT);
	/* An HVA is not handed out again after munmap. */
	ASSERT_EQ_INT(gpamm_sim_munmap(h, a, 3 * ps), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 3 * ps, 0, &x), 0);
	ASSERT(x > c);
	ASSERT_EQ(stats(h).frames_live, 0);
	gpamm_host_destroy(h);
}

static void test_sim_fault_zero(void)
{
	struct gpamm_host *h = sim(12, 8, 0);
	const uint64_t ps = 4096;
	struct gpamm_host_page pg, pg2;
	uint64_t hva;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * ps, 0, &hva), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ_INT(h->ops->get_page(h, hva + ps, false, &pg), 0);
	/* Checking mode fills the pool with poison: zero means zeroed. */
	ASSERT(bytes_are(h->ops->page_ptr(h, pg.pfn), ps, 0));
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT_EQ(pg.map_shift, 12);
	ASSERT_EQ(stats(h).frames_live, 1);
	ASSERT_EQ(stats(h).faults_in, 1);
	ASSERT_EQ(stats(h).pinned, 1);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + ps, pg.pfn, true), 0);
	/* A present page is not faulted again; the same frame comes back. */
	ASSERT_EQ_INT(h->ops->get_page(h, hva + ps, true, &pg2), 0);
	ASSERT_EQ(pg2.pfn, pg.pfn);
	ASSERT_EQ(stats(h).faults_in, 1);
	ASSERT_EQ(stats(h).pinned, 2);
	h->ops->mark_page(h, pg.pfn, true, true);
	h->ops->put_page(h, pg.pfn, true, true);
	h->ops->put_page(h, pg2.pfn, true, false);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ(stats(h).frames_live, 1);
	/* Host reads of pages never touched read zeros and allocate nothing. */
	ASSERT(read_is(h, hva + 2 * ps, 0));
	ASSERT_EQ(stats(h).frames_live, 1);
	/* Host bytes and guest bytes are the same frame. */
	write_tag(h, hva + ps, 7);
	ASSERT(page_is(h->ops->page_ptr(h, pg.pfn), ps, 7));
	fill_page(h->ops->page_ptr(h, pg.pfn), ps, 8);
	ASSERT(read_is(h, hva + ps, 8));
	/* Unaligned host access across a page boundary. */
	{
		uint8_t in[100], out[100];
		unsigned i;

		for (i = 0; i < 100; i++)
			in[i] = (uint8_t)(i * 3 + 1);
		ASSERT_EQ_INT(gpamm_sim_write(h, hva + 2 * ps - 50, in, 100), 0);
		ASSERT_EQ_INT(gpamm_sim_read(h, hva + 2 * ps - 50, out, 100), 0);
		ASSERT(!memcmp(in, out, 100));
		ASSERT_EQ_INT(gpamm_sim_read(h, hva + 4 * ps - 50, out, 100), -EFAULT);
		ASSERT_EQ_INT(gpamm_sim_write(h, hva - 50, in, 100), -EFAULT);
		ASSERT_EQ_INT(gpamm_sim_write(h, hva, NULL, 100), -EINVAL);
	}
	ASSERT_EQ(stats(h).frames_live, 2);
	ASSERT_EQ(stats(h).stale_accesses, 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 4 * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	gpamm_host_destroy(h);
}

static void test_sim_flags(void)
{
	struct gpamm_host *h = sim(16, 8, 4);
	const uint64_t ps = 1ULL << 16;
	struct gpamm_host_page pg;
	uint64_t ro, dev, rodev;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 2 * ps, GPAMM_SIM_READONLY, &ro), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 2 * ps, GPAMM_SIM_DEVICE, &dev), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, ps, GPAMM_SIM_DEVICE | GPAMM_SIM_READONLY, &rodev), 0);

	ASSERT_EQ_INT(touch(h, ro, false, &pg), 0);
	ASSERT_EQ(pg.flags, 0);
	ASSERT_EQ(pg.map_shift, 16);
	ASSERT_EQ_INT(touch(h, ro, true, &pg), -EFAULT);
	ASSERT_EQ_INT(h->ops->check_access(h, ro, pg.pfn, true), -ESTALE);
	ASSERT_EQ_INT(gpamm_sim_mprotect(h, ro, ps, true), -EACCES);
	ASSERT_EQ_INT(gpamm_sim_write(h, ro, "x", 1), -EFAULT);

	ASSERT_EQ_INT(touch(h, dev, true, &pg), 0);
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE | GPAMM_HOST_PAGE_UNCACHED);
	ASSERT_EQ_INT(touch(h, rodev, false, &pg), 0);
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_UNCACHED);

	/* Device memory is never reclaimed, migrated, merged or dropped. */
	write_tag(h, dev, 3);
	write_tag(h, dev + ps, 3);
	ASSERT_EQ(gpamm_sim_reclaim(h, dev, 2 * ps, 10), 0);
	ASSERT_EQ(gpamm_sim_migrate(h, dev, 2 * ps), 0);
	ASSERT_EQ(gpamm_sim_merge(h, dev, 2 * ps), 0);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, dev, ps), -EINVAL);
	ASSERT(read_is(h, dev, 3));
	ASSERT_EQ(stats(h).swapped, 0);
	ASSERT_EQ(stats(h).frames_live, 4);
	gpamm_host_destroy(h);
}

/* ---- sim: events --------------------------------------------------------- */

static void test_sim_reclaim_swapin(void)
{
	struct gpamm_host *h = sim(12, 16, 4);
	const uint64_t ps = 4096;
	struct gpamm_host_page pg;
	struct fake_mn m;
	uint64_t hva, old, i;

	mn_init(&m, h);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 8 * ps, 0, &hva), 0);
	for (i = 0; i < 6; i++)
		write_tag(h, hva + i * ps, 100 + i);
	ASSERT_EQ(stats(h).frames_live, 6);
	old = pfn_of(h, hva + 2 * ps);

	/* One page: only it is invalidated, and it is still mapped at start. */
	mn_reset_log(&m);
	mn_watch(&m, hva + 2 * ps, old);
	ASSERT_EQ(gpamm_sim_reclaim(h, hva + 2 * ps, ps, 1), 1);
	assert_one_pair(&m, hva + 2 * ps, hva + 3 * ps);
	ASSERT_EQ_INT(m.probe_start, 0);
	ASSERT_EQ_INT(m.probe_end, -ESTALE);
	ASSERT_EQ(stats(h).swapped, 1);
	ASSERT_EQ(stats(h).frames_live, 5);
	ASSERT_EQ(stats(h).stale_accesses, 1);

	/* @max bounds the count; holes in the range are skipped. */
	mn_reset_log(&m);
	ASSERT_EQ(gpamm_sim_reclaim(h, hva, 8 * ps, 2), 2);
	assert_one_pair(&m, hva, hva + 2 * ps);
	ASSERT_EQ(stats(h).swapped, 3);
	/* Swap holds 4: one more fits, then it is full. */
	mn_reset_log(&m);
	ASSERT_EQ(gpamm_sim_reclaim(h, hva, 8 * ps, 100), 1);
	assert_one_pair(&m, hva + 3 * ps, hva + 4 * ps);
	mn_reset_log(&m);
	ASSERT_EQ_INT(gpamm_sim_reclaim(h, hva, 8 * ps, 100), -ENOSPC);
	ASSERT_EQ(m.nlog, 0);
	ASSERT_EQ(stats(h).swapped, 4);
	ASSERT_EQ(stats(h).frames_live, 2);

	/* Swap-in by the host's own read and by get_page; contents intact. */
	ASSERT(read_is(h, hva + 2 * ps, 102));
	ASSERT_EQ(stats(h).swapped, 3);
	ASSERT_EQ_INT(h->ops->get_page(h, hva, true, &pg), 0);
	ASSERT(page_is(h->ops->page_ptr(h, pg.pfn), ps, 100));
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE);
	h->ops->put_page(h, pg.pfn, true, true);
	ASSERT_EQ(stats(h).swapped, 2);
	for (i = 0; i < 6; i++)
		ASSERT(read_is(h, hva + i * ps, 100 + i));
	ASSERT_EQ(stats(h).swapped, 0);
	ASSERT_EQ(stats(h).frames_live, 6);

	/* Swapped pages dropped by dontneed free their slot and read zeros. */
	ASSERT_EQ(gpamm_sim_reclaim(h, hva, 2 * ps, 2), 2);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, ps), 0);
	ASSERT_EQ(stats(h).swapped, 1);
	ASSERT(read_is(h, hva, 0));
	ASSERT(read_is(h, hva + ps, 101));
	ASSERT_EQ(m.errors, 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 8 * ps), 0);
	ASSERT_EQ(stats(h).swapped, 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	h->ops->notifier_unregister(h, &m);
	gpamm_host_destroy(h);
	ASSERT_EQ(m.releases, 0);
}

static void test_sim_migrate(void)
{
	struct gpamm_host *h = sim(14, 16, 0);
	const uint64_t ps = 1ULL << 14;
	struct fake_mn m;
	uint64_t hva, old, new, ev;

	mn_init(&m, h);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * ps, 0, &hva), 0);
	write_tag(h, hva + ps, 11);
	write_tag(h, hva + 2 * ps, 12);
	old = pfn_of(h, hva + ps);
	ev = stats(h).events;

	mn_reset_log(&m);
	mn_watch(&m, hva + ps, old);
	ASSERT_EQ(gpamm_sim_migrate(h, hva, 4 * ps), 2);
	assert_one_pair(&m, hva + ps, hva + 3 * ps);
	ASSERT_EQ_INT(m.probe_start, 0);
	ASSERT_EQ_INT(m.probe_end, -ESTALE);
	ASSERT_EQ(stats(h).events, ev + 1);

	new = pfn_of(h, hva + ps);
	ASSERT_NE(new, old);
	ASSERT(page_is(h->ops->page_ptr(h, new), ps, 11));
	ASSERT(read_is(h, hva + 2 * ps, 12));
	/* The old frame is dead: poisoned, and a guest access through it is caught. */
	ASSERT(bytes_are(h->ops->page_ptr(h, old), ps, POISON));
	ASSERT_EQ(stats(h).stale_accesses, 1);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + ps, old, false), -ESTALE);
	ASSERT_EQ(stats(h).stale_accesses, 2);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + ps, new, true), 0);
	/* The right frame at the wrong HVA is stale too. */
	ASSERT_EQ_INT(h->ops->check_access(h, hva + 2 * ps, new, false), -ESTALE);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + 3 * ps, new, false), -ESTALE);
	ASSERT_EQ_INT(h->ops->check_access(h, 12345, new, false), -ESTALE);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + ps, 1, false), -ESTALE);
	ASSERT_EQ(stats(h).stale_accesses, 6);
	ASSERT_EQ(stats(h).frames_live, 2);

	/* Nothing present: nothing moved, no notifier call. */
	mn_reset_log(&m);
	ASSERT_EQ(gpamm_sim_migrate(h, hva + 3 * ps, ps), 0);
	ASSERT_EQ(m.nlog, 0);
	ASSERT_EQ_INT(gpamm_sim_migrate(h, hva + 1, ps), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_migrate(h, hva, 0), -EINVAL);
	ASSERT_EQ(m.errors, 0);
	gpamm_host_destroy(h); /* still registered: released */
	ASSERT_EQ(m.releases, 1);
}

static void test_sim_merge_cow(void)
{
	struct gpamm_host *h = sim(12, 16, 0);
	const uint64_t ps = 4096;
	struct gpamm_host_page pg;
	struct fake_mn m;
	uint64_t hva, A, B, C, D, shared, pb;

	mn_init(&m, h);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 6 * ps, 0, &hva), 0);
	A = hva, B = hva + ps, C = hva + 2 * ps, D = hva + 3 * ps;
	write_tag(h, A, 5);
	write_tag(h, B, 5);
	write_tag(h, C, 6);
	write_tag(h, D, 5);
	/* Page 4 is never touched; page 5 is zero but present. */
	ASSERT_EQ_INT(touch(h, hva + 5 * ps, false, &pg), 0);
	ASSERT_EQ(stats(h).frames_live, 5);
	shared = pfn_of(h, A);

	mn_reset_log(&m);
	ASSERT_EQ(gpamm_sim_merge(h, hva, 6 * ps), 2);
	/* Candidates are invalidated, in runs, before they are compared. */
	ASSERT_EQ(m.errors, 0);
	ASSERT_EQ(m.nlog, 4);
	ASSERT_EQ(m.log[0].kind, 's');
	ASSERT_EQ(m.log[0].start, A);
	ASSERT_EQ(m.log[0].end, A + 4 * ps);
	ASSERT_EQ(m.log[1].kind, 's');
	ASSERT_EQ(m.log[1].start, hva + 5 * ps);
	ASSERT_EQ(m.log[2].kind, 'e');
	ASSERT_EQ(m.log[2].start, A);
	ASSERT_EQ(m.log[3].kind, 'e');
	ASSERT_EQ(m.log[3].end, hva + 6 * ps);
	ASSERT_EQ(stats(h).frames_live, 3);

	ASSERT_EQ_INT(touch(h, B, false, &pg), 0);
	ASSERT_EQ(pg.pfn, shared);
	ASSERT_EQ(pg.flags, 0); /* shared: read-only until a write copies */
	ASSERT_EQ(pfn_of(h, D), shared);
	ASSERT_NE(pfn_of(h, C), shared);
	ASSERT_EQ_INT(h->ops->check_access(h, A, shared, false), 0);
	ASSERT_EQ_INT(h->ops->check_access(h, A, shared, true), -ESTALE);
	/* Merging again changes nothing. */
	ASSERT_EQ(gpamm_sim_merge(h, hva, 6 * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 3);

	/* A guest write to B copies: B's read-only translation goes first. */
	mn_reset_log(&m);
	mn_watch(&m, B, shared);
	ASSERT_EQ_INT(h->ops->get_page(h, B, true, &pg), 0);
	assert_one_pair(&m, B, B + ps);
	ASSERT_EQ_INT(m.probe_start, 0);
	ASSERT_EQ_INT(m.probe_end, -ESTALE);
	pb = pg.pfn;
	ASSERT_NE(pb, shared);
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT(page_is(h->ops->page_ptr(h, pb), ps, 5));
	fill_page(h->ops->page_ptr(h, pb), ps, 9);
	h->ops->put_page(h, pb, true, true);
	ASSERT(read_is(h, B, 9));
	ASSERT(read_is(h, A, 5));
	ASSERT(read_is(h, D, 5));
	ASSERT_EQ(stats(h).frames_live, 4);

	/* A host write to D copies too. */
	mn_reset_log(&m);
	write_tag(h, D, 10);
	assert_one_pair(&m, D, D + ps);
	ASSERT(read_is(h, A, 5));
	ASSERT_NE(pfn_of(h, D), shared);
	/* A is the last user: its write reuses the frame, no invalidation needed. */
	mn_reset_log(&m);
	ASSERT_EQ_INT(touch(h, A, true, &pg), 0);
	ASSERT_EQ(pg.pfn, shared);
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT_EQ(m.nlog, 0);
	ASSERT_EQ(stats(h).frames_live, 5);

	/* Zero pages merge, and the last unmap of a shared frame frees it. */
	ASSERT(read_is(h, hva + 4 * ps, 0));
	ASSERT_EQ_INT(touch(h, hva + 4 * ps, true, &pg), 0);
	write_tag(h, D, 6); /* same as C */
	ASSERT_EQ(gpamm_sim_merge(h, hva, 6 * ps), 2);
	ASSERT_EQ(stats(h).frames_live, 4);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva + 4 * ps, ps), 0);
	ASSERT_EQ(stats(h).frames_live, 4);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva + 5 * ps, ps), 0);
	ASSERT_EQ(stats(h).frames_live, 3);
	ASSERT(read_is(h, C, 6));
	ASSERT(read_is(h, D, 6));
	ASSERT_EQ(m.errors, 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 6 * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	h->ops->notifier_unregister(h, &m);
	gpamm_host_destroy(h);
}

static void test_sim_dontneed(void)
{
	struct gpamm_host *h = sim(12, 8, 0);
	const uint64_t ps = 4096;
	struct gpamm_host_page pg;
	struct fake_mn m;
	uint64_t hva, old;

	mn_init(&m, h);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * ps, 0, &hva), 0);
	write_tag(h, hva, 1);
	write_tag(h, hva + ps, 2);
	old = pfn_of(h, hva + ps);
	mn_reset_log(&m);
	mn_watch(&m, hva + ps, old);
	/* The whole range is invalidated, present or not. */
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva + ps, 3 * ps), 0);
	assert_one_pair(&m, hva + ps, hva + 4 * ps);
	ASSERT_EQ_INT(m.probe_start, 0);
	ASSERT_EQ_INT(m.probe_end, -ESTALE);
	ASSERT_EQ(stats(h).frames_live, 1);
	ASSERT(read_is(h, hva + ps, 0));
	ASSERT(read_is(h, hva, 1));
	ASSERT_EQ_INT(touch(h, hva + ps, true, &pg), 0);
	ASSERT(read_is(h, hva + ps, 0));
	/* Ranges must be mapped and aligned; errors change nothing. */
	mn_reset_log(&m);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, 5 * ps), -ENOMEM);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva - ps, 2 * ps), -ENOMEM);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva + 1, ps), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, ps - 1), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, 0), -EINVAL);
	ASSERT_EQ(m.nlog, 0);
	ASSERT(read_is(h, hva, 1));
	ASSERT_EQ(m.errors, 0);
	gpamm_host_destroy(h);
}

static void test_sim_mprotect(void)
{
	struct gpamm_host *h = sim(14, 8, 0);
	const uint64_t ps = 1ULL << 14;
	struct gpamm_host_page pg;
	struct fake_mn m;
	uint64_t hva, p;

	mn_init(&m, h);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * ps, 0, &hva), 0);
	write_tag(h, hva, 1);
	p = pfn_of(h, hva);
	mn_reset_log(&m);
	mn_watch(&m, hva, p);
	ASSERT_EQ_INT(gpamm_sim_mprotect(h, hva, 2 * ps, false), 0);
	assert_one_pair(&m, hva, hva + 2 * ps);
	ASSERT_EQ_INT(m.probe_start, 0);
	ASSERT_EQ_INT(m.probe_end, 0); /* still mapped, read-only */
	ASSERT_EQ_INT(h->ops->check_access(h, hva, p, true), -ESTALE);

	ASSERT_EQ_INT(touch(h, hva, true, &pg), -EFAULT);
	ASSERT_EQ_INT(touch(h, hva + ps, true, &pg), -EFAULT); /* not present either */
	ASSERT_EQ_INT(touch(h, hva, false, &pg), 0);
	ASSERT_EQ(pg.flags, 0);
	ASSERT_EQ(pg.pfn, p);
	ASSERT_EQ_INT(gpamm_sim_write(h, hva + ps - 1, "ab", 2), -EFAULT);
	ASSERT(read_is(h, hva, 1));
	/* Outside the range stays writable. */
	ASSERT_EQ_INT(touch(h, hva + 2 * ps, true, &pg), 0);
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE);
	/* Dropping the page keeps the protection. */
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, ps), 0);
	ASSERT_EQ_INT(touch(h, hva, true, &pg), -EFAULT);

	mn_reset_log(&m);
	ASSERT_EQ_INT(gpamm_sim_mprotect(h, hva, 2 * ps, true), 0);
	assert_one_pair(&m, hva, hva + 2 * ps);
	ASSERT_EQ_INT(touch(h, hva, true, &pg), 0);
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT_EQ_INT(touch(h, hva + ps, true, &pg), 0);
	write_tag(h, hva + ps, 4);
	ASSERT_EQ_INT(gpamm_sim_mprotect(h, hva, 5 * ps, false), -ENOMEM);
	ASSERT_EQ_INT(gpamm_sim_mprotect(h, hva + 3, ps, false), -EINVAL);
	ASSERT_EQ_INT(touch(h, hva, true, &pg), 0);
	ASSERT_EQ(m.errors, 0);
	gpamm_host_destroy(h);
}

static void test_sim_munmap(void)
{
	struct gpamm_host *h = sim(12, 16, 4);
	const uint64_t ps = 4096;
	struct gpamm_host_page pg;
	struct fake_mn m;
	uint64_t a, b, p1, ev;

	mn_init(&m, h);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * ps, 0, &a), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 2 * ps, 0, &b), 0);
	write_tag(h, a + ps, 1);
	write_tag(h, a + 2 * ps, 2);
	write_tag(h, b, 3);
	ASSERT_EQ(gpamm_sim_reclaim(h, a + 2 * ps, ps, 1), 1);
	p1 = pfn_of(h, a + ps);
	ev = stats(h).events;

	/* Partial: the middle pages go, the rest of the VMA stays. */
	mn_reset_log(&m);
	mn_watch(&m, a + ps, p1);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, a + ps, 2 * ps), 0);
	assert_one_pair(&m, a + ps, a + 3 * ps);
	ASSERT_EQ_INT(m.probe_start, 0);
	ASSERT_EQ_INT(m.probe_end, -ESTALE);
	ASSERT_EQ(stats(h).events, ev + 1);
	ASSERT_EQ(stats(h).swapped, 0);
	ASSERT_EQ(stats(h).frames_live, 1);
	ASSERT_EQ_INT(touch(h, a + ps, false, &pg), -EFAULT);
	ASSERT_EQ_INT(gpamm_sim_read(h, a + 2 * ps, &pg, 8), -EFAULT);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, a, 2 * ps), -ENOMEM);
	ASSERT_EQ_INT(touch(h, a, true, &pg), 0);
	ASSERT_EQ_INT(touch(h, a + 3 * ps, true, &pg), 0);

	/* A range over both VMAs and the gap: one pair per VMA, clipped. */
	mn_reset_log(&m);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, a, b + 2 * ps - a), 0);
	ASSERT_EQ(m.errors, 0);
	ASSERT_EQ(m.nlog, 4);
	ASSERT_EQ(m.log[0].start, a);
	ASSERT_EQ(m.log[0].end, a + 4 * ps);
	ASSERT_EQ(m.log[1].kind, 'e');
	ASSERT_EQ(m.log[2].start, b);
	ASSERT_EQ(m.log[2].end, b + 2 * ps);
	ASSERT_EQ(m.log[3].kind, 'e');
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ_INT(touch(h, a, false, &pg), -EFAULT);
	ASSERT_EQ_INT(touch(h, b, false, &pg), -EFAULT);
	/* Unmapping nothing is fine, and calls nobody. */
	mn_reset_log(&m);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, a, 4 * ps), 0);
	ASSERT_EQ(m.nlog, 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, a + 1, 4 * ps), -EINVAL);
	gpamm_host_destroy(h);
}

static void test_sim_pinned(void)
{
	struct gpamm_host *h = sim(12, 16, 8);
	const uint64_t ps = 4096;
	struct gpamm_host_page pin;
	struct fake_mn m;
	uint64_t hva, i;

	mn_init(&m, h);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * ps, 0, &hva), 0);
	for (i = 0; i < 4; i++)
		write_tag(h, hva + i * ps, 50);
	ASSERT_EQ_INT(h->ops->get_page(h, hva + ps, false, &pin), 0);

	/* Pinned: skipped by migrate, merge, reclaim; the runs go around it. */
	mn_reset_log(&m);
	ASSERT_EQ(gpamm_sim_migrate(h, hva, 4 * ps), 3);
	ASSERT_EQ(m.nlog, 4);
	ASSERT_EQ(m.log[0].start, hva);
	ASSERT_EQ(m.log[0].end, hva + ps);
	ASSERT_EQ(m.log[1].start, hva + 2 * ps);
	ASSERT_EQ(m.log[1].end, hva + 4 * ps);
	ASSERT_EQ(pfn_of(h, hva + ps), pin.pfn);
	ASSERT_EQ(gpamm_sim_merge(h, hva, 4 * ps), 2);
	ASSERT_EQ(pfn_of(h, hva + ps), pin.pfn);
	ASSERT_EQ(stats(h).frames_live, 2);
	ASSERT_EQ(gpamm_sim_reclaim(h, hva + ps, ps, 1), 0);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + ps, pin.pfn, true), 0);
	/* Shared frames are not reclaimed either (no reverse map). */
	ASSERT_EQ(gpamm_sim_reclaim(h, hva, 4 * ps, 4), 0);
	ASSERT_EQ(stats(h).swapped, 0);

	/* Unmapping a pinned page unmaps it, but the frame lives until the put. */
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 4 * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 1);
	ASSERT_EQ(stats(h).pinned, 1);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + ps, pin.pfn, false), -ESTALE);
	ASSERT(page_is(h->ops->page_ptr(h, pin.pfn), ps, 50));
	h->ops->put_page(h, pin.pfn, true, false);
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ(m.errors, 0);
	gpamm_host_destroy(h);
}

static void test_sim_enomem(void)
{
	struct gpamm_host *h = sim(12, 4, 2);
	const uint64_t ps = 4096;
	struct gpamm_host_page pg;
	uint64_t hva, i;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 8 * ps, 0, &hva), 0);
	for (i = 0; i < 4; i++)
		ASSERT_EQ_INT(touch(h, hva + i * ps, true, &pg), 0);
	ASSERT_EQ(stats(h).frames_live, 4);
	ASSERT_EQ_INT(h->ops->get_page(h, hva + 4 * ps, false, &pg), -ENOMEM);
	ASSERT_EQ_INT(gpamm_sim_write(h, hva + 4 * ps, "x", 1), -ENOMEM);
	ASSERT_EQ_INT(gpamm_sim_migrate(h, hva, 8 * ps), -ENOMEM);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ(stats(h).faults_in, 4);
	/* Swap two out; swap-in then needs a frame. */
	ASSERT_EQ(gpamm_sim_reclaim(h, hva, 8 * ps, 8), 2);
	ASSERT_EQ_INT(touch(h, hva + 4 * ps, true, &pg), 0);
	ASSERT_EQ_INT(touch(h, hva + 5 * ps, true, &pg), 0);
	ASSERT_EQ_INT(touch(h, hva, false, &pg), -ENOMEM);
	ASSERT_EQ_INT(gpamm_sim_read(h, hva, &pg, 8), -ENOMEM);
	/* Merging the zero pages frees frames; the swapped page comes back. */
	ASSERT_EQ(gpamm_sim_merge(h, hva, 8 * ps), 3);
	ASSERT_EQ(stats(h).frames_live, 1);
	ASSERT_EQ_INT(touch(h, hva, false, &pg), 0);
	/* Breaking copy-on-write needs a frame as well. */
	ASSERT_EQ_INT(touch(h, hva + 6 * ps, true, &pg), 0);
	ASSERT_EQ_INT(touch(h, hva + 7 * ps, true, &pg), 0);
	ASSERT_EQ(stats(h).frames_live, 4);
	ASSERT_EQ_INT(touch(h, hva + 2 * ps, true, &pg), -ENOMEM);
	ASSERT_EQ_INT(touch(h, hva + 2 * ps, false, &pg), 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 8 * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ(stats(h).swapped, 0);
	gpamm_host_destroy(h);
}

static void test_sim_notifier_registry(void)
{
	static const struct gpamm_mmu_notifier_ops none;
	struct gpamm_host *h = sim(12, 4, 0);
	struct fake_mn m[17];
	uint64_t hva;
	unsigned i;

	for (i = 0; i < 16; i++)
		mn_init(&m[i], h);
	ASSERT_EQ_INT(h->ops->notifier_register(h, &fake_ops, &m[16]), -ENOSPC);
	ASSERT_EQ_INT(h->ops->notifier_register(h, &fake_ops, &m[3]), -EEXIST);
	ASSERT_EQ_INT(h->ops->notifier_register(h, &fake_ops, NULL), -EINVAL);
	h->ops->notifier_unregister(h, &m[3]);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4096, 0, &hva), 0);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, 4096), 0);
	for (i = 0; i < 16; i++) {
		ASSERT_EQ(m[i].nlog, i == 3 ? 0 : 2);
		ASSERT_EQ(m[i].errors, 0);
	}
	/* Notifiers without callbacks are allowed. */
	h->ops->notifier_unregister(h, &m[4]);
	ASSERT_EQ_INT(h->ops->notifier_register(h, &none, &m[16]), 0);
	ASSERT_EQ_INT(gpamm_sim_mprotect(h, hva, 4096, false), 0);
	ASSERT_EQ(stats(h).events, 2);
	gpamm_host_destroy(h);
	ASSERT_EQ(m[0].releases, 1);
	ASSERT_EQ(m[3].releases, 0);
	ASSERT_EQ(m[4].releases, 0);
}

/* ---- random sequences against a model -------------------------------------- */

#define R_VMAS  4
#define R_PAGES 12
#define R_TAGS  5 /* few distinct contents, so merges happen */

struct rvma {
	uint64_t hva;
	unsigned flags;
	bool live;
	bool mapped[R_PAGES];
	bool ro[R_PAGES];
	uint64_t tag[R_PAGES];
};

/* What a run exercised, so a quiet generator does not pass unnoticed. */
static struct {
	uint64_t merged, moved, swapped, enomem, faults, xlat_writes;
} rsum;

struct rstate {
	struct gpamm_host *h;
	uint64_t ps;
	struct tap_rng rng;
	struct fake_mn m;
	struct rvma v[R_VMAS];
	void *buf;
};

static bool r_writable(const struct rvma *v, unsigned i)
{
	return !(v->flags & GPAMM_SIM_READONLY) && !v->ro[i];
}

/* Every translation the fake MMU still holds is still the host's mapping. */
static void r_check_xlats(struct rstate *r)
{
	unsigned i;

	for (i = 0; i < r->m.nxl; i++) {
		struct xlat *x = &r->m.xl[i];

		ASSERT_EQ_INT(r->h->ops->check_access(r->h, x->hva, x->pfn, x->writable), 0);
	}
}

static void r_install(struct rstate *r, uint64_t hva, const struct gpamm_host_page *pg)
{
	unsigned i;

	/* One translation per HVA, as in a real GPA table. */
	for (i = 0; i < r->m.nxl; i++)
		if (r->m.xl[i].hva == hva)
			r->m.xl[i] = r->m.xl[--r->m.nxl];
	if (r->m.nxl < 512)
		r->m.xl[r->m.nxl++] = (struct xlat){ hva, pg->pfn,
						     !!(pg->flags & GPAMM_HOST_PAGE_WRITABLE) };
}

/* A random page range inside VMA @vi: [*first, *first + *n). */
static void r_range(struct rstate *r, unsigned *first, unsigned *n)
{
	*first = (unsigned)tap_below(&r->rng, R_PAGES);
	*n = 1 + (unsigned)tap_below(&r->rng, R_PAGES - *first);
}

static void r_step(struct rstate *r)
{
	struct gpamm_host *h = r->h;
	unsigned vi = (unsigned)tap_below(&r->rng, R_VMAS), i, first, n, k;
	struct rvma *v = &r->v[vi];
	struct gpamm_host_page pg;
	uint64_t hva, tag, op = tap_below(&r->rng, 100);
	bool live_full;
	int64_t ret;

	if (!v->live) {
		unsigned flags = 0;

		if (tap_below(&r->rng, 6) == 0)
			flags |= GPAMM_SIM_READONLY;
		if (tap_below(&r->rng, 6) == 0)
			flags |= GPAMM_SIM_DEVICE;
		ASSERT_EQ_INT(gpamm_sim_mmap(h, R_PAGES * r->ps, flags, &v->hva), 0);
		v->flags = flags;
		v->live = true;
		for (i = 0; i < R_PAGES; i++) {
			v->mapped[i] = true;
			v->ro[i] = false;
			v->tag[i] = 0;
		}
		return;
	}
	i = (unsigned)tap_below(&r->rng, R_PAGES);
	hva = v->hva + i * r->ps;
	tag = 1 + tap_below(&r->rng, R_TAGS);
	r_range(r, &first, &n);
	live_full = stats(h).frames_live == stats(h).frames_total;

	if (op < 25) {
		/* Guest fault: pin, check, access, install, unpin. */
		bool write = tap_below(&r->rng, 2);

		ret = h->ops->get_page(h, hva, write, &pg);
		if (!v->mapped[i] || (write && !r_writable(v, i))) {
			ASSERT_EQ_INT(ret, -EFAULT);
			return;
		}
		if (ret == -ENOMEM) {
			ASSERT(live_full);
			rsum.enomem++;
			return;
		}
		ASSERT_EQ_INT(ret, 0);
		rsum.faults++;
		ASSERT_EQ(!!(pg.flags & GPAMM_HOST_PAGE_UNCACHED), !!(v->flags & GPAMM_SIM_DEVICE));
		if (write)
			ASSERT(pg.flags & GPAMM_HOST_PAGE_WRITABLE);
		if (!r_writable(v, i))
			ASSERT(!(pg.flags & GPAMM_HOST_PAGE_WRITABLE));
		ASSERT_EQ_INT(h->ops->check_access(h, hva, pg.pfn, write), 0);
		ASSERT(page_is(h->ops->page_ptr(h, pg.pfn), r->ps, v->tag[i]));
		if (write) {
			fill_page(h->ops->page_ptr(h, pg.pfn), r->ps, tag);
			v->tag[i] = tag;
		}
		r_install(r, hva, &pg);
		h->ops->put_page(h, pg.pfn, true, write);
	} else if (op < 40) {
		/* Guest access through a translation made earlier. */
		struct xlat *x;
		struct rvma *xv = NULL;

		if (!r->m.nxl)
			return;
		x = &r->m.xl[tap_below(&r->rng, r->m.nxl)];
		for (k = 0; k < R_VMAS; k++)
			if (r->v[k].live && x->hva - r->v[k].hva < R_PAGES * r->ps)
				xv = &r->v[k];
		ASSERT(xv);
		i = (unsigned)((x->hva - xv->hva) / r->ps);
		ASSERT_EQ_INT(h->ops->check_access(h, x->hva, x->pfn, false), 0);
		ASSERT(page_is(h->ops->page_ptr(h, x->pfn), r->ps, xv->tag[i]));
		if (x->writable && tap_below(&r->rng, 2)) {
			ASSERT_EQ_INT(h->ops->check_access(h, x->hva, x->pfn, true), 0);
			fill_page(h->ops->page_ptr(h, x->pfn), r->ps, tag);
			h->ops->mark_page(h, x->pfn, true, true);
			xv->tag[i] = tag;
			rsum.xlat_writes++;
		}
	} else if (op < 50) {
		/* Host read or write. */
		if (tap_below(&r->rng, 2)) {
			ret = gpamm_sim_read(h, hva, r->buf, r->ps);
			if (!v->mapped[i]) {
				ASSERT_EQ_INT(ret, -EFAULT);
			} else if (ret == -ENOMEM) {
				ASSERT(live_full);
			} else {
				ASSERT_EQ_INT(ret, 0);
				ASSERT(page_is(r->buf, r->ps, v->tag[i]));
			}
		} else {
			fill_page(r->buf, r->ps, tag);
			ret = gpamm_sim_write(h, hva, r->buf, r->ps);
			if (!v->mapped[i] || !r_writable(v, i)) {
				ASSERT_EQ_INT(ret, -EFAULT);
			} else if (ret == -ENOMEM) {
				ASSERT(live_full);
			} else {
				ASSERT_EQ_INT(ret, 0);
				v->tag[i] = tag;
			}
		}
	} else if (op < 60) {
		ret = gpamm_sim_reclaim(h, v->hva + first * r->ps, n * r->ps,
					tap_below(&r->rng, R_PAGES + 1));
		ASSERT(ret >= 0 || ret == -ENOSPC);
		rsum.swapped += ret > 0 ? (uint64_t)ret : 0;
	} else if (op < 70) {
		ret = gpamm_sim_migrate(h, v->hva + first * r->ps, n * r->ps);
		ASSERT(ret >= 0 || ret == -ENOMEM);
		rsum.moved += ret > 0 ? (uint64_t)ret : 0;
	} else if (op < 80) {
		/* Sometimes across every VMA, gaps included. */
		if (tap_below(&r->rng, 3) == 0)
			ret = gpamm_sim_merge(h, 1ULL << 40, 1ULL << 46);
		else
			ret = gpamm_sim_merge(h, v->hva + first * r->ps, n * r->ps);
		ASSERT(ret >= 0);
		rsum.merged += (uint64_t)ret;
	} else if (op < 87) {
		bool all = true;

		for (k = first; k < first + n; k++)
			all &= v->mapped[k];
		ret = gpamm_sim_madv_dontneed(h, v->hva + first * r->ps, n * r->ps);
		if (!all) {
			ASSERT_EQ_INT(ret, -ENOMEM);
		} else if (v->flags & GPAMM_SIM_DEVICE) {
			ASSERT_EQ_INT(ret, -EINVAL);
		} else {
			ASSERT_EQ_INT(ret, 0);
			for (k = first; k < first + n; k++)
				v->tag[k] = 0;
		}
	} else if (op < 95) {
		bool all = true, w = tap_below(&r->rng, 2);

		for (k = first; k < first + n; k++)
			all &= v->mapped[k];
		ret = gpamm_sim_mprotect(h, v->hva + first * r->ps, n * r->ps, w);
		if (!all) {
			ASSERT_EQ_INT(ret, -ENOMEM);
		} else if (w && (v->flags & GPAMM_SIM_READONLY)) {
			ASSERT_EQ_INT(ret, -EACCES);
		} else {
			ASSERT_EQ_INT(ret, 0);
			for (k = first; k < first + n; k++)
				v->ro[k] = !w;
		}
	} else {
		bool any = false;

		ASSERT_EQ_INT(gpamm_sim_munmap(h, v->hva + first * r->ps, n * r->ps), 0);
		for (k = first; k < first + n; k++)
			v->mapped[k] = false;
		for (k = 0; k < R_PAGES; k++)
			any |= v->mapped[k];
		v->live = any;
	}
}

static void r_run(uint64_t seed, unsigned shift, unsigned steps)
{
	struct rstate r;
	struct gpamm_host_stats st;
	unsigned s, k, i;

	memset(&r, 0, sizeof(r));
	tap_rng_seed(&r.rng, seed);
	r.ps = 1ULL << shift;
	/* Fewer frames than pages, so that ENOMEM and merges matter. */
	r.h = sim(shift, R_VMAS * R_PAGES / 3, R_PAGES);
	r.buf = malloc(r.ps);
	ASSERT(r.buf);
	mn_init(&r.m, r.h);
	for (s = 0; s < steps; s++) {
		r_step(&r);
		if (r.m.errors)
			tap_diag("step %u: %s", s, r.m.err);
		ASSERT_EQ(r.m.errors, 0);
		ASSERT_EQ(r.m.depth, 0);
		r_check_xlats(&r);
		st = stats(r.h);
		ASSERT_EQ(st.pinned, 0);
		ASSERT_LE(st.frames_live, st.frames_total);
		ASSERT_LE(st.swapped, R_PAGES);
		ASSERT_EQ(st.stale_accesses, 0);
	}
	/* Everything the model knows, read back by the host. */
	for (k = 0; k < R_VMAS; k++) {
		struct rvma *v = &r.v[k];

		if (!v->live)
			continue;
		for (i = 0; i < R_PAGES; i++) {
			uint64_t hva = v->hva + i * r.ps;
			int ret;

			if (!v->mapped[i]) {
				ASSERT_EQ_INT(gpamm_sim_read(r.h, hva, r.buf, r.ps), -EFAULT);
				continue;
			}
			/* Make room for swap-ins: the model does not care where. */
			ret = gpamm_sim_read(r.h, hva, r.buf, r.ps);
			if (ret == -ENOMEM) {
				ASSERT(gpamm_sim_merge(r.h, 1ULL << 40, 1ULL << 46) >= 0);
				ret = gpamm_sim_read(r.h, hva, r.buf, r.ps);
			}
			if (ret == -ENOMEM)
				continue; /* pool genuinely full of distinct pages */
			ASSERT_EQ_INT(ret, 0);
			ASSERT(page_is(r.buf, r.ps, v->tag[i]));
		}
		ASSERT_EQ_INT(gpamm_sim_munmap(r.h, v->hva, R_PAGES * r.ps), 0);
	}
	st = stats(r.h);
	ASSERT_EQ(st.frames_live, 0);
	ASSERT_EQ(st.swapped, 0);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ(r.m.nxl, 0);
	ASSERT_EQ(r.m.errors, 0);
	r.h->ops->notifier_unregister(r.h, &r.m);
	gpamm_host_destroy(r.h);
	free(r.buf);
}

static void test_sim_random(void)
{
	static const unsigned shifts[] = { 12, 14, 16 };
	uint64_t seed = tap_seed();
	struct tap_rng top;
	unsigned runs = (unsigned)(30 * tap_scale()), i;

	tap_rng_seed(&top, seed);
	for (i = 0; i < runs; i++) {
		uint64_t s = tap_rand(&top);

		r_run(s, shifts[i % 3], 400);
	}
	tap_diag("%u runs: %llu faults, %llu guest writes via old translations, %llu merged, "
		 "%llu migrated, %llu swapped out, %llu ENOMEM", runs,
		 (unsigned long long)rsum.faults, (unsigned long long)rsum.xlat_writes,
		 (unsigned long long)rsum.merged, (unsigned long long)rsum.moved,
		 (unsigned long long)rsum.swapped, (unsigned long long)rsum.enomem);
	ASSERT(rsum.merged && rsum.moved && rsum.swapped && rsum.xlat_writes);
}

/* ---- concurrency: pins against events, lock-free puts ---------------------- */

#define C_THREADS 4
#define C_PAGES   4 /* per thread: nobody else touches them, so pins hold */

struct cshared {
	struct gpamm_host *h;
	uint64_t hva, ps;
	unsigned iters;
};

struct cworker {
	struct cshared *c;
	unsigned id;
	uint64_t seed;
	uint64_t tag[C_PAGES];
};

static void *c_worker(void *arg)
{
	struct cworker *w = arg;
	struct cshared *c = w->c;
	struct gpamm_host *h = c->h;
	struct tap_rng rng;
	unsigned n;

	tap_rng_seed(&rng, w->seed);
	for (n = 0; n < c->iters; n++) {
		unsigned i = (unsigned)tap_below(&rng, C_PAGES);
		uint64_t hva = c->hva + (w->id * C_PAGES + i) * c->ps;
		bool write = tap_below(&rng, 2);
		struct gpamm_host_page pg;
		int ret = h->ops->get_page(h, hva, write, &pg);

		if (ret) {
			tap_fail_async(__FILE__, __LINE__, "get_page failed");
			break;
		}
		/* Pinned, and only we write it: no event may move it now. */
		if (h->ops->check_access(h, hva, pg.pfn, write))
			tap_fail_async(__FILE__, __LINE__, "pinned page went stale");
		if (!page_is(h->ops->page_ptr(h, pg.pfn), c->ps, w->tag[i]))
			tap_fail_async(__FILE__, __LINE__, "contents lost");
		if (write) {
			w->tag[i] = 1 + tap_below(&rng, 3);
			fill_page(h->ops->page_ptr(h, pg.pfn), c->ps, w->tag[i]);
		}
		h->ops->put_page(h, pg.pfn, true, write);
	}
	return NULL;
}

static void test_sim_concurrent(void)
{
	const unsigned shift = 12, pages = C_THREADS * C_PAGES;
	struct cshared c = { .ps = 1ULL << shift };
	struct cworker w[C_THREADS];
	pthread_t t[C_THREADS];
	struct tap_rng rng;
	uint64_t events = 0;
	unsigned i;

	tap_rng_seed(&rng, tap_seed() ^ 0xc0ffee);
	c.h = sim(shift, pages + 8, pages);
	c.iters = (unsigned)(20000 * tap_scale());
	ASSERT_EQ_INT(gpamm_sim_mmap(c.h, pages * c.ps, 0, &c.hva), 0);
	for (i = 0; i < C_THREADS; i++) {
		w[i] = (struct cworker){ .c = &c, .id = i, .seed = tap_rand(&rng) };
		ASSERT_EQ_INT(pthread_create(&t[i], NULL, c_worker, &w[i]), 0);
	}
	/* Content-preserving events only, over every page, while they run. */
	for (i = 0; i < C_THREADS; i++) {
		while (pthread_tryjoin_np(t[i], NULL) != 0) {
			int64_t r;

			switch (tap_below(&rng, 3)) {
			case 0:
				r = gpamm_sim_reclaim(c.h, c.hva, pages * c.ps, 1 + tap_below(&rng, pages));
				ASSERT(r >= 0 || r == -ENOSPC);
				break;
			case 1:
				ASSERT(gpamm_sim_migrate(c.h, c.hva, pages * c.ps) >= 0);
				break;
			default:
				ASSERT(gpamm_sim_merge(c.h, c.hva, pages * c.ps) >= 0);
				break;
			}
			events++;
		}
	}
	tap_diag("%llu events against %u threads x %u pins", (unsigned long long)events,
		 C_THREADS, c.iters);
	ASSERT_EQ(stats(c.h).pinned, 0);
	ASSERT_EQ(stats(c.h).stale_accesses, 0);
	for (i = 0; i < pages; i++)
		ASSERT(read_is(c.h, c.hva + i * c.ps, w[i / C_PAGES].tag[i % C_PAGES]));
	ASSERT_EQ_INT(gpamm_sim_munmap(c.h, c.hva, pages * c.ps), 0);
	ASSERT_EQ(stats(c.h).frames_live, 0);
	gpamm_host_destroy(c.h);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_direct_create);
	TEST(test_direct_pins);
	TEST(test_direct_notifiers);
	TEST(test_sim_create);
	TEST(test_sim_mmap);
	TEST(test_sim_fault_zero);
	TEST(test_sim_flags);
	TEST(test_sim_reclaim_swapin);
	TEST(test_sim_migrate);
	TEST(test_sim_merge_cow);
	TEST(test_sim_dontneed);
	TEST(test_sim_mprotect);
	TEST(test_sim_munmap);
	TEST(test_sim_pinned);
	TEST(test_sim_enomem);
	TEST(test_sim_notifier_registry);
	TEST(test_sim_random);
	TEST(test_sim_concurrent);
	return tap_done();
}
