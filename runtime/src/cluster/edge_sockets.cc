// EdgeSockets (edge_sockets.h). Invariant: a socket is in byObject_[its object] always, and
// in byOwner_[owner] exactly when it has an owner; held_ holds only objects with messages,
// and heldBytesTotal_ is the sum of their bytes.
#include "cluster/edge_sockets.h"

#include <algorithm>
#include <utility>

namespace dohost::cluster {

Status EdgeSockets::add(SocketId id, const ObjectKey& object, const std::string& owner) {
  if (id == 0) return Status::invalidArgument("socket id 0 is no socket");
  if (sockets_.contains(id)) {
    return Status::invalidArgument("socket " + std::to_string(id) + " is already relayed");
  }
  EdgeSocket& socket = sockets_[id];
  socket.id = id;
  socket.object = object;
  byObject_[object].insert(id);
  setOwner(socket, owner);
  socket.state = EdgeSocketState::kAttached;
  return Status::ok();
}

Status EdgeSockets::applyMeta(const std::string& from, const SocketMeta& meta) {
  auto it = sockets_.find(meta.socket);
  if (it == sockets_.end()) {
    return Status::notFound("socket " + std::to_string(meta.socket) + " is not relayed here");
  }
  EdgeSocket& socket = it->second;
  if (socket.owner != from) {
    return Status::notAllowed("host " + from + " does not own socket " + std::to_string(meta.socket));
  }
  socket.tags = meta.tags;
  socket.attachment = meta.attachment;
  socket.autoResponse = meta.autoResponse;
  return Status::ok();
}

const EdgeSocket* EdgeSockets::find(SocketId id) const {
  auto it = sockets_.find(id);
  return it == sockets_.end() ? nullptr : &it->second;
}

void EdgeSockets::markClosing(SocketId id) {
  auto it = sockets_.find(id);
  if (it != sockets_.end()) it->second.state = EdgeSocketState::kClosing;
}

void EdgeSockets::closed(SocketId id) {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) return;
  EdgeSocket& socket = it->second;
  setOwner(socket, std::nullopt);
  dropHeldOf(id, socket.object);
  auto byObject = byObject_.find(socket.object);
  byObject->second.erase(id);
  if (byObject->second.empty()) byObject_.erase(byObject);
  sockets_.erase(it);
}

std::vector<ObjectKey> EdgeSockets::ownerLost(const std::string& host) {
  auto owned = byOwner_.find(host);
  if (owned == byOwner_.end()) return {};
  std::set<SocketId> ids = std::move(owned->second);
  byOwner_.erase(owned);
  std::set<ObjectKey> objects;
  for (SocketId id : ids) {
    EdgeSocket& socket = sockets_.at(id);
    socket.owner.reset();  // already out of byOwner_
    if (socket.state != EdgeSocketState::kClosing) socket.state = EdgeSocketState::kOwnerless;
    objects.insert(socket.object);
  }
  return {objects.begin(), objects.end()};
}

std::vector<SocketId> EdgeSockets::socketsOf(const ObjectKey& object) const {
  auto it = byObject_.find(object);
  if (it == byObject_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

std::vector<SocketId> EdgeSockets::socketsOwnedBy(const std::string& host) const {
  auto it = byOwner_.find(host);
  if (it == byOwner_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

std::vector<Reattach> EdgeSockets::reattachFramesFor(const ObjectKey& object,
                                                     const std::string& newOwner) {
  std::vector<Reattach> frames;
  auto it = byObject_.find(object);
  if (it == byObject_.end()) return frames;
  for (SocketId id : it->second) {
    EdgeSocket& socket = sockets_.at(id);
    if (socket.state != EdgeSocketState::kOwnerless) continue;
    setOwner(socket, newOwner);
    socket.state = EdgeSocketState::kReattaching;
    Reattach frame;
    frame.socket = id;
    frame.className = object.className;
    frame.objectId = object.objectId;
    frame.tags = socket.tags;
    frame.attachment = socket.attachment;
    frame.autoResponse = socket.autoResponse;
    frame.autoResponseAtMs = socket.autoResponseAtMs;
    frames.push_back(std::move(frame));
  }
  return frames;
}

Status EdgeSockets::applyReattachResult(const std::string& from, const ReattachResult& result) {
  auto it = sockets_.find(result.socket);
  if (it == sockets_.end()) {
    return Status::notFound("socket " + std::to_string(result.socket) + " is not relayed here");
  }
  EdgeSocket& socket = it->second;
  if (socket.state != EdgeSocketState::kReattaching || socket.owner != from) {
    return Status::notAllowed("socket " + std::to_string(result.socket) +
                              " is not being re-attached to host " + from);
  }
  if (result.ok) {
    socket.state = EdgeSocketState::kAttached;
    socket.failedReattaches = 0;
  } else {
    setOwner(socket, std::nullopt);
    socket.state = EdgeSocketState::kOwnerless;
    ++socket.failedReattaches;
  }
  return Status::ok();
}

HoldResult EdgeSockets::hold(SocketId id, bool binary, std::string payload) {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) return HoldResult::kUnknownSocket;
  EdgeSocket& socket = it->second;
  if (socket.state == EdgeSocketState::kClosing) return HoldResult::kClosing;
  auto found = held_.find(socket.object);
  size_t messages = found == held_.end() ? 0 : found->second.messages.size();
  size_t bytes = found == held_.end() ? 0 : found->second.bytes;
  if (messages + 1 > limits_.maxMessagesPerObject ||
      payload.size() > limits_.maxBytesPerObject - std::min(bytes, limits_.maxBytesPerObject) ||
      payload.size() > limits_.maxBytesTotal - std::min(heldBytesTotal_, limits_.maxBytesTotal)) {
    return HoldResult::kOverLimit;
  }
  Hold& hold = found == held_.end() ? held_[socket.object] : found->second;
  hold.bytes += payload.size();
  heldBytesTotal_ += payload.size();
  hold.messages.push_back(SocketMessage{id, binary, std::move(payload)});
  return HoldResult::kHeld;
}

std::vector<SocketMessage> EdgeSockets::takeHeld(const ObjectKey& object, EdgeSocketState ready) {
  std::vector<SocketMessage> out;
  auto it = held_.find(object);
  if (it == held_.end()) return out;
  Hold& hold = it->second;
  std::deque<SocketMessage> kept;
  for (SocketMessage& m : hold.messages) {
    if (sockets_.at(m.socket).state == ready) {
      hold.bytes -= m.payload.size();
      heldBytesTotal_ -= m.payload.size();
      out.push_back(std::move(m));
    } else {
      kept.push_back(std::move(m));
    }
  }
  hold.messages = std::move(kept);
  if (hold.messages.empty()) held_.erase(it);
  return out;
}

size_t EdgeSockets::heldMessages(const ObjectKey& object) const {
  auto it = held_.find(object);
  return it == held_.end() ? 0 : it->second.messages.size();
}

size_t EdgeSockets::heldBytes(const ObjectKey& object) const {
  auto it = held_.find(object);
  return it == held_.end() ? 0 : it->second.bytes;
}

std::optional<std::string> EdgeSockets::autoRespond(SocketId id, std::string_view text,
                                                    int64_t nowMs) {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) return std::nullopt;
  EdgeSocket& socket = it->second;
  if (socket.state == EdgeSocketState::kClosing || !socket.autoResponse ||
      socket.autoResponse->request != text) {
    return std::nullopt;
  }
  socket.autoResponseAtMs = nowMs;
  return socket.autoResponse->response;
}

void EdgeSockets::setOwner(EdgeSocket& socket, std::optional<std::string> owner) {
  if (socket.owner) {
    auto it = byOwner_.find(*socket.owner);
    if (it != byOwner_.end()) {
      it->second.erase(socket.id);
      if (it->second.empty()) byOwner_.erase(it);
    }
  }
  socket.owner = std::move(owner);
  if (socket.owner) byOwner_[*socket.owner].insert(socket.id);
}

void EdgeSockets::dropHeldOf(SocketId id, const ObjectKey& object) {
  auto it = held_.find(object);
  if (it == held_.end()) return;
  Hold& hold = it->second;
  std::erase_if(hold.messages, [&](const SocketMessage& m) {
    if (m.socket != id) return false;
    hold.bytes -= m.payload.size();
    heldBytesTotal_ -= m.payload.size();
    return true;
  });
  if (hold.messages.empty()) held_.erase(it);
}

}  // namespace dohost::cluster
