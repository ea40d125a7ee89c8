#include "quantizers/qaq_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/cache/bit_packing.h"

namespace kvx {
namespace qaq {

GroupStats group_stats(const float* x, int64_t m, const GroupOptions& o) {
  GroupStats st;
  std::vector<char> is_out(m, 0);
  if (o.outliers_ratio > 0 && m > 0) {
    std::vector<float> s(x, x + m);
    std::sort(s.begin(), s.end());
    const double r = o.outliers_ratio;
    const int64_t k_lo = std::min<int64_t>(m, std::max<int64_t>(1, int64_t(std::ceil(r / 2 * m))));
    const int64_t k_hi = int64_t(std::floor((1 - r / 2) * m));
    const float lo = s[k_lo - 1];
    const float hi = k_hi >= 1 ? s[std::min(k_hi, m) - 1] : -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < m; ++i)
      if (x[i] <= lo || x[i] > hi) {
        is_out[i] = 1;
        st.outliers.push_back(int32_t(i));
      }
  }
  double sum = 0;
  float mn = std::numeric_limits<float>::infinity(), mx = -mn, amax = 0;
  for (int64_t i = 0; i < m; ++i) {
    if (is_out[i]) continue;
    ++st.inliers;
    sum += x[i];
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  if (st.inliers == 0) return st;  // every value exact: nothing to quantize
  const float mean = float(sum / double(st.inliers));
  st.range = o.symmetric ? 2 * amax : mx - mn;
  if (o.method == Method::Normal || o.center == Center::Mean) {
    st.center = o.symmetric ? 0.f : mean;
  } else {
    st.center = o.symmetric ? -amax : mn;
  }
  if (o.method == Method::Normal && st.inliers > 1) {
    double ss = 0;
    for (int64_t i = 0; i < m; ++i)
      if (!is_out[i]) ss += double(x[i] - st.center) * double(x[i] - st.center);
    st.stddev = float(std::sqrt(ss / double(st.inliers - 1)));
  }
  return st;
}

float group_scale(const GroupStats& st, int bits, const GroupOptions& o) {
  if (o.method == Method::Normal) return st.stddev;
  return st.range / float(int64_t(1) << bits);
}

namespace {
// Walks the inliers of a group in index order.
template <typename F>
void for_inliers(const GroupStats& st, int64_t m, F f) {
  size_t o = 0;
  int64_t j = 0;
  for (int64_t i = 0; i < m; ++i) {
    if (o < st.outliers.size() && st.outliers[o] == i) {
      ++o;
      continue;
    }
    f(i, j++);
  }
}
}  // namespace

void quantize_group(const float* x, int64_t m, const GroupStats& st, int bits, float center,
                    float scale, const GroupOptions& o, std::vector<uint8_t>& codes) {
  codes.assign(bits > 0 ? st.inliers : 0, 0);
  if (bits <= 0) return;
  const int64_t levels = int64_t(1) << bits;
  if (o.method == Method::Normal) {
    std::vector<double> thr(levels - 1);
    for (int64_t j = 0; j + 1 < levels; ++j) thr[j] = normal_quantile(double(j + 1) / double(levels));
    for_inliers(st, m, [&](int64_t i, int64_t j) {
      const double z = scale > 0 ? double(x[i] - center) / double(scale) : 0.0;
      codes[j] = uint8_t(std::lower_bound(thr.begin(), thr.end(), z) - thr.begin());
    });
  } else if (o.center == Center::Mean) {
    const int64_t half = levels / 2;
    for_inliers(st, m, [&](int64_t i, int64_t j) {
      float q = scale > 0 ? std::nearbyint((x[i] - center) / scale) : 0.f;
      q = std::min<float>(std::max<float>(q, float(-half)), float(half - 1));
      codes[j] = uint8_t(int64_t(q) + half);
    });
  } else {
    for_inliers(st, m, [&](int64_t i, int64_t j) {
      float q = scale > 0 ? std::floor((x[i] - center) / scale) : 0.f;
      q = std::min<float>(std::max<float>(q, 0.f), float(levels - 1));
      codes[j] = uint8_t(q);
    });
  }
}

void dequantize_group(const uint8_t* codes, const GroupStats& st, int bits, float center,
                      float scale, const float* outlier_values, int64_t m, const GroupOptions& o,
                      float* out) {
  for (size_t k = 0; k < st.outliers.size(); ++k) out[st.outliers[k]] = outlier_values[k];
  const int64_t levels = int64_t(1) << std::max(bits, 0);
  if (o.method == Method::Normal) {
    std::vector<float> level_value(levels);
    for (int64_t q = 0; q < levels; ++q)
      level_value[q] = bits > 0 ? center + scale * float(normal_quantile((q + 0.5) / double(levels))) : center;
    for_inliers(st, m, [&](int64_t i, int64_t j) { out[i] = level_value[bits > 0 ? codes[j] : 0]; });
  } else if (o.center == Center::Mean) {
    const int64_t half = levels / 2;
    // 0 bits: the only code is q = −½ (scale = R), unless the group mean is asked for
    const float zero = o.zero_bits_mean ? center : center - 0.5f * scale;
    for_inliers(st, m, [&](int64_t i, int64_t j) {
      out[i] = bits > 0 ? float(int64_t(codes[j]) - half) * scale + center : zero;
    });
  } else {
    for_inliers(st, m, [&](int64_t i, int64_t j) {
      out[i] = center + (float(bits > 0 ? codes[j] : 0) + 0.5f) * scale;
    });
  }
}

double key_tolerance(int64_t T, double tau, double q_norm) {
  const double t = double(T);
  return std::sqrt(12.0 / q_norm * std::log(t * t * t / (t - 1) * tau * tau + 1));
}

double value_tolerance(int64_t T, double tau, double attn) {
  return std::sqrt(12.0 / double(T)) * tau / std::max(attn, 1e-12);
}

double bits_real(double range, double e, BitsFormula f) {
  return f == BitsFormula::Code ? std::log2(range / (2 * e) + 1) : std::log2(range / e);
}

int bits_for(double range, double e, BitsFormula f, int n_min, int n_max) {
  const double b = std::ceil(bits_real(range, e, f));
  if (!(b > n_min)) return n_min;  // also catches -inf (range 0, paper formula) and NaN
  if (b >= n_max) return n_max;
  return int(b);
}

double normal_quantile(double p) {
  if (p <= 0) return -std::numeric_limits<double>::infinity();
  if (p >= 1) return std::numeric_limits<double>::infinity();
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double plow = 0.02425;
  double x;
  if (p < plow) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - plow) {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  // One Halley step on Φ(x) − p brings the 1e-9 approximation to double precision.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

void pack_any(const uint8_t* codes, int64_t n, int bits, std::vector<uint8_t>& out) {
  out.assign(bits > 0 ? packed_bytes(n, bits) : 0, 0);
  if (bits <= 0 || n == 0) return;
  if (packable_bits(bits)) {
    pack_bits(codes, n, bits, out.data());
    return;
  }
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits;
    const uint32_t v = (uint32_t(codes[i]) & mask) << (bit & 7);
    out[bit >> 3] |= uint8_t(v);
    if ((bit & 7) + bits > 8) out[(bit >> 3) + 1] |= uint8_t(v >> 8);
  }
}

void unpack_any(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
  if (bits <= 0 || n == 0) return;
  if (packable_bits(bits)) {
    unpack_bits(packed, 0, n, bits, codes);
    return;
  }
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits;
    uint32_t v = packed[bit >> 3];
    if ((bit & 7) + bits > 8) v |= uint32_t(packed[(bit >> 3) + 1]) << 8;
    codes[i] = uint8_t((v >> (bit & 7)) & mask);
  }
}

}  // namespace qaq
}  // namespace kvx
