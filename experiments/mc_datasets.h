// Multiple-choice dataset adapters for the QAQ protocol (docs/methods/protocols.md), reading
// the files as the original datasets ship them:
//   piqa       <split>.jsonl with {"goal", "sol1", "sol2"} per line and the labels in
//              <split>-labels.lst next to it (one 0/1 per line); the labels path may be given.
//              context "Question: {goal}\nAnswer:", choices sol1, sol2.
//   hellaswag  hellaswag_<split>.jsonl with {"activity_label", "ctx_a", "ctx_b", "endings", "label"};
//              context activity_label + ": " + ctx_a + " " + capitalize(ctx_b), endings as
//              choices, all cleaned with hellaswag_clean(); label may be an int or a digit string.
//   mathqa     <split>.json: a JSON array of {"Problem", "options", "correct"}; context
//              "Question: {Problem}\nAnswer:", five choices parsed from options
//              ("a ) 38 , b ) 27.675 , ..." or a list "['a ) 38', ...]"), label from correct (a-e).
// `auto` picks by file name (piqa / hellaswag / mathqa in the name). Every problem is a
// kvx::Error naming file:line (or the array index) and the key.
// Subsets: python_sample(n, k, seed) reproduces Python's random.seed(seed);
// random.sample(range(n), k) exactly (MT19937 seeded by init_by_array, _randbelow by rejection
// on getrandbits, set or pool selection as CPython does), so kvx evaluates the same 1000 questions
// as the upstream code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kvx {

struct McQuestion {
  std::string context;
  std::vector<std::string> choices;
  int label = 0;
  std::string where;  // "file:line" for messages
};

// format: auto | piqa | hellaswag | mathqa. labels_path: PIQA only ("" = <stem>-labels.lst).
std::vector<McQuestion> load_mc_dataset(const std::string& path, const std::string& format,
                                        const std::string& labels_path = "");
std::string mc_format_of(const std::string& path, const std::string& format);

// Python str.capitalize for ASCII letters (first upper, rest lower; other bytes unchanged).
std::string python_capitalize(const std::string& s);
// lm-eval's HellaSwag preprocess: strip, " [title]" -> ". ", drop "[...]", "  " -> " " (one pass).
std::string hellaswag_clean(const std::string& s);
// MathQA options string -> choices (lm-eval's regex "[abcd] \) .*?, |e \) .*?$", text after
// the "x ) " prefix with trailing " ," removed).
std::vector<std::string> parse_mathqa_options(const std::string& options);

// Python: random.seed(seed); random.sample(range(n), k).
std::vector<int64_t> python_sample(int64_t n, int64_t k, uint32_t seed);

}  // namespace kvx
