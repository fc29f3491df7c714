/* What zkgate-register is told to do (register_main.c reads it from the
 * command line): where to register, what, and how to check the instance.
 * Its own header so that the check (register/check.h) and the runtimes
 * share it without including each other. */
#ifndef ZKGATE_REGISTER_OPTS_H
#define ZKGATE_REGISTER_OPTS_H

#include <stdint.h>

#include "core/instance.h"
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
  /* etcd mode (--etcd): zk_hosts, zk_path, session_timeout_ms and auth
   * unused. */
  const char *etcd_endpoints; /* http(s)://HOST:PORT[,...], or NULL */
  const char *etcd_prefix;    /* the key is it + host:port */
  uint64_t ttl_ms;            /* the lease's TTL, whole seconds */
  const char *etcd_username;  /* NULL: no authentication */
  const char *etcd_password;  /* with a username. Secret */
  /* https endpoints: argv's strings (zg_service_conf_t takes char *) */
  char *etcd_ca, *etcd_cert, *etcd_key;
} zg_register_opts_t;

#endif
