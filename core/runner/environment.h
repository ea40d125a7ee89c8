// Provenance of a result row (host, GPU, torch, CUDA, kvx commit) and the GPUs a sweep may use.
// GPU facts come from CUDA_VISIBLE_DEVICES and `nvidia-smi` so the engine needs no CUDA build.
#pragma once
#include <string>
#include <vector>

#include "core/store/store.h"

namespace kvx::runner {

Environment current_environment(const std::string& device, const std::string& gpu_index);
// GPU ids to pin one worker each: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`.
std::vector<std::string> visible_gpus();
// Output of a command (stdout, trailing whitespace trimmed); "" when it fails.
std::string command_output(const std::string& cmd);

}  // namespace kvx::runner
