// libgpushare-real-nvml.so has no code. It stands for the real NVML: its dynamic section names the
// places drivers install libnvidia-ml.so.1 as optional auxiliary filters (see CMakeLists.txt here),
// so loading it loads the real NVML and makes its symbols visible through the shadow's handle.
