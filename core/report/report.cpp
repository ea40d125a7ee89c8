#include "core/report/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "core/common/error.h"
#include "core/report/svg_plot.h"
#include "core/report/table.h"

namespace kvx::report {
namespace {

using json = nlohmann::json;

struct Record {
  std::map<std::string, json> f;  // every field, metrics included
  const json& get(const std::string& k) const {
    static const json null;
    auto it = f.find(k);
    return it == f.end() ? null : it->second;
  }
};

const char* const kBase[] = {"model", "dataset", "protocol", "method", "label"};

void flatten_metrics(const json& m, const std::string& prefix, std::map<std::string, json>& out,
                     std::set<std::string>& names) {
  if (m.is_object()) {
    for (auto it = m.begin(); it != m.end(); ++it)
      flatten_metrics(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out, names);
  } else if (m.is_number() && !prefix.empty()) {
    out[prefix] = m;
    names.insert(prefix);
  }
}

// Total order used everywhere: null < numbers (by value) < strings < other.
int rank(const json& v) { return v.is_null() ? 0 : v.is_number() || v.is_boolean() ? 1 : v.is_string() ? 2 : 3; }
bool less_value(const json& a, const json& b) {
  int ra = rank(a), rb = rank(b);
  if (ra != rb) return ra < rb;
  if (ra == 1) {
    double x = a.is_boolean() ? a.get<bool>() : a.get<double>(), y = b.is_boolean() ? b.get<bool>() : b.get<double>();
    return x < y;
  }
  if (ra == 2) return a.get<std::string>() < b.get<std::string>();
  return a.dump() < b.dump();
}
bool same_value(const json& a, const json& b) { return !less_value(a, b) && !less_value(b, a); }
bool less_tuple(const std::vector<json>& a, const std::vector<json>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (less_value(a[i], b[i])) return true;
    if (less_value(b[i], a[i])) return false;
  }
  return false;
}

std::string text_of(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

bool parse_number(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end && *end == 0 && std::isfinite(out);
}

struct Filter {
  std::string field, op, value;
  bool matches(const json& v) const {
    if (op == "!=" && v.is_null()) return true;
    if (v.is_null()) return false;
    double want = 0;
    bool num = (v.is_number() || v.is_boolean()) && parse_number(value, want);
    if (op == "~") return text_of(v).find(value) != std::string::npos;
    if (num) {
      double have = v.is_boolean() ? v.get<bool>() : v.get<double>();
      if (op == "=") return have == want;
      if (op == "!=") return have != want;
      if (op == ">=") return have >= want;
      if (op == "<=") return have <= want;
      if (op == ">") return have > want;
      return have < want;
    }
    std::string have = text_of(v);
    if (op == "=") return have == value;
    if (op == "!=") return have != value;
    if (op == ">=") return have >= value;
    if (op == "<=") return have <= value;
    if (op == ">") return have > value;
    return have < value;
  }
};

Filter parse_filter(const std::string& expr) {
  static const char* const ops[] = {">=", "<=", "!=", "=", ">", "<", "~"};
  size_t best = std::string::npos;
  std::string op;
  for (const char* o : ops) {
    size_t p = expr.find(o);
    if (p != std::string::npos && (p < best || (p == best && std::string(o).size() > op.size()))) {
      best = p;
      op = o;
    }
  }
  if (best == std::string::npos || best == 0)
    throw error("--filter '{}': expected FIELD OP VALUE with OP one of = != >= <= > < ~", expr);
  auto trim = [](std::string s) {
    while (!s.empty() && s.back() == ' ') s.pop_back();
    while (!s.empty() && s.front() == ' ') s.erase(s.begin());
    return s;
  };
  return {trim(expr.substr(0, best)), op, trim(expr.substr(best + op.size()))};
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

std::vector<std::string> split_commas(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const auto& s : in) {
    size_t start = 0;
    while (start <= s.size()) {
      size_t c = s.find(',', start);
      std::string part = s.substr(start, c == std::string::npos ? std::string::npos : c - start);
      if (!part.empty()) out.push_back(part);
      if (c == std::string::npos) break;
      start = c + 1;
    }
  }
  return out;
}

class Builder {
 public:
  Builder(const std::vector<ResultRow>& rows, const ReportOptions& opt) : opt_(opt) {
    for (const auto& r : rows) {
      Record rec;
      rec.f["model"] = r.model.empty() ? json() : json(r.model);
      rec.f["dataset"] = r.dataset.empty() ? json() : json(r.dataset);
      rec.f["protocol"] = r.protocol;
      rec.f["method"] = r.method;
      rec.f["label"] = r.label;
      for (auto it = r.params.begin(); it != r.params.end(); ++it) {
        rec.f[it.key()] = it.value();
        params_.insert(it.key());
      }
      flatten_metrics(r.metrics, "", rec.f, metric_names_);
      records_.push_back(std::move(rec));
    }
  }

  ReportOutput build() {
    apply_filters();
    ReportOutput out;
    out.results = records_.size();
    choose_metrics();
    if (!opt_.pareto.empty()) keep_pareto_envelope();
    choose_rows();
    Table t = opt_.cols.empty() ? long_table() : pivot_table();
    out.text = render(t, opt_.format);
    if (!opt_.plot.empty()) out.svg = plot();
    return out;
  }

 private:
  bool known_field(const std::string& f) const {
    for (const char* b : kBase)
      if (f == b) return true;
    return params_.count(f) || metric_names_.count(f);
  }
  std::string known_list() const {
    std::vector<std::string> v(std::begin(kBase), std::end(kBase));
    v.insert(v.end(), params_.begin(), params_.end());
    v.insert(v.end(), metric_names_.begin(), metric_names_.end());
    return join(v);
  }
  void check_field(const std::string& f, const char* what) const {
    if (!known_field(f))
      throw error("{}: unknown field '{}' (known: {})", what, f, records_.empty() && params_.empty() ? "none: no results" : known_list());
  }

  void apply_filters() {
    std::vector<Filter> fs;
    for (const auto& e : opt_.filters) {
      Filter f = parse_filter(e);
      check_field(f.field, "--filter");
      fs.push_back(f);
    }
    std::vector<Record> kept;
    for (auto& r : records_) {
      bool ok = true;
      for (const auto& f : fs) ok = ok && f.matches(r.get(f.field));
      if (ok) kept.push_back(std::move(r));
    }
    records_ = std::move(kept);
  }

  void choose_metrics() {
    metrics_ = split_commas(opt_.metrics);
    for (const auto& m : metrics_)
      if (!metric_names_.count(m) && !metric_names_.empty())  // no results yet: nothing to check against
        throw error("--metric: no metric named '{}' (metrics: {})", m,
                    metric_names_.empty() ? "none" : join({metric_names_.begin(), metric_names_.end()}));
    if (metrics_.empty()) {
      // Only metrics some selected result has (a sweep may mix protocols).
      for (const auto& m : metric_names_)
        for (const auto& r : records_)
          if (!r.get(m).is_null()) {
            metrics_.push_back(m);
            break;
          }
    }
    if (!opt_.cols.empty() && metrics_.size() != 1)
      throw error("a pivot table (--cols) shows one metric: pass --metric (metrics: {})", join(metrics_));
    if (!opt_.baseline.empty()) {
      auto eq = opt_.baseline.find('=');
      if (eq == std::string::npos || eq == 0)
        throw error("--baseline '{}': expected FIELD=VALUE, e.g. method=fp16", opt_.baseline);
      base_field_ = opt_.baseline.substr(0, eq);
      base_value_ = opt_.baseline.substr(eq + 1);
      check_field(base_field_, "--baseline");
      if (metric_names_.count(base_field_)) throw error("--baseline: '{}' is a metric, not a field", base_field_);
    }
  }

  struct Axis {
    std::string metric;
    bool maximize = false;
    double better(const Record& r) const { return (maximize ? 1 : -1) * r.get(metric).get<double>(); }
  };
  Axis parse_axis(std::string spec) const {
    Axis a;
    const auto colon = spec.rfind(':');
    std::string dir;
    if (colon != std::string::npos) dir = spec.substr(colon + 1), spec = spec.substr(0, colon);
    if (!metric_names_.count(spec))
      throw error("--pareto: no metric named '{}' (metrics: {})", spec,
                  metric_names_.empty() ? "none" : join({metric_names_.begin(), metric_names_.end()}));
    a.metric = spec;
    if (dir == "max" || dir == "min") {
      a.maximize = dir == "max";
    } else if (!dir.empty()) {
      throw error("--pareto: '{}:{}': the direction must be min or max", spec, dir);
    } else {
      for (const char* up : {"acc", "rouge", "agreement", "exact", "compression_ratio", "retained", "tok_s", "tokens_per_s"})
        a.maximize = a.maximize || spec.find(up) != std::string::npos;
    }
    return a;
  }

  // Replaces records_ by the non-dominated ones per group (first row field); all_ keeps every
  // point for the plot.
  void keep_pareto_envelope() {
    if (!opt_.cols.empty()) throw error("--pareto shows a long table: drop --cols");
    const auto specs = split_commas({opt_.pareto});
    if (specs.size() != 2) throw error("--pareto '{}': expected two metrics X,Y (e.g. bpv,ppl)", opt_.pareto);
    px_ = parse_axis(specs[0]);
    py_ = parse_axis(specs[1]);
    group_ = split_commas(opt_.rows).empty() ? "method" : split_commas(opt_.rows)[0];
    check_field(group_, "--rows");
    if (opt_.metrics.empty()) metrics_.clear();  // default: just the two axes
    for (const Axis* a : {&py_, &px_})
      if (std::find(metrics_.begin(), metrics_.end(), a->metric) == metrics_.end())
        metrics_.insert(metrics_.begin(), a->metric);
    std::vector<Record> all;
    for (auto& r : records_)
      if (r.get(px_.metric).is_number() && r.get(py_.metric).is_number()) all.push_back(std::move(r));
    std::vector<Record> front;
    for (const auto& r : all) {
      bool dominated = false;
      for (const auto& q : all) {
        if (!same_value(q.get(group_), r.get(group_))) continue;
        const bool ge = px_.better(q) >= px_.better(r) && py_.better(q) >= py_.better(r);
        dominated = dominated || (ge && (px_.better(q) > px_.better(r) || py_.better(q) > py_.better(r)));
      }
      if (!dominated) front.push_back(r);
    }
    all_ = std::move(all);
    records_ = std::move(front);
  }

  void choose_rows() {
    rows_ = split_commas(opt_.rows);
    if (rows_.empty()) rows_ = {"method"};
    for (const auto& r : rows_) check_field(r, "--rows");
    if (!opt_.cols.empty()) check_field(opt_.cols, "--cols");
    // Append varying fields that the chosen ones do not determine.
    std::vector<std::string> candidates = {"model", "dataset", "protocol", "method"};
    candidates.insert(candidates.end(), params_.begin(), params_.end());
    for (const auto& c : candidates) {
      if (std::find(rows_.begin(), rows_.end(), c) != rows_.end() || c == opt_.cols) continue;
      if (!determined(c)) rows_.push_back(c);
    }
  }

  std::vector<json> key_of(const Record& r, const std::vector<std::string>& fields) const {
    std::vector<json> k;
    for (const auto& f : fields) k.push_back(r.get(f));
    return k;
  }
  // Is `field` a function of rows_ (+ cols) over the selected records?
  bool determined(const std::string& field) const {
    std::vector<std::string> by = rows_;
    if (!opt_.cols.empty()) by.push_back(opt_.cols);
    std::map<std::string, json> seen;  // row key (serialized) -> the field's value
    for (const auto& r : records_) {
      auto [it, fresh] = seen.emplace(json(key_of(r, by)).dump(), r.get(field));
      if (!fresh && !same_value(it->second, r.get(field))) return false;
    }
    return true;
  }

  std::string fmt_metric(const json& v) const {
    if (v.is_null()) return "-";
    if (v.is_number_integer() || v.is_number_unsigned()) return v.dump();
    return fmt::format("{:.{}f}", v.get<double>(), opt_.precision);
  }
  std::string fmt_delta(double d) const { return fmt::format("{:+.{}f}", d, opt_.precision); }
  static std::string fmt_pct(double p) { return fmt::format("{:+.2f}%", p); }

  // The baseline result for r: baseline field = value, and every other displayed field equal
  // to r's where the baseline has it (fp16 has no key.bits, so it is every kvq row's baseline).
  const Record* baseline_for(const Record& r) const {
    std::vector<std::string> match;
    for (const auto& f : rows_)
      if (f != base_field_) match.push_back(f);
    if (!opt_.cols.empty() && opt_.cols != base_field_) match.push_back(opt_.cols);
    const Record* found = nullptr;
    for (const auto& b : records_) {
      if (text_of(b.get(base_field_)) != base_value_) continue;
      bool same = true;
      for (const auto& f : match) same = same && (b.get(f).is_null() || same_value(b.get(f), r.get(f)));
      if (!same) continue;
      if (found)
        throw error("--baseline {}: several results match one row; narrow it with --filter or add --rows fields",
                    opt_.baseline);
      found = &b;
    }
    return found;
  }

  void sort_records() {
    std::vector<std::string> by = rows_;
    if (!opt_.cols.empty()) by.push_back(opt_.cols);
    std::stable_sort(records_.begin(), records_.end(),
                     [&](const Record& a, const Record& b) { return less_tuple(key_of(a, by), key_of(b, by)); });
  }

  Table long_table() {
    sort_records();
    Table t;
    for (const auto& f : rows_) {
      t.header.push_back(f);
      t.numeric.push_back(false);
    }
    for (const auto& m : metrics_) {
      t.header.push_back(m);
      t.numeric.push_back(true);
      if (!base_field_.empty()) {
        t.header.push_back("Δ " + m);
        t.header.push_back("Δ% " + m);
        t.numeric.push_back(true);
        t.numeric.push_back(true);
      }
    }
    for (const auto& r : records_) {
      std::vector<std::string> cells;
      std::vector<json> raw;
      for (const auto& f : rows_) {
        cells.push_back(text_of(r.get(f)));
        raw.push_back(r.get(f));
      }
      const Record* b = base_field_.empty() ? nullptr : baseline_for(r);
      for (const auto& m : metrics_) {
        const json& v = r.get(m);
        cells.push_back(fmt_metric(v));
        raw.push_back(v);
        if (base_field_.empty()) continue;
        add_delta(v, b ? b->get(m) : json(), cells, raw, true);
      }
      t.cells.push_back(std::move(cells));
      t.raw.push_back(std::move(raw));
    }
    return t;
  }

  void add_delta(const json& v, const json& base, std::vector<std::string>& cells, std::vector<json>& raw,
                 bool absolute) const {
    if (v.is_number() && base.is_number()) {
      double d = v.get<double>() - base.get<double>();
      if (absolute) {
        cells.push_back(fmt_delta(d));
        raw.push_back(d);
      }
      double b = base.get<double>();
      if (b != 0) {
        cells.push_back(fmt_pct(100.0 * d / b));
        raw.push_back(100.0 * d / b);
      } else {
        cells.push_back("-");
        raw.push_back(nullptr);
      }
    } else {
      if (absolute) {
        cells.push_back("-");
        raw.push_back(nullptr);
      }
      cells.push_back("-");
      raw.push_back(nullptr);
    }
  }

  Table pivot_table() {
    sort_records();
    const std::string& metric = metrics_[0];
    std::vector<json> col_values;
    for (const auto& r : records_) {
      const json& c = r.get(opt_.cols);
      bool have = false;
      for (const auto& x : col_values) have = have || same_value(x, c);
      if (!have) col_values.push_back(c);
    }
    std::sort(col_values.begin(), col_values.end(), less_value);
    // Row keys in sorted order, each with one record per column value.
    std::vector<std::pair<std::vector<json>, std::vector<const Record*>>> rows;
    for (const auto& r : records_) {
      auto k = key_of(r, rows_);
      if (rows.empty() || less_tuple(rows.back().first, k) || less_tuple(k, rows.back().first))
        rows.emplace_back(k, std::vector<const Record*>(col_values.size(), nullptr));
      size_t ci = 0;
      while (!same_value(col_values[ci], r.get(opt_.cols))) ++ci;
      if (rows.back().second[ci])
        throw error("several results fall into one cell (row {}, {}={}); add a field to --rows or --filter",
                    text_of(json(k)), opt_.cols, text_of(col_values[ci]));
      rows.back().second[ci] = &r;
    }
    Table t;
    for (const auto& f : rows_) {
      t.header.push_back(f);
      t.numeric.push_back(false);
    }
    for (const auto& c : col_values) {
      t.header.push_back(opt_.cols + "=" + text_of(c));
      t.numeric.push_back(true);
      if (!base_field_.empty()) {
        t.header.push_back("Δ% " + opt_.cols + "=" + text_of(c));
        t.numeric.push_back(true);
      }
    }
    for (const auto& [k, recs] : rows) {
      std::vector<std::string> cells;
      std::vector<json> raw;
      for (const auto& v : k) {
        cells.push_back(text_of(v));
        raw.push_back(v);
      }
      for (const Record* r : recs) {
        json v = r ? r->get(metric) : json();
        cells.push_back(fmt_metric(v));
        raw.push_back(v);
        if (base_field_.empty()) continue;
        const Record* b = r ? baseline_for(*r) : nullptr;
        add_delta(v, b ? b->get(metric) : json(), cells, raw, false);
      }
      t.cells.push_back(std::move(cells));
      t.raw.push_back(std::move(raw));
    }
    return t;
  }

  std::string pareto_plot() const {
    std::vector<std::string> groups;
    for (const auto& r : all_) {
      const std::string g = text_of(r.get(group_));
      if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
    }
    std::sort(groups.begin(), groups.end());
    std::vector<Series> series;
    for (size_t i = 0; i < groups.size(); ++i) {
      Series pts{groups[i] + " (all)", {}, false, int(i)}, env{groups[i] + " envelope", {}, true, int(i)};
      for (const auto& r : all_)
        if (text_of(r.get(group_)) == groups[i])
          pts.points.emplace_back(r.get(px_.metric).get<double>(), r.get(py_.metric).get<double>());
      for (const auto& r : records_)
        if (text_of(r.get(group_)) == groups[i])
          env.points.emplace_back(r.get(px_.metric).get<double>(), r.get(py_.metric).get<double>());
      std::sort(pts.points.begin(), pts.points.end());
      std::sort(env.points.begin(), env.points.end());
      series.push_back(std::move(pts));
      series.push_back(std::move(env));
    }
    return svg_line_chart(py_.metric + " vs " + px_.metric + " (Pareto envelope)", px_.metric, py_.metric, series);
  }

  // y = the first row field, x = cols (or --x); one panel per value of the other row fields.
  std::string heatmap_plot() const {
    const std::string x = !opt_.x.empty() ? opt_.x : opt_.cols;
    if (x.empty()) throw error("--plot-kind heatmap needs an x field: --cols FIELD or --x FIELD");
    check_field(x, "--x");
    const std::string& metric = metrics_.at(0);
    const std::string y = rows_.at(0);
    std::vector<std::string> panel_fields(rows_.begin() + 1, rows_.end());
    std::vector<json> xs, ys;
    std::vector<std::string> panel_names;
    auto add = [](std::vector<json>& v, const json& e) {
      for (const auto& have : v)
        if (same_value(have, e)) return;
      v.push_back(e);
    };
    auto panel_of = [&](const Record& r) {
      std::vector<std::string> parts;
      for (const auto& f : panel_fields) parts.push_back(f + "=" + text_of(r.get(f)));
      return parts.empty() ? metric : join(parts, " ");
    };
    for (const auto& r : records_) {
      add(xs, r.get(x));
      add(ys, r.get(y));
      const std::string p = panel_of(r);
      if (std::find(panel_names.begin(), panel_names.end(), p) == panel_names.end()) panel_names.push_back(p);
    }
    std::sort(xs.begin(), xs.end(), less_value);
    std::sort(ys.begin(), ys.end(), less_value);
    std::sort(panel_names.begin(), panel_names.end());
    std::vector<HeatmapPanel> panels;
    for (const auto& name : panel_names) {
      HeatmapPanel p;
      p.name = name;
      for (const auto& v : xs) p.x_labels.push_back(text_of(v));
      for (const auto& v : ys) p.y_labels.push_back(text_of(v));
      p.values.assign(ys.size(), std::vector<double>(xs.size(), std::nan("")));
      for (const auto& r : records_) {
        if (panel_of(r) != name || !r.get(metric).is_number()) continue;
        size_t xi = 0, yi = 0;
        while (!same_value(xs[xi], r.get(x))) ++xi;
        while (!same_value(ys[yi], r.get(y))) ++yi;
        if (!std::isnan(p.values[yi][xi]))
          throw error("--plot-kind heatmap: several results fall into one cell ({}={}, {}={}); add a field to --rows",
                      y, text_of(ys[yi]), x, text_of(xs[xi]));
        p.values[yi][xi] = r.get(metric).get<double>();
      }
      panels.push_back(std::move(p));
    }
    return svg_heatmap(metric + " by " + y + " and " + x, x, y, panels);
  }

  std::string plot() {
    if (!opt_.pareto.empty()) return pareto_plot();
    if (opt_.plot_kind == "heatmap") return heatmap_plot();
    if (opt_.plot_kind != "line") throw error("--plot-kind '{}': expected line or heatmap", opt_.plot_kind);
    std::string x = !opt_.x.empty() ? opt_.x : opt_.cols;
    if (x.empty()) throw error("--plot needs a numeric x field: --cols FIELD or --x FIELD");
    check_field(x, "--x");
    const std::string& metric = metrics_.at(0);
    std::vector<std::string> series_fields;
    for (const auto& f : rows_)
      if (f != x) series_fields.push_back(f);
    std::map<std::string, Series> by_name;
    std::vector<std::string> order;
    for (const auto& r : records_) {
      const json& xv = r.get(x);
      const json& yv = r.get(metric);
      if (xv.is_null() || yv.is_null()) continue;
      if (!xv.is_number()) throw error("--plot: x field '{}' has a non-numeric value {}", x, xv.dump());
      std::vector<std::string> parts;
      for (const auto& f : series_fields)
        if (!r.get(f).is_null()) parts.push_back(series_fields.size() > 1 ? f + "=" + text_of(r.get(f)) : text_of(r.get(f)));
      std::string name = parts.empty() ? metric : join(parts, " ");
      if (!by_name.count(name)) {
        order.push_back(name);
        by_name[name].name = name;
      }
      by_name[name].points.emplace_back(xv.get<double>(), yv.get<double>());
    }
    std::vector<Series> series;
    std::sort(order.begin(), order.end());
    for (const auto& n : order) {
      auto s = by_name[n];
      std::sort(s.points.begin(), s.points.end());
      series.push_back(std::move(s));
    }
    return svg_line_chart(metric + " vs " + x, x, metric, series);
  }

  const ReportOptions& opt_;
  std::vector<Record> records_;
  std::set<std::string> params_, metric_names_;
  std::vector<std::string> metrics_, rows_;
  std::string base_field_, base_value_;
  Axis px_, py_;               // --pareto axes
  std::string group_;          // --pareto: envelope per value of this field
  std::vector<Record> all_;    // --pareto: every point with both metrics
};

}  // namespace

ReportOutput build_report(const std::vector<ResultRow>& rows, const ReportOptions& opt) {
  return Builder(rows, opt).build();
}

ReportOutput run_report(const std::string& db, const ReportOptions& opt) {
  Store store(db, Store::Access::ReadOnly);
  if (opt.sweep && !store.find_sweep(*opt.sweep)) {
    std::vector<std::string> names;
    for (const auto& s : store.sweeps()) names.push_back(s.name);
    throw error("{}: no sweep named '{}' (sweeps: {})", db, *opt.sweep, names.empty() ? "none" : join(names));
  }
  ReportOutput out = build_report(store.results(opt.sweep), opt);
  if (!opt.plot.empty()) {
    std::ofstream f(opt.plot, std::ios::binary);
    if (!f) throw error("{}: cannot write the plot", opt.plot);
    f << out.svg;
  }
  return out;
}

}  // namespace kvx::report
