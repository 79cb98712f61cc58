// Exceptions at the runtime's C boundaries: timers run from libev/lws_sul callbacks, and the
// class registry that plugins fill.
#include <stdexcept>

#include "runtime/test_objects.h"

namespace dohost::testing {

TEST_CASE_FIXTURE(RuntimeFixture, "a throwing timer is contained and the loop carries on") {
  int ranAfter = 0;
  runtime->defer([] { throw std::runtime_error("deferred work failed"); });
  runtime->defer([&] { ++ranAfter; });
  body("/timer?ms=50");  // an object's timer, due after the failing one
  CHECK_NOTHROW(advance(Duration(100)));
  CHECK(ranAfter == 1);
  CHECK(body("/get") == "1");  // the object's timer ran and committed
  runtime->schedule(clock.now(), [] { throw 42; });  // not even a std::exception
  CHECK_NOTHROW(advance(Duration(1)));
  CHECK(body("/inc") == "2");
}

TEST_CASE_FIXTURE(RuntimeFixture, "a class registered twice is an error and the first stays") {
  int first = 0, second = 0;
  registry.addClass("Twice", [&](ObjectState& s) -> std::unique_ptr<DurableObject> {
    ++first;
    return std::make_unique<Counter>(s);
  });
  CHECK_THROWS_WITH_AS(registry.addClass("Twice",
                                         [&](ObjectState& s) -> std::unique_ptr<DurableObject> {
                                           ++second;
                                           return std::make_unique<Counter>(s);
                                         }),
                       "object class Twice is registered twice", std::invalid_argument);
  CHECK_THROWS_AS(registry.addClass<Counter>("Counter"), std::invalid_argument);
  Request request("GET", "/inc");
  CHECK(runtime->fetch(runtime->slot("Twice", idFromName("Twice", "x"), "x"), request).body() == "1");
  CHECK(first == 1);
  CHECK(second == 0);
}

}  // namespace dohost::testing
