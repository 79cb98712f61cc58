#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "dohost/log.h"
#include "support/temp_dir.h"

namespace dohost {
namespace {

// Runs `body` with stderr sent to a file; returns what was written.
template <typename F>
std::string captureStderr(F body) {
  testing::TempDir dir;
  std::string path = dir.path() + "/stderr";
  std::fflush(stderr);
  int saved = dup(fileno(stderr));
  REQUIRE(std::freopen(path.c_str(), "w", stderr) != nullptr);
  body();
  std::fflush(stderr);
  dup2(saved, fileno(stderr));
  close(saved);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

struct FormatGuard {
  ~FormatGuard() {
    setLogFormat(LogFormat::kText);
    setLogLevel(LogLevel::kInfo);
  }
};

}  // namespace

TEST_CASE("json log lines are one valid JSON object each, whatever the message holds") {
  FormatGuard guard;
  setLogLevel(LogLevel::kInfo);
  setLogFormat(LogFormat::kJson);
  std::string text = captureStderr([] {
    logLine(LogLevel::kWarn, "quote \" backslash \\ newline\n tab\t bell\x07 é", "Cls", "abc");
    logLine(LogLevel::kInfo, "no class");
    logLine(LogLevel::kDebug, "filtered out");
    logLine(LogLevel::kError, std::string("bad utf-8 \xff\xfe end"), "C\"x");
  });
  auto got = lines(text);
  REQUIRE(got.size() == 3);
  auto first = nlohmann::ordered_json::parse(got[0]);
  CHECK(first["level"] == "warn");
  CHECK(first["class"] == "Cls");
  CHECK(first["id"] == "abc");
  CHECK(first["msg"] == "quote \" backslash \\ newline\n tab\t bell\x07 é");
  std::vector<std::string> keys;
  for (auto& [k, v] : first.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"time", "level", "class", "id", "msg"});
  std::string time = first["time"];
  CHECK(time.size() == 24);
  CHECK(time.back() == 'Z');
  auto second = nlohmann::json::parse(got[1]);
  CHECK_FALSE(second.contains("class"));
  CHECK_FALSE(second.contains("id"));
  CHECK(second["msg"] == "no class");
  auto third = nlohmann::json::parse(got[2]);
  CHECK(third["class"] == "C\"x");
  CHECK(third["msg"] == "bad utf-8 \u00ff\u00fe end");  // each byte as \u00XX
}

TEST_CASE("text log lines keep the key=value layout") {
  FormatGuard guard;
  setLogLevel(LogLevel::kInfo);
  std::string text = captureStderr([] { logLine(LogLevel::kWarn, "say \"hi\"", "Cls", "abc"); });
  CHECK(text.find(" level=warn class=Cls id=abc msg=\"say \\\"hi\\\"\"\n") != std::string::npos);
  LogFormat format = LogFormat::kText;
  CHECK(parseLogFormat("json", &format));
  CHECK(format == LogFormat::kJson);
  CHECK(parseLogFormat("text", &format));
  CHECK(format == LogFormat::kText);
  CHECK_FALSE(parseLogFormat("JSON", &format));
  CHECK_FALSE(parseLogFormat("", &format));
}

}  // namespace dohost
