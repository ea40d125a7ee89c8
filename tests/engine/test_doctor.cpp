// kvx doctor from a user's seat: ready in the repository root (fixtures found, results writable,
// exit 0), and exit 1 naming the missing piece and the next step when fixtures or a writable
// results folder are missing.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/engine/engine_test_util.h"

namespace kvx::test {
namespace {

TEST(Doctor, ReadyInTheRepositoryRoot) {
  ASSERT_FALSE(kvx_bin().empty()) << "KVX_BIN is not set";
  const std::string results = make_temp_dir() + "/results";
  const CmdResult r = run_cmd("cd " + quote(KVX_SOURCE_DIR) + " && " + quote(kvx_bin()) + " doctor --format json --results " + quote(results));
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["ok"].get<bool>());
  bool fixtures = false;
  for (const auto& c : j["checks"])
    if (c["name"] == "fixtures") fixtures = c["found"].get<std::string>().find("small-code-llama") != std::string::npos;
  EXPECT_TRUE(fixtures) << r.out;
}

TEST(Doctor, MissingFixturesAndUnwritableResultsFailWithTheNextStep) {
  ASSERT_FALSE(kvx_bin().empty()) << "KVX_BIN is not set";
  const std::string empty = make_temp_dir();
  const std::string blocker = empty + "/a-file";
  write_file(blocker, "x");  // a results "folder" below a file cannot be created
  const CmdResult r = run_cmd(quote(kvx_bin()) + " doctor --data " + quote(empty) + " --results " + quote(blocker + "/results"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("FAIL  fixtures"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pass --data DIR"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FAIL  results"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(blocker), std::string::npos) << r.out;
}

}  // namespace
}  // namespace kvx::test
