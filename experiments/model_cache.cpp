#include "experiments/model_cache.h"

#include "core/common/error.h"

namespace kvx {
namespace {
// Placeholder until core/model lands: every get() fails with a clear message.
class NoModels final : public ModelCache {
 public:
  std::shared_ptr<CausalLM> get(const nlohmann::json& spec, const std::string&, const std::string&) override {
    throw error("{}: model loading is not available in this build", spec.value("path", std::string("?")));
  }
  void keep_only(const std::string&) override {}
};
}  // namespace

std::unique_ptr<ModelCache> make_model_cache() { return std::make_unique<NoModels>(); }

}  // namespace kvx
