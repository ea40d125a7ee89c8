// The store of a graph-replayed decode step (packed_kv.h's StepGrowth): one captured step writes
// its token where each replay's step counter puts it.
#pragma once
#include <ATen/core/Tensor.h>

#include "core/kernels/packed_kv.h"

namespace kvx::kernels {

// Copies xk, xv ([B, H, n, D]) into dst_k, dst_v ([B, H, n, D] views of larger buffers, rows
// contiguous), moved g.off_rate·d tokens along the buffers at the counter's value d (on CPU
// tensors read on the host; on CUDA by the one kernel that copies both). len_rate is not used.
void put_rows(const at::Tensor& dst_k, const at::Tensor& dst_v, const at::Tensor& xk, const at::Tensor& xv,
              const StepGrowth& g);

#ifdef KVX_WITH_CUDA
namespace cuda {
void put_rows(const at::Tensor& dst_k, const at::Tensor& dst_v, const at::Tensor& xk, const at::Tensor& xv,
              const StepGrowth& g);
}  // namespace cuda
#endif

}  // namespace kvx::kernels
