#include "core/model/model.h"

#include <ATen/Context.h>
#include <unistd.h>

#include "core/common/error.h"
#include "core/model/model_impl.h"
#include "core/model/rope.h"

namespace kvx {

CausalLM::CausalLM(ModelConfig cfg, std::string path, at::ScalarType dtype, at::Device device)
    : cfg_(std::move(cfg)), path_(std::move(path)), dtype_(dtype), device_(device) {}

CausalLM::~CausalLM() = default;

ModelInfo CausalLM::info() const {
  ModelInfo m;
  m.n_layers = cfg_.n_layers;
  m.n_heads = cfg_.n_heads;
  m.n_kv_heads = cfg_.n_kv_heads;
  m.head_dim = cfg_.head_dim;
  m.dtype = dtype_;
  m.device = device_;
  m.rope = rope_.get();
  return m;
}

at::ScalarType parse_compute_dtype(const std::string& d) {
  if (d == "float32") return at::kFloat;
  if (d == "bfloat16") return at::kBFloat16;
  if (d == "float16") return at::kHalf;
  throw error("unknown compute dtype '{}' (expected float32, bfloat16 or float16)", d);
}

at::Device parse_device(const std::string& d) {
  if (d == "cpu") return at::Device(at::kCPU);
  if (d == "cuda" || d.rfind("cuda:", 0) == 0) {
    if (!at::hasCUDA()) throw error("device '{}' requested but this build of Torch has no usable CUDA", d);
    if (d == "cuda") return at::Device(at::kCUDA, 0);
    try {
      size_t used = 0;
      int idx = std::stoi(d.substr(5), &used);
      if (used == d.size() - 5 && idx >= 0) return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(idx));
    } catch (const std::exception&) {
    }
  }
  throw error("unknown device '{}' (expected cpu, cuda or cuda:N)", d);
}

std::shared_ptr<CausalLM> load_model(const std::string& dir, const std::string& device, const std::string& dtype) {
  const at::ScalarType dt = parse_compute_dtype(dtype);
  const at::Device dev = parse_device(device);
  if (dev.is_cpu() && dt == at::kHalf)
    throw error("{}: float16 compute is not supported on CPU (use float32 or bfloat16)", dir);
  if (::access(dir.c_str(), R_OK) != 0) throw error("{}: model folder not found", dir);
  const ModelConfig cfg = load_model_config(dir + "/config.json");
  Checkpoint ckpt(dir);
  if (cfg.arch == Arch::Gpt2) return detail::make_gpt2(cfg, dir, ckpt, dt, dev);
  return detail::make_llama(cfg, dir, ckpt, dt, dev);
}

namespace detail {

at::Tensor check_ids(const at::Tensor& ids, int64_t vocab, at::Device device) {
  if (!ids.defined() || ids.dim() != 2 || ids.size(1) == 0)
    throw error("forward: token ids must be a [batch, tokens] tensor with at least one token");
  if (at::isFloatingType(ids.scalar_type()) || ids.scalar_type() == at::kBool)
    throw error("forward: token ids must be integers");
  at::Tensor t = ids.to(device, at::kLong);
  auto mm = at::aminmax(t);
  const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
  if (lo < 0 || hi >= vocab) throw error("forward: token id {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi, vocab);
  return t;
}

}  // namespace detail
}  // namespace kvx
