// Grid expansion (cartesian, zip, include/exclude), validation errors at exact line:column,
// and job key stability. Uses the noop protocol and the `none` method, which need no model.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/common/error.h"
#include "core/grid/identity.h"
#include "core/grid/sweep_config.h"
#include "experiments/protocol.h"
#include "quantizers/registry.h"
#include "engine_test_util.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using kvx::grid::FileHasher;
using kvx::grid::parse_sweep;
using kvx::grid::SweepConfig;

namespace {

SweepConfig parse(const std::string& yaml, const std::string& dir = "/tmp") {
  FileHasher h;
  return parse_sweep(yaml, "t.yaml", dir, h);
}

std::string error_of(const std::string& yaml, const std::string& dir = "/tmp") {
  try {
    parse(yaml, dir);
  } catch (const kvx::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// (sleep_ms, value) of every job, sorted.
std::vector<std::pair<int, double>> noop_params(const SweepConfig& c) {
  std::vector<std::pair<int, double>> v;
  for (const auto& j : c.jobs)
    v.emplace_back(j.job["protocol"]["sleep_ms"].get<int>(), j.job["protocol"]["value"].get<double>());
  std::sort(v.begin(), v.end());
  return v;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

const char* kHead = "name: t\nmethods:\n  - {name: fp16, key: none, value: none}\n";

}  // namespace

TEST(Grid, CartesianProductOfLists) {
  auto c = parse(std::string(kHead) + "protocols:\n  - {name: noop, sleep_ms: [0, 1], value: [1, 2, 3]}\n");
  std::vector<std::pair<int, double>> want = {{0, 1}, {0, 2}, {0, 3}, {1, 1}, {1, 2}, {1, 3}};
  EXPECT_EQ(noop_params(c), want);
  std::set<std::string> keys;
  for (const auto& j : c.jobs) keys.insert(j.key);
  EXPECT_EQ(keys.size(), 6u);
  EXPECT_EQ(c.jobs[0].protocol, "noop");
  EXPECT_EQ(c.jobs[0].method, "fp16");
  EXPECT_TRUE(c.jobs[0].job["model"].is_null());
  EXPECT_EQ(c.jobs[0].params["key.type"], "none");
  EXPECT_TRUE(c.jobs[0].params.contains("protocol.sleep_ms"));
}

TEST(Grid, ZipVariesTogether) {
  auto c = parse(std::string(kHead) +
                 "protocols:\n  - name: noop\n    zip: {sleep_ms: [0, 1, 2], value: [5, 6, 7]}\n");
  std::vector<std::pair<int, double>> want = {{0, 5}, {1, 6}, {2, 7}};
  EXPECT_EQ(noop_params(c), want);
}

TEST(Grid, ZipTimesList) {
  auto c = parse(std::string(kHead) +
                 "protocols:\n  - name: noop\n    fail: [false]\n    zip: {sleep_ms: [0, 1], value: [5, 6]}\n");
  EXPECT_EQ(c.jobs.size(), 2u);
}

TEST(Grid, ExcludeAndInclude) {
  auto c = parse(std::string(kHead) +
                 "protocols:\n  - {name: noop, sleep_ms: [0, 1], value: [1, 2]}\n"
                 "exclude:\n  - {protocol.sleep_ms: 1, protocol.value: 2}\n  - {method: fp16, protocol.value: [7]}\n"
                 "include:\n  - {protocol: noop, method: fp16, protocol.sleep_ms: 5, protocol.value: 9}\n");
  std::vector<std::pair<int, double>> want = {{0, 1}, {0, 2}, {1, 1}, {5, 9}};
  EXPECT_EQ(noop_params(c), want);
}

TEST(Grid, ExcludeMatchesResolvedDefaults) {
  // value defaults to 0.0: an exclude on value 0 removes the job that does not spell it out.
  auto c = parse(std::string(kHead) + "protocols:\n  - {name: noop, sleep_ms: [0, 1]}\n"
                                      "exclude:\n  - {protocol.value: 0, protocol.sleep_ms: 1}\n");
  std::vector<std::pair<int, double>> want = {{0, 0}};
  EXPECT_EQ(noop_params(c), want);
}

TEST(Grid, IdenticalJobsAreOneJob) {
  auto c = parse("name: t\nmethods:\n  - {name: a, key: none, value: none}\n  - {name: b}\n"
                 "protocols:\n  - {name: noop, value: [1, 1.0, 2]}\n");
  EXPECT_EQ(c.jobs.size(), 2u);
  EXPECT_EQ(c.jobs[0].method, "a");
}

TEST(Grid, DefaultsAndSettings) {
  auto c = parse("name: s\nworkers: 3\nretries: 4\nlease_seconds: 2.5\ndb: out/x.db\nprotocols: [{name: noop}]\n",
                 "/some/dir");
  EXPECT_EQ(c.name, "s");
  EXPECT_EQ(c.workers, 3);
  EXPECT_EQ(c.retries, 4);
  EXPECT_DOUBLE_EQ(c.lease_seconds, 2.5);
  EXPECT_EQ(c.db, "/some/dir/out/x.db");
  ASSERT_EQ(c.jobs.size(), 1u);  // methods omitted: one `none` method
  EXPECT_EQ(c.jobs[0].label, "none");
}

// --- validation errors at exact positions --------------------------------------------------

TEST(GridErrors, UnknownTopLevelKey) {
  EXPECT_PRED2(starts_with, error_of("name: t\nprotocols: [{name: noop}]\nworkerz: 2\n"), "t.yaml:3:1: unknown key 'workerz'");
}

TEST(GridErrors, LeaseShorterThanItsHeartbeatsIsRefused) {
  EXPECT_PRED2(starts_with, error_of("name: t\nprotocols: [{name: noop}]\nlease_seconds: 0.1\n"),
               "t.yaml:3:16: 'lease_seconds' must be a number of at least 1 s");
}

TEST(GridErrors, UnknownMethodType) {
  std::string e = error_of("name: t\nprotocols: [{name: noop}]\nmethods:\n  - name: a\n    key: {type: bogus}\n");
  EXPECT_PRED2(starts_with, e, "t.yaml:5:17: method 'a': unknown method 'bogus' (known: ");
}

TEST(GridErrors, BadValueInsideAList) {
  // -5 is the second element of the list: the error points at it, not at the list.
  std::string e = error_of("name: t\nprotocols:\n  - {name: noop, sleep_ms: [0, -5]}\n");
  EXPECT_PRED2(starts_with, e, "t.yaml:3:32: protocol 'noop': 'sleep_ms' must ") << e;
}

TEST(GridErrors, BadValueInZip) {
  std::string e = error_of("name: t\nprotocols:\n  - name: noop\n    zip:\n      sleep_ms: [1, 2]\n"
                           "      fail: [false, 3]\n");
  EXPECT_PRED2(starts_with, e, "t.yaml:6:21: protocol 'noop': 'fail' ") << e;
}

TEST(GridErrors, UnknownProtocolParameterPointsAtKey) {
  std::string e = error_of("name: t\nprotocols:\n  - name: noop\n    sleepms: 3\n");
  EXPECT_PRED2(starts_with, e, "t.yaml:4:5: protocol 'noop': unknown parameter 'sle") << e;
}

TEST(GridErrors, UnknownProtocol) {
  std::string e = error_of("name: t\nprotocols:\n  - {name: nope}\n");
  EXPECT_PRED2(starts_with, e, "t.yaml:3:12: unknown protocol 'nope' (kn") << e;
}

TEST(GridErrors, DuplicateNames) {
  std::string e = error_of("name: t\nprotocols: [{name: noop}]\nmethods:\n  - {name: a}\n  - {name: a}\n");
  EXPECT_EQ(e, "t.yaml:5:12: duplicate method name 'a'");
}

TEST(GridErrors, ZipLengthsDiffer) {
  std::string e = error_of("name: t\nprotocols:\n  - name: noop\n    zip: {sleep_ms: [1, 2], value: [1]}\n");
  EXPECT_EQ(e, "t.yaml:4:36: zip 'value' has 1 values but the other zip lists have 2");
}

TEST(GridErrors, WrongType) {
  EXPECT_EQ(error_of("name: t\nworkers: two\nprotocols: [{name: noop}]\n"),
            "t.yaml:2:10: expected an integer in [1, 1024], got \"two\"");
}

TEST(GridErrors, MissingModelFolder) {
  std::string e = error_of("name: t\nmodels:\n  - {name: m, path: no/such/dir}\nprotocols: [{name: noop}]\n",
                           "/nonexistent-base");
  EXPECT_EQ(e, "t.yaml:3:21: model 'm': model folder '/nonexistent-base/no/such/dir' does not exist");
}

TEST(GridErrors, MissingDataset) {
  std::string e = error_of("name: t\ndatasets:\n  - name: d\n    path: nope.txt\nprotocols: [{name: noop}]\n",
                           "/nonexistent-base");
  EXPECT_EQ(e, "t.yaml:4:11: dataset 'd': no such file '/nonexistent-base/nope.txt'");
}

TEST(GridErrors, ExcludeUnknownField) {
  std::string e = error_of("name: t\nprotocols: [{name: noop}]\nexclude:\n  - {bits: 2}\n");
  EXPECT_PRED2(starts_with, e, "t.yaml:4:6: unknown field 'bits' ") << e;
}

TEST(GridErrors, IncludeUnknownMethodName) {
  std::string e = error_of(std::string(kHead) + "protocols: [{name: noop}]\ninclude:\n  - {method: fp32}\n");
  EXPECT_EQ(e, "t.yaml:6:14: no method named \"fp32\" in this config");
}

TEST(GridErrors, MalformedYaml) {
  std::string e = error_of("name: t\nprotocols:\n  - {name: noop\nmethods: [}\n");
  EXPECT_EQ(e.rfind("t.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find(": invalid YAML: "), std::string::npos) << e;
}

TEST(GridErrors, DuplicateKey) {
  EXPECT_EQ(error_of("name: t\nname: u\nprotocols: [{name: noop}]\n"), "t.yaml:2:1: duplicate key 'name'");
}

TEST(GridErrors, ProtocolNeedingAModel) {
  // Any registered protocol that needs a model makes `models:` mandatory.
  std::string needing;
  for (const auto& p : kvx::protocol_table())
    if (p.needs_model) needing = p.name;
  if (needing.empty()) GTEST_SKIP() << "no protocol needing a model is registered";
  std::string e = error_of("name: t\nprotocols:\n  - {name: " + needing + "}\n");
  EXPECT_NE(e.find("'models' must list at least one model (protocol '" + needing + "' needs one)"),
            std::string::npos)
      << e;
}

// --- job keys ------------------------------------------------------------------------------

TEST(JobKey, StableAcrossParsesAndDefaultsResolved) {
  auto a = parse(std::string(kHead) + "protocols: [{name: noop}]\n");
  auto b = parse("name: other\nmethods:\n  - {name: x, key: {type: none}}\n"
                 "protocols: [{name: noop, sleep_ms: 0, value: 0.0, fail: false}]\n");
  ASSERT_EQ(a.jobs.size(), 1u);
  ASSERT_EQ(b.jobs.size(), 1u);
  EXPECT_EQ(a.jobs[0].key, b.jobs[0].key);
  auto c = parse(std::string(kHead) + "protocols: [{name: noop, value: 1}]\n");
  EXPECT_NE(a.jobs[0].key, c.jobs[0].key);
  EXPECT_EQ(a.jobs[0].key.size(), 64u);
}

TEST(JobKey, MethodParameterChangesKey) {
  // Any registered codec with an integer parameter of two allowed values.
  for (const auto& m : kvx::method_table()) {
    for (const auto& p : m.params) {
      if (p.type != kvx::ParamType::Int || p.def.is_null()) continue;
      std::vector<int64_t> vals;
      if (!p.choices.empty()) {
        for (const auto& ch : p.choices) vals.push_back(std::stoll(ch));
      } else {
        for (int64_t v = static_cast<int64_t>(std::max(p.min, -1e6)); vals.size() < 2 && v <= p.max; ++v) vals.push_back(v);
      }
      if (vals.size() < 2) continue;
      bool defaults_required = false;
      for (const auto& q : m.params) defaults_required |= q.def.is_null();
      if (defaults_required) continue;
      auto cfg = [&](const std::string& body) {
        return parse("name: t\nprotocols: [{name: noop}]\nmethods:\n  - {name: a, key: " + body + "}\n");
      };
      std::string dflt = p.def.dump();
      auto with_default = cfg("{type: " + m.name + ", " + p.name + ": " + dflt + "}");
      auto without = cfg("{type: " + m.name + "}");
      EXPECT_EQ(with_default.jobs[0].key, without.jobs[0].key) << m.name << "." << p.name;
      int64_t other = vals[0] == p.def.get<int64_t>() ? vals[1] : vals[0];
      auto changed = cfg("{type: " + m.name + ", " + p.name + ": " + std::to_string(other) + "}");
      EXPECT_NE(changed.jobs[0].key, without.jobs[0].key) << m.name << "." << p.name;
      return;
    }
  }
  GTEST_SKIP() << "no registered method with an integer parameter yet";
}

TEST(JobKey, ModelContentNotPath) {
  std::string dir = kvx::test::make_temp_dir();
  auto make_model = [&](const std::string& d, const std::string& weights) {
    fs::create_directories(d);
    kvx::test::write_file(d + "/config.json", "{\"model_type\": \"llama\"}");
    kvx::test::write_file(d + "/tokenizer.json", "{}");
    kvx::test::write_file(d + "/model.safetensors", weights);
  };
  make_model(dir + "/m1", "weights-A");
  make_model(dir + "/moved/m1", "weights-A");
  make_model(dir + "/m2", "weights-B");
  kvx::test::write_file(dir + "/data.txt", "hello");
  auto cfg = [&](const std::string& path) {
    return parse("name: t\nmodels: [{name: m, path: " + path + "}]\ndatasets: [{name: d, path: data.txt}]\n"
                 "protocols: [{name: noop}]\n",
                 dir);
  };
  auto a = cfg("m1"), b = cfg("moved/m1"), c = cfg("m2");
  EXPECT_EQ(a.jobs[0].key, b.jobs[0].key);
  EXPECT_NE(a.jobs[0].key, c.jobs[0].key);
  EXPECT_EQ(a.jobs[0].job["model"]["path"], dir + "/m1");
  EXPECT_EQ(a.jobs[0].job["dataset"]["path"], dir + "/data.txt");
  EXPECT_EQ(a.jobs[0].job["dataset"]["hash"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  kvx::remove_tree(dir);
}

// Every sweep config shipped in configs/ still parses and expands against today's registry
// (schemas change; a config that no longer loads is a broken example). Calibration configs
// (`kvx calibrate`, top-level `corpus:`) are a different format; a dataset that is not
// shipped (git-ignored data a user fetches) may be missing, nothing else may fail.
TEST(Grid, ShippedConfigsLoad) {
  const fs::path dir = fs::path(KVX_SOURCE_DIR) / "configs";
  int loaded = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream in(e.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("\ncorpus:") != std::string::npos) continue;
    FileHasher h;
    try {
      const SweepConfig c = kvx::grid::load_sweep(e.path().string(), h);
      EXPECT_GT(c.jobs.size(), 0u) << e.path();
      ++loaded;
    } catch (const kvx::Error& err) {
      const std::string m = err.what();
      EXPECT_TRUE(m.find("dataset") != std::string::npos && m.find("no such file") != std::string::npos)
          << e.path() << ": " << m;
    }
  }
  EXPECT_GE(loaded, 8);
}

// Broken UTF-8 is reported with its position before YAML parsing (it used to escape as a
// nlohmann::json type_error from deep inside error formatting); well-formed multi-byte text
// (2, 3 and 4 bytes) loads.
TEST(GridErrors, InvalidUtf8PointsAtTheByte) {
  EXPECT_EQ(error_of(std::string(kHead) + "description: ok\xFF\n"),
            "t.yaml:4:16: invalid UTF-8 (byte 0xFF); configs must be UTF-8 text");
  EXPECT_TRUE(starts_with(error_of(std::string(kHead) + "description: \xE2\x82\n"), "t.yaml:4:14: invalid UTF-8"));
  EXPECT_TRUE(starts_with(error_of(std::string(kHead) + "description: \xC0\xAF\n"), "t.yaml:4:14: invalid UTF-8"));  // overlong
  EXPECT_TRUE(starts_with(error_of(std::string(kHead) + "description: \xED\xA0\x80\n"), "t.yaml:4:14: invalid UTF-8"));  // surrogate
  const std::string fine = std::string(kHead) + "description: \"na\xC3\xAFve \xE2\x80\x94 \xF0\x9F\x98\x80\"\n";
  EXPECT_EQ(error_of(fine).find("UTF-8"), std::string::npos) << error_of(fine);
}

// Hostile configs are refused before they are built, each naming its limit and how to raise it:
// nine lines of nested aliases ("billion laughs": 9^8 repetitions) stop at the values limit, an
// entry whose lists multiply past the job limit stops before its variants exist, and so does a
// product of entries.
TEST(GridLimits, AliasBombAndAstronomicalGridsAreRefused) {
  std::string bomb = "name: t\na: &a [x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'h'; ++c) {
    const char p = char(c - 1);
    bomb += fmt::format("{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n", c, c, fmt::arg("p", p));
  }
  bomb += "protocols: [{name: noop, value: *h}]\n";
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e1 = error_of(bomb);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_NE(e1.find("more than 200000 values"), std::string::npos) << e1;
  EXPECT_NE(e1.find("KVX_MAX_CONFIG_VALUES"), std::string::npos) << e1;

  // 8 lists of 10 values: 10^8 variants of one entry
  std::string lists;
  for (int i = 0; i < 8; ++i) lists += fmt::format("{}l{}: [0,1,2,3,4,5,6,7,8,9]", i ? ", " : "", i);
  const std::string e2 = error_of(std::string(kHead) + "protocols:\n  - {name: noop, " + lists + "}\n");
  EXPECT_NE(e2.find("1e+08 variants"), std::string::npos) << e2;
  EXPECT_NE(e2.find("KVX_MAX_JOBS"), std::string::npos) << e2;
  EXPECT_NE(e2.find("t.yaml:"), std::string::npos) << e2;

  // 1001 protocol variants x 1001 method variants: each entry fine, their product not
  std::string values, bits;
  for (int i = 1; i <= 1001; ++i) values += fmt::format("{}{}", i > 1 ? "," : "", i);
  const std::string e3 = error_of("name: t\nprotocols:\n  - {name: noop, value: [" + values +
                                  "]}\nmethods:\n  - {name: q, key: {type: kvq, group: [" + values + "]}}\n");
  EXPECT_NE(e3.find("1.002e+06 jobs"), std::string::npos) << e3;
}
