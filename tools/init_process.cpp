// The init loop of `gpushare run` as PID 1. Signals are blocked and taken with sigwaitinfo, so no
// handler runs at an awkward moment and none is lost between two waits.
//
// CMD is made the leader of its own process group, and the foreground group of the terminal when
// init held it: a Ctrl-C typed at the terminal then reaches CMD's group once, from the kernel, not
// a second time through init. Forwarded signals go to that whole group (CMD and the children it
// did not move elsewhere), or to CMD alone once it has left the group (setsid, setpgid).
#include "init_process.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "commands.hpp"

namespace gpushare::tools {
namespace {

constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

sigset_t signals_init_waits_for() {
  sigset_t set;
  ::sigemptyset(&set);
  for (int signal : kForwardedSignals) ::sigaddset(&set, signal);
  ::sigaddset(&set, SIGCHLD);
  return set;
}

// In the child, before the exec: its own process group, and the terminal's foreground when this
// process's group had it. SIGTTOU is still blocked here, so tcsetpgrp does not stop the child.
void take_own_process_group() {
  const bool init_had_the_terminal = ::isatty(STDIN_FILENO) && ::tcgetpgrp(STDIN_FILENO) == ::getpgrp();
  ::setpgid(0, 0);
  if (init_had_the_terminal) ::tcsetpgrp(STDIN_FILENO, ::getpid());
}

void forward(int signal, pid_t child) {
  if (::getpgid(child) == child && ::kill(-child, signal) == 0) return;
  ::kill(child, signal);
}

int exit_status_of(int wait_status) {
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return WEXITSTATUS(wait_status);
}

}  // namespace

int run_as_init(const std::function<int()>& exec_command) {
  const sigset_t waited = signals_init_waits_for();
  sigset_t caller_mask;
  ::sigprocmask(SIG_BLOCK, &waited, &caller_mask);
  // An inherited SIG_IGN for SIGCHLD would have the kernel reap CMD itself, and its status lost.
  struct sigaction default_child {}, caller_child {};
  default_child.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &default_child, &caller_child);

  const pid_t child = ::fork();
  if (child < 0) {
    fmt::print(stderr, "gpushare run: cannot start CMD: fork: {}\n", std::strerror(errno));
    return kExitFailure;
  }
  if (child == 0) {
    take_own_process_group();
    ::sigaction(SIGCHLD, &caller_child, nullptr);
    ::sigprocmask(SIG_SETMASK, &caller_mask, nullptr);
    ::_exit(exec_command());
  }
  ::setpgid(child, child);  // also here: a signal may come before the child has run at all

  for (;;) {
    siginfo_t info{};
    const int signal = ::sigwaitinfo(&waited, &info);
    if (signal < 0) continue;  // EINTR: a signal outside the set (SIGSTOP/SIGCONT)
    if (signal != SIGCHLD) {
      forward(signal, child);
      continue;
    }
    // One SIGCHLD may stand for several exits: reap everything that is gone, CMD's orphans too.
    int status = 0;
    for (pid_t gone; (gone = ::waitpid(-1, &status, WNOHANG)) > 0;) {
      if (gone == child) return exit_status_of(status);
    }
  }
}

}  // namespace gpushare::tools
