// The agent's side of each tenant process: its place in the shared state, which the agent alone
// writes. Per connection: a slot in the tenant the policy names, the process's private page (a
// sealed memfd mapped over the slot's owner page here and passed to the process with a read-only
// descriptor of the state), the GPUs it
// attached, and its memory lease.
//
// Memory leases: a process spends quota locally from ProcessSlot::lease_left_bytes (no system call
// per allocation) and asks for more with Lease when that is too small. The agent charges a lease to
// the process's slot before handing it out, so the ledger never holds more than the quota, and it
// takes unspent leases back (its own first, then every other process's of the tenant) before it
// refuses anyone. What a process writes into its page is untrusted: a lease taken back is clamped
// to what the slot holds.
#pragma once

#include <bitset>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/registry.hpp"
#include "core/result.hpp"
#include "core/shared_state.hpp"
#include "identity.hpp"
#include "listen_socket.hpp"
#include "recovery.hpp"
#include "server.hpp"

namespace gpushare::agent {

// Where a process runs on Kubernetes (kube_tenants.hpp): its pod and container, for the labels
// of its tenant's metrics.
struct PodOrigin {
  std::string uid, namespace_name, pod, container;  // container "" when not known
};

class TenantSessions {
 public:
  // REQUIRES: `state` opened read-write by the agent, the registry's hooks installed, the page size
  // equal to layout::kSlotPageBytes (check_page_size).
  explicit TenantSessions(SharedState& state);
  ~TenantSessions();
  TenantSessions(const TenantSessions&) = delete;
  TenantSessions& operator=(const TenantSessions&) = delete;

  static Status check_page_size();

  // The policy's (or the pod's) word on a connection, recorded when it said Hello.
  void assigned(const SocketPeer& peer, Assignment assignment, std::optional<PodOrigin> pod = std::nullopt);
  // A tenant's request; the answers to send. `passed_fds`: what the client passed (Rejoin's page);
  // those kept are taken out.
  Result<std::vector<Outgoing>> handle(const SocketPeer& peer, const Message& request, std::vector<int>& passed_fds);
  // A restarted agent's slots waiting for their processes (null once there are none to wait for).
  void set_recovery(Recovery* recovery) { recovery_ = recovery; }
  // The connection closed: its bytes and slot go back at once.
  void disconnected(std::uint64_t connection_id);

  std::size_t session_count() const { return sessions_.size(); }
  // A reloaded policy: each live session still mapped to its tenant takes the new limits on the
  // GPUs it attached; one mapped elsewhere keeps its tenant until it reconnects (logged). Sessions
  // of pods (--kubernetes) are their pods' to decide: left alone.
  void apply_policy(const Policy& policy, const std::function<void(std::string_view)>& log);
  // The same for any source of assignments: `reassign` answers for a live session's identity (and
  // pod, if it came from one), or nullopt to leave it alone; `source` names it in log lines.
  using Reassign =
      std::function<std::optional<Result<Assignment>>(const PeerIdentity&, const std::optional<PodOrigin>&)>;
  void reassign_live(const Reassign& reassign, std::string_view source,
                     const std::function<void(std::string_view)>& log);
  // The slot of a connection that has joined.
  std::optional<std::uint32_t> slot_of(std::uint64_t connection_id) const;
  // Whether a slot belongs to a connected process.
  bool slot_live(std::uint32_t slot) const;

 private:
  struct Session;
  Result<std::vector<Outgoing>> join(const SocketPeer& peer, Session& session, const Join& join);
  Result<std::vector<Outgoing>> rejoin(const SocketPeer& peer, Session& session, const Rejoin& rejoin,
                                       std::vector<int>& passed_fds);
  // Maps `fd` (a one-page memfd) over the session's slot's owner page.
  Status map_page_fd(Session& session, int fd);
  Result<std::vector<Outgoing>> attach(Session& session, const AttachGpu& attach);
  Result<std::vector<Outgoing>> lease(Session& session, const Lease& lease);
  void trim(Session& session, std::uint32_t gpu);
  // Moves a session's unspent lease on `gpu` back to its tenant; returns the bytes.
  std::uint64_t take_back_lease(Session& session, std::uint32_t gpu, std::uint64_t keep = 0);
  Status map_page(Session& session);
  void unmap_page(Session& session);

  SharedState& state_;
  int state_fd_ = -1;       // read-write: for mapping a slot's file page back
  int state_read_fd_ = -1;  // read-only: passed to each process with Joined
  std::map<std::uint64_t, std::unique_ptr<Session>> sessions_;
  std::bitset<layout::kMaxSlots> live_slots_;
  Recovery* recovery_ = nullptr;

 public:
  // The joined processes: each one's pid (SO_PEERCRED's, in the agent's PID namespace) and slot.
  std::vector<std::pair<pid_t, std::uint32_t>> joined_processes() const;
  // The pods of the joined processes that came from one, by tenant.
  std::map<std::string, std::vector<PodOrigin>> joined_pods() const;
};

}  // namespace gpushare::agent
