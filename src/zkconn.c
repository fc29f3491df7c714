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
#include "zkgate/zkconn.h"

#include "zkgate/error.h"
#include "zkgate/log.h"

#include <poll.h>
#include <stdint.h>
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

int zg_zkconn_open(zg_zkconn_t *zc, const char *hosts, int session_timeout_ms,
                   watcher_fn watcher, void *watcher_ctx) {
  /* Never a saved session id: a new handle means a new session. */
  zc->zh = zookeeper_init2(hosts, watcher, session_timeout_ms, NULL,
                           watcher_ctx, 0, on_zk_log);
  if (!zc->zh)
    return ZG_EZOOKEEPER;
  zg_zkconn_update(zc);
  return 0;
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

  if (!zc->zh || zc->closed)
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

void zg_zkconn_close(zg_zkconn_t *zc) {
  if (zc->closed)
    return;
  zg_zkconn_reset(zc, 1);
  zc->closed = 1;
  uv_close((uv_handle_t *)&zc->timer, NULL);
}
