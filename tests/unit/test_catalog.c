/* Unit tests for the catalog (src/registry/catalog.h), driven by a fake
 * source that is not ZooKeeper: what any registry source gets without
 * copying code. A burst of changes makes one pool after the coalesce
 * window; a pool the same as the last is not published; nothing is
 * published while the entry resynchronises or has reads out; max_stale
 * empties a pool once and a reconnection brings the kept one back; and the
 * state file written at close gives the next start its pools and a
 * discovery root's children. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "registry/catalog.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A source's entry: the catalog's first, then what the source decoded. */
typedef struct {
  zg_catalog_entry_t e;
  zg_instance_t inst[4];
  size_t n;
} fake_entry_t;

typedef struct {
  int pools;       /* publications */
  zg_pool_t *last; /* the last pool, referenced */
  void *last_ctx;
  int children;      /* children callbacks */
  char names[4][32]; /* the last children */
  size_t n_names;
  zg_catalog_t *cat; /* for on_children to add what it discovers */
  fake_entry_t *discovered;
} seen_t;

static void on_pool(void *arg, void *ctx, zg_pool_t *pool) {
  seen_t *s = arg;
  s->pools++;
  zg_pool_unref(s->last);
  s->last = pool;
  s->last_ctx = ctx;
}

static void on_children(void *arg, void *ctx, const char *const *names,
                        size_t n) {
  seen_t *s = arg;
  (void)ctx;
  s->children++;
  s->n_names = n < 4 ? n : 4;
  for (size_t i = 0; i < s->n_names; i++)
    snprintf(s->names[i], sizeof(s->names[i]), "%s", names[i]);
  /* As the gateway does: a discovered service is watched at once, and
   * the state file's pool for it follows. */
  if (s->discovered && n > 0) {
    assert_int_equal(
        zg_catalog_entry_init(s->cat, &s->discovered->e, "/disc/web", NULL, 0),
        0);
    assert_int_equal(zg_catalog_add(s->cat, &s->discovered->e, s->discovered),
                     0);
  }
}

static size_t fake_instances(zg_catalog_entry_t *e, zg_instance_t *list) {
  fake_entry_t *f = (fake_entry_t *)e;
  if (list)
    memcpy(list, f->inst, f->n * sizeof(*list));
  return f->n;
}

static void fake_set(fake_entry_t *f, size_t n) {
  char err[160];
  for (size_t i = 0; i < f->n; i++)
    zg_instance_clear(&f->inst[i]);
  f->n = 0;
  for (size_t i = 0; i < n; i++) {
    char name[16], data[32];
    snprintf(name, sizeof(name), "i%zu", i);
    snprintf(data, sizeof(data), "10.0.0.%zu:8080", i + 1);
    assert_int_equal(zg_instance_decode(name, data, strlen(data), NULL,
                                        &f->inst[f->n], err, sizeof(err)),
                     0);
    f->n++;
  }
}

static void fake_free(fake_entry_t *f) {
  fake_set(f, 0);
  zg_catalog_entry_clear(&f->e);
}

static void catalog_end(uv_loop_t *loop, zg_catalog_t *cat) {
  zg_catalog_close(cat);
  zg_catalog_free(cat, NULL);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

static void test_coalesce_and_same_pool(void **state) {
  uv_loop_t loop;
  zg_catalog_t cat;
  fake_entry_t f;
  seen_t s;
  (void)state;
  memset(&s, 0, sizeof(s));
  memset(&f, 0, sizeof(f));
  assert_int_equal(uv_loop_init(&loop), 0);
  zg_catalog_init(&cat, &loop, "Fake", 20, on_pool, on_children, &s,
                  fake_instances);
  zg_catalog_start(&cat);
  assert_int_equal(zg_catalog_entry_init(&cat, &f.e, "/svc", NULL, 0), 0);
  assert_int_equal(zg_catalog_add(&cat, &f.e, &f), 0);
  fake_set(&f, 1);
  zg_catalog_changed(&f.e);
  /* The first change after a quiet window: at once. */
  assert_int_equal(s.pools, 1);
  assert_int_equal(s.last->n, 1);
  fake_set(&f, 2);
  zg_catalog_changed(&f.e);
  fake_set(&f, 3);
  zg_catalog_changed(&f.e);
  assert_int_equal(s.pools, 1); /* the window holds the rest of the burst */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.pools, 2);
  assert_ptr_equal(s.last_ctx, &f);
  assert_int_equal(s.last->n, 3);
  assert_int_equal(s.last->version, 2);
  fake_set(&f, 2);
  /* The same instances again: no new pool. */
  zg_catalog_changed(&f.e);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.pools, 3);
  assert_int_equal(s.last->n, 2);
  zg_catalog_changed(&f.e);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.pools, 3);
  /* Reads out or a resynchronisation hold a publication back. */
  fake_set(&f, 3);
  f.e.outstanding = 1;
  zg_catalog_changed(&f.e);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.pools, 3);
  f.e.outstanding = 0;
  f.e.resync = 1;
  zg_catalog_changed(&f.e);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.pools, 3);
  f.e.resync = 0;
  zg_catalog_changed(&f.e);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.pools, 4);
  assert_int_equal(s.last->n, 3);
  assert_int_equal(s.last->version, 4);
  /* Removed: nothing comes with its ctx any more. */
  zg_catalog_remove(&cat, &f.e);
  assert_int_equal(cat.n_entries, 0);
  assert_null(f.e.published);
  fake_free(&f);
  catalog_end(&loop, &cat);
  zg_pool_unref(s.last);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_max_stale(void **state) {
  uv_loop_t loop;
  zg_catalog_t cat;
  fake_entry_t f;
  seen_t s;
  (void)state;
  memset(&s, 0, sizeof(s));
  memset(&f, 0, sizeof(f));
  assert_int_equal(uv_loop_init(&loop), 0);
  zg_catalog_init(&cat, &loop, "Fake", 0, on_pool, on_children, &s,
                  fake_instances);
  assert_int_equal(zg_catalog_set_state(&cat, NULL, 50), 0);
  zg_catalog_start(&cat);
  assert_int_equal(zg_catalog_entry_init(&cat, &f.e, "/svc", NULL, 0), 0);
  assert_int_equal(zg_catalog_add(&cat, &f.e, &f), 0);
  cat.state = ZG_SOURCE_CONNECTED;
  fake_set(&f, 2);
  zg_catalog_changed(&f.e); /* no window: at once */
  assert_int_equal(s.pools, 1);
  /* Lost the connection 40 ms ago: within max_stale, nothing changes. */
  cat.state = ZG_SOURCE_DISCONNECTED;
  cat.disconnected_ms = 1000;
  zg_catalog_check_stale(&cat, 1040);
  assert_int_equal(s.pools, 1);
  /* Past it: an empty pool, once; the last known one is kept. */
  zg_catalog_check_stale(&cat, 1050);
  assert_int_equal(s.pools, 2);
  assert_int_equal(s.last->n, 0);
  assert_true(f.e.stale);
  assert_int_equal(f.e.published->n, 2);
  zg_catalog_check_stale(&cat, 2000);
  assert_int_equal(s.pools, 2);
  /* Connected again, the same instances: the kept pool comes back. */
  cat.state = ZG_SOURCE_CONNECTED;
  zg_catalog_changed(&f.e);
  assert_int_equal(s.pools, 3);
  assert_int_equal(s.last->n, 2);
  assert_false(f.e.stale);
  zg_catalog_remove(&cat, &f.e);
  fake_free(&f);
  catalog_end(&loop, &cat);
  zg_pool_unref(s.last);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_state_file_round_trip(void **state) {
  char dir[] = "/tmp/zkgate-catalog-XXXXXX", path[64];
  uv_loop_t loop;
  zg_catalog_t cat;
  fake_entry_t root, web, svc, root2, svc2, web2;
  seen_t s;
  (void)state;
  memset(&s, 0, sizeof(s));
  memset(&root, 0, sizeof(root));
  memset(&web, 0, sizeof(web));
  memset(&svc, 0, sizeof(svc));
  memset(&root2, 0, sizeof(root2));
  memset(&svc2, 0, sizeof(svc2));
  memset(&web2, 0, sizeof(web2));
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/state.json", dir);
  assert_int_equal(uv_loop_init(&loop), 0);

  /* A first run: a root with one discovered service, and a service. */
  zg_catalog_init(&cat, &loop, "Fake", 0, on_pool, on_children, &s,
                  fake_instances);
  assert_int_equal(zg_catalog_set_state(&cat, path, 0), 0);
  zg_catalog_start(&cat);
  assert_int_equal(zg_catalog_entry_init(&cat, &root.e, "/disc", NULL, 1), 0);
  assert_int_equal(zg_catalog_add(&cat, &root.e, &root), 0);
  assert_int_equal(zg_catalog_entry_init(&cat, &web.e, "/disc/web", NULL, 0),
                   0);
  assert_int_equal(zg_catalog_add(&cat, &web.e, &web), 0);
  assert_int_equal(zg_catalog_entry_init(&cat, &svc.e, "/svc", NULL, 0), 0);
  assert_int_equal(zg_catalog_add(&cat, &svc.e, &svc), 0);
  cat.state = ZG_SOURCE_CONNECTED;
  fake_set(&web, 1);
  zg_catalog_changed(&web.e);
  fake_set(&svc, 3);
  zg_catalog_changed(&svc.e);
  assert_int_equal(s.pools, 2);
  zg_catalog_close(&cat); /* the last write, on the thread pool */
  fake_free(&root);
  fake_free(&web);
  fake_free(&svc);
  cat.n_entries = 0;
  zg_catalog_free(&cat, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(access(path, R_OK), 0);

  /* The next start, the registry down: the root's children come first,
   * then the pools, the discovered service's included. */
  zg_pool_unref(s.last);
  memset(&s, 0, sizeof(s));
  s.cat = &cat;
  s.discovered = &web2;
  zg_catalog_init(&cat, &loop, "Fake", 0, on_pool, on_children, &s,
                  fake_instances);
  assert_int_equal(zg_catalog_set_state(&cat, path, 0), 0);
  assert_int_equal(zg_catalog_entry_init(&cat, &root2.e, "/disc", NULL, 1), 0);
  assert_int_equal(zg_catalog_add(&cat, &root2.e, &root2), 0);
  assert_int_equal(zg_catalog_entry_init(&cat, &svc2.e, "/svc", NULL, 0), 0);
  assert_int_equal(zg_catalog_add(&cat, &svc2.e, &svc2), 0);
  zg_catalog_start(&cat);
  assert_int_equal(s.children, 1);
  assert_int_equal(s.n_names, 1);
  assert_string_equal(s.names[0], "web");
  assert_int_equal(s.pools, 2);
  assert_non_null(svc2.e.published);
  assert_int_equal(svc2.e.published->n, 3);
  assert_true(svc2.e.from_file);
  assert_non_null(web2.e.published);
  assert_int_equal(web2.e.published->n, 1);
  catalog_end(&loop, &cat);
  fake_free(&root2);
  fake_free(&svc2);
  fake_free(&web2);
  zg_pool_unref(s.last);
  assert_int_equal(uv_loop_close(&loop), 0);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_coalesce_and_same_pool),
      cmocka_unit_test(test_max_stale),
      cmocka_unit_test(test_state_file_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
