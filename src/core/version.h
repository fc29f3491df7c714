/* Versions of zkgate and of the libraries it was built with and runs on. */
#ifndef ZKGATE_VERSION_H
#define ZKGATE_VERSION_H

#include <stdio.h>

void zg_version_print(FILE *out);

#endif
