/* Listeners: bind and listen. libuv sets SO_REUSEADDR itself on Unix, so a
 * restart does not wait for TIME_WAIT sockets of the previous process. */
#include "zkgate/listener.h"

#define ZG_LISTEN_BACKLOG 511 /* as nginx and HAProxy default to */

int zg_listener_start(uv_loop_t *loop, uv_tcp_t *tcp,
                      const zg_listen_addr_t *addr, uv_connection_cb cb) {
  int rc = uv_tcp_init(loop, tcp);
  if (rc != 0)
    return rc;
  rc = uv_tcp_bind(tcp, (const struct sockaddr *)&addr->ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)tcp, ZG_LISTEN_BACKLOG, cb);
  return rc;
}
