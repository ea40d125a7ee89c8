// Test helpers for the protocol tests: a ModelCache that loads fixture models directly (so the
// tests do not depend on the worker's cache), fixture paths, and a job builder.
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include "core/model/model.h"
#include "experiments/model_cache.h"
#include "experiments/protocol.h"

namespace kvx::test {

inline std::string source_dir() {
  const char* env = std::getenv("KVX_SOURCE_DIR");
  return env && *env ? env : KVX_SOURCE_DIR;
}
inline std::string model_dir(const std::string& name) { return source_dir() + "/data/models/" + name; }
inline std::string wikitext() { return source_dir() + "/data/wikitext-2/test.txt"; }

class DirectModels final : public ModelCache {
 public:
  std::shared_ptr<CausalLM> get(const nlohmann::json& spec, const std::string& device,
                                const std::string& dtype) override {
    const std::string path = spec.at("path").get<std::string>();
    auto& m = models_[path + "|" + device + "|" + dtype];
    if (!m) m = load_model(path, device, dtype);
    return m;
  }
  void keep_only(const std::string&) override {}

 private:
  std::map<std::string, std::shared_ptr<CausalLM>> models_;
};

// One process-wide cache: fixture models load once for the whole test binary.
inline JobContext& context() {
  static DirectModels models;
  static JobContext ctx;
  ctx.models = &models;
  return ctx;
}

inline nlohmann::json make_job(const std::string& model, const nlohmann::json& protocol, const nlohmann::json& method,
                               const std::string& dataset = "") {
  nlohmann::json job;
  job["model"] = {{"path", model_dir(model)}, {"hash", model}};
  job["dataset"] = dataset.empty() ? nlohmann::json(nullptr)
                                   : nlohmann::json{{"path", dataset}, {"hash", dataset}};
  job["protocol"] = resolve_protocol(protocol);
  job["method"] = resolve_method(method);
  return job;
}

inline std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

}  // namespace kvx::test
