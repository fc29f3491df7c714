/* One handle of the single-threaded ZooKeeper client driven by a libuv
 * loop: the uv_poll on the client's socket, the timer for its deadline,
 * and the interest/process cycle between them (docs/platform.md, ZooKeeper
 * C client). The owner
 * keeps the session logic (what a connection, an expiry or a completion
 * means); this module only makes the client run.
 *
 * The one driver of the client in src/: the gateway's ZooKeeper registry
 * source (registry/zk_source.c) and zkgate-register both run on it. */
#ifndef ZKGATE_ZKCONN_H
#define ZKGATE_ZKCONN_H

#include <sys/types.h>
#include <uv.h>
#include <zookeeper/zookeeper.h>

#include "core/log.h"

typedef struct zg_zkconn zg_zkconn_t;

/* ---- the connect string's host names, resolved off the loop -----------
 * zookeeper_init() resolves the names of its connect string synchronously,
 * and zookeeper_interest() again on every call unless told otherwise
 * (zoo_set_servers_resolution_delay): a slow resolver stalls the loop that
 * runs the client for seconds, and a resolver outage makes the client
 * drop a working connection. So the names are resolved on detached
 * threads of our own (net/resolve.h; one per name at most; not libuv's
 * pool, which cannot cancel a running getaddrinfo() and is joined at exit,
 * so that a resolver that never answers held up SIGTERM) and the client is
 * only ever given numeric addresses, which getaddrinfo() answers without
 * asking anyone. A name that does not resolve keeps its last known
 * addresses; a connect string of addresses only is ready at once. */
typedef struct zg_zkhosts zg_zkhosts_t;
typedef struct zg_zkhosts_round zg_zkhosts_round_t;

/* Called on the loop when a resolution ends: 0 when at least one server
 * has addresses (`changed`: zr->servers is not what it was), else a
 * negative code (zr->error tells why). */
typedef void (*zg_zkhosts_cb)(zg_zkhosts_t *zr, int status, int changed);

struct zg_zkhosts {
  uv_loop_t *loop;
  const char *module; /* for the log */
  zg_zkhosts_cb cb;   /* may be NULL */
  void *data;         /* the owner's */
  char *chroot;       /* "" or "/path" */
  size_t n;           /* servers in the connect string */
  char **host;        /* as written, brackets removed */
  char **port;
  char **known;  /* per server: "addr:port,..." last resolved, or NULL */
  char *servers; /* numeric "addr:port,...": for zoo_set_servers; NULL
                    until a server has addresses */
  char *connect; /* servers + chroot: for zookeeper_init */
  zg_zkhosts_round_t *round; /* the resolution out, NULL: none */
  uint64_t done_ms;          /* uv_now when the last resolution ended */
  uint64_t retry_ms;         /* the wait before the next one after a failure */
  int failing;               /* the last resolution failed (logged) */
  zg_ratelimit_t rl;
  char error[256];
};

/* Parses `connect` (host:port[,host:port...][/chroot], a host may be
 * [v6]) and resolves its addresses, if that is all it has. Returns 0,
 * UV_EINVAL or UV_ENOMEM. */
int zg_zkhosts_init(uv_loop_t *loop, zg_zkhosts_t *zr, const char *connect,
                    const char *module, zg_zkhosts_cb cb, void *data);
/* Starts a resolution unless one is out (or there is no name). */
void zg_zkhosts_resolve(zg_zkhosts_t *zr);
/* Resolves again when due: every ZG_ZKHOSTS_REFRESH_MS while `connected`,
 * else every second (longer after failures, up to 30 s). */
void zg_zkhosts_tick(zg_zkhosts_t *zr, int connected);
/* A new handle on the resolved addresses (never resolving by itself), or
 * NULL: errno EAGAIN when no address is known yet (a resolution is then
 * started), else the client's errno. */
zhandle_t *zg_zkhosts_handle(zg_zkhosts_t *zr, watcher_fn watcher,
                             int session_timeout_ms, void *ctx,
                             log_callback_fn log_cb);
/* Gives `zh` the resolved addresses (after a resolution that changed
 * them). */
void zg_zkhosts_apply(zg_zkhosts_t *zr, zhandle_t *zh);
/* A resolution still out is abandoned, not waited for: its thread frees
 * what it holds when getaddrinfo() returns, and touches nothing else. */
void zg_zkhosts_close(zg_zkhosts_t *zr);

#define ZG_ZKHOSTS_REFRESH_MS 60000

/* Called after every zookeeper_process(), outside of the client's
 * callbacks: the place to close or reopen the handle. */
typedef void (*zg_zkconn_after_cb)(zg_zkconn_t *zc);
/* Called when a resolution of the connect string's names ends (status and
 * changed as for zg_zkhosts_cb), after new addresses went to a live
 * handle: the place to open a handle that could not be opened before. */
typedef void (*zg_zkconn_hosts_cb)(zg_zkconn_t *zc, int status, int changed);
/* Called once the loop handles are closed (zg_zkconn_close): from then on
 * the owner may free the memory `zc` lives in. */
typedef void (*zg_zkconn_closed_cb)(zg_zkconn_t *zc);

struct zg_zkconn {
  uv_loop_t *loop;
  zhandle_t *zh; /* NULL while closed */
  zg_zkconn_after_cb after;
  zg_zkconn_hosts_cb hosts_cb; /* may be NULL */
  zg_zkconn_closed_cb closed_cb;
  void *data;      /* the owner's */
  uv_poll_t *poll; /* heap: a new one while the old one is closing */
  int poll_fd;
  ino_t poll_ino;
  int poll_events;
  uv_timer_t timer;
  int closed; /* zg_zkconn_close() was called */
  zg_zkhosts_t hosts;
  int hosts_set;
  const char *auth; /* digest "user:password" (the owner's), or NULL */
  void_completion_t auth_cb;
  const void *auth_data;
  int auth_rc; /* zoo_add_auth's error when zg_zkconn_open failed on it */
};

/* Initialises the timer on `loop`; no handle yet. */
void zg_zkconn_init(uv_loop_t *loop, zg_zkconn_t *zc, zg_zkconn_after_cb after,
                    void *data);
/* Parses the connect string and starts resolving its names now, so that a
 * bad string is an error at start and the first session opens as soon as
 * the names resolve (`cb`, may be NULL). `module` names the resolver in
 * the log. Optional: zg_zkconn_open() does it on its first call otherwise.
 * Returns 0, UV_EINVAL or UV_ENOMEM. */
int zg_zkconn_set_hosts(zg_zkconn_t *zc, const char *hosts, const char *module,
                        zg_zkconn_hosts_cb cb);
/* Digest credentials "user:password" (borrowed: the owner keeps them
 * until zg_zkconn_close) that every new handle queues before it first
 * connects: the client sends them ahead of any request on every connection
 * (again after a reconnection), so no request of a session goes
 * unauthenticated. `cb` (may be NULL) is zoo_add_auth's completion; a
 * refusal also comes as ZOO_AUTH_FAILED_STATE to the session watcher. */
void zg_zkconn_set_auth(zg_zkconn_t *zc, const char *digest,
                        void_completion_t cb, const void *data);
/* A new handle, so a new session: zookeeper_init2 on the numeric addresses
 * of `hosts` (zg_zkhosts_t, resolved off the loop; `hosts` is read on the
 * first call only, unless zg_zkconn_set_hosts() was called) with our log
 * callback (the client's messages go to our
 * logger at WARN, rate-limited), the credentials queued. Returns 0,
 * UV_EAGAIN while no address is known (resolving; call again later), or
 * ZG_EZOOKEEPER: zc->auth_rc is zoo_add_auth's error if that failed (the
 * handle is then closed again), else 0 and errno tells why. */
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
/* zg_zkconn_reset(zc, 1), then closes the loop handles; `cb` (may be NULL)
 * is called once they are closed. */
void zg_zkconn_close(zg_zkconn_t *zc, zg_zkconn_closed_cb cb);

/* Errors that a reconnection or a new session cures. */
int zg_zkconn_transient(int rc);

#endif
