/* Instances and their decoding from registry data. Pure code: no loop, no
 * I/O. One decoder per registry format; zg_instance_decode() tells the
 * formats apart by the cues in REGISTRY-FORMATS.md. */
#ifndef ZKGATE_INSTANCE_H
#define ZKGATE_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZG_HOST_MAX 255 /* a DNS name is at most 253 bytes */

typedef enum {
  ZG_FORMAT_STATIC = 0, /* from `instances =` in the configuration */
  ZG_FORMAT_HOSTPORT,   /* data `host:port` */
  ZG_FORMAT_NAME,       /* empty data, child name `host:port` */
  ZG_FORMAT_URL,        /* data `scheme://host:port[/base/path]` (puttu) */
  ZG_FORMAT_CURATOR,    /* Apache Curator ServiceInstance JSON */
} zg_instance_format_t;

typedef struct zg_instance {
  char host[ZG_HOST_MAX + 1]; /* IP literal (no brackets) or DNS name */
  uint16_t port;
  bool tls;        /* the registration says the instance speaks TLS */
  bool is_ip;      /* host is an IP literal: no resolution needed */
  uint8_t format;  /* zg_instance_format_t */
  char *base_path; /* owned; NULL when none (URL path, Curator uriSpec) */
  char *name;      /* owned; znode child name, or NULL for static ones */
} zg_instance_t;

/* Decodes one registry child. `name` is the child's name (not its path),
 * `data`/`len` its data (may be NULL/0). On success fills *out (which the
 * caller releases with zg_instance_clear) and returns 0; otherwise returns
 * ZG_EDECODE and writes a reason into err. */
int zg_instance_decode(const char *name, const char *data, size_t len,
                       zg_instance_t *out, char *err, size_t errlen);

/* Parses `host:port`, `[v6]:port` or `v4:port` into out->host/port/is_ip.
 * Returns 0 or ZG_EDECODE. Other fields are left alone. */
int zg_instance_parse_hostport(const char *s, size_t len, zg_instance_t *out);

int zg_instance_copy(zg_instance_t *dst, const zg_instance_t *src);
void zg_instance_clear(zg_instance_t *inst);
const char *zg_instance_format_name(int format);

/* "host:port" or "[v6]:port" into buf; returns buf. */
const char *zg_instance_addr_str(const zg_instance_t *inst, char *buf,
                                 size_t len);

#endif
