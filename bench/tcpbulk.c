/* tcpbulk: the two ends of the L4 bulk-transfer benchmark.
 *
 *   tcpbulk source PORT            listen on 127.0.0.1:PORT; every connection
 *                                  gets an endless stream of bytes (a child
 *                                  process each) until the peer goes away
 *   tcpbulk sink PORT SECONDS      connect to 127.0.0.1:PORT, read for SECONDS
 *                                  from the first byte, print "MB/s BYTES"
 *
 * Plain blocking sockets and 256 KiB buffers: one send or recv moves many
 * pages, so the ends cost little next to the proxy in between. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { BUF_SIZE = 256 * 1024 };
static char buf[BUF_SIZE];

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int source(int port) {
  struct sockaddr_in a = loopback(port);
  int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
      bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 64)) {
    perror("tcpbulk source");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
  memset(buf, 'x', sizeof(buf));
  for (;;) {
    int c = accept(l, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR)
        continue;
      perror("tcpbulk accept");
      return 1;
    }
    if (fork() == 0) {
      close(l);
      while (send(c, buf, sizeof(buf), 0) > 0)
        ;
      _exit(0);
    }
    close(c);
  }
}

static int sink(int port, double seconds) {
  struct sockaddr_in a = loopback(port);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  double start = 0, t = 0;
  unsigned long long total = 0;
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a))) {
    perror("tcpbulk sink");
    return 1;
  }
  for (;;) {
    ssize_t n = recv(s, buf, sizeof(buf), 0);
    if (n <= 0) {
      fprintf(stderr, "tcpbulk sink: stream ended early (%s)\n",
              n == 0 ? "EOF" : strerror(errno));
      return 1;
    }
    t = now_s();
    if (start == 0) {
      start = t; /* count from the first byte: connect setup is not bulk */
      continue;
    }
    total += (unsigned long long)n;
    if (t - start >= seconds)
      break;
  }
  close(s);
  printf("%.1f %llu\n", (double)total / (t - start) / 1e6, total);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "source"))
    return source(atoi(argv[2]));
  if (argc == 4 && !strcmp(argv[1], "sink"))
    return sink(atoi(argv[2]), atof(argv[3]));
  fprintf(stderr, "usage: tcpbulk source PORT | tcpbulk sink PORT SECONDS\n");
  return 2;
}
