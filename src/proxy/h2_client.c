/* The HTTP/2 client codec: an nghttp2 client session on a connection to
 * an instance (upstream.h's zg_upconn_t, made for h2 by the service's
 * upstream_protocol, the registration or ALPN: c->h2), driven by the
 * exchange through zg_exchange_cli_ops_t like the HTTP/1.1 codec
 * (h1_client.c). README "HTTP/2 and gRPC".
 *
 * A connection carries many exchanges at once, one stream each: while it
 * has room under the instance's SETTINGS_MAX_CONCURRENT_STREAMS it waits
 * in the loop's idle pool (upstream.h; `busy` keeps the sweep and a drain
 * off it), where the next exchange for the instance finds it; a full one
 * is out of the pool, so that the next exchange opens another connection,
 * and goes back when a stream ends. With no stream it is an idle
 * keep-alive connection like an HTTP/1.1 one, still read (SETTINGS, PING
 * and GOAWAY answered; a GOAWAY or a close drops it).
 *
 * The request head is the one the HTTP/1.1 codec wrote (x->up_head, kept
 * for a retry), read back into HPACK fields: the request line gives
 * :method and :path, Host gives :authority, :scheme is the instance
 * connection's; names lower-cased; hop-by-hop fields dropped (Connection
 * and what it lists, Keep-Alive, Proxy-Connection, Transfer-Encoding,
 * Upgrade, TE but "trailers"). The body goes as DATA from a queue that a
 * data provider reads (deferred while empty); the exchange pauses the
 * client while the queue is above the high-water mark, and resumes it once
 * the queue went out (drained: after each write and each read, since a
 * WINDOW_UPDATE lets it out in writes the socket may take at once). Only
 * the streams whose exchange waits so (cli->wait_drain, the connection's
 * `waiting` list) are visited then: none, at the cost of a test, on the
 * reads of most connections. The client's trailers go as a trailing
 * HEADERS.
 *
 * Responses: HEADERS fill a head model (the status, the fields; framing
 * by content-length, else none with END_STREAM, else a body whose end is
 * END_STREAM: chunked to an HTTP/1.1 client); DATA to the exchange;
 * trailing HEADERS to x->resp_trailers. Flow control: the instance's DATA
 * is consumed (its window opened again) only while the client keeps up
 * (read_pause holds it back), so a slow client leaves at most a window of
 * bytes with the gateway.
 *
 * Refusals (RFC 9113 8.7): a stream the instance refused (REFUSED_STREAM,
 * above a GOAWAY's last stream id) was not processed; the state says so
 * (refused) and the request body passed on is held (rq.keep: the queue
 * keeps what it sent) until the instance answers or H2C_REPLAY_MAX is
 * passed, so that the exchange sends the request to another instance.
 *
 * Re-entrancy: nghttp2 is fed (mem_recv) from the read callback only; what
 * its callbacks learn that ends or fails the exchange is acted on after
 * mem_recv returned. Acting on one stream may end others (a connection
 * failure): the streams are walked with list.h's zg_walk, in one pass. The
 * session is freed when upstream.h frees the connection. */
#include "proxy/h1.h"
#include "proxy/h2_common.h"

#include "core/log.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define H2C_STREAM_WINDOW HIGH_WATER /* SETTINGS_INITIAL_WINDOW_SIZE */
#define H2C_CONN_WINDOW (1u << 20)   /* the connection's receive window */
#define H2C_MAX_HEADER_LIST 65536    /* SETTINGS_MAX_HEADER_LIST_SIZE */
#define H2C_FIELDS (ZG_HTTP_MAX_HEADERS + 4)
#define H2C_MAX_STREAMS 100       /* at most, whatever the instance allows */
#define H2C_REPLAY_MAX HIGH_WATER /* request body kept for a refusal */

typedef struct h2c h2c_t;

/* One exchange's stream (the `c` the exchange holds). */
typedef struct h2c_stream {
  h2c_t *h;
  zg_link_t link;
  zg_link_t wlink; /* in h->waiting: its exchange waits for a drain */
  zg_http_exchange_t *x;
  int32_t sid; /* 0 before it is submitted and once it closed */
  /* the response head, its field bytes */
  zg_http_head_t resp;
  char *hb;
  size_t hb_len, hb_cap, hsize;
  /* the request body queued for the instance */
  zg_h2_queue_t rq;
  size_t unconsumed; /* response DATA not yet let through */
  zg_term_t fail_term;
  int fail_status;
  unsigned answered : 1, head_done : 1, rq_eof : 1, deferred : 1, paused : 1,
      resp_end : 1, done : 1, fail : 1, reused : 1, refused : 1;
  unsigned client_cause : 1; /* the head was not passed on for the client's
                                sake (its version): not the instance's */
} h2c_stream_t;

/* One connection to an instance. */
struct h2c {
  zg_upconn_t *uc;
  zg_proxy_ctx_t *gw;
  nghttp2_session *ng;
  wblk_t *ob;        /* bytes staged for the instance */
  zg_list_t streams; /* h2c_stream_t in use */
  zg_list_t waiting; /* those paused for the queue to drain, by wlink */
  zg_walk_t *walks;  /* settle's and drained's in progress */
  unsigned active;   /* how many */
  unsigned opened;   /* streams opened on it so far */
  unsigned reading : 1, goaway : 1, broken : 1;
  unsigned settings : 1; /* the instance's SETTINGS arrived */
  unsigned repool : 1;   /* they did in this read: pool_update after it */
};

static void h2c_send(h2c_t *h);
static void conn_failed(h2c_t *h, zg_term_t term);
static void settle(h2c_t *h);

static h2c_t *h2c_of(zg_upconn_t *uc) {
  return uc->data;
}

/* The exchange fails (acted on after mem_recv). */
static void stream_fail(h2c_stream_t *st, zg_term_t term, int status) {
  if (!st->x || st->fail || st->done)
    return;
  st->fail = 1;
  st->fail_term = term;
  st->fail_status = status;
}

static h2c_stream_t *stream_of(h2c_t *h, int32_t id) {
  h2c_stream_t *st = nghttp2_session_get_stream_user_data(h->ng, id);
  return st && st->x ? st : NULL;
}

/* ---- the response ------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame,
                            void *ud) {
  h2c_stream_t *st = stream_of(ud, frame->hd.stream_id);
  (void)ng;
  if (!st)
    return 0;
  st->answered = 1;
  st->rq.keep = false; /* processed: never sent again */
  st->hsize = 0;
  if (!st->head_done) {
    st->resp.n_hdr = 0;
    st->resp.status = 0;
    st->hb_len = 0;
  }
  return 0;
}

static int trailer_field(h2c_stream_t *st, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen) {
  zg_http_trailers_t *t = &st->x->resp_trailers;
  if (!t->f) {
    if (!(t->f = malloc(ZG_HTTP_MAX_TRAILERS * sizeof(zg_hdr_t) +
                        ZG_HTTP_EXTRA_MAX)))
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    t->buf = (char *)(t->f + ZG_HTTP_MAX_TRAILERS);
  }
  if (t->n == ZG_HTTP_MAX_TRAILERS ||
      namelen + valuelen > ZG_HTTP_EXTRA_MAX - t->len)
    return 0; /* dropped */
  t->f[t->n] = (zg_hdr_t){t->len, (uint32_t)namelen, t->len + (uint32_t)namelen,
                          (uint32_t)valuelen};
  memcpy(t->buf + t->len, name, namelen);
  memcpy(t->buf + t->len + namelen, value, valuelen);
  t->len += (uint32_t)(namelen + valuelen);
  t->n++;
  return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *ud) {
  h2c_stream_t *st = stream_of(ud, frame->hd.stream_id);
  size_t noff;
  (void)ng;
  (void)flags;
  if (!st || frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  noff = st->hb_len;
  st->hsize += namelen + valuelen + 32;
  if (st->hsize > H2C_MAX_HEADER_LIST)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM */
  if (st->head_done)
    return trailer_field(st, name, namelen, value, valuelen);
  if (namelen == 7 && !memcmp(name, ":status", 7)) {
    int code = 0;
    for (size_t i = 0; i < valuelen && i < 3; i++)
      code = code * 10 + (value[i] - '0');
    st->resp.status = code;
    return 0;
  }
  if (name[0] == ':')
    return 0;
  if (st->resp.n_hdr == ZG_HTTP_MAX_HEADERS)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (zg_h2_buf_append(&st->hb, &st->hb_len, &st->hb_cap, (const char *)name,
                       namelen) != 0 ||
      zg_h2_buf_append(&st->hb, &st->hb_len, &st->hb_cap, (const char *)value,
                       valuelen) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  st->resp.hdr[st->resp.n_hdr++] =
      (zg_hdr_t){(uint32_t)noff, (uint32_t)namelen, (uint32_t)(noff + namelen),
                 (uint32_t)valuelen};
  return 0;
}

/* The response's framing for the client, from content-length and
 * END_STREAM. */
static void response_framing(h2c_stream_t *st, bool end_stream) {
  zg_http_head_t *r = &st->resp;
  const zg_hdr_t *cl;
  r->buf = st->hb;
  r->is_request = false;
  r->major = 2;
  r->minor = 0;
  r->reason_off = r->reason_len = 0;
  r->has_length = false;
  r->chunked = false;
  r->content_length = 0;
  cl = zg_http_find(r, "content-length");
  if (cl) {
    uint64_t v = 0;
    for (uint32_t i = 0; i < cl->value_len; i++)
      v = v * 10 + (uint64_t)(st->hb[cl->value_off + i] - '0');
    r->has_length = true; /* nghttp2 checked the digits against the DATA */
    r->content_length = v;
  } else if (end_stream) {
    r->has_length = true; /* no body at all */
  } else {
    r->chunked = true; /* its end is END_STREAM */
  }
}

static void response_end(h2c_stream_t *st) {
  if (st->resp_end)
    return;
  st->resp_end = 1;
  if (zg_exchange_response_end(st->x) != 0)
    stream_fail(st, ZG_TERM_CLIENT_WRITE_ERROR, 502);
  else
    st->done = 1;
}

static void response_head(h2c_stream_t *st, bool end_stream) {
  const char *reason = NULL;
  bool client_cause = false;
  int rc;
  if (st->resp.status < 100 || st->resp.status > 999 ||
      st->resp.status == 101) {
    zg_warn("http", "instance %s: bad HTTP/2 response status %d",
            st->h->uc->key, st->resp.status);
    stream_fail(st, ZG_TERM_BAD_RESPONSE, 502);
    return;
  }
  response_framing(st, end_stream);
  if (st->resp.status >= 200)
    st->head_done = 1;
  rc = zg_exchange_response_head(st->x, &st->resp, &reason, &client_cause);
  if (rc < 0) {
    st->client_cause = client_cause;
    if (reason)
      zg_info("http", "instance %s: response not passed on: %s", st->h->uc->key,
              reason);
    stream_fail(st, ZG_TERM_BAD_RESPONSE, 502);
    return;
  }
  if (st->resp.status < 200)
    return; /* interim: the final head follows */
  if (end_stream || rc == 1)
    response_end(st);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame,
                         void *ud) {
  h2c_t *h = ud;
  h2c_stream_t *st;
  bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  (void)ng;
  if (frame->hd.type == NGHTTP2_SETTINGS &&
      !(frame->hd.flags & NGHTTP2_FLAG_ACK) && !h->settings) {
    h->settings = 1;
    h->repool = 1;
    return 0;
  }
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    h->goaway = 1;
    /* Streams above what the instance will process: never seen by it. */
    ZG_LIST_FOREACH(it, &h->streams) {
      h2c_stream_t *s2 = ZG_LIST_ITEM(it, h2c_stream_t, link);
      if (s2->sid > frame->goaway.last_stream_id) {
        s2->answered = 0;
        s2->refused = 1;
      }
    }
    return 0;
  }
  st = stream_of(h, frame->hd.stream_id);
  if (!st || st->fail || st->done)
    return 0;
  if (frame->hd.type == NGHTTP2_HEADERS) {
    if (!st->head_done)
      response_head(st, end);
    else if (end)
      response_end(st);
  } else if (frame->hd.type == NGHTTP2_DATA && end) {
    response_end(st);
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *ud) {
  h2c_stream_t *st = stream_of(ud, id);
  (void)flags;
  if (!st || st->fail || st->done) {
    nghttp2_session_consume(ng, id, len);
    return 0;
  }
  st->unconsumed += len;
  if (zg_exchange_response_body(st->x, (const char *)data, len) != 0)
    stream_fail(st, ZG_TERM_CLIENT_WRITE_ERROR, 502);
  return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code,
                           void *ud) {
  h2c_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
  (void)ud;
  if (!st)
    return 0;
  st->sid = 0;
  if (!st->x || st->done || st->fail)
    return 0;
  if (code == NGHTTP2_REFUSED_STREAM) {
    st->answered = 0; /* not processed: safe to send again */
    st->refused = 1;
  }
  zg_debug("http", "instance %s: HTTP/2 stream closed: %s", st->h->uc->key,
           nghttp2_http2_strerror(code));
  stream_fail(st, ZG_TERM_INSTANCE_RESET, 502);
  return 0;
}

/* ---- the request body --------------------------------------------------- */

static void submit_trailers(h2c_stream_t *st) {
  nghttp2_nv nva[ZG_HTTP_MAX_TRAILERS];
  char names[ZG_HTTP_EXTRA_MAX];
  size_t k = zg_h2_trailers_nv(&st->x->req_trailers, nva, names, sizeof(names));
  nghttp2_submit_trailer(st->h->ng, st->sid, nva, k);
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
  h2c_stream_t *st = src->ptr;
  ssize_t n = zg_h2_queue_read(&st->rq, buf, length, st->rq_eof,
                               st->x && st->x->req_trailers.n > 0, flags);
  (void)ng;
  (void)id;
  (void)ud;
  if (n == NGHTTP2_ERR_DEFERRED)
    st->deferred = 1;
  else if (*flags & NGHTTP2_DATA_FLAG_NO_END_STREAM)
    submit_trailers(st);
  return n;
}

static void resume_data(h2c_stream_t *st) {
  if (st->deferred && st->sid) {
    st->deferred = 0;
    nghttp2_session_resume_data(st->h->ng, st->sid);
  }
}

/* ---- the connection ----------------------------------------------------- */

/* Whether the connection takes another stream now. Until the instance's
 * SETTINGS arrive, one: its SETTINGS_MAX_CONCURRENT_STREAMS is not known
 * yet, and streams above it would wait on this connection (nghttp2 holds
 * them) instead of going to another. */
static bool has_room(h2c_t *h) {
  uint32_t max = h->settings
                     ? nghttp2_session_get_remote_settings(
                           h->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                     : 1;
  return !h->goaway && !h->broken && !h->uc->closing && h->active < max &&
         h->active < H2C_MAX_STREAMS;
}

/* In the idle pool while it has room (busy: streams in use), out of it
 * when full, closed when it can take none any more and carries none. */
static void pool_update(h2c_t *h) {
  zg_upconn_t *uc = h->uc;
  zg_proxy_ctx_t *gw = h->gw;
  bool usable = !h->goaway && !h->broken && !uc->closing && !gw->stopping &&
                !gw->draining && nghttp2_session_want_read(h->ng);
  uc->busy = h->active;
  if (!usable) {
    if (h->active == 0)
      zg_upconn_close(uc);
    else if (uc->idle_in)
      zg_upidle_remove(uc);
    return;
  }
  if (h->active == 0 && !has_room(h)) { /* takes none (SETTINGS said 0) */
    zg_upconn_close(uc);
    return;
  }
  if (uc->idle_in && !has_room(h))
    zg_upidle_remove(uc);
  else if (!uc->idle_in && has_room(h) && !zg_upidle_full(&gw->http->up_idle))
    zg_upidle_put(&gw->http->up_idle, uc);
  else if (!uc->idle_in && h->active == 0)
    zg_upconn_close(uc); /* no room in the pool */
}

/* What was queued for the instance went out (nghttp2 read the streams'
 * bodies as windows opened, the socket took it): each exchange that paused
 * its client for us reads it again, or waits on (it is put back first in
 * `waiting`: behind the walk). After a write completes, and after a read:
 * a WINDOW_UPDATE lets queued body out in writes the socket often takes at
 * once (no write callback follows). None waiting: one test. */
static void drained(h2c_t *h) {
  zg_walk_t w;
  zg_link_t *n;
  if (zg_list_empty(&h->waiting))
    return;
  zg_walk_begin(&h->walks, &w, &h->waiting);
  while (!h->uc->closing && (n = zg_walk_next(&w)) != NULL) {
    h2c_stream_t *st = ZG_LIST_ITEM(n, h2c_stream_t, wlink);
    zg_walk_remove(h->walks, n);
    zg_exchange_instance_drained(st->x);
  }
  zg_walk_end(&h->walks, &w);
}

static void on_write(uv_write_t *req, int status) {
  wblk_t *w = (wblk_t *)req;
  h2c_t *h = w->owner;
  zg_wblk_put(h->gw, w);
  if (h->uc->closing)
    return;
  if (status < 0) {
    conn_failed(h, ZG_TERM_INSTANCE_WRITE_ERROR);
    settle(h);
    return;
  }
  h2c_send(h);
  if (h->broken) {
    settle(h);
    return;
  }
  drained(h);
}

static int flush_cb(void *owner) {
  h2c_t *h = owner;
  wblk_t *w = h->ob;
  if (!w)
    return 0;
  h->ob = NULL;
  return zg_wblk_write(h->gw, h->uc->tls, (uv_stream_t *)&h->uc->tcp, w,
                       on_write);
}

/* What nghttp2 has to send goes out while the socket takes it. Returns
 * 0 or -1 (the connection is broken). */
static int h2c_out(h2c_t *h) {
  if (h->uc->closing || h->broken)
    return -1;
  while (zg_queued(&h->uc->tcp) <= HIGH_WATER) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(h->ng, &data);
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    if (zg_wblk_stage(h->gw, &h->ob, h, (const char *)data, (size_t)n,
                      flush_cb) != 0)
      return -1;
  }
  return flush_cb(h) != 0 ? -1 : 0;
}

static void h2c_send(h2c_t *h) {
  if (h2c_out(h) != 0 && !h->uc->closing)
    conn_failed(h, ZG_TERM_INSTANCE_WRITE_ERROR);
}

/* The connection is broken: closed (out of the pool at once), and every
 * exchange on it fails. */
static void conn_failed(h2c_t *h, zg_term_t term) {
  h->broken = 1;
  zg_upconn_close(h->uc);
  ZG_LIST_FOREACH_SAFE(it, &h->streams) {
    h2c_stream_t *st = ZG_LIST_ITEM(it, h2c_stream_t, link);
    if (st->x && !st->done)
      stream_fail(st, term, 502);
  }
}

/* Response DATA let through: the instance's window opens again. */
static void consume(h2c_stream_t *st) {
  if (st->paused || st->unconsumed == 0)
    return;
  if (st->sid)
    nghttp2_session_consume(st->h->ng, st->sid, st->unconsumed);
  else
    nghttp2_session_consume_connection(st->h->ng, st->unconsumed);
  st->unconsumed = 0;
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *b) {
  zg_http_upstream_t *u = hd->data;
  (void)suggested;
  b->base = zg_buf_get(u->gw);
  b->len = b->base ? ZG_BUF_SIZE : 0;
}

/* After mem_recv (or a failure): each exchange's end or failure acted
 * on, the rest of what was read passed on. Acting on a stream may free it
 * or, through a connection failure, others (h2c_release takes them out
 * under the walk); a stream attached meanwhile is not visited. */
static void settle(h2c_t *h) {
  zg_walk_t w;
  zg_link_t *n;
  zg_walk_begin(&h->walks, &w, &h->streams);
  while ((n = zg_walk_next(&w)) != NULL) {
    h2c_stream_t *st = ZG_LIST_ITEM(n, h2c_stream_t, link);
    zg_http_exchange_t *x = st->x;
    if (!x)
      continue;
    if (st->fail) {
      zg_exchange_upstream_failed(x, st->fail_term, st->fail_status);
    } else if (st->done) {
      zg_exchange_done(x);
    } else {
      consume(st);
      zg_exchange_instance_read(x, st);
    }
  }
  zg_walk_end(&h->walks, &w);
  if (h->uc->closing)
    return;
  h2c_send(h);
  if (h->broken) { /* the send failed: the streams fail too */
    settle(h);
    return;
  }
  if (h->active == 0 && h->goaway) {
    zg_upconn_close(h->uc);
    return;
  }
  drained(h);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  zg_http_upstream_t *u = s->data;
  h2c_t *h = h2c_of(&u->c);
  ssize_t rc;
  if (nread > 0 && !h->uc->closing) {
    rc = nghttp2_session_mem_recv(h->ng, (const uint8_t *)buf->base,
                                  (size_t)nread);
    zg_buf_put(h->gw, buf->base);
    ZG_LIST_FOREACH(it, &h->streams) {
      h2c_stream_t *st = ZG_LIST_ITEM(it, h2c_stream_t, link);
      if (st->x)
        st->x->srv->active(st->x->conn);
    }
    if (rc < 0) {
      zg_warn("http", "instance %s: HTTP/2: %s", h->uc->key,
              nghttp2_strerror((int)rc));
      conn_failed(h, ZG_TERM_BAD_RESPONSE);
    }
    settle(h);
    if (h->repool && !h->uc->closing) {
      h->repool = 0;
      pool_update(h); /* the room it has is known now */
    }
    return;
  }
  zg_buf_put(h->gw, buf->base);
  if (nread == 0 || h->uc->closing)
    return;
  conn_failed(h, nread == UV_EOF ? ZG_TERM_INSTANCE_CLOSED
                                 : ZG_TERM_INSTANCE_ERROR);
  settle(h);
}

static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_opt;

static void cb_init(void) {
  static const zg_h2_cbs_t f = {on_begin_headers, on_header, on_frame_recv,
                                on_data_chunk, on_stream_close};
  if (zg_h2_session_setup(&f, &g_cbs, &g_opt) != 0)
    return;
  nghttp2_option_set_peer_max_concurrent_streams(g_opt, H2C_MAX_STREAMS);
}

static void on_upconn_closed(zg_upconn_t *uc) {
  h2c_t *h = h2c_of(uc);
  if (!h)
    return;
  /* Streams still held by exchanges were failed; they are freed when
   * released, which happened before the handles closed. */
  zg_wblk_put(h->gw, h->ob);
  nghttp2_session_del(h->ng);
  free(h);
  uc->data = NULL;
}

/* A new connection: the session, its SETTINGS, reading on. */
static h2c_t *h2c_new(zg_upconn_t *uc, zg_http_exchange_t *x) {
  static uv_once_t once = UV_ONCE_INIT;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2C_STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2C_MAX_HEADER_LIST},
  };
  h2c_t *h;
  uv_once(&once, cb_init);
  if (!g_cbs || !g_opt || !(h = calloc(1, sizeof(*h))))
    return NULL;
  h->uc = uc;
  h->gw = x->gw;
  if (nghttp2_session_client_new2(&h->ng, g_cbs, h, g_opt) != 0) {
    free(h);
    return NULL;
  }
  uc->data = h;
  uc->on_closed = on_upconn_closed;
  /* upstream.h's block is an HTTP/1.1 one; its gw is what on_alloc reads */
  ((zg_http_upstream_t *)((char *)uc - offsetof(zg_http_upstream_t, c)))->gw =
      x->gw;
  nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv,
                          sizeof(iv) / sizeof(iv[0]));
  nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0,
                                        H2C_CONN_WINDOW);
  if (zg_stream_read_start(uc->tls, (uv_stream_t *)&uc->tcp, on_alloc,
                           on_read) != 0) {
    uc->data = NULL;
    nghttp2_session_del(h->ng);
    free(h);
    return NULL;
  }
  h->reading = 1;
  return h;
}

static void *h2c_attach(zg_upconn_t *uc, zg_http_exchange_t *x) {
  h2c_t *h = h2c_of(uc);
  h2c_stream_t *st;
  if (!h && !(h = h2c_new(uc, x))) {
    zg_upconn_close(uc);
    return NULL;
  }
  if (!(st = calloc(1, sizeof(*st)))) {
    pool_update(h);
    return NULL;
  }
  st->h = h;
  st->x = x;
  st->reused = h->opened > 0;
  st->rq.keep = true;
  zg_list_push(&h->streams, &st->link);
  h->active++;
  h->opened++;
  pool_update(h); /* back in the pool while it has room for more */
  return st;
}

/* ---- the request head --------------------------------------------------- */

/* Whether `name` is listed in a Connection field of the head. */
static bool connection_listed(const char *head, const char *end,
                              const char *name, size_t len) {
  const char *p = head;
  while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
    const char *v, *e;
    p++;
    if ((size_t)(end - p) < 11 || strncasecmp(p, "connection:", 11))
      continue;
    v = p + 11;
    e = memchr(v, '\r', (size_t)(end - v));
    if (!e)
      return false;
    while (v < e) {
      const char *c = memchr(v, ',', (size_t)(e - v));
      const char *te = c ? c : e;
      while (v < te && (*v == ' ' || *v == '\t'))
        v++;
      {
        const char *t2 = te;
        while (t2 > v && (t2[-1] == ' ' || t2[-1] == '\t'))
          t2--;
        if ((size_t)(t2 - v) == len && !strncasecmp(v, name, len))
          return true;
      }
      v = c ? c + 1 : e;
    }
  }
  return false;
}

/* The HTTP/1.1 head (x->up_head) as HPACK fields; lower-cased names in
 * `names`. The count, or -1. */
static int head_nv(h2c_stream_t *st, nghttp2_nv *nva, char *names,
                   size_t names_cap) {
  zg_http_exchange_t *x = st->x;
  h2c_t *h = st->h;
  const char *p = x->up_head, *end = p + x->up_head_len, *sp1, *sp2, *eol;
  size_t k = 4, at = 0;
  if (!(eol = memchr(p, '\r', (size_t)(end - p))) ||
      !(sp1 = memchr(p, ' ', (size_t)(eol - p))) ||
      !(sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1))))
    return -1;
  nva[0] =
      (nghttp2_nv){(uint8_t *)(uintptr_t) ":method", (uint8_t *)(uintptr_t)p, 7,
                   (size_t)(sp1 - p), NGHTTP2_NV_FLAG_NONE};
  nva[1] = (nghttp2_nv){(uint8_t *)(uintptr_t) ":scheme",
                        (uint8_t *)(uintptr_t)(h->uc->tls ? "https" : "http"),
                        7, h->uc->tls ? 5 : 4, NGHTTP2_NV_FLAG_NONE};
  nva[2] = (nghttp2_nv){(uint8_t *)(uintptr_t) ":path",
                        (uint8_t *)(uintptr_t)(sp1 + 1), 5,
                        (size_t)(sp2 - sp1 - 1), NGHTTP2_NV_FLAG_NONE};
  nva[3] = (nghttp2_nv){(uint8_t *)(uintptr_t) ":authority",
                        (uint8_t *)(uintptr_t) "", 10, 0, NGHTTP2_NV_FLAG_NONE};
  p = eol + 2;
  while (p < end && !(p[0] == '\r')) {
    const char *colon, *v, *ve;
    char *ln = names + at;
    size_t nlen;
    if (!(eol = memchr(p, '\r', (size_t)(end - p))) ||
        !(colon = memchr(p, ':', (size_t)(eol - p))))
      return -1;
    nlen = (size_t)(colon - p);
    v = colon + 1;
    while (v < eol && (*v == ' ' || *v == '\t'))
      v++;
    ve = eol;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
    if (at + nlen + 1 > names_cap || k == H2C_FIELDS)
      return -1;
    zg_h2_lower(ln, p, nlen);
    at += nlen;
    if (nlen == 4 && !memcmp(ln, "host", 4)) {
      nva[3].value = (uint8_t *)(uintptr_t)v;
      nva[3].valuelen = (size_t)(ve - v);
    } else if (!zg_h2_hop_field(ln, nlen) &&
               !connection_listed(x->up_head, end, ln, nlen)) {
      nva[k++] = (nghttp2_nv){(uint8_t *)ln, (uint8_t *)(uintptr_t)v, nlen,
                              (size_t)(ve - v), NGHTTP2_NV_FLAG_NONE};
    }
    p = eol + 2;
  }
  /* TE: trailers (RFC 9113 §8.2.2): this hop's client, zkgate, takes
   * trailers whatever it then does with them; gRPC servers require it. */
  if (k < H2C_FIELDS)
    nva[k++] = (nghttp2_nv){(uint8_t *)(uintptr_t) "te",
                            (uint8_t *)(uintptr_t) "trailers", 2, 8,
                            NGHTTP2_NV_FLAG_NONE};
  if (nva[3].valuelen == 0) /* no Host: no :authority */
    nva[3] = nva[--k];
  return (int)k;
}

static int h2c_request_send(void *c) {
  h2c_stream_t *st = c;
  h2c_t *h = st->h;
  nghttp2_nv nva[H2C_FIELDS];
  char names[8192];
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
  int n = head_nv(st, nva, names, sizeof(names));
  int32_t id;
  if (n < 0)
    return -1;
  if (h->goaway || h->broken || h->uc->closing) {
    st->refused = h->goaway; /* never sent */
    return -2;
  }
  id = nghttp2_submit_request(h->ng, NULL, nva, (size_t)n,
                              st->x->req_has_body ? &prd : NULL, st);
  if (id < 0)
    return -1;
  st->sid = id;
  return 0;
}

static int h2c_request_body(void *c, const char *p, size_t len) {
  h2c_stream_t *st = c;
  if (st->rq.keep && st->rq.off + st->rq.len + len > H2C_REPLAY_MAX)
    st->rq.keep = false; /* too much to hold: not sent again */
  if (zg_h2_queue_put(&st->rq, p, len) != 0)
    return -1;
  resume_data(st);
  return 0;
}

static int h2c_request_end(void *c) {
  h2c_stream_t *st = c;
  st->rq_eof = 1;
  resume_data(st);
  return 0;
}

/* A failure is this exchange's to act on; the connection's other
 * streams fail once it is released. */
static int h2c_flush(void *c) {
  h2c_stream_t *st = c;
  if (h2c_out(st->h) == 0)
    return 0;
  conn_failed(st->h, ZG_TERM_INSTANCE_WRITE_ERROR);
  st->fail = 0; /* the exchange acts on the error it is given */
  return -1;
}

static size_t h2c_queued(void *c) {
  h2c_stream_t *st = c;
  return st->rq.len + zg_queued(&st->h->uc->tcp);
}

/* drained() calls zg_exchange_instance_drained for it (once). */
static void h2c_wait_drain(void *c) {
  h2c_stream_t *st = c;
  if (!zg_link_linked(&st->wlink))
    zg_list_push(&st->h->waiting, &st->wlink);
}

static void h2c_read_pause(void *c) {
  h2c_stream_t *st = c;
  st->paused = 1;
}

static void h2c_read_resume(void *c) {
  h2c_stream_t *st = c;
  if (!st->paused)
    return;
  st->paused = 0;
  consume(st);
  if (!st->h->uc->closing && h2c_out(st->h) != 0) {
    conn_failed(st->h, ZG_TERM_INSTANCE_WRITE_ERROR);
    settle(st->h);
  }
}

static void h2c_state(void *c, zg_exchange_cli_state_t *s) {
  h2c_stream_t *st = c;
  s->key = st->h->uc->key;
  s->reused = st->reused;
  s->answered = st->answered;
  s->client_cause = st->client_cause;
  s->refused = st->refused;
}

/* All the body passed on so far, while the stream holds it (until the
 * instance answers, up to H2C_REPLAY_MAX bytes). */
static int h2c_replay(void *c, const char **p, size_t *len) {
  h2c_stream_t *st = c;
  if (!st->rq.keep)
    return -1;
  *p = st->rq.b;
  *len = st->rq.off + st->rq.len;
  return 0;
}

/* Done with the stream: reset when still open, freed; the connection goes
 * on carrying the others (its pool place updated), or closes when it is
 * of no more use. A failed stream does not taint the connection: only
 * connection errors and GOAWAY do. */
static void h2c_release(void *c, int reuse) {
  h2c_stream_t *st = c;
  h2c_t *h;
  (void)reuse;
  if (!st)
    return;
  h = st->h;
  if (st->sid && !h->uc->closing) {
    nghttp2_session_set_stream_user_data(h->ng, st->sid, NULL);
    nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, st->sid,
                              NGHTTP2_CANCEL);
  }
  if (!h->uc->closing && st->unconsumed > 0) {
    st->paused = 0;
    consume(st);
  }
  zg_walk_remove(h->walks, &st->link);
  zg_walk_remove(h->walks, &st->wlink);
  h->active--;
  free(st->hb);
  free(st->rq.b);
  free(st);
  if (!h->broken && !h->uc->closing && h2c_out(h) != 0)
    conn_failed(h, ZG_TERM_INSTANCE_WRITE_ERROR);
  if (h->broken || h->uc->closing) {
    settle(h); /* the other streams on a broken connection fail */
    return;
  }
  pool_update(h);
}

static int h2c_request_head(zg_http_exchange_t *x, zg_http_req_out_t *o) {
  return zg_h1c_ops.request_head(x, o);
}

static void h2c_connect_prepare(zg_upstream_req_t *r, zg_proxy_ctx_t *gw) {
  zg_h1c_ops.connect_prepare(r, gw);
}

/* No protocol switch over HTTP/2: the exchange refuses a 101 first. */
static int h2c_tunnel_write(void *c, const char *p, size_t len) {
  (void)c;
  (void)p;
  (void)len;
  return -1;
}

static int h2c_tunnel_shutdown(void *c) {
  (void)c;
  return -1;
}

const zg_exchange_cli_ops_t zg_h2c_ops = {
    .connect_prepare = h2c_connect_prepare,
    .attach = h2c_attach,
    .request_head = h2c_request_head,
    .request_send = h2c_request_send,
    .request_body = h2c_request_body,
    .request_end = h2c_request_end,
    .flush = h2c_flush,
    .queued = h2c_queued,
    .wait_drain = h2c_wait_drain,
    .read_pause = h2c_read_pause,
    .read_resume = h2c_read_resume,
    .state = h2c_state,
    .replay = h2c_replay,
    .release = h2c_release,
    .tunnel_write = h2c_tunnel_write,
    .tunnel_shutdown = h2c_tunnel_shutdown,
};
