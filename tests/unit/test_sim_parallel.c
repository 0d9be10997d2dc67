// SPDX-License-Identifier: MIT
/*
 * test_sim_parallel - the sim host's faults do not serialise, and its
 * lock-free pin is correct against every event that races it.
 *
 * Orderings are forced, never slept for: the sim host's test hooks
 * (gpamm_sim_set_test_hook(), declared below, defined in src/host/sim.c)
 * stop a thread at a named place inside get_page() until the test lets it
 * go, and a notifier of our own can stop a copy-on-write break inside its
 * invalidation. A thread that should finish while another is parked is
 * waited for with a 10 s hang guard, which only turns "blocked" into a
 * clean failure (then the parked thread is released and everything joined).
 *
 *   - a fault parked inside its fault-in (locks held), or inside a
 *     copy-on-write break's invalidation, does not hold up a get_page() of
 *     a present page of the same table page, nor a fault-in in another one;
 *   - a lock-free pin racing reclaim, migrate, munmap, madv_dontneed and
 *     mprotect, in both orders: the pin lands first (reclaim and migrate
 *     skip the frame; munmap and dontneed make the reader give it back and
 *     fall back; a confirmed pin keeps the frame alive until put_page), or
 *     the event lands first (the reader finds the frame dead or the PTE
 *     changed, and faults through the locks);
 *   - a frame freed and reused between the lock-free PTE read and the
 *     speculative reference: the second PTE read catches it;
 *   - two threads faulting and dropping pages from a pool just big enough
 *     never find it empty;
 *   - a stress test (workers on shared and private pages, an event thread
 *     running every event) that ends with pins, frames and swap slots
 *     balanced; its seed is printed and replays the per-thread choices.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpamm/host.h"
#include "harness/tap.h"

/* The sim host's test hooks (src/host/sim.c, enum sim_hook_point): not in host.h. */
enum {
	HOOK_GUP_READ,     /* lock-free: PTE read and usable, nothing taken yet */
	HOOK_GUP_PINNED,   /* lock-free: reference and pin taken, PTE not read again */
	HOOK_GUP_DEAD,     /* lock-free: the frame's count was zero: slow path */
	HOOK_GUP_CHANGED,  /* lock-free: PTE changed, pin given back: slow path */
	HOOK_FAULT_LOCKED, /* slow path: VMA lock (read) and table-page lock held */
	HOOK_EVENT_BUSY,   /* reclaim/migrate/merge: PTE marked BUSY, pins not read yet */
	HOOK_NR,
	HOOK_NOTIFY = HOOK_NR, /* ours: inside invalidate_range_start */
	HOOK_PLACES
};
typedef void (*gpamm_sim_hook_fn)(void *arg, unsigned point, uint64_t hva);
int gpamm_sim_set_test_hook(struct gpamm_host *h, gpamm_sim_hook_fn fn, void *arg);

#define GUARD_SEC 10

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t word_of(uint64_t tag, uint64_t k)
{
	return tag ? tag * 0x9e3779b97f4a7c15ULL + k : 0;
}

static void fill_page(void *p, uint64_t size, uint64_t tag)
{
	uint64_t *w = p;

	for (uint64_t k = 0; k < size / 8; k++)
		w[k] = word_of(tag, k);
}

static bool page_is(const void *p, uint64_t size, uint64_t tag)
{
	const uint64_t *w = p;

	for (uint64_t k = 0; k < size / 8; k++)
		if (w[k] != word_of(tag, k))
			return false;
	return true;
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

static uint64_t pfn_of(struct gpamm_host *h, uint64_t hva)
{
	struct gpamm_host_page pg;

	ASSERT_EQ_INT(h->ops->get_page(h, hva, false, &pg), 0);
	h->ops->put_page(h, pg.pfn, false, false);
	return pg.pfn;
}

static void deadline(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += GUARD_SEC;
}

/* ---- the parking lot: a trap per place, and hit counts for one watched page ---- */

struct trap {
	bool armed, parked, go;
	uint64_t key;
};

struct lot {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct trap t[HOOK_PLACES];
	uint64_t watch;
	unsigned hits[HOOK_PLACES];
};

static void lot_init(struct lot *l, uint64_t watch)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	l->watch = watch;
}

static void lot_fini(struct lot *l)
{
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
}

/* The next thread to pass @where for page @key stops there. */
static void lot_arm(struct lot *l, unsigned where, uint64_t key)
{
	pthread_mutex_lock(&l->lock);
	l->t[where] = (struct trap){ .armed = true, .key = key };
	pthread_mutex_unlock(&l->lock);
}

static void lot_pass(struct lot *l, unsigned where, uint64_t hva)
{
	struct trap *t = &l->t[where];

	pthread_mutex_lock(&l->lock);
	if (hva == l->watch)
		l->hits[where]++;
	if (t->armed && hva == t->key) {
		t->armed = false;
		t->parked = true;
		pthread_cond_broadcast(&l->cond);
		while (!t->go)
			pthread_cond_wait(&l->cond, &l->lock);
		t->parked = false;
	}
	pthread_mutex_unlock(&l->lock);
}

static void lot_hook(void *arg, unsigned point, uint64_t hva)
{
	lot_pass(arg, point, hva);
}

/* Return: whether a thread is parked at @where (false after the guard). */
static bool lot_wait(struct lot *l, unsigned where)
{
	struct timespec ts;
	bool ok;

	deadline(&ts);
	pthread_mutex_lock(&l->lock);
	while (!l->t[where].parked)
		if (pthread_cond_timedwait(&l->cond, &l->lock, &ts))
			break;
	ok = l->t[where].parked;
	pthread_mutex_unlock(&l->lock);
	return ok;
}

/* The thread parked at @where (if any) goes on; the trap is disarmed. */
static void lot_release(struct lot *l, unsigned where)
{
	pthread_mutex_lock(&l->lock);
	l->t[where].armed = false;
	l->t[where].go = true;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

static void lot_release_all(struct lot *l)
{
	for (unsigned k = 0; k < HOOK_PLACES; k++)
		lot_release(l, k);
}

static unsigned lot_hits(struct lot *l, unsigned where)
{
	unsigned n;

	pthread_mutex_lock(&l->lock);
	n = l->hits[where];
	pthread_mutex_unlock(&l->lock);
	return n;
}

/* ---- get_page on a thread of its own ---------------------------------------- */

struct getter {
	pthread_t tid;
	struct gpamm_host *h;
	uint64_t hva[4];
	bool write[4];
	unsigned n;
	bool put;            /* put each page at once (else keep the last pin) */
	int ret[4];
	struct gpamm_host_page pg[4];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void *getter_main(void *arg)
{
	struct getter *g = arg;

	for (unsigned k = 0; k < g->n; k++) {
		g->ret[k] = g->h->ops->get_page(g->h, g->hva[k], g->write[k], &g->pg[k]);
		if (!g->ret[k] && g->put)
			g->h->ops->put_page(g->h, g->pg[k].pfn, true, g->write[k]);
	}
	pthread_mutex_lock(&g->lock);
	g->done = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

static void getter_start(struct getter *g, struct gpamm_host *h, bool put)
{
	g->h = h;
	g->put = put;
	g->done = false;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	ASSERT_EQ_INT(pthread_create(&g->tid, NULL, getter_main, g), 0);
}

static void getter_add(struct getter *g, uint64_t hva, bool write)
{
	g->hva[g->n] = hva;
	g->write[g->n] = write;
	g->n++;
}

/* Return: whether the getter finished within the guard. */
static bool getter_wait(struct getter *g)
{
	struct timespec ts;
	bool ok;

	deadline(&ts);
	pthread_mutex_lock(&g->lock);
	while (!g->done)
		if (pthread_cond_timedwait(&g->cond, &g->lock, &ts))
			break;
	ok = g->done;
	pthread_mutex_unlock(&g->lock);
	return ok;
}

static void getter_join(struct getter *g)
{
	pthread_join(g->tid, NULL);
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
}

/* ---- 1. faults on different pages do not wait for each other ------------- */

/*
 * Page A (not present) is faulted in by a thread parked inside its
 * fault-in, the VMA lock (read) and A's table-page lock held. Meanwhile a
 * second thread pins B, present in A's table page (lock-free), and faults
 * in C, in the next table page, for a write. With one mm lock around every
 * get_page, as the sim host had, the second thread waits for the first and
 * the guard fires.
 */
static void no_block_case(unsigned shift)
{
	const uint64_t ps = 1ULL << shift, per_ptl = ps / 8;
	struct gpamm_host *h = sim(shift, 16, 0);
	struct getter a = { 0 }, bc = { 0 };
	bool parked, finished;
	struct lot l;
	uint64_t hva, A, B, C;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 2 * per_ptl * ps, 0, &hva), 0);
	A = hva, B = hva + ps, C = hva + per_ptl * ps;
	write_tag(h, B, 7);
	lot_init(&l, B);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, lot_hook, &l), 0);
	lot_arm(&l, HOOK_FAULT_LOCKED, A);
	getter_add(&a, A, true);
	getter_start(&a, h, false);
	parked = lot_wait(&l, HOOK_FAULT_LOCKED);
	getter_add(&bc, B, false);
	getter_add(&bc, C, true);
	getter_start(&bc, h, true);
	finished = parked && getter_wait(&bc);
	CHECK_MSG(parked, "the fault of A never reached its fault-in");
	CHECK_MSG(finished, "get_page of B (present) and C (other table page) waited for A's fault");
	lot_release_all(&l);
	getter_join(&bc);
	getter_join(&a);
	ASSERT(parked && finished);
	ASSERT_EQ_INT(bc.ret[0], 0);
	ASSERT_EQ_INT(bc.ret[1], 0);
	ASSERT_EQ_INT(a.ret[0], 0);
	/* B went lock-free; C and A were faulted in (and A not before C). */
	ASSERT_EQ(lot_hits(&l, HOOK_GUP_READ), 1);
	ASSERT_EQ(lot_hits(&l, HOOK_FAULT_LOCKED), 0);
	ASSERT_EQ(bc.pg[1].flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT_EQ(a.pg[0].flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT_EQ(stats(h).faults_in, 2); /* A and C: B's by write_tag is the host's own */
	ASSERT_EQ(stats(h).pinned, 1);
	h->ops->put_page(h, a.pg[0].pfn, true, true);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT(read_is(h, B, 7));
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 2 * per_ptl * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	gpamm_host_destroy(h);
	lot_fini(&l);
}

static void test_par_fault_in_no_block(void)
{
	no_block_case(12);
	no_block_case(16);
}

/* A notifier that parks the thread whose invalidation covers the lot's key. */
static struct lot *mn_lot;
static void park_start(void *mn, uint64_t start, uint64_t end)
{
	(void)mn;
	uint64_t key = mn_lot->t[HOOK_NOTIFY].key;

	if (key >= start && key < end)
		lot_pass(mn_lot, HOOK_NOTIFY, key);
}
static void park_end(void *mn, uint64_t start, uint64_t end) { (void)mn; (void)start; (void)end; }
static const struct gpamm_mmu_notifier_ops park_ops = {
	.invalidate_range_start = park_start,
	.invalidate_range_end = park_end,
};

/*
 * The same through a copy-on-write break: a write fault on a merged page
 * is parked inside its invalidate_range_start (no test hook: this test
 * runs unchanged against a sim host without hooks). Meanwhile a present
 * page is pinned and a page of another table page faulted in.
 */
static void test_par_cow_break_no_block(void)
{
	const unsigned shift = 12;
	const uint64_t ps = 1ULL << shift, per_ptl = ps / 8;
	struct gpamm_host *h = sim(shift, 16, 0);
	struct getter a = { 0 }, bc = { 0 };
	bool parked, finished;
	struct lot l;
	int mn;
	uint64_t hva, A, A2, B, C;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 2 * per_ptl * ps, 0, &hva), 0);
	A = hva, A2 = hva + 2 * ps, B = hva + ps, C = hva + per_ptl * ps;
	write_tag(h, A, 3);
	write_tag(h, A2, 3);
	write_tag(h, B, 4);
	ASSERT_EQ(gpamm_sim_merge(h, A, ps), 0);
	ASSERT_EQ(gpamm_sim_merge(h, hva, 3 * ps), 1);
	lot_init(&l, 0);
	mn_lot = &l;
	l.t[HOOK_NOTIFY].key = A; /* park_start() looks here for its range test */
	ASSERT_EQ_INT(h->ops->notifier_register(h, &park_ops, &mn), 0);
	lot_arm(&l, HOOK_NOTIFY, A);
	getter_add(&a, A, true);
	getter_start(&a, h, false);
	parked = lot_wait(&l, HOOK_NOTIFY);
	getter_add(&bc, B, true);
	getter_add(&bc, C, true);
	getter_start(&bc, h, true);
	finished = parked && getter_wait(&bc);
	CHECK_MSG(parked, "the write to A never reached its copy-on-write invalidation");
	CHECK_MSG(finished, "get_page of B (present) and C (other table page) waited for A's copy");
	lot_release_all(&l);
	getter_join(&bc);
	getter_join(&a);
	ASSERT(parked && finished);
	ASSERT_EQ_INT(bc.ret[0], 0);
	ASSERT_EQ_INT(bc.ret[1], 0);
	ASSERT_EQ_INT(a.ret[0], 0);
	ASSERT_EQ(a.pg[0].flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT_NE(a.pg[0].pfn, pfn_of(h, A2)); /* A got its copy */
	ASSERT(page_is(h->ops->page_ptr(h, a.pg[0].pfn), ps, 3));
	h->ops->put_page(h, a.pg[0].pfn, true, true);
	ASSERT_EQ(stats(h).pinned, 0);
	h->ops->notifier_unregister(h, &mn);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 2 * per_ptl * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	gpamm_host_destroy(h);
	lot_fini(&l);
}

/* ---- 2. events against a lock-free pin, both orders ------------------------ */

enum race_event { EV_RECLAIM, EV_MIGRATE, EV_MUNMAP, EV_DONTNEED, EV_MPROTECT, EV_MERGE };

static const char *const ev_name[] = { "reclaim", "migrate", "munmap", "dontneed",
				       "mprotect", "merge" };

/* On page A of the race (merge: A and A2, which holds the same bytes). */
static int64_t run_event(struct gpamm_host *h, enum race_event e, uint64_t A)
{
	const uint64_t ps = 4096;

	switch (e) {
	case EV_RECLAIM: return gpamm_sim_reclaim(h, A, ps, 8);
	case EV_MIGRATE: return gpamm_sim_migrate(h, A, ps);
	case EV_MUNMAP: return gpamm_sim_munmap(h, A, ps);
	case EV_DONTNEED: return gpamm_sim_madv_dontneed(h, A, ps);
	case EV_MPROTECT: return gpamm_sim_mprotect(h, A, ps, false);
	case EV_MERGE: return gpamm_sim_merge(h, A, 2 * ps);
	}
	return -1;
}

/* An event on a thread of its own (it may park inside). */
struct evthread {
	pthread_t tid;
	struct gpamm_host *h;
	enum race_event e;
	uint64_t A;
	int64_t ret;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void *ev_main(void *arg)
{
	struct evthread *t = arg;

	t->ret = run_event(t->h, t->e, t->A);
	pthread_mutex_lock(&t->lock);
	t->done = true;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

static void ev_start(struct evthread *t, struct gpamm_host *h, enum race_event e, uint64_t A)
{
	*t = (struct evthread){ .h = h, .e = e, .A = A };
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	ASSERT_EQ_INT(pthread_create(&t->tid, NULL, ev_main, t), 0);
}

static bool ev_wait(struct evthread *t)
{
	struct timespec ts;
	bool ok;

	deadline(&ts);
	pthread_mutex_lock(&t->lock);
	while (!t->done)
		if (pthread_cond_timedwait(&t->cond, &t->lock, &ts))
			break;
	ok = t->done;
	pthread_mutex_unlock(&t->lock);
	return ok;
}

static void ev_join(struct evthread *t)
{
	pthread_join(t->tid, NULL);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
}

/*
 * A race on page A of a 4-page VMA: A and A2 present with the same bytes
 * (tag 1), a reader doing a lock-free get_page of A on its own thread.
 */
struct race {
	struct gpamm_host *h;
	struct lot l;
	struct getter g;
	uint64_t hva, A, A2, pfn0;
};

static void race_setup(struct race *r, bool write)
{
	const uint64_t ps = 4096;

	memset(r, 0, sizeof(*r));
	r->h = sim(12, 16, 8);
	ASSERT_EQ_INT(gpamm_sim_mmap(r->h, 4 * ps, 0, &r->hva), 0);
	r->A = r->hva + ps;
	r->A2 = r->hva + 2 * ps;
	write_tag(r->h, r->A, 1);
	write_tag(r->h, r->A2, 1);
	r->pfn0 = pfn_of(r->h, r->A);
	lot_init(&r->l, r->A);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(r->h, lot_hook, &r->l), 0);
	getter_add(&r->g, r->A, write);
}

/* The reader parked at @where, the event run to its end on this thread. */
static int64_t race_run(struct race *r, enum race_event e, unsigned where)
{
	int64_t ev = -1;
	bool parked;

	lot_arm(&r->l, where, r->A);
	getter_start(&r->g, r->h, false);
	parked = lot_wait(&r->l, where);
	/* The reader holds no lock where it is parked: the event must finish. */
	if (parked)
		ev = run_event(r->h, e, r->A);
	lot_release_all(&r->l);
	getter_join(&r->g);
	ASSERT_MSG(parked, "%s: the reader never reached hook %u", ev_name[e], where);
	return ev;
}

/* Put the reader's pin, check the books, tear down. @stale: stale accesses we made. */
static void race_done(struct race *r, uint64_t stale)
{
	struct gpamm_host *h = r->h;

	if (!r->g.ret[0])
		h->ops->put_page(h, r->g.pg[0].pfn, true, false);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ(stats(h).stale_accesses, stale);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, r->hva, 4 * 4096), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ(stats(h).swapped, 0);
	gpamm_host_destroy(h);
	lot_fini(&r->l);
}

/*
 * The pin first: the reader has its reference and pin and has not read the
 * PTE again. Reclaim, migrate and merge see the pin and leave the page
 * alone; the reader then finds its PTE unchanged and keeps the pin. With
 * the pin put, the same event takes the page.
 */
static void test_par_pin_then_skipping_event(void)
{
	static const enum race_event evs[] = { EV_RECLAIM, EV_MIGRATE, EV_MERGE };
	struct race r;

	for (unsigned k = 0; k < 3; k++) {
		race_setup(&r, false);
		ASSERT_EQ_INT(race_run(&r, evs[k], HOOK_GUP_PINNED), 0);
		ASSERT_EQ_INT(r.g.ret[0], 0);
		ASSERT_EQ(r.g.pg[0].pfn, r.pfn0);
		ASSERT_EQ(r.g.pg[0].flags, GPAMM_HOST_PAGE_WRITABLE);
		ASSERT_EQ(lot_hits(&r.l, HOOK_GUP_CHANGED), 0);
		ASSERT_EQ(lot_hits(&r.l, HOOK_FAULT_LOCKED), 0);
		ASSERT_EQ(stats(r.h).swapped, 0);
		ASSERT_EQ_INT(r.h->ops->check_access(r.h, r.A, r.pfn0, true), 0);
		ASSERT(page_is(r.h->ops->page_ptr(r.h, r.pfn0), 4096, 1));
		r.h->ops->put_page(r.h, r.g.pg[0].pfn, true, false);
		r.g.ret[0] = -1;
		ASSERT_EQ_INT(run_event(r.h, evs[k], r.A), 1);
		ASSERT(read_is(r.h, r.A, 1));
		race_done(&r, 0);
	}
}

/*
 * The pin first, then an event that does not look at pins: munmap and
 * dontneed take the page away, mprotect its write permission. The reader's
 * second PTE read sees it, gives the pin back and faults through the locks
 * (munmap: -EFAULT; dontneed: a new zero page; mprotect, for a write:
 * -EFAULT). The frame the reader held for a moment dies with that put.
 */
static void test_par_pin_then_changing_event(void)
{
	static const enum race_event evs[] = { EV_MUNMAP, EV_DONTNEED, EV_MPROTECT };
	struct race r;

	for (unsigned k = 0; k < 3; k++) {
		race_setup(&r, true);
		ASSERT_EQ_INT(race_run(&r, evs[k], HOOK_GUP_PINNED), 0);
		ASSERT_EQ(lot_hits(&r.l, HOOK_GUP_CHANGED), 1);
		ASSERT_EQ(lot_hits(&r.l, HOOK_FAULT_LOCKED), 1);
		switch (evs[k]) {
		case EV_DONTNEED:
			ASSERT_EQ_INT(r.g.ret[0], 0);
			ASSERT_NE(r.g.pg[0].pfn, r.pfn0);
			ASSERT_EQ(r.g.pg[0].flags, GPAMM_HOST_PAGE_WRITABLE);
			ASSERT(page_is(r.h->ops->page_ptr(r.h, r.g.pg[0].pfn), 4096, 0));
			ASSERT_EQ(stats(r.h).frames_live, 2); /* A's new page and A2 */
			break;
		case EV_MUNMAP:
			ASSERT_EQ_INT(r.g.ret[0], -EFAULT);
			ASSERT_EQ(stats(r.h).frames_live, 1); /* A2 */
			break;
		default:
			ASSERT_EQ_INT(r.g.ret[0], -EFAULT);
			ASSERT_EQ(stats(r.h).frames_live, 2); /* A still maps its frame */
			ASSERT_EQ_INT(r.h->ops->check_access(r.h, r.A, r.pfn0, false), 0);
			break;
		}
		ASSERT_EQ(stats(r.h).pinned, r.g.ret[0] ? 0 : 1);
		race_done(&r, 0);
	}
}

/*
 * The event first: the reader has read the PTE and taken nothing. Reclaim
 * and munmap free the frame, so the speculative reference fails (count
 * zero) and the slow path swaps the page back in or finds no mapping;
 * migrate frees the old frame too, and the slow path pins the new one.
 */
static void test_par_event_then_pin(void)
{
	static const enum race_event evs[] = { EV_RECLAIM, EV_MIGRATE, EV_MUNMAP };
	struct race r;

	for (unsigned k = 0; k < 3; k++) {
		race_setup(&r, false);
		ASSERT_EQ_INT(race_run(&r, evs[k], HOOK_GUP_READ), evs[k] == EV_MUNMAP ? 0 : 1);
		ASSERT_EQ(lot_hits(&r.l, HOOK_GUP_DEAD), 1);
		ASSERT_EQ(lot_hits(&r.l, HOOK_GUP_PINNED), 0);
		ASSERT_EQ(lot_hits(&r.l, HOOK_FAULT_LOCKED), 1);
		if (evs[k] == EV_MUNMAP) {
			ASSERT_EQ_INT(r.g.ret[0], -EFAULT);
			ASSERT_EQ(stats(r.h).frames_live, 1); /* A2 */
		} else {
			ASSERT_EQ_INT(r.g.ret[0], 0);
			ASSERT_NE(r.g.pg[0].pfn, r.pfn0);
			ASSERT(page_is(r.h->ops->page_ptr(r.h, r.g.pg[0].pfn), 4096, 1));
			/* reclaim: swapped back in; migrate: already in its new frame */
			ASSERT_EQ(stats(r.h).faults_in, evs[k] == EV_RECLAIM ? 1 : 0);
			ASSERT_EQ_INT(r.h->ops->check_access(r.h, r.A, r.g.pg[0].pfn, false), 0);
		}
		race_done(&r, 0);
	}
}

/*
 * Both at once, at the event's decision. The reader read A's PTE before the
 * event marked it BUSY; the event is parked between its BUSY store and its
 * read of the pins. Either
 *   (a) the reader's pin lands first: the event then sees it, gives the PTE
 *       back and leaves the page; the reader's second read finds the PTE as
 *       it was and keeps its pin; or
 *   (b) the reader reads the PTE again first: it sees BUSY, gives its pin
 *       back and takes the slow path (which waits for the event's VMA
 *       lock); the event sees no pin and takes the page.
 */
static void isolate_race(enum race_event e, bool pin_first)
{
	struct evthread ev;
	struct race r;
	bool ok = true, done;

	race_setup(&r, false);
	lot_arm(&r.l, HOOK_GUP_READ, r.A);
	getter_start(&r.g, r.h, false);
	ok = ok && lot_wait(&r.l, HOOK_GUP_READ);
	lot_arm(&r.l, HOOK_EVENT_BUSY, r.A);
	ev_start(&ev, r.h, e, r.A);
	ok = ok && lot_wait(&r.l, HOOK_EVENT_BUSY);
	lot_arm(&r.l, pin_first ? HOOK_GUP_PINNED : HOOK_GUP_CHANGED, r.A);
	lot_release(&r.l, HOOK_GUP_READ);
	ok = ok && lot_wait(&r.l, pin_first ? HOOK_GUP_PINNED : HOOK_GUP_CHANGED);
	lot_release(&r.l, HOOK_EVENT_BUSY);
	done = ok && ev_wait(&ev);
	CHECK_MSG(ok, "%s: a thread never reached its trap", ev_name[e]);
	CHECK_MSG(!ok || done, "%s: the event did not finish", ev_name[e]);
	lot_release_all(&r.l);
	ev_join(&ev);
	getter_join(&r.g);
	ASSERT(ok && done);
	ASSERT_EQ_INT(r.g.ret[0], 0);
	if (pin_first) {
		ASSERT_EQ_INT(ev.ret, 0);
		ASSERT_EQ(r.g.pg[0].pfn, r.pfn0);
		ASSERT_EQ(r.g.pg[0].flags, GPAMM_HOST_PAGE_WRITABLE);
		ASSERT_EQ(lot_hits(&r.l, HOOK_GUP_CHANGED), 0);
		ASSERT_EQ(lot_hits(&r.l, HOOK_FAULT_LOCKED), 0);
		ASSERT_EQ(stats(r.h).swapped, 0);
		ASSERT_EQ_INT(r.h->ops->check_access(r.h, r.A, r.pfn0, true), 0);
	} else {
		ASSERT_EQ_INT(ev.ret, 1);
		ASSERT_EQ(lot_hits(&r.l, HOOK_GUP_CHANGED), 1);
		ASSERT_EQ(lot_hits(&r.l, HOOK_FAULT_LOCKED), 1);
		if (e == EV_MERGE) {
			/* A kept its frame (lowest address), now shared: read-only. */
			ASSERT_EQ(r.g.pg[0].pfn, r.pfn0);
			ASSERT_EQ(r.g.pg[0].flags, 0);
			ASSERT_EQ(pfn_of(r.h, r.A2), r.pfn0);
		} else {
			ASSERT_NE(r.g.pg[0].pfn, r.pfn0);
			ASSERT_EQ(r.g.pg[0].flags, GPAMM_HOST_PAGE_WRITABLE);
			ASSERT_EQ(stats(r.h).faults_in, e == EV_RECLAIM ? 1 : 0);
		}
		ASSERT(page_is(r.h->ops->page_ptr(r.h, r.g.pg[0].pfn), 4096, 1));
	}
	race_done(&r, 0);
}

static void test_par_pin_meets_busy(void)
{
	static const enum race_event evs[] = { EV_RECLAIM, EV_MIGRATE, EV_MERGE };

	for (unsigned k = 0; k < 3; k++) {
		isolate_race(evs[k], true);
		isolate_race(evs[k], false);
	}
}

/*
 * mprotect against a write pin, both orders. Pin first (confirmed): the
 * pin says writable, which the PTE did say when the pin was taken, and
 * mprotect's invalidation is the MMU's cue to drop what it maps with it.
 * mprotect first: the reader's write needs HPTE_WRITE, which is gone: it
 * never takes the lock-free path, and the slow path refuses (-EFAULT).
 */
static void test_par_mprotect_flags(void)
{
	const uint64_t ps = 4096;
	struct gpamm_host *h = sim(12, 8, 0);
	struct gpamm_host_page pg;
	uint64_t hva;
	struct lot l;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 2 * ps, 0, &hva), 0);
	write_tag(h, hva, 2);
	lot_init(&l, hva);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, lot_hook, &l), 0);
	ASSERT_EQ_INT(h->ops->get_page(h, hva, true, &pg), 0);
	ASSERT_EQ(pg.flags, GPAMM_HOST_PAGE_WRITABLE);
	ASSERT_EQ(lot_hits(&l, HOOK_GUP_READ), 1);
	ASSERT_EQ_INT(gpamm_sim_mprotect(h, hva, ps, false), 0);
	ASSERT_EQ(stats(h).frames_live, 1);
	h->ops->put_page(h, pg.pfn, true, true);
	ASSERT_EQ_INT(h->ops->get_page(h, hva, true, &pg), -EFAULT);
	ASSERT_EQ(lot_hits(&l, HOOK_GUP_READ), 1); /* not even read lock-free */
	ASSERT_EQ(lot_hits(&l, HOOK_FAULT_LOCKED), 1);
	ASSERT_EQ_INT(h->ops->get_page(h, hva, false, &pg), 0);
	ASSERT_EQ(pg.flags, 0);
	ASSERT_EQ(lot_hits(&l, HOOK_GUP_READ), 2);
	h->ops->put_page(h, pg.pfn, true, false);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 2 * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	gpamm_host_destroy(h);
	lot_fini(&l);
}

/* munmap of a page whose lock-free pin was confirmed: the frame lives until the put. */
static void test_par_munmap_keeps_pinned_frame(void)
{
	const uint64_t ps = 4096;
	struct gpamm_host *h = sim(12, 8, 0);
	struct gpamm_host_page pg;
	uint64_t hva;
	struct lot l;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, ps, 0, &hva), 0);
	write_tag(h, hva, 5);
	lot_init(&l, hva);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, lot_hook, &l), 0);
	ASSERT_EQ_INT(h->ops->get_page(h, hva, false, &pg), 0);
	ASSERT_EQ(lot_hits(&l, HOOK_GUP_PINNED), 1);
	ASSERT_EQ(lot_hits(&l, HOOK_FAULT_LOCKED), 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, ps), 0);
	ASSERT_EQ(stats(h).frames_live, 1);
	ASSERT(page_is(h->ops->page_ptr(h, pg.pfn), ps, 5));
	h->ops->put_page(h, pg.pfn, true, false);
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, NULL, NULL), 0);
	gpamm_host_destroy(h);
	lot_fini(&l);
}

/* ---- 3. a frame freed and reused under the reader ------------------------------ */

/*
 * The reader reads A's PTE (frame F) and stops. A is dropped (F freed) and
 * F is handed to page D, so F is live again with D's count: the reader's
 * speculative reference succeeds, on the wrong page. Its second PTE read
 * finds A no longer maps F: it gives the reference back (F stays D's) and
 * faults A in afresh.
 */
static void test_par_frame_reused(void)
{
	const uint64_t ps = 4096;
	struct gpamm_host *h = sim(12, 3, 0);
	struct getter g = { 0 };
	struct lot l;
	uint64_t hva, A, F, pg1;
	bool parked;

	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * ps, 0, &hva), 0);
	A = hva;
	write_tag(h, A, 1);
	F = pfn_of(h, A);
	lot_init(&l, A);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, lot_hook, &l), 0);
	lot_arm(&l, HOOK_GUP_READ, A);
	getter_add(&g, A, false);
	getter_start(&g, h, false);
	parked = lot_wait(&l, HOOK_GUP_READ);
	if (parked) {
		/* Free frames come out oldest first: F is the third one handed out. */
		ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, A, ps), 0);
		write_tag(h, hva + ps, 2);
		write_tag(h, hva + 2 * ps, 3);
		write_tag(h, hva + 3 * ps, 4);
		ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva + ps, ps), 0); /* one frame for A */
	}
	lot_release_all(&l);
	getter_join(&g);
	ASSERT(parked);
	ASSERT_EQ(pfn_of(h, hva + 3 * ps), F); /* the setup did hand F to D */
	ASSERT_EQ_INT(g.ret[0], 0);
	pg1 = g.pg[0].pfn;
	ASSERT_NE(pg1, F);                                 /* not D's page */
	ASSERT(page_is(h->ops->page_ptr(h, pg1), ps, 0)); /* A was dropped: zeros */
	ASSERT(read_is(h, hva + 3 * ps, 4));              /* D kept F, intact */
	/* ...because the reference on F was taken and given back. */
	ASSERT_EQ(lot_hits(&l, HOOK_GUP_PINNED), 1);
	ASSERT_EQ(lot_hits(&l, HOOK_GUP_CHANGED), 1);
	ASSERT_EQ(lot_hits(&l, HOOK_FAULT_LOCKED), 1);
	ASSERT_EQ_INT(h->ops->check_access(h, hva + 3 * ps, F, true), 0);
	ASSERT_EQ(stats(h).frames_live, 3);
	ASSERT_EQ(stats(h).pinned, 1);
	h->ops->put_page(h, pg1, true, false);
	ASSERT_EQ(stats(h).pinned, 0);
	/* F's count is D's alone again: dropping D frees it. */
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva + 3 * ps, ps), 0);
	ASSERT_EQ(stats(h).frames_live, 2);
	ASSERT_EQ_INT(gpamm_sim_set_test_hook(h, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_sim_munmap(h, hva, 4 * ps), 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	gpamm_host_destroy(h);
	lot_fini(&l);
}

/* ---- 4. the pool under concurrent faults and frees ---------------------------- */

/*
 * Two threads each fault in their own P pages and drop them again, round
 * after round, from a pool of exactly 2P frames: whatever one thread holds,
 * the other's P frames are free or on their way back from its own drop,
 * which returned before it faults again. So no get_page may ever see the
 * pool empty: a frame taken off the pending stack must not be missing from
 * the FIFO while another thread allocates.
 */
#define POOL_PAGES 32

static pthread_barrier_t pool_start;

struct pool_worker {
	pthread_t tid;
	struct gpamm_host *h;
	uint64_t hva;
	unsigned rounds;
	int err;
};

static void *pool_main(void *arg)
{
	struct pool_worker *w = arg;
	struct gpamm_host *h = w->h;
	const uint64_t ps = 1ULL << h->page_shift;
	struct gpamm_host_page pg;

	pthread_barrier_wait(&pool_start); /* both at once, or there is no race */
	for (unsigned r = 0; r < w->rounds && !w->err; r++) {
		for (unsigned i = 0; i < POOL_PAGES; i++) {
			w->err = h->ops->get_page(h, w->hva + i * ps, true, &pg);
			if (w->err)
				break;
			h->ops->put_page(h, pg.pfn, true, true);
		}
		if (!w->err)
			w->err = gpamm_sim_madv_dontneed(h, w->hva, POOL_PAGES * ps);
	}
	return NULL;
}

static void test_par_pool_never_spuriously_empty(void)
{
	struct gpamm_host *h = sim(12, 2 * POOL_PAGES, 0);
	struct pool_worker w[2];

	for (unsigned k = 0; k < 2; k++) {
		w[k] = (struct pool_worker){ .h = h, .rounds = (unsigned)(20000 * tap_scale()) };
		ASSERT_EQ_INT(gpamm_sim_mmap(h, POOL_PAGES * 4096, 0, &w[k].hva), 0);
	}
	pthread_barrier_init(&pool_start, NULL, 2);
	for (unsigned k = 0; k < 2; k++)
		ASSERT_EQ_INT(pthread_create(&w[k].tid, NULL, pool_main, &w[k]), 0);
	for (unsigned k = 0; k < 2; k++)
		pthread_join(w[k].tid, NULL);
	pthread_barrier_destroy(&pool_start);
	ASSERT_EQ_INT(w[0].err, 0);
	ASSERT_EQ_INT(w[1].err, 0);
	ASSERT_EQ(stats(h).frames_live, 0);
	ASSERT_EQ(stats(h).pinned, 0);
	ASSERT_EQ(stats(h).faults_in, 2ULL * POOL_PAGES * w[0].rounds);
	gpamm_host_destroy(h);
}

/* ---- 5. stress ------------------------------------------------------------------ */

#define S_WORKERS 3
#define S_SHARED  16 /* pages every worker pins, which events drop and protect */
#define S_OWN     16 /* pages per worker, only it writes; events keep their bytes */
#define S_CHURN   32 /* a VMA the event thread unmaps and maps again */
#define S_FRAMES  256
#define S_SWAP    32

struct sshared {
	struct gpamm_host *h;
	uint64_t ps, main_hva;
	uint64_t churn_hva; /* atomic; 0 while not mapped */
	unsigned iters;
	int stop;           /* atomic */
};

struct sworker {
	struct sshared *c;
	pthread_t tid;
	unsigned id;
	uint64_t seed;
	uint64_t tag[S_OWN];
	uint64_t pins, faults_refused;
};

static uint64_t own_hva(const struct sshared *c, unsigned id, unsigned i)
{
	return c->main_hva + (S_SHARED + id * S_OWN + i) * c->ps;
}

static void *s_worker(void *arg)
{
	struct sworker *w = arg;
	struct sshared *c = w->c;
	struct gpamm_host *h = c->h;
	struct tap_rng rng;

	tap_rng_seed(&rng, w->seed);
	for (unsigned n = 0; n < c->iters; n++) {
		unsigned what = (unsigned)tap_below(&rng, 10);
		bool write = tap_below(&rng, 2);
		struct gpamm_host_page pg;
		uint64_t hva;
		int ret;

		if (what < 5) {
			/* Ours: pinned, no event may move or change it. */
			unsigned i = (unsigned)tap_below(&rng, S_OWN);

			hva = own_hva(c, w->id, i);
			ret = h->ops->get_page(h, hva, write, &pg);
			if (ret) {
				tap_fail_async(__FILE__, __LINE__, "get_page of an own page failed");
				break;
			}
			w->pins++;
			if (write && pg.flags != GPAMM_HOST_PAGE_WRITABLE)
				tap_fail_async(__FILE__, __LINE__, "write pin not writable");
			if (h->ops->check_access(h, hva, pg.pfn, write))
				tap_fail_async(__FILE__, __LINE__, "pinned page went stale");
			if (!page_is(h->ops->page_ptr(h, pg.pfn), c->ps, w->tag[i]))
				tap_fail_async(__FILE__, __LINE__, "contents lost");
			if (write) {
				w->tag[i] = ((uint64_t)w->id << 32 | n) + 1;
				fill_page(h->ops->page_ptr(h, pg.pfn), c->ps, w->tag[i]);
			}
			h->ops->put_page(h, pg.pfn, true, write);
		} else if (what < 8) {
			/* Shared: dropped and write-protected behind our back. */
			hva = c->main_hva + tap_below(&rng, S_SHARED) * c->ps;
			ret = h->ops->get_page(h, hva, write, &pg);
			if (ret == -EFAULT && write) {
				w->faults_refused++;
				continue;
			}
			if (ret) {
				tap_fail_async(__FILE__, __LINE__, "get_page of a shared page failed");
				break;
			}
			w->pins++;
			if (write)
				memset(h->ops->page_ptr(h, pg.pfn), (int)(n & 0xff), 64);
			h->ops->put_page(h, pg.pfn, true, write);
		} else {
			/* The churned VMA: there or not. */
			uint64_t base = __atomic_load_n(&c->churn_hva, __ATOMIC_ACQUIRE);

			if (!base)
				continue;
			hva = base + tap_below(&rng, S_CHURN) * c->ps;
			ret = h->ops->get_page(h, hva, write, &pg);
			if (ret == -EFAULT) {
				w->faults_refused++;
				continue;
			}
			if (ret) {
				tap_fail_async(__FILE__, __LINE__, "get_page of a churn page failed");
				break;
			}
			w->pins++;
			h->ops->put_page(h, pg.pfn, true, write);
		}
	}
	return NULL;
}

static void s_event(struct sshared *c, struct tap_rng *rng)
{
	struct gpamm_host *h = c->h;
	const uint64_t ps = c->ps, all = (S_SHARED + S_WORKERS * S_OWN) * ps;
	uint64_t churn = __atomic_load_n(&c->churn_hva, __ATOMIC_RELAXED), nh;
	uint64_t first = tap_below(rng, S_SHARED), n = 1 + tap_below(rng, S_SHARED - first);
	int64_t r;

	switch (tap_below(rng, 9)) {
	case 0: /* reclaim over everything mapped: every VMA's lock */
		r = gpamm_sim_reclaim(h, c->main_hva, 1ULL << 36, 1 + tap_below(rng, 16));
		CHECK_MSG(r >= 0 || r == -ENOSPC, "reclaim %lld", (long long)r);
		break;
	case 1:
		r = gpamm_sim_migrate(h, c->main_hva, all);
		CHECK_MSG(r >= 0 || r == -ENOMEM, "migrate %lld", (long long)r);
		break;
	case 2:
		r = gpamm_sim_merge(h, c->main_hva, 1ULL << 36);
		CHECK_MSG(r >= 0, "merge %lld", (long long)r);
		break;
	case 3:
		r = gpamm_sim_madv_dontneed(h, c->main_hva + first * ps, n * ps);
		CHECK_MSG(r == 0, "dontneed %lld", (long long)r);
		break;
	case 4:
		r = gpamm_sim_mprotect(h, c->main_hva + first * ps, n * ps, tap_below(rng, 2));
		CHECK_MSG(r == 0, "mprotect %lld", (long long)r);
		break;
	case 5: /* the host's own writes to shared pages */
		if (gpamm_sim_mprotect(h, c->main_hva + first * ps, ps, true) == 0) {
			char b[64];

			memset(b, 0x5a, sizeof(b));
			r = gpamm_sim_write(h, c->main_hva + first * ps, b, sizeof(b));
			CHECK_MSG(r == 0, "write %lld", (long long)r);
		}
		break;
	case 6: /* part of the churn VMA, or all of it and a new one */
		if (churn && tap_below(rng, 2)) {
			r = gpamm_sim_munmap(h, churn + tap_below(rng, S_CHURN) * ps, ps);
			CHECK_MSG(r == 0, "munmap %lld", (long long)r);
			break;
		}
		/* fall through */
	case 7:
		if (churn) {
			__atomic_store_n(&c->churn_hva, 0, __ATOMIC_RELEASE);
			CHECK_MSG(gpamm_sim_munmap(h, churn, S_CHURN * ps) == 0, "munmap churn");
		}
		r = gpamm_sim_mmap(h, S_CHURN * ps, 0, &nh);
		CHECK_MSG(r == 0, "mmap %lld", (long long)r);
		if (!r)
			__atomic_store_n(&c->churn_hva, nh, __ATOMIC_RELEASE);
		break;
	default:
		if (churn) {
			r = gpamm_sim_madv_dontneed(h, churn, S_CHURN * ps);
			/* A page of it may have been munmapped alone: -ENOMEM then. */
			CHECK_MSG(r == 0 || r == -ENOMEM, "dontneed churn %lld", (long long)r);
		}
		break;
	}
}

static void test_par_stress(void)
{
	const unsigned shift = 12;
	struct sshared c = { .ps = 1ULL << shift };
	struct sworker w[S_WORKERS];
	struct tap_rng rng;
	uint64_t seed = tap_seed() ^ 0x5eed5, events = 0, pins = 0, refused = 0, hva, i;
	struct gpamm_host_page pg;
	int64_t r;

	/* The harness printed its seed: -s SEED replays every thread's choices
	 * (not the interleaving, which is the point of the test). */
	tap_rng_seed(&rng, seed);
	c.h = sim(shift, S_FRAMES, S_SWAP);
	c.iters = (unsigned)(30000 * tap_scale());
	ASSERT_EQ_INT(gpamm_sim_mmap(c.h, (S_SHARED + S_WORKERS * S_OWN) * c.ps, 0, &c.main_hva), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(c.h, S_CHURN * c.ps, 0, &hva), 0);
	c.churn_hva = hva;
	for (unsigned k = 0; k < S_WORKERS; k++) {
		w[k] = (struct sworker){ .c = &c, .id = k, .seed = tap_rand(&rng) };
		for (unsigned j = 0; j < S_OWN; j++) {
			w[k].tag[j] = ((uint64_t)(k + 100) << 32) | j;
			write_tag(c.h, own_hva(&c, k, j), w[k].tag[j]);
		}
	}
	for (unsigned k = 0; k < S_WORKERS; k++)
		ASSERT_EQ_INT(pthread_create(&w[k].tid, NULL, s_worker, &w[k]), 0);
	for (unsigned k = 0; k < S_WORKERS; k++) {
		while (pthread_tryjoin_np(w[k].tid, NULL) != 0) {
			s_event(&c, &rng);
			events++;
		}
	}
	for (unsigned k = 0; k < S_WORKERS; k++) {
		pins += w[k].pins;
		refused += w[k].faults_refused;
	}
	tap_diag("%llu events against %u workers: %llu pins, %llu refused (unmapped or read-only)",
		 (unsigned long long)events, S_WORKERS, (unsigned long long)pins,
		 (unsigned long long)refused);
	ASSERT_EQ(stats(c.h).pinned, 0);
	ASSERT_EQ(stats(c.h).stale_accesses, 0);
	for (unsigned k = 0; k < S_WORKERS; k++)
		for (unsigned j = 0; j < S_OWN; j++)
			ASSERT(read_is(c.h, own_hva(&c, k, j), w[k].tag[j]));
	ASSERT_EQ_INT(gpamm_sim_munmap(c.h, c.main_hva, 1ULL << 36), 0);
	ASSERT_EQ(stats(c.h).frames_live, 0);
	ASSERT_EQ(stats(c.h).swapped, 0);

	/* Every frame came back: the whole pool faults in, one page more does not. */
	ASSERT_EQ_INT(gpamm_sim_mmap(c.h, (S_FRAMES + 1) * c.ps, 0, &hva), 0);
	for (i = 0; i < S_FRAMES; i++) {
		ASSERT_EQ_INT(c.h->ops->get_page(c.h, hva + i * c.ps, true, &pg), 0);
		c.h->ops->put_page(c.h, pg.pfn, true, true);
	}
	ASSERT_EQ_INT(c.h->ops->get_page(c.h, hva + S_FRAMES * c.ps, false, &pg), -ENOMEM);
	/* And every swap slot: the whole swap fills, exactly. */
	r = gpamm_sim_reclaim(c.h, hva, S_FRAMES * c.ps, S_FRAMES);
	ASSERT_EQ_INT(r, S_SWAP);
	ASSERT_EQ(stats(c.h).swapped, S_SWAP);
	ASSERT_EQ_INT(gpamm_sim_munmap(c.h, hva, (S_FRAMES + 1) * c.ps), 0);
	ASSERT_EQ(stats(c.h).frames_live, 0);
	ASSERT_EQ(stats(c.h).swapped, 0);
	ASSERT_EQ(stats(c.h).pinned, 0);
	gpamm_host_destroy(c.h);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_par_fault_in_no_block);
	TEST(test_par_cow_break_no_block);
	TEST(test_par_pin_then_skipping_event);
	TEST(test_par_pin_then_changing_event);
	TEST(test_par_event_then_pin);
	TEST(test_par_pin_meets_busy);
	TEST(test_par_mprotect_flags);
	TEST(test_par_munmap_keeps_pinned_frame);
	TEST(test_par_frame_reused);
	TEST(test_par_pool_never_spuriously_empty);
	TEST(test_par_stress);
	return tap_done();
}
