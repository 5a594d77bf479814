// Who a connecting process is, as the kernel says (SO_PEERCRED and /proc/PID/cgroup), and which
// tenant the policy (policy.hpp) makes of it.
//
// Precedence, fixed: the cgroup rules first (where a process runs is the most specific fact: a
// Slurm job, a container, a systemd unit), then the uid rules, then the gid rules (the peer's
// primary gid only: SO_PEERCRED carries no supplementary groups), then [default]. Within one kind
// the first match in file order wins; a uid or gid belongs to at most one tenant (the parser
// refuses a second claim), but two cgroup patterns of different tenants may both match a path.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "core/result.hpp"
#include "policy.hpp"

namespace gpushare::agent {

struct PeerIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::string cgroup;  // empty when unknown: then no cgroup rule matches
};

struct Assignment {
  std::string tenant;
  TenantLimits limits;
  std::string reason;  // which rule matched, for a log line: "cgroup /slurm/uid_*/job_42/*"
};

// The cgroup of process `pid`, from /proc/PID/cgroup: the cgroup v2 line "0::PATH"; on a host with
// only v1 hierarchies, the path of the name=systemd hierarchy, else of the first line. The path
// starts with '/'. The caller owns the race with the pid's reuse (read it while the peer's socket
// is open, and check the process is still that peer).
Result<std::string> read_cgroup(pid_t pid);
// The same choice made from the text of a /proc/PID/cgroup file.
Result<std::string> cgroup_from_proc_text(std::string_view text);

// Whether cgroup `path` matches `pattern`, both compared component by component: '*' inside a
// component matches any run of characters other than '/'; a last component "*" or "**" matches
// every path below the rest (one component or more, not the rest itself); nothing else is special.
// A path with an empty, "." or ".." component, or a trailing '/', matches nothing.
bool cgroup_pattern_matches(std::string_view pattern, std::string_view path);

// The tenant and limits of `identity` under `policy`; an Error saying why when it is refused.
Result<Assignment> assign(const Policy& policy, const PeerIdentity& identity);

}  // namespace gpushare::agent
