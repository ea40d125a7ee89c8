// Bad tokenizer files: one kvx::Error naming the file and the key, never a crash. The
// mutation test replaces every node of the fixtures with values of other types.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace {

using kvx::Tokenizer;
using nlohmann::json;

std::string temp_dir() {
  static const std::string dir = [] {
    std::string d = ::testing::TempDir() + "kvx_tokenizer_test_XXXXXX";
    if (!mkdtemp(d.data())) std::abort();
    return d;
  }();
  return dir;
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = temp_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  return path;
}

json fixture(const char* name) {
  return json::parse(kvx::test::read_text(kvx::test::source_dir() + "/tests/tokenizer/fixtures/" + name +
                                          "/tokenizer.json"));
}

// Loads and returns the kvx::Error message ("" if it loaded).
std::string load_error(const std::string& path) {
  try {
    Tokenizer::load(path);
  } catch (const kvx::Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(hay, needle) EXPECT_NE((hay).find(needle), std::string::npos) << (hay)

TEST(TokenizerErrors, MissingFile) {
  const std::string msg = load_error("/nonexistent/dir/tokenizer.json");
  EXPECT_CONTAINS(msg, "/nonexistent/dir/tokenizer.json");
}

TEST(TokenizerErrors, InvalidJson) {
  const std::string path = write_temp("broken.json", "{\"model\": {\"type\": \"BPE\", ");
  const std::string msg = load_error(path);
  EXPECT_CONTAINS(msg, "broken.json");
  EXPECT_CONTAINS(msg, "invalid JSON");
}

TEST(TokenizerErrors, UnsupportedModelType) {
  json j = fixture("sp_byte_fallback");
  j["model"]["type"] = "Unigram";
  const std::string msg = load_error(write_temp("unigram.json", j.dump()));
  EXPECT_CONTAINS(msg, "unigram.json: model.type 'Unigram' is not supported (expected BPE)");
}

TEST(TokenizerErrors, MissingModelAndVocab) {
  json j = fixture("sp_byte_fallback");
  j.erase("model");
  EXPECT_CONTAINS(load_error(write_temp("nomodel.json", j.dump())), "nomodel.json: model is missing");
  j = fixture("sp_byte_fallback");
  j["model"].erase("vocab");
  EXPECT_CONTAINS(load_error(write_temp("novocab.json", j.dump())), "novocab.json: model.vocab is missing");
}

TEST(TokenizerErrors, UnsupportedStagesAndBadMerges) {
  json j = fixture("llama3_style");
  j["pre_tokenizer"]["pretokenizers"][0]["type"] = "Whitespace";
  EXPECT_CONTAINS(load_error(write_temp("pre.json", j.dump())),
                  "pre.json: pre_tokenizer.pretokenizers[0].type 'Whitespace' is not supported");
  j = fixture("sp_byte_fallback");
  j["normalizer"] = json{{"type", "NFKC"}};
  EXPECT_CONTAINS(load_error(write_temp("norm.json", j.dump())), "norm.json: normalizer.type 'NFKC' is not supported");
  j = fixture("sp_byte_fallback");
  j["model"]["merges"][3] = "qq zz";
  EXPECT_CONTAINS(load_error(write_temp("merge.json", j.dump())), "merge.json: model.merges[3] token 'qq'");
  j = fixture("llama3_style");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_CONTAINS(load_error(write_temp("regex.json", j.dump())),
                  "regex.json: pre_tokenizer.pretokenizers[0].pattern.Regex");
  j = fixture("llama3_style");
  j["model"]["vocab"]["Hello"] = "259";
  EXPECT_CONTAINS(load_error(write_temp("vocab.json", j.dump())), "model.vocab[\"Hello\"] must be an integer");
}

// Every node (outside the big vocab) replaced by null, a number, a string, [] and {}:
// loading either works or throws kvx::Error; a loaded tokenizer must survive encode/decode.
TEST(TokenizerErrors, MutatedFilesNeverCrash) {
  const std::vector<json> replacements = {nullptr, 7, -1, "x", json::array(), json::object(), 1e300};
  int loaded = 0, rejected = 0;
  for (const char* name : {"sp_byte_fallback", "llama3_style"}) {
    const json base = fixture(name);
    std::vector<json::json_pointer> nodes;
    std::function<void(const json&, const json::json_pointer&)> walk = [&](const json& j, const json::json_pointer& p) {
      if (p.to_string() == "/model/vocab" && j.is_object()) {  // a few vocab entries only
        nodes.push_back(p / "Hello");
        nodes.push_back(p / "<0xC3>");
        nodes.push_back(p / "a");
        return;
      }
      nodes.push_back(p);
      if (j.is_object())
        for (auto it = j.begin(); it != j.end(); ++it) walk(it.value(), p / it.key());
      else if (j.is_array())
        for (size_t i = 0; i < j.size() && i < 4; ++i) walk(j[i], p / std::to_string(i));
    };
    walk(base, json::json_pointer());
    for (const auto& p : nodes) {
      for (const json& r : replacements) {
        json j = base;
        if (!p.empty() && !j.contains(p)) continue;
        j[p] = r;
        const std::string path = write_temp("mutated.json", j.dump());
        try {
          const Tokenizer tok = Tokenizer::load(path);
          ++loaded;
          try {
            const auto ids = tok.encode("Hello wörld <s> 2024!\n", true);
            (void)tok.decode(ids);
            (void)tok.decode({-5, 0, 3, 1 << 30});
          } catch (const kvx::Error&) {
          }
        } catch (const kvx::Error& e) {
          ++rejected;
          EXPECT_CONTAINS(std::string(e.what()), "mutated.json");
        }
      }
    }
  }
  std::printf("[ info ] mutations: %d loaded, %d rejected with kvx::Error\n", loaded, rejected);
  EXPECT_GT(rejected, 0);
}

}  // namespace
