/*
 * relay: the runner of the outbound queue (SPEC 5): it takes entries from
 * store/queue, resolves each recipient domain (c-ares: MX, then A/AAAA),
 * drives proto/smtpc over a socket to the MX hosts in preference order
 * (STARTTLS per relay.tls), records per-recipient results in the entry, and
 * writes delivery status notifications (proto/dsn) into the sender's
 * maildrop.
 *
 * It runs on threads of its own, never on a ring thread: one scheduler and
 * RELAY_THREADS delivery threads. Blocking I/O with timeouts is fine there;
 * every wait also watches a stop eventfd, so relay_stop() never waits for a
 * remote server.
 *
 *   relay_start()  after the signal mask is set and BEFORE the workers run:
 *                  queue_load() (which removes crash leftovers) must not
 *                  race a worker's queue_commit(). 0, or -1 with the cause
 *                  on stderr (exit 2).
 *   relay_enqueued(e)  the entry *e was just committed: the relay takes
 *                  what it owns (*e is left empty) and hands it to a parked
 *                  delivery thread, with no directory scan, no re-read of
 *                  its file and no scheduler in between. Any thread, any time (before start and after stop
 *                  it does nothing useful and no harm); takes a mutex that
 *                  is only ever held for list operations, never across I/O.
 *   relay_kick()   rescan the whole directory soon (same rules). The
 *                  scheduler also rescans every RELAY_RESCAN_S seconds, so
 *                  an entry that no call announced is not forgotten.
 *   relay_stop()   wakes and joins every thread. An attempt in progress is
 *                  abandoned without touching the entry: it is retried after
 *                  the next start (the state file changes only after results).
 */
#ifndef MPB_RELAY_H
#define MPB_RELAY_H

struct server;
struct queue_entry;

#define RELAY_THREADS 8
#define RELAY_RESCAN_S 60

int relay_start(struct server *srv);
void relay_enqueued(struct queue_entry *e);
void relay_kick(void);
void relay_stop(void);

#endif
