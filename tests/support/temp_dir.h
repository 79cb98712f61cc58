// A fresh folder under /tmp, removed with everything in it when the test ends.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace dohost::testing {

class TempDir {
 public:
  // Under `base`, or the system's temporary folder when it is empty.
  explicit TempDir(const std::string& base = {}) {
    std::filesystem::path parent = base.empty() ? std::filesystem::temp_directory_path()
                                                : std::filesystem::path(base);
    std::string pattern = (parent / "dohost-test-XXXXXX").string();
    char* made = mkdtemp(pattern.data());
    if (made == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace dohost::testing
