#include "tests/reliability/fuzz_targets.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/common/error.h"
#include "core/higgs/predictor_file.h"
#include "core/model/model_config.h"
#include "core/model/safetensors.h"
#include "core/tokenizer/tokenizer.h"
#include "core/grid/yaml_json.h"
#ifdef KVX_FUZZ_SWEEP
#include "core/grid/identity.h"
#include "core/grid/sweep_config.h"
#endif

namespace kvx::fuzz {

const std::vector<FormatInfo>& formats() {
  static const std::vector<FormatInfo> f = {
      {Format::Safetensors, "safetensors", "model.safetensors"},
      {Format::ConfigJson, "config.json", "config.json"},
      {Format::TokenizerJson, "tokenizer.json", "tokenizer.json"},
      {Format::Yaml, "yaml config", "sweep.yaml"},
      {Format::Hdf5, "hdf5 predictors", "predictors.h5"},
      {Format::IndexJson, "safetensors index", "model.safetensors.index.json"},
  };
  return f;
}

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
#ifdef KVX_FUZZ_SWEEP
kvx::grid::FileHasher& hasher() {
  static kvx::grid::FileHasher h;
  return h;
}
#endif
}  // namespace

void warm_up(const std::string& source_dir) {
#ifdef KVX_FUZZ_SWEEP
  for (const char* c : {"quickstart.yaml", "seed000.yaml"}) {
    const std::string p = source_dir + "/configs/" + c;
    try {
      kvx::grid::parse_sweep(slurp(p), p, source_dir + "/configs", hasher());
    } catch (const kvx::Error&) {
    }
  }
#else
  (void)source_dir;
#endif
}

void run_target(Format f, const std::string& path) {
  switch (f) {
    case Format::Safetensors: {
      auto file = SafetensorsFile::open(path);
      for (const auto& n : file->names()) {
        const auto& e = file->entry(n);
        if (e.dtype == "F32" || e.dtype == "F16" || e.dtype == "BF16") {
          at::Tensor t = file->load(n, at::kFloat, at::kCPU);
          (void)t.sum().item<float>();
        }
      }
      return;
    }
    case Format::ConfigJson:
      (void)load_model_config(path);
      return;
    case Format::TokenizerJson: {
      auto tok = Tokenizer::load(path);
      auto ids = tok.encode("Hello, world!  def f(x):\n\treturn x ** 2 \xe2\x98\x83 \xe6\x97\xa5\xe6\x9c\xac <s> 1234");
      (void)tok.decode(ids);
      (void)tok.bos_id();
      (void)tok.eos_id();
      return;
    }
    case Format::Yaml: {
#ifdef KVX_FUZZ_SWEEP
      // Relative paths resolve against configs/ of the source tree (the seeds are its configs).
      const std::string base = std::string(KVX_SOURCE_DIR) + "/configs";
      (void)kvx::grid::parse_sweep(slurp(path), path, base, hasher());
#else
      (void)kvx::grid::load_yaml_file(path);
#endif
      return;
    }
    case Format::Hdf5: {
      auto p = kvx::higgs::read_predictor_file(path);
      (void)kvx::higgs::describe_h5(path);
      (void)p.side_bits();
      return;
    }
    case Format::IndexJson: {
      // The index names shards in its folder; loading a listed tensor opens its shard.
      Checkpoint ck(std::filesystem::path(path).parent_path().string());
      for (const char* n : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"})
        if (ck.has(n)) (void)ck.load(n, {}, at::kFloat, at::kCPU);
      return;
    }
  }
}

}  // namespace kvx::fuzz
