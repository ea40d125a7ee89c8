#include "core/tokenizer/json_node.h"

#include <nlohmann/json.hpp>

#include "core/common/error.h"

namespace kvx::tok {

const char* JsonNode::type_name(const nlohmann::json* j) {
  if (j == nullptr) return "missing";
  return j->type_name();
}

bool JsonNode::missing() const { return j_ == nullptr || j_->is_null(); }
bool JsonNode::is_string() const { return j_ && j_->is_string(); }
bool JsonNode::is_array() const { return j_ && j_->is_array(); }
bool JsonNode::is_object() const { return j_ && j_->is_object(); }

void JsonNode::fail(const std::string& what) const {
  throw kvx::error("{}: {} {}", *file_, path_.empty() ? std::string("(top level)") : path_, what);
}

const nlohmann::json& JsonNode::raw() const {
  if (missing()) fail("is missing");
  return *j_;
}

JsonNode JsonNode::get(const std::string& key) const {
  std::string child = path_.empty() ? key : path_ + "." + key;
  if (missing()) return JsonNode(nullptr, child, file_);
  if (!j_->is_object()) fail(std::string("must be an object, got ") + type_name(j_));
  auto it = j_->find(key);
  return JsonNode(it == j_->end() ? nullptr : &*it, child, file_);
}

JsonNode JsonNode::req(const std::string& key) const {
  if (missing()) fail("is missing");
  JsonNode n = get(key);
  if (n.missing()) n.fail("is missing (required)");
  return n;
}

size_t JsonNode::array_size() const {
  if (!is_array()) fail(std::string("must be an array, got ") + type_name(j_));
  return j_->size();
}

JsonNode JsonNode::at(size_t i) const {
  if (!is_array() || i >= j_->size()) fail("index out of range");
  return JsonNode(&(*j_)[i], path_ + "[" + std::to_string(i) + "]", file_);
}

size_t JsonNode::object_size() const {
  if (!is_object()) fail(std::string("must be an object, got ") + type_name(j_));
  return j_->size();
}

void JsonNode::for_each_member(const std::function<void(const std::string&, const JsonNode&)>& fn) const {
  if (!is_object()) fail(std::string("must be an object, got ") + type_name(j_));
  for (auto it = j_->begin(); it != j_->end(); ++it)
    fn(it.key(), JsonNode(&it.value(), path_ + "[\"" + it.key() + "\"]", file_));
}

std::string JsonNode::str() const {
  if (!is_string()) fail(std::string("must be a string, got ") + type_name(j_));
  return j_->get<std::string>();
}

bool JsonNode::boolean() const {
  if (!j_ || !j_->is_boolean()) fail(std::string("must be true or false, got ") + type_name(j_));
  return j_->get<bool>();
}

int64_t JsonNode::integer() const {
  if (!j_ || !(j_->is_number_integer() || j_->is_number_unsigned()))
    fail(std::string("must be an integer, got ") + type_name(j_));
  if (j_->is_number_unsigned() && j_->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    fail("is out of range");
  return j_->get<int64_t>();
}

double JsonNode::number() const {
  if (!j_ || !j_->is_number()) fail(std::string("must be a number, got ") + type_name(j_));
  return j_->get<double>();
}

std::string JsonNode::str_or(const std::string& key, const std::string& dflt) const {
  JsonNode n = get(key);
  return n.missing() ? dflt : n.str();
}

bool JsonNode::bool_or(const std::string& key, bool dflt) const {
  JsonNode n = get(key);
  return n.missing() ? dflt : n.boolean();
}

int64_t JsonNode::int_or(const std::string& key, int64_t dflt) const {
  JsonNode n = get(key);
  return n.missing() ? dflt : n.integer();
}

}  // namespace kvx::tok
