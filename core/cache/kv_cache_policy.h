// The KV-cache policy interface (docs/methods/README.md): the one seam between the model and every
// compression method. As in vLLM's attention backends, a policy owns both the storage and the
// attention over it.
//
// Contract, per forward chunk, for layer l = 0..L-1 in order:
//   the model computes q ([B, Hq, n, D]), k_new, v_new ([B, Hkv, n, D]; q and keys after RoPE) and
//   calls attend(l, q, k_new, v_new, step, opt), which stores the chunk and returns the attention
//   output [B, n, Hq·D]: each query attends to the cache as it was before the chunk plus the
//   chunk's own keys and values in full precision, causally. After layer L-1 the model calls
//   end_step(step).
// A policy with nothing better inherits attend(): update() appends the chunk and returns what
// attention uses, then dense attention (core/cache/dense_attention.h) runs over it:
//   1. if wants_queries(), q goes to observe_queries(l, ...);
//   2. update(l, k_new, v_new, step) returns the cached entries (as the policy reconstructs them)
//      followed by the chunk's own keys and values in full precision;
//   3. a query at absolute position p may use entry i iff key_pos[i] == -1 (a summary entry), or
//      key_pos[i] <= p and, when window >= 0, (key_pos[i] < sink || p - key_pos[i] < window);
//   4. if wants_attention(), the softmax probabilities of the chunk's queries ([B, Hq, n, N], fp32)
//      go to observe_attention(l, ...).
// Policies that store packed codes override attend() and run the fused kernels over their storage
// (core/kernels) on CUDA, their CPU reference on CPU; every call notes which path it took
// (note_path), and result rows record the tally (AttentionPaths).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kvx {

class Rope;  // core/model/rope.h; nullptr for models without rotary embeddings

struct ModelInfo {
  int64_t n_layers = 0;
  int64_t n_heads = 0;     // query heads
  int64_t n_kv_heads = 0;  // key/value heads (GQA when < n_heads)
  int64_t head_dim = 0;
  at::ScalarType dtype = at::kFloat;  // compute dtype of keys/values handed to the policy
  at::Device device = at::kCPU;
  const Rope* rope = nullptr;
};

struct StepInfo {
  int64_t pos0 = 0;   // absolute position of the chunk's first token
  int64_t n_new = 0;  // tokens in this chunk (1 = decode step)
  const Rope* rope = nullptr;
  // A plain step of a graph-replayed run (KVCachePolicy::plain_steps): the run's step counter d,
  // int64 [1] on the model's device; the token's position is pos0 + d. Undefined otherwise.
  at::Tensor step;
};

// How the model asks for attention: the softmax scale and its own sliding window.
struct AttentionOptions {
  double scale = 0;           // softmax scale (1/sqrt(D) unless the model says otherwise)
  int64_t model_window = -1;  // Mistral-style model sliding window; -1 = none
};

struct AttnInputs {
  at::Tensor k, v;        // [B, Hkv, N, D] compute dtype: cached entries first, then the chunk
  at::Tensor key_pos;     // [N] int64 absolute position per entry; -1 = summary (always visible)
  int64_t n_cached = 0;   // N - n_new
  int64_t sink = -1;      // sliding-window mask parameters (docs/methods/sink_window.md); -1 = plain causal
  int64_t window = -1;
  // Optional per-KV-head positions [Hkv, N] (int64) for policies whose heads keep different
  // entries (h2o, razor, uncomp). When defined it replaces key_pos in the mask, per KV head:
  // -1 = summary (always visible), -2 = empty padding slot (never visible). Undefined (the
  // default) keeps the shared-key_pos path unchanged.
  at::Tensor head_pos;
};

// One named piece of storage and its exact size in bits (docs/methods/README.md, memory).
struct MemorySegment {
  std::string name;        // e.g. "k.codes", "v.scales", "k.residual"
  int64_t elements = 0;    // values represented (for codes) or stored (for metadata)
  int64_t bits = 0;        // exact bits held, packing and metadata included
  enum Kind { kDevice, kOffload, kSide } kind = kDevice;  // only kDevice enters bpv
};

struct MemoryReport {
  std::vector<MemorySegment> segments;
  int64_t tokens_seen = 0;     // T_seen: tokens processed so far (evicted ones included)
  int64_t tokens_kept = 0;     // entries currently held per layer and head (for retained fraction)
  int64_t device_bits() const;
  int64_t offload_bits() const;
  int64_t side_bits() const;
  int64_t device_bytes() const { return (device_bits() + 7) / 8; }
  // bits per K/V value over everything seen: device_bits / (2·L·B·Hkv·D·T_seen)
  double bpv(const ModelInfo& m, int64_t batch) const;
};

// Which attention paths a policy's attend() calls took, counted over the calls that read cached
// entries (a chunk attending only to itself reads none). kernel_path:
//   fused                a kernel read the storage in place on the GPU (no decoded copy)
//   dequant_then_attend  a decoded or gathered copy of the cache went to dense attention
//   cpu_reference        a policy with a fused kernel ran its CPU reference
// impl names the attention code: sdpa, matmul, kvx_packed, kvx_int8, kvx_dense, reference.
struct AttentionPaths {
  std::map<std::string, int64_t> kernel_calls, impl_calls;
  int64_t chunk_only_calls = 0;  // calls with nothing cached
  void note(const std::string& kernel_path, const std::string& impl, int64_t calls = 1);
  AttentionPaths& operator+=(const AttentionPaths& o);
  // The paths taken, joined by '+' in a fixed order ("fused", "dequant_then_attend+fused", ...);
  // "chunk_only" when no call read cached entries.
  std::string kernel_path() const;
  std::string attention_impl() const;
};

class KVCachePolicy {
 public:
  virtual ~KVCachePolicy() = default;
  virtual void reset(const ModelInfo& m, int64_t batch) = 0;  // start a new sequence
  // Stores the chunk and returns the attention output [B, n, Hq·D] (see the contract above). The
  // default: update(), then dense attention over what it returns.
  virtual at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                            const StepInfo& s, const AttentionOptions& opt);
  // Stores a chunk without attending to it (caches filled from known keys and values: benchmarks).
  // The default runs update() and drops what it returns.
  virtual void append(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s);
  virtual AttnInputs update(int layer, const at::Tensor& k_new, const at::Tensor& v_new, const StepInfo& s);
  virtual bool wants_queries() const { return false; }
  virtual void observe_queries(int layer, const at::Tensor& q, const StepInfo& s) {}
  virtual bool wants_attention() const { return false; }
  virtual void observe_attention(int layer, const at::Tensor& probs, const StepInfo& s) {}
  virtual void end_step(const StepInfo& s) {}
  // Graph-replayed decoding (core/model/decode_steps.h): a run of one-token steps that every layer
  // takes the same way — the token stored where the run's step counter says, attention over lengths
  // it reads from the device, nothing reallocated, nothing flushed or evicted — replays one captured
  // step. plain_steps(pos, want) readies the cache for up to `want` such steps from position `pos`
  // (it must hold pos tokens: an error otherwise), reserving what they store and recording where the
  // run's first step stores and reads, and returns how many it can take: 0, the default, means the
  // next step runs eagerly. attend() with StepInfo::step defined then launches the run's step d
  // from that record and d, whatever the host state; advance(n) records that n steps ran.
  virtual int64_t plain_steps(int64_t pos, int64_t want) { return 0; }
  virtual void advance(int64_t steps) {}
  virtual MemoryReport memory() const = 0;
  // Name of the policy (recorded in result rows).
  virtual std::string name() const = 0;
  // The attention paths taken since construction (across reset()s).
  virtual const AttentionPaths& paths() const { return paths_; }

 protected:
  // attend() implementations record each call; `cached`: the call read cached entries.
  void note_path(bool cached, const std::string& kernel_path, const std::string& impl);
  // A plain step's attend() records layer l's path here; advance() counts it once per step run.
  void note_plain_path(int layer, const std::string& kernel_path, const std::string& impl);
  void count_plain_paths(int64_t steps);
  AttentionPaths paths_;

 private:
  std::vector<std::pair<std::string, std::string>> plain_paths_;
};

// Which attention path a policy with a fused kernel may take (a method spec's `kernel`): auto (fused
// where the kernel covers the call), fused (always, or a clear error naming why not),
// dequant_then_attend (never the fused kernel).
enum class KernelRequest { Auto, Fused, DequantThenAttend };
KernelRequest parse_kernel_request(const std::string& s);  // "auto" | "fused" | "dequant_then_attend"

// Why this model's run cannot use the fused CUDA kernels at all ("" when it can): its device, this
// build, its compute dtype. What a policy's own storage and shapes need it checks beside this.
std::string fused_run_unsupported(const ModelInfo& m);

// The trivial policy: keeps every key and value in the compute dtype, attended in place (SDPA on
// CUDA).
std::unique_ptr<KVCachePolicy> make_full_precision_policy(KernelRequest kernel = KernelRequest::Auto);

}  // namespace kvx
