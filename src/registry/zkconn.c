/* Drives one handle of the single-threaded ZooKeeper client from libuv.
 * See zkconn.h.
 *
 * zookeeper_interest() says which fd, which events and how long; we poll
 * that fd and arm a timer, and on either call zookeeper_process(). The fd
 * number is often reused for a new socket on reconnect, so the poll is
 * recreated whenever the number or the inode changes, and an fd reported
 * together with an error is never trusted (it may already belong to
 * someone else). ZOOKEEPER_READ/WRITE are the reverse of
 * UV_READABLE/UV_WRITABLE and are not macros: mapped by hand. */
#include "registry/zkconn.h"

#include "core/error.h"
#include "core/log.h"
#include "net/resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* zookeeper_init2's log callback gets no context, so its rate limit is
 * the one piece of state that cannot hang off the handle. The client logs
 * two lines per reconnect attempt: 5 per 10 s keep the cause visible. */
static zg_ratelimit_t zk_log_rl = {10000, 5, 0, 0, 0};

static void on_zk_log(const char *message) {
  uint64_t dropped;
  if (zg_ratelimit_allow(&zk_log_rl, uv_hrtime() / 1000000, &dropped)) {
    if (dropped)
      zg_warn("zookeeper", "(%llu client messages suppressed)",
              (unsigned long long)dropped);
    zg_warn("zookeeper", "client: %s", message);
  }
}

/* ---- host names, resolved off the loop (see zkconn.h) ----------------- */

/* The names are looked up on threads of our own (net/resolve.h), not on
 * libuv's pool: the pool cannot cancel a getaddrinfo() that is running, and
 * both the loop and libuv's exit would wait for it, up to the resolver's
 * timeout, so that a name server that never answers would hold up SIGTERM.
 * A resolver of their own, apart from the instances' (upstream.c): lookups
 * of instance names stuck on a dead name server never make these wait. */
static zg_resolver_t zk_resolver = ZG_RESOLVER_INIT(4);

typedef struct {
  zg_zkhosts_round_t *round;
  size_t idx;
  zg_resolve_t *q; /* the lookup out, or NULL */
} zkhosts_job_t;

struct zg_zkhosts_round {
  zg_zkhosts_t *zr;
  size_t n, pending;
  char **result;        /* per server: "addr:port,..." or NULL */
  int *status;          /* per server: getaddrinfo's status */
  zkhosts_job_t jobs[]; /* per server: its lookup */
};

static int is_address(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host, buf) == 1 ||
         inet_pton(AF_INET6, host, buf) == 1;
}

/* The client splits host and port at the last ':' and hands the host to
 * getaddrinfo() as it is: an IPv6 address goes without brackets. */
static char *address_list(const char *host, const char *port) {
  size_t len = strlen(host) + strlen(port) + 2;
  char *s = malloc(len);
  if (s)
    snprintf(s, len, "%s:%s", host, port);
  return s;
}

static int str_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, so that a resolver that rotates its answers changes nothing. */
static char *addrinfo_list(const struct addrinfo *res, const char *port) {
  const struct addrinfo *ai;
  char **v, *out = NULL;
  size_t n = 0, len = 1, k = 0;
  for (ai = res; ai; ai = ai->ai_next)
    n++;
  if (n == 0 || !(v = calloc(n, sizeof(*v))))
    return NULL;
  for (ai = res; ai; ai = ai->ai_next) {
    char ip[INET6_ADDRSTRLEN];
    const void *a;
    if (ai->ai_family == AF_INET)
      a = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
    else if (ai->ai_family == AF_INET6)
      a = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
    else
      continue;
    if (!inet_ntop(ai->ai_family, a, ip, sizeof(ip)) ||
        !(v[k] = address_list(ip, port)))
      continue;
    len += strlen(v[k]) + 1;
    k++;
  }
  if (k > 0)
    qsort(v, k, sizeof(*v), str_cmp);
  if (k > 0 && (out = malloc(len))) {
    char *p = out;
    for (size_t i = 0; i < k; i++) {
      size_t l = strlen(v[i]);
      if (i > 0 && !strcmp(v[i], v[i - 1])) /* one address twice */
        continue;
      if (p > out)
        *p++ = ',';
      memcpy(p, v[i], l);
      p += l;
      *p = 0;
    }
  }
  for (size_t i = 0; i < k; i++)
    free(v[i]);
  free(v);
  return out;
}

/* servers and connect from the per-server lists: 1 if they changed, 0 if
 * not, negative on error. */
static int zkhosts_join(zg_zkhosts_t *zr) {
  size_t len = strlen(zr->chroot) + 1;
  char *servers, *connect, *p;
  for (size_t i = 0; i < zr->n; i++)
    if (zr->known[i])
      len += strlen(zr->known[i]) + 1;
  if (len == strlen(zr->chroot) + 1)
    return UV_EAI_NONAME; /* no server has an address */
  if (!(servers = malloc(len)))
    return UV_ENOMEM;
  p = servers;
  *p = 0;
  for (size_t i = 0; i < zr->n; i++) {
    if (!zr->known[i])
      continue;
    if (p > servers)
      *p++ = ',';
    strcpy(p, zr->known[i]);
    p += strlen(p);
  }
  if (zr->servers && !strcmp(zr->servers, servers)) {
    free(servers);
    return 0;
  }
  if (!(connect = malloc(len))) {
    free(servers);
    return UV_ENOMEM;
  }
  snprintf(connect, len, "%s%s", servers, zr->chroot);
  free(zr->servers);
  free(zr->connect);
  zr->servers = servers;
  zr->connect = connect;
  return 1;
}

static void round_free(zg_zkhosts_round_t *round) {
  for (size_t i = 0; i < round->n; i++)
    free(round->result[i]);
  free(round->result);
  free(round->status);
  free(round);
}

static void round_done(zg_zkhosts_t *zr, zg_zkhosts_round_t *round) {
  size_t failed = 0;
  int rc, changed = 0;
  char *e = zr->error;
  size_t room = sizeof(zr->error);
  zr->round = NULL;
  zr->done_ms = uv_now(zr->loop);
  e[0] = 0;
  for (size_t i = 0; i < zr->n; i++) {
    if (round->result[i]) {
      free(zr->known[i]);
      zr->known[i] = round->result[i];
      round->result[i] = NULL;
    } else if (round->status[i] != 0) {
      /* A server that did not resolve keeps the addresses it had: a
       * resolver outage must not take a working server away. */
      size_t used = strlen(e);
      failed++;
      if (used < room)
        snprintf(e + used, room - used, "%s%s: %s", used ? "; " : "",
                 zr->host[i], uv_strerror(round->status[i]));
    }
  }
  round_free(round);
  rc = zkhosts_join(zr);
  if (rc > 0) {
    changed = 1;
    rc = 0;
  }
  if (rc < 0 && !e[0])
    snprintf(e, room, "%s", uv_strerror(rc));
  if (rc == 0 && failed == 0) {
    if (zr->failing)
      zg_info(zr->module, "ZooKeeper host names resolve again: %s",
              zr->servers);
    else if (changed)
      zg_info(zr->module, "ZooKeeper servers resolved: %s", zr->servers);
    zr->failing = 0;
    zr->retry_ms = 0;
  } else {
    uint64_t dropped;
    zr->retry_ms = zr->retry_ms ? zr->retry_ms * 2 : 1000;
    if (zr->retry_ms > 30000)
      zr->retry_ms = 30000;
    if (zg_ratelimit_allow(&zr->rl, zr->done_ms, &dropped))
      zg_error(zr->module,
               "cannot resolve ZooKeeper host name(s): %s; %s; retrying in "
               "the background%s",
               e,
               zr->servers ? "using the addresses last resolved"
                           : "no session until then, static instances and "
                             "the state file serve meanwhile",
               dropped ? " (repeats suppressed)" : "");
    zr->failing = 1;
  }
  if (zr->cb)
    zr->cb(zr, rc, changed);
}

static void on_job_done(void *data, int status, struct addrinfo *res) {
  zkhosts_job_t *job = data;
  zg_zkhosts_round_t *round = job->round;
  char *result = NULL;
  job->q = NULL;
  if (status == 0 && !(result = addrinfo_list(res, round->zr->port[job->idx])))
    status = UV_EAI_NODATA;
  if (res)
    freeaddrinfo(res);
  round->result[job->idx] = result;
  round->status[job->idx] = status;
  if (--round->pending == 0)
    round_done(round->zr, round);
}

/* 0, or a negative code with nothing left behind. */
static int job_start(zg_zkhosts_t *zr, zg_zkhosts_round_t *round, size_t i) {
  zkhosts_job_t *job = &round->jobs[i];
  job->round = round;
  job->idx = i;
  return zg_resolve_start(&zk_resolver, zr->loop, zr->host[i], zr->port[i],
                          AI_ADDRCONFIG, on_job_done, job, &job->q);
}

/* One lookup per name at most: a name gets no new job while a round is out
 * (zr->round), and a round ends when every job of it has. */
void zg_zkhosts_resolve(zg_zkhosts_t *zr) {
  zg_zkhosts_round_t *round;
  size_t names = 0;
  if (zr->round)
    return;
  for (size_t i = 0; i < zr->n; i++)
    if (!is_address(zr->host[i]))
      names++;
  if (names == 0)
    return;
  round = calloc(1, sizeof(*round) + zr->n * sizeof(round->jobs[0]));
  if (!round)
    return;
  round->zr = zr;
  round->n = zr->n;
  round->result = calloc(zr->n, sizeof(*round->result));
  round->status = calloc(zr->n, sizeof(*round->status));
  if (!round->result || !round->status) {
    round_free(round);
    return;
  }
  zr->round = round;
  /* Counted before the first job: a callback never runs from here, but
   * the count must not reach zero before every job is out. */
  round->pending = 1;
  for (size_t i = 0; i < zr->n; i++) {
    int rc;
    if (is_address(zr->host[i]))
      continue;
    if ((rc = job_start(zr, round, i)) == 0)
      round->pending++;
    else
      round->status[i] = rc;
  }
  if (--round->pending == 0)
    round_done(zr, round);
}

void zg_zkhosts_tick(zg_zkhosts_t *zr, int connected) {
  uint64_t now = uv_now(zr->loop), every;
  if (zr->round)
    return;
  if (zr->failing)
    every = zr->retry_ms;
  else if (connected)
    every = ZG_ZKHOSTS_REFRESH_MS;
  else
    every = 1000; /* connection trouble: maybe the ensemble moved */
  if (zr->done_ms == 0 || now - zr->done_ms >= every)
    zg_zkhosts_resolve(zr);
}

static int zkhosts_parse(zg_zkhosts_t *zr, const char *connect) {
  const char *slash = strchr(connect, '/');
  size_t hlen = slash ? (size_t)(slash - connect) : strlen(connect);
  const char *p = connect, *end = connect + hlen;
  if (!(zr->chroot = strdup(slash ? slash : "")))
    return UV_ENOMEM;
  while (p < end) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *e = comma ? comma : end, *hs, *he, *colon;
    char **nh, **np, **nk;
    while (p < e && *p == ' ')
      p++;
    while (e > p && e[-1] == ' ')
      e--;
    if (p < e && *p == '[') {
      hs = p + 1;
      he = memchr(hs, ']', (size_t)(e - hs));
      if (!he || he + 1 >= e || he[1] != ':')
        return UV_EINVAL;
      colon = he + 1;
    } else {
      colon = NULL;
      for (const char *q = p; q < e; q++)
        if (*q == ':')
          colon = q;
      hs = p;
      he = colon;
    }
    if (!colon || he == hs || colon + 1 >= e)
      return UV_EINVAL;
    nh = realloc(zr->host, (zr->n + 1) * sizeof(*nh));
    if (nh)
      zr->host = nh;
    np = realloc(zr->port, (zr->n + 1) * sizeof(*np));
    if (np)
      zr->port = np;
    nk = realloc(zr->known, (zr->n + 1) * sizeof(*nk));
    if (nk)
      zr->known = nk;
    if (!nh || !np || !nk)
      return UV_ENOMEM;
    zr->host[zr->n] = strndup(hs, (size_t)(he - hs));
    zr->port[zr->n] = strndup(colon + 1, (size_t)(e - colon - 1));
    zr->known[zr->n] = NULL;
    zr->n++;
    if (!zr->host[zr->n - 1] || !zr->port[zr->n - 1])
      return UV_ENOMEM;
    p = comma ? comma + 1 : end;
  }
  return zr->n ? 0 : UV_EINVAL;
}

int zg_zkhosts_init(uv_loop_t *loop, zg_zkhosts_t *zr, const char *connect,
                    const char *module, zg_zkhosts_cb cb, void *data) {
  int rc;
  memset(zr, 0, sizeof(*zr));
  zr->loop = loop;
  zr->module = module;
  zr->cb = cb;
  zr->data = data;
  /* The first failure at once, then once a minute: retries are quiet. */
  zg_ratelimit_init(&zr->rl, 60000, 1);
  if ((rc = zkhosts_parse(zr, connect)) != 0)
    goto fail;
  for (size_t i = 0; i < zr->n; i++)
    if (is_address(zr->host[i]) &&
        !(zr->known[i] = address_list(zr->host[i], zr->port[i]))) {
      rc = UV_ENOMEM;
      goto fail;
    }
  rc = zkhosts_join(zr);
  if (rc == UV_ENOMEM)
    goto fail;
  return 0;
fail:
  zg_zkhosts_close(zr);
  return rc;
}

zhandle_t *zg_zkhosts_handle(zg_zkhosts_t *zr, watcher_fn watcher,
                             int session_timeout_ms, void *ctx,
                             log_callback_fn log_cb) {
  zhandle_t *zh;
  if (!zr->connect) {
    zg_zkhosts_tick(zr, 0);
    errno = EAGAIN;
    return NULL;
  }
  /* Never a saved session id: a new handle means a new session. */
  zh = zookeeper_init2(zr->connect, watcher, session_timeout_ms, NULL, ctx, 0,
                       log_cb);
  /* Addresses only from here on: the client must not resolve by itself
   * (-1: not in routine operation; on connection loss it "resolves" the
   * numeric addresses, which asks nobody). */
  if (zh)
    zoo_set_servers_resolution_delay(zh, -1);
  return zh;
}

void zg_zkhosts_apply(zg_zkhosts_t *zr, zhandle_t *zh) {
  int rc;
  /* The client takes the chroot from zookeeper_init only: servers alone. */
  if (zh && zr->servers && (rc = zoo_set_servers(zh, zr->servers)) != ZOK)
    zg_warn(zr->module, "cannot give the client the servers %s: %s",
            zr->servers, zerror(rc));
}

void zg_zkhosts_close(zg_zkhosts_t *zr) {
  if (zr->round) {
    /* Nothing waits for a lookup still out (a resolver that does not
     * answer): its thread frees it when getaddrinfo() returns. */
    for (size_t i = 0; i < zr->round->n; i++)
      if (zr->round->jobs[i].q)
        zg_resolve_cancel(zr->round->jobs[i].q);
    round_free(zr->round);
    zr->round = NULL;
  }
  for (size_t i = 0; i < zr->n; i++) {
    free(zr->host[i]);
    free(zr->port[i]);
    free(zr->known[i]);
  }
  free(zr->host);
  free(zr->port);
  free(zr->known);
  free(zr->chroot);
  free(zr->servers);
  free(zr->connect);
  zr->host = zr->port = zr->known = NULL;
  zr->chroot = zr->servers = zr->connect = NULL;
  zr->n = 0;
}

int zg_zkconn_transient(int rc) {
  return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT ||
         rc == ZSESSIONEXPIRED || rc == ZCLOSING || rc == ZINVALIDSTATE ||
         rc == ZSESSIONMOVED;
}

void zg_zkconn_init(uv_loop_t *loop, zg_zkconn_t *zc, zg_zkconn_after_cb after,
                    void *data) {
  memset(zc, 0, sizeof(*zc));
  zc->loop = loop;
  zc->after = after;
  zc->data = data;
  zc->poll_fd = -1;
  uv_timer_init(loop, &zc->timer);
  zc->timer.data = zc;
  zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
}

/* New addresses reach a live handle at once; without a handle the owner
 * opens one on its next try. */
static void on_zkconn_hosts(zg_zkhosts_t *zr, int status, int changed) {
  zg_zkconn_t *zc = zr->data;
  if (zc->closed)
    return;
  if (status == 0 && changed && zc->zh) {
    zg_zkhosts_apply(zr, zc->zh);
    zg_zkconn_update(zc);
  }
  if (zc->hosts_cb)
    zc->hosts_cb(zc, status, changed);
}

int zg_zkconn_set_hosts(zg_zkconn_t *zc, const char *hosts, const char *module,
                        zg_zkconn_hosts_cb cb) {
  int rc;
  if (zc->hosts_set)
    return 0;
  zc->hosts_cb = cb;
  if ((rc = zg_zkhosts_init(zc->loop, &zc->hosts, hosts, module,
                            on_zkconn_hosts, zc)) != 0)
    return rc;
  zc->hosts_set = 1;
  return 0;
}

int zg_zkconn_open(zg_zkconn_t *zc, const char *hosts, int session_timeout_ms,
                   watcher_fn watcher, void *watcher_ctx) {
  int rc;
  if (!zc->hosts_set &&
      (rc = zg_zkconn_set_hosts(zc, hosts, "zookeeper", NULL)) != 0) {
    errno = rc == UV_ENOMEM ? ENOMEM : EINVAL;
    return ZG_EZOOKEEPER;
  }
  zc->auth_rc = 0;
  zc->zh = zg_zkhosts_handle(&zc->hosts, watcher, session_timeout_ms,
                             watcher_ctx, on_zk_log);
  if (!zc->zh)
    return errno == EAGAIN ? UV_EAGAIN : ZG_EZOOKEEPER;
  /* Queued before the first zookeeper_interest(), which starts the
   * connection: sent first on every connection of the handle. */
  if (zc->auth &&
      (rc = zoo_add_auth(zc->zh, "digest", zc->auth, (int)strlen(zc->auth),
                         zc->auth_cb, zc->auth_data)) != ZOK) {
    zc->auth_rc = rc;
    zg_zkconn_reset(zc, 0);
    return ZG_EZOOKEEPER;
  }
  zg_zkconn_update(zc);
  return 0;
}

void zg_zkconn_set_auth(zg_zkconn_t *zc, const char *digest,
                        void_completion_t cb, const void *data) {
  zc->auth = digest;
  zc->auth_cb = cb;
  zc->auth_data = data;
}

static void on_poll_closed(uv_handle_t *h) {
  free(h);
}

static void poll_drop(zg_zkconn_t *zc) {
  if (zc->poll) {
    uv_close((uv_handle_t *)zc->poll, on_poll_closed);
    zc->poll = NULL;
    zc->poll_fd = -1;
  }
}

static void process(zg_zkconn_t *zc, int events) {
  if (!zc->zh)
    return;
  zookeeper_process(zc->zh, events);
  if (zc->after)
    zc->after(zc); /* may reset or reopen the handle */
  zg_zkconn_update(zc);
}

static void on_zk_poll(uv_poll_t *h, int status, int events) {
  zg_zkconn_t *zc = h->data;
  int zev = 0;
  if (status < 0)
    zev = ZOOKEEPER_READ | ZOOKEEPER_WRITE; /* let the client see the error */
  if (events & UV_READABLE)
    zev |= ZOOKEEPER_READ;
  if (events & UV_WRITABLE)
    zev |= ZOOKEEPER_WRITE;
  process(zc, zev);
}

static void on_zk_timer(uv_timer_t *t) {
  process(t->data, 0);
}

void zg_zkconn_update(zg_zkconn_t *zc) {
  int fd = -1, interest = 0, events = 0, rc;
  struct timeval tv = {0, 0};
  uint64_t timeout_ms;
  struct stat st;

  if (zc->closed)
    return;
  if (zc->hosts_set)
    zg_zkhosts_tick(&zc->hosts,
                    zc->zh && zoo_state(zc->zh) == ZOO_CONNECTED_STATE);
  if (!zc->zh)
    return;
  rc = zookeeper_interest(zc->zh, &fd, &interest, &tv);
  if (rc != ZOK || fd < 0 || fstat(fd, &st) != 0) {
    /* Not connected, or in trouble: come back on the timer. */
    poll_drop(zc);
    timeout_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    if (timeout_ms < 50 || timeout_ms > 1000)
      timeout_ms = rc == ZOK ? 50 : 200;
    uv_timer_start(&zc->timer, on_zk_timer, timeout_ms, 0);
    return;
  }
  if (zc->poll && (zc->poll_fd != fd || zc->poll_ino != st.st_ino))
    poll_drop(zc); /* a new socket, maybe under the old number */
  if (!zc->poll) {
    uv_poll_t *p = malloc(sizeof(*p));
    if (!p || uv_poll_init(zc->loop, p, fd) != 0) {
      free(p);
      uv_timer_start(&zc->timer, on_zk_timer, 50, 0);
      return;
    }
    p->data = zc;
    zc->poll = p;
    zc->poll_fd = fd;
    zc->poll_ino = st.st_ino;
    zc->poll_events = -1;
  }
  if (interest & ZOOKEEPER_READ)
    events |= UV_READABLE;
  if (interest & ZOOKEEPER_WRITE)
    events |= UV_WRITABLE;
  if (events != zc->poll_events) {
    uv_poll_start(zc->poll, events, on_zk_poll);
    zc->poll_events = events;
  }
  timeout_ms = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
  uv_timer_start(&zc->timer, on_zk_timer, timeout_ms, 0);
}

/* A session whose handshake is on the wire exists on the server but not yet
 * for the client, and zookeeper_close() would leave it to expire (with its
 * ephemerals). Finish the handshake first, for at most one second. */
static void settle_handshake(zhandle_t *zh) {
  uint64_t deadline_ms = uv_hrtime() / 1000000 + 1000;
  while (zoo_state(zh) == ZOO_ASSOCIATING_STATE) {
    uint64_t now_ms = uv_hrtime() / 1000000, wait_ms;
    struct timeval tv;
    struct pollfd pfd;
    int fd, interest, ev = 0;
    if (now_ms >= deadline_ms ||
        zookeeper_interest(zh, &fd, &interest, &tv) != ZOK || fd < 0)
      return;
    wait_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    if (wait_ms > deadline_ms - now_ms)
      wait_ms = deadline_ms - now_ms;
    pfd.fd = fd;
    pfd.events = (short)(((interest & ZOOKEEPER_READ) ? POLLIN : 0) |
                         ((interest & ZOOKEEPER_WRITE) ? POLLOUT : 0));
    pfd.revents = 0;
    if (poll(&pfd, 1, (int)wait_ms) < 0)
      return;
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
      ev |= ZOOKEEPER_READ;
    if (pfd.revents & POLLOUT)
      ev |= ZOOKEEPER_WRITE;
    zookeeper_process(zh, ev);
  }
}

void zg_zkconn_reset(zg_zkconn_t *zc, int settle) {
  zhandle_t *zh = zc->zh;
  poll_drop(zc); /* before the client closes the fd under it */
  uv_timer_stop(&zc->timer);
  if (!zh)
    return;
  if (settle)
    settle_handshake(zh);
  /* Cleared first: completions called from zookeeper_close() must not
   * issue requests on the handle being closed. */
  zc->zh = NULL;
  zookeeper_close(zh);
}

static void on_timer_closed(uv_handle_t *h) {
  zg_zkconn_t *zc = h->data;
  if (zc->closed_cb)
    zc->closed_cb(zc);
}

void zg_zkconn_close(zg_zkconn_t *zc, zg_zkconn_closed_cb cb) {
  if (zc->closed)
    return;
  zg_zkconn_reset(zc, 1);
  zc->closed = 1;
  zc->closed_cb = cb;
  if (zc->hosts_set)
    zg_zkhosts_close(&zc->hosts);
  zc->hosts_set = 0;
  /* The polls are freed by their own close callbacks, which do not touch
   * `zc`: the timer is the one handle whose memory is the owner's. */
  uv_close((uv_handle_t *)&zc->timer, on_timer_closed);
}
