/* pop3_conn: placeholder until the POP3 machine lands (replaced below). */
#include "core/pool.h"
#include "core/server.h"

void pop3_conn_start(struct conn *c)
{
	conn_out_alloc(c);
	obuf_puts(&c->out, "-ERR [SYS/TEMP] POP3 not available yet\r\n");
	conn_close(c);
}
void pop3_conn_input(struct conn *c) { (void)c; }
void pop3_conn_timer(struct conn *c) { conn_close(c); }
void pop3_conn_stop(struct conn *c) { (void)c; }
void pop3_conn_free(struct conn *c) { (void)c; }
void pop3_conn_read_done(struct conn *c, int res) { (void)c; (void)res; }
void pop3_conn_sent(struct conn *c) { (void)c; }
void pop3_conn_tls_done(struct conn *c, int result) { (void)result; pop3_conn_start(c); }
void pop3_conn_job_done(struct conn *c, struct pool_job *j) { (void)c; pool_job_free(j); }
