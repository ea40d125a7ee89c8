// resolve_method / parse_method_shorthand / method_label for kvq, segments, selective_int8 and
// sink_window: defaults (role-dependent kvq bits), aliases, and error paths.
#include <gtest/gtest.h>

#include "core/common/error.h"
#include "quantizers/registry.h"

namespace {

using json = nlohmann::json;

std::vector<std::string> error_path(const json& spec) {
  try {
    kvx::resolve_method(spec);
  } catch (const kvx::ParamError& e) {
    return e.path;
  }
  ADD_FAILURE() << "no ParamError for " << spec.dump();
  return {};
}

TEST(KvqSpec, DefaultsAreRoleDependentAndPolicyIsFilledIn) {
  const json m = kvx::resolve_method(json{{"key", "kvq"}, {"value", "kvq"}});
  EXPECT_EQ(m["key"]["bits"], 4);
  EXPECT_EQ(m["value"]["bits"], 2);
  EXPECT_EQ(m["key"]["axis"], "token");
  EXPECT_EQ(m["key"]["group"], 64);
  EXPECT_EQ(m["key"]["compute_dtype"], "auto");
  EXPECT_EQ(m["policy"], (json{{"type", "segments"}, {"sink", 0}, {"residual_length", 128}, {"flush", "requantize_all"}}));
  EXPECT_EQ(kvx::method_label(m), "kvq k4 v2 g64 r128");
}

TEST(KvqSpec, SeedAxisAliases) {
  const json m = kvx::resolve_method(json{{"key", {{"type", "kvq"}, {"axis", -1}}}, {"value", {{"type", "kvq"}, {"axis", 0}}}});
  EXPECT_EQ(m["key"]["axis"], "channel");
  EXPECT_EQ(m["value"]["axis"], "token");
  EXPECT_EQ(error_path(json{{"key", {{"type", "kvq"}, {"axis", 1}}}}), (std::vector<std::string>{"key", "axis"}));
}

TEST(KvqSpec, ErrorsCarryThePath) {
  EXPECT_EQ(error_path(json{{"key", {{"type", "kvq"}, {"nbits", 4}}}}), (std::vector<std::string>{"key", "nbits"}));
  EXPECT_EQ(error_path(json{{"key", "kvq"}, {"value", {{"type", "kvq"}, {"bits", 5}}}}),
            (std::vector<std::string>{"value", "bits"}));
  EXPECT_EQ(error_path(json{{"key", {{"type", "kvq"}, {"bits", "four"}}}}), (std::vector<std::string>{"key", "bits"}));
  EXPECT_EQ(error_path(json{{"key", {{"type", "kvq"}, {"group", 0}}}}), (std::vector<std::string>{"key", "group"}));
  EXPECT_EQ(error_path(json{{"key", "kvq"}, {"policy", {{"type", "segments"}, {"flush", "sometimes"}}}}),
            (std::vector<std::string>{"policy", "flush"}));
  EXPECT_EQ(error_path(json{{"key", "kvq"}, {"policy", {{"type", "segments"}, {"residual_length", -1}}}}),
            (std::vector<std::string>{"policy", "residual_length"}));
  EXPECT_EQ(error_path(json{{"key", {{"type", "kvq"}, {"residual_length", 64}}}}),
            (std::vector<std::string>{"key", "residual_length"}));
  EXPECT_EQ(error_path(json{{"policy", "kvq"}}), (std::vector<std::string>{"policy", "type"}));
  EXPECT_EQ(error_path(json{{"key", "segments"}}), (std::vector<std::string>{"key", "type"}));
  EXPECT_EQ(error_path(json{{"key", "kvq"}, {"policy", "selective_int8"}}), (std::vector<std::string>{"key", "type"}));
  EXPECT_EQ(error_path(json{{"value", "kvq"}, {"policy", "sink_window"}}), (std::vector<std::string>{"value", "type"}));
  EXPECT_EQ(error_path(json{{"policy", {{"type", "sink_window"}, {"window_size", 0}}}}),
            (std::vector<std::string>{"policy", "window_size"}));
  try {
    kvx::resolve_method(json{{"value", {{"type", "kvq"}, {"bits", 5}}}});
  } catch (const kvx::ParamError& e) {
    EXPECT_NE(std::string(e.what()).find("1, 2, 3, 4, 8"), std::string::npos) << e.what();
  }
}

TEST(KvqSpec, KeyOnlyQuantizationLeavesValuesFullPrecision) {
  const json m = kvx::resolve_method(json{{"key", {{"type", "kvq"}, {"bits", 4}}}});
  EXPECT_EQ(m["value"]["type"], "none");
  EXPECT_EQ(kvx::method_label(m), "kvq k4 vfp g64 r128");
  EXPECT_NE(kvx::make_policy(m), nullptr);
}

TEST(Shorthand, KvqForms) {
  auto res = [](const std::string& s) { return kvx::resolve_method(kvx::parse_method_shorthand(s)); };
  EXPECT_EQ(res("kvq:k4v2"), kvx::resolve_method(json{{"key", "kvq"}, {"value", "kvq"}}));
  const json c = res("kvq:k2cv2:g32:r64");
  EXPECT_EQ(c["key"]["bits"], 2);
  EXPECT_EQ(c["key"]["axis"], "channel");
  EXPECT_EQ(c["value"]["axis"], "token");
  EXPECT_EQ(c["value"]["group"], 32);
  EXPECT_EQ(c["policy"]["residual_length"], 64);
  EXPECT_EQ(kvx::method_label(c), "kvq k2c v2 g32 r64");
  EXPECT_EQ(kvx::method_label(res("kvq:k4v2c:s4:append")), "kvq k4 v2c g64 r128 s4 append");
  EXPECT_EQ(kvx::method_label(res("none")), "none");
  EXPECT_EQ(kvx::method_label(res("fp16")), "none");
  EXPECT_EQ(kvx::method_label(res("selective_int8")), "selective_int8 s16 w32");
  EXPECT_EQ(kvx::method_label(res("sink_window:s4:w64")), "sink_window s4 w64");
  EXPECT_THROW(kvx::parse_method_shorthand("kvq:k4"), kvx::Error);
  EXPECT_THROW(kvx::parse_method_shorthand("kvq:k4v2:x9"), kvx::Error);
  EXPECT_THROW(kvx::parse_method_shorthand("kvq"), kvx::Error);
  EXPECT_THROW(kvx::parse_method_shorthand("sink_window:w"), kvx::Error);
  EXPECT_THROW(kvx::parse_method_shorthand("kvx"), kvx::Error);
  EXPECT_THROW(res("kvq:k5v2"), kvx::ParamError);
}

}  // namespace
