/* etshim: an experiment, not part of zkgate. Loaded with LD_PRELOAD, it
 * registers every connected socket edge-triggered (EPOLLET) with epoll, as
 * HAProxy does, where libuv registers them level-triggered; listening
 * sockets and everything else are left alone. It lets one run the same
 * zkgate binary with either order of ready sockets (README, "Tail
 * latency"):
 *
 *   cc -O2 -shared -fPIC -o /tmp/etshim.so bench/etshim.c -ldl
 *   LD_PRELOAD=/tmp/etshim.so taskset -c 0 build-release/zkgate -c FILE
 *
 * libuv 1.44 reads a socket until a read comes back short, at most 32
 * times per event: with edge-triggered events a stream that fills 32
 * reads in one go would wait for its next bytes. Fine for the keep-alive
 * benchmark's small messages; not for anything else. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
  static int (*real)(int, int, int, struct epoll_event *);
  if (!real)
    *(void **)&real = dlsym(RTLD_NEXT, "epoll_ctl");
  if ((op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && ev) {
    struct stat st;
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
        !listening)
      ev->events |= EPOLLET;
  }
  return real(epfd, op, fd, ev);
}
