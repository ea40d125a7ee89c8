#include "core/report/table.h"

#include <fmt/format.h>

#include "core/common/error.h"

namespace kvx::report {
namespace {

// Display width in characters (UTF-8 continuation bytes do not count), so Δ pads right.
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string pad(const std::string& s, size_t w, bool right) {
  std::string fill(w > width(s) ? w - width(s) : 0, ' ');
  return right ? fill + s : s + fill;
}

std::string md(const Table& t) {
  std::vector<size_t> w(t.header.size(), 3);
  for (size_t c = 0; c < t.header.size(); ++c) w[c] = std::max(w[c], width(t.header[c]));
  for (const auto& r : t.cells)
    for (size_t c = 0; c < r.size(); ++c) w[c] = std::max(w[c], width(r[c]));
  auto esc = [](std::string s) {
    std::string o;
    for (char ch : s) o += ch == '|' ? std::string("\\|") : std::string(1, ch);
    return o;
  };
  std::string out = "|";
  for (size_t c = 0; c < t.header.size(); ++c) out += " " + pad(esc(t.header[c]), w[c], t.numeric[c]) + " |";
  out += "\n|";
  for (size_t c = 0; c < t.header.size(); ++c)
    out += " " + (t.numeric[c] ? std::string(w[c] - 1, '-') + ":" : std::string(w[c], '-')) + " |";
  out += "\n";
  for (const auto& r : t.cells) {
    out += "|";
    for (size_t c = 0; c < r.size(); ++c) out += " " + pad(esc(r[c]), w[c], t.numeric[c]) + " |";
    out += "\n";
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string csv(const Table& t) {
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    for (size_t c = 0; c < r.size(); ++c) out += (c ? "," : "") + csv_field(r[c]);
    out += "\n";
  };
  line(t.header);
  for (const auto& r : t.cells) line(r);
  return out;
}

std::string latex_escape(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    switch (c) {
      case '&': case '%': case '$': case '#': case '_': case '{': case '}': o += std::string("\\") + c; break;
      case '~': o += "\\textasciitilde{}"; break;
      case '^': o += "\\textasciicircum{}"; break;
      case '\\': o += "\\textbackslash{}"; break;
      default:
        if (s.compare(i, 2, "\xce\x94") == 0) {  // Δ
          o += "$\\Delta$";
          ++i;
        } else {
          o += c;
        }
    }
  }
  return o;
}

std::string latex(const Table& t) {
  std::string spec;
  for (bool n : t.numeric) spec += n ? "r" : "l";
  std::string out = "\\begin{tabular}{" + spec + "}\n\\toprule\n";
  auto line = [&](const std::vector<std::string>& r) {
    for (size_t c = 0; c < r.size(); ++c) out += (c ? " & " : "") + latex_escape(r[c]);
    out += " \\\\\n";
  };
  line(t.header);
  out += "\\midrule\n";
  for (const auto& r : t.cells) line(r);
  out += "\\bottomrule\n\\end{tabular}\n";
  return out;
}

std::string json_rows(const Table& t) {
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (const auto& r : t.raw) {
    nlohmann::ordered_json o = nlohmann::ordered_json::object();
    for (size_t c = 0; c < r.size(); ++c) o[t.header[c]] = nlohmann::ordered_json::parse(r[c].dump());
    arr.push_back(o);
  }
  return arr.dump(2) + "\n";
}

}  // namespace

std::string render(const Table& t, const std::string& format) {
  if (format == "md") return md(t);
  if (format == "csv") return csv(t);
  if (format == "latex") return latex(t);
  if (format == "json") return json_rows(t);
  throw error("unknown report format '{}' (expected md, csv, latex, json)", format);
}

}  // namespace kvx::report
