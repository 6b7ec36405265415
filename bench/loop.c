/*
 * The connection layer: one io_uring per thread, one recv and one send at
 * most in flight per connection (a load generator needs no more, and it
 * keeps ownership of every buffer obvious: the recv owns the tail of c->in
 * or c->rx until it completes, the send owns the queued chunks).
 *
 * TLS runs over memory BIOs: ciphertext goes between the socket and the
 * BIOs, plaintext between OpenSSL and the machines, so the machines never
 * know whether TLS is on.
 *
 * Closing: shutdown() makes any armed recv/send complete, and the conn is
 * only finalized (fd closed, machine told, maybe reconnected) when nothing
 * is in flight, from the completion dispatcher, never from inside a
 * machine's callback.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

enum { OP_RECV = 1, OP_SEND = 2, OP_CONNECT = 3 };

#define TLS_ENCRYPT_BATCH (256 * 1024)

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	if (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	if (!sqe) {
		fprintf(stderr, "bench: io_uring SQ full\n");
		abort();
	}
	return sqe;
}

static void *tag(struct conn *c, int op)
{
	return (void *)((uintptr_t)c | (uintptr_t)op);
}

void conn_err(struct conn *c, enum err e)
{
	c->w->st.errs[e]++;
}

/* ---- pending replies ---------------------------------------------------- */

struct pend *pend_push(struct conn *c, int kind, int arg)
{
	if (c->pend_n == PEND_MAX) {
		fprintf(stderr, "bench: too many commands in flight\n");
		abort();
	}
	struct pend *p = &c->pend[(c->pend_head + c->pend_n++) % PEND_MAX];
	p->kind = (uint8_t)kind;
	p->multi = 0;
	p->arg = arg;
	p->t0 = now_ns();
	return p;
}

struct pend *pend_front(struct conn *c)
{
	return c->pend_n ? &c->pend[c->pend_head] : NULL;
}

void pend_pop(struct conn *c)
{
	c->pend_head = (c->pend_head + 1) % PEND_MAX;
	c->pend_n--;
}

/* ---- output ------------------------------------------------------------- */

static struct chunk *q_add(struct conn *c)
{
	if (c->qn == c->qcap) {
		int ncap = c->qcap ? c->qcap * 2 : 8;
		struct chunk *nq = realloc(c->q, (size_t)ncap * sizeof *nq);
		if (!nq) abort();
		c->q = nq;
		c->qcap = ncap;
	}
	return &c->q[c->qn++];
}

/* Appending into the last owned chunk is safe even while a send is in
 * flight: the kernel only reads the bytes the iovec covered at submission,
 * and the chunk never moves (no realloc of chunk memory). */
void conn_send(struct conn *c, const void *p, size_t n)
{
	if (c->qn) {
		struct chunk *t = &c->q[c->qn - 1];
		if (t->cap && t->cap - t->len >= n) {
			memcpy(t->p + t->len, p, n);
			t->len += n;
			return;
		}
	}
	struct chunk *k = q_add(c);
	k->cap = n > 4096 ? n : 4096;
	k->p = malloc(k->cap);
	if (!k->p) abort();
	memcpy(k->p, p, n);
	k->len = n;
}

void conn_sendf(struct conn *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf) abort();
	conn_send(c, buf, (size_t)n);
}

void conn_send_borrowed(struct conn *c, const void *p, size_t n)
{
	struct chunk *k = q_add(c);
	k->p = (char *)p;
	k->len = n;
	k->cap = 0;
}

static void q_advance(struct conn *c, size_t n)
{
	while (n && c->qn) {
		struct chunk *k = &c->q[0];
		size_t left = k->len - c->q_off;
		if (n < left) {
			c->q_off += n;
			return;
		}
		n -= left;
		if (k->cap) free(k->p);
		memmove(&c->q[0], &c->q[1], (size_t)(c->qn - 1) * sizeof *c->q);
		c->qn--;
		c->q_off = 0;
	}
}

static void q_clear(struct conn *c)
{
	for (int i = 0; i < c->qn; i++)
		if (c->q[i].cap) free(c->q[i].p);
	c->qn = 0;
	c->q_off = 0;
}

/* TLS: move queued plaintext through SSL_write (a bounded batch, so a
 * 10 MiB body is not encrypted into memory at once) and the resulting
 * ciphertext into c->tx. */
static void tls_fill_tx(struct conn *c)
{
	size_t budget = TLS_ENCRYPT_BATCH;
	while (!c->tls_hs && c->qn && budget) {
		struct chunk *k = &c->q[0];
		size_t n = k->len - c->q_off;
		if (n > 16384) n = 16384;
		int r = SSL_write(c->ssl, k->p + c->q_off, (int)n);
		if (r <= 0) break;
		q_advance(c, (size_t)r);
		budget = (size_t)r < budget ? budget - (size_t)r : 0;
	}
	size_t pend = BIO_ctrl_pending(c->wbio);
	if (!pend) return;
	if (c->tx_len + pend > c->tx_cap) {
		size_t ncap = c->tx_len + pend + 16384;
		char *nt = realloc(c->tx, ncap);
		if (!nt) abort();
		c->tx = nt;
		c->tx_cap = ncap;
	}
	int r = BIO_read(c->wbio, c->tx + c->tx_len, (int)pend);
	if (r > 0) c->tx_len += (size_t)r;
}

void conn_flush(struct conn *c)
{
	if (c->send_armed || c->closing || c->connecting) return;
	struct io_uring_sqe *sqe;
	if (c->ssl) {
		if (c->tx_off == c->tx_len) {
			c->tx_off = c->tx_len = 0;
			tls_fill_tx(c);
		}
		if (c->tx_off == c->tx_len) {
			if (c->want_close) conn_close(c, c->clean);
			return;
		}
		sqe = get_sqe(c->w);
		io_uring_prep_send(sqe, c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off,
				   MSG_NOSIGNAL);
	} else {
		if (!c->qn) {
			if (c->want_close) conn_close(c, c->clean);
			return;
		}
		int n = 0;
		for (int i = 0; i < c->qn && n < 16; i++, n++) {
			c->iov[n].iov_base = c->q[i].p + (i ? 0 : c->q_off);
			c->iov[n].iov_len = c->q[i].len - (i ? 0 : c->q_off);
		}
		memset(&c->mh, 0, sizeof c->mh);
		c->mh.msg_iov = c->iov;
		c->mh.msg_iovlen = (size_t)n;
		sqe = get_sqe(c->w);
		io_uring_prep_sendmsg(sqe, c->fd, &c->mh, MSG_NOSIGNAL);
	}
	io_uring_sqe_set_data(sqe, tag(c, OP_SEND));
	c->send_armed = true;
	c->inflight++;
}

/* ---- input -------------------------------------------------------------- */

static void in_reserve(struct conn *c, size_t want)
{
	if (c->in_cap - c->in_len >= want) return;
	size_t ncap = c->in_cap ? c->in_cap : 16384;
	while (ncap - c->in_len < want)
		ncap *= 2;
	char *ni = realloc(c->in, ncap);
	if (!ni) abort();
	c->in = ni;
	c->in_cap = ncap;
}

void conn_consume(struct conn *c, size_t n)
{
	if (n >= c->in_len) {
		c->in_len = 0;
		return;
	}
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
}

static size_t rx_chunk(void)
{
	return opt.mode == MODE_IDLE ? 4096 : 65536;
}

static void arm_recv(struct conn *c)
{
	if (c->recv_armed || c->closing || c->connecting) return;
	struct io_uring_sqe *sqe = get_sqe(c->w);
	if (c->ssl) {
		if (!c->rx) {
			c->rx_cap = rx_chunk();
			c->rx = malloc(c->rx_cap);
			if (!c->rx) abort();
		}
		io_uring_prep_recv(sqe, c->fd, c->rx, c->rx_cap, 0);
	} else {
		in_reserve(c, rx_chunk() / 2);
		io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
	}
	io_uring_sqe_set_data(sqe, tag(c, OP_RECV));
	c->recv_armed = true;
	c->inflight++;
}

/* ---- TLS ---------------------------------------------------------------- */

static void tls_handshake(struct conn *c)
{
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->tls_hs = false;
		hist_add(&c->w->st.h[M_TLS], now_ns() - c->tls_t0);
		if (opt.tls && !c->greeted)
			c->proto->connected(c);
		else
			c->proto->tls_done(c);
		conn_flush(c);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		conn_flush(c);
		return;
	}
	conn_err(c, E_TLS);
	if (!opt.quiet) {
		unsigned long ec = ERR_get_error();
		char buf[200];
		ERR_error_string_n(ec, buf, sizeof buf);
		snprintf(c->w->st.last_err, sizeof c->w->st.last_err, "tls: %.150s", buf);
	}
	ERR_clear_error();
	conn_close(c, false);
}

/* Any plaintext the client had received before STARTTLS/STLS took effect
 * is dropped (RFC 3207 4.2: nothing may be trusted from before). */
void conn_start_tls(struct conn *c)
{
	c->in_len = 0;
	c->ssl = SSL_new(c->w->ssl_ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) abort();
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_connect_state(c->ssl);
	if (opt.sni) SSL_set_tlsext_host_name(c->ssl, opt.sni);
	c->tls_hs = true;
	c->tls_t0 = now_ns();
	tls_handshake(c);
}

/* Ciphertext arrived: feed OpenSSL, pull out plaintext. Returns -1 when
 * the connection is done with, 1 when the peer's close_notify came (the
 * plaintext before it, such as a 221, still needs reading), else 0. */
static int tls_input(struct conn *c, size_t n)
{
	BIO_write(c->rbio, c->rx, (int)n);
	if (c->tls_hs) {
		tls_handshake(c);
		if (c->tls_hs || c->closing) return c->closing ? -1 : 0;
	}
	for (;;) {
		in_reserve(c, 16384);
		int r = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
		if (r > 0) {
			c->in_len += (size_t)r;
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ) break;
		if (e == SSL_ERROR_ZERO_RETURN) return 1;
		conn_err(c, E_TLS);
		ERR_clear_error();
		conn_close(c, false);
		return -1;
	}
	if (BIO_ctrl_pending(c->wbio)) conn_flush(c);
	return 0;
}

/* ---- connection lifecycle ----------------------------------------------- */

static void conn_open(struct conn *c)
{
	struct worker *w = c->w;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_err(c, E_CONNECT);
		c->dead = 1;
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->closing = c->want_close = c->recv_armed = c->send_armed = false;
	c->greeted = c->clean = c->authed = false;
	c->tls_hs = false;
	c->in_len = 0;
	c->tx_len = c->tx_off = 0;
	c->pend_head = c->pend_n = 0;
	c->state = 0;
	c->in_multi = false;
	c->connecting = true;
	c->t_connect = now_ns();
	w->active++;
	w->connecting++;
	struct io_uring_sqe *sqe = get_sqe(w);
	io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&opt.addr, sizeof opt.addr);
	io_uring_sqe_set_data(sqe, tag(c, OP_CONNECT));
	c->inflight++;
}

void conn_close(struct conn *c, bool clean)
{
	if (c->closing) return;
	c->closing = true;
	c->clean = clean;
	shutdown(c->fd, SHUT_RDWR);
}

static void conn_finalize(struct conn *c)
{
	struct worker *w = c->w;
	close(c->fd);
	c->fd = -1;
	if (c->ssl) SSL_free(c->ssl); /* frees both BIOs */
	c->ssl = NULL;
	c->rbio = c->wbio = NULL;
	q_clear(c);
	w->active--;
	c->proto->closed(c, c->clean);
	if (!c->dead && !w->stop && !atomic_load(&run_stop)) conn_open(c);
}

static void on_connect(struct conn *c, int res)
{
	c->connecting = false;
	c->w->connecting--;
	if (c->closing) return;
	if (res < 0) {
		conn_err(c, E_CONNECT);
		if (!opt.quiet && !c->w->st.last_err[0])
			snprintf(c->w->st.last_err, sizeof c->w->st.last_err, "connect: %s",
				 strerror(-res));
		c->closing = true;
		c->dead = 1;
		return;
	}
	if (opt.tls)
		conn_start_tls(c);
	else
		c->proto->connected(c);
	conn_flush(c);
}

static void on_recv(struct conn *c, int res)
{
	c->recv_armed = false;
	if (c->closing) return;
	if (res <= 0) {
		/* EOF is clean only once the machine has seen the goodbye. */
		if (res < 0 || !c->clean) {
			conn_err(c, E_IO);
			if (!c->w->st.last_err[0])
				snprintf(c->w->st.last_err, sizeof c->w->st.last_err,
					 "connection closed by server: %s",
					 res < 0 ? strerror(-res) : "EOF");
		}
		conn_close(c, c->clean && res == 0);
		return;
	}
	int eof = 0;
	if (c->ssl) {
		eof = tls_input(c, (size_t)res);
		if (eof < 0 || c->tls_hs) return;
	} else {
		c->in_len += (size_t)res;
	}
	if (c->in_len) c->proto->input(c);
	if (eof && !c->closing) {
		if (!c->clean) conn_err(c, E_IO);
		conn_close(c, c->clean);
	}
	if (!c->closing) conn_flush(c);
}

static void on_send(struct conn *c, int res)
{
	c->send_armed = false;
	if (c->closing) return;
	if (res < 0) {
		conn_err(c, E_IO);
		conn_close(c, false);
		return;
	}
	if (c->ssl)
		c->tx_off += (size_t)res;
	else
		q_advance(c, (size_t)res);
	conn_flush(c);
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
	uintptr_t d = (uintptr_t)io_uring_cqe_get_data(cqe);
	if (!d) return;
	struct conn *c = (struct conn *)(d & ~(uintptr_t)7);
	int op = (int)(d & 7);
	c->inflight--;
	switch (op) {
	case OP_CONNECT: on_connect(c, cqe->res); break;
	case OP_RECV: on_recv(c, cqe->res); break;
	case OP_SEND: on_send(c, cqe->res); break;
	}
	if (c->closing) {
		if (!c->inflight) conn_finalize(c);
	} else {
		arm_recv(c);
	}
}

static void ramp(struct worker *w)
{
	while (w->next_start < w->nconns && w->connecting < opt.connect_window &&
	       !atomic_load(&run_stop)) {
		conn_open(&w->conns[w->next_start++]);
	}
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = 65536;
	int r = io_uring_queue_init_params(4096, &w->ring, &p);
	if (r < 0) {
		p.flags = IORING_SETUP_CQSIZE;
		r = io_uring_queue_init_params(4096, &w->ring, &p);
	}
	if (r < 0) {
		fprintf(stderr, "bench: io_uring_queue_init: %s\n", strerror(-r));
		exit(2);
	}
	uint64_t deadline = opt.timeout > 0 ? now_ns() + (uint64_t)(opt.timeout * 1e9) : 0;
	bool stopping = false;
	for (;;) {
		ramp(w);
		if (w->active == 0 && w->next_start >= w->nconns) break;
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100000000};
		struct io_uring_cqe *cqe;
		r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		if (r < 0 && r != -ETIME && r != -EINTR) {
			fprintf(stderr, "bench: io_uring wait: %s\n", strerror(-r));
			exit(2);
		}
		unsigned head, n = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			dispatch(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
		bool late = deadline && now_ns() > deadline;
		if (!stopping && (late || atomic_load(&run_stop))) {
			/* Idle mode ends here by design; a deadline is an error. */
			stopping = true;
			w->stop = true;
			for (int i = 0; i < w->nconns; i++) {
				struct conn *c = &w->conns[i];
				c->dead = 1;
				if (c->fd >= 0 && !c->closing) {
					if (late) conn_err(c, E_TIMEOUT);
					conn_close(c, !late);
				}
			}
			w->next_start = w->nconns;
		}
	}
	io_uring_queue_exit(&w->ring);
	return NULL;
}
