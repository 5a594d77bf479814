// `gpushare top`: the status, refreshed in place, with GPU time as rates and bars. It only reads
// the shared state (no locks a tenant waits on, no sweeps), so watching never slows a tenant.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <optional>

#include <fmt/format.h>

#include "commands.hpp"
#include "gpushare/report.hpp"
#include "views.hpp"

namespace gpushare::tools {
namespace {

volatile sig_atomic_t g_stop = 0;
void request_stop(int) { g_stop = 1; }

// Keys without Enter while `top` runs; the terminal is put back however it ends.
class RawKeyboard {
 public:
  RawKeyboard() {
    if (::isatty(STDIN_FILENO) == 0 || ::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~RawKeyboard() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
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

 private:
  termios saved_{};
  bool active_ = false;
};

int terminal_width() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

}  // namespace

int top_command(const TopOptions& options) {
  auto state = open_existing(options.state);
  if (!state) {
    fmt::print(stderr, "gpushare top: {}\n", state.error().message);
    return kExitFailure;
  }
  struct sigaction action {};
  action.sa_handler = request_stop;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  const bool on_terminal = ::isatty(STDOUT_FILENO) != 0;
  RawKeyboard keyboard;
  if (on_terminal) fmt::print("\x1b[?25l");  // hide the cursor while redrawing
  std::optional<Report> previous;
  for (int frame = 0; g_stop == 0 && (options.iterations == 0 || frame < options.iterations); ++frame) {
    if (frame != 0 && keyboard.quit_pressed(static_cast<int>(options.interval_s * 1000))) break;
    if (g_stop != 0) break;
    Report report = build_report(**state);
    const std::string text = render_top(report, previous ? &*previous : nullptr, terminal_width(), options.interval_s);
    // On a terminal: redraw in place. Elsewhere (a pipe, a log): one frame after another.
    fmt::print("{}{}", on_terminal ? "\x1b[H\x1b[2J" : (frame == 0 ? "" : "\n"), text);
    std::fflush(stdout);
    previous = std::move(report);
  }
  if (on_terminal) fmt::print("\x1b[?25h");
  return 0;
}

}  // namespace gpushare::tools
