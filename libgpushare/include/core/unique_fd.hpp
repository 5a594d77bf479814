// A file descriptor closed on every path out of its scope. Header-only: the tools and the kube
// library use it without anything else of the core.
#pragma once

#include <unistd.h>

namespace gpushare {

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace gpushare
