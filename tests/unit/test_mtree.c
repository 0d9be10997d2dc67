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

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_random_against_model);
	TEST(test_overlaps_stops_and_height);
	return tap_done();
}
