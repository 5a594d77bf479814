// Running real processes from tests: a child with a controlled environment (the fake driver's, for
// one), its output captured and read back.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace gpushare::testing {

using Env = std::map<std::string, std::string>;

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed by one
  double cpu_seconds = 0;  // user + system time the process used
  std::string out;
  std::string err;
};

class Process {
 public:
  // Starts argv with the test's environment minus every gpushare/HAMi variable, plus `env`.
  Process(const std::vector<std::string>& argv, const Env& env) {
    std::vector<std::string> environment;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      const std::string text = *entry;
      if (text.rfind("GPUSHARE_", 0) == 0 || text.rfind("CUDA_DEVICE_", 0) == 0 || text.rfind("FAKE_CUDA_", 0) == 0 ||
          text.rfind("LD_PRELOAD=", 0) == 0) {
        continue;
      }
      environment.push_back(text);
    }
    for (const auto& [name, value] : env) environment.push_back(name + "=" + value);
    std::vector<char*> envp;
    for (auto& entry : environment) envp.push_back(entry.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = argv;
    std::vector<char*> argvp;
    for (auto& arg : args) argvp.push_back(arg.data());
    argvp.push_back(nullptr);

    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
    if (::posix_spawnp(&pid_, argvp[0], &actions, nullptr, argvp.data(), envp.data()) != 0) {
      throw std::runtime_error("cannot start " + argv.front());
    }
    posix_spawn_file_actions_destroy(&actions);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    out_fd_ = out_pipe[0];
    err_fd_ = err_pipe[0];
  }
  ~Process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void kill(int signal) const { ::kill(pid_, signal); }

  // Waits for the exit (killing the process after `timeout`) and collects its output.
  ProcessResult wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool out_open = out_fd_ >= 0, err_open = err_fd_ >= 0;
    while (out_open || err_open) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        ::kill(pid_, SIGKILL);
        break;
      }
      pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
      if (::poll(fds, 2, static_cast<int>(left.count())) < 0) break;
      char buffer[4096];
      for (int i = 0; i < 2; ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
        const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
        if (n > 0) {
          (i == 0 ? result_.out : result_.err).append(buffer, static_cast<std::size_t>(n));
        } else {
          (i == 0 ? out_open : err_open) = false;
          fds[i].fd = -1;
          if (i == 0) out_fd_ = (::close(out_fd_), -1); else err_fd_ = (::close(err_fd_), -1);
        }
      }
    }
    int status = 0;
    struct rusage usage {};
    if (pid_ > 0 && ::wait4(pid_, &status, 0, &usage) == pid_) {
      result_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      result_.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                            static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    }
    pid_ = -1;
    return result_;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  ProcessResult result_;
};

inline ProcessResult run(const std::vector<std::string>& argv, const Env& env) { return Process(argv, env).wait(); }

// The fake driver (in `fake_dir`) standing in for the real libcuda.so.1: found on LD_LIBRARY_PATH
// by programs linked with -lcuda, and named as the real driver that gpushare forwards to. `more`
// adds variables, and wins where it names one of these.
inline Env fake_driver_env(const std::string& fake_dir, Env more = {}) {
  more.insert({{"LD_LIBRARY_PATH", fake_dir}, {"GPUSHARE_REAL_LIBCUDA", fake_dir + "/libcuda.so.1"}});
  return more;
}

// The test programs print space-separated `key=value` words. The value of `key` on the first
// output line that starts with `line_start` and has one ("" = any line).
inline std::optional<std::string> output_value(const std::string& output, const std::string& key,
                                               const std::string& line_start = "") {
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(line_start, 0) != 0) continue;
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      if (word.rfind(key + "=", 0) == 0) return word.substr(key.size() + 1);
    }
  }
  return std::nullopt;
}

inline std::optional<std::uint64_t> output_u64(const std::string& output, const std::string& key,
                                               const std::string& line_start = "") {
  const auto value = output_value(output, key, line_start);
  if (!value) return std::nullopt;
  return std::stoull(*value);
}

inline std::optional<double> output_double(const std::string& output, const std::string& key,
                                           const std::string& line_start = "") {
  const auto value = output_value(output, key, line_start);
  if (!value) return std::nullopt;
  return std::stod(*value);
}

}  // namespace gpushare::testing
