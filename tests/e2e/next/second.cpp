extern "C" int next_probe_value() { return 2; }
extern "C" int next_probe_second_loaded() { return 1; }
