/* `zkgate -V`: our version and each library's, as linked at run time where
 * the library can say so. */
#include "core/version.h"

#include <llhttp.h>
#include <openssl/crypto.h>
#include <uv.h>
#include <zookeeper/zookeeper_version.h>

#include <jansson.h>

void zg_version_print(FILE *out) {
  fprintf(out, "zkgate %s\n", ZKGATE_VERSION);
  fprintf(out, "libuv %s\n", uv_version_string());
  /* The C client has no run-time version call; this is the header's. */
  fprintf(out, "zookeeper %s (C client, single-threaded)\n", ZOO_VERSION);
  fprintf(out, "llhttp %d.%d.%d (strict mode)\n", LLHTTP_VERSION_MAJOR,
          LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
  fprintf(out, "%s\n", OpenSSL_version(OPENSSL_VERSION));
  fprintf(out, "jansson %s\n", jansson_version_str());
}
