// FrameQueue: a socket's outbound frames, first in first out. Unlike std::deque it allocates
// nothing while empty, which is what almost every socket is (hibernated sockets included).
#pragma once

#include <vector>

#include "internal.h"

namespace dohost {

class FrameQueue {
 public:
  bool empty() const { return head_ == frames_.size(); }
  void push_back(FramePtr frame) { frames_.push_back(std::move(frame)); }
  FramePtr& front() { return frames_[head_]; }
  void pop_front() {
    frames_[head_++].reset();
    if (head_ == frames_.size()) {
      clear();
    } else if (head_ >= 64 && head_ * 2 >= frames_.size()) {
      frames_.erase(frames_.begin(), frames_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  void clear() {
    std::vector<FramePtr>().swap(frames_);  // give the memory back
    head_ = 0;
  }

 private:
  std::vector<FramePtr> frames_;
  size_t head_ = 0;  // frames_[0, head_) were sent
};

}  // namespace dohost
