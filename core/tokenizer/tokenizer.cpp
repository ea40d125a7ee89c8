// Loads tokenizer.json into the pipeline  added-token split -> normalizer -> pre-tokenizer
// -> BPE -> post-processor, and decodes through the decoder chain (see tokenizer.h).
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/tokenizer/added_tokens.h"
#include "core/tokenizer/bpe_model.h"
#include "core/tokenizer/json_node.h"
#include "core/tokenizer/text_steps.h"
#include "core/tokenizer/unicode.h"

namespace kvx {

using tok::JsonNode;

namespace {

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("{}: cannot open {} ({})", path, what, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw error("{}: read error", path);
  return ss.str();
}

nlohmann::json parse_json(const std::string& path, const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw error("{}: invalid JSON ({}); expected a Hugging Face tokenizer file", path, e.what());
  }
}

// The ids a post-processor adds around the single sequence $A.
struct PostProcessor {
  std::vector<int32_t> prefix, suffix;
};

std::vector<int32_t> special_ids(const JsonNode& specials, const std::string& name, const JsonNode& where) {
  JsonNode entry = specials.get(name);
  if (entry.missing()) where.fail("names '" + name + "', which is not in post_processor.special_tokens");
  JsonNode ids = entry.req("ids");
  std::vector<int32_t> out;
  for (size_t i = 0; i < ids.array_size(); ++i) {
    const int64_t id = ids.at(i).integer();
    if (id < 0 || id > INT32_MAX - 1) ids.at(i).fail("must be an id in [0, 2^31-1)");
    out.push_back(static_cast<int32_t>(id));
  }
  return out;
}

// Wraps pp with what node adds: a processor applied after pp sees pp's output as its $A.
void parse_post_processor(const JsonNode& n, PostProcessor& pp, int depth) {
  if (n.missing()) return;
  if (!n.is_object()) n.fail("must be an object or null");
  if (depth > tok::kMaxSequenceDepth) n.fail("nests Sequence too deeply");
  const std::string type = n.req("type").str();
  if (type == "ByteLevel") return;  // only trims offsets; ids unchanged
  if (type == "Sequence") {
    JsonNode list = n.req("processors");
    for (size_t i = 0; i < list.array_size(); ++i) parse_post_processor(list.at(i), pp, depth + 1);
    return;
  }
  std::vector<int32_t> pre, post;
  if (type == "TemplateProcessing") {
    JsonNode single = n.req("single");
    JsonNode specials = n.get("special_tokens");
    bool seen_a = false;
    for (size_t i = 0; i < single.array_size(); ++i) {
      JsonNode item = single.at(i);
      JsonNode sp = item.get("SpecialToken"), seq = item.get("Sequence");
      if (!sp.missing()) {
        auto ids = special_ids(specials, sp.req("id").str(), sp.get("id"));
        auto& dst = seen_a ? post : pre;
        dst.insert(dst.end(), ids.begin(), ids.end());
      } else if (!seq.missing()) {
        const std::string which = seq.req("id").str();
        if (which != "A" || seen_a) seq.get("id").fail("must name sequence A exactly once in 'single'");
        seen_a = true;
      } else {
        item.fail("must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      }
    }
    if (!seen_a) single.fail("has no {\"Sequence\": {\"id\": \"A\"}} item");
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto id_of = [&](const char* key) {
      JsonNode pair = n.req(key);
      if (pair.array_size() != 2) pair.fail("must be [token, id]");
      const int64_t id = pair.at(1).integer();
      if (id < 0 || id > INT32_MAX - 1) pair.at(1).fail("must be an id in [0, 2^31-1)");
      return static_cast<int32_t>(id);
    };
    pre.push_back(id_of("cls"));
    post.push_back(id_of("sep"));
  } else {
    n.get("type").fail("'" + type +
                       "' is not supported (expected TemplateProcessing, ByteLevel, Sequence, RobertaProcessing or "
                       "BertProcessing)");
  }
  pre.insert(pre.end(), pp.prefix.begin(), pp.prefix.end());
  pp.prefix = std::move(pre);
  pp.suffix.insert(pp.suffix.end(), post.begin(), post.end());
}

// bos_token / eos_token of tokenizer_config.json: a string, {"content": ...} or null.
std::string config_token(const JsonNode& cfg, const char* key) {
  JsonNode t = cfg.get(key);
  if (t.missing()) return "";
  if (t.is_string()) return t.str();
  return t.req("content").str();
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::unique_ptr<tok::BpeModel> model;
  tok::AddedTokens added;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::Decoder> decoder;
  PostProcessor post;
  int32_t bos = -1, eos = -1;
  int64_t vocab_size = 0;

  int32_t token_to_id(const std::string& s) const {
    if (const auto* a = added.by_content(s)) return a->id;
    return model->token_to_id(s);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& path) {
  auto m = std::make_unique<Impl>();
  m->path = path;
  const nlohmann::json j = parse_json(path, read_file(path, "tokenizer file"));
  JsonNode root(&j, "", &m->path);
  if (!root.is_object()) root.fail("must be a JSON object (a Hugging Face tokenizer.json)");
  try {
    m->model = std::make_unique<tok::BpeModel>(root.req("model"));
    m->added = tok::AddedTokens(root.get("added_tokens"));
    m->normalizer = tok::parse_normalizer(root.get("normalizer"));
    m->pre_tokenizer = tok::parse_pre_tokenizer(root.get("pre_tokenizer"));
    m->decoder = tok::parse_decoder(root.get("decoder"));
    parse_post_processor(root.get("post_processor"), m->post, 0);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // safety net: nothing but kvx::Error may escape
    throw error("{}: cannot load tokenizer: {}", path, e.what());
  }
  m->vocab_size = std::max(m->model->max_id(), m->added.max_id()) + 1;

  // Special ids named by tokenizer_config.json, when it sits next to tokenizer.json.
  std::string bos_name, eos_name;
  const size_t slash = path.find_last_of('/');
  const std::string cfg_path = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) +
                               "tokenizer_config.json";
  if (std::ifstream(cfg_path).good()) {
    const nlohmann::json cj = parse_json(cfg_path, read_file(cfg_path, "tokenizer config"));
    JsonNode cfg(&cj, "", &cfg_path);
    if (!cfg.is_object()) cfg.fail("must be a JSON object");
    bos_name = config_token(cfg, "bos_token");
    eos_name = config_token(cfg, "eos_token");
  }
  if (!m->post.prefix.empty())
    m->bos = m->post.prefix.front();
  else if (!bos_name.empty())
    m->bos = m->token_to_id(bos_name);
  if (!eos_name.empty()) m->eos = m->token_to_id(eos_name);
  for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>"})
    if (m->eos < 0) m->eos = m->token_to_id(name);
  return Tokenizer(std::move(m));
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special) const {
  const Impl& m = *impl_;
  const size_t bad = tok::utf8_invalid_offset(text);
  if (bad != std::string::npos)
    throw error("text to encode with {} is not valid UTF-8 (byte offset {})", m.path, bad);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  if (add_special) out = m.post.prefix;
  for (const tok::Segment& seg : m.added.split(text)) {
    if (seg.token_id >= 0) {
      out.push_back(seg.token_id);
      continue;
    }
    tok::Pieces p;
    p.items.emplace_back(text, seg.begin, seg.end - seg.begin);
    p.first_at_start = seg.begin == 0;
    if (m.normalizer) m.normalizer->apply(p.items[0]);
    if (m.pre_tokenizer) m.pre_tokenizer->apply(p);
    for (const auto& piece : p.items) m.model->encode_word(piece, out);
  }
  if (add_special) out.insert(out.end(), m.post.suffix.begin(), m.post.suffix.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const auto* a = m.added.by_id(id)) {
      if (!(skip_special && a->special)) tokens.push_back(a->content);
    } else if (const std::string* t = m.model->id_to_token(id)) {
      tokens.push_back(*t);
    }
  }
  std::string out;
  if (m.decoder) {
    m.decoder->apply(tokens);
    for (const auto& t : tokens) out += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
  }
  return out;
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::adds_bos() const { return !impl_->post.prefix.empty() && impl_->post.prefix.front() == impl_->bos; }
int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
int32_t Tokenizer::token_to_id(const std::string& token) const { return impl_->token_to_id(token); }

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const auto* a = impl_->added.by_id(id)) return a->content;
  const std::string* t = impl_->model->id_to_token(id);
  return t ? *t : std::string();
}

}  // namespace kvx
