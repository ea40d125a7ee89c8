#include "core/model/placement.h"

#include <map>

#include "core/common/error.h"
#include "core/model/model.h"

namespace kvx {
namespace {

int64_t parse_size(const std::string& s) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(s, &used);
  } catch (...) {
    used = 0;
  }
  static const std::map<std::string, double> units = {
      {"", 1},         {"B", 1},           {"KB", 1e3},            {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12},    {"KiB", 1024.0},    {"MiB", 1048576.0},     {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  auto it = used ? units.find(s.substr(used)) : units.end();
  if (it == units.end() || !(x > 0)) throw error("'{}' is not a memory size (e.g. 20GiB, 512MiB, 40GB, bytes)", s);
  return static_cast<int64_t>(x * it->second);
}

}  // namespace

Placement parse_placement(const std::string& spec) {
  Placement p;
  std::string item;
  for (char c : spec + ",") {
    if (c != ',') {
      if (c != ' ') item += c;
      continue;
    }
    if (item.empty()) throw error("device '{}': empty entry", spec);
    auto at = item.find('@');
    p.devices.push_back(parse_device(item.substr(0, at)));
    p.max_bytes.push_back(at == std::string::npos ? 0 : parse_size(item.substr(at + 1)));
    item.clear();
  }
  return p;
}

std::vector<int> assign_layers(int64_t n_layers, int64_t layer_bytes, int64_t embed_bytes, int64_t head_bytes,
                               const Placement& p) {
  const int n = static_cast<int>(p.devices.size());
  std::vector<int> out(static_cast<size_t>(n_layers), 0);
  if (n <= 1) return out;
  bool limited = false;
  for (auto b : p.max_bytes) limited = limited || b > 0;
  if (!limited) {  // even split by count: device d gets layers [d*L/n, (d+1)*L/n)
    for (int64_t l = 0; l < n_layers; ++l) out[static_cast<size_t>(l)] = static_cast<int>(l * n / n_layers);
    return out;
  }
  int64_t l = 0;
  for (int d = 0; d < n; ++d) {
    const bool unlimited = p.max_bytes[static_cast<size_t>(d)] <= 0;
    int64_t budget = p.max_bytes[static_cast<size_t>(d)] - (d == 0 ? embed_bytes : 0) - (d == n - 1 ? head_bytes : 0);
    if (!unlimited && budget < 0)
      throw error("max_memory of device {} ({}) is too small for the {} on it ({} bytes)", d,
                  p.max_bytes[static_cast<size_t>(d)], d == 0 ? "embedding" : "head", d == 0 ? embed_bytes : head_bytes);
    for (; l < n_layers && (unlimited || budget >= layer_bytes || d == n - 1); ++l) {
      if (!unlimited && budget < layer_bytes)
        throw error("the model does not fit in max_memory: {} layers of {} bytes, {} left after device {} "
                    "(raise max_memory or add a device)", n_layers, layer_bytes, n_layers - l, d);
      out[static_cast<size_t>(l)] = d;
      budget -= layer_bytes;
    }
  }
  return out;
}

}  // namespace kvx
