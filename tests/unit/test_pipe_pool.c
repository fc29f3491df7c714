/* Unit tests for the splice pipe pool (src/proxy/pipe_pool.h): real pipes,
 * no loop. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* F_GETPIPE_SZ */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "proxy/pipe_pool.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static bool fd_open(int fd) {
  return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

/* A new pipe is non-blocking, close-on-exec, of the size asked; an empty
 * one given back is handed out again (no new pipe), and counted. */
static void test_get_put_reuse(void **state) {
  zg_pipe_pool_t p;
  zg_pipe_t a, b;
  (void)state;
  zg_pipe_pool_init(&p, 256 * 1024, 4, NULL);
  assert_int_equal(zg_pipe_get(&p, &a), 0);
  assert_true(a.rfd >= 0 && a.wfd >= 0);
  assert_true(fcntl(a.rfd, F_GETFL) & O_NONBLOCK);
  assert_true(fcntl(a.wfd, F_GETFL) & O_NONBLOCK);
  assert_true(fcntl(a.rfd, F_GETFD) & FD_CLOEXEC);
  /* the kernel may refuse the resize (pipe-user-pages-soft): cap says */
  assert_int_equal(a.cap, (size_t)fcntl(a.wfd, F_GETPIPE_SZ));
  assert_true(a.cap >= 4096);
  assert_true(p.n_busy == 1 && p.created == 1);
  zg_pipe_put(&p, &a, 1);
  assert_int_equal(a.rfd, -1); /* the holder's copy is cleared */
  assert_true(p.n_busy == 0 && p.n_free == 1);
  for (int i = 0; i < 100; i++) {
    assert_int_equal(zg_pipe_get(&p, &b), 0);
    zg_pipe_put(&p, &b, 1);
  }
  assert_true(p.created == 1 && p.failures == 0);
  zg_pipe_pool_clear(&p);
  assert_int_equal(p.n_free, 0);
}

/* A pipe that may hold bytes is closed, not kept: the next holder must
 * never read someone else's bytes. */
static void test_non_empty_is_closed(void **state) {
  zg_pipe_pool_t p;
  zg_pipe_t a, b;
  int rfd, wfd;
  (void)state;
  zg_pipe_pool_init(&p, 0, 4, NULL);
  assert_int_equal(zg_pipe_get(&p, &a), 0);
  assert_int_equal(write(a.wfd, "left", 4), 4);
  rfd = a.rfd;
  wfd = a.wfd;
  zg_pipe_put(&p, &a, 0);
  assert_int_equal(p.n_free, 0);
  assert_false(fd_open(rfd));
  assert_false(fd_open(wfd));
  assert_int_equal(zg_pipe_get(&p, &b), 0);
  {
    char c;
    assert_int_equal(read(b.rfd, &c, 1), -1); /* empty, non-blocking */
    assert_int_equal(errno, EAGAIN);
  }
  zg_pipe_put(&p, &b, 1);
  zg_pipe_pool_clear(&p);
}

/* At most max_free are kept; clearing closes them; ZG_PIPE_NONE is fine. */
static void test_bounded_and_cleared(void **state) {
  zg_pipe_pool_t p;
  zg_pipe_t ps[6], none = ZG_PIPE_NONE;
  int fds[6];
  (void)state;
  zg_pipe_pool_init(&p, 0, 2, NULL);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(zg_pipe_get(&p, &ps[i]), 0);
    fds[i] = ps[i].rfd;
  }
  for (int i = 0; i < 6; i++)
    zg_pipe_put(&p, &ps[i], 1);
  assert_int_equal(p.n_free, 2);
  assert_true(p.n_busy == 0 && p.created == 6);
  zg_pipe_put(&p, &none, 1);
  assert_true(p.n_busy == 0 && p.n_free == 2);
  zg_pipe_pool_clear(&p);
  for (int i = 0; i < 6; i++)
    assert_false(fd_open(fds[i]));
}

/* Two loops' pools under one cap on busy pipes: past it a get is refused
 * with EBUSY, counted as capped (not as a failure), and holds nothing;
 * a kept pipe counts once busy again; giving one back makes room for the
 * other loop. */
static void test_capped(void **state) {
  zg_connlimit_t l;
  zg_pipe_pool_t p1, p2;
  zg_pipe_t a, b, c;
  (void)state;
  zg_connlimit_init(&l);
  zg_connlimit_set_pipes(&l, 2);
  zg_pipe_pool_init(&p1, 0, 4, &l);
  zg_pipe_pool_init(&p2, 0, 4, &l);
  assert_int_equal(zg_pipe_get(&p1, &a), 0);
  assert_int_equal(zg_pipe_get(&p2, &b), 0);
  assert_int_equal(zg_pipe_get(&p1, &c), -EBUSY);
  assert_int_equal(c.rfd, -1);
  assert_int_equal(zg_pipe_get(&p2, &c), -EBUSY);
  assert_true(p1.capped == 1 && p2.capped == 1);
  assert_true(p1.failures == 0 && p2.failures == 0);
  assert_true(p1.n_busy == 1 && p2.n_busy == 1 && l.pipes == 2);
  zg_pipe_put(&p1, &a, 1); /* kept by p1, no longer busy */
  assert_true(l.pipes == 1 && p1.n_free == 1);
  assert_int_equal(zg_pipe_get(&p2, &c), 0);      /* the other loop's turn */
  assert_int_equal(zg_pipe_get(&p1, &a), -EBUSY); /* its kept one too */
  assert_int_equal(p1.n_free, 1);
  zg_pipe_put(&p2, &c, 0); /* closed: counts as given back all the same */
  assert_int_equal(l.pipes, 1);
  assert_int_equal(zg_pipe_get(&p1, &a), 0); /* the kept one */
  assert_int_equal(p1.created, 1);
  zg_pipe_put(&p1, &a, 1);
  zg_pipe_put(&p2, &b, 1);
  assert_int_equal(l.pipes, 0);
  /* 0: none at all */
  zg_connlimit_set_pipes(&l, 0);
  assert_int_equal(zg_pipe_get(&p1, &a), -EBUSY);
  zg_pipe_pool_clear(&p1);
  zg_pipe_pool_clear(&p2);
}

/* A pipe that cannot be made (EMFILE) gives its place under the cap
 * back. */
static void test_failure_gives_back(void **state) {
  zg_connlimit_t l;
  zg_pipe_pool_t p;
  zg_pipe_t a;
  struct rlimit rl, low;
  (void)state;
  zg_connlimit_init(&l);
  zg_connlimit_set_pipes(&l, 4);
  zg_pipe_pool_init(&p, 0, 4, &l);
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  low = rl;
  low.rlim_cur = 0;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  assert_int_equal(zg_pipe_get(&p, &a), -EMFILE);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
  assert_true(p.failures == 1 && p.capped == 0 && l.pipes == 0);
  assert_int_equal(zg_pipe_get(&p, &a), 0);
  assert_int_equal(l.pipes, 1);
  zg_pipe_put(&p, &a, 1);
  zg_pipe_pool_clear(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get_put_reuse),
      cmocka_unit_test(test_non_empty_is_closed),
      cmocka_unit_test(test_bounded_and_cleared),
      cmocka_unit_test(test_capped),
      cmocka_unit_test(test_failure_gives_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
