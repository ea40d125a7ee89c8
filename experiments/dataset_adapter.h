// Dataset adapter: turns a user's file into what protocols consume, so kvx can be pointed at
// LongBench-style exports without code changes (format documented in data/examples/README.md).
//
// Two formats, chosen by the protocol parameter `format` ("auto" picks by extension):
//   text   any UTF-8 file. As a stream (perplexity-like protocols) it is the whole file; as
//          records it has none (protocols then cut prompts out of the token stream).
//   jsonl  one JSON object per line (blank lines skipped). A record's prompt is the string field
//          `prompt_field`, or `prompt_template` with {field} placeholders filled from the
//          record's string/number fields (e.g. "{context}\n\nQuestion: {input}\nAnswer:").
//          References come from `reference_field`: a string or an array of strings; absent or
//          empty means "no reference" for that record. As a stream, the records' prompts are
//          joined with "\n\n".
// Every problem (bad JSON, missing field, wrong type) is a kvx::Error naming file:line and key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kvx {

struct DatasetOptions {
  std::string format = "auto";  // auto | text | jsonl
  std::string prompt_field = "prompt";
  std::string prompt_template;  // overrides prompt_field when non-empty
  std::string reference_field = "reference";
};

struct DatasetRecord {
  std::string prompt;
  std::vector<std::string> references;  // may be empty
  int64_t line = 0;                     // 1-based line in the file (error messages)
};

// "text" or "jsonl" for the file under the options (auto: *.jsonl / *.ndjson -> jsonl).
std::string dataset_format(const std::string& path, const DatasetOptions& opt);
// Records of a JSONL file; an empty list for a text file.
std::vector<DatasetRecord> load_records(const std::string& path, const DatasetOptions& opt);
// The file as one text stream (text: verbatim; jsonl: prompts joined by "\n\n").
std::string load_stream(const std::string& path, const DatasetOptions& opt);
// Documents: text -> one document (the whole file); jsonl -> one per record (its prompt).
std::vector<std::string> load_documents(const std::string& path, const DatasetOptions& opt);

// Fills {name} placeholders from a JSON object's fields ("{{" and "}}" are literal braces).
// where = "file:line" for messages.
std::string fill_template(const std::string& tmpl, const std::string& record_json, const std::string& where);

}  // namespace kvx
