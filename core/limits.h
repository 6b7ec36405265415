/*
 * limits: connections per client IP, shared by all workers.
 *
 * Touched twice per connection (accept, close) and never on the data path,
 * so one mutex over a chained hash table is the simple right answer; entries
 * exist only while an IP has connections, so memory follows live clients.
 */
#ifndef MPB_LIMITS_H
#define MPB_LIMITS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct ipcount;
struct ipnode; /* one client address; the handle a connection releases */

struct ipcount *ipcount_new(void);
void ipcount_free(struct ipcount *t);
/* Counts one more connection from ss's address unless it already has
 * `limit` (0 = no limit). Returns the handle to release, or NULL when over
 * the limit or out of memory. */
struct ipnode *ipcount_acquire(struct ipcount *t, const struct sockaddr_storage *ss,
			       uint32_t limit);
/* NULL is ignored. */
void ipcount_release(struct ipcount *t, struct ipnode *n);
/* The address as text (IPv4-mapped IPv6 shown as IPv4). */
void ipcount_format(const struct sockaddr_storage *ss, char *buf, size_t cap);

#endif
