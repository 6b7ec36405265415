/*
 * tls: the TLS transport under the machines (DESIGN "TLS").
 *
 * Certificates: every domain with tls_cert/tls_key gets an SSL_CTX; the set
 * is immutable and reference counted. A session takes a reference when its
 * handshake starts and keeps that set for its life, so SIGHUP swaps the
 * current set without disturbing anyone. SNI picks the context whose
 * certificate names match; the first domain with a certificate is the
 * default.
 *
 * A connection's handshake runs in OpenSSL over a socket BIO on the real fd
 * (kTLS needs that), driven by ring polls: SSL_do_handshake says WANT_READ
 * or WANT_WRITE, we poll, we call it again. Afterwards each direction the
 * kernel took (BIO_get_ktls_send/recv) carries plaintext straight through
 * io_uring on the fd; a direction it did not take moves to a memory BIO and
 * goes through SSL_read/SSL_write in user space. With Debian's OpenSSL 3.0
 * the kernel can take both directions of TLS 1.2 and only the sending side
 * of TLS 1.3.
 */
#ifndef MPB_TLS_H
#define MPB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

struct server;
struct conn;
struct tls_set;

struct tls_conn {
	void *ssl;              /* SSL * */
	struct tls_set *set;
	void *rmem, *wmem;      /* BIO * (user-space directions), or NULL */
	bool ktls_tx, ktls_rx;
	bool established;
	bool close_sent;
	char *cbuf;             /* ciphertext being sent (user-space TX) */
	size_t clen, ccap;
	/* kTLS RX: one recvmsg at a time, with room for the record type */
	struct msghdr msg;
	struct iovec iov;
	int32_t kbid;
	char cmsg[CMSG_SPACE(sizeof(unsigned char))];
};

/* Startup: loads every certificate (as root, before privileges drop).
 * 0, or -1 with the reason printed to stderr (exit 2). */
int tls_init(struct server *srv);
/* SIGHUP: builds a new set; on any failure keeps the old one and logs why. */
void tls_reload(struct server *srv);
bool tls_have_certs(void);
/* "available", "unavailable" or "off", for the startup log. */
const char *tls_ktls_state(void);

/* Counters for the stats line: sessions per path. */
struct tls_stats {
	uint64_t handshakes, failures, ktls_tx, ktls_rx, user_tx, user_rx;
};
void tls_stats_get(struct tls_stats *out);

/* Per connection (worker thread only). */
int tls_conn_new(struct conn *c);        /* before the first handshake step */
void tls_conn_free(struct conn *c);
/* Runs the handshake as far as it goes: 1 done, 0 polling (an OP_POLL is
 * queued), -1 failed. */
int tls_handshake(struct conn *c);
/* User-space RX: ciphertext in, plaintext chunks appended to c->in.
 * n = 0 resumes decrypting what is buffered. -1: the session is over (close
 * alert or error); c gets CF_EOF. */
int tls_rx(struct conn *c, const char *p, size_t n);
/* Ciphertext or plaintext waiting inside the session (resume decrypt). */
bool tls_rx_pending(const struct conn *c);
size_t tls_rx_backlog(const struct conn *c);
/* User-space TX: encrypts c->out into the cipher buffer when that is empty.
 * Returns the bytes ready to send (pointer in *p), 0 when none. */
size_t tls_tx_prepare(struct conn *c, const char **p);
void tls_tx_sent(struct conn *c, size_t n);
bool tls_tx_pending(const struct conn *c); /* ciphertext not yet sent */
/* Queues close_notify (best effort) before the socket is shut. */
void tls_close_notify(struct conn *c);

#endif
