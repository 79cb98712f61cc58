#include "ws_protocol.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>

namespace dohost::ws {

bool FrameReader::fail(int code, std::string reason) {
  errorCode_ = code;
  errorReason_ = std::move(reason);
  message_ = std::string();
  return false;
}

bool FrameReader::feed(std::string_view data, FrameSink& sink) {
  while (!data.empty()) {
    if (failed()) return false;
    if (closeReceived_) return true;  // nothing counts after a Close
    if (!inPayload_) {
      size_t take = std::min(headerNeed_ - headerLen_, data.size());
      std::copy_n(data.data(), take, header_ + headerLen_);
      headerLen_ += take;
      data.remove_prefix(take);
      if (headerLen_ < headerNeed_) continue;
      if (!headerComplete()) return false;
      if (headerLen_ != 0) continue;  // the first two bytes: the rest of the header follows
      if (!inPayload_ && !frameDone(sink)) return false;  // an empty frame
      continue;
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(payloadLeft_, data.size()));
    std::string_view chunk = data.substr(0, take);
    data.remove_prefix(take);
    payloadLeft_ -= take;
    if (opcode_ & 0x8) {
      unmaskInto(control_, chunk);
    } else {
      size_t before = message_.size();
      unmaskInto(message_, chunk);
      if (!messageBinary_ &&
          !utf8_.feed(std::string_view(message_).substr(before))) {
        return fail(1007, "text is not valid UTF-8");
      }
    }
    if (payloadLeft_ == 0 && !frameDone(sink)) return false;
  }
  return !failed();
}

// The header so far has headerNeed_ bytes: check it, and either ask for the rest of it or
// start the payload.
bool FrameReader::headerComplete() {
  if (headerLen_ == 2) {
    fin_ = header_[0] & 0x80;
    opcode_ = header_[0] & 0x0F;
    if (header_[0] & 0x70) return fail(1002, "reserved bits set without an extension");
    bool control = opcode_ & 0x8;
    if (opcode_ != kContinuation && opcode_ != kText && opcode_ != kBinary && opcode_ != kClose &&
        opcode_ != kPing && opcode_ != kPong) {
      return fail(1002, "reserved opcode " + std::to_string(opcode_));
    }
    if (!(header_[1] & 0x80)) return fail(1002, "client frames must be masked");
    unsigned len7 = header_[1] & 0x7F;
    if (control) {
      if (!fin_) return fail(1002, "fragmented control frame");
      if (len7 > kMaxControlPayload) return fail(1002, "control frame over 125 bytes");
    } else if (opcode_ == kContinuation && !inMessage_) {
      return fail(1002, "continuation frame without a message to continue");
    } else if (opcode_ != kContinuation && inMessage_) {
      return fail(1002, "new message inside a fragmented one");
    }
    headerNeed_ = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
    return true;
  }
  // Whole header: length and mask key.
  unsigned len7 = header_[1] & 0x7F;
  uint64_t length = len7;
  size_t at = 2;
  if (len7 == 126) {
    length = (uint64_t(header_[2]) << 8) | header_[3];
    at = 4;
  } else if (len7 == 127) {
    length = 0;
    for (int i = 0; i < 8; ++i) length = (length << 8) | header_[2 + i];
    at = 10;
    if (length >> 63) return fail(1002, "frame length has its most significant bit set");
  }
  std::copy_n(header_ + at, 4, mask_);
  maskIndex_ = 0;
  headerLen_ = 0;
  headerNeed_ = 2;
  if (opcode_ & 0x8) {
    control_.clear();
  } else {
    if (opcode_ != kContinuation) {
      inMessage_ = true;
      messageBinary_ = opcode_ == kBinary;
      message_.clear();
      utf8_.reset();
    }
    if (length > maxMessageBytes_ || message_.size() + length > maxMessageBytes_) {
      return fail(1009, "message too big: the limit is " + std::to_string(maxMessageBytes_) + " bytes");
    }
    message_.reserve(message_.size() + static_cast<size_t>(length));
  }
  payloadLeft_ = length;
  inPayload_ = length > 0;
  return true;
}

bool FrameReader::frameDone(FrameSink& sink) {
  inPayload_ = false;
  switch (opcode_) {
    case kClose: {
      if (control_.size() == 1) return fail(1002, "close frame with a one-byte payload");
      int code = kNoStatusCode;
      std::string_view reason;
      if (control_.size() >= 2) {
        code = (static_cast<unsigned char>(control_[0]) << 8) | static_cast<unsigned char>(control_[1]);
        if (!isValidCloseCode(code)) return fail(1002, "invalid close code " + std::to_string(code));
        reason = std::string_view(control_).substr(2);
        if (!isValidUtf8(reason)) return fail(1007, "close reason is not valid UTF-8");
      }
      closeReceived_ = true;
      sink.onClose(code, reason);
      return true;
    }
    case kPing:
      sink.onPing(control_);
      return true;
    case kPong:
      sink.onPong(control_);
      return true;
    default:
      break;
  }
  if (!fin_) return true;  // more fragments follow
  if (!messageBinary_ && !utf8_.complete()) return fail(1007, "text is not valid UTF-8");
  inMessage_ = false;
  std::string message = std::move(message_);
  message_ = std::string();
  sink.onMessage(messageBinary_, std::move(message));
  return true;
}

void FrameReader::unmaskInto(std::string& out, std::string_view in) {
  size_t start = out.size();
  out.append(in);
  for (size_t i = start; i < out.size(); ++i) {
    out[i] = static_cast<char>(out[i] ^ mask_[maskIndex_]);
    maskIndex_ = (maskIndex_ + 1) & 3;
  }
}

size_t writeHeader(unsigned char* out, Opcode opcode, size_t size) {
  out[0] = static_cast<unsigned char>(0x80 | opcode);
  if (size < 126) {
    out[1] = static_cast<unsigned char>(size);
    return 2;
  }
  if (size <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<unsigned char>(size >> 8);
    out[3] = static_cast<unsigned char>(size);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<unsigned char>(uint64_t(size) >> (56 - 8 * i));
  return 10;
}

std::string controlFrame(Opcode opcode, std::string_view payload) {
  payload = payload.substr(0, kMaxControlPayload);
  unsigned char head[kMaxHeaderBytes];
  size_t n = writeHeader(head, opcode, payload.size());
  std::string out(reinterpret_cast<char*>(head), n);
  out.append(payload);
  return out;
}

std::string closePayload(int code, std::string_view reason) {
  if (code == kNoStatusCode) return {};
  std::string out;
  out.push_back(static_cast<char>((code >> 8) & 0xFF));
  out.push_back(static_cast<char>(code & 0xFF));
  size_t room = kMaxControlPayload - 2;
  if (reason.size() > room) {
    size_t cut = room;
    // Step back to the start of a character, so the reason stays valid UTF-8.
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  out.append(reason);
  return out;
}

bool isValidCloseCode(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

std::string acceptKey(std::string_view key) {
  // Base64 of 16 bytes: 22 characters and "==".
  if (key.size() != 24 || key.substr(22) != "==") return {};
  unsigned char raw[18];
  if (EVP_DecodeBlock(raw, reinterpret_cast<const unsigned char*>(key.data()), 24) != 18) return {};
  std::string input(key);
  input += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(out), static_cast<size_t>(n));
}

}  // namespace dohost::ws
