// The agent's typed administration requests (protocol.hpp: QuotaSet, PolicyReload) and SIGHUP. The
// server has checked the caller (root or the admin group) before any of these run.
//   - QuotaSet changes a live tenant in the agent's state, as `gpushare quota set` does daemonless.
//   - PolicyReload and SIGHUP re-read the --policy file. A faulty file changes nothing: the old
//     policy stays, and the error (file:line) is logged and answered. A good one serves new
//     connections and is applied to the live tenants (TenantSessions::apply_policy).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/shared_state.hpp"
#include "policy.hpp"
#include "protocol.hpp"
#include "server.hpp"
#include "tenant_sessions.hpp"

namespace gpushare::agent {

class AdminRequests {
 public:
  using Log = std::function<void(std::string_view line)>;
  // `policy` is the agent's policy in force (nullopt: no --policy), replaced in place on reload.
  AdminRequests(SharedState& state, TenantSessions& sessions, std::optional<std::string> policy_path,
                std::optional<Policy>& policy, Log log);
  ~AdminRequests();
  AdminRequests(const AdminRequests&) = delete;
  AdminRequests& operator=(const AdminRequests&) = delete;

  // The answer to a typed admin request (REQUIRES: is_admin_message of its type, not AdminRequest).
  Result<std::vector<Outgoing>> handle(const Message& request);
  Result<std::string> quota_set(const QuotaSet& request);
  Result<std::string> reload_policy();
  // Reloads the policy on SIGHUP (blocked from construction on): has `server` watch a signalfd.
  Status reload_on_hangup(Server& server);

 private:
  SharedState& state_;
  TenantSessions& sessions_;
  std::optional<std::string> policy_path_;
  std::optional<Policy>& policy_;
  Log log_;
  int hangup_fd_ = -1;
  std::string hangup_error_;
};

}  // namespace gpushare::agent
