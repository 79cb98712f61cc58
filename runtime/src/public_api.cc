// The author-facing value types: SqlRow/SqlCursor accessors and the WebSocket handle.
#include <algorithm>

#include "dohost/errors.h"
#include "dohost/storage.h"
#include "dohost/websocket.h"
#include "internal.h"
#include "object_slot.h"
#include "runtime.h"

namespace dohost {

namespace {

// The text of a TEXT or BLOB value, as const as `v` is.
template <typename Value>
auto& sqlTextOf(Value& v, size_t column) {
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  if (auto* b = std::get_if<Blob>(&v)) return b->bytes;
  throw SqlError(Status::invalidArgument("column " + std::to_string(column) + " is not text"));
}

}  // namespace

size_t SqlRow::indexOf(std::string_view column) const {
  for (size_t i = 0; i < columns_->size(); ++i) {
    if ((*columns_)[i] == column) return i;
  }
  throw SqlError(Status::invalidArgument("no column named " + std::string(column)));
}

const SqlValue& SqlRow::operator[](std::string_view column) const& {
  return values_.at(indexOf(column));
}

bool SqlRow::isNull(size_t i) const { return std::holds_alternative<std::nullptr_t>(values_.at(i)); }

int64_t SqlRow::integer(size_t i) const {
  if (auto* v = std::get_if<int64_t>(&values_.at(i))) return *v;
  throw SqlError(Status::invalidArgument("column " + std::to_string(i) + " is not an integer"));
}

double SqlRow::real(size_t i) const {
  if (auto* v = std::get_if<double>(&values_.at(i))) return *v;
  if (auto* v = std::get_if<int64_t>(&values_.at(i))) return static_cast<double>(*v);
  throw SqlError(Status::invalidArgument("column " + std::to_string(i) + " is not a number"));
}

const std::string& SqlRow::text(size_t i) const& { return sqlTextOf(values_.at(i), i); }

std::string SqlRow::text(size_t i) && { return std::move(sqlTextOf(values_.at(i), i)); }

SqlCursor::SqlCursor(SqlResult result)
    : columns_(std::make_shared<const std::vector<std::string>>(std::move(result.columns))),
      rowsRead_(result.rowsRead),
      rowsWritten_(result.rowsWritten) {
  rows_.reserve(result.rows.size());
  for (std::vector<SqlValue>& values : result.rows) {
    rows_.push_back(SqlRow(std::move(values), columns_));
  }
}

void SqlCursor::requireOne() const {
  if (size() != 1) {
    throw SqlError(Status::invalidArgument("Expected exactly one result from SQL query, but got " +
                                           std::to_string(size())));
  }
}

const SqlRow& SqlCursor::one() const& {
  requireOne();
  return rows_[0];
}

SqlRow SqlCursor::one() && {
  requireOne();
  return std::move(rows_[0]);
}

namespace {

SendResult sendFrame(const std::shared_ptr<detail::SocketRecord>& r, std::string_view bytes,
                     bool binary) {
  if (r->state != detail::SocketState::kOpen || r->slot == nullptr) return SendResult::kClosed;
  r->slot->enqueueSend(r, std::make_shared<Frame>(bytes, binary));
  return SendResult::kQueued;
}

}  // namespace

SendResult WebSocket::send(std::string_view text) { return sendFrame(record_, text, false); }

SendResult WebSocket::sendBinary(std::string_view bytes) { return sendFrame(record_, bytes, true); }

void WebSocket::close(int code, std::string_view reason) {
  // What RFC 6455 lets an endpoint send: 1000-1003, 1007-1014 and the 3000-4999 range for
  // libraries and applications (1004-1006 and 1015 never go on the wire).
  bool sendable = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                  (code >= 3000 && code <= 4999);
  if (!sendable) {
    throw UsageError("close code must be 1000-1003, 1007-1014 or 3000-4999, got " +
                     std::to_string(code));
  }
  if (reason.size() > kMaxCloseReasonBytes) {
    throw UsageError("close reason must be at most 123 bytes");
  }
  if (record_->state != detail::SocketState::kOpen || record_->slot == nullptr) return;
  record_->slot->enqueueClose(record_, code, std::string(reason));
}

void WebSocket::serializeAttachment(std::string_view bytes) {
  detail::SocketRecord& r = *record_;
  if (r.slot == nullptr) return;  // closed: nothing to keep
  if (bytes.size() > r.slot->attachmentLimit()) {
    throw UsageError("serializeAttachment: " + std::to_string(bytes.size()) +
                     " bytes is more than the limit of " +
                     std::to_string(r.slot->attachmentLimit()) + " bytes");
  }
  r.attachment.assign(bytes);
  r.hasAttachment = true;
  if (r.transport) r.transport->metaChanged();
}

std::optional<std::string> WebSocket::deserializeAttachment() const {
  if (!record_->hasAttachment) return std::nullopt;
  return record_->attachment;
}

const std::vector<std::string>& WebSocket::tags() const& { return record_->tags; }

std::vector<std::string> WebSocket::tags() const&& { return record_->tags; }

bool WebSocket::isOpen() const { return record_->state == detail::SocketState::kOpen; }

uint64_t WebSocket::id() const { return record_->id; }

}  // namespace dohost
