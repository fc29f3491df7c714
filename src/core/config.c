/* Configuration: reads the INI file with inih, then turns the raw keys into
 * an immutable zg_config_t. Two passes, so that every error of a file is
 * reported at once with FILE:LINE, and so that checks across sections
 * (duplicate listen addresses, ZooKeeper needed but not configured) see the
 * whole file.
 *
 * inih's handler is not told line numbers (Debian builds it without
 * INI_HANDLER_LINENO), so our reader counts lines and notes section headers
 * as they go by; inih calls the handler for a line right after reading it,
 * so the count is the handler's line. The reader also sees sections with
 * no keys, which inih would never report. */
#include "core/config.h"

#include "core/error.h"
#include "core/http_msg.h"
#include "core/metrics.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <strings.h>
#include <uv.h>

#define SECTION_MAX 48 /* inih truncates section names past 49 bytes */

typedef struct {
  char *section; /* the header's name, NULL for keys before any header */
  char *key;
  char *value;
  int line;
  int bad; /* its ${...} failed (reported): not interpreted further */
} raw_kv_t;

typedef struct {
  char *name;
  int line;
} raw_section_t;

typedef struct {
  /* reader */
  FILE *file;
  const char *text;
  int line;
  int at_line_start;
  /* what was read */
  raw_section_t *sections;
  size_t n_sections;
  raw_kv_t *kvs;
  size_t n_kvs;
  int oom;
  int admin_listen_line;
  int max_head_line; /* [proxy] max_head_connections, 0: absent */
  /* output */
  const char *name;
  zg_config_errors_t *errs;
  int *err_lines; /* line of each error, to report them in file order */
  int hosts_seen; /* [zookeeper] hosts given, valid or not */
  int etcd_endpoints_seen; /* [etcd] endpoints given, valid or not */
  int etcd_ca_line, etcd_cert_line, etcd_key_line; /* 0: absent */
  const zg_config_checks_t *checks; /* NULL: no file is checked */
} parse_t;

static void add_error(parse_t *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add_error(parse_t *p, int line, const char *fmt, ...) {
  char msg[512], *full;
  char **lines;
  int *el;
  va_list ap;
  int n;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  /* Line 0: about the file as a whole (it cannot be opened). */
  if (line == 0)
    n = snprintf(NULL, 0, "%s: %s", p->name, msg);
  else
    n = snprintf(NULL, 0, "%s:%d: %s", p->name, line, msg);
  full = malloc((size_t)n + 1);
  lines = realloc(p->errs->lines, (p->errs->n + 1) * sizeof(*lines));
  if (lines)
    p->errs->lines = lines;
  el = realloc(p->err_lines, (p->errs->n + 1) * sizeof(*el));
  if (el)
    p->err_lines = el;
  if (!full || !lines || !el) {
    free(full);
    p->oom = 1;
    return;
  }
  el[p->errs->n] = line;
  if (line == 0)
    snprintf(full, (size_t)n + 1, "%s: %s", p->name, msg);
  else
    snprintf(full, (size_t)n + 1, "%s:%d: %s", p->name, line, msg);
  p->errs->lines = lines;
  p->errs->lines[p->errs->n++] = full;
}

/* Notes a section header seen by the reader. */
static void note_section(parse_t *p, const char *s) {
  const char *end;
  raw_section_t *ns;
  while (*s == ' ' || *s == '\t')
    s++;
  if (*s != '[')
    return;
  end = strchr(s + 1, ']');
  if (!end)
    return; /* inih reports the syntax error */
  if ((size_t)(end - s - 1) > SECTION_MAX) {
    add_error(p, p->line, "section name longer than %d characters",
              SECTION_MAX);
  }
  ns = realloc(p->sections, (p->n_sections + 1) * sizeof(*ns));
  if (!ns) {
    p->oom = 1;
    return;
  }
  p->sections = ns;
  ns[p->n_sections].line = p->line;
  ns[p->n_sections].name = strndup(s + 1, (size_t)(end - s - 1));
  if (!ns[p->n_sections].name)
    p->oom = 1;
  p->n_sections++;
}

static char *reader(char *str, int num, void *stream) {
  parse_t *p = stream;
  size_t len;
  if (p->file) {
    if (!fgets(str, num, p->file))
      return NULL;
  } else {
    const char *nl;
    size_t want;
    if (!*p->text)
      return NULL;
    nl = strchr(p->text, '\n');
    want = nl ? (size_t)(nl - p->text) + 1 : strlen(p->text);
    if (want > (size_t)num - 1)
      want = (size_t)num - 1;
    memcpy(str, p->text, want);
    str[want] = '\0';
    p->text += want;
  }
  if (p->at_line_start) {
    p->line++;
    note_section(p, str);
  }
  len = strlen(str);
  p->at_line_start = len > 0 && str[len - 1] == '\n';
  return str;
}

/* ${VAR} and ${VAR:-default} in a value (for containers: hosts and ports
 * from the environment). VAR is [A-Za-z_][A-Za-z0-9_]*; the default is
 * the text up to the next '}', taken as written, used when VAR is unset or
 * empty (as in the shell). `$${` is a literal `${`; any other '$' stays as
 * it is, so values that held a '$' before (passwords) keep their meaning.
 * A variable unset without a default, or a `${` that does not close, is an
 * error at the key's line; the value of a variable is never in a message
 * (it may be a secret). Returns a new string, or NULL when out of memory
 * (an error leaves the value as written). */
static char *expand_value(parse_t *p, const char *v, int *bad) {
  zg_text_t out = {0};
  char *r;
  while (*v) {
    const char *name, *end, *val;
    size_t nlen;
    if (v[0] == '$' && v[1] == '$' && v[2] == '{') {
      zg_text_append(&out, "${", 2);
      v += 3;
      continue;
    }
    if (v[0] != '$' || v[1] != '{') {
      zg_text_append(&out, v++, 1);
      continue;
    }
    name = v + 2;
    nlen = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789_");
    end = strchr(name, '}');
    if (nlen == 0 || (name[0] >= '0' && name[0] <= '9') || nlen > 128 || !end ||
        (name[nlen] != '}' && strncmp(name + nlen, ":-", 2) != 0)) {
      add_error(p, p->line,
                "expected ${NAME} or ${NAME:-default} (NAME: letters, digits "
                "and _), or $${ for a literal ${");
      zg_text_free(&out);
      *bad = 1;
      return strdup(v);
    }
    {
      char var[129];
      memcpy(var, name, nlen);
      var[nlen] = '\0';
      val = getenv(var);
      if (name[nlen] == ':' && (!val || !*val)) {
        val = name + nlen + 2;
        zg_text_append(&out, val, (size_t)(end - val));
      } else if (!val) {
        add_error(p, p->line,
                  "environment variable %s is not set (give a default: "
                  "${%s:-VALUE})",
                  var, var);
        *bad = 1;
      } else {
        zg_text_append(&out, val, strlen(val));
      }
    }
    v = end + 1;
  }
  zg_text_append(&out, "", 1); /* the NUL, and a value even when empty */
  if (out.oom) {
    zg_text_free(&out);
    return NULL;
  }
  r = out.p;
  return r;
}

static int handler(void *user, const char *section, const char *name,
                   const char *value) {
  parse_t *p = user;
  raw_kv_t *kv = realloc(p->kvs, (p->n_kvs + 1) * sizeof(*kv));
  (void)section; /* the reader's note of the last header is used instead */
  if (!kv) {
    p->oom = 1;
    return 1;
  }
  p->kvs = kv;
  kv = &p->kvs[p->n_kvs++];
  kv->section =
      p->n_sections ? strdup(p->sections[p->n_sections - 1].name) : NULL;
  kv->key = strdup(name);
  kv->bad = 0;
  kv->value = expand_value(p, value ? value : "", &kv->bad);
  kv->line = p->line;
  if ((p->n_sections && !kv->section) || !kv->key || !kv->value)
    p->oom = 1;
  return 1;
}

/* ---- value parsers ---------------------------------------------------- */

int zg_parse_duration_ms(const char *s, uint64_t *out_ms) {
  uint64_t v = 0, mult;
  const char *u = s;
  if (*s < '0' || *s > '9')
    return ZG_ECONFIG;
  while (*u >= '0' && *u <= '9') {
    if (v > UINT64_MAX / 10 / 3600000)
      return ZG_ECONFIG;
    v = v * 10 + (uint64_t)(*u - '0');
    u++;
  }
  if (strcmp(u, "ms") == 0)
    mult = 1;
  else if (strcmp(u, "s") == 0)
    mult = 1000;
  else if (strcmp(u, "m") == 0)
    mult = 60000;
  else if (strcmp(u, "h") == 0)
    mult = 3600000;
  else if (*u == '\0' && v == 0)
    mult = 0; /* a bare 0 needs no unit */
  else
    return ZG_ECONFIG;
  *out_ms = v * mult;
  return 0;
}

int zg_parse_size(const char *s, uint64_t *out) {
  uint64_t v = 0, mult = 1;
  const char *u = s;
  if (*s < '0' || *s > '9')
    return ZG_ECONFIG;
  while (*u >= '0' && *u <= '9') {
    if (v > (UINT64_MAX >> 30) / 10)
      return ZG_ECONFIG;
    v = v * 10 + (uint64_t)(*u - '0');
    u++;
  }
  if (*u == 'k' || *u == 'K')
    mult = (uint64_t)1 << 10;
  else if (*u == 'm' || *u == 'M')
    mult = (uint64_t)1 << 20;
  else if (*u == 'g' || *u == 'G')
    mult = (uint64_t)1 << 30;
  else if (*u != '\0')
    return ZG_ECONFIG;
  if (*u != '\0' && u[1] != '\0')
    return ZG_ECONFIG;
  *out = v * mult;
  return 0;
}

int zg_parse_bool(const char *s, bool *out) {
  if (!strcasecmp(s, "yes") || !strcasecmp(s, "on") || !strcasecmp(s, "true") ||
      !strcmp(s, "1"))
    *out = true;
  else if (!strcasecmp(s, "no") || !strcasecmp(s, "off") ||
           !strcasecmp(s, "false") || !strcmp(s, "0"))
    *out = false;
  else
    return ZG_ECONFIG;
  return 0;
}

int zg_parse_listen(const char *s, zg_listen_addr_t *out) {
  zg_instance_t tmp;
  size_t len = strlen(s);
  memset(out, 0, sizeof(*out));
  memset(&tmp, 0, sizeof(tmp));
  if (len >= sizeof(out->text))
    return ZG_ECONFIG;
  if (len > 2 && s[0] == '*' && s[1] == ':') {
    /* `*` is every IPv4 address; `[::]:PORT` asks for IPv6 as well. */
    char buf[80];
    snprintf(buf, sizeof(buf), "0.0.0.0%s", s + 1);
    if (zg_instance_parse_hostport(buf, strlen(buf), &tmp) != 0)
      return ZG_ECONFIG;
  } else if (zg_instance_parse_hostport(s, len, &tmp) != 0 || !tmp.is_ip) {
    return ZG_ECONFIG;
  }
  if (strchr(tmp.host, ':')) {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&out->ss;
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(tmp.port);
    if (inet_pton(AF_INET6, tmp.host, &a6->sin6_addr) != 1)
      return ZG_ECONFIG;
  } else {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&out->ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons(tmp.port);
    if (inet_pton(AF_INET, tmp.host, &a4->sin_addr) != 1)
      return ZG_ECONFIG;
  }
  memcpy(out->text, s, len + 1);
  return 0;
}

static int same_sockaddr(const struct sockaddr_storage *a,
                         const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family)
    return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port &&
           x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  {
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
  }
}

/* ---- interpretation --------------------------------------------------- */

typedef enum {
  SEC_ZOOKEEPER,
  SEC_ETCD,
  SEC_PROXY,
  SEC_ADMIN,
  SEC_SERVICE,
  SEC_DISCOVER,
  SEC_OTHER
} sec_kind_t;

/* Where the balance keys were (0: absent), in a service or discover
 * section. */
typedef struct {
  int balance, hash_key, slow_start, latency, decay;
} bal_lines_t;

typedef struct {
  zg_service_conf_t *svc; /* the service being filled, for SEC_SERVICE */
  int listen_line;
  bool has_listen;  /* a valid listen address */
  bool listen_seen; /* a listen key, valid or not: no second error */
  bool source_seen; /* a zk_path or instances key, valid or not */
  int zk_path_line;
  int etcd_prefix_line;
  int http_key_line; /* first HTTP-only key, to report it on a tcp service */
  int sni_line;      /* the sni key, to report it on a non-TLS service */
  bal_lines_t bal;
  /* TLS keys, by line (0: absent) */
  int cert_line, key_line, ca_line, verify_line, ciphers_line, suites_line;
  bool tls_bad; /* a TLS key had a bad value: no file checks */
  /* upstream_* keys, by line (0: absent) */
  int up_tls_line, up_ca_line, up_verify_line, up_sni_line, up_cert_line,
      up_key_line;
  bool up_bad; /* an upstream_* key had a bad value: no file checks */
} svc_state_t;

static int same_str(const char *a, const char *b);

static int valid_service_name(const char *s) {
  if (!*s)
    return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
      return 0;
  return 1;
}

static int valid_zk_path(const char *s);

/* host:port[,host:port...][/chroot]: the shape only; the client resolves. */
static int valid_zk_hosts(const char *s) {
  const char *chroot = strchr(s, '/');
  size_t hlen = chroot ? (size_t)(chroot - s) : strlen(s);
  const char *p = s, *end = s + hlen;
  zg_instance_t tmp;
  if (hlen == 0)
    return 0;
  while (p < end) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *e = comma ? comma : end;
    while (p < e && *p == ' ')
      p++;
    if (zg_instance_parse_hostport(p, (size_t)(e - p), &tmp) != 0)
      return 0;
    p = comma ? comma + 1 : end;
    if (comma && p == end)
      return 0;
  }
  /* The client takes everything from the first '/' as the chroot, the
   * path every zk_path is relative to: a comma there is a host list gone
   * wrong, not a path. */
  if (chroot && (!valid_zk_path(chroot) || strcmp(chroot, "/") == 0 ||
                 strchr(chroot, ',')))
    return 0;
  return 1;
}

static int valid_zk_path(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || s[0] != '/' || (n > 1 && s[n - 1] == '/') || strstr(s, "//"))
    return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return 0;
  return 1;
}

/* A route host: a DNS name, optionally "*." in front. */
static int valid_route_host(const char *s) {
  zg_instance_t tmp;
  char buf[ZG_HOST_MAX + 8];
  if (!strncmp(s, "*.", 2))
    s += 2;
  if (!*s || strlen(s) > ZG_HOST_MAX)
    return 0;
  snprintf(buf, sizeof(buf), "%s:1", s);
  memset(&tmp, 0, sizeof(tmp));
  return zg_instance_parse_hostport(buf, strlen(buf), &tmp) == 0;
}

/* An sni pattern: a DNS name as a ClientHello can carry it (RFC 6066 §3:
 * letters, digits, '-', '_', labels of 1..63, no trailing dot, 253 at
 * most; what src/core/tls_hello.c accepts), optionally "*." in front. */
static int valid_sni(const char *s) {
  size_t label = 0, n;
  if (!strncmp(s, "*.", 2))
    s += 2;
  n = strlen(s);
  if (n == 0 || n > 253)
    return 0;
  for (; *s; s++) {
    char c = *s;
    if (c == '.') {
      if (label == 0)
        return 0;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c >= '0' && c <= '9') || c == '-' || c == '_') {
      if (++label > 63)
        return 0;
    } else {
      return 0;
    }
  }
  return label > 0;
}

static int parse_instances(parse_t *p, zg_service_conf_t *svc,
                           const raw_kv_t *kv) {
  const char *s = kv->value;
  while (*s) {
    const char *comma = strchr(s, ','), *e = comma ? comma : s + strlen(s);
    const char *b = s;
    zg_instance_t inst, *ni;
    while (b < e && (*b == ' ' || *b == '\t'))
      b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
      e--;
    memset(&inst, 0, sizeof(inst));
    /* https://host:port marks an instance that speaks TLS (as registry
     * URLs do, for upstream_tls = auto); http:// is the plain default. */
    if ((size_t)(e - b) > 8 && !strncasecmp(b, "https://", 8)) {
      inst.tls = true;
      b += 8;
    } else if ((size_t)(e - b) > 7 && !strncasecmp(b, "http://", 7)) {
      b += 7;
    } else {
      /* h2c://, grpc:// (and h2s://, grpcs:// over TLS): HTTP/2, for
       * upstream_protocol = auto, as registry URLs say it. */
      const char *sep = memchr(b, ':', (size_t)(e - b));
      if (sep && e - sep > 3 && !strncmp(sep, "://", 3) &&
          zg_instance_h2_name(b, (size_t)(sep - b), &inst.tls)) {
        inst.proto = ZG_INST_PROTO_H2;
        b = sep + 3;
      }
    }
    if (zg_instance_parse_hostport(b, (size_t)(e - b), &inst) != 0) {
      add_error(p, kv->line,
                "instances: '%.*s' is not host:port, https://host:port or "
                "grpc://host:port",
                (int)(e - b), b);
      return -1;
    }
    inst.format = ZG_FORMAT_STATIC;
    inst.up = true;
    inst.weight = ZG_WEIGHT_DEFAULT;
    ni = realloc(svc->instances, (svc->n_instances + 1) * sizeof(*ni));
    if (!ni) {
      p->oom = 1;
      return -1;
    }
    svc->instances = ni;
    ni[svc->n_instances++] = inst;
    if (!comma)
      break;
    s = comma + 1;
  }
  if (svc->n_instances == 0) {
    add_error(p, kv->line, "instances: empty list");
    return -1;
  }
  return 0;
}

static void duration_key(parse_t *p, const raw_kv_t *kv, uint64_t *out,
                         uint64_t min_ms);

/* auth = digest:USER:PASSWORD. ZooKeeper splits "user:password" at the
 * first colon, so the password may hold colons and the user may not. The
 * value holds a secret: messages never quote it. */
static void auth_key(parse_t *p, zg_config_t *cfg, const raw_kv_t *kv) {
  const char *v = kv->value, *colon = strchr(v, ':'), *user, *pass;
  if (!colon || (size_t)(colon - v) != 6 || strncmp(v, "digest", 6) != 0) {
    /* Not even the scheme is echoed: it may be a password put first. */
    add_error(p, kv->line,
              "auth: expected digest:USER:PASSWORD (digest is the only "
              "scheme)");
    return;
  }
  user = colon + 1;
  pass = strchr(user, ':');
  if (!pass || pass == user) {
    add_error(p, kv->line,
              "auth: the user is missing; expected digest:USER:PASSWORD");
    return;
  }
  if (pass[1] == '\0') {
    add_error(p, kv->line,
              "auth: the password is empty; expected digest:USER:PASSWORD");
    return;
  }
  for (const char *c = user; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) {
      add_error(p, kv->line,
                "auth: control characters are not allowed in the user or "
                "the password");
      return;
    }
  free(cfg->zk.auth);
  if (!(cfg->zk.auth = strdup(user)))
    p->oom = 1;
}

static void zookeeper_key(parse_t *p, zg_config_t *cfg, const raw_kv_t *kv) {
  if (!strcmp(kv->key, "hosts")) {
    p->hosts_seen = 1;
    if (!valid_zk_hosts(kv->value)) {
      add_error(p, kv->line,
                "hosts: expected host:port[,host:port...][/chroot], got '%s'",
                kv->value);
      return;
    }
    free(cfg->zk.hosts);
    cfg->zk.hosts = strdup(kv->value);
    if (!cfg->zk.hosts)
      p->oom = 1;
  } else if (!strcmp(kv->key, "session_timeout")) {
    uint64_t ms;
    if (zg_parse_duration_ms(kv->value, &ms) != 0 || ms < 100 || ms > 3600000) {
      add_error(p, kv->line,
                "session_timeout: expected a duration between 100ms and 1h "
                "(e.g. 10s), got '%s'",
                kv->value);
      return;
    }
    cfg->zk.session_timeout_ms = ms;
  } else if (!strcmp(kv->key, "coalesce_window")) {
    uint64_t ms;
    if (zg_parse_duration_ms(kv->value, &ms) != 0 || ms > 10000) {
      add_error(p, kv->line,
                "coalesce_window: expected a duration up to 10s (e.g. 10ms), "
                "got '%s'",
                kv->value);
      return;
    }
    cfg->zk.coalesce_window_ms = ms;
  } else if (!strcmp(kv->key, "state_file")) {
    if (kv->value[0] != '/') {
      add_error(p, kv->line, "state_file: expected an absolute path, got '%s'",
                kv->value);
      return;
    }
    free(cfg->zk.state_file);
    if (!(cfg->zk.state_file = strdup(kv->value)))
      p->oom = 1;
  } else if (!strcmp(kv->key, "max_stale")) {
    duration_key(p, kv, &cfg->zk.max_stale_ms, 0);
  } else if (!strcmp(kv->key, "max_watch_bytes")) {
    /* Bytes, or k/m (1024-based). 0 turns the budget off; below 1k no
     * session would keep a watch over a reconnection. */
    char *end;
    unsigned long long v, unit = 1, max = 1024ULL * 1024 * 1024;
    errno = 0;
    v = strtoull(kv->value, &end, 10);
    if (end != kv->value && (*end == 'k' || *end == 'K'))
      unit = 1024;
    else if (end != kv->value && (*end == 'm' || *end == 'M'))
      unit = 1024 * 1024;
    if (unit > 1)
      end++;
    if (end == kv->value || *end || errno || kv->value[0] == '-' ||
        v > max / unit || (v != 0 && v * unit < 1024)) {
      add_error(p, kv->line,
                "max_watch_bytes: expected 0 or a size from 1k to 1024m "
                "(e.g. 960k), got '%s'",
                kv->value);
      return;
    }
    cfg->zk.max_watch_bytes = v * unit;
  } else if (!strcmp(kv->key, "data_sweep")) {
    /* 0 turns the sweep off; under 100 ms a pass would be all burst. */
    uint64_t ms;
    if (zg_parse_duration_ms(kv->value, &ms) != 0 || (ms != 0 && ms < 100)) {
      add_error(p, kv->line,
                "data_sweep: expected 0 or a duration of 100ms or more "
                "(e.g. 30s), got '%s'",
                kv->value);
      return;
    }
    cfg->zk.data_sweep_ms = ms;
  } else if (!strcmp(kv->key, "auth")) {
    auth_key(p, cfg, kv);
  } else {
    add_error(p, kv->line, "unknown key '%s' in [zookeeper]", kv->key);
  }
}

/* One etcd endpoint: http://HOST:PORT or https://HOST:PORT (HOST a name,
 * an IPv4 address or [IPv6]), nothing after the port. */
static int valid_etcd_endpoint(const char *s, size_t len) {
  const char *end = s + len, *host, *colon;
  unsigned long port = 0;
  if (len > 7 && !strncmp(s, "http://", 7))
    host = s + 7;
  else if (len > 8 && !strncmp(s, "https://", 8))
    host = s + 8;
  else
    return 0;
  if (*host == '[') {
    const char *rb = memchr(host, ']', (size_t)(end - host));
    if (!rb || rb == host + 1)
      return 0;
    colon = rb + 1;
    if (colon >= end || *colon != ':')
      return 0;
  } else {
    colon = memchr(host, ':', (size_t)(end - host));
    if (!colon || colon == host)
      return 0;
    for (const char *c = host; c < colon; c++)
      if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-' && *c != '_')
        return 0;
  }
  if (colon + 1 >= end || end - colon > 6)
    return 0;
  for (const char *c = colon + 1; c < end; c++) {
    if (!isdigit((unsigned char)*c))
      return 0;
    port = port * 10 + (unsigned long)(*c - '0');
  }
  return port >= 1 && port <= 65535;
}

int zg_config_list_next(const char **list, const char **item, size_t *len) {
  const char *s = *list, *comma;
  if (!s || !*s)
    return 0;
  comma = strchr(s, ',');
  while (*s == ' ')
    s++;
  *len = comma ? (size_t)(comma - s) : strlen(s);
  while (*len > 0 && s[*len - 1] == ' ')
    (*len)--;
  *item = s;
  *list = comma ? comma + 1 : NULL;
  return 1;
}

/* A comma-separated list of endpoints (spaces around commas allowed). */
int zg_config_valid_etcd_endpoints(const char *list) {
  const char *s;
  size_t len;
  int n = 0;
  while (zg_config_list_next(&list, &s, &len)) {
    if (!valid_etcd_endpoint(s, len))
      return 0;
    n++;
  }
  return n > 0;
}

static void etcd_string_key(parse_t *p, const raw_kv_t *kv, char **out) {
  for (const char *c = kv->value; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) {
      add_error(p, kv->line, "%s: control characters are not allowed", kv->key);
      return;
    }
  free(*out);
  if (!(*out = strdup(kv->value)))
    p->oom = 1;
}

static void etcd_key(parse_t *p, zg_config_t *cfg, const raw_kv_t *kv) {
  zg_etcd_conf_t *e = &cfg->etcd;
  if (!strcmp(kv->key, "endpoints")) {
    p->etcd_endpoints_seen = 1;
    if (!zg_config_valid_etcd_endpoints(kv->value)) {
      add_error(p, kv->line,
                "endpoints: expected http://HOST:PORT or https://HOST:PORT, "
                "comma-separated, got '%s'",
                kv->value);
      return;
    }
    etcd_string_key(p, kv, &e->endpoints);
  } else if (!strcmp(kv->key, "dial_timeout")) {
    uint64_t ms;
    if (zg_parse_duration_ms(kv->value, &ms) != 0 || ms < 10 || ms > 600000) {
      add_error(p, kv->line,
                "dial_timeout: expected a duration between 10ms and 10m "
                "(e.g. 2s), got '%s'",
                kv->value);
      return;
    }
    e->dial_timeout_ms = ms;
  } else if (!strcmp(kv->key, "username")) {
    if (!kv->value[0]) {
      add_error(p, kv->line, "username: expected a user name");
      return;
    }
    etcd_string_key(p, kv, &e->username);
  } else if (!strcmp(kv->key, "password")) {
    /* A secret: never echoed. */
    etcd_string_key(p, kv, &e->password);
  } else if (!strcmp(kv->key, "ca")) {
    p->etcd_ca_line = kv->line;
    etcd_string_key(p, kv, &e->ca);
  } else if (!strcmp(kv->key, "cert")) {
    p->etcd_cert_line = kv->line;
    etcd_string_key(p, kv, &e->cert);
  } else if (!strcmp(kv->key, "key")) {
    p->etcd_key_line = kv->line;
    etcd_string_key(p, kv, &e->key);
  } else if (!strcmp(kv->key, "state_file")) {
    if (kv->value[0] != '/') {
      add_error(p, kv->line, "state_file: expected an absolute path, got '%s'",
                kv->value);
      return;
    }
    etcd_string_key(p, kv, &e->state_file);
  } else if (!strcmp(kv->key, "max_stale")) {
    duration_key(p, kv, &e->max_stale_ms, 0);
  } else {
    add_error(p, kv->line, "unknown key '%s' in [etcd]", kv->key);
  }
}

/* The files [etcd] ca, cert and key name, loaded as TLS to instances
 * loads its own (the same client context): errors at the key's line, named
 * as the [etcd] key. */
static void etcd_tls_check(parse_t *p, const zg_etcd_conf_t *e) {
  zg_service_conf_t sc;
  char err[512];
  const char *key = "upstream_ca", *msg = err;
  int line;
  memset(&sc, 0, sizeof(sc));
  sc.upstream_ca = e->ca;
  sc.upstream_cert = e->cert;
  sc.upstream_key = e->key;
  if (p->checks->upstream(&sc, err, sizeof(err), &key) == 0)
    return;
  line = !strcmp(key, "upstream_cert")  ? p->etcd_cert_line
         : !strcmp(key, "upstream_key") ? p->etcd_key_line
                                        : p->etcd_ca_line;
  if (!strncmp(msg, "upstream_", 9))
    msg += 9; /* "ca: ...", as the key is called here */
  add_error(p, line ? line : e->line, "%s", msg);
}

/* [etcd] as a whole: keys that go together. */
static void etcd_check(parse_t *p, zg_config_t *cfg) {
  zg_etcd_conf_t *e = &cfg->etcd;
  if (!cfg->etcd.line)
    return;
  if (!p->etcd_endpoints_seen)
    add_error(p, e->line, "[etcd] needs 'endpoints'");
  if (!!e->username != !!e->password)
    add_error(p, e->line,
              "[etcd] needs both 'username' and 'password', or "
              "neither");
  if (!!e->cert != !!e->key)
    add_error(p, e->line, "[etcd] needs both 'cert' and 'key', or neither");
  if ((e->ca || e->cert) && e->endpoints && !strstr(e->endpoints, "https://"))
    add_error(p, e->line,
              "[etcd] ca, cert and key are for https:// endpoints only");
  else if ((e->ca || (e->cert && e->key)) && p->checks && p->checks->upstream)
    etcd_tls_check(p, e);
}

static void duration_key(parse_t *p, const raw_kv_t *kv, uint64_t *out,
                         uint64_t min_ms) {
  uint64_t ms;
  if (zg_parse_duration_ms(kv->value, &ms) != 0 || ms < min_ms) {
    add_error(p, kv->line,
              "%s: expected a duration with a unit (ms, s, m, h)%s, got '%s'",
              kv->key, min_ms ? " greater than 0" : "", kv->value);
    return;
  }
  *out = ms;
}

static void proxy_key(parse_t *p, zg_config_t *cfg, const raw_kv_t *kv) {
  if (!strcmp(kv->key, "workers")) {
    unsigned long n = 0;
    if (!strcmp(kv->value, "auto")) {
      n = uv_available_parallelism();
      if (n > ZG_MAX_WORKERS)
        n = ZG_MAX_WORKERS;
    } else if (kv->value[0] && strlen(kv->value) <= 3 &&
               strspn(kv->value, "0123456789") == strlen(kv->value)) {
      n = strtoul(kv->value, NULL, 10);
    } else {
      add_error(p, kv->line,
                "workers: expected a number (1 to %d) or auto, got '%s'",
                ZG_MAX_WORKERS, kv->value);
      return;
    }
    if (n < 1 || n > ZG_MAX_WORKERS) {
      add_error(p, kv->line, "workers: expected 1 to %d (or auto), got '%s'",
                ZG_MAX_WORKERS, kv->value);
      return;
    }
    cfg->proxy.workers = (unsigned)n;
  } else if (!strcmp(kv->key, "max_connections") ||
             !strcmp(kv->key, "max_head_connections")) {
    bool head = kv->key[4] == 'h';
    uint64_t n = 0;

    if (strcmp(kv->value, "auto") != 0) {
      if (!kv->value[0] || strlen(kv->value) > 8 ||
          strspn(kv->value, "0123456789") != strlen(kv->value) ||
          (n = strtoull(kv->value, NULL, 10)) < 1) {
        add_error(p, kv->line,
                  "%s: expected a number (1 to 99999999) or auto, got '%s'",
                  kv->key, kv->value);
        return;
      }
    }
    if (head) {
      cfg->proxy.max_head_connections = n;
      p->max_head_line = kv->line;
    } else {
      cfg->proxy.max_connections = n;
    }
  } else if (!strcmp(kv->key, "max_pipes")) {
    if (!strcmp(kv->value, "auto")) {
      cfg->proxy.max_pipes = ZG_MAX_PIPES_AUTO;
    } else if (!kv->value[0] || strlen(kv->value) > 8 ||
               strspn(kv->value, "0123456789") != strlen(kv->value)) {
      add_error(p, kv->line,
                "max_pipes: expected a number (0 to 99999999) or auto, got "
                "'%s'",
                kv->value);
    } else {
      cfg->proxy.max_pipes = strtoull(kv->value, NULL, 10);
    }
  } else if (!strcmp(kv->key, "connect_timeout")) {
    duration_key(p, kv, &cfg->proxy.connect_timeout_ms, 1);
  } else if (!strcmp(kv->key, "idle_timeout")) {
    duration_key(p, kv, &cfg->proxy.idle_timeout_ms, 0);
  } else if (!strcmp(kv->key, "header_timeout")) {
    duration_key(p, kv, &cfg->proxy.header_timeout_ms, 1);
  } else if (!strcmp(kv->key, "fail_timeout")) {
    duration_key(p, kv, &cfg->proxy.fail_timeout_ms, 0);
  } else if (!strcmp(kv->key, "log_level")) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
      if (!strcmp(kv->value, names[i])) {
        cfg->proxy.log_level = (zg_log_level_t)i;
        return;
      }
    add_error(p, kv->line,
              "log_level: expected error, warn, info or debug, got '%s'",
              kv->value);
  } else if (!strcmp(kv->key, "drain_timeout")) {
    duration_key(p, kv, &cfg->proxy.drain_timeout_ms, 0);
  } else if (!strcmp(kv->key, "max_request_body")) {
    if (zg_parse_size(kv->value, &cfg->proxy.max_request_body) != 0)
      add_error(p, kv->line,
                "max_request_body: expected a size in bytes (k, m, g "
                "suffixes; 0 = no limit), got '%s'",
                kv->value);
  } else if (!strcmp(kv->key, "http2")) {
    if (strcmp(kv->value, "on") != 0 && strcmp(kv->value, "off") != 0)
      add_error(p, kv->line, "http2: expected on or off, got '%s'", kv->value);
    else
      cfg->proxy.http2 = kv->value[1] == 'n';
  } else if (!strcmp(kv->key, "tcp_splice")) {
    if (strcmp(kv->value, "auto") != 0 && strcmp(kv->value, "off") != 0)
      add_error(p, kv->line, "tcp_splice: expected auto or off, got '%s'",
                kv->value);
    else
      cfg->proxy.tcp_splice = kv->value[0] == 'a';
  } else if (!strcmp(kv->key, "access_log")) {
    if (strcmp(kv->value, "off") != 0 && strcmp(kv->value, "stderr") != 0 &&
        kv->value[0] != '/') {
      add_error(p, kv->line,
                "access_log: expected off, stderr or an absolute path, got "
                "'%s'",
                kv->value);
      return;
    }
    free(cfg->proxy.access_log);
    cfg->proxy.access_log = NULL;
    if (strcmp(kv->value, "off") != 0 &&
        !(cfg->proxy.access_log = strdup(kv->value)))
      p->oom = 1;
  } else if (!strcmp(kv->key, "access_log_format") ||
             !strcmp(kv->key, "log_format")) {
    bool *dst =
        kv->key[0] == 'a' ? &cfg->proxy.access_log_json : &cfg->proxy.log_json;
    if (!strcmp(kv->value, "text"))
      *dst = false;
    else if (!strcmp(kv->value, "json"))
      *dst = true;
    else
      add_error(p, kv->line, "%s: expected text or json, got '%s'", kv->key,
                kv->value);
  } else {
    add_error(p, kv->line, "unknown key '%s' in [proxy]", kv->key);
  }
}

/* Keys that [service:] and [discover:] share. */
static bool listen_value(parse_t *p, const raw_kv_t *kv,
                         zg_listen_addr_t *out) {
  if (zg_parse_listen(kv->value, out) == 0)
    return true;
  add_error(p, kv->line,
            "listen: expected IP:PORT, [IPv6]:PORT or *:PORT, got '%s'",
            kv->value);
  return false;
}

static void balance_value(parse_t *p, const raw_kv_t *kv, zg_balance_t *out) {
  if (!strcmp(kv->value, "random"))
    *out = ZG_BALANCE_RANDOM;
  else if (!strcmp(kv->value, "round_robin"))
    *out = ZG_BALANCE_ROUND_ROBIN;
  else if (!strcmp(kv->value, "least_request"))
    *out = ZG_BALANCE_LEAST_REQUEST;
  else if (!strcmp(kv->value, "hash"))
    *out = ZG_BALANCE_HASH;
  else
    add_error(p, kv->line,
              "balance: expected random, round_robin, least_request or hash, "
              "got '%s'",
              kv->value);
}

static void endpoint_value(parse_t *p, const raw_kv_t *kv, char **out) {
  if (!valid_service_name(kv->value)) {
    add_error(p, kv->line,
              "endpoint: expected a serverset endpoint name such as http, "
              "got '%s'",
              kv->value);
    return;
  }
  free(*out);
  if (!(*out = strdup(kv->value)))
    p->oom = 1;
}

/* "bearer:TOKEN" or "basic:USER:PASSWORD" into cfg->admin; 0, -1 (not
 * that), or -2 (out of memory). At most 512 bytes of secret. A
 * token is RFC 6750's b64token (letters, digits, -._~+/ then '='s); a user
 * has no ':' (RFC 7617 §2); neither may be empty. */
static int admin_auth_value(zg_config_t *cfg, const char *v) {
  zg_admin_auth_t kind;
  const char *secret;
  if (!strncmp(v, "bearer:", 7)) {
    size_t n;
    kind = ZG_ADMIN_AUTH_BEARER;
    secret = v + 7;
    n = strspn(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789-._~+/");
    if (n == 0 || strspn(secret + n, "=") != strlen(secret + n))
      return -1;
  } else if (!strncmp(v, "basic:", 6)) {
    const char *colon;
    kind = ZG_ADMIN_AUTH_BASIC;
    secret = v + 6;
    colon = strchr(secret, ':');
    if (!colon || colon == secret || !colon[1])
      return -1;
    for (const char *c = secret; *c; c++)
      if ((unsigned char)*c < 0x20 || *c == 0x7f)
        return -1;
  } else {
    return -1;
  }
  if (strlen(secret) > 512)
    return -1;
  free(cfg->admin.auth_secret);
  cfg->admin.auth = kind;
  cfg->admin.auth_secret = strdup(secret);
  return cfg->admin.auth_secret ? 0 : -2;
}

/* auth_file: the same forms, on the file's first line (a mounted secret). */
static void admin_auth_file(parse_t *p, zg_config_t *cfg, const raw_kv_t *kv) {
  char line[1024];
  FILE *f;
  size_t n;
  int rc;
  if (kv->value[0] != '/') {
    add_error(p, kv->line, "auth_file: expected an absolute path, got '%s'",
              kv->value);
    return;
  }
  if (!(f = fopen(kv->value, "r"))) {
    add_error(p, kv->line, "auth_file: cannot read %s: %s", kv->value,
              strerror(errno));
    return;
  }
  if (!fgets(line, sizeof(line), f))
    line[0] = '\0';
  fclose(f);
  n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  rc = admin_auth_value(cfg, line);
  OPENSSL_cleanse(line, sizeof(line));
  if (rc == -2)
    p->oom = 1;
  else if (rc != 0)
    add_error(p, kv->line,
              "auth_file: the first line of %s must be bearer:TOKEN or "
              "basic:USER:PASSWORD",
              kv->value);
}

static void admin_key(parse_t *p, zg_config_t *cfg, const raw_kv_t *kv) {
  if (!strcmp(kv->key, "auth") || !strcmp(kv->key, "auth_file")) {
    int rc;
    if (cfg->admin.auth != ZG_ADMIN_AUTH_NONE) {
      add_error(p, kv->line, "%s: [admin] takes auth or auth_file, not both",
                kv->key);
      return;
    }
    if (kv->key[4] == '_') {
      admin_auth_file(p, cfg, kv);
      return;
    }
    if (!kv->value[0])
      return; /* none: what `auth = ${VAR:-}` gives without VAR */
    /* The value is a secret: not in the message. */
    if ((rc = admin_auth_value(cfg, kv->value)) == -2)
      p->oom = 1;
    else if (rc != 0)
      add_error(p, kv->line,
                "auth: expected bearer:TOKEN (letters, digits, -._~+/ and "
                "trailing =) or basic:USER:PASSWORD");
  } else if (!strcmp(kv->key, "listen")) {
    if (!listen_value(p, kv, &cfg->admin.listen))
      return;
    cfg->admin.enabled = true;
    p->admin_listen_line = kv->line;
  } else {
    add_error(p, kv->line,
              "unknown key '%s' in [admin] (expected listen, auth or "
              "auth_file)",
              kv->key);
  }
}

/* tls_cert, tls_key, tls_client_ca (files) and the cipher strings: kept as
 * written; what they name is checked once the section is complete. */
static void tls_string_key(parse_t *p, svc_state_t *st, const raw_kv_t *kv) {
  zg_service_conf_t *svc = st->svc;
  char **dst;
  int *line;
  if (!strcmp(kv->key, "tls_cert")) {
    dst = &svc->tls_cert;
    line = &st->cert_line;
  } else if (!strcmp(kv->key, "tls_key")) {
    dst = &svc->tls_key;
    line = &st->key_line;
  } else if (!strcmp(kv->key, "tls_client_ca")) {
    dst = &svc->tls_client_ca;
    line = &st->ca_line;
  } else if (!strcmp(kv->key, "tls_ciphers")) {
    dst = &svc->tls_ciphers;
    line = &st->ciphers_line;
  } else {
    dst = &svc->tls_ciphersuites;
    line = &st->suites_line;
  }
  *line = kv->line;
  if (!kv->value[0]) {
    st->tls_bad = true;
    add_error(p, kv->line, "%s: expected %s, got nothing", kv->key,
              strstr(kv->key, "cipher") ? "a cipher list" : "a file name");
    return;
  }
  free(*dst);
  if (!(*dst = strdup(kv->value)))
    p->oom = 1;
}

/* The TLS keys of one complete [service:] section. */
static void tls_check(parse_t *p, svc_state_t *st) {
  zg_service_conf_t *svc = st->svc;
  int first = 0;
  const int lines[] = {st->cert_line,   st->key_line,     st->ca_line,
                       st->verify_line, st->ciphers_line, st->suites_line};
  for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++)
    if (lines[k] && (!first || lines[k] < first))
      first = lines[k];
  if (!first)
    return;
  if (svc->protocol == ZG_PROTO_TLS_PASSTHROUGH) {
    add_error(p, first,
              "tls_* keys terminate TLS, for protocol = tcp or http; "
              "tls-passthrough passes TLS on untouched");
    return;
  }
  if (!st->cert_line || !st->key_line) {
    add_error(p, st->cert_line ? st->cert_line : first,
              "[service:%s] terminates TLS with tls_cert and tls_key: %s is "
              "missing",
              svc->name, st->cert_line ? "tls_key" : "tls_cert");
    return;
  }
  if (st->verify_line && !st->ca_line) {
    add_error(p, st->verify_line,
              "tls_verify_client needs tls_client_ca (the CA that signs the "
              "client certificates)");
    return;
  }
  if (svc->tls_client_ca && svc->tls_verify == ZG_TLS_VERIFY_NONE)
    svc->tls_verify = ZG_TLS_VERIFY_REQUIRED;
  if (!st->tls_bad && !p->oom && p->checks && p->checks->service) {
    char err[512];
    const char *key = "tls_cert";
    if (p->checks->service(svc, err, sizeof(err), &key) != 0) {
      int line = !strcmp(key, "tls_key")            ? st->key_line
                 : !strcmp(key, "tls_client_ca")    ? st->ca_line
                 : !strcmp(key, "tls_ciphers")      ? st->ciphers_line
                 : !strcmp(key, "tls_ciphersuites") ? st->suites_line
                                                    : st->cert_line;
      add_error(p, line ? line : st->cert_line, "%s", err);
    }
  }
}

/* upstream_* keys: TLS to instances. Files are checked once the section
 * is complete. */
static void upstream_key(parse_t *p, svc_state_t *st, const raw_kv_t *kv) {
  zg_service_conf_t *svc = st->svc;
  char **dst = NULL;
  if (!strcmp(kv->key, "upstream_tls")) {
    st->up_tls_line = kv->line;
    if (!strcmp(kv->value, "auto")) {
      svc->upstream_tls = ZG_UPSTREAM_TLS_AUTO;
    } else if (!strcmp(kv->value, "on")) {
      svc->upstream_tls = ZG_UPSTREAM_TLS_ON;
    } else if (!strcmp(kv->value, "off")) {
      svc->upstream_tls = ZG_UPSTREAM_TLS_OFF;
    } else {
      st->up_bad = true;
      add_error(p, kv->line, "upstream_tls: expected auto, on or off, got '%s'",
                kv->value);
    }
    return;
  }
  if (!strcmp(kv->key, "upstream_verify")) {
    bool v;
    st->up_verify_line = kv->line;
    if (zg_parse_bool(kv->value, &v) != 0) {
      st->up_bad = true;
      add_error(p, kv->line, "upstream_verify: expected yes or no, got '%s'",
                kv->value);
      return;
    }
    svc->upstream_noverify = !v;
    return;
  }
  if (!strcmp(kv->key, "upstream_sni")) {
    st->up_sni_line = kv->line;
    if (strchr(kv->value, '*') || !valid_sni(kv->value)) {
      st->up_bad = true;
      add_error(p, kv->line,
                "upstream_sni: expected a host name such as "
                "api.internal.example.com, got '%s'",
                kv->value);
      return;
    }
    dst = &svc->upstream_sni;
  } else if (!strcmp(kv->key, "upstream_ca")) {
    st->up_ca_line = kv->line;
    dst = &svc->upstream_ca;
  } else if (!strcmp(kv->key, "upstream_cert")) {
    st->up_cert_line = kv->line;
    dst = &svc->upstream_cert;
  } else {
    st->up_key_line = kv->line;
    dst = &svc->upstream_key;
  }
  if (!kv->value[0]) {
    st->up_bad = true;
    add_error(p, kv->line, "%s: expected a file name, got nothing", kv->key);
    return;
  }
  free(*dst);
  if (!(*dst = strdup(kv->value)))
    p->oom = 1;
  else if (dst == &svc->upstream_sni)
    for (char *c = *dst; *c; c++)
      if (*c >= 'A' && *c <= 'Z')
        *c = (char)(*c - 'A' + 'a');
}

/* The upstream_* keys of one complete [service:] section. */
static void upstream_check(parse_t *p, svc_state_t *st) {
  zg_service_conf_t *svc = st->svc;
  int first = 0, first_other = 0;
  const int lines[] = {st->up_ca_line, st->up_verify_line, st->up_sni_line,
                       st->up_cert_line, st->up_key_line};
  for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++)
    if (lines[k] && (!first_other || lines[k] < first_other))
      first_other = lines[k];
  first = st->up_tls_line && (!first_other || st->up_tls_line < first_other)
              ? st->up_tls_line
              : first_other;
  if (!first)
    return;
  if (svc->protocol == ZG_PROTO_TLS_PASSTHROUGH) {
    add_error(p, first,
              "upstream_* keys are for protocol = tcp or http; "
              "tls-passthrough passes TLS on untouched");
    return;
  }
  if (st->up_bad || p->oom)
    return;
  if (svc->upstream_tls == ZG_UPSTREAM_TLS_OFF && first_other) {
    add_error(p, first_other,
              "upstream_ca, upstream_verify, upstream_sni, upstream_cert and "
              "upstream_key have no effect with upstream_tls = off");
    return;
  }
  if (!st->up_cert_line != !st->up_key_line) {
    add_error(p, st->up_cert_line ? st->up_cert_line : st->up_key_line,
              "a client certificate to instances needs upstream_cert and "
              "upstream_key: %s is missing",
              st->up_cert_line ? "upstream_key" : "upstream_cert");
    return;
  }
  if ((svc->upstream_ca || svc->upstream_cert) && p->checks &&
      p->checks->upstream) {
    char err[512];
    const char *key = "upstream_ca";
    if (p->checks->upstream(svc, err, sizeof(err), &key) != 0) {
      int line = !strcmp(key, "upstream_cert")  ? st->up_cert_line
                 : !strcmp(key, "upstream_key") ? st->up_key_line
                                                : st->up_ca_line;
      add_error(p, line ? line : first, "%s", err);
    }
  }
}

/* Where the instances are and how they are reached: 1 when `kv` is one
 * of these keys (handled, errors added), else 0. */
static int service_source_key(parse_t *p, svc_state_t *st, const raw_kv_t *kv) {
  zg_service_conf_t *svc = st->svc;
  if (!strcmp(kv->key, "zk_path")) {
    if (!valid_zk_path(kv->value)) {
      add_error(p, kv->line,
                "zk_path: expected an absolute znode path such as "
                "/services/%s, got '%s'",
                svc->name, kv->value);
      return 1;
    }
    free(svc->zk_path);
    if (!(svc->zk_path = strdup(kv->value)))
      p->oom = 1;
    st->zk_path_line = kv->line;
  } else if (!strcmp(kv->key, "etcd_prefix")) {
    const char *c = kv->value;
    while (*c && (unsigned char)*c > 0x20 && *c != 0x7f)
      c++;
    if (!kv->value[0] || *c) {
      add_error(p, kv->line,
                "etcd_prefix: expected a key prefix such as /services/%s/ "
                "(no spaces or control characters), got '%s'",
                svc->name, kv->value);
      return 1;
    }
    free(svc->etcd_prefix);
    if (!(svc->etcd_prefix = strdup(kv->value)))
      p->oom = 1;
    st->etcd_prefix_line = kv->line;
  } else if (!strcmp(kv->key, "protocol")) {
    if (!strcmp(kv->value, "tcp")) {
      svc->protocol = ZG_PROTO_TCP;
    } else if (!strcmp(kv->value, "http")) {
      svc->protocol = ZG_PROTO_HTTP;
    } else if (!strcmp(kv->value, "tls-passthrough")) {
      svc->protocol = ZG_PROTO_TLS_PASSTHROUGH;
    } else {
      add_error(p, kv->line,
                "protocol: expected tcp, http or tls-passthrough, got '%s'",
                kv->value);
    }
  } else if (!strcmp(kv->key, "listen")) {
    if (!listen_value(p, kv, &svc->listen))
      return 1;
    st->has_listen = true;
    st->listen_line = kv->line;
  } else if (!strcmp(kv->key, "connect_timeout")) {
    duration_key(p, kv, &svc->connect_timeout_ms, 1);
  } else if (!strcmp(kv->key, "endpoint")) {
    endpoint_value(p, kv, &svc->endpoint);
  } else if (!strcmp(kv->key, "instances")) {
    for (size_t i = 0; i < svc->n_instances; i++)
      zg_instance_clear(&svc->instances[i]);
    svc->n_instances = 0;
    parse_instances(p, svc, kv);
  } else {
    return 0;
  }
  return 1;
}

/* HTTP routing keys: 1 when `kv` is one of them, else 0. */
static int service_http_key(parse_t *p, svc_state_t *st, const raw_kv_t *kv) {
  zg_service_conf_t *svc = st->svc;
  if (!strcmp(kv->key, "host")) {
    if (!valid_route_host(kv->value)) {
      add_error(p, kv->line,
                "host: expected a host name such as api.example.com or "
                "*.example.com, got '%s'",
                kv->value);
      return 1;
    }
    free(svc->host);
    if (!(svc->host = strdup(kv->value)))
      p->oom = 1;
    else
      for (char *c = svc->host; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
          *c = (char)(*c - 'A' + 'a');
    st->http_key_line = st->http_key_line ? st->http_key_line : kv->line;
  } else if (!strcmp(kv->key, "path_prefix")) {
    size_t len = strlen(kv->value);
    char norm[256]; /* ini_max_line bounds the value */

    if (kv->value[0] != '/' || strpbrk(kv->value, "?# \t")) {
      add_error(p, kv->line,
                "path_prefix: expected a path starting with / (e.g. /api/), "
                "got '%s'",
                kv->value);
      return 1;
    }
    /* Requests are routed on their normalised path (RFC 3986 §5.2.4): a
     * prefix with dot segments would never match. */
    if (len > sizeof(norm) ||
        zg_http_normalize_path(kv->value, len, norm) != (int)len ||
        memcmp(norm, kv->value, len) != 0) {
      add_error(p, kv->line,
                "path_prefix: '.' and '..' segments (or %%2e spellings) never "
                "match, requests are routed on their normalised path; got "
                "'%s'",
                kv->value);
      return 1;
    }
    free(svc->path_prefix);
    if (!(svc->path_prefix = strdup(kv->value)))
      p->oom = 1;
    st->http_key_line = st->http_key_line ? st->http_key_line : kv->line;
  } else if (!strcmp(kv->key, "strip_prefix")) {
    if (zg_parse_bool(kv->value, &svc->strip_prefix) != 0)
      add_error(p, kv->line, "strip_prefix: expected yes or no, got '%s'",
                kv->value);
    st->http_key_line = st->http_key_line ? st->http_key_line : kv->line;
  } else if (!strcmp(kv->key, "response_timeout")) {
    duration_key(p, kv, &svc->response_timeout_ms, 1);
    st->http_key_line = st->http_key_line ? st->http_key_line : kv->line;
  } else if (!strcmp(kv->key, "upstream_protocol")) {
    if (!strcmp(kv->value, "auto"))
      svc->upstream_protocol = ZG_UPSTREAM_PROTO_AUTO;
    else if (!strcmp(kv->value, "http1"))
      svc->upstream_protocol = ZG_UPSTREAM_PROTO_HTTP1;
    else if (!strcmp(kv->value, "h2"))
      svc->upstream_protocol = ZG_UPSTREAM_PROTO_H2;
    else
      add_error(p, kv->line,
                "upstream_protocol: expected http1, h2 or auto, got '%s'",
                kv->value);
    st->http_key_line = st->http_key_line ? st->http_key_line : kv->line;
  } else {
    return 0;
  }
  return 1;
}

/* sni (tls-passthrough), tls_* (termination) and upstream_* (TLS to
 * instances): 1 when `kv` is one of them, else 0. */
static int service_tls_key(parse_t *p, svc_state_t *st, const raw_kv_t *kv) {
  zg_service_conf_t *svc = st->svc;
  if (!strcmp(kv->key, "sni")) {
    /* Compared lowercase, as the parser hands names over. */
    st->sni_line = kv->line;
    if (!valid_sni(kv->value)) {
      add_error(p, kv->line,
                "sni: expected a host name such as api.example.com or "
                "*.example.com, got '%s'",
                kv->value);
      return 1;
    }
    free(svc->sni);
    if (!(svc->sni = strdup(kv->value)))
      p->oom = 1;
    else
      for (char *c = svc->sni; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
          *c = (char)(*c - 'A' + 'a');
  } else if (!strcmp(kv->key, "tls_cert") || !strcmp(kv->key, "tls_key") ||
             !strcmp(kv->key, "tls_client_ca") ||
             !strcmp(kv->key, "tls_ciphers") ||
             !strcmp(kv->key, "tls_ciphersuites")) {
    tls_string_key(p, st, kv);
  } else if (!strncmp(kv->key, "upstream_", 9) &&
             (!strcmp(kv->key + 9, "tls") || !strcmp(kv->key + 9, "ca") ||
              !strcmp(kv->key + 9, "verify") || !strcmp(kv->key + 9, "sni") ||
              !strcmp(kv->key + 9, "cert") || !strcmp(kv->key + 9, "key"))) {
    upstream_key(p, st, kv);
  } else if (!strcmp(kv->key, "tls_verify_client")) {
    st->verify_line = kv->line;
    if (!strcmp(kv->value, "required")) {
      svc->tls_verify = ZG_TLS_VERIFY_REQUIRED;
    } else if (!strcmp(kv->value, "optional")) {
      svc->tls_verify = ZG_TLS_VERIFY_OPTIONAL;
    } else {
      st->tls_bad = true;
      add_error(p, kv->line,
                "tls_verify_client: expected required or optional, got '%s'",
                kv->value);
    }
  } else {
    return 0;
  }
  return 1;
}

/* A header or cookie name: an RFC 9110 token (§5.6.2), which a cookie
 * name is too (RFC 6265 §4.1.1). */
static int valid_token(const char *s) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  if (!*s || strlen(s) >= ZG_HASH_NAME_MAX)
    return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || strchr(extra, *s)))
      return 0;
  return 1;
}

/* The balance settings of a [service:] or [discover:] section, where the
 * section's parse fills them (made afresh per key: sections are in arrays
 * that grow). */
typedef struct {
  zg_balance_t *balance;
  zg_hash_key_t *hash_key;
  char *hash_name; /* ZG_HASH_NAME_MAX */
  uint64_t *slow_start_ms;
  bool *latency_ewma;
  uint64_t *latency_decay_ms;
  bal_lines_t *lines;
} bal_t;

static bal_t service_bal(svc_state_t *st) {
  zg_service_conf_t *c = st->svc;
  bal_t b = {&c->balance,       &c->hash_key,     c->hash_name,
             &c->slow_start_ms, &c->latency_ewma, &c->latency_decay_ms,
             &st->bal};
  return b;
}

static void hash_key_value(parse_t *p, const bal_t *b, const raw_kv_t *kv) {
  const char *v = kv->value, *name = NULL;
  b->lines->hash_key = kv->line;
  b->hash_name[0] = '\0';
  if (!strcmp(v, "path")) {
    *b->hash_key = ZG_HASH_PATH;
  } else if (!strcmp(v, "client")) {
    *b->hash_key = ZG_HASH_CLIENT;
  } else if (!strncmp(v, "header:", 7)) {
    *b->hash_key = ZG_HASH_HEADER;
    name = v + 7;
  } else if (!strncmp(v, "cookie:", 7)) {
    *b->hash_key = ZG_HASH_COOKIE;
    name = v + 7;
  } else {
    add_error(p, kv->line,
              "hash_key: expected header:NAME, cookie:NAME, path or client, "
              "got '%s'",
              v);
    *b->hash_key = ZG_HASH_NONE;
    return;
  }
  if (name && !valid_token(name)) {
    add_error(p, kv->line,
              "hash_key: expected a header or cookie name (letters, digits "
              "and !#$%%&'*+-.^_`|~, under %d characters) after '%.7s', got "
              "'%s'",
              ZG_HASH_NAME_MAX, v, name);
    *b->hash_key = ZG_HASH_NONE;
    return;
  }
  if (name)
    snprintf(b->hash_name, ZG_HASH_NAME_MAX, "%s", name);
}

/* balance, hash_key, slow_start, least_request_latency,
 * least_request_decay: 1 when `kv` is one of them, else 0. */
static int balance_key(parse_t *p, const bal_t *b, const raw_kv_t *kv) {
  if (!strcmp(kv->key, "balance")) {
    b->lines->balance = kv->line;
    balance_value(p, kv, b->balance);
  } else if (!strcmp(kv->key, "hash_key")) {
    hash_key_value(p, b, kv);
  } else if (!strcmp(kv->key, "slow_start")) {
    b->lines->slow_start = kv->line;
    duration_key(p, kv, b->slow_start_ms, 0);
  } else if (!strcmp(kv->key, "least_request_latency")) {
    b->lines->latency = kv->line;
    if (!strcmp(kv->value, "ewma"))
      *b->latency_ewma = true;
    else if (!strcmp(kv->value, "off"))
      *b->latency_ewma = false;
    else
      add_error(p, kv->line,
                "least_request_latency: expected off or ewma, got '%s'",
                kv->value);
  } else if (!strcmp(kv->key, "least_request_decay")) {
    b->lines->decay = kv->line;
    duration_key(p, kv, b->latency_decay_ms, 1);
  } else {
    return 0;
  }
  return 1;
}

/* hash_key goes with balance = hash, and only HTTP has headers, cookies
 * and paths; slow start has no weight to ramp under hash; latency is what
 * least_request may weigh, and only HTTP has responses to time. */
static void balance_check(parse_t *p, const bal_t *b, zg_protocol_t proto) {
  const bal_lines_t *l = b->lines;
  if (*b->balance == ZG_BALANCE_HASH && !l->hash_key)
    add_error(p, l->balance,
              "balance = hash needs hash_key (header:NAME, cookie:NAME, path "
              "or client)");
  if (*b->balance != ZG_BALANCE_HASH && l->hash_key) {
    add_error(p, l->hash_key, "hash_key is for balance = hash only");
    *b->hash_key = ZG_HASH_NONE;
  }
  if (proto != ZG_PROTO_HTTP && *b->hash_key != ZG_HASH_NONE &&
      *b->hash_key != ZG_HASH_CLIENT)
    add_error(p, l->hash_key,
              "hash_key: header, cookie and path are for protocol = http; a "
              "%s service hashes the client only (hash_key = client)",
              proto == ZG_PROTO_TCP ? "tcp" : "tls-passthrough");
  if (*b->balance == ZG_BALANCE_HASH && *b->slow_start_ms)
    add_error(p, l->slow_start,
              "slow_start does not apply to balance = hash (a key's instance "
              "does not depend on weights ramping up)");
  if (l->latency && *b->balance != ZG_BALANCE_LEAST_REQUEST)
    add_error(p, l->latency,
              "least_request_latency is for balance = least_request only");
  else if (*b->latency_ewma && proto != ZG_PROTO_HTTP)
    add_error(p, l->latency,
              "least_request_latency = ewma is for protocol = http (a %s "
              "connection has no response to time)",
              proto == ZG_PROTO_TCP ? "tcp" : "tls-passthrough");
  if (l->decay && !*b->latency_ewma)
    add_error(p, l->decay,
              "least_request_decay goes with least_request_latency = ewma");
  if (!*b->latency_ewma)
    *b->latency_decay_ms = 0;
  else if (!*b->latency_decay_ms)
    *b->latency_decay_ms = ZG_LATENCY_DECAY_DEFAULT_MS;
}

static void service_key(parse_t *p, svc_state_t *st, const raw_kv_t *kv) {
  if (!strcmp(kv->key, "listen"))
    st->listen_seen = true;
  if (!strcmp(kv->key, "zk_path") || !strcmp(kv->key, "instances") ||
      !strcmp(kv->key, "etcd_prefix"))
    st->source_seen = true;
  bal_t bal = service_bal(st);
  if (!service_source_key(p, st, kv) && !balance_key(p, &bal, kv) &&
      !service_http_key(p, st, kv) && !service_tls_key(p, st, kv))
    add_error(p, kv->line, "unknown key '%s' in [service:%s]", kv->key,
              st->svc->name);
}

typedef struct {
  zg_discover_conf_t *d;
  int listen_line;
  bool has_listen, listen_seen, root_seen;
  int zk_root_line, etcd_root_line; /* 0: absent */
  bal_lines_t bal;
} disc_state_t;

static bal_t discover_bal(disc_state_t *st) {
  zg_discover_conf_t *d = st->d;
  bal_t b = {&d->balance,       &d->hash_key,     d->hash_name,
             &d->slow_start_ms, &d->latency_ewma, &d->latency_decay_ms,
             &st->bal};
  return b;
}

/* etcd_root: a key prefix, kept with a '/' at its end (the services are
 * the names between it and the next '/'). */
static void etcd_root_key(parse_t *p, disc_state_t *st, const raw_kv_t *kv) {
  const char *c = kv->value;
  size_t n = strlen(kv->value);
  while (*c && (unsigned char)*c > 0x20 && *c != 0x7f)
    c++;
  st->etcd_root_line = kv->line;
  if (!n || *c) {
    add_error(p, kv->line,
              "etcd_root: expected a key prefix such as /services/ (no spaces "
              "or control characters), got '%s'",
              kv->value);
    return;
  }
  if (!(st->d->etcd_root = malloc(n + 2))) {
    p->oom = 1;
    return;
  }
  snprintf(st->d->etcd_root, n + 2, "%s%s", kv->value,
           kv->value[n - 1] == '/' ? "" : "/");
}

static void discover_key(parse_t *p, disc_state_t *st, const raw_kv_t *kv) {
  zg_discover_conf_t *d = st->d;
  bal_t bal = discover_bal(st);
  if (balance_key(p, &bal, kv)) {
    return;
  } else if (!strcmp(kv->key, "etcd_root")) {
    st->root_seen = true;
    etcd_root_key(p, st, kv);
  } else if (!strcmp(kv->key, "zk_root")) {
    st->root_seen = true;
    st->zk_root_line = kv->line;
    if (!valid_zk_path(kv->value)) {
      add_error(p, kv->line,
                "zk_root: expected an absolute znode path such as /services, "
                "got '%s'",
                kv->value);
      return;
    }
    if (!(d->zk_root = strdup(kv->value)))
      p->oom = 1;
  } else if (!strcmp(kv->key, "listen")) {
    st->listen_seen = true;
    if (!listen_value(p, kv, &d->listen))
      return;
    st->has_listen = true;
    st->listen_line = kv->line;
  } else if (!strcmp(kv->key, "protocol")) {
    if (strcmp(kv->value, "http") != 0)
      add_error(p, kv->line,
                "protocol: discovered services share one listen address and "
                "are told apart by path and host, so only http is possible, "
                "got '%s'",
                kv->value);
  } else if (!strcmp(kv->key, "domain")) {
    if (!strncmp(kv->value, "*.", 2) || !valid_route_host(kv->value)) {
      add_error(p, kv->line,
                "domain: expected a domain name such as example.com, got '%s'",
                kv->value);
      return;
    }
    if (!(d->domain = strdup(kv->value))) {
      p->oom = 1;
      return;
    }
    for (char *c = d->domain; *c; c++)
      if (*c >= 'A' && *c <= 'Z')
        *c = (char)(*c - 'A' + 'a');
    if (d->domain[0] && d->domain[strlen(d->domain) - 1] == '.')
      d->domain[strlen(d->domain) - 1] = '\0';
  } else if (!strcmp(kv->key, "endpoint")) {
    endpoint_value(p, kv, &d->endpoint);
  } else if (!strcmp(kv->key, "connect_timeout")) {
    duration_key(p, kv, &d->connect_timeout_ms, 1);
  } else if (!strcmp(kv->key, "response_timeout")) {
    duration_key(p, kv, &d->response_timeout_ms, 1);
  } else {
    add_error(p, kv->line,
              "unknown key '%s' in [discover:%s] (expected zk_root or "
              "etcd_root, listen, "
              "protocol, domain, balance, hash_key, slow_start, "
              "least_request_latency, least_request_decay, endpoint, "
              "connect_timeout or response_timeout)",
              kv->key, d->name);
  }
}

static sec_kind_t section_kind(const char *name) {
  if (!strcmp(name, "zookeeper"))
    return SEC_ZOOKEEPER;
  if (!strcmp(name, "etcd"))
    return SEC_ETCD;
  if (!strcmp(name, "proxy"))
    return SEC_PROXY;
  if (!strcmp(name, "admin"))
    return SEC_ADMIN;
  if (!strncmp(name, "service:", 8))
    return SEC_SERVICE;
  if (!strncmp(name, "discover:", 9))
    return SEC_DISCOVER;
  return SEC_OTHER;
}

/* What interpret keeps while it reads the sections: the parse state of
 * each service and discover section, in file order. */
typedef struct {
  svc_state_t *st;
  disc_state_t *dst;
  int zk_line; /* of [zookeeper], 0: none */
} sections_t;

/* [service:NAME]: a new service with its defaults; NULL when the name is
 * bad (error added) or memory ran out. */
static svc_state_t *service_section(parse_t *p, zg_config_t *cfg,
                                    sections_t *ss, const raw_section_t *sec) {
  const char *name = sec->name + 8;
  zg_service_conf_t *ns;
  svc_state_t *nst, *cur;
  if (!valid_service_name(name)) {
    add_error(p, sec->line, "service name '%s' must match [A-Za-z0-9_.-]+",
              name);
    return NULL;
  }
  if (!(ns = realloc(cfg->services, (cfg->n_services + 1) * sizeof(*ns))) ||
      !(cfg->services = ns,
        nst = realloc(ss->st, (cfg->n_services + 1) * sizeof(*nst)))) {
    p->oom = 1;
    return NULL;
  }
  ss->st = nst;
  cur = &nst[cfg->n_services];
  memset(cur, 0, sizeof(*cur));
  cur->svc = &cfg->services[cfg->n_services];
  memset(cur->svc, 0, sizeof(*cur->svc));
  cur->svc->name = strdup(name);
  cur->svc->line = sec->line;
  cur->svc->protocol = ZG_PROTO_TCP;
  cur->svc->balance = ZG_BALANCE_RANDOM;
  if (!cur->svc->name)
    p->oom = 1;
  cfg->n_services++;
  /* realloc may have moved the services: re-point every state */
  for (size_t k = 0; k < cfg->n_services; k++)
    nst[k].svc = &cfg->services[k];
  return cur;
}

/* [discover:NAME]: the same for a discover section. */
static disc_state_t *discover_section(parse_t *p, zg_config_t *cfg,
                                      sections_t *ss,
                                      const raw_section_t *sec) {
  const char *name = sec->name + 9;
  zg_discover_conf_t *nd;
  disc_state_t *nds, *dcur;
  if (!valid_service_name(name)) {
    add_error(p, sec->line, "discover name '%s' must match [A-Za-z0-9_.-]+",
              name);
    return NULL;
  }
  if (!(nd = realloc(cfg->discovers, (cfg->n_discovers + 1) * sizeof(*nd))) ||
      !(cfg->discovers = nd,
        nds = realloc(ss->dst, (cfg->n_discovers + 1) * sizeof(*nds)))) {
    p->oom = 1;
    return NULL;
  }
  ss->dst = nds;
  dcur = &nds[cfg->n_discovers];
  memset(dcur, 0, sizeof(*dcur));
  nd = &cfg->discovers[cfg->n_discovers];
  memset(nd, 0, sizeof(*nd));
  nd->name = strdup(name);
  nd->line = sec->line;
  nd->balance = ZG_BALANCE_RANDOM;
  if (!nd->name)
    p->oom = 1;
  cfg->n_discovers++;
  for (size_t k = 0; k < cfg->n_discovers; k++)
    nds[k].d = &cfg->discovers[k];
  return dcur;
}

/* The keys of section `si`, which follow it in the file up to the next
 * header, from *kvi on. A section defined twice (`dup`) has its keys
 * checked for duplicates only. */
static void section_keys(parse_t *p, zg_config_t *cfg, size_t si, size_t *kvi,
                         int dup, svc_state_t *cur, disc_state_t *dcur) {
  const raw_section_t *sec = &p->sections[si];
  sec_kind_t kind = section_kind(sec->name);
  for (; *kvi < p->n_kvs; (*kvi)++) {
    const raw_kv_t *kv = &p->kvs[*kvi];
    int twice = 0;
    if (si + 1 < p->n_sections && kv->line > p->sections[si + 1].line)
      break;
    for (size_t k = *kvi; k-- > 0 && p->kvs[k].line > sec->line && !twice;)
      if (!strcmp(p->kvs[k].key, kv->key)) {
        add_error(p, kv->line, "duplicate key '%s' (first at line %d)", kv->key,
                  p->kvs[k].line);
        twice = 1;
      }
    if (twice || dup || kv->bad)
      continue;
    if (kind == SEC_ZOOKEEPER)
      zookeeper_key(p, cfg, kv);
    else if (kind == SEC_ETCD)
      etcd_key(p, cfg, kv);
    else if (kind == SEC_PROXY)
      proxy_key(p, cfg, kv);
    else if (kind == SEC_ADMIN)
      admin_key(p, cfg, kv);
    else if (kind == SEC_SERVICE && cur)
      service_key(p, cur, kv);
    else if (kind == SEC_DISCOVER && dcur)
      discover_key(p, dcur, kv);
  }
}

/* Every section in file order, with its keys. */
static void read_sections(parse_t *p, zg_config_t *cfg, sections_t *ss) {
  size_t kvi = 0;
  /* Keys before any section header. */
  for (; kvi < p->n_kvs && !p->kvs[kvi].section; kvi++)
    add_error(p, p->kvs[kvi].line, "key '%s' outside of any section",
              p->kvs[kvi].key);
  for (size_t si = 0; si < p->n_sections; si++) {
    const raw_section_t *sec = &p->sections[si];
    sec_kind_t kind = section_kind(sec->name);
    svc_state_t *cur = NULL;
    disc_state_t *dcur = NULL;
    int dup = 0;
    for (size_t k = 0; k < si && !dup; k++)
      if (!strcmp(p->sections[k].name, sec->name)) {
        add_error(p, sec->line, "section [%s] already defined at line %d",
                  sec->name, p->sections[k].line);
        dup = 1;
      }
    if (kind == SEC_ZOOKEEPER)
      ss->zk_line = sec->line;
    else if (kind == SEC_ETCD)
      cfg->etcd.line = sec->line;
    else if (kind == SEC_SERVICE && !dup)
      cur = service_section(p, cfg, ss, sec);
    else if (kind == SEC_DISCOVER && !dup)
      dcur = discover_section(p, cfg, ss, sec);
    else if (kind == SEC_OTHER)
      add_error(p, sec->line,
                "unknown section [%s] (expected [zookeeper], [etcd], "
                "[proxy], [admin], [service:NAME] or [discover:NAME])",
                sec->name);
    section_keys(p, cfg, si, &kvi, dup, cur, dcur);
  }
}

/* Two HTTP services on one address (svc after o): 1 when they cannot
 * share it (error added). */
static int http_share_conflict(parse_t *p, const svc_state_t *a,
                               const svc_state_t *b) {
  const zg_service_conf_t *svc = a->svc, *o = b->svc;
  /* One listener, one TLS setting: a connection is TLS or not before
   * its request says which service it is for. */
  if (!svc->tls_cert != !o->tls_cert) {
    add_error(p, a->listen_line,
              "listen %s: [service:%s] %s TLS but [service:%s] at line %d "
              "%s; HTTP services sharing a listen address must all have "
              "tls_cert and tls_key, or none",
              svc->listen.text, svc->name,
              svc->tls_cert ? "terminates" : "does not terminate", o->name,
              o->line, o->tls_cert ? "does" : "does not");
    return 1;
  }
  if (svc->tls_cert &&
      (!same_str(svc->tls_ciphers, o->tls_ciphers) ||
       !same_str(svc->tls_ciphersuites, o->tls_ciphersuites))) {
    add_error(p, a->listen_line,
              "listen %s: [service:%s] and [service:%s] at line %d have "
              "different tls_ciphers or tls_ciphersuites; services "
              "sharing a listen address share them",
              svc->listen.text, svc->name, o->name, o->line);
    return 1;
  }
  /* The certificate and the client certificate checks are chosen by
   * the server name, before any path is seen: one host, one set. */
  if (svc->tls_cert && same_str(svc->host, o->host) &&
      (!same_str(svc->tls_cert, o->tls_cert) ||
       !same_str(svc->tls_key, o->tls_key) ||
       !same_str(svc->tls_client_ca, o->tls_client_ca) ||
       (svc->tls_client_ca && svc->tls_verify != o->tls_verify))) {
    add_error(p, svc->line,
              "listen %s: [service:%s] and [service:%s] at line %d have "
              "the same host%s%s but different tls_cert, tls_key, "
              "tls_client_ca or tls_verify_client; the handshake is "
              "chosen by host name alone, before the path is known",
              svc->listen.text, svc->name, o->name, o->line,
              svc->host ? " " : " (none)", svc->host ? svc->host : "");
    return 1;
  }
  if (!strcmp(svc->path_prefix, o->path_prefix) &&
      ((!svc->host && !o->host) ||
       (svc->host && o->host && !strcmp(svc->host, o->host)))) {
    add_error(p, svc->line,
              "[service:%s] has the same listen, host and path_prefix as "
              "[service:%s] at line %d: requests could not be told apart",
              svc->name, o->name, o->line);
    return 1;
  }
  return 0;
}

/* HTTP services may share a listen address (told apart by host and
 * path_prefix), tls-passthrough ones too (told apart by sni); nothing
 * else may. Service i against the ones before it. */
static void service_listen_check(parse_t *p, const svc_state_t *st, size_t i) {
  const zg_service_conf_t *svc = st[i].svc;
  if (!st[i].has_listen)
    return;
  for (size_t k = 0; k < i; k++) {
    const zg_service_conf_t *o = st[k].svc;
    if (!st[k].has_listen || !same_sockaddr(&svc->listen.ss, &o->listen.ss))
      continue;
    if (svc->protocol == ZG_PROTO_TLS_PASSTHROUGH &&
        o->protocol == ZG_PROTO_TLS_PASSTHROUGH) {
      if (svc->sni && o->sni ? !strcmp(svc->sni, o->sni)
                             : !svc->sni && !o->sni) {
        add_error(p, svc->line,
                  "[service:%s] has the same listen and sni as "
                  "[service:%s] at line %d%s: connections could not be "
                  "told apart",
                  svc->name, o->name, o->line,
                  svc->sni ? "" : " (neither has one: two defaults)");
        return;
      }
      continue;
    }
    if (svc->protocol != ZG_PROTO_HTTP || o->protocol != ZG_PROTO_HTTP) {
      add_error(p, st[i].listen_line,
                "listen %s is already used by [service:%s] at line %d",
                svc->listen.text, o->name, st[k].listen_line);
      return;
    }
    if (http_share_conflict(p, &st[i], &st[k]))
      return;
  }
}

/* One complete [service:] section: what it needs, what its protocol
 * allows, its defaults. */
static void service_check(parse_t *p, zg_config_t *cfg, sections_t *ss,
                          size_t i) {
  svc_state_t *st = &ss->st[i];
  zg_service_conf_t *svc = st->svc;
  if (!st->listen_seen)
    add_error(p, svc->line, "[service:%s] needs a 'listen' address", svc->name);
  if (!st->source_seen)
    add_error(p, svc->line,
              "[service:%s] needs 'zk_path', 'etcd_prefix' or 'instances'",
              svc->name);
  if (st->zk_path_line && st->etcd_prefix_line)
    add_error(p, st->etcd_prefix_line,
              "[service:%s] has both zk_path (line %d) and etcd_prefix: a "
              "service reads one registry",
              svc->name, st->zk_path_line);
  if (svc->etcd_prefix && !cfg->etcd.endpoints && !p->etcd_endpoints_seen)
    add_error(p, st->etcd_prefix_line,
              "etcd_prefix needs [etcd] endpoints to be set%s",
              cfg->etcd.line ? "" : " (there is no [etcd] section)");
  if (svc->zk_path && !cfg->zk.hosts && !p->hosts_seen)
    add_error(p, st->zk_path_line,
              "zk_path needs [zookeeper] hosts to be set%s",
              ss->zk_line ? "" : " (there is no [zookeeper] section)");
  if (svc->protocol != ZG_PROTO_HTTP && st->http_key_line)
    add_error(p, st->http_key_line,
              "host, path_prefix, strip_prefix, response_timeout and "
              "upstream_protocol are for protocol = http only");
  if (svc->protocol != ZG_PROTO_TLS_PASSTHROUGH && st->sni_line)
    add_error(p, st->sni_line, "sni is for protocol = tls-passthrough only");
  bal_t bal = service_bal(st);
  balance_check(p, &bal, svc->protocol);
  tls_check(p, st);
  upstream_check(p, st);
  if (!svc->connect_timeout_ms)
    svc->connect_timeout_ms = cfg->proxy.connect_timeout_ms;
  if (svc->protocol == ZG_PROTO_HTTP) {
    if (!svc->path_prefix && !(svc->path_prefix = strdup("/")))
      p->oom = 1;
    if (!svc->response_timeout_ms)
      svc->response_timeout_ms = 30000;
  }
  service_listen_check(p, ss->st, i);
}

/* One complete [discover:] section. */
static void discover_check(parse_t *p, zg_config_t *cfg, sections_t *ss,
                           size_t i) {
  zg_discover_conf_t *d = &cfg->discovers[i];
  disc_state_t *ds = &ss->dst[i];
  bal_t bal = discover_bal(ds);
  balance_check(p, &bal, ZG_PROTO_HTTP);
  if (!ds->root_seen)
    add_error(p, d->line, "[discover:%s] needs 'zk_root' or 'etcd_root'",
              d->name);
  if (ds->zk_root_line && ds->etcd_root_line)
    add_error(p, ds->etcd_root_line,
              "[discover:%s] has both zk_root (line %d) and etcd_root: a "
              "discover section reads one registry",
              d->name, ds->zk_root_line);
  if (!ds->listen_seen)
    add_error(p, d->line, "[discover:%s] needs a 'listen' address", d->name);
  if (ds->etcd_root_line && !ds->zk_root_line) {
    if (!cfg->etcd.endpoints && !p->etcd_endpoints_seen)
      add_error(p, ds->etcd_root_line,
                "etcd_root needs [etcd] endpoints to be set%s",
                cfg->etcd.line ? "" : " (there is no [etcd] section)");
  } else if (!cfg->zk.hosts && !p->hosts_seen) {
    add_error(p, d->line, "[discover:%s] needs [zookeeper] hosts to be set%s",
              d->name, ss->zk_line ? "" : " (there is no [zookeeper] section)");
  }
  if (!d->connect_timeout_ms)
    d->connect_timeout_ms = cfg->proxy.connect_timeout_ms;
  if (!d->response_timeout_ms)
    d->response_timeout_ms = 30000;
  /* Discovered services join HTTP services on their address; a TCP
   * service's address is its own. */
  for (size_t k = 0; ds->has_listen && k < cfg->n_services; k++) {
    const zg_service_conf_t *o = &cfg->services[k];
    if (o->protocol != ZG_PROTO_HTTP && ss->st[k].has_listen &&
        same_sockaddr(&d->listen.ss, &o->listen.ss)) {
      add_error(p, ds->listen_line,
                "listen %s is already used by [service:%s] at line %d "
                "(protocol %s)",
                d->listen.text, o->name, ss->st[k].listen_line,
                zg_protocol_name(o->protocol));
      break;
    }
  }
}

/* [proxy] caps against each other; the admin address is its own. */
static void proxy_admin_check(parse_t *p, zg_config_t *cfg,
                              const sections_t *ss) {
  /* Connections in their head are some of the open ones. */
  if (cfg->proxy.max_connections &&
      cfg->proxy.max_head_connections > cfg->proxy.max_connections)
    add_error(p, p->max_head_line,
              "max_head_connections: %llu is more than max_connections "
              "(%llu)",
              (unsigned long long)cfg->proxy.max_head_connections,
              (unsigned long long)cfg->proxy.max_connections);
  for (size_t i = 0; cfg->admin.enabled && i < cfg->n_services; i++)
    if (ss->st[i].has_listen &&
        same_sockaddr(&cfg->admin.listen.ss, &cfg->services[i].listen.ss)) {
      add_error(p, p->admin_listen_line,
                "listen %s is already used by [service:%s] at line %d",
                cfg->admin.listen.text, cfg->services[i].name,
                ss->st[i].listen_line);
      break;
    }
  for (size_t i = 0; cfg->admin.enabled && i < cfg->n_discovers; i++)
    if (ss->dst[i].has_listen &&
        same_sockaddr(&cfg->admin.listen.ss, &cfg->discovers[i].listen.ss)) {
      add_error(p, p->admin_listen_line,
                "listen %s is already used by [discover:%s] at line %d",
                cfg->admin.listen.text, cfg->discovers[i].name,
                ss->dst[i].listen_line);
      break;
    }
}

static void interpret(parse_t *p, zg_config_t *cfg) {
  sections_t ss = {NULL, NULL, 0};
  int uses_zk = 0, uses_etcd = 0;
  read_sections(p, cfg, &ss);
  etcd_check(p, cfg);
  /* Checks over the whole file. */
  for (size_t i = 0; i < cfg->n_services; i++) {
    uses_zk |= cfg->services[i].zk_path != NULL;
    uses_etcd |= cfg->services[i].etcd_prefix != NULL;
    service_check(p, cfg, &ss, i);
  }
  for (size_t i = 0; i < cfg->n_discovers; i++) {
    uses_zk |= cfg->discovers[i].etcd_root == NULL;
    uses_etcd |= cfg->discovers[i].etcd_root != NULL;
    discover_check(p, cfg, &ss, i);
  }
  proxy_admin_check(p, cfg, &ss);
  free(ss.st);
  free(ss.dst);
  /* No service reads ZooKeeper: no session is opened. */
  if (!uses_zk) {
    free(cfg->zk.hosts);
    cfg->zk.hosts = NULL;
  }
  /* Nor etcd: no connection to it. */
  if (!uses_etcd) {
    free(cfg->etcd.endpoints);
    cfg->etcd.endpoints = NULL;
  }
}

/* Errors in file order; insertion sort keeps equal lines in the order they
 * were found. */
static void sort_errors(parse_t *p) {
  for (size_t i = 1; i < p->errs->n; i++) {
    char *msg = p->errs->lines[i];
    int line = p->err_lines[i];
    size_t k = i;
    for (; k > 0 && p->err_lines[k - 1] > line; k--) {
      p->errs->lines[k] = p->errs->lines[k - 1];
      p->err_lines[k] = p->err_lines[k - 1];
    }
    p->errs->lines[k] = msg;
    p->err_lines[k] = line;
  }
}

static void free_raw(parse_t *p) {
  for (size_t i = 0; i < p->n_sections; i++)
    free(p->sections[i].name);
  for (size_t i = 0; i < p->n_kvs; i++) {
    free(p->kvs[i].section);
    free(p->kvs[i].key);
    free(p->kvs[i].value);
  }
  free(p->sections);
  free(p->kvs);
  sort_errors(p);
  free(p->err_lines);
  p->err_lines = NULL;
}

static int load(parse_t *p, const char *name, zg_config_t **out,
                zg_config_errors_t *errs) {
  zg_config_t *cfg = calloc(1, sizeof(*cfg));
  int rc;
  p->name = name;
  p->errs = errs;
  p->at_line_start = 1;
  *out = NULL;
  if (!cfg)
    return UV_ENOMEM;

  /* inih's run-time settings (Debian's build exposes them): any line
   * length, and no multi-line values, so an indented line is a key of its
   * own and a duplicate is reported as one. Set on every load; only the
   * main thread loads configuration. The line buffer starts at
   * ini_initial_alloc and doubles up to ini_max_line, a cap: inih cuts a
   * longer line in two and reads the tail as a line of its own (a long
   * `instances =` list did), so the cap is that of the whole file
   * (docs/platform.md, inih). */
  ini_use_stack = false;
  ini_allow_realloc = true;
  ini_initial_alloc = 256;
  ini_max_line = ZG_CONFIG_MAX + 3; /* '\r', '\n' and '\0' (ini.h) */
  ini_allow_multiline = false;

  cfg->zk.session_timeout_ms = 10000;
  cfg->zk.coalesce_window_ms = 10;
  /* Under ZooKeeper's default jute.maxbuffer (1 MiB - 1), with room for
   * the estimate's error. */
  cfg->zk.max_watch_bytes = 960 * 1024;
  cfg->zk.data_sweep_ms = 30000;
  cfg->etcd.dial_timeout_ms = 2000;
  cfg->proxy.workers = 1;
  cfg->proxy.connect_timeout_ms = 2000;
  cfg->proxy.idle_timeout_ms = 60000;
  cfg->proxy.tcp_splice = true;
  cfg->proxy.max_pipes = ZG_MAX_PIPES_AUTO;
  cfg->proxy.http2 = true;
  cfg->proxy.header_timeout_ms = 10000;
  cfg->proxy.fail_timeout_ms = 10000;
  cfg->proxy.log_level = ZG_LOG_INFO;
  cfg->proxy.drain_timeout_ms = 15000;
  if (!(cfg->path = strdup(name)))
    p->oom = 1;

  rc = ini_parse_stream(reader, p, handler, p);
  if (rc > 0)
    add_error(p, rc,
              "syntax error: expected [section], key = value or a "
              "comment");
  else if (rc < 0)
    p->oom = 1;
  interpret(p, cfg);
  free_raw(p);

  if (p->oom) {
    zg_config_free(cfg);
    return UV_ENOMEM;
  }
  if (errs->n > 0) {
    zg_config_free(cfg);
    return ZG_ECONFIG;
  }
  *out = cfg;
  return 0;
}

int zg_config_load(const char *path, const zg_config_checks_t *checks,
                   zg_config_t **out, zg_config_errors_t *errs) {
  parse_t p;
  FILE *f;
  char *text = NULL;
  size_t len = 0, cap = 0;
  int rc;
  memset(&p, 0, sizeof(p));
  memset(errs, 0, sizeof(*errs));
  *out = NULL;
  f = fopen(path, "r");
  if (!f) {
    int err = -errno;
    p.name = path;
    p.errs = errs;
    add_error(&p, 0, "cannot open: %s", strerror(errno));
    free(p.err_lines);
    return err ? err : ZG_ECONFIG;
  }
  /* Read whole, parsed from memory and kept: workers parse the same text,
   * whatever happens to the file meanwhile. */
  for (;;) {
    size_t n;
    if (cap - len < 4096) {
      char *t = cap < ZG_CONFIG_MAX ? realloc(text, cap + 65536) : NULL;
      if (!t) {
        fclose(f);
        free(text);
        p.name = path;
        p.errs = errs;
        add_error(&p, 0, "too large or out of memory (at most %d bytes)",
                  ZG_CONFIG_MAX);
        free(p.err_lines);
        return ZG_ECONFIG;
      }
      text = t;
      cap += 65536;
    }
    n = fread(text + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
  }
  text[len] = '\0';
  if (ferror(f) || memchr(text, '\0', len)) {
    int bad = ferror(f);
    fclose(f);
    free(text);
    p.name = path;
    p.errs = errs;
    add_error(&p, 0, bad ? "cannot read" : "contains a NUL byte");
    free(p.err_lines);
    return ZG_ECONFIG;
  }
  fclose(f);
  rc = zg_config_load_string(text, path, checks, out, errs);
  if (*out)
    (*out)->text = text;
  else
    free(text);
  return rc;
}

int zg_config_load_string(const char *text, const char *name,
                          const zg_config_checks_t *checks, zg_config_t **out,
                          zg_config_errors_t *errs) {
  parse_t p;
  memset(&p, 0, sizeof(p));
  p.checks = checks;
  memset(errs, 0, sizeof(*errs));
  p.text = text;
  return load(&p, name, out, errs);
}

void zg_service_conf_clear(zg_service_conf_t *svc) {
  for (size_t k = 0; k < svc->n_instances; k++)
    zg_instance_clear(&svc->instances[k]);
  free(svc->instances);
  free(svc->name);
  free(svc->zk_path);
  free(svc->etcd_prefix);
  free(svc->endpoint);
  free(svc->host);
  free(svc->path_prefix);
  free(svc->sni);
  free(svc->tls_cert);
  free(svc->tls_key);
  free(svc->tls_client_ca);
  free(svc->tls_ciphers);
  free(svc->tls_ciphersuites);
  free(svc->upstream_ca);
  free(svc->upstream_sni);
  free(svc->upstream_cert);
  free(svc->upstream_key);
  memset(svc, 0, sizeof(*svc));
}

static int dup_opt(char **dst, const char *src) {
  *dst = NULL;
  return src && !(*dst = strdup(src)) ? -1 : 0;
}

int zg_service_conf_copy(zg_service_conf_t *dst, const zg_service_conf_t *src) {
  *dst = *src;
  dst->name = dst->zk_path = dst->etcd_prefix = dst->endpoint = dst->host =
      dst->path_prefix = dst->sni = NULL;
  dst->tls_cert = dst->tls_key = dst->tls_client_ca = dst->tls_ciphers =
      dst->tls_ciphersuites = NULL;
  dst->upstream_ca = dst->upstream_sni = dst->upstream_cert =
      dst->upstream_key = NULL;
  dst->instances = NULL;
  dst->n_instances = 0;
  if (dup_opt(&dst->name, src->name) || dup_opt(&dst->zk_path, src->zk_path) ||
      dup_opt(&dst->etcd_prefix, src->etcd_prefix) ||
      dup_opt(&dst->endpoint, src->endpoint) ||
      dup_opt(&dst->host, src->host) ||
      dup_opt(&dst->path_prefix, src->path_prefix) ||
      dup_opt(&dst->sni, src->sni) || dup_opt(&dst->tls_cert, src->tls_cert) ||
      dup_opt(&dst->tls_key, src->tls_key) ||
      dup_opt(&dst->tls_client_ca, src->tls_client_ca) ||
      dup_opt(&dst->tls_ciphers, src->tls_ciphers) ||
      dup_opt(&dst->tls_ciphersuites, src->tls_ciphersuites) ||
      dup_opt(&dst->upstream_ca, src->upstream_ca) ||
      dup_opt(&dst->upstream_sni, src->upstream_sni) ||
      dup_opt(&dst->upstream_cert, src->upstream_cert) ||
      dup_opt(&dst->upstream_key, src->upstream_key))
    goto fail;
  if (src->n_instances > 0) {
    dst->instances = calloc(src->n_instances, sizeof(*dst->instances));
    if (!dst->instances)
      goto fail;
    for (; dst->n_instances < src->n_instances; dst->n_instances++)
      if (zg_instance_copy(&dst->instances[dst->n_instances],
                           &src->instances[dst->n_instances]) != 0)
        goto fail;
  }
  return 0;
fail:
  zg_service_conf_clear(dst);
  return UV_ENOMEM;
}

static int same_str(const char *a, const char *b) {
  return (!a && !b) || (a && b && !strcmp(a, b));
}

bool zg_service_conf_equal(const zg_service_conf_t *a,
                           const zg_service_conf_t *b) {
  if (!same_str(a->name, b->name) || !same_str(a->zk_path, b->zk_path) ||
      !same_str(a->etcd_prefix, b->etcd_prefix) || a->protocol != b->protocol ||
      strcmp(a->listen.text, b->listen.text) ||
      !same_sockaddr(&a->listen.ss, &b->listen.ss) ||
      a->balance != b->balance || a->hash_key != b->hash_key ||
      strcmp(a->hash_name, b->hash_name) ||
      a->slow_start_ms != b->slow_start_ms ||
      a->latency_ewma != b->latency_ewma ||
      a->latency_decay_ms != b->latency_decay_ms ||
      !same_str(a->endpoint, b->endpoint) ||
      a->connect_timeout_ms != b->connect_timeout_ms ||
      !same_str(a->host, b->host) ||
      !same_str(a->path_prefix, b->path_prefix) || !same_str(a->sni, b->sni) ||
      a->strip_prefix != b->strip_prefix ||
      a->response_timeout_ms != b->response_timeout_ms ||
      !same_str(a->tls_cert, b->tls_cert) ||
      !same_str(a->tls_key, b->tls_key) ||
      !same_str(a->tls_client_ca, b->tls_client_ca) ||
      a->tls_verify != b->tls_verify ||
      !same_str(a->tls_ciphers, b->tls_ciphers) ||
      !same_str(a->tls_ciphersuites, b->tls_ciphersuites) ||
      a->upstream_tls != b->upstream_tls ||
      a->upstream_protocol != b->upstream_protocol ||
      !same_str(a->upstream_ca, b->upstream_ca) ||
      a->upstream_noverify != b->upstream_noverify ||
      !same_str(a->upstream_sni, b->upstream_sni) ||
      !same_str(a->upstream_cert, b->upstream_cert) ||
      !same_str(a->upstream_key, b->upstream_key) ||
      a->n_instances != b->n_instances)
    return false;
  for (size_t i = 0; i < a->n_instances; i++) {
    const zg_instance_t *x = &a->instances[i], *y = &b->instances[i];
    if (strcmp(x->host, y->host) || x->port != y->port ||
        x->weight != y->weight || x->tls != y->tls || x->proto != y->proto)
      return false;
  }
  return true;
}

bool zg_discover_conf_equal(const zg_discover_conf_t *a,
                            const zg_discover_conf_t *b) {
  return same_str(a->name, b->name) && same_str(a->zk_root, b->zk_root) &&
         same_str(a->etcd_root, b->etcd_root) &&
         !strcmp(a->listen.text, b->listen.text) &&
         same_sockaddr(&a->listen.ss, &b->listen.ss) &&
         same_str(a->domain, b->domain) && a->balance == b->balance &&
         a->hash_key == b->hash_key && !strcmp(a->hash_name, b->hash_name) &&
         a->slow_start_ms == b->slow_start_ms &&
         a->latency_ewma == b->latency_ewma &&
         a->latency_decay_ms == b->latency_decay_ms &&
         same_str(a->endpoint, b->endpoint) &&
         a->connect_timeout_ms == b->connect_timeout_ms &&
         a->response_timeout_ms == b->response_timeout_ms;
}

const char *zg_protocol_name(zg_protocol_t p) {
  switch (p) {
  case ZG_PROTO_TCP:
    return "tcp";
  case ZG_PROTO_HTTP:
    return "http";
  case ZG_PROTO_TLS_PASSTHROUGH:
    return "tls-passthrough";
  }
  return "?";
}

int zg_config_same_sockaddr(const zg_listen_addr_t *a,
                            const zg_listen_addr_t *b) {
  return same_sockaddr(&a->ss, &b->ss);
}

void zg_config_free(zg_config_t *cfg) {
  if (!cfg)
    return;
  free(cfg->text);
  for (size_t i = 0; i < cfg->n_services; i++)
    zg_service_conf_clear(&cfg->services[i]);
  free(cfg->services);
  for (size_t i = 0; i < cfg->n_discovers; i++) {
    zg_discover_conf_t *d = &cfg->discovers[i];
    free(d->name);
    free(d->zk_root);
    free(d->etcd_root);
    free(d->domain);
    free(d->endpoint);
  }
  free(cfg->discovers);
  free(cfg->zk.hosts);
  free(cfg->zk.state_file);
  free(cfg->proxy.access_log);
  free(cfg->path);
  free(cfg->zk.auth);
  zg_etcd_conf_clear(&cfg->etcd);
  if (cfg->admin.auth_secret) {
    OPENSSL_cleanse(cfg->admin.auth_secret, strlen(cfg->admin.auth_secret));
    free(cfg->admin.auth_secret);
  }
  free(cfg);
}

void zg_etcd_conf_clear(zg_etcd_conf_t *c) {
  free(c->endpoints);
  free(c->username);
  if (c->password) /* a secret: not left in freed memory */
    for (volatile char *s = c->password; *s; s++)
      *s = 0;
  free(c->password);
  free(c->ca);
  free(c->cert);
  free(c->key);
  free(c->state_file);
  memset(c, 0, sizeof(*c));
}

int zg_etcd_conf_copy(zg_etcd_conf_t *dst, const zg_etcd_conf_t *src) {
  *dst = *src;
  dst->endpoints = dst->username = dst->password = dst->ca = dst->cert =
      dst->key = dst->state_file = NULL;
  if (dup_opt(&dst->endpoints, src->endpoints) ||
      dup_opt(&dst->username, src->username) ||
      dup_opt(&dst->password, src->password) || dup_opt(&dst->ca, src->ca) ||
      dup_opt(&dst->cert, src->cert) || dup_opt(&dst->key, src->key) ||
      dup_opt(&dst->state_file, src->state_file)) {
    zg_etcd_conf_clear(dst);
    return UV_ENOMEM;
  }
  return 0;
}

bool zg_etcd_conf_equal(const zg_etcd_conf_t *a, const zg_etcd_conf_t *b) {
  return same_str(a->endpoints, b->endpoints) &&
         a->dial_timeout_ms == b->dial_timeout_ms &&
         same_str(a->username, b->username) &&
         same_str(a->password, b->password) && same_str(a->ca, b->ca) &&
         same_str(a->cert, b->cert) && same_str(a->key, b->key) &&
         same_str(a->state_file, b->state_file) &&
         a->max_stale_ms == b->max_stale_ms;
}

void zg_config_errors_free(zg_config_errors_t *errs) {
  for (size_t i = 0; i < errs->n; i++)
    free(errs->lines[i]);
  free(errs->lines);
  errs->lines = NULL;
  errs->n = 0;
}
