/* Listeners: binding and listening on a configured address. */
#ifndef ZKGATE_LISTENER_H
#define ZKGATE_LISTENER_H

#include <uv.h>

#include "zkgate/config.h"

/* Initialises `tcp` on `loop`, binds it to `addr` and listens. Returns 0
 * or a UV_E* code; on error the handle is initialised (close it). */
int zg_listener_start(uv_loop_t *loop, uv_tcp_t *tcp,
                      const zg_listen_addr_t *addr, uv_connection_cb cb);

#endif
