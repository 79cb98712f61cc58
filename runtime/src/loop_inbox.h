// LoopInbox: how other threads hand work to the event loop. post() queues a function and wakes
// the loop (the server sets the wake-up: lws_cancel_service); the loop runs what is queued, in
// order, from drain(). Without a wake-up (before the server starts, after it stopped) work
// stays queued until the next drain().
//
// Thread: post() and setWake() from any thread; drain() on the loop thread only.
#pragma once

#include <deque>
#include <functional>
#include <mutex>
#include <utility>

namespace dohost {

class LoopInbox {
 public:
  void post(std::function<void()> fn) {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(fn));
    if (wake_) wake_();  // under the lock: setWake(nullptr) cannot race with it
  }

  // The wake-up (nullptr: none). The server clears it before it destroys its context.
  void setWake(std::function<void()> wake) {
    std::lock_guard lock(mutex_);
    wake_ = std::move(wake);
  }

  // Runs what was queued before the call; what those functions post waits for the next one.
  void drain() {
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard lock(mutex_);
      batch.swap(queue_);
    }
    for (auto& fn : batch) fn();
  }

 private:
  std::mutex mutex_;
  std::deque<std::function<void()>> queue_;  // guarded by mutex_
  std::function<void()> wake_;               // guarded by mutex_
};

}  // namespace dohost
