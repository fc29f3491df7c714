/* The etcd registry source (registry/source.h): etcd v3 through its JSON
 * gateway over HTTP/1.1 (no gRPC), one key prefix a service. Every key
 * under a prefix is an instance, its value decoded as znode data is
 * (core/instance.h). One range read per prefix, then one watch stream for
 * all prefixes; a compaction re-reads, a lost connection fails over to the
 * next endpoint and resumes from the last revision applied. Last-known-good,
 * max_stale and the state file are the catalog's (registry/catalog.h), as
 * for ZooKeeper. */
#ifndef ZKGATE_ETCD_SOURCE_H
#define ZKGATE_ETCD_SOURCE_H

#include <uv.h>

#include "core/config.h"
#include "registry/source.h"

/* The source for `cfg`'s [etcd] (endpoints, dial timeout, credentials,
 * TLS, state file, max_stale; the coalesce window is [zookeeper]'s), not
 * started, in *out; *out is NULL when no section reads etcd. Pools come to
 * `cb`, a discovery root's children (the names under an etcd_root) to
 * `children_cb`, both with `cb_arg`. Returns 0, UV_ENOMEM, or ZG_ECONFIG
 * when the TLS files cannot be loaded (logged). */
int zg_etcd_source_new(uv_loop_t *loop, const zg_config_t *cfg,
                       zg_source_publish_cb cb,
                       zg_source_children_cb children_cb, void *cb_arg,
                       zg_source_t **out);

#endif
