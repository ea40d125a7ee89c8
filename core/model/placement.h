// Layer-wise placement of one model over several devices (a pipeline split, like Hugging Face's
// device_map="auto" with max_memory, or QAQ's device_configs). A device string is
//   "cpu" | "cuda" | "cuda:N"                       one device (the usual, unchanged path)
//   "cuda:0@20GiB,cuda:1@40GiB" | "cuda:0,cuda:1"   a split; optional per-device byte limits
//   "cpu,cpu"                                       the same placement code on CPU (tests)
// The embedding lives on the first device, the final norm and head on the last, layers in order
// in contiguous runs; hidden states move between devices at run boundaries, and each layer's
// keys/values (and so its cache policy's tensors) live on that layer's device.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvx {

struct Placement {
  std::vector<at::Device> devices;  // one = no split
  std::vector<int64_t> max_bytes;   // per device; 0 = no limit
  bool split() const { return devices.size() > 1; }
};

// What a model builder receives: each layer's device and the head's (empty = one device).
struct LayerSplit {
  std::vector<at::Device> layers;
  at::Device head = at::kCPU;
};

// Throws kvx::Error for an unknown device, a bad size ("20GiB", "512MiB", "40GB", bytes).
Placement parse_placement(const std::string& spec);

// Device index of each layer. Without limits: an even split by layer count. With limits:
// devices are filled in order (embedding counted on the first, head on the last) up to their
// limit, unlimited devices take everything offered; kvx::Error when the model does not fit.
std::vector<int> assign_layers(int64_t n_layers, int64_t layer_bytes, int64_t embed_bytes, int64_t head_bytes,
                               const Placement& p);

}  // namespace kvx
