// `predictors: auto` in a sweep: the worker calibrates once per quantizer setting, caches the
// HDF5 beside the database, and the result equals a sweep that names the file `kvx calibrate`
// wrote with the same settings (independent path: the CLI's own calibration run).
#include <gtest/gtest.h>

#include <filesystem>

#include "engine_test_util.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using kvx::test::query1;
using kvx::test::quote;
using kvx::test::run_cmd;

TEST(AquaAuto, SweepCalibratesOnceAndMatchesAnExplicitCalibrationFile) {
  if (kvx::test::kvx_bin().empty()) GTEST_SKIP() << "KVX_BIN not set";
  const std::string dir = kvx::test::make_temp_dir();
  const std::string src = KVX_SOURCE_DIR;
  const std::string model = src + "/data/models/tiny-gpt2", corpus = src + "/data/wikitext-2/valid.txt";
  const std::string head = "models: [{name: tiny-gpt2, path: " + model + "}]\n"
                           "datasets: [{name: wikitext2, path: " + src + "/data/wikitext-2/test.txt}]\n"
                           "protocols: [{name: perplexity, seq_len: 128, chunk: 16, max_windows: 1}]\n";
  const std::string calib = "calib_corpus: " + corpus + ", calib_nsamples: 6, calib_valid_nsamples: 2, calib_seqlen: 128, calib_seed: 3";
  kvx::test::write_file(dir + "/auto.yaml", "name: auto\n" + head +
      "methods: [{name: aqua, policy: {type: aqua, predictors: auto, edenn_d: 2, edenn_n: [16, 64], " + calib + "}}]\n");
  const std::string bin = quote(kvx::test::kvx_bin());
  auto r = run_cmd("cd " + quote(dir) + " && " + bin + " run auto.yaml --db a/kvx.db");
  ASSERT_EQ(r.rc, 0) << r.out;
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir + "/a/calibration")) files += e.path().extension() == ".h5";
  EXPECT_EQ(files, 2);  // one per (d, n) setting

  r = run_cmd(bin + " calibrate --model " + quote(model) + " --corpus " + quote(corpus) +
              " --nsamples 6 --valid-nsamples 2 --seqlen 128 --seed 3 -d 2 -n 16 -q -o " + quote(dir + "/p16.h5"));
  ASSERT_EQ(r.rc, 0) << r.out;
  kvx::test::write_file(dir + "/file.yaml", "name: file\n" + head +
      "methods: [{name: aqua, policy: {type: aqua, predictors: " + dir + "/p16.h5, edenn_d: 2, edenn_n: 16}}]\n");
  r = run_cmd("cd " + quote(dir) + " && " + bin + " run file.yaml --db b/kvx.db");
  ASSERT_EQ(r.rc, 0) << r.out;

  const std::string sql = "SELECT json_extract(r.metrics, '$.ppl') FROM results r JOIN jobs j ON j.key = r.job_key "
                          "WHERE json_extract(j.job, '$.method.policy.edenn_n') = 16";
  const std::string a = query1(dir + "/a/kvx.db", sql), b = query1(dir + "/b/kvx.db", sql);
  ASSERT_FALSE(a.empty());
  EXPECT_NEAR(std::stod(a), std::stod(b), 1e-9);
  // The stored job keeps "auto" (its identity), not the cache path.
  EXPECT_EQ(query1(dir + "/a/kvx.db", "SELECT COUNT(*) FROM jobs WHERE json_extract(job, '$.method.policy.predictors') = 'auto'"), "2");
  kvx::remove_tree(dir);
}
