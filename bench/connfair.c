/* connfair: a closed-loop HTTP/1.1 keep-alive load (like wrk -t1 -cN) that
 * keeps the account per connection, to tell whether a proxy serves its
 * clients evenly.
 *
 *   connfair PORT CONNS SECONDS
 *
 * Each connection sends "GET / HTTP/1.1", waits for the whole response
 * (Content-Length bodies only), and sends the next at once. Prints the
 * requests of the run, p50/p99 latency over all of them, and how unevenly
 * they were spread over the connections: the coefficient of variation of
 * the per-connection counts and the ratio of the least served connection
 * to the median one. A stall of the whole machine slows every connection
 * alike and moves these figures little; a server that keeps serving some
 * connections before others spreads them. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 1024
#define LAT_MAX (1 << 22)

static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

typedef struct {
  int fd;
  uint64_t sent_ns, count;
  char buf[4096];
  size_t len;
} conn_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Bytes of one complete response at the start of buf, or 0. */
static size_t response_len(const char *buf, size_t len) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  const char *cl;
  size_t head;
  if (!end)
    return 0;
  head = (size_t)(end - buf) + 4;
  cl = memmem(buf, head, "Content-Length:", 15);
  if (!cl)
    cl = memmem(buf, head, "content-length:", 15);
  if (!cl)
    return head;
  return head + strtoul(cl + 15, NULL, 10) <= len
             ? head + strtoul(cl + 15, NULL, 10)
             : 0;
}

static int send_req(conn_t *c) {
  c->sent_ns = now_ns();
  return write(c->fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1) ? 0
                                                                          : -1;
}

int main(int argc, char **argv) {
  static conn_t conns[MAXC];
  static uint64_t lat[LAT_MAX], counts[MAXC];
  struct sockaddr_in sa;
  struct epoll_event evs[MAXC];
  size_t nlat = 0;
  int ep, n;
  uint64_t end_ns;
  double mean = 0, var = 0;

  if (argc != 4 || (n = atoi(argv[2])) <= 0 || n > MAXC) {
    fprintf(stderr, "usage: connfair PORT CONNS(1..%d) SECONDS\n", MAXC);
    return 2;
  }
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(argv[1]));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ep = epoll_create1(0);
  for (int i = 0; i < n; i++) {
    int one = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    conns[i].fd = socket(AF_INET, SOCK_STREAM, 0);
    if (conns[i].fd < 0 ||
        connect(conns[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
      perror("connect");
      return 1;
    }
    setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
  }
  end_ns = now_ns() + (uint64_t)(atof(argv[3]) * 1e9);
  for (int i = 0; i < n; i++)
    if (send_req(&conns[i]) != 0)
      return 1;
  while (now_ns() < end_ns) {
    int k = epoll_wait(ep, evs, MAXC, 100);
    for (int e = 0; e < k; e++) {
      conn_t *c = &conns[evs[e].data.u32];
      ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
      size_t rl;
      if (r <= 0) {
        fprintf(stderr, "connection %u closed\n", evs[e].data.u32);
        return 1;
      }
      c->len += (size_t)r;
      while ((rl = response_len(c->buf, c->len)) > 0) {
        if (nlat < LAT_MAX)
          lat[nlat++] = now_ns() - c->sent_ns;
        c->count++;
        memmove(c->buf, c->buf + rl, c->len - rl);
        c->len -= rl;
        if (send_req(c) != 0)
          return 1;
      }
    }
  }
  qsort(lat, nlat, sizeof(lat[0]), cmp_u64);
  for (int i = 0; i < n; i++) {
    counts[i] = conns[i].count;
    mean += (double)counts[i] / n;
  }
  for (int i = 0; i < n; i++)
    var += ((double)counts[i] - mean) * ((double)counts[i] - mean) / n;
  qsort(counts, (size_t)n, sizeof(counts[0]), cmp_u64);
  printf("requests %zu p50_us %.0f p99_us %.0f p999_us %.0f conn_cv %.3f "
         "min_over_median %.3f max_over_median %.3f\n",
         nlat, nlat ? lat[nlat / 2] / 1e3 : 0.0,
         nlat ? lat[nlat * 99 / 100] / 1e3 : 0.0,
         nlat ? lat[nlat * 999 / 1000] / 1e3 : 0.0,
         mean > 0 ? sqrt(var) / mean : 0.0,
         (double)counts[0] / (double)counts[n / 2],
         (double)counts[n - 1] / (double)counts[n / 2]);
  return 0;
}
