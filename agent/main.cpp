// gpushare-agent: the node agent of isolation mode (docs/architecture.md). Run as
// `gpushare agent [OPTIONS]` (tools/agent_command.cpp execs this program). It owns the state file
// (the only writer; tenants map it read-only), assigns each connecting process its tenant under the
// policy, keeps its slot, private page and memory lease (tenant_sessions.hpp), and admits
// administrators' requests only from root and the --admin-group.
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "admin_requests.hpp"
#include "escape_rounds.hpp"
#include "identity.hpp"
#include "kube_pod_watch.hpp"
#include "kube_tenants.hpp"
#include "listen_socket.hpp"
#include "policy.hpp"
#include "core/compute_slot_release.hpp"
#include "core/registry.hpp"
#include "core/shared_state.hpp"
#include "core/size.hpp"
#include "recovery.hpp"
#include "server.hpp"
#include "slice_service.hpp"
#include "tenant_sessions.hpp"
#include "version_line.hpp"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

void log_info(std::string_view line) { fmt::print(stderr, "gpushare-agent: info: {}\n", line); }

std::optional<gid_t> resolve_group(const std::string& name) {
  std::vector<char> buffer(16384);
  group entry{};
  group* found = nullptr;
  while (::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) == ERANGE && buffer.size() < (1u << 20)) {
    buffer.resize(buffer.size() * 2);
  }
  if (found == nullptr) return std::nullopt;
  return found->gr_gid;
}

// The one admin request served so far: it tells an administrator that the agent admits it.
gpushare::Result<std::string> serve_admin(const gpushare::agent::SocketPeer& peer, std::string_view command) {
  if (command == "check") return fmt::format("admin access granted to uid {}", peer.credentials.uid);
  return gpushare::Error{fmt::format("unknown admin request '{}' (this agent serves: check)", command)};
}

// The state file, the agent's alone: created (with its folder) when missing, refused when someone
// else owns it, readable by everyone and writable by the agent only.
gpushare::Result<std::unique_ptr<gpushare::SharedState>> open_agent_state(const std::string& path) {
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  std::error_code ignored;
  if (!folder.empty() && !std::filesystem::exists(folder, ignored) && ::mkdir(folder.c_str(), 0755) != 0 &&
      errno != EEXIST) {
    return gpushare::Error{fmt::format("cannot create {}: {}", folder.string(), std::strerror(errno))};
  }
  struct stat info {};
  if (::lstat(path.c_str(), &info) == 0 && (!S_ISREG(info.st_mode) || info.st_uid != ::geteuid())) {
    return gpushare::Error{fmt::format("{} is not a file of this agent's user (uid {}); remove it or name another "
                                       "--state",
                                       path, ::geteuid())};
  }
  auto state = gpushare::SharedState::open(path, gpushare::SharedState::Mode::kCreateIfMissing);
  if (!state) return state.error();
  if (::chmod(path.c_str(), 0644) != 0) {
    return gpushare::Error{fmt::format("cannot make {} read-only for tenants: {}", path, std::strerror(errno))};
  }
  return state;
}

// The tenant of a peer: its pod's under --kubernetes when its cgroup names one, else the policy's
// (without a policy, none). Its credentials come from the socket, its cgroup is read while its
// connection is open (a process whose cgroup cannot be read matches no cgroup rule and no pod),
// then the pid checked to be still the connecting process's (refused otherwise).
gpushare::Result<std::string> assign_peer(const gpushare::agent::Policy* policy, gpushare::agent::KubeTenants* kube,
                                          gpushare::agent::TenantSessions& sessions,
                                          const gpushare::agent::SocketPeer& peer) {
  gpushare::agent::PeerIdentity identity{peer.credentials.uid, peer.credentials.gid,
                                         static_cast<pid_t>(peer.credentials.pid), ""};
  if (auto cgroup = gpushare::agent::read_cgroup(identity.pid)) identity.cgroup = std::move(cgroup).value();
  // The pid is the connecting process's at connect time: what was read must still be its.
  if (auto same = gpushare::agent::check_peer_process(peer); !same) return same.error();
  std::optional<gpushare::agent::PodOrigin> origin;
  gpushare::Result<gpushare::agent::Assignment> assignment = gpushare::Error{""};
  if (auto in_pod = kube != nullptr ? kube->assign(identity) : std::nullopt) {
    if (!*in_pod) return in_pod->error();
    origin = in_pod->value().origin;
    assignment = std::move(in_pod->value().assignment);
  } else if (policy != nullptr) {
    assignment = gpushare::agent::assign(*policy, identity);
    if (!assignment) return assignment.error();
  } else {
    return gpushare::Error{fmt::format("pid {} runs in no pod, and the agent has no --policy", identity.pid)};
  }
  std::string tenant = assignment->tenant;
  log_info(fmt::format("pid {} uid {}: tenant {} ({})", identity.pid, identity.uid, tenant, assignment->reason));
  sessions.assigned(peer, std::move(assignment).value(), std::move(origin));
  return tenant;
}

void serve_slice_message(gpushare::agent::SliceService& slices, std::uint32_t slot,
                         const gpushare::agent::Message& message) {
  if (const auto* wanted = std::get_if<gpushare::agent::SliceWanted>(&message)) slices.wanted(slot, wanted->gpu);
  if (const auto* done = std::get_if<gpushare::agent::SliceDone>(&message)) {
    slices.done(slot, done->gpu, done->slice_seen, done->drained_at_ns);
  }
  if (const auto* renew = std::get_if<gpushare::agent::SliceRenew>(&message)) slices.renew(slot, renew->gpu);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpushare-agent: the node agent of isolation mode: the only writer of the shared state; tenants "
               "and tools talk to it over a Unix socket and are known by the kernel's word, not their own.\n"};
  app.name("gpushare agent");
  app.set_version_flag("--version", gpushare::agent::version_line(GPUSHARE_VERSION));
  std::string socket_path = gpushare::kAgentSocketPath;
  std::string state_path = gpushare::kAgentStatePath;
  std::optional<std::string> policy_path;
  std::optional<std::string> admin_group;
  app.add_option("--socket", socket_path,
                 "The socket to listen on, created mode 0666 in a directory only the agent may write "
                 "(default /run/gpushare/agent.sock)");
  app.add_option("--state", state_path,
                 "The shared state file, written by the agent only and readable by everyone (default "
                 "/run/gpushare/gpushare.state; created when missing)");
  app.add_option("--policy", policy_path,
                 "The policy file (docs/agent-policy.md): who is which tenant, with which limits. Each Hello is "
                 "answered with the peer's tenant, or refused. Default /etc/gpushare/policy.toml when it exists; "
                 "without a policy no process can join a tenant");
  app.add_option("--admin-group", admin_group,
                 "Members of this group may send administration requests, as root may; everyone else is refused");
  // The escape watch (docs/escaped-processes.md).
  std::string enforce = "report";
  double enforce_grace_s = 30;
  std::string context_allowance = "1GiB";
  double nvml_interval_s = 5;
  app.add_option("--enforce", enforce,
                 "What to do with a GPU process NVML lists beyond the ledger: report (log and publish it) or kill "
                 "(also SIGKILL it once the finding has stood for --enforce-grace) (default report)")
      ->check(CLI::IsMember({"report", "kill"}));
  // Bounded so that the durations they become cannot overflow.
  constexpr double kMostSeconds = 7 * 24 * 3600;
  app.add_option("--enforce-grace", enforce_grace_s, "Seconds a finding must stand before --enforce kill (default 30)")
      ->check(CLI::Range(0.0, kMostSeconds));
  app.add_option("--context-allowance", context_allowance,
                 "What a connected process may use on a GPU beyond its ledger, for its CUDA context (default 1GiB)");
  app.add_option("--nvml-interval", nvml_interval_s,
                 "Seconds between two comparisons of NVML's processes with the ledger; 0 turns the watch off "
                 "(default 5)")
      ->check(CLI::Range(0.0, kMostSeconds));
  // Pod identity (docs/agent-policy.md, "On Kubernetes").
  bool kubernetes = false;
  gpushare::agent::KubeFlags kube_flags;
  std::string tenant_labels_path = gpushare::kube::kTenantLabelsPath;
  app.add_flag("--kubernetes", kubernetes,
               "A process in a pod is that pod's tenant, with the limits of its gpushare.io annotations, as the API "
               "server says (a watch of this node's pods with the pod's service account); others follow --policy");
  app.add_option("--node", kube_flags.node, "This node's name under --kubernetes (default $NODE_NAME)");
  app.add_option("--kube-api", kube_flags.api,
                 "The API server, https://HOST:PORT (default from $KUBERNETES_SERVICE_HOST and _PORT)");
  app.add_option("--kube-token-file", kube_flags.token_file,
                 "The bearer token, re-read at each reconnection (default the service account's)");
  app.add_option("--kube-ca-file", kube_flags.ca_file, "The API server's CA (default the service account's)");
  app.add_option("--kubelet-cgroup-root", kube_flags.kubelet_cgroup_root,
                 "Under --kubernetes, the kubelet's --cgroup-root as cgroup paths show it (e.g. /kubelet.slice); a "
                 "pod's cgroup path must start there (default /)");
  app.add_option("--tenant-labels", tenant_labels_path,
                 "Under --kubernetes, the file naming each tenant's namespace, pod and container for the exporter "
                 "(default /run/gpushare/tenant-labels.json)");
  app.footer("Runs until SIGTERM or SIGINT. SIGHUP, or `gpushare agent reload` from root or the admin group, re-reads "
             "--policy: a faulty file keeps the policy in force (logged with file:line), a good one applies to new "
             "connections and to the limits of live tenants. Exit status: 0 when stopped by a signal; 1 when the "
             "socket cannot be served; 2 for bad options.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : kExitBadInput;
  }

  gpushare::agent::EscapeWatchConfig watch;
  if (auto allowance = gpushare::parse_size(context_allowance); allowance) {
    watch.context_allowance_bytes = allowance.value();
  } else {
    fmt::print(stderr, "gpushare-agent: --context-allowance: {}\n", allowance.error().message);
    return kExitBadInput;
  }
  watch.enforcement.enforce = enforce == "kill" ? gpushare::agent::EnforcementConfig::Enforce::kKill
                                                : gpushare::agent::EnforcementConfig::Enforce::kReport;
  watch.enforcement.grace = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(enforce_grace_s));
  watch.interval = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(nvml_interval_s));
  if (nvml_interval_s > 0 && watch.interval.count() == 0) watch.interval = std::chrono::milliseconds(1);

  constexpr const char* kDefaultPolicy = "/etc/gpushare/policy.toml";
  std::error_code unseen;
  if (!policy_path && std::filesystem::exists(kDefaultPolicy, unseen)) policy_path = kDefaultPolicy;
  if (!policy_path) {
    log_info(fmt::format("no --policy and no {}: {}", kDefaultPolicy,
                         kubernetes ? "only processes in pods can join a tenant" : "no process can join a tenant"));
  }
  std::optional<gpushare::agent::Policy> policy;
  if (policy_path) {
    auto loaded = gpushare::agent::load_policy(*policy_path);
    if (!loaded) {
      fmt::print(stderr, "gpushare-agent: --policy: {}\n", loaded.error().message);
      return kExitBadInput;
    }
    policy = std::move(loaded).value();
  }
  std::optional<gpushare::agent::PodWatchConfig> pod_watch_config;
  if (kubernetes) {
    auto config = gpushare::agent::pod_watch_config(kube_flags);
    if (!config) {
      fmt::print(stderr, "gpushare-agent: {}\n", config.error().message);
      return kExitBadInput;
    }
    pod_watch_config = std::move(config).value();
  }
  std::optional<std::uint32_t> admin_gid;
  if (admin_group) {
    admin_gid = resolve_group(*admin_group);
    if (!admin_gid) {
      fmt::print(stderr, "gpushare-agent: --admin-group {}: no such group\n", *admin_group);
      return kExitBadInput;
    }
  }

  // SIGTERM and SIGINT arrive through a signalfd that the loop watches, so stopping is an event.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const int stop_fd = ::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (stop_fd < 0) {
    fmt::print(stderr, "gpushare-agent: signalfd: {}\n", std::strerror(errno));
    return kExitFailure;
  }

  // Three descriptors per tenant process (its socket, its page, its slot's lock): up to the hard limit.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  if (auto pages = gpushare::agent::TenantSessions::check_page_size(); !pages) {
    fmt::print(stderr, "gpushare-agent: {}\n", pages.error().message);
    return kExitFailure;
  }
  gpushare::install_compute_slot_release();
  auto state = open_agent_state(state_path);
  if (!state) {
    fmt::print(stderr, "gpushare-agent: --state: {}\n", state.error().message);
    return kExitFailure;
  }
  // Slots of a previous agent's processes wait this long for them to come back (recovery.hpp).
  auto recovery = gpushare::agent::Recovery::begin(*state.value(), std::chrono::milliseconds(2000));
  if (!recovery) {
    fmt::print(stderr, "gpushare-agent: {}\n", recovery.error().message);
    return kExitFailure;
  }
  if (const std::size_t waiting = recovery.value()->pending(); waiting > 0) {
    log_info(fmt::format("{} processes of the previous agent may rejoin within 2 s", waiting));
  }
  gpushare::agent::TenantSessions sessions(*state.value());
  sessions.set_recovery(recovery.value().get());
  const auto escapes = gpushare::agent::EscapeRounds::start(state.value()->state(), watch, log_info);

  gpushare::agent::AdminRequests admin(*state.value(), sessions, policy_path, policy, log_info);
  auto socket = gpushare::agent::ListenSocket::create(socket_path);
  if (!socket) {
    fmt::print(stderr, "gpushare-agent: {}\n", socket.error().message);
    return kExitFailure;
  }
  std::unique_ptr<gpushare::agent::PodWatch> pod_watch;
  std::unique_ptr<gpushare::agent::KubeTenants> kube;
  if (pod_watch_config) {
    log_info(fmt::format("pods of node {} from https://{}:{}", pod_watch_config->node, pod_watch_config->endpoint.host,
                         pod_watch_config->endpoint.port));
    pod_watch = std::make_unique<gpushare::agent::PodWatch>(*pod_watch_config, log_info);
    kube = std::make_unique<gpushare::agent::KubeTenants>(pod_watch->cache(), *state.value(), policy,
                                                          tenant_labels_path, kube_flags.kubelet_cgroup_root,
                                                          log_info);
    kube->write_labels_if_changed(sessions);  // no tenant yet: a previous agent's file is replaced
  }
  gpushare::agent::ServerHooks hooks;
  hooks.log_info = log_info;
  hooks.on_admin = serve_admin;
  if (policy || kube) {
    hooks.assign_tenant = [&](const gpushare::agent::SocketPeer& peer) {
      return assign_peer(policy ? &*policy : nullptr, kube.get(), sessions, peer);
    };
  }
  gpushare::agent::SliceService slices(*state.value(), [&sessions](std::uint32_t slot) { return sessions.slot_live(slot); });
  hooks.on_request = [&](const gpushare::agent::SocketPeer& peer, const gpushare::agent::Message& request,
                         std::vector<int>& passed_fds) -> gpushare::Result<std::vector<gpushare::agent::Outgoing>> {
    if (is_admin_message(gpushare::agent::message_type(request))) return admin.handle(request);
    if (!gpushare::agent::is_slice_message(request)) {
      auto answers = sessions.handle(peer, request, passed_fds);
      const bool joins = std::holds_alternative<gpushare::agent::Join>(request) ||
                         std::holds_alternative<gpushare::agent::Rejoin>(request);
      if (kube && joins) kube->write_labels_if_changed(sessions);
      return answers;
    }
    // Never answered, not even with an error: the tenant does not wait for one.
    if (const auto slot = sessions.slot_of(peer.connection_id)) serve_slice_message(slices, *slot, request);
    return std::vector<gpushare::agent::Outgoing>{};
  };
  hooks.on_disconnect = [&](const gpushare::agent::SocketPeer& peer, gpushare::agent::DisconnectReason) {
    sessions.disconnected(peer.connection_id);
    slices.slot_released();
    if (kube) kube->write_labels_if_changed(sessions);
  };
  hooks.on_wake = [&] {
    const auto now = std::chrono::steady_clock::now();
    if (const std::size_t expired = recovery.value()->expire_if_due(now); expired > 0) {
      const gpushare::ReclaimReport swept = gpushare::reclaim_dead_processes(*state.value());
      log_info(fmt::format("{} processes of the previous agent did not rejoin: {} slots and {} bytes returned",
                           expired, swept.processes, swept.bytes));
      slices.slot_released();
    }
    std::chrono::nanoseconds wait = slices.tick();
    if (recovery.value()->pending() > 0) {
      wait = std::min(wait, std::chrono::nanoseconds(recovery.value()->time_left(now)));
    }
    if (escapes) wait = std::min(wait, std::chrono::nanoseconds(escapes->run_if_due(now, sessions.joined_processes())));
    if (kube) {
      // The watch's thread only records which pods changed: their sessions are this loop's.
      kube->apply_changed_pods(sessions);
      wait = std::min(wait, std::chrono::nanoseconds(std::chrono::seconds(1)));
    }
    return wait;
  };
  gpushare::agent::Server server(std::move(socket).value(), admin_gid, gpushare::agent::ServerLimits{},
                                 std::move(hooks));
  if (auto hangup = admin.reload_on_hangup(server); !hangup) {
    fmt::print(stderr, "gpushare-agent: {}\n", hangup.error().message);
    return kExitFailure;
  }
  log_info(fmt::format("state {}; listening on {}{}", state_path, server.socket_path(),
                       admin_group ? fmt::format(" (admin group {}, gid {})", *admin_group, *admin_gid) : ""));
  const auto served = server.run(stop_fd);
  ::close(stop_fd);
  if (!served) {
    fmt::print(stderr, "gpushare-agent: {}\n", served.error().message);
    return kExitFailure;
  }
  log_info("stopped");
  return 0;
}
