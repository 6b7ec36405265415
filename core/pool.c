#include "core/pool.h"

#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/server.h"
#include "proto/sasl.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pool_job *head, *tail;
	bool stop;
	unsigned n;
	pthread_t *threads;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *pool_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&pool.lock);
		while (!pool.head && !pool.stop)
			pthread_cond_wait(&pool.cond, &pool.lock);
		struct pool_job *j = pool.head;
		if (!j) {
			pthread_mutex_unlock(&pool.lock);
			return NULL;
		}
		pool.head = j->next;
		if (!pool.head)
			pool.tail = NULL;
		pthread_mutex_unlock(&pool.lock);

		j->result = j->fn(j);

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
	j->next = NULL;
	pthread_mutex_lock(&pool.lock);
	if (pool.tail)
		pool.tail->next = j;
	else
		pool.head = j;
	pool.tail = j;
	pthread_cond_signal(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
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
