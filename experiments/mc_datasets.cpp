#include "experiments/mc_datasets.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>
#include <unordered_set>

#include "core/common/error.h"

namespace kvx {
namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw error("{}: cannot open the file", path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string str_field(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string())
    throw error("{}: expected a string field '{}'", where, key);
  return j[key].get<std::string>();
}

nlohmann::json parse_json(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw error("{}: invalid JSON ({})", where, e.what());
  }
}

bool is_blank(const std::string& s) {
  for (unsigned char c : s)
    if (!std::isspace(c)) return false;
  return true;
}

std::string strip(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size())
    out += s.substr(pos, hit - pos) + to;
  return out + s.substr(pos);
}

std::vector<McQuestion> load_piqa(const std::string& path, std::string labels_path) {
  if (labels_path.empty()) {
    const std::string ext = ".jsonl";
    if (path.size() < ext.size() || path.compare(path.size() - ext.size(), ext.size(), ext) != 0)
      throw error("{}: PIQA questions must be a .jsonl file (labels are found as <stem>-labels.lst)", path);
    labels_path = path.substr(0, path.size() - ext.size()) + "-labels.lst";
  }
  std::vector<McQuestion> out;
  const auto lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (is_blank(lines[i])) continue;
    const std::string where = path + ":" + std::to_string(i + 1);
    auto j = parse_json(lines[i], where);
    McQuestion q;
    q.context = "Question: " + str_field(j, "goal", where) + "\nAnswer:";
    q.choices = {str_field(j, "sol1", where), str_field(j, "sol2", where)};
    q.where = where;
    out.push_back(std::move(q));
  }
  std::vector<int> labels;
  const auto lab = read_lines(labels_path);
  for (size_t i = 0; i < lab.size(); ++i) {
    const std::string s = strip(lab[i]);
    if (s.empty()) continue;
    if (s != "0" && s != "1") throw error("{}:{}: expected a label 0 or 1, got '{}'", labels_path, i + 1, s);
    labels.push_back(s == "1");
  }
  if (labels.size() != out.size())
    throw error("{}: {} labels for {} questions in {}", labels_path, labels.size(), out.size(), path);
  for (size_t i = 0; i < out.size(); ++i) out[i].label = labels[i];
  return out;
}

std::vector<McQuestion> load_hellaswag(const std::string& path) {
  std::vector<McQuestion> out;
  const auto lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (is_blank(lines[i])) continue;
    const std::string where = path + ":" + std::to_string(i + 1);
    auto j = parse_json(lines[i], where);
    McQuestion q;
    q.where = where;
    const std::string ctx = str_field(j, "ctx_a", where) + " " + python_capitalize(str_field(j, "ctx_b", where));
    q.context = hellaswag_clean(str_field(j, "activity_label", where) + ": " + ctx);
    if (!j.contains("endings") || !j["endings"].is_array() || j["endings"].empty())
      throw error("{}: expected 'endings' to be a non-empty list of strings", where);
    for (const auto& e : j["endings"]) {
      if (!e.is_string()) throw error("{}: expected 'endings' to be a list of strings", where);
      q.choices.push_back(hellaswag_clean(e.get<std::string>()));
    }
    const auto& l = j.contains("label") ? j["label"] : nlohmann::json();
    if (l.is_number_integer()) q.label = l.get<int>();
    else if (l.is_string() && !l.get<std::string>().empty() && std::isdigit(static_cast<unsigned char>(l.get<std::string>()[0])))
      q.label = std::stoi(l.get<std::string>());
    else throw error("{}: expected 'label' to be an integer (test splits ship without labels)", where);
    if (q.label < 0 || q.label >= int(q.choices.size()))
      throw error("{}: 'label' {} is not a valid index into {} endings", where, q.label, q.choices.size());
    out.push_back(std::move(q));
  }
  return out;
}

std::vector<McQuestion> load_mathqa(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw error("{}: cannot open the file", path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto arr = parse_json(ss.str(), path);
  if (!arr.is_array()) throw error("{}: expected a JSON array of MathQA problems", path);
  std::vector<McQuestion> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string where = path + "[" + std::to_string(i) + "]";
    const auto& j = arr[i];
    McQuestion q;
    q.where = where;
    q.context = "Question: " + str_field(j, "Problem", where) + "\nAnswer:";
    if (j.contains("options") && j["options"].is_array()) {
      for (const auto& o : j["options"]) {
        if (!o.is_string()) throw error("{}: expected 'options' to be a string or a list of strings", where);
        std::string s = strip(o.get<std::string>());
        if (s.size() < 4 || s[1] != ' ' || s[2] != ')') throw error("{}: option '{}' does not start with 'x ) '", where, s);
        q.choices.push_back(strip(s.substr(4)));
      }
    } else {
      q.choices = parse_mathqa_options(str_field(j, "options", where));
    }
    if (q.choices.size() != 5)
      throw error("{}: expected five options a-e in 'options', found {}", where, q.choices.size());
    const std::string c = strip(str_field(j, "correct", where));
    if (c.size() != 1 || c[0] < 'a' || c[0] > 'e') throw error("{}: 'correct' must be one of a-e, got '{}'", where, c);
    q.label = c[0] - 'a';
    out.push_back(std::move(q));
  }
  return out;
}

// CPython's MT19937 (init_by_array seeding, genrand_uint32).
class PyMt {
 public:
  explicit PyMt(uint32_t seed) {
    init(19650218u);
    const uint32_t key = seed;
    int i = 1, j = 0;
    for (int k = 624; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key + uint32_t(j);
      ++i;
      ++j;
      if (i >= 624) { mt_[0] = mt_[623]; i = 1; }
      if (j >= 1) j = 0;
    }
    for (int k = 623; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - uint32_t(i);
      ++i;
      if (i >= 624) { mt_[0] = mt_[623]; i = 1; }
    }
    mt_[0] = 0x80000000u;
    idx_ = 624;
  }
  uint32_t next() {
    if (idx_ >= 624) twist();
    uint32_t y = mt_[idx_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
  }
  // _randbelow(n) for n < 2^32: rejection sampling on getrandbits(n.bit_length()).
  int64_t below(int64_t n) {
    int k = 0;
    while ((int64_t(1) << k) <= n) ++k;
    for (;;) {
      const int64_t r = k == 0 ? 0 : int64_t(next() >> (32 - k));
      if (r < n) return r;
    }
  }

 private:
  void init(uint32_t s) {
    mt_[0] = s;
    for (int i = 1; i < 624; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + uint32_t(i);
  }
  void twist() {
    for (int i = 0; i < 624; ++i) {
      const uint32_t y = (mt_[i] & 0x80000000u) | (mt_[(i + 1) % 624] & 0x7fffffffu);
      mt_[i] = mt_[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    idx_ = 0;
  }
  uint32_t mt_[624];
  int idx_ = 624;
};

}  // namespace

std::string python_capitalize(const std::string& s) {
  std::string out = s;
  for (size_t i = 0; i < out.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(out[i]);
    if (c < 128) out[i] = char(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return out;
}

std::string hellaswag_clean(const std::string& s) {
  std::string t = replace_all(strip(s), " [title]", ". ");
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '[') {
      const size_t close = t.find(']', i + 1);
      if (close != std::string::npos) {  // re.sub("\\[.*?\\]", "", text)
        i = close;
        continue;
      }
    }
    out += t[i];
  }
  return replace_all(out, "  ", " ");
}

std::vector<std::string> parse_mathqa_options(const std::string& options) {
  static const std::regex re(R"([abcd] \) .*?, |e \) .*?$)");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(options.begin(), options.end(), re); it != std::sregex_iterator(); ++it) {
    std::string c = it->str().substr(4);
    while (!c.empty() && (c.back() == ' ' || c.back() == ',')) c.pop_back();
    out.push_back(c);
  }
  return out;
}

std::vector<int64_t> python_sample(int64_t n, int64_t k, uint32_t seed) {
  if (k < 0 || k > n) throw error("python_sample: sample of {} larger than the population of {}", k, n);
  PyMt rng(seed);
  std::vector<int64_t> result(k);
  int64_t setsize = 21;
  if (k > 5) setsize += int64_t(std::pow(4.0, std::ceil(std::log(double(k) * 3) / std::log(4.0))));
  if (n <= setsize) {
    std::vector<int64_t> pool(n);
    for (int64_t i = 0; i < n; ++i) pool[i] = i;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = rng.below(n - i);
      result[i] = pool[j];
      pool[j] = pool[n - i - 1];
    }
  } else {
    std::unordered_set<int64_t> selected;
    for (int64_t i = 0; i < k; ++i) {
      int64_t j = rng.below(n);
      while (selected.count(j)) j = rng.below(n);
      selected.insert(j);
      result[i] = j;
    }
  }
  return result;
}

std::string mc_format_of(const std::string& path, const std::string& format) {
  if (format != "auto") {
    if (format != "piqa" && format != "hellaswag" && format != "mathqa")
      throw error("multiple_choice: format '{}' (expected auto, piqa, hellaswag or mathqa)", format);
    return format;
  }
  std::string lower;
  for (char c : path) lower += char(std::tolower(static_cast<unsigned char>(c)));
  const std::string base = lower.substr(lower.find_last_of('/') == std::string::npos ? 0 : lower.find_last_of('/') + 1);
  for (const char* f : {"piqa", "hellaswag", "mathqa"})
    if (base.find(f) != std::string::npos) return f;
  throw error("{}: cannot tell the multiple-choice format from the file name; set format: piqa, hellaswag "
              "or mathqa", path);
}

std::vector<McQuestion> load_mc_dataset(const std::string& path, const std::string& format,
                                        const std::string& labels_path) {
  const std::string f = mc_format_of(path, format);
  std::vector<McQuestion> q = f == "piqa" ? load_piqa(path, labels_path)
                              : f == "hellaswag" ? load_hellaswag(path) : load_mathqa(path);
  if (q.empty()) throw error("{}: no questions", path);
  return q;
}

}  // namespace kvx
