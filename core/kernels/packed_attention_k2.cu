// The packed attention kernels with 2-bit keys (packed_attention.cuh): one file per key width, so
// that their instantiations compile in parallel.
#include "core/kernels/packed_attention.cuh"

namespace kvx::kernels::cuda {

PackedKernel packed_kernel_k2(int bv, int ng, int ngk) { return packed_instance_of_bits<2>(bv, ng, ngk); }

}  // namespace kvx::kernels::cuda
