// `gpushare top`: the status, refreshed in place, with GPU time as rates and bars. It only reads
// the shared state (no locks a tenant waits on, no sweeps), so watching never slows a tenant.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>

#include <fmt/format.h>

#include "commands.hpp"
#include "core/report.hpp"
#include "views.hpp"

namespace gpushare::tools {
namespace {

volatile sig_atomic_t g_stop = 0;
void request_stop(int) { g_stop = 1; }

// Keys without Enter while `top` runs in the foreground of a terminal; the terminal is put back
// however `top` ends: normally, by a signal it handles, by an exception, or around Ctrl-Z.
class RawKeyboard {
 public:
  RawKeyboard() {
    // Only a foreground process may change the terminal (a background one would be stopped).
    if (::isatty(STDIN_FILENO) == 0 || ::tcgetpgrp(STDIN_FILENO) != ::getpgrp()) return;
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    active_ = enter();
    if (active_) instance_ = this;
  }
  ~RawKeyboard() {
    if (active_) leave();
    instance_ = nullptr;
  }
  RawKeyboard(const RawKeyboard&) = delete;
  RawKeyboard& operator=(const RawKeyboard&) = delete;

  // Waits up to `timeout_ms` for a key; true when it was q (or Q).
  bool quit_pressed(int timeout_ms) const {
    if (!active_) {
      ::poll(nullptr, 0, timeout_ms);
      return false;
    }
    pollfd input{STDIN_FILENO, POLLIN, 0};
    if (::poll(&input, 1, timeout_ms) <= 0) return false;
    char key = 0;
    return ::read(STDIN_FILENO, &key, 1) == 1 && (key == 'q' || key == 'Q');
  }

  // Ctrl-Z: give the terminal back, stop; on `fg`, take it again.
  static void suspend(int) {
    const int saved_errno = errno;
    if (instance_ != nullptr && instance_->active_) instance_->leave();
    ::signal(SIGTSTP, SIG_DFL);
    ::raise(SIGTSTP);
    errno = saved_errno;
  }
  static void resume(int) {
    const int saved_errno = errno;
    if (instance_ != nullptr && instance_->active_) instance_->enter();
    ::signal(SIGTSTP, &RawKeyboard::suspend);
    errno = saved_errno;
  }

 private:
  bool enter() {
    termios raw = saved_;
    raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    return ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  void leave() { ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_); }

  static inline RawKeyboard* instance_ = nullptr;
  termios saved_{};
  bool active_ = false;
};

int terminal_width() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

// Writes a frame; false when the output is gone (a closed pipe: `gpushare top | head`).
bool write_frame(const std::string& text) {
  return std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0;
}

}  // namespace

int top_command(const TopOptions& options) {
  const auto path = resolve_state_path("top", options.state);
  if (!path) return kExitBadInput;
  auto state = open_existing(*path, SharedState::Mode::kReadOnly);
  if (!state) {
    fmt::print(stderr, "gpushare top: {}\n", state.error().message);
    return kExitFailure;
  }
  struct sigaction stop {};
  stop.sa_handler = request_stop;
  for (int signal_number : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(signal_number, &stop, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a closed pipe ends the loop through a failed write instead
  const bool on_terminal = ::isatty(STDOUT_FILENO) != 0 && ::tcgetpgrp(STDOUT_FILENO) == ::getpgrp();
  RawKeyboard keyboard;
  ::signal(SIGTSTP, &RawKeyboard::suspend);
  ::signal(SIGCONT, &RawKeyboard::resume);
  int status = 0;
  try {
    if (on_terminal) write_frame("\x1b[?25l");  // hide the cursor while redrawing
    std::optional<Report> previous;
    for (int frame = 0; g_stop == 0 && (options.iterations == 0 || frame < options.iterations); ++frame) {
      if (frame != 0 && keyboard.quit_pressed(static_cast<int>(options.interval_s * 1000))) break;
      if (g_stop != 0) break;
      Report report = build_report(**state);
      const std::string text =
          render_top(report, previous ? &*previous : nullptr, terminal_width(), options.interval_s);
      // On a terminal: redraw in place. Elsewhere (a pipe, a log): one frame after another.
      if (!write_frame((on_terminal ? "\x1b[H\x1b[2J" : (frame == 0 ? "" : "\n")) + text)) break;
      previous = std::move(report);
    }
  } catch (const std::exception& error) {
    fmt::print(stderr, "gpushare top: {}\n", error.what());
    status = kExitFailure;
  }
  if (on_terminal) write_frame("\x1b[?25h");
  return status;
}

}  // namespace gpushare::tools
