/* Unit tests for net/resolve.h: lookups on threads of our own, at most
 * `max` at once (the rest wait in order), answers delivered on the loop,
 * and a cancelled lookup (waiting or running) never calls back and holds
 * neither the loop nor anything else. The lookup function is a stand-in
 * that blocks until the test lets it go, so a name server that never
 * answers is played without one. */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "net/resolve.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fake_cond = PTHREAD_COND_INITIALIZER;
static int fake_inside; /* lookups in the stand-in right now */
static int fake_most;   /* the most there were at once */
static int fake_calls;
static int fake_open;       /* 1: the stand-in answers */
static int fake_started[8]; /* the ports asked, in the order they came in */

/* Blocks until fake_open, then answers host "bad" with EAI_NONAME and any
 * other with 127.0.0.1 (numeric: nobody is asked). */
static int fake_lookup(const char *host, const char *port,
                       const struct addrinfo *hints, struct addrinfo **res) {
  struct addrinfo h = *hints;
  pthread_mutex_lock(&fake_lock);
  if (fake_calls < 8)
    fake_started[fake_calls] = atoi(port);
  fake_calls++;
  if (++fake_inside > fake_most)
    fake_most = fake_inside;
  while (!fake_open)
    pthread_cond_wait(&fake_cond, &fake_lock);
  fake_inside--;
  pthread_mutex_unlock(&fake_lock);
  if (!strcmp(host, "bad"))
    return EAI_NONAME;
  h.ai_flags |= AI_NUMERICHOST;
  return getaddrinfo("127.0.0.1", port, &h, res);
}

static void fake_reset(void) {
  pthread_mutex_lock(&fake_lock);
  fake_inside = fake_most = fake_calls = fake_open = 0;
  pthread_mutex_unlock(&fake_lock);
}

static void fake_release(void) {
  pthread_mutex_lock(&fake_lock);
  fake_open = 1;
  pthread_cond_broadcast(&fake_cond);
  pthread_mutex_unlock(&fake_lock);
}

static int fake_get(int *v) {
  int x;
  pthread_mutex_lock(&fake_lock);
  x = *v;
  pthread_mutex_unlock(&fake_lock);
  return x;
}

static unsigned threads_running(zg_resolver_t *rv) {
  unsigned n;
  pthread_mutex_lock(&rv->lock);
  n = rv->running;
  pthread_mutex_unlock(&rv->lock);
  return n;
}

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000;
}

static void nap(void) {
  struct timespec ts = {0, 2000000};
  nanosleep(&ts, NULL);
}

/* Polls `*v` until it equals `want`, for 5 s at most. */
static int wait_int(int *v, int want) {
  uint64_t end = now_ms() + 5000;
  while (fake_get(v) != want && now_ms() < end)
    nap();
  return fake_get(v) == want;
}

/* Polls until the resolver has no thread left, for 5 s at most. */
static int wait_no_thread(zg_resolver_t *rv) {
  uint64_t end = now_ms() + 5000;
  while (threads_running(rv) != 0 && now_ms() < end)
    nap();
  return threads_running(rv) == 0;
}

typedef struct {
  int called;
  int status;
  int port;
  int order;
} answer_t;

static int answers_seen;

static void on_answer(void *data, int status, struct addrinfo *res) {
  answer_t *a = data;
  a->called++;
  a->status = status;
  a->order = answers_seen++;
  if (res) {
    a->port = ntohs(((struct sockaddr_in *)res->ai_addr)->sin_port);
    freeaddrinfo(res);
  }
}

/* Runs the loop until `n` answers have come, for 5 s at most. */
static void run_until_answers(uv_loop_t *loop, int n) {
  uint64_t end = now_ms() + 5000;
  while (answers_seen < n && now_ms() < end) {
    uv_run(loop, UV_RUN_NOWAIT);
    nap();
  }
}

static void test_at_most_max_at_once_the_rest_in_order(void **state) {
  static zg_resolver_t rv = ZG_RESOLVER_INIT(2);
  uv_loop_t loop;
  answer_t a[5];
  zg_resolve_t *q[5];
  char port[8];
  (void)state;
  fake_reset();
  answers_seen = 0;
  rv.fn = fake_lookup;
  memset(a, 0, sizeof(a));
  assert_int_equal(uv_loop_init(&loop), 0);
  for (int i = 0; i < 5; i++) {
    snprintf(port, sizeof(port), "%d", 1000 + i);
    assert_int_equal(zg_resolve_start(&rv, &loop, i == 3 ? "bad" : "name", port,
                                      0, on_answer, &a[i], &q[i]),
                     0);
  }
  assert_true(wait_int(&fake_inside, 2));
  /* The other three wait: no third thread, however long. */
  for (int i = 0; i < 50; i++)
    nap();
  assert_int_equal(fake_get(&fake_inside), 2);
  assert_int_equal(threads_running(&rv), 2);
  assert_int_equal(fake_get(&fake_calls), 2);
  fake_release();
  run_until_answers(&loop, 5);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(a[i].called, 1);
    if (i == 3) {
      assert_int_equal(a[i].status, UV_EAI_NONAME);
    } else {
      assert_int_equal(a[i].status, 0);
      assert_int_equal(a[i].port, 1000 + i);
    }
  }
  /* Started in order: the first two asked were the first two queued.
   * (Not the order of the answers: a thread that finished the first may
   * answer a waiting one before the other thread delivers the second.) */
  assert_int_equal(fake_get(&fake_calls), 5);
  assert_true((fake_started[0] == 1000 && fake_started[1] == 1001) ||
              (fake_started[0] == 1001 && fake_started[1] == 1000));
  assert_int_equal(fake_most, 2);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  /* Nothing waits: the threads end. */
  assert_true(wait_no_thread(&rv));
}

/* The point of it all: lookups that hang, cancelled, hold neither the loop
 * nor its close, and never call back, even once they answer. */
static void test_cancelled_lookups_let_the_loop_go(void **state) {
  static zg_resolver_t rv = ZG_RESOLVER_INIT(1);
  uv_loop_t loop;
  answer_t running, waiting, kept;
  zg_resolve_t *qr, *qw, *qk;
  (void)state;
  fake_reset();
  answers_seen = 0;
  rv.fn = fake_lookup;
  memset(&running, 0, sizeof(running));
  memset(&waiting, 0, sizeof(waiting));
  memset(&kept, 0, sizeof(kept));
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(
      zg_resolve_start(&rv, &loop, "name", "1", 0, on_answer, &running, &qr),
      0);
  assert_int_equal(
      zg_resolve_start(&rv, &loop, "name", "2", 0, on_answer, &waiting, &qw),
      0);
  assert_int_equal(
      zg_resolve_start(&rv, &loop, "name", "3", 0, on_answer, &kept, &qk), 0);
  assert_true(wait_int(&fake_inside, 1));
  /* The waiting one leaves the queue at once. */
  zg_resolve_cancel(qw);
  pthread_mutex_lock(&rv.lock);
  assert_non_null(rv.waiting.first); /* one left, and it is the last */
  assert_null(rv.waiting.first->next);
  assert_ptr_equal(rv.waiting.end, &rv.waiting.first->next);
  pthread_mutex_unlock(&rv.lock);
  /* The running one: the loop has nothing left once its handle closed,
   * while the lookup still hangs. */
  zg_resolve_cancel(qr);
  pthread_mutex_lock(&rv.lock);
  assert_false(zg_queue_empty(&rv.waiting)); /* not the running one's */
  pthread_mutex_unlock(&rv.lock);
  zg_resolve_cancel(qk); /* the one left was qk */
  pthread_mutex_lock(&rv.lock);
  assert_true(zg_queue_empty(&rv.waiting));
  pthread_mutex_unlock(&rv.lock);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fake_get(&fake_inside), 1);
  /* It answers now, into nothing; the queue is empty, the thread ends. */
  fake_release();
  assert_true(wait_no_thread(&rv));
  assert_int_equal(fake_get(&fake_calls), 1);
  assert_int_equal(running.called + waiting.called + kept.called, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_at_most_max_at_once_the_rest_in_order),
      cmocka_unit_test(test_cancelled_lookups_let_the_loop_go),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
