/*
 * log: one line per event on stderr, key=value fields (SPEC 8):
 *   time=2026-11-24T11:28:27.123Z level=info event=delivered conn=17 ...
 * Each line is formatted into a stack buffer and written with one write(2),
 * so lines from several workers never interleave. Values that may contain
 * spaces or quotes are quoted by log_q(). Passwords and AUTH payloads are
 * never passed here.
 */
#ifndef MPB_LOG_H
#define MPB_LOG_H

#include "core/config.h"

extern enum log_level log_min_level;

void log_line(enum log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) do { if (log_min_level <= LOG_DEBUG) log_line(LOG_DEBUG, ev, __VA_ARGS__); } while (0)
#define log_info(ev, ...)  log_line(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_line(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_line(LOG_ERROR, ev, __VA_ARGS__)

/* Quotes s for a log value into buf when it holds spaces, quotes, '=' or
 * control characters (those become '?'); returns buf or s. */
const char *log_q(char *buf, size_t cap, const char *s);

#endif
