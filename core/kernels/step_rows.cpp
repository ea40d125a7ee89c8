#include "core/kernels/step_rows.h"

#include <ATen/ATen.h>

#include "core/common/error.h"

namespace kvx::kernels {

void put_rows(const at::Tensor& dst_k, const at::Tensor& dst_v, const at::Tensor& xk, const at::Tensor& xv,
              const StepGrowth& g) {
  for (const at::Tensor* t : {&dst_v, &xk, &xv})
    if (t->sizes() != dst_k.sizes() || t->device() != dst_k.device())
      throw error("put_rows: keys and values, destinations and rows must be alike [B, H, n, D] on one device");
#ifdef KVX_WITH_CUDA
  if (dst_k.is_cuda()) return cuda::put_rows(dst_k, dst_v, xk, xv, g);
#endif
  if (dst_k.is_cuda()) throw error("put_rows: this kvx build has no CUDA kernels");
  StepGrowth moved = g;
  moved.len_rate = 0;
  at_step(dst_k, moved).copy_(xk);
  at_step(dst_v, moved).copy_(xv);
}

}  // namespace kvx::kernels
