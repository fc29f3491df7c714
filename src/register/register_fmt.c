/* Registration encoding for zkgate-register: the data and the child name
 * of one instance in each registry format. See register_fmt.h.
 *
 * Each output is what the format's own writer emits, close enough that
 * the writer's readers take it, and it must decode with zkgate's own
 * zg_instance_decode() to the same address (tests/unit/test_register_fmt.c
 * holds us to that). */
#include "register/register_fmt.h"

#include "core/error.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char *const format_names[] = {"url", "curator", "serverset",
                                           "hostport"};

int zg_register_fmt_parse(const char *name, zg_regfmt_t *out) {
  for (size_t i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++)
    if (strcmp(name, format_names[i]) == 0) {
      *out = (zg_regfmt_t)i;
      return 0;
    }
  return ZG_ECONFIG;
}

const char *zg_register_fmt_name(zg_regfmt_t format) {
  if ((size_t)format < sizeof(format_names) / sizeof(format_names[0]))
    return format_names[format];
  return "unknown";
}

/* ZooKeeper's own rules (PathUtils.validatePath), minus the Unicode
 * ranges it also refuses: we refuse every byte below 0x20 and 0x7f, which
 * covers NUL. */
int zg_register_fmt_check_path(const char *path, const char **reason) {
  const char *why = NULL, *comp;
  if (path[0] != '/')
    why = "must start with '/'";
  else if (path[1] == '\0')
    why = "must not be the root '/': instances are its children";
  else if (path[strlen(path) - 1] == '/')
    why = "must not end with '/'";
  for (const char *p = path; !why && *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      why = "must not hold control characters";
  for (comp = path; !why && comp; comp = strchr(comp + 1, '/')) {
    size_t n = strcspn(comp + 1, "/");
    if (n == 0)
      why = "must not hold an empty component ('//')";
    else if ((n == 1 && comp[1] == '.') ||
             (n == 2 && comp[1] == '.' && comp[2] == '.'))
      why = "must not hold a '.' or '..' component";
  }
  if (reason)
    *reason = why;
  return why ? ZG_ECONFIG : 0;
}

void zg_register_fmt_uuid(const uint8_t random[16], char *out) {
  static const char hex[] = "0123456789abcdef";
  uint8_t b[16];
  size_t o = 0;
  memcpy(b, random, sizeof(b));
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 */
  for (size_t i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out[o++] = '-';
    out[o++] = hex[b[i] >> 4];
    out[o++] = hex[b[i] & 0x0f];
  }
  out[o] = '\0';
}

/* The last component of the path: Curator's service name, and puttu's
 * child prefix. */
static const char *service_name(const char *zk_path) {
  const char *slash = strrchr(zk_path, '/');
  return slash ? slash + 1 : zk_path;
}

/* host:port with an IPv6 literal in brackets (RFC 3986 section 3.2.2). */
static int authority(const zg_regfmt_instance_t *inst, char *buf, size_t n) {
  int r = strchr(inst->host, ':')
              ? snprintf(buf, n, "[%s]:%u", inst->host, inst->port)
              : snprintf(buf, n, "%s:%u", inst->host, inst->port);
  return r > 0 && (size_t)r < n ? 0 : UV_EINVAL;
}

static int text_out(const char *text, char **data, size_t *len) {
  if (!(*data = strdup(text)))
    return UV_ENOMEM;
  *len = strlen(text);
  return 0;
}

static int json_out(json_t *root, char **data, size_t *len) {
  if (!root)
    return UV_ENOMEM;
  *data = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!*data)
    return UV_ENOMEM;
  *len = strlen(*data);
  return 0;
}

/* Curator's ServiceInstance as curator-x-discovery serialises it (Jackson,
 * field order of the class). With https the port is the sslPort and the
 * plain port is null, as a TLS-only Spring service registers. `enabled`
 * is not written: older Curator readers fail on fields they do not know.
 * The uriSpec spells the scheme out so that readers building URIs from it
 * get https right. */
static json_t *curator_json(const zg_regfmt_instance_t *inst) {
  json_t *port = json_integer(inst->port), *uri_spec;
  uri_spec = json_pack(
      "{s:[{s:s,s:b},{s:s,s:b},{s:s,s:b},{s:s,s:b},{s:s,s:b}]}", "parts",
      "value", inst->tls ? "https" : "http", "variable", 0, "value", "://",
      "variable", 0, "value", "address", "variable", 1, "value", ":",
      "variable", 0, "value", inst->tls ? "ssl-port" : "port", "variable", 1);
  return json_pack("{s:s,s:s,s:s,s:o,s:o,s:n,s:I,s:s,s:o}", "name",
                   service_name(inst->zk_path), "id", inst->id, "address",
                   inst->host, "port", inst->tls ? json_null() : port,
                   "sslPort", inst->tls ? port : json_null(), "payload",
                   "registrationTimeUTC", (json_int_t)inst->registration_ms,
                   "serviceType", "DYNAMIC", "uriSpec", uri_spec);
}

/* A Finagle serverset member. The TLS endpoint, which serviceEndpoint
 * cannot tell, is also listed as additionalEndpoints "https" (what a
 * zkgate service with `endpoint = https` selects). */
static json_t *serverset_json(const zg_regfmt_instance_t *inst) {
  json_t *additional = inst->tls ? json_pack("{s:{s:s,s:i}}", "https", "host",
                                             inst->host, "port", inst->port)
                                 : json_object();
  return json_pack("{s:{s:s,s:i},s:o,s:s}", "serviceEndpoint", "host",
                   inst->host, "port", inst->port, "additionalEndpoints",
                   additional, "status", "ALIVE");
}

int zg_register_fmt_encode(const zg_regfmt_instance_t *inst, char **data,
                           size_t *len) {
  char addr[ZG_REGFMT_UUID_LEN + 300], url[sizeof(addr) + 16];
  int rc;
  *data = NULL;
  *len = 0;
  switch (inst->format) {
  case ZG_REGFMT_URL:
    if ((rc = authority(inst, addr, sizeof(addr))) != 0)
      return rc;
    snprintf(url, sizeof(url), "%s://%s", inst->tls ? "https" : "http", addr);
    return text_out(url, data, len);
  case ZG_REGFMT_HOSTPORT:
    if ((rc = authority(inst, addr, sizeof(addr))) != 0)
      return rc;
    return text_out(addr, data, len);
  case ZG_REGFMT_CURATOR:
    return json_out(curator_json(inst), data, len);
  case ZG_REGFMT_SERVERSET:
    return json_out(serverset_json(inst), data, len);
  }
  return UV_EINVAL;
}

int zg_register_fmt_child(const zg_regfmt_instance_t *inst, char **path,
                          bool *sequential) {
  const char *name;
  size_t n;
  switch (inst->format) {
  case ZG_REGFMT_CURATOR:
    /* DYNAMIC: ephemeral, named by the id, which survives a new session so
     * that readers see the same instance come back. */
    name = inst->id;
    *sequential = false;
    break;
  case ZG_REGFMT_SERVERSET:
    name = "member_"; /* readers take only member_* children */
    *sequential = true;
    break;
  default:
    name = service_name(inst->zk_path); /* puttu: <service>0000000009 */
    *sequential = true;
    break;
  }
  n = strlen(inst->zk_path) + strlen(name) + 2;
  if (!(*path = malloc(n)))
    return UV_ENOMEM;
  snprintf(*path, n, "%s/%s", inst->zk_path, name);
  return 0;
}

int zg_register_fmt_check_prefix(const char *prefix, const char **reason) {
  *reason = NULL;
  if (!prefix[0]) {
    *reason = "is empty";
    return ZG_ECONFIG;
  }
  if (strlen(prefix) > 1024) {
    *reason = "is longer than 1024 bytes";
    return ZG_ECONFIG;
  }
  for (const char *c = prefix; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) {
      *reason = "holds a control character";
      return ZG_ECONFIG;
    }
  return 0;
}

int zg_register_fmt_etcd_key(const char *prefix, const char *host,
                             uint16_t port, char **key) {
  zg_regfmt_instance_t inst;
  char auth[300]; /* a DNS name (253) or [IPv6], and :port */
  size_t n;
  memset(&inst, 0, sizeof(inst));
  inst.host = host;
  inst.port = port;
  if (authority(&inst, auth, sizeof(auth)) != 0)
    return UV_EINVAL;
  n = strlen(prefix) + strlen(auth) + 1;
  if (!(*key = malloc(n)))
    return UV_ENOMEM;
  snprintf(*key, n, "%s%s", prefix, auth);
  return 0;
}

char *zg_register_fmt_etcd_service(const char *prefix) {
  size_t end = strlen(prefix), start;
  while (end > 0 && prefix[end - 1] == '/')
    end--;
  start = end;
  while (start > 0 && prefix[start - 1] != '/')
    start--;
  /* "/" and a name: what the ZooKeeper formats take as the parent path */
  {
    char *out = malloc(end - start + 2);
    if (out) {
      out[0] = '/';
      memcpy(out + 1, prefix + start, end - start);
      out[end - start + 1] = '\0';
    }
    return out;
  }
}
