/* zkgate's command line: run (-c FILE), check (-t -c FILE), version (-V),
 * help (-h). */
#include "core/config.h"
#include "core/error.h"
#include "control/admin.h"
#include "control/gateway.h"
#include "core/log.h"
#include "core/version.h"
#include "net/tls.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Every option is listed here: packagers and `zkgate --help` rely on it. */
static void usage(FILE *out) {
  fprintf(out,
          "usage: zkgate [-t] -c FILE\n"
          "       zkgate -V | -h\n"
          "\n"
          "  -c FILE        configuration file (INI); run in the foreground,\n"
          "                 logging to stderr\n"
          "  -t             check the configuration and exit: 0 if valid,\n"
          "                 else 1 with FILE:LINE: message per error\n"
          "  -V, --version  print the versions of zkgate and its libraries\n"
          "  -h, --help     print this help\n"
          "\n"
          "signals: SIGTERM, SIGINT drain, then exit (a second one stops);\n"
          "         SIGHUP reloads the configuration; SIGUSR1 reopens the\n"
          "         access log\n");
}

int main(int argc, char **argv) {
  const char *path = NULL;
  int check = 0, opt, rc;
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs;

  static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                           {"version", no_argument, NULL, 'V'},
                                           {NULL, 0, NULL, 0}};

  while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      path = optarg;
      break;
    case 't':
      check = 1;
      break;
    case 'V':
      zg_version_print(stdout);
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (!path || optind != argc) {
    usage(stderr);
    return 2;
  }

  rc = zg_config_load(path, zg_tls_config_checks(), &cfg, &errs);
  if (rc != 0) {
    for (size_t i = 0; i < errs.n; i++)
      fprintf(stderr, "%s\n", errs.lines[i]);
    if (errs.n == 0)
      fprintf(stderr, "%s: %s\n", path, zg_strerror(rc));
    zg_config_errors_free(&errs);
    return 1;
  }
  zg_config_errors_free(&errs);
  if (check) {
    fprintf(stderr, "%s: configuration ok (%zu service%s)\n", path,
            cfg->n_services, cfg->n_services == 1 ? "" : "s");
    zg_config_free(cfg);
    return 0;
  }
  zg_log_set_level(cfg->proxy.log_level);
  zg_log_set_json(cfg->proxy.log_json);
  rc = zg_gateway_run(cfg, &zg_admin_ops); /* frees cfg */
  return rc;
}
