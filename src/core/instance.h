/* Instances and their decoding from registry data. Pure code: no loop, no
 * I/O. One decoder per registry format; zg_instance_decode() tells the
 * formats apart by the cues in docs/registry-formats.md ("Order of
 * decisions"). */
#ifndef ZKGATE_INSTANCE_H
#define ZKGATE_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZG_HOST_MAX 255 /* a DNS name is at most 253 bytes */

typedef enum {
  ZG_FORMAT_STATIC = 0,  /* from `instances =` in the configuration */
  ZG_FORMAT_HOSTPORT,    /* data `host:port` */
  ZG_FORMAT_NAME,        /* empty or free-text data, child name `host:port` */
  ZG_FORMAT_URL,         /* data `scheme://host:port[/base/path]` (puttu) */
  ZG_FORMAT_CURATOR,     /* Apache Curator ServiceInstance JSON (also Spring
                            Cloud Zookeeper and Dubbo 3 payloads) */
  ZG_FORMAT_SERVERSET,   /* Finagle / Aurora serverset member JSON */
  ZG_FORMAT_NERVE,       /* Airbnb Nerve JSON */
  ZG_FORMAT_NERVE_NAME,  /* Nerve, JSON base64-encoded in the child name */
  ZG_FORMAT_REGISTRATOR, /* gliderlabs Registrator JSON */
  ZG_FORMAT_DUBBO,       /* Dubbo 2 provider URL, URL-encoded child name */
  ZG_FORMAT_ETCD_ADDR,   /* {"Addr":"host:port","Metadata":..}: etcd's own
                            naming endpoints (grpc-go resolver) */
} zg_instance_format_t;

/* The application protocol a registration announces (upstream_protocol =
 * auto reads it): what docs/registry-formats.md ("HTTP/2 and gRPC") lists.
 * ANY: the registration says nothing (HTTP/1.1 under auto, or h2 when ALPN
 * to a TLS instance picks it). */
typedef enum {
  ZG_INST_PROTO_ANY = 0,
  ZG_INST_PROTO_H2, /* h2c://, grpc://, h2s://, grpcs://, a Curator uriSpec
                       or payload protocol, a serverset endpoint named so */
} zg_inst_proto_t;

/* HTTP/2 to instances, per HTTP service (`upstream_protocol`). */
typedef enum {
  ZG_UPSTREAM_PROTO_AUTO = 0, /* as the registration says (inst->proto) */
  ZG_UPSTREAM_PROTO_HTTP1,    /* HTTP/1.1 to every instance */
  ZG_UPSTREAM_PROTO_H2,       /* HTTP/2 to every instance */
} zg_upstream_proto_t;

#define ZG_WEIGHT_DEFAULT 1
#define ZG_WEIGHT_MAX 1000000

typedef struct zg_instance {
  char host[ZG_HOST_MAX + 1]; /* IP literal (no brackets) or DNS name */
  uint16_t port;
  bool tls;            /* the registration says the instance speaks TLS */
  uint8_t proto;       /* zg_inst_proto_t: what the registration says the
                          instance speaks over that connection */
  uint16_t plain_port; /* Curator with both sslPort (in `port`) and port:
                          the plain one, for upstream_tls = off; else 0 */
  bool is_ip;          /* host is an IP literal: no resolution needed */
  bool up;             /* in rotation; false: registered but out of service
                          (Curator enabled=false, status not UP/ALIVE, down) */
  uint8_t format;      /* zg_instance_format_t */
  uint32_t weight;     /* relative share of new connections, 0..ZG_WEIGHT_MAX;
                          ZG_WEIGHT_DEFAULT when the format carries none; 0
                          takes no new connections */
  char *base_path;     /* owned; NULL when none (URL path, Curator uriSpec) */
  char *name;          /* owned; znode child name, or NULL for static ones */
  /* Provenance, filled by the registry (zero for static instances). */
  char *key;        /* owned; where it came from: the znode's full path, or
                       the etcd key */
  int64_t version;  /* the data decoded: a znode's Stat.version, or an etcd
                       key's mod_revision */
  int64_t mtime_ms; /* Stat.mtime: when the data was last written */
  uint64_t seen_ms; /* uv_now when its address first appeared in the
                       service's pools (slow_start); 0: from the start */
} zg_instance_t;

/* What a service asks of the decoders. */
typedef struct {
  /* Serverset: the name of an additionalEndpoints entry to use instead of
   * serviceEndpoint (`endpoint =`); NULL for serviceEndpoint. */
  const char *endpoint;
} zg_decode_opts_t;

/* Decodes one registry child. `name` is the child's name (not its path),
 * `data`/`len` its data (may be NULL/0), `opts` may be NULL. On success
 * fills *out (which the caller releases with zg_instance_clear) and
 * returns 0: out->up says whether it is in service, and err holds "" or a
 * warning about something ignored (a weight that cannot be read: the
 * instance has the default weight). Otherwise returns
 * ZG_ESKIP for a child that is not an instance by its format's own rules
 * (a serverset child not named member_*), or ZG_EDECODE, and writes a
 * reason into err. A name in one of zg_instance_decode_name's formats is
 * decoded from the name alone, whatever the data, with the same result as
 * that function gives. *out holds nothing to release after a failure. */
int zg_instance_decode(const char *name, const char *data, size_t len,
                       const zg_decode_opts_t *opts, zg_instance_t *out,
                       char *err, size_t errlen);

/* Formats that live in the child's name alone (Nerve base64_ names, Dubbo
 * URL-encoded provider URLs): decoded without reading the data. Returns 0
 * with *out filled (out->name included, and err "" or a warning, as
 * zg_instance_decode does), 1
 * when the name is not such a format (read the data and call
 * zg_instance_decode), or ZG_EDECODE with a reason in err. */
int zg_instance_decode_name(const char *name, zg_instance_t *out, char *err,
                            size_t errlen);

/* Parses `host:port`, `[v6]:port` or `v4:port` into out->host/port/is_ip.
 * Returns 0 or ZG_EDECODE. Other fields are left alone. */
int zg_instance_parse_hostport(const char *s, size_t len, zg_instance_t *out);

int zg_instance_copy(zg_instance_t *dst, const zg_instance_t *src);
void zg_instance_clear(zg_instance_t *inst);
const char *zg_instance_format_name(int format);

/* TLS to instances, per service (`upstream_tls`). */
typedef enum {
  ZG_UPSTREAM_TLS_AUTO = 0, /* as the registration says (inst->tls) */
  ZG_UPSTREAM_TLS_ON,       /* every instance */
  ZG_UPSTREAM_TLS_OFF,      /* none */
} zg_upstream_tls_t;

/* Whether to speak TLS to `inst` under `mode`, with the port to connect
 * to in *port: the registered one, or under `off` the plain port of a
 * registration that has both. */
bool zg_instance_use_tls(const zg_instance_t *inst, zg_upstream_tls_t mode,
                         uint16_t *port);

/* Whether `s` (`len` bytes, any case) names an HTTP/2 protocol as
 * registrations write it: h2, h2c, grpc (cleartext), h2s, grpcs (TLS, set
 * in *tls when not NULL). */
bool zg_instance_h2_name(const char *s, size_t len, bool *tls);

/* Whether to speak HTTP/2 to `inst` under `mode`: 1 yes, 0 no (HTTP/1.1),
 * -1 the registration is silent (auto): over TLS, ALPN decides (h2 offered
 * with http/1.1), in cleartext HTTP/1.1. */
int zg_instance_use_h2(const zg_instance_t *inst, zg_upstream_proto_t mode);

/* "host:port" or "[v6]:port" into buf; returns buf. */
const char *zg_instance_addr_str(const zg_instance_t *inst, char *buf,
                                 size_t len);
/* Same, with another port. */
const char *zg_instance_addr_port_str(const zg_instance_t *inst, uint16_t port,
                                      char *buf, size_t len);

#endif
