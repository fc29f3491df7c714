/* What zkgate-register writes: the znode data of one instance in a
 * registry format, the child's name and whether it is sequential. Pure
 * code: no loop, no I/O, no clock, no randomness (the caller passes the
 * registration time and the random bytes of a Curator id), so that every
 * output can be decoded back by zg_instance_decode() in a unit test.
 *
 * Formats (docs/registry-formats.md says what each writer emits):
 *   url        data scheme://host:port, child <service>NNNNNNNNNN  (puttu)
 *   curator    ServiceInstance JSON, child <id> (a UUID), DYNAMIC
 *   serverset  serviceEndpoint JSON, status ALIVE, child member_NNNNNNNNNN
 *   hostport   data host:port, child <service>NNNNNNNNNN
 * where <service> is the last component of the ZooKeeper path and the
 * digits are ZooKeeper's sequence. Every child is ephemeral. */
#ifndef ZKGATE_REGISTER_FMT_H
#define ZKGATE_REGISTER_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  ZG_REGFMT_URL = 0,
  ZG_REGFMT_CURATOR,
  ZG_REGFMT_SERVERSET,
  ZG_REGFMT_HOSTPORT,
} zg_regfmt_t;

/* Curator ids: 8-4-4-4-12 hex digits. */
#define ZG_REGFMT_UUID_LEN 36

typedef struct {
  zg_regfmt_t format;
  const char *zk_path; /* the parent: a valid ZooKeeper path, not "/" */
  const char *host;    /* IP literal (IPv6 without brackets) or DNS name */
  uint16_t port;
  bool tls;                        /* --scheme https */
  char id[ZG_REGFMT_UUID_LEN + 1]; /* Curator only: zg_register_fmt_uuid */
  int64_t registration_ms;         /* Curator only: registrationTimeUTC */
} zg_regfmt_instance_t;

/* "url", "curator", "serverset", "hostport" -> 0 and *out, else
 * ZG_ECONFIG. */
int zg_register_fmt_parse(const char *name, zg_regfmt_t *out);
const char *zg_register_fmt_name(zg_regfmt_t format);

/* 0 when `path` is a ZooKeeper path a child can be created under: starts
 * with '/', no empty, "." or ".." component, no trailing '/', not "/"
 * itself, no control characters. Otherwise ZG_ECONFIG with a reason. */
int zg_register_fmt_check_path(const char *path, const char **reason);

/* A version 4 UUID (RFC 4122 section 4.4) from 16 random bytes, as text
 * into out[ZG_REGFMT_UUID_LEN + 1]. */
void zg_register_fmt_uuid(const uint8_t random[16], char *out);

/* The znode data: a NUL-terminated string in *data (the caller frees it),
 * its length without the NUL in *len. Returns 0 or UV_ENOMEM. */
int zg_register_fmt_encode(const zg_regfmt_instance_t *inst, char **data,
                           size_t *len);

/* The path to create: the full path of the child, or for a sequential
 * format the prefix ZooKeeper appends its sequence to (*sequential set).
 * The caller frees it. Returns 0 or UV_ENOMEM. */
int zg_register_fmt_child(const zg_regfmt_instance_t *inst, char **path,
                          bool *sequential);

/* etcd (zkgate-register --etcd): the key is the prefix as given followed
 * by host:port (an IPv6 literal in brackets), e.g. /services/web/ +
 * 10.0.0.5:8080; one key an instance, so a restarted registrar replaces
 * its own. The value is zg_register_fmt_encode's, with the service name
 * from the prefix (zg_register_fmt_etcd_service). */

/* 0 when `prefix` can start keys: not empty, at most 1024 bytes, no
 * control characters. Otherwise ZG_ECONFIG with a reason. */
int zg_register_fmt_check_prefix(const char *prefix, const char **reason);

/* The key of the instance into *key (the caller frees it). 0, UV_EINVAL
 * (a host too long) or UV_ENOMEM. */
int zg_register_fmt_etcd_key(const char *prefix, const char *host,
                             uint16_t port, char **key);

/* What stands for the ZooKeeper parent path when encoding for etcd: "/"
 * and the prefix's last non-empty component ("/services/web/" -> "/web"),
 * so that Curator's name and puttu's service are the service's. NULL when
 * out of memory; the caller frees it. */
char *zg_register_fmt_etcd_service(const char *prefix);

#endif
