// A bound on the nesting of a TOML document, checked before toml++ reads it.
//
// toml++ limits nested arrays and inline tables (256), but not tables made by dotted keys
// and headers: `a.a.a...= 1` with 100,000 keys builds a table 100,000 deep, which toml++
// walks and destroys recursively, overflowing the stack. This scan reads only the
// structure (strings, comments, keys, brackets) and reports the first line whose tables
// and arrays may nest deeper than the limit.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace dohost {

// Far beyond any real config (dohost's own nest 3 levels), far below a stack's reach.
inline constexpr size_t kMaxConfigDepth = 128;

// nullopt, or "line N nests deeper than LIMIT levels". The bound is conservative: a header
// or dotted key segment counts 2 levels (it may step through an array of tables).
std::optional<std::string> tomlNestingError(std::string_view text,
                                            size_t limit = kMaxConfigDepth);

}  // namespace dohost
