/* The HTTP exchange: one request and its response, whatever the codecs
 * on either side. See exchange.h.
 *
 * The exchange routes the request head (Host and path prefix), refuses
 * what the gateway refuses (body limit, no live instance, client
 * certificate), rewrites the target (prefix strip, base path) and the
 * forwarding headers (X-Forwarded-*; hop-by-hop and spoofable ones
 * dropped, http_msg.c), gets a connection through upstream.h (an idle one
 * first, another instance on failure), runs the response timeout, and
 * counts the request in the metrics and the access log once it ends.
 *
 * Bodies are streamed: each direction stops reading while the other
 * side's write queue is above a high-water mark (backpressure), so memory
 * per connection stays bounded whatever the body size. A request without
 * a body that fails on a reused connection before any response byte is
 * sent once more on a new connection; a request an HTTP/2 instance
 * refused (it never processed it) goes to another instance whatever its
 * method, its body so far sent again.
 *
 * Framing, keep-alive, pipelining and the 101 hand-off are the codecs'
 * business: h1_server.c on the client connection, h1_client.c on the
 * instance's, reached through their operations (x->srv, x->cli) only. */
#include "proxy/exchange.h"

#include "core/error.h"
#include "core/log.h"
#include "upstream/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TARGET_MAX (ZG_HTTP_MAX_URL + 512) /* a rewritten target */
_Static_assert(TARGET_MAX <= ZG_BUF_SIZE, "targets are rewritten in a block");

static void upstream_connect(zg_http_exchange_t *x);

/* The codec on the instance's side: HTTP/1.1 writes the head (the HTTP/2
 * codec reads it back into fields), and the connection upstream.h gives
 * decides which codec carries it (c->h2: the service's upstream_protocol,
 * the registration, ALPN). */
static const zg_exchange_cli_ops_t *cli_codec(const zg_upconn_t *c) {
  return c && c->h2 ? &zg_h2c_ops : &zg_h1c_ops;
}

/* ---- write blocks, for the exchange's codecs ---------------------------
 * A response head and the body bytes read with it leave in one system
 * call. Staged bytes are flushed at the end of each read callback and
 * before anything looks at the write queue. */

/* Writes a block: at once when the socket takes it all (the usual case),
 * else what is left through uv_write, whose callback `cb` returns the
 * block. uv_try_write first because a uv_write that completes at once
 * still costs an epoll_ctl when libuv drains the queue (1.44). It fails
 * with EAGAIN while earlier writes are queued, so order is kept; and the
 * callbacks that act on a drained queue are only ever waited for when
 * something was queued. */
int zg_wblk_write(zg_proxy_ctx_t *gw, zg_tls_conn_t *tls, uv_stream_t *to,
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

/* ---- metrics and the access log ----------------------------------------
 * A request is counted and logged once, when it ends: its response is
 * complete, or an error response is out, or the session ends under it. */

void zg_exchange_begin(zg_http_exchange_t *x) {
  if (x->req_active)
    return;
  x->req_active = 1;
  x->req_begin_ns = uv_hrtime();
}

/* The phase of the exchange, for the termination code (core/term.h). */
zg_term_phase_t zg_exchange_phase(const zg_http_exchange_t *x) {
  /* A client connection closing after its last response (lingering) is
   * its codec's to tell (ZG_PHASE_LAST). */
  switch (x->phase) {
  case ZG_XP_NONE:
    return ZG_PHASE_REQUEST;
  case ZG_XP_CONNECT:
    return ZG_PHASE_CONNECT;
  case ZG_XP_SENT:
    return x->req_done && !x->resp_head ? ZG_PHASE_HEADERS : ZG_PHASE_DATA;
  default:
    return ZG_PHASE_DATA;
  }
}

/* `text`: the words for the access log when not term's own, or NULL. */
void zg_exchange_finish(zg_http_exchange_t *x, zg_term_t term,
                        zg_term_phase_t phase, const char *text) {
  zg_proxy_ctx_t *gw = x->gw;
  zg_traffic_t *t;
  uint64_t dur_us;
  if (!x->req_active)
    return;
  x->req_active = 0;
  dur_us = (uv_hrtime() - x->req_begin_ns) / 1000;
  t = x->svc ? &x->svc->traffic : &gw->http->unrouted;
  zg_traffic_observe(t, x->status, dur_us);
  zg_traffic_ended(t, term);
  if (x->svc)
    zg_service_instance_done(x->svc, x->ureq.instance, x->status, dur_us);
  zg_upstream_done(&x->ureq); /* no longer in flight (least_request) */
  t->bytes_in += x->req_in;
  t->bytes_out += x->req_out;
  if (gw->access_log) {
    zg_access_entry_t e;
    uv_timeval64_t tv;
    memset(&e, 0, sizeof(e));
    uv_gettimeofday(&tv);
    e.time_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
    e.kind = "http";
    e.client = x->client_addr;
    e.service = x->svc ? x->svc->conf->name : NULL;
    e.instance = x->ureq.instance[0] ? x->ureq.instance : NULL;
    e.method = x->method ? x->method : "-";
    e.target = x->target ? x->target : "-";
    e.target_len = x->target ? strlen(x->target) : 1;
    e.version = x->req && x->req->major == 2 ? "HTTP/2.0" : NULL;
    e.status = x->status;
    e.bytes_in = x->req_in;
    e.bytes_out = x->req_out;
    e.duration_us = dur_us;
    e.term = term;
    e.phase = phase;
    e.reason = text;
    zg_access_log_write(gw->access_log, &e);
  }
  x->status = 0;
  x->req_in = x->req_out = 0;
  x->ureq.instance[0] = '\0';
  x->method = NULL;
  free(x->target);
  x->target = NULL;
}

/* ---- errors the gateway answers itself -------------------------------- */

int zg_grpc_status(int status) {
  switch (status) {
  case 504:
    return 4; /* DEADLINE_EXCEEDED */
  case 404:
  case 501:
    return 12; /* UNIMPLEMENTED */
  case 401:
    return 16; /* UNAUTHENTICATED */
  case 403:
  case 421:
    return 7; /* PERMISSION_DENIED */
  case 413:
  case 414:
  case 431:
    return 8; /* RESOURCE_EXHAUSTED */
  case 429:
  case 502:
  case 503:
    return 14; /* UNAVAILABLE */
  default:
    return 13; /* INTERNAL */
  }
}

size_t zg_grpc_message(char *buf, size_t cap, const char *message) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)message; *p; p++) {
    if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
      if (n + 1 >= cap)
        break;
      buf[n++] = (char)*p;
    } else {
      if (n + 3 >= cap)
        break;
      buf[n++] = '%';
      buf[n++] = hex[*p >> 4];
      buf[n++] = hex[*p & 15];
    }
  }
  buf[n] = '\0';
  return n;
}

int zg_grpc_error_response(char *buf, size_t cap, int status,
                           const char *message) {
  char msg[512];
  int n;
  zg_grpc_message(msg, sizeof(msg), message ? message : "");
  n = snprintf(buf, cap,
               "HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
               "Grpc-Status: %d\r\nGrpc-Message: %s\r\n"
               "Content-Length: 0\r\n\r\n",
               zg_grpc_status(status), msg);
  return n > 0 && (size_t)n < cap ? n : -1;
}

/* The request asks for gRPC (content-type application/grpc, +proto,
 * +json...), and its grpc-timeout ("<digits><H|M|S|m|u|n>", at most 8
 * digits) sets a deadline for the response head. */
static void request_grpc(zg_http_exchange_t *x) {
  const zg_hdr_t *ct = zg_http_find(x->req, "content-type");
  const zg_hdr_t *to;
  const char *v;
  uint64_t n = 0, ms;
  x->grpc = ct && ct->value_len >= 16 &&
            !strncasecmp(x->req->buf + ct->value_off, "application/grpc", 16);
  x->deadline_ms = 0;
  if (!x->grpc || !(to = zg_http_find(x->req, "grpc-timeout")) ||
      to->value_len < 2 || to->value_len > 9)
    return;
  v = x->req->buf + to->value_off;
  for (uint32_t i = 0; i + 1 < to->value_len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return;
    n = n * 10 + (uint64_t)(v[i] - '0');
  }
  switch (v[to->value_len - 1]) {
  case 'H':
    ms = n * 3600000;
    break;
  case 'M':
    ms = n * 60000;
    break;
  case 'S':
    ms = n * 1000;
    break;
  case 'm':
    ms = n;
    break;
  case 'u':
    ms = (n + 999) / 1000;
    break;
  case 'n':
    ms = (n + 999999) / 1000000;
    break;
  default:
    return;
  }
  x->deadline_ms = uv_now(x->gw->loop) + (ms ? ms : 1);
}

void zg_exchange_error(zg_http_exchange_t *x, zg_term_t term, int status,
                       const char *message) {
  /* A request refused is refused in its request phase, also after its
   * head is in and the exchange already moved on to ZG_XP_CONNECT. */
  zg_term_phase_t phase =
      term == ZG_TERM_BAD_REQUEST ? ZG_PHASE_REQUEST : zg_exchange_phase(x);
  zg_log_level_t lvl = status >= 500 ? ZG_LOG_WARN : ZG_LOG_INFO;
  if (zg_log_enabled(lvl))
    zg_log(lvl, "http", "client %s: %d %s%s%s", x->client_addr, status, message,
           x->svc ? " service " : "", x->svc ? x->svc->conf->name : "");
  zg_upstream_cancel(&x->ureq); /* answered without an instance */
  x->resp_head = 1;
  zg_exchange_begin(x); /* a head refused before it was complete */
  x->status = status;
  if (x->srv->error(x->conn, status, message) != 0) {
    x->srv->end(x->conn, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  zg_exchange_finish(x, term, phase, message);
  x->resp_done = 1;
  x->req_done = 1;
  x->phase = ZG_XP_SENT;
  x->srv->error_sent(x->conn);
}

/* Buffers of ZG_BUF_SIZE come from the loop's pool, larger ones (a large
 * head) from malloc: back where they came from. */
void zg_http_buf_release(zg_proxy_ctx_t *gw, char **buf, size_t *cap) {
  if (*cap == ZG_BUF_SIZE)
    zg_buf_put(gw, *buf);
  else
    free(*buf);
  *buf = NULL;
  *cap = 0;
}

/* least_request_latency = ewma: the instance's time to answer, from the
 * request's end passed on (a slow client's upload is not the instance's
 * doing) to the response head; a response that starts before the request
 * ends (streaming) counts from the request's head. */
static void mark_sent(zg_http_exchange_t *x) {
  if (x->svc && x->svc->conf->latency_ewma)
    x->sent_ns = uv_hrtime();
}

static void sample_latency(zg_http_exchange_t *x) {
  uint64_t now = uv_hrtime();
  uint64_t from =
      x->sent_ns && x->sent_ns <= now ? x->sent_ns : x->req_begin_ns;
  zg_service_latency(x->svc, x->ureq.instance, (now - from) / 1000);
}

/* least_request_latency = ewma: a request passed on whole that ends
 * without a response head because of instance `key` is a sample too, of
 * the time since it went out (as sample_latency's). A response timeout
 * (`floor_us`: response_timeout, what it proves whatever the timer's
 * granularity) is a plain sample of at least that; another failure (a
 * reset or close, a stream error, a bad head) one that never lowers the
 * estimate (core/balance.h zg_ewma_observe_failure: a fast failure must
 * not make a broken instance look fast). Not while the client's body was
 * still coming (the instance may be refusing the body or giving up on a
 * slow client: the client's doing, as for passive health), nor after a
 * response head (sampled then). */
static void sample_failure(zg_http_exchange_t *x, const char *key,
                           uint64_t floor_us) {
  uint64_t now, elapsed_us;
  if (!x->svc || !x->svc->conf->latency_ewma || !x->req_done || !x->sent_ns ||
      x->resp_head)
    return;
  now = uv_hrtime();
  elapsed_us = x->sent_ns <= now ? (now - x->sent_ns) / 1000 : 0;
  if (floor_us)
    zg_service_latency(x->svc, key,
                       elapsed_us > floor_us ? elapsed_us : floor_us);
  else
    zg_service_latency_failed(x->svc, key, elapsed_us);
}

int zg_exchange_response_head(zg_http_exchange_t *x, const zg_http_head_t *resp,
                              const char **reason, bool *client_cause) {
  int status = resp->status;
  bool no_body = false;
  /* The codec decides before anything goes to the client (-1), so that a
   * response that cannot be passed on is still a 502. */
  int rc = x->srv->response_head(x->conn, resp, &no_body, reason, client_cause);
  if (rc == -1)
    return -1;
  if (status == 101 || status >= 200) {
    x->resp_head = 1;
    x->sent_ms = 0; /* the response timeout no longer applies */
    x->status = status;
    if (x->svc && x->svc->conf->latency_ewma)
      sample_latency(x);
  }
  if (rc != 0)
    return -1;
  if (status == 101)
    return 2;
  return no_body ? 1 : 0;
}

int zg_exchange_response_body(zg_http_exchange_t *x, const char *p,
                              size_t len) {
  return x->srv->response_body(x->conn, p, len);
}

int zg_exchange_response_end(zg_http_exchange_t *x) {
  if (x->srv->response_end(x->conn) != 0)
    return -1;
  x->resp_done = 1;
  return 0;
}

void zg_exchange_instance_read(zg_http_exchange_t *x, void *c) {
  /* What this read produced for the client leaves in one write. */
  if (x->phase != ZG_XP_CLOSED && x->srv->flush(x->conn) != 0) {
    x->srv->end(x->conn, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  /* Backpressure: the client drains slower than the instance sends. Not
   * when the exchange ended with this read (the connection went idle). */
  if (x->up && x->up == c && x->srv->queued(x->conn) > HIGH_WATER)
    x->cli->read_pause(c);
}

void zg_exchange_instance_drained(zg_http_exchange_t *x) {
  /* Read the client again if its body was paused for us. */
  if ((x->phase != ZG_XP_TUNNEL && x->req_done) || !x->up)
    return;
  if (x->cli->queued(x->up) <= HIGH_WATER / 2)
    x->srv->request_resume(x->conn);
  else if (x->cli->wait_drain)
    x->cli->wait_drain(x->up);
}

void zg_exchange_client_drained(zg_http_exchange_t *x) {
  if (x->up)
    x->cli->read_resume(x->up);
}

void zg_exchange_instance_drop(zg_http_exchange_t *x) {
  void *u = x->up;
  if (u) {
    x->up = NULL;
    x->cli->release(u, 0);
  }
}

int zg_exchange_timeout(zg_http_exchange_t *x, uint64_t now) {
  uint64_t limit_ms;
  bool late;
  if (!x->svc || x->resp_head)
    return 0;
  limit_ms = x->svc->conf->response_timeout_ms;
  late = x->sent_ms && now - x->sent_ms >= limit_ms;
  if (!late && !(x->deadline_ms && x->up && now >= x->deadline_ms))
    return 0;
  /* The instance's lateness is a latency sample of at least
   * response_timeout (whatever the timer's granularity); a gRPC client's
   * own deadline (grpc-timeout) is the client's and feeds nothing. */
  if (late && x->up) {
    zg_exchange_cli_state_t st = {"-", false, false, false, false};
    x->cli->state(x->up, &st);
    sample_failure(x, st.key, limit_ms * 1000);
  }
  /* The connection is closed, not kept: zg_exchange_upstream_failed
   * releases it with reuse 0. */
  x->retried = 1; /* a timeout is not retried */
  zg_exchange_upstream_failed(x, ZG_TERM_RESPONSE_TIMEOUT, 504);
  return 1;
}

/* A request the instance refused (zg_exchange_cli_state_t.refused) goes
 * to an instance not tried yet, while the tries last (upstream.h): the
 * body passed on so far is copied from the codec (the client's pauses
 * until it went again). 0, or -1 when it cannot (the codec no longer holds
 * the body, no memory, no tries left). `u` is still attached. */
static int refused_retry(zg_http_exchange_t *x, void *u) {
  const char *p = NULL;
  size_t len = 0;
  if (x->ureq.ntried >= ZG_UPSTREAM_MAX_TRIES || x->phase == ZG_XP_CLOSED)
    return -1;
  if (!x->resend) { /* else refused before the held body went out again */
    if (x->req_has_body &&
        (!x->cli->replay || x->cli->replay(u, &p, &len) != 0))
      return -1;
    free(x->replay);
    x->replay = NULL;
    x->replay_len = 0;
    if (len > 0) {
      if (!(x->replay = malloc(len)))
        return -1;
      memcpy(x->replay, p, len);
      x->replay_len = len;
    }
    x->resend = 1;
  }
  x->up = NULL;
  x->cli->release(u, 0);
  if (x->req_has_body && !x->req_done && !x->body_held) {
    x->body_held = 1;
    x->srv->request_pause(x->conn);
  }
  x->phase = ZG_XP_CONNECT;
  upstream_connect(x); /* ntried goes on: another instance */
  return 0;
}

/* Whether a request whose reused connection failed before any answer may
 * go again on a fresh one (zg_exchange_upstream_failed). */
static bool retry_on_fresh(const zg_http_exchange_t *x) {
  return !x->req_has_body && !x->retried && x->phase != ZG_XP_CLOSED &&
         zg_http_method_idempotent(x->req->method);
}

/* The instance failed us. A request without a body gets one more try on a
 * fresh connection when the failure was on a reused one (it may have been
 * closed just as we sent) and no byte of a response came back, else a
 * 502/504; after a response head went to the client, the client
 * connection is closed. */
void zg_exchange_upstream_failed(zg_http_exchange_t *x, zg_term_t why,
                                 int status) {
  void *u = x->up;
  zg_exchange_cli_state_t st = {"-", false, false, false, false};
  if (u)
    x->cli->state(u, &st);
  /* A reply the instance began (a bad one, or cut short) means it saw the
   * request: sending it again would make it see it twice. */
  bool reused = st.reused, answered = st.answered;
  zg_debug("http", "client %s: instance %s failed: %s (%s connection)",
           x->client_addr, st.key, zg_term_text(why),
           reused ? "reused" : "new");
  /* Each try samples for its own instance, before a retry sends again
   * (zg_exchange_timeout took a timeout's; a client that cannot take the
   * response is not the instance's doing; a refused request was not
   * processed; a reused connection failing before any answer is most
   * likely one the instance closed while idle, retried below). */
  if (u && why != ZG_TERM_RESPONSE_TIMEOUT &&
      why != ZG_TERM_CLIENT_WRITE_ERROR && !st.client_cause && !st.refused &&
      !(reused && !answered && retry_on_fresh(x)))
    sample_failure(x, st.key, 0);
  if (u && st.refused && !answered && !x->resp_head && refused_retry(x, u) == 0)
    return;
  if (u) {
    /* A fresh connection that fails is the instance's fault; a reused one
     * may just have been closed by it while idle. Not while the client's
     * body is still coming: the instance may be ending a request whose
     * client is too slow for its read timeout, or refusing the body, and
     * no client may eject an instance (issue 12 point 2). */
    if (!reused && x->req_done && !st.client_cause &&
        zg_service_mark_failed(x->gw->svc_ctx, st.key) && x->svc)
      x->svc->traffic.ejections++;
    x->up = NULL;
    x->cli->release(u, 0);
  }
  if (x->resp_head) {
    x->srv->end(x->conn, why);
    return;
  }
  if (reused && !answered && retry_on_fresh(x)) {
    x->retried = 1;
    x->ureq.ntried = 0;
    x->phase = ZG_XP_CONNECT;
    upstream_connect(x);
    return;
  }
  zg_exchange_error(x, why, status,
                    status == 504 ? "the instance did not answer in time"
                                  : "the instance failed to answer");
}

/* ---- sending the request --------------------------------------------- */

/* After a refusal, the body passed on before it, and its end when the
 * client's had come. 0 or -1. */
static int replay_send(zg_http_exchange_t *x, void *u) {
  int rc = 0;
  if (!x->resend)
    return 0;
  x->resend = 0;
  if (x->replay) {
    rc = x->cli->request_body(u, x->replay, x->replay_len);
    free(x->replay);
    x->replay = NULL;
    x->replay_len = 0;
  }
  if (rc == 0 && x->req_has_body && x->req_done)
    rc = x->cli->request_end(u);
  return rc;
}

static void send_request(zg_http_exchange_t *x) {
  void *u = x->up;
  int rc;
  x->phase = ZG_XP_SENT;
  x->sent_ns = 0;  /* this try's, once it went (a failure before: no sample) */
  if (x->req_done) /* the response timeout runs from the request's end */
    x->sent_ms = uv_now(x->gw->loop);
  if ((rc = x->cli->request_send(u)) != 0) {
    zg_exchange_upstream_failed(x,
                                rc == -1 ? ZG_TERM_INSTANCE_WRITE_ERROR
                                         : ZG_TERM_INSTANCE_READ_ERROR,
                                502);
    return;
  }
  if (x->req_done)
    mark_sent(x);
  if (replay_send(x, u) != 0) {
    zg_exchange_upstream_failed(x, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
    return;
  }
  if (x->req_done) {
    /* no body: the parser waits at the end of the request */
    if (x->cli->flush(u) != 0)
      zg_exchange_upstream_failed(x, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
    return;
  }
  x->srv->request_body(x->conn);
  if (x->body_held) {
    x->body_held = 0;
    if (x->up)
      x->srv->request_resume(x->conn);
  }
}

/* A connection to an instance for the request (upstream.h): an idle one,
 * else a new one; the request is sent on it. */
static void on_upstream(zg_upstream_req_t *r, zg_upconn_t *c,
                        zg_upstream_err_t err) {
  zg_http_exchange_t *x = r->data;
  void *u;
  switch (err) {
  case ZG_UP_OK:
    break;
  case ZG_UP_NO_TLS:
    zg_exchange_error(x, ZG_TERM_NO_TLS_CONTEXT, 502,
                      "no TLS context for the instances");
    return;
  case ZG_UP_NOMEM:
    zg_exchange_error(x, ZG_TERM_OUT_OF_MEMORY, 503, "out of memory");
    return;
  default:
    zg_exchange_error(x, ZG_TERM_UNREACHABLE, 502,
                      "no instance of the service could be reached");
    return;
  }
  x->cli = cli_codec(c);
  u = x->cli->attach(c, x);
  if (!u) { /* closed */
    zg_exchange_error(x, ZG_TERM_OUT_OF_MEMORY, 503, "out of memory");
    return;
  }
  if (x->phase != ZG_XP_CONNECT) {
    x->cli->release(u, 0); /* closed */
    return;
  }
  x->up = u;
  send_request(x);
}

/* Picks an instance not tried yet (and not failed, while others remain)
 * and gets a connection to it; a retry takes a new one. */
static void upstream_connect(zg_http_exchange_t *x) {
  x->ureq.svc = x->svc;
  x->ureq.cb = on_upstream;
  x->ureq.data = x;
  x->ureq.tag = "http";
  x->cli->connect_prepare(&x->ureq, x->gw);
  x->ureq.fresh = x->retried;
  x->ureq.has_hash =
      x->svc->conf->balance == ZG_BALANCE_HASH &&
      zg_service_hash_http(x->svc, x->req, x->client_ip, &x->ureq.hash);
  zg_upstream_connect(&x->ureq);
}

int zg_exchange_request_body(zg_http_exchange_t *x, const char *p, size_t len) {
  void *u = x->up;
  uint64_t limit = x->gw->cfg->proxy.max_request_body;
  if (!u)
    return -1;
  x->body_bytes += len;
  /* A Content-Length over the limit was refused with the head; a chunked
   * body is counted as it comes. */
  if (limit && x->body_bytes > limit)
    return -2;
  return x->cli->request_body(u, p, len);
}

int zg_exchange_request_end(zg_http_exchange_t *x) {
  if (x->up && x->cli->request_end(x->up) != 0)
    return -1;
  x->req_done = 1;
  if (x->up) {
    x->sent_ms = uv_now(x->gw->loop); /* response_timeout starts now */
    mark_sent(x);
  }
  return 0;
}

/* What the codec passed on of the request body leaves in one write. */
void zg_exchange_request_flush(zg_http_exchange_t *x) {
  if (x->up && x->cli->flush(x->up) != 0) {
    zg_exchange_upstream_failed(x, ZG_TERM_INSTANCE_WRITE_ERROR, 502);
    return;
  }
  /* Backpressure: the instance takes the body slower than the client
   * sends it (zg_exchange_instance_drained resumes). */
  if (x->phase == ZG_XP_SENT && !x->req_done && x->up &&
      x->cli->queued(x->up) > HIGH_WATER) {
    x->srv->request_pause(x->conn);
    if (x->cli->wait_drain)
      x->cli->wait_drain(x->up);
  }
}

/* The routed request is taken by its service, or refused: a body over
 * max_request_body (413), no live instance (503), no client certificate
 * for a service that requires one (421). 0, or -1 once answered. `subject`
 * receives the verified client certificate's subject ("" when none). */
static int request_admit(zg_http_exchange_t *x, const zg_routed_t *rt,
                         char *subject, size_t subject_cap) {
  const zg_http_target_t *tg = &x->hl->targets[rt->route->service];
  uint64_t max_body = x->gw->cfg->proxy.max_request_body;
  x->svc = zg_service_ref(tg->svc);
  x->strip = tg->strip;
  x->svc->accepted++;
  x->svc->active++;
  if (max_body && x->req->has_length && x->req->content_length > max_body) {
    zg_exchange_error(x, ZG_TERM_BAD_REQUEST, 413,
                      "request body too large"); /* RFC 9110 §15.5.14 */
    return -1;
  }
  zg_pool_unref(x->ureq.pool);
  x->ureq.pool = zg_service_pool(x->svc);
  if (!x->ureq.pool) {
    char msg[160];
    uint64_t total;
    snprintf(msg, sizeof(msg), "service %s has no live instance",
             x->svc->conf->name);
    if (zg_service_refused(x->svc, &total))
      zg_warn("http", "%s (%llu requests refused so far)", msg,
              (unsigned long long)total);
    zg_exchange_error(x, ZG_TERM_NO_INSTANCE, 503, msg);
    return -1;
  }
  zg_pool_ref(x->ureq.pool);
  x->ureq.ntried = 0;
  subject[0] = '\0';
  /* A service that requires client certificates takes only connections
   * whose handshake checked one against its CA (RFC 9110 §15.5.20). */
  if (x->tls && zg_tls_conn_client_subject(x->tls, x->svc->conf->tls_client_ca,
                                           x->svc->conf->tls_verify, subject,
                                           subject_cap) != 0) {
    zg_exchange_error(x, ZG_TERM_BAD_REQUEST, 421,
                      "this connection was not made with a client certificate "
                      "for this host");
    return -1;
  }
  return 0;
}

/* Host and X-Forwarded-Host for the instance. zg_http_route_request
 * bounds the authority and Host below host_cap. */
static void request_forwarding(zg_http_exchange_t *x, const zg_routed_t *rt,
                               zg_http_req_out_t *o, char *host_buf,
                               size_t host_cap) {
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
    memcpy(host_buf, x->req->buf + rt->host->value_off, host_len);
    host_buf[host_len] = '\0';
    o->fwd_host = host_buf;
  }
}

/* The head is in: check it, route it, rewrite it, then find an instance.
 */
void zg_exchange_request_head(zg_http_exchange_t *x, int status,
                              const char *reason) {
  zg_routed_t rt;
  char *target;
  zg_http_req_out_t o;
  int rc;
  char host_buf[ZG_HOST_MAX + 8];
  char subject[1024];

  x->phase = ZG_XP_CONNECT;
  zg_exchange_begin(x);
  request_grpc(x);
  x->method = zg_http_method_name(x->req->method);
  if (x->gw->access_log) {
    /* Not strndup: the head buffer need not hold a NUL after the target
     * (an HTTP/2 codec's does not), and strndup may read on to one. */
    free(x->target);
    if ((x->target = malloc(x->req->url_len + 1))) {
      memcpy(x->target, x->req->buf + x->req->url_off, x->req->url_len);
      x->target[x->req->url_len] = '\0';
    }
  }
  if (status == 0)
    status = zg_http_route_target(x->hl->routes, x->req, &rt, &reason);
  if (status != 0) {
    zg_exchange_error(x, ZG_TERM_BAD_REQUEST, status, reason);
    return;
  }
  if (request_admit(x, &rt, subject, sizeof(subject)) != 0)
    return;
  /* The target for the instance: prefix stripped if asked; the base path
   * is the chosen instance's, but pools of one service share it in
   * practice, so the first instance's is used for the head. */
  target = zg_buf_get(x->gw); /* ZG_BUF_SIZE >= TARGET_MAX */
  if (!target) {
    x->srv->end(x->conn, ZG_TERM_OUT_OF_MEMORY);
    return;
  }
  if (zg_http_rewrite_path(target, TARGET_MAX, x->ureq.pool->inst[0].base_path,
                           rt.path, rt.path_len, rt.route->prefix, x->strip,
                           rt.query, rt.query_len) < 0) {
    zg_buf_put(x->gw, target);
    zg_exchange_error(x, ZG_TERM_BAD_REQUEST, 414, "request target too long");
    return;
  }
  memset(&o, 0, sizeof(o));
  o.target = target;
  o.client_addr = x->client_ip;
  o.proto = x->tls ? "https" : "http";
  o.client_subject = x->tls && subject[0] ? subject : NULL;
  request_forwarding(x, &rt, &o, host_buf, sizeof(host_buf));
  x->cli = cli_codec(NULL);
  rc = x->cli->request_head(x, &o); /* kept in x->up_head for a retry */
  zg_buf_put(x->gw, target);
  if (rc != 0) {
    zg_exchange_error(x, ZG_TERM_BAD_REQUEST, 431, "request head too large");
    return;
  }
  upstream_connect(x);
}

void zg_exchange_done(zg_http_exchange_t *x) {
  void *u = x->up;
  /* The end of the response goes out (and is counted) before anything
   * looks at the write queue. */
  if (x->srv->flush(x->conn) != 0) {
    x->srv->end(x->conn, ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  zg_exchange_finish(x, ZG_TERM_DONE, ZG_PHASE_NONE, NULL);
  x->up = NULL;
  if (u)
    x->cli->release(u, x->req_done);
  /* No retry after a response: idle connections keep no head. */
  zg_http_buf_release(x->gw, &x->up_head, &x->up_head_cap);
  x->srv->done(x->conn);
}

/* Ready for the next exchange on the session. */
void zg_exchange_reset(zg_http_exchange_t *x) {
  x->phase = ZG_XP_NONE;
  x->req = NULL;
  x->req_chunked = 0;
  x->body_bytes = 0;
  if (x->req_trailers.n || x->req_trailers.buf)
    zg_http_trailers_clear(&x->req_trailers);
  if (x->resp_trailers.n || x->resp_trailers.buf)
    zg_http_trailers_clear(&x->resp_trailers);
  x->req_done = x->resp_head = x->resp_done = 0;
  x->sent_ms = x->sent_ns = 0;
  x->req_has_body = x->retried = x->body_held = x->resend = 0;
  free(x->replay);
  x->replay = NULL;
  x->replay_len = 0;
  x->grpc = 0;
  x->deadline_ms = 0;
  if (x->svc) {
    x->svc->active--;
    zg_service_unref(x->svc);
    x->svc = NULL;
  }
  zg_pool_unref(x->ureq.pool);
  x->ureq.pool = NULL;
}

void zg_exchange_abort(zg_http_exchange_t *x, zg_term_t term,
                       zg_term_phase_t phase) {
  x->phase = ZG_XP_CLOSED;
  zg_exchange_finish(x, term, phase, NULL);
  if (x->svc)
    x->svc->active--;
  zg_upstream_cancel(&x->ureq);
  zg_exchange_instance_drop(x);
}

void zg_exchange_free(zg_http_exchange_t *x) {
  free(x->replay);
  x->replay = NULL;
  zg_http_buf_release(x->gw, &x->up_head, &x->up_head_cap);
  zg_pool_unref(x->ureq.pool);
  zg_service_unref(x->svc);
  free(x->target);
  zg_http_trailers_clear(&x->req_trailers);
  zg_http_trailers_clear(&x->resp_trailers);
}

void zg_exchange_tunnel_read(zg_http_exchange_t *x, uv_stream_t *from,
                             ssize_t nread, const char *data) {
  x->srv->tunnel_read(x->conn, from, nread, data);
}
void zg_exchange_tunnel_shut(zg_http_exchange_t *x, int status) {
  x->srv->tunnel_shut(x->conn, status);
}
void zg_exchange_tunnel_start(zg_http_exchange_t *x, const char *rest,
                              size_t len) {
  zg_exchange_cli_state_t st;
  x->cli->state(x->up, &st);
  zg_debug("http", "client %s: %s tunnel to %s", x->client_addr, x->upgrade,
           st.key);
  x->phase = ZG_XP_TUNNEL;
  x->srv->tunnel_start(x->conn, rest, len);
}
