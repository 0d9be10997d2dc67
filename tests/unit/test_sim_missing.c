// SPDX-License-Identifier: MIT
/*
 * test_sim_missing - the sim host's missing pages (userfaultfd MISSING mode
 * and UFFDIO_COPY, for post-copy): gpamm_sim_register_missing,
 * gpamm_sim_unregister_missing, gpamm_sim_place_page, gpamm_sim_page_present.
 *
 * The handler under test is a small "network" (struct net): a call records
 * the request (once per page: it deduplicates), then waits until the page
 * is present (or the test releases it), and returns 0; the test, on its own
 * thread, plays the sender and places pages with gpamm_sim_place_page. It
 * can also fail at once with an errno, or place the page itself from inside
 * the handler (which is only possible when the handler holds no sim lock).
 *
 * Every ordering is forced: a test waits until the handler reports that it
 * is waiting, never for time to pass. A thread that should finish while a
 * handler waits runs as a job with a 10 s hang guard, which only turns a
 * deadlock (a sim lock held across the handler) into a clean failure.
 *
 *   1. a vCPU read of a missing page calls the handler (hva, write) through
 *      the MMU's slow fault, the page placed from another thread is read;
 *   2. while a handler waits, reclaim, migrate, merge, mprotect, host reads
 *      and another vCPU's faults in the same VMA (same host table page) all
 *      complete: no mm, VMA or page-table lock is held;
 *   3. two vCPUs waiting on one page both go on after one placement (each
 *      called the handler; the handler asked the network once);
 *   4. placing over a present or swapped page is -EEXIST and bad arguments
 *      -EINVAL, changing nothing; registration's errors;
 *   5. a failing handler exits the vCPU with a memory fault carrying its
 *      errno; the VMM places the page and the run goes on;
 *   6. madv_dontneed makes a placed page missing again; unregister (whole or
 *      trimmed) makes missing pages zero pages; events skip missing pages;
 *   7. gpamm_sim_read / gpamm_sim_write of missing pages call the handler
 *      (with the right @write), on the calling thread or waiting for another;
 *   8. an invalidation racing a waiting handler (dontneed + a new placement,
 *      munmap, mprotect): the fault retries, maps what the host has now or
 *      fails as the host now says, and no stale translation is left
 *      (checking mode: stale_accesses 0).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpamm/gpamm.h"
#include "gpamm/host.h"
#include "gpamm/pte.h"
#include "harness/park.h"
#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS        12
#define PSZ       (1ULL << PS)
#define NPG       64 /* one VMA of 64 pages: all in one host table page (512 PTEs) */
#define GPA0      0x100000ULL
#define GUARD_SEC 10

/* ---- page contents ------------------------------------------------------------ */

static uint64_t word_of(uint64_t tag, uint64_t k)
{
	return tag ? tag * 0x9e3779b97f4a7c15ULL + k : 0;
}

static void fill_page(void *p, uint64_t tag)
{
	uint64_t *w = p;

	for (uint64_t k = 0; k < PSZ / 8; k++)
		w[k] = word_of(tag, k);
}

static bool page_is(const void *p, uint64_t tag)
{
	const uint64_t *w = p;

	for (uint64_t k = 0; k < PSZ / 8; k++)
		if (w[k] != word_of(tag, k))
			return false;
	return true;
}

static bool host_page_is(struct gpamm_host *h, uint64_t hva, uint64_t tag)
{
	static uint64_t buf[PSZ / 8];

	return !gpamm_sim_read(h, hva, buf, PSZ) && page_is(buf, tag);
}

static void deadline(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += GUARD_SEC;
}

/* ---- the network: the missing-page handler ------------------------------------ */

struct net {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct gpamm_host *h;
	int fail;          /* nonzero: the handler returns it at once */
	bool self_place;   /* the handler places the page itself (tag self_tag(hva)) */
	bool hold;         /* waiting handlers ignore placements until net_release() */
	unsigned calls;    /* handler calls */
	unsigned requests; /* pages asked of the network: one per page, however many wait */
	unsigned waiting;  /* threads inside the handler, waiting for their page */
	unsigned gen;      /* net_release(): waiting handlers return 0 */
	uint64_t last_hva;
	bool last_write;
	uint64_t pending[16];
	unsigned npending;
};

static uint64_t self_tag(uint64_t hva)
{
	return (hva >> PS) ^ 0x5e1f;
}

static void net_init(struct net *n, struct gpamm_host *h)
{
	memset(n, 0, sizeof(*n));
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, NULL);
	n->h = h;
}

static void net_fini(struct net *n)
{
	pthread_mutex_destroy(&n->lock);
	pthread_cond_destroy(&n->cond);
}

/* Context: n->lock. The dedup: a page already asked for is not asked again. */
static void net_request_locked(struct net *n, uint64_t hva)
{
	for (unsigned k = 0; k < n->npending; k++)
		if (n->pending[k] == hva)
			return;
	if (n->npending < 16)
		n->pending[n->npending++] = hva;
	n->requests++;
}

static void net_received_locked(struct net *n, uint64_t hva)
{
	for (unsigned k = 0; k < n->npending; k++)
		if (n->pending[k] == hva) {
			n->pending[k] = n->pending[--n->npending];
			return;
		}
}

static int net_fn(void *arg, uint64_t hva, bool write)
{
	struct net *n = arg;
	struct timespec ts;
	unsigned gen;
	int r = 0;

	pthread_mutex_lock(&n->lock);
	n->calls++;
	n->last_hva = hva;
	n->last_write = write;
	pthread_cond_broadcast(&n->cond);
	if (n->fail || n->self_place) {
		r = n->fail;
		pthread_mutex_unlock(&n->lock);
		if (!r) {
			static uint64_t buf[PSZ / 8];

			fill_page(buf, self_tag(hva));
			/* from inside the handler: no sim lock may be held here */
			r = gpamm_sim_place_page(n->h, hva, buf);
			if (r == -EEXIST)
				r = 0;
		}
		return r;
	}
	net_request_locked(n, hva);
	n->waiting++;
	pthread_cond_broadcast(&n->cond);
	gen = n->gen;
	/* a longer guard than the test's own waits, so that those fail first */
	deadline(&ts);
	ts.tv_sec += 2 * GUARD_SEC;
	while ((n->hold || gpamm_sim_page_present(n->h, hva) != 1) && n->gen == gen) {
		if (pthread_cond_timedwait(&n->cond, &n->lock, &ts) == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	net_received_locked(n, hva);
	n->waiting--;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* The sender: place the page, then wake the handlers (which look again). */
static int net_place(struct net *n, uint64_t hva, uint64_t tag)
{
	static uint64_t buf[PSZ / 8];
	int r;

	fill_page(buf, tag);
	r = gpamm_sim_place_page(n->h, hva, buf);
	pthread_mutex_lock(&n->lock);
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* Waiting handlers return 0 without their page. */
static void net_release(struct net *n)
{
	pthread_mutex_lock(&n->lock);
	n->gen++;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

/* Until @k threads wait in the handler; false after the guard. */
static bool net_wait_waiting(struct net *n, unsigned k)
{
	struct timespec ts;
	bool ok = true;

	deadline(&ts);
	pthread_mutex_lock(&n->lock);
	while (n->waiting < k && ok)
		ok = pthread_cond_timedwait(&n->cond, &n->lock, &ts) != ETIMEDOUT;
	ok = n->waiting >= k;
	pthread_mutex_unlock(&n->lock);
	return ok;
}

static unsigned net_get(struct net *n, const unsigned *field)
{
	unsigned v;

	pthread_mutex_lock(&n->lock);
	v = *field;
	pthread_mutex_unlock(&n->lock);
	return v;
}

/* ---- jobs: a call on a thread of its own, waited for with a hang guard ---------- */

struct job {
	pthread_t tid;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	void (*fn)(struct job *);
	/* arguments and result */
	struct gpamm_host *h;
	struct gpamm_vcpu *v;
	uint64_t hva, len;
	int64_t ret;
	uint64_t buf[PSZ / 8];
};

static void *job_main(void *arg)
{
	struct job *j = arg;

	j->fn(j);
	pthread_mutex_lock(&j->lock);
	j->done = true;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

static void job_start(struct job *j, void (*fn)(struct job *))
{
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	j->done = false;
	j->fn = fn;
	ASSERT_EQ_INT(pthread_create(&j->tid, NULL, job_main, j), 0);
}

/* Whether the job finished within the guard. */
static bool job_wait(struct job *j)
{
	struct timespec ts;
	bool done;

	deadline(&ts);
	pthread_mutex_lock(&j->lock);
	while (!j->done && pthread_cond_timedwait(&j->cond, &j->lock, &ts) != ETIMEDOUT)
		;
	done = j->done;
	pthread_mutex_unlock(&j->lock);
	return done;
}

static void job_join(struct job *j)
{
	pthread_join(j->tid, NULL);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
}

static void job_run(struct job *j)
{
	j->ret = vt_run_once(j->v, 0);
}

static void job_read(struct job *j)
{
	j->ret = gpamm_sim_read(j->h, j->hva, j->buf, PSZ);
}

static void job_write(struct job *j)
{
	j->ret = gpamm_sim_write(j->h, j->hva, j->buf, PSZ);
}

static void job_reclaim(struct job *j)
{
	j->ret = gpamm_sim_reclaim(j->h, j->hva, j->len, 1);
}

static void job_migrate(struct job *j)
{
	j->ret = gpamm_sim_migrate(j->h, j->hva, j->len);
}

static void job_merge(struct job *j)
{
	j->ret = gpamm_sim_merge(j->h, j->hva, j->len);
}

static void job_mprotect_ro_rw(struct job *j)
{
	j->ret = gpamm_sim_mprotect(j->h, j->hva, j->len, false);
	if (!j->ret)
		j->ret = gpamm_sim_mprotect(j->h, j->hva, j->len, true);
}

/* ---- a VM over a sim host with one registered VMA -------------------------------- */

struct rig {
	struct gpamm_host *h;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v[2];
	uint64_t hva;
	struct net net;
};

static uint64_t pg(const struct rig *r, unsigned k)
{
	return r->hva + k * PSZ;
}

static uint64_t gpa(unsigned k)
{
	return GPA0 + k * PSZ;
}

static void rig_create(struct rig *r, bool reg)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 256, .swap_pages = 64,
				       .checking = true };
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(r, 0, sizeof(*r));
	r->h = gpamm_host_sim_create(&sc);
	ASSERT(r->h);
	net_init(&r->net, r->h);
	cfg.host = r->h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &r->vm), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(r->h, NPG * PSZ, 0, &r->hva), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(r->vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = GPA0, .memory_size = NPG * PSZ,
		.userspace_addr = r->hva }), 0);
	for (unsigned k = 0; k < 2; k++)
		ASSERT_EQ_INT(gpamm_vcpu_create(r->vm, k, &r->v[k]), 0);
	if (reg)
		ASSERT_EQ_INT(gpamm_sim_register_missing(r->h, r->hva, NPG * PSZ, net_fn, &r->net), 0);
}

static struct gpamm_vm_stats vm_stats(struct rig *r)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(r->vm, &st);
	return st;
}

static struct gpamm_host_stats host_stats(struct gpamm_host *h)
{
	struct gpamm_host_stats st;

	gpamm_host_stats(h, &st);
	return st;
}

/* Everything given back: no pin, no stale access, no frame left after munmap. */
static void rig_destroy(struct rig *r)
{
	struct gpamm_vm_stats st = vm_stats(r);
	struct gpamm_host_stats hs;

	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(r->vm), 0);
	gpamm_sim_munmap(r->h, r->hva, NPG * PSZ);
	hs = host_stats(r->h);
	ASSERT_EQ(hs.stale_accesses, 0);
	ASSERT_EQ(hs.pinned, 0);
	ASSERT_EQ(hs.frames_live, 0);
	gpamm_host_destroy(r->h);
	net_fini(&r->net);
}

/* The GPA's translation maps what the host maps at the HVA now (or nothing). */
static bool translation_current(struct rig *r, uint64_t g, uint64_t hva)
{
	struct gpamm_host_page hp;
	gpamm_pte_t pte;
	uint64_t pfn;

	if (gpamm_vm_translate(r->vm, g, &pte, NULL) == -ENOENT)
		return true;
	pfn = gpamm_pte_pfn(pte, PS);
	if (r->h->ops->check_access(r->h, hva, pfn, false))
		return false;
	if (r->h->ops->get_page(r->h, hva, false, &hp))
		return false;
	r->h->ops->put_page(r->h, hp.pfn, false, false);
	return hp.pfn == pfn;
}

/* ---- 1. a guest read of a missing page ------------------------------------------- */

static void test_guest_read_missing(void)
{
	struct rig r;
	struct vt_op ops[] = { { VT_OP_READ, gpa(3), 0 }, { VT_OP_READ, gpa(3) + PSZ - 8, 0 },
			       { VT_OP_END, 0, 0 } };
	struct vt_op wops[] = { { VT_OP_WRITE, gpa(9) + 8, 0x77 }, { VT_OP_READ, gpa(9), 0 },
				{ VT_OP_END, 0, 0 } };
	struct park_thread t;
	struct gpamm_vm_stats st;

	rig_create(&r, true);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 3)), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops, 0), 0);
	ASSERT_EQ_INT(park_thread_start(&t, r.v[0], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT_EQ(r.net.last_hva, pg(&r, 3));
	ASSERT(!r.net.last_write);
	ASSERT_EQ(net_get(&r.net, &r.net.requests), 1);
	/* nothing was zero-filled behind the handler's back */
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 3)), 0);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 3), 42), 0); /* from this thread */
	park_thread_join(&t);
	ASSERT_EQ(t.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops[0].val, word_of(42, 0));
	ASSERT_EQ(ops[1].val, word_of(42, PSZ / 8 - 1));
	ASSERT_EQ(r.net.calls, 1);
	st = vm_stats(&r);
	ASSERT(st.faults > 0);
	ASSERT(st.slow_faults > 0);
	ASSERT(translation_current(&r, gpa(3), pg(&r, 3)));

	/* a write fault: the handler is told it writes; the placed page is writable */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, wops, 0), 0);
	ASSERT_EQ_INT(park_thread_start(&t, r.v[1], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT_EQ(r.net.last_hva, pg(&r, 9));
	ASSERT(r.net.last_write);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 9), 7), 0);
	park_thread_join(&t);
	ASSERT_EQ(t.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(wops[1].val, word_of(7, 0));
	ASSERT_EQ(r.net.calls, 2);
	{
		uint64_t buf[PSZ / 8];

		ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 9), buf, PSZ), 0);
		ASSERT_EQ(buf[1], 0x77);
		ASSERT_EQ(buf[2], word_of(7, 2));
	}
	rig_destroy(&r);
}

/* ---- 2. no sim lock is held while the handler waits -------------------------------- */

/* Run @j; if it does not finish while the handler waits, let the handler go and fail. */
static void job_expect_done(struct rig *r, struct job *j, uint64_t a_hva, const char *what)
{
	bool done = job_wait(j);

	if (!done) {
		net_place(&r->net, a_hva, 1);
		net_release(&r->net);
	}
	job_join(j);
	ASSERT_MSG(done, "%s blocked while a missing-page handler waited: a sim lock is held", what);
}

static void test_no_lock_held_in_handler(void)
{
	struct rig r;
	struct vt_op ops0[] = { { VT_OP_READ, gpa(1), 0 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops1[] = { { VT_OP_READ, gpa(7), 0 }, { VT_OP_READ, gpa(5), 0 },
				{ VT_OP_END, 0, 0 } };
	struct park_thread t0;
	struct job j;

	rig_create(&r, true);
	/* B=5, C=6, D=7, E=20..23 present (same host table page as A=1) */
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 5), 5), 0);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 6), 6), 0);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 7), 7), 0);
	for (unsigned k = 20; k < 24; k++)
		ASSERT_EQ_INT(net_place(&r.net, pg(&r, k), k), 0);

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops0, 0), 0);
	ASSERT_EQ_INT(park_thread_start(&t0, r.v[0], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT_EQ(r.net.last_hva, pg(&r, 1));

	memset(&j, 0, sizeof(j));
	j.h = r.h;
	j.hva = r.hva;
	j.len = NPG * PSZ;
	/* reclaim (VMA lock for write, mm lock): swaps out B, the lowest present page */
	job_start(&j, job_reclaim);
	job_expect_done(&r, &j, pg(&r, 1), "gpamm_sim_reclaim");
	ASSERT_EQ_INT(j.ret, 1);
	ASSERT(host_stats(r.h).swapped == 1);

	/* a second vCPU: D present in the host (lock-free pin), B swapped (swap-in
	 * under the VMA lock and the table-page lock A's fault took) */
	j.v = r.v[1];
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops1, 0), 0);
	job_start(&j, job_run);
	job_expect_done(&r, &j, pg(&r, 1), "a second vCPU's faults");
	ASSERT_EQ(j.ret, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops1[0].val, word_of(7, 0));
	ASSERT_EQ(ops1[1].val, word_of(5, 0));

	job_start(&j, job_migrate);
	job_expect_done(&r, &j, pg(&r, 1), "gpamm_sim_migrate");
	ASSERT(j.ret >= 1);

	job_start(&j, job_merge);
	job_expect_done(&r, &j, pg(&r, 1), "gpamm_sim_merge");
	ASSERT(j.ret >= 0);

	j.hva = pg(&r, 20);
	j.len = 4 * PSZ;
	job_start(&j, job_mprotect_ro_rw);
	job_expect_done(&r, &j, pg(&r, 1), "gpamm_sim_mprotect of another range");
	ASSERT_EQ_INT(j.ret, 0);

	j.hva = pg(&r, 6);
	job_start(&j, job_read);
	job_expect_done(&r, &j, pg(&r, 1), "gpamm_sim_read of a present page");
	ASSERT_EQ_INT(j.ret, 0);
	ASSERT(page_is(j.buf, 6));

	/* all that time the handler waited, and nothing placed A behind it */
	ASSERT_EQ(net_get(&r.net, &r.net.waiting), 1);
	ASSERT_EQ(net_get(&r.net, &r.net.calls), 1);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 1)), 0);

	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 1), 11), 0);
	park_thread_join(&t0);
	ASSERT_EQ(t0.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops0[0].val, word_of(11, 0));
	ASSERT(translation_current(&r, gpa(1), pg(&r, 1)));
	ASSERT(translation_current(&r, gpa(7), pg(&r, 7)));
	rig_destroy(&r);
}

/* ---- 3. two vCPUs on one missing page --------------------------------------------- */

static void test_two_vcpus_one_page(void)
{
	struct rig r;
	struct vt_op ops0[] = { { VT_OP_READ, gpa(4), 0 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops1[] = { { VT_OP_READ, gpa(4) + 16, 0 }, { VT_OP_END, 0, 0 } };
	struct park_thread t0, t1;

	rig_create(&r, true);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops0, 0), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops1, 0), 0);
	ASSERT_EQ_INT(park_thread_start(&t0, r.v[0], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT_EQ_INT(park_thread_start(&t1, r.v[1], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 2));
	/* the sim host does not dedupe: each waiting thread called the handler;
	 * the handler asked the network once */
	ASSERT_EQ(net_get(&r.net, &r.net.calls), 2);
	ASSERT_EQ(net_get(&r.net, &r.net.requests), 1);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 4), 4), 0);
	park_thread_join(&t0);
	park_thread_join(&t1);
	ASSERT_EQ(t0.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(t1.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops0[0].val, word_of(4, 0));
	ASSERT_EQ(ops1[0].val, word_of(4, 2));
	ASSERT_EQ(r.net.calls, 2);
	ASSERT_EQ(r.net.waiting, 0);
	ASSERT(translation_current(&r, gpa(4), pg(&r, 4)));
	rig_destroy(&r);
}

/* ---- 4. -EEXIST and bad arguments ---------------------------------------------- */

static int other_fn(void *arg, uint64_t hva, bool write)
{
	(*(unsigned *)arg)++;
	return -ENOENT;
}

static void test_place_errors(void)
{
	struct rig r;
	struct gpamm_host *d = gpamm_host_direct_create(PS);
	struct gpamm_host_stats before;
	static uint64_t buf[PSZ / 8];
	uint64_t dev, hva2, tmp;
	unsigned other = 0;

	ASSERT(d);
	rig_create(&r, true);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 2), 2), 0);
	before = host_stats(r.h);

	/* present: -EEXIST, the contents stay */
	fill_page(buf, 99);
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, pg(&r, 2), buf), -EEXIST);
	ASSERT(host_page_is(r.h, pg(&r, 2), 2));
	/* swapped: present too */
	ASSERT_EQ_INT(gpamm_sim_reclaim(r.h, pg(&r, 2), PSZ, 1), 1);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 2)), 1);
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, pg(&r, 2), buf), -EEXIST);
	ASSERT_EQ(host_stats(r.h).swapped, 1);
	ASSERT(host_page_is(r.h, pg(&r, 2), 2)); /* swapped back in */

	/* bad arguments: -EINVAL, nothing changed */
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, pg(&r, 3), NULL), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, pg(&r, 3) + 8, buf), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, r.hva + NPG * PSZ, buf), -EINVAL); /* guard gap */
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, 0x1000, buf), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_place_page(NULL, pg(&r, 3), buf), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_place_page(d, 0x1000, buf), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 3)), 0);
	ASSERT_EQ(host_stats(r.h).frames_live, before.frames_live);
	ASSERT_EQ(r.net.calls, 0);

	/* page_present */
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 3) + 8), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, r.hva + NPG * PSZ), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_page_present(NULL, pg(&r, 3)), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_page_present(d, 0x1000), -EINVAL);

	/* registration */
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, r.hva, NPG * PSZ, NULL, NULL), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, r.hva + 8, PSZ, net_fn, &r.net), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, r.hva, 0, net_fn, &r.net), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, r.hva, (NPG + 1) * PSZ, net_fn, &r.net),
		      -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_register_missing(NULL, r.hva, PSZ, net_fn, &r.net), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_register_missing(d, 0x1000, PSZ, net_fn, &r.net), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, r.hva, PSZ, net_fn, &r.net), -EBUSY);
	ASSERT_EQ_INT(gpamm_sim_unregister_missing(r.h, pg(&r, 1), PSZ), -EINVAL); /* a split */
	ASSERT_EQ_INT(gpamm_sim_unregister_missing(r.h, r.hva + 8, PSZ), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_unregister_missing(d, 0x1000, PSZ), -EINVAL);
	/* the same range again: the handler is replaced */
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, r.hva, NPG * PSZ, other_fn, &other), 0);
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 3), &tmp, 8), -ENOENT);
	ASSERT_EQ(other, 1);
	ASSERT_EQ(r.net.calls, 0);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 3)), 0);
	/* device memory cannot be registered */
	ASSERT_EQ_INT(gpamm_sim_mmap(r.h, 4 * PSZ, GPAMM_SIM_DEVICE, &dev), 0);
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, dev, PSZ, net_fn, &r.net), -EINVAL);
	/* an unregistered VMA: placing is allowed where nothing is present */
	ASSERT_EQ_INT(gpamm_sim_mmap(r.h, 4 * PSZ, 0, &hva2), 0);
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, hva2 + PSZ, buf), 0);
	ASSERT(host_page_is(r.h, hva2 + PSZ, 99));
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, hva2 + PSZ, buf), -EEXIST);
	/* a munmapped page of a VMA is not mapped */
	ASSERT_EQ_INT(gpamm_sim_munmap(r.h, hva2 + 2 * PSZ, PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_place_page(r.h, hva2 + 2 * PSZ, buf), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, hva2 + 2 * PSZ), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, hva2, 4 * PSZ, net_fn, &r.net), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_munmap(r.h, hva2, 4 * PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(r.h, dev, 4 * PSZ), 0);
	gpamm_host_destroy(d);
	rig_destroy(&r);
}

/* ---- 5. a failing handler: a memory-fault exit, then the VMM places ------------------ */

static void test_handler_error_exit(void)
{
	struct rig r;
	struct vt_op ops[] = { { VT_OP_READ, gpa(8) + 24, 0 }, { VT_OP_END, 0, 0 } };
	struct gpamm_run *run;

	rig_create(&r, true);
	r.net.fail = -EIO;
	run = gpamm_vcpu_run_state(r.v[0]);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_MEMORY_FAULT);
	ASSERT_EQ_INT(run->memory_fault.error, -EIO);
	ASSERT_EQ(run->memory_fault.gpa, gpa(8));
	ASSERT_EQ(run->memory_fault.flags & GPAMM_MEMORY_EXIT_FLAG_WRITE, 0);
	ASSERT_EQ(r.net.calls, 1);
	ASSERT_EQ(r.net.last_hva, pg(&r, 8));
	ASSERT_EQ(vm_stats(&r).memory_fault_exits, 1);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 8)), 0);
	/* the VMM fetches the page itself and runs again: the access is retried */
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 8), 8), 0);
	ASSERT_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_DONE);
	ASSERT_EQ(ops[0].val, word_of(8, 3));
	ASSERT_EQ(r.net.calls, 1);
	rig_destroy(&r);
}

/* ---- 6. dontneed makes it missing again; unregister; events skip missing pages ------ */

static void test_dontneed_unregister(void)
{
	struct rig r;
	struct vt_op ops[] = { { VT_OP_READ, gpa(12), 0 }, { VT_OP_READ, gpa(40), 0 },
			       { VT_OP_END, 0, 0 } };
	static uint64_t buf[PSZ / 8];
	bool young;

	rig_create(&r, true);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 10), 10), 0);
	ASSERT(host_page_is(r.h, pg(&r, 10), 10));
	ASSERT_EQ(r.net.calls, 0);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(r.h, pg(&r, 10), PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 10)), 0);
	r.net.fail = -ENOENT;
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 10), buf, PSZ), -ENOENT);
	ASSERT_EQ(r.net.calls, 1);
	ASSERT_EQ(r.net.last_hva, pg(&r, 10));
	/* placeable again */
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 10), 110), 0);
	ASSERT(host_page_is(r.h, pg(&r, 10), 110));

	/* events find nothing in missing pages, and never call the handler */
	ASSERT_EQ_INT(gpamm_sim_reclaim(r.h, pg(&r, 11), 20 * PSZ, 8), 0);
	ASSERT_EQ_INT(gpamm_sim_migrate(r.h, pg(&r, 11), 20 * PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_merge(r.h, pg(&r, 11), 20 * PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_clear_young(r.h, pg(&r, 11), 20 * PSZ, true, &young), 0);
	ASSERT_EQ_INT(gpamm_sim_mprotect(r.h, pg(&r, 11), 20 * PSZ, false), 0);
	ASSERT_EQ_INT(gpamm_sim_mprotect(r.h, pg(&r, 11), 20 * PSZ, true), 0);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(r.h, pg(&r, 11), 20 * PSZ), 0);
	ASSERT_EQ(r.net.calls, 1);
	for (unsigned k = 11; k < 31; k++)
		ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, k)), 0);

	/* trimmed: the low half is normal memory again, the high half still missing */
	ASSERT_EQ_INT(gpamm_sim_unregister_missing(r.h, r.hva, 32 * PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 12), buf, PSZ), 0);
	ASSERT(page_is(buf, 0));
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 40), buf, PSZ), -ENOENT);
	ASSERT_EQ(r.net.calls, 2);
	/* a trimmed range cannot be registered again over a different range */
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, r.hva, NPG * PSZ, net_fn, &r.net), -EBUSY);
	/* whole: every missing page reads zeros, for the VMM and the guest */
	ASSERT_EQ_INT(gpamm_sim_unregister_missing(r.h, r.hva, NPG * PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_unregister_missing(r.h, r.hva, NPG * PSZ), 0); /* nothing there: fine */
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 40), buf, PSZ), 0);
	ASSERT(page_is(buf, 0));
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_DONE);
	ASSERT_EQ(ops[0].val, 0);
	ASSERT_EQ(ops[1].val, 0);
	ASSERT_EQ(r.net.calls, 2);
	ASSERT(host_page_is(r.h, pg(&r, 10), 110)); /* placed pages stay */
	/* and the VMA can be registered anew, with any range */
	ASSERT_EQ_INT(gpamm_sim_register_missing(r.h, pg(&r, 50), 4 * PSZ, net_fn, &r.net), 0);
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 51), buf, 8), -ENOENT);
	ASSERT_EQ(r.net.calls, 3);
	rig_destroy(&r);
}

/* ---- 7. the VMM's own reads and writes of missing pages ------------------------------ */

static void test_host_access_missing(void)
{
	struct rig r;
	static uint64_t buf[3 * PSZ / 8];
	uint64_t val = 0xabcdef;
	struct job j;

	rig_create(&r, true);
	/* on the calling thread: the handler places the page itself */
	r.net.self_place = true;
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 14), buf, PSZ), 0);
	ASSERT_EQ(r.net.calls, 1);
	ASSERT_EQ(r.net.last_hva, pg(&r, 14));
	ASSERT(!r.net.last_write);
	ASSERT(page_is(buf, self_tag(pg(&r, 14))));
	/* a write: told so; the bytes not written are the placed page's */
	ASSERT_EQ_INT(gpamm_sim_write(r.h, pg(&r, 15) + 16, &val, 8), 0);
	ASSERT_EQ(r.net.calls, 2);
	ASSERT_EQ(r.net.last_hva, pg(&r, 15));
	ASSERT(r.net.last_write);
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 15), buf, PSZ), 0);
	ASSERT_EQ(buf[2], val);
	ASSERT_EQ(buf[1], word_of(self_tag(pg(&r, 15)), 1));
	ASSERT_EQ(r.net.calls, 2);
	/* a read across three pages, the middle one present: two calls */
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 17), 17), 0);
	ASSERT_EQ_INT(gpamm_sim_read(r.h, pg(&r, 16) + 8, buf, 2 * PSZ), 0);
	ASSERT_EQ(r.net.calls, 4);
	ASSERT_EQ(buf[0], word_of(self_tag(pg(&r, 16)), 1));
	ASSERT_EQ(buf[PSZ / 8 - 1], word_of(17, 0));
	ASSERT_EQ(buf[2 * PSZ / 8 - 1], word_of(self_tag(pg(&r, 18)), 0));
	/* a failing handler (for page 19): nothing written, to 17 and 18 neither */
	r.net.self_place = false;
	r.net.fail = -EIO;
	fill_page(buf, 55);
	ASSERT_EQ_INT(gpamm_sim_write(r.h, pg(&r, 17), buf, 3 * PSZ), -EIO);
	ASSERT_EQ(r.net.calls, 5);
	ASSERT_EQ(r.net.last_hva, pg(&r, 19));
	ASSERT(host_page_is(r.h, pg(&r, 17), 17));
	ASSERT(host_page_is(r.h, pg(&r, 18), self_tag(pg(&r, 18))));
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 19)), 0);
	r.net.fail = 0;

	/* from another thread, waiting for the sender */
	memset(&j, 0, sizeof(j));
	j.h = r.h;
	j.hva = pg(&r, 20);
	fill_page(j.buf, 0);
	job_start(&j, job_read);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT_EQ(r.net.last_hva, pg(&r, 20));
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 20), 20), 0);
	ASSERT(job_wait(&j));
	job_join(&j);
	ASSERT_EQ_INT(j.ret, 0);
	ASSERT(page_is(j.buf, 20));
	/* a whole-page write waiting for its page; the write lands on the placed page */
	j.hva = pg(&r, 21);
	fill_page(j.buf, 121);
	job_start(&j, job_write);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT(r.net.last_write);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 21), 21), 0);
	ASSERT(job_wait(&j));
	job_join(&j);
	ASSERT_EQ_INT(j.ret, 0);
	ASSERT(host_page_is(r.h, pg(&r, 21), 121));
	rig_destroy(&r);
}

/* ---- 8. an invalidation racing a waiting handler -------------------------------------- */

static void test_invalidate_races_handler(void)
{
	struct rig r;
	struct vt_op ops[] = { { VT_OP_READ, gpa(30), 0 }, { VT_OP_END, 0, 0 } };
	struct vt_op wops[] = { { VT_OP_WRITE, gpa(31), 0x31 }, { VT_OP_READ, gpa(31) + 8, 0 },
				{ VT_OP_END, 0, 0 } };
	struct vt_op uops[] = { { VT_OP_READ, gpa(33), 0 }, { VT_OP_END, 0, 0 } };
	struct gpamm_run *run;
	struct park_thread t;
	uint64_t retries0;

	rig_create(&r, true);

	/* placed, dropped (the notifier moves the MMU's sequence) and placed anew
	 * while the fault waits: it maps the second page, never the first */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops, 0), 0);
	retries0 = vm_stats(&r).fault_retries;
	r.net.hold = true; /* before the thread starts: its handler sees it */
	ASSERT_EQ_INT(park_thread_start(&t, r.v[0], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 30), 301), 0);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(r.h, pg(&r, 30), PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_migrate(r.h, r.hva, NPG * PSZ), 0); /* nothing present */
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 30), 302), 0);
	pthread_mutex_lock(&r.net.lock);
	r.net.hold = false;
	pthread_mutex_unlock(&r.net.lock);
	net_release(&r.net);
	park_thread_join(&t);
	ASSERT_EQ(t.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops[0].val, word_of(302, 0));
	ASSERT(vm_stats(&r).fault_retries > retries0); /* the sequence moved under it */
	ASSERT(translation_current(&r, gpa(30), pg(&r, 30)));
	/* the page the guest maps can still be moved and dropped correctly */
	ASSERT_EQ_INT(gpamm_sim_migrate(r.h, pg(&r, 30), PSZ), 1);
	ASSERT(translation_current(&r, gpa(30), pg(&r, 30)));

	/* mprotect while a write fault waits: the retry sees the protection */
	run = gpamm_vcpu_run_state(r.v[1]);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, wops, 0), 0);
	ASSERT_EQ_INT(park_thread_start(&t, r.v[1], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT(r.net.last_write);
	ASSERT_EQ_INT(gpamm_sim_mprotect(r.h, pg(&r, 31), PSZ, false), 0);
	ASSERT_EQ_INT(net_place(&r.net, pg(&r, 31), 31), 0);
	park_thread_join(&t);
	ASSERT_EQ(t.reason, GPAMM_EXIT_MEMORY_FAULT);
	ASSERT_EQ_INT(run->memory_fault.error, -EFAULT);
	ASSERT(run->memory_fault.flags & GPAMM_MEMORY_EXIT_FLAG_WRITE);
	ASSERT(translation_current(&r, gpa(31), pg(&r, 31)));
	ASSERT_EQ_INT(gpamm_sim_mprotect(r.h, pg(&r, 31), PSZ, true), 0);
	ASSERT_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_DONE);
	ASSERT_EQ(wops[1].val, word_of(31, 1));
	ASSERT(translation_current(&r, gpa(31), pg(&r, 31)));

	/* munmap while the fault waits: the retry finds no mapping */
	run = gpamm_vcpu_run_state(r.v[0]);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, uops, 0), 0);
	ASSERT_EQ_INT(park_thread_start(&t, r.v[0], NULL, 0), 0);
	ASSERT(net_wait_waiting(&r.net, 1));
	ASSERT_EQ_INT(gpamm_sim_munmap(r.h, pg(&r, 33), PSZ), 0);
	ASSERT_EQ_INT(gpamm_sim_page_present(r.h, pg(&r, 33)), -EINVAL);
	net_release(&r.net);
	park_thread_join(&t);
	ASSERT_EQ(t.reason, GPAMM_EXIT_MEMORY_FAULT);
	ASSERT_EQ_INT(run->memory_fault.error, -EFAULT);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, gpa(33), NULL, NULL), -ENOENT);
	ASSERT_EQ(r.net.waiting, 0);
	ASSERT_EQ(vm_stats(&r).stale_accesses, 0);
	ASSERT_EQ(host_stats(r.h).stale_accesses, 0);
	rig_destroy(&r);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_guest_read_missing);
	TEST(test_no_lock_held_in_handler);
	TEST(test_two_vcpus_one_page);
	TEST(test_place_errors);
	TEST(test_handler_error_exit);
	TEST(test_dontneed_unregister);
	TEST(test_host_access_missing);
	TEST(test_invalidate_races_handler);
	return tap_done();
}
