/* zkgate-register's command line: every option checked before anything
 * starts, a bad one named with what was expected (exit 2). */
#include "core/config.h"
#include "core/error.h"
#include "core/instance.h"
#include "core/log.h"
#include "register/register.h"
#include "register/register_etcd.h"
#include "register/register_fmt.h"
#include "core/version.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "zkgate-register"

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: " PROG " --zk HOSTS --path ZK_PATH --address HOST:PORT "
      "[options]\n"
      "       " PROG " --etcd ENDPOINTS --prefix PREFIX --address HOST:PORT "
      "[options]\n"
      "\n"
      "Keeps HOST:PORT registered in ZooKeeper as an ephemeral znode under "
      "ZK_PATH\n"
      "(created if missing), or in etcd as the key PREFIX + HOST:PORT under "
      "a lease,\n"
      "while its health check passes. Runs in the foreground, logs to "
      "stderr;\n"
      "SIGTERM or SIGINT removes the znode (closes the session) or the key "
      "(revokes\n"
      "the lease) and exits.\n"
      "\n"
      "  --zk HOSTS              ZooKeeper connect string: "
      "host:port[,host:port...][/chroot]\n"
      "  --path ZK_PATH          parent znode of the instance, e.g. "
      "/myRegistry/endpoints/web\n"
      "  --address HOST:PORT     the instance: IPv4, [IPv6] or a name, and "
      "its port\n"
      "  --format FORMAT         url (default): data scheme://host:port, "
      "child <service>N\n"
      "                          curator: Curator ServiceInstance JSON, "
      "child <uuid>\n"
      "                          serverset: Finagle serverset JSON, child "
      "member_N\n"
      "                          hostport: data host:port, child <service>N\n"
      "  --scheme SCHEME         http (default) or https: what the instance "
      "speaks\n"
      "  --check CHECK           tcp: connect to HOST:PORT; http:/PATH: GET "
      "/PATH,\n"
      "                          2xx or 3xx is healthy. Default: none, "
      "registered at once\n"
      "  --interval DURATION     between checks, and a check's time limit "
      "(default 1s)\n"
      "  --rise N                passing checks in a row before registering "
      "(default 2)\n"
      "  --fall N                failing checks in a row before removing "
      "(default 2)\n"
      "  --session-timeout DURATION  ZooKeeper session timeout (default "
      "10s)\n"
      "  --auth digest:USER:PASS authenticate every session; what it "
      "creates gets the\n"
      "                          ACL USER: all, world: read (the parents it "
      "makes too)\n"
      "\n"
      "etcd (instead of --zk, --path, --session-timeout, --auth):\n"
      "  --etcd ENDPOINTS        http(s)://HOST:PORT[,http(s)://HOST:PORT...]"
      "\n"
      "  --prefix PREFIX         the key is PREFIX + HOST:PORT, e.g. "
      "/services/web/\n"
      "  --ttl DURATION          the lease's TTL, whole seconds (default 10s);"
      "\n"
      "                          kept alive every TTL/3\n"
      "  --username USER         authenticate; the password from --password "
      "PASSWORD\n"
      "                          or the environment variable "
      "ZKGATE_ETCD_PASSWORD\n"
      "  --ca FILE               https: etcd's CA (default: the system store)"
      "\n"
      "  --cert FILE --key FILE  https: a client certificate and its key\n"
      "\n"
      "  --log-level LEVEL       error, warn, info (default) or debug\n"
      "  -h, --help              this help\n"
      "  -V, --version           versions of zkgate-register and its "
      "libraries\n"
      "\n"
      "Durations take a unit: 250ms, 2s, 1m. Example:\n"
      "  " PROG " --zk 127.0.0.1:2181 --path /myRegistry/endpoints/web \\\n"
      "      --address 10.0.0.5:8080 --check http:/health --interval 2s\n"
      "  " PROG " --etcd http://127.0.0.1:2379 --prefix /services/web/ \\\n"
      "      --address 10.0.0.5:8080 --ttl 10s --check tcp\n");
}

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad(const char *fmt, ...) {
  va_list ap;
  fputs(PROG ": ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n" PROG ": see " PROG " --help\n", stderr);
  return 2;
}

static int parse_count(const char *s, unsigned *out) {
  char *end;
  unsigned long v;
  if (*s < '0' || *s > '9')
    return -1;
  v = strtoul(s, &end, 10);
  if (*end != '\0' || v < 1 || v > 1000)
    return -1;
  *out = (unsigned)v;
  return 0;
}

/* host:port[,host:port...][/chroot], checked here so that a typo is a
 * usage error rather than a handle the client refuses for ever. */
static int check_hosts(const char *hosts, const char **why) {
  const char *chroot = strchr(hosts, '/'), *p = hosts;
  size_t end = chroot ? (size_t)(chroot - hosts) : strlen(hosts);
  *why = NULL;
  if (end == 0) {
    *why = "no host:port";
    return -1;
  }
  for (;;) {
    size_t n = strcspn(p, ",/");
    zg_instance_t a;
    memset(&a, 0, sizeof(a));
    if (n == 0 || zg_instance_parse_hostport(p, n, &a) != 0) {
      *why = "expected host:port[,host:port...][/chroot]";
      return -1;
    }
    p += n;
    if (*p != ',')
      break;
    p++; /* another host:port must follow */
  }
  /* A chroot of "/" is no chroot, as the client reads it. */
  if (chroot && strcmp(chroot, "/") != 0 &&
      zg_register_fmt_check_path(chroot, why) != 0) {
    *why = "the chroot is not a valid ZooKeeper path";
    return -1;
  }
  return 0;
}

static int parse_level(const char *s, zg_log_level_t *out) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strcmp(s, names[i]) == 0) {
      *out = (zg_log_level_t)i;
      return 0;
    }
  return -1;
}

/* HTTP check paths go on the request line as they are: a path, and no
 * byte that would end or split the line. */
static int check_http_path(const char *p) {
  if (p[0] != '/' || strlen(p) > 1024)
    return -1;
  for (; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == 0x7f)
      return -1;
  return 0;
}

enum {
  OPT_ZK = 256,
  OPT_PATH,
  OPT_ADDRESS,
  OPT_FORMAT,
  OPT_SCHEME,
  OPT_CHECK,
  OPT_INTERVAL,
  OPT_RISE,
  OPT_FALL,
  OPT_SESSION_TIMEOUT,
  OPT_LOG_LEVEL,
  OPT_AUTH,
  OPT_ETCD,
  OPT_PREFIX,
  OPT_TTL,
  OPT_USERNAME,
  OPT_PASSWORD,
  OPT_CA,
  OPT_CERT,
  OPT_KEY,
};

/* digest:USER:PASSWORD, read as [zookeeper] auth is: ZooKeeper splits
 * "user:password" at the first colon, so the user has none and the
 * password may. Messages never quote the value: it holds a secret. */
static int parse_auth(const char *v, char **out, const char **why) {
  const char *user, *pass;
  if (strncmp(v, "digest:", 7) != 0) {
    *why = "expected digest:USER:PASSWORD (digest is the only scheme)";
    return -1;
  }
  user = v + 7;
  pass = strchr(user, ':');
  if (!pass || pass == user) {
    *why = "the user is missing; expected digest:USER:PASSWORD";
    return -1;
  }
  if (pass[1] == '\0') {
    *why = "the password is empty; expected digest:USER:PASSWORD";
    return -1;
  }
  for (const char *c = user; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) {
      *why = "control characters are not allowed in the user or the "
             "password";
      return -1;
    }
  if (!(*out = strdup(user))) {
    *why = "out of memory";
    return -1;
  }
  return 0;
}

/* What the command line gives, while it is read. */
typedef struct {
  zg_register_opts_t opts;
  zg_log_level_t level;
  const char *address;
  int check_tuned;                 /* --interval, --rise or --fall given */
  char **auth;                     /* the --auth copy, freed by main */
  char **password;                 /* the --password copy, freed by main */
  const char *zk_only, *etcd_only; /* an option of one mode, if given */
} cli_t;

/* What an option parser returns besides an exit code (bad()'s, 0, ...). */
enum { ARG_OK = -1, ARG_NOT_MINE = -2 };

/* Where and what to register: --zk, --path, --address, --format,
 * --scheme, --session-timeout. */
static int option_register(cli_t *c, int opt, char *arg) {
  const char *why = NULL;
  switch (opt) {
  case OPT_ZK:
    if (check_hosts(arg, &why) != 0)
      return bad("--zk '%s': %s", arg, why);
    c->opts.zk_hosts = arg;
    c->zk_only = "--zk";
    return ARG_OK;
  case OPT_PATH:
    if (zg_register_fmt_check_path(arg, &why) != 0)
      return bad("--path '%s': a ZooKeeper path %s", arg, why);
    c->opts.zk_path = arg;
    c->zk_only = "--path";
    return ARG_OK;
  case OPT_ADDRESS:
    c->address = arg;
    if (zg_instance_parse_hostport(arg, strlen(arg), &c->opts.address) != 0)
      return bad("--address '%s': expected HOST:PORT (IPv4, [IPv6] or a "
                 "name; port 1-65535)",
                 arg);
    return ARG_OK;
  case OPT_FORMAT:
    if (zg_register_fmt_parse(arg, &c->opts.format) != 0)
      return bad("--format '%s': expected url, curator, serverset or "
                 "hostport",
                 arg);
    return ARG_OK;
  case OPT_SCHEME:
    if (strcmp(arg, "http") != 0 && strcmp(arg, "https") != 0)
      return bad("--scheme '%s': expected http or https", arg);
    c->opts.tls = strcmp(arg, "https") == 0;
    return ARG_OK;
  case OPT_SESSION_TIMEOUT:
    if (zg_parse_duration_ms(arg, &c->opts.session_timeout_ms) != 0 ||
        c->opts.session_timeout_ms < 100 ||
        c->opts.session_timeout_ms > 3600000)
      return bad("--session-timeout '%s': expected a duration from 100ms "
                 "to 1h (e.g. 10s)",
                 arg);
    c->zk_only = "--session-timeout";
    return ARG_OK;
  default:
    return ARG_NOT_MINE;
  }
}

/* The health check: --check, --interval, --rise, --fall. */
static int option_check(cli_t *c, int opt, char *arg) {
  switch (opt) {
  case OPT_CHECK:
    if (strcmp(arg, "tcp") == 0) {
      c->opts.check = ZG_CHECK_TCP;
    } else if (strncmp(arg, "http:", 5) == 0 && check_http_path(arg + 5) == 0) {
      c->opts.check = ZG_CHECK_HTTP;
      c->opts.check_path = arg + 5;
    } else {
      return bad("--check '%s': expected tcp or http:/PATH (a path "
                 "without spaces)",
                 arg);
    }
    return ARG_OK;
  case OPT_INTERVAL:
    if (zg_parse_duration_ms(arg, &c->opts.interval_ms) != 0 ||
        c->opts.interval_ms < 100 || c->opts.interval_ms > 3600000)
      return bad("--interval '%s': expected a duration from 100ms to 1h "
                 "(e.g. 500ms, 2s)",
                 arg);
    c->check_tuned = 1;
    return ARG_OK;
  case OPT_RISE:
  case OPT_FALL:
    if (parse_count(arg, opt == OPT_RISE ? &c->opts.rise : &c->opts.fall) != 0)
      return bad("--%s '%s': expected a count from 1 to 1000",
                 opt == OPT_RISE ? "rise" : "fall", arg);
    c->check_tuned = 1;
    return ARG_OK;
  default:
    return ARG_NOT_MINE;
  }
}

/* --log-level and --auth. */
static int option_other(cli_t *c, int opt, char *arg) {
  const char *why = NULL;
  switch (opt) {
  case OPT_LOG_LEVEL:
    if (parse_level(arg, &c->level) != 0)
      return bad("--log-level '%s': expected error, warn, info or debug", arg);
    return ARG_OK;
  case OPT_AUTH:
    free(*c->auth);
    *c->auth = NULL;
    if (parse_auth(arg, c->auth, &why) != 0)
      return bad("--auth: %s", why);
    /* Copied: the argument's password is blanked so that ps and
     * /proc/PID/cmdline stop showing it once we are running. */
    for (char *ch = strchr(arg + 7, ':') + 1; *ch; ch++)
      *ch = 'x';
    c->opts.auth = *c->auth;
    c->zk_only = "--auth";
    return ARG_OK;
  default:
    return ARG_NOT_MINE;
  }
}

static void secret_free(char *s) {
  if (s) {
    for (volatile char *p = s; *p; p++)
      *p = 0;
    free(s);
  }
}

/* A TLS file given to --ca, --cert or --key: readable now, so that a typo
 * is a usage error. */
static int option_file(const char *name, char *arg, char **out) {
  FILE *f = fopen(arg, "r");
  if (!f)
    return bad("--%s '%s': cannot read it", name, arg);
  fclose(f);
  *out = arg;
  return ARG_OK;
}

/* --etcd and its options: --prefix, --ttl, --username, --password, --ca,
 * --cert, --key. */
static int option_etcd(cli_t *c, int opt, char *arg) {
  const char *why = NULL;
  if (opt != OPT_ETCD && opt >= OPT_PREFIX && opt <= OPT_KEY)
    c->etcd_only = opt == OPT_PREFIX     ? "--prefix"
                   : opt == OPT_TTL      ? "--ttl"
                   : opt == OPT_USERNAME ? "--username"
                   : opt == OPT_PASSWORD ? "--password"
                                         : "--ca, --cert or --key";
  switch (opt) {
  case OPT_ETCD:
    if (!zg_config_valid_etcd_endpoints(arg))
      return bad("--etcd '%s': expected http://HOST:PORT or "
                 "https://HOST:PORT, several separated by commas",
                 arg);
    c->opts.etcd_endpoints = arg;
    return ARG_OK;
  case OPT_PREFIX:
    if (zg_register_fmt_check_prefix(arg, &why) != 0)
      return bad("--prefix: the key prefix %s", why);
    c->opts.etcd_prefix = arg;
    return ARG_OK;
  case OPT_TTL:
    if (zg_parse_duration_ms(arg, &c->opts.ttl_ms) != 0 ||
        c->opts.ttl_ms < 2000 || c->opts.ttl_ms > 3600000 ||
        c->opts.ttl_ms % 1000)
      return bad("--ttl '%s': expected whole seconds from 2s to 1h (e.g. "
                 "10s)",
                 arg);
    return ARG_OK;
  case OPT_USERNAME:
    if (!arg[0] || strpbrk(arg, "\r\n\t"))
      return bad("--username: expected a user name (no control characters)");

    c->opts.etcd_username = arg;
    return ARG_OK;
  case OPT_PASSWORD:
    secret_free(*c->password);
    if (!arg[0])
      return bad("--password: empty");
    if (!(*c->password = strdup(arg)))
      return bad("out of memory");
    /* Copied, and the argument blanked (ps, /proc/PID/cmdline). */
    for (char *ch = arg; *ch; ch++)
      *ch = 'x';
    c->opts.etcd_password = *c->password;
    return ARG_OK;
  case OPT_CA:
    return option_file("ca", arg, &c->opts.etcd_ca);
  case OPT_CERT:
    return option_file("cert", arg, &c->opts.etcd_cert);
  case OPT_KEY:
    return option_file("key", arg, &c->opts.etcd_key);
  default:
    return ARG_NOT_MINE;
  }
}

/* One option of getopt_long: ARG_OK to go on, else the exit code. */
static int option(cli_t *c, int opt, char *arg, char **argv) {
  int rc = option_register(c, opt, arg);
  if (rc == ARG_NOT_MINE)
    rc = option_check(c, opt, arg);
  if (rc == ARG_NOT_MINE)
    rc = option_other(c, opt, arg);
  if (rc == ARG_NOT_MINE)
    rc = option_etcd(c, opt, arg);
  if (rc != ARG_NOT_MINE)
    return rc;
  switch (opt) {
  case 'h':
    usage(stdout);
    return 0;
  case 'V':
    printf(PROG " %s\n", ZKGATE_VERSION);
    zg_version_print(stdout);
    return 0;
  case ':':
    return bad("%s needs a value", argv[optind - 1]);
  default:
    return bad("unknown option '%s'", argv[optind - 1]);
  }
}

/* --etcd's options together. ARG_OK or the exit code. */
static int options_check_etcd(cli_t *c) {
  const zg_register_opts_t *o = &c->opts;
  if (c->zk_only)
    return bad("%s is for ZooKeeper (--zk): --etcd and --zk are exclusive, "
               "register in one registry a process",
               c->zk_only);
  if (!o->etcd_prefix || !c->address)
    return bad("missing %s",
               !o->etcd_prefix ? "--prefix PREFIX" : "--address HOST:PORT");
  if (o->etcd_username && !o->etcd_password) {
    const char *env = getenv("ZKGATE_ETCD_PASSWORD");
    if (!env || !env[0])
      return bad("--username needs a password: --password PASSWORD or the "
                 "environment variable ZKGATE_ETCD_PASSWORD");
    c->opts.etcd_password = env;
  }
  if (o->etcd_password && !o->etcd_username)
    return bad("--password needs --username");
  if ((o->etcd_ca || o->etcd_cert || o->etcd_key) &&
      !strstr(o->etcd_endpoints, "https://"))
    return bad("--ca, --cert and --key are for https:// endpoints only");
  if (!o->etcd_cert != !o->etcd_key)
    return bad("--cert and --key go together: the client certificate and "
               "its key");
  return ARG_OK;
}

/* The options together: what is required, what goes with what. ARG_OK or
 * the exit code. */
static int options_check(cli_t *c) {
  if (c->check_tuned && c->opts.check == ZG_CHECK_NONE)
    return bad("--interval, --rise and --fall tune a health check: add "
               "--check tcp or --check http:/PATH");
  if (c->opts.check == ZG_CHECK_HTTP && c->opts.tls)
    return bad("--check http:/PATH speaks plain HTTP and the instance "
               "speaks https: use --check tcp");
  if (c->opts.etcd_endpoints)
    return options_check_etcd(c);
  if (c->etcd_only)
    return bad("%s is for etcd: add --etcd ENDPOINTS (and leave out --zk)",
               c->etcd_only);
  if (!c->opts.zk_hosts || !c->opts.zk_path || !c->address)
    return bad("missing %s", !c->opts.zk_hosts  ? "--zk HOSTS (or --etcd "
                                                  "ENDPOINTS)"
                             : !c->opts.zk_path ? "--path ZK_PATH"
                                                : "--address HOST:PORT");
  return ARG_OK;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"zk", required_argument, NULL, OPT_ZK},
      {"path", required_argument, NULL, OPT_PATH},
      {"address", required_argument, NULL, OPT_ADDRESS},
      {"format", required_argument, NULL, OPT_FORMAT},
      {"scheme", required_argument, NULL, OPT_SCHEME},
      {"check", required_argument, NULL, OPT_CHECK},
      {"interval", required_argument, NULL, OPT_INTERVAL},
      {"rise", required_argument, NULL, OPT_RISE},
      {"fall", required_argument, NULL, OPT_FALL},
      {"session-timeout", required_argument, NULL, OPT_SESSION_TIMEOUT},
      {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
      {"auth", required_argument, NULL, OPT_AUTH},
      {"etcd", required_argument, NULL, OPT_ETCD},
      {"prefix", required_argument, NULL, OPT_PREFIX},
      {"ttl", required_argument, NULL, OPT_TTL},
      {"username", required_argument, NULL, OPT_USERNAME},
      {"password", required_argument, NULL, OPT_PASSWORD},
      {"ca", required_argument, NULL, OPT_CA},
      {"cert", required_argument, NULL, OPT_CERT},
      {"key", required_argument, NULL, OPT_KEY},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  /* Static: still reachable when a later option is refused (no leak). */
  static char *auth, *password;
  cli_t c;
  int opt, rc = ARG_OK;

  memset(&c, 0, sizeof(c));
  c.level = ZG_LOG_INFO;
  c.auth = &auth;
  c.password = &password;
  c.opts.ttl_ms = 10000;
  c.opts.format = ZG_REGFMT_URL;
  c.opts.interval_ms = 1000;
  c.opts.rise = 2;
  c.opts.fall = 2;
  c.opts.session_timeout_ms = 10000;
  opterr = 0; /* our own messages */
  while (rc == ARG_OK &&
         (opt = getopt_long(argc, argv, ":hV", longopts, NULL)) != -1)
    rc = option(&c, opt, optarg, argv);
  if (rc != ARG_OK)
    return rc;
  if (optind != argc)
    return bad("unexpected argument '%s'", argv[optind]);
  if ((rc = options_check(&c)) != ARG_OK)
    return rc;
  zg_log_set_level(c.level);
  rc = c.opts.etcd_endpoints ? zg_register_etcd_run(&c.opts)
                             : zg_register_run(&c.opts);
  secret_free(auth);
  secret_free(password);
  return rc;
}
