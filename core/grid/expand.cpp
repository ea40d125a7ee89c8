#include "core/grid/expand.h"

#include "core/common/error.h"

namespace kvx::grid {

std::string join_dotted(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? "." : "") + parts[i];
  return s;
}

std::vector<std::string> split_dotted(const std::string& dotted) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t dot = dotted.find('.', start);
    out.push_back(dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return out;
}

const nlohmann::json* get_dotted(const nlohmann::json& obj, const std::string& dotted) {
  const nlohmann::json* cur = &obj;
  for (const auto& part : split_dotted(dotted)) {
    if (!cur->is_object() || !cur->contains(part)) return nullptr;
    cur = &(*cur)[part];
  }
  return cur;
}

void set_dotted(nlohmann::json& obj, const std::string& dotted, const nlohmann::json& value) {
  auto parts = split_dotted(dotted);
  nlohmann::json* cur = &obj;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    nlohmann::json& next = (*cur)[parts[i]];
    if (next.is_string()) next = nlohmann::json{{"type", next.get<std::string>()}};
    if (next.is_null()) next = nlohmann::json::object();
    if (!next.is_object()) throw error("'{}' is not a mapping", join_dotted({parts.begin(), parts.begin() + i + 1}));
    cur = &next;
  }
  (*cur)[parts.back()] = value;
}

void flatten_into(const nlohmann::json& obj, const std::string& prefix, nlohmann::json& out) {
  if (!obj.is_object()) {
    out[prefix] = obj;
    return;
  }
  for (auto it = obj.begin(); it != obj.end(); ++it)
    flatten_into(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
}

namespace {

struct Axis {
  std::string dotted;      // where the values go
  std::string yaml_path;   // the YAML list holding them
  nlohmann::json values;   // array
};

void find_lists(const nlohmann::json& node, std::vector<std::string>& parts, const std::string& yaml_path,
                const YamlDoc& doc, std::vector<Axis>& out) {
  if (node.is_array()) {
    if (node.empty()) throw error("{}: an empty list gives no values to expand", doc.where(yaml_path));
    for (size_t i = 0; i < node.size(); ++i)
      if (node[i].is_array() || node[i].is_object())
        throw error("{}: list elements must be plain values (a list expands into one job per element)",
                    doc.where(child(yaml_path, i)));
    out.push_back({join_dotted(parts), yaml_path, node});
    return;
  }
  if (!node.is_object()) return;
  for (auto it = node.begin(); it != node.end(); ++it) {
    parts.push_back(it.key());
    find_lists(it.value(), parts, child(yaml_path, it.key()), doc, out);
    parts.pop_back();
  }
}

}  // namespace

std::vector<Variant> expand_entry(const nlohmann::json& body, const std::string& body_path,
                                  const nlohmann::json& zip, const std::string& zip_path, const YamlDoc& doc) {
  std::vector<Axis> axes;
  std::vector<std::string> parts;
  find_lists(body, parts, body_path, doc, axes);

  std::vector<Axis> zipped;
  if (!zip.is_null()) {
    if (!zip.is_object() || zip.empty())
      throw error("{}: 'zip' must map dotted parameter paths to lists of equal length", doc.where(zip_path));
    size_t n = 0;
    for (auto it = zip.begin(); it != zip.end(); ++it) {
      std::string zp = child(zip_path, it.key());
      if (!it.value().is_array() || it.value().empty())
        throw error("{}: zip '{}' must be a non-empty list", doc.where(zp), it.key());
      for (size_t i = 0; i < it.value().size(); ++i)
        if (it.value()[i].is_array() || it.value()[i].is_object())
          throw error("{}: zip values must be plain values", doc.where(child(zp, i)));
      if (n && it.value().size() != n)
        throw error("{}: zip '{}' has {} values but the other zip lists have {}", doc.where(zp), it.key(),
                    it.value().size(), n);
      n = it.value().size();
      for (const auto& a : axes)
        if (a.dotted == it.key())
          throw error("{}: '{}' is both a list and a zip entry; give it in one place", doc.where(zp, true),
                      it.key());
      zipped.push_back({it.key(), zp, it.value()});
    }
  }

  // refused before anything is built when the entry alone gives more variants than a sweep's jobs
  double count = zipped.empty() ? 1.0 : double(zipped[0].values.size());
  for (const auto& a : axes) count *= double(a.values.size());
  const int64_t limit = grid_limits().jobs;
  if (count > double(limit))
    throw error("{}: this entry's lists expand to {:.4g} variants, more than the {} jobs a sweep may have; "
                "KVX_MAX_JOBS raises the limit", doc.where(body_path), count, limit);

  std::vector<Variant> out{{body, {}}};
  for (const auto& a : axes) {
    std::vector<Variant> next;
    for (const auto& v : out)
      for (size_t i = 0; i < a.values.size(); ++i) {
        Variant w = v;
        set_dotted(w.spec, a.dotted, a.values[i]);
        w.origin[a.dotted] = child(a.yaml_path, i);
        next.push_back(std::move(w));
      }
    out = std::move(next);
  }
  if (!zipped.empty()) {
    std::vector<Variant> next;
    for (const auto& v : out)
      for (size_t i = 0; i < zipped[0].values.size(); ++i) {
        Variant w = v;
        for (const auto& z : zipped) {
          try {
            set_dotted(w.spec, z.dotted, z.values[i]);
          } catch (const Error& e) {
            throw error("{}: zip '{}': {}", doc.where(z.yaml_path, true), z.dotted, e.what());
          }
          w.origin[z.dotted] = child(z.yaml_path, i);
        }
        next.push_back(std::move(w));
      }
    out = std::move(next);
  }
  return out;
}

}  // namespace kvx::grid
