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
 * plain clients.
 *
 * When neither side is TLS (and [proxy] tcp_splice is auto, the default),
 * the relay moves bytes with splice(2) instead: socket -> pipe -> socket
 * inside the kernel, never through user space. libuv still says when the
 * sockets are ready, through one uv_poll_t per socket; the uv_tcp_t
 * handles keep owning (and in the end closing) the descriptors but do no
 * I/O of their own meanwhile: libuv has one watcher per descriptor, so
 * the streams must not read, write or shut down while the polls watch
 * (docs/tcp-splice.md). Each direction takes a pipe from the loop's pool
 * (pipe_pool.h) for as long as bytes are in it and reads its source only
 * while the pipe has room: the pipe is the direction's buffer and its
 * backpressure. When no pipe can be had (EMFILE...) the direction reads
 * into a pool buffer and writes it with send(): logged once, counted, the
 * session goes on. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* splice, SPLICE_F_* */
#endif
#include "proxy/tcp_proxy.h"

#include "core/error.h"
#include "net/listener.h"
#include "core/list.h"
#include "core/log.h"
#include "core/term.h"
#include "net/tls.h"
#include "core/tls_hello.h"
#include "proxy/pipe_pool.h"
#include "upstream/service.h"
#include "upstream/upstream.h"

#include <errno.h>
#include <fcntl.h> /* splice */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h> /* TCP_INFO */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/sockios.h> /* SIOCOUTQ */
#endif

typedef enum {
  S_CONNECTING = 0,
  S_RELAY,
  S_CLOSING,
} session_state_t;

/* After one side failed, the other side's socket stays open (and in the
 * loop's `flushing` list) until its peer has acknowledged everything sent
 * to it: closing a socket whose peer still sends makes the kernel reset it
 * and throw away what it had not delivered yet. Checked every
 * FLUSH_CHECK_MS, for at most FLUSH_MAX_MS (or idle_timeout if shorter). */
#define FLUSH_CHECK_MS 10
#define FLUSH_MAX_MS 5000

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
  /* splice: */
  unsigned full : 1;     /* a read into the non-empty pipe said EAGAIN: the
                            pipe may be out of slots, wait for a write */
  unsigned src_dead : 1; /* `in` failed: read what it still holds, no more */
  int in_fd, out_fd;
  zg_pipe_t pipe;    /* held while bytes are in it */
  size_t pending;    /* bytes in the pipe */
  char *wptr;        /* user-space bytes to send before the pipe's: the */
  size_t woff, wlen; /* initial bytes, or a read made without a pipe */
} relay_dir_t;

typedef struct zg_tcp_session {
  zg_service_t *svc;
  zg_conn_ticket_t conn; /* the client's admission (max_connections) */
  zg_link_t link;        /* in the loop's sessions */
  session_state_t state;
  uv_tcp_t *client; /* &client_own, or one handed over (tls-passthrough) */
  uv_tcp_t client_own;
  zg_upstream_req_t ureq; /* connecting; ureq.instance: the instance */
  zg_upconn_t *upc;       /* the connection to the instance, once made */
  zg_tls_conn_t *tls;     /* TLS terminated here, or NULL */
  uv_timer_t timer;       /* handshake, then idle timeout */
  uv_poll_t poll_client;  /* splice: readiness of the client's socket */
  uv_poll_t poll_up;      /* splice: and of the instance's */
  int ev_client, ev_up;   /* splice: what each poll waits for now */
  unsigned splice : 1;    /* relayed with splice(2), polls initialised */
  unsigned dead_client : 1, dead_up : 1; /* that socket failed */
  zg_term_t fail_term;                   /* why the first one did */
  uv_handle_t *flushing;   /* the socket kept open after the end, or NULL */
  unsigned flush_shut : 1; /* its write half is shut */
  uint64_t flush_start_ms;
  relay_dir_t up;   /* client -> instance */
  relay_dir_t down; /* instance -> client */
  char *initial;    /* read before the session began: sent first */
  size_t initial_len;
  uv_write_t initial_req;
  unsigned handles; /* handles not yet closed (upc's counted as one) */
  uint64_t start_ms, last_active_ms;
  uint64_t start_ns; /* uv_hrtime at accept, for the access log */
  zg_term_t reason;
  char client_addr[64];
  char sni[ZG_TLS_NAME_MAX + 1]; /* tls-passthrough: the name it asked for */
} zg_tcp_session_t;

/* This loop's TCP state (zg_proxy_ctx_t.tcp). */
struct zg_tcp_loop {
  zg_list_t sessions; /* every open zg_tcp_session_t */
  zg_list_t flushing; /* ended, one socket still flushing */
  zg_pipe_pool_t pipes;
  uint64_t spliced_sessions; /* sessions relayed with splice(2) */
  unsigned pipe_warned : 1;  /* "no pipe" logged once */
};

static void session_end(zg_tcp_session_t *s, zg_term_t term);
static void upstream_connect(zg_tcp_session_t *s);
static int splice_start(zg_tcp_session_t *s);
static void on_handle_closed(uv_handle_t *h);

/* ---- closing --------------------------------------------------------- */

static void session_free_if_done(zg_tcp_session_t *s) {
  zg_proxy_ctx_t *px = s->svc->px;
  if (s->handles > 0)
    return;
  zg_buf_put(px, s->up.buf);
  zg_buf_put(px, s->down.buf);
  free(s->initial);
  if (s->client != &s->client_own)
    free(s->client);
  zg_pool_unref(s->ureq.pool);
  zg_service_unref(s->svc);
  zg_conn_ticket_release(&s->conn);
  free(s);
}

static void on_handle_closed(uv_handle_t *h) {
  zg_tcp_session_t *s = h->data;
  s->handles--;
  session_free_if_done(s);
}

/* The connection to the instance is closed: its writes have all called
 * back. */
static void on_upconn_closed(zg_upconn_t *c) {
  zg_tcp_session_t *s = c->data;
  s->handles--;
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

/* ---- flushing after a failure ---------------------------------------- */

/* Bytes written to `h`'s socket that its peer has not acknowledged yet
 * (libuv's queue included); 0 when unknown or when the connection is
 * closed (reset: nothing more will be acknowledged). */
static size_t unacked(uv_handle_t *h) {
  size_t n = uv_stream_get_write_queue_size((uv_stream_t *)h);
#if defined(SIOCOUTQ) && defined(TCP_INFO)
  uv_os_fd_t fd;
  int q = 0;
  struct tcp_info ti;
  socklen_t len = sizeof(ti);
  if (uv_fileno(h, &fd) != 0 ||
      getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
      ti.tcpi_state == TCP_CLOSE)
    return 0;
  if (ioctl(fd, SIOCOUTQ, &q) == 0 && q > 0)
    n += (size_t)q;
#endif
  return n;
}

static void flush_finish(zg_tcp_session_t *s) {
  zg_link_remove(&s->link);
  if (s->flushing == (uv_handle_t *)s->client)
    close_handle(s, (uv_handle_t *)s->client);
  else
    zg_upconn_close(s->upc);
  s->flushing = NULL;
  close_handle(s, (uv_handle_t *)&s->timer);
}

static void on_flush_timer(uv_timer_t *t) {
  zg_tcp_session_t *s = t->data;
  zg_proxy_ctx_t *px = s->svc->px;
  uint64_t idle = px->cfg->proxy.idle_timeout_ms; /* 0: none */
  uint64_t max = idle && idle < FLUSH_MAX_MS ? idle : FLUSH_MAX_MS;
  uv_os_fd_t fd;
  if (!s->flush_shut &&
      uv_stream_get_write_queue_size((uv_stream_t *)s->flushing) == 0 &&
      uv_fileno(s->flushing, &fd) == 0) {
    shutdown(fd, SHUT_WR); /* an error: the peer is gone, unacked() is 0 */
    s->flush_shut = 1;
  }
  if ((s->flush_shut && unacked(s->flushing) == 0) ||
      uv_now(px->loop) - s->flush_start_ms >= max)
    flush_finish(s);
}

/* Which side `term` says failed: 'C' the client, 'S' the instance, 0
 * neither (a close, a timeout, a stop...). */
static char failed_side(zg_term_t term) {
  switch (term) {
  case ZG_TERM_CLIENT_RESET:
  case ZG_TERM_CLIENT_WRITE_ERROR:
  case ZG_TERM_CLIENT_GONE:
    return 'C';
  case ZG_TERM_INSTANCE_RESET:
  case ZG_TERM_INSTANCE_WRITE_ERROR:
  case ZG_TERM_INSTANCE_GONE:
    return 'S';
  default:
    return 0;
  }
}

/* The handle to keep open after the session ends with `term`: the socket
 * of the side that did not fail, when it is plain TCP and its peer has not
 * acknowledged everything yet; else NULL. */
static uv_handle_t *flush_target(zg_tcp_session_t *s, zg_term_t term) {
  uv_handle_t *h;
  if (s->state != S_RELAY || !s->upc)
    return NULL;
  switch (failed_side(term)) {
  case 'C':
    h = s->upc->tls ? NULL : (uv_handle_t *)&s->upc->tcp;
    break;
  case 'S':
    h = s->tls ? NULL : (uv_handle_t *)s->client;
    break;
  default:
    return NULL;
  }
  return h && unacked(h) > 0 ? h : NULL;
}

/* Keeps `h` open until its peer has everything (on_flush_timer); reads
 * on it stop, its write half is shut once libuv's queue is out. */
static void flush_start(zg_tcp_session_t *s, uv_handle_t *h) {
  zg_proxy_ctx_t *px = s->svc->px;
  s->flushing = h;
  s->flush_start_ms = uv_now(px->loop);
  uv_read_stop((uv_stream_t *)h);
  zg_list_push(&px->tcp->flushing, &s->link);
  uv_timer_start(&s->timer, on_flush_timer, FLUSH_CHECK_MS, FLUSH_CHECK_MS);
}

static void session_end(zg_tcp_session_t *s, zg_term_t term) {
  zg_service_t *svc = s->svc;
  zg_proxy_ctx_t *px = svc->px;
  zg_term_phase_t phase = phase_of(s);
  uv_handle_t *keep;
  if (s->state == S_CLOSING)
    return;
  /* After a side failed, the end of the other direction (both halves
   * shut, or the other side failing in turn) comes from that failure. */
  if ((s->dead_client || s->dead_up) &&
      (term == ZG_TERM_CLOSED || failed_side(term)))
    term = s->fail_term;
  keep = flush_target(s, term);
  s->state = S_CLOSING;
  s->reason = term;
  zg_traffic_ended(&svc->traffic, term);
  svc->active--;
  zg_link_remove(&s->link);
  zg_debug("tcp",
           "service %s: client %s%s%s instance %s: %s after %llu ms, "
           "%llu bytes up, %llu bytes down",
           svc->conf->name, s->client_addr, s->sni[0] ? " sni " : "", s->sni,
           s->ureq.instance[0] ? s->ureq.instance : "-", zg_term_text(term),
           (unsigned long long)(uv_now(px->loop) - s->start_ms),
           (unsigned long long)s->up.bytes, (unsigned long long)s->down.bytes);
  if (px->access_log) {
    zg_access_entry_t e;
    uv_timeval64_t tv;
    memset(&e, 0, sizeof(e));
    uv_gettimeofday(&tv);
    e.time_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
    e.kind = svc->conf->protocol == ZG_PROTO_TLS_PASSTHROUGH ? "tls" : "tcp";
    e.client = s->client_addr;
    e.service = svc->conf->name;
    e.instance = s->ureq.instance[0] ? s->ureq.instance : NULL;
    e.bytes_in = s->up.bytes;
    e.bytes_out = s->down.bytes;
    e.duration_us = (uv_hrtime() - s->start_ns) / 1000;
    e.term = term;
    e.phase = phase;
    zg_access_log_write(px->access_log, &e);
  }
  zg_upstream_cancel(&s->ureq);
  zg_upstream_done(&s->ureq); /* no longer in flight (least_request) */
  zg_tls_conn_free(s->tls);
  if (s->splice) {
    /* Polls first: closing one stops watching the descriptor, which the
     * stream's close then closes. */
    close_handle(s, (uv_handle_t *)&s->poll_client);
    close_handle(s, (uv_handle_t *)&s->poll_up);
    zg_pipe_put(&px->tcp->pipes, &s->up.pipe, s->up.pending == 0);
    zg_pipe_put(&px->tcp->pipes, &s->down.pipe, s->down.pending == 0);
  }
  if (keep) {
    flush_start(s, keep);
    if (keep != (uv_handle_t *)s->client)
      close_handle(s, (uv_handle_t *)s->client);
    else
      zg_upconn_close(s->upc);
    return;
  }
  close_handle(s, (uv_handle_t *)s->client);
  close_handle(s, (uv_handle_t *)&s->timer);
  if (s->upc)
    zg_upconn_close(s->upc);
}

int zg_tcp_init(zg_proxy_ctx_t *px) {
  px->tcp = calloc(1, sizeof(*px->tcp));
  if (!px->tcp)
    return UV_ENOMEM;
  zg_pipe_pool_init(&px->tcp->pipes, ZG_PIPE_SIZE, ZG_PIPE_KEEP, px->limits);
  return 0;
}

void zg_tcp_free(zg_proxy_ctx_t *px) {
  if (px->tcp)
    zg_pipe_pool_clear(&px->tcp->pipes);
  free(px->tcp);
  px->tcp = NULL;
}

void zg_tcp_close_all(zg_proxy_ctx_t *px) {
  while (!zg_list_empty(&px->tcp->sessions))
    session_end(ZG_LIST_ITEM(px->tcp->sessions.first, zg_tcp_session_t, link),
                ZG_TERM_GATEWAY_STOPPING);
  while (!zg_list_empty(&px->tcp->flushing))
    flush_finish(ZG_LIST_ITEM(px->tcp->flushing.first, zg_tcp_session_t, link));
}

/* ---- relay ----------------------------------------------------------- */

static void dir_read_start(relay_dir_t *d);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  zg_tcp_session_t *s = h->data;
  relay_dir_t *d = h == (uv_handle_t *)s->client ? &s->up : &s->down;
  (void)suggested;
  if (!d->buf)
    d->buf = zg_buf_get(s->svc->px);
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
  zg_buf_put(s->svc->px, d->buf);
  d->buf = NULL;
  zg_stream_read_stop(d->tls_in, d->in);
  d->sreq.data = d;
  rc = zg_stream_shutdown(d->tls_out, &d->sreq, d->out, on_shutdown);
  if (rc < 0)
    session_end(s, d == &s->up ? ZG_TERM_INSTANCE_GONE : ZG_TERM_CLIENT_GONE);
}

/* The term for a failed write of `d` (UV_ECONNRESET: its peer reset). */
static zg_term_t write_failed_term(const relay_dir_t *d, int err) {
  bool up = d == &d->s->up;
  if (err == UV_ECONNRESET)
    return up ? ZG_TERM_INSTANCE_RESET : ZG_TERM_CLIENT_RESET;
  return up ? ZG_TERM_INSTANCE_WRITE_ERROR : ZG_TERM_CLIENT_WRITE_ERROR;
}

/* Writing `d`'s destination failed with `err`. What that socket received
 * before it failed still goes to the other side: the direction reading it
 * goes on until it reads the end or the error, and the session ends then
 * (or now, if it already has, or for TLS). `d` stops for good. */
static void dir_write_failed(relay_dir_t *d, int err) {
  zg_tcp_session_t *s = d->s;
  relay_dir_t *o = d == &s->up ? &s->down : &s->up;
  zg_term_t term = write_failed_term(d, err);
  if (o->eof || d->tls_out || o->tls_in) {
    session_end(s, term);
    return;
  }
  if (!s->dead_client && !s->dead_up)
    s->fail_term = term;
  if (d == &s->up)
    s->dead_up = 1;
  else
    s->dead_client = 1;
  d->eof = d->shut = 1;
  zg_stream_read_stop(d->tls_in, d->in);
  zg_buf_put(s->svc->px, d->buf);
  d->buf = NULL;
}

static void on_write(uv_write_t *req, int status) {
  relay_dir_t *d = req->data;
  zg_tcp_session_t *s = d->s;
  if (s->state == S_CLOSING)
    return;
  if (status < 0) {
    dir_write_failed(d, status);
    return;
  }
  zg_buf_put(s->svc->px, d->buf);
  d->buf = NULL;
  dir_read_start(d);
}

/* Did the peer of `st` reset it? libuv reports a reset that comes after
 * data (POLLHUP after a short read) as EOF, not as UV_ECONNRESET. At that
 * point the queue is empty, so a read says the pending hard error (a soft
 * one, such as an old ICMP unreachable, is not a reset: SO_ERROR would
 * report that too). */
static bool reset_pending(uv_stream_t *st) {
  uv_os_fd_t fd;
  char c;
  return uv_fileno((uv_handle_t *)st, &fd) == 0 &&
         recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == ECONNRESET;
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
    zg_buf_put(s->svc->px, d->buf); /* EAGAIN: nothing read */
    d->buf = NULL;
    return;
  }
  if (nread == UV_EOF) {
    if (!d->tls_in && reset_pending(d->in)) {
      /* Everything read was written already (no read while writing) */
      session_end(s,
                  d == &s->up ? ZG_TERM_CLIENT_RESET : ZG_TERM_INSTANCE_RESET);
      return;
    }
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
  s->last_active_ms = uv_now(s->svc->px->loop);
  /* Try the write at once: most of the time the socket takes it all and
   * the buffer is free again without a trip through the loop. */
  wbuf = uv_buf_init(d->buf, (unsigned)nread);
  rc = zg_stream_try_write(d->tls_out, d->out, &wbuf, 1);
  if (rc == nread) {
    zg_buf_put(s->svc->px, d->buf);
    d->buf = NULL;
    return; /* keep reading */
  }
  if (rc < 0 && rc != UV_EAGAIN) {
    dir_write_failed(d, rc);
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
    dir_write_failed(d, rc);
}

static void dir_read_start(relay_dir_t *d) {
  if (d->eof)
    return;
  if (zg_stream_read_start(d->tls_in, d->in, on_alloc, on_read) < 0)
    session_end(d->s, ZG_TERM_READ_ERROR);
}

static void on_idle_timer(uv_timer_t *t) {
  zg_tcp_session_t *s = t->data;
  uint64_t idle = s->svc->px->cfg->proxy.idle_timeout_ms;
  uint64_t now = uv_now(s->svc->px->loop);
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
  uint64_t idle = s->svc->px->cfg->proxy.idle_timeout_ms;
  zg_upconn_t *c = s->upc;
  s->state = S_RELAY;
  zg_pool_unref(s->ureq.pool); /* the address is in ureq.instance */
  s->ureq.pool = NULL;
  uv_timer_stop(&s->timer);
  uv_tcp_nodelay(s->client, 1);
  s->up = (relay_dir_t){.s = s,
                        .in = (uv_stream_t *)s->client,
                        .out = (uv_stream_t *)&c->tcp,
                        .tls_in = s->tls,
                        .tls_out = c->tls,
                        .bytes = s->initial_len};
  s->down = (relay_dir_t){.s = s,
                          .in = (uv_stream_t *)&c->tcp,
                          .out = (uv_stream_t *)s->client,
                          .tls_in = c->tls,
                          .tls_out = s->tls};
  s->last_active_ms = uv_now(s->svc->px->loop);
  if (idle > 0)
    uv_timer_start(&s->timer, on_idle_timer, idle, 0);
  if (splice_start(s) == 0)
    return;
  if (s->initial) {
    /* What the client sent before the session began goes first; the
     * client is read again once it is written. */
    uv_buf_t b = uv_buf_init(s->initial, (unsigned)s->initial_len);
    int rc;
    s->initial_req.data = s;
    rc = zg_stream_write(c->tls, &s->initial_req, (uv_stream_t *)&c->tcp, &b, 1,
                         on_initial_written);
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

/* ---- relay with splice(2) -------------------------------------------- */

#ifdef __linux__
#define GOES_ON ZG_TERM_COUNT /* sp_pump: the session goes on */
#define PUMP_ROUNDS                                                            \
  8 /* read/write rounds per readiness, so that                                \
       one busy session cannot hold the loop */

static zg_term_t read_error(const relay_dir_t *d) {
  return d == &d->s->up ? ZG_TERM_CLIENT_RESET : ZG_TERM_INSTANCE_RESET;
}

static void count_read(relay_dir_t *d, size_t n, bool spliced) {
  zg_tcp_session_t *s = d->s;
  d->bytes += n;
  if (d == &s->up)
    s->svc->traffic.bytes_in += n;
  else
    s->svc->traffic.bytes_out += n;
  if (spliced)
    s->svc->traffic.spliced += n;
  s->last_active_ms = uv_now(s->svc->px->loop);
}

/* The user-space bytes are all sent: give their buffer back. */
static void wbuf_done(relay_dir_t *d) {
  zg_tcp_session_t *s = d->s;
  if (d->wptr == s->initial) {
    free(s->initial);
    s->initial = NULL;
  } else {
    zg_buf_put(s->svc->px, d->buf);
    d->buf = NULL;
  }
  d->wptr = NULL;
  d->woff = d->wlen = 0;
}

/* Sends what `d` holds, user-space bytes first. 1: moved some, 0: nothing
 * to move or `out` is full, <0: `out` failed. */
static int sp_write(relay_dir_t *d) {
  ssize_t n;
  if (d->woff < d->wlen) {
    n = send(d->out_fd, d->wptr + d->woff, d->wlen - d->woff,
             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
      return errno == EAGAIN || errno == EINTR ? 0 : -1;
    d->woff += (size_t)n;
    if (d->woff == d->wlen)
      wbuf_done(d);
    return n > 0;
  }
  if (d->pending == 0)
    return 0;
  n = splice(d->pipe.rfd, NULL, d->out_fd, NULL, d->pending,
             SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
  if (n < 0)
    return errno == EAGAIN || errno == EINTR ? 0 : -1;
  d->pending -= (size_t)n;
  d->full = 0;
  return n > 0;
}

/* No pipe could be made: said once per loop, counted always. */
static void no_pipe(zg_tcp_session_t *s, int err) {
  zg_tcp_loop_t *tl = s->svc->px->tcp;
  if (tl->pipe_warned)
    return;
  tl->pipe_warned = 1;
  zg_warn("tcp",
          "service %s: cannot make a pipe for splice (%s): copying through "
          "user space meanwhile (counted in zkgate_tcp_splice_pipe_failures"
          "_total; logged once)",
          s->svc->conf->name, strerror(-err));
}

/* Reads from `in` into the pipe, or into a buffer when no pipe can be
 * had. 1: read some, 0: nothing now, 2: EOF, <0: `in` failed, or out of
 * memory (*term says which). */
static int sp_read(relay_dir_t *d, zg_term_t *term) {
  zg_tcp_session_t *s = d->s;
  ssize_t n;
  int rc;
  *term = read_error(d);
  /* At the cap on busy pipes (-EBUSY) the direction copies, as when no
   * pipe can be made, but that is the cap doing its job: counted in the
   * pool, not logged. */
  if (d->pipe.rfd < 0 &&
      (rc = zg_pipe_get(&s->svc->px->tcp->pipes, &d->pipe)) < 0 && rc != -EBUSY)
    no_pipe(s, rc);
  if (d->pipe.rfd >= 0) {
    n = splice(d->in_fd, NULL, d->pipe.wfd, NULL, d->pipe.cap - d->pending,
               SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n < 0) {
      /* A failed socket gets no more bytes: once it has none queued (or
       * says the error again), that is its end. */
      if (d->src_dead && (errno != EAGAIN || d->pending == 0))
        return 2;
      if (errno != EAGAIN && errno != EINTR)
        return -1;
      /* Either `in` has nothing or the pipe has no slot left (a slot per
       * page or fragment, not per byte): wait for a write to tell. */
      d->full = d->pending > 0;
      return 0;
    }
    if (n == 0)
      return 2;
    d->pending += (size_t)n;
    count_read(d, (size_t)n, true);
    return 1;
  }
  if (!d->buf && !(d->buf = zg_buf_get(s->svc->px))) {
    *term = ZG_TERM_OUT_OF_MEMORY;
    return -1;
  }
  n = recv(d->in_fd, d->buf, ZG_BUF_SIZE, MSG_DONTWAIT);
  if (n < 0 && d->src_dead)
    return 2;
  if (n < 0)
    return errno == EAGAIN || errno == EINTR ? 0 : -1;
  if (n == 0)
    return 2;
  d->wptr = d->buf;
  d->woff = 0;
  d->wlen = (size_t)n;
  count_read(d, (size_t)n, false);
  return 1;
}

/* May `d` read its source now: not at EOF, nothing in user space, room
 * in the pipe (or no pipe yet). */
static bool sp_can_read(const relay_dir_t *d) {
  return !d->eof && d->woff >= d->wlen && !d->full &&
         (d->pipe.rfd < 0 || d->pending < d->pipe.cap);
}

static bool sp_holds(const relay_dir_t *d) {
  return d->woff < d->wlen || d->pending > 0;
}

/* `d`'s destination failed: what it holds can go nowhere. Its pipe may
 * hold bytes, so it is closed, not kept. */
static void sp_drop(relay_dir_t *d) {
  zg_tcp_session_t *s = d->s;
  d->eof = d->shut = 1;
  d->full = 0;
  if (d->woff < d->wlen)
    wbuf_done(d);
  zg_pipe_put(&s->svc->px->tcp->pipes, &d->pipe, d->pending == 0);
  d->pending = 0;
}

/* The client's socket (`client`) or the instance's failed with `term` (a
 * reset, mostly): nothing more can be written to it, but what it received
 * before the error is still queued (Linux keeps a reset socket's receive
 * queue readable), and the pipe from it may hold bytes. The direction
 * towards it drops what it holds; the direction from it goes on until it
 * has read and passed on everything, then the session ends with `term`
 * (sp_settle). The socket is no longer watched: its poll would report the
 * error again at once. */
static void sp_fail(zg_tcp_session_t *s, bool client, zg_term_t term) {
  if (client ? s->dead_client : s->dead_up)
    return;
  if (!s->dead_client && !s->dead_up)
    s->fail_term = term;
  if (client)
    s->dead_client = 1;
  else
    s->dead_up = 1;
  (client ? &s->up : &s->down)->src_dead = 1;
  sp_drop(client ? &s->down : &s->up);
}

/* Moves what `d` can move now: what it holds first, then new bytes while
 * there is room. An empty pipe goes back to the pool; once `in` said EOF
 * and everything is out, `out`'s write half is shut (half-close). */
static zg_term_t sp_pump(relay_dir_t *d) {
  zg_tcp_session_t *s = d->s;
  zg_term_t term = GOES_ON;
  for (int round = 0; round < PUMP_ROUNDS; round++) {
    int wrote = sp_write(d), got = 0;
    if (wrote < 0) {
      sp_fail(s, d == &s->down, write_failed_term(d, -errno)); /* drops d */
      return GOES_ON;
    }
    if (sp_can_read(d)) {
      got = sp_read(d, &term);
      if (got < 0 && term == ZG_TERM_OUT_OF_MEMORY)
        return term;
      if (got < 0) {
        sp_fail(s, d == &s->up, term);
        got = 2; /* what the pipe holds still goes out */
      }
      if (got == 2) {
        d->eof = 1;
        got = 0;
      }
    }
    if (!wrote && !got)
      break;
  }
  if (d->pending == 0)
    zg_pipe_put(&s->svc->px->tcp->pipes, &d->pipe, 1);
  if (d->eof && !d->shut && !sp_holds(d)) {
    if (shutdown(d->out_fd, SHUT_WR) != 0)
      return d == &s->up ? ZG_TERM_INSTANCE_GONE : ZG_TERM_CLIENT_GONE;
    d->shut = 1;
    if (s->up.shut && s->down.shut)
      return ZG_TERM_CLOSED;
  }
  return GOES_ON;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Has `h` wait for `want` (UV_READABLE | UV_WRITABLE), if that changed:
 * uv_poll_start re-registers the descriptor, so it is not called when
 * nothing changes. */
static int sp_watch(uv_poll_t *h, int *cur, int want) {
  int rc = 0;
  if (want == *cur)
    return 0;
  rc = want ? uv_poll_start(h, want, on_poll) : uv_poll_stop(h);
  *cur = want;
  return rc;
}

/* Each socket waits for what its two directions need. */
static void sp_rearm(zg_tcp_session_t *s) {
  int c = (sp_can_read(&s->up) ? UV_READABLE : 0) |
          (sp_holds(&s->down) ? UV_WRITABLE : 0);
  int u = (sp_can_read(&s->down) ? UV_READABLE : 0) |
          (sp_holds(&s->up) ? UV_WRITABLE : 0);
  if (s->dead_client)
    c = 0;
  if (s->dead_up)
    u = 0;
  if (sp_watch(&s->poll_client, &s->ev_client, c) < 0 ||
      sp_watch(&s->poll_up, &s->ev_up, u) < 0)
    session_end(s, ZG_TERM_READ_ERROR);
}

/* Once a socket failed: the direction that reads it is pumped here too,
 * as its socket is no longer watched (it is driven by the other socket's
 * writability while its pipe holds bytes). The session ends, with the
 * failure's term, once that direction has passed on everything, or at
 * once when both sockets failed. */
static zg_term_t sp_settle(zg_tcp_session_t *s) {
  relay_dir_t *d;
  zg_term_t term;
  if (!s->dead_client && !s->dead_up)
    return GOES_ON;
  d = s->dead_client ? &s->up : &s->down;
  if (!(s->dead_client && s->dead_up) && !(d->eof && !sp_holds(d))) {
    term = sp_pump(d);
    if (term != GOES_ON && term != ZG_TERM_CLOSED)
      return term;
  }
  if ((s->dead_client && s->dead_up) || (d->eof && !sp_holds(d)))
    return s->fail_term;
  return GOES_ON;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  zg_tcp_session_t *s = h->data;
  bool client = h == &s->poll_client;
  relay_dir_t *rd = client ? &s->up : &s->down; /* reads this socket */
  relay_dir_t *wd = client ? &s->down : &s->up; /* writes it */
  zg_term_t term = GOES_ON;
  if (s->state == S_CLOSING)
    return;
  if (status < 0) {
    /* libuv reports EPOLLERR as UV_EBADF and has stopped the poll: the
     * socket has an error pending (a reset, mostly). */
    if (client)
      s->ev_client = 0;
    else
      s->ev_up = 0;
    sp_fail(s, client, client ? ZG_TERM_CLIENT_RESET : ZG_TERM_INSTANCE_RESET);
    events = 0;
  }
  /* Writing first frees room in the pipe for the read of the same
   * direction on the other socket's turn. */
  if (events & UV_WRITABLE)
    term = sp_pump(wd);
  if (term == GOES_ON && (events & UV_READABLE))
    term = sp_pump(rd);
  if (term == GOES_ON || term == ZG_TERM_CLOSED) {
    zg_term_t settled = sp_settle(s);
    if (settled != GOES_ON)
      term = settled;
  }
  if (term != GOES_ON) {
    session_end(s, term);
    return;
  }
  sp_rearm(s);
}

/* Relays `s` with splice(2) if it can: 0, or <0 when the polls could not
 * be set up (the caller relays with libuv's streams; nothing was read). */
static int splice_start(zg_tcp_session_t *s) {
  zg_proxy_ctx_t *px = s->svc->px;
  uv_os_fd_t cfd, ufd;
  /* max_pipes = 0 (or auto under 4 connections): no pipe for anyone,
   * libuv's streams copy. */
  if (!px->cfg->proxy.tcp_splice || s->tls || s->upc->tls ||
      (px->limits && zg_connlimit_no_pipes(px->limits)) ||
      uv_fileno((uv_handle_t *)s->client, &cfd) != 0 ||
      uv_fileno((uv_handle_t *)&s->upc->tcp, &ufd) != 0)
    return UV_ENOTSUP;
  /* UV_EEXIST here: a stream still has I/O on its descriptor. */
  if (uv_poll_init_socket(px->loop, &s->poll_client, cfd) != 0)
    return UV_EEXIST;
  s->poll_client.data = s;
  s->handles++;
  if (uv_poll_init_socket(px->loop, &s->poll_up, ufd) != 0) {
    /* Nothing watches the client's descriptor yet: closing this poll
     * leaves the stream free to read it. */
    uv_close((uv_handle_t *)&s->poll_client, on_handle_closed);
    return UV_EEXIST;
  }
  s->poll_up.data = s;
  s->handles++;
  s->splice = 1;
  px->tcp->spliced_sessions++;
  s->up.in_fd = s->down.out_fd = cfd;
  s->up.out_fd = s->down.in_fd = ufd;
  s->up.pipe = s->down.pipe = ZG_PIPE_NONE;
  if (s->initial) { /* sent first, from user space */
    s->up.wptr = s->initial;
    s->up.wlen = s->initial_len;
  }
  sp_rearm(s);
  return 0;
}
#else
static int splice_start(zg_tcp_session_t *s) {
  (void)s;
  return UV_ENOTSUP;
}
#endif

/* ---- connecting ------------------------------------------------------ */

static void on_upstream(zg_upstream_req_t *r, zg_upconn_t *c,
                        zg_upstream_err_t err) {
  zg_tcp_session_t *s = r->data;
  zg_service_t *svc = s->svc;
  uint64_t total;
  switch (err) {
  case ZG_UP_OK:
    s->upc = c;
    c->data = s;
    c->on_closed = on_upconn_closed;
    s->handles++;
    relay_start(s);
    return;
  case ZG_UP_NO_INSTANCE:
    if (zg_service_refused(svc, &total))
      zg_warn("tcp",
              "service %s: no live instance; client %s closed "
              "(%llu such connections so far)",
              svc->conf->name, s->client_addr, (unsigned long long)total);
    session_end(s, ZG_TERM_NO_INSTANCE);
    return;
  case ZG_UP_NOMEM:
    session_end(s, ZG_TERM_OUT_OF_MEMORY);
    return;
  case ZG_UP_NO_TLS: /* logged */
    session_end(s, ZG_TERM_NO_TLS_CONTEXT);
    return;
  default: /* every instance failed (logged) */
    session_end(s, ZG_TERM_UNREACHABLE);
    return;
  }
}

/* Gets a connection to an instance (upstream.h), then relays. */
static void upstream_connect(zg_tcp_session_t *s) {
  s->ureq.svc = s->svc;
  s->ureq.cb = on_upstream;
  s->ureq.data = s;
  s->ureq.tag = "tcp";
  s->ureq.has_hash =
      s->svc->conf->balance == ZG_BALANCE_HASH &&
      zg_service_hash_client(s->svc, s->client_addr, &s->ureq.hash);
  zg_upstream_connect(&s->ureq);
}

/* A session of `svc` with its handles initialised, counted and listed;
 * `client` NULL: its own, to accept into. NULL when out of memory. */
static zg_tcp_session_t *session_new(zg_service_t *svc, uv_tcp_t *client) {
  zg_proxy_ctx_t *px = svc->px;
  zg_tcp_loop_t *tl = px->tcp;
  zg_tcp_session_t *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->svc = zg_service_ref(svc);
  s->client = client ? client : &s->client_own;
  if (!client)
    uv_tcp_init(px->loop, s->client);
  uv_timer_init(px->loop, &s->timer);
  s->client->data = s;
  s->timer.data = s;
  s->handles = 2;
  s->start_ms = uv_now(px->loop);
  s->start_ns = uv_hrtime();
  zg_list_push(&tl->sessions, &s->link);
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
  upstream_connect(s);
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
  if (svc->px->hooks->admit(svc->px->owner, server, svc->conf->tls_cert != NULL,
                            &conn, svc->conf->listen.text) != 0)
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
    zg_tls_server_t *srv =
        svc->px->hooks->tls(svc->px->owner, &svc->conf->listen);
    if (!srv ||
        !(s->tls = zg_tls_conn_server(srv, s->client, s->client_addr))) {
      session_end(s, srv ? ZG_TERM_OUT_OF_MEMORY : ZG_TERM_NO_CERTIFICATE);
      return;
    }
    uv_timer_start(&s->timer, on_handshake_timeout,
                   svc->px->cfg->proxy.header_timeout_ms, 0);
    if (zg_tls_handshake(s->tls, on_handshake, s) != 0)
      session_end(s, ZG_TERM_READ_ERROR);
    return;
  }
  upstream_connect(s);
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
  upstream_connect(s);
}

size_t zg_tcp_sessions_open(const zg_proxy_ctx_t *px) {
  /* Those flushing count: a drain lets them finish too. */
  return zg_list_count(&px->tcp->sessions) + zg_list_count(&px->tcp->flushing);
}

size_t zg_tcp_instance_active(const zg_proxy_ctx_t *px, const zg_service_t *svc,
                              const char *key) {
  size_t n = 0;
  ZG_LIST_FOREACH(it, &px->tcp->sessions) {
    const zg_tcp_session_t *s = ZG_LIST_ITEM(it, zg_tcp_session_t, link);
    n += s->svc == svc && s->state != S_CLOSING &&
         !strcmp(s->ureq.instance, key);
  }
  return n;
}

void zg_tcp_splice_stats(const zg_proxy_ctx_t *px, zg_tcp_splice_stats_t *st) {
  const zg_tcp_loop_t *tl = px->tcp;
  st->sessions = tl->spliced_sessions;
  st->pipes_busy = tl->pipes.n_busy;
  st->pipes_kept = tl->pipes.n_free;
  st->pipes_created = tl->pipes.created;
  st->pipe_failures = tl->pipes.failures;
  st->pipes_capped = tl->pipes.capped;
}
