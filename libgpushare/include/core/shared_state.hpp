// Opening, creating and validating the mapped state file.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/platform.hpp"  // unix_now_ns, for the times written into the file
#include "core/result.hpp"
#include "core/shared_mutex.hpp"
#include "core/state_layout.hpp"

namespace gpushare {

class SharedState {
 public:
  enum class Mode {
    kCreateIfMissing,  // processes of tenants: the first one creates the file
    kExistingOnly,     // tools that change or sweep it (status, quota set) must not create a state nobody uses
    kReadOnly,         // watchers (top, the exporter, the NVML shadow): need only read permission, never
                       // create, initialise or write; state() must then only be read
  };

  // Where the path came from. A configured path (GPUSHARE_STATE, --state) is trusted as given; the
  // default one lies in a folder every local user can write, so a file there is used only when
  // it belongs to this user or to root (another user could have planted it to set our quotas).
  enum class Origin { kConfigured, kDefault };

  // Maps the state at `path`. Refuses, with a message that says what to do: a symbolic link, anything
  // but a regular file (never blocking on a FIFO), a file that is not a gpushare state, has
  // another ABI version or size, a damaged header or lock, and a file with a damaged header that
  // a live process still uses (it is never initialised again under them). Only kCreateIfMissing
  // creates or initialises. Never crashes on a bad file; no wait on another process is unbounded.
  static Result<std::unique_ptr<SharedState>> open(const std::string& path, Mode mode,
                                                   Origin origin = Origin::kConfigured);

  // Maps, read-only, the state file that `fd` (open for reading) names, with the same checks as
  // open; takes ownership of `fd`. For isolation mode's tenants, to whom the agent passes the
  // descriptor: they need no access to its path. `shown_path` names it in messages.
  static Result<std::unique_ptr<SharedState>> open_descriptor(int fd, const std::string& shown_path);
  ~SharedState();
  SharedState(const SharedState&) = delete;
  SharedState& operator=(const SharedState&) = delete;

  layout::StateLayout& state() { return *layout_; }
  const std::string& path() const { return path_; }
  // A path that reopens exactly the mapped file (a new open file description of the same inode),
  // even if `path()` has been replaced since.
  std::string descriptor_path() const;

  // Liveness probes, on this object's own open file description (so a process probing its own
  // slot, which it holds through another description, sees it as alive).
  // Returns true when the lock on that byte was free and is now held by this object.
  // REQUIRES: probe_mutex() held. Threads of one process share the description, so without it one
  // thread's unlock could release a slot another thread is still reclaiming.
  bool try_lock_slot(std::uint32_t slot_index);
  void unlock_slot(std::uint32_t slot_index);
  std::mutex& probe_mutex() { return probe_mutex_; }
  // Whether some process holds the slot's liveness lock, tested without taking it (so a watcher
  // never makes a dead process look alive to a concurrent sweep). Works in every mode.
  bool slot_locked(std::uint32_t slot_index) const;

 private:
  SharedState() = default;
  static Result<std::unique_ptr<SharedState>> open_opened(std::unique_ptr<SharedState> self, Mode mode,
                                                          Origin origin);
  std::string path_;
  int fd_ = -1;
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;
  layout::StateLayout* layout_ = nullptr;
  std::mutex probe_mutex_;
};

// Open-file-description locks on one byte. They belong to the open file description, not to the
// process, are released by the kernel when the last descriptor closes (so also on kill -9) and
// work across PID namespaces.
namespace ofd_lock {
bool try_lock(int fd, std::int64_t offset);  // non-blocking, exclusive
// Waits at most `wait` for the lock (the holder may be a process stopped while it held it).
Status lock_wait(int fd, std::int64_t offset, bool shared, std::chrono::nanoseconds wait);
// Whether another open file description holds a lock on the byte (F_OFD_GETLK: takes nothing).
bool held_elsewhere(int fd, std::int64_t offset, std::int64_t length = 1);
void unlock(int fd, std::int64_t offset);
}  // namespace ofd_lock

// Isolation mode's defaults: the node agent's socket and state file (agent/, `gpushare agent`).
inline constexpr const char* kAgentSocketPath = "/run/gpushare/agent.sock";
inline constexpr const char* kAgentStatePath = "/run/gpushare/gpushare.state";
// The agent's socket a process uses: GPUSHARE_AGENT when set (set but empty: none, the daemonless
// mode), else kAgentSocketPath when a socket is there; nullopt for the daemonless mode. Shared by
// tenants (interpose/), the NVML shadow and the tools.
std::optional<std::string> agent_socket_path();

// The state path used when none is configured: the agent's state where an agent runs, else a
// folder HAMi shares, else /dev/shm; which path is used is decided by resolved_state_path
// (core/settings.hpp).
std::string default_state_path();

}  // namespace gpushare
