// Strict JSON parsing; see fhir_json.h.
#include "adapters/fhir/fhir_json.h"

#include <utility>
#include <vector>

namespace icr::adapters::fhir {
namespace {

using nlohmann::json;

// Builds the DOM from SAX events, one container level at a time. `stack_`
// holds the open containers (never more than max_depth); pointers into the
// tree stay valid because only the innermost open container is modified.
class StrictBuilder {
 public:
  StrictBuilder(json* root, int max_depth, JsonProblem* problem)
      : root_(root), max_depth_(max_depth), problem_(problem) {}

  bool null() { return Put(nullptr) != nullptr; }
  bool boolean(bool v) { return Put(v) != nullptr; }
  bool number_integer(json::number_integer_t v) { return Put(v) != nullptr; }
  bool number_unsigned(json::number_unsigned_t v) { return Put(v) != nullptr; }
  bool number_float(json::number_float_t v, const json::string_t&) { return Put(v) != nullptr; }
  bool string(json::string_t& v) { return Put(std::move(v)) != nullptr; }
  bool binary(json::binary_t&) {  // never produced by JSON text
    return Fail("structure", "binary values are not JSON");
  }

  bool start_object(std::size_t) { return Open(json::object()); }
  bool end_object() { return Close(); }
  bool start_array(std::size_t) { return Open(json::array()); }
  bool end_array() { return Close(); }

  bool key(json::string_t& k) {
    json& object = *stack_.back();
    if (object.contains(k)) {
      return Fail("structure", "duplicate JSON key '" + Clip(k) + "' in " + Path() +
                                   " (each key may appear once in an object)");
    }
    key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string& last_token,
                   const nlohmann::detail::exception& ex) {
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
    std::string what = ex.what();
    if (auto p = what.find("] "); p != std::string::npos && what.rfind("[json.", 0) == 0) {
      what = what.substr(p + 2);
    }
    return Fail("structure", "invalid JSON: " + what);
  }

 private:
  static std::string Clip(const std::string& s) {
    return s.size() > 64 ? s.substr(0, 64) + "..." : s;
  }

  bool Fail(const char* code, std::string message) {
    if (problem_->code.empty()) {  // keep the first problem
      problem_->code = code;
      problem_->message = std::move(message);
    }
    return false;
  }

  // "$", "$.name[0]", ... for the innermost open container.
  std::string Path() const {
    std::string p = "$";
    for (const auto& s : segments_) p += s;
    return p;
  }

  // Adds a value to the innermost open container (or makes it the root) and
  // returns it.
  json* Put(json&& v) {
    if (stack_.empty()) {
      *root_ = std::move(v);
      return root_;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json& slot = top[key_];
    slot = std::move(v);
    return &slot;
  }

  bool Open(json&& empty) {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      return Fail("too-long", "JSON nests objects and arrays more than " +
                                  std::to_string(max_depth_) + " deep (at " + Path() +
                                  "); the limit protects the broker's stack and memory");
    }
    std::string segment;
    if (!stack_.empty()) {
      const json& top = *stack_.back();
      segment = top.is_array() ? "[" + std::to_string(top.size()) + "]" : "." + Clip(key_);
    }
    json* v = Put(std::move(empty));
    stack_.push_back(v);
    if (stack_.size() > 1) segments_.push_back(std::move(segment));
    return true;
  }

  bool Close() {
    stack_.pop_back();
    if (!segments_.empty() && segments_.size() >= stack_.size()) segments_.pop_back();
    return true;
  }

  json* root_;
  int max_depth_;
  JsonProblem* problem_;
  std::vector<json*> stack_;
  std::vector<std::string> segments_;  // path of stack_[1..]
  std::string key_;
};

}  // namespace

bool ParseStrictJson(std::string_view text, int max_depth, nlohmann::json* out,
                     JsonProblem* problem) {
  *problem = {};
  StrictBuilder builder(out, max_depth, problem);
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &builder,
                                            nlohmann::json::input_format_t::json,
                                            /*strict=*/true);
  if (ok) return true;
  if (problem->code.empty()) {
    problem->code = "structure";
    problem->message = "invalid JSON";
  }
  return false;
}

}  // namespace icr::adapters::fhir
