/* State the workers share: the board of pools and children lists, and
 * isolation (health marks and cursors: upstream/marks.c). See shared.h. */
#include "control/shared.h"

#include "core/instance.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

typedef struct board_pool {
  struct board_pool *next;
  char *name, *zk_path, *endpoint;
  zg_pool_t *pool;
} board_pool_t;

typedef struct {
  char *name;
  char **names;
  size_t n;
  uint64_t seq;
} board_children_t;

#define BOARD_BUCKETS 1024

struct zg_shared {
  uv_mutex_t mu;
  uv_cond_t cv;
  zg_marks_t *marks; /* health marks and per-service state */
  board_pool_t *pools[BOARD_BUCKETS];
  board_children_t *children;
  size_t n_children;
  uint64_t children_seq;
  int iso_want;
  zg_connlimit_t conns; /* atomic builtins; its log_rl under mu */
};

zg_shared_t *zg_shared_new(void) {
  zg_shared_t *sh = calloc(1, sizeof(*sh));
  if (!sh)
    return NULL;
  if (uv_mutex_init(&sh->mu) != 0) {
    free(sh);
    return NULL;
  }
  if (uv_cond_init(&sh->cv) != 0) {
    uv_mutex_destroy(&sh->mu);
    free(sh);
    return NULL;
  }
  if (!(sh->marks = zg_marks_new())) {
    uv_cond_destroy(&sh->cv);
    uv_mutex_destroy(&sh->mu);
    free(sh);
    return NULL;
  }
  zg_connlimit_init(&sh->conns);
  return sh;
}

zg_connlimit_t *zg_shared_connlimit(zg_shared_t *sh) {
  return &sh->conns;
}

zg_marks_t *zg_shared_marks(zg_shared_t *sh) {
  return sh->marks;
}

void zg_shared_free(zg_shared_t *sh) {
  if (!sh)
    return;
  zg_marks_free(sh->marks);
  for (size_t b = 0; b < BOARD_BUCKETS; b++)
    for (board_pool_t *e = sh->pools[b], *next; e; e = next) {
      next = e->next;
      zg_pool_unref(e->pool);
      free(e->name);
      free(e->zk_path);
      free(e->endpoint);
      free(e);
    }
  for (size_t i = 0; i < sh->n_children; i++) {
    for (size_t k = 0; k < sh->children[i].n; k++)
      free(sh->children[i].names[k]);
    free(sh->children[i].names);
    free(sh->children[i].name);
  }
  free(sh->children);
  uv_cond_destroy(&sh->cv);
  uv_mutex_destroy(&sh->mu);
  free(sh);
}

void zg_shared_lock(zg_shared_t *sh) {
  uv_mutex_lock(&sh->mu);
}

void zg_shared_unlock(zg_shared_t *sh) {
  uv_mutex_unlock(&sh->mu);
}

int zg_shared_log_allowed(zg_shared_t *sh, zg_ratelimit_t *rl,
                          uint64_t *dropped) {
  int ok;
  uv_mutex_lock(&sh->mu);
  /* One clock for all workers (each loop's uv_now lags differently). */
  ok = zg_ratelimit_allow(rl, uv_hrtime() / 1000000, dropped);
  uv_mutex_unlock(&sh->mu);
  return ok;
}

/* ---- the board ---- */

static size_t bucket(const char *name) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    h = (h ^ *p) * 1099511628211ULL;
  return (size_t)(h % BOARD_BUCKETS);
}

static int same_opt(const char *a, const char *b) {
  return (!a && !b) || (a && b && !strcmp(a, b));
}

static char *dup_opt(const char *s, int *ok) {
  char *d = s ? strdup(s) : NULL;
  if (s && !d)
    *ok = 0;
  return d;
}

void zg_shared_post_pool(zg_shared_t *sh, const char *name, const char *zk_path,
                         const char *endpoint, zg_pool_t *pool) {
  size_t b = bucket(name);
  board_pool_t *e;
  int ok = 1;
  char *p, *ep;
  uv_mutex_lock(&sh->mu);
  for (e = sh->pools[b]; e; e = e->next)
    if (!strcmp(e->name, name))
      break;
  if (!e) {
    if (!(e = calloc(1, sizeof(*e))) || !(e->name = strdup(name))) {
      free(e);
      zg_error("gateway",
               "service %s: out of memory handing a pool to the "
               "workers",
               name);
      uv_mutex_unlock(&sh->mu);
      return;
    }
    e->next = sh->pools[b];
    sh->pools[b] = e;
  }
  p = dup_opt(zk_path, &ok);
  ep = dup_opt(endpoint, &ok);
  if (!ok) {
    free(p);
    free(ep);
    zg_error("gateway",
             "service %s: out of memory handing a pool to the workers", name);
    uv_mutex_unlock(&sh->mu);
    return;
  }
  free(e->zk_path);
  free(e->endpoint);
  e->zk_path = p;
  e->endpoint = ep;
  zg_pool_unref(e->pool);
  e->pool = pool ? zg_pool_ref(pool) : NULL;
  uv_mutex_unlock(&sh->mu);
}

void zg_shared_forget_pool(zg_shared_t *sh, const char *name,
                           const char *zk_path, const char *endpoint) {
  board_pool_t **pe;
  uv_mutex_lock(&sh->mu);
  for (pe = &sh->pools[bucket(name)]; *pe; pe = &(*pe)->next) {
    board_pool_t *e = *pe;
    if (strcmp(e->name, name) != 0)
      continue;
    if (same_opt(e->zk_path, zk_path) && same_opt(e->endpoint, endpoint)) {
      *pe = e->next;
      zg_pool_unref(e->pool);
      free(e->name);
      free(e->zk_path);
      free(e->endpoint);
      free(e);
    }
    break;
  }
  uv_mutex_unlock(&sh->mu);
}

zg_pool_t *zg_shared_pool(zg_shared_t *sh, const char *name,
                          const char *zk_path, const char *endpoint) {
  zg_pool_t *pool = NULL;
  uv_mutex_lock(&sh->mu);
  for (board_pool_t *e = sh->pools[bucket(name)]; e; e = e->next)
    if (!strcmp(e->name, name)) {
      if (e->pool && same_opt(e->zk_path, zk_path) &&
          same_opt(e->endpoint, endpoint))
        pool = zg_pool_ref(e->pool);
      break;
    }
  uv_mutex_unlock(&sh->mu);
  return pool;
}

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

static char **copy_names(const char *const *names, size_t n) {
  char **c = calloc(n ? n : 1, sizeof(*c));
  if (!c)
    return NULL;
  for (size_t i = 0; i < n; i++)
    if (!(c[i] = strdup(names[i]))) {
      free_names(c, i);
      return NULL;
    }
  return c;
}

void zg_shared_post_children(zg_shared_t *sh, const char *name,
                             const char *const *names, size_t n) {
  board_children_t *e = NULL;
  char **copy = copy_names(names, n);
  if (!copy) {
    zg_error("gateway",
             "discover %s: out of memory handing children to the "
             "workers",
             name);
    return;
  }
  uv_mutex_lock(&sh->mu);
  for (size_t i = 0; i < sh->n_children && !e; i++)
    if (!strcmp(sh->children[i].name, name))
      e = &sh->children[i];
  if (!e) {
    board_children_t *l =
        realloc(sh->children, (sh->n_children + 1) * sizeof(*l));
    char *nm = strdup(name);
    if (!l || !nm) {
      if (l)
        sh->children = l;
      free(nm);
      free_names(copy, n);
      uv_mutex_unlock(&sh->mu);
      zg_error("gateway",
               "discover %s: out of memory handing children to "
               "the workers",
               name);
      return;
    }
    sh->children = l;
    e = &sh->children[sh->n_children++];
    memset(e, 0, sizeof(*e));
    e->name = nm;
  }
  free_names(e->names, e->n);
  e->names = copy;
  e->n = n;
  e->seq = ++sh->children_seq;
  uv_mutex_unlock(&sh->mu);
}

void zg_shared_forget_children(zg_shared_t *sh, const char *name) {
  uv_mutex_lock(&sh->mu);
  for (size_t i = 0; i < sh->n_children; i++) {
    board_children_t *e = &sh->children[i];
    if (strcmp(e->name, name) != 0)
      continue;
    free_names(e->names, e->n);
    free(e->name);
    sh->children[i] = sh->children[--sh->n_children];
    break;
  }
  uv_mutex_unlock(&sh->mu);
}

int zg_shared_children(zg_shared_t *sh, const char *name, uint64_t *seq,
                       char ***names, size_t *n) {
  int got = 0;
  uv_mutex_lock(&sh->mu);
  for (size_t i = 0; i < sh->n_children; i++) {
    board_children_t *e = &sh->children[i];
    if (strcmp(e->name, name) != 0)
      continue;
    if (e->seq > *seq &&
        (*names = copy_names((const char *const *)e->names, e->n)) != NULL) {
      *n = e->n;
      *seq = e->seq;
      got = 1;
    }
    break;
  }
  uv_mutex_unlock(&sh->mu);
  return got;
}

/* ---- isolation ---- */

void zg_shared_wait(zg_shared_t *sh) {
  uv_cond_wait(&sh->cv, &sh->mu);
}

void zg_shared_wake_all(zg_shared_t *sh) {
  uv_cond_broadcast(&sh->cv);
}

void zg_shared_isolate(zg_shared_t *sh, zg_shared_peer_t *const *peers,
                       size_t n) {
  uv_mutex_lock(&sh->mu);
  sh->iso_want = 1;
  for (size_t i = 0; i < n; i++)
    if (peers[i]->live && !peers[i]->paused)
      uv_async_send(peers[i]->wake);
  for (;;) {
    size_t waiting = 0;
    for (size_t i = 0; i < n; i++)
      waiting += peers[i]->live && !peers[i]->paused;
    if (waiting == 0)
      break;
    uv_cond_wait(&sh->cv, &sh->mu);
  }
  uv_mutex_unlock(&sh->mu);
}

void zg_shared_release(zg_shared_t *sh) {
  uv_mutex_lock(&sh->mu);
  sh->iso_want = 0;
  uv_cond_broadcast(&sh->cv);
  uv_mutex_unlock(&sh->mu);
}

void zg_shared_pause_point(zg_shared_t *sh, zg_shared_peer_t *me) {
  if (!sh->iso_want)
    return;
  me->paused = 1;
  uv_cond_broadcast(&sh->cv);
  while (sh->iso_want)
    uv_cond_wait(&sh->cv, &sh->mu);
  me->paused = 0;
}

void zg_shared_peer_gone(zg_shared_t *sh, zg_shared_peer_t *me) {
  me->live = 0;
  me->paused = 0;
  uv_cond_broadcast(&sh->cv);
}
