/* The HTTP/1.1 server codec: the client connection. Its bytes collect in
 * the session's input buffer and go through llhttp (strict mode); the
 * parser pauses at the end of a request head, so that the exchange
 * (exchange.c) can check, route and rewrite it while the body waits in
 * the buffer, and at the end of a request, so that pipelined requests wait
 * for the response before them. Responses are framed for the client (a
 * length kept, anything else chunked, or read until close for HTTP/1.0;
 * chunked bodies re-chunked from llhttp's decoded data), keep-alive
 * decided, the connection closed with a lingering close; a 101 turns it
 * into a tunnel.
 *
 * On a listener that terminates TLS, the client's reads, writes and
 * shutdowns go through tls.h's zg_stream_* calls (libuv's own for plain
 * clients), after a handshake that runs before the first read. */
#include "proxy/h1.h"
#include "proxy/h2.h"

#include "core/error.h"
#include "core/log.h"
#include "net/listener.h"
#include "upstream/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define IN_BIG (HEAD_MAX + ZG_BUF_SIZE) /* client input with a large head */

static llhttp_settings_t req_settings;

static void process_input(zg_http_session_t *s);
static void on_client_write(uv_write_t *req, int status);
static void linger_close(zg_http_session_t *s);
static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void next_request(zg_http_session_t *s);
static void client_eof_check(zg_http_session_t *s);
static int h1s_flush(zg_http_session_t *s);
static void h1s_read_start(zg_http_session_t *s);
static void h1s_tunnel_read(zg_http_session_t *s, uv_stream_t *from,
                            ssize_t nread, const char *data, int from_client);

/* The response head for the client, in two steps: prepare decides its
 * framing and keep-alive (and may refuse: -1 with *reason), write stages
 * it. */
typedef struct {
  zg_http_resp_out_t o;
  char proto[64], codings[256];
  bool no_body; /* 1xx, 204, 304, a response to HEAD */
} h1s_resp_t;

/* The one place bytes are written to the client: a TLS layer would
 * encrypt here. Takes `w`. */
static int client_write(zg_http_session_t *s, wblk_t *w) {
  s->x.req_out += w->len;
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

static int h1s_flush(zg_http_session_t *s) {
  return client_flush_cb(s);
}

int zg_h1s_flush(zg_http_session_t *s) {
  return client_flush_cb(s);
}

/* Staged for the client: written at the next h1s_flush. */
static int to_client(zg_http_session_t *s, const char *p, size_t len) {
  return zg_wblk_stage(s->gw, &s->ob, s, p, len, client_flush_cb);
}

int zg_h1s_stage(zg_http_session_t *s, const char *p, size_t len) {
  return to_client(s, p, len);
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

/* The bytes of a response the gateway makes itself, with Connection:
 * close. 0 or -1. */
static int h1s_error(zg_http_session_t *s, int status, const char *message) {
  char buf[1024];
  int n;
  s->close_after = 1;
  n = s->x.grpc ? zg_grpc_error_response(buf, sizeof(buf), status, message)
                : zg_http_error_response(buf, sizeof(buf), status, message,
                                         true, s->head_req);
  return n > 0 && to_client(s, buf, (size_t)n) == 0 && h1s_flush(s) == 0 ? 0
                                                                         : -1;
}

static void h1s_error_sent(zg_http_session_t *s) {
  /* Closed once the write is done: on_client_write sees close_after. */
  s->state = HS_REQUEST; /* no request read until it closes */
  if (s->reading) {
    zg_stream_read_stop(s->tls, (uv_stream_t *)&s->client);
    s->reading = 0;
  }
  if (zg_queued(&s->client) == 0)
    linger_close(s); /* written at once; else on_client_write does */
}

static void session_free_if_done(zg_http_session_t *s) {
  if (s->handles > 0)
    return;
  zg_http_buf_release(s->gw, &s->in, &s->in_cap);
  zg_exchange_free(&s->x);
  if (s->h2)
    zg_h2s_free(s);
  zg_bufpool_put(&s->gw->http->heads, s->req);
  zg_http_listener_unref(s->hl);
  zg_conn_ticket_release(&s->conn);
  zg_bufpool_put(&s->gw->http->spool, s);
}

static void on_session_handle_closed(uv_handle_t *h) {
  zg_http_session_t *s = h->data;
  s->handles--;
  session_free_if_done(s);
}

void zg_h1s_handle_closed(uv_handle_t *h) {
  on_session_handle_closed(h);
}

void zg_h1s_end(zg_http_session_t *s, zg_term_t term) {
  zg_proxy_ctx_t *gw = s->gw;
  zg_term_phase_t phase =
      s->lingering ? ZG_PHASE_LAST : zg_exchange_phase(&s->x);
  if (s->state == HS_CLOSING)
    return;
  s->state = HS_CLOSING;
  s->reason = term;
  zg_exchange_abort(&s->x, term, phase);
  if (s->h2)
    zg_h2s_close(s, term);
  s->hl->active--;
  zg_link_remove(&s->link);
  zg_debug("http", "client %s: connection closed (%s) after %llu request(s)",
           s->client_addr, zg_term_text(term), (unsigned long long)s->requests);
  zg_wblk_put(gw, s->ob); /* staged, never to be written */
  s->ob = NULL;
  zg_tls_conn_free(s->tls);
  uv_close((uv_handle_t *)&s->client, on_session_handle_closed);
  uv_close((uv_handle_t *)&s->timer, on_session_handle_closed);
}

/* ---- the response, to the client --------------------------------------- */

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
    if (w->len == 0 || h1s_flush(s) != 0)
      break;
  }
  if (!(out = malloc(OUT_HEAD_MAX)))
    return -1;
  n = zg_http_write_response(out, OUT_HEAD_MAX, resp, o);
  n = n < 0 ? -1 : to_client(s, out, (size_t)n);
  free(out);
  return n;
}

static int h1s_response_prepare(zg_http_session_t *s,
                                const zg_http_head_t *resp, h1s_resp_t *r,
                                const char **reason, bool *client_cause) {
  int status = resp->status;
  bool until_close = false;

  *reason = NULL;
  memset(&r->o, 0, sizeof(r->o));
  r->no_body = zg_http_response_bodiless(status, s->head_req);
  if (status != 101 && status >= 200 &&
      zg_http_response_framing(resp, s->req->minor, s->head_req, &r->o,
                               r->codings, sizeof(r->codings), &until_close,
                               reason) != 0) {
    /* check_response took the codings with the same room: what is left is
     * an HTTP/1.0 client that cannot be told of them. Its version, not the
     * instance, makes this a 502: no ejection (issue 12 point 2). */
    *client_cause = s->req->minor == 0;
    return -1;
  }
  if (status == 101) {
    /* The switch the client asked for: the head goes out, then the
     * connection becomes a tunnel (the instance codec hands it over). */
    const zg_hdr_t *up = zg_http_find(resp, "upgrade");
    snprintf(r->proto, sizeof(r->proto), "%.*s",
             up ? (int)up->value_len : (int)strlen(s->x.upgrade),
             up ? resp->buf + up->value_off : s->x.upgrade);
    r->o.upgrade = r->proto;
  } else if (status >= 100 && status < 200) {
    r->o.framing = ZG_FRAMING_NONE; /* interim: forwarded, then the next */
  } else {
    s->resp_chunked = r->o.framing == ZG_FRAMING_CHUNKED;
    if (until_close)
      s->close_after = 1;
    if (!s->client_keep || (s->client_eof && s->in_len == s->in_off) ||
        winding_down(s))
      s->close_after = 1;
    r->o.close = s->close_after;
    r->o.keep_alive =
        !s->close_after && s->req->major == 1 && s->req->minor == 0;
  }
  return 0;
}

static int h1s_response_write(zg_http_session_t *s, const zg_http_head_t *resp,
                              const h1s_resp_t *r) {
  return response_head_to_client(s, resp, &r->o);
}

static int h1s_response_body(zg_http_session_t *s, const char *p, size_t len) {
  if (s->resp_chunked)
    return chunk_to_client(s, p, len) ? -1 : 0;
  return to_client(s, p, len) ? -1 : 0;
}

static int stage_cb(void *owner, const char *p, size_t len) {
  return to_client(owner, p, len);
}

static int h1s_response_end(zg_http_session_t *s) {
  /* The instance's trailers go on in the last chunk (RFC 9112 §7.1.2);
   * an HTTP/1.0 client, read until close, gets none. */
  return s->resp_chunked && zg_chunk_last(&s->x.resp_trailers, stage_cb, s) != 0
             ? -1
             : 0;
}

static void h1s_request_body(zg_http_session_t *s) {
  /* The body is waiting in the input buffer: parse on (process_input
   * flushes the head with what it adds). */
  llhttp_resume(&s->rp);
  process_input(s);
  if (s->x.phase == ZG_XP_SENT && !s->x.req_done)
    h1s_read_start(s);
}

/* ---- the request head ------------------------------------------------ */

static int req_on_body(llhttp_t *p, const char *at, size_t len) {
  zg_http_session_t *s = p->data;
  int rc = zg_exchange_request_body(&s->x, at, len);
  if (rc == -2) {
    s->too_big = 1;
    llhttp_set_error_reason(p, "request body too large");
  }
  return rc < 0 ? -1 : 0;
}

static int req_on_message_complete(llhttp_t *p) {
  zg_http_session_t *s = p->data;
  if (zg_exchange_request_end(&s->x) != 0)
    return -1;
  return HPE_PAUSED; /* the next pipelined request waits its turn */
}

/* The protocol switch the client asks for (RFC 9110 §7.8: Upgrade, named
 * in Connection, HTTP/1.1 only), kept in s->x.upgrade for the instance's
 * request head and for the 101 that may answer it; "" when none. */
static void request_upgrade(zg_http_session_t *s) {
  const zg_hdr_t *up = zg_http_find(s->req, "upgrade");
  s->x.upgrade[0] = '\0';
  if (up && zg_http_connection_has(s->req, "upgrade") && s->req->minor >= 1 &&
      up->value_len < sizeof(s->x.upgrade))
    snprintf(s->x.upgrade, sizeof(s->x.upgrade), "%.*s", (int)up->value_len,
             s->req->buf + up->value_off);
}

/* The head is in: what the codec records of it (framing, keep-alive, the
 * protocol switch asked for). Returns the head's length in the input
 * buffer. */
static size_t head_record(zg_http_session_t *s) {
  zg_conn_ticket_head_done(&s->conn); /* max_head_connections */
  s->requests++;
  s->state = HS_REQUEST;
  s->x.req = s->req;
  s->req->buf = s->in + 0;
  s->req->is_request = true;
  s->req->method = s->rp.method;
  zg_http_head_framing(s->req, &s->rp);
  s->head_req = s->rp.method == HTTP_HEAD;
  s->client_keep = zg_http_keep_alive(s->req);
  request_upgrade(s);
  return (size_t)(llhttp_get_error_pos(&s->rp) - (s->in + s->head_start));
}

/* The head is in: the HTTP/1.1 checks llhttp 8.1 does not make
 * (docs/platform.md, llhttp): zg_http_prescan over the raw head, then
 * zg_http_check_request; the exchange takes it from there. */
static void head_complete(zg_http_session_t *s) {
  size_t head_len = head_record(s);
  const char *reason = NULL;
  int status = 0;
  if (zg_http_prescan(s->in + s->head_start, head_len, &reason) != 0)
    status = 400;
  else if ((status = zg_http_check_request(s->req, &reason)) < 0)
    status = 400;
  zg_exchange_request_head(&s->x, status, reason);
}

/* Bytes parsed are dropped once nothing points into them, and an empty
 * input buffer goes back to the pool: idle connections hold none. A head
 * being read keeps its bytes (the parsed head's offsets point into them);
 * after zg_exchange_request_head only up_head is needed. */
static void in_settle(zg_http_session_t *s) {
  if (s->state != HS_HEAD && s->in_off == s->in_len)
    s->in_len = s->in_off = 0;
  if (s->in_len == 0 && s->in)
    zg_http_buf_release(s->gw, &s->in, &s->in_cap);
}

/* The parsed head of a request, from the pool, empty (all but the header
 * table, which n_hdr = 0 empties). */
static zg_http_head_t *head_get(zg_proxy_ctx_t *gw) {
  zg_http_head_t *h = zg_bufpool_get(&gw->http->heads);
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
    if (s->x.phase == ZG_XP_CONNECT ||
        (s->x.phase == ZG_XP_SENT && s->x.req_done))
      break;
    if (!s->req && !(s->req = head_get(s->gw))) {
      zg_h1s_end(s, ZG_TERM_OUT_OF_MEMORY);
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
      /* a body cut short: the instance connection is unusable */
      zg_exchange_instance_drop(&s->x);
      if (!s->x.resp_head)
        zg_exchange_error(&s->x, ZG_TERM_BAD_REQUEST,
                          s->rd.too_many ? 431
                          : s->too_big   ? 413
                                         : 400,
                          why ? why : llhttp_errno_name(err));
      else
        zg_h1s_end(s, ZG_TERM_BAD_REQUEST_BODY);
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
  zg_exchange_request_flush(&s->x);
}

/* ---- between exchanges: keep-alive and pipelining --------------------- */

static void reset_for_next(zg_http_session_t *s) {
  /* Keep the bytes of a pipelined request, at the start of the buffer. */
  size_t left = s->in_len - s->in_off;
  if (left)
    memmove(s->in, s->in + s->in_off, left);
  s->in_len = left;
  s->in_off = 0;
  s->head_start = 0;
  zg_bufpool_put(&s->gw->http->heads, s->req); /* idle: no head held */
  s->req = NULL;
  s->close_after = 0;
  zg_exchange_reset(&s->x);
  zg_http_reader_reset(&s->rd);
  s->too_big = 0;
  s->x.body_bytes = 0;
  s->head_begin_ms = 0;
  s->resp_chunked = s->x.req_chunked = 0;
  s->head_req = 0;
  s->state = HS_HEAD;
  llhttp_resume(&s->rp);
  if (s->in_len > 0) /* a pipelined head has begun: header_timeout runs */
    s->head_begin_ms = uv_now(s->gw->loop);
  in_settle(s); /* idle keep-alive connections hold no buffer */
}

/* Keep-alive, pipelining or close, once an exchange ended. */
static void h1s_exchange_end(zg_http_session_t *s) {
  if (!s->x.req_done) {
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
  h1s_read_start(s);
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
    zg_h1s_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
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
  zg_exchange_instance_drop(&s->x);
  s->shutdown_req.data = s;
  /* Reading goes on through on_client_read, which drops what comes while
   * lingering: no stop and restart (epoll_ctl calls) at every close. */
  if (s->client_eof || client_shutdown(s) != 0 ||
      (!s->reading &&
       zg_stream_read_start(s->tls, (uv_stream_t *)&s->client, on_client_alloc,
                            on_client_read) != 0)) {
    zg_h1s_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
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
    zg_h1s_end(s, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  if (s->h2) {
    zg_h2s_written(s);
    return;
  }
  if ((s->x.resp_done || s->state == HS_HEAD) && s->close_after &&
      zg_queued(&s->client) == 0) {
    linger_close(s);
    return;
  }
  /* The last response of a keep-alive connection is out as the gateway
   * drains or the listener goes: nothing more will come on it. */
  if (winding_down(s) && zg_h1s_idle(s)) {
    zg_h1s_end(s, s->gw->draining ? ZG_TERM_IDLE_AT_DRAIN
                                  : ZG_TERM_LISTENER_REMOVED);
    return;
  }
  if (s->wait_drain && zg_queued(&s->client) <= HIGH_WATER / 2) {
    next_request(s);
    if (s->state == HS_CLOSING)
      return;
  }
  /* Drained: read the instance again if it was paused for us. */
  if (!s->upstream_eof && zg_queued(&s->client) <= HIGH_WATER / 2)
    zg_exchange_client_drained(&s->x);
}

/* ---- tunnel (after 101) ----------------------------------------------- */

/* Each side's write half is shut once what was queued for it is out; the
 * tunnel ends when both are. The request for the instance's side is its
 * codec's (zg_exchange_cli_ops_t.tunnel_shutdown); the client's lives in
 * the session, which outlives its own handle's close. */
static void tunnel_shut_done(zg_http_session_t *s, int status) {
  if (!s || s->state != HS_TUNNEL)
    return;
  if (status < 0) {
    zg_h1s_end(s, ZG_TERM_TUNNEL_PEER_GONE);
    return;
  }
  if (++s->tunnel_shut == 2)
    zg_h1s_end(s, ZG_TERM_TUNNEL_CLOSED);
}

static void on_client_tunnel_shutdown(uv_shutdown_t *req, int status) {
  tunnel_shut_done(req->data, status);
}

/* Bytes read on one side of a tunnel go to the other; EOF on one side
 * shuts the other's write side; the tunnel ends when both are done. */
static void h1s_tunnel_read(zg_http_session_t *s, uv_stream_t *from,
                            ssize_t nread, const char *data, int from_client) {
  const zg_exchange_cli_ops_t *cli = s->x.cli;
  void *u = s->x.up;
  if (nread == 0)
    return;
  if (nread < 0) {
    if (from_client)
      zg_stream_read_stop(s->tls, from);
    else
      cli->read_pause(u);
    if (nread != UV_EOF) {
      zg_h1s_end(s,
                 from_client ? ZG_TERM_CLIENT_RESET : ZG_TERM_INSTANCE_RESET);
      return;
    }
    if (from_client) {
      s->client_eof = 1;
      s->reading = 0;
      if (cli->tunnel_shutdown(u) != 0)
        zg_h1s_end(s, ZG_TERM_TUNNEL_PEER_GONE);
    } else {
      s->upstream_eof = 1;
      s->shutdown_req.data = s;
      if (zg_stream_shutdown(s->tls, &s->shutdown_req,
                             (uv_stream_t *)&s->client,
                             on_client_tunnel_shutdown) != 0)
        zg_h1s_end(s, ZG_TERM_TUNNEL_PEER_GONE);
    }
    return;
  }
  s->last_active_ms = uv_now(s->gw->loop);
  if (from_client)
    s->x.req_in += (uint64_t)nread;
  if (from_client
          ? cli->tunnel_write(u, data, (size_t)nread) != 0
          : to_client(s, data, (size_t)nread) != 0 || h1s_flush(s) != 0) {
    zg_h1s_end(s, ZG_TERM_TUNNEL_WRITE_ERROR);
    return;
  }
  if (from_client && cli->queued(u) > HIGH_WATER) {
    zg_stream_read_stop(s->tls, from);
    s->reading = 0;
  } else if (!from_client && zg_queued(&s->client) > HIGH_WATER) {
    cli->read_pause(u);
  }
}

static void h1s_tunnel_start(zg_http_session_t *s, const char *rest,
                             size_t len) {
  s->state = HS_TUNNEL;
  /* Bytes that came with the 101, and any the client sent early. */
  if ((len > 0 && (to_client(s, rest, len) != 0 || h1s_flush(s) != 0)) ||
      (s->in_len > s->in_off &&
       s->x.cli->tunnel_write(s->x.up, s->in + s->in_off,
                              s->in_len - s->in_off) != 0)) {
    zg_h1s_end(s, ZG_TERM_TUNNEL_WRITE_ERROR);
    return;
  }
  s->in_len = s->in_off = 0;
  in_settle(s);
  h1s_read_start(s);
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
    zg_h1s_end(s, ZG_TERM_CLIENT_CLOSED_IN_HEAD);
  else if (zg_queued(&s->client) > 0)
    s->close_after = 1; /* on_client_write closes once it is out */
  else
    zg_h1s_end(s, ZG_TERM_CLIENT_CLOSED);
}

static void on_client_read(uv_stream_t *st, ssize_t nread,
                           const uv_buf_t *buf) {
  zg_http_session_t *s = st->data;
  if (s->state == HS_CLOSING || nread == 0)
    return;
  if (s->lingering) {
    if (nread < 0)
      zg_h1s_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
    return;
  }
  if (nread == UV_ENOBUFS && s->in && s->in_len >= s->in_cap) {
    zg_stream_read_stop(s->tls, st); /* full: read again once used */
    s->reading = 0;
    return;
  }
  if (s->h2) {
    zg_h2s_read(s, nread);
    return;
  }
  if (s->state == HS_TUNNEL) {
    h1s_tunnel_read(s, st, nread, buf->base, 1);
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
      zg_h1s_end(s, nread == UV_EOF ? ZG_TERM_CLIENT_CLOSED
                                    : ZG_TERM_CLIENT_ERROR);
    } else if (s->state == HS_HEAD) {
      zg_h1s_end(s, ZG_TERM_CLIENT_CLOSED_IN_HEAD);
    } else if (!s->x.req_done) {
      zg_h1s_end(s, ZG_TERM_CLIENT_CLOSED_IN_REQUEST);
    }
    /* else: the response is still to come; closed after it (and after
     * the requests already read, h1s_exchange_end and next_request) */
    return;
  }
  if (s->state == HS_HEAD && s->in_len == s->head_start)
    s->head_begin_ms = uv_now(s->gw->loop);
  s->in_len += (size_t)nread;
  s->x.req_in += (uint64_t)nread;
  s->last_active_ms = uv_now(s->gw->loop);
  /* h2c with prior knowledge: the preface opens the connection. One
   * compare per request on a keep-alive connection. */
  if (s->requests == 0 && s->in_off == 0 && s->state == HS_HEAD &&
      s->gw->cfg->proxy.http2 && !s->tls) {
    int m = zg_h2_preface_match(s->in, s->in_len);
    if (m == 2) {
      zg_h2s_start(s);
      return;
    }
    if (m == 1)
      return; /* the rest of it, or of a request, comes */
  }
  if (s->state == HS_HEAD && s->in_len - s->head_start >= HEAD_MAX) {
    zg_exchange_error(&s->x, ZG_TERM_BAD_REQUEST, 431,
                      "request head too large");
    return;
  }
  process_input(s);
  if (s->state == HS_CLOSING || !s->reading)
    return;
  /* Backpressure only: a full buffer (the exchange is not taking bytes
   * yet: waiting for an instance, or pipelined requests waiting for a
   * response), or an instance slower than the client's body. */
  if (s->in && s->in_len >= s->in_cap && s->state != HS_HEAD) {
    zg_stream_read_stop(s->tls, st);
    s->reading = 0;
  }
}

static void h1s_read_start(zg_http_session_t *s) {
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
      zg_h1s_end(s, ZG_TERM_CLOSED_AFTER_RESPONSE);
    return;
  }
  if (s->tls && !zg_tls_established(s->tls)) {
    if (now - s->last_active_ms >= s->gw->cfg->proxy.header_timeout_ms) {
      zg_tls_handshake_timed_out(s->tls);
      zg_h1s_end(s, ZG_TERM_TLS_HANDSHAKE_TIMEOUT);
    }
    return;
  }
  if (s->h2) {
    zg_h2s_timer(s, now);
    return;
  }
  /* Slow heads (slowloris): the whole head within header_timeout; not
   * while a pipelined head is held back until the client reads. */
  if (s->state == HS_HEAD && !s->wait_drain && s->in_len > s->head_start &&
      s->head_begin_ms &&
      now - s->head_begin_ms >= s->gw->cfg->proxy.header_timeout_ms) {
    zg_exchange_error(&s->x, ZG_TERM_HEAD_TIMEOUT, 408,
                      "request head not received in time");
    return;
  }
  if (zg_exchange_timeout(&s->x, now))
    return;
  if (idle && now - s->last_active_ms >= idle &&
      !(s->x.sent_ms && !s->x.resp_head)) {
    zg_h1s_end(s, ZG_TERM_IDLE_TIMEOUT);
    return;
  }
}

static void on_client_handshake(zg_tls_conn_t *c, int status, void *arg) {
  zg_http_session_t *s = arg;
  (void)c;
  if (s->state == HS_CLOSING)
    return;
  if (status < 0) {
    zg_h1s_end(s, status == UV_EOF ? ZG_TERM_CLIENT_CLOSED
                                   : ZG_TERM_TLS_HANDSHAKE_FAILED);
    return;
  }
  s->last_active_ms = uv_now(s->gw->loop);
  if (s->gw->cfg->proxy.http2 && zg_tls_conn_h2(s->tls)) {
    zg_h2s_start(s);
    if (s->state == HS_CLOSING)
      return;
  }
  h1s_read_start(s);
}

/* ---- the exchange's operations on this codec -------------------------- */

static int op_response_head(void *c, const zg_http_head_t *resp, bool *no_body,
                            const char **reason, bool *client_cause) {
  zg_http_session_t *s = c;
  h1s_resp_t r;
  if (h1s_response_prepare(s, resp, &r, reason, client_cause) != 0)
    return -1;
  *no_body = r.no_body;
  return h1s_response_write(s, resp, &r) != 0 ? -2 : 0;
}
static int op_response_body(void *c, const char *p, size_t len) {
  return h1s_response_body(c, p, len);
}
static int op_response_end(void *c) {
  return h1s_response_end(c);
}
static int op_flush(void *c) {
  return h1s_flush(c);
}
static int op_error(void *c, int status, const char *message) {
  return h1s_error(c, status, message);
}
static void op_error_sent(void *c) {
  h1s_error_sent(c);
}
static void op_end(void *c, zg_term_t term) {
  zg_h1s_end(c, term);
}
static void op_done(void *c) {
  h1s_exchange_end(c);
}
static void op_request_body(void *c) {
  h1s_request_body(c);
}
static void op_request_pause(void *c) {
  zg_http_session_t *s = c;
  if (s->reading) {
    zg_stream_read_stop(s->tls, (uv_stream_t *)&s->client);
    s->reading = 0;
  }
}
static void op_request_resume(void *c) {
  h1s_read_start(c);
}
static size_t op_queued(void *c) {
  zg_http_session_t *s = c;
  return zg_queued(&s->client);
}
static void op_active(void *c) {
  zg_http_session_t *s = c;
  s->last_active_ms = uv_now(s->gw->loop);
}
static void op_tunnel_start(void *c, const char *rest, size_t len) {
  h1s_tunnel_start(c, rest, len);
}
static void op_tunnel_read(void *c, uv_stream_t *from, ssize_t nread,
                           const char *data) {
  h1s_tunnel_read(c, from, nread, data, 0);
}

static void op_tunnel_shut(void *c, int status) {
  tunnel_shut_done(c, status);
}
static const zg_exchange_srv_ops_t h1s_ops = {
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

void zg_h1s_accept(uv_stream_t *server, int status) {
  zg_http_listener_t *hl = server->data;
  zg_proxy_ctx_t *gw = hl->gw;
  zg_tls_server_t *srv;
  zg_http_session_t *s;
  zg_conn_ticket_t conn;
  if (status < 0) {
    zg_warn("http", "accept failed on %s: %s", hl->l.addr.text,
            uv_strerror(status));
    return;
  }
  if (gw->hooks->admit(gw->owner, server, true, &conn, hl->l.addr.text) != 0)
    return;
  /* Sessions are pooled too: a new connection per request allocates
   * nothing either. */
  s = zg_bufpool_get(&gw->http->spool);
  if (s)
    memset(s, 0, sizeof(*s));
  if (!s) {
    zg_error("http", "out of memory accepting a client on %s", hl->l.addr.text);
    zg_conn_ticket_release(&conn);
    zg_listener_drop(server);
    return;
  }
  s->conn = conn;
  s->gw = gw;
  s->hl = hl;
  /* The exchange's context: what it needs of this connection. */
  s->x.gw = gw;
  s->x.hl = hl;
  s->x.client_addr = s->client_addr;
  s->x.client_ip = s->client_ip;
  s->x.srv = &h1s_ops;
  s->x.conn = s;
  hl->refs++;
  hl->accepted++;
  hl->active++;
  uv_tcp_init(gw->loop, &s->client);
  uv_timer_init(gw->loop, &s->timer);
  s->client.data = s;
  s->timer.data = s;
  s->handles = 2;
  zg_list_push(&gw->http->sessions, &s->link);
  llhttp_init(&s->rp, HTTP_REQUEST, &req_settings);
  s->rp.data = s;
  s->rd.trailers = &s->x.req_trailers;
  s->last_active_ms = uv_now(gw->loop);
  if (uv_accept(server, (uv_stream_t *)&s->client) != 0) {
    zg_h1s_end(s, ZG_TERM_ACCEPT_FAILED);
    return;
  }
  uv_tcp_nodelay(&s->client, 1);
  zg_peer_name(&s->client, s->client_ip, sizeof(s->client_ip), s->client_addr,
               sizeof(s->client_addr));
  uv_timer_start(&s->timer, on_session_timer, 250, 250);
  if ((srv = gw->hooks->tls(gw->owner, &hl->l.addr)) != NULL) {
    if (!(s->x.tls = s->tls =
              zg_tls_conn_server(srv, &s->client, s->client_addr)))
      zg_h1s_end(s, ZG_TERM_OUT_OF_MEMORY);
    else if (zg_tls_handshake(s->tls, on_client_handshake, s) != 0)
      zg_h1s_end(s, ZG_TERM_CLIENT_ERROR);
    return;
  }
  h1s_read_start(s);
}

int zg_h1s_idle(zg_http_session_t *s) {
  if (s->h2)
    return 0; /* zg_h2s_wind_down closes it once its streams are done */
  return s->state == HS_HEAD && s->in_len == 0 && !s->x.req_active &&
         zg_queued(&s->client) == 0;
}
void zg_h1s_settings_init(void) {
  zg_http_request_settings(&req_settings, req_on_body, req_on_message_complete);
}
