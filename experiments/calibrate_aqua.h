// AQUA-KV calibration (docs/methods/aqua_kv.md, "Calibration"; `kvx calibrate`): fit the
// per-layer linear predictors in the quantization loop and write them to one HDF5 file.
//
//  1. Data: the corpus file is read whole and tokenized once (BOS first, as the perplexity
//     protocol does); each of `nsamples` sequences is a random contiguous crop of `seqlen`
//     tokens (kvx resolution: the corpus is one document; offsets from a seeded RNG).
//  2. Propagation: the unquantized model runs each sequence in one forward call through a
//     capture policy that records every layer's k_new (post-RoPE) and v_new; keys are
//     de-rotated with the model's inverse RoPE (identity for GPT-2). This is exactly "the
//     full-precision model layer by layer" since nothing quantized feeds back.
//  3. Split: a seeded random permutation; the first valid_nsamples sequences are held out.
//  4-5. Layer 0: K̂_0 = Qdq_first(K_0), V̂_0 = Qdq_first(V_0). Layer l >= 1: keys from K̂_{l-1},
//     values from [K̂_l ‖ V̂_{l-1}], ridge fit on train rows, K̂_l = P + Qdq(K_l − P) on all rows;
//     per-layer relMSE (train, valid) and equivalent bits −log₄(relMSE) are printed.
//  6. Ridge: core/higgs/ridge.h (percdamp on every diagonal entry).
//  7. Every token is quantized (no prefix, no buffer).
//  8. Output: core/higgs/predictor_file.h, with the quantizer identity, model hash (same as the
//     job key's), corpus hash and the calibration settings as attributes.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "core/higgs/predictor_file.h"
#include "quantizers/aqua.h"

namespace kvx {

struct CalibrateOptions {
  std::string model_dir;
  std::string corpus = "data/wikitext-2/valid.txt";
  int64_t nsamples = 32;        // total_nsamples (train + valid)
  int64_t valid_nsamples = 4;
  int64_t seqlen = 1024;        // 0 = the model's context (max_position_embeddings)
  double percdamp = 1e-3;
  uint64_t seed = 0;
  AquaSettings quant;           // d, n, g, first-layer grid, backbone (prefix/buffer unused)
  std::string device = "cpu";
  std::string dtype = "float32";
  std::string out;              // HDF5 path
  bool force = false;           // overwrite an existing file
  bool quiet = false;           // no progress output
};

struct CalibrateResult {
  std::string path;
  nlohmann::json attrs;
  std::map<std::string, std::vector<double>> metrics;
  higgs::PredictorSet predictors;  // exactly what was written
};

CalibrateResult calibrate_aqua(const CalibrateOptions& o);

// From a YAML/JSON calibration config (configs/aqua.yaml): keys model, corpus, nsamples,
// valid_nsamples, seqlen, percdamp, seed, device, dtype, out, and `quantizer:` with the aqua
// policy parameters (edenn_d, edenn_n, hadamard_groupsize, ...). Unknown keys are errors.
CalibrateOptions calibrate_options_from_json(const nlohmann::json& cfg, const std::string& where);

// Cache key of a calibration: model hash, corpus hash, quantizer identity, settings.
std::string calibration_key(const CalibrateOptions& o);
// For sweeps: the method's `predictors: auto` becomes the path of a cached calibration file
// under cache_dir (named by calibration_key), calibrating first when it is missing, so a grid
// over bit widths calibrates once per quantizer setting. Other methods come back unchanged.
nlohmann::json prepare_aqua_method(const nlohmann::json& resolved_method, const std::string& model_dir,
                                   const std::string& cache_dir, const std::string& device = "cpu",
                                   const std::string& dtype = "float32");

}  // namespace kvx
