// `gpushare run` as a container's init (PID 1, or `--init`): CMD runs in a child while this process
// forwards termination signals to it, reaps every zombie and exits with CMD's status.
#pragma once

#include <functional>

namespace gpushare::tools {

// Forks; the child, with the caller's signal mask and SIGCHLD disposition back in place, calls
// `exec_command` (which returns only on failure, with the status to exit with). The parent stays
// as init until that child is gone and returns its status: its exit code, or 128 + the signal
// that killed it. Returns kExitFailure when the fork itself fails.
int run_as_init(const std::function<int()>& exec_command);

}  // namespace gpushare::tools
