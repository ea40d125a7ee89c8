#include "core/higgs/hadamard.h"

#include <ATen/ATen.h>

#include "core/common/error.h"

namespace kvx::higgs {

void fwht_rows(float* x, int64_t rows, int64_t g) {
  if (!is_pow2(g)) throw error("Hadamard transform needs a power-of-two length, got {}", g);
#pragma omp parallel for if (rows * g > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * g;
    for (int64_t h = 1; h < g; h *= 2)
      for (int64_t i = 0; i < g; i += 2 * h)
        for (int64_t j = i; j < i + h; ++j) {
          const float a = v[j], b = v[j + h];
          v[j] = a + b;
          v[j + h] = a - b;
        }
  }
}

at::Tensor fwht(const at::Tensor& x, bool inverse) {
  const int64_t g = x.size(-1);
  if (!is_pow2(g)) throw error("Hadamard transform needs a power-of-two last dimension, got {}", g);
  at::Tensor y = x.to(at::kFloat).contiguous().clone();
  if (y.device().is_cpu()) {
    fwht_rows(y.data_ptr<float>(), y.numel() / g, g);
  } else {
    // Butterfly with tensor ops: view as [..., g/(2h), 2, h]; (a, b) -> (a+b, a-b).
    const auto lead = y.sizes().slice(0, y.dim() - 1).vec();
    for (int64_t h = 1; h < g; h *= 2) {
      auto v = y.reshape({-1, g / (2 * h), 2, h});
      auto a = v.select(2, 0), b = v.select(2, 1);
      y = at::stack({a + b, a - b}, 2).reshape(y.sizes());
    }
  }
  if (inverse) y.div_(double(g));
  return y;
}

}  // namespace kvx::higgs
