#include "core/cache/kv_cache_policy.h"

#include <ATen/ATen.h>

#include <algorithm>

#include <fmt/format.h>

#include "core/cache/dense_attention.h"
#include "core/common/error.h"

namespace kvx {

namespace {
int64_t bits_of_kind(const std::vector<MemorySegment>& segs, MemorySegment::Kind kind) {
  int64_t b = 0;
  for (const auto& s : segs) b += s.kind == kind ? s.bits : 0;
  return b;
}

std::string joined(const std::map<std::string, int64_t>& calls, const std::vector<std::string>& order) {
  std::string out;
  auto add = [&](const std::string& k) { out += (out.empty() ? "" : "+") + k; };
  for (const auto& k : order)
    if (calls.count(k)) add(k);
  for (const auto& [k, n] : calls)
    if (std::find(order.begin(), order.end(), k) == order.end()) add(k);
  return out;
}
}  // namespace

int64_t MemoryReport::device_bits() const { return bits_of_kind(segments, MemorySegment::kDevice); }
int64_t MemoryReport::offload_bits() const { return bits_of_kind(segments, MemorySegment::kOffload); }
int64_t MemoryReport::side_bits() const { return bits_of_kind(segments, MemorySegment::kSide); }

double MemoryReport::bpv(const ModelInfo& m, int64_t batch) const {
  double denom = 2.0 * m.n_layers * batch * m.n_kv_heads * m.head_dim * double(tokens_seen);
  return denom > 0 ? double(device_bits()) / denom : 0.0;
}

KernelRequest parse_kernel_request(const std::string& s) {
  if (s == "auto") return KernelRequest::Auto;
  if (s == "fused") return KernelRequest::Fused;
  if (s == "dequant_then_attend") return KernelRequest::DequantThenAttend;
  throw error("kernel '{}': expected auto, fused or dequant_then_attend", s);
}

std::string fused_run_unsupported(const ModelInfo& m) {
  if (!m.device.is_cuda()) return "the fused kernels run on CUDA (this run is on the CPU, which runs their reference)";
#ifndef KVX_WITH_CUDA
  return "this kvx build has no CUDA kernels";
#endif
  if (m.dtype != at::kHalf && m.dtype != at::kBFloat16)
    return fmt::format("the model computes in {} (the fused kernels take float16 or bfloat16)", c10::toString(m.dtype));
  return "";
}

void AttentionPaths::note(const std::string& kernel_path, const std::string& impl, int64_t calls) {
  kernel_calls[kernel_path] += calls;
  impl_calls[impl] += calls;
}

AttentionPaths& AttentionPaths::operator+=(const AttentionPaths& o) {
  for (const auto& [k, n] : o.kernel_calls) kernel_calls[k] += n;
  for (const auto& [k, n] : o.impl_calls) impl_calls[k] += n;
  chunk_only_calls += o.chunk_only_calls;
  return *this;
}

std::string AttentionPaths::kernel_path() const {
  return kernel_calls.empty() ? "chunk_only" : joined(kernel_calls, {"fused", "dequant_then_attend", "cpu_reference"});
}

std::string AttentionPaths::attention_impl() const {
  return impl_calls.empty() ? "none" : joined(impl_calls, {"kvx_packed", "kvx_int8", "kvx_dense", "sdpa", "matmul", "reference"});
}

void KVCachePolicy::note_path(bool cached, const std::string& kernel_path, const std::string& impl) {
  if (cached)
    paths_.note(kernel_path, impl);
  else
    ++paths_.chunk_only_calls;
}

void KVCachePolicy::note_plain_path(int layer, const std::string& kernel_path, const std::string& impl) {
  if (plain_paths_.size() <= size_t(layer)) plain_paths_.resize(size_t(layer) + 1);
  plain_paths_[size_t(layer)] = {kernel_path, impl};
}

void KVCachePolicy::count_plain_paths(int64_t steps) {
  for (const auto& [path, impl] : plain_paths_) paths_.note(path, impl, steps);
}

at::Tensor KVCachePolicy::attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                                 const StepInfo& s, const AttentionOptions& opt) {
  if (wants_queries()) observe_queries(layer, q.detach(), s);
  AttnInputs a = update(layer, k_new, v_new, s);
  check_attn_inputs(a, q, k_new.size(1), layer, name());
  std::string impl;
  at::Tensor out = dense_attention(q, a, layer, s, opt, this, impl);
  // what update() returned is the policy's reconstruction of its cache (decoded, gathered), handed
  // to dense attention
  note_path(a.n_cached > 0, "dequant_then_attend", impl);
  return out;
}

void KVCachePolicy::append(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s) {
  (void)update(layer, k_new, v_new, s);
}

AttnInputs KVCachePolicy::update(int layer, const at::Tensor&, const at::Tensor&, const StepInfo&) {
  throw error("cache policy '{}' has no update() (it attends itself; layer {})", name(), layer);
}

}  // namespace kvx
