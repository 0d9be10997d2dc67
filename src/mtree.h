/* SPDX-License-Identifier: MIT */
/*
 * An intrusive balanced (AVL) search tree of [key, end) ranges, augmented
 * with the largest end in each subtree: the memslot sets' HVA index, where
 * ranges may overlap and alias, and an interval search visits exactly the
 * nodes a range meets. (The GFN index, whose ranges never overlap, is
 * gfnidx.h: a B+tree, denser and shallower for its floor search.) Equal
 * keys are ordered by node address. Insert and remove are O(log n) and
 * never allocate.
 *
 * Not safe against concurrent change: a tree is changed only while no
 * reader can see it (the memslot sets' inactive copy, memslot.c).
 */
#ifndef GPAMM_MTREE_H
#define GPAMM_MTREE_H

#include <stdbool.h>
#include <stdint.h>

/* A cache line each: a search reads one line per level (the key and the children first). */
struct mtree_node {
	uint64_t key;
	struct mtree_node *child[2];
	uint64_t end;       /* the range is [key, end) */
	uint64_t max_end;   /* largest end in this subtree */
	int height;
} __attribute__((aligned(64)));

/* Insert @n with its key and end set; returns the new root. */
struct mtree_node *mtree_insert(struct mtree_node *root, struct mtree_node *n);
/* Remove @n (in the tree); returns the new root. */
struct mtree_node *mtree_remove(struct mtree_node *root, struct mtree_node *n);

/*
 * The node with the largest key <= @x, or NULL. The descent selects with
 * conditional moves, not branches: a random key costs no mispredictions.
 */
static inline struct mtree_node *mtree_floor(struct mtree_node *n, uint64_t x)
{
	struct mtree_node *best = 0;

	while (n) {
		int right = n->key <= x;

		best = right ? n : best;
		n = n->child[right];
	}
	return best;
}

/*
 * Call @fn on every node whose range meets [start, end), in key order,
 * until it returns true. Return: whether it stopped early.
 */
typedef bool (*mtree_fn)(struct mtree_node *n, void *arg);
bool mtree_overlaps(struct mtree_node *root, uint64_t start, uint64_t end, mtree_fn fn, void *arg);

#endif
