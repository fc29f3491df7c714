/* Host names resolved off the loop, on threads of zkgate's own.
 *
 * Not libuv's pool (uv_getaddrinfo): it cannot cancel a getaddrinfo() that
 * is running, the request keeps its loop alive, libuv joins the pool's
 * threads at exit, and the same four threads serve other work (the state
 * file writer). A name server that never answers would then hold SIGTERM
 * and that work for the resolver's whole timeout (docs/platform.md).
 *
 * Here a resolver (zg_resolver_t, one per kind of name, shared by every
 * loop of the process) runs at most `max` lookups at once on detached
 * threads; the rest wait in its queue, in order. A lookup's answer reaches
 * the loop that asked through a uv_async. zg_resolve_cancel lets go of a
 * lookup at once: a waiting one leaves the queue, a running one's answer is
 * dropped (and freed) by its thread when getaddrinfo() returns, and nothing
 * holds the loop or the exit. Used by the ZooKeeper host names
 * (registry/zkconn.c), by instances registered by host name
 * (upstream/upstream.c) and by zkgate-register's health check
 * (register/register.c). */
#ifndef ZKGATE_RESOLVE_H
#define ZKGATE_RESOLVE_H

#include <netdb.h>
#include <pthread.h>
#include <uv.h>

#include "core/list.h"

typedef struct zg_resolve zg_resolve_t;

/* getaddrinfo() itself, or a test's stand-in: runs on a resolver thread. */
typedef int (*zg_resolve_fn)(const char *host, const char *port,
                             const struct addrinfo *hints,
                             struct addrinfo **res);

typedef struct {
  pthread_mutex_t lock; /* guards everything below, and every lookup's
                           shared state */
  unsigned max;         /* lookups at once (threads) */
  unsigned running;     /* threads alive */
  zg_queue_t waiting;   /* zg_resolve_t, oldest first */
  zg_resolve_fn fn;     /* NULL: getaddrinfo() */
} zg_resolver_t;

#define ZG_RESOLVER_INIT(max_)                                                 \
  { PTHREAD_MUTEX_INITIALIZER, (max_), 0, {NULL, NULL}, NULL }

/* Called on the loop with 0 and the addresses (the callee's: freeaddrinfo),
 * or a negative UV_EAI_* / UV_E* code and NULL. The lookup is gone by then
 * (no zg_resolve_cancel of it). Never called after zg_resolve_cancel. */
typedef void (*zg_resolve_cb)(void *data, int status, struct addrinfo *res);

/* Starts looking up host:port (AF_UNSPEC, SOCK_STREAM, `ai_flags`) for
 * `loop`; *out is the lookup, to cancel it by. Returns 0, or a negative
 * code and then `cb` is never called. On the loop's thread only. */
int zg_resolve_start(zg_resolver_t *rv, uv_loop_t *loop, const char *host,
                     const char *port, int ai_flags, zg_resolve_cb cb,
                     void *data, zg_resolve_t **out);

/* Lets go of a lookup whose callback has not run: it is never called. On
 * the loop's thread only. */
void zg_resolve_cancel(zg_resolve_t *q);

/* getaddrinfo()'s EAI_* as libuv's UV_EAI_* (what uv_strerror knows). */
int zg_resolve_status(int eai);

#endif
