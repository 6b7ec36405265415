#include "core/tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/server.h"

struct tls_entry {
	SSL_CTX *ctx;
	char **names; /* DNS names of the certificate (SAN, else CN) */
	unsigned nnames;
	const char *domain;
};

struct tls_set {
	_Atomic int refs;
	unsigned n;
	struct tls_entry e[];
};

static pthread_mutex_t set_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_set *current;
static bool ktls_wanted, ktls_kernel;
static struct {
	_Atomic uint64_t handshakes, failures, ktls_tx, ktls_rx, user_tx, user_rx;
} stats;

/* ---- certificate sets --------------------------------------------------- */

static void entry_free(struct tls_entry *e)
{
	SSL_CTX_free(e->ctx);
	for (unsigned i = 0; i < e->nnames; i++)
		free(e->names[i]);
	free(e->names);
}

static void set_put(struct tls_set *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
		for (unsigned i = 0; i < s->n; i++)
			entry_free(&s->e[i]);
		free(s);
	}
}

static struct tls_set *set_get(void)
{
	pthread_mutex_lock(&set_lock);
	struct tls_set *s = current;
	if (s)
		atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&set_lock);
	return s;
}

static bool name_matches(const char *pattern, const char *host)
{
	if (strcasecmp(pattern, host) == 0)
		return true;
	/* RFC 6125 6.4.3: "*." matches exactly one left-most label. */
	if (pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = strchr(host, '.');
		return dot && dot != host && strcasecmp(pattern + 1, dot) == 0;
	}
	return false;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
	(void)alert;
	struct tls_set *s = arg;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!host)
		return SSL_TLSEXT_ERR_OK; /* the default certificate */
	for (unsigned i = 0; i < s->n; i++) {
		struct tls_entry *e = &s->e[i];
		bool hit = strcasecmp(e->domain, host) == 0;
		for (unsigned k = 0; !hit && k < e->nnames; k++)
			hit = name_matches(e->names[k], host);
		if (hit) {
			if (SSL_get_SSL_CTX(ssl) != e->ctx)
				SSL_set_SSL_CTX(ssl, e->ctx);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_OK;
}

static int cert_names(X509 *x, struct tls_entry *e)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int n = sans ? sk_GENERAL_NAME_num(sans) : 0;
	e->names = calloc((size_t)n + 1, sizeof *e->names);
	if (!e->names) {
		GENERAL_NAMES_free(sans);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
		e->names[e->nnames++] = strndup((const char *)d, (size_t)ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(sans);
	if (e->nnames == 0) {
		char cn[256];
		if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0)
			e->names[e->nnames++] = strdup(cn);
	}
	return 0;
}

static void ssl_errors(char *buf, size_t cap)
{
	unsigned long e = ERR_get_error();
	if (!e) {
		snprintf(buf, cap, "%s", "unknown error");
		return;
	}
	ERR_error_string_n(e, buf, cap);
	ERR_clear_error();
}

static SSL_CTX *ctx_new(const struct domain_config *d, char *err, size_t errcap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		ssl_errors(err, errcap);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	/* Forward secrecy and AEAD only for 1.2; 1.3's defaults are good. */
	SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM");
	uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
			SSL_OP_NO_COMPRESSION;
	if (ktls_wanted)
		opts |= SSL_OP_ENABLE_KTLS;
	SSL_CTX_set_options(ctx, opts);
	/* Idle sessions give their record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	static const unsigned char sid[] = "mailpopbox";
	SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
	if (SSL_CTX_use_certificate_chain_file(ctx, d->tls_cert) != 1) {
		char e[200];
		ssl_errors(e, sizeof e);
		snprintf(err, errcap, "certificate %s: %s", d->tls_cert, e);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, d->tls_key, SSL_FILETYPE_PEM) != 1) {
		char e[200];
		ssl_errors(e, sizeof e);
		snprintf(err, errcap, "key %s: %s", d->tls_key, e);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errcap, "key %s does not match certificate %s", d->tls_key, d->tls_cert);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static struct tls_set *set_load(const struct config *cfg, char *err, size_t errcap)
{
	unsigned n = 0;
	for (unsigned i = 0; i < cfg->ndomains; i++)
		n += cfg->domains[i].tls_cert != NULL;
	struct tls_set *s = calloc(1, sizeof *s + n * sizeof(struct tls_entry));
	if (!s) {
		snprintf(err, errcap, "out of memory");
		return NULL;
	}
	atomic_store(&s->refs, 1);
	for (unsigned i = 0; i < cfg->ndomains; i++) {
		const struct domain_config *d = &cfg->domains[i];
		if (!d->tls_cert)
			continue;
		struct tls_entry *e = &s->e[s->n];
		e->domain = d->name;
		if (!(e->ctx = ctx_new(d, err, errcap)) || cert_names(SSL_CTX_get0_certificate(e->ctx), e)) {
			set_put(s);
			return NULL;
		}
		s->n++;
	}
	for (unsigned i = 0; i < s->n; i++)
		SSL_CTX_set_tlsext_servername_callback(s->e[i].ctx, sni_cb),
			SSL_CTX_set_tlsext_servername_arg(s->e[i].ctx, s);
	return s;
}

/* The tls ULP either attaches to an established TCP socket or it does not:
 * try it on a loopback pair (this also loads the module on demand, as the
 * first real session would). */
static bool probe_ktls(void)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, a = -1;
	bool ok = false;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sin;
	if (l < 0 || bind(l, (struct sockaddr *)&sin, sizeof sin) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&sin, &sl))
		goto out;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&sin, sizeof sin))
		goto out;
	a = accept(l, NULL, NULL);
	ok = a >= 0 && setsockopt(a, SOL_TCP, TCP_ULP, "tls", sizeof "tls") == 0;
out:
	if (a >= 0) close(a);
	if (c >= 0) close(c);
	if (l >= 0) close(l);
	return ok;
}

int tls_init(struct server *srv)
{
	ktls_wanted = srv->cfg->ktls;
	ktls_kernel = ktls_wanted && probe_ktls();
	char err[512];
	struct tls_set *s = set_load(srv->cfg, err, sizeof err);
	if (!s) {
		fprintf(stderr, "mailpopbox: TLS: %s\n", err);
		return -1;
	}
	current = s;
	return 0;
}

void tls_reload(struct server *srv)
{
	char err[512];
	struct tls_set *s = set_load(srv->cfg, err, sizeof err);
	if (!s) {
		char q[600];
		log_error("tls_reload_failed", "reason=%s keeping=previous", log_q(q, sizeof q, err));
		return;
	}
	pthread_mutex_lock(&set_lock);
	struct tls_set *old = current;
	current = s;
	pthread_mutex_unlock(&set_lock);
	set_put(old);
	log_info("tls_reloaded", "certificates=%u", s->n);
}

bool tls_have_certs(void) { return current && current->n > 0; }

const char *tls_ktls_state(void)
{
	return !ktls_wanted ? "off" : ktls_kernel ? "available" : "unavailable";
}

void tls_stats_get(struct tls_stats *o)
{
	o->handshakes = atomic_load(&stats.handshakes);
	o->failures = atomic_load(&stats.failures);
	o->ktls_tx = atomic_load(&stats.ktls_tx);
	o->ktls_rx = atomic_load(&stats.ktls_rx);
	o->user_tx = atomic_load(&stats.user_tx);
	o->user_rx = atomic_load(&stats.user_rx);
}

/* ---- sessions ----------------------------------------------------------- */

int tls_conn_new(struct conn *c)
{
	struct tls_conn *t = calloc(1, sizeof *t);
	if (!t)
		return -1;
	t->set = set_get();
	if (!t->set || t->set->n == 0) {
		set_put(t->set);
		free(t);
		return -1;
	}
	SSL *ssl = SSL_new(t->set->e[0].ctx);
	if (!ssl || SSL_set_fd(ssl, c->fd) != 1) {
		SSL_free(ssl);
		set_put(t->set);
		free(t);
		return -1;
	}
	SSL_set_accept_state(ssl);
	t->ssl = ssl;
	c->tls = t;
	return 0;
}

void tls_conn_free(struct conn *c)
{
	struct tls_conn *t = c->tls;
	if (!t)
		return;
	SSL_free(t->ssl); /* frees the BIOs it holds */
	set_put(t->set);
	free(t->cbuf);
	free(t);
	c->tls = NULL;
}

static void poll_for(struct conn *c, unsigned events)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_poll_add(sqe, c->fd, events);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_POLL));
	c->flags |= CF_POLL;
}

/* After the handshake: whichever direction the kernel did not take moves to
 * a memory BIO, so that its records go through the ring like everything
 * else. Nothing is buffered in the socket BIO at this point: read-ahead is
 * off, so OpenSSL has read exactly the handshake's records. */
static int transport_setup(struct conn *c)
{
	struct tls_conn *t = c->tls;
	SSL *ssl = t->ssl;
	t->ktls_tx = BIO_get_ktls_send(SSL_get_wbio(ssl)) > 0;
	t->ktls_rx = BIO_get_ktls_recv(SSL_get_rbio(ssl)) > 0;
	if (!t->ktls_rx) {
		BIO *m = BIO_new(BIO_s_mem());
		if (!m)
			return -1;
		BIO_set_mem_eof_return(m, -1);
		SSL_set0_rbio(ssl, m);
		t->rmem = m;
	}
	if (!t->ktls_tx) {
		BIO *m = BIO_new(BIO_s_mem());
		if (!m)
			return -1;
		SSL_set0_wbio(ssl, m);
		t->wmem = m;
	}
	t->established = true;
	atomic_fetch_add(&stats.handshakes, 1);
	atomic_fetch_add(t->ktls_tx ? &stats.ktls_tx : &stats.user_tx, 1);
	atomic_fetch_add(t->ktls_rx ? &stats.ktls_rx : &stats.user_rx, 1);
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	char q[300];
	log_info("tls_established", "conn=%u version=%s cipher=%s sni=%s ktls_tx=%d ktls_rx=%d",
		 c->id, SSL_get_version(ssl), SSL_get_cipher_name(ssl),
		 log_q(q, sizeof q, sni ? sni : ""), t->ktls_tx, t->ktls_rx);
	return 0;
}

int tls_handshake(struct conn *c)
{
	struct tls_conn *t = c->tls;
	ERR_clear_error();
	int r = SSL_do_handshake(t->ssl);
	if (r == 1)
		return transport_setup(c) == 0 ? 1 : -1;
	switch (SSL_get_error(t->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		poll_for(c, POLLIN);
		return 0;
	case SSL_ERROR_WANT_WRITE:
		poll_for(c, POLLOUT);
		return 0;
	default: {
		char e[200];
		ssl_errors(e, sizeof e);
		char q[260];
		log_info("tls_failed", "conn=%u reason=%s", c->id, log_q(q, sizeof q, e));
		atomic_fetch_add(&stats.failures, 1);
		return -1;
	}
	}
}

int tls_rx(struct conn *c, const char *p, size_t n)
{
	struct tls_conn *t = c->tls;
	if (n && BIO_write(t->rmem, p, (int)n) != (int)n)
		return -1;
	for (;;) {
		if (c->nin >= CONN_IN_HIGH)
			return 0; /* the rest waits in the BIO: back-pressure */
		int32_t bid = pbuf_get(c->w);
		if (bid < 0) {
			/* Resumed by the worker once plaintext buffers return. */
			if (!(c->flags & CF_RECV_WANTED)) {
				c->flags |= CF_RECV_WANTED;
				c->w->nwant++;
			}
			return 0;
		}
		char *buf = buf_addr(c->w, bid);
		ERR_clear_error();
		int r = SSL_read(t->ssl, buf, RBUF_SIZE);
		if (r > 0) {
			if (!conn_push_input(c, buf, (uint32_t)r, bid))
				return -1;
			continue;
		}
		buf_release(c->w, bid);
		int e = SSL_get_error(t->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			return 0;
		if (e != SSL_ERROR_ZERO_RETURN) {
			char m[200], q[260];
			ssl_errors(m, sizeof m);
			log_info("tls_error", "conn=%u reason=%s", c->id, log_q(q, sizeof q, m));
		}
		return -1; /* close_notify or a broken record */
	}
}

bool tls_rx_pending(const struct conn *c)
{
	const struct tls_conn *t = c->tls;
	return t && t->rmem && (BIO_ctrl_pending(t->rmem) > 0 || SSL_pending(t->ssl) > 0);
}

size_t tls_rx_backlog(const struct conn *c)
{
	const struct tls_conn *t = c->tls;
	return t && t->rmem ? BIO_ctrl_pending(t->rmem) : 0;
}

size_t tls_tx_prepare(struct conn *c, const char **p)
{
	struct tls_conn *t = c->tls;
	if (t->clen == 0 && c->out.len) {
		ERR_clear_error();
		int r = SSL_write(t->ssl, c->out.p, (int)c->out.len);
		if (r > 0) {
			/* A memory BIO takes everything: the plaintext is
			 * consumed, its ciphertext waits in wmem. */
			memmove(c->out.p, c->out.p + r, c->out.len - (size_t)r);
			c->out.len -= (size_t)r;
		}
	}
	size_t pend = BIO_ctrl_pending(t->wmem);
	if (pend && t->clen == 0) {
		if (pend > t->ccap) {
			char *nb = realloc(t->cbuf, pend);
			if (!nb)
				return 0;
			t->cbuf = nb;
			t->ccap = pend;
		}
		int r = BIO_read(t->wmem, t->cbuf, (int)pend);
		t->clen = r > 0 ? (size_t)r : 0;
	}
	*p = t->cbuf;
	return t->clen;
}

void tls_tx_sent(struct conn *c, size_t n)
{
	struct tls_conn *t = c->tls;
	if (n < t->clen)
		memmove(t->cbuf, t->cbuf + n, t->clen - n);
	t->clen -= n;
	if (t->clen == 0 && c->out.len == 0 && !c->retr && t->ccap > 16384) {
		/* Large RETR bursts should not pin their buffer forever. */
		free(t->cbuf);
		t->cbuf = NULL;
		t->ccap = 0;
	}
}

bool tls_tx_pending(const struct conn *c)
{
	const struct tls_conn *t = c->tls;
	return t && (t->clen || (t->wmem && BIO_ctrl_pending(t->wmem)));
}

void tls_close_notify(struct conn *c)
{
	struct tls_conn *t = c->tls;
	if (!t || !t->established || t->close_sent)
		return;
	t->close_sent = true;
	ERR_clear_error();
	SSL_shutdown(t->ssl); /* kTLS TX: the alert goes out on the socket now */
	ERR_clear_error();
}
