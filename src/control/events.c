/* The change feed: a ring of the last events, framed for Server-Sent
 * Events, and its subscribers; the diff of two pools. See events.h. */
#include "control/events.h"

#include "core/instance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  uint64_t id;
  char *text; /* "id: N\ndata: {...}\n\n" */
  size_t len;
} slot_t;

struct zg_events {
  slot_t *ring;
  size_t cap;
  size_t n;                /* kept, at most cap */
  size_t head;             /* where the next one goes */
  size_t bytes, max_bytes; /* of the kept texts */
  uint64_t last_id;
  zg_list_t subs;
};

zg_events_t *zg_events_new(size_t capacity, size_t max_bytes) {
  zg_events_t *ev = calloc(1, sizeof(*ev));
  if (!ev || capacity == 0 || !(ev->ring = calloc(capacity, sizeof(slot_t)))) {
    free(ev);
    return NULL;
  }
  ev->cap = capacity;
  ev->max_bytes = max_bytes;
  return ev;
}

void zg_events_free(zg_events_t *ev) {
  if (!ev)
    return;
  while (!zg_list_empty(&ev->subs))
    zg_link_remove(ev->subs.first);
  for (size_t i = 0; i < ev->cap; i++)
    free(ev->ring[i].text);
  free(ev->ring);
  free(ev);
}

static void iso_time(int64_t wall_ms, char *buf, size_t len) {
  time_t t = (time_t)(wall_ms / 1000);
  struct tm tm;
  size_t n;
  gmtime_r(&t, &tm);
  n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, len - n, ".%03dZ", (int)(wall_ms % 1000));
}

uint64_t zg_events_emit(zg_events_t *ev, const char *type, json_t *fields,
                        int64_t wall_ms) {
  json_t *o = json_object();
  char when[40], *data = NULL, *text = NULL;
  uint64_t id = ev->last_id + 1;
  size_t len = 0;
  slot_t *s;
  iso_time(wall_ms, when, sizeof(when));
  if (o && !json_object_set_new(o, "id", json_integer((json_int_t)id)) &&
      !json_object_set_new(o, "time", json_string(when)) &&
      !json_object_set_new(o, "type", json_string(type)) &&
      (!fields || !json_object_update(o, fields)))
    data = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(o);
  json_decref(fields);
  if (data) {
    /* JSON_COMPACT has no newline in it: one data line. */
    len = (size_t)snprintf(NULL, 0, "id: %llu\ndata: %s\n\n",
                           (unsigned long long)id, data);
    if ((text = malloc(len + 1)))
      snprintf(text, len + 1, "id: %llu\ndata: %s\n\n", (unsigned long long)id,
               data);
  }
  free(data);
  if (!text)
    return 0;
  ev->last_id = id;
  s = &ev->ring[ev->head];
  if (s->text)
    ev->bytes -= s->len;
  free(s->text);
  s->id = id;
  s->text = text;
  s->len = len;
  ev->bytes += len;
  ev->head = (ev->head + 1) % ev->cap;
  if (ev->n < ev->cap)
    ev->n++;
  /* The oldest go while the texts weigh more than max_bytes. */
  while (ev->n > 1 && ev->bytes > ev->max_bytes) {
    slot_t *old = &ev->ring[(ev->head + ev->cap - ev->n) % ev->cap];
    ev->bytes -= old->len;
    free(old->text);
    old->text = NULL;
    old->len = 0;
    ev->n--;
  }
  ZG_LIST_FOREACH_SAFE(it, &ev->subs) {
    zg_events_sub_t *sub = ZG_LIST_ITEM(it, zg_events_sub_t, link);
    sub->on_event(sub, s->text, s->len);
  }
  return id;
}

uint64_t zg_events_last_id(const zg_events_t *ev) {
  return ev->last_id;
}

uint64_t zg_events_first_id(const zg_events_t *ev) {
  return ev->n ? ev->last_id - ev->n + 1 : ev->last_id + 1;
}

size_t zg_events_since(const zg_events_t *ev, uint64_t since,
                       void (*fn)(void *arg, const char *text, size_t len),
                       void *arg) {
  size_t count = 0;
  for (size_t k = 0; k < ev->n; k++) {
    const slot_t *s = &ev->ring[(ev->head + ev->cap - ev->n + k) % ev->cap];
    if (s->id > since) {
      fn(arg, s->text, s->len);
      count++;
    }
  }
  return count;
}

void zg_events_subscribe(zg_events_t *ev, zg_events_sub_t *sub) {
  /* New links go first; the order subscribers are told in is no promise. */
  zg_list_push(&ev->subs, &sub->link);
}

void zg_events_unsubscribe(zg_events_sub_t *sub) {
  zg_link_remove(&sub->link);
}

size_t zg_events_subscribers(const zg_events_t *ev) {
  return zg_list_count(&ev->subs);
}

/* ---- pools ------------------------------------------------------------- */

typedef struct {
  const zg_instance_t *in;
  char id[ZG_HOST_MAX + 16]; /* "host:port" when it has no key */
} ident_t;

static const char *ident(const ident_t *x) {
  return x->in->key ? x->in->key : x->id;
}

static int ident_cmp(const void *a, const void *b) {
  const ident_t *x = a, *y = b;
  /* Keyed instances and address-only ones never match each other. */
  if (!x->in->key != !y->in->key)
    return x->in->key ? -1 : 1;
  return strcmp(ident(x), ident(y));
}

static ident_t *idents(const zg_pool_t *p) {
  ident_t *v;
  size_t n = p ? p->n : 0;
  if (!(v = malloc((n ? n : 1) * sizeof(*v))))
    return NULL;
  for (size_t i = 0; i < n; i++) {
    v[i].in = &p->inst[i];
    zg_instance_addr_str(&p->inst[i], v[i].id, sizeof(v[i].id));
  }
  qsort(v, n, sizeof(*v), ident_cmp);
  return v;
}

static int same_instance(const zg_instance_t *a, const zg_instance_t *b) {
  return !strcmp(a->host, b->host) && a->port == b->port &&
         a->plain_port == b->plain_port && a->version == b->version &&
         a->format == b->format && a->up == b->up && a->weight == b->weight &&
         a->tls == b->tls;
}

int zg_events_pool_diff(const zg_pool_t *before, const zg_pool_t *after,
                        zg_diff_fn fn, void *arg) {
  ident_t *a = idents(before), *b = idents(after);
  size_t na = before ? before->n : 0, nb = after ? after->n : 0, i = 0, k = 0;
  int calls = 0;
  if (!a || !b) {
    free(a);
    free(b);
    return -1;
  }
  while (i < na || k < nb) {
    int c = i == na ? 1 : k == nb ? -1 : ident_cmp(&a[i], &b[k]);
    if (c < 0) {
      fn(arg, ZG_DIFF_REMOVED, a[i++].in, NULL);
      calls++;
    } else if (c > 0) {
      fn(arg, ZG_DIFF_ADDED, NULL, b[k++].in);
      calls++;
    } else {
      if (!same_instance(a[i].in, b[k].in)) {
        fn(arg, ZG_DIFF_CHANGED, a[i].in, b[k].in);
        calls++;
      }
      i++;
      k++;
    }
  }
  free(a);
  free(b);
  return calls;
}

const char *zg_diff_kind_name(zg_diff_kind_t kind) {
  switch (kind) {
  case ZG_DIFF_ADDED:
    return "instance_added";
  case ZG_DIFF_REMOVED:
    return "instance_removed";
  case ZG_DIFF_CHANGED:
    return "instance_changed";
  }
  return "instance_changed";
}

json_t *zg_events_instance_json(const zg_instance_t *in) {
  char addr[ZG_HOST_MAX + 16];
  zg_instance_addr_str(in, addr, sizeof(addr));
  return json_pack("{s:s, s:s?, s:I, s:s, s:b, s:I}", "address", addr, "key",
                   in->key, "version", (json_int_t)in->version, "format",
                   zg_instance_format_name(in->format), "up", in->up, "weight",
                   (json_int_t)in->weight);
}
