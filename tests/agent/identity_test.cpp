// The peer's cgroup, cgroup patterns and the precedence of assign().
#include "identity.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

namespace gpushare::agent {
namespace {

TEST(ReadCgroup, OfThisProcess) {
  auto path = read_cgroup(::getpid());
  ASSERT_TRUE(path.ok()) << path.error().message;
  ASSERT_FALSE(path->empty());
  EXPECT_EQ(path->front(), '/');
}

TEST(ReadCgroup, OfNoProcess) { EXPECT_FALSE(read_cgroup(-1).ok()); }

TEST(CgroupFromProcText, PrefersTheUnifiedHierarchy) {
  auto path =
      cgroup_from_proc_text("12:cpu,cpuacct:/docker/abc\n1:name=systemd:/user.slice\n0::/system.slice/x.scope\n");
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, "/system.slice/x.scope");
}

TEST(CgroupFromProcText, OnV1TakesSystemdThenTheFirstLine) {
  auto systemd = cgroup_from_proc_text("12:cpu,cpuacct:/docker/abc\n1:name=systemd:/user.slice/u.scope\n");
  ASSERT_TRUE(systemd.ok());
  EXPECT_EQ(*systemd, "/user.slice/u.scope");
  auto first = cgroup_from_proc_text("5:memory:/slurm/uid_1000/job_42\n4:cpu:/other\n");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, "/slurm/uid_1000/job_42");
}

TEST(CgroupFromProcText, PathMayHoldColons) {
  auto path = cgroup_from_proc_text("0::/kubepods/pod:x\n");
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, "/kubepods/pod:x");
}

TEST(CgroupFromProcText, NothingUsable) {
  EXPECT_FALSE(cgroup_from_proc_text("").ok());
  EXPECT_FALSE(cgroup_from_proc_text("garbage\n0::relative\n").ok());
}

TEST(CgroupPattern, StarStaysWithinAComponent) {
  EXPECT_TRUE(cgroup_pattern_matches("/system.slice/train-*.scope", "/system.slice/train-7.scope"));
  EXPECT_TRUE(cgroup_pattern_matches("/system.slice/train-*.scope", "/system.slice/train-.scope"));
  EXPECT_FALSE(cgroup_pattern_matches("/system.slice/train-*.scope", "/system.slice/train-7/x.scope"));
  EXPECT_FALSE(cgroup_pattern_matches("/system.slice/train-*.scope", "/system.slice/infer-7.scope"));
  EXPECT_TRUE(cgroup_pattern_matches("/a/*b*c", "/a/xbyc"));
  EXPECT_FALSE(cgroup_pattern_matches("/a/*b*c", "/a/xbycd"));
  EXPECT_TRUE(cgroup_pattern_matches("/slurm/uid_*/job_42/x", "/slurm/uid_1000/job_42/x"));
}

TEST(CgroupPattern, TrailingStarMatchesEverythingBelow) {
  for (const char* pattern : {"/slurm/uid_*/job_42/*", "/slurm/uid_*/job_42/**"}) {
    EXPECT_TRUE(cgroup_pattern_matches(pattern, "/slurm/uid_1000/job_42/step_0")) << pattern;
    EXPECT_TRUE(cgroup_pattern_matches(pattern, "/slurm/uid_1000/job_42/step_0/task_1")) << pattern;
    EXPECT_FALSE(cgroup_pattern_matches(pattern, "/slurm/uid_1000/job_42")) << pattern;
    EXPECT_FALSE(cgroup_pattern_matches(pattern, "/slurm/uid_1000/job_421/step_0")) << pattern;
  }
  EXPECT_TRUE(cgroup_pattern_matches("/*", "/anything/at/all"));
  EXPECT_FALSE(cgroup_pattern_matches("/*", "/"));
}

TEST(CgroupPattern, ExactOtherwise) {
  EXPECT_TRUE(cgroup_pattern_matches("/a/b", "/a/b"));
  EXPECT_FALSE(cgroup_pattern_matches("/a/b", "/a/b/c"));
  EXPECT_FALSE(cgroup_pattern_matches("/a/b", "/a"));
  EXPECT_TRUE(cgroup_pattern_matches("/", "/"));
  EXPECT_FALSE(cgroup_pattern_matches("/a?", "/ab"));  // '?' is no wildcard
  EXPECT_TRUE(cgroup_pattern_matches("/a?", "/a?"));
}

TEST(CgroupPattern, DotDotAndTrailingSlashMatchNothing) {
  EXPECT_FALSE(cgroup_pattern_matches("/a/*", "/a/../b"));
  EXPECT_FALSE(cgroup_pattern_matches("/a/*", "/a/./b"));
  EXPECT_FALSE(cgroup_pattern_matches("/*", "/a/.."));
  EXPECT_FALSE(cgroup_pattern_matches("/a/b", "/a/b/"));
  EXPECT_FALSE(cgroup_pattern_matches("/a/*", "/a//b"));
  EXPECT_FALSE(cgroup_pattern_matches("/a/b/", "/a/b"));
  EXPECT_FALSE(cgroup_pattern_matches("a/b", "a/b"));
  EXPECT_FALSE(cgroup_pattern_matches("/a/*", ""));
}

TEST(CgroupPattern, Validation) {
  EXPECT_TRUE(validate_cgroup_pattern("/").ok());
  EXPECT_TRUE(validate_cgroup_pattern("/a/*/b-*/**").ok());
  EXPECT_FALSE(validate_cgroup_pattern("").ok());
  EXPECT_FALSE(validate_cgroup_pattern("/a/..").ok());
  EXPECT_FALSE(validate_cgroup_pattern("/./a").ok());
  EXPECT_FALSE(validate_cgroup_pattern("/a/").ok());
  EXPECT_FALSE(validate_cgroup_pattern("/a**").ok());
}

Policy precedence_policy() {
  auto policy = parse_policy(R"(
[tenant.by_gid]
gids = [100]
memory = "1GiB"
[tenant.by_uid]
uids = [1000]
memory = "2GiB"
[tenant.by_cgroup]
cgroups = ["/slurm/*"]
memory = "3GiB"
[tenant.later_cgroup]
cgroups = ["/slurm/job_1/*"]
)",
                             "policy.toml");
  EXPECT_TRUE(policy.ok()) << policy.error().message;
  return std::move(policy).value();
}

TEST(Assign, CgroupBeforeUidBeforeGid) {
  Policy policy = precedence_policy();
  auto by_cgroup = assign(policy, {1000, 100, 42, "/slurm/job_1/step_0"});
  ASSERT_TRUE(by_cgroup.ok());
  EXPECT_EQ(by_cgroup->tenant, "by_cgroup");  // first in file order, though later_cgroup matches too
  EXPECT_EQ(by_cgroup->limits.memory_bytes, 3_GiB);
  EXPECT_EQ(by_cgroup->reason, "cgroup /slurm/*");
  auto by_uid = assign(policy, {1000, 100, 42, "/user.slice"});
  ASSERT_TRUE(by_uid.ok());
  EXPECT_EQ(by_uid->tenant, "by_uid");
  EXPECT_EQ(by_uid->limits.memory_bytes, 2_GiB);
  auto by_gid = assign(policy, {1001, 100, 42, ""});
  ASSERT_TRUE(by_gid.ok());
  EXPECT_EQ(by_gid->tenant, "by_gid");
  EXPECT_EQ(by_gid->reason, "gid 100");
}

TEST(Assign, UnmatchedIsRefusedByDefault) {
  auto refused = assign(precedence_policy(), {7, 7, 4242, "/user.slice"});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("pid 4242 (uid 7, gid 7, cgroup /user.slice) matches no rule"),
            std::string::npos)
      << refused.error().message;
}

TEST(Assign, UnmatchedJoinsTheDefaultTenant) {
  auto policy = parse_policy("[default]\nrefuse = false\ntenant = \"shared\"\nmemory = \"2GiB\"\n", "p");
  ASSERT_TRUE(policy.ok()) << policy.error().message;
  auto assigned = assign(*policy, {7, 7, 1, "/"});
  ASSERT_TRUE(assigned.ok());
  EXPECT_EQ(assigned->tenant, "shared");
  EXPECT_EQ(assigned->limits.memory_bytes, 2_GiB);
  EXPECT_EQ(assigned->reason, "default");
}

}  // namespace
}  // namespace gpushare::agent
