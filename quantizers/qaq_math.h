// QAQ per-group quantization and bit-width rules (docs/methods/qaq.md, "Group quantization"
// and "Bit allocation"), as plain functions on float arrays so its worked examples test them.
//
// A group is M values (one token's head, layer or whole-model slice: `level`).
//   outliers:   r > 0: k_lo = ceil(r/2·M), k_hi = floor((1 − r/2)·M); lo / hi = the k_lo-th /
//               k_hi-th smallest value (1-based); x is an outlier iff x ≤ lo or x > hi. Outliers
//               are kept exact (stored fp16 value + index).
//   center mean (code, default): μ = mean(inliers) (0 when symmetric), s = R / 2^b,
//               q = clamp(round((x − μ)/s), −2^(b−1), 2^(b−1) − 1), x̂ = q·s + μ.
//   center midrange (paper):  s = R / 2^b, q = clamp(floor((x − min)/s), 0, 2^b − 1),
//               x̂ = min + (q + ½)·s (symmetric: min = −max|x|).
//   method normal (fixed bits): μ = mean, s = std (unbiased, torch.std) of inliers; q = number
//               of thresholds Φ⁻¹((j+1)/2^b) below (x − μ)/s; x̂ = μ + s·Φ⁻¹((q+½)/2^b).
//   R = max − min of the inliers (symmetric: 2·max|inlier|); s = 0 → x̂ = centre. b = 0 with the
//               mean centre: x̂ = μ − R/2 as the reference code's clamp to [−2^−1, 2^−1 − 1]
//               gives (zero_bits_mean: x̂ = μ); other grids: x̂ = centre (midrange: min + R/2).
// Rounding is half-to-even (std::nearbyint); statistics are fp32.
//
// Codes are stored unsigned (mean centre: q + 2^(b−1)), b bits each, LSB-first in a byte
// stream (the layout of core/cache/bit_packing.h, extended to widths 5..7).
#pragma once
#include <cstdint>
#include <vector>

namespace kvx {
namespace qaq {

enum class Center { Mean, Midrange };
enum class Method { Uniform, Normal };
enum class BitsFormula { Code, Paper };

struct GroupOptions {
  double outliers_ratio = 0.0;
  bool symmetric = false;
  Center center = Center::Mean;
  Method method = Method::Uniform;
  bool zero_bits_mean = false;  // mean centre, 0 bits: μ instead of the reference code's μ − R/2
};

// What a group's values determine independently of the bit width.
struct GroupStats {
  std::vector<int32_t> outliers;  // indices, ascending
  float center = 0;   // mean centre: μ; midrange: min (−max|x| when symmetric); normal: μ
  float range = 0;    // R: max − min of inliers, or 2·max|inlier| when symmetric
  float stddev = 0;   // normal method only
  int64_t inliers = 0;
};

// Outlier thresholds ("Groups and outliers"); r == 0 -> no outliers.
GroupStats group_stats(const float* x, int64_t m, const GroupOptions& o);

// Step of the grid for b bits: uniform R/2^b; normal: the std.
float group_scale(const GroupStats& st, int bits, const GroupOptions& o);

// Unsigned codes of the inliers (in index order, outliers skipped) for b bits (b = 0 -> none).
void quantize_group(const float* x, int64_t m, const GroupStats& st, int bits, float center,
                    float scale, const GroupOptions& o, std::vector<uint8_t>& codes);

// Reconstruction: inliers from codes with the given centre/scale (the caller passes the values
// read back from 16-bit storage), outliers from `outlier_values`.
void dequantize_group(const uint8_t* codes, const GroupStats& st, int bits, float center,
                      float scale, const float* outlier_values, int64_t m, const GroupOptions& o,
                      float* out);

// Bit-width rules ("Bit allocation").
double key_tolerance(int64_t T, double tau, double q_norm);    // e_K
double value_tolerance(int64_t T, double tau, double attn);     // e_V,t (attn floored at 1e-12)
double bits_real(double range, double e, BitsFormula f);        // the log2 before ceil
int bits_for(double range, double e, BitsFormula f, int n_min, int n_max);

// Inverse standard normal CDF (Acklam's approximation + one Halley step; |err| < 1e-12).
double normal_quantile(double p);

// Packs n codes of any width 0..8 (LSB-first stream) into ceil(n·b/8) bytes.
void pack_any(const uint8_t* codes, int64_t n, int bits, std::vector<uint8_t>& out);
void unpack_any(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);

}  // namespace qaq
}  // namespace kvx
