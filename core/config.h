/*
 * config: mailpopbox.toml (SPEC section 3) loaded into plain structs.
 *
 * config_load() parses with core/toml.c, checks every key and value, and
 * reports each problem as "FILE:LINE: message" on the given stream. It reads
 * no certificate or maildrop: those are checked at startup (exit 2), so that
 * `--check` works on a machine other than the server.
 */
#ifndef MPB_CONFIG_H
#define MPB_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

enum svc_kind {
	SVC_SMTP,        /* inbound MX; relaying too once authenticated */
	SVC_SUBMISSION,  /* RFC 6409, STARTTLS; AUTH before MAIL */
	SVC_SUBMISSIONS, /* RFC 8314 implicit TLS */
	SVC_POP3,        /* RFC 1939 with STLS */
	SVC_POP3S,       /* implicit TLS */
	SVC_COUNT
};

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum sync_mode { SYNC_FULL, SYNC_NONE };
enum relay_tls { RELAY_TLS_OPPORTUNISTIC, RELAY_TLS_REQUIRED, RELAY_TLS_NONE };

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[64]; /* as written in the config */
};

struct service_config {
	bool enabled; /* table present and listen non-empty */
	struct listen_addr *listen;
	unsigned nlisten;
	uint64_t max_message_size;      /* smtp-like services */
	uint32_t max_recipients;        /* smtp-like services */
	uint32_t max_connections;       /* per service, all workers together */
	uint32_t max_connections_per_ip;
	uint32_t timeout_s;             /* idle timeout */
	bool allow_plaintext_auth;      /* pop3 only */
};

struct domain_config {
	char *name;          /* lower-cased */
	char *password;      /* crypt(3) hash or plaintext */
	bool password_hashed;/* password starts with '$' */
	char *maildrop;
	char *tls_cert;      /* NULL when absent */
	char *tls_key;
	char **blocked;      /* lower-cased full addresses */
	unsigned nblocked;
	int line;            /* config line of the [[domain]] header */
};

struct relay_config {
	char *queue;         /* NULL when absent */
	char **nameservers;  /* "IP:PORT" strings */
	unsigned nnameservers;
	uint16_t port;
	char *smarthost;     /* NULL when empty */
	uint32_t *retry_s;
	unsigned nretry;
	uint32_t max_queue_time_s;
	enum relay_tls tls;
};

struct config {
	char *path;
	char *hostname;
	unsigned workers; /* 0 = one per online CPU (resolved by the caller) */
	enum log_level log_level;
	char *user;       /* NULL when empty */
	struct service_config svc[SVC_COUNT];
	bool ktls;
	enum sync_mode sync;
	struct relay_config relay;
	struct domain_config *domains;
	unsigned ndomains;
};

/* Loads and validates PATH. Returns 0, or the number of errors found (each
 * printed to ERR as "PATH:LINE: message"); on error *cfg is freed. */
int config_load(const char *path, struct config *cfg, FILE *err);
void config_free(struct config *cfg);

/* Parses "30s", "5m", "2h", "5d" into seconds; -1 when malformed. */
int64_t config_parse_duration(const char *s);
/* Parses "IP:PORT" or "[IPv6]:PORT"; 0 or -1. */
int config_parse_addr(const char *s, struct listen_addr *out);

/* Index of the domain NAME (case-insensitive, length n), or -1. */
int config_find_domain(const struct config *cfg, const char *name, size_t n);

extern const char *const svc_names[SVC_COUNT]; /* "smtp", "submission", ... */

#endif
