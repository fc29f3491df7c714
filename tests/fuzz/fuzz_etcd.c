/* libFuzzer target over what the etcd source does with an etcd answer
 * (src/registry/etcd_http.c, src/registry/etcd_source.c).
 *
 * Both files are compiled in here (as tests/unit/test_etcd_source.c does
 * with the source: their handlers are static), so that an answer's bytes
 * go where a call's reads go (on_call_read): llhttp in response mode with
 * the call's callbacks, the body collected (a unary call) or cut into
 * lines (the watch stream), then the handler the call ends with, as
 * shipped: on_range_done (the header revision, each key-value
 * base64-decoded, the keys under the prefix decoded as instances, the
 * prefix's pool or a root's children published), stream_line and
 * on_watch_done (created, canceled with compact_revision or a reason,
 * events that put and delete keys, error messages), on_auth_done (the
 * token), with the error answers (zg_etcd_error_message,
 * zg_etcd_call_why) of every status, a malformed answer and one cut short.
 *
 * The input: byte 0 chooses the call (bits 0-1: a range read of the prefix
 * "/s/web/", one of the discovery root "/s/", the watch stream,
 * authenticate), the size of the reads (bits 2-4) and whether a username
 * is configured (bit 5; always for authenticate); the rest is what the
 * endpoint sends. Before each answer the prefix holds two keys (a range
 * answer read at revision 10) and both entries are in the stream's watch.
 *
 * The source is never started: pump() starts no call, so nothing leaves
 * the process. Checks, abort() when one fails: the call ends once, the
 * keys kept are sorted, distinct and under their prefix, a decoded key has
 * a host and a port, a root's children are distinct sorted names without
 * '/', the revision never goes back, a token holds no CR or LF, a
 * published pool has no more instances than the entry decoded. */
#include "../../src/registry/etcd_http.c"
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

static int done_calls;

/* The handler the call ends with, counted. */
static zg_etcd_done_fn handler;

static void on_done(zg_etcd_call_t *c, int rc) {
  done_calls++;
  handler(c, rc);
}

/* A call as zg_etcd_call_start makes it, with no connection: its parser
 * and settings, its timer (closed when it ends, which frees it). */
static zg_etcd_call_t *call_new(etcd_source_t *src, call_kind_t kind,
                                etcd_entry_t *e, zg_etcd_done_fn done) {
  zg_etcd_call_t *c = calloc(1, sizeof(*c));
  CHECK(c != NULL);
  c->loop = src->loop;
  c->ep = endpoint(src);
  c->owner = src;
  c->kind = (int)kind;
  c->entry = e;
  c->line = kind == CALL_WATCH ? stream_line : NULL;
  c->done = on_done;
  handler = done;
  c->timeout_ms = CALL_TIMEOUT_MS;
  llhttp_settings_init(&c->settings);
  c->settings.on_body = on_http_body;
  c->settings.on_headers_complete = on_http_headers;
  c->settings.on_message_complete = on_http_done;
  llhttp_init(&c->parser, HTTP_RESPONSE, &c->settings);
  c->parser.data = c;
  uv_timer_init(src->loop, &c->timer);
  c->timer.data = c;
  c->refs = 1; /* the timer */
  return c;
}

/* on_call_read over reads of `step` bytes, then the end of the
 * connection. */
static void feed(zg_etcd_call_t *c, const char *data, size_t size,
                 size_t step) {
  size_t off = 0;
  while (off < size && !c->finished) {
    size_t n = size - off < step ? size - off : step;
    static char buf[16384]; /* the call's read buffer is reused */
    enum llhttp_errno err;
    if (n > sizeof(buf))
      n = sizeof(buf);
    memcpy(buf, data + off, n);
    off += n;
    err = llhttp_execute(&c->parser, buf, n);
    if (err != HPE_OK && err != HPE_PAUSED && !c->finished) {
      c->malformed = 1;
      zg_etcd_call_finish(c, UV_EPROTO);
    }
  }
  if (!c->finished) {
    llhttp_finish(&c->parser); /* a body ended by the close completes */
    zg_etcd_call_finish(c, UV_EOF);
  }
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

static const size_t steps[] = {16384, 1, 2, 3, 7, 16, 61, 256};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool quiet;
  /* The error lines' rate limit, carried from one input to the next (one
   * source's would let every input log its first refusal). */
  static zg_ratelimit_t error_rl;
  uv_loop_t loop;
  etcd_source_t src;
  etcd_entry_t *web, *root;
  zg_etcd_call_t *c;
  json_t *kvs;
  unsigned what;
  size_t step;
  int64_t rev_before;

  if (!quiet) {
    zg_log_set_level(ZG_LOG_ERROR);
    zg_ratelimit_init(&error_rl, 10000, 5);
    quiet = true;
  }
  if (size < 1)
    return 0;
  what = data[0] & 3;
  step = steps[(data[0] >> 2) & 7];

  uv_loop_init(&loop);
  memset(&src, 0, sizeof(src));
  src.loop = &loop;
  src.error_rl = error_rl;
  CHECK(zg_etcd_endpoints_parse("http://127.0.0.1:2379", &src.eps,
                                &src.n_eps) == 0);
  if ((data[0] & 32) || what == 3) { /* authenticate: only with one */
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

  done_calls = 0;
  switch (what) {
  case 0:
  case 1:
    c = src.unary =
        call_new(&src, CALL_RANGE, what == 0 ? web : root, on_range_done);
    break;
  case 2:
    c = src.watch = call_new(&src, CALL_WATCH, NULL, on_watch_done);
    src.stream_up = 1;
    break;
  default:
    c = src.unary = call_new(&src, CALL_AUTH, NULL, on_auth_done);
    break;
  }
  feed(c, (const char *)data + 1, size - 1, step);
  /* A unary call ends with its handler; the stream too, unless one of its
   * messages made the source drop it. */
  CHECK(done_calls == 1 || (what == 2 && done_calls == 0));
  CHECK(!src.token || !strpbrk(src.token, "\r\n"));
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

  error_rl = src.error_rl;
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
