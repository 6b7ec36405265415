#include "proto/obuf.h"

#include <stdio.h>

void obuf_printf(struct obuf *b, const char *fmt, ...)
{
	size_t room = obuf_room(b);
	if (room == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->p + b->len, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	/* vsnprintf writes a NUL in the last byte when it truncates. */
	b->len += (size_t)n < room ? (size_t)n : room - 1;
}
