#include "core/higgs/grid.h"

#include <ATen/ATen.h>
#include <c10/util/StringUtil.h>

#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <vector>

#include "core/common/error.h"
#include "core/common/sha256.h"

namespace kvx::higgs {

int Grid::bits() const {
  int b = 0;
  while ((1 << b) < n) ++b;
  if ((1 << b) != n) throw error("HIGGS grid size n = {} is not a power of two", n);
  return b;
}

std::string Grid::hash() const {
  auto p = points.contiguous();
  return sha256_hex(std::string_view(reinterpret_cast<const char*>(p.data_ptr<float>()),
                                     size_t(p.numel()) * sizeof(float)));
}

Grid make_grid(int d, int n, const at::Tensor& points) {
  if (d < 1 || n < 2) throw error("HIGGS grid needs d >= 1 and n >= 2, got d={} n={}", d, n);
  if (points.dim() != 2 || points.size(0) != n || points.size(1) != d)
    throw error("HIGGS grid must have shape [{}, {}], got {}", n, d, c10::str(points.sizes()));
  Grid g;
  g.d = d;
  g.n = n;
  g.points = points.to(at::kFloat).cpu().contiguous();
  g.bits();
  return g;
}

Grid upstream_grid_2_16() {
  static const float v[16][2] = {
      {-0.89966327f, -1.63604188f},   {-0.961183488f, 1.59995651f},  {-1.8820262f, 0.67877835f},
      {0.363007933f, -1.96678662f},   {-0.681407273f, -0.576818585f}, {0.72700125f, 0.618685961f},
      {0.335941613f, 1.83711934f},    {1.8599304f, 0.0366685987f},   {0.172082484f, -0.940172434f},
      {-1.75997007f, -0.624422967f},  {-0.899380922f, 0.322678238f}, {0.839488685f, -0.301703602f},
      {1.53149533f, 1.29420447f},     {-0.00117794587f, 0.000220690708f},
      {1.42745268f, -1.2078892f},     {-0.161239058f, 0.878751159f}};
  auto t = at::empty({16, 2}, at::kFloat);
  std::memcpy(t.data_ptr<float>(), v, sizeof(v));
  return make_grid(2, 16, t);
}

// --- deterministic normals -------------------------------------------------------------

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

NormalRng::NormalRng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t NormalRng::next_u64() {
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return r;
}

double NormalRng::next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Box–Muller on two uniforms in (0, 1].
  const double u1 = (double(next_u64() >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = double(next_u64() >> 11) * 0x1.0p-53;
  const double r = std::sqrt(-2.0 * std::log(u1)), th = 2.0 * M_PI * u2;
  spare_ = r * std::sin(th);
  has_spare_ = true;
  return r * std::cos(th);
}

int32_t nearest_point(const float* a, const float* pts, const float* half_norm2, int n, int d) {
  int32_t best = 0;
  float best_s = -INFINITY;
  for (int i = 0; i < n; ++i) {
    float dot = 0;
    for (int k = 0; k < d; ++k) dot += a[k] * pts[i * d + k];
    const float s = dot - half_norm2[i];  // half of 2<a,γ> − ‖γ‖²: same argmax
    if (s > best_s) {
      best_s = s;
      best = i;
    }
  }
  return best;
}

static std::vector<float> half_norms(const float* pts, int n, int d) {
  std::vector<float> h(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    float s = 0;
    for (int k = 0; k < d; ++k) s += pts[i * d + k] * pts[i * d + k];
    h[size_t(i)] = 0.5f * s;
  }
  return h;
}

Grid generate_grid(int d, int n, int64_t samples, int steps, uint64_t seed) {
  if (samples < n || steps < 1) throw error("grid generation needs samples >= n and steps >= 1");
  constexpr int kChunks = 64;  // fixed partition: results independent of the thread count
  const double A = 4.0 * std::pow(double(n), 1.0 / d), B = M_PI * M_PI * std::pow(double(n), -2.0 / d);
  const double gamma0 = 2.0;
  std::vector<float> G(size_t(n) * d), C(size_t(n) * d);
  {
    NormalRng rng(seed ^ 0xA5A5A5A5ULL);
    for (auto& x : G) x = float(rng.next());
  }
  const int64_t per_chunk = (samples + kChunks - 1) / kChunks;
  std::vector<double> sums(size_t(kChunks) * n * d), counts(size_t(kChunks) * n);
  for (int t = 0; t < steps; ++t) {
    const auto hn = half_norms(G.data(), n, d);
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0.0);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < kChunks; ++c) {
      NormalRng rng(seed * 0x100000001B3ULL + uint64_t(t) * 1315423911ULL + uint64_t(c) * 2654435761ULL + 1);
      std::vector<float> a(static_cast<size_t>(d));
      const int64_t lo = c * per_chunk, hi = std::min(samples, lo + per_chunk);
      double* S = sums.data() + size_t(c) * n * d;
      double* N = counts.data() + size_t(c) * n;
      for (int64_t s = lo; s < hi; ++s) {
        for (auto& x : a) x = float(rng.next());
        const int32_t i = nearest_point(a.data(), G.data(), hn.data(), n, d);
        N[i] += 1;
        for (int k = 0; k < d; ++k) S[size_t(i) * d + k] += a[size_t(k)];
      }
    }
    const double eta = gamma0 * A / (A + gamma0 * B * t);
    for (int i = 0; i < n; ++i) {
      double cnt = 0;
      for (int c = 0; c < kChunks; ++c) cnt += counts[size_t(c) * n + i];
      for (int k = 0; k < d; ++k) {
        double s = 0;
        for (int c = 0; c < kChunks; ++c) s += sums[(size_t(c) * n + i) * d + k];
        // Empty cell keeps its point (resolution, docs/methods/aqua_kv.md).
        C[size_t(i) * d + k] = cnt > 0 ? float(s / cnt) : G[size_t(i) * d + k];
      }
    }
    for (size_t j = 0; j < G.size(); ++j) G[j] = float(G[j] + eta * (C[j] - G[j]));
  }
  auto pts = at::empty({n, d}, at::kFloat);
  std::memcpy(pts.data_ptr<float>(), C.data(), C.size() * sizeof(float));
  return make_grid(d, n, pts);
}

double grid_mse(const Grid& g, int64_t samples, uint64_t seed) {
  const float* pts = g.points.data_ptr<float>();
  const auto hn = half_norms(pts, g.n, g.d);
  NormalRng rng(seed);
  std::vector<float> a(static_cast<size_t>(g.d));
  double err = 0;
  for (int64_t s = 0; s < samples; ++s) {
    for (auto& x : a) x = float(rng.next());
    const int32_t i = nearest_point(a.data(), pts, hn.data(), g.n, g.d);
    for (int k = 0; k < g.d; ++k) {
      const double e = double(a[size_t(k)]) - pts[i * g.d + k];
      err += e * e;
    }
  }
  return err / double(samples * g.d);
}

std::string default_grid_dir() {
  if (const char* e = std::getenv("KVX_GRID_DIR"); e && *e) return e;
#ifdef KVX_SOURCE_DIR
  return std::string(KVX_SOURCE_DIR) + "/data/grids";
#else
  return "data/grids";
#endif
}

std::string grid_file(const std::string& dir, int d, int n) {
  return dir + "/higgs_grid_d" + std::to_string(d) + "_n" + std::to_string(n) + ".f32";
}

Grid read_grid_file(const std::string& path, int d, int n) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw error("{}: cannot open HIGGS grid file", path);
  auto pts = at::empty({n, d}, at::kFloat);
  const auto want = std::streamsize(sizeof(float) * size_t(n) * d);
  f.read(reinterpret_cast<char*>(pts.data_ptr<float>()), want);
  if (f.gcount() != want || f.peek() != std::char_traits<char>::eof())
    throw error("{}: expected exactly {} float32 values (grid d={}, n={})", path, int64_t(n) * d, d, n);
  if (!at::isfinite(pts).all().item<bool>()) throw error("{}: grid holds non-finite values", path);
  return make_grid(d, n, pts);
}

void write_grid_file(const std::string& path, const Grid& g) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw error("{}: cannot write HIGGS grid file", tmp);
    f.write(reinterpret_cast<const char*>(g.points.data_ptr<float>()),
            std::streamsize(sizeof(float) * size_t(g.points.numel())));
    if (!f) throw error("{}: write failed", tmp);
  }
  std::filesystem::rename(tmp, path);
}

const Grid& grid_for(int d, int n, const std::string& dir_in) {
  static std::mutex mu;
  static std::map<std::tuple<std::string, int, int>, Grid> cache;
  const std::string dir = dir_in.empty() ? default_grid_dir() : dir_in;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(dir, d, n);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const std::string path = grid_file(dir, d, n);
  Grid g;
  if (std::filesystem::exists(path)) {
    g = read_grid_file(path, d, n);
  } else {
    g = generate_grid(d, n);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!ec) {
      try {
        write_grid_file(path, g);
      } catch (const Error&) {
        // Read-only location: the grid is deterministic, so regenerating next time is fine.
      }
    }
  }
  return cache.emplace(key, std::move(g)).first->second;
}

}  // namespace kvx::higgs
