// The safetensors writer: round trip through the reader, header layout, whole-model saves
// (names, dtypes, Conv1D orientation, split fused projections, tied heads, side files).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"
#include "core/model/safetensors_writer.h"
#include "tests/model/fixtures.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;

namespace {

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("kvx_train_" + tag + "_" + std::to_string(::getpid()));
  kvx::remove_tree(p);
  fs::create_directories(p);
  return p.string();
}

// Header JSON and its length, parsed by hand (independent of the reader).
std::pair<nlohmann::json, uint64_t> header_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  std::string h(n, '\0');
  in.read(h.data(), std::streamsize(n));
  return {nlohmann::json::parse(h), n};
}

TEST(SafetensorsWriter, RoundTripAndValidHeader) {
  const std::string dir = tmp_dir("rt");
  const std::string path = dir + "/t.safetensors";
  at::manual_seed(1);
  std::vector<std::pair<std::string, at::Tensor>> ts = {
      {"a.f32", at::randn({3, 5})},
      {"b.f16", at::randn({7}).to(at::kHalf)},
      {"c.bf16", at::randn({2, 3, 4}).to(at::kBFloat16)},
      {"d.i64", at::arange(6, at::kLong).view({2, 3})},
      {"e.t", at::randn({4, 6}).t()},  // non-contiguous input
      {"f.empty", at::zeros({0, 3})},
  };
  kvx::write_safetensors(path, ts);

  auto [h, n] = header_of(path);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(h["__metadata__"]["format"], "pt");
  const uint64_t data_bytes = fs::file_size(path) - 8 - n;
  uint64_t expect_begin = 0;
  for (const auto& [name, t] : ts) {
    ASSERT_TRUE(h.contains(name)) << name;
    const auto& e = h[name];
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.sizes().vec()) << name;
    const auto off = e["data_offsets"].get<std::vector<uint64_t>>();
    EXPECT_EQ(off[0], expect_begin) << name;
    EXPECT_EQ(off[1] - off[0], uint64_t(t.numel() * t.element_size())) << name;
    expect_begin = off[1];
  }
  EXPECT_EQ(expect_begin, data_bytes);
  EXPECT_EQ(h["a.f32"]["dtype"], "F32");
  EXPECT_EQ(h["b.f16"]["dtype"], "F16");
  EXPECT_EQ(h["c.bf16"]["dtype"], "BF16");
  EXPECT_EQ(h["d.i64"]["dtype"], "I64");

  auto f = kvx::SafetensorsFile::open(path);
  for (const char* name : {"a.f32", "e.t"})
    for (const auto& [nm, t] : ts)
      if (nm == name) EXPECT_TRUE(at::equal(f->load(name, at::kFloat, at::kCPU), t.contiguous())) << name;
  EXPECT_TRUE(at::equal(f->load("b.f16", at::kHalf, at::kCPU), ts[1].second));
  EXPECT_TRUE(at::equal(f->load("c.bf16", at::kBFloat16, at::kCPU), ts[2].second));
  EXPECT_EQ(f->entry("d.i64").dtype, "I64");
  kvx::remove_tree(dir);
}

TEST(SafetensorsWriter, RejectsDuplicateAndEmptyNames) {
  const std::string dir = tmp_dir("bad");
  EXPECT_THROW(kvx::write_safetensors(dir + "/x.safetensors", {{"a", at::zeros({1})}, {"a", at::zeros({1})}}),
               kvx::Error);
  EXPECT_THROW(kvx::write_safetensors(dir + "/x.safetensors", {{"", at::zeros({1})}}), kvx::Error);
  EXPECT_THROW(kvx::write_safetensors(dir + "/no/such/dir/x.safetensors", {{"a", at::zeros({1})}}), kvx::Error);
  kvx::remove_tree(dir);
}

// Saving an untouched model reproduces the source file tensor for tensor: same names, shapes,
// dtypes and bytes (GPT-2 Conv1D back to [in, out], Llama q/k/v and gate/up split again, tied
// heads not duplicated), and the folder loads again with identical weights.
void check_model_round_trip(const std::string& name) {
  const std::string src = kvx::test::model_dir(name);
  const std::string out = tmp_dir("model_" + name);
  auto m = kvx::load_model(src);
  kvx::SaveOptions so;
  so.source_dir = src;
  kvx::save_hf_model(*m, out, so);
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  EXPECT_FALSE(fs::exists(out + "/reference.json"));

  kvx::Checkpoint source(src);
  auto saved = kvx::SafetensorsFile::open(out + "/model.safetensors");
  size_t n = 0;
  for (const auto& tn : saved->names()) {
    ASSERT_TRUE(source.has(tn)) << tn;
    const auto& e = saved->entry(tn);
    const at::ScalarType st = e.dtype == "BF16" ? at::kBFloat16 : e.dtype == "F16" ? at::kHalf : at::kFloat;
    at::Tensor a = saved->load(tn, st, at::kCPU);
    at::Tensor b = source.load(tn, {}, st, at::kCPU);
    EXPECT_TRUE(a.sizes().equals(b.sizes())) << tn;
    EXPECT_TRUE(at::equal(a, b)) << tn;
    ++n;
  }
  EXPECT_GT(n, 10u);
  EXPECT_EQ(saved->has("lm_head.weight"), source.has("lm_head.weight"));

  auto again = kvx::load_model(out);
  auto sa = m->hf_state_dict(), sb = again->hf_state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(at::equal(sa[i].second, sb[i].second)) << sa[i].first;
  }
  kvx::remove_tree(out);
}

TEST(SafetensorsWriter, Gpt2ModelRoundTrip) { check_model_round_trip("tiny-gpt2"); }
TEST(SafetensorsWriter, ShardedLlamaModelRoundTrip) { check_model_round_trip("small-code-llama"); }

TEST(SafetensorsWriter, SaveDtypeRewritesConfig) {
  const std::string src = kvx::test::model_dir("tiny-gpt2");
  const std::string out = tmp_dir("f32");
  auto m = kvx::load_model(src);
  kvx::SaveOptions so;
  so.source_dir = src;
  so.dtype = "float32";
  kvx::save_hf_model(*m, out, so);
  auto saved = kvx::SafetensorsFile::open(out + "/model.safetensors");
  for (const auto& tn : saved->names()) EXPECT_EQ(saved->entry(tn).dtype, "F32") << tn;
  std::ifstream in(out + "/config.json");
  EXPECT_EQ(nlohmann::json::parse(in)["dtype"], "float32");
  so.dtype = "int4";
  EXPECT_THROW(kvx::save_hf_model(*m, out, so), kvx::Error);
  so.dtype = "original";
  EXPECT_THROW(kvx::save_hf_model(*m, src, so), kvx::Error);  // never overwrite the source
  kvx::remove_tree(out);
}

}  // namespace
