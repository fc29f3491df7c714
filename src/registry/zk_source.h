/* The ZooKeeper registry source (registry/source.h): one ZooKeeper session
 * for the whole process, driven by the control loop through registry/zkconn,
 * watching the children of every service's zk_path and publishing a new
 * pool snapshot for a service whenever its set of decoded instances
 * changes.
 *
 * Riding out trouble: a disconnection keeps every pool as it was; a session
 * expiry, or a disconnection longer than the session timeout, opens a new
 * session and resynchronises every service, replacing each pool in one step
 * (never through an empty pool unless the registry really is empty). */
#ifndef ZKGATE_ZK_SOURCE_H
#define ZKGATE_ZK_SOURCE_H

#include <uv.h>

#include "core/config.h"
#include "registry/source.h"

/* The source for `cfg`'s [zookeeper] (hosts, session timeout, coalesce
 * window, auth, state file and max_stale, max_watch_bytes, data_sweep),
 * not started, in *out; *out is NULL when no section needs ZooKeeper.
 * Pools come to `cb`, a discovery root's children to `children_cb`, both
 * with `cb_arg`. Returns 0 or UV_ENOMEM. */
int zg_zk_source_new(uv_loop_t *loop, const zg_config_t *cfg,
                     zg_source_publish_cb cb, zg_source_children_cb children_cb,
                     void *cb_arg, zg_source_t **out);

#endif
