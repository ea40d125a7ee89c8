// `aqua` cache policy: AQUA-KV (docs/methods/aqua_kv.md). Layer l's de-rotated keys are
// predicted from layer l−1's reconstructed keys, its values from [same-layer keys ‖ previous-
// layer values]; only the residual is stored, quantized with HIGGS (Hadamard groups + nearest
// point of a d-dimensional grid, packed indices + fp16 scales) or, with `backbone: affine`,
// with per-token affine groups. Layer 0 has no predictor: it is quantized directly with the
// first-layer grid (default d=2, n=256: 4 bits), or kept fp16 with not_quantize_first_layer.
//
// Token layout ("Token layout and flush rule"; prefill and decoding are the same code path):
//   [ prefix: positions < prefix_size, fp16 | frozen blocks: codes | buffer: fp16 ]
// Each update appends the chunk (prefix part, then buffer) and returns everything, the
// buffer and chunk exact. At layer 0 a step becomes a flush step when the buffer holds
// >= recent_buffer_size tokens; on a flush step every layer encodes its whole buffer (after
// building its return value) as its layer of a new block, closed-loop (see the page): the
// predictors consume reconstructions, so a decoder holding only codes reproduces the encoder's
// K̂, V̂ bit for bit (decode_block_from_codes; tested). Reconstructions of frozen blocks are kept
// as a decode cache (upstream does the same); it is reported as a kSide segment
// "scratch.decoded", never in bpv.
//
// `predictors`: path of an HDF5 file written by `kvx calibrate` (checked against this
// quantizer's settings and the model's shape), or "none" = HIGGS without predictors (the
// baseline: every layer's residual is the value itself; layer 0 still uses the first-layer
// grid so that the two differ only by the predictors).
//
// Memory: segments "prefix.{k,v}", "buffer.{k,v}" (fp16), "body.*" (codes and scales of frozen
// blocks: "body.first.{k,v}.*" for layer 0), side: "side.predictors" (16 bits per weight),
// "side.grids", "scratch.decoded". aqua_body_bpv() gives the bits per value of the quantized
// blocks alone ("Memory"), the number closest to the paper's "bits per value".
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "quantizers/registry.h"

namespace kvx {

struct AquaSettings {
  int d = 2, n = 16;               // edenn_d, edenn_n
  int64_t g = 1024;                // hadamard_groupsize
  int first_d = 2, first_n = 256;  // layer-0 grid
  bool not_quantize_first_layer = false;
  std::string backbone = "higgs";  // higgs | affine
  int affine_bits = 2, first_affine_bits = 4;
  int64_t affine_group = 64;
  int64_t recent_buffer_size = 128, prefix_size = 4;
  std::string predictors = "none";
  std::string grid_dir;            // "" = default (core/higgs/grid.h)
};

AquaSettings aqua_settings(const nlohmann::json& policy);  // from the resolved "policy" object

// One stored run of token rows [rows, C] (codes + metadata) and its exact size.
class AquaCoded {
 public:
  virtual ~AquaCoded() = default;
  virtual at::Tensor decode(at::ScalarType dtype, at::Device device) const = 0;  // [rows, C]
  virtual void account(const std::string& prefix, std::vector<MemorySegment>& out) const = 0;
};

// Quantizer of token rows used for the body (layers >= 1) or layer 0.
class AquaRowCodec {
 public:
  virtual ~AquaRowCodec() = default;
  virtual std::unique_ptr<AquaCoded> encode(const at::Tensor& rows) const = 0;
  at::Tensor qdq(const at::Tensor& rows) const {
    return encode(rows)->decode(at::kFloat, rows.device());
  }
  virtual nlohmann::json identity() const = 0;  // attributes that predictors depend on
  virtual int64_t side_bits() const { return 0; }  // grid storage
};

std::shared_ptr<const AquaRowCodec> aqua_body_codec(const AquaSettings& s, int64_t C);
std::shared_ptr<const AquaRowCodec> aqua_first_codec(const AquaSettings& s, int64_t C);
// Quantizer attributes predictors are fitted for (written by calibration, checked on load).
nlohmann::json aqua_quantizer_identity(const AquaSettings& s, int64_t C);

// [B, H, T, D] -> [B·T, H·D] head-major rows, and back.
at::Tensor aqua_rows(const at::Tensor& x);
at::Tensor aqua_unrows(const at::Tensor& rows, int64_t B, int64_t H, int64_t D);

double aqua_body_bpv(const MemoryReport& r);

class AquaPolicy : public KVCachePolicy {
 public:
  virtual std::vector<int64_t> block_sizes() const = 0;
  // Reconstruction of block b from its codes alone (layer by layer, as a decoder would):
  // [L] pre-RoPE keys and values [B, H, n, D] in the compute dtype, and the cached ones.
  virtual std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> decode_block_from_codes(size_t b) const = 0;
  virtual std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> cached_block(size_t b) const = 0;
};

std::unique_ptr<AquaPolicy> make_aqua_policy(const AquaSettings& s);
MethodTraits aqua_traits();
// "aqua[:d2][:n16][:g1024][:r128][:p4][:affine][:nofirst][:pred=PATH]"
nlohmann::json parse_aqua_shorthand(const std::string& text);

}  // namespace kvx
