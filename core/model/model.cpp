#include "core/model/model.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <unistd.h>

#include "core/common/error.h"
#include "core/model/model_impl.h"
#include "core/model/rope.h"

namespace kvx {

CausalLM::CausalLM(ModelConfig cfg, std::string path, at::ScalarType dtype, at::Device device,
                   const LayerSplit& split)
    : cfg_(std::move(cfg)), path_(std::move(path)), dtype_(dtype), device_(device),
      layer_devices_(split.layers), head_device_(split.head) {}

const Rope* CausalLM::layer_rope(int64_t l) const {
  return split() && !layer_ropes_.empty() ? layer_ropes_[size_t(l)].get() : rope_.get();
}

void CausalLM::make_split_ropes(int64_t head_dim, const RopeConfig& cfg, int64_t table_positions) {
  layer_ropes_.clear();
  std::vector<std::pair<at::Device, std::shared_ptr<Rope>>> made;
  for (const auto& d : layer_devices_) {
    std::shared_ptr<Rope> r;
    for (const auto& [md, mr] : made)
      if (md == d) r = mr;
    if (!r) {
      r = std::make_shared<Rope>(head_dim, cfg, table_positions, d);
      made.emplace_back(d, r);
    }
    layer_ropes_.push_back(r);
  }
}

CausalLM::~CausalLM() = default;

at::Tensor CausalLM::device_ids(const at::Tensor& ids) const { return detail::check_ids(ids, cfg_.vocab_size, device_); }

at::Tensor CausalLM::forward_step(const at::Tensor&, int64_t, const at::Tensor&, KVCachePolicy&) {
  throw error("forward_step: {} has no graph-replayed decode steps", path_);
}

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

namespace {
detail::WeightLoader checkpoint_loader(Checkpoint& ckpt) {
  return [&ckpt](const std::string& name, const std::vector<int64_t>& shape, at::ScalarType dt, at::Device dev) {
    return ckpt.load(name, shape, dt, dev);
  };
}
}  // namespace

std::shared_ptr<CausalLM> load_model(const std::string& dir, const std::string& device, const std::string& dtype) {
  if (device.find(',') != std::string::npos || device.find('@') != std::string::npos) {
    const Placement p = parse_placement(device);
    if (p.split()) return load_model_split(dir, p, dtype);
    return load_model(dir, p.devices[0].str(), dtype);
  }
  const at::ScalarType dt = parse_compute_dtype(dtype);
  const at::Device dev = parse_device(device);
  if (dev.is_cpu() && dt == at::kHalf)
    throw error("{}: float16 compute is not supported on CPU (use float32 or bfloat16)", dir);
  if (::access(dir.c_str(), R_OK) != 0) throw error("{}: model folder not found", dir);
  const ModelConfig cfg = load_model_config(dir + "/config.json");
  Checkpoint ckpt(dir);
  if (cfg.arch == Arch::Gpt2) return detail::make_gpt2(cfg, dir, ckpt, dt, dev);
  return detail::make_llama(cfg, dir, checkpoint_loader(ckpt), dt, dev);
}

namespace {


// Weight bytes for the placement: one layer, the embedding, the head (a tied head is copied
// to the last device, so it counts there too).
std::vector<int64_t> split_sizes(const ModelConfig& c, at::ScalarType dt) {
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size, V = c.vocab_size;
  const int64_t layer = c.arch == Arch::Gpt2 ? 4 * H * H + 2 * H * I + 9 * H + I
                                             : H * (c.n_heads + 2 * c.n_kv_heads) * D + c.n_heads * D * H + 3 * H * I + 2 * H;
  const int64_t es = static_cast<int64_t>(c10::elementSize(dt));
  const int64_t embed = V * H + (c.arch == Arch::Gpt2 ? c.max_positions * H : 0);
  return {layer * es, embed * es, (V * H + 2 * H) * es};
}

}  // namespace

std::shared_ptr<CausalLM> load_model_split(const std::string& dir, const Placement& p, const std::string& dtype) {
  const at::ScalarType dt = parse_compute_dtype(dtype);
  for (const auto& d : p.devices)
    if (d.is_cpu() && dt == at::kHalf)
      throw error("{}: float16 compute is not supported on CPU (use float32 or bfloat16)", dir);
  if (::access(dir.c_str(), R_OK) != 0) throw error("{}: model folder not found", dir);
  const ModelConfig cfg = load_model_config(dir + "/config.json");
  const auto sz = split_sizes(cfg, dt);
  const std::vector<int> where = assign_layers(cfg.n_layers, sz[0], sz[1], sz[2], p);
  LayerSplit split;
  for (int d : where) split.layers.push_back(p.devices[size_t(d)]);
  split.head = p.devices.back();
  Checkpoint ckpt(dir);
  if (cfg.arch == Arch::Gpt2) return detail::make_gpt2(cfg, dir, ckpt, dt, p.devices[0], split);
  return detail::make_llama(cfg, dir, checkpoint_loader(ckpt), dt, p.devices[0], split);
}

std::shared_ptr<CausalLM> random_llama(const ModelConfig& cfg, const std::string& device, const std::string& dtype,
                                       uint64_t seed) {
  if (cfg.arch != Arch::Llama) throw error("random_llama: {} is not a Llama-family config", cfg.architecture);
  const at::ScalarType dt = parse_compute_dtype(dtype);
  const at::Device dev = parse_device(device);
  at::manual_seed(seed);
  auto load = [](const std::string& name, const std::vector<int64_t>& shape, at::ScalarType t, at::Device d) {
    const auto opt = at::TensorOptions().dtype(t).device(d);
    const bool norm = name.size() > 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0;
    if (norm) return at::ones(shape, opt);
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) return at::zeros(shape, opt);
    return at::randn(shape, opt).mul_(0.02);
  };
  return detail::make_llama(cfg, "random:" + cfg.architecture, load, dt, dev);
}

namespace detail {

at::Tensor trainable_copy(const at::Tensor& w) {
  if (!w.defined()) return w;
  at::Tensor t = w.clone();  // clone outside InferenceMode: a normal (non-inference) tensor
  t.requires_grad_(true);
  return t;
}

at::Tensor batch_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!x.is_cpu() || x.dim() != 3 || x.size(0) == 1) return at::linear(x, w, b);
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < x.size(0); ++i) rows.push_back(at::linear(x[i], w, b));
  return at::stack(rows);
}

at::Tensor check_ids(const at::Tensor& ids, int64_t vocab, at::Device device) {
  if (!ids.defined() || ids.dim() != 2 || ids.size(1) == 0)
    throw error("forward: token ids must be a [batch, tokens] tensor with at least one token");
  if (at::isFloatingType(ids.scalar_type()) || ids.scalar_type() == at::kBool)
    throw error("forward: token ids must be integers");
  // Ids on the host are checked there; ids already on a GPU (a decode loop feeding back its own
  // argmax) are taken as they are: checking them would cost a host round trip per step.
  if (ids.device().is_cpu()) {
    auto mm = at::aminmax(ids.to(at::kLong));
    const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
    if (lo < 0 || hi >= vocab) throw error("forward: token id {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi, vocab);
  }
  return ids.to(device, at::kLong);
}

}  // namespace detail
}  // namespace kvx
