/* HTTP/1.1 proxying. See http_proxy.h.
 *
 * One session per client connection, one exchange (request and response)
 * at a time. The client's bytes collect in the session's input buffer and
 * go through llhttp (strict mode); the parser pauses at the end of a
 * request head, so that the head can be checked, routed and rewritten
 * while the body waits in the buffer, and at the end of a request, so that
 * pipelined requests wait for the response before them.
 *
 * Heads are re-serialised for the other side (http_msg.c): one framing
 * header, hop-by-hop headers dropped, X-Forwarded-* set. Bodies are
 * streamed: chunked bodies are re-chunked from llhttp's decoded data,
 * others passed as they come. Each direction stops reading while the other
 * side's write queue is above a high-water mark (backpressure), so memory
 * per connection stays bounded whatever the body size.
 *
 * Upstream connections are kept per instance when both sides of the
 * exchange allow it; an idle one is read from, so that a close by the
 * instance is seen and the connection dropped before anyone uses it. A
 * request without a body that fails on a reused connection before any
 * response byte is sent once more on a new connection.
 *
 * On a listener that terminates TLS, the client's reads, writes and
 * shutdowns go through tls.h's zg_stream_* calls (libuv's own for plain
 * clients), after a handshake that runs before the first read. An
 * upstream connection that speaks TLS (upstream_tls) does the same on its
 * side, after a handshake that counts as part of connecting; it keeps its
 * TLS state while idle and is reused only for the same TLS settings. */
#include "proxy/http_proxy.h"

#include "proxy/exchange.h"

#include "core/error.h"
#include "core/http_msg.h"
#include "net/listener.h"
#include "core/log.h"
#include "core/term.h"
#include "net/tls.h"
#include "upstream/service.h"
#include "upstream/upstream.h"

#include <llhttp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define IN_BIG (HEAD_MAX + ZG_BUF_SIZE)    /* client input with a large head */
#define TARGET_MAX (ZG_HTTP_MAX_URL + 512) /* a rewritten target */
_Static_assert(TARGET_MAX <= ZG_BUF_SIZE, "targets are rewritten in a block");
#define MAX_IDLE_UPSTREAM 1024

static llhttp_settings_t req_settings;
static void listener_unref(zg_http_listener_t *hl);

static void session_end(zg_http_session_t *s, zg_term_t term);
static void process_input(zg_http_session_t *s);
static void on_client_write(uv_write_t *req, int status);
static void upstream_connect(zg_http_session_t *s);
static void client_read_start(zg_http_session_t *s);
static void linger_close(zg_http_session_t *s);
static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void next_request(zg_http_session_t *s);
static void client_eof_check(zg_http_session_t *s);
static void tunnel_read(zg_http_session_t *s, uv_stream_t *from, ssize_t nread,
                        const char *data, int from_client);

/* ---- writing ---------------------------------------------------------
 * Bytes for a peer are copied into a write block from the loop's pool (the
 * copy keeps llhttp's pointers into buffers that are reused right after),
 * staged there, and written with one uv_write when the code that produced
 * them is done: a response head and the body bytes read with it leave in
 * one system call. Staged bytes are flushed at the end of each read
 * callback and before anything looks at the write queue. */

#define MAX_FREE_WBLKS 256
#define MAX_FREE_SESSIONS 256

/* Appends to the block staged in *ob, starting one when there is none;
 * a full block is handed to `flush`. */
int zg_wblk_stage(zg_gateway_t *gw, wblk_t **ob, void *owner, const char *p,
                  size_t len, int (*flush)(void *owner)) {
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

/* Writes a block: at once when the socket takes it all (the usual case),
 * else what is left through uv_write, whose callback `cb` returns the
 * block. uv_try_write first because a uv_write that completes at once
 * still costs an epoll_ctl when libuv drains the queue (1.44). It fails
 * with EAGAIN while earlier writes are queued, so order is kept; and the
 * callbacks that act on a drained queue are only ever waited for when
 * something was queued. */
int zg_wblk_write(zg_gateway_t *gw, zg_tls_conn_t *tls, uv_stream_t *to,
                  wblk_t *w, uv_write_cb cb) {
  uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
  int rc = zg_stream_try_write(tls, to, &b, 1); /* TLS: UV_EAGAIN */
  if (rc == (int)w->len || (rc < 0 && rc != UV_EAGAIN)) {
    zg_wblk_put(gw, w);
    return rc < 0 ? rc : 0;
  }
  if (rc > 0) {
    b.base += rc;
    b.len -= (size_t)rc;
  }
  rc = zg_stream_write(tls, &w->req, to, &b, 1, cb);
  if (rc < 0)
    zg_wblk_put(gw, w);
  return rc;
}

/* The one place bytes are written to the client: a TLS layer would
 * encrypt here. Takes `w`. */
static int client_write(zg_http_session_t *s, wblk_t *w) {
  s->req_out += w->len;
  return zg_wblk_write(s->gw, s->tls, (uv_stream_t *)&s->client, w,
                       on_client_write);
}

static int client_flush_cb(void *owner) {
  zg_http_session_t *s = owner;
  wblk_t *w = s->ob;
  if (!w)
    return 0;
  s->ob = NULL;
  return client_write(s, w);
}

static int client_flush(zg_http_session_t *s) {
  return client_flush_cb(s);
}

/* Staged for the client: written at the next client_flush. */
static int to_client(zg_http_session_t *s, const char *p, size_t len) {
  return zg_wblk_stage(s->gw, &s->ob, s, p, len, client_flush_cb);
}

/* One chunk of a chunked body (RFC 9112 §7.1), staged. */
int zg_chunk_size_line(char *out, size_t len) {
  static const char hex[] = "0123456789abcdef";
  char tmp[16];
  int n = 0, k = 0;
  do {
    tmp[n++] = hex[len & 15];
    len >>= 4;
  } while (len > 0);
  while (n > 0)
    out[k++] = tmp[--n];
  out[k++] = '\r';
  out[k++] = '\n';
  return k;
}

static int chunk_to_client(zg_http_session_t *s, const char *p, size_t len) {
  char size[24];
  int n = zg_chunk_size_line(size, len), rc;
  if ((rc = to_client(s, size, (size_t)n)) != 0 ||
      (rc = to_client(s, p, len)) != 0)
    return rc;
  return to_client(s, "\r\n", 2);
}

/* Draining, or a reload took the session's listener away: no request
 * after the current one; idle connections close. */
static int winding_down(const zg_http_session_t *s) {
  return s->gw->draining || s->hl->retired;
}

/* Between requests, with nothing read and nothing left to send. */
static int idle_between_requests(zg_http_session_t *s);

/* ---- metrics and the access log ----------------------------------------
 * A request is counted and logged once, when it ends: its response is
 * complete, or an error response is out, or the session ends under it. */

static void request_begin(zg_http_session_t *s) {
  if (s->req_active)
    return;
  s->req_active = 1;
  s->req_begin_ns = uv_hrtime();
}

/* The phase of the exchange, for the termination code (core/term.h). */
static zg_term_phase_t phase_of(const zg_http_session_t *s) {
  if (s->lingering)
    return ZG_PHASE_LAST;
  switch (s->state) {
  case HS_HEAD:
    return ZG_PHASE_REQUEST;
  case HS_CONNECT:
    return ZG_PHASE_CONNECT;
  case HS_EXCHANGE:
    return s->req_done && !s->resp_head ? ZG_PHASE_HEADERS : ZG_PHASE_DATA;
  default:
    return ZG_PHASE_DATA;
  }
}

/* `text`: the words for the access log when not term's own, or NULL. */
static void request_finish(zg_http_session_t *s, zg_term_t term,
                           zg_term_phase_t phase, const char *text) {
  zg_gateway_t *gw = s->gw;
  zg_traffic_t *t;
  uint64_t dur_us;
  if (!s->req_active)
    return;
  s->req_active = 0;
  dur_us = (uv_hrtime() - s->req_begin_ns) / 1000;
  t = s->svc ? &s->svc->traffic : &gw->unrouted;
  zg_traffic_observe(t, s->status, dur_us);
  zg_traffic_ended(t, term);
  t->bytes_in += s->req_in;
  t->bytes_out += s->req_out;
  if (gw->access_log) {
    zg_access_entry_t e;
    uv_timeval64_t tv;
    memset(&e, 0, sizeof(e));
    uv_gettimeofday(&tv);
    e.time_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
    e.kind = "http";
    e.client = s->client_addr;
    e.service = s->svc ? s->svc->conf->name : NULL;
    e.instance = s->ureq.instance[0] ? s->ureq.instance : NULL;
    e.method = s->method ? s->method : "-";
    e.target = s->target ? s->target : "-";
    e.target_len = s->target ? strlen(s->target) : 1;
    e.status = s->status;
    e.bytes_in = s->req_in;
    e.bytes_out = s->req_out;
    e.duration_us = dur_us;
    e.term = term;
    e.phase = phase;
    e.reason = text;
    zg_access_log_write(gw->access_log, &e);
  }
  s->status = 0;
  s->req_in = s->req_out = 0;
  s->ureq.instance[0] = '\0';
  s->method = NULL;
  free(s->target);
  s->target = NULL;
}

/* ---- error responses ------------------------------------------------- */

static void respond_error(zg_http_session_t *s, zg_term_t term, int status,
                          const char *message) {
  char buf[1024];
  int n;
  /* A request refused is refused in its request phase, also after its
   * head is in and the session already moved on to HS_CONNECT. */
  zg_term_phase_t phase =
      term == ZG_TERM_BAD_REQUEST ? ZG_PHASE_REQUEST : phase_of(s);
  zg_log_level_t lvl = status >= 500 ? ZG_LOG_WARN : ZG_LOG_INFO;
  if (zg_log_enabled(lvl))
    zg_log(lvl, "http", "client %s: %d %s%s%s", s->client_addr, status, message,
           s->svc ? " service " : "", s->svc ? s->svc->conf->name : "");
  zg_upstream_cancel(&s->ureq); /* answered without an instance */
  s->close_after = 1;
  s->resp_head = 1;
  request_begin(s); /* a head refused before it was complete */
  s->status = status;
  n = zg_http_error_response(buf, sizeof(buf), status, message, true,
                             s->head_req);
  if (n > 0 && to_client(s, buf, (size_t)n) == 0 && client_flush(s) == 0) {
    request_finish(s, term, phase, message);
    /* Closed once the write is done: on_client_write sees close_after. */
    s->resp_done = 1;
    s->req_done = 1;
    s->state = HS_EXCHANGE;
    if (s->reading) {
      zg_stream_read_stop(s->tls, (uv_stream_t *)&s->client);
      s->reading = 0;
    }
    if (zg_queued(&s->client) == 0)
      linger_close(s); /* written at once; else on_client_write does */
    return;
  }
  session_end(s, ZG_TERM_CLIENT_WRITE_ERROR);
}

/* ---- session end ----------------------------------------------------- */

/* Buffers of ZG_BUF_SIZE come from the loop's pool, larger ones (a large
 * head) from malloc: back where they came from. */
void zg_http_buf_release(zg_gateway_t *gw, char **buf, size_t *cap) {
  if (*cap == ZG_BUF_SIZE)
    zg_buf_put(gw, *buf);
  else
    free(*buf);
  *buf = NULL;
  *cap = 0;
}

static void session_free_if_done(zg_http_session_t *s) {
  if (s->handles > 0)
    return;
  zg_http_buf_release(s->gw, &s->in, &s->in_cap);
  zg_http_buf_release(s->gw, &s->up_head, &s->up_head_cap);
  zg_bufpool_put(&s->gw->http_heads, s->req);
  zg_pool_unref(s->ureq.pool);
  zg_service_unref(s->svc);
  listener_unref(s->hl);
  free(s->target);
  zg_conn_ticket_release(&s->conn);
  zg_bufpool_put(&s->gw->http_spool, s);
}

static void on_session_handle_closed(uv_handle_t *h) {
  zg_http_session_t *s = h->data;
  s->handles--;
  session_free_if_done(s);
}

static void session_end(zg_http_session_t *s, zg_term_t term) {
  zg_gateway_t *gw = s->gw;
  zg_term_phase_t phase = phase_of(s);
  if (s->state == HS_CLOSING)
    return;
  s->state = HS_CLOSING;
  s->reason = term;
  request_finish(s, term, phase, NULL);
  s->hl->active--;
  if (s->svc)
    s->svc->active--;
  if (s->prev)
    s->prev->next = s->next;
  else
    gw->http_sessions = s->next;
  if (s->next)
    s->next->prev = s->prev;
  zg_debug("http", "client %s: connection closed (%s) after %llu request(s)",
           s->client_addr, zg_term_text(term), (unsigned long long)s->requests);
  zg_wblk_put(gw, s->ob); /* staged, never to be written */
  s->ob = NULL;
  zg_upstream_cancel(&s->ureq);
  if (s->up) {
    zg_http_upstream_t *u = s->up;
    s->up = NULL;
    u->s = NULL;
    zg_h1c_release(u, 0);
  }
  zg_tls_conn_free(s->tls);
  uv_close((uv_handle_t *)&s->client, on_session_handle_closed);
  uv_close((uv_handle_t *)&s->timer, on_session_handle_closed);
}

/* ---- response from the instance -------------------------------------- */

/* The response head for the client, written straight into the staged
 * write block (a fresh one when the current one is too full); a head too
 * large for a block goes through a heap buffer. */
static int response_head_to_client(zg_http_session_t *s,
                                   const zg_http_head_t *resp,
                                   const zg_http_resp_out_t *o) {
  char *out;
  int n;
  for (int fresh = 0; fresh < 2; fresh++) {
    wblk_t *w = s->ob ? s->ob : (s->ob = zg_wblk_get(s->gw, s));
    if (!w)
      return -1;
    n = zg_http_write_response(w->data + w->len, WBLK_CAP - w->len, resp, o);
    if (n >= 0) {
      w->len += (size_t)n;
      return 0;
    }
    if (w->len == 0 || client_flush(s) != 0)
      break;
  }
  if (!(out = malloc(OUT_HEAD_MAX)))
    return -1;
  n = zg_http_write_response(out, OUT_HEAD_MAX, resp, o);
  n = n < 0 ? -1 : to_client(s, out, (size_t)n);
  free(out);
  return n;
}

int zg_exchange_response_head(zg_http_session_t *s, const zg_http_head_t *resp,
                              const char **reason, bool *client_cause) {
  zg_http_resp_out_t o;
  char proto[64], codings[256];
  int status = resp->status, no_body;
  bool until_close = false;

  *reason = NULL;
  /* Decided before anything goes to the client, so that a response that
   * cannot be passed on is still a 502. */
  memset(&o, 0, sizeof(o));
  no_body = zg_http_response_bodiless(status, s->head_req);
  if (status != 101 && status >= 200 &&
      zg_http_response_framing(resp, s->req->minor, s->head_req, &o, codings,
                               sizeof(codings), &until_close, reason) != 0) {
    /* check_response took the codings with the same room: what is left is
     * an HTTP/1.0 client that cannot be told of them. Its version, not the
     * instance, makes this a 502: no ejection (issue 12 point 2). */
    *client_cause = s->req->minor == 0;
    return -1;
  }
  if (status == 101) {
    /* The switch the client asked for: the head goes out, then the
     * connection becomes a tunnel (the codec hands it over). */
    const zg_hdr_t *up = zg_http_find(resp, "upgrade");
    snprintf(proto, sizeof(proto), "%.*s",
             up ? (int)up->value_len : (int)strlen(s->upgrade),
             up ? resp->buf + up->value_off : s->upgrade);
    o.upgrade = proto;
    s->resp_head = 1;
    s->sent_ms = 0;
  } else if (status >= 100 && status < 200) {
    o.framing = ZG_FRAMING_NONE; /* interim: forwarded, then the next one */
  } else {
    s->resp_head = 1;
    s->sent_ms = 0; /* the response timeout no longer applies */
    s->resp_chunked = o.framing == ZG_FRAMING_CHUNKED;
    if (until_close)
      s->close_after = 1;
    if (!s->client_keep || (s->client_eof && s->in_len == s->in_off) ||
        winding_down(s))
      s->close_after = 1;
    o.close = s->close_after;
    o.keep_alive = !s->close_after && s->req->major == 1 && s->req->minor == 0;
  }
  if (status == 101 || status >= 200)
    s->status = status;
  if (response_head_to_client(s, resp, &o) != 0)
    return -1;
  if (status == 101)
    return 2;
  return no_body ? 1 : 0;
}

int zg_exchange_response_body(zg_http_session_t *s, const char *p, size_t len) {
  if (s->resp_chunked)
    return chunk_to_client(s, p, len) ? -1 : 0;
  return to_client(s, p, len) ? -1 : 0;
}

int zg_exchange_response_end(zg_http_session_t *s) {
  if (s->resp_chunked && to_client(s, "0\r\n\r\n", 5) != 0)
    return -1;
  s->resp_done = 1;
  return 0;
}

void zg_exchange_instance_read(zg_http_session_t *s, uv_stream_t *st) {
  zg_http_upstream_t *u = s->up;
  /* What this read produced for the client leaves in one write. */
  if (s->state != HS_CLOSING && client_flush(s) != 0) {
    session_end(s, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  /* Backpressure: the client drains slower than the instance sends. Not
   * when the exchange ended with this read (the connection went idle). */
  if (u && st == (uv_stream_t *)&u->c.tcp && !u->c.closing && u->reading &&
      zg_queued(&s->client) > HIGH_WATER) {
    zg_stream_read_stop(u->c.tls, st);
    u->reading = 0;
  }
}

void zg_exchange_instance_drained(zg_http_session_t *s) {
  /* Read the client again if its body was paused for us. */
  if ((s->state == HS_TUNNEL || !s->req_done) && !s->reading && s->up &&
      zg_queued(&s->up->c.tcp) <= HIGH_WATER / 2)
    client_read_start(s);
}

/* Methods that may be sent twice (RFC 9110 §9.2.2), as nginx retries. */
static int idempotent(int method) {
  return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS ||
         method == HTTP_TRACE || method == HTTP_PUT || method == HTTP_DELETE;
}

/* The instance failed us. A request without a body gets one more try on a
 * fresh connection when the failure was on a reused one (it may have been
 * closed just as we sent) and no byte of a response came back, else a
 * 502/504; after a response head went to the client, the client
 * connection is closed. */
void zg_exchange_upstream_failed(zg_http_session_t *s, zg_term_t why,
                                 int status) {
  zg_http_upstream_t *u = s->up;
  int reused = u && u->used;
  /* A reply the instance began (a bad one, or cut short) means it saw the
   * request: sending it again would make it see it twice. */
  int answered = u && u->answered;
  zg_debug("http", "client %s: instance %s failed: %s (%s connection)",
           s->client_addr, u ? u->c.key : "-", zg_term_text(why),
           reused ? "reused" : "new");
  if (u) {
    /* A fresh connection that fails is the instance's fault; a reused one
     * may just have been closed by it while idle. Not while the client's
     * body is still coming: the instance may be ending a request whose
     * client is too slow for its read timeout, or refusing the body, and
     * no client may eject an instance (issue 12 point 2). */
    if (!reused && s->req_done && !u->client_cause &&
        zg_service_mark_failed(&s->gw->svc_ctx, u->c.key) && s->svc)
      s->svc->traffic.ejections++;
    s->up = NULL;
    zg_h1c_release(u, 0);
  }
  if (s->resp_head) {
    session_end(s, why);
    return;
  }
  if (reused && !answered && !s->req_has_body && !s->retried &&
      s->state != HS_CLOSING && idempotent(s->req->method)) {
    s->retried = 1;
    s->ureq.ntried = 0;
    s->state = HS_CONNECT;
    upstream_connect(s);
    return;
  }
  respond_error(s, why, status,
                status == 504 ? "the instance did not answer in time"
                              : "the instance failed to answer");
}

/* ---- sending the request --------------------------------------------- */

static void send_request(zg_http_session_t *s) {
  zg_http_upstream_t *u = s->up;
  s->state = HS_EXCHANGE;
  if (s->req_done) /* the response timeout runs from the request's end */
    s->sent_ms = uv_now(s->gw->loop);
  if (zg_h1c_stage(u, s->up_head, s->up_head_len) != 0) {
    zg_exchange_upstream_failed(s, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
    return;
  }
  zg_h1c_response_start(u);
  if (u->c.closing) {
    zg_exchange_upstream_failed(s, ZG_TERM_INSTANCE_READ_ERROR, 502);
    return;
  }
  if (s->req_done) {
    /* no body: the parser waits at the end of the request */
    if (zg_h1c_flush(u) != 0)
      zg_exchange_upstream_failed(s, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
    return;
  }
  /* The body is waiting in the input buffer: parse on (process_input
   * flushes the head with what it adds). */
  llhttp_resume(&s->rp);
  process_input(s);
  if (s->state == HS_EXCHANGE && !s->req_done)
    client_read_start(s);
}

/* A connection to an instance for the request (upstream.h): an idle one,
 * else a new one; the request is sent on it. */
static void on_upstream(zg_upstream_req_t *r, zg_upconn_t *c,
                        zg_upstream_err_t err) {
  zg_http_session_t *s = r->data;
  zg_http_upstream_t *u;
  switch (err) {
  case ZG_UP_OK:
    break;
  case ZG_UP_NO_TLS:
    respond_error(s, ZG_TERM_NO_TLS_CONTEXT, 502,
                  "no TLS context for the instances");
    return;
  case ZG_UP_NOMEM:
    respond_error(s, ZG_TERM_OUT_OF_MEMORY, 503, "out of memory");
    return;
  default:
    respond_error(s, ZG_TERM_UNREACHABLE, 502,
                  "no instance of the service could be reached");
    return;
  }
  u = zg_h1c_of(c, s->gw);
  if (s->state != HS_CONNECT) {
    zg_h1c_close(u);
    return;
  }
  u->s = s;
  s->up = u;
  send_request(s);
}

/* Picks an instance not tried yet (and not failed, while others remain)
 * and gets a connection to it; a retry takes a new one. */
static void upstream_connect(zg_http_session_t *s) {
  s->ureq.svc = s->svc;
  s->ureq.cb = on_upstream;
  s->ureq.data = s;
  s->ureq.tag = "http";
  s->ureq.alpn_http = true;
  s->ureq.conn_size = sizeof(zg_http_upstream_t);
  s->ureq.conn_off = offsetof(zg_http_upstream_t, c);
  s->ureq.idle = &s->gw->up_idle;
  s->ureq.fresh = s->retried;
  zg_upstream_connect(&s->ureq);
}

/* ---- the request head ------------------------------------------------ */

static int req_on_body(llhttp_t *p, const char *at, size_t len) {
  zg_http_session_t *s = p->data;
  zg_http_upstream_t *u = s->up;
  uint64_t limit = s->gw->cfg->proxy.max_request_body;
  if (!u)
    return -1;
  s->body_bytes += len;
  /* A Content-Length over the limit was refused with the head; a chunked
   * body is counted as it comes. */
  if (limit && s->body_bytes > limit) {
    s->too_big = 1;
    llhttp_set_error_reason(p, "request body too large");
    return -1;
  }
  if (s->req_chunked)
    return zg_h1c_chunk(u, at, len) ? -1 : 0;
  return zg_h1c_stage(u, at, len) ? -1 : 0;
}

static int req_on_message_complete(llhttp_t *p) {
  zg_http_session_t *s = p->data;
  if (s->req_chunked && s->up && zg_h1c_stage(s->up, "0\r\n\r\n", 5) != 0)
    return -1;
  s->req_done = 1;
  if (s->up)
    s->sent_ms = uv_now(s->gw->loop); /* response_timeout starts now */
  return HPE_PAUSED; /* the next pipelined request waits its turn */
}

/* The head is in: what the exchange records of it, for the access log
 * and the metrics. Returns the head's length in the input buffer. */
static size_t head_record(zg_http_session_t *s) {
  zg_conn_ticket_head_done(&s->conn); /* max_head_connections */
  s->requests++;
  s->state = HS_CONNECT;
  s->req->buf = s->in + 0;
  s->req->is_request = true;
  s->req->method = s->rp.method;
  zg_http_head_framing(s->req, &s->rp);
  s->head_req = s->rp.method == HTTP_HEAD;
  s->client_keep = zg_http_keep_alive(s->req);
  request_begin(s);
  s->method = llhttp_method_name((llhttp_method_t)s->rp.method);
  if (s->gw->access_log) {
    free(s->target);
    s->target = strndup(s->req->buf + s->req->url_off, s->req->url_len);
  }
  return (size_t)(llhttp_get_error_pos(&s->rp) - (s->in + s->head_start));
}

/* The routed request is taken by its service, or refused: a body over
 * max_request_body (413), no live instance (503), no client certificate
 * for a service that requires one (421). 0, or -1 once answered. `subject`
 * receives the verified client certificate's subject ("" when none). */
static int request_admit(zg_http_session_t *s, const zg_routed_t *rt,
                         char *subject, size_t subject_cap) {
  const zg_http_target_t *tg = &s->hl->targets[rt->route->service];
  uint64_t max_body = s->gw->cfg->proxy.max_request_body;
  s->svc = zg_service_ref(tg->svc);
  s->strip = tg->strip;
  s->svc->accepted++;
  s->svc->active++;
  if (max_body && s->req->has_length && s->req->content_length > max_body) {
    respond_error(s, ZG_TERM_BAD_REQUEST, 413,
                  "request body too large"); /* RFC 9110 §15.5.14 */
    return -1;
  }
  zg_pool_unref(s->ureq.pool);
  s->ureq.pool = zg_service_pool(s->svc);
  if (!s->ureq.pool) {
    char msg[160];
    uint64_t total;
    snprintf(msg, sizeof(msg), "service %s has no live instance",
             s->svc->conf->name);
    if (zg_service_refused(s->svc, &total))
      zg_warn("http", "%s (%llu requests refused so far)", msg,
              (unsigned long long)total);
    respond_error(s, ZG_TERM_NO_INSTANCE, 503, msg);
    return -1;
  }
  zg_pool_ref(s->ureq.pool);
  s->ureq.ntried = 0;
  subject[0] = '\0';
  /* A service that requires client certificates takes only connections
   * whose handshake checked one against its CA (RFC 9110 §15.5.20). */
  if (s->tls && zg_tls_conn_client_subject(s->tls, s->svc->conf->tls_client_ca,
                                           s->svc->conf->tls_verify, subject,
                                           subject_cap) != 0) {
    respond_error(s, ZG_TERM_BAD_REQUEST, 421,
                  "this connection was not made with a client certificate "
                  "for this host");
    return -1;
  }
  return 0;
}

/* Host and X-Forwarded-Host for the instance, and the protocol switch the
 * client asks for (kept in s->upgrade). zg_http_route_request bounds the
 * authority and Host below host_cap. */
static void request_forwarding(zg_http_session_t *s, const zg_routed_t *rt,
                               zg_http_req_out_t *o, char *host_buf,
                               size_t host_cap) {
  const zg_hdr_t *up;
  size_t host_len;
  if (rt->authority_len > 0) {
    host_len = rt->authority_len < host_cap ? rt->authority_len : host_cap - 1;
    memcpy(host_buf, rt->authority, host_len);
    host_buf[host_len] = '\0';
    o->host = host_buf;
    o->fwd_host = host_buf;
  } else if (rt->host) {
    host_len =
        rt->host->value_len < host_cap ? rt->host->value_len : host_cap - 1;
    memcpy(host_buf, s->in + rt->host->value_off, host_len);
    host_buf[host_len] = '\0';
    o->fwd_host = host_buf;
  }
  s->upgrade[0] = '\0';
  up = zg_http_find(s->req, "upgrade");
  if (up && zg_http_connection_has(s->req, "upgrade") && s->req->minor >= 1 &&
      up->value_len < sizeof(s->upgrade)) {
    snprintf(s->upgrade, sizeof(s->upgrade), "%.*s", (int)up->value_len,
             s->in + up->value_off);
    o->upgrade = s->upgrade;
  }
}

/* The request head for the instance, into s->up_head: a pooled block
 * holds nearly every head; a larger one is written again into a heap
 * buffer. 0, or -1 when it does not fit either. */
static int request_head_write(zg_http_session_t *s,
                              const zg_http_req_out_t *o) {
  int n = -1;
  zg_http_buf_release(s->gw, &s->up_head, &s->up_head_cap);
  if ((s->up_head = zg_buf_get(s->gw)) != NULL) {
    s->up_head_cap = ZG_BUF_SIZE;
    n = zg_http_write_request(s->up_head, s->up_head_cap, s->req, o);
  }
  if (n < 0) {
    zg_http_buf_release(s->gw, &s->up_head, &s->up_head_cap);
    if ((s->up_head = malloc(OUT_HEAD_MAX)) != NULL) {
      s->up_head_cap = OUT_HEAD_MAX;
      n = zg_http_write_request(s->up_head, s->up_head_cap, s->req, o);
    }
  }
  if (n < 0)
    return -1;
  s->up_head_len = (size_t)n;
  return 0;
}

/* The head is in: check it, route it, rewrite it, then find an instance.
 */
static void head_complete(zg_http_session_t *s) {
  size_t head_len = head_record(s);
  const char *reason;
  zg_routed_t rt;
  char *target;
  zg_http_req_out_t o;
  int status, rc;
  char host_buf[ZG_HOST_MAX + 8];
  char subject[1024];

  status = zg_http_route_request(s->hl->routes, s->req, s->in + s->head_start,
                                 head_len, &rt, &reason);
  if (status != 0) {
    respond_error(s, ZG_TERM_BAD_REQUEST, status, reason);
    return;
  }
  if (request_admit(s, &rt, subject, sizeof(subject)) != 0)
    return;
  /* The target for the instance: prefix stripped if asked; the base path
   * is the chosen instance's, but pools of one service share it in
   * practice, so the first instance's is used for the head. */
  target = zg_buf_get(s->gw); /* ZG_BUF_SIZE >= TARGET_MAX */
  if (!target) {
    session_end(s, ZG_TERM_OUT_OF_MEMORY);
    return;
  }
  if (zg_http_rewrite_path(target, TARGET_MAX, s->ureq.pool->inst[0].base_path,
                           rt.path, rt.path_len, rt.route->prefix, s->strip,
                           rt.query, rt.query_len) < 0) {
    zg_buf_put(s->gw, target);
    respond_error(s, ZG_TERM_BAD_REQUEST, 414, "request target too long");
    return;
  }
  memset(&o, 0, sizeof(o));
  o.target = target;
  o.client_addr = s->client_ip;
  o.proto = s->tls ? "https" : "http";
  o.client_subject = s->tls && subject[0] ? subject : NULL;
  request_forwarding(s, &rt, &o, host_buf, sizeof(host_buf));
  /* Framing from llhttp's flags; zg_http_check_request refused a length
   * above ZG_HTTP_MAX_CONTENT_LENGTH and codings other than chunked. */
  s->req_chunked = s->req->chunked;
  s->req_has_body = zg_http_request_framing(s->req, &o);
  rc = request_head_write(s, &o);
  zg_buf_put(s->gw, target);
  if (rc != 0) {
    respond_error(s, ZG_TERM_BAD_REQUEST, 431, "request head too large");
    return;
  }
  upstream_connect(s);
}

/* Bytes parsed are dropped once nothing points into them, and an empty
 * input buffer goes back to the pool: idle connections hold none. A head
 * being read keeps its bytes (the parsed head's offsets point into them);
 * after head_complete only up_head is needed. */
static void in_settle(zg_http_session_t *s) {
  if (s->state != HS_HEAD && s->in_off == s->in_len)
    s->in_len = s->in_off = 0;
  if (s->in_len == 0 && s->in)
    zg_http_buf_release(s->gw, &s->in, &s->in_cap);
}

/* The parsed head of a request, from the pool, empty (all but the header
 * table, which n_hdr = 0 empties). */
static zg_http_head_t *head_get(zg_gateway_t *gw) {
  zg_http_head_t *h = zg_bufpool_get(&gw->http_heads);
  if (h) {
    memset(h, 0, offsetof(zg_http_head_t, hdr));
    h->n_hdr = 0;
    h->has_length = false;
    h->content_length = 0;
    h->chunked = false;
  }
  return h;
}

/* Runs the request parser over the bytes not parsed yet. */
static void process_input(zg_http_session_t *s) {
  while (s->state != HS_CLOSING && s->in_off < s->in_len) {
    llhttp_errno_t err;
    const char *start = s->in + s->in_off;
    /* Paused: waiting for an instance, or for the response. What the
     * parser passed on before (the end of a body, with the next request's
     * bytes behind it in the same read) is still flushed below. */
    if (s->state == HS_CONNECT || (s->state == HS_EXCHANGE && s->req_done))
      break;
    if (!s->req && !(s->req = head_get(s->gw))) {
      session_end(s, ZG_TERM_OUT_OF_MEMORY);
      return;
    }
    s->rd.head = s->req; /* the reader records into them */
    s->rd.base = s->in;
    err = llhttp_execute(&s->rp, start, s->in_len - s->in_off);
    if (err == HPE_OK) {
      s->in_off = s->in_len;
      break;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      const char *why = llhttp_get_error_reason(&s->rp);
      if (s->up) { /* a body cut short: the connection is unusable */
        zg_http_upstream_t *u = s->up;
        s->up = NULL;
        zg_h1c_release(u, 0);
      }
      if (!s->resp_head)
        respond_error(s, ZG_TERM_BAD_REQUEST,
                      s->rd.too_many ? 431
                      : s->too_big   ? 413
                                     : 400,
                      why ? why : llhttp_errno_name(err));
      else
        session_end(s, ZG_TERM_BAD_REQUEST_BODY);
      return;
    }
    s->in_off = (size_t)(llhttp_get_error_pos(&s->rp) - s->in);
    if (err == HPE_PAUSED_UPGRADE) {
      /* An upgrade request whose instance answered without switching:
       * the connection goes on as HTTP. */
      llhttp_resume_after_upgrade(&s->rp);
      continue;
    }
    if (s->state == HS_HEAD && s->rd.head_seen)
      head_complete(s);
    /* else: request complete (paused); the response decides what next */
  }
  if (s->state == HS_CLOSING)
    return;
  in_settle(s);
  /* What the parser passed on leaves in one write. */
  if (s->up && s->up->ob && zg_h1c_flush(s->up) != 0)
    zg_exchange_upstream_failed(s, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
}

/* ---- exchange end ---------------------------------------------------- */

static void reset_for_next(zg_http_session_t *s) {
  /* Keep the bytes of a pipelined request, at the start of the buffer. */
  size_t left = s->in_len - s->in_off;
  if (left)
    memmove(s->in, s->in + s->in_off, left);
  s->in_len = left;
  s->in_off = 0;
  s->head_start = 0;
  zg_bufpool_put(&s->gw->http_heads, s->req); /* idle: no head held */
  s->req = NULL;
  s->req_done = s->resp_head = s->resp_done = s->close_after = 0;
  s->sent_ms = 0;
  zg_http_reader_reset(&s->rd);
  s->too_big = 0;
  s->body_bytes = 0;
  s->head_begin_ms = 0;
  s->resp_chunked = s->req_chunked = s->req_has_body = s->retried = 0;
  s->head_req = 0;
  s->state = HS_HEAD;
  if (s->svc) {
    s->svc->active--;
    zg_service_unref(s->svc);
    s->svc = NULL;
  }
  zg_pool_unref(s->ureq.pool);
  s->ureq.pool = NULL;
  llhttp_resume(&s->rp);
  if (s->in_len > 0) /* a pipelined head has begun: header_timeout runs */
    s->head_begin_ms = uv_now(s->gw->loop);
  in_settle(s); /* idle keep-alive connections hold no buffer */
}

void zg_exchange_done(zg_http_session_t *s) {
  zg_http_upstream_t *u = s->up;
  /* The end of the response goes out (and is counted) before anything
   * looks at the write queue. */
  if (client_flush(s) != 0) {
    session_end(s, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  request_finish(s, ZG_TERM_DONE, ZG_PHASE_NONE, NULL);
  s->up = NULL;
  if (u)
    zg_h1c_release(u, s->req_done);
  /* No retry after a response: idle connections keep no head. */
  zg_http_buf_release(s->gw, &s->up_head, &s->up_head_cap);
  if (!s->req_done) {
    /* The instance answered before the whole request was sent (an early
     * 413, say): the rest of the body cannot be told from a next
     * request. */
    s->close_after = 1;
  }
  /* After the client's EOF, requests it sent before are still answered. */
  if (s->close_after || (s->client_eof && s->in_len == s->in_off) ||
      winding_down(s)) {
    s->close_after = 1;
    if (zg_queued(&s->client) == 0)
      linger_close(s);
    /* else on_client_write does when the response is out */
    return;
  }
  reset_for_next(s);
  s->last_active_ms = uv_now(s->gw->loop);
  next_request(s);
}

/* Goes on with the next (pipelined) request, unless the client is not
 * reading what it was sent: then nothing more is read or answered until
 * its queue drains (on_client_write), or memory would grow with every
 * pipelined request. */
static void next_request(zg_http_session_t *s) {
  if (zg_queued(&s->client) > HIGH_WATER) {
    /* Reads stop too: a request read now would be answered at once, and
     * an end of stream would end the session with responses queued. */
    s->wait_drain = 1;
    if (s->reading) {
      zg_stream_read_stop(s->tls, (uv_stream_t *)&s->client);
      s->reading = 0;
    }
    return;
  }
  if (s->wait_drain && s->in_len > 0) {
    /* The request held back was the gateway's doing, not the client's:
     * its header_timeout starts now. */
    s->head_begin_ms = uv_now(s->gw->loop);
  }
  s->wait_drain = 0;
  if (s->in_len)
    process_input(s);
  if (s->state == HS_CLOSING)
    return;
  client_eof_check(s);
  client_read_start(s);
}

/* Closing right after a response while the client may still be sending
 * (a refused large head, unread pipelined requests) would make the kernel
 * answer with a reset that can destroy the response before the client
 * reads it. So the write side is shut and what arrives is read and dropped
 * until the client closes or LINGER_MS pass, as nginx's lingering close
 * does. */
#define LINGER_MS 2000

static void on_client_shutdown(uv_shutdown_t *req, int status) {
  zg_http_session_t *s = req->data;
  (void)status;
  if (s->state != HS_CLOSING && status < 0)
    session_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
}

/* Shuts the client's write side. Plain, with nothing queued (the usual
 * case), directly: uv_shutdown would first wait for the socket to be
 * writable, an epoll_ctl and a loop turn for every connection closed. TLS
 * sends its close_notify first. */
static int client_shutdown(zg_http_session_t *s) {
  uv_os_fd_t fd;
  if (!s->tls && zg_queued(&s->client) == 0 &&
      uv_fileno((uv_handle_t *)&s->client, &fd) == 0)
    return shutdown(fd, SHUT_WR) == 0 ? 0 : UV_EPIPE;
  return zg_stream_shutdown(s->tls, &s->shutdown_req, (uv_stream_t *)&s->client,
                            on_client_shutdown);
}

static void linger_close(zg_http_session_t *s) {
  if (s->lingering || s->state == HS_CLOSING)
    return;
  s->lingering = 1;
  s->linger_ms = uv_now(s->gw->loop);
  if (s->up) {
    zg_http_upstream_t *u = s->up;
    s->up = NULL;
    zg_h1c_release(u, 0);
  }
  s->shutdown_req.data = s;
  /* Reading goes on through on_client_read, which drops what comes while
   * lingering: no stop and restart (epoll_ctl calls) at every close. */
  if (s->client_eof || client_shutdown(s) != 0 ||
      (!s->reading &&
       zg_stream_read_start(s->tls, (uv_stream_t *)&s->client, on_client_alloc,
                            on_client_read) != 0)) {
    session_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
    return;
  }
  s->reading = 1;
}

static void on_client_write(uv_write_t *req, int status) {
  wblk_t *w = (wblk_t *)req;
  zg_http_session_t *s = w->owner;
  zg_wblk_put(s->gw, w);
  if (s->state == HS_CLOSING)
    return;
  if (status < 0) {
    session_end(s, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  if ((s->resp_done || s->state == HS_HEAD) && s->close_after &&
      zg_queued(&s->client) == 0) {
    linger_close(s);
    return;
  }
  /* The last response of a keep-alive connection is out as the gateway
   * drains or the listener goes: nothing more will come on it. */
  if (winding_down(s) && idle_between_requests(s)) {
    session_end(s, s->gw->draining ? ZG_TERM_IDLE_AT_DRAIN
                                   : ZG_TERM_LISTENER_REMOVED);
    return;
  }
  if (s->wait_drain && zg_queued(&s->client) <= HIGH_WATER / 2) {
    next_request(s);
    if (s->state == HS_CLOSING)
      return;
  }
  /* Drained: read the instance again if it was paused for us. */
  if (s->up && !s->up->c.closing && !s->up->reading && !s->upstream_eof &&
      zg_queued(&s->client) <= HIGH_WATER / 2)
    zg_h1c_reading(s->up);
}

/* ---- tunnel (after 101) ----------------------------------------------- */

/* Each side's write half is shut once what was queued for it is out; the
 * tunnel ends when both are. The request for the instance's side lives in
 * the upstream, which outlives its own handle's close; the client's in the
 * session, likewise. */
static void tunnel_shut_done(zg_http_session_t *s, int status) {
  if (!s || s->state != HS_TUNNEL)
    return;
  if (status < 0) {
    session_end(s, ZG_TERM_TUNNEL_PEER_GONE);
    return;
  }
  if (++s->tunnel_shut == 2)
    session_end(s, ZG_TERM_TUNNEL_CLOSED);
}

static void on_client_tunnel_shutdown(uv_shutdown_t *req, int status) {
  tunnel_shut_done(req->data, status);
}

static void on_upstream_tunnel_shutdown(uv_shutdown_t *req, int status) {
  zg_http_upstream_t *u = req->data;
  tunnel_shut_done(u->s, status);
}

/* Bytes read on one side of a tunnel go to the other; EOF on one side
 * shuts the other's write side; the tunnel ends when both are done. */
static void tunnel_read(zg_http_session_t *s, uv_stream_t *from, ssize_t nread,
                        const char *data, int from_client) {
  zg_http_upstream_t *u = s->up;
  uv_stream_t *to =
      from_client ? (uv_stream_t *)&u->c.tcp : (uv_stream_t *)&s->client;
  if (nread == 0)
    return;
  if (nread < 0) {
    zg_stream_read_stop(from_client ? s->tls : u->c.tls, from);
    if (!from_client)
      u->reading = 0;
    if (nread != UV_EOF) {
      session_end(s,
                  from_client ? ZG_TERM_CLIENT_RESET : ZG_TERM_INSTANCE_RESET);
      return;
    }
    if (from_client) {
      s->client_eof = 1;
      s->reading = 0;
      u->shutdown_req.data = u;
      if (zg_stream_shutdown(u->c.tls, &u->shutdown_req, to,
                             on_upstream_tunnel_shutdown) != 0)
        session_end(s, ZG_TERM_TUNNEL_PEER_GONE);
    } else {
      s->upstream_eof = 1;
      s->shutdown_req.data = s;
      if (zg_stream_shutdown(s->tls, &s->shutdown_req, to,
                             on_client_tunnel_shutdown) != 0)
        session_end(s, ZG_TERM_TUNNEL_PEER_GONE);
    }
    return;
  }
  s->last_active_ms = uv_now(s->gw->loop);
  if (from_client)
    s->req_in += (uint64_t)nread;
  if (from_client
          ? zg_h1c_stage(u, data, (size_t)nread) != 0 || zg_h1c_flush(u) != 0
          : to_client(s, data, (size_t)nread) != 0 || client_flush(s) != 0) {
    session_end(s, ZG_TERM_TUNNEL_WRITE_ERROR);
    return;
  }
  if (zg_queued((uv_tcp_t *)to) > HIGH_WATER) {
    zg_stream_read_stop(from_client ? s->tls : u->c.tls, from);
    if (from_client)
      s->reading = 0;
    else
      u->reading = 0;
  }
}

void zg_exchange_tunnel_read(zg_http_session_t *s, uv_stream_t *from,
                             ssize_t nread, const char *data) {
  tunnel_read(s, from, nread, data, 0);
}

void zg_exchange_tunnel_start(zg_http_session_t *s, const char *rest,
                              size_t len) {
  zg_http_upstream_t *u = s->up;
  s->state = HS_TUNNEL;
  u->keep = 0;
  zg_debug("http", "client %s: %s tunnel to %s", s->client_addr, s->upgrade,
           u->c.key);
  /* Bytes that came with the 101, and any the client sent early. */
  if ((len > 0 && (to_client(s, rest, len) != 0 || client_flush(s) != 0)) ||
      (s->in_len > s->in_off &&
       (zg_h1c_stage(u, s->in + s->in_off, s->in_len - s->in_off) != 0 ||
        zg_h1c_flush(u) != 0))) {
    session_end(s, ZG_TERM_TUNNEL_WRITE_ERROR);
    return;
  }
  s->in_len = s->in_off = 0;
  in_settle(s);
  client_read_start(s);
}

/* ---- client reads ---------------------------------------------------- */

/* Client bytes go into the session's input buffer, taken from the pool
 * when a read comes (in_settle gives it back once it is empty), grown for
 * a head larger than a block. The client is read for as long as the
 * buffer has room, whatever the exchange is waiting for: stopping and
 * starting reads on every request costs epoll_ctl calls. */
static _Thread_local char
    linger_sink[4096]; /* what a lingering client still sends */

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  zg_http_session_t *s = h->data;
  (void)suggested;
  if (s->lingering) {
    b->base = linger_sink;
    b->len = sizeof(linger_sink);
    return;
  }
  b->base = NULL;
  b->len = 0;
  if (!s->in) {
    if (!(s->in = zg_buf_get(s->gw)))
      return; /* UV_ENOBUFS */
    s->in_cap = ZG_BUF_SIZE;
  }
  if (s->in_len == s->in_cap && s->state == HS_HEAD && s->in_cap < IN_BIG) {
    char *big = malloc(IN_BIG);
    if (!big)
      return;
    memcpy(big, s->in, s->in_len);
    zg_buf_put(s->gw, s->in);
    s->in = big;
    s->in_cap = IN_BIG;
  }
  if (s->in_len >= s->in_cap)
    return; /* full: on_client_read stops reading */
  b->base = s->in + s->in_len;
  b->len = s->in_cap - s->in_len;
  if (b->len > ZG_BUF_SIZE)
    b->len = ZG_BUF_SIZE;
}

/* After EOF from the client, once no request is left in the buffer: close
 * when what was answered is out. */
static void client_eof_check(zg_http_session_t *s) {
  if (!s->client_eof || s->state != HS_HEAD)
    return;
  if (s->in_len > 0)
    session_end(s, ZG_TERM_CLIENT_CLOSED_IN_HEAD);
  else if (zg_queued(&s->client) > 0)
    s->close_after = 1; /* on_client_write closes once it is out */
  else
    session_end(s, ZG_TERM_CLIENT_CLOSED);
}

static void on_client_read(uv_stream_t *st, ssize_t nread,
                           const uv_buf_t *buf) {
  zg_http_session_t *s = st->data;
  if (s->state == HS_CLOSING || nread == 0)
    return;
  if (s->lingering) {
    if (nread < 0)
      session_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
    return;
  }
  if (nread == UV_ENOBUFS && s->in && s->in_len >= s->in_cap) {
    zg_stream_read_stop(s->tls, st); /* full: read again once used */
    s->reading = 0;
    return;
  }
  if (s->state == HS_TUNNEL) {
    tunnel_read(s, st, nread, buf->base, 1);
    s->in_len = 0;
    if (s->state != HS_CLOSING)
      in_settle(s);
    return;
  }
  if (nread < 0) {
    zg_stream_read_stop(s->tls, st);
    s->reading = 0;
    if (nread == UV_EOF)
      s->client_eof = 1;
    if (s->state == HS_HEAD && s->in_len == 0 && nread == UV_EOF &&
        zg_queued(&s->client) > 0) {
      s->close_after = 1; /* the last response is still going out */
    } else if (s->state == HS_HEAD && s->in_len == 0) {
      session_end(s, nread == UV_EOF ? ZG_TERM_CLIENT_CLOSED
                                     : ZG_TERM_CLIENT_ERROR);
    } else if (s->state == HS_HEAD) {
      session_end(s, ZG_TERM_CLIENT_CLOSED_IN_HEAD);
    } else if (!s->req_done) {
      session_end(s, ZG_TERM_CLIENT_CLOSED_IN_REQUEST);
    }
    /* else: the response is still to come; closed after it (and after
     * the requests already read, exchange_done and next_request) */
    return;
  }
  if (s->state == HS_HEAD && s->in_len == s->head_start)
    s->head_begin_ms = uv_now(s->gw->loop);
  s->in_len += (size_t)nread;
  s->req_in += (uint64_t)nread;
  s->last_active_ms = uv_now(s->gw->loop);
  if (s->state == HS_HEAD && s->in_len - s->head_start >= HEAD_MAX) {
    respond_error(s, ZG_TERM_BAD_REQUEST, 431, "request head too large");
    return;
  }
  process_input(s);
  if (s->state == HS_CLOSING || !s->reading)
    return;
  /* Backpressure only: a full buffer (the exchange is not taking bytes
   * yet: waiting for an instance, or pipelined requests waiting for a
   * response), or an instance slower than the client's body. */
  if ((s->in && s->in_len >= s->in_cap && s->state != HS_HEAD) ||
      (s->state == HS_EXCHANGE && !s->req_done && s->up &&
       zg_queued(&s->up->c.tcp) > HIGH_WATER)) {
    zg_stream_read_stop(s->tls, st);
    s->reading = 0;
  }
}

static void client_read_start(zg_http_session_t *s) {
  if (s->reading || s->client_eof || s->wait_drain || s->state == HS_CLOSING)
    return;
  if (zg_stream_read_start(s->tls, (uv_stream_t *)&s->client, on_client_alloc,
                           on_client_read) == 0)
    s->reading = 1;
}

/* One timer per session: the idle timeout between requests and while a
 * body flows, the service's response_timeout while waiting for a response
 * head. */
static void on_session_timer(uv_timer_t *t) {
  zg_http_session_t *s = t->data;
  uint64_t now = uv_now(s->gw->loop);
  uint64_t idle = s->gw->cfg->proxy.idle_timeout_ms;
  if (s->state == HS_CLOSING)
    return;
  if (s->lingering) {
    if (now - s->linger_ms >= LINGER_MS)
      session_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
    return;
  }
  if (s->tls && !zg_tls_established(s->tls)) {
    if (now - s->last_active_ms >= s->gw->cfg->proxy.header_timeout_ms) {
      zg_tls_handshake_timed_out(s->tls);
      session_end(s, ZG_TERM_TLS_HANDSHAKE_TIMEOUT);
    }
    return;
  }
  /* Slow heads (slowloris): the whole head within header_timeout; not
   * while a pipelined head is held back until the client reads. */
  if (s->state == HS_HEAD && !s->wait_drain && s->in_len > s->head_start &&
      s->head_begin_ms &&
      now - s->head_begin_ms >= s->gw->cfg->proxy.header_timeout_ms) {
    respond_error(s, ZG_TERM_HEAD_TIMEOUT, 408,
                  "request head not received in time");
    return;
  }
  if (s->svc && s->sent_ms && !s->resp_head &&
      now - s->sent_ms >= s->svc->conf->response_timeout_ms) {
    if (s->up)
      s->up->keep = 0;
    s->retried = 1; /* a timeout is not retried */
    zg_exchange_upstream_failed(s, ZG_TERM_RESPONSE_TIMEOUT, 504);
    return;
  }
  if (idle && now - s->last_active_ms >= idle &&
      !(s->sent_ms && !s->resp_head)) {
    session_end(s, ZG_TERM_IDLE_TIMEOUT);
    return;
  }
}

static void on_client_handshake(zg_tls_conn_t *c, int status, void *arg) {
  zg_http_session_t *s = arg;
  (void)c;
  if (s->state == HS_CLOSING)
    return;
  if (status < 0) {
    session_end(s, status == UV_EOF ? ZG_TERM_CLIENT_CLOSED
                                    : ZG_TERM_TLS_HANDSHAKE_FAILED);
    return;
  }
  s->last_active_ms = uv_now(s->gw->loop);
  client_read_start(s);
}

static void on_connection(uv_stream_t *server, int status) {
  zg_http_listener_t *hl = server->data;
  zg_gateway_t *gw = hl->gw;
  zg_tls_server_t *srv;
  zg_http_session_t *s;
  zg_conn_ticket_t conn;
  if (status < 0) {
    zg_warn("http", "accept failed on %s: %s", hl->addr.text,
            uv_strerror(status));
    return;
  }
  if (zg_gateway_admit(gw, server, true, &conn, hl->addr.text) != 0)
    return;
  /* Sessions are pooled too: a new connection per request allocates
   * nothing either. */
  s = zg_bufpool_get(&gw->http_spool);
  if (s)
    memset(s, 0, sizeof(*s));
  if (!s) {
    zg_error("http", "out of memory accepting a client on %s", hl->addr.text);
    zg_conn_ticket_release(&conn);
    zg_listener_drop(server);
    return;
  }
  s->conn = conn;
  s->gw = gw;
  s->hl = hl;
  hl->refs++;
  hl->accepted++;
  hl->active++;
  uv_tcp_init(gw->loop, &s->client);
  uv_timer_init(gw->loop, &s->timer);
  s->client.data = s;
  s->timer.data = s;
  s->handles = 2;
  s->next = gw->http_sessions;
  if (gw->http_sessions)
    gw->http_sessions->prev = s;
  gw->http_sessions = s;
  llhttp_init(&s->rp, HTTP_REQUEST, &req_settings);
  s->rp.data = s;
  s->last_active_ms = uv_now(gw->loop);
  if (uv_accept(server, (uv_stream_t *)&s->client) != 0) {
    session_end(s, ZG_TERM_ACCEPT_FAILED);
    return;
  }
  uv_tcp_nodelay(&s->client, 1);
  zg_peer_name(&s->client, s->client_ip, sizeof(s->client_ip), s->client_addr,
               sizeof(s->client_addr));
  uv_timer_start(&s->timer, on_session_timer, 250, 250);
  if (gw->n_tls > 0 && (srv = zg_gateway_tls(gw, &hl->addr)) != NULL) {
    if (!(s->tls = zg_tls_conn_server(srv, &s->client, s->client_addr)))
      session_end(s, ZG_TERM_OUT_OF_MEMORY);
    else if (zg_tls_handshake(s->tls, on_client_handshake, s) != 0)
      session_end(s, ZG_TERM_CLIENT_ERROR);
    return;
  }
  client_read_start(s);
}

/* ---- listeners ------------------------------------------------------- */

static void settings_init(void) {
  zg_http_request_settings(&req_settings, req_on_body, req_on_message_complete);
  zg_h1c_settings_init();
}

static int same_addr(const zg_listen_addr_t *a, const zg_listen_addr_t *b) {
  return strcmp(a->text, b->text) == 0 ||
         (a->ss.ss_family == b->ss.ss_family &&
          memcmp(&a->ss, &b->ss,
                 a->ss.ss_family == AF_INET
                     ? sizeof(struct sockaddr_in)
                     : sizeof(struct sockaddr_in6)) == 0);
}

/* ---- listeners -----------------------------------------------------------
 * One per address, shared by the HTTP services (configured and discovered)
 * on it. Reference-counted: the gateway holds one while the address is in
 * use, each session one, so that a listener dropped by a reload keeps its
 * routes (and their services) for the connections it already has. */

static void targets_release(zg_http_target_t *t, size_t n) {
  for (size_t i = 0; i < n; i++)
    zg_service_unref(t[i].svc);
  free(t);
}

static void listener_free_if_done(zg_http_listener_t *hl) {
  if (hl->refs > 0 || hl->handle_open)
    return;
  zg_route_table_free(hl->routes);
  targets_release(hl->targets, hl->n_targets);
  free(hl);
}

static void on_listener_closed(uv_handle_t *h) {
  zg_http_listener_t *hl = h->data;
  hl->handle_open = 0;
  listener_free_if_done(hl);
}

static void listener_unref(zg_http_listener_t *hl) {
  if (--hl->refs == 0)
    listener_free_if_done(hl);
}

static void listener_close(zg_http_listener_t *hl) {
  if (hl->listening) {
    hl->listening = 0;
    uv_close((uv_handle_t *)&hl->tcp, on_listener_closed);
  }
}

static zg_http_listener_t *zg_http_listener_open(zg_gateway_t *gw,
                                                 const zg_listen_addr_t *addr) {
  zg_http_listener_t *hl = calloc(1, sizeof(*hl));
  int rc;
  if (!hl)
    return NULL;
  {
    static uv_once_t once = UV_ONCE_INIT; /* workers start on threads */
    uv_once(&once, settings_init);
  }
  hl->gw = gw;
  hl->addr = *addr;
  hl->refs = 1;
  rc = zg_listener_start(gw->loop, &hl->tcp, &hl->addr, on_connection,
                         zg_gateway_listen_flags(gw));
  hl->tcp.data = hl;
  hl->handle_open = 1;
  hl->listening = 1;
  if (rc != 0) {
    zg_error("gateway", "cannot listen on %s: %s", addr->text, uv_strerror(rc));
    listener_close(hl);
    listener_unref(hl);
    return NULL;
  }
  return hl;
}

void zg_http_listener_discard(zg_http_listener_t *hl) {
  listener_close(hl);
  listener_unref(hl);
}

static zg_http_listener_t *listener_find(zg_gateway_t *gw,
                                         const zg_listen_addr_t *addr) {
  for (size_t k = 0; k < gw->n_http_listeners; k++)
    if (same_addr(&gw->http_listeners[k]->addr, addr))
      return gw->http_listeners[k];
  return NULL;
}

static int listener_add(zg_gateway_t *gw, zg_http_listener_t *hl) {
  if (gw->n_http_listeners == gw->cap_http_listeners) {
    size_t cap = gw->cap_http_listeners ? gw->cap_http_listeners * 2 : 4;
    zg_http_listener_t **n = realloc(gw->http_listeners, cap * sizeof(*n));
    if (!n)
      return UV_ENOMEM;
    gw->http_listeners = n;
    gw->cap_http_listeners = cap;
  }
  gw->http_listeners[gw->n_http_listeners++] = hl;
  return 0;
}

/* The routes of one listener: every HTTP service on its address, the
 * configured ones first so that they win a tie with a discovered one. */
static int listener_routes(zg_gateway_t *gw, zg_http_listener_t *hl) {
  size_t cap = 0, n = 0;
  zg_route_t *routes;
  zg_http_target_t *targets;
  zg_route_table_t *table;
  for (size_t i = 0; i < gw->n_services; i++)
    cap += gw->services[i]->conf->protocol == ZG_PROTO_HTTP ? 2 : 0;
  routes = calloc(cap ? cap : 1, sizeof(*routes));
  targets = calloc(cap ? cap : 1, sizeof(*targets));
  if (!routes || !targets) {
    free(routes);
    free(targets);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < gw->n_services; i++) {
    zg_service_t *svc = gw->services[i];
    const zg_service_conf_t *sc = svc->conf;
    if (sc->protocol != ZG_PROTO_HTTP || !same_addr(&sc->listen, &hl->addr))
      continue;
    if (!svc->discover) {
      routes[n] = (zg_route_t){sc->host, sc->path_prefix, n, 0};
      targets[n++] = (zg_http_target_t){zg_service_ref(svc), sc->strip_prefix};
      continue;
    }
    /* Discovered: /NAME/ stripped on any host, and the virtual host
     * NAME.DOMAIN whole (configured routes of that exact host still
     * apply). */
    routes[n] = (zg_route_t){NULL, sc->path_prefix, n, 0};
    targets[n++] = (zg_http_target_t){zg_service_ref(svc), 1};
    if (sc->host) {
      routes[n] = (zg_route_t){sc->host, "/", n, 1};
      targets[n++] = (zg_http_target_t){zg_service_ref(svc), 0};
    }
  }
  table = zg_route_table_new(routes, n);
  free(routes);
  if (!table) {
    targets_release(targets, n);
    return UV_ENOMEM;
  }
  /* Lookups are synchronous: nothing holds the old table past this. */
  zg_route_table_free(hl->routes);
  targets_release(hl->targets, hl->n_targets);
  hl->routes = table;
  hl->targets = targets;
  hl->n_targets = n;
  return 0;
}

size_t zg_http_instance_active(zg_gateway_t *gw, const zg_service_t *svc,
                               const char *key) {
  size_t n = 0;
  for (zg_http_session_t *s = gw->http_sessions; s; s = s->next)
    n +=
        s->svc == svc && (s->up || s->ureq.c) && !strcmp(s->ureq.instance, key);
  return n;
}

int zg_http_routes_update(zg_gateway_t *gw) {
  int rc = 0;
  for (size_t i = 0; i < gw->n_http_listeners; i++)
    if (listener_routes(gw, gw->http_listeners[i]) != 0)
      rc = UV_ENOMEM;
  return rc;
}

static int addr_wanted(const zg_gateway_t *gw, const zg_listen_addr_t *addr) {
  for (size_t i = 0; i < gw->n_services; i++)
    if (gw->services[i]->conf->protocol == ZG_PROTO_HTTP &&
        same_addr(&gw->services[i]->conf->listen, addr))
      return 1;
  for (size_t i = 0; i < gw->cfg->n_discovers; i++)
    if (same_addr(&gw->cfg->discovers[i].listen, addr))
      return 1;
  return 0;
}

/* A listener a reload removes: its keep-alive connections take no new
 * request (the routes they would use are gone with it); idle ones close
 * now, busy ones after their response (Connection: close). */
static void retire(zg_gateway_t *gw, zg_http_listener_t *hl) {
  zg_http_session_t *s, *next;
  hl->retired = 1;
  for (s = gw->http_sessions; s; s = next) {
    next = s->next;
    if (s->hl == hl && idle_between_requests(s))
      session_end(s, ZG_TERM_LISTENER_REMOVED);
  }
}

size_t zg_http_sessions_open(const zg_gateway_t *gw) {
  size_t n = 0;
  for (const zg_http_session_t *s = gw->http_sessions; s; s = s->next)
    n++;
  return n;
}

int zg_http_sync(zg_gateway_t *gw, zg_http_listener_t **opened, size_t n) {
  size_t kept = 0;
  int rc = 0;
  if (!gw->http_started) {
    zg_bufpool_init(&gw->http_wblks, sizeof(wblk_t), MAX_FREE_WBLKS);
    zg_bufpool_init(&gw->http_spool, sizeof(zg_http_session_t),
                    MAX_FREE_SESSIONS);
    zg_bufpool_init(&gw->http_heads, sizeof(zg_http_head_t), MAX_FREE_SESSIONS);
    zg_upidle_start(&gw->up_idle, gw->loop, &gw->cfg, MAX_IDLE_UPSTREAM);
    gw->http_started = 1;
  }
  /* Addresses no longer in use close; their connections go on. */
  for (size_t i = 0; i < gw->n_http_listeners; i++) {
    zg_http_listener_t *hl = gw->http_listeners[i];
    if (addr_wanted(gw, &hl->addr)) {
      gw->http_listeners[kept++] = hl;
      continue;
    }
    zg_info("gateway", "no longer listening on %s (http)", hl->addr.text);
    retire(gw, hl);
    zg_http_listener_discard(hl);
  }
  gw->n_http_listeners = kept;
  for (size_t i = 0; i < n; i++) {
    if (opened[i] && listener_add(gw, opened[i]) != 0) {
      zg_http_listener_discard(opened[i]);
      rc = UV_ENOMEM;
    }
  }
  if (zg_http_routes_update(gw) != 0)
    rc = UV_ENOMEM;
  return rc;
}

int zg_http_addrs_to_open(zg_gateway_t *gw, const zg_config_t *cfg,
                          zg_http_listener_t ***out, size_t *n_out) {
  zg_http_listener_t **list;
  size_t n = 0, cap = cfg->n_services + cfg->n_discovers;
  *out = NULL;
  *n_out = 0;
  if (cap == 0)
    return 0;
  if (!(list = calloc(cap, sizeof(*list))))
    return UV_ENOMEM;
  for (size_t i = 0; i < cap; i++) {
    const zg_listen_addr_t *addr;
    int dup = 0;
    if (i < cfg->n_services) {
      if (cfg->services[i].protocol != ZG_PROTO_HTTP)
        continue;
      addr = &cfg->services[i].listen;
    } else {
      addr = &cfg->discovers[i - cfg->n_services].listen;
    }
    if (listener_find(gw, addr))
      continue;
    for (size_t k = 0; k < n; k++)
      dup |= same_addr(&list[k]->addr, addr);
    if (dup)
      continue;
    if (!(list[n] = zg_http_listener_open(gw, addr))) {
      for (size_t k = 0; k < n; k++)
        zg_http_listener_discard(list[k]);
      free(list);
      return UV_EADDRINUSE;
    }
    n++;
  }
  *out = list;
  *n_out = n;
  return 0;
}

int zg_http_start(zg_gateway_t *gw) {
  const zg_config_t *cfg = gw->cfg;
  zg_http_listener_t **opened;
  size_t n;
  int rc;
  for (size_t i = 0; i < cfg->n_services; i++) {
    const zg_service_conf_t *sc = &cfg->services[i];
    if (sc->protocol == ZG_PROTO_HTTP)
      zg_info("gateway", "service %s: http on %s, host %s, path prefix %s%s",
              sc->name, sc->listen.text, sc->host ? sc->host : "*",
              sc->path_prefix, sc->strip_prefix ? " (stripped)" : "");
  }
  for (size_t i = 0; i < cfg->n_discovers; i++) {
    const zg_discover_conf_t *d = &cfg->discovers[i];
    zg_info("gateway",
            "discover %s: every child of %s is a service on %s (http), path "
            "prefix /CHILD/ (stripped)%s%s",
            d->name, d->zk_root, d->listen.text,
            d->domain ? ", host CHILD." : "", d->domain ? d->domain : "");
  }
  if ((rc = zg_http_addrs_to_open(gw, cfg, &opened, &n)) != 0)
    return rc;
  rc = zg_http_sync(gw, opened, n);
  free(opened);
  return rc;
}

static int idle_between_requests(zg_http_session_t *s) {
  return s->state == HS_HEAD && s->in_len == 0 && !s->req_active &&
         zg_queued(&s->client) == 0;
}

void zg_http_drain(zg_gateway_t *gw) {
  zg_http_session_t *s, *next;
  for (size_t i = 0; i < gw->n_http_listeners; i++)
    listener_close(gw->http_listeners[i]);
  for (s = gw->http_sessions; s; s = next) {
    next = s->next;
    if (idle_between_requests(s))
      session_end(s, ZG_TERM_IDLE_AT_DRAIN);
  }
  zg_upidle_close_all(&gw->up_idle);
}

void zg_http_stop(zg_gateway_t *gw) {
  for (size_t i = 0; i < gw->n_http_listeners; i++)
    listener_close(gw->http_listeners[i]);
  while (gw->http_sessions)
    session_end(gw->http_sessions, ZG_TERM_GATEWAY_STOPPING);
  zg_upidle_stop(&gw->up_idle);
}

void zg_http_free(zg_gateway_t *gw) {
  zg_bufpool_clear(&gw->http_wblks);
  zg_bufpool_clear(&gw->http_spool);
  zg_bufpool_clear(&gw->http_heads);
  for (size_t i = 0; i < gw->n_http_listeners; i++)
    listener_unref(gw->http_listeners[i]);
  free(gw->http_listeners);
  gw->http_listeners = NULL;
  gw->n_http_listeners = 0;
}
