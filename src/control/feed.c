/* Feeds the change feed from the gateway's hooks and from a look, every
 * ZG_FEED_POLL_MS, at the registry's state and the health marks. See
 * feed.h. */
#include "control/feed.h"

#include <stdlib.h>
#include <string.h>

struct zg_feed {
  zg_events_t *events;
  uv_timer_t timer;
  zg_marks_t *marks;
  zg_feed_probe_fn probe;
  void *probe_arg;
  /* what the last look saw, per registry */
  struct {
    int seen; /* a look was taken */
    zg_source_state_t state;
    uint64_t expiries;
    int stale;      /* past max_stale */
    int stale_told; /* services_stale sent, services_synchronised not yet */
  } reg[ZG_FEED_SOURCES];
  char (*failed)[ZG_HOST_MAX + 10];
  size_t n_failed;
};

static int64_t wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0)
    return 0;
  return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void emit(zg_feed_t *f, const char *type, json_t *fields) {
  zg_events_emit(f->events, type, fields, wall_ms());
}

static const char *const source_names[ZG_FEED_SOURCES] = {"zookeeper", "etcd"};

/* `fields` (taken) with "registry": the name of registry `which`. */
static void emit_reg(zg_feed_t *f, int which, const char *type,
                     json_t *fields) {
  if (!fields)
    fields = json_object();
  if (fields)
    json_object_set_new(fields, "registry", json_string(source_names[which]));
  emit(f, type, fields);
}

static void look_registry(zg_feed_t *f, int which) {
  zg_source_stats_t st;
  json_t *names;
  int stale, changed, was_connected;
  memset(&st, 0, sizeof(st));
  if (!(names = f->probe(f->probe_arg, which, &st)))
    return;
  stale = st.state != ZG_SOURCE_CONNECTED && st.max_stale_ms > 0 &&
          st.disconnected_for_ms >= st.max_stale_ms;
  if (f->reg[which].seen && st.expiries > f->reg[which].expiries)
    emit_reg(f, which, "registry_expired",
             json_pack("{s:I}", "expiries", (json_int_t)st.expiries));
  /* An expiry seen between two looks is a new session: told as one even
   * when both looks saw "connected". */
  changed = !f->reg[which].seen || st.state != f->reg[which].state ||
            st.expiries > f->reg[which].expiries;
  was_connected =
      f->reg[which].seen && f->reg[which].state == ZG_SOURCE_CONNECTED;
  if (changed && st.state == ZG_SOURCE_CONNECTED)
    emit_reg(f, which, "registry_connected", NULL);
  else if (changed && st.state == ZG_SOURCE_DISCONNECTED)
    emit_reg(f, which, "registry_disconnected", NULL);
  /* Pools are last known from the disconnection on, live again once
   * connected (the source re-reads what changed meanwhile). */
  if (f->reg[which].stale_told && st.state == ZG_SOURCE_CONNECTED) {
    emit_reg(f, which, "services_synchronised",
             json_pack("{s:O}", "services", names));
    f->reg[which].stale_told = 0;
  } else if (changed && was_connected && st.state != ZG_SOURCE_CONNECTED) {
    emit_reg(f, which, "services_stale",
             json_pack("{s:s, s:O}", "reason", "registry disconnected",
                       "services", names));
    f->reg[which].stale_told = 1;
  }
  if (stale && !f->reg[which].stale) {
    emit_reg(f, which, "services_stale",
             json_pack("{s:s, s:I, s:O}", "reason", "past max_stale",
                       "max_stale_ms", (json_int_t)st.max_stale_ms, "services",
                       names));
    f->reg[which].stale_told = 1;
  }
  json_decref(names);
  f->reg[which].seen = 1;
  f->reg[which].state = st.state;
  f->reg[which].expiries = st.expiries;
  f->reg[which].stale = stale;
}

static int key_in(char (*keys)[ZG_HOST_MAX + 10], size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(keys[i], key))
      return 1;
  return 0;
}

/* The marks are a short table (instances failed within fail_timeout):
 * copied under their lock, compared here. */
static void look_marks(zg_feed_t *f) {
  char(*now)[ZG_HOST_MAX + 10] = NULL;
  size_t n = 0;
  if (!f->marks)
    return;
  if (zg_marks_failed_keys(f->marks, uv_now(f->timer.loop), &now, &n) != 0)
    return;
  for (size_t i = 0; i < n; i++)
    if (!key_in(f->failed, f->n_failed, now[i]))
      emit(f, "instance_failed", json_pack("{s:s}", "address", now[i]));
  for (size_t i = 0; i < f->n_failed; i++)
    if (!key_in(now, n, f->failed[i]))
      emit(f, "instance_back", json_pack("{s:s}", "address", f->failed[i]));
  free(f->failed);
  f->failed = now;
  f->n_failed = n;
}

static void on_feed_timer(uv_timer_t *t) {
  zg_feed_t *f = t->data;
  for (int i = 0; i < ZG_FEED_SOURCES; i++)
    look_registry(f, i);
  look_marks(f);
}

zg_feed_t *zg_feed_new(uv_loop_t *loop, zg_marks_t *marks,
                       zg_feed_probe_fn probe, void *probe_arg) {
  zg_feed_t *f = calloc(1, sizeof(*f));
  if (!f ||
      !(f->events = zg_events_new(ZG_FEED_HISTORY, ZG_FEED_HISTORY_BYTES))) {
    free(f);
    return NULL;
  }
  f->marks = marks;
  f->probe = probe;
  f->probe_arg = probe_arg;
  uv_timer_init(loop, &f->timer);
  f->timer.data = f;
  /* Kept until zg_feed_close (the gateway's stop). */
  uv_timer_start(&f->timer, on_feed_timer, ZG_FEED_POLL_MS, ZG_FEED_POLL_MS);
  return f;
}

static void on_feed_closed(uv_handle_t *h) {
  zg_feed_t *f = h->data;
  zg_events_free(f->events);
  free(f->failed);
  free(f);
}

void zg_feed_close(zg_feed_t *f) {
  if (!f)
    return;
  uv_close((uv_handle_t *)&f->timer, on_feed_closed);
}

zg_events_t *zg_feed_events(zg_feed_t *f) {
  return f ? f->events : NULL;
}

typedef struct {
  zg_feed_t *f;
  const char *service;
} diff_ctx_t;

static void on_diff(void *arg, zg_diff_kind_t kind, const zg_instance_t *before,
                    const zg_instance_t *after) {
  diff_ctx_t *d = arg;
  json_t *o = zg_events_instance_json(after ? after : before);
  if (!o)
    return;
  json_object_set_new(o, "service", json_string(d->service));
  if (kind == ZG_DIFF_CHANGED)
    json_object_set_new(o, "before", zg_events_instance_json(before));
  emit(d->f, zg_diff_kind_name(kind), o);
}

void zg_feed_pool(zg_feed_t *f, const char *service, const zg_pool_t *before,
                  const zg_pool_t *after) {
  diff_ctx_t d = {f, service};
  if (!f)
    return;
  zg_events_pool_diff(before, after, on_diff, &d);
  if (!before && after)
    emit(f, "service_synchronised",
         json_pack("{s:s, s:I, s:I}", "service", service, "pool_version",
                   (json_int_t)after->version, "instances",
                   (json_int_t)after->n));
}

void zg_feed_reload(zg_feed_t *f, int applied, const char *text) {
  if (!f)
    return;
  emit(f, applied ? "reload_applied" : "reload_rejected",
       json_pack(applied ? "{s:s}" : "{s:s}", applied ? "summary" : "error",
                 text));
}
