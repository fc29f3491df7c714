/* TCP (L4) proxying: one session per client connection, relayed to a
 * random live instance of the service. */
#ifndef ZKGATE_TCP_PROXY_H
#define ZKGATE_TCP_PROXY_H

#include <uv.h>

#include "proxy/proxy.h"
#include "upstream/service.h"

typedef struct zg_tcp_loop zg_tcp_loop_t;

/* This loop's TCP state (px->tcp): made before any listener starts, freed
 * once the loop has closed every handle. 0 or UV_ENOMEM. */
int zg_tcp_init(zg_proxy_ctx_t *px);
void zg_tcp_free(zg_proxy_ctx_t *px);
/* The listener's connection callback; server->data is the zg_service_t. */
void zg_tcp_on_connection(uv_stream_t *server, int status);
/* Starts a session of `svc` for a client accepted elsewhere whose first
 * bytes chose the service (tls-passthrough). The session takes over
 * `client` (malloc'ed, initialised, not reading; closed and freed with the
 * session) and `initial` (malloc'ed, `len` bytes, sent to the instance
 * before anything else the client sends). `sni` (may be NULL) is for the
 * access log; `start_ns` (uv_hrtime) is when the client was accepted;
 * `conn` is the client's admission (moved into the session, whose head is
 * then done). */
void zg_tcp_session_start(zg_service_t *svc, uv_tcp_t *client, char *initial,
                          size_t len, const char *sni, uint64_t start_ns,
                          zg_conn_ticket_t *conn);
/* Closes every session at once (on stop). */
void zg_tcp_close_all(zg_proxy_ctx_t *px);
/* Sessions open, of any service (also one a reload removed). */
size_t zg_tcp_sessions_open(const zg_proxy_ctx_t *px);
/* Sessions of `svc` now with instance `key` ("host:port"). */
size_t zg_tcp_instance_active(const zg_proxy_ctx_t *px, const zg_service_t *svc,
                              const char *key);

/* This loop's splice(2) relay: sessions that took it, pipes in use (bytes
 * in them), kept empty for reuse, made so far, pipes that could not be
 * made and pipes refused by the cap on busy ones (max_pipes): those reads
 * went through user space. */
typedef struct zg_tcp_splice_stats {
  uint64_t sessions;
  uint64_t pipes_busy, pipes_kept, pipes_created, pipe_failures;
  uint64_t pipes_capped;
} zg_tcp_splice_stats_t;
void zg_tcp_splice_stats(const zg_proxy_ctx_t *px, zg_tcp_splice_stats_t *st);

#endif
