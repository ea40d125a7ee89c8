// Models loaded by one worker, kept across jobs so a sweep loads each model once per worker.
// Keyed by (model path, device, dtype).
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace kvx {

class CausalLM;  // core/model/model.h

class ModelCache {
 public:
  virtual ~ModelCache() = default;
  // model_spec is the job's "model" object ({"path": DIR, ...}); throws kvx::Error when the
  // folder or its files are missing or corrupt.
  virtual std::shared_ptr<CausalLM> get(const nlohmann::json& model_spec, const std::string& device,
                                        const std::string& dtype) = 0;
  // Drop every model not equal to the given path (a worker switching models frees memory).
  virtual void keep_only(const std::string& path) = 0;
};

std::unique_ptr<ModelCache> make_model_cache();

}  // namespace kvx
