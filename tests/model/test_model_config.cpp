// config.json parsing: the variants Hub checkpoints use, and clear errors for the rest.
#include <gtest/gtest.h>

#include "core/common/error.h"
#include "core/model/model_config.h"
#include "fixtures.h"

namespace kvx {
namespace {

using json = nlohmann::json;

json llama_base() {
  return json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
    "rms_norm_eps": 1e-6, "hidden_act": "silu", "max_position_embeddings": 256})");
}

std::string error_of(const json& j) {
  try {
    parse_model_config(j, "x/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, FixturesParse) {
  auto c = load_model_config(test::model_dir("small-code-llama") + "/config.json");
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.n_heads, 3);
  EXPECT_EQ(c.n_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 128);  // explicit, not hidden/heads
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  auto g = load_model_config(test::model_dir("tiny-gpt2") + "/config.json");
  EXPECT_EQ(g.arch, Arch::Gpt2);
  EXPECT_EQ(g.head_dim, 64);
  EXPECT_EQ(g.intermediate_size, 1024);  // n_inner null -> 4 * n_embd
  EXPECT_EQ(g.max_positions, 1024);
  EXPECT_EQ(g.activation, "gelu_new");
}

TEST(ModelConfig, TopLevelRopeThetaAndLlama3Scaling) {
  json j = llama_base();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto c = parse_model_config(j, "x/config.json");
  EXPECT_EQ(c.head_dim, 16);  // hidden / heads
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_EQ(c.rope.original_max_positions, 8192);
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // older key name
  EXPECT_EQ(parse_model_config(j, "x").rope.type, "linear");
}

TEST(ModelConfig, Qwen2HasQkvBiasMistralHasWindow) {
  json j = llama_base();
  j["architectures"] = {"Qwen2ForCausalLM"};
  auto q = parse_model_config(j, "x");
  EXPECT_TRUE(q.attention_bias);
  EXPECT_FALSE(q.o_bias);
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 4096;
  EXPECT_EQ(parse_model_config(j, "x").sliding_window, 4096);
  j["architectures"] = {"LlamaForCausalLM"};
  j["attention_bias"] = true;
  auto l = parse_model_config(j, "x");
  EXPECT_TRUE(l.attention_bias && l.o_bias);
}

TEST(ModelConfig, UnsupportedFieldsAreNamed) {
  json j = llama_base();
  j["architectures"] = {"FalconForCausalLM"};
  EXPECT_NE(error_of(j).find("x/config.json: field 'architectures' names 'FalconForCausalLM'"), std::string::npos)
      << error_of(j);
  j = llama_base();
  j["rope_parameters"] = {{"rope_theta", 1e4}, {"rope_type", "yarn"}};
  EXPECT_NE(error_of(j).find("rope_parameters.rope_type' is 'yarn'"), std::string::npos) << error_of(j);
  j = llama_base();
  j["hidden_act"] = "gelu";
  EXPECT_NE(error_of(j).find("field 'hidden_act' is 'gelu'"), std::string::npos) << error_of(j);
  j = llama_base();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("not a multiple of num_key_value_heads 3"), std::string::npos) << error_of(j);
  j = llama_base();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("missing field 'hidden_size'"), std::string::npos) << error_of(j);
  j = llama_base();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NE(error_of(j).find("'rope_scaling.low_freq_factor' is required"), std::string::npos) << error_of(j);
  json g = json::parse(test::read_text(test::model_dir("tiny-gpt2") + "/config.json"));
  g["activation_function"] = "swish";
  EXPECT_NE(error_of(g).find("field 'activation_function' is 'swish'"), std::string::npos) << error_of(g);
}

}  // namespace
}  // namespace kvx
