// Shared plumbing of the language-model protocols (kl_divergence, generation, passkey,
// long_ppl): the job's model and tokenizer, the dataset's token stream (tokenized once per
// process and reused by every method of a sweep, so all methods see the same tokens), windows,
// and feeding a token sequence through the model in chunks with a cache policy.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/model/decode_steps.h"
#include "experiments/dataset_adapter.h"
#include "experiments/protocol.h"

namespace kvx {

class CausalLM;
class Tokenizer;
class KVCachePolicy;

struct JobModel {
  std::shared_ptr<CausalLM> model;
  std::shared_ptr<const Tokenizer> tokenizer;
  int64_t context = 0;  // longest sequence the model takes (config max_position_embeddings)
};

// Model through ctx.models (dtype from job.model.dtype, default float32) and tokenizer.json
// from the model folder (cached per process).
JobModel job_model(const nlohmann::json& job, JobContext& ctx);
std::shared_ptr<const Tokenizer> load_tokenizer_cached(const std::string& model_dir);

// Protocol parameters format / prompt_field / prompt_template / reference_field (see
// dataset_params()).
DatasetOptions dataset_options(const nlohmann::json& protocol);
// ParamSpecs of the dataset adapter, appended to a protocol's schema.
std::vector<ParamSpec> dataset_params();

// Token stream of the job's dataset (load_stream tokenized as one string without BOS, as the
// perplexity protocol does, so windows match its windows), memoized per process by
// (dataset path + hash, tokenizer, options).
std::shared_ptr<const std::vector<int32_t>> dataset_tokens(const nlohmann::json& job, const Tokenizer& tok,
                                                            const DatasetOptions& opt);

struct Window {
  int64_t begin = 0, len = 0;
};
// Windows [i, i+seq_len) for i = 0, stride, 2·stride, ... that fit entirely in n_tokens; at most
// max_windows (0 = all). Throws kvx::Error when not even one window fits.
std::vector<Window> cut_windows(int64_t n_tokens, int64_t seq_len, int64_t stride, int64_t max_windows);

// Resets `policy` for one sequence and feeds ids[0..n) at positions pos0.. in chunks of `chunk`
// tokens (chunk <= 0: all at once), one-token chunks through core/model/decode_steps.h.
// on_chunk(offset, logits [n_chunk, V] fp32 on the model's device) is called after each chunk; the
// logits may be a buffer the next chunk overwrites (copy what you keep), and reading them on the
// host waits for the device. Returns nothing; timing is the caller's business.
void feed_chunks(CausalLM& model, KVCachePolicy& policy, const int32_t* ids, int64_t n, int64_t chunk,
                 const std::function<void(int64_t offset, const at::Tensor& logits)>& on_chunk);
// Same without resetting (continues an existing sequence at pos0).
void feed_more(CausalLM& model, KVCachePolicy& policy, const int32_t* ids, int64_t n, int64_t pos0, int64_t chunk,
               const std::function<void(int64_t offset, const at::Tensor& logits)>& on_chunk);
// The same for a batch: ids [B, n] on the host (the policy holds B sequences at pos0), on_chunk gets
// logits [B, n_chunk, V].
void feed_rows(CausalLM& model, KVCachePolicy& policy, const at::Tensor& ids, int64_t pos0, int64_t chunk,
               const std::function<void(int64_t offset, const at::Tensor& logits)>& on_chunk);

// Peak KV-cache memory over the sequences of a job (sampled after each sequence).
struct KvMemoryPeak {
  int64_t bytes = 0;
  double bpv = 0;       // bits per value at the peak
  double retained = 1;  // tokens_kept / tokens_seen at the peak
  void sample(const KVCachePolicy& policy, const CausalLM& model, int64_t batch = 1);  // per sequence of the batch
  void write(nlohmann::json& metrics) const;  // kv_bytes_max, bpv, compression_ratio, retained_fraction
};

// The attention paths of a job's policies (core/cache/kv_cache_policy.h): kernel_path,
// attention_impl, and attention_calls {path: calls that read cached entries, chunk_only: calls
// that read none}.
void write_paths(nlohmann::json& metrics, const AttentionPaths& paths);
// metrics["decode_steps"]: how the one-token steps ran (core/model/decode_steps.h): the mode, plain
// steps, eager forward calls, plain runs.
void write_decode_steps(nlohmann::json& metrics, StepMode mode, const DecodeSteps::Stats& stats);

// The `batch` parameter of the protocols that feed several sequences per forward (the same
// numbers per sequence as alone: it stays out of the job key and the row records the batch run).
inline const ParamSpec kBatchParam{"batch", ParamType::Int, 0, 0, 4096, {},
                                   "sequences per forward; 0 = auto (1 on the CPU; on CUDA as many as half the free "
                                   "memory holds, at most 64); methods that keep state across sequences run at 1"};
// The batch of a job: protocol.batch, or for auto 1 on the CPU and on CUDA what half the free memory
// holds of the cache in the compute dtype and a chunk's activations and logits, per sequence of
// seq_len tokens fed in chunks of `chunk`.
int64_t protocol_batch(const nlohmann::json& protocol, const CausalLM& model, int64_t seq_len, int64_t chunk);

// The batch a job runs at: `room` (protocol_batch()) for a method that batches (method_batches()),
// else 1.
struct JobBatch {
  int64_t size = 1;
  bool held_back = false;        // room for more, but the method keeps state across sequences
  int64_t runs = 0, sequences = 0;  // batches run and the sequences in them
  void ran(int64_t rows) { ++runs, sequences += rows; }
  // batch, batch_mean (sequences per batch run: below `batch` where ragged or few sequences share a
  // shape), and batch_note when held back
  void write(nlohmann::json& metrics) const;
};
JobBatch job_batch(const nlohmann::json& method, int64_t room);

// Sequences 0..n-1 in batches of at most `batch` that share a shape (their length and, for
// generation, the tokens to generate), in order of shape and then index: no batch needs padding, so
// each sequence's numbers are the ones it gets alone. Callers keep per-sequence results and sum
// them in index order.
std::vector<std::vector<size_t>> same_shape_batches(const std::vector<std::array<int64_t, 2>>& shapes, int64_t batch);

// Ids [rows.size(), n] (int64, on the host) of the first n tokens of each row.
at::Tensor ids_rows(const std::vector<const int32_t*>& rows, int64_t n);

// Throws kvx::Error when the job was cancelled; calls progress.
void check_cancel(JobContext& ctx, double progress);
// Throws kvx::Error when x is NaN or Inf ("<what> is not finite").
double require_finite(double x, const std::string& what);
// Reads protocol.<key> as int64 / double / bool / string (resolved protocols have all keys).
int64_t pint(const nlohmann::json& protocol, const char* key);
double pfloat(const nlohmann::json& protocol, const char* key);
bool pbool(const nlohmann::json& protocol, const char* key);
std::string pstr(const nlohmann::json& protocol, const char* key);

// Model and tokenizer must agree about ids: the largest token id must fit the embedding.
at::Tensor ids_tensor(const int32_t* ids, int64_t n);

}  // namespace kvx
