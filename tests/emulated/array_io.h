// Reading and writing the array files of the emulated test harness (tests/emulated_harness.py
// documents the format): named little-endian arrays, one after another.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace fvtest {

struct Array {
  std::string dtype;  // "f4", "f8" or "i8"
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  template <typename T>
  T* data() {
    return reinterpret_cast<T*>(bytes.data());
  }
  int64_t scalar_int() const {
    int64_t v = 0;
    std::memcpy(&v, bytes.data(), sizeof v);
    return v;
  }
};

using Arrays = std::map<std::string, Array>;

inline Arrays read_arrays(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open " + path);
  Arrays out;
  char line[256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    // "<name> <dtype> <ndim> <dims...>\n" then the raw data
    char name[128], dtype[8];
    int ndim = 0, used = 0;
    if (std::sscanf(line, "%127s %7s %d%n", name, dtype, &ndim, &used) != 3) {
      throw std::runtime_error("bad array header in " + path + ": " + line);
    }
    Array a;
    a.dtype = dtype;
    const char* p = line + used;
    for (int d = 0; d < ndim; ++d) {
      long long s = 0;
      int n = 0;
      std::sscanf(p, "%lld%n", &s, &n);
      p += n;
      a.shape.push_back(s);
    }
    a.bytes.resize(static_cast<size_t>(a.numel()) * (a.dtype == "f4" ? 4 : 8));
    if (!a.bytes.empty() && std::fread(a.bytes.data(), 1, a.bytes.size(), f) != a.bytes.size()) {
      throw std::runtime_error("truncated array " + std::string(name) + " in " + path);
    }
    out[name] = std::move(a);
  }
  std::fclose(f);
  return out;
}

inline void write_array(FILE* f, const std::string& name, const char* dtype,
                        const std::vector<int64_t>& shape, const void* data, size_t elem_bytes) {
  std::fprintf(f, "%s %s %zu", name.c_str(), dtype, shape.size());
  int64_t n = 1;
  for (int64_t s : shape) {
    std::fprintf(f, " %lld", static_cast<long long>(s));
    n *= s;
  }
  std::fprintf(f, "\n");
  if (n > 0) std::fwrite(data, elem_bytes, static_cast<size_t>(n), f);  // data may be null when empty
}

template <typename T>
const char* dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                    std::is_same_v<T, int64_t>,
                "array files hold float, double or int64");
  if constexpr (std::is_same_v<T, float>) return "f4";
  if constexpr (std::is_same_v<T, double>) return "f8";
  return "i8";
}

}  // namespace fvtest
