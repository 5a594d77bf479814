#include "admin_requests.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/administration.hpp"
#include "core/compute_policy.hpp"
#include "core/size.hpp"

namespace gpushare::agent {

AdminRequests::AdminRequests(SharedState& state, TenantSessions& sessions, std::optional<std::string> policy_path,
                             std::optional<Policy>& policy, Log log)
    : state_(state), sessions_(sessions), policy_path_(std::move(policy_path)), policy_(policy), log_(std::move(log)) {
  // Blocked from the start, so that a SIGHUP sent as soon as the socket exists cannot end the agent.
  sigset_t hangup;
  sigemptyset(&hangup);
  sigaddset(&hangup, SIGHUP);
  if (::sigprocmask(SIG_BLOCK, &hangup, nullptr) == 0) hangup_fd_ = ::signalfd(-1, &hangup, SFD_CLOEXEC | SFD_NONBLOCK);
  if (hangup_fd_ < 0) hangup_error_ = std::strerror(errno);
}

AdminRequests::~AdminRequests() {
  if (hangup_fd_ >= 0) ::close(hangup_fd_);
}

Result<std::vector<Outgoing>> AdminRequests::handle(const Message& request) {
  Result<std::string> reply = Error{fmt::format("unexpected {}", message_type_name(message_type(request)))};
  if (const auto* quota = std::get_if<QuotaSet>(&request)) reply = quota_set(*quota);
  if (std::holds_alternative<PolicyReload>(request)) reply = reload_policy();
  if (!reply) return reply.error();
  return std::vector<Outgoing>{Outgoing{AdminReply{std::move(reply).value()}, {}}};
}

Result<std::string> AdminRequests::quota_set(const QuotaSet& request) {
  std::vector<std::string> done;
  if (request.memory_bytes) {
    if (auto set = set_tenant_memory_limit(state_, request.tenant, *request.memory_bytes); !set) return set.error();
    done.push_back(fmt::format("tenant '{}': memory limit {} on every GPU it uses", request.tenant,
                               format_size(*request.memory_bytes)));
  }
  ComputePolicyChange change;
  change.share_pct = request.share_pct;
  change.limit_pct = request.limit_pct;
  if (request.priority) change.priority = static_cast<Priority>(*request.priority);
  if (change.share_pct || change.limit_pct || change.priority) {
    if (auto set = set_tenant_compute_policy(state_, request.tenant, change); !set) return set.error();
    if (change.share_pct) done.push_back(fmt::format("tenant '{}': share {}%", request.tenant, *change.share_pct));
    if (change.limit_pct) {
      done.push_back(fmt::format("tenant '{}': limit {}", request.tenant,
                                 *change.limit_pct == 0 ? std::string("none") : fmt::format("{}%", *change.limit_pct)));
    }
    if (change.priority) {
      done.push_back(fmt::format("tenant '{}': priority {}", request.tenant, priority_name(*change.priority)));
    }
  }
  if (done.empty()) return Error{"nothing to set"};
  for (const auto& line : done) log_(line);
  return fmt::format("{}", fmt::join(done, "\n"));
}

Result<std::string> AdminRequests::reload_policy() {
  if (!policy_path_) return Error{"this agent runs without --policy: there is nothing to reload"};
  auto loaded = load_policy(*policy_path_);
  if (!loaded) {
    log_(fmt::format("policy reload refused, the old policy stays: {}", loaded.error().message));
    return Error{fmt::format("policy reload refused, the old policy stays: {}", loaded.error().message)};
  }
  policy_ = std::move(loaded).value();
  sessions_.apply_policy(*policy_, log_);
  const std::string done = fmt::format("policy {} reloaded: {} tenants", *policy_path_, policy_->tenants.size());
  log_(done);
  return done;
}

Status AdminRequests::reload_on_hangup(Server& server) {
  if (hangup_fd_ < 0) return Error{fmt::format("cannot watch SIGHUP: {}", hangup_error_)};
  server.watch(hangup_fd_, [this] {
    signalfd_siginfo info{};
    bool received = false;
    while (::read(hangup_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) received = true;
    if (!received) return;
    log_("SIGHUP: reloading the policy");
    (void)reload_policy();
  });
  return Ok{};
}

}  // namespace gpushare::agent
