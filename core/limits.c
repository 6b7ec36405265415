#include "core/limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define IP_BUCKETS 4096

struct ipnode {
	struct ipnode *next;
	uint8_t addr[16];
	uint32_t count;
};

struct ipcount {
	pthread_mutex_t lock;
	struct ipnode *b[IP_BUCKETS];
};

struct ipcount *ipcount_new(void)
{
	struct ipcount *t = calloc(1, sizeof *t);
	if (t)
		pthread_mutex_init(&t->lock, NULL);
	return t;
}

void ipcount_free(struct ipcount *t)
{
	if (!t)
		return;
	for (int i = 0; i < IP_BUCKETS; i++)
		for (struct ipnode *n = t->b[i], *x; n; n = x) {
			x = n->next;
			free(n);
		}
	free(t);
}

/* IPv4 as v4-mapped IPv6, so both families share one key space. */
static void key_of(const struct sockaddr_storage *ss, uint8_t k[16])
{
	if (ss->ss_family == AF_INET6) {
		memcpy(k, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
		return;
	}
	memset(k, 0, 10);
	k[10] = k[11] = 0xff;
	memcpy(k + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
}

static uint32_t hash16(const uint8_t k[16])
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < 16; i++)
		h = (h ^ k[i]) * 16777619u;
	return h;
}

struct ipnode *ipcount_acquire(struct ipcount *t, const struct sockaddr_storage *ss,
			       uint32_t limit)
{
	uint8_t k[16];
	key_of(ss, k);
	struct ipnode **head = &t->b[hash16(k) % IP_BUCKETS];
	pthread_mutex_lock(&t->lock);
	struct ipnode *n = *head;
	while (n && memcmp(n->addr, k, 16) != 0)
		n = n->next;
	if (!n && (n = calloc(1, sizeof *n)) != NULL) {
		memcpy(n->addr, k, 16);
		n->next = *head;
		*head = n;
	}
	if (n && limit && n->count >= limit)
		n = NULL;
	if (n)
		n->count++;
	pthread_mutex_unlock(&t->lock);
	return n;
}

void ipcount_release(struct ipcount *t, struct ipnode *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&t->lock);
	if (--n->count == 0) {
		struct ipnode **pp = &t->b[hash16(n->addr) % IP_BUCKETS];
		while (*pp != n)
			pp = &(*pp)->next;
		*pp = n->next;
		free(n);
	}
	pthread_mutex_unlock(&t->lock);
}

void ipcount_format(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], buf, (socklen_t)cap);
		else
			inet_ntop(AF_INET6, a, buf, (socklen_t)cap);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)cap);
	}
}
