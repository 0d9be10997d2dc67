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

#endif
