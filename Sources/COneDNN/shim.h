#ifndef GEMMA3_CONEDNN_SHIM_H
#define GEMMA3_CONEDNN_SHIM_H
// oneDNN from Debian's libdnnl-dev: dnnl_sgemm (JIT kernels chosen by instruction set at run time),
// dnnl_get_effective_cpu_isa.
#include <dnnl.h>
#endif
