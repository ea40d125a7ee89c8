#include "core/tokenizer/bpe_model.h"

#include <cstdio>
#include <functional>
#include <queue>
#include <tuple>

#include "core/tokenizer/unicode.h"

namespace kvx::tok {
namespace {
constexpr size_t kMaxCachedWordBytes = 256;  // long runs (no pre-tokenizer) are not worth caching
constexpr size_t kMaxCacheEntries = 1 << 18;
}  // namespace

BpeModel::BpeModel(const JsonNode& model) {
  const std::string type = model.str_or("type", "BPE");
  if (type != "BPE") model.get("type").fail("'" + type + "' is not supported (expected BPE)");

  JsonNode vocab = model.req("vocab");
  if (!vocab.is_object()) vocab.fail("must be an object mapping token strings to ids");
  vocab_.reserve(vocab.object_size());
  vocab.for_each_member([&](const std::string& token, const JsonNode& v) {
    const int64_t id = v.integer();
    if (id < 0 || id > INT32_MAX - 1) v.fail("must be an id in [0, 2^31-1)");
    vocab_[token] = static_cast<int32_t>(id);
    id_to_token_[static_cast<int32_t>(id)] = token;
    if (id > max_id_) max_id_ = id;
  });

  prefix_ = model.str_or("continuing_subword_prefix", "");
  suffix_ = model.str_or("end_of_word_suffix", "");
  byte_fallback_ = model.bool_or("byte_fallback", false);
  fuse_unk_ = model.bool_or("fuse_unk", false);
  ignore_merges_ = model.bool_or("ignore_merges", false);
  JsonNode dropout = model.get("dropout");
  if (!dropout.missing() && dropout.number() != 0.0)
    dropout.fail("is not supported (expected null: kvx tokenizes deterministically)");
  JsonNode unk = model.get("unk_token");
  if (!unk.missing()) {
    unk_id_ = token_to_id(unk.str());
    if (unk_id_ < 0) unk.fail("'" + unk.str() + "' is not in model.vocab");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_ids_[b] = byte_fallback_ ? token_to_id(name) : -1;
  }

  JsonNode merges = model.get("merges");
  if (merges.missing()) return;  // a vocabulary without merges is a valid (character-level) BPE
  const size_t n = merges.array_size();
  merges_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    JsonNode m = merges.at(i);
    std::string a, b;
    if (m.is_string()) {
      // "a b": tokens cannot contain a plain space in this format, so exactly one separates them.
      const std::string s = m.str();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        m.fail("must be two tokens separated by one space, got '" + s + "'");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array()) {
      if (m.array_size() != 2) m.fail("must be a pair [left, right]");
      a = m.at(0).str();
      b = m.at(1).str();
    } else {
      m.fail("must be a string \"left right\" or a pair [left, right]");
    }
    const int32_t ia = token_to_id(a), ib = token_to_id(b);
    if (ia < 0) m.fail("token '" + a + "' is not in model.vocab");
    if (ib < 0) m.fail("token '" + b + "' is not in model.vocab");
    const std::string rhs = (!prefix_.empty() && b.compare(0, prefix_.size(), prefix_) == 0)
                                ? b.substr(prefix_.size())
                                : b;
    const int32_t merged = token_to_id(a + rhs);
    if (merged < 0) m.fail("merged token '" + a + rhs + "' is not in model.vocab");
    merges_.emplace(pair_key(ia, ib), Merge{static_cast<int32_t>(i), merged});  // first rank wins
  }
}

int32_t BpeModel::token_to_id(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  auto it = id_to_token_.find(id);
  return it == id_to_token_.end() ? nullptr : &it->second;
}

std::vector<int32_t> BpeModel::bpe(const std::string& w) const {
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Sym> syms;
  syms.reserve(w.size());
  auto add = [&](int32_t id) {
    const auto k = static_cast<int32_t>(syms.size());
    syms.push_back({id, k - 1, -1, true});
    if (k > 0) syms[k - 1].next = k;
  };
  // Characters -> initial symbols (HF BPE::merge_word): vocab, else <0xNN> bytes, else unk.
  bool pending_unk = false;
  for (size_t i = 0; i < w.size();) {
    const size_t n = utf8_char_len(w, i);
    std::string s = w.substr(i, n);
    if (i > 0 && !prefix_.empty()) s = prefix_ + s;
    if (i + n == w.size() && !suffix_.empty()) s += suffix_;
    i += n;
    int32_t id = token_to_id(s);
    if (id >= 0) {
      if (pending_unk) add(unk_id_), pending_unk = false;
      add(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {
        if (pending_unk) add(unk_id_), pending_unk = false;
        for (unsigned char c : s) add(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk && !fuse_unk_) add(unk_id_);
      pending_unk = true;
    }
    // Without an unk token the character is dropped, as Hugging Face does.
  }
  if (pending_unk) add(unk_id_);

  using Entry = std::tuple<int32_t, int32_t, int32_t, int32_t>;  // rank, pos, left id, right id
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t nx = syms[pos].next;
    if (nx < 0) return;
    auto it = merges_.find(pair_key(syms[pos].id, syms[nx].id));
    if (it != merges_.end()) heap.emplace(it->second.rank, pos, syms[pos].id, syms[nx].id);
  };
  for (int32_t k = 0; k + 1 < static_cast<int32_t>(syms.size()); ++k) push(k);
  while (!heap.empty()) {
    auto [rank, pos, left, right] = heap.top();
    heap.pop();
    Sym& s = syms[pos];
    // Stale entries (a side already merged into something else) are skipped.
    if (!s.alive || s.next < 0 || s.id != left || syms[s.next].id != right) continue;
    const int32_t gone = s.next;
    s.id = merges_.find(pair_key(left, right))->second.new_id;
    s.next = syms[gone].next;
    if (s.next >= 0) syms[s.next].prev = pos;
    syms[gone].alive = false;
    push(s.prev);
    push(pos);
  }
  std::vector<int32_t> ids;
  for (int32_t k = syms.empty() ? -1 : 0; k >= 0; k = syms[k].next) ids.push_back(syms[k].id);
  return ids;
}

void BpeModel::encode_word(const std::string& word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = token_to_id(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = bpe(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(word, std::move(ids));
  }
}

}  // namespace kvx::tok
