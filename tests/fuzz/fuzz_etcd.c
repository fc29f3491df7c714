/* libFuzzer target over what the etcd source does with an etcd answer's
 * body (src/registry/etcd_source.c; the JSON and base64 helpers of
 * src/registry/etcd_http.c).
 *
 * etcd_source.c is compiled in here (as tests/unit/test_etcd_source.c
 * does: the source's handlers are static), so the handlers the HTTP call
 * ends with run as shipped: on_range_done (a range answer: the header
 * revision, each key-value base64-decoded, the keys under the prefix
 * decoded as instances, the prefix's pool or a root's children
 * published), stream_line (the watch stream, one JSON message a line:
 * created, canceled with compact_revision or a reason, events that put
 * and delete keys), on_auth_done (the token) and on_probe_done, with the
 * error answers (zg_etcd_error_message) of every status.
 *
 * The input: byte 0 chooses the answer (bits 0-1: a range answer for the
 * prefix "/s/web/", one for the discovery root "/s/", the watch stream,
 * an authenticate answer; bits 2-4: the HTTP status; bit 5: a username is
 * configured), the rest is the body. The stream's body is cut into lines
 * at '\n' as the HTTP call does (the last piece without one is not a line
 * yet). Before each answer the prefix holds two keys (a range answer read
 * at revision 10) and both entries are in the stream's watch.
 *
 * The source is never started: pump() starts no call, so nothing leaves
 * the process. Checks, abort() when one fails: the keys kept are sorted,
 * distinct and under their prefix, a decoded key has a host and a port,
 * a root's children are distinct, sorted names without '/', the revisions
 * never go back, every published pool has what the entry decoded. */
#include "../../src/registry/etcd_source.c"

#include "core/log.h"
#include "core/pool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "fuzz_etcd.c:%d: check failed: %s\n", __LINE__, #c);     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static zg_pool_t *last_pool;
static size_t n_children_seen;

static void on_pool(void *arg, void *ctx, zg_pool_t *pool) {
  (void)arg;
  (void)ctx;
  zg_pool_unref(last_pool);
  last_pool = pool;
}

static void on_children(void *arg, void *ctx, const char *const *names,
                        size_t n) {
  (void)arg;
  (void)ctx;
  for (size_t i = 0; i < n; i++) {
    CHECK(names[i][0] != '\0' && strchr(names[i], '/') == NULL);
    CHECK(i == 0 || strcmp(names[i - 1], names[i]) < 0);
  }
  n_children_seen = n;
}

/* An entry's keys: sorted, distinct, under its path; decoded ones are
 * instances. */
static void check_entry(const etcd_entry_t *e) {
  size_t plen = strlen(e->e.path);
  for (size_t i = 0; i < e->n_kvs; i++) {
    const etcd_kv_t *kv = &e->kvs[i];
    CHECK(strncmp(kv->key, e->e.path, plen) == 0);
    CHECK(i == 0 || strcmp(e->kvs[i - 1].key, kv->key) < 0);
    CHECK(!e->e.root || !kv->decoded);
    if (kv->decoded) {
      CHECK(kv->inst.host[0] && kv->inst.port > 0);
      CHECK(kv->inst.key && strcmp(kv->inst.key, kv->key) == 0);
    }
  }
}

/* A fake finished call carrying the answer. */
static void answer(zg_etcd_call_t *c, etcd_source_t *src, etcd_entry_t *e,
                   int status, char *body, size_t len) {
  memset(c, 0, sizeof(*c));
  c->owner = src;
  c->entry = e;
  c->status = status;
  c->body = body;
  c->body_len = len;
  c->body_cap = len + 1;
  c->finished = 1;
}

static json_t *kv_json(const char *key, const char *value, const char *rev) {
  char *k = zg_etcd_b64_encode(key, strlen(key));
  char *v = zg_etcd_b64_encode(value, strlen(value));
  json_t *kv =
      json_pack("{s:s,s:s,s:s}", "key", k, "value", v, "mod_revision", rev);
  free(k);
  free(v);
  return kv;
}

static const int statuses[] = {200, 200, 200, 400, 401, 404, 500, 0};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool quiet;
  uv_loop_t loop;
  etcd_source_t src;
  etcd_entry_t *web, *root;
  zg_etcd_call_t call;
  json_t *kvs;
  char *body;
  int status;
  unsigned what;
  int64_t rev_before;

  if (!quiet) {
    zg_log_set_level(ZG_LOG_ERROR);
    quiet = true;
  }
  if (size < 1)
    return 0;
  what = data[0] & 3;
  status = statuses[(data[0] >> 2) & 7];

  uv_loop_init(&loop);
  memset(&src, 0, sizeof(src));
  src.loop = &loop;
  zg_ratelimit_init(&src.error_rl, 10000, 5);
  CHECK(zg_etcd_endpoints_parse("http://127.0.0.1:2379", &src.eps,
                                &src.n_eps) == 0);
  if (data[0] & 32) {
    src.username = strdup("zkgate");
    src.password = strdup("secret");
    src.token = strdup("old-token");
  }
  zg_catalog_init(&src.cat, &loop, "etcd", 0, on_pool, on_children, NULL,
                  entry_instances);
  CHECK(etcd_watch(&src.base, "/s/web/", NULL, &src) == 0);
  CHECK(etcd_watch_root(&src.base, "/s/", &loop) == 0);
  web = entry_at(&src, 0);
  root = entry_at(&src, 1);

  /* The state before the answer: "/s/web/" read at revision 10. */
  kvs = json_array();
  json_array_append_new(kvs, kv_json("/s/web/a", "10.0.0.1:80", "5"));
  json_array_append_new(kvs, kv_json("/s/web/b", "10.0.0.2:80", "7"));
  CHECK(range_apply(web, kvs) == 0);
  CHECK(range_apply(root, kvs) == 0);
  json_decref(kvs);
  web->rev = root->rev = src.revision = 10;
  web->need_read = root->need_read = 0;
  web->in_stream = root->in_stream = 1;
  entry_changed(web);
  entry_changed(root);
  rev_before = src.revision;

  /* The body as the HTTP call keeps it: malloc'ed, NUL-terminated. */
  body = malloc(size);
  CHECK(body != NULL);
  memcpy(body, data + 1, size - 1);
  body[size - 1] = '\0';

  switch (what) {
  case 0:
  case 1:
    answer(&call, &src, what == 0 ? web : root, status, body, size - 1);
    on_range_done(&call, status == 0 ? UV_ECONNRESET : 0);
    break;
  case 2: {
    /* on_http_body with a 200 stream: each complete line is a message. */
    size_t off = 0;
    char *nl;
    answer(&call, &src, NULL, 200, body, size - 1);
    src.watch = NULL; /* conn_failed aborts no real call */
    src.stream_up = 1;
    while ((nl = memchr(body + off, '\n', size - 1 - off)) != NULL) {
      *nl = '\0';
      stream_line(&call, body + off, (size_t)(nl - (body + off)));
      off = (size_t)(nl - body) + 1;
    }
    break;
  }
  default:
    answer(&call, &src, NULL, status, body, size - 1);
    on_auth_done(&call, status == 0 ? UV_ECONNRESET : 0);
    CHECK(!src.token || !strpbrk(src.token, "\r\n"));
    break;
  }
  CHECK(src.unary == NULL && src.watch == NULL); /* never started */
  CHECK(src.revision >= rev_before);
  check_entry(web);
  check_entry(root);
  zg_catalog_publish_now(&web->e);
  if (last_pool) {
    size_t decoded = 0;
    for (size_t i = 0; i < web->n_kvs; i++)
      decoded += web->kvs[i].decoded;
    CHECK(last_pool->n <= decoded);
  }

  free(body);
  zg_pool_unref(last_pool);
  last_pool = NULL;
  etcd_unwatch(&src.base, &src);
  etcd_unwatch(&src.base, &loop);
  zg_catalog_close(&src.cat);
  zg_catalog_free(&src.cat, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  zg_etcd_endpoints_free(src.eps, src.n_eps);
  zg_etcd_secret_free(src.token);
  free(src.username);
  zg_etcd_secret_free(src.password);
  (void)n_children_seen;
  return 0;
}
