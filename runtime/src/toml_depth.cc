#include "toml_depth.h"

#include <vector>

namespace dohost {
namespace {

class NestingScan {
 public:
  NestingScan(std::string_view text, size_t limit) : s_(text), limit_(limit) {}

  std::optional<std::string> run() {
    while (i_ < s_.size() && !error_) step();
    return error_;
  }

 private:
  // kLine: the start of a top-level line (a header, a key or nothing); kKey: reading a key up
  // to its '='; kKeyStart: inside an inline table, before a key; kValue: after '='.
  enum class Mode { kLine, kKey, kKeyStart, kValue };
  struct Open {
    char kind;     // '[' or '{'
    size_t depth;  // of this array or inline table
  };

  void step() {
    char c = s_[i_];
    if (c == '\n') {
      ++line_;
      ++i_;
      if (open_.empty()) mode_ = Mode::kLine;
      return;
    }
    if (c == ' ' || c == '\t' || c == '\r') {
      ++i_;
      return;
    }
    if (c == '#') {
      while (i_ < s_.size() && s_[i_] != '\n') ++i_;
      return;
    }
    switch (mode_) {
      case Mode::kLine:
        if (c == '[') return header();
        mode_ = Mode::kKey;
        key_ = depthHere() + 2;
        return;
      case Mode::kKeyStart:
        if (c == '}') return close();
        mode_ = Mode::kKey;
        key_ = depthHere() + 2;
        return;
      case Mode::kKey:
        if (c == '"' || c == '\'') return skipString();
        if (c == '.') key_ += 2;
        if (c == '=') {
          check(key_);
          mode_ = Mode::kValue;
          valueNext_ = true;
        }
        ++i_;
        return;
      case Mode::kValue:
        return value(c);
    }
  }

  void value(char c) {
    if (c == '"' || c == '\'') {
      valueNext_ = false;
      return skipString();
    }
    ++i_;
    if (c == '[' || c == '{') {
      size_t depth = valueNext_ ? key_ : depthHere() + 1;
      valueNext_ = false;
      check(depth);
      open_.push_back({c, depth});
      if (c == '{') mode_ = Mode::kKeyStart;
      return;
    }
    valueNext_ = false;
    if (c == ']' || c == '}') {
      --i_;
      return close();
    }
    if (c == ',' && !open_.empty() && open_.back().kind == '{') mode_ = Mode::kKeyStart;
  }

  void close() {
    ++i_;
    if (!open_.empty()) open_.pop_back();
    mode_ = Mode::kValue;
  }

  // [a.b.c] or [[a.b.c]]: the base of the keys that follow.
  void header() {
    ++i_;
    if (i_ < s_.size() && s_[i_] == '[') ++i_;
    size_t depth = 2;
    while (i_ < s_.size() && s_[i_] != ']' && s_[i_] != '\n') {
      if (s_[i_] == '"' || s_[i_] == '\'') {
        skipString();
        continue;
      }
      if (s_[i_] == '.') depth += 2;
      ++i_;
    }
    check(depth);
    header_ = depth;
    mode_ = Mode::kValue;  // the rest of the line holds no structure
    valueNext_ = false;
  }

  // A basic or literal string, single- or multi-line; leaves i_ after its end.
  void skipString() {
    char quote = s_[i_];
    bool basic = quote == '"';
    bool multi = s_.substr(i_, 3) == std::string_view(quote == '"' ? "\"\"\"" : "'''");
    i_ += multi ? 3 : 1;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (basic && c == '\\') {
        i_ += 2;
        continue;
      }
      if (c == '\n') {
        if (!multi) return;  // an unterminated string: toml++ reports it
        ++line_;
      }
      if (c == quote) {
        if (!multi) {
          ++i_;
          return;
        }
        if (i_ + 2 < s_.size() && s_[i_ + 1] == quote && s_[i_ + 2] == quote) {
          i_ += 3;
          // Up to two more quotes belong to the content.
          for (int k = 0; k < 2 && i_ < s_.size() && s_[i_] == quote; ++k) ++i_;
          return;
        }
      }
      ++i_;
    }
  }

  size_t depthHere() const { return open_.empty() ? header_ : open_.back().depth; }

  void check(size_t depth) {
    if (depth > limit_ && !error_) {
      error_ = "line " + std::to_string(line_) + " nests deeper than " + std::to_string(limit_) +
               " levels";
    }
  }

  std::string_view s_;
  size_t limit_;
  size_t i_ = 0;
  size_t line_ = 1;
  Mode mode_ = Mode::kLine;
  std::vector<Open> open_;
  size_t header_ = 0;  // depth of the table the last header opened
  size_t key_ = 0;     // depth of the value of the key being read
  bool valueNext_ = false;
  std::optional<std::string> error_;
};

}  // namespace

std::optional<std::string> tomlNestingError(std::string_view text, size_t limit) {
  return NestingScan(text, limit).run();
}

}  // namespace dohost
