/* Instance decoding: turns one registry child (name + data) into an
 * instance: address, TLS, in-service flag, weight, base path. Pure code.
 * Formats and their cues are listed in docs/registry-formats.md; JSON
 * goes through jansson, base64 through OpenSSL.
 *
 * Order of decisions: formats that live in the child's name (Nerve
 * base64_ names, Dubbo provider URLs) win over the data, so that the
 * registry may decode them with or without reading the data; then the
 * data tells its format (JSON by its fields, URL, host:port), and empty or
 * free-text data falls back on a host:port child name. */
#include "core/instance.h"

#include "core/error.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

/* ------------------------------------------------------------ text helpers */

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

/* The first "://" in s[0..n), or NULL; data need not be NUL-terminated. */
static const char *find_scheme_sep(const char *s, size_t n) {
  for (size_t i = 0; i + 2 < n; i++)
    if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/')
      return s + i;
  return NULL;
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ASCII classes by hand: <ctype.h> follows the locale. */
static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int hex_value(char c) {
  if (is_digit(c))
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* A DNS name or an IPv4 literal: letters, digits, '-', '.', '_'. */
static int valid_hostname(const char *s, size_t n) {
  if (n == 0 || n > 253)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_'))
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
    if (!is_digit(s[i]))
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

/* ------------------------------------------------- weights and parameters */

/* A weight that cannot be read does not cost the instance its place: it
 * serves with the default weight, and the warning left in err (the
 * decoders succeed with it) is logged by the caller. Dropping it would
 * take a healthy instance out over a typo, or every instance of a writer
 * that gets its weights wrong. Returns 0. */
static int bad_weight(zg_instance_t *out, char *err, size_t errlen,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad_weight(zg_instance_t *out, char *err, size_t errlen,
                      const char *fmt, ...) {
  va_list ap;
  int n = 0;
  out->weight = ZG_WEIGHT_DEFAULT;
  if (err && errlen) {
    va_start(ap, fmt);
    n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < errlen)
      snprintf(err + n, errlen - (size_t)n, "; default weight %d used",
               ZG_WEIGHT_DEFAULT);
  }
  return 0;
}

/* Decimal text 0..ZG_WEIGHT_MAX, every byte a digit: no sign, no space, no
 * fraction, so that "1.5" or "-1" is not read as 1 (it is the default
 * weight, with a warning). */
static int set_weight(zg_instance_t *out, const char *s, size_t n, char *err,
                      size_t errlen) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit(s[i]))
      goto bad;
    v = v * 10 + (uint32_t)(s[i] - '0');
    if (v > ZG_WEIGHT_MAX) /* checked per digit: no overflow */
      goto bad;
  }
  if (n == 0)
    goto bad;
  out->weight = v;
  return 0;
bad:
  return bad_weight(out, err, errlen,
                    "bad weight \"%.*s\": not an integer 0..%d",
                    (int)(n > 32 ? 32 : n), s, ZG_WEIGHT_MAX);
}

/* One key[=value] of a list such as a URL query ("a=1&b=2") or free text
 * ("@params weight=2"). */
typedef struct {
  const char *key, *val;
  size_t klen, vlen;
} param_t;

static int is_sep(char c, const char *seps) {
  return c != '\0' && strchr(seps, c) != NULL; /* strchr finds the NUL */
}

/* Next parameter of [*p, end), separated by any byte of `seps`; 0 at the
 * end of the list. */
static int next_param(const char **p, const char *end, const char *seps,
                      param_t *kv) {
  const char *stop, *eq;
  while (*p < end && is_sep(**p, seps))
    (*p)++;
  if (*p >= end)
    return 0;
  for (stop = *p; stop < end && !is_sep(*stop, seps); stop++)
    ;
  eq = memchr(*p, '=', (size_t)(stop - *p));
  kv->key = *p;
  kv->klen = (size_t)((eq ? eq : stop) - *p);
  kv->val = eq ? eq + 1 : stop;
  kv->vlen = (size_t)(stop - kv->val);
  *p = stop;
  return 1;
}

static int key_is(const param_t *kv, const char *key) {
  return kv->klen == strlen(key) && memcmp(kv->key, key, kv->klen) == 0;
}

static int val_is(const param_t *kv, const char *val) {
  return kv->vlen == strlen(val) && strncasecmp(kv->val, val, kv->vlen) == 0;
}

/* `weight=N` among the parameters; every other parameter is ignored. A
 * repeated weight: the last one counts. */
static int params_weight(const char *s, size_t n, const char *seps,
                         zg_instance_t *out, char *err, size_t errlen) {
  const char *p = s;
  param_t kv;
  while (next_param(&p, s + n, seps, &kv))
    if (key_is(&kv, "weight") &&
        set_weight(out, kv.val, kv.vlen, err, errlen) != 0)
      return ZG_EDECODE;
  return 0;
}

/* What separates words of free text such as "@params weight=2". */
#define TEXT_SEPS " \t\r\n,;"

/* ---------------------------------------------------------------- URL data */

/* A base path from a URL or a uriSpec: without query or fragment; "/"
 * adds nothing, and a trailing slash is trimmed so that joining it with a
 * request path is one concatenation. */
static int set_base_path(zg_instance_t *out, const char *path, size_t plen,
                         char *err, size_t errlen) {
  for (size_t i = 0; i < plen; i++) {
    if (path[i] == '?' || path[i] == '#') {
      plen = i;
      break;
    }
    if ((unsigned char)path[i] <= ' ' || path[i] == 0x7f)
      return fail(err, errlen, "bad character in base path");
  }
  while (plen > 1 && path[plen - 1] == '/')
    plen--;
  if (plen <= 1)
    return 0;
  if (!(out->base_path = dup_n(path, plen)))
    return fail(err, errlen, "out of memory");
  return 0;
}

bool zg_instance_h2_name(const char *s, size_t len, bool *tls) {
  static const struct {
    const char *name;
    bool tls;
  } names[] = {{"h2", false},
               {"h2c", false},
               {"grpc", false},
               {"h2s", true},
               {"grpcs", true}};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strlen(names[i].name) == len &&
        strncasecmp(s, names[i].name, len) == 0) {
      if (tls && names[i].tls)
        *tls = true;
      return true;
    }
  return false;
}

int zg_instance_use_h2(const zg_instance_t *inst, zg_upstream_proto_t mode) {
  if (mode == ZG_UPSTREAM_PROTO_H2)
    return 1;
  if (mode == ZG_UPSTREAM_PROTO_HTTP1)
    return 0;
  return inst->proto == ZG_INST_PROTO_H2 ? 1 : -1;
}

/* Scheme: letters first, then letters, digits, '+', '-', '.' (RFC 3986
 * section 3.1). Sets tls and returns the scheme's default port (0: none). */
static int url_scheme(const char *s, size_t slen, zg_instance_t *out) {
  for (size_t i = 0; i < slen; i++) {
    char c = s[i];
    if (!(is_alpha(c) ||
          (i > 0 && (is_digit(c) || c == '+' || c == '-' || c == '.'))))
      return -1;
  }
#define SCHEME_IS(lit)                                                         \
  (slen == sizeof(lit) - 1 && strncasecmp(s, lit, slen) == 0)
  if (SCHEME_IS("https") || SCHEME_IS("tls") || SCHEME_IS("ssl")) {
    out->tls = true;
    return SCHEME_IS("https") ? 443 : 0;
  }
  if (zg_instance_h2_name(s, slen, &out->tls))
    out->proto = ZG_INST_PROTO_H2; /* no default port: gRPC has none */
  return SCHEME_IS("http") ? 80 : 0;
#undef SCHEME_IS
}

/* host[:port], the port defaulting to the scheme's. */
static int url_authority(const char *a, size_t an, int default_port,
                         zg_instance_t *out) {
  int br = an > 1 && a[0] == '[' && a[an - 1] == ']';
  if (zg_instance_parse_hostport(a, an, out) == 0)
    return 0;
  if (default_port == 0 ||
      (br ? set_host(out, a + 1, an - 2, 1) : set_host(out, a, an, 0)) != 0)
    return -1;
  out->port = (uint16_t)default_port;
  return 0;
}

/* scheme://host[:port][/path][?query]. The query may carry weight=N;
 * credentials and fragments are refused (neither belongs in a
 * registration, and a fragment cannot reach the instance anyway). */
static int decode_url(const char *s, size_t n, zg_instance_t *out, char *err,
                      size_t errlen) {
  const char *sep = find_scheme_sep(s, n), *auth, *end = s + n, *path, *query;
  int default_port;
  if (!sep || sep == s)
    return fail(err, errlen, "not a URL");
  if ((default_port = url_scheme(s, (size_t)(sep - s), out)) < 0)
    return fail(err, errlen, "bad URL scheme");
  auth = sep + 3;
  if (memchr(auth, '#', (size_t)(end - auth)))
    return fail(err, errlen, "fragment in an instance URL");
  query = memchr(auth, '?', (size_t)(end - auth));
  if (!query)
    query = end;
  path = memchr(auth, '/', (size_t)(query - auth));
  if (!path)
    path = query;
  if (memchr(auth, '@', (size_t)(path - auth)))
    return fail(err, errlen, "credentials in an instance URL");
  if (url_authority(auth, (size_t)(path - auth), default_port, out) != 0)
    return fail(err, errlen, "bad host or port in URL");
  if (query < end && params_weight(query + 1, (size_t)(end - query - 1), "&",
                                   out, err, errlen) != 0)
    return ZG_EDECODE;
  if (set_base_path(out, path, (size_t)(query - path), err, errlen) != 0)
    return ZG_EDECODE;
  out->format = ZG_FORMAT_URL;
  return 0;
}

/* ------------------------------------------------------------ JSON helpers */

/* A JSON integer port, or null/absent (returns 1). A string of digits is
 * a port too: writers that keep every value as text (Spring's metadata
 * maps, hand-written registrations) send "3000". */
static int json_port(json_t *v, uint16_t *out) {
  json_int_t p;
  if (!v || json_is_null(v))
    return 1;
  if (json_is_string(v))
    return parse_port(json_string_value(v), json_string_length(v), out) == 0
               ? 0
               : -1;
  if (!json_is_integer(v))
    return -1;
  p = json_integer_value(v);
  if (p <= 0 || p > 65535)
    return -1;
  *out = (uint16_t)p;
  return 0;
}

/* A JSON host: a name, an IPv4 literal or a bare IPv6 literal. */
static int json_host(json_t *v, zg_instance_t *out) {
  const char *h;
  if (!json_is_string(v))
    return -1;
  h = json_string_value(v);
  if (set_host(out, h, strlen(h), 0) != 0 &&
      set_host(out, h, strlen(h), 1) != 0)
    return -1;
  return 0;
}

/* `host` and `port` members, required both (serverset, Nerve). */
static int json_endpoint(json_t *host, json_t *port, zg_instance_t *out) {
  if (json_host(host, out) != 0 || json_port(port, &out->port) != 0)
    return -1;
  return 0;
}

/* An optional weight: a JSON integer or decimal text (metadata maps that
 * only hold strings, writers that quote every value). Null counts as
 * absent. Reals are not weights, even 2.0: a weight is an integer.
 * Anything else is the default weight, with a warning (bad_weight). */
static int json_weight(json_t *v, zg_instance_t *out, char *err,
                       size_t errlen) {
  json_int_t w;
  if (!v || json_is_null(v))
    return 0;
  if (json_is_string(v))
    return set_weight(out, json_string_value(v), json_string_length(v), err,
                      errlen);
  if (!json_is_integer(v))
    return bad_weight(out, err, errlen, "weight is not an integer");
  w = json_integer_value(v);
  if (w < 0 || w > ZG_WEIGHT_MAX)
    return bad_weight(out, err, errlen,
                      "weight %" JSON_INTEGER_FORMAT " not in 0..%d", w,
                      ZG_WEIGHT_MAX);
  out->weight = (uint32_t)w;
  return 0;
}

/* An optional boolean member: its value, or `def` when absent or null.
 * Anything but a boolean is refused: a string "false" in `enabled` must not
 * be read as enabled. */
static int json_flag(json_t *root, const char *key, bool def, bool *val,
                     char *err, size_t errlen) {
  json_t *v = json_object_get(root, key);
  *val = def;
  if (!v || json_is_null(v))
    return 0;
  if (!json_is_boolean(v))
    return fail(err, errlen, "\"%s\" is not a boolean", key);
  *val = json_is_true(v);
  return 0;
}

/* ----------------------------------------------------------------- Curator */

/* `address`, then `sslPort` before the plain `port` (curator-x-discovery's
 * own ServiceInstance says sslPort is the TLS one): TLS when the
 * registration offers it; the plain port is kept for upstream_tls = off. */
static int curator_address(json_t *root, zg_instance_t *out, char *err,
                           size_t errlen) {
  json_t *addr = json_object_get(root, "address");
  uint16_t port = 0, ssl_port = 0;
  int rp, rs;
  if (!json_is_string(addr))
    return fail(err, errlen, "Curator instance without a string \"address\"");
  if (json_host(addr, out) != 0)
    return fail(err, errlen, "bad Curator \"address\"");
  rp = json_port(json_object_get(root, "port"), &port);
  rs = json_port(json_object_get(root, "sslPort"), &ssl_port);
  if (rp < 0 || rs < 0)
    return fail(err, errlen, "bad Curator \"port\" or \"sslPort\"");
  if (rs == 0) {
    out->port = ssl_port;
    out->tls = true;
    out->plain_port = rp == 0 ? port : 0;
  } else if (rp == 0) {
    out->port = port;
  } else {
    return fail(err, errlen, "Curator instance with neither port nor sslPort");
  }
  return 0;
}

/* payload.protocol or payload.metadata.protocol naming HTTP/2 (h2, h2c,
 * grpc; h2s, grpcs also mean TLS): the instance speaks it. */
static void curator_protocol(json_t *root, zg_instance_t *out) {
  json_t *payload = json_object_get(root, "payload");
  json_t *v = json_object_get(payload, "protocol");
  if (!json_is_string(v))
    v = json_object_get(json_object_get(payload, "metadata"), "protocol");
  if (json_is_string(v) &&
      zg_instance_h2_name(json_string_value(v), json_string_length(v),
                          &out->tls))
    out->proto = ZG_INST_PROTO_H2;
}

/* `enabled` (newer Curator writers only; absent means enabled) and the
 * Spring Cloud payload: metadata.instance_status other than UP (Eureka's
 * OUT_OF_SERVICE, DOWN, ...) takes the instance out of rotation, and
 * metadata.weight, a string since Spring's metadata is a Map<String,
 * String>, sets its share. Dubbo 3 payloads carry neither: the envelope
 * alone decides. */
static int curator_status(json_t *root, zg_instance_t *out, char *err,
                          size_t errlen) {
  json_t *meta = json_object_get(json_object_get(root, "payload"), "metadata");
  json_t *status = json_object_get(meta, "instance_status");
  bool enabled;
  if (json_flag(root, "enabled", true, &enabled, err, errlen) != 0)
    return ZG_EDECODE;
  if (!enabled)
    out->up = false;
  if (status && !json_is_null(status) &&
      !(json_is_string(status) &&
        strcasecmp(json_string_value(status), "UP") == 0))
    out->up = false;
  curator_protocol(root, out);
  return json_weight(json_object_get(meta, "weight"), out, err, errlen);
}

/* Curator's uriSpec is a template split into parts: "{scheme}://{address}:
 * {port}/api" gives scheme, "://", address, ":", port and "/api". A
 * literal scheme "https" means TLS. After the first part, the first literal
 * that starts with '/' is the base path; variables after it are not
 * expanded (they name fields we do not substitute). */
static int curator_uri_spec(json_t *root, zg_instance_t *out, char *err,
                            size_t errlen) {
  json_t *parts = json_object_get(json_object_get(root, "uriSpec"), "parts");
  json_t *part;
  size_t i;
  if (!json_is_array(parts))
    return 0;
  json_array_foreach(parts, i, part) {
    json_t *value = json_object_get(part, "value");
    const char *v = json_string_value(value);
    if (!v || json_is_true(json_object_get(part, "variable")))
      continue;
    if (i == 0 &&
        (strcasecmp(v, "https") == 0 || strncasecmp(v, "https://", 8) == 0))
      out->tls = true;
    if (i == 0) {
      const char *sep = strstr(v, "://");
      size_t n = sep ? (size_t)(sep - v) : strlen(v);
      if (zg_instance_h2_name(v, n, &out->tls))
        out->proto = ZG_INST_PROTO_H2;
    }
    /* The literals of scheme://address:port never start with '/'. */
    if (i > 0 && v[0] == '/')
      return set_base_path(out, v, json_string_length(value), err, errlen);
  }
  return 0;
}

/* Apache Curator ServiceInstance (curator-x-discovery, Spring Cloud
 * Zookeeper, Dubbo 3). Unknown fields are ignored, as Curator's own reader
 * must. */
static int decode_curator(json_t *root, zg_instance_t *out, char *err,
                          size_t errlen) {
  if (curator_address(root, out, err, errlen) != 0 ||
      curator_status(root, out, err, errlen) != 0 ||
      curator_uri_spec(root, out, err, errlen) != 0)
    return ZG_EDECODE;
  out->format = ZG_FORMAT_CURATOR;
  return 0;
}

/* --------------------------------------------------------------- serverset */

/* serviceEndpoint on the port of an additionalEndpoints entry named for
 * HTTP/2 (grpc, h2, h2c; grpcs, h2s: TLS too): the instance speaks it. */
static void serverset_h2_port(json_t *root, json_t *ep, zg_instance_t *out) {
  json_t *more = json_object_get(root, "additionalEndpoints"), *v;
  json_t *port = json_object_get(ep, "port");
  const char *name;
  if (!json_is_object(more) || !json_is_integer(port))
    return;
  json_object_foreach(more, name, v) {
    json_t *p = json_object_get(v, "port");
    if (json_is_integer(p) &&
        json_integer_value(p) == json_integer_value(port) &&
        zg_instance_h2_name(name, strlen(name), &out->tls)) {
      out->proto = ZG_INST_PROTO_H2;
      return;
    }
  }
}

/* Finagle / Aurora serverset member. Readers consider only children named
 * member_* (siblings such as leader-election nodes share the path), and
 * only ALIVE members serve; the others stay known but out of rotation. */
static int decode_serverset(const char *name, json_t *root,
                            const zg_decode_opts_t *opts, zg_instance_t *out,
                            char *err, size_t errlen) {
  const char *endpoint = opts ? opts->endpoint : NULL;
  json_t *ep, *status = json_object_get(root, "status");
  if (name && strncmp(name, "member_", 7) != 0) {
    fail(err, errlen, "serverset child \"%s\" is not named member_*", name);
    return ZG_ESKIP;
  }
  if (endpoint) {
    ep =
        json_object_get(json_object_get(root, "additionalEndpoints"), endpoint);
    if (!json_is_object(ep))
      return fail(err, errlen, "serverset member without endpoint \"%s\"",
                  endpoint);
    out->tls = strcmp(endpoint, "https") == 0;
    if (zg_instance_h2_name(endpoint, strlen(endpoint), &out->tls))
      out->proto = ZG_INST_PROTO_H2;
  } else {
    ep = json_object_get(root, "serviceEndpoint");
    serverset_h2_port(root, ep, out);
  }
  if (json_endpoint(json_object_get(ep, "host"), json_object_get(ep, "port"),
                    out) != 0)
    return fail(err, errlen, "bad serverset endpoint \"%s\"",
                endpoint ? endpoint : "serviceEndpoint");
  if (status && !json_is_null(status) &&
      !(json_is_string(status) &&
        strcmp(json_string_value(status), "ALIVE") == 0))
    out->up = false;
  out->format = ZG_FORMAT_SERVERSET;
  return 0;
}

/* ------------------------------------------------------- Nerve, Registrator */

/* `word` as a whole word of `s` (HAProxy server options are words:
 * "backup disabled", not "nodisabled"). */
static int has_word(const char *s, const char *word) {
  size_t wlen = strlen(word);
  for (const char *p = s; (p = strstr(p, word)) != NULL; p += wlen)
    if ((p == s || is_space(p[-1])) && (p[wlen] == '\0' || is_space(p[wlen])))
      return 1;
  return 0;
}

/* Airbnb Nerve: host, port, optional weight; `down` and HAProxy's
 * `disabled` server option both mean registered but out of rotation. */
static int decode_nerve(json_t *root, zg_instance_t *out, char *err,
                        size_t errlen) {
  json_t *options = json_object_get(root, "haproxy_server_options");
  bool down;
  if (json_endpoint(json_object_get(root, "host"),
                    json_object_get(root, "port"), out) != 0)
    return fail(err, errlen, "bad Nerve \"host\" or \"port\"");
  if (json_weight(json_object_get(root, "weight"), out, err, errlen) != 0 ||
      json_flag(root, "down", false, &down, err, errlen) != 0)
    return ZG_EDECODE;
  if (down || (json_is_string(options) &&
               has_word(json_string_value(options), "disabled")))
    out->up = false;
  out->format = ZG_FORMAT_NERVE;
  return 0;
}

/* gliderlabs Registrator: the host-side address, IP and PublicPort. */
static int decode_registrator(json_t *root, zg_instance_t *out, char *err,
                              size_t errlen) {
  if (json_endpoint(json_object_get(root, "IP"),
                    json_object_get(root, "PublicPort"), out) != 0)
    return fail(err, errlen, "bad Registrator \"IP\" or \"PublicPort\"");
  out->format = ZG_FORMAT_REGISTRATOR;
  return 0;
}

/* etcd's naming endpoints (go.etcd.io/etcd/client/v3/naming/endpoints,
 * and the grpc-go naming update before it): "Addr" is host:port, or a URL
 * (some writers put one there); "Metadata" is free, and an object's
 * "weight" is read as the weight. The older update's "Op" 1 is a
 * deletion: not an instance. */
static int decode_etcd_addr(json_t *root, zg_instance_t *out, char *err,
                            size_t errlen) {
  json_t *addr = json_object_get(root, "Addr");
  json_t *meta = json_object_get(root, "Metadata");
  json_t *op = json_object_get(root, "Op");
  const char *a;
  size_t n;
  if (json_is_integer(op) && json_integer_value(op) == 1) {
    fail(err, errlen, "an etcd naming deletion (\"Op\": 1)");
    return ZG_ESKIP;
  }
  if (!json_is_string(addr) || json_string_length(addr) == 0)
    return fail(err, errlen, "\"Addr\" is not a host:port string");
  a = json_string_value(addr);
  n = json_string_length(addr);
  if (find_scheme_sep(a, n)) {
    int rc = decode_url(a, n, out, err, errlen);
    if (rc != 0)
      return rc;
  } else if (zg_instance_parse_hostport(a, n, out) != 0) {
    return fail(err, errlen, "\"Addr\" is not host:port");
  }
  if (json_is_object(meta) &&
      json_weight(json_object_get(meta, "weight"), out, err, errlen) != 0)
    return ZG_EDECODE;
  out->format = ZG_FORMAT_ETCD_ADDR;
  return 0;
}

/* NaN, Infinity and -Infinity outside strings, as JavaScript's and
 * Python's default JSON writers emit them (RFC 8259 section 6 has no such
 * numbers, and jansson refuses them), quoted into strings: a copy of s in
 * a new buffer, or NULL when there is none (or no memory). The field that
 * holds one is then judged as a string: a weight falls back to the
 * default, a port is refused, an unknown field is ignored. */
static char *quote_non_numbers(const char *s, size_t n, size_t *out_len) {
  static const char *const words[] = {"-Infinity", "Infinity", "NaN"};
  char *out = NULL;
  size_t o = 0, found = 0;
  for (int pass = 0; pass < 2; pass++) {
    int in_string = 0;
    o = 0;
    for (size_t i = 0; i < n;) {
      size_t wl = 0;
      if (in_string) {
        if (s[i] == '\\' && i + 1 < n) {
          if (out) {
            out[o] = s[i];
            out[o + 1] = s[i + 1];
          }
          o += 2;
          i += 2;
          continue;
        }
        if (s[i] == '"')
          in_string = 0;
      } else if (s[i] == '"') {
        in_string = 1;
      } else if (i == 0 || !(is_alpha(s[i - 1]) || is_digit(s[i - 1]))) {
        for (size_t k = 0; k < sizeof(words) / sizeof(words[0]) && !wl; k++) {
          size_t len = strlen(words[k]);
          if (n - i >= len && memcmp(s + i, words[k], len) == 0 &&
              (i + len == n || !(is_alpha(s[i + len]) || is_digit(s[i + len]))))
            wl = len;
        }
      }
      if (wl) {
        if (out) {
          out[o] = '"';
          memcpy(out + o + 1, s + i, wl);
          out[o + 1 + wl] = '"';
        } else {
          found++;
        }
        o += wl + 2;
        i += wl;
        continue;
      }
      if (out)
        out[o] = s[i];
      o++;
      i++;
    }
    if (pass == 0 && (found == 0 || !(out = malloc(o + 1))))
      return NULL;
  }
  *out_len = o;
  return out;
}

static json_t *json_object_load(const char *s, size_t n, char *err,
                                size_t errlen) {
  json_error_t jerr;
  json_t *root = json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    size_t qlen = 0;
    char *quoted = quote_non_numbers(s, n, &qlen);
    if (quoted) {
      json_error_t qerr;
      root = json_loadb(quoted, qlen, JSON_REJECT_DUPLICATES, &qerr);
      free(quoted);
    }
  }
  if (!root) {
    fail(err, errlen, "bad JSON: %s", jerr.text);
  } else if (!json_is_object(root)) {
    fail(err, errlen, "JSON instance data is not an object");
    json_decref(root);
    root = NULL;
  }
  return root;
}

/* JSON told apart by its fields (docs/registry-formats.md, "Order of
 * decisions"). */
static int decode_json(const char *name, const char *s, size_t n,
                       const zg_decode_opts_t *opts, zg_instance_t *out,
                       char *err, size_t errlen) {
  json_t *root = json_object_load(s, n, err, errlen);
  int rc;
#define HAS(key) (json_object_get(root, key) != NULL)
  if (!root)
    return ZG_EDECODE;
  if (HAS("serviceEndpoint"))
    rc = decode_serverset(name, root, opts, out, err, errlen);
  else if (HAS("address") &&
           (HAS("registrationTimeUTC") || HAS("serviceType") ||
            HAS("sslPort") || HAS("port")))
    rc = decode_curator(root, out, err, errlen);
  else if (HAS("IP") && HAS("PublicPort"))
    rc = decode_registrator(root, out, err, errlen);
  else if (HAS("Addr"))
    rc = decode_etcd_addr(root, out, err, errlen);
  else if (HAS("host") && HAS("port"))
    rc = decode_nerve(root, out, err, errlen);
  else
    rc = fail(err, errlen, "JSON of an unknown registry format");
#undef HAS
  json_decref(root);
  return rc;
}

/* -------------------------------------------------- Nerve base64_ names */

#define NERVE_PREFIX "base64_"

/* URL-safe base64 (RFC 4648 section 5), padded or not, into a new buffer.
 * EVP_DecodeBlock wants the standard alphabet with its padding, and the
 * length it returns counts the padding as zero bytes: subtract them. */
static int b64url_decode(const char *s, size_t n, char **bin, size_t *len) {
  size_t m = n, pad;
  char *text;
  int r;
  while (m > 0 && s[m - 1] == '=' && n - m < 2)
    m--;
  pad = (4 - m % 4) % 4;
  if (m == 0 || m % 4 == 1 || (m != n && m + pad != n) || n > INT_MAX / 2)
    return -1;
  for (size_t i = 0; i < m; i++)
    if (!(is_alpha(s[i]) || is_digit(s[i]) || s[i] == '-' || s[i] == '_'))
      return -1;
  if (!(text = malloc(m + pad)) || !(*bin = malloc((m + pad) / 4 * 3 + 1))) {
    free(text);
    return -1;
  }
  for (size_t i = 0; i < m; i++)
    text[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
  memset(text + m, '=', pad);
  r = EVP_DecodeBlock((unsigned char *)*bin, (unsigned char *)text,
                      (int)(m + pad));
  free(text);
  if (r < 0 || (size_t)r < pad) {
    free(*bin);
    return -1;
  }
  *len = (size_t)r - pad;
  return 0;
}

/* base64_<len>_<text>_<seq>: <len> digits, then exactly <len> bytes of
 * text (which may hold '_' itself, so <len> is what says where it ends),
 * then '_' and the ZooKeeper sequence (digits). Returns the text. */
static int nerve_name_text(const char *name, const char **text, size_t *len,
                           char *err, size_t errlen) {
  const char *p = name + strlen(NERVE_PREFIX), *rest;
  size_t n = 0, total = strlen(name);
  if (!is_digit(*p))
    return fail(err, errlen, "Nerve name without a length after base64_");
  for (; is_digit(*p) && n <= total; p++)
    n = n * 10 + (size_t)(*p - '0');
  if (*p != '_' || n > total - (size_t)(p + 1 - name) || p[1 + n] != '_')
    return fail(err, errlen, "Nerve name: base64 length %zu does not match", n);
  for (rest = p + 2 + n; *rest; rest++)
    if (!is_digit(*rest))
      return fail(err, errlen, "Nerve name: base64 length %zu does not match",
                  n);
  *text = p + 1;
  *len = n;
  return 0;
}

/* Nerve's path encoding: the registration JSON in the child's name, so
 * that readers need not fetch the data. */
static int decode_nerve_name(const char *name, zg_instance_t *out, char *err,
                             size_t errlen) {
  const char *text = NULL;
  char *json;
  size_t tlen = 0, jlen = 0;
  json_t *root;
  int rc;
  if (nerve_name_text(name, &text, &tlen, err, errlen) != 0)
    return ZG_EDECODE;
  if (b64url_decode(text, tlen, &json, &jlen) != 0)
    return fail(err, errlen, "Nerve name: bad URL-safe base64");
  root = json_object_load(json, jlen, err, errlen);
  free(json);
  if (!root)
    return ZG_EDECODE;
  rc = decode_nerve(root, out, err, errlen);
  json_decref(root);
  if (rc == 0)
    out->format = ZG_FORMAT_NERVE_NAME;
  return rc;
}

/* ----------------------------------------------------- Dubbo 2 providers */

#define PCT_SCHEME_SEP "%3A%2F%2F" /* "://", URL-encoded */

/* Length of the scheme when `name` starts with <scheme>%3A%2F%2F (hex
 * digits in either case), else 0. */
static size_t dubbo_scheme_len(const char *name) {
  size_t i = 0;
  if (!is_alpha(name[0]))
    return 0;
  while (is_alpha(name[i]) || is_digit(name[i]) || name[i] == '+' ||
         name[i] == '-' || name[i] == '.')
    i++;
  return strncasecmp(name + i, PCT_SCHEME_SEP, strlen(PCT_SCHEME_SEP)) == 0 ? i
                                                                            : 0;
}

/* Strict percent-decoding (RFC 3986 section 2.1) of s into d: every '%'
 * takes two hex digits, and %00 is refused since it would cut the text
 * short. '+' stays '+': this is not form encoding. */
static int pct_decode(const char *s, char *d) {
  size_t j = 0;
  for (size_t i = 0; s[i]; i++) {
    int hi, lo;
    if (s[i] != '%') {
      d[j++] = s[i];
      continue;
    }
    /* s is NUL-terminated and hex_value('\0') < 0: no overread. */
    hi = hex_value(s[i + 1]);
    lo = hi >= 0 ? hex_value(s[i + 2]) : -1;
    if (lo < 0 || (hi | lo) == 0)
      return -1;
    d[j++] = (char)(hi * 16 + lo);
    i += 2;
  }
  d[j] = '\0';
  return 0;
}

/* Provider parameters: weight=N; enabled=false or disabled=true (set by
 * Dubbo's admin console to take a provider out) mean out of rotation. */
static int dubbo_params(const char *q, zg_instance_t *out, char *err,
                        size_t errlen) {
  const char *p = q, *end = q + strlen(q);
  param_t kv;
  while (next_param(&p, end, "&", &kv)) {
    if (key_is(&kv, "weight") &&
        set_weight(out, kv.val, kv.vlen, err, errlen) != 0)
      return ZG_EDECODE;
    if ((key_is(&kv, "enabled") && val_is(&kv, "false")) ||
        (key_is(&kv, "disabled") && val_is(&kv, "true")))
      out->up = false;
  }
  return 0;
}

/* scheme://[user[:password]@]host:port/interface?params. The interface is
 * a service name, not a base path. Credentials are skipped: the address
 * after them is unambiguous. */
static int dubbo_url(const char *url, size_t scheme_len, zg_instance_t *out,
                     char *err, size_t errlen) {
  const char *auth = url + scheme_len + 3, *at, *query;
  size_t alen = strcspn(auth, "/?");
  if (url_scheme(url, scheme_len, out) < 0)
    return fail(err, errlen, "bad scheme in Dubbo provider URL");
  at = memchr(auth, '@', alen);
  if (at) {
    alen -= (size_t)(at + 1 - auth);
    auth = at + 1;
  }
  if (zg_instance_parse_hostport(auth, alen, out) != 0)
    return fail(err, errlen, "bad host:port in Dubbo provider URL");
  query = strchr(auth + alen, '?');
  if (query && dubbo_params(query + 1, out, err, errlen) != 0)
    return ZG_EDECODE;
  out->format = ZG_FORMAT_DUBBO;
  return 0;
}

/* Dubbo 2: the child's name is the provider URL, URL-encoded once. */
static int decode_dubbo(const char *name, size_t scheme_len, zg_instance_t *out,
                        char *err, size_t errlen) {
  char *url = malloc(strlen(name) + 1); /* decoding only shortens */
  int rc;
  if (!url)
    return fail(err, errlen, "out of memory");
  if (pct_decode(name, url) != 0)
    rc = fail(err, errlen, "bad percent-escape in Dubbo provider name");
  else
    rc = dubbo_url(url, scheme_len, out, err, errlen);
  free(url);
  return rc;
}

/* ------------------------------------------------------- host:port, free */

/* `host:port` data, optionally followed by free text with parameters
 * ("10.0.0.5:8080 weight=2"). Returns 1 when the first word is not
 * host:port. */
static int decode_hostport(const char *s, size_t n, zg_instance_t *out,
                           char *err, size_t errlen) {
  size_t word = 0;
  while (word < n && !is_space(s[word]))
    word++;
  if (zg_instance_parse_hostport(s, word, out) != 0)
    return 1;
  if (params_weight(s + word, n - word, TEXT_SEPS, out, err, errlen) != 0)
    return ZG_EDECODE;
  out->format = ZG_FORMAT_HOSTPORT;
  return 0;
}

/* Empty data or free text ("@params weight=2") beside a child named
 * host:port. */
static int decode_by_child_name(const char *name, const char *s, size_t n,
                                zg_instance_t *out, char *err, size_t errlen) {
  if (!name || zg_instance_parse_hostport(name, strlen(name), out) != 0)
    return fail(err, errlen,
                n ? "data is neither a URL, JSON nor host:port"
                  : "empty data and a child name that is not host:port");
  if (params_weight(s, n, TEXT_SEPS, out, err, errlen) != 0)
    return ZG_EDECODE;
  out->format = ZG_FORMAT_NAME;
  return 0;
}

/* --------------------------------------------------------------- dispatch */

static void instance_init(zg_instance_t *out) {
  memset(out, 0, sizeof(*out));
  out->up = true;
  out->weight = ZG_WEIGHT_DEFAULT;
}

/* Name-only formats: a Nerve base64_ name or a Dubbo provider URL says
 * everything, so the data is not consulted and both public entry points
 * agree. Returns 1 for any other name. */
static int name_only(const char *name, zg_instance_t *out, char *err,
                     size_t errlen) {
  size_t scheme_len;
  if (!name)
    return 1;
  if (strncmp(name, NERVE_PREFIX, strlen(NERVE_PREFIX)) == 0)
    return decode_nerve_name(name, out, err, errlen);
  if ((scheme_len = dubbo_scheme_len(name)) > 0)
    return decode_dubbo(name, scheme_len, out, err, errlen);
  return 1;
}

/* The data's format by its first bytes: JSON, a URL, host:port; empty or
 * free text leaves the child's name to give the address. */
static int decode_data(const char *name, const char *data, size_t len,
                       const zg_decode_opts_t *opts, zg_instance_t *out,
                       char *err, size_t errlen) {
  const char *s = data ? data : "";
  size_t n = data ? len : 0;
  int rc;
  while (n > 0 && is_space(s[0]))
    s++, n--;
  while (n > 0 && is_space(s[n - 1]))
    n--;
  if (memchr(s, '\0', n))
    return fail(err, errlen, "binary instance data");
  if (n > 0 && s[0] == '{')
    return decode_json(name, s, n, opts, out, err, errlen);
  if (find_scheme_sep(s, n))
    return decode_url(s, n, out, err, errlen);
  if (n > 0 && (rc = decode_hostport(s, n, out, err, errlen)) <= 0)
    return rc;
  return decode_by_child_name(name, s, n, out, err, errlen);
}

static int set_name(zg_instance_t *out, const char *name, char *err,
                    size_t errlen) {
  if (name && !(out->name = strdup(name)))
    return fail(err, errlen, "out of memory");
  return 0;
}

int zg_instance_decode_name(const char *name, zg_instance_t *out, char *err,
                            size_t errlen) {
  int rc;
  if (err && errlen)
    err[0] = '\0';
  instance_init(out);
  rc = name_only(name, out, err, errlen);
  if (rc == 0)
    rc = set_name(out, name, err, errlen);
  if (rc != 0)
    zg_instance_clear(out);
  return rc;
}

int zg_instance_decode(const char *name, const char *data, size_t len,
                       const zg_decode_opts_t *opts, zg_instance_t *out,
                       char *err, size_t errlen) {
  int rc;
  if (err && errlen)
    err[0] = '\0';
  instance_init(out);
  rc = name_only(name, out, err, errlen);
  if (rc == 1)
    rc = decode_data(name, data, len, opts, out, err, errlen);
  if (rc == 0)
    rc = set_name(out, name, err, errlen);
  if (rc != 0)
    zg_instance_clear(out);
  return rc;
}

int zg_instance_copy(zg_instance_t *dst, const zg_instance_t *src) {
  *dst = *src;
  dst->base_path = NULL;
  dst->name = NULL;
  dst->key = NULL;
  if ((src->base_path && !(dst->base_path = strdup(src->base_path))) ||
      (src->name && !(dst->name = strdup(src->name))) ||
      (src->key && !(dst->key = strdup(src->key)))) {
    zg_instance_clear(dst);
    return UV_ENOMEM;
  }
  return 0;
}

void zg_instance_clear(zg_instance_t *inst) {
  free(inst->base_path);
  free(inst->name);
  free(inst->key);
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
  case ZG_FORMAT_SERVERSET:
    return "serverset";
  case ZG_FORMAT_NERVE:
    return "nerve";
  case ZG_FORMAT_NERVE_NAME:
    return "nerve-name";
  case ZG_FORMAT_REGISTRATOR:
    return "registrator";
  case ZG_FORMAT_DUBBO:
    return "dubbo";
  case ZG_FORMAT_ETCD_ADDR:
    return "etcd-addr";
  default:
    return "unknown";
  }
}

/* Without snprintf: the HTTP proxy asks for it on every request. */
const char *zg_instance_addr_port_str(const zg_instance_t *inst, uint16_t port,
                                      char *buf, size_t len) {
  char tmp[ZG_HOST_MAX + 16], digits[8];
  size_t host_len = strnlen(inst->host, sizeof(inst->host));
  size_t n = 0, k = sizeof(digits);
  bool v6 = memchr(inst->host, ':', host_len) != NULL;
  unsigned p = port;

  if (len == 0)
    return buf;
  if (v6)
    tmp[n++] = '[';
  memcpy(tmp + n, inst->host, host_len);
  n += host_len;
  if (v6)
    tmp[n++] = ']';
  tmp[n++] = ':';
  do {
    digits[--k] = (char)('0' + p % 10);
    p /= 10;
  } while (p > 0);
  memcpy(tmp + n, digits + k, sizeof(digits) - k);
  n += sizeof(digits) - k;
  if (n >= len)
    n = len - 1; /* truncated, as snprintf would */
  memcpy(buf, tmp, n);
  buf[n] = '\0';
  return buf;
}

const char *zg_instance_addr_str(const zg_instance_t *inst, char *buf,
                                 size_t len) {
  return zg_instance_addr_port_str(inst, inst->port, buf, len);
}

bool zg_instance_use_tls(const zg_instance_t *inst, zg_upstream_tls_t mode,
                         uint16_t *port) {
  *port = inst->port;
  if (mode == ZG_UPSTREAM_TLS_OFF) {
    if (inst->plain_port)
      *port = inst->plain_port;
    return false;
  }
  return mode == ZG_UPSTREAM_TLS_ON || inst->tls;
}
