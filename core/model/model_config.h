// config.json of a Hugging Face causal LM, reduced to what the forward pass needs.
// Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (RMSNorm, SwiGLU, RoPE with
// rope_type default / linear / llama3, GQA) and GPT2LMHeadModel (LayerNorm, gelu_new, learned
// positions). Anything else throws kvx::Error naming config.json and the field at fault.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace kvx {

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // "default", "linear", "llama3"
  double factor = 1.0;           // linear and llama3
  double low_freq_factor = 1.0;  // llama3
  double high_freq_factor = 4.0;
  int64_t original_max_positions = 8192;
};

enum class Arch { Llama, Gpt2 };

struct ModelConfig {
  std::string architecture;  // as written in config.json, e.g. "Qwen2ForCausalLM"
  Arch arch = Arch::Llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_positions = 0;   // GPT-2: hard limit (learned table); RoPE models: informational
  int64_t sliding_window = -1; // Mistral/Qwen2 model-level window; -1 = none
  double norm_eps = 1e-5;
  bool attention_bias = false;  // bias on q/k/v (Qwen2: always; Llama: attention_bias flag)
  bool o_bias = false;          // bias on the output projection (Llama attention_bias)
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::string activation;       // "silu" (Llama family) or "gelu_new" / "gelu" / "relu" (GPT-2)
  bool scale_attn_by_inverse_layer_idx = false;  // GPT-2 option
  RopeConfig rope;              // unused for GPT-2
  int64_t bos_id = -1, eos_id = -1;
};

// `path` is only used in error messages.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& path);
ModelConfig load_model_config(const std::string& config_json_path);

}  // namespace kvx
