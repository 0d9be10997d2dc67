// SPDX-License-Identifier: MIT
/* The memslot range tree: see mtree.h. */
#include <stddef.h>

#include "mtree.h"

static inline int height(const struct mtree_node *n)
{
	return n ? n->height : 0;
}

/* Height and the subtree's largest end, from the children. */
static void refresh(struct mtree_node *n)
{
	const struct mtree_node *l = n->child[0], *r = n->child[1];
	int hl = height(l), hr = height(r);
	uint64_t m = n->end;

	n->height = 1 + (hl > hr ? hl : hr);
	if (l && l->max_end > m)
		m = l->max_end;
	if (r && r->max_end > m)
		m = r->max_end;
	n->max_end = m;
}

/* Lift the child on side @side over @n; returns the subtree's new top. */
static struct mtree_node *lift(struct mtree_node *n, int side)
{
	struct mtree_node *c = n->child[side];

	n->child[side] = c->child[!side];
	c->child[!side] = n;
	refresh(n);
	refresh(c);
	return c;
}

static struct mtree_node *rebalance(struct mtree_node *n)
{
	int d;

	refresh(n);
	d = height(n->child[0]) - height(n->child[1]);
	if (d > 1 || d < -1) {
		int side = d > 1 ? 0 : 1; /* the taller side */
		struct mtree_node *c = n->child[side];

		/* an inner-heavy child first turns outward (double rotation) */
		if (height(c->child[!side]) > height(c->child[side]))
			n->child[side] = lift(c, !side);
		return lift(n, side);
	}
	return n;
}

/* Key order, then address: aliases of one key stay distinct. */
static inline int goes_right(const struct mtree_node *at, const struct mtree_node *n)
{
	return n->key > at->key || (n->key == at->key && (uintptr_t)n > (uintptr_t)at);
}

struct mtree_node *mtree_insert(struct mtree_node *root, struct mtree_node *n)
{
	int side;

	if (!root) {
		n->child[0] = n->child[1] = NULL;
		refresh(n);
		return n;
	}
	side = goes_right(root, n);
	root->child[side] = mtree_insert(root->child[side], n);
	return rebalance(root);
}

static struct mtree_node *take_min(struct mtree_node *root, struct mtree_node **min)
{
	if (!root->child[0]) {
		*min = root;
		return root->child[1];
	}
	root->child[0] = take_min(root->child[0], min);
	return rebalance(root);
}

struct mtree_node *mtree_remove(struct mtree_node *root, struct mtree_node *n)
{
	struct mtree_node *m, *rest;

	if (!root)
		return NULL; /* not in the tree: the caller's bug, nothing done */
	if (root != n) {
		int side = goes_right(root, n);

		root->child[side] = mtree_remove(root->child[side], n);
		return rebalance(root);
	}
	if (!n->child[0] || !n->child[1])
		return n->child[0] ? n->child[0] : n->child[1];
	rest = take_min(n->child[1], &m);
	m->child[0] = n->child[0];
	m->child[1] = rest;
	return rebalance(m);
}

bool mtree_overlaps(struct mtree_node *n, uint64_t start, uint64_t end, mtree_fn fn, void *arg)
{
	while (n && n->max_end > start) {
		if (mtree_overlaps(n->child[0], start, end, fn, arg))
			return true;
		if (n->key >= end)
			return false; /* this and everything right of it starts too late */
		if (n->end > start && fn(n, arg))
			return true;
		n = n->child[1];
	}
	return false;
}
