/* SPDX-License-Identifier: MIT */
/*
 * Internal helpers shared by every room: invariant checks, entry access as
 * whole 64-bit atomics, small bit tricks. Not part of the public API.
 */
#ifndef GPAMM_UTIL_H
#define GPAMM_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_THREAD__)
#define GPAMM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GPAMM_TSAN 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define GPAMM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GPAMM_ASAN 1
#endif
#endif

/*
 * Internal invariants. They abort in debug/test builds; in a release build a
 * broken invariant is reported once per site and execution continues, so
 * that no VMM input can bring the process down.
 */
#ifdef GPAMM_DEBUG
#define GPAMM_BUG_ON(c)                                                       \
	do {                                                                  \
		if (__builtin_expect(!!(c), 0)) {                             \
			fprintf(stderr, "gpamm: BUG at %s:%d: %s\n", __FILE__, \
				__LINE__, #c);                                \
			abort();                                              \
		}                                                             \
	} while (0)
#else
#define GPAMM_BUG_ON(c)                                                       \
	do {                                                                  \
		static int gpamm_warned__;                                    \
		if (__builtin_expect(!!(c), 0) && !gpamm_warned__) {          \
			gpamm_warned__ = 1;                                   \
			fprintf(stderr, "gpamm: WARNING at %s:%d: %s\n",      \
				__FILE__, __LINE__, #c);                      \
		}                                                             \
	} while (0)
#endif
#define GPAMM_WARN_ON(c) GPAMM_BUG_ON(c)

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define ALWAYS_INLINE inline __attribute__((always_inline))

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* Entries are only ever accessed whole and atomically. */
static inline uint64_t pte_read(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline uint64_t pte_read_acquire(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void pte_write(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}
/* Publishing a table: its initialised contents become visible first. */
static inline void pte_publish(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline int pte_cmpxchg(uint64_t *p, uint64_t *old, uint64_t new)
{
	return __atomic_compare_exchange_n(p, old, new, 0, __ATOMIC_ACQ_REL,
					   __ATOMIC_RELAXED);
}

/*
 * Guest memory. vCPUs race on it by design (two vCPUs writing one word, a
 * VMM copying a page that a vCPU writes: the dirty log, not a lock, makes
 * the result right), as on hardware. So every access to guest RAM goes
 * through these: a relaxed atomic access of the natural size where the
 * address is aligned, which is the same plain move on the machines we run
 * on, and bytewise relaxed accesses otherwise. Without ThreadSanitizer the
 * unaligned and bulk forms are memcpy (the hardware's own non-atomicity,
 * which is what a guest sees); under TSan they are relaxed atomics too, so
 * that the races the design wants are not reported and all others are.
 */
static ALWAYS_INLINE void guest_mem_store(void *p, uint64_t v, unsigned len)
{
	if (len == 8 && !((uintptr_t)p & 7))
		__atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
	else if (len == 4 && !((uintptr_t)p & 3))
		__atomic_store_n((uint32_t *)p, (uint32_t)v, __ATOMIC_RELAXED);
	else if (len == 2 && !((uintptr_t)p & 1))
		__atomic_store_n((uint16_t *)p, (uint16_t)v, __ATOMIC_RELAXED);
	else if (len == 1)
		__atomic_store_n((uint8_t *)p, (uint8_t)v, __ATOMIC_RELAXED);
	else
#ifdef GPAMM_TSAN
		for (unsigned i = 0; i < len; i++)
			__atomic_store_n((uint8_t *)p + i, (uint8_t)(v >> (8 * i)), __ATOMIC_RELAXED);
#else
		memcpy(p, &v, len); /* little-endian: the low @len bytes */
#endif
}

static ALWAYS_INLINE uint64_t guest_mem_load(const void *p, unsigned len)
{
	uint64_t v = 0;

	if (len == 8 && !((uintptr_t)p & 7))
		return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
	if (len == 4 && !((uintptr_t)p & 3))
		return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
	if (len == 2 && !((uintptr_t)p & 1))
		return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
	if (len == 1)
		return __atomic_load_n((const uint8_t *)p, __ATOMIC_RELAXED);
#ifdef GPAMM_TSAN
	for (unsigned i = 0; i < len; i++)
		v |= (uint64_t)__atomic_load_n((const uint8_t *)p + i, __ATOMIC_RELAXED) << (8 * i);
#else
	memcpy(&v, p, len);
#endif
	return v;
}

/* Bulk copies into or out of guest RAM (either side may be guest memory). */
static inline void guest_mem_copy(void *dst, const void *src, size_t n)
{
#ifdef GPAMM_TSAN
	uint8_t *d = dst;
	const uint8_t *s = src;

	if (!(((uintptr_t)d | (uintptr_t)s) & 7)) {
		for (; n >= 8; n -= 8, d += 8, s += 8)
			__atomic_store_n((uint64_t *)d,
					 __atomic_load_n((const uint64_t *)s, __ATOMIC_RELAXED),
					 __ATOMIC_RELAXED);
	}
	for (; n; n--, d++, s++)
		__atomic_store_n(d, __atomic_load_n(s, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
#else
	memcpy(dst, src, n);
#endif
}

static inline void guest_mem_zero(void *dst, size_t n)
{
#ifdef GPAMM_TSAN
	for (uint8_t *d = dst; n; n--, d++)
		__atomic_store_n(d, 0, __ATOMIC_RELAXED);
#else
	memset(dst, 0, n);
#endif
}

#endif
