// SPDX-License-Identifier: MIT
/*
 * TCP for migration (mig/net.h): IPv4 listeners and connections with
 * TCP_NODELAY and large socket buffers, whole-buffer sends and receives
 * with a deadline (poll()), and a token-bucket cap on the sending rate.
 *
 * The sockets stay blocking: every send and receive is non-blocking per
 * call (MSG_DONTWAIT) and waits in poll() when the socket is not ready, so
 * a caller may still use the fd with plain blocking calls. timeout_ms is a
 * deadline for progress: each wait for the socket is at most timeout_ms,
 * and a call fails with -ETIMEDOUT when one wait runs out without a byte
 * moving (a capped send of a large buffer is not failed for the time the
 * cap makes it take). A descriptor that is not a socket (a file, a pipe:
 * a saved stream) is read and written with read() and write().
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "mig/net.h"

#define MIG_SOCKBUF (4 << 20)   /* SO_SNDBUF / SO_RCVBUF asked for (best effort) */
#define MIG_BURST_S 0.05        /* the token bucket holds at most 50 ms of sending */
#define MIG_RETRY_MS 20         /* between connection attempts while refused */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_nsec = 999999999L;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- addresses ---------------------------------------------------------------- */

int mig_parse_addr(const char *s, bool default_any, char host[64], uint16_t *port)
{
	const char *colon, *p;
	struct in_addr a;
	unsigned long v = 0;
	size_t hl;

	if (!s || !host || !port)
		return -EINVAL;
	colon = strrchr(s, ':');
	p = colon ? colon + 1 : s;
	if (!*p || strlen(p) > 5)
		return -EINVAL;
	for (const char *q = p; *q; q++) {
		if (*q < '0' || *q > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(*q - '0');
	}
	if (v > 65535)
		return -EINVAL;
	hl = colon ? (size_t)(colon - s) : 0;
	if (!hl) {
		snprintf(host, 64, "%s", default_any ? "0.0.0.0" : "127.0.0.1");
	} else {
		char h[64];

		if (hl >= sizeof(h))
			return -EINVAL;
		memcpy(h, s, hl);
		h[hl] = 0;
		if (!strcmp(h, "localhost"))
			snprintf(h, sizeof(h), "127.0.0.1");
		else if (inet_pton(AF_INET, h, &a) != 1)
			return -EINVAL;
		memcpy(host, h, strlen(h) + 1);
	}
	*port = (uint16_t)v;
	return 0;
}

static int sockaddr_of(const char *host, uint16_t port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(port);
	if (!host || !*host || !strcmp(host, "localhost"))
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

static void set_buffers(int fd)
{
	int v = MIG_SOCKBUF;

	/* best effort: the kernel caps them at net.core.[rw]mem_max */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
}

static void conn_setup(struct mig_conn *c, int fd)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->timeout_ms = -1;
}

/* ---- listening, accepting, connecting ------------------------------------------ */

int mig_listen(const char *host, uint16_t port, uint16_t *bound)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd, one = 1, err;

	err = sockaddr_of(host, port, &sa);
	if (err)
		return err;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	set_buffers(fd); /* inherited by accepted sockets, before the window is set */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 8) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		err = -errno;
		close(fd);
		return err;
	}
	if (bound)
		*bound = ntohs(sa.sin_port);
	return fd;
}

/* poll() on one fd for @ev, at most @timeout_ms (-1: none); EINTR retried within the time left. */
static int wait_fd(int fd, short ev, int timeout_ms)
{
	double end = timeout_ms >= 0 ? now_s() + timeout_ms / 1000.0 : 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = ev };
		int t = -1, n;

		if (timeout_ms >= 0) {
			double left = end - now_s();

			t = left > 0 ? (int)(left * 1000.0 + 0.999) : 0;
		}
		n = poll(&p, 1, t);
		if (n > 0)
			return 1;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

int mig_accept(int lfd, int timeout_ms, struct mig_conn *c)
{
	int n, fd;

	if (lfd < 0 || !c)
		return -EINVAL;
	for (;;) {
		n = wait_fd(lfd, POLLIN, timeout_ms);
		if (n < 0)
			return n;
		if (n == 0)
			return -ETIMEDOUT;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		/* gone before we took it, or interrupted: wait again */
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED)
			return -errno;
	}
	conn_setup(c, fd);
	return 0;
}

/* One attempt within @timeout_ms (-1: none). Return: fd, -errno (-ECONNREFUSED to retry). */
static int connect_once(const struct sockaddr_in *sa, int timeout_ms)
{
	int fd, fl, err = 0, n;
	socklen_t el = sizeof(err);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	set_buffers(fd);
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
		if (errno != EINPROGRESS) {
			err = -errno;
			goto fail;
		}
		n = wait_fd(fd, POLLOUT, timeout_ms);
		if (n <= 0) {
			err = n ? n : -ETIMEDOUT;
			goto fail;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el)) {
			err = -errno;
			goto fail;
		}
		if (err) {
			err = -err;
			goto fail;
		}
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK)) {
		err = -errno;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return err;
}

int mig_connect(const char *host, uint16_t port, int timeout_ms, struct mig_conn *c)
{
	struct sockaddr_in sa;
	double end = timeout_ms >= 0 ? now_s() + timeout_ms / 1000.0 : 0;
	int fd, err;

	if (!c)
		return -EINVAL;
	err = sockaddr_of(host, port, &sa);
	if (err)
		return err;
	for (;;) {
		int left = -1;

		if (timeout_ms >= 0) {
			double l = end - now_s();

			if (l <= 0)
				return -ETIMEDOUT;
			left = (int)(l * 1000.0 + 0.999);
		}
		fd = connect_once(&sa, left);
		if (fd >= 0)
			break;
		if (fd != -ECONNREFUSED)
			return fd;
		/* nobody listening yet: try again until the deadline */
		if (timeout_ms >= 0) {
			double l = end - now_s();

			if (l <= 0)
				return -ETIMEDOUT;
			sleep_s(l < MIG_RETRY_MS / 1000.0 ? l : MIG_RETRY_MS / 1000.0);
		} else {
			sleep_s(MIG_RETRY_MS / 1000.0);
		}
	}
	conn_setup(c, fd);
	return 0;
}

/* ---- sending and receiving ------------------------------------------------------ */

/*
 * The token bucket: how many bytes may go now, sleeping first while the
 * bucket holds less than a useful piece (a quarter of the burst, or what
 * is left to send when that is less). It holds at most MIG_BURST_S of
 * sending and starts full.
 */
static size_t bucket_take(struct mig_conn *c, size_t want)
{
	double burst = c->cap_bps * MIG_BURST_S, t = now_s(), piece;

	if (burst < 1)
		burst = 1;
	piece = burst / 4 < (double)want ? burst / 4 : (double)want;
	if (piece < 1)
		piece = 1;
	if (c->last_s <= 0 || c->last_s > t) { /* first use */
		c->bucket = burst;
		c->last_s = t;
	}
	for (;;) {
		c->bucket += (t - c->last_s) * c->cap_bps;
		c->last_s = t;
		if (c->bucket > burst)
			c->bucket = burst;
		if (c->bucket >= piece)
			break;
		sleep_s((piece - c->bucket) / c->cap_bps);
		t = now_s();
	}
	return (double)want < c->bucket ? want : (size_t)c->bucket;
}

int mig_send(struct mig_conn *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!c || c->fd < 0 || (!buf && len))
		return -EINVAL;
	while (len) {
		size_t n = len > (size_t)SSIZE_MAX ? (size_t)SSIZE_MAX : len;
		ssize_t k;
		int w;

		if (c->cap_bps > 0)
			n = bucket_take(c, n);
		k = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == ENOTSOCK) {
			w = wait_fd(c->fd, POLLOUT, c->timeout_ms);
			if (w < 0)
				return w;
			if (!w)
				return -ETIMEDOUT;
			k = write(c->fd, p, n);
		}
		if (k > 0) {
			if (c->cap_bps > 0)
				c->bucket -= (double)k;
			p += k;
			len -= (size_t)k;
			c->sent += (uint64_t)k;
			continue;
		}
		if (k == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		w = wait_fd(c->fd, POLLOUT, c->timeout_ms);
		if (w < 0)
			return w;
		if (!w)
			return -ETIMEDOUT;
	}
	return 0;
}

int mig_recv(struct mig_conn *c, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;

	if (!c || c->fd < 0 || (!buf && len))
		return -EINVAL;
	while (got < len) {
		size_t n = len - got > (size_t)SSIZE_MAX ? (size_t)SSIZE_MAX : len - got;
		ssize_t k = recv(c->fd, p + got, n, MSG_DONTWAIT);
		int w;

		if (k < 0 && errno == ENOTSOCK) {
			w = wait_fd(c->fd, POLLIN, c->timeout_ms);
			if (w < 0)
				return w;
			if (!w)
				return -ETIMEDOUT;
			k = read(c->fd, p + got, n);
		}
		if (k > 0) {
			got += (size_t)k;
			c->received += (uint64_t)k;
			continue;
		}
		if (k == 0)
			return got ? -EPIPE : -ENODATA;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		w = wait_fd(c->fd, POLLIN, c->timeout_ms);
		if (w < 0)
			return w;
		if (!w)
			return -ETIMEDOUT;
	}
	return 0;
}

int mig_poll_readable(struct mig_conn *c, int timeout_ms)
{
	if (!c || c->fd < 0)
		return -EINVAL;
	return wait_fd(c->fd, POLLIN, timeout_ms);
}

void mig_close(struct mig_conn *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}
