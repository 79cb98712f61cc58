// Operational transformation of text edits for the CollaborationRoom. Positions and lengths
// count UTF-16 code units, as JavaScript string indices do, so a browser's `position` means
// the same here.
//
// The server applies edits one after another; each applied edit makes a new version. An edit
// a client made against an older version v is transformed over every edit applied since v,
// in order, and then applied. Inserts move right past text inserted at or before them and
// left past text deleted before them; an insert inside a deleted range lands at its start.
// A delete keeps to the text it meant: text inserted inside its range since v survives (the
// delete splits around it) and text already deleted is not deleted twice.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dohost::objects::guide::ot {

struct Edit {
  enum class Kind { kInsert, kDelete };
  Kind kind = Kind::kInsert;
  int64_t position = 0;
  int64_t length = 0;   // deleted units; for an insert, text.size()
  std::u16string text;  // inserted text
};

// Ranges to delete, [start, end), sorted and disjoint.
using Ranges = std::vector<std::pair<int64_t, int64_t>>;

// An insert position made against the text before `applied`, moved to the text after it.
int64_t transformInsert(int64_t position, const Edit& applied);
// Delete ranges made against the text before `applied`, moved to the text after it.
void transformDelete(Ranges& ranges, const Edit& applied);
// REQUIRES: the edit fits the text.
void apply(std::u16string& text, const Edit& edit);

// Whether `position` falls between the two halves of a surrogate pair.
bool splitsSurrogatePair(const std::u16string& text, int64_t position);

// nullopt: not valid UTF-8.
std::optional<std::u16string> toUtf16(std::string_view utf8);
// Lone surrogates become U+FFFD.
std::string toUtf8(std::u16string_view text);

}  // namespace dohost::objects::guide::ot
