/* The HTTP/2 server codec: one nghttp2 server session on a client
 * connection (h2c with prior knowledge, or ALPN h2 over TLS), one exchange
 * (exchange.c) per stream, reached by it through zg_exchange_srv_ops_t
 * like the HTTP/1.1 codec. See h2.h.
 *
 * Requests: the HPACK fields fill the head model (:method, :path,
 * :authority as Host, cookies joined; version 2.0); the body is framed for
 * the instance by length when the client gave content-length, else as a
 * chunked body whose end is END_STREAM; trailers go to x->req_trailers.
 * Responses: the head's fields minus the connection-specific ones go out
 * as HEADERS, the body as DATA through a data provider that reads the
 * stream's queue (deferred while it is empty), the instance's trailers as
 * a trailing HEADERS.
 *
 * Flow control end to end: the client's DATA is consumed (its window
 * opened again) only once passed on to the instance and the instance's
 * write queue is below the high-water mark; bytes that came before the
 * instance connection was there wait in the stream, bounded by the
 * stream's window. The instance is read while the stream's queue for the
 * client and the connection's total are below their marks.
 *
 * Re-entrancy: nghttp2 is fed (mem_recv) and drained (mem_send) only from
 * the top of the stack (a read, a write completion, the timer, the
 * connection's idle handle); what the exchange asks while it runs is
 * submitted and sent from the idle handle. Closed streams are freed there
 * too, so that no exchange is freed under its own call. */
#include "proxy/h2.h"
#include "proxy/h2_common.h"

#include "core/log.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SOCK_HIGH 65536     /* bytes queued on the socket before pausing */
#define FATAL_GRACE_MS 1000 /* for a GOAWAY to leave before the close */

typedef struct h2_stream h2_stream_t;

struct zg_h2_conn {
  zg_http_session_t *s;
  nghttp2_session *ng;
  uv_idle_t idle;    /* sends and frees what the exchanges left */
  zg_list_t streams; /* h2_stream_t, open or closed but not freed */
  size_t out_total;  /* response bytes queued in all streams */
  double reset_tokens;
  uint64_t reset_ms;
  uint64_t fatal_ms; /* when the connection was condemned */
  zg_term_t why;     /* why the connection ends when it ends by itself */
  unsigned idle_on : 1, goaway : 1, ended : 1, fatal : 1;
};

struct h2_stream {
  zg_http_exchange_t x;
  zg_h2_conn_t *c;
  zg_link_t link;
  int32_t id;
  zg_http_head_t head;
  char *hb; /* field bytes the head points into */
  uint32_t hb_len, hb_cap, hsize;
  uint32_t m_off, m_len, p_off, p_len, a_off, a_len;
  int bad;  /* the status to refuse the head with, or 0 */
  char *rq; /* request body waiting for the instance */
  size_t rq_len, rq_cap, unconsumed;
  zg_h2_queue_t out; /* response body queued for the client */
  uint32_t empty_data;
  uint64_t progress_ms; /* the last DATA in, out, or from the instance */
  zg_term_t term;       /* why the stream closed, when not done */
  unsigned has_method : 1, has_path : 1, head_done : 1, body_go : 1, paused : 1,
      end_seen : 1, end_passed : 1, resp_sent : 1, resp_eof : 1, deferred : 1,
      closed : 1, x_done : 1, x_ended : 1, head_req : 1, cookies : 1;
};

static const zg_exchange_srv_ops_t h2s_ops;
static void h2_send(zg_h2_conn_t *c);

static void schedule(zg_h2_conn_t *c);

/* ---- small buffers ------------------------------------------------------ */

/* Field bytes of the head: the offset of `n` bytes copied in, or -1. */
static int64_t hb_put(h2_stream_t *st, const char *p, size_t n) {
  size_t len = st->hb_len, cap = st->hb_cap;
  int64_t off = (int64_t)len;
  if (zg_h2_buf_append(&st->hb, &len, &cap, p, n) != 0)
    return -1;
  st->hb_len = (uint32_t)len;
  st->hb_cap = (uint32_t)cap;
  return off;
}

/* ---- streams ------------------------------------------------------------ */

static h2_stream_t *stream_new(zg_h2_conn_t *c, int32_t id) {
  zg_http_session_t *s = c->s;
  h2_stream_t *st = calloc(1, sizeof(*st));
  if (!st)
    return NULL;
  st->c = c;
  st->id = id;
  st->term = ZG_TERM_CLIENT_RESET;
  st->x.gw = s->gw;
  st->x.hl = s->hl;
  st->x.client_addr = s->client_addr;
  st->x.client_ip = s->client_ip;
  st->x.tls = s->tls;
  st->x.srv = &h2s_ops;
  st->x.conn = st;
  st->progress_ms = uv_now(s->gw->loop);
  zg_list_push(&c->streams, &st->link);
  return st;
}

/* The stream's exchange ends for `term` (counted, its instance released)
 * unless it already did. */
static void stream_x_end(h2_stream_t *st, zg_term_t term) {
  if (st->x_ended)
    return;
  st->x_ended = 1;
  if (st->x_done)
    zg_exchange_reset(&st->x);
  else
    zg_exchange_abort(&st->x, term, zg_exchange_phase(&st->x));
}

static void stream_free(h2_stream_t *st) {
  zg_h2_conn_t *c = st->c;
  stream_x_end(st, st->term);
  zg_exchange_free(&st->x);
  /* The connection's window for what was never passed on. */
  if (!c->ended && st->rq_len + st->unconsumed > 0)
    nghttp2_session_consume_connection(c->ng, st->rq_len + st->unconsumed);
  c->out_total -= st->out.len;
  zg_link_remove(&st->link);
  free(st->hb);
  free(st->rq);
  free(st->out.b);
  free(st);
}

/* Our reset of a stream: the exchange ends for `term`. */
static void stream_reset(h2_stream_t *st, uint32_t code, zg_term_t term) {
  st->term = term;
  stream_x_end(st, term);
  if (!st->closed)
    nghttp2_submit_rst_stream(st->c->ng, NGHTTP2_FLAG_NONE, st->id, code);
  schedule(st->c);
}

/* ---- the request -------------------------------------------------------- */

/* The HPACK fields, as the head model wants them. */
static int on_header(nghttp2_session *ng, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *ud) {
  h2_stream_t *st =
      nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
  const char *n = (const char *)name, *v = (const char *)value;
  int64_t off;
  (void)flags;
  (void)ud;
  if (!st || frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  st->x.req_in += namelen + valuelen + 4; /* as "name: value\r\n" */
  st->hsize += (uint32_t)(namelen + valuelen + 32);
  if (st->hsize > ZG_H2_MAX_HEADER_LIST) {
    /* Over the list size we announced: 431 (RFC 9113 §10.5.1), the fields
     * no longer kept; a decoded list four times as large (an HPACK bomb)
     * is reset at once. */
    st->bad = 431;
    if (st->hsize <= 4 * ZG_H2_MAX_HEADER_LIST)
      return 0;
    st->term = ZG_TERM_BAD_REQUEST;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM */
  }
  if (st->head_done) { /* trailers */
    zg_http_trailers_t *t = &st->x.req_trailers;
    if (!t->f) {
      if (!(t->f = malloc(ZG_HTTP_MAX_TRAILERS * sizeof(zg_hdr_t) +
                          ZG_HTTP_EXTRA_MAX)))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      t->buf = (char *)(t->f + ZG_HTTP_MAX_TRAILERS);
    }
    if (t->n == ZG_HTTP_MAX_TRAILERS ||
        namelen + valuelen > ZG_HTTP_EXTRA_MAX - t->len)
      return 0; /* dropped */
    t->f[t->n] = (zg_hdr_t){t->len, (uint32_t)namelen,
                            t->len + (uint32_t)namelen, (uint32_t)valuelen};
    memcpy(t->buf + t->len, n, namelen);
    memcpy(t->buf + t->len + namelen, v, valuelen);
    t->len += (uint32_t)(namelen + valuelen);
    t->n++;
    return 0;
  }
  if ((off = hb_put(st, v, valuelen)) < 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (n[0] == ':') {
    if (namelen == 7 && !memcmp(n, ":method", 7)) {
      st->m_off = (uint32_t)off, st->m_len = (uint32_t)valuelen;
      st->has_method = 1;
    } else if (namelen == 5 && !memcmp(n, ":path", 5)) {
      st->p_off = (uint32_t)off, st->p_len = (uint32_t)valuelen;
      st->has_path = 1;
    } else if (namelen == 10 && !memcmp(n, ":authority", 10)) {
      st->a_off = (uint32_t)off, st->a_len = (uint32_t)valuelen;
    }
    return 0;
  }
  if (st->head.n_hdr == ZG_HTTP_MAX_HEADERS) {
    st->bad = 431;
    return 0;
  }
  if (namelen == 6 && !memcmp(n, "cookie", 6))
    st->cookies = 1;
  {
    int64_t noff = hb_put(st, n, namelen);
    if (noff < 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    st->head.hdr[st->head.n_hdr++] = (zg_hdr_t){
        (uint32_t)noff, (uint32_t)namelen, (uint32_t)off, (uint32_t)valuelen};
  }
  return 0;
}

/* Room for `n` more field bytes, so that what follows may copy from hb
 * into hb. */
static int hb_reserve(h2_stream_t *st, size_t n) {
  char *nb;
  if (st->hb_len + n <= st->hb_cap)
    return 0;
  if (!(nb = realloc(st->hb, st->hb_len + n)))
    return -1;
  st->hb = nb;
  st->hb_cap = (uint32_t)(st->hb_len + n);
  return 0;
}

static bool is_cookie(const h2_stream_t *st, const zg_hdr_t *f) {
  return f->name_len == 6 && !memcmp(st->hb + f->name_off, "cookie", 6);
}

/* RFC 9113 §8.2.3: the cookie crumbs are one field again for HTTP/1.1,
 * joined with "; " in the first one's place. */
static int join_cookies(h2_stream_t *st) {
  zg_http_head_t *h = &st->head;
  size_t first = h->n_hdr, kept = 0, need = 0;
  uint32_t start = st->hb_len;
  for (size_t i = 0; i < h->n_hdr; i++)
    if (is_cookie(st, &h->hdr[i]))
      need += h->hdr[i].value_len + 2;
  if (hb_reserve(st, need) != 0)
    return -1;
  for (size_t i = 0; i < h->n_hdr; i++) {
    zg_hdr_t f = h->hdr[i];
    if (!is_cookie(st, &f)) {
      h->hdr[kept++] = f;
      continue;
    }
    if (first == h->n_hdr) {
      first = kept;
      h->hdr[kept++] = f;
    } else {
      memcpy(st->hb + st->hb_len, "; ", 2);
      st->hb_len += 2;
    }
    memcpy(st->hb + st->hb_len, st->hb + f.value_off, f.value_len);
    st->hb_len += f.value_len;
  }
  h->n_hdr = kept;
  if (first < kept) {
    h->hdr[first].value_off = start;
    h->hdr[first].value_len = st->hb_len - start;
  }
  return 0;
}

/* :authority is the Host: it replaces any Host field. */
static int authority_host(h2_stream_t *st) {
  zg_http_head_t *h = &st->head;
  size_t kept = 0;
  int64_t noff;
  if (st->a_len == 0)
    return 0;
  for (size_t i = 0; i < h->n_hdr; i++)
    if (!(h->hdr[i].name_len == 4 &&
          !strncasecmp(st->hb + h->hdr[i].name_off, "host", 4)))
      h->hdr[kept++] = h->hdr[i];
  h->n_hdr = kept;
  if (kept == ZG_HTTP_MAX_HEADERS) {
    st->bad = 431;
    return 0;
  }
  if ((noff = hb_put(st, "host", 4)) < 0)
    return -1;
  h->hdr[h->n_hdr++] = (zg_hdr_t){(uint32_t)noff, 4, st->a_off, st->a_len};
  return 0;
}

/* Framing for the instance: content-length when given, else chunked
 * unless the HEADERS ended the stream. */
static void request_framing(h2_stream_t *st, bool end_stream) {
  zg_http_head_t *h = &st->head;
  const zg_hdr_t *cl = zg_http_find(h, "content-length");
  h->has_length = false;
  h->chunked = false;
  h->content_length = 0;
  if (cl) {
    uint64_t v = 0;
    for (uint32_t i = 0; i < cl->value_len; i++)
      v = v * 10 + (uint64_t)(st->hb[cl->value_off + i] - '0');
    h->has_length = true; /* nghttp2 checked the digits and the DATA */
    h->content_length = v;
  } else if (!end_stream) {
    h->chunked = true;
  }
}

/* The request head is complete: checked, then the exchange's. */
static void request_head(h2_stream_t *st, bool end_stream) {
  zg_http_head_t *h = &st->head;
  const char *reason = NULL;
  int status = st->bad;
  st->head_done = 1;
  st->end_seen = end_stream;
  if ((st->cookies && join_cookies(st) != 0) || authority_host(st) != 0) {
    stream_reset(st, NGHTTP2_INTERNAL_ERROR, ZG_TERM_OUT_OF_MEMORY);
    return;
  }
  h->buf = st->hb;
  h->is_request = true;
  h->method =
      st->has_method ? zg_http_method_from(st->hb + st->m_off, st->m_len) : -1;
  h->url_off = st->p_off;
  h->url_len = st->p_len;
  request_framing(st, end_stream);
  st->head_req = st->m_len == 4 && !memcmp(st->hb + st->m_off, "HEAD", 4);
  st->x.req = h;
  /* The HTTP/1.1 checks (Host, target, CONNECT) apply alike. */
  h->major = 1;
  h->minor = 1;
  if (status == 0 && (h->method < 0 || !st->has_path)) {
    status = 501;
    reason = "method not implemented";
  }
  if (status == 0 && (status = zg_http_check_request(h, &reason)) < 0)
    status = 400;
  if (status == 431)
    reason = "request head too large";
  h->major = 2;
  h->minor = 0;
  zg_exchange_request_head(&st->x, status, reason);
}

/* What of the request body and its end can go to the instance now. */
static void request_pump(h2_stream_t *st) {
  zg_h2_conn_t *c = st->c;
  zg_http_exchange_t *x = &st->x;
  if (!st->body_go || st->x_ended || st->x_done)
    return;
  if (st->rq_len > 0 && !st->paused) {
    size_t n = st->rq_len;
    int rc = zg_exchange_request_body(x, st->rq, n);
    st->rq_len = 0;
    st->unconsumed += n;
    if (rc != 0) {
      zg_exchange_instance_drop(x);
      if (!x->resp_head)
        zg_exchange_error(
            x, rc == -2 ? ZG_TERM_BAD_REQUEST : ZG_TERM_INSTANCE_WRITE_ERROR,
            rc == -2 ? 413 : 502,
            rc == -2 ? "request body too large"
                     : "the instance failed to take the body");
      else
        stream_reset(st, NGHTTP2_INTERNAL_ERROR, ZG_TERM_BAD_REQUEST_BODY);
      return;
    }
    zg_exchange_request_flush(x);
  }
  if (!st->paused && st->unconsumed > 0 && !st->closed) {
    nghttp2_session_consume(c->ng, st->id, st->unconsumed);
    st->unconsumed = 0;
    schedule(c);
  }
  if (st->end_seen && !st->end_passed && st->rq_len == 0 && !x->req_done &&
      x->up) {
    st->end_passed = 1;
    if (zg_exchange_request_end(x) != 0) {
      zg_exchange_upstream_failed(x, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
      return;
    }
    zg_exchange_request_flush(x);
  }
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *ud) {
  zg_h2_conn_t *c = ud;
  h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
  (void)flags;
  if (!st) {
    nghttp2_session_consume_connection(ng, len);
    return 0;
  }
  st->x.req_in += len;
  st->progress_ms = uv_now(c->s->gw->loop);
  /* Answered already (refused, failed, or the instance answered before
   * the body was all in): what still comes is dropped. */
  if (st->x_ended || st->x_done || st->x.req_done) {
    nghttp2_session_consume(ng, id, len);
    return 0;
  }
  if (zg_h2_buf_append(&st->rq, &st->rq_len, &st->rq_cap, (const char *)data,
                       len) != 0) {
    stream_reset(st, NGHTTP2_INTERNAL_ERROR, ZG_TERM_OUT_OF_MEMORY);
    return 0;
  }
  request_pump(st);
  return 0;
}

/* RST_STREAM from the client: a token bucket, past which the connection
 * is told to calm down (CVE-2023-44487). */
static int reset_allowed(zg_h2_conn_t *c) {
  uint64_t now = uv_now(c->s->gw->loop);
  c->reset_tokens += (double)(now - c->reset_ms) * ZG_H2_RESET_RATE / 1000.0;
  if (c->reset_tokens > ZG_H2_RESET_BURST)
    c->reset_tokens = ZG_H2_RESET_BURST;
  c->reset_ms = now;
  if (c->reset_tokens < 1)
    return 0;
  c->reset_tokens -= 1;
  return 1;
}

/* GOAWAY ENHANCE_YOUR_CALM, and nothing more read: what the callback
 * returns stops nghttp2_session_mem_recv. */
static int calm_down(zg_h2_conn_t *c, const char *what) {
  if (!c->fatal) {
    zg_info("http", "client %s: HTTP/2 %s: GOAWAY ENHANCE_YOUR_CALM",
            c->s->client_addr, what);
    c->why = ZG_TERM_BAD_REQUEST;
    c->fatal = 1;
    c->fatal_ms = uv_now(c->s->gw->loop);
    nghttp2_session_terminate_session(c->ng, NGHTTP2_ENHANCE_YOUR_CALM);
  }
  return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame,
                         void *ud) {
  zg_h2_conn_t *c = ud;
  h2_stream_t *st =
      nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
  bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    if (!st || st->x_ended)
      return 0;
    if (!st->head_done)
      request_head(st, end);
    else if (end) {
      st->end_seen = 1;
      request_pump(st);
    }
    return 0;
  case NGHTTP2_DATA:
    if (frame->hd.length == 0 && !end && st &&
        ++st->empty_data > ZG_H2_MAX_EMPTY_DATA)
      return calm_down(c, "empty DATA flood");
    if (st && end && !st->x_ended) {
      st->end_seen = 1;
      request_pump(st);
    }
    return 0;
  case NGHTTP2_RST_STREAM:
    return reset_allowed(c) ? 0 : calm_down(c, "rapid reset");
  default:
    return 0;
  }
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame,
                            void *ud) {
  zg_h2_conn_t *c = ud;
  h2_stream_t *st;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  if (!(st = stream_new(c, frame->hd.stream_id)))
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
  c->s->requests++;
  return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code,
                           void *ud) {
  zg_h2_conn_t *c = ud;
  h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
  (void)code;
  if (!st)
    return 0;
  st->closed = 1;
  nghttp2_session_set_stream_user_data(ng, id, NULL);
  schedule(c); /* freed from the idle handle */
  return 0;
}

/* ---- the response ------------------------------------------------------- */

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud);

/* Fields that are the connection's, not the message's (RFC 9113
 * §8.2.2). */
static bool connection_field(const zg_http_head_t *h, const char *lname) {
  return zg_h2_hop_field(lname, strlen(lname)) ||
         zg_http_connection_has(h, lname) != 0;
}

/* The fields of `h` as nghttp2 name/value pairs with lower-case names,
 * after `pre` pairs already in `nva`; names in `names` (malloc'ed, the
 * caller frees). The count, or -1. */
static int fields_nv(const zg_http_head_t *h, nghttp2_nv *nva, size_t pre,
                     char **names) {
  const zg_hdr_t *f = h->hdr;
  size_t total = 0, at = 0, k = pre;
  char *nb;
  for (size_t i = 0; i < h->n_hdr; i++)
    total += f[i].name_len + 1;
  if (!(nb = malloc(total ? total : 1)))
    return -1;
  *names = nb;
  for (size_t i = 0; i < h->n_hdr; i++) {
    char *ln = nb + at;
    zg_h2_lower(ln, h->buf + f[i].name_off, f[i].name_len);
    ln[f[i].name_len] = '\0';
    at += f[i].name_len + 1;
    if (connection_field(h, ln) ||
        (h->chunked && !strcmp(ln, "content-length")))
      continue;
    nva[k++] = (nghttp2_nv){
        (uint8_t *)ln, (uint8_t *)(uintptr_t)(h->buf + f[i].value_off),
        f[i].name_len, f[i].value_len, NGHTTP2_NV_FLAG_NONE};
  }
  return (int)k;
}

static int op_response_head(void *cx, const zg_http_head_t *resp, bool *no_body,
                            const char **reason, bool *client_cause) {
  h2_stream_t *st = cx;
  zg_h2_conn_t *c = st->c;
  nghttp2_nv nva[ZG_HTTP_MAX_HEADERS + 1];
  nghttp2_data_provider prd;
  char code[8], *names = NULL;
  int n, rc;
  *client_cause = false;
  if (resp->status == 101) {
    *reason = "101 Switching Protocols to an HTTP/2 client";
    return -1;
  }
  *no_body = zg_http_response_bodiless(resp->status, st->head_req);
  if (st->closed)
    return 0;
  snprintf(code, sizeof(code), "%d", resp->status);
  nva[0] = (nghttp2_nv){(uint8_t *)(uintptr_t) ":status", (uint8_t *)code, 7,
                        strlen(code), NGHTTP2_NV_FLAG_NONE};
  if ((n = fields_nv(resp, nva, 1, &names)) < 0)
    return -2;
  prd.source.ptr = st;
  prd.read_callback = data_read;
  if (resp->status < 200)
    rc = nghttp2_submit_headers(c->ng, NGHTTP2_FLAG_NONE, st->id, NULL, nva,
                                (size_t)n, NULL);
  else /* an empty body ends with the HEADERS: a gRPC trailers-only
          response is one frame, as gRPC clients require */
    rc = nghttp2_submit_response(
        c->ng, st->id, nva, (size_t)n,
        *no_body || (resp->has_length && resp->content_length == 0) ? NULL
                                                                    : &prd);
  free(names);
  if (rc != 0)
    return -2;
  if (resp->status >= 200)
    st->resp_sent = 1;
  for (int i = 0; i < n; i++)
    st->x.req_out += nva[i].namelen + nva[i].valuelen + 4;
  schedule(c);
  return 0;
}

static void resume_data(h2_stream_t *st) {
  if (st->deferred && !st->closed) {
    st->deferred = 0;
    nghttp2_session_resume_data(st->c->ng, st->id);
  }
  schedule(st->c);
}

static int op_response_body(void *cx, const char *p, size_t len) {
  h2_stream_t *st = cx;
  if (st->head_req || st->closed || len == 0)
    return 0;
  if (zg_h2_queue_put(&st->out, p, len) != 0)
    return -1;
  st->c->out_total += len;
  st->x.req_out += len; /* counted as queued: the exchange may end first */
  resume_data(st);
  return 0;
}

static int op_response_end(void *cx) {
  h2_stream_t *st = cx;
  st->resp_eof = 1;
  resume_data(st);
  return 0;
}

/* The instance's trailers, as a trailing HEADERS. */
static void submit_trailers(h2_stream_t *st) {
  nghttp2_nv nva[ZG_HTTP_MAX_TRAILERS];
  char names[ZG_HTTP_EXTRA_MAX];
  size_t n = zg_h2_trailers_nv(&st->x.resp_trailers, nva, names, sizeof(names));
  nghttp2_submit_trailer(st->c->ng, st->id, nva, n);
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
  h2_stream_t *st = src->ptr;
  ssize_t n = zg_h2_queue_read(&st->out, buf, length, st->resp_eof,
                               st->x.resp_trailers.n > 0, flags);
  (void)ng;
  (void)id;
  (void)ud;
  if (n == NGHTTP2_ERR_DEFERRED) {
    st->deferred = 1;
    return n;
  }
  st->c->out_total -= (size_t)n;
  if (n > 0)
    st->progress_ms = uv_now(st->c->s->gw->loop);
  if (*flags & NGHTTP2_DATA_FLAG_NO_END_STREAM)
    submit_trailers(st);
  return n;
}

static int op_flush(void *cx) {
  h2_stream_t *st = cx;
  schedule(st->c);
  return 0;
}

/* The gateway's own answer to a gRPC request: a trailers-only response
 * (HTTP 200, grpc-status, grpc-message), one HEADERS frame. */
static int grpc_error(h2_stream_t *st, int status, const char *message) {
  char code[8], msg[512];
  nghttp2_nv nva[4];
  snprintf(code, sizeof(code), "%d", zg_grpc_status(status));
  zg_grpc_message(msg, sizeof(msg), message);
  nva[0] =
      (nghttp2_nv){(uint8_t *)(uintptr_t) ":status",
                   (uint8_t *)(uintptr_t) "200", 7, 3, NGHTTP2_NV_FLAG_NONE};
  nva[1] = (nghttp2_nv){(uint8_t *)(uintptr_t) "content-type",
                        (uint8_t *)(uintptr_t) "application/grpc", 12, 16,
                        NGHTTP2_NV_FLAG_NONE};
  nva[2] = (nghttp2_nv){(uint8_t *)(uintptr_t) "grpc-status", (uint8_t *)code,
                        11, strlen(code), NGHTTP2_NV_FLAG_NONE};
  nva[3] = (nghttp2_nv){(uint8_t *)(uintptr_t) "grpc-message", (uint8_t *)msg,
                        12, strlen(msg), NGHTTP2_NV_FLAG_NONE};
  st->resp_eof = 1;
  st->resp_sent = 1;
  if (nghttp2_submit_response(st->c->ng, st->id, nva, 4, NULL) != 0)
    return -1;
  schedule(st->c);
  return 0;
}

/* The gateway's own answer, as an HTTP/2 response on the stream. */
static int op_error(void *cx, int status, const char *message) {
  h2_stream_t *st = cx;
  char code[8], len[24];
  size_t mlen;
  nghttp2_nv nva[3];
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
  if (st->closed)
    return 0;
  if (st->resp_sent)
    return -1;
  if (!message)
    message = zg_http_reason(status);
  if (st->x.grpc)
    return grpc_error(st, status, message);
  mlen = strlen(message);
  snprintf(code, sizeof(code), "%d", status);
  snprintf(len, sizeof(len), "%zu", mlen + 1);
  nva[0] = (nghttp2_nv){(uint8_t *)(uintptr_t) ":status", (uint8_t *)code, 7,
                        strlen(code), NGHTTP2_NV_FLAG_NONE};
  nva[1] = (nghttp2_nv){(uint8_t *)(uintptr_t) "content-type",
                        (uint8_t *)(uintptr_t) "text/plain; charset=utf-8", 12,
                        25, NGHTTP2_NV_FLAG_NONE};
  nva[2] = (nghttp2_nv){(uint8_t *)(uintptr_t) "content-length", (uint8_t *)len,
                        14, strlen(len), NGHTTP2_NV_FLAG_NONE};
  if (!st->head_req && (op_response_body(st, message, mlen) != 0 ||
                        op_response_body(st, "\n", 1) != 0))
    return -1;
  st->resp_eof = 1;
  st->resp_sent = 1;
  if (nghttp2_submit_response(st->c->ng, st->id, nva, 3,
                              st->head_req ? NULL : &prd) != 0)
    return -1;
  schedule(st->c);
  return 0;
}

static void op_error_sent(void *cx) {
  (void)cx; /* the stream ends with the response */
}

static void op_end(void *cx, zg_term_t term) {
  stream_reset(cx, NGHTTP2_INTERNAL_ERROR, term);
}

static void op_done(void *cx) {
  h2_stream_t *st = cx;
  st->x_done = 1;
}

static void op_request_body(void *cx) {
  h2_stream_t *st = cx;
  st->body_go = 1;
  request_pump(st);
  /* The head leaves now, also when no body byte came with it yet (an
   * Expect: 100-continue waits for the instance's 100). */
  if (!st->x_ended && !st->x_done && st->x.up)
    zg_exchange_request_flush(&st->x);
}

static void op_request_pause(void *cx) {
  h2_stream_t *st = cx;
  st->paused = 1;
}

static void op_request_resume(void *cx) {
  h2_stream_t *st = cx;
  if (!st->paused)
    return;
  st->paused = 0;
  request_pump(st);
}

/* The stream's queue; over the mark whatever it holds when the
 * connection's total is. */
static size_t op_queued(void *cx) {
  h2_stream_t *st = cx;
  if (st->c->out_total > ZG_H2_CONN_OUT_MAX)
    return st->out.len + HIGH_WATER + 1;
  return st->out.len;
}

static void op_active(void *cx) {
  h2_stream_t *st = cx;
  st->c->s->last_active_ms = st->progress_ms = uv_now(st->c->s->gw->loop);
}

/* No protocol switch over HTTP/2 (the instance codec refuses an
 * unrequested 101 and op_response_head any 101). */
static void op_tunnel_start(void *cx, const char *rest, size_t len) {
  (void)rest;
  (void)len;
  stream_reset(cx, NGHTTP2_INTERNAL_ERROR, ZG_TERM_BAD_RESPONSE);
}
static void op_tunnel_read(void *cx, uv_stream_t *from, ssize_t nread,
                           const char *data) {
  (void)from;
  (void)nread;
  (void)data;
  stream_reset(cx, NGHTTP2_INTERNAL_ERROR, ZG_TERM_BAD_RESPONSE);
}
static void op_tunnel_shut(void *cx, int status) {
  (void)status;
  stream_reset(cx, NGHTTP2_INTERNAL_ERROR, ZG_TERM_BAD_RESPONSE);
}

static const zg_exchange_srv_ops_t h2s_ops = {
    .response_head = op_response_head,
    .response_body = op_response_body,
    .response_end = op_response_end,
    .flush = op_flush,
    .error = op_error,
    .error_sent = op_error_sent,
    .end = op_end,
    .done = op_done,
    .request_body = op_request_body,
    .request_pause = op_request_pause,
    .request_resume = op_request_resume,
    .queued = op_queued,
    .active = op_active,
    .tunnel_start = op_tunnel_start,
    .tunnel_read = op_tunnel_read,
    .tunnel_shut = op_tunnel_shut,
};

/* ---- the connection ----------------------------------------------------- */

static void on_idle(uv_idle_t *h) {
  zg_http_session_t *s = h->data;
  zg_h2_conn_t *c = s->h2;
  uv_idle_stop(h);
  c->idle_on = 0;
  h2_send(c);
}

static void schedule(zg_h2_conn_t *c) {
  if (c->idle_on || c->ended)
    return;
  c->idle_on = 1;
  uv_idle_start(&c->idle, on_idle);
}

/* Closed streams are freed; streams whose instance was paused for the
 * client read it again once their queue and the connection's drained. */
static void streams_settle(zg_h2_conn_t *c) {
  bool conn_ok = c->out_total <= ZG_H2_CONN_OUT_MAX / 2;
  ZG_LIST_FOREACH_SAFE(it, &c->streams) {
    h2_stream_t *st = ZG_LIST_ITEM(it, h2_stream_t, link);
    if (st->closed) {
      stream_free(st);
      continue;
    }
    if (conn_ok && st->x.up && !st->x_ended && st->out.len <= HIGH_WATER / 2)
      zg_exchange_client_drained(&st->x);
  }
}

/* What nghttp2 has to send goes out while the socket takes it; the
 * connection ends once nghttp2 wants neither to read nor to write. */
static void h2_send(zg_h2_conn_t *c) {
  zg_http_session_t *s = c->s;
  if (c->ended)
    return;
  while (zg_queued(&s->client) <= SOCK_HIGH) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(c->ng, &data);
    if (n < 0) {
      zg_h1s_end(s, ZG_TERM_OUT_OF_MEMORY);
      return;
    }
    if (n == 0)
      break;
    if (zg_h1s_stage(s, (const char *)data, (size_t)n) != 0) {
      zg_h1s_end(s, ZG_TERM_CLIENT_WRITE_ERROR);
      return;
    }
  }
  if (zg_h1s_flush(s) != 0) {
    zg_h1s_end(s, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  streams_settle(c);
  if (c->ended)
    return;
  if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
      zg_queued(&s->client) == 0)
    zg_h1s_end(s, c->why);
  else if (c->idle_on == 0 && nghttp2_session_want_write(c->ng) &&
           zg_queued(&s->client) <= SOCK_HIGH)
    schedule(c); /* more became ready while settling */
}

static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_opt;

static void cb_init(void) {
  static const zg_h2_cbs_t f = {on_begin_headers, on_header, on_frame_recv,
                                on_data_chunk, on_stream_close};
  if (zg_h2_session_setup(&f, &g_cbs, &g_opt) != 0)
    return;
  nghttp2_option_set_no_closed_streams(g_opt, 1);
  nghttp2_option_set_stream_reset_rate_limit(g_opt, 1000, 33);
}

void zg_h2s_start(zg_http_session_t *s) {
  static uv_once_t once = UV_ONCE_INIT;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, ZG_H2_MAX_STREAMS},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, ZG_H2_STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, ZG_H2_MAX_HEADER_LIST},
  };
  zg_h2_conn_t *c;
  size_t held = s->in_len;
  uv_once(&once, cb_init);
  if (!g_cbs || !g_opt || !(c = calloc(1, sizeof(*c)))) {
    zg_h1s_end(s, ZG_TERM_OUT_OF_MEMORY);
    return;
  }
  c->s = s;
  c->why = ZG_TERM_CLIENT_CLOSED;
  c->reset_tokens = ZG_H2_RESET_BURST;
  c->reset_ms = uv_now(s->gw->loop);
  if (nghttp2_session_server_new2(&c->ng, g_cbs, c, g_opt) != 0) {
    free(c);
    zg_h1s_end(s, ZG_TERM_OUT_OF_MEMORY);
    return;
  }
  s->h2 = c;
  s->state = HS_REQUEST; /* no HTTP/1.1 head is read any more */
  uv_idle_init(s->gw->loop, &c->idle);
  c->idle.data = s;
  s->handles++;
  zg_conn_ticket_head_done(&s->conn); /* max_head_connections */
  nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv,
                          sizeof(iv) / sizeof(iv[0]));
  nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                        ZG_H2_CONN_WINDOW);
  s->in_len = 0;
  if (held > 0) {
    s->in_len = held;
    zg_h2s_read(s, (ssize_t)0);
    return;
  }
  h2_send(c);
}

void zg_h2s_read(zg_http_session_t *s, ssize_t nread) {
  zg_h2_conn_t *c = s->h2;
  ssize_t rc;
  if (nread < 0) {
    zg_stream_read_stop(s->tls, (uv_stream_t *)&s->client);
    s->reading = 0;
    s->client_eof = 1;
    zg_h1s_end(s, nread == UV_EOF ? (zg_list_empty(&c->streams)
                                         ? ZG_TERM_CLIENT_CLOSED
                                         : ZG_TERM_CLIENT_CLOSED_IN_REQUEST)
                                  : ZG_TERM_CLIENT_ERROR);
    return;
  }
  s->in_len += (size_t)nread;
  s->last_active_ms = uv_now(s->gw->loop);
  rc = c->fatal
           ? (ssize_t)s->in_len
           : nghttp2_session_mem_recv(c->ng, (const uint8_t *)s->in, s->in_len);
  s->in_len = 0;
  zg_http_buf_release(s->gw, &s->in, &s->in_cap);
  if (rc < 0) {
    if (rc == NGHTTP2_ERR_FLOODED)
      zg_info("http", "client %s: HTTP/2 flood: GOAWAY ENHANCE_YOUR_CALM",
              s->client_addr);
    else
      zg_debug("http", "client %s: HTTP/2: %s", s->client_addr,
               nghttp2_strerror((int)rc));
    if (!c->fatal) {
      c->fatal = 1;
      c->fatal_ms = uv_now(s->gw->loop);
      c->why = ZG_TERM_BAD_REQUEST;
      nghttp2_session_terminate_session(c->ng, rc == NGHTTP2_ERR_FLOODED
                                                   ? NGHTTP2_ENHANCE_YOUR_CALM
                                                   : NGHTTP2_PROTOCOL_ERROR);
    }
  }
  if (c->fatal && s->reading) {
    zg_stream_read_stop(s->tls, (uv_stream_t *)&s->client);
    s->reading = 0;
  }
  h2_send(c);
}

void zg_h2s_written(zg_http_session_t *s) {
  h2_send(s->h2);
}

void zg_h2s_timer(zg_http_session_t *s, uint64_t now) {
  zg_h2_conn_t *c = s->h2;
  uint64_t idle = s->gw->cfg->proxy.idle_timeout_ms;
  bool waiting = false;
  /* A condemned connection whose client does not read its GOAWAY. */
  if (c->fatal && now - c->fatal_ms >= FATAL_GRACE_MS) {
    zg_h1s_end(s, c->why);
    return;
  }
  ZG_LIST_FOREACH_SAFE(it, &c->streams) {
    h2_stream_t *st = ZG_LIST_ITEM(it, h2_stream_t, link);
    if (st->closed || st->x_ended)
      continue;
    if (zg_exchange_timeout(&st->x, now))
      continue;
    /* Waiting for the response head: response_timeout's. */
    if (st->x.sent_ms && !st->x.resp_head) {
      waiting = true;
      continue;
    }
    /* Nothing moved for idle_timeout: a body that does not come, a
     * client that opens no window for what is queued for it. */
    if (idle && (!st->x_done || st->out.len > 0) &&
        now - st->progress_ms >= idle)
      stream_reset(st, NGHTTP2_CANCEL, ZG_TERM_IDLE_TIMEOUT);
  }
  if (idle && now - s->last_active_ms >= idle && !waiting) {
    c->why = ZG_TERM_IDLE_TIMEOUT;
    nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
    h2_send(c);
    if (!c->ended)
      zg_h1s_end(s, ZG_TERM_IDLE_TIMEOUT);
    return;
  }
  h2_send(c);
}

void zg_h2s_wind_down(zg_http_session_t *s) {
  zg_h2_conn_t *c = s->h2;
  if (c->goaway || c->ended)
    return;
  c->goaway = 1;
  c->why = s->gw->draining ? ZG_TERM_IDLE_AT_DRAIN : ZG_TERM_LISTENER_REMOVED;
  nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(c->ng),
                        NGHTTP2_NO_ERROR, NULL, 0);
  h2_send(c);
}

void zg_h2s_close(zg_http_session_t *s, zg_term_t term) {
  zg_h2_conn_t *c = s->h2;
  c->ended = 1;
  ZG_LIST_FOREACH_SAFE(it, &c->streams) {
    h2_stream_t *st = ZG_LIST_ITEM(it, h2_stream_t, link);
    st->term = term;
    stream_free(st);
  }
  uv_close((uv_handle_t *)&c->idle, zg_h1s_handle_closed);
}

void zg_h2s_free(zg_http_session_t *s) {
  zg_h2_conn_t *c = s->h2;
  nghttp2_session_del(c->ng);
  free(c);
  s->h2 = NULL;
}

size_t zg_h2s_instance_active(const zg_http_session_t *s,
                              const zg_service_t *svc, const char *key) {
  size_t n = 0;
  ZG_LIST_FOREACH(it, &s->h2->streams) {
    const h2_stream_t *st = ZG_LIST_ITEM(it, h2_stream_t, link);
    n += st->x.svc == svc && (st->x.up || st->x.ureq.c) &&
         !strcmp(st->x.ureq.instance, key);
  }
  return n;
}
