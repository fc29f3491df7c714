/* One handle of the single-threaded ZooKeeper client driven by a libuv
 * loop: the uv_poll on the client's socket, the timer for its deadline,
 * and the interest/process cycle between them (PLATFORM.md). The owner
 * keeps the session logic (what a connection, an expiry or a completion
 * means); this module only makes the client run.
 *
 * Used by zkgate-register. (The gateway's registry still has its own copy
 * of this cycle; it can move onto this module.) */
#ifndef ZKGATE_ZKCONN_H
#define ZKGATE_ZKCONN_H

#include <sys/types.h>
#include <uv.h>
#include <zookeeper/zookeeper.h>

typedef struct zg_zkconn zg_zkconn_t;

/* Called after every zookeeper_process(), outside of the client's
 * callbacks: the place to close or reopen the handle. */
typedef void (*zg_zkconn_after_cb)(zg_zkconn_t *zc);

struct zg_zkconn {
  uv_loop_t *loop;
  zhandle_t *zh; /* NULL while closed */
  zg_zkconn_after_cb after;
  void *data;      /* the owner's */
  uv_poll_t *poll; /* heap: a new one while the old one is closing */
  int poll_fd;
  ino_t poll_ino;
  int poll_events;
  uv_timer_t timer;
  int closed; /* zg_zkconn_close() was called */
};

/* Initialises the timer on `loop`; no handle yet. */
void zg_zkconn_init(uv_loop_t *loop, zg_zkconn_t *zc, zg_zkconn_after_cb after,
                    void *data);
/* A new handle, so a new session: zookeeper_init2 with our log callback
 * (the client's messages go to our logger at WARN, rate-limited). Returns
 * 0 or ZG_EZOOKEEPER (errno tells why). */
int zg_zkconn_open(zg_zkconn_t *zc, const char *hosts, int session_timeout_ms,
                   watcher_fn watcher, void *watcher_ctx);
/* The interest step: call it after issuing zoo_a* calls from outside a
 * client callback, so that WRITE interest is seen. */
void zg_zkconn_update(zg_zkconn_t *zc);
/* Closes the handle (pending completions are called with an error from
 * here). Never from inside a client callback. The session is closed on the
 * server if the client is connected; with `settle`, a handshake on the wire
 * is finished first (at most one second, blocking: shutdown only) so that
 * the session it opens is closed too. */
void zg_zkconn_reset(zg_zkconn_t *zc, int settle);
/* zg_zkconn_reset(zc, 1), then closes the loop handles. */
void zg_zkconn_close(zg_zkconn_t *zc);

/* Errors that a reconnection or a new session cures. */
int zg_zkconn_transient(int rc);

#endif
