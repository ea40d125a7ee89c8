// AQUA-KV predictor files (docs/methods/aqua_kv.md, "Calibration"): one HDF5 file holding
//   /key_predictor/{l}/weight [C, C],  /key_predictor/{l}/bias [C]        for l = 1..L-1
//   /value_predictor/{l}/weight [C, 2C], /value_predictor/{l}/bias [C]
//   /metrics/{name} [L] float64 (per-layer relMSE and equivalent bits, train and valid)
// and, as root attributes, the quantizer the predictors were fitted with (d, n, g, g_eff,
// grid hash, first-layer grid, backbone), the model (hash, shape) and the calibration data
// (corpus hash, sample counts, seed, percdamp). Predictors depend on the quantizer they were
// fitted in the loop with, so loading checks those attributes (check_predictors). The root also
// lists every attribute name in `attribute_names` (newline-separated): readers open attributes
// by those names only, never by iterating the attribute table (libhdf5 1.10 crashes iterating
// some corrupted tables).
// Weights are stored fp32.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "core/higgs/ridge.h"

namespace kvx::higgs {

struct PredictorSet {
  nlohmann::json attrs = nlohmann::json::object();  // scalar attributes: string, integer, float
  std::vector<LinearMap> key, value;                // index = layer; entry 0 unused (empty)
  std::map<std::string, std::vector<double>> metrics;
  int64_t n_layers() const { return int64_t(key.size()); }
  int64_t side_bits() const;  // weights + biases at 16 bits (model dtype) each
};

// Refuses to overwrite an existing file unless force.
void write_predictor_file(const std::string& path, const PredictorSet& p, bool force);
PredictorSet read_predictor_file(const std::string& path);

// Throws kvx::Error naming the file and the first attribute whose value differs from
// `expect` (keys absent from `expect` are not checked).
void check_predictors(const PredictorSet& p, const nlohmann::json& expect, const std::string& path);

// Human-readable listing of every group, dataset (shape, type) and attribute (kvx inspect).
std::string describe_h5(const std::string& path);

}  // namespace kvx::higgs
