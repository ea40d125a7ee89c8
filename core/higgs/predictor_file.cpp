#include "core/higgs/predictor_file.h"

#include <ATen/ATen.h>
#include <c10/util/StringUtil.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <sstream>

#include "core/common/error.h"

namespace kvx::higgs {

#if H5_VERSION_GE(1, 12, 0)
using LinkInfo = H5L_info2_t;
#else
using LinkInfo = H5L_info_t;
#endif

namespace {

// Closes an HDF5 handle on scope exit.
struct H {
  hid_t id;
  herr_t (*close)(hid_t);
  H(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  ~H() {
    if (id >= 0) close(id);
  }
  operator hid_t() const { return id; }
  H(const H&) = delete;
};

void check(herr_t r, const std::string& path, const std::string& what) {
  if (r < 0) throw error("{}: HDF5 failed to {}", path, what);
}
hid_t checked(hid_t r, const std::string& path, const std::string& what) {
  if (r < 0) throw error("{}: HDF5 failed to {}", path, what);
  return r;
}

void write_attr(hid_t obj, const std::string& name, const nlohmann::json& v, const std::string& path) {
  H space(H5Screate(H5S_SCALAR), H5Sclose);
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    H type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type, std::max<size_t>(1, s.size()));
    H5Tset_strpad(type, H5T_STR_NULLPAD);
    H a(checked(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), path, "create attribute " + name), H5Aclose);
    std::string buf = s.empty() ? std::string(1, '\0') : s;
    check(H5Awrite(a, type, buf.data()), path, "write attribute " + name);
  } else if (v.is_boolean() || v.is_number_integer()) {
    const int64_t x = v.is_boolean() ? int64_t(v.get<bool>()) : v.get<int64_t>();
    H a(checked(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), path, "create attribute " + name), H5Aclose);
    check(H5Awrite(a, H5T_NATIVE_INT64, &x), path, "write attribute " + name);
  } else if (v.is_number()) {
    const double x = v.get<double>();
    H a(checked(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT), path, "create attribute " + name), H5Aclose);
    check(H5Awrite(a, H5T_NATIVE_DOUBLE, &x), path, "write attribute " + name);
  } else {
    throw error("{}: attribute '{}' must be a string, integer, float or bool", path, name);
  }
}

// Size in bytes of the file holding obj (0 when unknown: then nothing passes the caps below).
uint64_t file_size(hid_t obj) {
  const hid_t fid = H5Iget_file_id(obj);
  if (fid < 0) return 0;
  hsize_t n = 0;
  if (H5Fget_filesize(fid, &n) < 0) n = 0;
  H5Fclose(fid);
  return uint64_t(n);
}

nlohmann::json read_attr(hid_t attr, const std::string& path, const std::string& name) {
  H type(H5Aget_type(attr), H5Tclose);
  switch (H5Tget_class(type)) {
    case H5T_STRING: {
      if (H5Tis_variable_str(type) > 0) throw error("{}: attribute '{}' is a variable-length string (not written by kvx)", path, name);
      const size_t n = H5Tget_size(type);
      // A corrupted size must not become a huge allocation: no attribute is larger than its file.
      if (n == 0 || n > file_size(attr))
        throw error("{}: attribute '{}' claims a {}-byte string, more than the file holds (corrupted file?)", path,
                    name, n);
      std::string s(n, '\0');
      H mem(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(mem, n);
      H5Tset_strpad(mem, H5T_STR_NULLPAD);
      check(H5Aread(attr, mem, s.data()), path, "read attribute " + name);
      s.resize(std::strlen(s.c_str()));
      return s;
    }
    case H5T_INTEGER: {
      int64_t x = 0;
      check(H5Aread(attr, H5T_NATIVE_INT64, &x), path, "read attribute " + name);
      return x;
    }
    case H5T_FLOAT: {
      double x = 0;
      check(H5Aread(attr, H5T_NATIVE_DOUBLE, &x), path, "read attribute " + name);
      return x;
    }
    default:
      return "<unsupported attribute type>";
  }
}

// Attributes are read by name only, from the list the writer stores in kIndexAttr: libhdf5 1.10
// itself segfaults while building its attribute table (H5Aiterate2, H5Aget_name_by_idx) on some
// malformed object headers, whereas opening one attribute by name fails cleanly on the same files.
constexpr const char* kIndexAttr = "attribute_names";

// Attributes of obj as listed in its kIndexAttr; an object without that list has none readable.
nlohmann::json read_attrs(hid_t obj, const std::string& path) {
  nlohmann::json out = nlohmann::json::object();
  const htri_t has_index = H5Aexists(obj, kIndexAttr);
  if (has_index < 0) throw error("{}: unreadable attribute table (corrupted file?)", path);
  if (has_index == 0) return out;
  std::string names;
  {
    H a(checked(H5Aopen(obj, kIndexAttr, H5P_DEFAULT), path, std::string("open attribute ") + kIndexAttr), H5Aclose);
    const auto v = read_attr(a, path, kIndexAttr);
    if (!v.is_string()) throw error("{}: attribute '{}' must be a string", path, kIndexAttr);
    names = v.get<std::string>();
  }
  std::istringstream lines(names);
  for (std::string name; std::getline(lines, name);) {
    if (name.empty()) continue;
    if (H5Aexists(obj, name.c_str()) <= 0)
      throw error("{}: attribute '{}' is listed in '{}' but cannot be read (corrupted file?)", path, name, kIndexAttr);
    H a(checked(H5Aopen(obj, name.c_str(), H5P_DEFAULT), path, "open attribute " + name), H5Aclose);
    out[name] = read_attr(a, path, name);
  }
  return out;
}

void write_dataset(hid_t loc, const std::string& name, const at::Tensor& t_in, const std::string& path) {
  const bool dbl = t_in.scalar_type() == at::kDouble;
  auto t = t_in.cpu().contiguous();
  if (!dbl) t = t.to(at::kFloat);
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  H space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  H ds(checked(H5Dcreate2(loc, name.c_str(), dbl ? H5T_IEEE_F64LE : H5T_IEEE_F32LE, space, H5P_DEFAULT,
                          H5P_DEFAULT, H5P_DEFAULT), path, "create dataset " + name), H5Dclose);
  check(H5Dwrite(ds, dbl ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()),
        path, "write dataset " + name);
}

at::Tensor read_dataset(hid_t loc, const std::string& name, const std::string& path, at::ScalarType dtype) {
  if (H5Lexists(loc, name.c_str(), H5P_DEFAULT) <= 0) throw error("{}: missing dataset '{}'", path, name);
  H ds(checked(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), path, "open dataset " + name), H5Dclose);
  H space(H5Dget_space(ds), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd < 0 || nd > 8) throw error("{}: dataset '{}' has an unreadable shape (corrupted file?)", path, name);
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  if (H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0)
    throw error("{}: dataset '{}' has an unreadable shape (corrupted file?)", path, name);
  // Cap the allocation by the file size: every element takes at least a byte in the file.
  const uint64_t limit = file_size(ds);
  uint64_t numel = 1;
  for (hsize_t d : dims)
    if (__builtin_mul_overflow(numel, uint64_t(d), &numel) || numel > limit)
      throw error("{}: dataset '{}' claims more elements than the file of {} bytes holds (corrupted file?)", path,
                  name, limit);
  std::vector<int64_t> sz(dims.begin(), dims.end());
  auto t = at::empty(sz, dtype);
  check(H5Dread(ds, dtype == at::kDouble ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                t.data_ptr()), path, "read dataset " + name);
  return t;
}

hid_t open_file(const std::string& path) {
  if (!std::filesystem::exists(path)) throw error("{}: predictor file not found", path);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become kvx::Error, not HDF5 stack dumps
  if (H5Fis_hdf5(path.c_str()) <= 0) throw error("{}: not an HDF5 file", path);
  return checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path, "open the file");
}

}  // namespace

int64_t PredictorSet::side_bits() const {
  int64_t n = 0;
  for (const auto* v : {&key, &value})
    for (const auto& f : *v)
      if (f.weight.defined()) n += (f.weight.numel() + f.bias.numel()) * 16;
  return n;
}

void write_predictor_file(const std::string& path, const PredictorSet& p, bool force) {
  if (std::filesystem::exists(path) && !force)
    throw error("{}: file exists; pass --force to overwrite it", path);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  // Unique temporary name: two workers calibrating the same key never write one file.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    H f(checked(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), tmp, "create the file"), H5Fclose);
    std::string names;
    for (auto it = p.attrs.begin(); it != p.attrs.end(); ++it) {
      if (it.key() == kIndexAttr || it.key().find('\n') != std::string::npos)
        throw error("{}: attribute name '{}' is reserved or contains a newline", path, it.key());
      write_attr(f, it.key(), it.value(), path);
      names += it.key() + "\n";
    }
    write_attr(f, kIndexAttr, names, path);
    for (const char* kind : {"key_predictor", "value_predictor"}) {
      const auto& v = std::string(kind) == "key_predictor" ? p.key : p.value;
      H g(checked(H5Gcreate2(f, kind, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), path, "create group"), H5Gclose);
      for (size_t l = 1; l < v.size(); ++l) {
        H gl(checked(H5Gcreate2(g, std::to_string(l).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), path, "create group"), H5Gclose);
        write_dataset(gl, "weight", v[l].weight, path);
        write_dataset(gl, "bias", v[l].bias, path);
      }
    }
    H gm(checked(H5Gcreate2(f, "metrics", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), path, "create group"), H5Gclose);
    for (const auto& [name, vals] : p.metrics)
      write_dataset(gm, name, at::tensor(at::ArrayRef<double>(vals), at::kDouble), path);
  }
  std::filesystem::rename(tmp, path);
}

PredictorSet read_predictor_file(const std::string& path) {
  H f(open_file(path), H5Fclose);
  PredictorSet p;
  p.attrs = read_attrs(f, path);
  if (p.attrs.empty())
    throw error("{}: no '{}' attribute: not a kvx AQUA-KV predictor file, or one written by an older kvx "
                "(recalibrate with kvx calibrate --force)", path, kIndexAttr);
  if (!p.attrs.contains("format") || p.attrs["format"] != "kvx-aqua-predictors")
    throw error("{}: not a kvx AQUA-KV predictor file (attribute format != 'kvx-aqua-predictors')", path);
  auto int_attr = [&](const char* k) -> int64_t {
    if (!p.attrs.contains(k)) return 0;
    if (!p.attrs[k].is_number_integer()) throw error("{}: attribute '{}' must be an integer", path, k);
    return p.attrs[k].get<int64_t>();
  };
  const int64_t L = int_attr("n_layers"), C = int_attr("channels");
  if (L < 1 || C < 1) throw error("{}: attributes n_layers and channels must be positive", path);
  // Both size allocations below; a file cannot describe more layers or channels than it has bytes.
  if (uint64_t(L) > file_size(f) || uint64_t(C) > file_size(f))
    throw error("{}: attributes n_layers = {} and channels = {} are larger than the file (corrupted file?)", path, L, C);
  p.key.resize(size_t(L));
  p.value.resize(size_t(L));
  for (int64_t l = 1; l < L; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const std::string base = fmt::format("{}/{}/", kv == 0 ? "key_predictor" : "value_predictor", l);
      LinearMap m;
      m.weight = read_dataset(f, base + "weight", path, at::kFloat);
      m.bias = read_dataset(f, base + "bias", path, at::kFloat);
      const int64_t in = kv == 0 ? C : 2 * C;
      if (m.weight.dim() != 2 || m.weight.size(0) != C || m.weight.size(1) != in || m.bias.dim() != 1 || m.bias.size(0) != C)
        throw error("{}: {} must be [{}, {}] with bias [{}], got {} and {}", path, base + "weight", C, in, C,
                    c10::str(m.weight.sizes()), c10::str(m.bias.sizes()));
      (kv == 0 ? p.key : p.value)[size_t(l)] = m;
    }
  }
  if (H5Lexists(f, "metrics", H5P_DEFAULT) > 0) {
    H gm(H5Gopen2(f, "metrics", H5P_DEFAULT), H5Gclose);
    std::vector<std::string> names;
    hsize_t idx = 0;
    H5Literate(gm, H5_INDEX_NAME, H5_ITER_INC, &idx,
               [](hid_t, const char* name, const LinkInfo*, void* d) -> herr_t {
                 static_cast<std::vector<std::string>*>(d)->push_back(name);
                 return 0;
               },
               &names);
    for (const auto& n : names) {
      auto t = read_dataset(gm, n, path, at::kDouble);
      p.metrics[n] = std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    }
  }
  return p;
}

void check_predictors(const PredictorSet& p, const nlohmann::json& expect, const std::string& path) {
  std::string diffs;
  for (auto it = expect.begin(); it != expect.end(); ++it) {
    if (!p.attrs.contains(it.key())) {
      diffs += fmt::format("\n  {}: missing in the file (this run: {})", it.key(), it.value().dump());
      continue;
    }
    const auto& have = p.attrs[it.key()];
    const bool equal = (have.is_number() && it.value().is_number()) ? have.get<double>() == it.value().get<double>()
                                                                     : have == it.value();
    if (!equal) diffs += fmt::format("\n  {}: file {} vs this run {}", it.key(), have.dump(), it.value().dump());
  }
  if (!diffs.empty())
    throw error("{}: predictors were fitted for another model shape or quantizer; recalibrate (kvx calibrate) "
                "with these settings. Differences:{}",
                path, diffs);
}

std::string describe_h5(const std::string& path) {
  H f(open_file(path), H5Fclose);
  std::string out = fmt::format("{}\n", path);
  auto attrs_of = [&](hid_t obj, const std::string& indent) {
    auto a = read_attrs(obj, path);
    for (auto it = a.begin(); it != a.end(); ++it)
      out += fmt::format("{}@{} = {}\n", indent, it.key(), it.value().dump());
  };
  attrs_of(f, "  ");
  std::function<void(hid_t, const std::string&, int)> walk = [&](hid_t g, const std::string& prefix, int depth) {
    std::vector<std::string> names;
    hsize_t idx = 0;
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx,
               [](hid_t, const char* name, const LinkInfo*, void* d) -> herr_t {
                 static_cast<std::vector<std::string>*>(d)->push_back(name);
                 return 0;
               },
               &names);
    // Numeric names (layers) in numeric order.
    std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
      const bool na = !a.empty() && std::all_of(a.begin(), a.end(), ::isdigit);
      const bool nb = !b.empty() && std::all_of(b.begin(), b.end(), ::isdigit);
      if (na && nb) return std::stoll(a) < std::stoll(b);
      return a < b;
    });
    const std::string indent(size_t(2 * depth + 2), ' ');
    for (const auto& n : names) {
      H o(H5Oopen(g, n.c_str(), H5P_DEFAULT), H5Oclose);
      if (H5Iget_type(o) == H5I_GROUP) {
        out += fmt::format("{}{}/\n", indent, prefix + n);
        attrs_of(o, indent + "  ");
        walk(o, prefix + n + "/", depth + 1);
      } else if (H5Iget_type(o) == H5I_DATASET) {
        H space(H5Dget_space(o), H5Sclose);
        H type(H5Dget_type(o), H5Tclose);
        const int nd = H5Sget_simple_extent_ndims(space);
        std::vector<hsize_t> dims(size_t(std::max(nd, 0)));
        H5Sget_simple_extent_dims(space, dims.data(), nullptr);
        std::string shape;
        for (auto d : dims) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        const char* tn = H5Tget_class(type) == H5T_FLOAT ? (H5Tget_size(type) == 8 ? "float64" : "float32") : "other";
        out += fmt::format("{}{} [{}] {}", indent, prefix + n, shape, tn);
        if (nd == 1 && dims[0] <= 64 && H5Tget_class(type) == H5T_FLOAT) {
          auto t = read_dataset(g, n, path, at::kDouble);
          std::string vals;
          for (int64_t i = 0; i < t.numel(); ++i) vals += fmt::format("{}{:.4g}", i ? ", " : "", t.data_ptr<double>()[i]);
          if (prefix.rfind("metrics", 0) == 0) out += " = [" + vals + "]";
        }
        out += "\n";
        attrs_of(o, indent + "  ");
      }
    }
  };
  walk(f, "", 0);
  return out;
}

}  // namespace kvx::higgs
