#include <gtest/gtest.h>

#include "core/common/error.h"
#include "experiments/dataset_adapter.h"
#include "tests/protocols/test_support.h"

using namespace kvx;

TEST(DatasetAdapter, FormatByExtension) {
  DatasetOptions o;
  EXPECT_EQ(dataset_format("a/b.jsonl", o), "jsonl");
  EXPECT_EQ(dataset_format("a/b.ndjson", o), "jsonl");
  EXPECT_EQ(dataset_format("a/b.txt", o), "text");
  o.format = "jsonl";
  EXPECT_EQ(dataset_format("a/b.txt", o), "jsonl");
  o.format = "csv";
  EXPECT_THROW(dataset_format("a/b.txt", o), kvx::Error);
}

TEST(DatasetAdapter, JsonlPromptAndReferences) {
  const std::string path = test::write_temp("adapter1.jsonl",
                                            "{\"prompt\": \"Hello\", \"reference\": \"World\"}\n"
                                            "\n"
                                            "{\"prompt\": \"A\", \"reference\": [\"B\", \"C\"]}\r\n"
                                            "{\"prompt\": \"no ref\"}\n");
  auto recs = load_records(path, {});
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].prompt, "Hello");
  EXPECT_EQ(recs[0].references, std::vector<std::string>{"World"});
  EXPECT_EQ(recs[1].references, (std::vector<std::string>{"B", "C"}));
  EXPECT_EQ(recs[1].line, 3);
  EXPECT_TRUE(recs[2].references.empty());
  EXPECT_EQ(load_stream(path, {}), "Hello\n\nA\n\nno ref");
  EXPECT_EQ(load_documents(path, {}).size(), 3u);
}

// LongBench exports: {"input", "context", "answers": [...], "length", "_id"}.
TEST(DatasetAdapter, TemplateAndCustomFields) {
  const std::string path = test::write_temp(
      "adapter2.jsonl", "{\"context\": \"Doc text.\", \"input\": \"Who?\", \"answers\": [\"Me\"], \"length\": 7}\n");
  DatasetOptions o;
  o.prompt_template = "{context}\n\nQ: {input} ({length}) {{literal}}";
  o.reference_field = "answers";
  auto recs = load_records(path, o);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].prompt, "Doc text.\n\nQ: Who? (7) {literal}");
  EXPECT_EQ(recs[0].references, std::vector<std::string>{"Me"});
}

TEST(DatasetAdapter, ErrorsNameFileLineAndKey) {
  auto msg = [](const std::string& text, DatasetOptions o = {}) {
    const std::string path = test::write_temp("adapter_bad.jsonl", text);
    try {
      load_records(path, o);
    } catch (const kvx::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg("{\"prompt\": \"a\"}\n{oops\n").find("adapter_bad.jsonl:2: invalid JSON"), std::string::npos);
  EXPECT_NE(msg("{\"text\": \"a\"}\n").find("no prompt field 'prompt'"), std::string::npos);
  EXPECT_NE(msg("{\"prompt\": [1]}\n").find("field 'prompt' must be a string"), std::string::npos);
  EXPECT_NE(msg("{\"prompt\": \"a\", \"reference\": 3}\n").find("'reference' must be a string or an array"),
            std::string::npos);
  EXPECT_NE(msg("[1, 2]\n").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(msg("\n\n").find("no records"), std::string::npos);
  DatasetOptions t;
  t.prompt_template = "{missing}";
  EXPECT_NE(msg("{\"prompt\": \"a\"}\n", t).find("names field 'missing'"), std::string::npos);
  t.prompt_template = "{open";
  EXPECT_NE(msg("{\"prompt\": \"a\"}\n", t).find("unclosed"), std::string::npos);
  EXPECT_THROW(load_stream("/nonexistent/file.txt", {}), kvx::Error);
}

TEST(DatasetAdapter, TextFileIsOneStream) {
  const std::string path = test::write_temp("adapter.txt", "line one\n\nline two\n");
  EXPECT_EQ(load_stream(path, {}), "line one\n\nline two\n");
  EXPECT_TRUE(load_records(path, {}).empty());
  EXPECT_EQ(load_documents(path, {}).size(), 1u);
}

// The shipped example loads with the documented settings.
TEST(DatasetAdapter, ShippedExample) {
  DatasetOptions o;
  o.prompt_template = "{context}\n\nQuestion: {input}\nAnswer:";
  o.reference_field = "answers";
  auto recs = load_records(test::source_dir() + "/data/examples/longbench_style.jsonl", o);
  ASSERT_GE(recs.size(), 3u);
  for (const auto& r : recs) {
    EXPECT_FALSE(r.references.empty());
    EXPECT_NE(r.prompt.find("Question: "), std::string::npos);
  }
  auto plain = load_records(test::source_dir() + "/data/examples/prompts.jsonl", {});
  ASSERT_GE(plain.size(), 3u);
}
