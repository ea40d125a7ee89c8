// Corrupt, truncated and inconsistent checkpoints: each must be one kvx::Error whose message
// names the file and what is wrong. Mutated copies of the fixtures go into a temp folder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"
#include "fixtures.h"
#include "core/common/remove_tree.h"

namespace kvx {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class BadCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvx_model_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    const std::string bytes = test::read_text(test::model_dir("tiny-gpt2") + "/model.safetensors");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[i]);
    header_ = json::parse(bytes.substr(8, n));
    data_ = bytes.substr(8 + n);
    fs::copy_file(test::model_dir("tiny-gpt2") + "/config.json", dir_ + "/config.json");
  }
  void TearDown() override { kvx::remove_tree(dir_); }

  static std::string with_header(const json& h, const std::string& data) {
    const std::string hs = h.dump();
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = char((uint64_t(hs.size()) >> (8 * i)) & 0xff);
    return out + hs + data;
  }
  void write_model(const std::string& bytes) {
    std::FILE* f = std::fopen((dir_ + "/model.safetensors").c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  std::string load_error() {
    try {
      load_model(dir_, "cpu", "float32");
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  std::string dir_;
  json header_;
  std::string data_;
};

#define EXPECT_HAS(msg, needle) EXPECT_NE((msg).find(needle), std::string::npos) << (msg)

TEST_F(BadCheckpoint, IntactCopyLoads) {
  write_model(with_header(header_, data_));
  EXPECT_EQ(load_error(), "(no error)");
}

TEST_F(BadCheckpoint, TruncatedFile) {
  const std::string full = with_header(header_, data_);
  write_model(full.substr(0, full.size() / 2));
  std::string e = load_error();
  EXPECT_HAS(e, dir_ + "/model.safetensors");
  EXPECT_HAS(e, "outside the data region");
  write_model(full.substr(0, 5));
  EXPECT_HAS(load_error(), "too short for a safetensors header");
  write_model(full.substr(0, 100));  // header cut in the middle
  EXPECT_HAS(load_error(), "exceeds the file size");
}

TEST_F(BadCheckpoint, HeaderLengthLargerThanFile) {
  std::string b = with_header(header_, data_);
  b[6] = char(0x7f);  // length ~ 2^55
  write_model(b);
  EXPECT_HAS(load_error(), "header length");
}

TEST_F(BadCheckpoint, OffsetsOutsideDataAndReversed) {
  json h = header_;
  h["transformer.wpe.weight"]["data_offsets"][1] = data_.size() + 2;
  write_model(with_header(h, data_));
  std::string e = load_error();
  EXPECT_HAS(e, "tensor 'transformer.wpe.weight' has data_offsets");
  EXPECT_HAS(e, "outside the data region");
  h = header_;
  h["transformer.ln_f.bias"]["data_offsets"] = {100, 10};
  write_model(with_header(h, data_));
  EXPECT_HAS(load_error(), "begin > end");
  h = header_;
  h["transformer.ln_f.bias"]["shape"] = {-1};
  write_model(with_header(h, data_));
  EXPECT_HAS(load_error(), "invalid shape");
  h = header_;
  h["transformer.ln_f.bias"]["shape"] = {int64_t(1) << 40, int64_t(1) << 40};
  write_model(with_header(h, data_));
  EXPECT_HAS(load_error(), "overflows");
  h = header_;
  h["transformer.ln_f.bias"]["shape"] = {255};  // 510 bytes for a 512-byte range
  write_model(with_header(h, data_));
  EXPECT_HAS(load_error(), "occupies 512 bytes but shape [255] of F16 needs 510 bytes");
}

TEST_F(BadCheckpoint, WrongDtypeString) {
  json h = header_;
  h["transformer.h.0.ln_1.bias"]["dtype"] = "Q7";
  write_model(with_header(h, data_));
  EXPECT_HAS(load_error(), "tensor 'transformer.h.0.ln_1.bias' has unknown dtype 'Q7'");
  h["transformer.h.0.ln_1.bias"]["dtype"] = "I16";  // valid safetensors, not a weight dtype
  write_model(with_header(h, data_));
  EXPECT_HAS(load_error(), "has dtype I16, kvx loads only BF16, F16 and F32");
}

TEST_F(BadCheckpoint, MissingTensorAndWrongShape) {
  json h = header_;
  h.erase("transformer.h.3.mlp.c_fc.bias");
  write_model(with_header(h, data_));
  std::string e = load_error();
  EXPECT_HAS(e, dir_ + "/model.safetensors: missing tensor 'transformer.h.3.mlp.c_fc.bias'");
  h = header_;
  auto& t = h["transformer.h.0.ln_1.weight"];
  t["shape"] = {128};
  t["data_offsets"][1] = t["data_offsets"][0].get<int64_t>() + 256;
  write_model(with_header(h, data_));
  EXPECT_HAS(load_error(), "tensor 'transformer.h.0.ln_1.weight' has shape [128], expected [256]");
}

TEST_F(BadCheckpoint, UnknownArchitecture) {
  write_model(with_header(header_, data_));
  json c = json::parse(test::read_text(dir_ + "/config.json"));
  c["architectures"] = {"BertForMaskedLM"};
  std::FILE* f = std::fopen((dir_ + "/config.json").c_str(), "w");
  std::fputs(c.dump().c_str(), f);
  std::fclose(f);
  std::string e = load_error();
  EXPECT_HAS(e, dir_ + "/config.json: field 'architectures' names 'BertForMaskedLM'");
}

TEST_F(BadCheckpoint, MissingShard) {
  const std::string src = test::model_dir("small-code-llama");
  for (const char* f : {"model.safetensors.index.json", "model-00001-of-00003.safetensors",
                        "model-00003-of-00003.safetensors"})
    fs::copy_file(src + "/" + f, dir_ + "/" + f);
  fs::copy_file(src + "/config.json", dir_ + "/config.json", fs::copy_options::overwrite_existing);
  std::string e = load_error();
  EXPECT_HAS(e, dir_ + "/model-00002-of-00003.safetensors: missing shard file");
  EXPECT_HAS(e, "for tensor 'model.layers.");
}

TEST(Checkpoint, ShardedIndexResolvesEveryTensor) {
  Checkpoint ck(test::model_dir("small-code-llama"));
  EXPECT_TRUE(ck.has("model.norm.weight"));
  EXPECT_FALSE(ck.has("lm_head.weight"));  // tied
  at::Tensor w = ck.load("model.norm.weight", {384}, at::kFloat, at::kCPU);
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_EQ(w.numel(), 384);
}

}  // namespace
}  // namespace kvx
