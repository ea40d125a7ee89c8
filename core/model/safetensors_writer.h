// Writing Hugging Face checkpoints (kvx train): a safetensors writer and a whole-model save that
// produces a folder both load_model() and transformers' from_pretrained() read.
//
// File format (https://github.com/huggingface/safetensors): 8-byte little-endian header length
// N, N bytes of JSON {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin,
// end]}, ...} padded with spaces to a multiple of 8, then the raw little-endian tensor bytes;
// offsets are relative to the end of the header, tensors are laid out back to back in the order
// given.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kvx {

class CausalLM;

// Writes `tensors` (any device; F64/F32/F16/BF16/I64/I32/I16/I8/U8/BOOL) to `path`, atomically
// (path.tmp, then rename). Names must be unique and non-empty. Throws kvx::Error naming the
// file or tensor.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// safetensors dtype string of a scalar type ("F32", "BF16", ...); throws for unsupported ones.
std::string safetensors_dtype(at::ScalarType t);

struct SaveOptions {
  // The Hugging Face folder the weights originally came from: each tensor keeps that folder's
  // dtype (dtype "original"), tensors kvx does not use are copied through unchanged, and its
  // config.json / generation_config.json / tokenizer files are copied.
  std::string source_dir;
  // "original" | "float32" | "bfloat16" | "float16". Anything but "original" also rewrites the
  // dtype / torch_dtype entry of the copied config.json.
  std::string dtype = "original";
};

// Writes out_dir/model.safetensors (one file, Hugging Face names and layouts from
// CausalLM::hf_state_dict(), metadata format=pt) plus the copied side files. Creates out_dir;
// refuses out_dir == source_dir; removes a stale model.safetensors.index.json in out_dir.
void save_hf_model(const CausalLM& model, const std::string& out_dir, const SaveOptions& opt);

}  // namespace kvx
