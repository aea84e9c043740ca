// The regression driver for the fuzz targets under the normal (gcc) build:
// runs a target's LLVMFuzzerTestOneInput on every file of its seed corpus
// (tests/fuzz/corpus/NAME/) and on kMutations deterministic mutations of
// each seed, so every `./dev test` exercises each target. The coverage-
// guided runs are `./dev fuzz` (clang, libFuzzer).
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

constexpr int kMutations = 2000;

std::vector<std::string> Seeds(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    out.push_back(ss.str());
  }
  closedir(d);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  std::vector<std::string> seeds = Seeds(argv[1]);
  if (seeds.empty()) {
    std::fprintf(stderr, "no seeds in %s\n", argv[1]);
    return 1;
  }
  std::mt19937_64 rng(1);
  size_t runs = 0;
  for (const std::string& seed : seeds) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(seed.data()), seed.size());
    ++runs;
    for (int i = 0; i < kMutations; ++i) {
      std::string m = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        switch (rng() % 4) {
          case 0:  // flip a byte
            if (!m.empty()) m[rng() % m.size()] = static_cast<char>(rng());
            break;
          case 1:  // truncate
            if (!m.empty()) m.resize(rng() % m.size());
            break;
          case 2:  // insert
            m.insert(m.begin() + (m.empty() ? 0 : rng() % m.size()), static_cast<char>(rng()));
            break;
          case 3:  // set a little-endian word to an edge value
            if (m.size() >= 4) {
              static const uint32_t edges[] = {0, 1, 0xffffffffu, 0x7fffffffu, 4096, 4097};
              const uint32_t v = edges[rng() % 6];
              std::memcpy(&m[rng() % (m.size() - 3)], &v, 4);
            }
            break;
        }
      }
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(m.data()), m.size());
      ++runs;
    }
  }
  std::printf("%zu inputs from %zu seeds: no crash, every check held\n", runs, seeds.size());
  return 0;
}
