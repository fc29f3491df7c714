/* The catalog: publication, coalescing, last-known-good, max_stale and the
 * state file, for any registry source. See catalog.h. */
#include "registry/catalog.h"

#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0)
    return 0;
  return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- the state file ---------------------------------------------------- */

/* The writer wants the entries (on the loop; it encodes and writes them on
 * the thread pool). Each says until when its pool was known to be the
 * registry's: now while connected, the moment the connection was lost
 * while not, and the file's own time for a pool from the file that
 * the registry has not confirmed since: max_stale at the next start counts
 * from there. */
static void on_state_collect(void *arg, zg_state_writer_t *w) {
  zg_catalog_t *cat = arg;
  zg_state_entry_t *entries = malloc((cat->n_entries + 1) * sizeof(*entries));
  int64_t now = wall_ms(), lost;
  size_t n = 0;
  if (!entries)
    return;
  lost = now - (int64_t)(uv_now(cat->loop) - cat->disconnected_ms);
  /* Last known pools, including those a max_stale has hidden from the
   * gateway: the file remembers what the registry last said. */
  for (size_t i = 0; i < cat->n_entries; i++) {
    zg_catalog_entry_t *e = cat->entries[i];
    if (!e->published)
      continue;
    entries[n].zk_path = e->path;
    entries[n].endpoint = e->endpoint;
    entries[n].pool = e->published;
    entries[n].updated_ms = e->published_wall_ms;
    entries[n].fresh_ms = e->from_file                        ? e->file_fresh_ms
                          : cat->state == ZG_SOURCE_CONNECTED ? now
                                                              : lost;
    n++;
  }
  zg_state_writer_put(w, entries, n, now);
  free(entries);
}

/* Written shortly after a change, so that a burst of publications (the
 * first synchronisation of many services) writes the file once; at most
 * once a second, off the loop (state.h). */
void zg_catalog_state_changed(zg_catalog_t *cat) {
  if (cat->state_writer && !cat->closing)
    zg_state_writer_mark(cat->state_writer);
}

typedef struct {
  char *zk_path;
  char *endpoint;
  zg_pool_t *pool;
  int64_t updated_ms, fresh_ms;
} loaded_entry_t;

typedef struct {
  loaded_entry_t *v;
  size_t n, cap;
} loaded_t;

static void on_state_entry(void *arg, const zg_state_entry_t *e,
                           zg_pool_t *pool) {
  loaded_t *l = arg;
  char *path = strdup(e->zk_path);
  char *endpoint = e->endpoint ? strdup(e->endpoint) : NULL;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    loaded_entry_t *nv = realloc(l->v, cap * sizeof(*nv));
    if (nv) {
      l->v = nv;
      l->cap = cap;
    }
  }
  if (!path || (e->endpoint && !endpoint) || l->n == l->cap) {
    free(path);
    free(endpoint);
    zg_pool_unref(pool);
    return;
  }
  l->v[l->n].zk_path = path;
  l->v[l->n].endpoint = endpoint;
  l->v[l->n].pool = pool;
  l->v[l->n].updated_ms = e->updated_ms;
  l->v[l->n].fresh_ms = e->fresh_ms;
  l->n++;
}

/* The name of `zk_path` when it is a direct child of `root`, else NULL. */
static const char *child_of(const char *root, const char *zk_path) {
  size_t rlen = strlen(root);
  if (rlen == 1) /* "/" */
    rlen = 0;
  if (strncmp(zk_path, root, rlen) != 0 || zk_path[rlen] != '/' ||
      !zk_path[rlen + 1] || strchr(zk_path + rlen + 1, '/'))
    return NULL;
  return zk_path + rlen + 1;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Discovery roots first: the paths of the file under a root are its
 * children as last known, so that discovered services exist (and are
 * watched) before the pools are handed out. */
static void state_apply(zg_catalog_t *cat, loaded_t *l) {
  size_t n_roots = cat->n_entries;
  uint64_t newest = UINT64_MAX; /* the age of the freshest pool taken */
  const char **names = malloc((l->n + 1) * sizeof(*names));
  for (size_t r = 0; names && r < n_roots; r++) {
    zg_catalog_entry_t *root = cat->entries[r];
    size_t n = 0;
    if (!root->root)
      continue;
    for (size_t i = 0; i < l->n; i++) {
      const char *name = child_of(root->path, l->v[i].zk_path);
      if (name)
        names[n++] = name;
    }
    if (n == 0)
      continue;
    qsort(names, n, sizeof(*names), name_cmp);
    zg_info("registry", "%s: %zu service(s) from the state file", root->path,
            n);
    cat->children_cb(cat->cb_arg, root->ctx, names, n);
  }
  free(names);
  for (size_t i = 0; i < l->n; i++) {
    zg_pool_t *pool = l->v[i].pool;
    int64_t now = wall_ms();
    uint64_t age = zg_state_age_ms(l->v[i].fresh_ms, now);
    int past =
        zg_state_past_max_stale(l->v[i].fresh_ms, now, cat->max_stale_ms);
    /* Services sharing a path and endpoint share the pool; an entry of
     * another path or endpoint is no one's. */
    for (size_t k = 0; k < cat->n_entries; k++) {
      zg_catalog_entry_t *e = cat->entries[k];
      zg_pool_t *serve = pool;
      if (e->root || e->published ||
          !zg_state_key_match(l->v[i].zk_path, l->v[i].endpoint, e->path,
                              e->endpoint))
        continue;
      pool->version = e->version = 1;
      pool->created_ms = uv_now(cat->loop);
      /* Older than max_stale already: stale from the start, as if the
       * gateway had been without the registry all along (it was, for them).
       * Kept for the file and for a reconnection that confirms it. */
      if (past && pool->n > 0 && (serve = zg_pool_new(NULL, 0, 1, 0)))
        e->stale = 1;
      else
        serve = pool;
      zg_info("registry",
              "%s%s%s: %zu instance(s) from the state file, last updated %lld "
              "s ago, known current %llu s ago%s",
              e->path, e->endpoint ? " endpoint " : "",
              e->endpoint ? e->endpoint : "", pool->n,
              (long long)(now - l->v[i].updated_ms) / 1000,
              (unsigned long long)age / 1000,
              e->stale ? ": past max_stale, not served" : "");
      if (age < newest)
        newest = age;
      e->synced = 1;
      e->from_file = 1;
      e->file_fresh_ms = l->v[i].fresh_ms;
      e->published_wall_ms = l->v[i].updated_ms;
      e->published = zg_pool_ref(pool);
      cat->cb(cat->cb_arg, e->ctx, serve == pool ? zg_pool_ref(pool) : serve);
    }
    zg_pool_unref(pool);
    free(l->v[i].zk_path);
    free(l->v[i].endpoint);
  }
  free(l->v);
  /* Without the registry since the freshest of them was current, as far as
   * anyone can tell: what /ready and the stats report. Not clamped at 0:
   * uv_now counts from the boot, and a file from before a reboot is older
   * than that. disconnected_ms is unsigned and only ever subtracted from
   * uv_now, so it may wrap below 0 and the differences stay right. */
  if (newest != UINT64_MAX)
    cat->disconnected_ms -= newest;
}

static void state_load(zg_catalog_t *cat) {
  FILE *f = fopen(cat->state_file, "rb");
  char *text = NULL, err[160];
  size_t len = 0, cap = 0;
  loaded_t l = {NULL, 0, 0};
  if (!f) {
    if (errno != ENOENT)
      zg_warn("registry", "cannot read the state file %s: %s", cat->state_file,
              strerror(errno));
    return;
  }
  for (;;) {
    size_t r;
    if (len + 4096 > cap) {
      char *nt = realloc(text, cap = cap ? cap * 2 : 65536);
      if (!nt)
        break;
      text = nt;
    }
    r = fread(text + len, 1, cap - len, f);
    len += r;
    if (r == 0)
      break;
  }
  fclose(f);
  if (text &&
      zg_state_decode(text, len, on_state_entry, &l, err, sizeof(err)) != 0)
    zg_warn("registry", "ignoring the state file %s: %s", cat->state_file, err);
  free(text);
  state_apply(cat, &l);
}

/* max_stale: past it without the registry, each service answers as having no
 * instance (its static instances, if any, serve). Logged once per
 * service; the last known pool is kept for the state file and comes back
 * on reconnection if the registry still says so. */
void zg_catalog_check_stale(zg_catalog_t *cat, uint64_t now) {
  int64_t wall = 0;
  if (cat->max_stale_ms == 0 || cat->state == ZG_SOURCE_CONNECTED)
    return;
  for (size_t i = 0; i < cat->n_entries; i++) {
    zg_catalog_entry_t *e = cat->entries[i];
    zg_pool_t *empty;
    uint64_t age;
    if (e->stale || !e->published || e->published->n == 0)
      continue;
    /* A pool from the state file is as old as the file says, not as old
     * as this process. */
    if (e->from_file && !wall)
      wall = wall_ms();
    age = e->from_file ? zg_state_age_ms(e->file_fresh_ms, wall)
                       : now - cat->disconnected_ms;
    if (age < cat->max_stale_ms)
      continue;
    empty = zg_pool_new(NULL, 0, ++e->version, now);
    if (!empty)
      continue;
    e->stale = 1;
    zg_warn("registry",
            "%s: no %s for %llu ms%s, past max_stale (%llu ms): the "
            "last known %zu instance(s) no longer serve",
            e->path, cat->registry, (unsigned long long)age,
            e->from_file ? " (counted from the state file)" : "",
            (unsigned long long)cat->max_stale_ms, e->published->n);
    cat->cb(cat->cb_arg, e->ctx, empty);
  }
}

void zg_catalog_publish_now(zg_catalog_entry_t *e) {
  zg_catalog_t *cat = e->cat;
  zg_instance_t *list;
  zg_pool_t *pool;
  size_t n = 0;

  e->dirty = 0;
  e->last_pub_ms = uv_now(cat->loop);
  e->from_file = 0; /* what follows is the registry's word */
  n = cat->instances(e, NULL);
  list = malloc((n ? n : 1) * sizeof(*list));
  if (!list) {
    zg_error("registry", "%s: out of memory building a pool", e->path);
    return;
  }
  n = cat->instances(e, list); /* shallow: zg_pool_new copies */
  pool = zg_pool_new(list, n, e->version + 1, uv_now(cat->loop));
  free(list);
  if (!pool) {
    zg_error("registry", "%s: out of memory building a pool", e->path);
    return;
  }
  /* slow_start: an instance that stays keeps when it first came */
  zg_pool_carry_seen(pool, e->published, uv_now(cat->loop));
  if (e->synced && e->published && !e->stale &&
      zg_pool_same(pool, e->published)) {
    zg_pool_unref(pool);
    return;
  }
  if (e->stale)
    zg_info("registry",
            "%s: synchronised again after serving no pool (max_stale)",
            e->path);
  e->stale = 0;
  e->published_wall_ms = wall_ms();
  cat->last_update_wall_ms = e->published_wall_ms;
  zg_catalog_state_changed(cat);
  pool->zk_lists = e->lists;
  pool->zk_reads = e->reads;
  e->lists = 0;
  e->reads = 0;
  e->version++;
  e->synced = 1;
  zg_pool_unref(e->published);
  e->published = zg_pool_ref(pool);
  cat->cb(cat->cb_arg, e->ctx, pool);
}

static void on_coalesce_timer(uv_timer_t *t) {
  zg_catalog_t *cat = t->data;
  for (size_t i = 0; i < cat->n_entries; i++)
    if (cat->entries[i]->dirty && !cat->entries[i]->resync &&
        cat->entries[i]->outstanding == 0)
      zg_catalog_publish_now(cat->entries[i]);
}

/* A change after a quiet `coalesce_window` (no publication of the entry
 * within it) is published at once: one instance registering is routed to
 * in milliseconds. One within the window of the last publication waits
 * for the window, so that a burst of events (a deploy) makes at most one
 * pool per window after its first, not one per event. */
void zg_catalog_changed(zg_catalog_entry_t *e) {
  zg_catalog_t *cat = e->cat;
  uint64_t now;
  if (e->resync)
    return; /* the children are not known yet: the pool would be empty */
  now = uv_now(cat->loop);
  if (cat->coalesce_ms == 0 ||
      (!e->dirty && e->outstanding == 0 &&
       (e->last_pub_ms == 0 || now - e->last_pub_ms >= cat->coalesce_ms))) {
    zg_catalog_publish_now(e);
    return;
  }
  e->dirty = 1;
  if (!uv_is_active((uv_handle_t *)&cat->coalesce_timer))
    uv_timer_start(&cat->coalesce_timer, on_coalesce_timer, cat->coalesce_ms,
                   0);
}

/* ---- entries and life ---------------------------------------------------- */

void zg_catalog_init(zg_catalog_t *cat, uv_loop_t *loop, const char *registry,
                     uint64_t coalesce_ms, zg_source_publish_cb cb,
                     zg_source_children_cb children_cb, void *cb_arg,
                     zg_catalog_instances_fn instances) {
  memset(cat, 0, sizeof(*cat));
  cat->loop = loop;
  cat->registry = registry;
  cat->coalesce_ms = coalesce_ms;
  cat->cb = cb;
  cat->children_cb = children_cb;
  cat->cb_arg = cb_arg;
  cat->instances = instances;
  cat->state = ZG_SOURCE_CONNECTING;
}

int zg_catalog_set_state(zg_catalog_t *cat, const char *state_file,
                         uint64_t max_stale_ms) {
  cat->max_stale_ms = max_stale_ms;
  if (state_file && !(cat->state_file = strdup(state_file)))
    return UV_ENOMEM;
  return 0;
}

int zg_catalog_entry_init(zg_catalog_t *cat, zg_catalog_entry_t *e,
                          const char *path, const char *endpoint, int root) {
  memset(e, 0, sizeof(*e));
  e->cat = cat;
  e->root = root;
  if (!(e->path = strdup(path)) ||
      (endpoint && !(e->endpoint = strdup(endpoint)))) {
    free(e->path);
    e->path = NULL;
    return UV_ENOMEM;
  }
  return 0;
}

void zg_catalog_entry_clear(zg_catalog_entry_t *e) {
  free(e->path);
  free(e->endpoint);
  zg_pool_unref(e->published);
  e->path = e->endpoint = NULL;
  e->published = NULL;
}

int zg_catalog_add(zg_catalog_t *cat, zg_catalog_entry_t *e, void *ctx) {
  if (cat->n_entries == cat->cap_entries) {
    size_t cap = cat->cap_entries ? cat->cap_entries * 2 : 16;
    zg_catalog_entry_t **v = realloc(cat->entries, cap * sizeof(*v));
    if (!v)
      return UV_ENOMEM;
    cat->entries = v;
    cat->cap_entries = cap;
  }
  e->ctx = ctx;
  cat->entries[cat->n_entries++] = e;
  return 0;
}

void zg_catalog_remove(zg_catalog_t *cat, zg_catalog_entry_t *e) {
  for (size_t i = 0; i < cat->n_entries; i++) {
    if (cat->entries[i] != e)
      continue;
    memmove(&cat->entries[i], &cat->entries[i + 1],
            (cat->n_entries - i - 1) * sizeof(*cat->entries));
    cat->n_entries--;
    break;
  }
  e->ctx = NULL;
  e->dirty = 0;
  zg_pool_unref(e->published);
  e->published = NULL;
  e->version = 0;
  zg_catalog_state_changed(cat); /* the file forgets the path */
}

void zg_catalog_start(zg_catalog_t *cat) {
  uv_timer_init(cat->loop, &cat->coalesce_timer);
  cat->coalesce_timer.data = cat;
  cat->started = 1;
  /* Never connected yet: max_stale counts from the start (from the file's
   * time for pools that come from it). */
  cat->disconnected_ms = uv_now(cat->loop);
  if (cat->state_file) {
    state_load(cat);
    if (!(cat->state_writer = zg_state_writer_new(cat->loop, cat->state_file,
                                                  on_state_collect, cat)))
      zg_error("registry", "state file %s: out of memory: not written",
               cat->state_file);
  }
}

void zg_catalog_children(zg_catalog_entry_t *e, const char *const *names,
                         size_t n) {
  e->synced = 1;
  e->cat->children_cb(e->cat->cb_arg, e->ctx, names, n);
}

static void on_coalesce_closed(uv_handle_t *h) {
  zg_catalog_t *cat = h->data;
  if (cat->closed_cb)
    cat->closed_cb(cat);
}

void zg_catalog_close(zg_catalog_t *cat) {
  cat->closing = 1;
  /* A state file write still waiting is collected now, and done on the
   * thread pool (the loop runs until it is). Connected, the file is written
   * anyway: its pools were current until now, and the next start counts
   * max_stale from the time it records. */
  if (cat->state_writer) {
    if (cat->state == ZG_SOURCE_CONNECTED)
      zg_state_writer_mark(cat->state_writer);
    zg_state_writer_close(cat->state_writer);
    cat->state_writer = NULL;
  }
  cat->state = ZG_SOURCE_CLOSED;
}

int zg_catalog_free(zg_catalog_t *cat, zg_catalog_closed_cb cb) {
  free(cat->entries);
  cat->entries = NULL;
  cat->n_entries = cat->cap_entries = 0;
  free(cat->state_file);
  cat->state_file = NULL;
  if (!cat->started)
    return 0;
  cat->closed_cb = cb;
  uv_close((uv_handle_t *)&cat->coalesce_timer, on_coalesce_closed);
  return 1;
}
