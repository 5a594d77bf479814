#include <cstdio>

extern "C" int next_probe_call_next();
extern "C" int next_probe_second_loaded();  // keeps the second library in the link

int main() {
  const int value = next_probe_call_next();
  std::printf("next=%d\n", value);
  return value == 2 && next_probe_second_loaded() == 1 ? 0 : 1;
}
