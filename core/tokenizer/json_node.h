// Checked, path-tracking access to a parsed tokenizer.json: every failed lookup or wrong
// type throws kvx::Error "<file>: <key path> <what was expected>", so loaders never touch
// nlohmann's own (unhelpful) exceptions and hostile files cannot crash them.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace kvx::tok {

class JsonNode {
 public:
  JsonNode(const nlohmann::json* j, std::string path, const std::string* file)
      : j_(j), path_(std::move(path)), file_(file) {}

  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }
  // Absent keys and JSON null both count as missing (HF writes null for "none").
  bool missing() const;
  bool is_string() const;
  bool is_array() const;
  bool is_object() const;

  JsonNode get(const std::string& key) const;  // child of an object; may be missing
  JsonNode req(const std::string& key) const;  // child that must exist and not be null
  size_t array_size() const;                   // throws unless an array
  JsonNode at(size_t i) const;                 // element of an array
  size_t object_size() const;                  // throws unless an object
  // Visits the members of an object in file order; throws unless an object.
  void for_each_member(const std::function<void(const std::string&, const JsonNode&)>& fn) const;

  std::string str() const;
  bool boolean() const;
  int64_t integer() const;
  double number() const;
  // Defaults apply only when the key is missing; a present value of the wrong type throws.
  std::string str_or(const std::string& key, const std::string& dflt) const;
  bool bool_or(const std::string& key, bool dflt) const;
  int64_t int_or(const std::string& key, int64_t dflt) const;

  const nlohmann::json& raw() const;  // throws if missing
  [[noreturn]] void fail(const std::string& what) const;

 private:
  static const char* type_name(const nlohmann::json* j);
  const nlohmann::json* j_;
  std::string path_;
  const std::string* file_;
};

}  // namespace kvx::tok
