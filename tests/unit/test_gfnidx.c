// SPDX-License-Identifier: MIT
/*
 * The memslot GFN index (src/gfnidx.h) against a sorted-array model:
 * random inserts, removes, replaces and floor searches over thousands of
 * keys (dense and sparse key spaces, the edge keys 0 and UINT64_MAX),
 * growing and shrinking through every split, borrow, merge and root
 * change, with gfnidx_check() on the whole tree along the way; ascending,
 * descending and scrambled builds (the first two leave full nodes);
 * allocation failure at every allocation an insert makes, which must
 * change nothing, and none after a reserve; and, through a VM, a memslot
 * change whose allocation fails leaves both sets as they were. Seeded
 * (tap_seed(): printed, replayable with -s).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gfnidx.h"
#include "harness/tap.h"
#include "vm.h"

/* ---- the model: sorted keys with their word and value -------------------------- */

struct model {
	uint64_t *key, *word;
	void **val;
	unsigned n, cap;
};

static void model_init(struct model *m, unsigned cap)
{
	m->key = calloc(cap, sizeof(*m->key));
	m->word = calloc(cap, sizeof(*m->word));
	m->val = calloc(cap, sizeof(*m->val));
	m->n = 0;
	m->cap = cap;
	ASSERT(m->key && m->word && m->val);
}

static void model_free(struct model *m)
{
	free(m->key);
	free(m->word);
	free(m->val);
}

/* Entries with key <= x. */
static unsigned model_rank(const struct model *m, uint64_t x)
{
	unsigned lo = 0, hi = m->n;

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (m->key[mid] <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool model_has(const struct model *m, uint64_t k, unsigned *at)
{
	unsigned r = model_rank(m, k);

	*at = r ? r - 1 : 0;
	return r && m->key[r - 1] == k;
}

static void model_insert(struct model *m, uint64_t k, uint64_t w, void *v)
{
	unsigned r = model_rank(m, k);

	ASSERT(m->n < m->cap);
	memmove(&m->key[r + 1], &m->key[r], (m->n - r) * sizeof(*m->key));
	memmove(&m->word[r + 1], &m->word[r], (m->n - r) * sizeof(*m->word));
	memmove(&m->val[r + 1], &m->val[r], (m->n - r) * sizeof(*m->val));
	m->key[r] = k;
	m->word[r] = w;
	m->val[r] = v;
	m->n++;
}

static void model_remove(struct model *m, unsigned at)
{
	memmove(&m->key[at], &m->key[at + 1], (m->n - at - 1) * sizeof(*m->key));
	memmove(&m->word[at], &m->word[at + 1], (m->n - at - 1) * sizeof(*m->word));
	memmove(&m->val[at], &m->val[at + 1], (m->n - at - 1) * sizeof(*m->val));
	m->n--;
}

/* A value for @k: any non-NULL pointer will do, and this one tells keys apart. */
static void *val_of(uint64_t k, uint64_t salt)
{
	return (void *)(uintptr_t)(((k ^ salt) << 1) | 1);
}

static void expect_floor(const struct gfnidx *t, const struct model *m, uint64_t x)
{
	unsigned r = model_rank(m, x);
	uint64_t w = 12345;
	void *v = gfnidx_floor(t, x, &w);

	if (!r) {
		ASSERT_MSG(!v && !w, "floor(%llu): found %p, model none", (unsigned long long)x, v);
		return;
	}
	ASSERT_MSG(v == m->val[r - 1] && w == m->word[r - 1],
		   "floor(%llu): %p/%llu, model key %llu: %p/%llu", (unsigned long long)x, v,
		   (unsigned long long)w, (unsigned long long)m->key[r - 1], m->val[r - 1],
		   (unsigned long long)m->word[r - 1]);
}

/* The whole tree against the model: shape, count, and the floor at and around every key. */
static void expect_all(const struct gfnidx *t, const struct model *m)
{
	ASSERT_EQ_INT(gfnidx_check(t), (long)m->n);
	for (unsigned i = 0; i < m->n; i++) {
		expect_floor(t, m, m->key[i]);
		if (m->key[i])
			expect_floor(t, m, m->key[i] - 1);
		if (m->key[i] != UINT64_MAX)
			expect_floor(t, m, m->key[i] + 1);
	}
	expect_floor(t, m, 0);
	expect_floor(t, m, UINT64_MAX);
}

/* A key from one of a few spaces: dense (collisions), sparse, near both edges. */
static uint64_t pick_key(struct tap_rng *r, unsigned space)
{
	switch (space) {
	case 0:
		return tap_below(r, 3000);
	case 1:
		return tap_rand(r);
	case 2:
		return UINT64_MAX - tap_below(r, 3000);
	default:
		return tap_below(r, 2) ? tap_below(r, 40) : UINT64_MAX - tap_below(r, 40);
	}
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_random_against_model(void)
{
	struct tap_rng r;
	struct gfnidx t;
	struct model m;
	const unsigned steps = (unsigned)(120000 * tap_scale());
	unsigned peak = 0, ins = 0, rem = 0, rep = 0;

	tap_rng_seed(&r, tap_seed());
	gfnidx_init(&t);
	model_init(&m, 8192);
	for (unsigned step = 0; step < steps; step++) {
		/* phases of growth and shrinking, so the tree goes up and down in depth */
		unsigned space = (step / 5000) % 4;
		unsigned grow = (step / 30000) % 2 ? 25 : 70; /* percent of inserts */
		unsigned op = (unsigned)tap_below(&r, 100), at;

		if (op < grow && m.n < m.cap) {
			uint64_t k = pick_key(&r, space), w = tap_rand(&r);
			void *v = val_of(k, step);
			int ret = gfnidx_insert(&t, k, w, v);

			if (model_has(&m, k, &at)) {
				ASSERT_EQ_INT(ret, -EEXIST);
			} else {
				ASSERT_EQ_INT(ret, 0);
				model_insert(&m, k, w, v);
				ins++;
			}
		} else if (op < 95) {
			/* remove: mostly a present key, sometimes one that is not there */
			uint64_t k = m.n && tap_below(&r, 4) ? m.key[tap_below(&r, m.n)]
							      : pick_key(&r, space);
			void *v = gfnidx_remove(&t, k);

			if (model_has(&m, k, &at)) {
				ASSERT(v == m.val[at]);
				model_remove(&m, at);
				rem++;
			} else {
				ASSERT(!v);
			}
		} else {
			uint64_t k = m.n && tap_below(&r, 2) ? m.key[tap_below(&r, m.n)]
							      : pick_key(&r, space);
			uint64_t w = tap_rand(&r);
			void *v = val_of(k, ~(uint64_t)step);
			void *old = gfnidx_replace(&t, k, w, v);

			if (model_has(&m, k, &at)) {
				ASSERT(old == m.val[at]);
				m.val[at] = v;
				m.word[at] = w;
				rep++;
			} else {
				ASSERT(!old);
			}
		}
		if (m.n > peak)
			peak = m.n;
		for (unsigned q = 0; q < 4; q++)
			expect_floor(&t, &m, q & 1 ? pick_key(&r, space) : tap_rand(&r));
		if (step % 997 == 0 || m.n < 40)
			ASSERT_EQ_INT(gfnidx_check(&t), (long)m.n);
		if (step % 9999 == 0)
			expect_all(&t, &m);
	}
	expect_all(&t, &m);
	/* empty it in a random order, checking as it shrinks */
	while (m.n) {
		unsigned at = (unsigned)tap_below(&r, m.n);

		ASSERT(gfnidx_remove(&t, m.key[at]) == m.val[at]);
		model_remove(&m, at);
		if (m.n % 101 == 0 || m.n < 40)
			expect_all(&t, &m);
	}
	ASSERT(!t.root && t.depth == 0 && t.nr == 0);
	ASSERT_LE(t.nr_spare, 8); /* a few nodes are kept, not all */
	tap_diag("%u inserts, %u removes, %u replaces; at most %u keys", ins, rem, rep, peak);
	gfnidx_destroy(&t);
	model_free(&m);
}

/* How many leaves: the keys over full leaves, for an ascending build. */
static unsigned count_leaves(const struct gfnidx_node *n, unsigned depth)
{
	unsigned c = 0;

	if (!depth)
		return 1;
	for (unsigned i = 0; i < n->n; i++)
		c += count_leaves(n->child[i], depth - 1);
	return c;
}

/* The depth of a tree of @n keys whose nodes hold @per entries (the last on a level fewer). */
static unsigned depth_for(unsigned n, unsigned per)
{
	unsigned d = 0, c = (n + per - 1) / per;

	while (c > 1) {
		c = (c + per - 1) / per;
		d++;
	}
	return d;
}

enum order { ASCENDING, DESCENDING, SCRAMBLED };

static void build(struct gfnidx *t, struct model *m, unsigned n, enum order o, uint64_t base,
		  uint64_t stride)
{
	for (unsigned i = 0; i < n; i++) {
		unsigned j = o == ASCENDING ? i : o == DESCENDING ? n - 1 - i
								  : (unsigned)((i * 7919ULL) % n);
		uint64_t k = base + j * stride;

		ASSERT_EQ_INT(gfnidx_insert(t, k, k + stride, val_of(k, 0)), 0);
		model_insert(m, k, k + stride, val_of(k, 0));
		if (i % 499 == 0)
			ASSERT_EQ_INT(gfnidx_check(t), (long)m->n);
	}
	expect_all(t, m);
}

static void test_orders(void)
{
	const unsigned n = 20000; /* 7919 is prime and does not divide it: a permutation */
	struct gfnidx t;
	struct model m;

	model_init(&m, n);
	for (unsigned o = ASCENDING; o <= SCRAMBLED; o++) {
		for (unsigned e = 0; e < 2; e++) {
			/* from 0 up, and up to UINT64_MAX itself */
			uint64_t stride = 1 + o * 5, base = e ? UINT64_MAX - (n - 1) * stride : 0;

			gfnidx_init(&t);
			m.n = 0;
			build(&t, &m, n, o, base, stride);
			if (o != SCRAMBLED) {
				/* appends (prepends) keep the left (right) part full:
				 * n / FAN leaves, rounded up */
				ASSERT_EQ(count_leaves(t.root, t.depth),
					  (n + GFNIDX_FAN - 1) / GFNIDX_FAN);
				ASSERT_EQ(t.depth, depth_for(n, GFNIDX_FAN));
			} else {
				/* no worse than half-full nodes */
				ASSERT_LE(t.depth, depth_for(n, GFNIDX_FAN / 2));
			}
			/* remove in the order it went in, then the rest the other way */
			for (unsigned i = 0; i < n / 2; i++) {
				unsigned j = o == ASCENDING ? i : o == DESCENDING ? n - 1 - i
										  : (unsigned)((i * 7919ULL) % n);
				uint64_t k = base + j * stride;
				unsigned at;

				ASSERT(model_has(&m, k, &at));
				ASSERT(gfnidx_remove(&t, k) == m.val[at]);
				model_remove(&m, at);
				if (i % 997 == 0)
					ASSERT_EQ_INT(gfnidx_check(&t), (long)m.n);
			}
			expect_all(&t, &m);
			while (m.n) {
				unsigned at = o == DESCENDING ? 0 : m.n - 1;

				ASSERT(gfnidx_remove(&t, m.key[at]) == m.val[at]);
				model_remove(&m, at);
				if (m.n % 997 == 0 || m.n < 20)
					ASSERT_EQ_INT(gfnidx_check(&t), (long)m.n);
			}
			ASSERT(!t.root);
			gfnidx_destroy(&t);
		}
	}
	model_free(&m);
}

static void test_edges(void)
{
	static int vals[2 * GFNIDX_FAN];
	int *const x = &vals[0]; /* UINT64_MAX's; UINT64_MAX - k gets vals[k] */
	struct gfnidx t;
	uint64_t w = 7;

	gfnidx_init(&t);
	/* empty */
	ASSERT(!gfnidx_floor(&t, 0, &w) && w == 0);
	ASSERT(!gfnidx_floor(&t, UINT64_MAX, &w));
	ASSERT(!gfnidx_remove(&t, 0));
	ASSERT(!gfnidx_replace(&t, 0, 1, x));
	ASSERT_EQ_INT(gfnidx_check(&t), 0);
	/* the largest key alone: only UINT64_MAX finds it */
	ASSERT_EQ_INT(gfnidx_insert(&t, UINT64_MAX, 1, x), 0);
	ASSERT_EQ_INT(gfnidx_insert(&t, UINT64_MAX, 2, x), -EEXIST);
	ASSERT(!gfnidx_floor(&t, UINT64_MAX - 1, &w) && w == 0);
	ASSERT(gfnidx_floor(&t, UINT64_MAX, &w) == x && w == 1);
	/* key 0 below it: everything finds one of them */
	ASSERT_EQ_INT(gfnidx_insert(&t, 0, 3, &w), 0);
	ASSERT(gfnidx_floor(&t, 0, &w) == &w && w == 3);
	ASSERT(gfnidx_floor(&t, UINT64_MAX - 1, &w) == &w && w == 3);
	ASSERT(gfnidx_floor(&t, UINT64_MAX, &w) == x && w == 1);
	/* the padding repeats the last key: UINT64_MAX in a full and a non-full leaf */
	for (uint64_t k = 1; k < 2 * GFNIDX_FAN; k++) {
		ASSERT_EQ_INT(gfnidx_insert(&t, UINT64_MAX - k, k, &vals[k]), 0);
		ASSERT_EQ_INT(gfnidx_check(&t), (long)k + 2);
		ASSERT(gfnidx_floor(&t, UINT64_MAX, &w) == x && w == 1);
		ASSERT(gfnidx_floor(&t, UINT64_MAX - 1, &w) == &vals[1] && w == 1);
		ASSERT(gfnidx_floor(&t, UINT64_MAX - k - 1, &w) == &w && w == 3);
	}
	/* replace keeps the key, changes word and value */
	ASSERT(gfnidx_replace(&t, UINT64_MAX, 9, &w) == x);
	ASSERT(gfnidx_floor(&t, UINT64_MAX, &w) == &w && w == 9);
	ASSERT(gfnidx_remove(&t, UINT64_MAX) == &w);
	ASSERT(gfnidx_floor(&t, UINT64_MAX, &w) == &vals[1] && w == 1);
	ASSERT(gfnidx_remove(&t, 0) == &w);
	ASSERT(!gfnidx_floor(&t, 0, &w));
	ASSERT(!gfnidx_floor(&t, UINT64_MAX - 2 * GFNIDX_FAN, &w));
	ASSERT_EQ_INT(gfnidx_check(&t), 2 * GFNIDX_FAN - 1);
	gfnidx_destroy(&t);
	ASSERT(!t.root && !t.spare);
}

/*
 * Allocation failure: an insert that needs k nodes, with its j-th allocation
 * failing for every j <= k, returns -ENOMEM and leaves tree and spares as
 * they were; after gfnidx_reserve(), no insert allocates (however many
 * levels split), and no remove ever does.
 */
static void test_alloc_failure(void)
{
	struct tap_rng r;
	struct gfnidx t;
	struct model m;
	unsigned failed = 0, deep = 0;

	tap_rng_seed(&r, tap_seed() ^ 0xa110cULL);
	gfnidx_init(&t);
	model_init(&m, 9000);
	for (unsigned i = 0; i < 6000; i++) {
		uint64_t k = tap_below(&r, 1u << 20);
		unsigned at, spares = t.nr_spare, depth = t.depth;
		int ret;

		if (model_has(&m, k, &at))
			continue;
		/* fail the j-th allocation for j = 1, 2, ... until the insert needs no more */
		for (unsigned j = 1;; j++) {
			gfnidx_fail_nth = j;
			ret = gfnidx_insert(&t, k, k, val_of(k, 1));
			if (ret != -ENOMEM)
				break;
			failed++;
			ASSERT_EQ(gfnidx_fail_nth, 0); /* it did allocate, and that one failed */
			ASSERT_EQ(t.nr_spare, spares);
			ASSERT_EQ(t.depth, depth);
			ASSERT_EQ_INT(gfnidx_check(&t), (long)m.n);
			expect_floor(&t, &m, k);
			if (j > 2)
				deep++;
		}
		gfnidx_fail_nth = 0;
		ASSERT_EQ_INT(ret, 0);
		model_insert(&m, k, k, val_of(k, 1));
		if (i % 199 == 0)
			expect_all(&t, &m);
	}
	ASSERT_EQ_INT(gfnidx_check(&t), (long)m.n);
	tap_diag("%u failed inserts, %u of them past two levels; depth %u", failed, deep, t.depth);
	ASSERT(failed > 0 && deep > 0);

	/* reserve, then every allocation fails: inserts go through all the same */
	for (unsigned i = 0; i < 3000; i++) {
		uint64_t k = (1u << 20) + tap_below(&r, 1u << 20);
		unsigned at;

		if (model_has(&m, k, &at))
			continue;
		bool short_of = t.nr_spare < t.depth + 2;

		gfnidx_fail_nth = 1;
		ASSERT_EQ_INT(gfnidx_reserve(&t), short_of ? -ENOMEM : 0);
		gfnidx_fail_nth = 0;
		ASSERT_EQ_INT(gfnidx_reserve(&t), 0);
		gfnidx_fail_nth = 1;
		ASSERT_EQ_INT(gfnidx_insert(&t, k, k, val_of(k, 1)), 0);
		ASSERT_EQ(gfnidx_fail_nth, 1); /* no allocation */
		model_insert(&m, k, k, val_of(k, 1));
	}
	/* removes never allocate, down to empty */
	gfnidx_fail_nth = 1;
	while (m.n) {
		unsigned at = (unsigned)tap_below(&r, m.n);

		ASSERT(gfnidx_remove(&t, m.key[at]) == m.val[at]);
		model_remove(&m, at);
		if (m.n % 499 == 0)
			expect_all(&t, &m);
	}
	ASSERT_EQ(gfnidx_fail_nth, 1);
	gfnidx_fail_nth = 0;
	gfnidx_destroy(&t);
	model_free(&m);
}

/* ---- through a VM --------------------------------------------------------------------- */

static int set_region(struct gpamm_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size, uint64_t hva)
{
	return gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size, .userspace_addr = hva });
}

/* Both sets hold exactly @n slots, and agree on what each GFN of @gfns finds. */
static void expect_sets(struct gpamm_vm *vm, unsigned n, const uint64_t *gfns, unsigned ngfns)
{
	for (unsigned i = 0; i < 2; i++) {
		ASSERT_EQ(vm->sets[i].nr, n);
		ASSERT_EQ_INT(gfnidx_check(&vm->sets[i].gfn), (long)n);
	}
	for (unsigned g = 0; g < ngfns; g++)
		ASSERT(gpamm_memslot_lookup(&vm->sets[0], gfns[g], true) ==
		       gpamm_memslot_lookup(&vm->sets[1], gfns[g], true));
}

/*
 * A CREATE or MOVE whose GFN-index allocation fails (in either set's
 * reserve, at any of its allocations) returns -ENOMEM and changes nothing:
 * the same slots in both sets, at the same GFNs, the generation unmoved.
 * A DELETE and a flags change allocate nothing in the index.
 */
static void test_vm_nomem_changes_nothing(void)
{
	struct gpamm_host *h = gpamm_host_direct_create(12);
	struct gpamm_vm_config cfg = { .page_shift = 12, .levels = 3, .host = h };
	const uint64_t hva = 0x100000000ULL, psz = 4096;
	struct gpamm_vm *vm;
	uint64_t gen, gfns[64];
	unsigned nslots = 0, fails = 0;

	ASSERT(h);
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	for (unsigned g = 0; g < 64; g++)
		gfns[g] = g * 16; /* slot s is at GFN 32 * s: half of these hit a slot */

	/* CREATE 40 slots, each after failing at every allocation it makes */
	for (unsigned s = 0; s < 40; s++) {
		for (unsigned j = 1;; j++) {
			int ret;

			gen = atomic_load(&vm->slots)->generation;
			gfnidx_fail_nth = j;
			ret = set_region(vm, s, (uint64_t)s * 32 * psz, psz, hva + s * psz);
			if (ret != -ENOMEM)
				break;
			fails++;
			ASSERT_EQ(atomic_load(&vm->slots)->generation, gen);
			ASSERT(!vm->by_id[s]);
			expect_sets(vm, nslots, gfns, 64);
		}
		gfnidx_fail_nth = 0;
		nslots++;
		expect_sets(vm, nslots, gfns, 64);
	}
	ASSERT(fails >= 2); /* the first CREATE: one set's reserve, then the other's */

	/* MOVE slot 39 past the others, failing; then for real, back and forth */
	for (unsigned round = 0; round < 4; round++) {
		struct gpamm_memslot *before = vm->by_id[39];
		uint64_t to = round % 2 ? 39 * 32 : 100 * 32;

		for (unsigned j = 1;; j++) {
			int ret;

			gen = atomic_load(&vm->slots)->generation;
			gfnidx_fail_nth = j;
			ret = set_region(vm, 39, to * psz, psz, hva + 39 * psz);
			if (ret != -ENOMEM)
				break;
			ASSERT(vm->by_id[39] == before);
			ASSERT(gpamm_memslot_lookup(atomic_load(&vm->slots), before->base_gfn, false) ==
			       before);
			ASSERT(!gpamm_memslot_lookup(atomic_load(&vm->slots), to, true));
			ASSERT_EQ(atomic_load(&vm->slots)->generation, gen);
			expect_sets(vm, nslots, gfns, 64);
		}
		gfnidx_fail_nth = 0;
		ASSERT(gpamm_memslot_lookup(atomic_load(&vm->slots), to, false) == vm->by_id[39]);
		expect_sets(vm, nslots, gfns, 64);
	}

	/* a flags change and a DELETE, with every allocation failing: they need none */
	gfnidx_fail_nth = 1;
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 3, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = 3 * 32 * psz,
		.memory_size = psz, .userspace_addr = hva + 3 * psz }), 0);
	ASSERT_EQ_INT(set_region(vm, 5, 0, 0, 0), 0);
	ASSERT_EQ(gfnidx_fail_nth, 1);
	gfnidx_fail_nth = 0;
	nslots--;
	expect_sets(vm, nslots, gfns, 64);
	ASSERT(!gpamm_memslot_lookup(atomic_load(&vm->slots), 5 * 32, true));
	ASSERT(gpamm_memslot_lookup(atomic_load(&vm->slots), 3 * 32, false)->flags &
	       GPAMM_MEM_LOG_DIRTY_PAGES);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_random_against_model);
	TEST(test_orders);
	TEST(test_edges);
	TEST(test_alloc_failure);
	TEST(test_vm_nomem_changes_nothing);
	return tap_done();
}
