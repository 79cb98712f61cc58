// Output and input formats shared by doctl's commands: exit codes, aligned tables, bytes shown
// as text or hex/base64, times in RFC 3339, sizes, and the --since parser.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace doctl {

using json = nlohmann::ordered_json;

// Exit codes (docs/doctl.md): 0 success, 1 not found or refused, 2 usage, 3 host unreachable.
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// Ends the command: main prints "doctl: <message>" on one line and exits with `code`.
class CliError : public std::runtime_error {
 public:
  CliError(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// Options every command may use.
struct GlobalOptions {
  std::string dataDir = "./data";
  std::string adminUrl = "http://127.0.0.1:9090";
  bool adminGiven = false;  // --admin on the command line: `show` adds the host's view
  std::string token;  // from --token or DOHOST_ADMIN_TOKEN
  bool json = false;  // machine-readable output
  bool wide = false;  // full ids in tables
};

// A table printed with aligned columns. When stdout is a terminal, the last column (values,
// attachments: free text) is cut with "…" so that each line fits its width; piped output is
// never cut.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void add(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  bool empty() const { return rows_.empty(); }
  void print(std::FILE* out = stdout) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Prints "label  value" lines with the labels aligned (the `show` layout). Values are never
// cut: they are ids and paths people copy.
class Fields {
 public:
  void add(std::string label, std::string value) {
    rows_.emplace_back(std::move(label), std::move(value));
  }
  void print(std::FILE* out = stdout) const;

 private:
  std::vector<std::pair<std::string, std::string>> rows_;
};

// Columns of the terminal on stdout, or nullopt when stdout is not a terminal.
std::optional<size_t> terminalWidth();
// Code points in `s` (its width for the scripts doctl prints; wide characters count as one).
size_t displayWidth(std::string_view s);

bool isValidUtf8(std::string_view s);
// Bytes for a table cell: valid UTF-8 as text with control characters escaped (\n, \t, \xNN),
// anything else as 0x followed by lowercase hex.
std::string displayBytes(std::string_view bytes);
// Bytes for JSON: valid UTF-8 as a string; otherwise base64 (RFC 4648, padded) with
// `<field>Encoding: "base64"` beside it.
void putBytes(json& object, const std::string& field, std::string_view bytes);
std::string base64(std::string_view bytes);
std::string hexBytes(std::string_view bytes);

// Milliseconds since the Unix epoch.
int64_t nowMs();
// "2024-05-01T12:00:00.123Z" (UTC).
std::string formatTime(int64_t ms);
// "2024-05-01T12:00:00Z": to the second, for tables.
std::string formatTimeShort(int64_t ms);
// "in 4m59s", "3s ago", "now".
std::string formatRelative(int64_t ms, int64_t now);
// "1.5 KiB", "512 B".
std::string formatSize(int64_t bytes);
// An id as shown in tables: its first 16 characters unless `wide`.
std::string shortId(const std::string& id, bool wide);

// A duration: "500ms", "30s", "10m", "2h", "1d", "1w", or a sum such as "1h30m"; milliseconds,
// or nullopt if `text` is none.
std::optional<int64_t> parseDuration(std::string_view text);
// Parses --since: RFC 3339 ("2024-05-01T12:00:00Z", fractions and offsets allowed, "T" may be
// a space), a date ("2024-05-01", midnight UTC), or a duration before now ("30s", "10m",
// "2h", "1d", "1h30m"). Returns milliseconds since the epoch, or nullopt if `text` is none.
std::optional<int64_t> parseSince(std::string_view text, int64_t now);

// Percent-encodes a path segment (RFC 3986 unreserved characters stay as they are).
std::string encodePathSegment(std::string_view s);

}  // namespace doctl
