/*
 * The two faces of a result: a table for people and JSON for bench/run.sh
 * (which builds bench/results/latest.md and the chart from it).
 */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"

const char *const metric_names[M_COUNT] = {
    "connect", "tls",  "ehlo", "transaction", "session", "login",
    "stat",    "list", "uidl", "retr",	      "dele",	 "quit",
};

const char *const err_names[E_COUNT] = {"connect", "io", "tls", "protocol", "timeout"};

static const char *mode_name(void)
{
	return opt.mode == MODE_SMTP ? "smtp" : opt.mode == MODE_POP3 ? "pop3" : "idle";
}

static void code_name(int code, char *buf, size_t cap)
{
	bool pop = opt.mode == MODE_POP3 || (opt.mode == MODE_IDLE && opt.idle_proto == MODE_POP3);
	if (pop && code == 1)
		snprintf(buf, cap, "+OK");
	else if (pop && code == 2)
		snprintf(buf, cap, "-ERR");
	else
		snprintf(buf, cap, "%d", code);
}

static void size_spec(char *buf, size_t cap)
{
	size_t off = 0;
	buf[0] = 0;
	for (int i = 0; i < opt.sizes.n && off < cap; i++) {
		int n = snprintf(buf + off, cap - off, "%s%zu", i ? "," : "", opt.sizes.size[i]);
		off += (size_t)n;
		if (opt.sizes.n > 1 && off < cap)
			off += (size_t)snprintf(buf + off, cap - off, ":%u", opt.sizes.weight[i]);
	}
}

static double per_s(const struct result *r, double v)
{
	return r->elapsed_s > 0 ? v / r->elapsed_s : 0;
}

static int64_t per_conn(const struct result *r)
{
	uint64_t n = r->st.established;
	if (!n || !r->have_mem) return 0;
	return ((int64_t)r->mem_after.pss - (int64_t)r->mem_before.pss) / (int64_t)n;
}

void report_table(const struct result *r)
{
	const struct stats *st = &r->st;
	char sizes[256];
	size_spec(sizes, sizeof sizes);
	printf("mailpopbox-bench %s%s%s: %d sessions, %d threads, %s%s%s\n", mode_name(),
	       opt.label ? " " : "", opt.label ? opt.label : "", opt.sessions, opt.threads,
	       opt.tls	      ? "implicit TLS, "
	       : opt.starttls ? "STARTTLS, "
			      : "",
	       opt.pipelining ? "pipelining" : "no pipelining",
	       opt.mode == MODE_SMTP
		   ? (opt.reuse ? ", sessions reused" : ", one message per connection")
		   : "");
	if (opt.mode == MODE_SMTP) printf("size %s, %d recipients per message\n", sizes, opt.rcpts);
	printf("elapsed %.3f s; %lu established, %lu sessions ended with goodbye\n", r->elapsed_s,
	       (unsigned long)st->established, (unsigned long)st->sessions);
	if (opt.mode != MODE_IDLE)
		printf("messages %lu ok, %lu failed: %.1f msgs/s, %.2f MB/s\n",
		       (unsigned long)st->msgs, (unsigned long)st->msgs_failed,
		       per_s(r, (double)st->msgs), per_s(r, (double)st->bytes) / 1e6);
	printf("\n%-12s %9s %9s %9s %9s %9s %9s %9s\n", "latency ms", "count", "p50", "p90", "p99",
	       "p99.9", "max", "mean");
	for (int m = 0; m < M_COUNT; m++) {
		const struct hist *h = &st->h[m];
		if (!h->count) continue;
		printf("%-12s %9lu %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", metric_names[m],
		       (unsigned long)h->count, hist_pct(h, 50) / 1e6, hist_pct(h, 90) / 1e6,
		       hist_pct(h, 99) / 1e6, hist_pct(h, 99.9) / 1e6, h->max_ns / 1e6,
		       (double)h->sum_ns / (double)h->count / 1e6);
	}
	printf("\nreplies:");
	for (int i = 0; i < 1000; i++)
		if (st->codes[i]) {
			char name[16];
			code_name(i, name, sizeof name);
			printf(" %s x%lu", name, (unsigned long)st->codes[i]);
		}
	printf("\nerrors:");
	bool any = false;
	for (int e = 0; e < E_COUNT; e++)
		if (st->errs[e]) {
			printf(" %s x%lu", err_names[e], (unsigned long)st->errs[e]);
			any = true;
		}
	printf("%s\n", any ? "" : " none");
	if (st->last_err[0]) printf("first failure: %s\n", st->last_err);
	if (r->have_verify)
		printf(
		    "verify: %ld files in the maildrop, %ld of %ld tokens found x%d, %ld missing, "
		    "%ld duplicated, %ld foreign (waited %.2f s)\n",
		    r->vr.files, r->vr.tokens_ok, r->expected, opt.verify_copies, r->vr.missing,
		    r->vr.duplicates, r->vr.foreign, r->vr.waited_s);
	if (r->have_mem) {
		printf("memory (%d processes): Pss %.1f MiB before, %.1f MiB after; VmHWM %.1f MiB",
		       r->mem_after.nproc, r->mem_before.pss / 1048576.0,
		       r->mem_after.pss / 1048576.0, r->mem_after.hwm / 1048576.0);
		if (opt.mode == MODE_IDLE) printf("; %ld bytes per connection", (long)per_conn(r));
		printf("\n");
	}
}

static void json_hist(FILE *f, const char *name, const struct hist *h, bool *first)
{
	fprintf(f,
		"%s\n    \"%s\": {\"count\": %lu, \"p50_ms\": %.4f, \"p90_ms\": %.4f, "
		"\"p99_ms\": %.4f, \"p99_9_ms\": %.4f, \"max_ms\": %.4f, \"mean_ms\": %.4f}",
		*first ? "" : ",", name, (unsigned long)h->count, hist_pct(h, 50) / 1e6,
		hist_pct(h, 90) / 1e6, hist_pct(h, 99) / 1e6, hist_pct(h, 99.9) / 1e6,
		h->max_ns / 1e6, h->count ? (double)h->sum_ns / (double)h->count / 1e6 : 0.0);
	*first = false;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

int report_json(const struct result *r, const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
	if (!f) return -1;
	const struct stats *st = &r->st;
	char sizes[256];
	size_spec(sizes, sizeof sizes);
	fprintf(f, "{\n  \"label\": ");
	json_str(f, opt.label ? opt.label : "");
	fprintf(
	    f,
	    ",\n  \"mode\": \"%s\", \"sessions\": %d, \"threads\": %d, \"size\": \"%s\", "
	    "\"rcpts\": %d, \"pipelining\": %s, \"starttls\": %s, \"tls\": %s, \"reuse\": %s,\n",
	    mode_name(), opt.sessions, opt.threads, sizes, opt.rcpts,
	    opt.pipelining ? "true" : "false", opt.starttls ? "true" : "false",
	    opt.tls ? "true" : "false", opt.reuse ? "true" : "false");
	fprintf(
	    f,
	    "  \"elapsed_s\": %.6f, \"established\": %lu, \"sessions_ok\": %lu, \"msgs\": %lu, "
	    "\"msgs_failed\": %lu, \"bytes\": %lu,\n  \"msgs_per_s\": %.3f, \"mb_per_s\": %.4f,\n",
	    r->elapsed_s, (unsigned long)st->established, (unsigned long)st->sessions,
	    (unsigned long)st->msgs, (unsigned long)st->msgs_failed, (unsigned long)st->bytes,
	    per_s(r, (double)st->msgs), per_s(r, (double)st->bytes) / 1e6);
	fprintf(f, "  \"latency\": {");
	bool first = true;
	for (int m = 0; m < M_COUNT; m++)
		if (st->h[m].count) json_hist(f, metric_names[m], &st->h[m], &first);
	fprintf(f, "\n  },\n  \"replies\": {");
	first = true;
	for (int i = 0; i < 1000; i++)
		if (st->codes[i]) {
			char name[16];
			code_name(i, name, sizeof name);
			fprintf(f, "%s\"%s\": %lu", first ? "" : ", ", name,
				(unsigned long)st->codes[i]);
			first = false;
		}
	fprintf(f, "},\n  \"errors\": {");
	first = true;
	for (int e = 0; e < E_COUNT; e++)
		if (st->errs[e]) {
			fprintf(f, "%s\"%s\": %lu", first ? "" : ", ", err_names[e],
				(unsigned long)st->errs[e]);
			first = false;
		}
	fprintf(f, "},\n  \"first_failure\": ");
	json_str(f, st->last_err);
	if (r->have_verify)
		fprintf(
		    f,
		    ",\n  \"verify\": {\"files\": %ld, \"tokens_ok\": %ld, \"expected\": %ld, "
		    "\"missing\": %ld, \"duplicates\": %ld, \"foreign\": %ld, \"waited_s\": %.3f}",
		    r->vr.files, r->vr.tokens_ok, r->expected, r->vr.missing, r->vr.duplicates,
		    r->vr.foreign, r->vr.waited_s);
	if (r->have_mem)
		fprintf(
		    f,
		    ",\n  \"memory\": {\"processes\": %d, \"pss_before\": %lu, \"pss_after\": %lu, "
		    "\"rss_after\": %lu, \"hwm\": %lu, \"bytes_per_conn\": %ld}",
		    r->mem_after.nproc, (unsigned long)r->mem_before.pss,
		    (unsigned long)r->mem_after.pss, (unsigned long)r->mem_after.rss,
		    (unsigned long)r->mem_after.hwm, (long)per_conn(r));
	fprintf(f, "\n}\n");
	if (f != stdout) fclose(f);
	return 0;
}
