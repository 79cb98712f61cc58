// Parsing JSON from outside with bounded depth (nlohmann/json).
//
// nlohmann's parser is iterative, but dumping, copying and comparing a value recurse once per
// level of nesting: a message of 1 MiB holds an array 500,000 deep, which overflows the stack
// of whoever serializes it. Every JSON the host and its bundled apps read from a client, a
// socket attachment, storage or a call between objects goes through parseJson, which refuses
// nesting deeper than a limit before any tree is built (so nothing deep is ever dumped,
// copied or destroyed). Its error says which rule the text broke: syntax, depth, or a
// number beyond what a double holds.
//
// Header-only but for the process-wide limit, which the host sets from its option
// `max_json_depth` before it serves.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace dohost {

struct JsonLimits {
  // Arrays and objects nested in each other; the outermost one counts 1, so "[[1]]" has
  // depth 2. Scalars at the top level have depth 0.
  size_t maxDepth = 64;
};

inline constexpr size_t kDefaultMaxJsonDepth = 64;
// The largest max_json_depth accepted: dumping about 4,000 levels overflows the 8 MiB stack
// of a sanitized build.
inline constexpr size_t kMaxJsonDepthSetting = 1000;

// The process-wide limits (the host option `max_json_depth`). Set once at start-up, before
// the loop runs; read from the loop thread.
const JsonLimits& jsonLimits();
void setJsonLimits(const JsonLimits& limits);

struct JsonError {
  enum class Kind { kSyntax, kTooDeep, kNumberOutOfRange };
  Kind kind = Kind::kSyntax;
  std::string message;  // for an error answer, e.g. "JSON nested deeper than 64 levels"
};

namespace detail {

// A SAX consumer that builds the tree (as nlohmann's own DOM parser does, with a stack of
// the open arrays and objects) and stops at the first container past the depth limit or
// the first number out of a double's range.
template <class Json>
class BoundedJsonBuilder {
 public:
  using number_integer_t = typename Json::number_integer_t;
  using number_unsigned_t = typename Json::number_unsigned_t;
  using number_float_t = typename Json::number_float_t;
  using string_t = typename Json::string_t;
  using binary_t = typename Json::binary_t;

  BoundedJsonBuilder(Json& root, size_t maxDepth, JsonError& error)
      : root_(root), maxDepth_(maxDepth), error_(error) {}

  bool null() { return add(nullptr); }
  bool boolean(bool v) { return add(v); }
  bool number_integer(number_integer_t v) { return add(v); }
  bool number_unsigned(number_unsigned_t v) { return add(v); }
  bool number_float(number_float_t v, const string_t&) { return add(v); }
  bool string(string_t& v) { return add(std::move(v)); }
  bool binary(binary_t& v) { return add(Json::binary(std::move(v))); }
  bool start_object(std::size_t) { return open(Json::value_t::object); }
  bool key(string_t& k) {
    member_ = &(*open_.back())[std::move(k)];
    return true;
  }
  bool end_object() {
    open_.pop_back();
    return true;
  }
  bool start_array(std::size_t) { return open(Json::value_t::array); }
  bool end_array() {
    open_.pop_back();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const typename Json::exception& e) {
    if (e.id == kNumberOverflow) {
      return fail(JsonError::Kind::kNumberOutOfRange,
                  "JSON number out of range (beyond what a double holds)");
    }
    return fail(JsonError::Kind::kSyntax, "invalid JSON at byte " + std::to_string(position));
  }

 private:
  template <class V>
  Json* place(V&& v) {
    if (open_.empty()) {
      root_ = Json(std::forward<V>(v));
      return &root_;
    }
    Json* parent = open_.back();
    if (parent->is_array()) {
      parent->push_back(Json(std::forward<V>(v)));
      return &parent->back();
    }
    *member_ = Json(std::forward<V>(v));
    return member_;
  }
  template <class V>
  bool add(V&& v) {
    place(std::forward<V>(v));
    return true;
  }
  bool open(typename Json::value_t type) {
    if (open_.size() >= maxDepth_) {
      return fail(JsonError::Kind::kTooDeep,
                  "JSON nested deeper than " + std::to_string(maxDepth_) + " levels");
    }
    open_.push_back(place(type));
    return true;
  }
  bool fail(JsonError::Kind kind, std::string message) {
    error_.kind = kind;
    error_.message = std::move(message);
    return false;
  }

  // nlohmann's out_of_range.406: a number that parses to infinity.
  static constexpr int kNumberOverflow = 406;

  Json& root_;
  size_t maxDepth_;
  JsonError& error_;
  std::vector<Json*> open_;  // the arrays and objects being filled, outermost first
  Json* member_ = nullptr;   // the object member whose key was just read
};

}  // namespace detail

// Parses `text` as one JSON value (RFC 8259: no comments, nothing after the value). Returns
// nullopt, with `error` filled when given, for invalid JSON, nesting deeper than
// `limits.maxDepth`, or a number beyond a double's range. Integers keep 64 bits; other
// numbers are doubles, as in JavaScript.
template <class Json = nlohmann::json>
std::optional<Json> parseJson(std::string_view text, const JsonLimits& limits = jsonLimits(),
                              JsonError* error = nullptr) {
  Json root;
  JsonError local;
  JsonError& err = error ? *error : local;
  detail::BoundedJsonBuilder<Json> builder(root, limits.maxDepth, err);
  if (!Json::sax_parse(text.begin(), text.end(), &builder)) {
    if (err.message.empty()) err.message = "invalid JSON";
    return std::nullopt;
  }
  return root;
}

}  // namespace dohost
