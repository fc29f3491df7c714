/* Error codes shared by every module: 0 or a negative code. libuv's UV_E*
 * codes are reused as they are; zkgate's own ZG_E* codes live below
 * UV_ERRNO_MAX so the two never collide. */
#ifndef ZKGATE_ERROR_H
#define ZKGATE_ERROR_H

#define ZG_ERRNO_MAP(XX)                                                       \
  XX(CONFIG, "invalid configuration")                                          \
  XX(DECODE, "instance data cannot be decoded")                                \
  XX(SKIP, "not an instance")                                                  \
  XX(NOINSTANCE, "no live instance")                                           \
  XX(ZOOKEEPER, "ZooKeeper client error")                                      \
  XX(NOTSUP, "not supported by this build")

enum {
  ZG_EBASE = -5000,
#define XX(code, _) ZG_E##code,
  ZG_ERRNO_MAP(XX)
#undef XX
      ZG_EMAX
};

/* A short message for a zkgate or libuv error code. */
const char *zg_strerror(int err);

#endif
