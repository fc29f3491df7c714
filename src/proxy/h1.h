/* The HTTP/1.1 codecs' own state, private to them (h1_server.c on the
 * client connection, h1_client.c on the instance's) and to http_proxy.c,
 * which accepts and counts the sessions: the llhttp parsers and what they
 * read into. The exchange (exchange.h) never sees these: it drives the
 * codecs through their operations (zg_exchange_srv_ops_t,
 * zg_exchange_cli_ops_t). */
#ifndef ZKGATE_PROXY_H1_H
#define ZKGATE_PROXY_H1_H

#include <llhttp.h>

#include "proxy/exchange.h"

typedef struct zg_http_upstream zg_http_upstream_t;
typedef struct zg_http_session zg_http_session_t;
typedef struct zg_h2_conn zg_h2_conn_t;

/* The client connection's state (HTTP/1.1); where its exchange is, is
 * the exchange's phase (zg_xphase_t). */
typedef enum {
  HS_HEAD = 0, /* reading a request head (or waiting for one) */
  HS_REQUEST,  /* the head is in: an exchange runs */
  HS_TUNNEL,   /* after 101 Switching Protocols: bytes both ways */
  HS_CLOSING,
} hs_state_t;

struct zg_http_upstream {
  /* First (asserted below): the response parser's data points to the
   * upstream and to its reader alike (zg_http_response_settings). The
   * reader's head_seen is clear while a response head is read. */
  zg_http_reader_t rd;
  zg_proxy_ctx_t *gw;    /* NULL until first given to an exchange */
  zg_http_exchange_t *x; /* while in use; NULL when idle */
  zg_upconn_t c; /* the connection (upstream.h): tcp, tls, key, idle list */
  llhttp_t pp;
  char *head;                /* response head bytes, while reading it */
  size_t head_len, head_cap; /* head_cap: ZG_BUF_SIZE (pooled) or HEAD_MAX */
  struct wblk *ob;           /* bytes staged for the instance */
  zg_http_head_t resp;
  unsigned keep : 1;          /* reusable after the response */
  unsigned used : 1;          /* has carried a request before this one */
  unsigned reading : 1;       /* (zg_stream_)read_start'ed */
  unsigned answered : 1;      /* a byte of a response came for this exchange */
  unsigned client_cause : 1;  /* refused for the client's sake, not a failure */
  uv_shutdown_t shutdown_req; /* tunnel: our write side to the instance */
};
_Static_assert(offsetof(zg_http_upstream_t, rd) == 0,
               "the reader is the upstream's first member");

struct zg_http_session {
  /* First (asserted below): the request parser's data points to the
   * session and to its reader alike (zg_http_request_settings). */
  zg_http_reader_t rd;
  zg_proxy_ctx_t *gw;
  zg_http_listener_t *hl;
  zg_conn_ticket_t conn; /* admission; in its head until the first one */
  zg_link_t link;        /* in the loop's sessions */
  hs_state_t state;
  uv_tcp_t client;
  zg_tls_conn_t *tls; /* TLS terminated here, or NULL */
  uv_timer_t timer;
  llhttp_t rp;
  char *in; /* client bytes, while there are any: a pooled ZG_BUF_SIZE
               block, grown to IN_BIG for a large head */
  size_t in_len, in_off; /* bytes held; bytes given to the parser */
  size_t in_cap;
  struct wblk *ob;     /* bytes staged for the client */
  size_t head_start;   /* where the current request began in `in` */
  zg_http_head_t *req; /* from the loop's pool, from a request's first byte
                          to the end of its exchange */
  unsigned reading : 1;
  unsigned client_keep : 1;  /* the client may send another request */
  unsigned head_req : 1;     /* HEAD: the response has no body */
  unsigned close_after : 1;  /* close the client after this response */
  unsigned client_eof : 1;   /* the client closed its side */
  unsigned resp_chunked : 1; /* response body chunked to the client */
  unsigned lingering : 1;    /* response out, write side shut, draining */
  unsigned too_big : 1;      /* a chunked body over max_request_body */
  unsigned upstream_eof : 1; /* tunnel: the instance closed its side */
  unsigned tunnel_shut;      /* tunnel: write sides shut (0..2) */
  unsigned wait_drain : 1;   /* next request held until the client drains */
  uint64_t head_begin_ms;    /* first byte of the current request head */
  unsigned handles;
  uint64_t last_active_ms, linger_ms;
  uv_shutdown_t shutdown_req;
  uint64_t requests;
  zg_term_t reason;
  char client_addr[64];
  char client_ip[48];
  zg_http_exchange_t x;  /* the current exchange (one at a time) */
  struct zg_h2_conn *h2; /* HTTP/2 on this connection (h2.h), or NULL */
};
_Static_assert(offsetof(zg_http_session_t, rd) == 0,
               "the reader is the session's first member");

/* The size line of one chunk (RFC 9112 §7.1): hex digits and CRLF. */
int zg_chunk_size_line(char *out, size_t len);
/* The last chunk of a chunked body (RFC 9112 §7.1.2): "0", the trailer
 * fields that may go on (zg_http_trailer_forwardable), the empty line;
 * staged through `stage`. 0 or its error. */
int zg_chunk_last(const zg_http_trailers_t *t,
                  int (*stage)(void *owner, const char *p, size_t len),
                  void *owner);
/* ---- the HTTP/1.1 server codec (h1_server.c) -------------------------- */

/* The request parser's settings (once per process). */
void zg_h1s_settings_init(void);
/* A connection on an HTTP listener (its uv_connection_cb). */
void zg_h1s_accept(uv_stream_t *server, int status);
/* Ends the session: its exchange is counted, its connections closed. */
void zg_h1s_end(zg_http_session_t *s, zg_term_t term);
/* Between requests, with nothing read and nothing left to send. */
int zg_h1s_idle(zg_http_session_t *s);

/* ---- the HTTP/1.1 client codec (h1_client.c) -------------------------- */

/* The response parser's settings (once per process). The rest is its
 * operations, zg_h1c_ops (exchange.h). */
void zg_h1c_settings_init(void);

#endif
