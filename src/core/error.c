/* Error messages for zkgate's own codes; libuv's codes go to uv_strerror. */
#include "core/error.h"

#include <uv.h>

const char *zg_strerror(int err) {
  switch (err) {
#define XX(code, msg)                                                          \
  case ZG_E##code:                                                             \
    return msg;
    ZG_ERRNO_MAP(XX)
#undef XX
  default:
    return uv_strerror(err);
  }
}
