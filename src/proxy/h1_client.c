/* The HTTP/1.1 client codec: one connection to an instance (upstream.h's
 * zg_upconn_t, with this codec's state around it), the request's bytes
 * out, the response read with llhttp (strict mode) and handed to the
 * exchange (exchange.h) as a checked head, body bytes and an end; keep-alive
 * reuse through the loop's idle pool.
 *
 * An upstream connection is read from its connect to its close, idle or
 * not (on_upstream_alloc and on_upstream_read tell which), stopped only
 * while the client is slower than the instance: stopping and starting
 * reads costs epoll_ctl calls (libuv 1.44 re-adds the descriptor). An idle
 * one is read from so that a close by the instance is seen and the
 * connection dropped before anyone uses it. */
#include "proxy/h1.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>

static llhttp_settings_t resp_settings;

static void on_upstream_write(uv_write_t *req, int status);
static void h1c_reading(zg_http_upstream_t *u);
static void h1c_close(zg_http_upstream_t *u);

/* The size line of one chunk of a chunked body (RFC 9112 §7.1). */
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

int zg_chunk_last(const zg_http_trailers_t *t,
                  int (*stage)(void *owner, const char *p, size_t len),
                  void *owner) {
  int rc;
  if (t->n == 0) /* the usual case: one write */
    return stage(owner, "0\r\n\r\n", 5);
  if ((rc = stage(owner, "0\r\n", 3)) != 0)
    return rc;
  for (uint32_t i = 0; i < t->n; i++) {
    const zg_hdr_t *f = &t->f[i];
    if (!zg_http_trailer_forwardable(t->buf + f->name_off, f->name_len))
      continue;
    if ((rc = stage(owner, t->buf + f->name_off, f->name_len)) != 0 ||
        (rc = stage(owner, ": ", 2)) != 0 ||
        (rc = stage(owner, t->buf + f->value_off, f->value_len)) != 0 ||
        (rc = stage(owner, "\r\n", 2)) != 0)
      return rc;
  }
  return stage(owner, "\r\n", 2);
}

static int upstream_flush_cb(void *owner) {
  zg_http_upstream_t *u = owner;
  wblk_t *w = u->ob;
  if (!w)
    return 0;
  u->ob = NULL;
  return zg_wblk_write(u->gw, u->c.tls, (uv_stream_t *)&u->c.tcp, w,
                       on_upstream_write);
}

static int h1c_flush(void *c) {
  return upstream_flush_cb(c);
}

/* Bytes staged for the instance, written at the next h1c_flush. */
static int h1c_stage(zg_http_upstream_t *u, const char *p, size_t len) {
  return zg_wblk_stage(u->gw, &u->ob, u, p, len, upstream_flush_cb);
}

/* One chunk of a chunked request body, staged. */
static int h1c_chunk(zg_http_upstream_t *u, const char *p, size_t len) {
  char size[24];
  int n = zg_chunk_size_line(size, len), rc;
  if ((rc = h1c_stage(u, size, (size_t)n)) != 0 ||
      (rc = h1c_stage(u, p, len)) != 0)
    return rc;
  return h1c_stage(u, "\r\n", 2);
}

/* ---- upstream connections -------------------------------------------- */

static zg_http_upstream_t *upstream_of(zg_upconn_t *c) {
  return (zg_http_upstream_t *)((char *)c - offsetof(zg_http_upstream_t, c));
}

/* The connection is closed (upstream.h frees it next). */
static void on_upconn_closed(zg_upconn_t *c) {
  zg_http_upstream_t *u = upstream_of(c);
  zg_http_buf_release(u->gw, &u->head, &u->head_cap);
}

static void h1c_close(zg_http_upstream_t *u) {
  if (u->c.closing)
    return;
  zg_wblk_put(u->gw, u->ob);
  u->ob = NULL;
  zg_upconn_close(&u->c);
}

static _Thread_local char
    idle_sink[64]; /* anything read while idle ends the connection */

static void idle_read(zg_http_upstream_t *u, ssize_t nread) {
  if (nread == 0 || u->c.closing)
    return;
  /* EOF, an error, or bytes nobody asked for: not reusable. */
  zg_debug("http", "idle connection to %s closed (%s)", u->c.key,
           nread < 0 ? uv_strerror((int)nread) : "unexpected bytes");
  h1c_close(u);
}

/* Done with `u` for this exchange: back to the idle list, or closed. */
static void h1c_release(void *c, int reuse) {
  zg_http_upstream_t *u = c;
  zg_proxy_ctx_t *gw = u->gw;
  u->x = NULL;
  u->rd.trailers = NULL;
  if (!reuse || !u->keep || u->c.closing || gw->stopping || gw->draining ||
      zg_upidle_full(&gw->http->up_idle) || !u->rd.head_seen) {
    h1c_close(u);
    return;
  }
  zg_http_buf_release(gw, &u->head, &u->head_cap);
  u->head_len = 0;
  if (h1c_flush(u) != 0) {
    h1c_close(u);
    return;
  }
  h1c_reading(u);
  if (u->c.closing)
    return;
  u->used = 1;
  zg_upidle_put(&gw->http->up_idle, &u->c);
}

static int resp_on_headers_complete(llhttp_t *p) {
  zg_http_upstream_t *u = p->data;
  zg_http_exchange_t *x = u->x;
  const char *reason;
  int status = p->status_code, rc;
  bool client_cause = false;

  if (!x)
    return -1;
  u->resp.buf = u->head;
  u->resp.is_request = false;
  u->resp.status = status;
  zg_http_head_framing(&u->resp, p);
  if (status == 101 && !x->upgrade[0]) {
    /* Upgrade is passed on only when the client asked for it. */
    llhttp_set_error_reason(p, "unrequested 101 Switching Protocols");
    return -1;
  }
  /* The pre-scan stops at the empty line that ends the head: the body
   * bytes read with it are not looked at. */
  if (zg_http_prescan(u->head, u->head_len, &reason) != 0 ||
      zg_http_check_response(&u->resp, &reason) != 0) {
    llhttp_set_error_reason(p, reason);
    return -1;
  }
  rc = zg_exchange_response_head(x, &u->resp, &reason, &client_cause);
  if (rc < 0) {
    u->client_cause = client_cause;
    if (reason)
      llhttp_set_error_reason(p, reason);
    return -1;
  }
  /* A final or 101 head: body reads go to pooled buffers. An interim one
   * keeps the head buffer for the next head. */
  if (status == 101 || status >= 200)
    u->rd.head_seen = 1;
  return rc;
}

static int resp_on_body(llhttp_t *p, const char *at, size_t len) {
  zg_http_upstream_t *u = p->data;
  if (!u->x)
    return -1;
  return zg_exchange_response_body(u->x, at, len);
}

static int resp_on_message_complete(llhttp_t *p) {
  zg_http_upstream_t *u = p->data;
  zg_http_exchange_t *x = u->x;
  int status = p->status_code;
  if (!x)
    return -1;
  if (status == 101)
    return 0; /* llhttp_execute returns HPE_PAUSED_UPGRADE: a tunnel */
  if (status >= 100 && status < 200) {
    /* Interim: the final response follows on the same connection. */
    u->rd.head_seen = 0;
    u->resp.n_hdr = 0;
    u->resp.reason_len = 0;
    u->rd.value_open = 0;
    return HPE_PAUSED;
  }
  if (zg_exchange_response_end(x) != 0)
    return -1;
  u->keep = llhttp_should_keep_alive(p) ? 1 : 0;
  return HPE_PAUSED; /* one response per exchange */
}

static void on_upstream_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  zg_http_upstream_t *u = h->data;
  (void)suggested;
  if (!u->x) {
    b->base = idle_sink;
    b->len = sizeof(idle_sink);
    return;
  }
  if (!u->rd.head_seen) {
    /* Heads collect in their own buffer so that llhttp's offsets into it
     * stay valid across reads: a pooled block, grown to HEAD_MAX when a
     * head does not fit. */
    if (!u->head && (u->head = zg_buf_get(u->gw)) != NULL)
      u->head_cap = ZG_BUF_SIZE;
    if (u->head && u->head_len == u->head_cap && u->head_cap < HEAD_MAX) {
      char *big = malloc(HEAD_MAX);
      if (big) {
        memcpy(big, u->head, u->head_len);
        zg_buf_put(u->gw, u->head);
        u->head = big;
        u->head_cap = HEAD_MAX;
      }
    }
    b->base = u->head ? u->head + u->head_len : NULL;
    b->len = u->head ? u->head_cap - u->head_len : 0;
    return;
  }
  b->base = zg_buf_get(u->gw);
  b->len = b->base ? ZG_BUF_SIZE : 0;
}

/* Feeds response bytes to the parser and acts on what it says. */
static void upstream_parse(zg_http_upstream_t *u, const char *data,
                           size_t len) {
  zg_http_exchange_t *x = u->x;
  llhttp_errno_t err;
  for (;;) {
    const char *stop;
    u->rd.head = &u->resp; /* the reader records into them */
    u->rd.base = u->head;
    err = llhttp_execute(&u->pp, data, len);
    if (err == HPE_OK)
      return;
    if (err == HPE_PAUSED_UPGRADE) {
      stop = llhttp_get_error_pos(&u->pp);
      u->keep = 0; /* a tunnel: never reused */
      zg_exchange_tunnel_start(x, stop, len - (size_t)(stop - data));
      return;
    }
    if (err != HPE_PAUSED)
      break;
    stop = llhttp_get_error_pos(&u->pp);
    if (x->resp_done) {
      if (stop != data + len)
        u->keep = 0; /* bytes after the response: not reusable */
      zg_exchange_done(x);
      return;
    }
    /* An interim response was forwarded: parse on, from a fresh head. */
    llhttp_resume(&u->pp);
    u->head_len = 0;
    len -= (size_t)(stop - data);
    data = stop;
    if (!u->rd.head_seen) {
      memmove(u->head, data, len);
      data = u->head;
      u->head_len = len;
    }
  }
  zg_warn("http", "instance %s: bad response: %s", u->c.key,
          llhttp_get_error_reason(&u->pp) ? llhttp_get_error_reason(&u->pp)
                                          : llhttp_errno_name(err));
  u->keep = 0;
  zg_exchange_upstream_failed(x, ZG_TERM_BAD_RESPONSE, 502);
}

static void on_upstream_read(uv_stream_t *st, ssize_t nread,
                             const uv_buf_t *buf) {
  zg_http_upstream_t *u = st->data;
  zg_http_exchange_t *x = u->x;
  int in_head = !u->rd.head_seen;
  /* What on_upstream_alloc gave: the idle sink, the head buffer (kept),
   * or a pooled block, returned here. */
  char *pooled = !x || in_head ? NULL : buf->base;

  if (!x) {
    idle_read(u, nread);
    return;
  }
  if (x->phase == ZG_XP_CLOSED) {
    zg_buf_put(u->gw, pooled);
    return;
  }
  if (x->phase == ZG_XP_TUNNEL) {
    zg_exchange_tunnel_read(x, st, nread, buf->base);
    zg_buf_put(u->gw, pooled);
    return;
  }
  if (nread > 0) {
    x->srv->active(x->conn);
    u->answered = 1;
    if (in_head) {
      u->head_len += (size_t)nread;
      upstream_parse(u, buf->base, (size_t)nread);
      /* A full buffer still without the end of the head. */
      if (u->x == x && !u->rd.head_seen && u->head_len >= HEAD_MAX) {
        u->keep = 0;
        zg_exchange_upstream_failed(x, ZG_TERM_RESPONSE_HEAD_TOO_LARGE, 502);
        return;
      }
    } else {
      upstream_parse(u, buf->base, (size_t)nread);
      zg_buf_put(u->gw, pooled);
    }
    zg_exchange_instance_read(x, u);
    return;
  }
  zg_buf_put(u->gw, pooled);
  if (nread == 0)
    return;
  if (nread == UV_EOF && u->rd.head_seen) {
    /* A body read until the connection closes ends here. */
    llhttp_errno_t fin = llhttp_finish(&u->pp);
    if ((fin == HPE_OK || fin == HPE_PAUSED) && x->resp_done) {
      u->keep = 0;
      zg_exchange_done(x);
      return;
    }
  }
  u->keep = 0;
  zg_exchange_upstream_failed(
      x, nread == UV_EOF ? ZG_TERM_INSTANCE_CLOSED : ZG_TERM_INSTANCE_ERROR,
      502);
}

static void h1c_reading(zg_http_upstream_t *u) {
  if (u->reading || u->c.closing)
    return;
  if (zg_stream_read_start(u->c.tls, (uv_stream_t *)&u->c.tcp,
                           on_upstream_alloc, on_upstream_read) == 0)
    u->reading = 1;
  else
    h1c_close(u);
}

/* A response is expected: a fresh parser, reading on. */
static void h1c_response_start(zg_http_upstream_t *u) {
  u->rd.head_seen = 0;
  u->head_len = 0;
  u->resp.n_hdr = 0;
  u->resp.reason_len = 0;
  u->rd.value_open = 0;
  u->keep = 0;
  u->answered = 0;
  u->client_cause = 0;
  u->rd.extra_bytes = 0;
  u->rd.trailers = u->x ? &u->x->resp_trailers : NULL;
  llhttp_init(&u->pp, HTTP_RESPONSE, &resp_settings);
  u->pp.data = u;
  h1c_reading(u);
}

static void on_upstream_write(uv_write_t *req, int status) {
  wblk_t *w = (wblk_t *)req;
  zg_http_upstream_t *u = w->owner;
  zg_http_exchange_t *x = u->x;
  zg_wblk_put(u->gw, w);
  if (!x || x->phase == ZG_XP_CLOSED || u->c.closing)
    return;
  if (status < 0) {
    u->keep = 0;
    zg_exchange_upstream_failed(x, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
    return;
  }
  zg_exchange_instance_drained(x);
}

static int h1c_request_head(zg_http_exchange_t *x, zg_http_req_out_t *o) {
  int n = -1;
  /* The protocol switch the client asked for (its codec kept it), and the
   * framing from llhttp's flags: zg_http_check_request refused a length
   * above ZG_HTTP_MAX_CONTENT_LENGTH and codings other than chunked. */
  o->upgrade = x->upgrade[0] ? x->upgrade : NULL;
  x->req_chunked = x->req->chunked;
  x->req_has_body = zg_http_request_framing(x->req, o);
  /* A pooled block holds nearly every head; a larger one is written again
   * into a heap buffer. */
  zg_http_buf_release(x->gw, &x->up_head, &x->up_head_cap);
  if ((x->up_head = zg_buf_get(x->gw)) != NULL) {
    x->up_head_cap = ZG_BUF_SIZE;
    n = zg_http_write_request(x->up_head, x->up_head_cap, x->req, o);
  }
  if (n < 0) {
    zg_http_buf_release(x->gw, &x->up_head, &x->up_head_cap);
    if ((x->up_head = malloc(OUT_HEAD_MAX)) != NULL) {
      x->up_head_cap = OUT_HEAD_MAX;
      n = zg_http_write_request(x->up_head, x->up_head_cap, x->req, o);
    }
  }
  if (n < 0)
    return -1;
  x->up_head_len = (size_t)n;
  return 0;
}

static int h1c_request_send(void *c) {
  zg_http_upstream_t *u = c;
  if (h1c_stage(u, u->x->up_head, u->x->up_head_len) != 0)
    return -1;
  h1c_response_start(u);
  return u->c.closing ? -2 : 0;
}

static int h1c_request_body(void *c, const char *p, size_t len) {
  zg_http_upstream_t *u = c;
  if (u->x->req_chunked)
    return h1c_chunk(u, p, len) ? -1 : 0;
  return h1c_stage(u, p, len) ? -1 : 0;
}

static int stage_cb(void *owner, const char *p, size_t len) {
  return h1c_stage(owner, p, len);
}

static int h1c_request_end(void *c) {
  zg_http_upstream_t *u = c;
  zg_http_exchange_t *x = u->x;
  /* The client's trailers go on in the last chunk (RFC 9112 §7.1.2). */
  return x->req_chunked && zg_chunk_last(&x->req_trailers, stage_cb, u) != 0
             ? -1
             : 0;
}

/* The codec's connection in a zg_upconn_t given by upstream.h; a new one
 * is set up for the exchange's loop. */
static void *h1c_attach(zg_upconn_t *c, zg_http_exchange_t *x) {
  zg_http_upstream_t *u = upstream_of(c);
  if (!u->gw) { /* a new connection */
    u->gw = x->gw;
    u->rd.head_seen = 1; /* no response head until a request went */
    c->on_closed = on_upconn_closed;
  }
  u->x = x;
  return u;
}

static void h1c_connect_prepare(zg_upstream_req_t *r, zg_proxy_ctx_t *gw) {
  r->alpn_http = true;
  r->conn_size = sizeof(zg_http_upstream_t);
  r->conn_off = offsetof(zg_http_upstream_t, c);
  r->idle = &gw->http->up_idle;
}

static size_t h1c_queued(void *c) {
  zg_http_upstream_t *u = c;
  return zg_queued(&u->c.tcp);
}

/* Backpressure: not on a connection closing or not read. */
static void h1c_read_pause(void *c) {
  zg_http_upstream_t *u = c;
  if (u->c.closing || !u->reading)
    return;
  zg_stream_read_stop(u->c.tls, (uv_stream_t *)&u->c.tcp);
  u->reading = 0;
}

static void h1c_read_resume(void *c) {
  h1c_reading(c);
}

static void h1c_state(void *c, zg_exchange_cli_state_t *st) {
  zg_http_upstream_t *u = c;
  st->key = u->c.key;
  st->reused = u->used;
  st->answered = u->answered;
  st->client_cause = u->client_cause;
}

/* ---- tunnel (after 101) ----------------------------------------------- */

static int h1c_tunnel_write(void *c, const char *p, size_t len) {
  zg_http_upstream_t *u = c;
  int rc = h1c_stage(u, p, len);
  return rc != 0 ? rc : h1c_flush(u);
}

/* The request lives in the upstream, which outlives its own handle's
 * close. */
static void on_upstream_tunnel_shutdown(uv_shutdown_t *req, int status) {
  zg_http_upstream_t *u = req->data;
  if (u->x)
    zg_exchange_tunnel_shut(u->x, status);
}

static int h1c_tunnel_shutdown(void *c) {
  zg_http_upstream_t *u = c;
  u->shutdown_req.data = u;
  return zg_stream_shutdown(u->c.tls, &u->shutdown_req,
                            (uv_stream_t *)&u->c.tcp,
                            on_upstream_tunnel_shutdown);
}

const zg_exchange_cli_ops_t zg_h1c_ops = {
    .connect_prepare = h1c_connect_prepare,
    .attach = h1c_attach,
    .request_head = h1c_request_head,
    .request_send = h1c_request_send,
    .request_body = h1c_request_body,
    .request_end = h1c_request_end,
    .flush = h1c_flush,
    .queued = h1c_queued,
    .read_pause = h1c_read_pause,
    .read_resume = h1c_read_resume,
    .state = h1c_state,
    .release = h1c_release,
    .tunnel_write = h1c_tunnel_write,
    .tunnel_shutdown = h1c_tunnel_shutdown,
};

void zg_h1c_settings_init(void) {
  zg_http_response_settings(&resp_settings, resp_on_headers_complete,
                            resp_on_body, resp_on_message_complete);
}
