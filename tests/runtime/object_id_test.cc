#include <doctest/doctest.h>

#include <set>

#include "dohost/object_id.h"

namespace dohost {

TEST_CASE("idFromName is deterministic, 64 lowercase hex, and keyed by class") {
  std::string a = idFromName("Counter", "alpha");
  CHECK(a == idFromName("Counter", "alpha"));
  CHECK(a.size() == 64);
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a != idFromName("Counter", "beta"));
  CHECK(a != idFromName("Other", "alpha"));
  CHECK(idFromName("Counter", "") != idFromName("Counter", " "));
}

TEST_CASE("newUniqueId gives distinct valid ids") {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    std::string id = newUniqueId("Counter");
    CHECK(id.size() == 64);
    CHECK(idFromString("Counter", id) == id);
    ids.insert(id);
  }
  CHECK(ids.size() == 100);
}

TEST_CASE("idFromString accepts ids of its class and rejects everything else") {
  std::string id = idFromName("Counter", "alpha");
  CHECK(idFromString("Counter", id) == id);
  std::string upper = id;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(idFromString("Counter", upper) == id);  // normalized to lowercase

  std::string error;
  CHECK_FALSE(idFromString("Other", id, &error));
  CHECK(error == "Object id is not valid for this class");
  CHECK_FALSE(idFromString("Counter", id.substr(0, 63), &error));
  CHECK(error == "Invalid object id: must be 64 hex digits");
  CHECK_FALSE(idFromString("Counter", id + "0", &error));
  std::string bad = id;
  bad[10] = 'g';
  CHECK_FALSE(idFromString("Counter", bad, &error));
  CHECK(error == "Invalid object id: must be 64 hex digits");
  std::string flipped = id;
  flipped[0] = flipped[0] == '0' ? '1' : '0';
  CHECK_FALSE(idFromString("Counter", flipped, &error));  // MAC no longer matches
  CHECK_FALSE(idFromString("Counter", "", &error));
}

}  // namespace dohost
