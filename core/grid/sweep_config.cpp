#include "core/grid/sweep_config.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "core/common/error.h"
#include "core/grid/expand.h"
#include "core/grid/identity.h"
#include "core/grid/yaml_json.h"
#include "experiments/protocol.h"
#include "quantizers/registry.h"

namespace fs = std::filesystem;

namespace kvx::grid {
namespace {

using json = nlohmann::json;

struct ModelEntry {
  std::string name, path, yaml;
  json dtype;  // null when not given
  ModelIdentity id;
};
struct DatasetEntry {
  std::string name, path, hash, yaml;
};
struct Resolved {
  json spec;  // resolved protocol or method
};
struct Entry {  // a protocol or method entry of the config
  std::string name, yaml;
  json body, zip;
  std::vector<json> variants;  // resolved
  const ProtocolTraits* traits = nullptr;
};

const std::set<std::string> kTopKeys = {"name",   "description", "db",       "workers", "device",  "retries",
                                        "lease_seconds", "models", "datasets", "protocols", "methods", "exclude",
                                        "include", "devices", "max_memory"};

// "20GiB", "512MiB", "40GB", "1.5TiB", 123456 (bytes) -> bytes; -1 when not a size.
int64_t parse_bytes(const json& v) {
  if (v.is_number_integer()) return v.get<int64_t>() > 0 ? v.get<int64_t>() : -1;
  if (!v.is_string()) return -1;
  const std::string s = v.get<std::string>();
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(s, &used);
  } catch (...) {
    return -1;
  }
  std::string unit = s.substr(used);
  unit.erase(0, unit.find_first_not_of(' '));
  static const std::map<std::string, double> units = {
      {"", 1},         {"B", 1},         {"KB", 1e3},   {"MB", 1e6},   {"GB", 1e9},   {"TB", 1e12},
      {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  auto it = units.find(unit);
  // Beyond int64 (1e300GB) is no size either; the cast would be undefined behaviour.
  if (it == units.end() || !(x > 0) || !(x * it->second < 9.2e18)) return -1;
  return static_cast<int64_t>(x * it->second);
}

bool is_method_field(const std::string& f) {
  return f.rfind("key.", 0) == 0 || f.rfind("value.", 0) == 0 || f.rfind("policy.", 0) == 0 ||
         f.rfind("method.", 0) == 0;
}
bool is_known_field(const std::string& f) {
  return f == "model" || f == "dataset" || f == "protocol" || f == "method" || f.rfind("protocol.", 0) == 0 ||
         is_method_field(f);
}
// "method.key.bits" and "key.bits" name the same thing.
std::string method_subpath(const std::string& f) { return f.rfind("method.", 0) == 0 ? f.substr(7) : f; }

struct Candidate {
  const ModelEntry* model;
  const DatasetEntry* dataset;
  const Entry* protocol;
  json proto;
  const Entry* method;
  json meth;
};

class Loader {
 public:
  Loader(const YamlDoc& doc, std::string base_dir, FileHasher& hasher)
      : doc_(doc), base_(std::move(base_dir)), hasher_(hasher) {}

  SweepConfig load() {
    const json& root = doc_.root;
    if (!root.is_object()) fail("", "a sweep config must be a mapping (name:, models:, methods:, ...)");
    for (auto it = root.begin(); it != root.end(); ++it)
      if (!kTopKeys.count(it.key()))
        fail("/" + it.key(), fmt::format("unknown key '{}' (expected one of: name, description, db, workers, "
                                         "device, devices, max_memory, retries, lease_seconds, models, datasets, "
                                         "protocols, methods, exclude, include)", it.key()), true);
    SweepConfig cfg;
    cfg.file = doc_.file;
    cfg.text = doc_.text;
    if (!root.contains("name")) fail("", "missing 'name' (the sweep's name)");
    cfg.name = str(root["name"], "/name", "the sweep's name");
    if (cfg.name.empty()) fail("/name", "'name' must not be empty");
    if (root.contains("db")) cfg.db = absolute_path(str(root["db"], "/db", "a database path"), base_);
    if (root.contains("workers")) cfg.workers = integer(root["workers"], "/workers", 1, 1024);
    if (root.contains("retries")) cfg.retries = integer(root["retries"], "/retries", 0, 100);
    if (root.contains("lease_seconds")) {
      if (!root["lease_seconds"].is_number() || root["lease_seconds"].get<double>() < kMinLeaseSeconds)
        fail("/lease_seconds", fmt::format("'lease_seconds' must be a number of at least {} s (workers heartbeat every "
                                           "lease/4, at least 0.2 s apart: a shorter lease reclaims healthy jobs)",
                                           kMinLeaseSeconds));
      cfg.lease_seconds = root["lease_seconds"].get<double>();
    }
    if (root.contains("device")) {
      cfg.device = str(root["device"], "/device", "cpu or cuda");
      if (cfg.device != "cpu" && cfg.device != "cuda")
        fail("/device", fmt::format("'device' must be cpu or cuda, got '{}'", cfg.device));
    }
    load_devices(cfg);
    load_protocols();
    load_methods();
    load_models();
    load_datasets();
    expand(cfg);
    return cfg;
  }

 private:
  [[noreturn]] void fail(const std::string& path, const std::string& msg, bool at_key = false) const {
    throw error("{}: {}", doc_.where(path, at_key), msg);
  }
  std::string str(const json& v, const std::string& path, const char* what) const {
    if (!v.is_string()) fail(path, fmt::format("expected {} (a string), got {}", what, v.dump()));
    return v.get<std::string>();
  }
  int integer(const json& v, const std::string& path, int lo, int hi) const {
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      fail(path, fmt::format("expected an integer in [{}, {}], got {}", lo, hi, v.dump()));
    return v.get<int>();
  }
  const json& list(const char* key) const {
    static const json empty = json::array();
    if (!doc_.root.contains(key) || doc_.root[key].is_null()) return empty;
    if (!doc_.root[key].is_array()) fail(std::string("/") + key, fmt::format("'{}' must be a list", key));
    return doc_.root[key];
  }
  void check_keys(const json& e, const std::string& path, const std::set<std::string>& allowed,
                  const char* what) const {
    for (auto it = e.begin(); it != e.end(); ++it)
      if (!allowed.count(it.key())) {
        std::string names;
        for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + a;
        fail(child(path, it.key()), fmt::format("unknown {} field '{}' (expected: {})", what, it.key(), names), true);
      }
  }
  std::string entry_name(const json& e, const std::string& path, const char* what) const {
    if (!e.is_object()) fail(path, fmt::format("each {} must be a mapping with 'name'", what));
    if (!e.contains("name")) fail(path, fmt::format("{} entry has no 'name'", what));
    std::string n = str(e["name"], child(path, "name"), "a name");
    if (n.empty()) fail(child(path, "name"), "name must not be empty");
    return n;
  }

  // A ParamError path inside a variant -> the YAML node it came from.
  std::string locate(const std::string& entry_yaml, const Variant& v, const std::vector<std::string>& path,
                     const std::vector<std::string>& prefix) const {
    std::vector<std::string> full = prefix;
    full.insert(full.end(), path.begin(), path.end());
    for (size_t n = full.size(); n > 0; --n) {
      auto it = v.origin.find(join_dotted({full.begin(), full.begin() + n}));
      if (it != v.origin.end()) return it->second;
    }
    std::string p = entry_yaml;
    for (const auto& s : path) p = child(p, s);
    return p;
  }

  void resolve_variants(Entry& e, const std::vector<Variant>& vars, bool is_protocol) {
    for (const auto& v : vars) {
      try {
        e.variants.push_back(is_protocol ? resolve_protocol(v.spec) : resolve_method(v.spec));
      } catch (const ParamError& pe) {
        std::string msg = pe.what();
        bool at_key = msg.find("unknown") != std::string::npos && msg.find("unknown method '") == std::string::npos &&
                      msg.find("unknown protocol '") == std::string::npos;
        std::string where = locate(e.yaml, v, pe.path, {});
        throw error("{}: {} '{}': {}", doc_.where(where, at_key), is_protocol ? "protocol" : "method", e.name, msg);
      } catch (const Error& err) {
        fail(e.yaml, fmt::format("{} '{}': {}", is_protocol ? "protocol" : "method", e.name, err.what()));
      }
    }
  }

  // devices: auto | cpu | [[0, 1], [2, 3]] (or [0, 1] = one worker per GPU); max_memory.
  void load_devices(SweepConfig& cfg) {
    const json& root = doc_.root;
    if (root.contains("devices")) {
      const json& d = root["devices"];
      cfg.devices_where = doc_.where("/devices");
      if (root.contains("device")) fail("/device", "give either 'device' or 'devices', not both");
      if (d.is_string()) {
        cfg.devices = d.get<std::string>();
        if (cfg.devices != "auto" && cfg.devices != "cpu")
          fail("/devices", fmt::format("'devices' must be auto, cpu or a list of GPU groups like [[0, 1], [2, 3]], "
                                       "got '{}'", cfg.devices));
        cfg.device = cfg.devices == "cpu" ? "cpu" : "cuda";
      } else if (d.is_array() && !d.empty()) {
        cfg.devices = "groups";
        cfg.device = "cuda";
        std::set<int> seen;
        for (size_t i = 0; i < d.size(); ++i) {
          std::string gp = child("/devices", i);
          json g = d[i].is_array() ? d[i] : json::array({d[i]});
          if (g.empty()) fail(gp, "a device group must list at least one GPU index");
          std::vector<int> group;
          for (size_t k = 0; k < g.size(); ++k) {
            std::string ep = d[i].is_array() ? child(gp, k) : gp;
            if (!g[k].is_number_integer() || g[k].get<int64_t>() < 0 || g[k].get<int64_t>() > 1023)
              fail(ep, fmt::format("expected a GPU index (an integer >= 0), got {}", g[k].dump()));
            int idx = g[k].get<int>();
            if (!seen.insert(idx).second) fail(ep, fmt::format("GPU {} appears in more than one place", idx));
            group.push_back(idx);
          }
          cfg.device_groups.push_back(std::move(group));
        }
      } else {
        fail("/devices", "'devices' must be auto, cpu or a non-empty list of GPU groups like [[0, 1], [2, 3]]");
      }
    }
    if (root.contains("max_memory")) {
      const json& m = root["max_memory"];
      if (!m.is_object() || m.empty())
        fail("/max_memory", "'max_memory' must map GPU indices (within a group) to sizes, e.g. {0: 20GiB, 1: 40GiB}");
      for (auto it = m.begin(); it != m.end(); ++it) {
        const std::string& k = it.key();
        if (k.empty() || k.size() > 4 || k.find_first_not_of("0123456789") != std::string::npos)
          fail(child("/max_memory", k), fmt::format("'{}' is not a GPU index (0, 1, ...)", k), true);
        int64_t b = parse_bytes(it.value());
        if (b <= 0)
          fail(child("/max_memory", k), fmt::format("expected a size like 20GiB, 512MiB, 40GB or bytes, got {}",
                                                    it.value().dump()));
        cfg.max_memory.emplace_back(std::stoi(k), b);
      }
    }
  }

  void load_protocols() {
    const json& l = list("protocols");
    if (l.empty()) fail("/protocols", "'protocols' must list at least one protocol");
    for (size_t i = 0; i < l.size(); ++i) {
      std::string yp = child("/protocols", i);
      Entry e;
      e.name = entry_name(l[i], yp, "protocol");
      e.yaml = yp;
      for (const auto& p : protocols_)
        if (p.name == e.name)
          fail(child(yp, "name"), fmt::format("duplicate protocol '{}' (use a list value to vary its parameters)", e.name));
      e.traits = find_protocol(e.name);
      e.body = l[i];
      if (e.body.contains("zip")) {
        e.zip = e.body["zip"];
        e.body.erase("zip");
      }
      if (!e.traits) {
        try {
          resolve_protocol(json{{"name", e.name}});
        } catch (const std::exception& ex) {
          fail(child(yp, "name"), ex.what());
        }
      }
      resolve_variants(e, expand_entry(e.body, yp, e.zip, child(yp, "zip"), doc_), true);
      protocols_.push_back(std::move(e));
    }
  }

  void load_methods() {
    json l = list("methods");
    if (l.empty() && !doc_.root.contains("methods")) l = json::array({json{{"name", "none"}}});  // default
    if (l.empty()) fail("/methods", "'methods' must list at least one method");
    for (size_t i = 0; i < l.size(); ++i) {
      std::string yp = child("/methods", i);
      Entry e;
      e.name = entry_name(l[i], yp, "method");
      e.yaml = yp;
      for (const auto& m : methods_)
        if (m.name == e.name) fail(child(yp, "name"), fmt::format("duplicate method name '{}'", e.name));
      check_keys(l[i], yp, {"name", "key", "value", "policy", "zip"}, "method");
      e.body = l[i];
      e.body.erase("name");
      if (e.body.contains("zip")) {
        e.zip = e.body["zip"];
        e.body.erase("zip");
      }
      resolve_variants(e, expand_entry(e.body, yp, e.zip, child(yp, "zip"), doc_), false);
      methods_.push_back(std::move(e));
    }
  }

  bool any_protocol_needs(bool model) const {
    for (const auto& p : protocols_)
      if (p.traits && (model ? p.traits->needs_model : p.traits->needs_dataset)) return true;
    return false;
  }
  std::string first_needing(bool model) const {
    for (const auto& p : protocols_)
      if (p.traits && (model ? p.traits->needs_model : p.traits->needs_dataset)) return p.name;
    return "";
  }

  void load_models() {
    const json& l = list("models");
    if (l.empty()) {
      if (any_protocol_needs(true))
        fail(doc_.root.contains("models") ? "/models" : "",
             fmt::format("'models' must list at least one model (protocol '{}' needs one)", first_needing(true)));
      return;
    }
    for (size_t i = 0; i < l.size(); ++i) {
      std::string yp = child("/models", i);
      ModelEntry m;
      m.name = entry_name(l[i], yp, "model");
      m.yaml = yp;
      check_keys(l[i], yp, {"name", "path", "dtype"}, "model");
      for (const auto& o : models_)
        if (o.name == m.name) fail(child(yp, "name"), fmt::format("duplicate model name '{}'", m.name));
      if (!l[i].contains("path")) fail(yp, fmt::format("model '{}' has no 'path'", m.name));
      m.path = absolute_path(str(l[i]["path"], child(yp, "path"), "a model folder"), base_);
      if (l[i].contains("dtype")) m.dtype = str(l[i]["dtype"], child(yp, "dtype"), "a dtype name");
      try {
        m.id = model_identity(m.path, hasher_);
      } catch (const Error& e) {
        fail(child(yp, "path"), fmt::format("model '{}': {}", m.name, e.what()));
      }
      models_.push_back(std::move(m));
    }
  }

  void load_datasets() {
    const json& l = list("datasets");
    if (l.empty()) {
      if (any_protocol_needs(false))
        fail(doc_.root.contains("datasets") ? "/datasets" : "",
             fmt::format("'datasets' must list at least one dataset (protocol '{}' needs one)", first_needing(false)));
      return;
    }
    for (size_t i = 0; i < l.size(); ++i) {
      std::string yp = child("/datasets", i);
      DatasetEntry d;
      d.name = entry_name(l[i], yp, "dataset");
      d.yaml = yp;
      check_keys(l[i], yp, {"name", "path"}, "dataset");
      for (const auto& o : datasets_)
        if (o.name == d.name) fail(child(yp, "name"), fmt::format("duplicate dataset name '{}'", d.name));
      if (!l[i].contains("path")) fail(yp, fmt::format("dataset '{}' has no 'path'", d.name));
      d.path = absolute_path(str(l[i]["path"], child(yp, "path"), "a dataset file"), base_);
      if (!fs::is_regular_file(d.path)) fail(child(yp, "path"), fmt::format("dataset '{}': no such file '{}'", d.name, d.path));
      try {
        d.hash = hasher_.hash(d.path);
      } catch (const Error& e) {
        fail(child(yp, "path"), fmt::format("dataset '{}': {}", d.name, e.what()));
      }
      datasets_.push_back(std::move(d));
    }
  }

  // --- expansion -----------------------------------------------------------------------
  static json field_value(const Candidate& c, const std::string& f) {
    if (f == "model") return c.model ? json(c.model->name) : json();
    if (f == "dataset") return c.dataset ? json(c.dataset->name) : json();
    if (f == "protocol") return c.protocol->name;
    if (f == "method") return c.method->name;
    if (f.rfind("protocol.", 0) == 0) {
      const json* v = get_dotted(c.proto, f.substr(9));
      return v ? *v : json();
    }
    const json* v = get_dotted(c.meth, method_subpath(f));
    return v ? *v : json();
  }

  bool excluded(const Candidate& c) const {
    for (const auto& ex : excludes_) {
      bool all = true;
      for (auto it = ex.begin(); it != ex.end() && all; ++it) {
        json have = field_value(c, it.key());
        if (it.value().is_array()) {
          bool any = false;
          for (const auto& w : it.value()) any = any || have == w;
          all = any;
        } else {
          all = have == it.value();
        }
      }
      if (all) return true;
    }
    return false;
  }

  void load_excludes() {
    const json& l = list("exclude");
    for (size_t i = 0; i < l.size(); ++i) {
      std::string yp = child("/exclude", i);
      if (!l[i].is_object() || l[i].empty()) fail(yp, "each exclude entry must be a mapping of field: value");
      for (auto it = l[i].begin(); it != l[i].end(); ++it) {
        if (!is_known_field(it.key()))
          fail(child(yp, it.key()), fmt::format("unknown field '{}' (expected model, dataset, protocol, method, "
                                                "protocol.PARAM or key./value./policy.PARAM)", it.key()), true);
        check_name_ref(it.key(), it.value(), child(yp, it.key()));
      }
      excludes_.push_back(l[i]);
    }
  }

  void check_name_ref(const std::string& field, const json& v, const std::string& yp) const {
    auto check_one = [&](const json& x, const std::string& p) {
      auto known = [&](auto& entries) {
        for (const auto& e : entries)
          if (json(e.name) == x) return true;
        return false;
      };
      bool ok = field == "model" ? known(models_) : field == "dataset" ? known(datasets_)
                : field == "protocol" ? known(protocols_) : field == "method" ? known(methods_) : true;
      if (!ok) fail(p, fmt::format("no {} named {} in this config", field, x.dump()));
    };
    if (v.is_array())
      for (size_t i = 0; i < v.size(); ++i) check_one(v[i], child(yp, i));
    else
      check_one(v, yp);
  }

  template <typename T>
  std::vector<const T*> pick(const std::vector<T>& all, const json& names) const {
    std::vector<const T*> out;
    for (const auto& e : all) {
      bool want = names.is_null();
      if (names.is_string()) want = names == e.name;
      if (names.is_array())
        for (const auto& n : names) want = want || n == e.name;
      if (want) out.push_back(&e);
    }
    return out;
  }

  void add_jobs(std::vector<const ModelEntry*> ms, std::vector<const DatasetEntry*> ds, const Entry& p,
                const std::vector<json>& protos, const Entry& m, const std::vector<json>& meths, bool apply_exclude,
                SweepConfig& cfg) {
    if (ms.empty()) ms.push_back(nullptr);
    if (ds.empty()) ds.push_back(nullptr);
    for (const auto* model : ms)
      for (const auto* dataset : ds)
        for (const auto& pr : protos)
          for (const auto& me : meths) {
            Candidate c{model, dataset, &p, pr, &m, me};
            if (apply_exclude && excluded(c)) continue;
            JobSpec j = make_job(c);
            if (seen_.insert(j.key).second) cfg.jobs.push_back(std::move(j));
          }
  }

  JobSpec make_job(const Candidate& c) const {
    JobSpec j;
    json model = nullptr, dataset = nullptr;
    if (c.model) {
      model = {{"name", c.model->name}, {"path", c.model->path}, {"hash", c.model->id.hash}};
      if (!c.model->dtype.is_null()) model["dtype"] = c.model->dtype;
    }
    if (c.dataset) dataset = {{"name", c.dataset->name}, {"path", c.dataset->path}, {"hash", c.dataset->hash}};
    j.job = {{"model", model}, {"dataset", dataset}, {"protocol", c.proto}, {"method", c.meth}};
    j.key = job_key(j.job);
    j.model = c.model ? c.model->name : "";
    j.dataset = c.dataset ? c.dataset->name : "";
    j.protocol = c.protocol->name;
    j.method = c.method->name;
    j.label = method_label(c.meth);
    json proto = c.proto;
    proto.erase("name");
    flatten_into(proto, "protocol", j.params);
    flatten_into(c.meth, "", j.params);
    j.model_path = c.model ? c.model->path : "";
    // Rough relative cost so that long jobs start first (less idle tail at the end).
    double cost = 1;
    for (const char* k : {"seq_len", "context", "context_len", "length"})
      if (c.proto.contains(k) && c.proto[k].is_number()) cost *= std::max(1.0, c.proto[k].get<double>());
    for (const char* k : {"max_windows", "num_windows", "windows", "samples", "num_samples"})
      if (c.proto.contains(k) && c.proto[k].is_number()) cost *= std::max(1.0, c.proto[k].get<double>());
    if (c.proto.contains("sleep_ms") && c.proto["sleep_ms"].is_number()) cost += c.proto["sleep_ms"].get<double>();
    if (c.model) cost *= 1.0 + static_cast<double>(c.model->id.weight_bytes) / 1e6;
    j.cost = cost;
    return j;
  }

  void expand(SweepConfig& cfg) {
    load_excludes();
    // the product is refused before the jobs are built (each is resolved and keyed)
    double variants_p = 0, variants_m = 0;
    for (const auto& p : protocols_) variants_p += double(p.variants.size());
    for (const auto& m : methods_) variants_m += double(m.variants.size());
    const double product = double(std::max<size_t>(1, models_.size())) * double(std::max<size_t>(1, datasets_.size())) *
                           variants_p * variants_m;
    if (product > double(grid_limits().jobs))
      fail("", fmt::format("the grid expands to {:.4g} jobs (models x datasets x protocol variants x method variants), "
                           "more than the {} a sweep may have; KVX_MAX_JOBS raises the limit",
                           product, grid_limits().jobs));
    for (const auto& p : protocols_)
      for (const auto& m : methods_)
        add_jobs(pick(models_, json()), pick(datasets_, json()), p, p.variants, m, m.variants, true, cfg);
    const json& inc = list("include");
    for (size_t i = 0; i < inc.size(); ++i) add_include(inc[i], child("/include", i), cfg);
    if (cfg.jobs.empty()) fail("", "the grid expands to no jobs (everything excluded?)");
  }

  void add_include(const json& e, const std::string& yp, SweepConfig& cfg) {
    if (!e.is_object()) fail(yp, "each include entry must be a mapping (model, dataset, protocol, method, overrides)");
    for (auto it = e.begin(); it != e.end(); ++it) {
      if (!is_known_field(it.key()))
        fail(child(yp, it.key()), fmt::format("unknown field '{}' (expected model, dataset, protocol, method, "
                                              "protocol.PARAM or key./value./policy.PARAM)", it.key()), true);
      check_name_ref(it.key(), it.value(), child(yp, it.key()));
    }
    auto one = [&](const std::vector<Entry>& all, const char* field) -> const Entry& {
      if (!e.contains(field)) {
        if (all.size() == 1) return all[0];
        fail(yp, fmt::format("include entry must name a {} (the config has several)", field));
      }
      if (!e[field].is_string()) fail(child(yp, field), fmt::format("'{}' must be one name", field));
      for (const auto& x : all)
        if (x.name == e[field]) return x;
      fail(child(yp, field), "unknown name");
    };
    const Entry& p = one(protocols_, "protocol");
    const Entry& m = one(methods_, "method");
    Entry pe = p, me = m;
    pe.variants.clear();
    me.variants.clear();
    pe.yaml = me.yaml = yp;  // errors in overridden values point into the include entry
    std::map<std::string, std::string> p_origin, m_origin;
    for (auto it = e.begin(); it != e.end(); ++it) {
      const std::string& f = it.key();
      if (f == "model" || f == "dataset" || f == "protocol" || f == "method") continue;
      Entry& target = f.rfind("protocol.", 0) == 0 ? pe : me;
      std::string sub = f.rfind("protocol.", 0) == 0 ? f.substr(9) : method_subpath(f);
      try {
        set_dotted(target.body, sub, it.value());
      } catch (const Error& err) {
        fail(child(yp, f), err.what(), true);
      }
      if (target.zip.is_object()) {
        target.zip.erase(sub);
        if (target.zip.empty()) target.zip = nullptr;
      }
    }
    // Expand what is left (lists in the entry or the override), then point origins of the
    // overridden values at the include's own nodes.
    auto expand_one = [&](Entry& t, const Entry& orig, bool is_protocol, const std::string& prefix) {
      auto vars = expand_entry(t.body, orig.yaml, t.zip, child(orig.yaml, "zip"), doc_);
      for (auto& v : vars)
        for (auto it = e.begin(); it != e.end(); ++it) {
          const std::string& f = it.key();
          bool mine = is_protocol ? f.rfind("protocol.", 0) == 0 : is_method_field(f);
          if (!mine) continue;
          std::string sub = is_protocol ? f.substr(9) : method_subpath(f);
          v.origin[sub] = child(yp, f);
        }
      t.yaml = orig.yaml;
      resolve_variants(t, vars, is_protocol);
    };
    expand_one(pe, p, true, "protocol");
    expand_one(me, m, false, "");
    pe.yaml = p.yaml;
    add_jobs(pick(models_, e.value("model", json())), pick(datasets_, e.value("dataset", json())), p, pe.variants,
             m, me.variants, false, cfg);
  }

  const YamlDoc& doc_;
  std::string base_;
  FileHasher& hasher_;
  std::vector<Entry> protocols_, methods_;
  std::vector<ModelEntry> models_;
  std::vector<DatasetEntry> datasets_;
  std::vector<json> excludes_;
  std::set<std::string> seen_;
};

}  // namespace

SweepConfig parse_sweep(const std::string& text, const std::string& file_label, const std::string& base_dir,
                        FileHasher& hasher) {
  YamlDoc doc = parse_yaml(text, file_label);
  return Loader(doc, base_dir, hasher).load();
}

std::string config_db_path(const std::string& path) {
  YamlDoc doc = load_yaml_file(path);
  if (!doc.root.is_object() || !doc.root.contains("db")) return "";
  if (!doc.root["db"].is_string()) throw error("{}: expected a database path (a string)", doc.where("/db"));
  return absolute_path(doc.root["db"].get<std::string>(), fs::absolute(fs::path(path)).parent_path().string());
}

SweepConfig load_sweep(const std::string& path, FileHasher& hasher) {
  YamlDoc doc = load_yaml_file(path);
  std::string dir = fs::absolute(fs::path(path)).parent_path().string();
  SweepConfig cfg = Loader(doc, dir, hasher).load();
  cfg.file = path;
  return cfg;
}

}  // namespace kvx::grid
