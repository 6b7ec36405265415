/*
 * Latency histograms: log-linear buckets (HdrHistogram's idea without its
 * configuration). A value v >= 16 lands in the bucket of its top set bit
 * and the next four bits, so a bucket's width is at most 1/16 of its lower
 * bound: percentiles are good to ~6%, at 8 KiB per histogram.
 */
#include "bench/bench.h"

static int bucket_of(uint64_t v)
{
	if (v < HIST_SUB) return (int)v;
	int msb = 63 - __builtin_clzll(v);
	int sub = (int)((v >> (msb - 4)) & (HIST_SUB - 1));
	return (msb - 3) * HIST_SUB + sub;
}

/* The upper bound of a bucket (the value we report for a percentile). */
static uint64_t bucket_top(int b)
{
	if (b < HIST_SUB) return (uint64_t)b;
	int msb = b / HIST_SUB + 3;
	uint64_t sub = (uint64_t)(b % HIST_SUB);
	return ((HIST_SUB + sub + 1) << (msb - 4)) - 1;
}

void hist_add(struct hist *h, uint64_t ns)
{
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns) h->max_ns = ns;
	h->b[bucket_of(ns)]++;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	if (src->max_ns > dst->max_ns) dst->max_ns = src->max_ns;
	for (int i = 0; i < HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
}

uint64_t hist_pct(const struct hist *h, double pct)
{
	if (!h->count) return 0;
	uint64_t want = (uint64_t)((double)h->count * pct / 100.0 + 0.999999);
	if (want < 1) want = 1;
	uint64_t seen = 0;
	for (int i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			uint64_t top = bucket_top(i);
			return top < h->max_ns ? top : h->max_ns;
		}
	}
	return h->max_ns;
}
