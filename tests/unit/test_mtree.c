// SPDX-License-Identifier: MIT
/*
 * The memslot range tree against a flat model: random inserts and removes
 * of ranges (overlapping and aliasing ones too), and after each step the
 * AVL shape (heights, balance, order, each subtree's largest end), a floor
 * search and an interval search compared with the model. Seeded
 * (tap_seed(): printed, replayable with -s).
 */
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "mtree.h"

#define N 300

static struct mtree_node nodes[N];
static bool in[N];

/* Shape and augmentation of the subtree at @n; returns its height, counts its nodes. */
static int check(const struct mtree_node *n, const struct mtree_node *lo, const struct mtree_node *hi,
		 unsigned *count)
{
	int hl, hr;
	uint64_t m;

	if (!n)
		return 0;
	(*count)++;
	/* order: key, then address, strictly between the bounds */
	if (lo)
		ASSERT(n->key > lo->key || (n->key == lo->key && (uintptr_t)n > (uintptr_t)lo));
	if (hi)
		ASSERT(n->key < hi->key || (n->key == hi->key && (uintptr_t)n < (uintptr_t)hi));
	hl = check(n->child[0], lo, n, count);
	hr = check(n->child[1], n, hi, count);
	ASSERT(hl - hr <= 1 && hr - hl <= 1);
	ASSERT_EQ(n->height, 1 + (hl > hr ? hl : hr));
	m = n->end;
	if (n->child[0] && n->child[0]->max_end > m)
		m = n->child[0]->max_end;
	if (n->child[1] && n->child[1]->max_end > m)
		m = n->child[1]->max_end;
	ASSERT_EQ(n->max_end, m);
	return n->height;
}

struct seen {
	bool hit[N];
	uint64_t last_key;
	unsigned n;
};

static bool note(struct mtree_node *n, void *arg)
{
	struct seen *s = arg;

	ASSERT(n->key >= s->last_key); /* key order */
	s->last_key = n->key;
	s->hit[n - nodes] = true;
	s->n++;
	return false;
}

static void test_random_against_model(void)
{
	struct tap_rng r;
	struct mtree_node *root = NULL;
	unsigned live = 0;

	tap_rng_seed(&r, tap_seed());
	memset(in, 0, sizeof(in));
	for (unsigned step = 0; step < 20000; step++) {
		unsigned i = (unsigned)tap_below(&r, N), count = 0;

		if (!in[i]) {
			/* small key space: many equal keys (aliases) and overlaps */
			nodes[i].key = tap_below(&r, 200);
			nodes[i].end = nodes[i].key + 1 + tap_below(&r, 20);
			root = mtree_insert(root, &nodes[i]);
			in[i] = true;
			live++;
		} else {
			root = mtree_remove(root, &nodes[i]);
			in[i] = false;
			live--;
		}
		check(root, NULL, NULL, &count);
		ASSERT_EQ(count, live);
		if (live && (1u << 5) > live)
			ASSERT(root->height <= 7);

		/* floor: the largest key <= x */
		uint64_t x = tap_below(&r, 230), best = UINT64_MAX;
		for (unsigned k = 0; k < N; k++)
			if (in[k] && nodes[k].key <= x && (best == UINT64_MAX || nodes[k].key > best))
				best = nodes[k].key;
		struct mtree_node *f = mtree_floor(root, x);
		if (best == UINT64_MAX)
			ASSERT(!f);
		else
			ASSERT(f && f->key == best);

		/* interval search: exactly the ranges meeting [a, b) */
		uint64_t a = tap_below(&r, 230), b = a + tap_below(&r, 30);
		struct seen s = { .n = 0 };
		mtree_overlaps(root, a, b, note, &s);
		for (unsigned k = 0; k < N; k++) {
			bool meets = in[k] && nodes[k].key < b && nodes[k].end > a;
			ASSERT_EQ(s.hit[k], meets);
		}
	}
	tap_diag("%u nodes live at the end", live);
}

static bool stop_at_first(struct mtree_node *n, void *arg)
{
	(*(unsigned *)arg)++;
	return true;
}

static void test_overlaps_stops_and_height(void)
{
	struct mtree_node *root = NULL;
	unsigned calls = 0, count = 0;

	/* ascending inserts: the worst case of an unbalanced tree */
	for (unsigned i = 0; i < N; i++) {
		nodes[i].key = i * 10;
		nodes[i].end = i * 10 + 10;
		root = mtree_insert(root, &nodes[i]);
	}
	check(root, NULL, NULL, &count);
	ASSERT_EQ(count, N);
	ASSERT(root->height <= 12); /* AVL: < 1.44 log2(N + 2) */
	ASSERT(mtree_overlaps(root, 0, 3000, stop_at_first, &calls));
	ASSERT_EQ(calls, 1);
	calls = 0;
	ASSERT(!mtree_overlaps(root, 3000, 4000, stop_at_first, &calls));
	ASSERT_EQ(calls, 0);
	ASSERT(!mtree_floor(NULL, 5));
	for (unsigned i = 0; i < N; i++)
		root = mtree_remove(root, &nodes[i]);
	ASSERT(!root);
}

/* ---- mtree corner cases -------------------------------------------------------- */


struct collect { struct mtree_node *got[64]; unsigned n, stop_after; };
static bool collect(struct mtree_node *n, void *arg)
{
	struct collect *c = arg;

	c->got[c->n++] = n;
	return c->stop_after && c->n == c->stop_after;
}

static void test_mtree_corners(void)
{
	static struct mtree_node nd[40], stranger;
	struct mtree_node *root = NULL;
	unsigned count = 0;
	struct collect c;

	/* 20 aliases of one key with different ends, 20 nodes near the top */
	for (unsigned i = 0; i < 20; i++) {
		nd[i].key = 1000;
		nd[i].end = 1001 + i * 10;
		root = mtree_insert(root, &nd[i]);
	}
	for (unsigned i = 20; i < 40; i++) {
		nd[i].key = UINT64_MAX - 4096 * (40 - i);
		nd[i].end = nd[i].key + 4096 * 2; /* overlapping its neighbour; the last ends at
						     * 2^64 + 4096: wraps, so keep it below */
		if (nd[i].end < nd[i].key)
			nd[i].end = UINT64_MAX;
		root = mtree_insert(root, &nd[i]);
	}
	check(root, NULL, NULL, &count);
	ASSERT_EQ(count, 40);
	/* removing a node that is not in the tree (same key as the aliases) changes nothing */
	stranger.key = 1000;
	stranger.end = 5000;
	root = mtree_remove(root, &stranger);
	count = 0;
	check(root, NULL, NULL, &count);
	ASSERT_EQ(count, 40);
	/* interval search: [1095, 1096) meets only the aliases with end > 1095 */
	memset(&c, 0, sizeof(c));
	ASSERT(!mtree_overlaps(root, 1095, 1096, collect, &c));
	ASSERT_EQ(c.n, 10);
	for (unsigned k = 0; k < c.n; k++)
		ASSERT(c.got[k]->key == 1000 && c.got[k]->end > 1095);
	/* an empty-looking range just at a boundary: [end, ...) of an alias does not meet it */
	memset(&c, 0, sizeof(c));
	ASSERT(!mtree_overlaps(root, 1191, 1192, collect, &c));
	ASSERT_EQ(c.n, 0);
	memset(&c, 0, sizeof(c));
	ASSERT(!mtree_overlaps(root, 0, 1000, collect, &c));
	ASSERT_EQ(c.n, 0);
	/* the top: a search to UINT64_MAX finds all 20 near-top nodes in key order */
	memset(&c, 0, sizeof(c));
	ASSERT(!mtree_overlaps(root, UINT64_MAX - 4096 * 40, UINT64_MAX, collect, &c));
	ASSERT_EQ(c.n, 20);
	for (unsigned k = 1; k < c.n; k++)
		ASSERT(c.got[k]->key > c.got[k - 1]->key);
	memset(&c, 0, sizeof(c));
	ASSERT(!mtree_overlaps(root, UINT64_MAX - 1, UINT64_MAX, collect, &c));
	ASSERT_EQ(c.n, 2); /* the last node and the one before (it ends at the top) */
	/* early stop */
	memset(&c, 0, sizeof(c));
	c.stop_after = 3;
	ASSERT(mtree_overlaps(root, 0, UINT64_MAX, collect, &c));
	ASSERT_EQ(c.n, 3);
	/* floor with aliases: a node with key 1000; below it none */
	ASSERT(mtree_floor(root, 999) == NULL);
	ASSERT(mtree_floor(root, 1000) && mtree_floor(root, 1000)->key == 1000);
	ASSERT(mtree_floor(root, UINT64_MAX) == &nd[39]);
	/* remove every alias in a scrambled order, checking shape and search */
	for (unsigned i = 0; i < 20; i++) {
		unsigned j = (i * 7) % 20;
		root = mtree_remove(root, &nd[j]);
		count = 0;
		check(root, NULL, NULL, &count);
		ASSERT_EQ(count, 39 - i);
		memset(&c, 0, sizeof(c));
		mtree_overlaps(root, 1000, 1001, collect, &c);
		ASSERT_EQ(c.n, 19 - i);
	}
	/* removing twice: the second finds nothing */
	root = mtree_remove(root, &nd[5]);
	count = 0;
	check(root, NULL, NULL, &count);
	ASSERT_EQ(count, 20);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_random_against_model);
	TEST(test_overlaps_stops_and_height);
	TEST(test_mtree_corners);
	return tap_done();
}
