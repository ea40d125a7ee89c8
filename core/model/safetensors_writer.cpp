#include "core/model/safetensors_writer.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "core/common/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"

namespace kvx {
namespace fs = std::filesystem;

std::string safetensors_dtype(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "F64";
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: throw error("safetensors: scalar type {} cannot be written", c10::toString(t));
  }
}

namespace {

at::ScalarType scalar_of(const std::string& st) {
  if (st == "F32") return at::kFloat;
  if (st == "F16") return at::kHalf;
  if (st == "BF16") return at::kBFloat16;
  if (st == "F64") return at::kDouble;
  return at::kFloat;  // callers only ask for the float types kvx loads
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("{}: cannot read", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Tensors of a source folder: name -> (file, entry), single file or sharded.
struct SourceTensors {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> where;

  explicit SourceTensors(const std::string& dir) {
    const std::string index = dir + "/model.safetensors.index.json";
    std::set<std::string> shards;
    if (fs::exists(index)) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(read_file(index));
      } catch (const nlohmann::json::exception& e) {
        throw error("{}: invalid JSON: {}", index, e.what());
      }
      if (!j.contains("weight_map") || !j["weight_map"].is_object())
        throw error("{}: missing object 'weight_map'", index);
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it)
        if (it.value().is_string()) shards.insert(it.value().get<std::string>());
    } else if (fs::exists(dir + "/model.safetensors")) {
      shards.insert("model.safetensors");
    } else {
      throw error("{}: no model.safetensors or model.safetensors.index.json (save source folder)", dir);
    }
    for (const auto& s : shards) {
      files.push_back(SafetensorsFile::open(dir + "/" + s));
      for (const auto& n : files.back()->names()) where[n] = files.back().get();
    }
  }
};

}  // namespace

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") throw error("{}: invalid tensor name '{}'", path, name);
    if (header.contains(name)) throw error("{}: tensor '{}' given twice", path, name);
    if (!t.defined()) throw error("{}: tensor '{}' is undefined", path, name);
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = uint64_t(c.numel()) * uint64_t(c.element_size());
    header[name] = {{"dtype", safetensors_dtype(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(std::move(c));
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // data region starts 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw error("{}: cannot open for writing", tmp);
    const uint64_t n = h.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);  // little-endian
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(h.data(), std::streamsize(h.size()));
    for (const auto& c : cpu)
      if (c.numel() > 0) out.write(static_cast<const char*>(c.data_ptr()), std::streamsize(c.numel() * c.element_size()));
    out.flush();
    if (!out) throw error("{}: write failed (disk full?)", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw error("{}: cannot rename to {}: {}", tmp, path, ec.message());
}

void save_hf_model(const CausalLM& model, const std::string& out_dir, const SaveOptions& opt) {
  const std::string src = opt.source_dir.empty() ? model.path() : opt.source_dir;
  if (opt.dtype != "original" && opt.dtype != "float32" && opt.dtype != "bfloat16" && opt.dtype != "float16")
    throw error("save dtype '{}' (expected original, float32, bfloat16 or float16)", opt.dtype);
  std::error_code ec;
  if (fs::exists(out_dir) && fs::exists(src) && fs::equivalent(out_dir, src, ec))
    throw error("{}: refusing to overwrite the source model folder", out_dir);
  fs::create_directories(out_dir, ec);
  if (ec || !fs::is_directory(out_dir)) throw error("{}: cannot create output folder: {}", out_dir, ec.message());

  SourceTensors source(src);
  const bool keep = opt.dtype == "original";
  const at::ScalarType forced = keep ? at::kFloat : parse_compute_dtype(opt.dtype);
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<std::string> written;
  for (auto& [name, t] : model.hf_state_dict()) {
    at::ScalarType dt = forced;
    if (keep) {
      auto it = source.where.find(name);
      dt = it != source.where.end() ? scalar_of(it->second->entry(name).dtype) : t.scalar_type();
    }
    written.insert(name);
    out.emplace_back(name, t.to(at::kCPU).to(dt).contiguous());
  }
  // Tensors the source holds that kvx does not model (buffers such as rotary inv_freq) pass through.
  for (const auto& [name, file] : source.where) {
    if (written.count(name)) continue;
    const std::string& sd = file->entry(name).dtype;
    if (sd != "F32" && sd != "F16" && sd != "BF16") {
      fmt::print(stderr, "kvx: note: {}: tensor '{}' ({}) not copied to the checkpoint\n", file->path(), name, sd);
      continue;
    }
    at::Tensor t = file->load(name, scalar_of(sd), at::kCPU);
    out.emplace_back(name, keep ? t : t.to(forced));
  }
  write_safetensors(out_dir + "/model.safetensors", out);
  fs::remove(out_dir + "/model.safetensors.index.json", ec);  // would shadow the new single file

  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                        "chat_template.jinja"}) {
    const std::string from = src + "/" + f, to = out_dir + "/" + f;
    if (!fs::exists(from)) continue;
    if (std::string(f) == "config.json" && !keep) {
      nlohmann::json cfg;
      try {
        cfg = nlohmann::json::parse(read_file(from));
      } catch (const nlohmann::json::exception& e) {
        throw error("{}: invalid JSON: {}", from, e.what());
      }
      bool set = false;
      for (const char* k : {"dtype", "torch_dtype"})
        if (cfg.contains(k)) cfg[k] = opt.dtype, set = true;
      if (!set) cfg["torch_dtype"] = opt.dtype;
      std::ofstream o(to, std::ios::trunc);
      o << cfg.dump(2) << "\n";
      if (!o) throw error("{}: write failed", to);
      continue;
    }
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (ec) throw error("{}: cannot copy to {}: {}", from, to, ec.message());
  }
}

}  // namespace kvx
