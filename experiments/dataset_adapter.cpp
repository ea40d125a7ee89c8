#include "experiments/dataset_adapter.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "core/common/error.h"

namespace kvx {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("{}: cannot open dataset file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string field_text(const nlohmann::json& v, const std::string& key, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) return fmt::format("{}", v.get<double>());
  throw error("{}: field '{}' must be a string or a number, got {}", where, key, v.type_name());
}

std::string fill(const std::string& tmpl, const nlohmann::json& rec, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    const char c = tmpl[i];
    if (c == '{' && i + 1 < tmpl.size() && tmpl[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < tmpl.size() && tmpl[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      const size_t close = tmpl.find('}', i);
      if (close == std::string::npos)
        throw error("{}: prompt_template has an unclosed '{{' at offset {}", where, i);
      const std::string key = tmpl.substr(i + 1, close - i - 1);
      if (!rec.contains(key)) throw error("{}: prompt_template names field '{}' that the record lacks", where, key);
      out += field_text(rec[key], key, where);
      i = close;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string dataset_format(const std::string& path, const DatasetOptions& opt) {
  if (opt.format == "text" || opt.format == "jsonl") return opt.format;
  if (opt.format != "auto")
    throw error("{}: unknown dataset format '{}' (expected auto, text or jsonl)", path, opt.format);
  return ends_with(path, ".jsonl") || ends_with(path, ".ndjson") ? "jsonl" : "text";
}

std::string fill_template(const std::string& tmpl, const std::string& record_json, const std::string& where) {
  nlohmann::json rec;
  try {
    rec = nlohmann::json::parse(record_json);
  } catch (const nlohmann::json::exception& e) {
    throw error("{}: invalid JSON ({})", where, e.what());
  }
  if (!rec.is_object()) throw error("{}: expected a JSON object", where);
  return fill(tmpl, rec, where);
}

std::vector<DatasetRecord> load_records(const std::string& path, const DatasetOptions& opt) {
  std::vector<DatasetRecord> out;
  if (dataset_format(path, opt) != "jsonl") return out;
  std::istringstream in(read_file(path));
  std::string line;
  int64_t no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, no);
    nlohmann::json rec;
    try {
      rec = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw error("{}: invalid JSON ({})", where, e.what());
    }
    if (!rec.is_object()) throw error("{}: expected a JSON object per line, got {}", where, rec.type_name());
    DatasetRecord r;
    r.line = no;
    if (!opt.prompt_template.empty()) {
      r.prompt = fill(opt.prompt_template, rec, where);
    } else {
      if (!rec.contains(opt.prompt_field))
        throw error("{}: record has no prompt field '{}' (set prompt_field or prompt_template)", where,
                    opt.prompt_field);
      r.prompt = field_text(rec[opt.prompt_field], opt.prompt_field, where);
    }
    if (rec.contains(opt.reference_field)) {
      const auto& ref = rec[opt.reference_field];
      if (ref.is_string()) {
        r.references.push_back(ref.get<std::string>());
      } else if (ref.is_array()) {
        for (const auto& x : ref) {
          if (!x.is_string())
            throw error("{}: field '{}' must be a string or an array of strings", where, opt.reference_field);
          r.references.push_back(x.get<std::string>());
        }
      } else if (!ref.is_null()) {
        throw error("{}: field '{}' must be a string or an array of strings, got {}", where, opt.reference_field,
                    ref.type_name());
      }
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) throw error("{}: no records (expected one JSON object per line)", path);
  return out;
}

std::string load_stream(const std::string& path, const DatasetOptions& opt) {
  if (dataset_format(path, opt) == "text") {
    std::string text = read_file(path);
    if (text.empty()) throw error("{}: dataset file is empty", path);
    return text;
  }
  std::string joined;
  for (const auto& r : load_records(path, opt)) joined += (joined.empty() ? "" : "\n\n") + r.prompt;
  return joined;
}

std::vector<std::string> load_documents(const std::string& path, const DatasetOptions& opt) {
  if (dataset_format(path, opt) == "text") return {load_stream(path, opt)};
  std::vector<std::string> docs;
  for (auto& r : load_records(path, opt)) docs.push_back(std::move(r.prompt));
  return docs;
}

}  // namespace kvx
