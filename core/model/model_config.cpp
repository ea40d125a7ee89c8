#include "core/model/model_config.h"

#include <fstream>
#include <sstream>

#include "core/common/error.h"

namespace kvx {
namespace {

using json = nlohmann::json;

// Field readers: a present field of the wrong type is an error, never a silent default.
int64_t get_int(const json& j, const std::string& key, const std::string& path, int64_t def, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) throw error("{}: missing field '{}' (expected a positive integer)", path, key);
    return def;
  }
  if (!j[key].is_number_integer())
    throw error("{}: field '{}' must be an integer, got {}", path, key, j[key].dump());
  return j[key].get<int64_t>();
}

double get_num(const json& j, const std::string& key, const std::string& path, double def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) throw error("{}: field '{}' must be a number, got {}", path, key, j[key].dump());
  return j[key].get<double>();
}

bool get_bool(const json& j, const std::string& key, const std::string& path, bool def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) throw error("{}: field '{}' must be true or false, got {}", path, key, j[key].dump());
  return j[key].get<bool>();
}

std::string get_str(const json& j, const std::string& key, const std::string& path, const std::string& def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_string()) throw error("{}: field '{}' must be a string, got {}", path, key, j[key].dump());
  return j[key].get<std::string>();
}

void require_positive(int64_t v, const std::string& key, const std::string& path) {
  if (v <= 0) throw error("{}: field '{}' must be positive, got {}", path, key, v);
}

// eos_token_id may be a list in newer configs; the first entry is the one generation stops on.
int64_t token_id(const json& j, const std::string& key) {
  if (!j.contains(key)) return -1;
  const auto& v = j[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  return -1;
}

// RoPE settings: transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; older
// checkpoints write rope_theta at top level and optionally rope_scaling {rope_type|type, ...}.
RopeConfig parse_rope(const json& j, const std::string& path) {
  RopeConfig r;
  r.theta = get_num(j, "rope_theta", path, 10000.0);
  std::string where;
  const json* scaling = nullptr;
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    if (!j["rope_parameters"].is_object()) throw error("{}: field 'rope_parameters' must be an object", path);
    scaling = &j["rope_parameters"];
    where = "rope_parameters";
    r.theta = get_num(*scaling, "rope_theta", path + " rope_parameters", r.theta);
  } else if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    if (!j["rope_scaling"].is_object()) throw error("{}: field 'rope_scaling' must be an object", path);
    scaling = &j["rope_scaling"];
    where = "rope_scaling";
  }
  if (!scaling) return r;
  const std::string ctx = path + " " + where;
  r.type = get_str(*scaling, "rope_type", ctx, get_str(*scaling, "type", ctx, "default"));
  if (r.type == "default") return r;
  if (r.type == "linear") {
    r.factor = get_num(*scaling, "factor", ctx, 0.0);
    if (!(r.factor > 0)) throw error("{}: field '{}.factor' must be a positive number for rope_type linear", path, where);
    return r;
  }
  if (r.type == "llama3") {
    for (const char* k : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!scaling->contains(k)) throw error("{}: field '{}.{}' is required for rope_type llama3", path, where, k);
    r.factor = get_num(*scaling, "factor", ctx, 0.0);
    r.low_freq_factor = get_num(*scaling, "low_freq_factor", ctx, 0.0);
    r.high_freq_factor = get_num(*scaling, "high_freq_factor", ctx, 0.0);
    r.original_max_positions = get_int(*scaling, "original_max_position_embeddings", ctx, 0, true);
    if (!(r.factor > 0) || !(r.low_freq_factor > 0) || !(r.high_freq_factor > r.low_freq_factor) ||
        r.original_max_positions <= 0)
      throw error("{}: field '{}' has invalid llama3 parameters (need factor > 0, 0 < low_freq_factor < "
                  "high_freq_factor, original_max_position_embeddings > 0)", path, where);
    return r;
  }
  throw error("{}: field '{}.rope_type' is '{}', which kvx does not support (expected default, linear or llama3)",
              path, where, r.type);
}

void parse_llama_family(const json& j, const std::string& path, ModelConfig& c) {
  c.arch = Arch::Llama;
  c.vocab_size = get_int(j, "vocab_size", path, 0, true);
  c.hidden_size = get_int(j, "hidden_size", path, 0, true);
  c.n_layers = get_int(j, "num_hidden_layers", path, 0, true);
  c.n_heads = get_int(j, "num_attention_heads", path, 0, true);
  c.n_kv_heads = get_int(j, "num_key_value_heads", path, c.n_heads, false);
  c.intermediate_size = get_int(j, "intermediate_size", path, 0, true);
  for (auto [v, k] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, "hidden_size"},
                      {c.n_layers, "num_hidden_layers"}, {c.n_heads, "num_attention_heads"},
                      {c.n_kv_heads, "num_key_value_heads"}, {c.intermediate_size, "intermediate_size"}})
    require_positive(v, k, path);
  if (c.hidden_size % c.n_heads != 0 && !j.contains("head_dim"))
    throw error("{}: hidden_size {} is not divisible by num_attention_heads {} and no 'head_dim' is given",
                path, c.hidden_size, c.n_heads);
  c.head_dim = get_int(j, "head_dim", path, c.hidden_size / c.n_heads, false);
  require_positive(c.head_dim, "head_dim", path);
  if (c.head_dim % 2 != 0) throw error("{}: field 'head_dim' must be even for RoPE, got {}", path, c.head_dim);
  if (c.n_heads % c.n_kv_heads != 0)
    throw error("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", path, c.n_heads,
                c.n_kv_heads);
  c.max_positions = get_int(j, "max_position_embeddings", path, 2048, false);
  c.norm_eps = get_num(j, "rms_norm_eps", path, 1e-6);
  c.activation = get_str(j, "hidden_act", path, "silu");
  if (c.activation != "silu")
    throw error("{}: field 'hidden_act' is '{}', kvx supports only 'silu' for {}", path, c.activation, c.architecture);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", path, false);
  c.mlp_bias = get_bool(j, "mlp_bias", path, false);
  if (c.architecture == "Qwen2ForCausalLM") {
    c.attention_bias = true;  // Qwen2 always has q/k/v bias and no o_proj bias
    c.o_bias = false;
    if (get_bool(j, "use_sliding_window", path, false)) {
      int64_t w = get_int(j, "sliding_window", path, -1, false);
      int64_t max_window_layers = get_int(j, "max_window_layers", path, c.n_layers, false);
      if (w > 0 && max_window_layers < c.n_layers)
        throw error("{}: use_sliding_window with max_window_layers < num_hidden_layers is not supported", path);
      c.sliding_window = w > 0 ? w : -1;
    }
  } else {
    c.attention_bias = get_bool(j, "attention_bias", path, false);
    c.o_bias = c.attention_bias;
    if (c.architecture == "MistralForCausalLM") {
      int64_t w = get_int(j, "sliding_window", path, -1, false);
      c.sliding_window = w > 0 ? w : -1;
    }
  }
  c.rope = parse_rope(j, path);
}

void parse_gpt2(const json& j, const std::string& path, ModelConfig& c) {
  c.arch = Arch::Gpt2;
  c.vocab_size = get_int(j, "vocab_size", path, 0, true);
  c.hidden_size = get_int(j, "n_embd", path, 0, true);
  c.n_layers = get_int(j, "n_layer", path, 0, true);
  c.n_heads = get_int(j, "n_head", path, 0, true);
  c.max_positions = get_int(j, "n_positions", path, 0, true);
  for (auto [v, k] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, "n_embd"}, {c.n_layers, "n_layer"},
                      {c.n_heads, "n_head"}, {c.max_positions, "n_positions"}})
    require_positive(v, k, path);
  if (c.hidden_size % c.n_heads != 0)
    throw error("{}: n_embd {} is not divisible by n_head {}", path, c.hidden_size, c.n_heads);
  c.n_kv_heads = c.n_heads;
  c.head_dim = c.hidden_size / c.n_heads;
  c.intermediate_size = get_int(j, "n_inner", path, 4 * c.hidden_size, false);
  require_positive(c.intermediate_size, "n_inner", path);
  c.norm_eps = get_num(j, "layer_norm_epsilon", path, 1e-5);
  c.activation = get_str(j, "activation_function", path, "gelu_new");
  if (c.activation == "gelu_pytorch_tanh") c.activation = "gelu_new";  // same formula
  if (c.activation != "gelu_new" && c.activation != "gelu" && c.activation != "relu")
    throw error("{}: field 'activation_function' is '{}', expected gelu_new, gelu_pytorch_tanh, gelu or relu",
                path, c.activation);
  if (!get_bool(j, "scale_attn_weights", path, true))
    throw error("{}: field 'scale_attn_weights' = false is not supported", path);
  c.scale_attn_by_inverse_layer_idx = get_bool(j, "scale_attn_by_inverse_layer_idx", path, false);
  if (get_bool(j, "add_cross_attention", path, false))
    throw error("{}: field 'add_cross_attention' = true is not supported (decoder-only models only)", path);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", path, true);
  c.attention_bias = c.o_bias = c.mlp_bias = true;
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& path) {
  if (!j.is_object()) throw error("{}: expected a JSON object", path);
  if (!j.contains("architectures") || !j["architectures"].is_array() || j["architectures"].empty() ||
      !j["architectures"][0].is_string())
    throw error("{}: field 'architectures' must be a non-empty list of names", path);
  ModelConfig c;
  c.architecture = j["architectures"][0].get<std::string>();
  if (c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM" ||
      c.architecture == "Qwen2ForCausalLM")
    parse_llama_family(j, path, c);
  else if (c.architecture == "GPT2LMHeadModel")
    parse_gpt2(j, path, c);
  else
    throw error("{}: field 'architectures' names '{}', which kvx does not support (expected LlamaForCausalLM, "
                "MistralForCausalLM, Qwen2ForCausalLM or GPT2LMHeadModel)", path, c.architecture);
  c.bos_id = token_id(j, "bos_token_id");
  c.eos_id = token_id(j, "eos_token_id");
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw error("{}: cannot open the model's config.json", path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    throw error("{}: invalid JSON: {}", path, e.what());
  }
  return parse_model_config(j, path);
}

}  // namespace kvx
