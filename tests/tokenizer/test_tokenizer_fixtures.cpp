// Hand-made tokenizer.json fixtures with ids worked out by hand from their vocab/merges:
//  fixtures/sp_byte_fallback: Llama-2 layout (normalizer Prepend+Replace "▁", BPE with
//    <0xNN> byte fallback, decoder Replace/ByteFallback/Fuse/Strip, template "<s> $A").
//    Ids: <unk>0 <s>1 </s>2, <0xNN> = 3+NN, ▁259 a260 b261 c262 h263 e264 l265 o266
//    w267 r268 d269 ▁h270 ll271 ell272 ▁hell273 ▁hello274 ▁w275 or276 ▁wor277 ab278 bc279;
//    merge ranks in that order: ▁+h, l+l, e+ll, ▁h+ell, ▁hell+o, ▁+w, o+r, ▁w+or, a+b, b+c.
//  fixtures/llama3_style: Split(Llama-3 regex, Isolated) then ByteLevel(use_regex false),
//    ignore_merges, id of each single byte = the byte value, then He256 ll257 Hell258
//    Hello259 Ġw260 or261 Ġwor262 ld263 Ġworld264 20 265 202 266 's267 Ġcat268;
//    added <|begin_of_text|>269 <|end_of_text|>270; merges (array form) in that order,
//    "'s" and "Ġcat" have no merge path (reachable only through ignore_merges).
#include <gtest/gtest.h>

#include "core/common/error.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace {

using kvx::Tokenizer;
using Ids = std::vector<int32_t>;

Tokenizer load_fixture(const char* name) {
  return Tokenizer::load(kvx::test::source_dir() + "/tests/tokenizer/fixtures/" + name + "/tokenizer.json");
}

TEST(SentencePieceStyle, EncodesHandComputedIds) {
  const Tokenizer tok = load_fixture("sp_byte_fallback");
  // "▁hello▁world": ▁hello by ranks 0-4, ▁wor by 5-7, then l, d (no l+d merge).
  EXPECT_EQ(tok.encode("hello world"), (Ids{1, 274, 277, 265, 269}));
  EXPECT_EQ(tok.encode("hello world", false), (Ids{274, 277, 265, 269}));
  // é = C3 A9 is not in the vocab: byte fallback to <0xC3> <0xA9>.
  EXPECT_EQ(tok.encode("hé", false), (Ids{270, 198, 172}));
  // a+b (rank 8) beats b+c (rank 9).
  EXPECT_EQ(tok.encode("abc", false), (Ids{259, 278, 262}));
  EXPECT_EQ(tok.encode("x", false), (Ids{259, 123}));
  // Spaces are all ▁, and the prefix ▁ is added once per text segment.
  EXPECT_EQ(tok.encode("  a", false), (Ids{259, 259, 259, 260}));
  // Added tokens split the text first; the segment after them gets its own ▁.
  EXPECT_EQ(tok.encode("hello</s>", false), (Ids{274, 2}));
  EXPECT_EQ(tok.encode("</s>hello", false), (Ids{2, 274}));
  EXPECT_EQ(tok.encode("", true), (Ids{1}));
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);  // no tokenizer_config.json: found by the name </s>
  EXPECT_EQ(tok.vocab_size(), 280);
}

TEST(SentencePieceStyle, DecodesThroughByteFallbackAndStrip) {
  const Tokenizer tok = load_fixture("sp_byte_fallback");
  EXPECT_EQ(tok.decode({1, 274, 277, 265, 269}), "<s> hello world");
  EXPECT_EQ(tok.decode({1, 274, 277, 265, 269}, true), "hello world");
  EXPECT_EQ(tok.decode({270, 198, 172}), "hé");
  EXPECT_EQ(tok.decode({198}), "\xEF\xBF\xBD");  // a lone lead byte: U+FFFD
  EXPECT_EQ(tok.decode({274, 99999}), "hello");   // unknown ids are skipped
  for (const std::string s : {"hello world", "hé", "  a", "Grüße, 世界! x\ty\n", "\xF0\x9F\x99\x82 ok"})
    EXPECT_EQ(tok.decode(tok.encode(s), true), s) << s;
}

TEST(Llama3Style, EncodesHandComputedIds) {
  const Tokenizer tok = load_fixture("llama3_style");
  // Whole pre-tokens in the vocab are emitted directly (ignore_merges).
  EXPECT_EQ(tok.encode("Hello world"), (Ids{269, 259, 264}));
  EXPECT_EQ(tok.encode(" cat", false), (Ids{268}));
  // Not in the vocab: BPE by ranks.
  EXPECT_EQ(tok.encode("Hellos worlds", false), (Ids{259, 's', 264, 's'}));
  // Regex pieces: It | 's | " " | 202 | 4 | !  (digits in groups of up to three).
  EXPECT_EQ(tok.encode("It's 2024!", false), (Ids{'I', 't', 267, ' ', 266, '4', '!'}));
  // é = C3 A9 -> byte-level characters Ã ©, ids 0xC3 0xA9.
  EXPECT_EQ(tok.encode("é", false), (Ids{0xC3, 0xA9}));
  EXPECT_EQ(tok.encode("a\n\nb", false), (Ids{'a', '\n', '\n', 'b'}));
  EXPECT_EQ(tok.encode("Hello<|end_of_text|>", false), (Ids{259, 270}));
  EXPECT_EQ(tok.bos_id(), 269);
  EXPECT_EQ(tok.eos_id(), 270);
  EXPECT_EQ(tok.vocab_size(), 271);
}

TEST(Llama3Style, DecodesByteLevel) {
  const Tokenizer tok = load_fixture("llama3_style");
  EXPECT_EQ(tok.decode({269, 259, 264}), "<|begin_of_text|>Hello world");
  EXPECT_EQ(tok.decode({269, 259, 264}, true), "Hello world");
  EXPECT_EQ(tok.decode({0xC3}), "\xEF\xBF\xBD");
  for (const std::string s : {"It's 2024!", "Grüße, 世界!\r\n  x", "\xF0\x9F\x99\x82", " cat  \n"})
    EXPECT_EQ(tok.decode(tok.encode(s), true), s) << s;
}

TEST(Encode, RejectsInvalidUtf8) {
  const Tokenizer tok = load_fixture("llama3_style");
  EXPECT_THROW(tok.encode("ab\xC3"), kvx::Error);
  EXPECT_THROW(tok.encode("\xED\xA0\x80"), kvx::Error);  // a surrogate
}

}  // namespace
