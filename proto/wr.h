/*
 * wr: a bounded writer that counts, for texts built in one pass (DSNs, the
 * send-as header block, trace headers).
 *
 * Output goes to p[0..cap) while it fits. Once something does not fit,
 * nothing more is written (over), but len goes on counting what the whole
 * text needs, so that a caller can size a buffer and build it again. col
 * is the number of octets since the last LF, for folding.
 */
#ifndef MPB_WR_H
#define MPB_WR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/date.h"

struct wr {
	char *p;
	size_t cap, len;
	bool over; /* something did not fit: nothing more is written */
	size_t col;
};

static inline void wr_put(struct wr *w, const void *s, size_t n)
{
	if (!w->over && n <= w->cap && w->len <= w->cap - n)
		memcpy(w->p + w->len, s, n);
	else
		w->over = true;
	w->len += n;
	const char *lf = n ? memrchr(s, '\n', n) : NULL;
	w->col = lf ? n - (size_t)(lf - (const char *)s) - 1 : w->col + n;
}

static inline void wr_puts(struct wr *w, const char *s)
{
	wr_put(w, s, strlen(s));
}

/* An RFC 5322 date (proto/date.h). */
static inline void wr_date(struct wr *w, int64_t now, int tz_off_min)
{
	char buf[RFC5322_DATE_MAX];
	wr_put(w, buf, rfc5322_date(buf, now, tz_off_min));
}

#endif
