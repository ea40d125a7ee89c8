// Fuzzing the parsers of outside input (issue 13): safetensors (header and body), its sharded
// index, config.json, tokenizer.json, YAML sweep configs and HDF5 predictor files. Each case is
// a random mutation or truncation of a valid seed (byte flips, interesting bytes, inserted,
// deleted and repeated ranges, truncation, and for text formats replaced numbers / strings /
// JSON nodes), loaded in a forked child:
//   - loads, or throws kvx::Error whose message names the file: fine;
//   - any other exception (std::bad_alloc, c10::Error, nlohmann errors ...): failure;
//   - a signal (crash, sanitizer report): failure; running past the per-case timeout: hang;
//   - allocations are capped (RLIMIT_AS = current + 512 MiB, not under ASan): an allocation
//     not bounded by the file's size fails as bad_alloc / c10::Error.
// Cases: about 4000 by default, 5x with KVX_RELIABILITY_LONG=1; KVX_FUZZ_CASES=N overrides the
// total, KVX_FUZZ_SEED the seed. Prints per-format counts and "reliability: fuzz: ...".
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/higgs/predictor_file.h"
#include "tests/reliability/fuzz_targets.h"
#include "tests/reliability/reliability_util.h"
#include "core/common/remove_tree.h"

namespace fs = std::filesystem;
using kvx::fuzz::Format;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

std::string src() { return KVX_SOURCE_DIR; }

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
#define KVX_FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVX_FUZZ_ASAN 1
#endif
#endif
#ifdef KVX_FUZZ_ASAN
// Torch and HDF5 keep global allocations to process exit; leak reports of them are noise here.
extern "C" const char* __asan_default_options() { return "detect_leaks=0:abort_on_error=0"; }
#endif

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A small safetensors file: every loadable dtype, an unloadable one, metadata, a 0-d and an
// empty tensor.
std::string synthetic_safetensors() {
  nlohmann::json h;
  h["__metadata__"] = {{"format", "pt"}};
  std::string body;
  auto add = [&](const std::string& name, const std::string& dtype, std::vector<int64_t> shape, size_t esize) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    const size_t begin = body.size();
    for (size_t i = 0; i < n * esize; ++i) body.push_back(char((i * 37 + 11) & 0x3f));
    h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, body.size()}}};
  };
  add("model.embed_tokens.weight", "F32", {4, 3}, 4);
  add("model.norm.weight", "BF16", {3}, 2);
  add("lm_head.weight", "F16", {2, 2}, 2);
  add("scalar", "F32", {}, 4);
  add("empty", "F16", {0, 5}, 2);
  add("ids", "I64", {2}, 8);
  const std::string hs = h.dump();
  return u64le(hs.size()) + hs + body;
}

// tiny-gpt2's real header over a body cut to 4 KiB, the header rewritten to fit: real names,
// shapes and dtypes without copying 12 MB per case.
std::string real_header_safetensors() {
  const std::string f = slurp(src() + "/data/models/tiny-gpt2/model.safetensors");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | uint8_t(f[size_t(i)]);
  auto h = nlohmann::json::parse(f.substr(8, hlen));
  std::string body;
  nlohmann::json out;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      out[it.key()] = it.value();
      continue;
    }
    const uint64_t b = it.value()["data_offsets"][0], e = it.value()["data_offsets"][1];
    if (e - b > 512) continue;  // keep the small tensors (biases, norms) with their real bytes
    const size_t nb = body.size();
    body += f.substr(8 + hlen + b, e - b);
    out[it.key()] = it.value();
    out[it.key()]["data_offsets"] = {nb, body.size()};
  }
  const std::string hs = out.dump();
  return u64le(hs.size()) + hs + body;
}

std::string synthetic_hdf5(const std::string& dir) {
  kvx::higgs::PredictorSet p;
  const int64_t L = 3, C = 4;
  p.attrs = {{"format", "kvx-aqua-predictors"}, {"n_layers", L}, {"channels", C}, {"d", 2}, {"n", 16},
             {"grid_hash", "abc123"}, {"percdamp", 0.01}};
  p.key.resize(L);
  p.value.resize(L);
  for (int64_t l = 1; l < L; ++l) {
    p.key[size_t(l)].weight = at::arange(C * C, at::kFloat).reshape({C, C}) / 10;
    p.key[size_t(l)].bias = at::ones({C});
    p.value[size_t(l)].weight = at::arange(C * 2 * C, at::kFloat).reshape({C, 2 * C}) / 7;
    p.value[size_t(l)].bias = at::zeros({C});
  }
  p.metrics["rel_mse_key"] = {0.1, 0.2, 0.3};
  p.metrics["bits_value"] = {2.0, 2.5, 3.0};
  const std::string path = dir + "/seed.h5";
  // Written in a child so that the cases, forked from this process, start with libhdf5 as
  // fresh as in kvx.
  pid_t pid = fork();
  if (pid == 0) {
    try {
      kvx::higgs::write_predictor_file(path, p, true);
    } catch (...) {
      _exit(1);
    }
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return slurp(path);
}

// ----- mutations -----
struct Mutator {
  std::mt19937_64 rng;
  size_t below(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng); }

  static const std::vector<std::string>& numbers() {
    static const std::vector<std::string> v = {"-1", "0", "1", "2", "-9223372036854775808", "9223372036854775807",
                                               "18446744073709551615", "18446744073709551616", "4294967296",
                                               "65536", "1e308", "1e999", "-1e999", "0.5", "1e-320", "NaN", "3.0",
                                               "99999999999999999999999", "-0"};
    return v;
  }
  std::string interesting_byte() {
    static const char b[] = {'\0', '\xff', '"', '{', '}', '[', ']', ':', ',', '9', '-', '\\', '\n', '\x80', '\xc3',
                             '#', '&', '*', '!', '\'', ' ', '\t', '%', '|', '>'};
    return std::string(1, b[below(sizeof(b))]);
  }
  // One byte-level mutation.
  void bytes(std::string& s) {
    switch (below(8)) {
      case 0:  // flip bits
        if (!s.empty())
          for (int i = 0, n = 1 + int(below(8)); i < n; ++i) s[below(s.size())] ^= char(1 << below(8));
        break;
      case 1:  // interesting byte
        if (!s.empty()) s[below(s.size())] = interesting_byte()[0];
        break;
      case 2:  // truncate
        s.resize(below(s.size() + 1));
        break;
      case 3: {  // delete a range
        if (s.empty()) break;
        size_t a = below(s.size()), n = 1 + below(std::min<size_t>(64, s.size() - a));
        s.erase(a, n);
        break;
      }
      case 4: {  // repeat a range
        if (s.empty()) break;
        size_t a = below(s.size()), n = 1 + below(std::min<size_t>(256, s.size() - a));
        s.insert(a, s.substr(a, n) + (below(4) == 0 ? std::string(s.substr(a, n)) : std::string()));
        break;
      }
      case 5:  // insert interesting bytes
        s.insert(below(s.size() + 1), interesting_byte() + interesting_byte());
        break;
      case 6: {  // overwrite 8 bytes with an extreme little-endian integer
        if (s.size() < 8) break;
        const uint64_t vals[] = {0, ~0ull, 1ull << 63, 1ull << 32, 0x7fffffff, 1ull << 40};
        s.replace(below(s.size() - 7), 8, u64le(vals[below(6)]));
        break;
      }
      default: {  // swap two ranges' bytes
        if (s.size() < 2) break;
        std::swap(s[below(s.size())], s[below(s.size())]);
      }
    }
  }
  // Text-level: replace a number, a string or insert deep nesting / a huge token.
  void text(std::string& s) {
    switch (below(5)) {
      case 0: {  // a number
        std::vector<size_t> at;
        for (size_t i = 0; i < s.size(); ++i)
          if (std::isdigit(static_cast<unsigned char>(s[i])) && (i == 0 || !std::isalnum(static_cast<unsigned char>(s[i - 1])))) at.push_back(i);
        if (at.empty()) break;
        size_t a = at[below(at.size())], e = a;
        while (e < s.size() && (std::isdigit(static_cast<unsigned char>(s[e])) || s[e] == '.' || s[e] == 'e' || s[e] == '-')) ++e;
        s.replace(a, e - a, numbers()[below(numbers().size())]);
        break;
      }
      case 1: {  // a quoted string's content
        size_t a = s.find('"', below(s.size() + 1));
        if (a == std::string::npos) break;
        size_t e = s.find('"', a + 1);
        if (e == std::string::npos) break;
        static const std::vector<std::string> repl = {"", "../../etc/passwd", std::string(5000, 'A'), "\\u0000",
                                                      "\\ud800", "F64", "BF16", "I8", "BPE", "WordPiece", "null",
                                                      "\xff\xfe", "%s%n", "{{}}", "llama", "gpt2"};
        s.replace(a + 1, e - a - 1, repl[below(repl.size())]);
        break;
      }
      case 2: {  // deep nesting
        const size_t depth = below(4) == 0 ? 100000 : 1 + below(300);
        const bool brace = below(2);
        std::string open(depth, brace ? '[' : '{'), close(depth, brace ? ']' : '}');
        if (!brace) {
          open.clear();
          close.clear();
          for (size_t i = 0; i < depth; ++i) open += "{\"a\":", close += "}";
          open.pop_back();  // keep it a bit broken sometimes
          open += below(2) ? ":" : "";
        }
        s.insert(below(s.size() + 1), open + "1" + close);
        break;
      }
      case 3: {  // YAML-ish: anchors, aliases, tags, merge keys
        static const std::vector<std::string> y = {"&a [*a]", "*a", "<<: *b", "!!binary AAAA", "? [1]: 2",
                                                   "!<tag:yaml.org,2002:str> x", "|\n  text", ">-\n  x", "---\n...",
                                                   "{a: [1, {b: [2, {c: 3}]}]}", "[~, .inf, .nan, 0x1F, 0o17]",
                                                   "'''", "\"\\x00\"", "%YAML 1.2\n---\n"};
        s.insert(below(s.size() + 1), y[below(y.size())]);
        break;
      }
      default:
        bytes(s);
    }
  }
  // JSON-aware: a random node replaced by a value of another type.
  bool json(std::string& s) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(s);
    } catch (...) {
      return false;
    }
    std::vector<nlohmann::json*> nodes;
    std::function<void(nlohmann::json&)> walk = [&](nlohmann::json& n) {
      nodes.push_back(&n);
      if (n.is_structured())
        for (auto& c : n) walk(c);
    };
    walk(j);
    static const std::vector<nlohmann::json> repl = {
        nullptr, true, -1, 0, 1, 4294967296LL, -9223372036854775807LL, 18446744073709551615ULL, 1e300, 0.5, "",
        "x", nlohmann::json::array(), nlohmann::json::object(), nlohmann::json::array({1, 2}),
        nlohmann::json::object({{"type", "BPE"}}), std::string(3000, 'z')};
    *nodes[below(nodes.size())] = repl[below(repl.size())];
    if (below(3) == 0 && j.is_object() && !j.empty()) j.erase(std::next(j.begin(), long(below(j.size()))));
    s = j.dump();
    return true;
  }
};

struct Tally {
  int cases = 0, loaded = 0, clear_error = 0, unclear_error = 0, other_exception = 0, crash = 0, hang = 0;
  std::vector<std::string> examples;
  int failures() const { return unclear_error + other_exception + crash + hang; }
};

// Child exit codes.
// (ASan and UBSan reports exit with status 1: not one of these.)
enum { kLoaded = 10, kKvxError = 11, kUnclear = 12, kOther = 13 };

// Loads `path` in this process and classifies the outcome (message in *msg).
int classify(Format f, const std::string& path, std::string* msg) {
  int code = kLoaded;
  try {
    kvx::fuzz::run_target(f, path);
  } catch (const kvx::Error& e) {
    *msg = e.what();
    code = msg->find(fs::path(path).filename().string()) != std::string::npos ? kKvxError : kUnclear;
  } catch (const std::exception& e) {
    *msg = std::string("non-kvx exception: ") + typeid(e).name() + ": " + e.what();
    code = kOther;
  } catch (...) {
    *msg = "unknown exception";
    code = kOther;
  }
  *msg = msg->substr(0, 600);
  return code;
}

// Runs one case in a forked child with a timeout and the address-space cap.
int run_case(Format f, const std::string& path, int timeout_s, std::string* message) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    alarm(unsigned(timeout_s));
    if (!kAsan) {
      // Cap the address space: an allocation unbounded by the file size fails here.
      std::ifstream st("/proc/self/status");
      std::string line;
      long vm_kb = 0;
      while (std::getline(st, line))
        if (line.rfind("VmSize:", 0) == 0) vm_kb = std::strtol(line.c_str() + 7, nullptr, 10);
      rlimit lim{rlim_t(vm_kb + 512 * 1024) * 1024, rlim_t(vm_kb + 512 * 1024) * 1024};
      setrlimit(RLIMIT_AS, &lim);
    }
    std::string msg;
    const int code = classify(f, path, &msg);
    ssize_t w = write(fds[1], msg.data(), msg.size());
    (void)w;
    _exit(code);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out.append(buf, size_t(n));
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  *message = out;
  if (WIFSIGNALED(st)) return 100 + WTERMSIG(st);
  return WEXITSTATUS(st);
}

}  // namespace

TEST(Fuzz, MutatedParserInputsLoadOrFailClearly) {
  if (kvx::rel::skip_this_run()) GTEST_SKIP() << "long variant: set KVX_RELIABILITY_LONG=1";
  const std::string dir = kvx::test::make_temp_dir();
  // Seeds per format.
  std::map<Format, std::vector<std::string>> seeds;
  seeds[Format::Safetensors] = {synthetic_safetensors(), real_header_safetensors()};
  seeds[Format::ConfigJson] = {slurp(src() + "/data/models/tiny-gpt2/config.json"),
                               slurp(src() + "/data/models/small-code-llama/config.json")};
  seeds[Format::TokenizerJson] = {slurp(src() + "/tests/tokenizer/fixtures/llama3_style/tokenizer.json"),
                                  slurp(src() + "/tests/tokenizer/fixtures/sp_byte_fallback/tokenizer.json"),
                                  slurp(src() + "/data/models/tiny-gpt2/tokenizer.json")};
  seeds[Format::Yaml] = {slurp(src() + "/configs/quickstart.yaml"), slurp(src() + "/configs/seed000.yaml"),
                         "name: n\nworkers: 2\nretries: 1\nprotocols:\n  - {name: noop, value: [1, 2], sleep_ms: 0}\n"
                         "methods:\n  - {name: fp16, key: none, value: none}\n  - name: kvq\n    key: {type: kvq, bits: [2, 4]}\n"
                         "    value: {type: kvq, bits: 2}\ninclude:\n  - {method: fp16, protocol.fail: true}\n"};
  seeds[Format::Hdf5] = {synthetic_hdf5(dir)};
  seeds[Format::IndexJson] = {slurp(src() + "/data/models/small-code-llama/model.safetensors.index.json")};
  // Index cases live next to (links to) the real shards.
  const std::string idx_dir = dir + "/IndexJson";
  fs::create_directories(idx_dir);
  for (const auto& e : fs::directory_iterator(src() + "/data/models/small-code-llama"))
    if (e.path().extension() == ".safetensors") fs::create_symlink(e.path(), idx_dir + "/" + e.path().filename().string());

  // Every seed must load: a fuzz run from broken seeds tests nothing.
  for (const auto& fi : kvx::fuzz::formats()) {
    const std::string d = dir + "/" + std::to_string(int(fi.format));
    fs::create_directories(d);
    for (const auto& s : seeds[fi.format]) {
      const std::string p = (fi.format == Format::IndexJson ? idx_dir : d) + "/" + fi.file_name;
      spit(p, s);
      std::string msg;
      ASSERT_EQ(run_case(fi.format, p, 60, &msg), kLoaded) << fi.name << " seed does not load: " << msg;
    }
  }
  kvx::fuzz::warm_up(src());

  const char* env_cases = std::getenv("KVX_FUZZ_CASES");
  const int total = env_cases ? std::atoi(env_cases) : kvx::rel::rounds(4200, 21000);
  const char* env_seed = std::getenv("KVX_FUZZ_SEED");
  const uint64_t seed = env_seed ? std::strtoull(env_seed, nullptr, 10) : 20261123;
  // Share of the cases per format (tokenizer and index cases are the slow ones).
  const std::map<Format, double> share = {{Format::Safetensors, 0.26}, {Format::ConfigJson, 0.18},
                                          {Format::TokenizerJson, 0.16}, {Format::Yaml, 0.18},
                                          {Format::Hdf5, 0.16}, {Format::IndexJson, 0.06}};
  const int timeout_s = kAsan ? 60 : 20;
  std::map<Format, Tally> tally;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& fi : kvx::fuzz::formats()) {
    const int n = int(total * share.at(fi.format));
    Mutator m{std::mt19937_64(seed * 131 + uint64_t(fi.format))};
    Tally& t = tally[fi.format];
    const std::string p = (fi.format == Format::IndexJson ? idx_dir : dir + "/" + std::to_string(int(fi.format))) +
                          "/" + fi.file_name;
    const bool is_text = fi.format != Format::Hdf5;
    const bool is_json = fi.format == Format::ConfigJson || fi.format == Format::TokenizerJson ||
                         fi.format == Format::IndexJson;
    for (int i = 0; i < n; ++i) {
      const auto& sv = seeds[fi.format];
      // The big tokenizer.json loads slowly: one case in eight.
      std::string s = sv[fi.format == Format::TokenizerJson && m.below(8) != 0 ? m.below(2) : m.below(sv.size())];
      const size_t n_mut = 1 + m.below(m.below(4) == 0 ? 12 : 3);
      for (size_t k = 0; k < n_mut; ++k) {
        const size_t kind = m.below(10);
        if (fi.format == Format::Safetensors && kind < 6 && s.size() > 8) {
          // Aim at the header most of the time.
          uint64_t hlen = 0;
          for (int b = 7; b >= 0; --b) hlen = (hlen << 8) | uint8_t(s[size_t(b)]);
          if (hlen <= s.size() - 8 && kind < 3) {
            std::string head = s.substr(8, hlen), body = s.substr(8 + hlen);
            if (!(kind == 0 && m.json(head))) m.text(head);
            s = (m.below(4) ? u64le(head.size()) : u64le(hlen)) + head + body;
          } else {
            m.bytes(s);
          }
        } else if (is_json && kind < 3) {
          if (!m.json(s)) m.text(s);
        } else if (is_text && kind < 7) {
          m.text(s);
        } else {
          m.bytes(s);
        }
      }
      spit(p, s);
      std::string msg;
      const int rc = run_case(fi.format, p, timeout_s, &msg);
      ++t.cases;
      std::string what;
      switch (rc) {
        case kLoaded: ++t.loaded; break;
        case kKvxError: ++t.clear_error; break;
        case kUnclear: ++t.unclear_error, what = "kvx::Error not naming the file: " + msg; break;
        case kOther: ++t.other_exception, what = msg; break;
        default:
          if (rc == 100 + SIGALRM) ++t.hang, what = "hang (> " + std::to_string(timeout_s) + " s)";
          else ++t.crash, what = "crash: " + (rc >= 100 ? "signal " + std::to_string(rc - 100) : "exit " + std::to_string(rc)) + " " + msg;
      }
      if (!what.empty() && t.examples.size() < 5) {
        const std::string keep = dir + "/failing-" + std::to_string(int(fi.format)) + "-" + std::to_string(i) + "-" + fi.file_name;
        spit(keep, s);
        t.examples.push_back(what + "  (input: " + keep + ")");
      }
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int cases = 0, failures = 0;
  for (const auto& fi : kvx::fuzz::formats()) {
    const Tally& t = tally[fi.format];
    cases += t.cases;
    failures += t.failures();
    std::printf("reliability: fuzz %-18s cases=%5d loaded=%5d clear_error=%5d unclear_error=%d other_exception=%d "
                "crash=%d hang=%d\n", fi.name, t.cases, t.loaded, t.clear_error, t.unclear_error,
                t.other_exception, t.crash, t.hang);
    for (const auto& e : t.examples) std::printf("    %s\n", e.c_str());
  }
  std::printf("reliability: fuzz: inputs tried=%d failures=%d seed=%llu seconds=%.1f%s\n", cases, failures,
              (unsigned long long)seed, secs, kAsan ? " (ASan+UBSan)" : " (address space capped +512 MiB)");
  std::fflush(stdout);
  EXPECT_EQ(failures, 0);
  if (failures == 0) kvx::remove_tree(dir);
}

// Replays one saved input in this process (no fork, no cap), for a debugger:
// KVX_FUZZ_REPLAY=<format number>:<path> test_reliability_fuzz --gtest_filter=Fuzz.Replay
// (format numbers: fuzz_targets.h; 4 = HDF5).
TEST(Fuzz, Replay) {
  const char* spec = std::getenv("KVX_FUZZ_REPLAY");
  if (!spec) GTEST_SKIP() << "set KVX_FUZZ_REPLAY=FORMAT:PATH";
  const std::string s = spec;
  const auto colon = s.find(':');
  ASSERT_NE(colon, std::string::npos);
  const Format f = Format(std::atoi(s.substr(0, colon).c_str()));
  std::string msg;
  const int code = classify(f, s.substr(colon + 1), &msg);
  std::printf("outcome %d: %s\n", code, msg.c_str());
}
