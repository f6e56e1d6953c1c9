#ifndef GEMMA3_COPENBLAS_SHIM_H
#define GEMMA3_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
