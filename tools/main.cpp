// The `gpushare` command: wraps programs into tenants, changes live tenants, shows what happens.
// This file only wires the subcommands (one file each) to the command line.
#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.hpp"
#include "core/settings.hpp"
#include "version_line.hpp"

using namespace gpushare::tools;

namespace {

// CLI11 reads `--name=` as "take the next word": `--tenant= python x` would make python the tenant.
// An empty value after '=' becomes an empty value, which the option's own check then refuses.
void append_option_word(const std::string& word, std::vector<std::string>& out) {
  if (word.starts_with("--") && word.find('=') == word.size() - 1) {
    out.push_back(word.substr(0, word.size() - 1));
    out.emplace_back();
    return;
  }
  out.push_back(word);
}

// `gpushare run [OPTIONS] [--] CMD ARGS` (args: what follows "run"): the options go to CLI11, CMD is
// kept verbatim. CMD starts after "--" or at the first word that is not an option; an unknown
// option is an error, never the start of CMD. False after printing why.
bool split_run_arguments(const CLI::App& run, const std::vector<std::string>& args, std::vector<std::string>& options,
                         std::vector<std::string>& command) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& word = args[i];
    if (word == "--" || word.size() < 2 || word.front() != '-') {
      command.assign(args.begin() + static_cast<std::ptrdiff_t>(i + (word == "--" ? 1 : 0)), args.end());
      return true;
    }
    const std::string name = word.substr(0, word.find('='));
    const CLI::Option* option = run.get_option_no_throw(name);
    if (option == nullptr) {
      fmt::print(stderr,
                 "gpushare run: unknown option '{}' (see gpushare run --help; a CMD whose name starts with '-' goes "
                 "after --)\n",
                 name);
      return false;
    }
    append_option_word(word, options);
    // Its value, unless written --name=VALUE (a missing one is left for CLI11 to report).
    if (name == word && option->get_items_expected_min() > 0 && i + 1 < args.size() && args[i + 1] != "--") {
      options.push_back(args[++i]);
    }
  }
  return true;
}

// The table's default of an option a command passes on through the environment: the variable's
// value when set, else the table's.
std::string default_help(const gpushare::OptionSpec& spec) {
  return fmt::format("default: ${}, else {}", spec.env, spec.default_text());
}

// One option per flag the options table gives `way`, with its help line; `with_defaults` for
// commands whose unset flags mean the default (run), not "unchanged" (quota set). --state chooses
// the file as in every command, so its default is always shown.
void add_table_flags(CLI::App& command, gpushare::OptionWay way, TableFlags& flags, bool with_defaults) {
  for (const gpushare::OptionSpec& spec : gpushare::option_specs()) {
    const std::string flag(gpushare::option_name(spec, way));
    if (flag.empty()) continue;
    std::string help(spec.help);
    if (with_defaults || spec.id == gpushare::OptionId::kState) help += " (" + default_help(spec) + ")";
    if (spec.per_device()) {
      command.add_option(flag, flags.repeatable[flag], help)
          ->type_name(std::string(spec.value_name))
          ->allow_extra_args(false)
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
          ->expected(1);
    } else {
      command.add_option(flag, flags.once[flag], help)->type_name(std::string(spec.value_name));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpushare: share one GPU between programs: hard memory quotas, exact shares of GPU time.\n"};
  app.name("gpushare");
  app.require_subcommand(1);
  app.set_version_flag("--version", gpushare::agent::version_line(GPUSHARE_VERSION));
  app.footer(
      "Examples:\n"
      "  gpushare run --memory 8GiB --share 30 -- python train.py\n"
      "  gpushare status --json\n"
      "  gpushare top\n"
      "  gpushare quota set train --share 50\n"
      "  gpushare exporter --listen 127.0.0.1:9400\n"
      "  gpushare agent --admin-group gpuadmin\n"
      "  gpushare webhook --tls-cert /tls/tls.crt --tls-key /tls/tls.key\n"
      "  gpushare version --json\n"
      "  gpushare node-install --host-dir /host/usr/local/gpushare\n"
      "  gpushare trace summary /tmp/trace\n"
      "Run `gpushare COMMAND --help` for a command's options. docs/operations.md has more.");

  const gpushare::OptionSpec& state_spec = gpushare::option_spec(gpushare::OptionId::kState);
  const std::string state_help = fmt::format("{} ({})", state_spec.help, default_help(state_spec));
  RunOptions run_options;
  auto* run = app.add_subcommand("run", "Run CMD as a tenant (every process it starts shares one quota)");
  add_table_flags(*run, gpushare::OptionWay::kRunFlag, run_options.flags, true);
  run->add_flag("--nvml", run_options.nvml,
                "Show the quota to NVML users too (nvidia-smi, torch.cuda.mem_get_info via NVML): puts gpushare's "
                "shadow libnvidia-ml.so.1 first in LD_LIBRARY_PATH");
  run->add_flag("--init", run_options.init,
                "Stay as CMD's init instead of becoming CMD (always so as PID 1, a container's first process): "
                "forward SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to CMD's process group, "
                "reap every zombie, exit with CMD's status (128 + the signal when it was killed)");
  // Everything from the first non-option on (or after --) is CMD and its own arguments, untouched
  // (split_run_arguments).
  run->footer(
      "Usage: gpushare run [OPTIONS] [--] CMD [ARGS...]\n"
      "Example: gpushare run --memory 8GiB --share 30 -- python train.py\n"
      "CMD starts after -- or at the first word that is not an option. Nothing runs when an option is unknown or "
      "empty, a value is bad (the GPUSHARE_* variables already set included), or the state file cannot be opened "
      "or created.\n"
      "Exit status: CMD's (128 + the signal when killed by one, with --init or as PID 1); 2 for bad options or an unusable state file; 127 when CMD cannot be run.");

  auto* quota = app.add_subcommand("quota", "Change a live tenant");
  quota->require_subcommand(1);
  QuotaOptions quota_options;
  auto* quota_set =
      quota->add_subcommand("set", "Change a live tenant: memory at its next allocation, compute within one slice");
  quota_set->add_option("tenant", quota_options.tenant, "Tenant name (see gpushare status)")->required();
  add_table_flags(*quota_set, gpushare::OptionWay::kQuotaFlag, quota_options.flags, false);
  quota->footer("Example: gpushare quota set train --memory 16GiB --share 50 --priority high");
  quota_set->footer(
      "Example: gpushare quota set train --memory 16GiB --share 50 --priority high\n"
      "In isolation mode (GPUSHARE_AGENT names the agent's socket, or /run/gpushare/agent.sock exists) and without "
      "--state, the request goes to the agent, which allows it to root and its --admin-group only. Exit status: 0 "
      "done; 1 failed or the agent unreachable; 2 bad input; 4 permission denied.");

  StatusOptions status_options;
  auto* status = app.add_subcommand("status", "Show each GPU's tenants: quotas, use, GPU time, processes");
  status->add_option("--state", status_options.state, state_help);
  status->add_flag("--json", status_options.json, "Machine-readable output (schema in docs/operations.md)");
  status->footer("Example: gpushare status --json | jq '.gpus[].tenants[] | {tenant, memory_used_bytes}'");

  TopOptions top_options;
  auto* top = app.add_subcommand("top", "Live view of the tenants, refreshed in the terminal (q or Ctrl-C quits)");
  top->add_option("--state", top_options.state, state_help);
  top->add_option("-d,--interval", top_options.interval_s, "Seconds between refreshes (default 1)")
      ->check(CLI::Range(0.1, 3600.0));
  top->add_option("-n,--iterations", top_options.iterations, "Stop after N refreshes (default: run until quit)")
      ->check(CLI::NonNegativeNumber);
  top->footer("GPU% is the share of wall time each tenant held the GPU since the previous frame; the bar's '|' marks "
              "its share (or cap). top only reads the shared state: watching never slows a tenant.");

  auto* exporter = app.add_subcommand("exporter", "Serve Prometheus metrics (run `gpushare exporter --help`)");
  exporter->prefix_command();
  exporter->set_help_flag();  // --help belongs to the exporter program
  exporter->footer("");

  auto* agent = app.add_subcommand(
      "agent", "Run the node agent of isolation mode (run `gpushare agent --help`); `gpushare agent reload` asks the "
               "running agent to re-read its policy (root and its --admin-group only; exit 4 for anyone else)");
  agent->prefix_command();
  agent->set_help_flag();  // --help belongs to the agent program
  agent->footer("");

  auto* webhook =
      app.add_subcommand("webhook", "Run the Kubernetes admission webhook over HTTPS (run `gpushare webhook --help`)");
  webhook->prefix_command();
  webhook->set_help_flag();  // --help belongs to the webhook program
  webhook->footer("");
  NodeInstallOptions node_install_options;
  auto* node_install = app.add_subcommand(
      "node-install", "Copy this installed gpushare (command, preload library, NVML shadow) into a node's host "
                      "folder as a release and point its `current` symlink at it");
  node_install
      ->add_option("--host-dir", node_install_options.host_dir,
                   "The host folder (absolute), e.g. /usr/local/gpushare, or where the node's is mounted")
      ->required();
  node_install->footer(
      "Example: gpushare node-install --host-dir /host/usr/local/gpushare\n"
      "Writes DIR/releases/<version>/ (bin/gpushare, the preload library, nvml/) into a temporary folder, fsyncs it "
      "and renames it into place (an identical release already there is kept), then replaces DIR/current, a "
      "relative symlink, atomically; pods use DIR/current/lib/gpushare/libgpushare-preload.so. Releases older than "
      "the newest two, except the current one and the one it replaced, are removed. Run from the installed prefix (the container image's "
      "/opt/gpushare/bin/gpushare), not a build tree.\n"
      "Exit status: 0 done; 1 failed (nothing half-written is left, current unchanged); 2 bad options.");

  VersionOptions version_options;
  auto* version = app.add_subcommand(
      "version", "Show the release, the state file's ABI and the agent protocol this gpushare speaks");
  version->add_flag("--json", version_options.json,
                    "Machine-readable output: {\"version\": \"X.Y.Z\", \"state_abi\": N, \"agent_protocol\": N}");
  version->footer("Before 1.0 the minor version is the state ABI: programs of two minor versions never share a "
                  "state file (docs/operations.md, Upgrading).");

  auto* trace = app.add_subcommand("trace", "Read a trace directory (docs/tracing.md): merge it, summarise it");
  trace->require_subcommand(1);
  trace->footer("Examples:\n  gpushare trace merge /tmp/trace -o trace.json\n  gpushare trace summary /tmp/trace --json");
  TraceMergeOptions trace_merge_options;
  auto* trace_merge = trace->add_subcommand(
      "merge", "Write one Chrome Trace Event Format file (Perfetto, chrome://tracing): a track per GPU, per tenant "
               "its kernels/memcpys/memsets, its gpushare slices and its request ranges");
  trace_merge->add_option("dir", trace_merge_options.dir, "The trace directory (its *.gstrace files)")->required();
  trace_merge->add_option("-o,--output", trace_merge_options.output, "The JSON file to write")->required();
  trace_merge->footer(
      "Example: gpushare trace merge /tmp/trace -o trace.json (open it at https://ui.perfetto.dev)\n"
      "Exit status: 0 written; 1 the directory is missing, empty or holds a bad line (named FILE:LINE; nothing is "
      "written); 2 bad options.");
  TraceSummaryOptions trace_summary_options;
  auto* trace_summary = trace->add_subcommand(
      "summary", "Per GPU and tenant: GPU busy time from kernel timestamps, share of the GPU's busy time, wall span, "
                 "idle gaps at handovers, request latency percentiles");
  trace_summary->add_option("dir", trace_summary_options.dir, "The trace directory (its *.gstrace files)")
      ->required();
  trace_summary->add_flag("--json", trace_summary_options.json, "Machine-readable output (docs/tracing.md)");
  trace_summary->footer(
      "Example: gpushare trace summary /tmp/trace --json | jq '.gpus[].tenants[] | {tenant, share_percent}'\n"
      "Exit status: 0 done; 1 the directory is missing, empty or holds a bad line (named FILE:LINE); 2 bad "
      "options.");

  // `gpushare run`: CMD is split off, out of CLI11's reach. The exporter's and the agent's arguments
  // are their own.
  const std::vector<std::string> given(argv + 1, argv + argc);
  std::vector<std::string> args;
  if (!given.empty() && given.front() == "run") {
    args.push_back("run");
    if (!split_run_arguments(*run, {given.begin() + 1, given.end()}, args, run_options.command)) return kExitBadInput;
  } else if (!given.empty() &&
             (given.front() == "exporter" || given.front() == "agent" || given.front() == "webhook")) {
    args = given;
  } else {
    for (const std::string& word : given) append_option_word(word, args);
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the vector form in reverse order
  try {
    app.parse(args);
  } catch (const CLI::Success& success) {
    return app.exit(success);
  } catch (const CLI::ParseError& error) {
    app.exit(error);
    return kExitBadInput;
  }
  if (*run) return run_command(run_options);
  if (*quota_set) return quota_set_command(quota_options);
  if (*status) return status_command(status_options);
  if (*top) return top_command(top_options);
  if (*exporter) return exporter_command(exporter->remaining());
  if (*agent) return agent_command(agent->remaining());
  if (*webhook) return webhook_command(webhook->remaining());
  if (*version) return version_command(version_options);
  if (*node_install) return node_install_command(node_install_options);
  if (*trace_merge) return trace_merge_command(trace_merge_options);
  if (*trace_summary) return trace_summary_command(trace_summary_options);
  return kExitBadInput;
}
