/* zkgate-register: keeps one instance registered in ZooKeeper, as an
 * ephemeral znode, for as long as its health check passes (for services
 * that cannot register themselves). One libuv loop, single-threaded: the
 * ZooKeeper session, the checks, the timers and the signals.
 *
 * - The znode is created once the instance is healthy (at once without a
 *   check; after `rise` passing checks with one), under the parent path,
 *   which is created (persistent) when missing.
 * - After `fall` failing checks in a row it is deleted; after `rise`
 *   passing ones it is created again.
 * - Disconnection: nothing to do, the session keeps the znode. Session
 *   expiry, or a disconnection longer than the session timeout: a new
 *   session, and the znode is created again. ZooKeeper being unreachable is
 *   retried for ever, never fatal.
 * - Someone else deletes the znode while the instance is healthy: it is
 *   created again (an exists watch on it).
 * - With digest credentials, every session authenticates before its first
 *   request, and what it creates (the znode and the parents it makes) gets
 *   the ACL "the authenticated user: all; world: read".
 * - SIGTERM/SIGINT: the session is closed, so the znode goes at once. */
#ifndef ZKGATE_REGISTER_H
#define ZKGATE_REGISTER_H

#include <stdint.h>

#include "core/instance.h"
#include "core/log.h"
#include "register/register_fmt.h"

typedef enum {
  ZG_CHECK_NONE = 0,
  ZG_CHECK_TCP,  /* a TCP connect to the address */
  ZG_CHECK_HTTP, /* GET check_path: 2xx or 3xx is healthy */
} zg_check_kind_t;

typedef struct {
  const char *zk_hosts;        /* connect string, may end in a chroot */
  const char *zk_path;         /* the parent of the instance's znode */
  zg_instance_t address;       /* host, port, is_ip */
  zg_regfmt_t format;          /* url by default */
  int tls;                     /* --scheme https */
  zg_check_kind_t check;       /* ZG_CHECK_NONE: always healthy */
  const char *check_path;      /* HTTP: "/PATH" */
  uint64_t interval_ms;        /* between checks; also a check's timeout */
  unsigned rise, fall;         /* consecutive results that flip the state */
  uint64_t session_timeout_ms; /* asked of ZooKeeper */
  const char *auth;            /* digest "USER:PASSWORD", or NULL. Secret */
} zg_register_opts_t;

/* Runs until SIGTERM or SIGINT. Returns the exit status: 0 after a signal,
 * 1 when the loop cannot even start. */
int zg_register_run(const zg_register_opts_t *opts);

#endif
