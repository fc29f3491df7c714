/* Listeners: bind and listen. libuv sets SO_REUSEADDR itself on Unix, so a
 * restart does not wait for TIME_WAIT sockets of the previous process. */
#include "zkgate/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

#ifndef SO_REUSEPORT /* Linux has it; _POSIX_C_SOURCE hides it */
#define SO_REUSEPORT 15
#endif
#include <stdio.h>
#include <stdlib.h>

#define ZG_LISTEN_BACKLOG 511 /* as nginx and HAProxy default to */

int zg_listener_reuseport = 0;

int zg_listener_start(uv_loop_t *loop, uv_tcp_t *tcp,
                      const zg_listen_addr_t *addr, uv_connection_cb cb) {
  int rc = uv_tcp_init_ex(loop, tcp, addr->ss.ss_family);
  if (rc != 0) { /* no socket (EMFILE): still a handle the caller closes */
    uv_tcp_init(loop, tcp);
    return rc;
  }
  if (zg_listener_reuseport) {
    /* Each worker listens on a socket of its own; the kernel spreads new
     * connections over them. */
    uv_os_fd_t fd;
    int on = 1;
    if ((rc = uv_fileno((uv_handle_t *)tcp, &fd)) != 0)
      return rc;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
      return uv_translate_sys_error(errno);
  }
  rc = uv_tcp_bind(tcp, (const struct sockaddr *)&addr->ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)tcp, ZG_LISTEN_BACKLOG, cb);
  return rc;
}

static void on_dropped_closed(uv_handle_t *h) {
  free(h);
}

void zg_listener_drop(uv_stream_t *server) {
  uv_tcp_t *tmp = malloc(sizeof(*tmp));
  if (tmp && uv_tcp_init(server->loop, tmp) == 0) {
    uv_accept(server, (uv_stream_t *)tmp);
    uv_close((uv_handle_t *)tmp, on_dropped_closed);
  } else {
    free(tmp);
  }
}

void zg_peer_name(uv_tcp_t *tcp, char *ip, size_t ip_len, char *addr,
                  size_t addr_len) {
  struct sockaddr_storage ss;
  int n = sizeof(ss);
  ip[0] = addr[0] = '\0';
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) != 0)
    return;
  if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
    uv_ip6_name(a6, ip, ip_len);
    snprintf(addr, addr_len, "[%s]:%u", ip, ntohs(a6->sin6_port));
  } else {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
    uv_ip4_name(a4, ip, ip_len);
    snprintf(addr, addr_len, "%s:%u", ip, ntohs(a4->sin_port));
  }
}
