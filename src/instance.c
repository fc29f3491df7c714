/* Instance decoding: turns one registry child (name + data) into an
 * instance address. Pure code. Formats and their cues are listed in
 * shared/REGISTRY-FORMATS.md; JSON goes through jansson. */
#include "zkgate/instance.h"

#include "zkgate/error.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err && errlen) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return ZG_EDECODE;
}

static char *dup_n(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

static int has_scheme_sep(const char *s, size_t n) {
  for (size_t i = 0; i + 2 < n; i++)
    if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/')
      return 1;
  return 0;
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A DNS name or an IPv4 literal: letters, digits, '-', '.', '_'. */
static int valid_hostname(const char *s, size_t n) {
  if (n == 0 || n > 253)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
      return 0;
  }
  return s[0] != '.' && s[0] != '-';
}

/* Decimal port 1..65535, all `n` bytes digits. */
static int parse_port(const char *s, size_t n, uint16_t *out) {
  unsigned long v = 0;
  if (n == 0 || n > 5)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  if (v == 0 || v > 65535)
    return -1;
  *out = (uint16_t)v;
  return 0;
}

/* Host part, with brackets already removed when `bracketed`. */
static int set_host(zg_instance_t *out, const char *h, size_t n,
                    int bracketed) {
  char tmp[ZG_HOST_MAX + 1];
  unsigned char bin[16];
  if (n == 0 || n > ZG_HOST_MAX)
    return -1;
  memcpy(tmp, h, n);
  tmp[n] = '\0';
  if (bracketed) {
    if (inet_pton(AF_INET6, tmp, bin) != 1)
      return -1;
    out->is_ip = true;
  } else if (inet_pton(AF_INET, tmp, bin) == 1) {
    out->is_ip = true;
  } else if (valid_hostname(tmp, n)) {
    out->is_ip = false;
  } else {
    return -1;
  }
  memcpy(out->host, tmp, n + 1);
  return 0;
}

int zg_instance_parse_hostport(const char *s, size_t len, zg_instance_t *out) {
  const char *colon;
  uint16_t port;
  if (len > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (!close || (size_t)(close - s) + 1 >= len || close[1] != ':')
      return ZG_EDECODE;
    colon = close + 1;
    if (parse_port(colon + 1, len - (size_t)(colon + 1 - s), &port) != 0 ||
        set_host(out, s + 1, (size_t)(close - s - 1), 1) != 0)
      return ZG_EDECODE;
  } else {
    /* The last colon: a bare IPv6 literal without brackets is refused
     * below, since its host part is not a valid name. */
    colon = NULL;
    for (size_t i = len; i > 0; i--)
      if (s[i - 1] == ':') {
        colon = s + i - 1;
        break;
      }
    if (!colon ||
        parse_port(colon + 1, len - (size_t)(colon + 1 - s), &port) != 0 ||
        set_host(out, s, (size_t)(colon - s), 0) != 0)
      return ZG_EDECODE;
  }
  out->port = port;
  return 0;
}

/* scheme://host[:port][/path] */
static int decode_url(const char *s, size_t n, zg_instance_t *out, char *err,
                      size_t errlen) {
  const char *sep = NULL, *auth, *end, *path;
  size_t slen;
  uint16_t default_port = 0;
  for (size_t i = 0; i + 2 < n; i++)
    if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
      sep = s + i;
      break;
    }
  if (!sep || sep == s)
    return fail(err, errlen, "not a URL");
  slen = (size_t)(sep - s);
  for (size_t i = 0; i < slen; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (i > 0 &&
           ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))))
      return fail(err, errlen, "bad URL scheme");
  }
#define SCHEME_IS(lit)                                                         \
  (slen == sizeof(lit) - 1 && strncasecmp(s, lit, slen) == 0)
  if (SCHEME_IS("https") || SCHEME_IS("tls") || SCHEME_IS("ssl")) {
    out->tls = true;
    default_port = SCHEME_IS("https") ? 443 : 0;
  } else if (SCHEME_IS("http")) {
    default_port = 80;
  }
#undef SCHEME_IS
  auth = sep + 3;
  end = s + n;
  path = memchr(auth, '/', (size_t)(end - auth));
  if (memchr(auth, '?', (size_t)(end - auth)) ||
      memchr(auth, '#', (size_t)(end - auth)))
    return fail(err, errlen, "query or fragment in an instance URL");
  if (!path)
    path = end;
  if (memchr(auth, '@', (size_t)(path - auth)))
    return fail(err, errlen, "credentials in an instance URL");
  if (zg_instance_parse_hostport(auth, (size_t)(path - auth), out) != 0) {
    /* No port: the scheme's default, when it has one. */
    const char *a = auth;
    size_t an = (size_t)(path - auth);
    int br = an > 1 && a[0] == '[' && a[an - 1] == ']';
    if (default_port == 0 ||
        (br ? set_host(out, a + 1, an - 2, 1) : set_host(out, a, an, 0)) != 0)
      return fail(err, errlen, "bad host or port in URL");
    out->port = default_port;
  }
  /* A base path of "/" adds nothing. Keep it otherwise, minus a trailing
   * slash, so that joining it with a request path is one concatenation. */
  if (end - path > 1) {
    size_t plen = (size_t)(end - path);
    for (size_t i = 0; i < plen; i++)
      if ((unsigned char)path[i] <= ' ' || path[i] == 0x7f)
        return fail(err, errlen, "bad character in URL path");
    while (plen > 1 && path[plen - 1] == '/')
      plen--;
    if (!(out->base_path = dup_n(path, plen)))
      return fail(err, errlen, "out of memory");
  }
  out->format = ZG_FORMAT_URL;
  return 0;
}

/* A JSON integer port, or null/absent (returns 1). */
static int json_port(json_t *v, uint16_t *out) {
  json_int_t p;
  if (!v || json_is_null(v))
    return 1;
  if (!json_is_integer(v))
    return -1;
  p = json_integer_value(v);
  if (p <= 0 || p > 65535)
    return -1;
  *out = (uint16_t)p;
  return 0;
}

/* Apache Curator ServiceInstance (curator-x-discovery): `address`, `port`,
 * `sslPort`. Unknown fields are ignored, as Curator's own reader must. */
static int decode_curator(json_t *root, zg_instance_t *out, char *err,
                          size_t errlen) {
  json_t *addr = json_object_get(root, "address");
  uint16_t port = 0, ssl_port = 0;
  int rp, rs;
  const char *a;
  if (!json_is_string(addr))
    return fail(err, errlen, "Curator instance without a string \"address\"");
  a = json_string_value(addr);
  if (set_host(out, a, strlen(a), 0) != 0 &&
      set_host(out, a, strlen(a), 1) != 0)
    return fail(err, errlen, "bad Curator \"address\"");
  rp = json_port(json_object_get(root, "port"), &port);
  rs = json_port(json_object_get(root, "sslPort"), &ssl_port);
  if (rp < 0 || rs < 0)
    return fail(err, errlen, "bad Curator \"port\" or \"sslPort\"");
  /* Plain port first: TLS to instances is a later choice (upstream_tls). */
  if (rp == 0) {
    out->port = port;
  } else if (rs == 0) {
    out->port = ssl_port;
    out->tls = true;
  } else {
    return fail(err, errlen, "Curator instance with neither port nor sslPort");
  }
  out->format = ZG_FORMAT_CURATOR;
  return 0;
}

static int decode_json(const char *s, size_t n, zg_instance_t *out, char *err,
                       size_t errlen) {
  json_error_t jerr;
  json_t *root = json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr);
  int rc;
  if (!root)
    return fail(err, errlen, "bad JSON: %s", jerr.text);
  if (!json_is_object(root)) {
    rc = fail(err, errlen, "JSON instance data is not an object");
  } else if (json_object_get(root, "address") &&
             (json_object_get(root, "registrationTimeUTC") ||
              json_object_get(root, "serviceType") ||
              json_object_get(root, "sslPort") ||
              json_object_get(root, "port"))) {
    rc = decode_curator(root, out, err, errlen);
  } else {
    rc = fail(err, errlen, "JSON of an unknown registry format");
  }
  json_decref(root);
  return rc;
}

int zg_instance_decode_name(const char *name, zg_instance_t *out, char *err,
                            size_t errlen) {
  (void)name;
  (void)out;
  (void)err;
  (void)errlen;
  return 1;
}

int zg_instance_decode(const char *name, const char *data, size_t len,
                       const zg_decode_opts_t *opts, zg_instance_t *out,
                       char *err, size_t errlen) {
  const char *s = data ? data : "";
  size_t n = data ? len : 0;
  int rc;

  (void)opts;
  memset(out, 0, sizeof(*out));
  out->up = true;
  out->weight = ZG_WEIGHT_DEFAULT;
  while (n > 0 && is_space(s[0]))
    s++, n--;
  while (n > 0 && is_space(s[n - 1]))
    n--;
  if (memchr(s, '\0', n))
    return fail(err, errlen, "binary instance data");

  if (n == 0) {
    if (!name || zg_instance_parse_hostport(name, strlen(name), out) != 0)
      return fail(err, errlen,
                  "empty data and a child name that is not "
                  "host:port");
    out->format = ZG_FORMAT_NAME;
  } else if (s[0] == '{') {
    rc = decode_json(s, n, out, err, errlen);
    if (rc != 0)
      goto failed;
  } else if (has_scheme_sep(s, n)) {
    rc = decode_url(s, n, out, err, errlen);
    if (rc != 0)
      goto failed;
  } else if (zg_instance_parse_hostport(s, n, out) == 0) {
    out->format = ZG_FORMAT_HOSTPORT;
  } else if (name && zg_instance_parse_hostport(name, strlen(name), out) == 0) {
    /* Free text such as "@params weight=2" beside a child named host:port */
    out->format = ZG_FORMAT_NAME;
  } else {
    rc = fail(err, errlen, "data is neither a URL, JSON nor host:port");
    goto failed;
  }
  if (name && !(out->name = strdup(name))) {
    rc = fail(err, errlen, "out of memory");
    goto failed;
  }
  return 0;

failed:
  zg_instance_clear(out);
  return rc;
}

int zg_instance_copy(zg_instance_t *dst, const zg_instance_t *src) {
  *dst = *src;
  dst->base_path = NULL;
  dst->name = NULL;
  dst->znode = NULL;
  if ((src->base_path && !(dst->base_path = strdup(src->base_path))) ||
      (src->name && !(dst->name = strdup(src->name))) ||
      (src->znode && !(dst->znode = strdup(src->znode)))) {
    zg_instance_clear(dst);
    return UV_ENOMEM;
  }
  return 0;
}

void zg_instance_clear(zg_instance_t *inst) {
  free(inst->base_path);
  free(inst->name);
  free(inst->znode);
  memset(inst, 0, sizeof(*inst));
}

const char *zg_instance_format_name(int format) {
  switch (format) {
  case ZG_FORMAT_STATIC:
    return "static";
  case ZG_FORMAT_HOSTPORT:
    return "host:port";
  case ZG_FORMAT_NAME:
    return "name";
  case ZG_FORMAT_URL:
    return "url";
  case ZG_FORMAT_CURATOR:
    return "curator";
  default:
    return "unknown";
  }
}

const char *zg_instance_addr_str(const zg_instance_t *inst, char *buf,
                                 size_t len) {
  if (strchr(inst->host, ':'))
    snprintf(buf, len, "[%s]:%u", inst->host, inst->port);
  else
    snprintf(buf, len, "%s:%u", inst->host, inst->port);
  return buf;
}
