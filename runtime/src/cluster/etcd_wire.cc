#include "cluster/etcd_wire.h"

#include <charconv>
#include <cstring>

#include "dohost/json.h"

namespace dohost::cluster {
namespace {

using nlohmann::json;

// etcd's answers nest 6 levels at most (a txn's kv inside a response inside a list).
constexpr JsonLimits kAnswerJsonLimits{.maxDepth = 16};
// A chunk-size line ("1a2b;ext=1") or one trailer line; past this the framing is refused.
constexpr size_t kMaxChunkLineBytes = 1024;
constexpr size_t kMaxTrailerBytes = 8 * 1024;

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

Status malformed(std::string what) { return Status::ioError("malformed etcd answer: " + what); }

int base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool containsToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    if (equalsIgnoreCase(trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

std::optional<size_t> parseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  size_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

Result<json> parseBody(std::string_view body) {
  JsonError error;
  std::optional<json> parsed = parseJson(body, kAnswerJsonLimits, &error);
  if (!parsed) return malformed(error.message);
  if (!parsed->is_object()) return malformed("the answer is not a JSON object");
  return std::move(*parsed);
}

// An int64 field: etcd writes them as strings; a number is accepted too. Absent is 0 (the
// gateway omits zero values).
Result<int64_t> int64Field(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return int64_t{0};
  if (it->is_number_integer()) return it->get<int64_t>();
  if (!it->is_string()) return malformed(std::string("field ") + name + " is not an integer");
  const std::string& s = it->get_ref<const std::string&>();
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return malformed(std::string("field ") + name + " is not an integer: \"" + s.substr(0, 40) +
                     "\"");
  }
  return v;
}

bool boolField(const json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

Result<std::string> bytesField(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::string();
  if (!it->is_string()) return malformed(std::string("field ") + name + " is not a string");
  std::optional<std::string> decoded = base64Decode(it->get_ref<const std::string&>());
  if (!decoded) return malformed(std::string("field ") + name + " is not base64");
  return std::move(*decoded);
}

const json* objectField(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_object()) return nullptr;
  return &*it;
}

Result<int64_t> headerRevision(const json& answer) {
  const json* header = objectField(answer, "header");
  if (header == nullptr) return malformed("no header");
  return int64Field(*header, "revision");
}

Result<KeyValue> parseKeyValue(const json& kv) {
  if (!kv.is_object()) return malformed("a kv is not an object");
  KeyValue out;
  Result<std::string> key = bytesField(kv, "key");
  if (!key.isOk()) return key.status();
  Result<std::string> value = bytesField(kv, "value");
  if (!value.isOk()) return value.status();
  out.key = std::move(*key);
  out.value = std::move(*value);
  for (auto [name, field] : {std::pair{"create_revision", &out.createRevision},
                             std::pair{"mod_revision", &out.modRevision},
                             std::pair{"version", &out.version}, std::pair{"lease", &out.lease}}) {
    Result<int64_t> v = int64Field(kv, name);
    if (!v.isOk()) return v.status();
    *field = *v;
  }
  return out;
}

Result<std::vector<KeyValue>> parseKvs(const json& holder) {
  std::vector<KeyValue> out;
  auto it = holder.find("kvs");
  if (it == holder.end() || it->is_null()) return out;
  if (!it->is_array()) return malformed("kvs is not a list");
  for (const json& kv : *it) {
    Result<KeyValue> parsed = parseKeyValue(kv);
    if (!parsed.isOk()) return parsed.status();
    out.push_back(std::move(*parsed));
  }
  return out;
}

// etcd's gRPC code to our vocabulary.
Status statusOfEtcdError(int64_t code, const std::string& message) {
  std::string text = message.empty() ? "etcd error code " + std::to_string(code) : message;
  if (code == 5) return Status::notFound(text);
  if (code == 3) return Status::invalidArgument(text);
  return Status::ioError(text + " (code " + std::to_string(code) + ")");
}

// An answer that carries an error instead of a result: {"error":"text","code":N} for unary
// calls, {"error":{"grpc_code":N,"message":"text"}} inside a stream.
std::optional<Status> embeddedError(const json& answer) {
  auto it = answer.find("error");
  if (it == answer.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) {
    Result<int64_t> code = int64Field(answer, "code");
    return statusOfEtcdError(code.isOk() ? *code : 2, it->get<std::string>());
  }
  if (it->is_object()) {
    Result<int64_t> code = int64Field(*it, "grpc_code");
    auto message = it->find("message");
    return statusOfEtcdError(code.isOk() ? *code : 2,
                             message != it->end() && message->is_string()
                                 ? message->get<std::string>()
                                 : std::string());
  }
  return malformed("error is neither a string nor an object");
}

// The first line of a stream of one-line JSON messages.
std::string_view firstLine(std::string_view body) {
  size_t start = body.find_first_not_of("\r\n \t");
  if (start == std::string_view::npos) return {};
  body.remove_prefix(start);
  size_t end = body.find('\n');
  return end == std::string_view::npos ? body : body.substr(0, end);
}

}  // namespace

std::string base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8 |
                 static_cast<uint8_t>(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) n |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    int pad = 0;
    if (last && text[i + 3] == '=') pad = text[i + 2] == '=' ? 2 : 1;
    uint32_t n = 0;
    for (int j = 0; j < 4; ++j) {
      int v = j >= 4 - pad ? 0 : base64Value(text[i + j]);
      if (v < 0) return std::nullopt;
      n = n << 6 | static_cast<uint32_t>(v);
    }
    // Canonical only: the bits a padded group does not use must be zero.
    if ((pad == 1 && (n & 0xff) != 0) || (pad == 2 && (n & 0xffff) != 0)) return std::nullopt;
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

std::string prefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<uint8_t>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

Result<std::optional<HttpHead>> parseHttpHead(std::string_view bytes) {
  size_t end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (bytes.size() > kMaxHttpHeadBytes) {
      return malformed("HTTP head longer than " + std::to_string(kMaxHttpHeadBytes) + " bytes");
    }
    return std::optional<HttpHead>();
  }
  if (end + 4 > kMaxHttpHeadBytes) {
    return malformed("HTTP head longer than " + std::to_string(kMaxHttpHeadBytes) + " bytes");
  }
  HttpHead head;
  head.headBytes = end + 4;
  std::string_view rest = bytes.substr(0, end + 2);
  size_t eol = rest.find("\r\n");
  std::string_view statusLine = rest.substr(0, eol);
  rest.remove_prefix(eol + 2);
  // "HTTP/1.1 200 OK"
  bool http10 = statusLine.starts_with("HTTP/1.0 ");
  if (!(statusLine.starts_with("HTTP/1.1 ") || http10) || statusLine.size() < 12 ||
      (statusLine.size() > 12 && statusLine[12] != ' ')) {
    return malformed("not an HTTP/1.x status line: \"" +
                     std::string(statusLine.substr(0, 60)) + "\"");
  }
  std::optional<size_t> code = parseDecimal(statusLine.substr(9, 3));
  if (!code || *code < 100) return malformed("bad HTTP status code");
  head.status = static_cast<int>(*code);
  bool keepAlive = false;
  while (!rest.empty()) {
    eol = rest.find("\r\n");
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return malformed("bad HTTP header line: \"" + std::string(line.substr(0, 60)) + "\"");
    }
    std::string_view name = line.substr(0, colon);
    std::string_view value = trim(line.substr(colon + 1));
    if (equalsIgnoreCase(name, "content-length")) {
      std::optional<size_t> length = parseDecimal(value);
      if (!length || (head.contentLength && *head.contentLength != *length)) {
        return malformed("bad Content-Length");
      }
      head.contentLength = length;
    } else if (equalsIgnoreCase(name, "transfer-encoding")) {
      if (!containsToken(value, "chunked")) {
        return malformed("unsupported Transfer-Encoding \"" + std::string(value.substr(0, 40)) +
                         "\"");
      }
      head.chunked = true;
    } else if (equalsIgnoreCase(name, "connection")) {
      if (containsToken(value, "close")) head.connectionClose = true;
      if (containsToken(value, "keep-alive")) keepAlive = true;
    }
  }
  if (http10 && !keepAlive) head.connectionClose = true;
  if (head.chunked) head.contentLength.reset();  // RFC 9112 6.3: chunked wins
  return std::optional<HttpHead>(head);
}

Result<size_t> ChunkedDecoder::feed(std::string_view in, std::string& out) {
  size_t used = 0;
  while (used < in.size() && state_ != State::kDone) {
    char c = in[used];
    switch (state_) {
      case State::kSize:
      case State::kTrailer: {
        ++used;
        if (c != '\n') {
          line_ += c;
          if (line_.size() > kMaxChunkLineBytes) return malformed("chunk line too long");
          continue;
        }
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (state_ == State::kTrailer) {
          trailerBytes_ += line_.size();
          if (trailerBytes_ > kMaxTrailerBytes) return malformed("chunked trailers too long");
          if (line_.empty()) state_ = State::kDone;
          line_.clear();
          continue;
        }
        std::string_view size = trim(std::string_view(line_).substr(0, line_.find(';')));
        size_t n = 0;
        auto [end, ec] = std::from_chars(size.data(), size.data() + size.size(), n, 16);
        if (size.empty() || size.size() > 15 || ec != std::errc() ||
            end != size.data() + size.size()) {
          return malformed("bad chunk size \"" + line_.substr(0, 40) + "\"");
        }
        line_.clear();
        if (n == 0) {
          state_ = State::kTrailer;
        } else {
          if (n > maxBytes_ - decoded_) {
            return malformed("answer larger than the limit of " + std::to_string(maxBytes_) +
                             " bytes");
          }
          remaining_ = n;
          state_ = State::kData;
        }
        continue;
      }
      case State::kData: {
        size_t take = std::min(remaining_, in.size() - used);
        out.append(in.substr(used, take));
        used += take;
        remaining_ -= take;
        decoded_ += take;
        if (remaining_ == 0) state_ = State::kDataEnd;
        continue;
      }
      case State::kDataEnd:
        ++used;
        if (c == '\r' && line_.empty()) {
          line_ = "\r";
        } else if (c == '\n') {
          line_.clear();
          state_ = State::kSize;
        } else {
          return malformed("chunk data not followed by CRLF");
        }
        continue;
      case State::kDone:
        break;
    }
  }
  return used;
}

Result<std::string> decodeChunked(std::string_view body, size_t maxBytes) {
  ChunkedDecoder decoder(maxBytes);
  std::string out;
  Result<size_t> used = decoder.feed(body, out);
  if (!used.isOk()) return used.status();
  if (!decoder.done()) return malformed("chunked body ends early");
  if (*used != body.size()) return malformed("bytes after the last chunk");
  return out;
}

Status statusOfAnswer(int httpStatus, std::string_view body) {
  if (httpStatus == 200) return Status::ok();
  JsonError ignored;
  std::optional<json> parsed = parseJson(firstLine(body), kAnswerJsonLimits, &ignored);
  if (parsed && parsed->is_object()) {
    if (std::optional<Status> error = embeddedError(*parsed)) return *error;
  }
  return Status::ioError("etcd answered HTTP " + std::to_string(httpStatus));
}

Result<LeaseGrant> parseLeaseGrant(std::string_view body) {
  Result<json> answer = parseBody(body);
  if (!answer.isOk()) return answer.status();
  if (std::optional<Status> error = embeddedError(*answer)) return *error;
  LeaseGrant grant;
  Result<int64_t> id = int64Field(*answer, "ID");
  if (!id.isOk()) return id.status();
  Result<int64_t> ttl = int64Field(*answer, "TTL");
  if (!ttl.isOk()) return ttl.status();
  if (*id == 0 || *ttl <= 0) return malformed("lease grant without an ID or TTL");
  grant.id = *id;
  grant.ttlSeconds = *ttl;
  return grant;
}

Result<int64_t> parseLeaseKeepAlive(std::string_view body) {
  Result<json> answer = parseBody(firstLine(body));
  if (!answer.isOk()) return answer.status();
  if (std::optional<Status> error = embeddedError(*answer)) return *error;
  const json* result = objectField(*answer, "result");
  if (result == nullptr) return malformed("keepalive answer without a result");
  Result<int64_t> ttl = int64Field(*result, "TTL");
  if (!ttl.isOk()) return ttl.status();
  if (*ttl <= 0) return Status::notFound("lease not found");
  return *ttl;
}

Result<int64_t> parseHeaderRevision(std::string_view body) {
  Result<json> answer = parseBody(body);
  if (!answer.isOk()) return answer.status();
  if (std::optional<Status> error = embeddedError(*answer)) return *error;
  return headerRevision(*answer);
}

Result<RangeAnswer> parseRange(std::string_view body) {
  Result<json> answer = parseBody(body);
  if (!answer.isOk()) return answer.status();
  if (std::optional<Status> error = embeddedError(*answer)) return *error;
  RangeAnswer out;
  Result<int64_t> revision = headerRevision(*answer);
  if (!revision.isOk()) return revision.status();
  Result<std::vector<KeyValue>> kvs = parseKvs(*answer);
  if (!kvs.isOk()) return kvs.status();
  out.revision = *revision;
  out.kvs = std::move(*kvs);
  return out;
}

Result<TxnAnswer> parseTxn(std::string_view body) {
  Result<json> answer = parseBody(body);
  if (!answer.isOk()) return answer.status();
  if (std::optional<Status> error = embeddedError(*answer)) return *error;
  TxnAnswer out;
  Result<int64_t> revision = headerRevision(*answer);
  if (!revision.isOk()) return revision.status();
  out.revision = *revision;
  out.succeeded = boolField(*answer, "succeeded");
  auto responses = answer->find("responses");
  if (responses == answer->end() || responses->is_null()) return out;
  if (!responses->is_array()) return malformed("txn responses is not a list");
  bool haveRange = false, haveDelete = false;
  for (const json& response : *responses) {
    if (!response.is_object()) return malformed("a txn response is not an object");
    if (const json* range = objectField(response, "response_range"); range && !haveRange) {
      Result<std::vector<KeyValue>> kvs = parseKvs(*range);
      if (!kvs.isOk()) return kvs.status();
      out.kvs = std::move(*kvs);
      haveRange = true;
    }
    if (const json* deleted = objectField(response, "response_delete_range");
        deleted && !haveDelete) {
      Result<int64_t> n = int64Field(*deleted, "deleted");
      if (!n.isOk()) return n.status();
      out.deleted = *n;
      haveDelete = true;
    }
  }
  return out;
}

Result<WatchMessage> parseWatchMessage(std::string_view line) {
  Result<json> answer = parseBody(line);
  if (!answer.isOk()) return answer.status();
  if (std::optional<Status> error = embeddedError(*answer)) return *error;
  const json* result = objectField(*answer, "result");
  if (result == nullptr) return malformed("watch message without a result");
  WatchMessage out;
  out.created = boolField(*result, "created");
  out.canceled = boolField(*result, "canceled");
  if (auto reason = result->find("cancel_reason"); reason != result->end() && reason->is_string()) {
    out.cancelReason = reason->get<std::string>().substr(0, 200);
  }
  Result<int64_t> compact = int64Field(*result, "compact_revision");
  if (!compact.isOk()) return compact.status();
  out.compactRevision = *compact;
  Result<int64_t> revision = headerRevision(*result);
  if (!revision.isOk()) return revision.status();
  out.revision = *revision;
  auto events = result->find("events");
  if (events == result->end() || events->is_null()) return out;
  if (!events->is_array()) return malformed("watch events is not a list");
  for (const json& event : *events) {
    if (!event.is_object()) return malformed("a watch event is not an object");
    WatchEvent parsed;
    // The gateway omits an enum's zero value: no "type" is a PUT.
    if (auto type = event.find("type"); type != event.end() && !type->is_null()) {
      if (*type == "DELETE" || *type == 1) {
        parsed.type = WatchEvent::Type::kDelete;
      } else if (!(*type == "PUT" || *type == 0)) {
        return malformed("unknown watch event type");
      }
    }
    const json* kv = objectField(event, "kv");
    if (kv == nullptr) return malformed("watch event without a kv");
    Result<KeyValue> parsedKv = parseKeyValue(*kv);
    if (!parsedKv.isOk()) return parsedKv.status();
    parsed.kv = std::move(*parsedKv);
    out.events.push_back(std::move(parsed));
  }
  return out;
}

}  // namespace dohost::cluster
