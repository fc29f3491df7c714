/* zkgate-register's health check of the instance: a TCP connect or an
 * HTTP GET every interval, counted by rise and fall (core/health), the
 * same for the ZooKeeper and the etcd modes. See check.h. */
#include "register/check.h"

#include "core/log.h"
#include "net/resolve.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct check {
  zg_regcheck_t *r; /* NULL once finished or abandoned */
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  zg_resolve_t *lookup; /* the address's name, while it is looked up */
  int tcp_open;
  char request[2048];
  char buf[1024]; /* the response's first bytes */
  size_t len;
};

static void health_result(zg_regcheck_t *r, int ok, const char *reason);

/* The check's host name is looked up on a thread of net/resolve (one at a
 * time: one check runs at once), not on libuv's pool: a lookup that hangs
 * is let go of when the check ends, and SIGTERM does not wait for it. */
static zg_resolver_t check_resolver = ZG_RESOLVER_INIT(1);

static void check_maybe_free(check_t *c) {
  if (!c->r && !c->lookup && !c->tcp_open)
    free(c);
}

static void on_check_closed(uv_handle_t *h) {
  check_t *c = h->data;
  c->tcp_open = 0;
  check_maybe_free(c);
}

/* Detaches the check from the registration and releases what it holds;
 * the memory goes when the last callback is in. */
static void check_detach(check_t *c) {
  c->r->check = NULL;
  c->r = NULL;
  if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_check_closed);
  if (c->lookup) { /* its callback never runs now */
    zg_resolve_cancel(c->lookup);
    c->lookup = NULL;
  }
  check_maybe_free(c);
}

static void check_done(check_t *c, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void check_done(check_t *c, int ok, const char *fmt, ...) {
  zg_regcheck_t *r = c->r;
  char reason[256];
  va_list ap;
  if (!r)
    return;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);
  check_detach(c);
  health_result(r, ok, reason);
}

/* "HTTP/1.x NNN ..." : 2xx and 3xx are healthy, as in HAProxy's httpchk. */
static void check_status_line(check_t *c) {
  char *eol = memchr(c->buf, '\n', c->len);
  int code;
  if (eol)
    *eol = '\0';
  else
    c->buf[c->len] = '\0';
  if (strncmp(c->buf, "HTTP/1.", 7) != 0 || c->buf[7] < '0' ||
      c->buf[7] > '9' || c->buf[8] != ' ' || c->buf[9] < '1' ||
      c->buf[9] > '5' || c->buf[10] < '0' || c->buf[10] > '9' ||
      c->buf[11] < '0' || c->buf[11] > '9' ||
      (c->buf[12] != ' ' && c->buf[12] != '\r' && c->buf[12] != '\0')) {
    check_done(c, 0, "not an HTTP/1 status line");
    return;
  }
  code = (c->buf[9] - '0') * 100 + (c->buf[10] - '0') * 10 + c->buf[11] - '0';
  check_done(c, code >= 200 && code < 400, "HTTP %d", code);
}

static void on_check_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  check_t *c = h->data;
  (void)suggested;
  buf->base = c->buf + c->len;
  buf->len = sizeof(c->buf) - 1 - c->len;
}

static void on_check_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  check_t *c = s->data;
  (void)buf;
  if (!c->r)
    return;
  if (nread < 0) {
    if (c->len > 0)
      check_status_line(c);
    else
      check_done(c, 0, "%s before a status line",
                 nread == UV_EOF ? "connection closed"
                                 : uv_strerror((int)nread));
    return;
  }
  c->len += (size_t)nread;
  if (memchr(c->buf, '\n', c->len) || c->len == sizeof(c->buf) - 1)
    check_status_line(c);
}

static void on_check_written(uv_write_t *w, int status) {
  check_t *c = w->data;
  if (c->r && status < 0)
    check_done(c, 0, "cannot send the request: %s", uv_strerror(status));
}

static void on_check_connected(uv_connect_t *req, int status) {
  check_t *c = req->data;
  const zg_register_opts_t *opts;
  uv_buf_t b;
  int n, rc;
  if (!c->r)
    return;
  if (status < 0) {
    check_done(c, 0, "connect: %s", uv_strerror(status));
    return;
  }
  opts = c->r->opts;
  if (opts->check == ZG_CHECK_TCP) {
    check_done(c, 1, "connected");
    return;
  }
  n = snprintf(c->request, sizeof(c->request),
               "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: zkgate-register/"
               "%s\r\nAccept: */*\r\nConnection: close\r\n\r\n",
               opts->check_path, c->r->addr, ZKGATE_VERSION);
  if (n < 0 || (size_t)n >= sizeof(c->request)) {
    check_done(c, 0, "check path too long");
    return;
  }
  b = uv_buf_init(c->request, (unsigned)n);
  c->write.data = c;
  if ((rc = uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1,
                     on_check_written)) != 0 ||
      (rc = uv_read_start((uv_stream_t *)&c->tcp, on_check_alloc,
                          on_check_read)) != 0)
    check_done(c, 0, "cannot send the request: %s", uv_strerror(rc));
}

static void check_connect(check_t *c, const struct sockaddr *sa) {
  int rc = uv_tcp_init(c->r->loop, &c->tcp);
  if (rc != 0) {
    check_done(c, 0, "socket: %s", uv_strerror(rc));
    return;
  }
  c->tcp.data = c;
  c->tcp_open = 1;
  c->connect.data = c;
  if ((rc = uv_tcp_connect(&c->connect, &c->tcp, sa, on_check_connected)) != 0)
    check_done(c, 0, "connect: %s", uv_strerror(rc));
}

/* Only while the check runs: detaching it cancels the lookup. */
static void on_check_resolved(void *data, int status, struct addrinfo *res) {
  check_t *c = data;
  c->lookup = NULL;
  if (status < 0 || !res)
    check_done(c, 0, "cannot resolve %s: %s", c->r->opts->address.host,
               uv_strerror(status < 0 ? status : UV_EAI_NODATA));
  else
    check_connect(c, res->ai_addr);
  if (res)
    freeaddrinfo(res);
}

static void check_start(zg_regcheck_t *r) {
  const zg_instance_t *a = &r->opts->address;
  check_t *c = calloc(1, sizeof(*c));
  struct sockaddr_storage ss;
  int rc;
  if (!c) {
    health_result(r, 0, "out of memory");
    return;
  }
  c->r = r;
  r->check = c;
  if (a->is_ip) {
    memset(&ss, 0, sizeof(ss));
    if (strchr(a->host, ':'))
      rc = uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)&ss);
    else
      rc = uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)&ss);
    if (rc != 0)
      check_done(c, 0, "bad address: %s", uv_strerror(rc));
    else
      check_connect(c, (const struct sockaddr *)&ss);
    return;
  }
  {
    /* A name is resolved for every check: its addresses may change. */
    char port[8];
    snprintf(port, sizeof(port), "%u", a->port);
    rc = zg_resolve_start(&check_resolver, r->loop, a->host, port, 0,
                          on_check_resolved, c, &c->lookup);
    if (rc != 0) {
      c->lookup = NULL;
      check_done(c, 0, "cannot resolve %s: %s", a->host, uv_strerror(rc));
    }
  }
}

/* A check has until the next one to answer. */
static void on_check_timer(uv_timer_t *t) {
  zg_regcheck_t *r = t->data;
  if (r->check)
    check_done(r->check, 0, "no answer within %llu ms",
               (unsigned long long)r->opts->interval_ms);
  if (!r->stopping)
    check_start(r);
}

static const char *check_name(const zg_register_opts_t *opts) {
  return opts->check == ZG_CHECK_TCP ? "tcp" : "http";
}

static void health_result(zg_regcheck_t *r, int ok, const char *reason) {
  const zg_register_opts_t *opts = r->opts;
  zg_health_t *h = &r->health;
  const char *node = r->registered(r->arg);
  const char *check = check_name(opts);
  switch (zg_health_record(h, ok)) {
  case ZG_HEALTH_UP:
    zg_info("register",
            "%s healthy (%s check: %s; %u passed in a row): "
            "registering",
            r->addr, check, reason, h->passes);
    break;
  case ZG_HEALTH_DOWN:
    zg_warn("register", "%s unhealthy (%s check: %s; %u failed in a row): %s%s",
            r->addr, check, reason, h->failures,
            node ? "removing " : "not registering", node ? node : "");
    break;
  case ZG_HEALTH_SAME:
    if (ok && !h->healthy)
      zg_info("register",
              "%s %s check passed (%s): %u of %u before registering", r->addr,
              check, reason, h->passes, h->rise);
    else if (!ok && h->healthy)
      zg_info("register", "%s %s check failed (%s): %u of %u before removing",
              r->addr, check, reason, h->failures, h->fall);
    else if (!ok && h->failures == 1)
      /* Once per run of failures: an instance that stays down would log
       * every interval otherwise. */
      zg_info("register", "%s %s check failed (%s): not registered", r->addr,
              check, reason);
    else if (!ok)
      zg_debug("register", "%s %s check failed (%s)", r->addr, check, reason);
    break;
  }
  r->cb(r->arg);
}

void zg_regcheck_start(zg_regcheck_t *r, uv_loop_t *loop,
                       const zg_register_opts_t *opts, const char *addr,
                       void (*cb)(void *arg),
                       const char *(*registered)(void *arg), void *arg) {
  memset(r, 0, sizeof(*r));
  r->loop = loop;
  r->opts = opts;
  r->addr = addr;
  r->cb = cb;
  r->registered = registered;
  r->arg = arg;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  /* Without a check the instance counts as healthy from the start; with
   * one it must pass `rise` checks first. */
  zg_health_init(&r->health, opts->rise, opts->fall,
                 opts->check == ZG_CHECK_NONE);
  if (opts->check == ZG_CHECK_NONE)
    return;
  zg_info("register",
          "%s check%s%s every %llu ms: registered after %u passing, "
          "removed after %u failing in a row",
          check_name(opts), opts->check == ZG_CHECK_HTTP ? " GET " : "",
          opts->check == ZG_CHECK_HTTP ? opts->check_path : "",
          (unsigned long long)opts->interval_ms, opts->rise, opts->fall);
  uv_timer_start(&r->timer, on_check_timer, 0, opts->interval_ms);
}

void zg_regcheck_stop(zg_regcheck_t *r) {
  r->stopping = 1;
  if (r->check)
    check_detach(r->check);
  uv_close((uv_handle_t *)&r->timer, NULL);
}
