// A driver for the fuzz targets in builds without libFuzzer (GCC, the ASan+UBSan build that
// tools/test runs): it takes the command line run.py gives libFuzzer (folders of inputs, then
// -runs=N, -seed=S, -artifact_prefix=P; other flags are ignored), runs every input of the
// folders, then mutated copies of them until N inputs have run. The mutations are libFuzzer's
// simplest ones (bytes flipped, set, inserted, erased, copied, and pieces of other inputs), in
// an order fixed by the seed, so a failure here comes back on the next run. Long runs with
// coverage guidance use the libFuzzer build (tools/fuzz).
//
// The input being run is written to <prefix>crash-current first and removed at the end, so
// an input that stops the process is kept, as libFuzzer keeps it.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

constexpr size_t kMaxInput = 64 * 1024;

// Bytes that mean something to the parsers behind the targets.
const std::string_view kTokens[] = {
    "{", "}", "[", "]", "\"", ":", ",", "\\u0000", "\r\n", "\n", "%", "%00", "%zz", "\0",
    "\xff", "\xc3\x28", "-1", "1e308", "99999999999999999999", "null", "true", "[[[[[[[[",
    "\x81\x85", "\x88\x80", "\x7f", "HTTP/1.1", "Content-Length: ", "Upgrade: websocket",
    "\"type\":", "\"data\":", "?token=", "&", "="};

std::string readFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void mutate(std::string& s, const std::vector<std::string>& corpus, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  int steps = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < steps; ++i) {
    switch (rng() % 8) {
      case 0:
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(rng());
        break;
      case 2:
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(pick(s.size() + 1)), static_cast<char>(rng()));
        break;
      case 3:
        if (!s.empty()) {
          size_t at = pick(s.size());
          s.erase(at, 1 + pick(std::min<size_t>(s.size() - at, 16)));
        }
        break;
      case 4:
        if (!s.empty()) {  // a piece of itself, repeated elsewhere
          size_t from = pick(s.size()), len = 1 + pick(std::min<size_t>(s.size() - from, 64));
          std::string piece = s.substr(from, len);
          s.insert(pick(s.size() + 1), piece);
        }
        break;
      case 5: {
        std::string_view t = kTokens[pick(std::size(kTokens))];
        s.insert(pick(s.size() + 1), t.empty() ? std::string(1, '\0') : std::string(t));
        break;
      }
      case 6:
        if (!corpus.empty()) {  // splice: the head of this one, the tail of another
          const std::string& other = corpus[pick(corpus.size())];
          s = s.substr(0, pick(s.size() + 1)) + other.substr(pick(other.size() + 1));
        }
        break;
      default:
        if (!s.empty()) s.resize(pick(s.size() + 1));
        break;
    }
  }
  if (s.size() > kMaxInput) s.resize(kMaxInput);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t runs = 0, seed = 1;
  std::string prefix;
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.rfind("-runs=", 0) == 0) {
      runs = std::strtoull(argv[i] + 6, nullptr, 10);
    } else if (a.rfind("-seed=", 0) == 0) {
      seed = std::strtoull(argv[i] + 6, nullptr, 10);
    } else if (a.rfind("-artifact_prefix=", 0) == 0) {
      prefix = std::string(a.substr(17));
    } else if (!a.empty() && a[0] != '-') {
      std::error_code ec;
      if (std::filesystem::is_directory(a, ec)) {
        for (const auto& e : std::filesystem::directory_iterator(a)) {
          if (e.is_regular_file()) inputs.push_back(e.path());
        }
      } else {
        inputs.emplace_back(a);
      }
    }
  }
  LLVMFuzzerInitialize(&argc, &argv);
  std::sort(inputs.begin(), inputs.end());
  std::vector<std::string> corpus;
  for (const auto& p : inputs) corpus.push_back(readFile(p));

  const std::string current = prefix + "crash-current";
  auto runOne = [&](const std::string& input) {
    if (!prefix.empty()) std::ofstream(current, std::ios::binary | std::ios::trunc) << input;
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  };
  uint64_t done = 0;
  for (const std::string& input : corpus) {
    runOne(input);
    ++done;
  }
  std::mt19937_64 rng(seed);
  while (done < runs) {
    std::string input = corpus.empty() ? std::string() : corpus[rng() % corpus.size()];
    mutate(input, corpus, rng);
    runOne(input);
    ++done;
  }
  if (!prefix.empty()) std::remove(current.c_str());
  std::fprintf(stderr, "stat::number_of_executed_units: %llu\n", static_cast<unsigned long long>(done));
  return 0;
}
