/* Unit tests for the connection caps (src/core/connlimit.h): the
 * open and in-head caps, refusal counters, tickets released once, new
 * caps on reload, the auto defaults, and workers admitting at once never
 * overshooting a cap. */
#include <string.h>
#include <uv.h>

#include "core/connlimit.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_open_cap(void **state) {
  zg_connlimit_t l, r;
  zg_conn_ticket_t t[4], x;

  (void)state;
  zg_connlimit_init(&l);
  zg_connlimit_set(&l, 3, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(zg_connlimit_admit(&l, false, &t[i]), ZG_CONN_ADMITTED);
  assert_int_equal(zg_connlimit_admit(&l, false, &x), ZG_CONN_REFUSED_OPEN);
  assert_null(x.l); /* a refused connection holds nothing */
  assert_int_equal(zg_connlimit_admit(&l, true, &x), ZG_CONN_REFUSED_OPEN);
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.open, 3);
  assert_int_equal(r.head, 0);
  assert_int_equal(r.refused_open, 2);
  assert_int_equal(r.refused_head, 0);
  /* One closes: one more is admitted, and released twice counts once. */
  zg_conn_ticket_release(&t[0]);
  zg_conn_ticket_release(&t[0]);
  assert_int_equal(zg_connlimit_admit(&l, false, &t[3]), ZG_CONN_ADMITTED);
  assert_int_equal(zg_connlimit_admit(&l, false, &x), ZG_CONN_REFUSED_OPEN);
  for (int i = 1; i < 4; i++)
    zg_conn_ticket_release(&t[i]);
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.open, 0);
  assert_int_equal(r.refused_open, 3);
}

static void test_head_cap(void **state) {
  zg_connlimit_t l, r;
  zg_conn_ticket_t a, b, c, x;

  (void)state;
  zg_connlimit_init(&l);
  zg_connlimit_set(&l, 10, 2);
  assert_int_equal(zg_connlimit_admit(&l, true, &a), ZG_CONN_ADMITTED);
  assert_int_equal(zg_connlimit_admit(&l, true, &b), ZG_CONN_ADMITTED);
  assert_int_equal(zg_connlimit_admit(&l, true, &x), ZG_CONN_REFUSED_HEAD);
  assert_null(x.l);
  /* Not in its head (a plain TCP service): only the open cap applies. */
  assert_int_equal(zg_connlimit_admit(&l, false, &c), ZG_CONN_ADMITTED);
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.open, 3); /* the refused one took nothing back */
  assert_int_equal(r.head, 2);
  assert_int_equal(r.refused_head, 1);
  assert_int_equal(r.refused_open, 0);
  /* A head done makes room for another head, the connection stays open. */
  zg_conn_ticket_head_done(&a);
  zg_conn_ticket_head_done(&a);
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.open, 3);
  assert_int_equal(r.head, 1);
  assert_int_equal(zg_connlimit_admit(&l, true, &x), ZG_CONN_ADMITTED);
  /* Closing in its head releases both counts. */
  zg_conn_ticket_release(&b);
  zg_conn_ticket_release(&x);
  zg_conn_ticket_release(&a);
  zg_conn_ticket_release(&c);
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.open, 0);
  assert_int_equal(r.head, 0);
  /* A zeroed ticket holds nothing. */
  memset(&x, 0, sizeof(x));
  zg_conn_ticket_head_done(&x);
  zg_conn_ticket_release(&x);
}

static void test_set_and_unset(void **state) {
  zg_connlimit_t l;
  zg_conn_ticket_t t[5], x;

  (void)state;
  zg_connlimit_init(&l);
  /* Before the caps are set, nothing is capped. */
  for (int i = 0; i < 5; i++)
    assert_int_equal(zg_connlimit_admit(&l, true, &t[i]), ZG_CONN_ADMITTED);
  /* A lower cap leaves the open ones, refuses new ones until below it. */
  zg_connlimit_set(&l, 3, 3);
  assert_int_equal(zg_connlimit_admit(&l, false, &x), ZG_CONN_REFUSED_OPEN);
  zg_conn_ticket_release(&t[0]);
  zg_conn_ticket_release(&t[1]);
  assert_int_equal(zg_connlimit_admit(&l, false, &x), ZG_CONN_REFUSED_OPEN);
  zg_conn_ticket_release(&t[2]);
  assert_int_equal(zg_connlimit_admit(&l, false, &x), ZG_CONN_ADMITTED);
  zg_conn_ticket_release(&x);
  zg_conn_ticket_release(&t[3]);
  zg_conn_ticket_release(&t[4]);
}

static void test_auto(void **state) {
  (void)state;
  /* 2.5 descriptors a connection: two sockets and, for a quarter of the
   * connections, a busy pipe: (nofile - reserve) / 2.5. */
  assert_int_equal(zg_connlimit_auto_open(1024, 124, ZG_PIPES_AUTO), 360);
  assert_int_equal(zg_connlimit_auto_pipes(360), 90);
  assert_int_equal(zg_connlimit_auto_open(1048576, 200, ZG_PIPES_AUTO), 419350);
  /* What it gives fits: 2 * open + 2 * pipes + reserve <= nofile, for
   * every remainder of (nofile - reserve) / 5. */
  for (uint64_t nofile = 1000; nofile < 1020; nofile++) {
    uint64_t open = zg_connlimit_auto_open(nofile, 141, ZG_PIPES_AUTO);

    assert_true(2 * open + 2 * zg_connlimit_auto_pipes(open) + 141 <= nofile);
    assert_true(open >= (nofile - 141) * 2 / 5);
  }
  /* max_pipes set: the rest, two descriptors a connection. */
  assert_int_equal(zg_connlimit_auto_open(1024, 124, 0), 450);
  assert_int_equal(zg_connlimit_auto_open(1024, 124, 100), 350);
  assert_false(zg_connlimit_auto_floored(1024, 124, 100));
  /* A max_pipes that eats the limit floors it, as a reserve does. */
  assert_int_equal(zg_connlimit_auto_open(1024, 124, 400), 256);
  assert_true(zg_connlimit_auto_floored(1024, 124, 400));
  assert_int_equal(zg_connlimit_auto_open(1024, 124, 99999999), 256);
  /* A reserve that eats the limit leaves a quarter of it, not one client
   * at a time (1024 descriptors, 4 workers, 300 services). */
  assert_int_equal(zg_connlimit_auto_open(100, 200, ZG_PIPES_AUTO), 25);
  assert_int_equal(zg_connlimit_auto_open(1024, 1332, ZG_PIPES_AUTO), 256);
  assert_int_equal(zg_connlimit_auto_open(1024, 600, ZG_PIPES_AUTO), 256);
  assert_true(zg_connlimit_auto_floored(1024, 1332, ZG_PIPES_AUTO));
  assert_true(zg_connlimit_auto_floored(1024, 600, ZG_PIPES_AUTO));
  assert_false(zg_connlimit_auto_floored(1024, 124, ZG_PIPES_AUTO));
  /* Against the floor of 256: 1024 - 380 leaves 257 connections, not
   * floored; 1024 - 400 leaves 249, floored. */
  assert_false(zg_connlimit_auto_floored(1024, 380, ZG_PIPES_AUTO));
  assert_true(zg_connlimit_auto_floored(1024, 400, ZG_PIPES_AUTO));
  assert_int_equal(zg_connlimit_auto_open(3, 0, ZG_PIPES_AUTO), 1);
  assert_int_equal(zg_connlimit_auto_open(0, 0, ZG_PIPES_AUTO), 1);
  assert_int_equal(zg_connlimit_auto_head(450), 225);
  assert_int_equal(zg_connlimit_auto_head(524188),
                   ZG_HEAD_CONNECTIONS_AUTO_MAX);
  assert_int_equal(zg_connlimit_auto_head(1), 1);
  /* As HAProxy's maxpipes: a quarter; none under four connections. */
  assert_int_equal(zg_connlimit_auto_pipes(8), 2);
  assert_int_equal(zg_connlimit_auto_pipes(3), 0);
}

/* The cap on busy pipes: uncapped until set, 0 is none, a lower cap
 * keeps the busy ones and refuses until below it. */
static void test_pipes(void **state) {
  zg_connlimit_t l, r;

  (void)state;
  zg_connlimit_init(&l);
  assert_false(zg_connlimit_no_pipes(&l));
  for (int i = 0; i < 100; i++)
    assert_true(zg_connlimit_pipe_take(&l));
  for (int i = 0; i < 100; i++)
    zg_connlimit_pipe_give(&l);
  zg_connlimit_set_pipes(&l, 2);
  assert_true(zg_connlimit_pipe_take(&l));
  assert_true(zg_connlimit_pipe_take(&l));
  assert_false(zg_connlimit_pipe_take(&l));
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.pipes, 2);
  assert_int_equal(r.max_pipes, 2);
  zg_connlimit_pipe_give(&l);
  assert_true(zg_connlimit_pipe_take(&l));
  zg_connlimit_set_pipes(&l, 1); /* a reload lowers it */
  assert_false(zg_connlimit_pipe_take(&l));
  zg_connlimit_pipe_give(&l);
  assert_false(zg_connlimit_pipe_take(&l)); /* 1 busy: at the new cap */
  zg_connlimit_pipe_give(&l);
  assert_true(zg_connlimit_pipe_take(&l));
  zg_connlimit_pipe_give(&l);
  zg_connlimit_set_pipes(&l, 0);
  assert_true(zg_connlimit_no_pipes(&l));
  assert_false(zg_connlimit_pipe_take(&l));
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.pipes, 0);
}

/* Workers admit and release at once: the cap is never passed. */
#define THREADS 4
#define ROUNDS 20000
typedef struct {
  zg_connlimit_t *l;
  uint64_t *held, *held_head; /* tickets held right now, by all */
  uint64_t admitted, over;
} worker_t;

static void worker(void *arg) {
  worker_t *w = arg;

  for (int i = 0; i < ROUNDS; i++) {
    zg_conn_ticket_t t;
    bool head = i & 1;

    if (zg_connlimit_admit(w->l, head, &t) != ZG_CONN_ADMITTED)
      continue;
    w->admitted++;
    if (__atomic_add_fetch(w->held, 1, __ATOMIC_SEQ_CST) > 5)
      w->over++;
    if (head && __atomic_add_fetch(w->held_head, 1, __ATOMIC_SEQ_CST) > 2)
      w->over++;
    if (head)
      __atomic_sub_fetch(w->held_head, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(w->held, 1, __ATOMIC_SEQ_CST);
    zg_conn_ticket_release(&t);
  }
}

static void test_concurrent(void **state) {
  zg_connlimit_t l, r;
  uv_thread_t th[THREADS];
  worker_t w[THREADS];
  uint64_t admitted = 0, held = 0, held_head = 0;

  (void)state;
  zg_connlimit_init(&l);
  zg_connlimit_set(&l, 5, 2);
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker_t){&l, &held, &held_head, 0, 0};
    assert_int_equal(uv_thread_create(&th[i], worker, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    uv_thread_join(&th[i]);
    admitted += w[i].admitted;
    assert_int_equal(w[i].over, 0); /* never more held than a cap */
  }
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.open, 0);
  assert_int_equal(r.head, 0);
  assert_int_equal(admitted + r.refused_open + r.refused_head,
                   (uint64_t)THREADS * ROUNDS);
  assert_true(admitted > 0);
}

/* Workers take and give pipes at once: the count itself, which a metric
 * samples, is never above the cap, not even for an instant. */
typedef struct {
  zg_connlimit_t *l;
  uint64_t taken, over;
} pipe_worker_t;

static void pipe_worker(void *arg) {
  pipe_worker_t *w = arg;

  for (int i = 0; i < ROUNDS; i++) {
    if (!zg_connlimit_pipe_take(w->l))
      continue;
    w->taken++;
    if (__atomic_load_n(&w->l->pipes, __ATOMIC_SEQ_CST) > 3)
      w->over++;
    zg_connlimit_pipe_give(w->l);
  }
}

static void test_pipes_concurrent(void **state) {
  zg_connlimit_t l, r;
  uv_thread_t th[THREADS];
  pipe_worker_t w[THREADS];
  uint64_t taken = 0;

  (void)state;
  zg_connlimit_init(&l);
  zg_connlimit_set_pipes(&l, 3);
  for (int i = 0; i < THREADS; i++) {
    w[i] = (pipe_worker_t){&l, 0, 0};
    assert_int_equal(uv_thread_create(&th[i], pipe_worker, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    uv_thread_join(&th[i]);
    taken += w[i].taken;
    assert_int_equal(w[i].over, 0);
  }
  zg_connlimit_read(&l, &r);
  assert_int_equal(r.pipes, 0);
  assert_true(taken > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_cap),         cmocka_unit_test(test_head_cap),
      cmocka_unit_test(test_set_and_unset),    cmocka_unit_test(test_auto),
      cmocka_unit_test(test_concurrent),       cmocka_unit_test(test_pipes),
      cmocka_unit_test(test_pipes_concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
