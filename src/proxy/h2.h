/* The HTTP/2 server codec (h2_server.c), as the HTTP/1.1 session
 * (h1_server.c) and the listeners (http_proxy.c) see it. A client
 * connection starts as an HTTP/1.1 session; when its first bytes are the
 * HTTP/2 client preface (h2c with prior knowledge) or ALPN chose h2, the
 * session hands the connection to this codec (s->h2), which runs one
 * nghttp2 server session on it and one exchange per stream. The session
 * keeps the socket, its timer, TLS and the admission ticket. */
#ifndef ZKGATE_PROXY_H2_H
#define ZKGATE_PROXY_H2_H

#include "proxy/h1.h"

/* The client preface (RFC 9113 §3.4). */
#define ZG_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define ZG_H2_PREFACE_LEN 24

/* The bounds the codec sets (README "HTTP/2 and gRPC"). */
#define ZG_H2_MAX_STREAMS 100         /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define ZG_H2_MAX_HEADER_LIST 65536   /* SETTINGS_MAX_HEADER_LIST_SIZE */
#define ZG_H2_STREAM_WINDOW 65535     /* SETTINGS_INITIAL_WINDOW_SIZE */
#define ZG_H2_CONN_WINDOW (1u << 20)  /* the connection's receive window */
#define ZG_H2_CONN_OUT_MAX (1u << 20) /* response bytes queued, all streams */
#define ZG_H2_MAX_EMPTY_DATA 100      /* empty DATA frames per stream */
#define ZG_H2_RESET_BURST 200         /* RST_STREAM token bucket */
#define ZG_H2_RESET_RATE 20           /* tokens a second */
#define ZG_H2_MAX_CONTINUATIONS 8     /* after a HEADERS frame */
#define ZG_H2_MAX_OUTBOUND_ACK 1000   /* SETTINGS and PING ACKs queued */
#define ZG_H2_MAX_SETTINGS 32         /* entries in one SETTINGS frame */

/* Whether `len` bytes at `p` (the start of a connection) are the preface
 * or its beginning: 2 the whole preface, 1 a beginning, 0 not. */
static inline int zg_h2_preface_match(const char *p, size_t len) {
  size_t n = len < ZG_H2_PREFACE_LEN ? len : ZG_H2_PREFACE_LEN;
  if (memcmp(p, ZG_H2_PREFACE, n) != 0)
    return 0;
  return n == ZG_H2_PREFACE_LEN ? 2 : 1;
}

/* The session becomes HTTP/2: the bytes held in s->in (the preface and
 * what followed, or none after ALPN) go to nghttp2. */
void zg_h2s_start(zg_http_session_t *s);
/* A read on the connection: `nread` bytes at s->in, or EOF, an error. */
void zg_h2s_read(zg_http_session_t *s, ssize_t nread);
/* A write to the client completed (the session's write callback). */
void zg_h2s_written(zg_http_session_t *s);
/* The session's timer: timeouts of the connection and its streams. */
void zg_h2s_timer(zg_http_session_t *s, uint64_t now);
/* The session ends (zg_h1s_end): every stream's exchange is counted for
 * `term`; the codec's handle closes (s->handles). */
void zg_h2s_close(zg_http_session_t *s, zg_term_t term);
/* What the codec holds, freed with the session. */
void zg_h2s_free(zg_http_session_t *s);
/* Draining, or a reload removed the listener: GOAWAY; the connection
 * closes once its open streams finished. */
void zg_h2s_wind_down(zg_http_session_t *s);
/* Requests of `svc` on instance `key` now, on this connection. */
size_t zg_h2s_instance_active(const zg_http_session_t *s,
                              const zg_service_t *svc, const char *key);

/* What h1_server.c lends the codec: bytes staged for the client and
 * written at zg_h1s_flush; the close callback of the session's handles. */
int zg_h1s_stage(zg_http_session_t *s, const char *p, size_t len);
int zg_h1s_flush(zg_http_session_t *s);
void zg_h1s_handle_closed(uv_handle_t *h);

#endif
