#include "core/pool.h"

#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/server.h"
#include "proto/sasl.h"

/* Two queues: password checks (yescrypt: tens of milliseconds each, and
 * anyone can ask for them) and everything else (storage: commits,
 * deletions, scans). Checks never hold more than all threads but
 * RESERVED, so a flood of AUTH attempts cannot stall deliveries behind it. */
#define RESERVED 2

struct queue {
	struct pool_job *head, *tail;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct queue fast, slow;
	unsigned slow_running;
	bool stop;
	unsigned n;
	pthread_t *threads;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static bool is_slow(const struct pool_job *j) { return j->fn == pool_auth_check; }

static void push(struct queue *q, struct pool_job *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static struct pool_job *pop(struct queue *q)
{
	struct pool_job *j = q->head;
	if (j) {
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
	}
	return j;
}

/* Under the lock: the next job this thread may run, or NULL. */
static struct pool_job *take(void)
{
	struct pool_job *j = pop(&pool.fast);
	if (!j && pool.slow_running + RESERVED < pool.n && (j = pop(&pool.slow)))
		pool.slow_running++;
	return j;
}

static void *pool_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&pool.lock);
		struct pool_job *j;
		while (!(j = take()) && !pool.stop)
			pthread_cond_wait(&pool.cond, &pool.lock);
		pthread_mutex_unlock(&pool.lock);
		if (!j)
			return NULL;

		bool slow = is_slow(j);
		j->result = j->fn(j);
		if (slow) {
			pthread_mutex_lock(&pool.lock);
			pool.slow_running--;
			if (pool.slow.head)
				pthread_cond_signal(&pool.cond);
			pthread_mutex_unlock(&pool.lock);
		}

		struct worker *w = j->w;
		pthread_mutex_lock(&w->done_lock);
		j->next = w->done;
		w->done = j;
		pthread_mutex_unlock(&w->done_lock);
		worker_wake(w);
	}
}

int pool_start(unsigned nthreads)
{
	pool.threads = calloc(nthreads, sizeof *pool.threads);
	if (!pool.threads)
		return -1;
	for (unsigned i = 0; i < nthreads; i++) {
		if (pthread_create(&pool.threads[i], NULL, pool_main, NULL) != 0)
			return -1;
		pthread_setname_np(pool.threads[i], "mpb-pool");
		pool.n++;
	}
	return 0;
}

void pool_stop(void)
{
	pthread_mutex_lock(&pool.lock);
	pool.stop = true;
	pthread_cond_broadcast(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
	for (unsigned i = 0; i < pool.n; i++)
		pthread_join(pool.threads[i], NULL);
	free(pool.threads);
	pool.threads = NULL;
	pool.n = 0;
}

void pool_submit(struct pool_job *j)
{
	pthread_mutex_lock(&pool.lock);
	push(is_slow(j) ? &pool.slow : &pool.fast, j);
	pthread_cond_signal(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
}

int pool_call(struct worker *w, int (*fn)(struct pool_job *j), void (*done)(struct pool_job *j),
	      void *arg)
{
	struct pool_job *j = calloc(1, sizeof *j);
	if (!j)
		return -1;
	j->w = w;
	j->fn = fn;
	j->done = done;
	j->arg = arg;
	pool_submit(j);
	return 0;
}

void pool_job_free(struct pool_job *j)
{
	if (!j)
		return;
	explicit_bzero(j->pw, sizeof j->pw);
	free(j);
}

/* A real yescrypt hash that no password matches, so an unknown user costs
 * the same as a known one. */
static const char dummy_hash[] = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$6foLM1JhGupouWKMU70wxK61Kw9ZnecbACjJwRadqM2";

int pool_auth_check(struct pool_job *j)
{
	const char *stored = j->stored;
	int rc = -1;
	if (!stored || stored[0] == '$') {
		struct crypt_data *cd = calloc(1, sizeof *cd);
		if (!cd)
			return -1;
		const char *setting = stored ? stored : dummy_hash;
		/* pw is not NUL-terminated by the machines: it may hold any
		 * byte but NUL (SASL PLAIN forbids NUL in it). */
		j->pw[j->pwlen < sizeof j->pw ? j->pwlen : sizeof j->pw - 1] = '\0';
		const char *h = crypt_rn(j->pw, setting, cd, sizeof *cd);
		if (h && h[0] != '*' && stored)
			rc = sasl_consttime_eq(h, strlen(h), stored, strlen(stored)) ? 0 : -1;
		explicit_bzero(cd, sizeof *cd);
		free(cd);
	} else {
		rc = sasl_consttime_eq(j->pw, j->pwlen, stored, strlen(stored)) ? 0 : -1;
	}
	explicit_bzero(j->pw, sizeof j->pw);
	return rc;
}

int pool_hash_password(const char *pw, char *out, size_t cap)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	if (!crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof salt))
		return -1;
	struct crypt_data *cd = calloc(1, sizeof *cd);
	if (!cd)
		return -1;
	const char *h = crypt_rn(pw, salt, cd, sizeof *cd);
	int rc = -1;
	if (h && h[0] != '*' && strlen(h) < cap) {
		strcpy(out, h);
		rc = 0;
	}
	explicit_bzero(cd, sizeof *cd);
	free(cd);
	return rc;
}
