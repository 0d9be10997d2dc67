/* SPDX-License-Identifier: MIT */
/*
 * TCP for migration: a listener, connections, whole-buffer reads and
 * writes with a deadline, and an optional sending-rate cap. Blocking
 * sockets with poll() for deadlines; no thread of its own.
 */
#ifndef GPAMM_MIG_NET_H
#define GPAMM_MIG_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mig_conn {
	int fd;
	int timeout_ms;        /* per read/write call; -1: none */
	double cap_bps;        /* bytes per second, 0: uncapped (token bucket) */
	double bucket, last_s; /* the bucket's state */
	uint64_t sent, received; /* bytes, for the report */
};

/*
 * mig_parse_addr() - "[ADDR:]PORT" (ADDR an IPv4 address or "localhost";
 * default 127.0.0.1 when @default_any is false, 0.0.0.0 when true).
 * Return: 0, -EINVAL.
 */
int mig_parse_addr(const char *s, bool default_any, char host[64], uint16_t *port);
/* Listen on @host:@port (0: an ephemeral port); the bound port in *@bound. Return: fd or -errno. */
int mig_listen(const char *host, uint16_t port, uint16_t *bound);
/* Accept one connection within @timeout_ms (-1: wait). Return: 0 with @c set up, -ETIMEDOUT, -errno. */
int mig_accept(int lfd, int timeout_ms, struct mig_conn *c);
/* Connect within @timeout_ms, retrying while refused until then. Return: 0, -errno. */
int mig_connect(const char *host, uint16_t port, int timeout_ms, struct mig_conn *c);
/* All @len bytes, or an error: -EPIPE/-ECONNRESET (peer gone), -ETIMEDOUT, -errno. Honours cap_bps. */
int mig_send(struct mig_conn *c, const void *buf, size_t len);
/* Exactly @len bytes: 0; -EPIPE when the peer closed first (clean EOF at 0 bytes: -ENODATA). */
int mig_recv(struct mig_conn *c, void *buf, size_t len);
/* Wait until readable within @timeout_ms. Return: 1 readable, 0 timeout, -errno. */
int mig_poll_readable(struct mig_conn *c, int timeout_ms);
void mig_close(struct mig_conn *c);

#endif
