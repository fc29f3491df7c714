/* The HTTP exchange and its codecs, inside the proxy: what exchange.c (the
 * exchange: routing, rewriting, connecting, retries, timeouts, metrics)
 * and the codecs share: h1_server.c (HTTP/1.1 on the client connection)
 * and h1_client.c (HTTP/1.1 on the instance connection), whose own state
 * is in h1.h, and http_proxy.c (the listeners). Not for other modules:
 * they see http_proxy.h. No llhttp here: what is HTTP/1's (parsers,
 * chunk framing, the session) is in h1.h.
 *
 * The codecs call the exchange through the zg_exchange_* functions below
 * (a request head, body bytes, its end; a response head, body bytes, its
 * end, a failure, the 101 hand-off), and the exchange drives each side
 * through that side's table of operations only: zg_exchange_srv_ops_t for
 * the client's codec (x->srv, on x->conn), zg_exchange_cli_ops_t for the
 * instance's (x->cli, on x->up, chosen per exchange). The exchange carries
 * what it needs of the connection it came on (its context, listener,
 * client address, TLS), so that a codec may hold one per connection
 * (HTTP/1.1) or one per stream (HTTP/2); the connections themselves are
 * opaque to it.
 *
 * The head model, zg_http_head_t (core/http_msg.h), is what both sides'
 * codecs fill and read: the method (llhttp's numbering: zg_http_method_name
 * and zg_http_method_from convert), the target, the status and reason, the
 * version, the fields as name and value offsets into a buffer the codec
 * owns (`buf`, valid while the head is in use), and the framing: a length
 * (has_length, content_length), a body without a length (chunked: its end
 * is told by the codec, whatever the wire framing), or none. An HTTP/1.1
 * codec points it into the bytes it read; an HTTP/2 codec fills the same
 * struct from decoded HPACK fields (:method, :path, :authority as Host,
 * :status; version 2.0; END_STREAM or content-length for the framing) in
 * a buffer of its own. Trailers are zg_http_trailers_t, the same way. */
#ifndef ZKGATE_PROXY_EXCHANGE_H
#define ZKGATE_PROXY_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "core/http_msg.h"
#include "core/list.h"
#include "core/term.h"
#include "net/listener.h"
#include "net/tls.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/route.h"
#include "proxy/proxy.h"
#include "upstream/service.h"
#include "upstream/upstream.h"

#define HEAD_MAX 65536     /* request or response head */
#define OUT_HEAD_MAX 81920 /* a rewritten head: the head plus our headers */
#define HIGH_WATER 262144  /* bytes queued for a peer before pausing */

/* Where an exchange is. */
typedef enum {
  ZG_XP_NONE = 0, /* no request head yet */
  ZG_XP_CONNECT,  /* the head is in; getting an upstream connection */
  ZG_XP_SENT,     /* request sent or being sent; response expected */
  ZG_XP_TUNNEL,   /* after 101 Switching Protocols */
  ZG_XP_CLOSED,   /* the client side ended under it */
} zg_xphase_t;

typedef struct zg_http_exchange zg_http_exchange_t;
typedef struct zg_http_listener zg_http_listener_t;

/* What the exchange asks of the codec on the client's side (`c`: the
 * codec's own, zg_http_exchange_t.conn). h1_server.c is the first. */
typedef struct {
  /* The response head: its framing decided (or refused, -1 with *reason,
   * nothing sent; *client_cause when the client's version is why), then
   * staged (-2 when that failed). *no_body: none follows. 0 otherwise. */
  int (*response_head)(void *c, const zg_http_head_t *resp, bool *no_body,
                       const char **reason, bool *client_cause);
  int (*response_body)(void *c, const char *p, size_t len); /* 0 or -1 */
  int (*response_end)(void *c);                             /* 0 or -1 */
  /* What is staged for the client goes out. 0 or an error. */
  int (*flush)(void *c);
  /* An error response of the gateway's own, the close after it (0 or
   * -1); error_sent once it is counted. */
  int (*error)(void *c, int status, const char *message);
  void (*error_sent)(void *c);
  /* The client's connection (or stream) ends, for `term`. */
  void (*end)(void *c, zg_term_t term);
  /* The exchange ended: the next request, or the close. */
  void (*done)(void *c);
  /* The request body: read it on (the instance takes it now), pause
   * (the instance is slower than the client), resume. */
  void (*request_body)(void *c);
  void (*request_pause)(void *c);
  void (*request_resume)(void *c);
  /* Bytes queued for the client, not yet taken by its socket. */
  size_t (*queued)(void *c);
  /* Something came from the instance (for the client's idle timeout). */
  void (*active)(void *c);
  /* 101: bytes both ways; tunnel bytes (or EOF, an error) from the
   * instance. */
  void (*tunnel_start)(void *c, const char *rest, size_t len);
  void (*tunnel_read)(void *c, uv_stream_t *from, ssize_t nread,
                      const char *data);
  /* The tunnel's write side to the instance is shut (status < 0: it
   * failed). */
  void (*tunnel_shut)(void *c, int status);
} zg_exchange_srv_ops_t;

/* What an instance connection tells of itself, for the exchange's retry,
 * passive health and logs. */
typedef struct {
  const char *key;   /* the instance, "host:port" */
  bool reused;       /* it carried a request before this one */
  bool answered;     /* a byte of a response came for this exchange */
  bool client_cause; /* refused for the client's sake, not a failure */
  bool refused;      /* the instance did not process the request (HTTP/2
                        REFUSED_STREAM, above a GOAWAY's last stream): it may go
                        to another instance whatever its method and body */
} zg_exchange_cli_state_t;

/* What the exchange asks of the codec on the instance's side (`c`: the
 * codec's connection, or stream, zg_http_exchange_t.up, which knows its
 * exchange). h1_client.c is the first (zg_h1c_ops). */
typedef struct {
  /* The connection upstream.h is to give: the codec's block size and
   * where its zg_upconn_t is, its idle pool, its ALPN. */
  void (*connect_prepare)(zg_upstream_req_t *r, zg_proxy_ctx_t *gw);
  /* A connection upstream.h gave for `x` (idle or new): the codec's
   * (set up at its first use), bound to x. */
  void *(*attach)(zg_upconn_t *uc, zg_http_exchange_t *x);
  /* The request head for the instance, from the client's (x->req) and
   * what the exchange decided in `o` (target, Host, forwarding headers);
   * the codec adds framing and the protocol switch, sets x->req_has_body
   * and keeps it in x->up_head for a retry. 0, or -1 when too large. */
  int (*request_head)(zg_http_exchange_t *x, zg_http_req_out_t *o);
  /* The kept head staged on `c`, and a response expected (read on). 0, -1
   * (it could not be staged), -2 (the connection is gone). */
  int (*request_send)(void *c);
  /* Request body bytes (decoded) and its end (with x->req_trailers),
   * staged in the framing the head announced. 0 or -1. */
  int (*request_body)(void *c, const char *p, size_t len);
  int (*request_end)(void *c);
  /* What is staged for the instance goes out. 0 or an error. */
  int (*flush)(void *c);
  /* Bytes queued for the instance, not yet taken by its socket. */
  size_t (*queued)(void *c);
  /* The exchange paused its client for what is queued on `c`: the codec
   * calls zg_exchange_instance_drained once that went out, once a call.
   * NULL: the codec calls it after each write to the instance, whether
   * its exchange waits or not (one exchange a connection). */
  void (*wait_drain)(void *c);
  /* Reads from the instance pause (the client is slower), resume. */
  void (*read_pause)(void *c);
  void (*read_resume)(void *c);
  void (*state)(void *c, zg_exchange_cli_state_t *st);
  /* The request body passed to `c` so far, when `c` still holds all of it
   * (to send it again elsewhere after a refusal): 0, or -1 when it does
   * not. NULL: never held. */
  int (*replay)(void *c, const char **p, size_t *len);
  /* Done with `c` for this exchange: kept for another when `reuse` and
   * the response allowed it, else closed. */
  void (*release)(void *c, int reuse);
  /* 101: bytes to the instance (staged and flushed; 0 or an error), and
   * its write side shut once they are out (srv->tunnel_shut follows). */
  int (*tunnel_write)(void *c, const char *p, size_t len);
  int (*tunnel_shutdown)(void *c);
} zg_exchange_cli_ops_t;

/* The HTTP/1.1 client codec's (h1_client.c), and the HTTP/2 one's
 * (h2_client.c), for connections upstream.h made for h2 (zg_upconn_t.h2). */
extern const zg_exchange_cli_ops_t zg_h1c_ops;
extern const zg_exchange_cli_ops_t zg_h2c_ops;

/* One request and its response, as the exchange (exchange.c) keeps it
 * whatever the codecs: HTTP/1.1 has one at a time per client connection,
 * in its session (s->x); an HTTP/2 connection will hold one per stream. */
struct zg_http_exchange {
  /* its context, set by the server codec when it makes the exchange */
  zg_proxy_ctx_t *gw;
  zg_http_listener_t *hl;  /* routes and their targets */
  const char *client_addr; /* "ip:port", for logs */
  const char *client_ip;   /* for X-Forwarded-For */
  zg_tls_conn_t *tls;      /* TLS terminated for the client, or NULL */
  const zg_exchange_srv_ops_t *srv;
  void *conn; /* the server codec's, given back to srv */
  zg_xphase_t phase;
  zg_http_head_t *req; /* the request head, from its codec, while it runs */
  char upgrade[64];    /* the protocol switch asked for, or "" */
  unsigned req_chunked : 1; /* request body chunked to the instance */
  /* Trailer fields, each way, as their codecs read them; forwarded when
   * the other side's framing can carry them (chunked HTTP/1.1). */
  zg_http_trailers_t req_trailers, resp_trailers;
  zg_service_t *svc;      /* referenced */
  int strip;              /* the route's prefix is stripped */
  zg_upstream_req_t ureq; /* getting a connection; ureq.pool: the pool
                             (referenced), ureq.instance: the instance */
  char *up_head;          /* the instance's request head, kept for a retry */
  size_t up_head_len, up_head_cap;
  const zg_exchange_cli_ops_t *cli; /* the instance side's codec */
  void *up;         /* its connection (or stream) while in use, given to cli */
  uint64_t sent_ms; /* the request's end: response_timeout from it */
  uint64_t sent_ns; /* the same in uv_hrtime, least_request_latency = ewma
                       only (0: not yet, or not measured) */
  uint64_t body_bytes; /* of the request, decoded */
  unsigned req_has_body : 1;
  unsigned req_done : 1;  /* the whole request was passed on */
  unsigned resp_head : 1; /* a final response head went to the client */
  unsigned resp_done : 1;
  unsigned retried : 1;   /* the one retry on a fresh connection */
  unsigned body_held : 1; /* the client's body paused while a refused
                             request goes to another instance */
  unsigned resend : 1;    /* a refused request goes to another instance */
  char *replay;           /* the body passed on before a refusal, to send */
  size_t replay_len;      /* again (malloc'ed), or NULL */
  /* A gRPC request (content-type application/grpc*): the gateway's own
   * errors are gRPC statuses (zg_grpc_status), not HTML. */
  unsigned grpc : 1;
  uint64_t deadline_ms; /* grpc-timeout: uv_now by which a response head
                           must come (0: none; response_timeout still) */
  /* for the metrics and the access log */
  unsigned req_active : 1;
  int status;               /* the final status sent, 0 before */
  uint64_t req_begin_ns;    /* uv_hrtime when its head was in */
  uint64_t req_in, req_out; /* bytes from and to the client */
  const char *method;       /* static, zg_http_method_name; NULL before a
                               head */
  char *target;             /* as received, for the access log (malloc'ed) */
};

/* What a route leads to: route.service indexes the listener's targets. */
typedef struct {
  zg_service_t *svc; /* referenced */
  int strip;         /* the route's prefix is removed from the target */
} zg_http_target_t;

struct zg_http_listener {
  zg_proxy_ctx_t *gw;       /* the loop's proxies' context */
  zg_listener_t l;          /* l.tcp.data: this */
  zg_route_table_t *routes; /* replaced as services come and go */
  zg_http_target_t *targets;
  size_t n_targets;
  int retired;               /* a reload took its address away */
  unsigned refs;             /* the loop's while in use, sessions' */
  uint64_t accepted, active; /* client connections */
};

/* This loop's HTTP state (zg_proxy_ctx_t.http), owned by http_proxy.c. */
struct zg_http_loop {
  zg_listener_set_t listeners; /* l.tcp.data: the zg_http_listener_t */
  zg_list_t sessions;  /* every open HTTP/1.1 session (zg_http_session_t) */
  zg_upidle_t up_idle; /* idle upstream connections (keep-alive) */
  int started;
  zg_bufpool_t wblks;    /* write blocks */
  zg_bufpool_t spool;    /* sessions, reused */
  zg_bufpool_t heads;    /* parsed request heads */
  zg_traffic_t unrouted; /* requests that reached no service */
};

/* ---- write blocks ------------------------------------------------------
 * Bytes for a peer are copied into a write block from the loop's pool (the
 * copy keeps llhttp's pointers into buffers that are reused right after),
 * staged there, and written with one uv_write when the code that produced
 * them is done. */

#define WBLK_CAP (ZG_BUF_SIZE + 256) /* a read's worth, plus chunk framing */

typedef struct wblk {
  uv_write_t req;
  void *owner; /* session or upstream */
  size_t len;
  char data[WBLK_CAP];
} wblk_t;

static inline wblk_t *zg_wblk_get(zg_proxy_ctx_t *gw, void *owner) {
  wblk_t *w = zg_bufpool_get(&gw->http->wblks);
  if (w) {
    w->owner = owner;
    w->len = 0;
  }
  return w;
}

static inline void zg_wblk_put(zg_proxy_ctx_t *gw, wblk_t *w) {
  zg_bufpool_put(&gw->http->wblks, w);
}

/* Appends to the block staged in *ob, starting one when there is none;
 * a full block is handed to `flush`. Inline: it is on every body byte's
 * path, in both codecs. */
static inline int zg_wblk_stage(zg_proxy_ctx_t *gw, wblk_t **ob, void *owner,
                                const char *p, size_t len,
                                int (*flush)(void *owner)) {
  while (len > 0) {
    size_t n;
    if (!*ob && !(*ob = zg_wblk_get(gw, owner)))
      return UV_ENOMEM;
    n = WBLK_CAP - (*ob)->len;
    if (n > len)
      n = len;
    memcpy((*ob)->data + (*ob)->len, p, n);
    (*ob)->len += n;
    p += n;
    len -= n;
    if ((*ob)->len == WBLK_CAP) {
      int rc = flush(owner);
      if (rc != 0)
        return rc;
    }
  }
  return 0;
}
/* Writes a block (taken) to `to`; `cb` returns it when it had to queue. */
int zg_wblk_write(zg_proxy_ctx_t *gw, zg_tls_conn_t *tls, uv_stream_t *to,
                  wblk_t *w, uv_write_cb cb);
/* Buffers of ZG_BUF_SIZE go back to the loop's pool, larger ones to free. */
void zg_http_buf_release(zg_proxy_ctx_t *gw, char **buf, size_t *cap);

static inline size_t zg_queued(uv_tcp_t *t) {
  return uv_stream_get_write_queue_size((uv_stream_t *)t);
}

/* ---- the exchange, as the codecs see it -------------------------------- */

/* The request head is in (x->req), checked by its codec: `status` 0, or
 * the status to refuse it with (and `reason`). Counted for the metrics and
 * the access log, then routed, rewritten, and sent to an instance. */
void zg_exchange_request_head(zg_http_exchange_t *x, int status,
                              const char *reason);
/* Decoded request body bytes, staged for the instance. 0, -1, or -2 when
 * the body goes over max_request_body. */
int zg_exchange_request_body(zg_http_exchange_t *x, const char *p, size_t len);
/* The whole request came. 0 or -1. */
int zg_exchange_request_end(zg_http_exchange_t *x);
/* What the codec passed on of the request body leaves in one write; the
 * request body pauses while the instance is slower than the client. */
void zg_exchange_request_flush(zg_http_exchange_t *x);
/* The gateway answers `status` itself (no instance, a refused request)
 * and the connection closes after it; `term` is why, for the log and the
 * metrics. */
void zg_exchange_error(zg_http_exchange_t *x, zg_term_t term, int status,
                       const char *message);
/* The gRPC status for a gateway error answered with HTTP `status` (the
 * gRPC HTTP mapping; 504 is DEADLINE_EXCEEDED, 404 no route UNIMPLEMENTED,
 * 502/503 UNAVAILABLE). */
int zg_grpc_status(int status);
/* A trailers-only gRPC error as HTTP/1.1 ("HTTP/1.1 200 OK" with
 * Content-Type, Grpc-Status, Grpc-Message percent-encoded, Content-Length
 * 0) into buf; its length, or -1 when it does not fit. */
int zg_grpc_error_response(char *buf, size_t cap, int status,
                           const char *message);
/* grpc-message's percent-encoding of `message` (gRPC's HTTP/2 protocol
 * spec) into buf (NUL-terminated, truncated to fit); its length. */
size_t zg_grpc_message(char *buf, size_t cap, const char *message);

/* The response timeout, checked by the session's timer: 1 when it ran out
 * (and was acted on). */
int zg_exchange_timeout(zg_http_exchange_t *x, uint64_t now);
/* Ready for the next exchange on the same connection. */
void zg_exchange_reset(zg_http_exchange_t *x);
/* The client side ended under the exchange (`phase` as it stood): counted
 * for `term`, its instance connection released, its connect cancelled. */
void zg_exchange_abort(zg_http_exchange_t *x, zg_term_t term,
                       zg_term_phase_t phase);
/* What the exchange still holds, freed with its connection. */
void zg_exchange_free(zg_http_exchange_t *x);
/* The metrics and the access log: a request is counted once, when it
 * ends (its response is complete, an error response is out, or the
 * session ends under it). `text`: the log's words when not term's own. */
void zg_exchange_begin(zg_http_exchange_t *x);
zg_term_phase_t zg_exchange_phase(const zg_http_exchange_t *x);
void zg_exchange_finish(zg_http_exchange_t *x, zg_term_t term,
                        zg_term_phase_t phase, const char *text);

/* A final, interim or 101 response head from the instance, checked by the
 * codec: goes to the client. Returns 0 (a body follows), 1 (no body), 2
 * (101: the connection becomes a tunnel), or -1 with *reason when it
 * cannot be passed on (*client_cause: because of the client's version,
 * not the instance's fault). */
int zg_exchange_response_head(zg_http_exchange_t *x, const zg_http_head_t *resp,
                              const char **reason, bool *client_cause);
/* Decoded response body bytes. 0 or -1. */
int zg_exchange_response_body(zg_http_exchange_t *x, const char *p, size_t len);
/* The whole response came. 0 or -1. */
int zg_exchange_response_end(zg_http_exchange_t *x);
/* The codec is done with the response: the exchange ends. */
void zg_exchange_done(zg_http_exchange_t *x);
/* The instance failed us (`why`, answered with `status` when no response
 * head went out yet). */
void zg_exchange_upstream_failed(zg_http_exchange_t *x, zg_term_t why,
                                 int status);
/* After each read from the instance on `c` (x->cli's): what it produced
 * goes out, and reads pause while the client is slower than the
 * instance. */
void zg_exchange_instance_read(zg_http_exchange_t *x, void *c);
/* The instance connection is closed under the exchange (a request body
 * cut short, the client going). */
void zg_exchange_instance_drop(zg_http_exchange_t *x);
/* The instance's write queue drained: the client is read again if its
 * body was paused for it, else (still too much queued) cli->wait_drain
 * waits on. */
void zg_exchange_instance_drained(zg_http_exchange_t *x);
/* The client's write queue drained: the instance is read again if it was
 * paused for the client. */
void zg_exchange_client_drained(zg_http_exchange_t *x);
/* 101: bytes both ways from now on; `rest` came after the response head. */
void zg_exchange_tunnel_start(zg_http_exchange_t *x, const char *rest,
                              size_t len);
/* Tunnel bytes (or EOF, an error) read from the instance. */
void zg_exchange_tunnel_read(zg_http_exchange_t *x, uv_stream_t *from,
                             ssize_t nread, const char *data);
/* The tunnel's write side to the instance is shut (status < 0: failed). */
void zg_exchange_tunnel_shut(zg_http_exchange_t *x, int status);

/* ---- the listeners (http_proxy.c) -------------------------------------- */
void zg_http_listener_unref(zg_http_listener_t *hl);

#endif
