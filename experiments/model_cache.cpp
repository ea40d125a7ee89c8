#include "experiments/model_cache.h"

#include <map>
#include <mutex>

#include "core/common/error.h"
#include "core/model/model.h"

namespace kvx {
namespace {

// Models stay loaded for the worker's lifetime; a sweep groups jobs by model so this holds
// one or two models at a time (keep_only drops the rest).
class LoadedModels final : public ModelCache {
 public:
  std::shared_ptr<CausalLM> get(const nlohmann::json& spec, const std::string& device,
                                const std::string& dtype) override {
    if (!spec.is_object() || !spec.contains("path") || !spec["path"].is_string())
      throw error("job: 'model' must be a mapping with a string 'path', got {}", spec.dump());
    const std::string path = spec["path"].get<std::string>();
    const std::string key = path + "|" + device + "|" + dtype;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(key);
    if (it != models_.end()) return it->second.model;
    auto m = load_model(path, device, dtype);
    models_[key] = {path, m};
    return m;
  }

  void keep_only(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = models_.begin(); it != models_.end();)
      it = it->second.path == path ? std::next(it) : models_.erase(it);
  }

 private:
  struct Entry {
    std::string path;
    std::shared_ptr<CausalLM> model;
  };
  std::mutex mu_;
  std::map<std::string, Entry> models_;
};

}  // namespace

std::unique_ptr<ModelCache> make_model_cache() { return std::make_unique<LoadedModels>(); }

}  // namespace kvx
