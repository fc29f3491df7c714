/* Unit tests for the etcd source's pure parts, by including the .c (the
 * h2o way: its static functions are under test): base64, a prefix's
 * range_end, the endpoints list, and what a range answer and watch events
 * do to a prefix's instances and revision (events at or below it are
 * replays and change nothing). Publication goes through a real catalog
 * with no coalescing, on a loop that is never run. */
#include "../../src/registry/etcd_source.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_base64(void **state) {
  static const char bin[] = "a\0\xff/x";
  char *enc, *dec;
  size_t len;
  (void)state;
  for (size_t n = 0; n <= 5; n++) {
    enc = zg_etcd_b64_encode(bin, n);
    assert_non_null(enc);
    dec = zg_etcd_b64_decode(enc, strlen(enc), &len);
    assert_non_null(dec);
    assert_int_equal(len, n);
    assert_memory_equal(dec, bin, n);
    free(enc);
    free(dec);
  }
  enc = zg_etcd_b64_encode("/services/web/", 14);
  assert_string_equal(enc, "L3NlcnZpY2VzL3dlYi8=");
  free(enc);
  assert_null(zg_etcd_b64_decode("abc", 3, &len));  /* not a multiple of 4 */
  assert_null(zg_etcd_b64_decode("a*c=", 4, &len)); /* not the alphabet */
}

static void check_end(const char *prefix, const char *want, size_t want_len) {
  size_t len = 0;
  char *end = prefix_end(prefix, &len);
  assert_non_null(end);
  assert_int_equal(len, want_len);
  assert_memory_equal(end, want, want_len);
  free(end);
}

static void test_prefix_end(void **state) {
  (void)state;
  check_end("/services/web/", "/services/web0", 14);
  check_end("a", "b", 1);
  check_end("a\xff", "b", 1);
  check_end("\xff\xff", "\0", 1); /* every key from the prefix on */
}

static void test_endpoints(void **state) {
  etcd_source_t src;
  (void)state;
  memset(&src, 0, sizeof(src));
  assert_int_equal(zg_etcd_endpoints_parse(
                       "http://e1:2379, https://[::1]:2380,http://10.0.0.3:1",
                       &src.eps, &src.n_eps),
                   0);
  assert_int_equal(src.n_eps, 3);
  assert_string_equal(src.eps[0].host, "e1");
  assert_string_equal(src.eps[0].port, "2379");
  assert_false(src.eps[0].tls);
  assert_string_equal(src.eps[0].text, "http://e1:2379");
  assert_string_equal(src.eps[1].host, "::1");
  assert_string_equal(src.eps[1].port, "2380");
  assert_true(src.eps[1].tls);
  assert_string_equal(src.eps[2].host, "10.0.0.3");
  assert_string_equal(src.eps[2].port, "1");
  for (size_t i = 0; i < src.n_eps; i++) {
    free(src.eps[i].host);
    free(src.eps[i].text);
  }
  free(src.eps);
}

/* ---- a prefix's instances -------------------------------------------------
 */

static zg_pool_t *last_pool;
static int pools;

static void on_pool(void *arg, void *ctx, zg_pool_t *pool) {
  (void)arg;
  (void)ctx;
  zg_pool_unref(last_pool);
  last_pool = pool;
  pools++;
}

typedef struct {
  uv_loop_t loop;
  etcd_source_t src;
  etcd_entry_t e;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  uv_loop_init(&f->loop);
  f->src.loop = &f->loop;
  zg_catalog_init(&f->src.cat, &f->loop, "etcd", 0, on_pool, NULL, NULL,
                  entry_instances);
  assert_int_equal(
      zg_catalog_entry_init(&f->src.cat, &f->e.e, "/s/web/", NULL, 0), 0);
  f->e.src = &f->src;
  assert_int_equal(zg_catalog_add(&f->src.cat, &f->e.e, f), 0);
  last_pool = NULL;
  pools = 0;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  zg_catalog_remove(&f->src.cat, &f->e.e);
  entry_forget(&f->e);
  free(f->e.kvs);
  zg_catalog_entry_clear(&f->e.e);
  zg_catalog_close(&f->src.cat);
  zg_catalog_free(&f->src.cat, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uv_loop_close(&f->loop);
  zg_pool_unref(last_pool);
  last_pool = NULL;
  free(f);
  return 0;
}

/* {"kv":{"key":b64(key),"value":b64(value),"mod_revision":"rev"}} with
 * "type":"DELETE" when value is NULL. */
static json_t *event(const char *key, const char *value, int64_t rev) {
  char *k = zg_etcd_b64_encode(key, strlen(key));
  char *v = value ? zg_etcd_b64_encode(value, strlen(value)) : NULL;
  char r[32];
  json_t *kv, *ev;
  snprintf(r, sizeof(r), "%lld", (long long)rev);
  kv = json_pack("{s:s,s:s}", "key", k, "mod_revision", r);
  if (v)
    json_object_set_new(kv, "value", json_string(v));
  ev = json_pack("{s:o}", "kv", kv);
  if (!value)
    json_object_set_new(ev, "type", json_string("DELETE"));
  free(k);
  free(v);
  return ev;
}

/* Just the "kv" of such an event: what a range answer lists. */
static json_t *kv_of(const char *key, const char *value, int64_t rev) {
  json_t *ev = event(key, value, rev),
         *kv = json_incref(json_object_get(ev, "kv"));
  json_decref(ev);
  return kv;
}

/* The pool's instances as "host:port" sorted, space-separated. */
static void pool_text(char *out, size_t len) {
  out[0] = '\0';
  assert_non_null(last_pool);
  for (size_t i = 0; i < last_pool->n; i++) {
    char one[300];
    snprintf(one, sizeof(one), "%s%s:%u", i ? " " : "", last_pool->inst[i].host,
             last_pool->inst[i].port);
    strncat(out, one, len - strlen(out) - 1);
  }
}

static void test_range_then_events(void **state) {
  fixture_t *f = *state;
  json_t *kvs = json_array(), *evs = json_array();
  char text[512];
  /* A range answer: two keys under the prefix, one that is not an
   * instance, and (as etcd would never send) one outside the prefix. */
  json_array_append_new(kvs, kv_of("/s/web/a", "10.0.0.1:80", 5));
  json_array_append_new(kvs, kv_of("/s/web/b", "10.0.0.2:80", 7));
  json_array_append_new(kvs, kv_of("/s/web/junk", "not an address", 8));
  json_array_append_new(kvs, kv_of("/s/other/x", "10.0.0.9:80", 9));
  assert_int_equal(range_apply(&f->e, kvs), 0);
  f->e.rev = 9;
  f->e.in_stream = 1; /* the stream's watch covers it from revision 10 */
  zg_catalog_publish_now(&f->e.e);
  pool_text(text, sizeof(text));
  assert_string_equal(text, "10.0.0.1:80 10.0.0.2:80");
  assert_int_equal(f->e.n_kvs, 3); /* junk is kept, undecoded */
  /* Replays (at or below the revision read) change nothing; then a put, a
   * change and a delete apply in order. */
  json_array_append_new(evs, event("/s/web/a", NULL, 6));
  json_array_append_new(evs, event("/s/webx/a", "10.0.0.99:80", 9));
  json_array_append_new(evs, event("/s/web/z", "10.0.0.26:80", 9));
  json_array_append_new(evs, event("/s/web/c", "10.0.0.3:80", 10));
  json_array_append_new(evs,
                        event("/s/web/b", "{\"Addr\":\"10.0.0.22:81\"}", 11));
  json_array_append_new(evs, event("/s/web/a", NULL, 12));
  watch_events(&f->src, evs);
  assert_int_equal(f->e.rev, 12);
  assert_int_equal(f->src.revision, 12);
  assert_int_equal(f->src.watch_events, 6);
  pool_text(text, sizeof(text));
  assert_string_equal(text, "10.0.0.22:81 10.0.0.3:80");
  assert_string_equal(last_pool->inst[0].key, "/s/web/b");
  assert_int_equal(last_pool->inst[0].version, 11);
  assert_int_equal(last_pool->inst[0].format, ZG_FORMAT_ETCD_ADDR);
  /* The same events again (a resumed stream): nothing changes. */
  pools = 0;
  watch_events(&f->src, evs);
  assert_int_equal(pools, 0);
  /* A later range read (after a compaction) replaces the keys whole. */
  json_array_clear(kvs);
  json_array_append_new(kvs, kv_of("/s/web/d", "10.0.0.4:80", 20));
  assert_int_equal(range_apply(&f->e, kvs), 0);
  zg_catalog_publish_now(&f->e.e);
  pool_text(text, sizeof(text));
  assert_string_equal(text, "10.0.0.4:80");
  assert_int_equal(f->e.n_kvs, 1);
  json_decref(kvs);
  json_decref(evs);
}

static void test_end_cmp(void **state) {
  (void)state;
  assert_true(end_cmp("/b0", 3, "/a0", 3) > 0);
  assert_true(end_cmp("/a", 2, "/a0", 3) < 0);
  assert_int_equal(end_cmp("/a0", 3, "/a0", 3), 0);
  assert_true(end_cmp("\0", 1, "\xff\xff", 2) > 0); /* every key on: highest */
  assert_true(end_cmp("/z", 2, "\0", 1) < 0);
}

/* The one create request covers every prefix read, from the lowest
 * revision + 1; a prefix not read yet is left out. */
static void test_watch_body(void **state) {
  fixture_t *f = *state;
  etcd_entry_t *b = calloc(1, sizeof(*b)), *c = calloc(1, sizeof(*c));
  char *body;
  json_t *root, *cr;
  size_t len;
  char *key, *end;
  assert_int_equal(zg_catalog_entry_init(&f->src.cat, &b->e, "/b/", NULL, 0),
                   0);
  assert_int_equal(zg_catalog_entry_init(&f->src.cat, &c->e, "/0/", NULL, 0),
                   0);
  assert_int_equal(zg_catalog_add(&f->src.cat, &b->e, b), 0);
  assert_int_equal(zg_catalog_add(&f->src.cat, &c->e, c), 0);
  f->e.rev = 40; /* "/s/web/" */
  b->rev = 7;
  c->need_read = 1; /* lowest, but not read: not covered */
  body = watch_body(&f->src);
  assert_non_null(body);
  root = json_loads(body, 0, NULL);
  cr = json_object_get(root, "create_request");
  key =
      zg_etcd_b64_decode(json_string_value(json_object_get(cr, "key")),
                         json_string_length(json_object_get(cr, "key")), &len);
  end = zg_etcd_b64_decode(json_string_value(json_object_get(cr, "range_end")),
                           json_string_length(json_object_get(cr, "range_end")),
                           &len);
  assert_string_equal(key, "/b/");
  assert_string_equal(end, "/s/web0");
  assert_string_equal(json_string_value(json_object_get(cr, "start_revision")),
                      "8");
  assert_true(f->e.in_stream && b->in_stream && !c->in_stream);
  free(key);
  free(end);
  free(body);
  json_decref(root);
  zg_catalog_remove(&f->src.cat, &b->e);
  zg_catalog_remove(&f->src.cat, &c->e);
  entry_free(b);
  entry_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_base64),
      cmocka_unit_test(test_prefix_end),
      cmocka_unit_test(test_endpoints),
      cmocka_unit_test(test_end_cmp),
      cmocka_unit_test_setup_teardown(test_watch_body, setup, teardown),
      cmocka_unit_test_setup_teardown(test_range_then_events, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
