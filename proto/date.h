/*
 * date: the RFC 5322 3.3 date-time ("Sun, 29 Nov 2026 22:10:01 +0000") of a
 * moment given as seconds since the epoch and a local offset, computed
 * without reading any time zone state (days-to-civil, after Howard
 * Hinnant), so that the machines stay pure. Shared by Received, Date and
 * the DSN fields.
 */
#ifndef MPB_DATE_H
#define MPB_DATE_H

#include <stddef.h>
#include <stdint.h>

/* Enough for any year a 64-bit time gives. */
#define RFC5322_DATE_MAX 64

/* Writes the date into buf (NUL-terminated) and returns its length. An
 * offset outside +-23:59 is taken as +0000. */
size_t rfc5322_date(char buf[RFC5322_DATE_MAX], int64_t now, int tz_off_min);

#endif
