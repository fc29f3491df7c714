/* The etcd registry source: etcd v3's JSON gateway (grpc-gateway, paths
 * under /v3/ in etcd 3.4; docs/platform.md "etcd") over HTTP/1.1, with
 * libuv, llhttp, jansson and net/tls (the calls themselves are
 * registry/etcd_http's, shared with zkgate-register --etcd). See
 * etcd_source.h.
 *
 * Calls: at most one unary call (authenticate, range, the probe) and one
 * watch stream at a time, each on its own connection to the endpoint in
 * use. A unary call's connection closes after its response. The watch
 * stream's request body is ONE create request (etcd 3.4's gateway may stop
 * reading a body once it has answered, dropping the creates after the
 * first, and does not read a body left open: docs/platform.md, etcd): one
 * watch over the smallest key range covering every prefix, events under
 * no prefix dropped. A new prefix restarts the stream. Its response is one
 * JSON object a line, for as long as the stream lives.
 *
 * Revisions: each prefix keeps the revision up to which it has every
 * change (`rev`): its range read's, then raised by each response's events
 * (a watch delivers whole revisions, in order). A watch response's header
 * revision is not used: a watch catching up sends the store's current
 * revision with its first batch of old events. A stream (re)starts from
 * the lowest rev + 1 and each prefix skips events at or below its own, so
 * events replayed after a failover are applied once, and none is lost. A
 * start revision that etcd has compacted answers with compact_revision:
 * the prefixes behind it are read again whole, and the stream restarts.
 *
 * Failures: a call that fails (connection, timeout, a 5xx, the stream
 * ending) moves to the next endpoint at once; after a round of all of
 * them, the next round waits RETRY_MS. Pools stay (last-known-good) and
 * max_stale counts from the first failure. */
#include "registry/etcd_source.h"

#include "core/error.h"
#include "core/instance.h"
#include "core/log.h"
#include "net/tls.h"
#include "registry/catalog.h"
#include "registry/etcd_http.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 100
#define RETRY_MS 500       /* between rounds over every endpoint */
#define AUTH_RETRY_MS 5000 /* after etcd refused the credentials */
#define PROBE_MS 5000      /* a quorum read while the stream is quiet */

typedef struct etcd_source etcd_source_t;
typedef struct etcd_entry etcd_entry_t;

typedef struct {
  char *key; /* the whole key */
  zg_instance_t inst;
  int decoded;
  int present; /* mark of a read's mark-and-sweep */
} etcd_kv_t;

struct etcd_entry {
  zg_catalog_entry_t e; /* first: the catalog's entry */
  etcd_source_t *src;
  zg_decode_opts_t opts;
  etcd_kv_t *kvs; /* sorted by key */
  size_t n_kvs, cap_kvs;
  int64_t rev;       /* every change up to it is applied; 0: never read */
  int need_read;     /* a range read is due */
  uint64_t retry_at; /* a refused read: not again before this uv_now */
  int compacted;     /* the read is due because of a compaction */
  int in_stream;     /* the running stream's watch covers it from rev + 1 */
  int dirty_events;  /* changed by the events of the response at hand */
  /* A discovery root (e.root): its keys are kept undecoded, and the names
   * between the root and the next '/' are its children, last reported: */
  char **children;
  size_t n_children;
};

typedef enum { CALL_AUTH, CALL_RANGE, CALL_PROBE, CALL_WATCH } call_kind_t;

static void stream_line(zg_etcd_call_t *c, char *line, size_t len);

struct etcd_source {
  zg_source_t base; /* first */
  uv_loop_t *loop;
  zg_catalog_t cat;
  zg_etcd_endpoint_t *eps;
  size_t n_eps, cur;
  unsigned fails_in_row; /* endpoints that failed since the last success */
  uint64_t dial_timeout_ms;
  char *username, *password; /* password: a secret */
  char *token;               /* from authenticate; NULL: none yet */
  int auth_refused;
  zg_tls_client_t *tls;
  zg_etcd_call_t *unary; /* in flight, or NULL */
  zg_etcd_call_t *watch; /* the stream, or NULL */
  int watch_dirty;       /* the stream must restart (prefixes changed) */
  int stream_up;         /* the stream said created */
  int64_t round_rev;     /* reads of this round are pinned to it; 0: none */
  uint64_t retry_at;     /* uv_now before which no call starts */
  uint64_t probe_at;     /* uv_now of the next probe */
  uv_timer_t tick;
  int started, closing, open_handles;
  /* books */
  int64_t revision;
  uint64_t reads, rereads, failovers, streams, watch_events;
  char error[192];
  zg_ratelimit_t error_rl;
};

static const zg_source_ops_t etcd_ops;
static void pump(etcd_source_t *src);

static etcd_entry_t *entry_at(const etcd_source_t *src, size_t i) {
  return (etcd_entry_t *)src->cat.entries[i];
}

/* The first key after every key that starts with `prefix`: etcd's
 * range_end for a prefix (the last byte below 0xff incremented, the rest
 * cut; "\0" for all keys when there is none). */
static char *prefix_end(const char *prefix, size_t *len) {
  size_t n = strlen(prefix);
  char *end = malloc(n + 1);
  if (!end)
    return NULL;
  memcpy(end, prefix, n + 1);
  while (n > 0) {
    if ((unsigned char)end[n - 1] < 0xff) {
      end[n - 1]++;
      *len = n;
      return end;
    }
    n--;
  }
  end[0] = '\0';
  *len = 1;
  return end;
}

static const zg_etcd_endpoint_t *endpoint(const etcd_source_t *src) {
  return &src->eps[src->cur];
}

/* A call of `kind` to the endpoint in use, with the token when there is
 * one (etcd_http.h). NULL when out of memory. */
static zg_etcd_call_t *call_start(etcd_source_t *src, call_kind_t kind,
                                  const char *path, const char *json,
                                  zg_etcd_done_fn done) {
  zg_etcd_call_t *c = zg_etcd_call_start(
      src->loop, src->tls, endpoint(src), src->token, path, json,
      src->dial_timeout_ms, kind == CALL_WATCH ? stream_line : NULL, done, src);
  if (c)
    c->kind = (int)kind;
  return c;
}

/* ---- instances of a prefix ----------------------------------------------- */

static size_t entry_instances(zg_catalog_entry_t *ce, zg_instance_t *list) {
  etcd_entry_t *e = (etcd_entry_t *)ce;
  size_t n = 0;
  if (!list)
    return e->n_kvs;
  for (size_t i = 0; i < e->n_kvs; i++)
    if (e->kvs[i].decoded)
      list[n++] = e->kvs[i].inst;
  return n;
}

static void kv_clear(etcd_kv_t *kv) {
  free(kv->key);
  if (kv->decoded)
    zg_instance_clear(&kv->inst);
  memset(kv, 0, sizeof(*kv));
}

static void entry_forget(etcd_entry_t *e) {
  for (size_t i = 0; i < e->n_kvs; i++)
    kv_clear(&e->kvs[i]);
  e->n_kvs = 0;
}

/* The index of `key` in e->kvs, or where it would go (*found 0). */
static size_t kv_find(const etcd_entry_t *e, const char *key, int *found) {
  size_t lo = 0, hi = e->n_kvs;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(e->kvs[mid].key, key);
    if (c == 0) {
      *found = 1;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = 0;
  return lo;
}

/* Decodes `value` for `key` into kv (replacing what it held); the name
 * the decoders see is the key with the prefix taken off. Logged as the
 * ZooKeeper source does. */
static void kv_decode(etcd_entry_t *e, etcd_kv_t *kv, const char *value,
                      size_t vlen, int64_t mod_rev) {
  const char *name = kv->key + strlen(e->e.path);
  char err[256];
  zg_instance_t inst;
  int rc =
      zg_instance_decode(name, value, vlen, &e->opts, &inst, err, sizeof(err));
  if (kv->decoded)
    zg_instance_clear(&kv->inst);
  kv->decoded = 0;
  if (rc == 0 && !(inst.key = strdup(kv->key))) {
    zg_instance_clear(&inst);
    rc = UV_ENOMEM;
    snprintf(err, sizeof(err), "out of memory");
  }
  if (rc == 0) {
    inst.version = mod_rev;
    kv->inst = inst;
    kv->decoded = 1;
    if (err[0])
      zg_warn("registry", "etcd %s: %s", kv->key, err);
    zg_debug("registry", "etcd %s: %s instance %s:%u%s weight %u", kv->key,
             zg_instance_format_name(inst.format), inst.host, inst.port,
             inst.up ? "" : " (down)", inst.weight);
  } else if (rc == ZG_ESKIP) {
    zg_debug("registry", "etcd %s: not an instance (%s)", kv->key, err);
  } else {
    zg_warn("registry",
            "etcd %s: cannot decode instance data (%s); key "
            "skipped",
            kv->key, err);
  }
}

/* A key put (mark: also marks it present). 0 or UV_ENOMEM. */
static int entry_put(etcd_entry_t *e, const char *key, const char *value,
                     size_t vlen, int64_t mod_rev) {
  int found;
  size_t i = kv_find(e, key, &found);
  etcd_kv_t *kv;
  if (!found) {
    if (e->n_kvs == e->cap_kvs) {
      size_t cap = e->cap_kvs ? e->cap_kvs * 2 : 8;
      etcd_kv_t *nk = realloc(e->kvs, cap * sizeof(*nk));
      if (!nk)
        return UV_ENOMEM;
      e->kvs = nk;
      e->cap_kvs = cap;
    }
    memmove(&e->kvs[i + 1], &e->kvs[i], (e->n_kvs - i) * sizeof(*e->kvs));
    e->n_kvs++;
    kv = &e->kvs[i];
    memset(kv, 0, sizeof(*kv));
    if (!(kv->key = strdup(key))) {
      memmove(&e->kvs[i], &e->kvs[i + 1], (e->n_kvs - i - 1) * sizeof(*kv));
      e->n_kvs--;
      return UV_ENOMEM;
    }
  }
  kv = &e->kvs[i];
  kv->present = 1;
  if (!e->e.root) /* a root's keys only name its children */
    kv_decode(e, kv, value, vlen, mod_rev);
  return 0;
}

static void entry_delete(etcd_entry_t *e, const char *key) {
  int found;
  size_t i = kv_find(e, key, &found);
  if (!found)
    return;
  kv_clear(&e->kvs[i]);
  memmove(&e->kvs[i], &e->kvs[i + 1], (e->n_kvs - i - 1) * sizeof(*e->kvs));
  e->n_kvs--;
}

static void children_free(etcd_entry_t *e) {
  for (size_t i = 0; i < e->n_children; i++)
    free(e->children[i]);
  free(e->children);
  e->children = NULL;
  e->n_children = 0;
}

/* A root's children now: for each key ROOT/NAME/..., NAME once, in key
 * order (sorted). A key right under the root (no '/' after the name)
 * names no service. Reported when they changed, or at the first read. */
static void root_report(etcd_entry_t *e) {
  size_t rlen = strlen(e->e.path), n = 0;
  char **names = calloc(e->n_kvs ? e->n_kvs : 1, sizeof(*names));
  int same;
  if (!names)
    return; /* the next change tries again */
  for (size_t i = 0; i < e->n_kvs; i++) {
    const char *name = e->kvs[i].key + rlen, *slash = strchr(name, '/');
    if (!slash || slash == name ||
        (n && strlen(names[n - 1]) == (size_t)(slash - name) &&
         !strncmp(names[n - 1], name, (size_t)(slash - name))))
      continue;
    if (!(names[n] = strndup(name, (size_t)(slash - name)))) {
      while (n > 0)
        free(names[--n]);
      free(names);
      return;
    }
    n++;
  }
  same = e->e.synced && n == e->n_children;
  for (size_t i = 0; same && i < n; i++)
    same = !strcmp(names[i], e->children[i]);
  children_free(e);
  e->children = names;
  e->n_children = n;
  if (!same)
    zg_catalog_children(&e->e, (const char *const *)names, n);
}

/* An entry's instances (or, for a root, its children) changed. */
static void entry_changed(etcd_entry_t *e) {
  if (e->e.root)
    root_report(e);
  else
    zg_catalog_changed(&e->e);
}

/* A key-value of the gateway's JSON ({"key": b64, "value": b64,
 * "mod_revision": "N"}) into e: put, or deleted when `del`. Keys outside
 * the prefix (not asked for) are ignored. 0, or -1 when malformed. */
static int apply_kv(etcd_entry_t *e, json_t *kv, int del) {
  json_t *jk = json_object_get(kv, "key"), *jv = json_object_get(kv, "value");
  char *key, *value = NULL;
  size_t klen, vlen = 0;
  int rc = 0;
  if (!json_is_string(jk))
    return -1;
  if (!(key = zg_etcd_b64_decode(json_string_value(jk), json_string_length(jk),
                                 &klen)))
    return -1;
  if (strlen(key) != klen || strncmp(key, e->e.path, strlen(e->e.path)) != 0) {
    free(key);
    return 0;
  }
  if (del) {
    entry_delete(e, key);
  } else {
    if (!e->e.root && json_is_string(jv) &&
        !(value = zg_etcd_b64_decode(json_string_value(jv),
                                     json_string_length(jv), &vlen)))
      rc = -1;
    else if (entry_put(
                 e, key, value, vlen,
                 zg_etcd_json_int64(json_object_get(kv, "mod_revision"))) != 0)
      rc = -1;
  }
  free(value);
  free(key);
  return rc;
}

/* ---- the connection's fortunes ------------------------------------------- */

static int is_token_error(const char *msg) {
  return strstr(msg, "invalid auth token") || strstr(msg, "user name is empty");
}

static void set_connected(etcd_source_t *src) {
  src->fails_in_row = 0;
  src->error[0] = '\0';
  if (src->cat.state == ZG_SOURCE_CONNECTED)
    return;
  /* Back after a gap: every pool is offered again (after the coalesce
   * window, which lets the stream's catch-up land first), so that one
   * emptied past max_stale serves again even if nothing changed. */
  for (size_t i = 0; i < src->cat.n_entries; i++)
    if (entry_at(src, i)->e.synced && !entry_at(src, i)->e.root)
      zg_catalog_changed(&entry_at(src, i)->e);
  zg_info("registry",
          "etcd: connected to %s at revision %lld, watching %zu "
          "prefix(es)",
          endpoint(src)->text, (long long)src->revision, src->cat.n_entries);
  src->cat.state = ZG_SOURCE_CONNECTED;
}

/* A call failed for a reason another endpoint may not have: both calls
 * end, the next endpoint is tried (at once, until every one failed in a
 * row; then after RETRY_MS). Pools stay. */
static void conn_failed(etcd_source_t *src, const char *what, const char *why) {
  const zg_etcd_endpoint_t *was = endpoint(src);
  uint64_t now = uv_now(src->loop), dropped;
  zg_etcd_call_abort(src->unary);
  zg_etcd_call_abort(src->watch);
  src->unary = src->watch = NULL;
  src->stream_up = 0;
  src->round_rev = 0;
  snprintf(src->error, sizeof(src->error), "%s on %s: %s", what, was->text,
           why);
  if (src->n_eps > 1) {
    src->cur = (src->cur + 1) % src->n_eps;
    src->failovers++;
  }
  if (++src->fails_in_row >= src->n_eps) {
    src->fails_in_row = 0;
    src->retry_at = now + RETRY_MS;
  }
  if (src->cat.state == ZG_SOURCE_CONNECTED) {
    src->cat.state = ZG_SOURCE_DISCONNECTED;
    src->cat.disconnected_ms = now;
    zg_warn("registry",
            "etcd: lost the connection (%s): serving the last known pools; "
            "trying %s",
            src->error, endpoint(src)->text);
  } else if (zg_ratelimit_allow(&src->error_rl, now, &dropped)) {
    zg_warn("registry", "etcd: %s; trying %s", src->error, endpoint(src)->text);
  }
}

static void call_failed(etcd_source_t *src, zg_etcd_call_t *c, const char *what,
                        int rc) {
  char why[160];
  zg_etcd_call_why(c, rc, "[etcd] cert and key", why, sizeof(why));
  conn_failed(src, what, why);
}

/* A 4xx answer that another endpoint would give too: the token expired
 * (authenticate again), or a refusal (logged; tried again later: the
 * prefix `e` alone, or every call when `e` is NULL). 1 when handled so, 0
 * when it is a failure of the endpoint. */
static int refused(etcd_source_t *src, zg_etcd_call_t *c, etcd_entry_t *e,
                   const char *what) {
  char msg[128];
  uint64_t now = uv_now(src->loop), dropped;
  if (c->status < 400 || c->status >= 500)
    return 0;
  zg_etcd_error_message(c->body, c->body_len, msg, sizeof(msg));
  if (src->username && is_token_error(msg)) {
    zg_etcd_secret_free(src->token);
    src->token = NULL;
    return 1;
  }
  snprintf(src->error, sizeof(src->error), "%s%s%s refused by %s: %s", what,
           e ? " " : "", e ? e->e.path : "", endpoint(src)->text, msg);
  if (e)
    e->retry_at = now + AUTH_RETRY_MS;
  else
    src->retry_at = now + AUTH_RETRY_MS;
  if (zg_ratelimit_allow(&src->error_rl, now, &dropped))
    zg_error("registry", "etcd: %s", src->error);
  return 1;
}

/* ---- authenticate ----------------------------------------------------------
 */

static void on_auth_done(zg_etcd_call_t *c, int rc) {
  etcd_source_t *src = c->owner;
  json_t *root, *token;
  src->unary = NULL;
  if (rc != 0 || c->status >= 500) {
    call_failed(src, c, "authenticate", rc);
    return;
  }
  if (c->status != 200) {
    char msg[128];
    uint64_t dropped;
    zg_etcd_error_message(c->body, c->body_len, msg, sizeof(msg));
    snprintf(src->error, sizeof(src->error),
             "authentication as '%s' refused by %s: %s", src->username,
             endpoint(src)->text, msg);
    if (!src->auth_refused ||
        zg_ratelimit_allow(&src->error_rl, uv_now(src->loop), &dropped))
      zg_error("registry",
               "etcd: %s; check [etcd] username and password (tried again "
               "every %d s)",
               src->error, AUTH_RETRY_MS / 1000);
    src->auth_refused = 1;
    src->retry_at = uv_now(src->loop) + AUTH_RETRY_MS;
    return;
  }
  root = json_loadb(c->body ? c->body : "", c->body_len, 0, NULL);
  token = json_object_get(root, "token");
  if (json_is_string(token) && !strpbrk(json_string_value(token), "\r\n")) {
    zg_etcd_secret_free(src->token);
    src->token = strdup(json_string_value(token));
    if (src->auth_refused)
      zg_info("registry", "etcd: authenticated as '%s'", src->username);
    src->auth_refused = 0;
    src->fails_in_row = 0;
  } else {
    conn_failed(src, "authenticate", "no token in the answer");
  }
  json_decref(root);
  pump(src);
}

static void auth_start(etcd_source_t *src) {
  json_t *o =
      json_pack("{s:s,s:s}", "name", src->username, "password", src->password);
  char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
  if (body)
    src->unary =
        call_start(src, CALL_AUTH, "/v3/auth/authenticate", body, on_auth_done);
  if (body) {
    for (volatile char *s = body; *s; s++)
      *s = 0;
    free(body);
  }
  json_decref(o);
}

/* ---- range reads ------------------------------------------------------------
 */

/* A whole prefix as of the read: keys not in it are gone. */
static int range_apply(etcd_entry_t *e, json_t *kvs) {
  size_t i, k = 0;
  json_t *kv;
  for (i = 0; i < e->n_kvs; i++)
    e->kvs[i].present = 0;
  json_array_foreach(kvs, i, kv) {
    if (apply_kv(e, kv, 0) != 0)
      return -1;
  }
  for (i = 0; i < e->n_kvs; i++) {
    if (e->kvs[i].present)
      e->kvs[k++] = e->kvs[i];
    else
      kv_clear(&e->kvs[i]);
  }
  e->n_kvs = k;
  return 0;
}

static void on_range_done(zg_etcd_call_t *c, int rc) {
  etcd_source_t *src = c->owner;
  etcd_entry_t *e = c->entry;
  json_t *root, *header;
  int64_t rev;
  src->unary = NULL;
  if (rc != 0 || c->status >= 500 || c->status < 200) {
    call_failed(src, c, "reading", rc);
    return;
  }
  if (c->status != 200) {
    char msg[128];
    zg_etcd_error_message(c->body, c->body_len, msg, sizeof(msg));
    if (src->round_rev && strstr(msg, "compacted"))
      src->round_rev = 0; /* the pinned revision is gone: read the latest */
    else
      refused(src, c, e, "reading");
    pump(src);
    return;
  }
  root = json_loadb(c->body ? c->body : "", c->body_len, 0, NULL);
  header = json_object_get(root, "header");
  rev = zg_etcd_json_int64(json_object_get(header, "revision"));
  if (!root || rev <= 0 || range_apply(e, json_object_get(root, "kvs")) != 0) {
    json_decref(root);
    conn_failed(src, "reading", "a range answer that cannot be read");
    return;
  }
  json_decref(root);
  /* Pinned: the keys are as of round_rev, whatever the header says. */
  e->rev = src->round_rev ? src->round_rev : rev;
  if (!src->round_rev)
    src->round_rev = rev;
  if (rev > src->revision)
    src->revision = rev;
  src->reads++;
  e->e.lists++;
  if (e->compacted)
    src->rereads++;
  e->compacted = 0;
  e->need_read = 0;
  src->fails_in_row = 0;
  src->watch_dirty = 1;
  zg_debug("registry", "etcd %s: %zu key(s) at revision %lld", e->e.path,
           e->n_kvs, (long long)e->rev);
  entry_changed(e);
  pump(src);
}

static void range_start(etcd_source_t *src, etcd_entry_t *e) {
  size_t elen;
  char *end = prefix_end(e->e.path, &elen);
  char *k64 = zg_etcd_b64_encode(e->e.path, strlen(e->e.path));
  char *e64 = end ? zg_etcd_b64_encode(end, elen) : NULL;
  char body[64];
  json_t *o = NULL;
  char *text = NULL;
  if (k64 && e64)
    o = json_pack("{s:s,s:s,s:b}", "key", k64, "range_end", e64, "keys_only",
                  e->e.root);
  if (o && src->round_rev) {
    snprintf(body, sizeof(body), "%lld", (long long)src->round_rev);
    json_object_set_new(o, "revision", json_string(body));
  }
  if (o && (text = json_dumps(o, JSON_COMPACT)) != NULL &&
      (src->unary = call_start(src, CALL_RANGE, "/v3/kv/range", text,
                               on_range_done)) != NULL)
    src->unary->entry = e;
  free(text);
  json_decref(o);
  free(k64);
  free(e64);
  free(end);
}

/* ---- the watch stream
 * --------------------------------------------------------- */

/* The stream holds ONE watch, over the smallest key range that covers
 * every prefix read (docs/platform.md, etcd: the gateway may stop reading a
 * request body once it has answered, so a body of many create requests
 * loses some), from the lowest prefix revision + 1. Keys in the range but
 * under no prefix are dropped; each prefix skips events at or below its
 * own revision. */

/* One revision's worth of a response applied: every prefix the watch
 * covers has seen all changes up to `rev` (a watch delivers in revision
 * order, whole revisions to a response). */
static void covered_up_to(etcd_source_t *src, int64_t rev) {
  for (size_t i = 0; i < src->cat.n_entries; i++)
    if (entry_at(src, i)->in_stream && entry_at(src, i)->rev < rev)
      entry_at(src, i)->rev = rev;
  if (rev > src->revision)
    src->revision = rev;
}

/* The watch was canceled by etcd: compacted past its start (the prefixes
 * behind the compaction are read again), or refused (all are read again
 * later). */
static void watch_canceled(etcd_source_t *src, json_t *res) {
  int64_t compact =
      zg_etcd_json_int64(json_object_get(res, "compact_revision"));
  json_t *reason = json_object_get(res, "cancel_reason");
  uint64_t now = uv_now(src->loop), dropped;
  src->watch_dirty = 1;
  if (compact <= 0) {
    snprintf(src->error, sizeof(src->error), "watch canceled: %s",
             json_is_string(reason) ? json_string_value(reason) : "no reason");
    if (zg_ratelimit_allow(&src->error_rl, now, &dropped))
      zg_warn("registry", "etcd: %s; reading again in %d s", src->error,
              AUTH_RETRY_MS / 1000);
  }
  for (size_t i = 0; i < src->cat.n_entries; i++) {
    etcd_entry_t *e = entry_at(src, i);
    if (!e->in_stream || (compact > 0 && e->rev + 1 >= compact))
      continue;
    if (compact > 0)
      zg_info("registry",
              "etcd %s: revision %lld is compacted (oldest kept: %lld): "
              "reading the prefix again",
              e->e.path, (long long)(e->rev + 1), (long long)compact);
    else
      e->retry_at = now + AUTH_RETRY_MS;
    e->need_read = 1;
    e->compacted = compact > 0;
    e->in_stream = 0;
  }
}

/* One event, to every prefix that holds its key and has not seen it. */
static void watch_event(etcd_source_t *src, json_t *ev) {
  json_t *kv = json_object_get(ev, "kv"), *type = json_object_get(ev, "type");
  json_t *jk = json_object_get(kv, "key"), *jv = json_object_get(kv, "value");
  int64_t rev = zg_etcd_json_int64(json_object_get(kv, "mod_revision"));
  int del = json_is_string(type) && !strcmp(json_string_value(type), "DELETE");
  char *key = NULL, *value = NULL;
  size_t klen = 0, vlen = 0;
  src->watch_events++;
  if (!json_is_string(jk) ||
      !(key = zg_etcd_b64_decode(json_string_value(jk), json_string_length(jk),
                                 &klen)) ||
      strlen(key) != klen ||
      (!del && json_is_string(jv) &&
       !(value = zg_etcd_b64_decode(json_string_value(jv),
                                    json_string_length(jv), &vlen)))) {
    zg_warn("registry", "etcd: an event that cannot be read: skipped");
    free(key);
    return;
  }
  for (size_t i = 0; i < src->cat.n_entries; i++) {
    etcd_entry_t *e = entry_at(src, i);
    if (!e->in_stream || rev <= e->rev ||
        strncmp(key, e->e.path, strlen(e->e.path)) != 0)
      continue;
    if (del)
      entry_delete(e, key);
    else if (entry_put(e, key, value, vlen, rev) != 0)
      zg_warn("registry", "etcd %s: out of memory applying %s", e->e.path, key);
    e->dirty_events = 1;
  }
  free(value);
  free(key);
}

/* A response's events, in order; then the prefixes they changed publish. */
static void watch_events(etcd_source_t *src, json_t *events) {
  size_t i;
  json_t *ev;
  int64_t top = 0;
  json_array_foreach(events, i, ev) {
    int64_t rev = zg_etcd_json_int64(
        json_object_get(json_object_get(ev, "kv"), "mod_revision"));
    watch_event(src, ev);
    if (rev > top)
      top = rev;
  }
  for (i = 0; i < src->cat.n_entries; i++)
    if (entry_at(src, i)->dirty_events) {
      entry_at(src, i)->dirty_events = 0;
      entry_changed(entry_at(src, i));
    }
  if (top > 0)
    covered_up_to(src, top);
}

/* One message of the stream. */
static void stream_line(zg_etcd_call_t *c, char *line, size_t len) {
  etcd_source_t *src = c->owner;
  json_t *root = json_loadb(line, len, 0, NULL), *res, *events;
  if (len == 0 || (root && !json_object_get(root, "result") &&
                   !json_object_get(root, "error"))) {
    json_decref(root);
    return;
  }
  if (!root || !(res = json_object_get(root, "result"))) {
    char msg[160];
    zg_etcd_error_message(line, len, msg, sizeof(msg));
    json_decref(root);
    c->status = 0;
    conn_failed(src, "watching", root ? msg : "a message that is not JSON");
    pump(src);
    return;
  }
  if (json_is_true(json_object_get(res, "created"))) {
    src->stream_up = 1;
    set_connected(src);
  }
  if (json_is_true(json_object_get(res, "canceled"))) {
    watch_canceled(src, res);
    json_decref(root);
    pump(src);
    return;
  }
  events = json_object_get(res, "events");
  if (json_is_array(events))
    watch_events(src, events);
  json_decref(root);
}

static void on_watch_done(zg_etcd_call_t *c, int rc) {
  etcd_source_t *src = c->owner;
  src->watch = NULL;
  src->stream_up = 0;
  if (c->status && c->status != 200 && c->status < 500) {
    refused(src, c, NULL, "watching");
    pump(src);
    return;
  }
  call_failed(src, c, "watching", rc == 0 ? UV_EOF : rc);
  pump(src);
}

/* Compares two range ends (prefix_end's): "\0" alone means every key
 * from the start on, above any other end; otherwise as byte strings. */
static int end_cmp(const char *a, size_t alen, const char *b, size_t blen) {
  int a_all = alen == 1 && a[0] == '\0', b_all = blen == 1 && b[0] == '\0';
  int c;
  if (a_all || b_all)
    return a_all - b_all;
  c = memcmp(a, b, alen < blen ? alen : blen);
  if (c)
    return c;
  return (alen > blen) - (alen < blen);
}

/* The create request: the range from the lowest prefix to the highest
 * prefix's end, from the lowest revision + 1; NULL when no prefix is read
 * yet (or out of memory). Marks the prefixes it covers. */
static char *watch_body(etcd_source_t *src) {
  const char *lo = NULL;
  char *hi = NULL, *k64 = NULL, *e64 = NULL, *out = NULL, start[32];
  size_t hi_len = 0;
  int64_t from = INT64_MAX;
  json_t *o;
  for (size_t i = 0; i < src->cat.n_entries; i++) {
    etcd_entry_t *e = entry_at(src, i);
    size_t elen;
    char *end;
    e->in_stream = 0;
    if (e->need_read) /* not read yet (or refused): not watched yet */
      continue;
    if (!(end = prefix_end(e->e.path, &elen)))
      goto done;
    if (!lo || strcmp(e->e.path, lo) < 0)
      lo = e->e.path;
    if (!hi || end_cmp(end, elen, hi, hi_len) > 0) {
      free(hi);
      hi = end;
      hi_len = elen;
      end = NULL;
    }
    free(end);
    if (e->rev < from)
      from = e->rev;
    e->in_stream = 1;
  }
  if (!lo)
    goto done;
  snprintf(start, sizeof(start), "%lld", (long long)(from + 1));
  k64 = zg_etcd_b64_encode(lo, strlen(lo));
  e64 = zg_etcd_b64_encode(hi, hi_len);
  o = json_pack("{s:{s:s?,s:s?,s:s,s:b}}", "create_request", "key", k64,
                "range_end", e64, "start_revision", start, "progress_notify",
                1);
  out = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
done:
  free(hi);
  free(k64);
  free(e64);
  if (!out)
    for (size_t i = 0; i < src->cat.n_entries; i++)
      entry_at(src, i)->in_stream = 0;
  return out;
}

static void watch_start(etcd_source_t *src) {
  char *body = watch_body(src);
  if (!body)
    return;
  src->watch_dirty = 0;
  src->watch = call_start(src, CALL_WATCH, "/v3/watch", body, on_watch_done);
  if (src->watch)
    src->streams++;
  free(body);
}

/* ---- the probe -------------------------------------------------------------
 * A stream says nothing while nothing changes, also when its member is cut
 * off (a partition, a host gone without a reset): every PROBE_MS a
 * linearizable read of one key on a new connection to the same member
 * asks for its quorum (etcd's ReadIndex), within twice the dial timeout. A
 * failure fails over, as any failed call does. The read also keeps a
 * simple auth token from expiring. */

static void on_probe_done(zg_etcd_call_t *c, int rc) {
  etcd_source_t *src = c->owner;
  src->unary = NULL;
  if (rc != 0 || c->status >= 500 || c->status < 200) {
    call_failed(src, c, "checking", rc);
    pump(src);
    return;
  }
  if (c->status != 200)
    refused(src, c, NULL, "checking");
  pump(src);
}

static void probe_start(etcd_source_t *src) {
  /* The key "\0" (AA== in base64): nothing needs to be there. */
  src->probe_at = uv_now(src->loop) + PROBE_MS;
  src->unary =
      call_start(src, CALL_PROBE, "/v3/kv/range",
                 "{\"key\":\"AA==\",\"count_only\":true}", on_probe_done);
  if (src->unary)
    src->unary->timeout_ms = 2 * src->dial_timeout_ms;
}

/* ---- what to do next
 * --------------------------------------------------------- */

/* Starts the next call due: authenticate, the reads of prefixes not read
 * (one at a time, pinned to the first one's revision), then the stream. */
static void pump(etcd_source_t *src) {
  if (!src->started || src->closing || src->unary ||
      uv_now(src->loop) < src->retry_at)
    return;
  if (src->username && !src->token) {
    auth_start(src);
    return;
  }
  for (size_t i = 0; i < src->cat.n_entries; i++)
    if (entry_at(src, i)->need_read &&
        uv_now(src->loop) >= entry_at(src, i)->retry_at) {
      range_start(src, entry_at(src, i));
      return;
    }
  src->round_rev = 0;
  if (src->watch && !src->watch_dirty) {
    if (src->stream_up && uv_now(src->loop) >= src->probe_at)
      probe_start(src);
    return;
  }
  zg_etcd_call_abort(src->watch);
  src->watch = NULL;
  src->stream_up = 0;
  watch_start(src);
}

static void on_tick(uv_timer_t *t) {
  etcd_source_t *src = t->data;
  if (src->closing)
    return;
  zg_catalog_check_stale(&src->cat, uv_now(src->loop));
  pump(src);
}

/* ---- operations
 * ------------------------------------------------------------------ */

static void entry_free(etcd_entry_t *e) {
  entry_forget(e);
  children_free(e);
  free(e->kvs);
  zg_catalog_entry_clear(&e->e);
  free(e);
}

static int add_entry(etcd_source_t *src, const char *prefix,
                     const char *endpoint_name, void *ctx, int root) {
  etcd_entry_t *e = calloc(1, sizeof(*e));
  if (!e)
    return UV_ENOMEM;
  if (zg_catalog_entry_init(&src->cat, &e->e, prefix, endpoint_name, root) !=
      0) {
    free(e);
    return UV_ENOMEM;
  }
  e->src = src;
  e->opts.endpoint = e->e.endpoint;
  e->need_read = 1;
  if (zg_catalog_add(&src->cat, &e->e, ctx) != 0) {
    entry_free(e);
    return UV_ENOMEM;
  }
  pump(src);
  return 0;
}

static int etcd_watch(zg_source_t *base, const char *prefix,
                      const char *endpoint_name, void *ctx) {
  return add_entry((etcd_source_t *)base, prefix, endpoint_name, ctx, 0);
}

/* A discovery root: its keys are read (keys only) and watched as a
 * service's are, and its children reported by name. */
static int etcd_watch_root(zg_source_t *base, const char *root, void *ctx) {
  return add_entry((etcd_source_t *)base, root, NULL, ctx, 1);
}

static void etcd_retarget(zg_source_t *base, void *old_ctx, void *new_ctx) {
  etcd_source_t *src = (etcd_source_t *)base;
  for (size_t i = 0; i < src->cat.n_entries; i++)
    if (entry_at(src, i)->e.ctx == old_ctx) {
      entry_at(src, i)->e.ctx = new_ctx;
      return;
    }
}

static void etcd_unwatch(zg_source_t *base, void *ctx) {
  etcd_source_t *src = (etcd_source_t *)base;
  for (size_t i = 0; i < src->cat.n_entries; i++) {
    etcd_entry_t *e = entry_at(src, i);
    if (e->e.ctx != ctx)
      continue;
    if (src->unary && src->unary->entry == e) {
      zg_etcd_call_abort(src->unary);
      src->unary = NULL;
    }
    src->watch_dirty = 1; /* the stream restarts without it */
    zg_catalog_remove(&src->cat, &e->e);
    entry_free(e);
    pump(src);
    return;
  }
}

static int etcd_start(zg_source_t *base) {
  etcd_source_t *src = (etcd_source_t *)base;
  uv_timer_init(src->loop, &src->tick);
  src->tick.data = src;
  src->open_handles = 1;
  /* max_stale counts from now; the state file's pools come first. */
  zg_catalog_start(&src->cat);
  src->started = 1;
  pump(src);
  uv_timer_start(&src->tick, on_tick, TICK_MS, TICK_MS);
  return 0;
}

static void etcd_stats(const zg_source_t *base, zg_source_stats_t *out) {
  const etcd_source_t *src = (const etcd_source_t *)base;
  memset(out, 0, sizeof(*out));
  out->kind = ZG_SOURCE_ETCD;
  out->state = src->cat.state;
  if (src->cat.state != ZG_SOURCE_CONNECTED && src->started)
    out->disconnected_for_ms = uv_now(src->loop) - src->cat.disconnected_ms;
  out->max_stale_ms = src->cat.max_stale_ms;
  out->watch_events = src->watch_events;
  out->last_update_wall_ms = src->cat.last_update_wall_ms;
  out->etcd.revision = src->revision;
  out->etcd.reads = src->reads;
  out->etcd.rereads = src->rereads;
  out->etcd.failovers = src->failovers;
  out->etcd.streams = src->streams;
  out->etcd.prefixes = src->cat.n_entries;
  snprintf(out->etcd.endpoint, sizeof(out->etcd.endpoint), "%s",
           src->eps[src->cur].text);
  snprintf(out->etcd.error, sizeof(out->etcd.error), "%s", src->error);
}

static void source_free(etcd_source_t *src) {
  zg_etcd_endpoints_free(src->eps, src->n_eps);
  free(src->username);
  zg_etcd_secret_free(src->password);
  zg_etcd_secret_free(src->token);
  zg_tls_client_unref(src->tls);
  free(src);
}

static void handle_closed(etcd_source_t *src) {
  if (--src->open_handles == 0)
    source_free(src);
}

static void on_tick_closed(uv_handle_t *h) {
  handle_closed(h->data);
}

static void on_cat_closed(zg_catalog_t *cat) {
  handle_closed((etcd_source_t *)((char *)cat - offsetof(etcd_source_t, cat)));
}

static void etcd_close(zg_source_t *base) {
  etcd_source_t *src = (etcd_source_t *)base;
  src->closing = 1;
  zg_catalog_close(&src->cat); /* the state file's last write */
  zg_etcd_call_abort(src->unary);
  zg_etcd_call_abort(src->watch);
  src->unary = src->watch = NULL;
  for (size_t i = 0; i < src->cat.n_entries; i++)
    entry_free(entry_at(src, i));
  src->cat.n_entries = 0;
  if (zg_catalog_free(&src->cat, on_cat_closed))
    src->open_handles++;
  if (src->started)
    uv_close((uv_handle_t *)&src->tick, on_tick_closed);
  else if (src->open_handles == 0)
    source_free(src);
}

static const zg_source_ops_t etcd_ops = {
    .watch = etcd_watch,
    .watch_root = etcd_watch_root,
    .unwatch = etcd_unwatch,
    .retarget = etcd_retarget,
    .start = etcd_start,
    .close = etcd_close,
    .stats = etcd_stats,
};

/* TLS to etcd: the same client context as TLS to instances, from [etcd]
 * ca, cert and key. */
static int tls_setup(etcd_source_t *src, const zg_etcd_conf_t *ec) {
  zg_service_conf_t sc;
  char err[256];
  int rc;
  memset(&sc, 0, sizeof(sc));
  sc.upstream_ca = ec->ca;
  sc.upstream_cert = ec->cert;
  sc.upstream_key = ec->key;
  if ((rc = zg_tls_client_new(&sc, err, sizeof(err), &src->tls)) != 0)
    zg_error("registry", "etcd: TLS: %s", err);
  return rc;
}

int zg_etcd_source_new(uv_loop_t *loop, const zg_config_t *cfg,
                       zg_source_publish_cb cb,
                       zg_source_children_cb children_cb, void *cb_arg,
                       zg_source_t **out) {
  const zg_etcd_conf_t *ec = &cfg->etcd;
  etcd_source_t *src;
  int rc = UV_ENOMEM;
  *out = NULL;
  if (!ec->endpoints)
    return 0;
  if (!(src = calloc(1, sizeof(*src))))
    return UV_ENOMEM;
  src->base.ops = &etcd_ops;
  src->loop = loop;
  src->dial_timeout_ms = ec->dial_timeout_ms ? ec->dial_timeout_ms : 2000;
  zg_catalog_init(&src->cat, loop, "etcd", cfg->zk.coalesce_window_ms, cb,
                  children_cb, cb_arg, entry_instances);
  zg_ratelimit_init(&src->error_rl, 10000, 5);
  if (zg_etcd_endpoints_parse(ec->endpoints, &src->eps, &src->n_eps) != 0 ||
      (ec->username && (!(src->username = strdup(ec->username)) ||
                        !(src->password = strdup(ec->password)))) ||
      zg_catalog_set_state(&src->cat, ec->state_file, ec->max_stale_ms) != 0)
    goto fail;
  if (strstr(ec->endpoints, "https://") && (rc = tls_setup(src, ec)) != 0)
    goto fail;
  *out = &src->base;
  return 0;
fail:
  etcd_close(&src->base); /* never started: freed at once */
  return rc;
}
