/*
 * worker: one thread, one ring, its own listening sockets (SO_REUSEPORT),
 * its own receive buffers. A connection lives and dies here.
 *
 * Input: multishot recv into a provided-buffer ring. A buffer stays out of
 * the ring while a connection holds unconsumed bytes in it or a spool write
 * references it (bufref counts the holders); then it goes back. When a
 * connection queues CONN_IN_HIGH chunks (it is parked on the disk, or a client
 * floods) its recv is cancelled and re-armed once it has caught up: memory
 * per connection stays bounded whatever the client sends. -ENOBUFS (the ring
 * ran dry) is back-pressure too: the connection waits on `rearm` until
 * buffers come back, it is never dropped for it.
 *
 * Time: a 1 s tick drives a 64-slot timer wheel. Connections only write their
 * new deadline on activity; the wheel re-slots them lazily when their old
 * slot comes round, so a busy connection costs nothing per byte.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/limits.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/server.h"
#include "core/tls.h"

#define RING_ENTRIES 4096
#define OUT_CAP 4096
/* Ciphertext a TLS connection may have waiting to be decrypted before its
 * recv is paused. */
#define TLS_BACKLOG_MAX (64 * 1024)

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	if (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	/* With 4096 entries and a submit above, NULL would mean the kernel
	 * refused every submission: nothing sensible can continue. */
	if (!sqe)
		abort();
	return sqe;
}

void worker_wake(struct worker *w)
{
	uint64_t one = 1;
	ssize_t n = write(w->efd, &one, sizeof one);
	(void)n;
}

/* ---- receive buffers ---------------------------------------------------- */

static void buf_give_back(struct worker *w, int32_t bid)
{
	io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * RBUF_SIZE, RBUF_SIZE, (unsigned short)bid,
			      io_uring_buf_ring_mask(RBUF_COUNT), 0);
	io_uring_buf_ring_advance(w->br, 1);
	w->bufs_out--;
}

void buf_release(struct worker *w, int32_t bid)
{
	if (bid < 0 || --w->bufref[bid] != 0)
		return;
	if (bid < RBUF_COUNT)
		buf_give_back(w, bid);
	else
		w->pfree[w->npfree++] = (int16_t)(bid - RBUF_COUNT);
}

int32_t pbuf_get(struct worker *w)
{
	if (!w->npfree)
		return -1;
	int32_t bid = RBUF_COUNT + w->pfree[--w->npfree];
	w->bufref[bid] = 1;
	return bid;
}

char *buf_addr(struct worker *w, int32_t bid)
{
	return bid < RBUF_COUNT ? w->bufs + (size_t)bid * RBUF_SIZE
				: w->pbufs + (size_t)(bid - RBUF_COUNT) * RBUF_SIZE;
}

static int bufs_setup(struct worker *w)
{
	size_t ringsz = RBUF_COUNT * sizeof(struct io_uring_buf);
	w->br = mmap(NULL, ringsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (w->br == MAP_FAILED)
		return -errno;
	/* Untouched pages cost nothing: RSS grows only with buffers in use. */
	w->bufs = mmap(NULL, (size_t)RBUF_COUNT * RBUF_SIZE, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (w->bufs == MAP_FAILED)
		return -errno;
	w->pbufs = mmap(NULL, (size_t)PBUF_COUNT * RBUF_SIZE, PROT_READ | PROT_WRITE,
			MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (w->pbufs == MAP_FAILED)
		return -errno;
	for (int i = 0; i < PBUF_COUNT; i++)
		w->pfree[w->npfree++] = (int16_t)(PBUF_COUNT - 1 - i);
	struct io_uring_buf_reg reg = {
		.ring_addr = (unsigned long)w->br,
		.ring_entries = RBUF_COUNT,
		.bgid = RBUF_GROUP,
	};
	int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (rc)
		return rc;
	io_uring_buf_ring_init(w->br);
	for (int i = 0; i < RBUF_COUNT; i++)
		io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * RBUF_SIZE, RBUF_SIZE,
				      (unsigned short)i, io_uring_buf_ring_mask(RBUF_COUNT), i);
	io_uring_buf_ring_advance(w->br, RBUF_COUNT);
	return 0;
}

/* ---- timers ------------------------------------------------------------- */

static uint32_t timer_at(const struct conn *c)
{
	return c->wake && c->wake < c->deadline ? c->wake : c->deadline;
}

static void timer_unlink(struct conn *c)
{
	if (c->tprev)
		c->tprev->tnext = c->tnext;
	else if (c->w->wheel[c->tslot] == c)
		c->w->wheel[c->tslot] = c->tnext;
	if (c->tnext)
		c->tnext->tprev = c->tprev;
	c->tnext = c->tprev = NULL;
}

static void timer_link(struct conn *c, uint32_t at)
{
	c->tslot = (uint8_t)(at & 63);
	struct conn **slot = &c->w->wheel[c->tslot];
	c->tprev = NULL;
	c->tnext = *slot;
	if (*slot)
		(*slot)->tprev = c;
	*slot = c;
}

uint32_t conn_timeout(const struct conn *c)
{
	uint32_t t = c->w->srv->cfg->svc[c->svc].timeout_s;
	return t ? t : 300;
}

void conn_touch(struct conn *c) { c->deadline = c->w->now + conn_timeout(c); }

/* ---- connections -------------------------------------------------------- */

/* A kTLS RX socket hands over non-data records (alerts) only with their
 * type in a control message, so it gets one recvmsg at a time into a
 * plaintext buffer instead of the multishot recv. */
static void krecv_arm(struct conn *c)
{
	struct tls_conn *t = c->tls;
	int32_t bid = pbuf_get(c->w);
	if (bid < 0) {
		if (!(c->flags & CF_RECV_WANTED)) {
			c->flags |= CF_RECV_WANTED;
			c->w->nwant++;
		}
		return;
	}
	t->kbid = bid;
	t->iov = (struct iovec){buf_addr(c->w, bid), RBUF_SIZE};
	t->msg = (struct msghdr){.msg_iov = &t->iov, .msg_iovlen = 1, .msg_control = t->cmsg,
				 .msg_controllen = sizeof t->cmsg};
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_recvmsg(sqe, c->fd, &t->msg, 0);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_KRECV));
	c->flags |= CF_RECV_ARMED;
}

static void recv_arm(struct conn *c)
{
	if (c->tls && c->tls->ktls_rx) {
		krecv_arm(c);
		return;
	}
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RBUF_GROUP;
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_RECV));
	c->flags |= CF_RECV_ARMED;
	c->flags &= ~(CF_RECV_WANTED | CF_CANCEL);
}

static void recv_cancel(struct conn *c)
{
	if (!(c->flags & CF_RECV_ARMED) || (c->flags & CF_CANCEL))
		return;
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_cancel64(sqe, op_tag(c, OP_RECV), 0);
	io_uring_sqe_set_data64(sqe, OP_IGNORE);
	c->flags |= CF_CANCEL;
}

static bool tls_user_tx(const struct conn *c) { return c->tls && c->tls->wmem; }

void conn_flush(struct conn *c)
{
	if (c->flags & (CF_SEND | CF_HANDSHAKE))
		return;
	/* A RETR read is landing behind the queued text (pop3_conn.c): a
	 * send now could end partial and move the buffer under it. */
	if (c->retr && (c->flags & CF_READ))
		return;
	const char *p = c->out.p;
	size_t n = c->out.len;
	if (tls_user_tx(c))
		n = tls_tx_prepare(c, &p);
	if (n == 0)
		return;
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_SEND));
	c->flags |= CF_SEND;
}

bool conn_out_alloc(struct conn *c)
{
	if (c->out.p)
		return true;
	c->out.p = malloc(OUT_CAP);
	c->out.cap = c->out.p ? OUT_CAP : 0;
	c->out.len = 0;
	return c->out.p != NULL;
}

static void drop_input(struct conn *c);

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	drop_input(c);
	if (svc_is_smtp(c->svc))
		smtp_conn_free(c);
	else
		pop3_conn_free(c);
	timer_unlink(c);
	tls_conn_free(c);
	close(c->fd);
	ipcount_release(w->srv->ips, c->ip);
	atomic_fetch_sub(&w->srv->nconn[c->svc], 1);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	log_debug("closed", "conn=%u", c->id);
	free(c->out.p);
	free(c);
}

/* Drives a closing connection: flush what is queued, shut the socket so the
 * multishot recv ends, and free once nothing in flight refers to it. */
static bool output_pending(const struct conn *c)
{
	return c->out.len || tls_tx_pending(c);
}

static void closing_step(struct conn *c)
{
	/* Replies first, then close_notify after them, then the shutdown. */
	if (!(c->flags & (CF_SHUT | CF_HANDSHAKE)) && output_pending(c)) {
		conn_flush(c);
		if (c->flags & CF_SEND)
			return;
	}
	if (!(c->flags & (CF_SHUT | CF_EOF | CF_HANDSHAKE | CF_STARTTLS)) && c->tls &&
	    !c->tls->close_sent) {
		tls_close_notify(c);
		if (output_pending(c)) {
			conn_flush(c);
			if (c->flags & CF_SEND)
				return;
		}
	}
	if (!(c->flags & CF_SHUT)) {
		/* Ends the multishot recv (it completes with 0); the cancel
		 * covers a recv the kernel has not started yet. */
		shutdown(c->fd, SHUT_RDWR);
		c->flags |= CF_SHUT;
		recv_cancel(c);
	}
	if (c->flags & (CF_RECV_ARMED | CF_SEND | CF_READ | CF_JOB | CF_POLL))
		return;
	conn_free(c);
}

void conn_close(struct conn *c)
{
	if (!(c->flags & CF_CLOSING)) {
		c->flags |= CF_CLOSING;
		if (svc_is_smtp(c->svc))
			smtp_conn_stop(c);
		else
			pop3_conn_stop(c);
	}
	closing_step(c);
}

static void proto_input(struct conn *c)
{
	if (svc_is_smtp(c->svc))
		smtp_conn_input(c);
	else
		pop3_conn_input(c);
}

static void handshake_step(struct conn *c);

/* Small pieces (pipelined commands, one per packet) are appended to the
 * last chunk's buffer when it has room: a 16 KiB buffer per 20-octet
 * command would fill the queue and stop receiving for nothing. */
#define COALESCE_MAX 512

bool conn_push_input(struct conn *c, char *p, uint32_t len, int32_t bid)
{
	if (len <= COALESCE_MAX && c->nin && !c->ovf && bid >= 0) {
		struct ichunk *t = &c->in[(c->inhead + c->nin - 1) % CONN_IN_MAX];
		char *base = t->bid >= 0 ? buf_addr(c->w, t->bid) : NULL;
		if (base && t->p >= base && (size_t)(t->p - base) + t->len + len <= RBUF_SIZE) {
			memcpy(t->p + t->len, p, len);
			t->len += len;
			buf_release(c->w, bid);
			return true;
		}
	}
	struct ichunk ch = {.p = p, .len = len, .off = 0, .bid = bid};
	if (c->nin < CONN_IN_MAX && !c->ovf) {
		c->in[(c->inhead + c->nin) % CONN_IN_MAX] = ch;
		c->nin++;
		return true;
	}
	struct ichunk_node *n = malloc(sizeof *n);
	if (!n) {
		buf_release(c->w, bid);
		return false;
	}
	n->next = NULL;
	n->ch = ch;
	if (c->ovf_tail)
		c->ovf_tail->next = n;
	else
		c->ovf = n;
	c->ovf_tail = n;
	return true;
}

void conn_pop_input(struct conn *c)
{
	buf_release(c->w, c->in[c->inhead].bid);
	c->inhead = (uint8_t)((c->inhead + 1) % CONN_IN_MAX);
	c->nin--;
	while (c->ovf && c->nin < CONN_IN_MAX) {
		struct ichunk_node *n = c->ovf;
		c->ovf = n->next;
		if (!c->ovf)
			c->ovf_tail = NULL;
		c->in[(c->inhead + c->nin) % CONN_IN_MAX] = n->ch;
		c->nin++;
		free(n);
	}
}

static void drop_input(struct conn *c)
{
	while (c->nin)
		conn_pop_input(c);
}

/* RFC 3207 4.2 / RFC 2595 4: nothing the client sent before the handshake
 * may be read after it. The machine has queued its "ready" reply and
 * consumed exactly the command line; everything else goes now, and the
 * handshake starts only once the recv has ended and the reply is out, so
 * no later byte can be taken for plaintext. */
void conn_starttls(struct conn *c)
{
	drop_input(c);
	c->flags |= CF_STARTTLS;
	recv_cancel(c);
}

static bool recv_allowed(const struct conn *c)
{
	return !(c->flags & (CF_RECV_ARMED | CF_EOF | CF_RECV_WANTED | CF_STARTTLS |
			     CF_HANDSHAKE | CF_CLOSING)) &&
	       c->nin < CONN_IN_HIGH && tls_rx_backlog(c) < TLS_BACKLOG_MAX;
}

/* Feeds queued input to the machine, starts sends, keeps recv armed. Every
 * event on a connection ends here. */
static void conn_pump(struct conn *c)
{
	if (c->flags & CF_CLOSING) {
		closing_step(c);
		return;
	}
	if (c->flags & CF_HANDSHAKE)
		return;
	if (!conn_out_alloc(c)) {
		conn_close(c);
		return;
	}
	if (c->flags & CF_STARTTLS) {
		drop_input(c);
		conn_flush(c);
		if (!(c->flags & (CF_RECV_ARMED | CF_SEND)) && !output_pending(c)) {
			c->flags &= ~CF_STARTTLS;
			if (tls_conn_new(c) != 0) {
				c->out.len = 0;
				conn_close(c);
				return;
			}
			c->flags |= CF_HANDSHAKE;
			handshake_step(c);
		}
		return;
	}
	/* Decrypted plaintext may be waiting behind the machine: alternate
	 * until neither makes progress (bounded by CONN_IN_HIGH chunks). */
	for (;;) {
		proto_input(c);
		if (c->flags & (CF_CLOSING | CF_STARTTLS))
			break;
		if (c->parked || c->nin >= CONN_IN_HIGH || !tls_rx_pending(c))
			break;
		unsigned before = c->nin;
		if (tls_rx(c, NULL, 0) < 0)
			c->flags |= CF_EOF;
		if (c->nin == before)
			break;
	}
	if (c->flags & CF_CLOSING) {
		closing_step(c);
		return;
	}
	if (c->flags & CF_STARTTLS) {
		conn_pump(c);
		return;
	}
	conn_flush(c);
	if ((c->flags & CF_EOF) && c->nin == 0 && !c->parked && !(c->flags & CF_SEND)) {
		conn_close(c);
		return;
	}
	if (recv_allowed(c))
		recv_arm(c);
	/* Idle connections give their output buffer back: 4 KiB each would
	 * dominate the cost of 10,000 idle sessions. */
	if (c->out.len == 0 && !(c->flags & CF_SEND) && !c->retr && c->out.p) {
		free(c->out.p);
		c->out.p = NULL;
		c->out.cap = 0;
	}
}

static void handshake_step(struct conn *c)
{
	int r = tls_handshake(c);
	if (r == 0)
		return; /* polling */
	c->flags &= ~CF_HANDSHAKE;
	if (r < 0) {
		c->out.len = 0; /* nothing plaintext may follow a failed handshake */
		c->flags |= CF_EOF;
		conn_close(c);
		return;
	}
	if (svc_is_smtp(c->svc))
		smtp_conn_tls_done(c, 0);
	else
		pop3_conn_tls_done(c, 0);
	conn_pump(c);
}

void conn_resume(struct conn *c) { conn_pump(c); }

static void on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->flags &= ~(CF_RECV_ARMED | CF_CANCEL);
	if (res > 0) {
		int32_t bid = (int32_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		w->bufref[bid] = 1;
		w->bufs_out++;
		if (c->flags & (CF_STARTTLS | CF_HANDSHAKE)) {
			/* Sent before our "ready": discarded (see conn_starttls). */
			buf_release(w, bid);
			conn_pump(c);
			return;
		}
		if (c->tls && !(c->flags & CF_CLOSING)) {
			/* Ciphertext: into the session, and the buffer straight
			 * back to the ring. */
			int r = tls_rx(c, w->bufs + (size_t)bid * RBUF_SIZE, (size_t)res);
			buf_release(w, bid);
			conn_touch(c);
			if (r < 0)
				c->flags |= CF_EOF;
			if (tls_rx_backlog(c) >= TLS_BACKLOG_MAX || c->nin >= CONN_IN_HIGH)
				recv_cancel(c);
			conn_pump(c);
			return;
		}
		if (c->flags & CF_CLOSING) {
			buf_release(w, bid);
			closing_step(c);
			return;
		}
		/* Past CONN_IN_HIGH only what the kernel posted before our
		 * cancel took effect: kept (the ring bounds it), never
		 * dropped, or a pipelining client would lose its session. */
		if (!conn_push_input(c, w->bufs + (size_t)bid * RBUF_SIZE, (uint32_t)res, bid)) {
			c->out.len = 0;
			conn_close(c);
			return;
		}
		conn_touch(c);
		if (c->nin >= CONN_IN_HIGH)
			recv_cancel(c);
	} else if (res == -ENOBUFS) {
		/* The ring ran dry: wait for buffers, never drop for it. */
		if (!(c->flags & (CF_RECV_WANTED | CF_CLOSING))) {
			c->flags |= CF_RECV_WANTED;
			w->nwant++;
		}
	} else if (res == -ECANCELED) {
		/* our back-pressure cancel, or the close */
	} else if (res == 0) {
		/* Orderly EOF: what was pipelined before it is still served
		 * (`printf ... | nc` half-closes right after sending). */
		c->flags |= CF_EOF;
	} else {
		/* Reset and friends: nothing more can be sent either. */
		c->flags |= CF_EOF;
		c->out.len = 0;
		conn_close(c);
		return;
	}
	conn_pump(c);
}

static void on_send(struct worker *w, struct conn *c, int res)
{
	c->flags &= ~CF_SEND;
	if (res < 0) {
		/* The client is gone: nothing more can reach it. */
		c->out.len = 0;
		if (c->tls)
			c->tls->clen = 0;
		c->flags |= CF_EOF;
		if (res != -EAGAIN)
			conn_close(c);
		else
			conn_pump(c);
		return;
	}
	if (tls_user_tx(c)) {
		tls_tx_sent(c, (size_t)res);
	} else {
		if ((size_t)res < c->out.len)
			memmove(c->out.p, c->out.p + res, c->out.len - (size_t)res);
		c->out.len -= (size_t)res;
	}
	if (!svc_is_smtp(c->svc))
		pop3_conn_sent(c);
	conn_pump(c);
}

static void accept_arm(struct listener *l)
{
	struct io_uring_sqe *sqe = worker_sqe(l->w);
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, op_tag(l, OP_ACCEPT));
	l->armed = true;
}

static void refuse(int fd, enum svc_kind svc, const char *why)
{
	char msg[160];
	int n = svc_is_smtp(svc) ? snprintf(msg, sizeof msg, "421 4.7.0 %s, try again later\r\n", why)
				 : snprintf(msg, sizeof msg, "-ERR [SYS/TEMP] %s\r\n", why);
	/* Non-blocking: a fresh socket's send buffer is empty. */
	ssize_t s = send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)s;
	close(fd);
}

static void on_accept(struct worker *w, struct listener *l, struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		l->armed = false;
	int fd = cqe->res;
	if (fd < 0) {
		if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM || fd == -ENOBUFS) {
			/* Out of descriptors: back off a second rather than spin
			 * on a listener that stays readable. */
			if (!w->accept_paused)
				log_warn("accept_paused", "worker=%u error=%s", w->id, strerror(-fd));
			w->accept_paused = true;
			w->accept_retry = w->now + 1;
			if (l->armed) {
				struct io_uring_sqe *sqe = worker_sqe(w);
				io_uring_prep_cancel64(sqe, op_tag(l, OP_ACCEPT), 0);
				io_uring_sqe_set_data64(sqe, OP_IGNORE);
			}
		} else if (!l->armed && !w->stopping) {
			accept_arm(l);
		}
		return;
	}
	if (!l->armed && !w->stopping && !w->accept_paused)
		accept_arm(l);
	if (w->stopping) {
		close(fd);
		return;
	}
	struct server *srv = w->srv;
	const struct service_config *sc = &srv->cfg->svc[l->svc];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) {
		close(fd);
		return;
	}
	if (atomic_fetch_add(&srv->nconn[l->svc], 1) >= sc->max_connections) {
		atomic_fetch_sub(&srv->nconn[l->svc], 1);
		log_warn("refused", "service=%s reason=max_connections", svc_names[l->svc]);
		refuse(fd, l->svc, "Too many connections");
		return;
	}
	struct ipnode *ipn = ipcount_acquire(srv->ips, &ss, sc->max_connections_per_ip);
	if (!ipn) {
		atomic_fetch_sub(&srv->nconn[l->svc], 1);
		char ip[INET6_ADDRSTRLEN];
		ipcount_format(&ss, ip, sizeof ip);
		log_warn("refused", "service=%s client=%s reason=max_connections_per_ip",
			 svc_names[l->svc], ip);
		refuse(fd, l->svc, "Too many connections from your address");
		return;
	}
	/* Out of memory: the client hears 421 (or -ERR) and may come back;
	 * the refusal itself allocates nothing. */
	struct conn *c = calloc(1, sizeof *c);
	if (!c || !conn_out_alloc(c)) {
		free(c);
		ipcount_release(srv->ips, ipn);
		atomic_fetch_sub(&srv->nconn[l->svc], 1);
		log_warn("refused", "service=%s reason=out_of_memory", svc_names[l->svc]);
		refuse(fd, l->svc, "Out of memory");
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->w = w;
	c->fd = fd;
	c->svc = (uint8_t)l->svc;
	c->ip = ipn;
	c->id = ++w->next_conn_id * 64 + w->id; /* unique across workers */
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	conn_touch(c);
	timer_link(c, timer_at(c));
	char ip[INET6_ADDRSTRLEN];
	ipcount_format(&ss, ip, sizeof ip);
	log_debug("connect", "service=%s conn=%u client=%s", svc_names[l->svc], c->id, ip);
	if (svc_is_smtp(c->svc))
		snprintf(c->smtp.peer, sizeof c->smtp.peer, "%s", ip);
	if (l->svc == SVC_SUBMISSIONS || l->svc == SVC_POP3S) {
		/* Implicit TLS: the greeting comes after the handshake. */
		if (tls_conn_new(c) != 0) {
			conn_close(c);
			return;
		}
		c->flags |= CF_HANDSHAKE;
		handshake_step(c);
		return;
	}
	if (svc_is_smtp(c->svc))
		smtp_conn_start(c);
	else
		pop3_conn_start(c);
	conn_pump(c);
}

static void on_poll(struct conn *c, int res)
{
	c->flags &= ~CF_POLL;
	if (c->flags & CF_CLOSING) {
		closing_step(c);
		return;
	}
	if (res < 0) {
		c->flags |= CF_EOF;
		c->flags &= ~CF_HANDSHAKE;
		conn_close(c);
		return;
	}
	handshake_step(c);
}

/* TLS_GET_RECORD_TYPE from linux/tls.h; 23 is application data (RFC 8446
 * 5.1). Anything else on a kTLS socket is an alert (close_notify or worse)
 * or a handshake message we never asked for: the session ends. */
static void on_krecv(struct worker *w, struct conn *c, int res)
{
	struct tls_conn *t = c->tls;
	c->flags &= ~CF_RECV_ARMED;
	int32_t bid = t->kbid;
	t->kbid = -1;
	if (res > 0 && !(c->flags & (CF_CLOSING | CF_STARTTLS))) {
		unsigned char type = 23;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&t->msg); cm; cm = CMSG_NXTHDR(&t->msg, cm))
			if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == 2 /* TLS_GET_RECORD_TYPE */)
				type = *CMSG_DATA(cm);
		if (type == 23) {
			if (!conn_push_input(c, buf_addr(w, bid), (uint32_t)res, bid)) {
				c->out.len = 0;
				conn_close(c);
				return;
			}
			conn_touch(c);
			conn_pump(c);
			return;
		}
		res = 0;
	}
	buf_release(w, bid);
	if (res <= 0 && res != -ECANCELED)
		c->flags |= CF_EOF;
	if (res < 0 && res != -ECANCELED) {
		c->out.len = 0;
		conn_close(c);
		return;
	}
	conn_pump(c);
}

/* ---- the tick ----------------------------------------------------------- */

static void tick_arm(struct worker *w)
{
	w->tick_ts.tv_sec = 1;
	w->tick_ts.tv_nsec = 0;
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, op_tag(w, OP_TICK));
}

static void stop_begin(struct worker *w);

static void on_tick(struct worker *w)
{
	w->now++;
	struct conn *c = w->wheel[w->now & 63];
	w->wheel[w->now & 63] = NULL;
	while (c) {
		struct conn *next = c->tnext;
		c->tnext = c->tprev = NULL;
		uint32_t at = timer_at(c);
		if (at <= w->now && (c->flags & (CF_HANDSHAKE | CF_STARTTLS)) && !c->wake) {
			/* A handshake that stalls past the idle timeout. */
			timer_link(c, w->now + 64);
			c->out.len = 0;
			c->flags |= CF_EOF;
			conn_close(c);
		} else if (at <= w->now && !(c->flags & CF_CLOSING)) {
			timer_link(c, w->now + 64); /* parked far; the handler re-arms */
			if (svc_is_smtp(c->svc))
				smtp_conn_timer(c); /* may free c */
			else
				pop3_conn_timer(c);
		} else {
			timer_link(c, at > w->now ? at : w->now + 1);
		}
		c = next;
	}
	if (w->accept_paused && w->now >= w->accept_retry && !w->stopping) {
		w->accept_paused = false;
		for (unsigned i = 0; i < w->nlisteners; i++)
			if (!w->listeners[i].armed)
				accept_arm(&w->listeners[i]);
	}
	if (atomic_load(&w->srv->stop) && !w->stopping)
		stop_begin(w);
	if (w->stopping && w->now >= w->stop_at) {
		/* SPEC 8: transactions get 10 seconds, then everyone goes. */
		for (struct conn *k = w->conns, *n; k; k = n) {
			n = k->next;
			conn_close(k);
		}
	}
	tick_arm(w);
}

void conn_timer_rearm(struct conn *c)
{
	timer_unlink(c);
	timer_link(c, timer_at(c));
}

/* ---- shutdown and the notify eventfd ------------------------------------ */

static void stop_begin(struct worker *w)
{
	w->stopping = true;
	w->stop_at = w->now + 10;
	for (unsigned i = 0; i < w->nlisteners; i++) {
		/* Closing the socket ends the multishot accept. */
		struct io_uring_sqe *sqe = worker_sqe(w);
		io_uring_prep_cancel64(sqe, op_tag(&w->listeners[i], OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
	for (struct conn *c = w->conns, *n; c; c = n) {
		n = c->next;
		if (svc_is_smtp(c->svc))
			smtp_conn_timer(c); /* it sees w->stopping */
		else
			pop3_conn_timer(c);
	}
}

static void notify_arm(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_read(sqe, w->efd, &w->efd_val, sizeof w->efd_val, 0);
	io_uring_sqe_set_data64(sqe, op_tag(w, OP_NOTIFY));
}

static void on_notify(struct worker *w)
{
	pthread_mutex_lock(&w->done_lock);
	struct pool_job *j = w->done;
	w->done = NULL;
	pthread_mutex_unlock(&w->done_lock);
	/* The list is newest first; results are independent, order is moot. */
	while (j) {
		struct pool_job *next = j->next;
		struct conn *c = j->conn;
		if (!c) {
			/* A spool's job (relay queue): it outlives conns. */
			j->done(j);
			j = next;
			continue;
		}
		c->flags &= ~CF_JOB;
		if (c->flags & CF_CLOSING) {
			if (svc_is_smtp(c->svc))
				pool_job_free(j);
			else
				pop3_conn_job_done(c, j); /* releases what the job took */
			closing_step(c);
		} else if (svc_is_smtp(c->svc)) {
			smtp_conn_job_done(c, j);
		} else {
			pop3_conn_job_done(c, j);
		}
		j = next;
	}
	if (atomic_load(&w->srv->stop) && !w->stopping)
		stop_begin(w);
	notify_arm(w);
}

/* ---- the loop ----------------------------------------------------------- */

static void rearm_waiting(struct worker *w)
{
	/* Re-arm connections that hit -ENOBUFS once a quarter of the buffers
	 * are back: re-arming into an empty ring would just fail again. */
	if (!w->nwant || w->bufs_out > RBUF_COUNT * 3 / 4 || w->npfree < PBUF_COUNT / 4)
		return;
	w->nwant = 0;
	for (struct conn *c = w->conns, *n; c; c = n) {
		n = c->next;
		if (!(c->flags & CF_RECV_WANTED))
			continue;
		c->flags &= ~CF_RECV_WANTED;
		conn_pump(c); /* re-arms, and resumes decrypting */
	}
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	void *p = op_ptr(ud);
	switch (op_of(ud)) {
	case OP_IGNORE: break;
	case OP_ACCEPT: on_accept(w, p, cqe); break;
	case OP_RECV: on_recv(w, p, cqe); break;
	case OP_SEND: on_send(w, p, cqe->res); break;
	case OP_POLL: on_poll(p, cqe->res); break;
	case OP_KRECV: on_krecv(w, p, cqe->res); break;
	case OP_TICK: on_tick(w); break;
	case OP_NOTIFY: on_notify(w); break;
	case OP_FILE_READ: {
		struct conn *c = p;
		c->flags &= ~CF_READ;
		bool closing = c->flags & CF_CLOSING;
		pop3_conn_read_done(c, cqe->res); /* closing: only releases the file */
		if (closing)
			closing_step(c);
		break;
	}
	case OP_SPOOL_OPEN:
	case OP_SPOOL_WRITE:
	case OP_SPOOL_SYNC:
	case OP_SPOOL_RENAME:
	case OP_DIRSYNC:
	case OP_SPOOL_DONE: spool_cqe(w, op_of(ud), p, cqe->res); break;
	}
}

int worker_init(struct worker *w, struct server *srv, unsigned id)
{
	w->srv = srv;
	w->id = id;
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0)
		return -errno;
	pthread_mutex_init(&w->done_lock, NULL);
	w->mdcommit = calloc(srv->cfg->ndomains, sizeof *w->mdcommit);
	if (!w->mdcommit)
		return -ENOMEM;
	for (unsigned i = 0; i < srv->cfg->ndomains; i++) {
		w->mdcommit[i].w = w;
		w->mdcommit[i].dom = (int)i;
	}
	return 0;
}

/* Runs in the worker thread: SINGLE_ISSUER wants the ring created by the
 * thread that submits. */
static int ring_setup(struct worker *w)
{
	struct io_uring_params p = {0};
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = RING_ENTRIES * 4;
	int rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
	if (rc == -EINVAL) {
		/* Kernels before 6.1 lack DEFER_TASKRUN. */
		memset(&p, 0, sizeof p);
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = RING_ENTRIES * 4;
		rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
	}
	if (rc)
		return rc;
	if (w->srv->cfg->sync == SYNC_NONE) {
		/* Without fsyncs, io-wq's work here is creating and renaming
		 * files in a maildrop's tmp/ and new/, which serialise on the
		 * directory lock: more than two threads per ring only spin on it
		 * (1,000 sessions ran at a quarter of the 50-session rate with
		 * the default of 4 per CPU). With sync = "full" the fsyncs sleep
		 * in the device and want the concurrency: default left alone. */
		unsigned max[2] = {2, 0}; /* bounded (file) workers; unbounded kept */
		(void)io_uring_register_iowq_max_workers(&w->ring, max);
	}
	return bufs_setup(w);
}

extern pthread_barrier_t worker_ready;
extern _Atomic int worker_init_error;

void *worker_run(void *arg)
{
	struct worker *w = arg;
	int rc = ring_setup(w);
	if (rc) {
		log_error("ring_setup_failed", "worker=%u error=\"%s\"", w->id, strerror(-rc));
		atomic_store(&worker_init_error, rc);
	}
	pthread_barrier_wait(&worker_ready);
	if (atomic_load(&worker_init_error))
		return NULL;
	for (unsigned i = 0; i < w->nlisteners; i++)
		accept_arm(&w->listeners[i]);
	tick_arm(w);
	notify_arm(w);
	for (;;) {
		commits_submit(w);
		rearm_waiting(w);
		if (w->stopping && w->nconns == 0 && w->nspools == 0)
			break;
		rc = io_uring_submit_and_wait(&w->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			log_error("ring_failed", "worker=%u error=\"%s\"", w->id, strerror(-rc));
			break;
		}
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			dispatch(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
	}
	for (unsigned i = 0; i < w->nlisteners; i++)
		close(w->listeners[i].fd);
	io_uring_queue_exit(&w->ring);
	return NULL;
}
