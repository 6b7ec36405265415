/*
 * obuf: a bounded output buffer the machines append replies to.
 *
 * The core owns the storage and its capacity; a machine never grows it.
 * Before producing a reply a machine checks obuf_room() and, if the reply
 * might not fit, stops consuming input so the core can flush and feed again.
 * That is the back-pressure that keeps per-connection memory bounded no
 * matter how much a client pipelines.
 */
#ifndef MPB_OBUF_H
#define MPB_OBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

struct obuf {
	char *p;
	size_t len;
	size_t cap;
};

static inline size_t obuf_room(const struct obuf *b) { return b->cap - b->len; }

/* Appends n bytes; the caller has checked the room. Truncates rather than
 * overflow if it has not (an invariant breach, but never a memory error). */
static inline void obuf_put(struct obuf *b, const void *p, size_t n)
{
	if (n > obuf_room(b))
		n = obuf_room(b);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static inline void obuf_puts(struct obuf *b, const char *s) { obuf_put(b, s, strlen(s)); }

/* printf-style append, truncated to the room left. */
void obuf_printf(struct obuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
