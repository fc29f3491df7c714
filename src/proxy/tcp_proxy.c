/* TCP (L4) proxying. One session per accepted client: pick a random live
 * instance, connect (trying up to two others on failure or timeout), then
 * relay bytes both ways. tls-passthrough sessions begin in sni_proxy.c,
 * which reads the ClientHello, chooses the service and hands the client
 * over with the bytes read (zg_tcp_session_start): they are sent to the
 * instance before anything else.
 *
 * Backpressure as in libuv's socks5 sample: each direction reads only
 * while it is not writing, so neither side is read faster than the other
 * drains, and a direction holds a buffer only between a read and the end
 * of its write (idle sessions hold none). A read of EOF becomes a shutdown
 * of the other side's write half (half-close); the session ends when both
 * halves are shut, on any error, on the idle timeout, or on stop. Every
 * session ends with a termination reason.
 *
 * A service with tls_cert terminates TLS: the handshake comes first (within
 * header_timeout), then the instance is chosen; the client's side of the
 * relay goes through tls.h's zg_stream_* calls, which are libuv's own for
 * plain clients. */
#include "proxy/tcp_proxy.h"

#include "core/error.h"
#include "net/listener.h"
#include "core/log.h"
#include "core/term.h"
#include "net/tls.h"
#include "core/tls_hello.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TRIES 3 /* the first instance and up to two others */

typedef enum {
  S_CONNECTING = 0,
  S_RELAY,
  S_CLOSING,
} session_state_t;

typedef struct relay_dir {
  struct zg_tcp_session *s;
  uv_stream_t *in, *out;
  zg_tls_conn_t *tls_in, *tls_out; /* the client's TLS on that side, or NULL */
  uv_write_t wreq;
  uv_shutdown_t sreq;
  char *buf; /* held from a read until its write completes */
  uint64_t bytes;
  unsigned eof : 1;  /* `in` said EOF */
  unsigned shut : 1; /* `out` write half shut */
} relay_dir_t;

typedef struct zg_tcp_session {
  zg_service_t *svc;
  zg_conn_ticket_t conn; /* the client's admission (max_connections) */
  struct zg_tcp_session *prev, *next;
  session_state_t state;
  uv_tcp_t *client; /* &client_own, or one handed over (tls-passthrough) */
  uv_tcp_t client_own;
  uv_tcp_t upstream;
  zg_tls_conn_t *tls;    /* TLS terminated here, or NULL */
  zg_tls_conn_t *tls_up; /* TLS to the instance (upstream_tls), or NULL */
  uv_timer_t timer;      /* handshake, connect, then idle timeout */
  uv_connect_t connect_req;
  uv_getaddrinfo_t gai_req;
  relay_dir_t up;   /* client -> instance */
  relay_dir_t down; /* instance -> client */
  char *initial;    /* read before the session began: sent first */
  size_t initial_len;
  uv_write_t initial_req;
  zg_pool_t *pool; /* referenced while an instance of it is in use */
  size_t tried[MAX_TRIES];
  size_t ntried;
  unsigned handles; /* handles not yet closed */
  unsigned upstream_open : 1;
  unsigned gai_pending : 1;
  unsigned retry_on_close : 1;   /* pick another instance once closed */
  unsigned retry_on_resolve : 1; /* ... once the cancelled lookup is back */
  unsigned want_tls : 1;         /* TLS to the instance once connected */
  uint64_t start_ms, last_active_ms;
  uint64_t start_ns; /* uv_hrtime at accept, for the access log */
  zg_term_t reason;
  char client_addr[64];
  char instance_addr[ZG_HOST_MAX + 10];
  char sni[ZG_TLS_NAME_MAX + 1]; /* tls-passthrough: the name it asked for */
} zg_tcp_session_t;

static void session_end(zg_tcp_session_t *s, zg_term_t term);
static void try_connect(zg_tcp_session_t *s);

/* ---- closing --------------------------------------------------------- */

static void session_free_if_done(zg_tcp_session_t *s) {
  zg_gateway_t *gw = s->svc->gw;
  if (s->handles > 0 || s->gai_pending)
    return;
  zg_buf_put(gw, s->up.buf);
  zg_buf_put(gw, s->down.buf);
  free(s->initial);
  if (s->client != &s->client_own)
    free(s->client);
  zg_pool_unref(s->pool);
  zg_service_unref(s->svc);
  zg_conn_ticket_release(&s->conn);
  free(s);
}

static void on_handle_closed(uv_handle_t *h) {
  zg_tcp_session_t *s = h->data;
  s->handles--;
  if (h == (uv_handle_t *)&s->upstream) {
    s->upstream_open = 0;
    if (s->retry_on_close && s->state == S_CONNECTING) {
      s->retry_on_close = 0;
      try_connect(s);
      return;
    }
  }
  session_free_if_done(s);
}

static void close_handle(zg_tcp_session_t *s, uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, on_handle_closed);
  (void)s;
}

/* The phase of the session, for the termination code (core/term.h): a TLS
 * handshake still counts in the client's head (the ticket says so). */
static zg_term_phase_t phase_of(const zg_tcp_session_t *s) {
  if (s->state == S_RELAY)
    return ZG_PHASE_DATA;
  return s->conn.head ? ZG_PHASE_REQUEST : ZG_PHASE_CONNECT;
}

static void session_end(zg_tcp_session_t *s, zg_term_t term) {
  zg_service_t *svc = s->svc;
  zg_gateway_t *gw = svc->gw;
  zg_term_phase_t phase = phase_of(s);
  if (s->state == S_CLOSING)
    return;
  s->state = S_CLOSING;
  s->reason = term;
  zg_traffic_ended(&svc->traffic, term);
  s->retry_on_close = 0;
  svc->active--;
  if (s->prev)
    s->prev->next = s->next;
  else
    gw->sessions = s->next;
  if (s->next)
    s->next->prev = s->prev;
  zg_debug("tcp",
           "service %s: client %s%s%s instance %s: %s after %llu ms, "
           "%llu bytes up, %llu bytes down",
           svc->conf->name, s->client_addr, s->sni[0] ? " sni " : "", s->sni,
           s->instance_addr[0] ? s->instance_addr : "-", zg_term_text(term),
           (unsigned long long)(uv_now(gw->loop) - s->start_ms),
           (unsigned long long)s->up.bytes, (unsigned long long)s->down.bytes);
  if (gw->access_log) {
    zg_access_entry_t e;
    uv_timeval64_t tv;
    memset(&e, 0, sizeof(e));
    uv_gettimeofday(&tv);
    e.time_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
    e.kind = svc->conf->protocol == ZG_PROTO_TLS_PASSTHROUGH ? "tls" : "tcp";
    e.client = s->client_addr;
    e.service = svc->conf->name;
    e.instance = s->instance_addr[0] ? s->instance_addr : NULL;
    e.bytes_in = s->up.bytes;
    e.bytes_out = s->down.bytes;
    e.duration_us = (uv_hrtime() - s->start_ns) / 1000;
    e.term = term;
    e.phase = phase;
    zg_access_log_write(gw->access_log, &e);
  }
  if (s->gai_pending)
    uv_cancel((uv_req_t *)&s->gai_req);
  zg_tls_conn_free(s->tls);
  zg_tls_conn_free(s->tls_up);
  s->tls_up = NULL;
  close_handle(s, (uv_handle_t *)s->client);
  close_handle(s, (uv_handle_t *)&s->timer);
  if (s->upstream_open)
    close_handle(s, (uv_handle_t *)&s->upstream);
}

void zg_tcp_close_all(zg_gateway_t *gw) {
  while (gw->sessions)
    session_end(gw->sessions, ZG_TERM_GATEWAY_STOPPING);
}

/* ---- relay ----------------------------------------------------------- */

static void dir_read_start(relay_dir_t *d);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  zg_tcp_session_t *s = h->data;
  relay_dir_t *d = h == (uv_handle_t *)s->client ? &s->up : &s->down;
  (void)suggested;
  if (!d->buf)
    d->buf = zg_buf_get(s->svc->gw);
  buf->base = d->buf;
  buf->len = d->buf ? ZG_BUF_SIZE : 0; /* 0: libuv reports UV_ENOBUFS */
}

static void maybe_done(zg_tcp_session_t *s) {
  if (s->up.shut && s->down.shut)
    session_end(s, ZG_TERM_CLOSED);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  relay_dir_t *d = req->data;
  zg_tcp_session_t *s = d->s;
  if (s->state == S_CLOSING)
    return;
  if (status < 0) {
    /* The peer is gone already (ENOTCONN, EPIPE). */
    session_end(s, d == &s->up ? ZG_TERM_INSTANCE_GONE : ZG_TERM_CLIENT_GONE);
    return;
  }
  d->shut = 1;
  maybe_done(s);
}

static void dir_eof(relay_dir_t *d) {
  zg_tcp_session_t *s = d->s;
  int rc;
  d->eof = 1;
  zg_buf_put(s->svc->gw, d->buf);
  d->buf = NULL;
  zg_stream_read_stop(d->tls_in, d->in);
  d->sreq.data = d;
  rc = zg_stream_shutdown(d->tls_out, &d->sreq, d->out, on_shutdown);
  if (rc < 0)
    session_end(s, d == &s->up ? ZG_TERM_INSTANCE_GONE : ZG_TERM_CLIENT_GONE);
}

static void on_write(uv_write_t *req, int status) {
  relay_dir_t *d = req->data;
  zg_tcp_session_t *s = d->s;
  if (s->state == S_CLOSING)
    return;
  if (status < 0) {
    session_end(s, d == &s->up ? ZG_TERM_INSTANCE_WRITE_ERROR
                               : ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  zg_buf_put(s->svc->gw, d->buf);
  d->buf = NULL;
  dir_read_start(d);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  zg_tcp_session_t *s = stream->data;
  relay_dir_t *d = stream == (uv_stream_t *)s->client ? &s->up : &s->down;
  uv_buf_t wbuf;
  int rc;
  (void)buf;
  if (s->state == S_CLOSING)
    return;
  if (nread == 0) {
    zg_buf_put(s->svc->gw, d->buf); /* EAGAIN: nothing read */
    d->buf = NULL;
    return;
  }
  if (nread == UV_EOF) {
    dir_eof(d);
    return;
  }
  if (nread < 0) {
    session_end(s, nread == UV_ENOBUFS ? ZG_TERM_OUT_OF_MEMORY
                   : d == &s->up       ? ZG_TERM_CLIENT_RESET
                                       : ZG_TERM_INSTANCE_RESET);
    return;
  }
  d->bytes += (uint64_t)nread;
  if (d == &s->up)
    s->svc->traffic.bytes_in += (uint64_t)nread;
  else
    s->svc->traffic.bytes_out += (uint64_t)nread;
  s->last_active_ms = uv_now(s->svc->gw->loop);
  /* Try the write at once: most of the time the socket takes it all and
   * the buffer is free again without a trip through the loop. */
  wbuf = uv_buf_init(d->buf, (unsigned)nread);
  rc = zg_stream_try_write(d->tls_out, d->out, &wbuf, 1);
  if (rc == nread) {
    zg_buf_put(s->svc->gw, d->buf);
    d->buf = NULL;
    return; /* keep reading */
  }
  if (rc < 0 && rc != UV_EAGAIN) {
    session_end(s, d == &s->up ? ZG_TERM_INSTANCE_WRITE_ERROR
                               : ZG_TERM_CLIENT_WRITE_ERROR);
    return;
  }
  if (rc > 0) {
    wbuf.base += rc;
    wbuf.len -= (unsigned)rc;
  }
  zg_stream_read_stop(d->tls_in, d->in);
  d->wreq.data = d;
  rc = zg_stream_write(d->tls_out, &d->wreq, d->out, &wbuf, 1, on_write);
  if (rc < 0)
    session_end(s, d == &s->up ? ZG_TERM_INSTANCE_WRITE_ERROR
                               : ZG_TERM_CLIENT_WRITE_ERROR);
}

static void dir_read_start(relay_dir_t *d) {
  if (d->eof)
    return;
  if (zg_stream_read_start(d->tls_in, d->in, on_alloc, on_read) < 0)
    session_end(d->s, ZG_TERM_READ_ERROR);
}

static void on_idle_timer(uv_timer_t *t) {
  zg_tcp_session_t *s = t->data;
  uint64_t idle = s->svc->gw->cfg->proxy.idle_timeout_ms;
  uint64_t now = uv_now(s->svc->gw->loop);
  /* Re-armed lazily: activity only stamps last_active_ms. */
  if (now - s->last_active_ms >= idle)
    session_end(s, ZG_TERM_IDLE_TIMEOUT);
  else
    uv_timer_start(t, on_idle_timer, idle - (now - s->last_active_ms), 0);
}

static void on_initial_written(uv_write_t *req, int status) {
  zg_tcp_session_t *s = req->data;
  free(s->initial);
  s->initial = NULL;
  if (s->state == S_CLOSING)
    return;
  if (status < 0) {
    session_end(s, ZG_TERM_INSTANCE_WRITE_ERROR);
    return;
  }
  dir_read_start(&s->up);
}

static void relay_start(zg_tcp_session_t *s) {
  uint64_t idle = s->svc->gw->cfg->proxy.idle_timeout_ms;
  s->state = S_RELAY;
  zg_pool_unref(s->pool); /* the address is in instance_addr */
  s->pool = NULL;
  uv_timer_stop(&s->timer);
  uv_tcp_nodelay(s->client, 1);
  uv_tcp_nodelay(&s->upstream, 1);
  s->up = (relay_dir_t){.s = s,
                        .in = (uv_stream_t *)s->client,
                        .out = (uv_stream_t *)&s->upstream,
                        .tls_in = s->tls,
                        .tls_out = s->tls_up,
                        .bytes = s->initial_len};
  s->down = (relay_dir_t){.s = s,
                          .in = (uv_stream_t *)&s->upstream,
                          .out = (uv_stream_t *)s->client,
                          .tls_in = s->tls_up,
                          .tls_out = s->tls};
  s->last_active_ms = uv_now(s->svc->gw->loop);
  if (idle > 0)
    uv_timer_start(&s->timer, on_idle_timer, idle, 0);
  if (s->initial) {
    /* What the client sent before the session began goes first; the
     * client is read again once it is written. */
    uv_buf_t b = uv_buf_init(s->initial, (unsigned)s->initial_len);
    int rc;
    s->initial_req.data = s;
    rc =
        zg_stream_write(s->tls_up, &s->initial_req, (uv_stream_t *)&s->upstream,
                        &b, 1, on_initial_written);
    if (rc < 0) {
      session_end(s, ZG_TERM_INSTANCE_WRITE_ERROR);
      return;
    }
  } else {
    dir_read_start(&s->up);
  }
  if (s->state == S_RELAY)
    dir_read_start(&s->down);
}

/* ---- connecting ------------------------------------------------------ */

static void connect_failed(zg_tcp_session_t *s, const char *why) {
  zg_service_t *svc = s->svc;
  uint64_t dropped;
  svc->connect_failures++;
  if (zg_service_log_connect_fail(svc, &dropped))
    zg_warn("tcp", "service %s: cannot connect to instance %s: %s%s",
            svc->conf->name, s->instance_addr, why,
            dropped ? " (and earlier failures not logged)" : "");
  if (zg_health_failed(svc->gw, s->instance_addr))
    svc->traffic.ejections++;
  uv_timer_stop(&s->timer);
  zg_tls_conn_free(s->tls_up); /* gives upstream.data back */
  s->tls_up = NULL;
  if (s->upstream_open) {
    s->retry_on_close = 1;
    close_handle(s, (uv_handle_t *)&s->upstream);
  } else {
    try_connect(s);
  }
}

static void on_upstream_handshake(zg_tls_conn_t *c, int status, void *arg) {
  zg_tcp_session_t *s = arg;
  char why[256];
  if (s->state != S_CONNECTING)
    return;
  if (status < 0) {
    s->svc->up_tls_failures++;
    snprintf(why, sizeof(why), "TLS handshake failed: %s",
             zg_tls_conn_error(c));
    connect_failed(s, why);
    return;
  }
  s->svc->up_tls_handshakes++;
  if (zg_tls_conn_resumed(c))
    s->svc->up_tls_resumed++;
  relay_start(s);
}

/* TLS over the connection just made, to the instance last tried; the
 * connect timeout runs on. */
static void upstream_tls_start(zg_tcp_session_t *s) {
  const zg_instance_t *inst = &s->pool->inst[s->tried[s->ntried - 1]];
  const char *sni = s->svc->conf->upstream_sni;
  zg_tls_client_t *cli = zg_service_tls_client(s->svc);
  char why[256];
  if (!cli || !(s->tls_up = zg_tls_conn_client(
                    cli, &s->upstream, sni ? sni : inst->host,
                    !sni && inst->is_ip, s->instance_addr, false))) {
    connect_failed(s, "TLS: out of memory or no TLS context");
    return;
  }
  if (zg_tls_handshake(s->tls_up, on_upstream_handshake, s) != 0) {
    s->svc->up_tls_failures++;
    snprintf(why, sizeof(why), "TLS handshake failed: %s",
             zg_tls_conn_error(s->tls_up));
    connect_failed(s, why);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  zg_tcp_session_t *s = req->data;
  if (s->state != S_CONNECTING || status == UV_ECANCELED)
    return; /* closed under it: the close callback carries on */
  if (status < 0) {
    connect_failed(s, uv_strerror(status));
    return;
  }
  if (s->want_tls) {
    upstream_tls_start(s);
    return;
  }
  relay_start(s);
}

static void on_connect_timeout(uv_timer_t *t) {
  zg_tcp_session_t *s = t->data;
  if (s->state != S_CONNECTING)
    return;
  if (s->gai_pending) {
    /* The lookup's request cannot be reused until its callback runs. */
    s->svc->connect_failures++;
    s->retry_on_resolve = 1;
    uv_cancel((uv_req_t *)&s->gai_req);
    return;
  }
  if (s->tls_up) {
    zg_tls_handshake_timed_out(s->tls_up);
    s->svc->up_tls_failures++;
    connect_failed(s, "TLS handshake timeout");
    return;
  }
  connect_failed(s, "connect timeout");
}

static void connect_to(zg_tcp_session_t *s, const struct sockaddr *sa) {
  int rc = uv_tcp_init(s->svc->gw->loop, &s->upstream);
  if (rc < 0) {
    connect_failed(s, uv_strerror(rc));
    return;
  }
  s->upstream.data = s;
  s->upstream_open = 1;
  s->handles++;
  s->connect_req.data = s;
  rc = uv_tcp_connect(&s->connect_req, &s->upstream, sa, on_connect);
  if (rc < 0) {
    connect_failed(s, uv_strerror(rc));
    return;
  }
  uv_timer_start(&s->timer, on_connect_timeout,
                 s->svc->conf->connect_timeout_ms, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  zg_tcp_session_t *s = req->data;
  s->gai_pending = 0;
  if (s->state != S_CONNECTING) {
    uv_freeaddrinfo(res);
    session_free_if_done(s);
    return;
  }
  if (s->retry_on_resolve) {
    s->retry_on_resolve = 0;
    uv_freeaddrinfo(res);
    try_connect(s);
    return;
  }
  if (status < 0 || !res) {
    uv_freeaddrinfo(res);
    connect_failed(s, status < 0 ? uv_strerror(status) : "no address");
    return;
  }
  connect_to(s, res->ai_addr);
  uv_freeaddrinfo(res);
}

static void try_connect(zg_tcp_session_t *s) {
  zg_service_t *svc = s->svc;
  zg_gateway_t *gw = svc->gw;
  const zg_instance_t *inst;
  size_t i;
  uint16_t port;

  if (!s->pool) {
    zg_pool_t *p = zg_service_pool(svc);
    if (p)
      s->pool = zg_pool_ref(p);
  }
  i = s->ntried < MAX_TRIES ? zg_service_pick(svc, s->pool, s->tried, s->ntried)
                            : ZG_PICK_NONE;
  if (i == ZG_PICK_NONE) {
    if (s->ntried == 0) {
      uint64_t total;
      if (zg_service_refused(svc, &total))
        zg_warn("tcp",
                "service %s: no live instance; client %s closed "
                "(%llu such connections so far)",
                svc->conf->name, s->client_addr, (unsigned long long)total);
      session_end(s, ZG_TERM_NO_INSTANCE);
    } else {
      session_end(s, ZG_TERM_UNREACHABLE);
    }
    return;
  }
  if (s->ntried > 0)
    svc->traffic.retries++;
  s->tried[s->ntried++] = i;
  inst = &s->pool->inst[i];
  s->want_tls = zg_instance_use_tls(inst, svc->conf->upstream_tls, &port);
  zg_instance_addr_port_str(inst, port, s->instance_addr,
                            sizeof(s->instance_addr));
  if (inst->is_ip) {
    struct sockaddr_storage ss;
    int rc = strchr(inst->host, ':')
                 ? uv_ip6_addr(inst->host, port, (struct sockaddr_in6 *)&ss)
                 : uv_ip4_addr(inst->host, port, (struct sockaddr_in *)&ss);
    if (rc < 0) {
      connect_failed(s, uv_strerror(rc));
      return;
    }
    connect_to(s, (const struct sockaddr *)&ss);
  } else {
    struct addrinfo hints;
    char service[8];
    int rc;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof(service), "%u", port);
    s->gai_req.data = s;
    rc = uv_getaddrinfo(gw->loop, &s->gai_req, on_resolved, inst->host, service,
                        &hints);
    if (rc < 0) {
      connect_failed(s, uv_strerror(rc));
      return;
    }
    s->gai_pending = 1;
    uv_timer_start(&s->timer, on_connect_timeout, svc->conf->connect_timeout_ms,
                   0);
  }
}

/* A session of `svc` with its handles initialised, counted and listed;
 * `client` NULL: its own, to accept into. NULL when out of memory. */
static zg_tcp_session_t *session_new(zg_service_t *svc, uv_tcp_t *client) {
  zg_gateway_t *gw = svc->gw;
  zg_tcp_session_t *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->svc = zg_service_ref(svc);
  s->client = client ? client : &s->client_own;
  if (!client)
    uv_tcp_init(gw->loop, s->client);
  uv_timer_init(gw->loop, &s->timer);
  s->client->data = s;
  s->timer.data = s;
  s->handles = 2;
  s->start_ms = uv_now(gw->loop);
  s->start_ns = uv_hrtime();
  s->next = gw->sessions;
  if (gw->sessions)
    gw->sessions->prev = s;
  gw->sessions = s;
  svc->accepted++;
  svc->active++;
  return s;
}

static void on_handshake_timeout(uv_timer_t *t) {
  zg_tcp_session_t *s = t->data;
  zg_tls_handshake_timed_out(s->tls);
  session_end(s, ZG_TERM_TLS_HANDSHAKE_TIMEOUT);
}

static void on_handshake(zg_tls_conn_t *c, int status, void *arg) {
  zg_tcp_session_t *s = arg;
  (void)c;
  if (s->state == S_CLOSING)
    return;
  uv_timer_stop(&s->timer);
  if (status < 0) {
    session_end(s, status == UV_EOF ? ZG_TERM_CLIENT_CLOSED
                                    : ZG_TERM_TLS_HANDSHAKE_FAILED);
    return;
  }
  zg_conn_ticket_head_done(&s->conn);
  try_connect(s);
}

void zg_tcp_on_connection(uv_stream_t *server, int status) {
  zg_service_t *svc = server->data;
  zg_tcp_session_t *s;
  zg_conn_ticket_t conn;

  if (status < 0) {
    zg_warn("tcp", "service %s: accept failed: %s", svc->conf->name,
            uv_strerror(status));
    return;
  }
  /* A TLS handshake to terminate is this service's head. */
  if (zg_gateway_admit(svc->gw, server, svc->conf->tls_cert != NULL, &conn,
                       svc->conf->listen.text) != 0)
    return;
  s = session_new(svc, NULL);
  if (!s) {
    /* Take the connection off the queue and drop it. */
    zg_error("tcp", "service %s: out of memory accepting a client",
             svc->conf->name);
    zg_conn_ticket_release(&conn);
    zg_listener_drop(server);
    return;
  }
  s->conn = conn;
  if (uv_accept(server, (uv_stream_t *)s->client) != 0) {
    session_end(s, ZG_TERM_ACCEPT_FAILED);
    return;
  }
  {
    char ip[48];
    zg_peer_name(s->client, ip, sizeof(ip), s->client_addr,
                 sizeof(s->client_addr));
  }
  if (svc->conf->tls_cert) {
    zg_tls_server_t *srv = zg_gateway_tls(svc->gw, &svc->conf->listen);
    if (!srv ||
        !(s->tls = zg_tls_conn_server(srv, s->client, s->client_addr))) {
      session_end(s, srv ? ZG_TERM_OUT_OF_MEMORY : ZG_TERM_NO_CERTIFICATE);
      return;
    }
    uv_timer_start(&s->timer, on_handshake_timeout,
                   svc->gw->cfg->proxy.header_timeout_ms, 0);
    if (zg_tls_handshake(s->tls, on_handshake, s) != 0)
      session_end(s, ZG_TERM_READ_ERROR);
    return;
  }
  try_connect(s);
}

static void on_orphan_closed(uv_handle_t *h) {
  free(h);
}

void zg_tcp_session_start(zg_service_t *svc, uv_tcp_t *client, char *initial,
                          size_t len, const char *sni, uint64_t start_ns,
                          zg_conn_ticket_t *conn) {
  zg_tcp_session_t *s = session_new(svc, client);
  zg_conn_ticket_head_done(conn);
  if (!s) {
    zg_error("tcp", "service %s: out of memory starting a session",
             svc->conf->name);
    free(initial);
    zg_conn_ticket_release(conn);
    uv_close((uv_handle_t *)client, on_orphan_closed);
    return;
  }
  s->conn = *conn;
  memset(conn, 0, sizeof(*conn));
  s->initial = initial;
  s->initial_len = len;
  s->start_ns = start_ns;
  s->svc->traffic.bytes_in += len;
  s->up.bytes = len;
  if (sni)
    snprintf(s->sni, sizeof(s->sni), "%s", sni);
  {
    char ip[48];
    zg_peer_name(s->client, ip, sizeof(ip), s->client_addr,
                 sizeof(s->client_addr));
  }
  try_connect(s);
}

size_t zg_tcp_sessions_open(const zg_gateway_t *gw) {
  size_t n = 0;
  for (const zg_tcp_session_t *s = gw->sessions; s; s = s->next)
    n++;
  return n;
}

size_t zg_tcp_instance_active(zg_gateway_t *gw, const zg_service_t *svc,
                              const char *key) {
  size_t n = 0;
  for (zg_tcp_session_t *s = gw->sessions; s; s = s->next)
    n += s->svc == svc && s->state != S_CLOSING &&
         !strcmp(s->instance_addr, key);
  return n;
}
