/* Host names resolved on bounded threads of our own. See resolve.h.
 *
 * A lookup has two references: the loop's (its uv_async, until closed) and
 * the resolver's (while it waits in the queue, then its thread's while
 * getaddrinfo() runs). Whoever drops the last frees it. The resolver's lock
 * guards refs, abandoned, link, done, status, res and the queue; the
 * thread reads host, port and flags, which never change, without it. */
#include "net/resolve.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct zg_resolve {
  zg_resolver_t *rv;
  zg_link_t link; /* in rv->waiting while linked */
  int refs;
  int abandoned; /* the loop let go: `async` may be closed, its loop gone */
  int done;
  int status;
  struct addrinfo *res;
  char *host, *port;
  int flags;
  uv_async_t async; /* the loop's: sent once, when done */
  zg_resolve_cb cb; /* loop side only */
  void *data;
};

int zg_resolve_status(int eai) {
  switch (eai) {
  case 0:
    return 0;
  case EAI_AGAIN:
    return UV_EAI_AGAIN;
  case EAI_BADFLAGS:
    return UV_EAI_BADFLAGS;
  case EAI_FAMILY:
    return UV_EAI_FAMILY;
  case EAI_MEMORY:
    return UV_EAI_MEMORY;
  case EAI_NONAME:
    return UV_EAI_NONAME;
  case EAI_SERVICE:
    return UV_EAI_SERVICE;
  case EAI_SOCKTYPE:
    return UV_EAI_SOCKTYPE;
  case EAI_OVERFLOW:
    return UV_EAI_OVERFLOW;
  case EAI_SYSTEM:
    return errno ? -errno : UV_EAI_FAIL;
#ifdef EAI_NODATA /* glibc, with _GNU_SOURCE only */
  case EAI_NODATA:
    return UV_EAI_NODATA;
#endif
  default:
    return UV_EAI_FAIL;
  }
}

static void lookup_free(zg_resolve_t *q) {
  if (q->res)
    freeaddrinfo(q->res);
  free(q->host);
  free(q->port);
  free(q);
}

/* Drops one reference; the caller holds rv->lock. 1: it was the last (the
 * caller frees `q` once the lock is released). */
static int unref_locked(zg_resolve_t *q) {
  return --q->refs == 0;
}

/* A thread takes lookups from the queue until it is empty, then ends: at
 * most rv->max of them at once, and none while nothing waits. */
static void *worker_main(void *arg) {
  zg_resolver_t *rv = arg;
  zg_resolve_fn fn = rv->fn ? rv->fn : getaddrinfo;
  for (;;) {
    struct addrinfo hints, *res = NULL;
    zg_resolve_t *q;
    int rc, last;
    pthread_mutex_lock(&rv->lock);
    if (zg_queue_empty(&rv->waiting)) {
      rv->running--;
      pthread_mutex_unlock(&rv->lock);
      return NULL;
    }
    /* The queue's reference is the thread's now. */
    q = ZG_LIST_ITEM(zg_queue_pop(&rv->waiting), zg_resolve_t, link);
    pthread_mutex_unlock(&rv->lock);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = q->flags;
    rc = zg_resolve_status(fn(q->host, q->port, &hints, &res));
    if (rc == 0 && !res)
      rc = UV_EAI_NODATA;
    if (rc != 0 && res) {
      freeaddrinfo(res);
      res = NULL;
    }
    pthread_mutex_lock(&rv->lock);
    q->status = rc;
    q->res = res;
    q->done = 1;
    /* Under the lock: once the loop has set `abandoned` it may close the
     * handle and its loop, and no send may follow. */
    if (!q->abandoned)
      uv_async_send(&q->async);
    last = unref_locked(q);
    pthread_mutex_unlock(&rv->lock);
    if (last)
      lookup_free(q);
  }
}

static void on_async_closed(uv_handle_t *h) {
  zg_resolve_t *q = h->data;
  zg_resolver_t *rv = q->rv;
  int last;
  pthread_mutex_lock(&rv->lock);
  last = unref_locked(q);
  pthread_mutex_unlock(&rv->lock);
  if (last)
    lookup_free(q);
}

static void on_async(uv_async_t *h) {
  zg_resolve_t *q = h->data;
  zg_resolver_t *rv = q->rv;
  struct addrinfo *res;
  zg_resolve_cb cb = q->cb;
  int status, done;
  pthread_mutex_lock(&rv->lock);
  done = q->done;
  status = q->status;
  res = q->res;
  q->res = NULL;
  /* Nothing may cancel it from here: the callback is its end. */
  q->abandoned = 1;
  pthread_mutex_unlock(&rv->lock);
  if (!done || !cb) /* sent once, when done: neither happens */
    return;
  q->cb = NULL;
  uv_close((uv_handle_t *)&q->async, on_async_closed);
  cb(q->data, status, res);
}

/* A new thread with every signal blocked: they are the loop's (libuv's
 * handlers), never to land on a resolver thread. Detached: nobody joins it,
 * so neither a loop nor exit() waits for a resolver that does not
 * answer. */
static int thread_start(zg_resolver_t *rv) {
  pthread_attr_t attr;
  sigset_t all, old;
  int rc;
  if ((rc = pthread_attr_init(&attr)) != 0)
    return rc;
  rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (rc == 0) {
    pthread_t t;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t, &attr, worker_main, rv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  pthread_attr_destroy(&attr);
  return rc;
}

int zg_resolve_start(zg_resolver_t *rv, uv_loop_t *loop, const char *host,
                     const char *port, int ai_flags, zg_resolve_cb cb,
                     void *data, zg_resolve_t **out) {
  zg_resolve_t *q = calloc(1, sizeof(*q));
  int rc, spawn, dropped = 0;
  if (!q)
    return UV_ENOMEM;
  q->rv = rv;
  q->host = strdup(host);
  q->port = strdup(port);
  q->flags = ai_flags;
  q->cb = cb;
  q->data = data;
  if (!q->host || !q->port) {
    lookup_free(q);
    return UV_ENOMEM;
  }
  if ((rc = uv_async_init(loop, &q->async, on_async)) != 0) {
    lookup_free(q);
    return rc;
  }
  q->async.data = q;
  q->refs = 2;
  pthread_mutex_lock(&rv->lock);
  zg_queue_push(&rv->waiting, &q->link);
  spawn = rv->running < rv->max;
  if (spawn)
    rv->running++;
  pthread_mutex_unlock(&rv->lock);
  if (spawn && (rc = thread_start(rv)) != 0) {
    pthread_mutex_lock(&rv->lock);
    rv->running--;
    /* With a thread still running the lookup waits for it; with none, the
     * queue held nothing else (a thread runs while anything waits) and
     * nobody would take it. */
    if (rv->running == 0 && zg_link_linked(&q->link)) {
      zg_queue_remove(&rv->waiting, &q->link);
      q->refs--;
      q->abandoned = 1;
      dropped = 1;
    }
    pthread_mutex_unlock(&rv->lock);
    if (dropped) {
      q->cb = NULL;
      uv_close((uv_handle_t *)&q->async, on_async_closed);
      return uv_translate_sys_error(rc);
    }
  }
  *out = q;
  return 0;
}

void zg_resolve_cancel(zg_resolve_t *q) {
  zg_resolver_t *rv;
  if (!q)
    return;
  rv = q->rv;
  pthread_mutex_lock(&rv->lock);
  q->abandoned = 1;
  if (zg_link_linked(&q->link)) {
    zg_queue_remove(&rv->waiting, &q->link);
    q->refs--; /* the queue's; the handle's is left */
  }
  pthread_mutex_unlock(&rv->lock);
  q->cb = NULL;
  uv_close((uv_handle_t *)&q->async, on_async_closed);
}
