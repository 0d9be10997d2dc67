// SPDX-License-Identifier: MIT
/*
 * The memslot GFN index: see gfnidx.h. Insert and remove go bottom-up
 * along the path a descent recorded. Every node but the root holds at
 * least GFNIDX_MIN entries, except the nodes on the two edges (the
 * leftmost and the rightmost path), which hold at least one: a key above
 * (below) every other, as slots created in GFN order (or the reverse)
 * bring, splits a full node into one kept full and one holding only the
 * new entry, so that such a build leaves full nodes behind, not half-full
 * ones: half the memory, and up to two levels less at 32767 keys.
 * An inner node's key[i] (i >= 1) is the smallest key under child[i], so
 * a search that reaches a leaf finds its floor there.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gfnidx.h"

#define GFNIDX_MIN (GFNIDX_FAN / 2)
/* Freed nodes kept for later inserts: what one takes (depth + 2) up to 8^6 keys. */
#define GFNIDX_SPARE_KEEP 8

_Atomic unsigned gfnidx_fail_nth;

static struct gfnidx_node *node_alloc(void)
{
	unsigned k = gfnidx_fail_nth;

	/* test failure injection: the k-th allocation fails */
	while (k && !atomic_compare_exchange_weak(&gfnidx_fail_nth, &k, k - 1))
		;
	if (k == 1)
		return NULL;
	return aligned_alloc(64, sizeof(struct gfnidx_node));
}

void gfnidx_init(struct gfnidx *t)
{
	memset(t, 0, sizeof(*t));
}

static void free_subtree(struct gfnidx_node *n, unsigned depth)
{
	if (depth)
		for (unsigned i = 0; i < n->n; i++)
			free_subtree(n->child[i], depth - 1);
	free(n);
}

void gfnidx_destroy(struct gfnidx *t)
{
	if (t->root)
		free_subtree(t->root, t->depth);
	while (t->spare) {
		struct gfnidx_node *n = t->spare;

		t->spare = n->next_spare;
		free(n);
	}
	gfnidx_init(t);
}

/* Make sure @need spares are there; on failure the spares are as they were. */
static int spares_fill(struct gfnidx *t, unsigned need)
{
	struct gfnidx_node *got = NULL;
	unsigned ngot = 0;

	while (t->nr_spare + ngot < need) {
		struct gfnidx_node *n = node_alloc();

		if (!n) {
			while (got) {
				n = got;
				got = n->next_spare;
				free(n);
			}
			return -ENOMEM;
		}
		n->next_spare = got;
		got = n;
		ngot++;
	}
	while (got) {
		struct gfnidx_node *n = got;

		got = n->next_spare;
		n->next_spare = t->spare;
		t->spare = n;
		t->nr_spare++;
	}
	return 0;
}

int gfnidx_reserve(struct gfnidx *t)
{
	/* a split leaf, a split node on each inner level, and a new root */
	return spares_fill(t, t->root ? t->depth + 2 : 1);
}

static struct gfnidx_node *spare_take(struct gfnidx *t)
{
	struct gfnidx_node *n = t->spare;

	t->spare = n->next_spare;
	t->nr_spare--;
	return n;
}

/* A node out of the tree: kept while there are few spares. Context: no reader. */
static void spare_put(struct gfnidx *t, struct gfnidx_node *n)
{
	if (t->nr_spare >= GFNIDX_SPARE_KEEP) {
		free(n);
		return;
	}
	n->next_spare = t->spare;
	t->spare = n;
	t->nr_spare++;
}

/* ---- node edits: entries are a key and a payload (a child, or a word and a value) ---- */

static inline size_t pay_size(bool leaf)
{
	return leaf ? sizeof(struct gfnidx_ent) : sizeof(struct gfnidx_node *);
}

static inline char *pay(struct gfnidx_node *n, unsigned i, bool leaf)
{
	return (char *)n->child + i * pay_size(leaf);
}

/* Repeat the last entry into the unused ones (gfnidx.h: searches count them). */
static void pad(struct gfnidx_node *n, bool leaf)
{
	for (unsigned i = n->n; i < GFNIDX_FAN; i++) {
		n->key[i] = n->key[n->n - 1];
		memcpy(pay(n, i, leaf), pay(n, n->n - 1, leaf), pay_size(leaf));
	}
}

/* Copy @cnt entries of @src from @si to @dst at @di (no overlap). */
static void copy_ents(struct gfnidx_node *dst, unsigned di, struct gfnidx_node *src, unsigned si,
		      unsigned cnt, bool leaf)
{
	memcpy(&dst->key[di], &src->key[si], cnt * sizeof(uint64_t));
	memcpy(pay(dst, di, leaf), pay(src, si, leaf), cnt * pay_size(leaf));
}

/* Open a gap at @i (n < GFNIDX_FAN) and put the entry there; no padding. */
static void put_at(struct gfnidx_node *n, unsigned i, uint64_t key, const void *p, bool leaf)
{
	memmove(&n->key[i + 1], &n->key[i], (n->n - i) * sizeof(uint64_t));
	memmove(pay(n, i + 1, leaf), pay(n, i, leaf), (n->n - i) * pay_size(leaf));
	n->key[i] = key;
	memcpy(pay(n, i, leaf), p, pay_size(leaf));
	n->n++;
}

/* Close the entry at @i; no padding. */
static void cut_at(struct gfnidx_node *n, unsigned i, bool leaf)
{
	memmove(&n->key[i], &n->key[i + 1], (n->n - i - 1) * sizeof(uint64_t));
	memmove(pay(n, i, leaf), pay(n, i + 1, leaf), (n->n - i - 1) * pay_size(leaf));
	n->n--;
}

/* The rank in @n of @x among its used entries (the padding counts too, so clamp). */
static inline unsigned rank_in(const struct gfnidx_node *n, uint64_t x)
{
	unsigned c = gfnidx_rank(n->key, x);

	return c < n->n ? c : n->n;
}

struct path {
	struct gfnidx_node *node[GFNIDX_MAX_DEPTH];
	unsigned pos[GFNIDX_MAX_DEPTH]; /* which child of node[d] the descent took */
};

/* Is the path's node at level @d on the rightmost path (every position above it the last)? */
static bool on_right_path(const struct path *p, unsigned d)
{
	for (unsigned a = 0; a < d; a++)
		if (p->pos[a] != p->node[a]->n - 1)
			return false;
	return true;
}

/* On the leftmost path (every position above it the first)? */
static bool on_left_path(const struct path *p, unsigned d)
{
	for (unsigned a = 0; a < d; a++)
		if (p->pos[a])
			return false;
	return true;
}

/*
 * How many entries the left part keeps when the full node at path level
 * @d splits for an entry at @i: all of them when the entry goes last on
 * the rightmost path, one (the entry) when it goes first on the leftmost
 * path (@first: 0 in a leaf, 1 in an inner node, whose child 0 split),
 * else half.
 */
static unsigned split_point(const struct path *p, unsigned d, unsigned i, unsigned first)
{
	if (i == GFNIDX_FAN && on_right_path(p, d))
		return GFNIDX_FAN;
	if (i == first && on_left_path(p, d))
		return 1;
	return (GFNIDX_FAN + 1) / 2;
}

/* Descend to the leaf that holds (or would hold) @key, recording the path. */
static struct gfnidx_node *descend(const struct gfnidx *t, uint64_t key, struct path *p)
{
	struct gfnidx_node *n = t->root;

	for (unsigned d = 0; d < t->depth; d++) {
		p->node[d] = n;
		p->pos[d] = rank_in(n, key) - 1;
		n = n->child[p->pos[d]];
	}
	return n;
}

/*
 * Put the entry (@key, payload @pl) at @i of the full node @n, splitting
 * it: @n keeps the first @m of the GFNIDX_FAN + 1 entries, *@right (a
 * spare) the rest; *@sep is the smallest key under *@right.
 */
static void split(struct gfnidx *t, struct gfnidx_node *n, unsigned i, uint64_t key, const void *pl,
		  bool leaf, unsigned m, struct gfnidx_node **right, uint64_t *sep)
{
	struct gfnidx_node *r = spare_take(t);

	r->n = 0;
	if (i < m) {
		/* the new entry lands left: the right part is the old [m - 1, FAN) */
		copy_ents(r, 0, n, m - 1, GFNIDX_FAN - (m - 1), leaf);
		r->n = GFNIDX_FAN - (m - 1);
		n->n = m - 1;
		put_at(n, i, key, pl, leaf);
	} else {
		copy_ents(r, 0, n, m, i - m, leaf);
		r->n = i - m;
		put_at(r, r->n, key, pl, leaf);
		copy_ents(r, r->n, n, i, GFNIDX_FAN - i, leaf);
		r->n += GFNIDX_FAN - i;
		n->n = m;
	}
	*sep = r->key[0];
	if (!leaf)
		r->key[0] = 0; /* an inner node's first key is a dummy: its rank is >= 1 */
	pad(n, leaf);
	pad(r, leaf);
	*right = r;
}

int gfnidx_insert(struct gfnidx *t, uint64_t key, uint64_t word, void *val)
{
	struct gfnidx_ent e = { .word = word, .val = val };
	struct gfnidx_node *leaf, *right, *root;
	struct path p;
	unsigned c, need = 0;
	uint64_t sep;

	if (!t->root) {
		if (spares_fill(t, 1))
			return -ENOMEM;
		leaf = spare_take(t);
		leaf->n = 0;
		put_at(leaf, 0, key, &e, true);
		pad(leaf, true);
		t->root = leaf;
		t->depth = 0;
		t->nr = 1;
		return 0;
	}
	leaf = descend(t, key, &p);
	c = rank_in(leaf, key);
	if (c && leaf->key[c - 1] == key)
		return -EEXIST;

	/* the nodes it takes: one per full node from the leaf up, and a root above them */
	if (leaf->n == GFNIDX_FAN) {
		unsigned d = t->depth;

		need = 1;
		while (d && p.node[d - 1]->n == GFNIDX_FAN) {
			need++;
			d--;
		}
		if (!d)
			need++;
	}
	if (need == t->depth + 2 && t->depth == GFNIDX_MAX_DEPTH)
		return -ENOSPC; /* some 2^48 keys: never with memslots */
	if (spares_fill(t, need))
		return -ENOMEM;
	t->nr++;

	if (leaf->n < GFNIDX_FAN) {
		put_at(leaf, c, key, &e, true);
		pad(leaf, true);
		return 0;
	}
	split(t, leaf, c, key, &e, true, split_point(&p, t->depth, c, 0), &right, &sep);

	/* carry (sep, right) up: it goes right after the child that split */
	for (unsigned d = t->depth; d; d--) {
		struct gfnidx_node *n = p.node[d - 1];
		unsigned i = p.pos[d - 1] + 1;

		if (n->n < GFNIDX_FAN) {
			put_at(n, i, sep, &right, false);
			pad(n, false);
			return 0;
		}
		split(t, n, i, sep, &right, false, split_point(&p, d - 1, i, 1), &right, &sep);
	}
	/* the root split: a new root above both halves */
	root = spare_take(t);
	root->n = 0;
	put_at(root, 0, 0, &t->root, false);
	put_at(root, 1, sep, &right, false);
	pad(root, false);
	t->root = root;
	t->depth++;
	return 0;
}

/* The leaf and index of @key, or NULL. */
static struct gfnidx_node *find(const struct gfnidx *t, uint64_t key, struct path *p, unsigned *i)
{
	struct gfnidx_node *leaf;
	unsigned c;

	if (!t->root)
		return NULL;
	leaf = descend(t, key, p);
	c = rank_in(leaf, key);
	if (!c || leaf->key[c - 1] != key)
		return NULL;
	*i = c - 1;
	return leaf;
}

void *gfnidx_replace(struct gfnidx *t, uint64_t key, uint64_t word, void *val)
{
	struct path p;
	unsigned i;
	struct gfnidx_node *leaf = find(t, key, &p, &i);
	void *old;

	if (!leaf)
		return NULL;
	old = leaf->ent[i].val;
	leaf->ent[i] = (struct gfnidx_ent){ .word = word, .val = val };
	pad(leaf, true);
	return old;
}

/*
 * The smallest key under path node @d's child (the one the path took)
 * became @min: the nearest ancestor that bounds that subtree from the left
 * (an ancestor whose path position is > 0) takes it as its separator.
 */
static void new_min(struct path *p, unsigned d, uint64_t min)
{
	while (d--) {
		struct gfnidx_node *n = p->node[d];

		if (p->pos[d]) {
			n->key[p->pos[d]] = min;
			pad(n, false);
			return;
		}
	}
}

void *gfnidx_remove(struct gfnidx *t, uint64_t key)
{
	struct path p;
	unsigned i, d = t->depth;
	struct gfnidx_node *n = find(t, key, &p, &i);
	void *val;

	if (!n)
		return NULL;
	val = n->ent[i].val;
	cut_at(n, i, true);
	t->nr--;
	if (n->n) {
		pad(n, true);
		if (!i)
			new_min(&p, d, n->key[0]);
	}
	/* rebalance from the leaf (level d: p.node[d - 1] is its parent) up */
	for (bool leaf = true; d; d--, leaf = false) {
		struct gfnidx_node *par = p.node[d - 1], *l, *r;
		unsigned at = p.pos[d - 1];

		/* on an edge a node may hold fewer (the edge splits) */
		if (n->n >= GFNIDX_MIN || (n->n && (on_right_path(&p, d) || on_left_path(&p, d))))
			return val;
		if (!n->n) {
			/*
			 * An emptied node (on an edge) goes. If it was the first
			 * child, the parent is on the leftmost path (or empties
			 * too): no separator above bounds it, only its dummy is due.
			 */
			spare_put(t, n);
			cut_at(par, at, false);
			if (par->n) {
				par->key[0] = 0;
				pad(par, false);
			}
			n = par;
			continue;
		}
		/* n has GFNIDX_MIN - 1 and is on no edge, so it has a sibling */
		if (at) {
			l = par->child[at - 1];
			r = n;
		} else {
			l = n;
			r = par->child[1];
			at = 1;
		}
		/* now r is child @at of par, l the one before it */
		if (l->n + r->n <= GFNIDX_FAN) {
			/* merge r into l; an inner r's first key is par's separator */
			unsigned ln = l->n;

			copy_ents(l, ln, r, 0, r->n, leaf);
			if (!leaf)
				l->key[ln] = par->key[at];
			l->n += r->n;
			pad(l, leaf);
			spare_put(t, r);
			cut_at(par, at, false);
			pad(par, false);
			n = par;
			continue;
		}
		if (n == r) {
			/* borrow l's last entry: it becomes r's first */
			uint64_t k = l->key[l->n - 1];

			put_at(r, 0, k, pay(l, l->n - 1, leaf), leaf);
			l->n--;
			if (!leaf) {
				r->key[1] = par->key[at]; /* the smallest key under r's old first child */
				r->key[0] = 0;
			}
			par->key[at] = k;
		} else {
			/* borrow r's first entry: it becomes l's last */
			uint64_t k = leaf ? r->key[0] : par->key[at];

			put_at(l, l->n, k, pay(r, 0, leaf), leaf);
			par->key[at] = r->key[1]; /* r's new smallest (in a leaf: its key[1]) */
			cut_at(r, 0, leaf);
			if (!leaf)
				r->key[0] = 0;
		}
		pad(l, leaf);
		pad(r, leaf);
		pad(par, false);
		return val;
	}
	/* at the root: an empty leaf goes; an inner root with one child gives way to it */
	if (!t->depth && !n->n) {
		spare_put(t, n);
		t->root = NULL;
		return val;
	}
	while (t->depth && t->root->n == 1) {
		n = t->root;
		t->root = n->child[0];
		t->depth--;
		spare_put(t, n);
	}
	return val;
}

/* ---- checking, for tests ---------------------------------------------------------- */

struct check {
	const struct gfnidx *t;
	long keys;
	bool ok;
};

#define CHECK(c, ...)                                                          \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "gfnidx_check: " __VA_ARGS__);         \
			fputc('\n', stderr);                                   \
			k->ok = false;                                         \
			return 0;                                              \
		}                                                              \
	} while (0)

/*
 * Check the subtree at @n (at @depth levels above the leaves), whose keys
 * must lie in [@lo, @hi] (@hi inclusive: UINT64_MAX is a key too);
 * returns its smallest key.
 */
static uint64_t check_node(struct check *k, const struct gfnidx_node *n, unsigned depth, bool root,
			   bool leftmost, bool rightmost, uint64_t lo, uint64_t hi)
{
	const bool leaf = !depth;
	uint64_t min = 0;

	CHECK(n->n >= 1 && n->n <= GFNIDX_FAN, "node with %u entries", n->n);
	if (root)
		CHECK(leaf || n->n >= 2, "inner root with %u children", n->n);
	else if (!leftmost && !rightmost)
		CHECK(n->n >= GFNIDX_MIN, "node off the edges with %u entries", n->n);
	for (unsigned i = n->n; i < GFNIDX_FAN; i++)
		CHECK(n->key[i] == n->key[n->n - 1] &&
		      !memcmp(pay((struct gfnidx_node *)n, i, leaf),
			      pay((struct gfnidx_node *)n, n->n - 1, leaf), pay_size(leaf)),
		      "padding at %u of %u", i, n->n);
	if (leaf) {
		for (unsigned i = 0; i < n->n; i++) {
			CHECK(n->key[i] >= lo && n->key[i] <= hi, "key %llu out of [%llu, %llu]",
			      (unsigned long long)n->key[i], (unsigned long long)lo,
			      (unsigned long long)hi);
			CHECK(!i || n->key[i] > n->key[i - 1], "keys out of order");
			CHECK(n->ent[i].val, "NULL value");
		}
		k->keys += n->n;
		return n->key[0];
	}
	CHECK(n->key[0] == 0, "inner key[0] is %llu", (unsigned long long)n->key[0]);
	for (unsigned i = 0; i < n->n; i++) {
		uint64_t clo = i ? n->key[i] : lo;
		uint64_t chi = i + 1 < n->n ? n->key[i + 1] - 1 : hi;
		uint64_t m;

		CHECK(!i || (n->key[i] > lo && n->key[i] <= hi), "separator out of range");
		CHECK(i < 2 || n->key[i] > n->key[i - 1], "separators out of order");
		m = check_node(k, n->child[i], depth - 1, false, leftmost && !i,
			       rightmost && i == n->n - 1, clo, chi);
		if (!k->ok)
			return 0;
		CHECK(!i || m == n->key[i], "separator %llu is not the smallest key under it (%llu)",
		      (unsigned long long)n->key[i], (unsigned long long)m);
		if (!i)
			min = m;
	}
	return min;
}

long gfnidx_check(const struct gfnidx *t)
{
	struct check c = { .t = t, .ok = true };
	unsigned spares = 0;

	for (const struct gfnidx_node *s = t->spare; s; s = s->next_spare)
		spares++;
	if (spares != t->nr_spare) {
		fprintf(stderr, "gfnidx_check: %u spares, %u counted\n", spares, t->nr_spare);
		return -1;
	}
	if (!t->root) {
		if (t->depth || t->nr) {
			fprintf(stderr, "gfnidx_check: empty with depth %u, %llu keys\n", t->depth,
				(unsigned long long)t->nr);
			return -1;
		}
		return 0;
	}
	if (t->depth > GFNIDX_MAX_DEPTH) {
		fprintf(stderr, "gfnidx_check: depth %u\n", t->depth);
		return -1;
	}
	check_node(&c, t->root, t->depth, true, true, true, 0, UINT64_MAX);
	if (!c.ok)
		return -1;
	if ((uint64_t)c.keys != t->nr) {
		fprintf(stderr, "gfnidx_check: %ld keys, %llu counted\n", c.keys,
			(unsigned long long)t->nr);
		return -1;
	}
	return c.keys;
}
