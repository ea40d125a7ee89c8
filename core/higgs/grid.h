// HIGGS grids Γ ∈ R^{n×d} (docs/methods/aqua_kv.md, "HIGGS quantizer"): MSE-optimal points
// for the standard normal in d dimensions, built by stochastic Lloyd iteration, or the upstream
// (2,16) grid for tests.
//
// Generation is deterministic given (d, n, samples, steps, seed): samples come from a
// self-contained xoshiro256** + Box–Muller generator (not std::normal_distribution, whose
// output differs between standard libraries) seeded per (step, chunk), and cell sums are
// accumulated per fixed chunk in double and added in chunk order, so the result does not
// depend on the number of OpenMP threads. Upstream uses N = 10^7 samples × 600 steps; kvx's
// default is smaller (kGenSamples × kGenSteps) so a 2-core CPU generates a grid in seconds;
// the grid's hash is recorded wherever it is used, so grids made with other settings are
// never confused with these.
//
// Grid files: "<dir>/higgs_grid_d{d}_n{n}.f32": n·d float32 little-endian, row-major (the
// upstream grid file format). Default dir: $KVX_GRID_DIR, else <source dir>/data/grids.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace kvx::higgs {

struct Grid {
  int d = 0, n = 0;
  at::Tensor points;  // [n, d] fp32 CPU contiguous
  int bits() const;   // log2(n); n must be a power of two
  std::string hash() const;  // sha256 of the float32 bytes (little-endian)
};

constexpr int64_t kGenSamples = 1 << 20;
constexpr int kGenSteps = 200;
constexpr uint64_t kGenSeed = 0;

Grid make_grid(int d, int n, const at::Tensor& points);  // validates the shape
Grid upstream_grid_2_16();
Grid generate_grid(int d, int n, int64_t samples = kGenSamples, int steps = kGenSteps,
                   uint64_t seed = kGenSeed);

std::string default_grid_dir();
std::string grid_file(const std::string& dir, int d, int n);
Grid read_grid_file(const std::string& path, int d, int n);
void write_grid_file(const std::string& path, const Grid& g);
// The grid for (d, n): read from dir ("" = default_grid_dir()), or generated with the default
// settings and written there (when the directory is writable). Cached in memory per process.
const Grid& grid_for(int d, int n, const std::string& dir = "");

// Mean squared error per coordinate of nearest-point quantization of `samples` standard normal
// d-vectors (seeded), the figure of merit of a grid.
double grid_mse(const Grid& g, int64_t samples, uint64_t seed);

// Index of the grid point nearest to a (argmax 2<a,γ> − ‖γ‖², lowest index on ties).
int32_t nearest_point(const float* a, const float* pts, const float* half_norm2, int n, int d);

// Deterministic normal generator used by generation and tests.
class NormalRng {
 public:
  explicit NormalRng(uint64_t seed);
  double next();

 private:
  uint64_t next_u64();
  uint64_t s_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace kvx::higgs
