/* SPDX-License-Identifier: MIT */
/*
 * The GFN index of a memslot set: an ordered map from unique 64-bit keys
 * (the slots' base GFNs) to a value pointer and one word of the caller's
 * (memslot.c keeps the slot's end there, and its INVALID mark), as a B+tree
 * whose nodes hold GFNIDX_FAN (8) keys in one cache line. A floor search
 * reads per level that line and the line with the child (in a leaf, with
 * the word and the value), and within a node counts the keys <= x: no
 * branch. 32767 keys built in order are five levels deep, against some
 * sixteen dependent loads in a binary tree; the nodes are dense (a node
 * per 8 keys, full when built in order), so they stay in cache.
 *
 * Nodes are allocated, so an insert may need memory: gfnidx_reserve() sets
 * aside what the next insert can take, and after it that insert cannot
 * fail. So a change can be prepared for both memslot sets before it is
 * made to either (memslot.c). Removing and replacing never allocate and
 * never fail; nodes a removal frees are kept for later inserts, up to a few.
 *
 * Not safe against concurrent change: an index is changed only while no
 * reader can see it (the inactive memslot set; the nodes it frees are
 * freed at once, as nobody can be reading them). Readers take no lock.
 */
#ifndef GPAMM_GFNIDX_H
#define GPAMM_GFNIDX_H

#include <stdint.h>

/*
 * Keys per node: 8, one cache line. Sixteen would save a level at 32767
 * keys but cost twice the compares on every level, and a look-up's time
 * is mostly those (the nodes stay in cache): eight measured faster at
 * every slot count from 1 to 32767.
 */
#define GFNIDX_FAN 8
/* Inner levels at most: the nodes off the rightmost path are half full, so 2^48 keys. */
#define GFNIDX_MAX_DEPTH 24

/*
 * One node, leaf or inner (the tree's depth tells which): the keys first,
 * the one array a search reads whole. Entries past @n repeat the last one
 * (key, and child or word and value), so that counting the keys <= x over
 * all GFNIDX_FAN of them gives the right position without knowing @n.
 * An inner node's key[i] (i >= 1) is the smallest key under child[i];
 * key[0] is 0 (child[0] takes everything below key[1]), so the count is
 * at least 1. A leaf's keys are its entries'.
 */
struct gfnidx_node {
	uint64_t key[GFNIDX_FAN];
	union {
		struct gfnidx_node *child[GFNIDX_FAN];
		struct gfnidx_ent {
			uint64_t word;
			void *val;
		} ent[GFNIDX_FAN]; /* a floor search returns both: one line */
	};
	unsigned n;      /* entries (leaf) or children (inner) in use, >= 1 */
	struct gfnidx_node *next_spare; /* while in the index's spares */
} __attribute__((aligned(64)));

struct gfnidx {
	/* what a search reads, first */
	struct gfnidx_node *root; /* NULL: empty */
	unsigned depth;           /* inner levels above the leaves */
	unsigned nr_spare;
	struct gfnidx_node *spare;
	uint64_t nr;              /* keys */
};

_Static_assert(GFNIDX_FAN == 8, "gfnidx_rank() counts eight keys");

/*
 * Position of the last key <= @x in @k (1-based; 0: none), over the whole
 * node: a count, not a search, so no branch (a binary search within the
 * node mispredicts on random keys: three to four times slower). The sum
 * is a tree, so that the compares run side by side.
 */
static inline unsigned gfnidx_rank(const uint64_t *k, uint64_t x)
{
	return (((k[0] <= x) + (k[1] <= x)) + ((k[2] <= x) + (k[3] <= x))) +
	       (((k[4] <= x) + (k[5] <= x)) + ((k[6] <= x) + (k[7] <= x)));
}

/* The child of inner node @n to descend to for @x: its rank less one, key[0] (0) not compared. */
static inline const struct gfnidx_node *gfnidx_child(const struct gfnidx_node *n, uint64_t x)
{
	const uint64_t *k = n->key;

	return n->child[(((k[1] <= x) + (k[2] <= x)) + (k[3] <= x)) +
			(((k[4] <= x) + (k[5] <= x)) + ((k[6] <= x) + (k[7] <= x)))];
}

/**
 * gfnidx_floor() - the entry with the largest key <= @x.
 * @word: its word (0 when there is none)
 * Return: its value, or NULL when every key is above @x.
 * Context: no lock; the index must not change meanwhile (RCU: the active set).
 */
static inline void *gfnidx_floor(const struct gfnidx *t, uint64_t x, uint64_t *word)
{
	const struct gfnidx_node *n = t->root;
	unsigned c;

	if (!n) {
		*word = 0;
		return 0;
	}
	for (unsigned d = t->depth; d; d--)
		n = gfnidx_child(n, x);
	c = gfnidx_rank(n->key, x);
	if (!c) {
		*word = 0;
		return 0;
	}
	*word = n->ent[c - 1].word;
	return n->ent[c - 1].val;
}

/* An empty index; allocates nothing. */
void gfnidx_init(struct gfnidx *t);
/* Free every node (the spares too); the index is empty again. Context: no reader. */
void gfnidx_destroy(struct gfnidx *t);

/**
 * gfnidx_reserve() - set aside the nodes one insert may need.
 * Return: 0, or -ENOMEM with the index as it was (spares included).
 * Context: readers may search meanwhile: only the spares change, which no
 * search reads (so the active memslot set's index can be prepared too).
 */
int gfnidx_reserve(struct gfnidx *t);

/**
 * gfnidx_insert() - add @key with @word and @val (not NULL).
 * Return: 0; -EEXIST (the key is there), -ENOMEM (no reserve and no
 * memory) or -ENOSPC (GFNIDX_MAX_DEPTH reached: not with real memory),
 * all with nothing changed. After gfnidx_reserve() succeeded, the next
 * insert does not return -ENOMEM.
 * Context: no reader of @t.
 */
int gfnidx_insert(struct gfnidx *t, uint64_t key, uint64_t word, void *val);

/**
 * gfnidx_replace() - give @key a new @word and @val in place.
 * Return: the old value, or NULL (no such key: nothing done).
 * Context: no reader of @t.
 */
void *gfnidx_replace(struct gfnidx *t, uint64_t key, uint64_t word, void *val);

/**
 * gfnidx_remove() - take @key out. Never allocates.
 * Return: its value, or NULL (no such key: nothing done).
 * Context: no reader of @t.
 */
void *gfnidx_remove(struct gfnidx *t, uint64_t key);

/**
 * gfnidx_check() - verify the whole tree: key order, bounds, fill, padding,
 * depth, count. For tests (O(n)).
 * Return: the number of keys, or -1 (broken; what is printed on stderr).
 */
long gfnidx_check(const struct gfnidx *t);

/*
 * Tests only: when set to k > 0, the k-th node allocation from now fails
 * (and the count stops). 0: no failures.
 */
extern _Atomic unsigned gfnidx_fail_nth;

#endif
