// kvx calibrate end to end on small-code-llama (a few short sequences): the HDF5 file loads
// back bit-exact into the aqua policy, carries the identity attributes, and the predictors help
// (valid relMSE < 1 on every layer >= 1).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/common/error.h"
#include "core/higgs/predictor_file.h"
#include "core/model/model.h"
#include "experiments/calibrate_aqua.h"
#include "quantizers/aqua.h"

using namespace kvx;

namespace {
std::string src() {
  const char* e = std::getenv("KVX_SOURCE_DIR");
  return e && *e ? e : KVX_SOURCE_DIR;
}
}  // namespace

TEST(Calibrate, SmallCodeLlamaRoundTrip) {
  const std::string dir = ::testing::TempDir() + "/kvx_calibrate_test" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  // A slice of WikiText-2 valid keeps tokenization fast.
  std::ifstream in(src() + "/data/wikitext-2/valid.txt");
  std::string text(60000, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  const std::string corpus = dir + "/corpus.txt";
  std::ofstream(corpus) << text;

  CalibrateOptions o;
  o.model_dir = src() + "/data/models/small-code-llama";
  o.corpus = corpus;
  o.nsamples = 6;
  o.valid_nsamples = 2;
  o.seqlen = 256;
  o.quant = aqua_settings(resolve_method({{"policy", {{"type", "aqua"}}}})["policy"]);
  o.out = dir + "/pred.h5";
  o.force = true;
  o.quiet = true;
  const auto r = calibrate_aqua(o);
  for (size_t l = 1; l < 6; ++l) {
    EXPECT_LT(r.metrics.at("key_relmse_valid")[l], 1.0) << "layer " << l;
    EXPECT_LT(r.metrics.at("value_relmse_valid")[l], 1.0) << "layer " << l;
  }
  o.force = false;
  EXPECT_THROW(calibrate_aqua(o), Error);  // refuses to overwrite

  const auto ps = higgs::read_predictor_file(o.out);
  EXPECT_EQ(ps.attrs["model_hash"], r.attrs["model_hash"]);
  EXPECT_EQ(ps.attrs["quantizer_n"], 16);
  EXPECT_EQ(ps.attrs["quantizer_g_eff"], 128);
  EXPECT_EQ(ps.attrs["data_hash"].get<std::string>().size(), 64u);
  EXPECT_EQ(ps.metrics.at("key_relmse_valid")[3], r.metrics.at("key_relmse_valid")[3]);
  for (size_t l = 1; l < 6; ++l) {  // calibrate -> HDF5 -> load is bit-exact
    EXPECT_TRUE(at::equal(ps.key[l].weight, r.predictors.key[l].weight)) << l;
    EXPECT_TRUE(at::equal(ps.key[l].bias, r.predictors.key[l].bias)) << l;
    EXPECT_TRUE(at::equal(ps.value[l].weight, r.predictors.value[l].weight)) << l;
    EXPECT_TRUE(at::equal(ps.value[l].bias, r.predictors.value[l].bias)) << l;
  }

  // Loads into the policy for this model; refused for another quantizer.
  auto model = load_model(o.model_dir);
  auto s = o.quant;
  s.predictors = o.out;
  auto p = make_aqua_policy(s);
  EXPECT_NO_THROW(p->reset(model->info(), 1));
  s.n = 64;
  auto q = make_aqua_policy(s);
  EXPECT_THROW(q->reset(model->info(), 1), Error);
}
